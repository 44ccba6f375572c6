//! Reading texts of Kubernetes objects, the part [`crate::parse`] shares with the local cluster's manifest loader:
//! YAML split into documents, documents and JSON texts parsed into values with messages that locate the error in
//! the whole text, and the header fields (`apiVersion`, `kind`) and List `items` read from a value.
//!
//! A YAML text is split at lines that are `---` (alone or followed by a space, tab or comment), which YAML
//! reserves as document markers even inside block scalars, so that a syntax error in one document does not hide
//! the others; a `...` line ends a document too. Text before the first marker is a document only if it holds more
//! than comments and directives.

use serde_json::{Map, Value};

/// A problem with a document's header: (field, message).
pub type Problem = (&'static str, String);

/// Splits YAML text into documents: (number of lines before the document, its text), in order. Empty documents
/// are kept, so that every document keeps its number. A byte order mark is not removed: strip it first.
pub fn split(text: &str) -> Vec<(usize, &str)> {
    let starts = document_starts(text);
    let ends = starts.iter().skip(1).map(|&(_, offset)| offset).chain([text.len()]);
    let slice = |(&(line, start), end)| (line, text.get(start..end).unwrap_or_default());
    let mut documents: Vec<(usize, &str)> = starts.iter().zip(ends).map(slice).collect();
    if documents.len() > 1 && is_preamble(documents[0].1) {
        documents.remove(0);
    }
    documents
}

/// Parses one YAML document of [`split`] (`lines_before` lines into its text): None if it is empty, or "invalid
/// YAML: ..." with the line numbers of the whole text.
pub fn parse_yaml(document: &str, lines_before: usize) -> Result<Option<Value>, String> {
    let value = serde_saphyr::from_str::<Option<Value>>(document);
    value.map_err(|error| format!("invalid YAML: {}", yaml_message(&error, lines_before)))
}

/// Parses a JSON text, or says "invalid JSON: ..." with the line and column.
pub fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| format!("invalid JSON: {error}"))
}

/// The string at `key` (e.g. `kind`): a problem at `key` if it is missing, null, empty or not a string.
pub fn required_string<'a>(map: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, Problem> {
    match map.get(key) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value),
        None | Some(Value::Null) => Err((key, "required".to_string())),
        Some(other) => Err((key, format!("must be a non-empty string, not {}", type_name(other)))),
    }
}

/// The `items` of a `kind: List` (none when missing or null); None if they are not a list.
pub fn list_items(mut value: Value) -> Option<Vec<Value>> {
    match value.get_mut("items").map(Value::take) {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => Some(items),
        Some(_) => None,
    }
}

/// What a value is, for messages: "null", "a boolean", "a number", "a string", "a list" or "a mapping".
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The parser's message, with line numbers counted in the whole text.
fn yaml_message(error: &serde_saphyr::Error, lines_before: usize) -> String {
    let options = serde_saphyr::render_options! {
        line_offset: u64::try_from(lines_before).unwrap_or(u64::MAX),
        snippets: serde_saphyr::SnippetMode::Off,
    };
    error.render_with_options(options)
}

/// Text before the first `---` that is not a document: only comments, directives and blank lines.
fn is_preamble(text: &str) -> bool {
    !has_content(text) && !is_marker(text, "---")
}

/// (line number, byte offset) of each document: the first line, every `---` line, and the first content line
/// after a `...` line.
fn document_starts(text: &str) -> Vec<(usize, usize)> {
    let mut starts = vec![(0, 0)];
    let (mut offset, mut ended) = (0, false);
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let starts_here = is_marker(line, "---") || (ended && has_content(line));
        if number > 0 && starts_here {
            starts.push((number, offset));
            ended = false;
        }
        ended |= is_marker(line, "...");
        offset += line.len();
    }
    starts
}

/// Whether the (first) line is the document marker `marker`, possibly followed by content or a comment.
fn is_marker(line: &str, marker: &str) -> bool {
    let line = line.lines().next().unwrap_or_default();
    let rest = line.strip_prefix(marker);
    rest.is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// Whether a piece of YAML has anything besides blank lines, comments and directives.
fn has_content(text: &str) -> bool {
    let content = |line: &str| !line.is_empty() && !line.starts_with(['#', '%']);
    text.lines().map(str::trim).any(content)
}

#[cfg(test)]
mod tests;

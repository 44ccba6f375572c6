//! Paths as the waypoint's authorization sees them: Istio's request normalization (default `BASE`), the requests it
//! refuses outright, and the `{*}`/`{**}` path templates of `paths` and `notPaths`.
//!
//! Normalization follows Envoy's steps for each Istio `pathNormalization` option, in Envoy's order: unescape
//! `%2F`/`%5C` (`DECODE_AND_MERGE_SLASHES` only), then RFC 3986 canonicalization (every option but `NONE`), then
//! merging of repeated slashes (`MERGE_SLASHES` and up). Canonicalization decodes percent-encoded unreserved
//! characters (letters, digits, `-`, `.`, `_`, `~`), writes the hex digits of the other escapes in upper case,
//! turns `\` into `/`, and resolves `.` and `..` segments. With the default `BASE`, `%2F` stays encoded and `//`
//! stays as it is. The normalized path is both what policies see and what should be forwarded.

use std::fmt;

use serde::Serialize;

use super::PathMatch;
use crate::authorization::StringMatch;

/// Istio's `meshConfig.pathNormalization.normalization`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathNormalization {
    /// The path as received.
    None,
    /// RFC 3986 canonicalization, with `\` read as `/`. Istio's default.
    #[default]
    Base,
    /// `Base`, then `//` merged into `/`.
    MergeSlashes,
    /// `%2F` and `%5C` decoded first, then `MergeSlashes`.
    DecodeAndMergeSlashes,
}

/// A request target after normalization: the path policies match, and the query, kept as received.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NormalizedPath {
    pub path: String,
    /// The text after `?`, without the `?`; `None` when there is no `?`.
    pub query: Option<String>,
}

/// A request the waypoint answers with 400 before any policy is checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestRejection {
    #[error("the path {0:?} contains an encoded NUL (%00)")]
    EncodedNul(String),
    #[error("the path {0:?} does not start with '/'")]
    NotOriginForm(String),
    #[error("the method {0:?} is not in upper case")]
    LowercaseMethod(String),
}

/// A `paths` value with `{*}` (one path segment) or `{**}` (any rest of the path, `/` included) segments, matched
/// as Envoy's URI template: the whole path must match, a `{*}` takes one or more path characters (RFC 3986 `pchar`
/// without `*`), and a `{**}` any number of path characters and `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct PathTemplate {
    text: String,
    tokens: Vec<Token>,
}

/// Why a `paths` value is not a valid pattern, as Istio's validation says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{0:?} has '{{' or '}}' outside a {{*}} or {{**}} segment")]
    Brace(String),
    #[error("{0:?} has an operator after {{**}}: {{**}} must be the last operator")]
    AfterAnySegments(String),
    #[error(
        "{path:?} has the segment {segment:?}, which is not a plain path segment (letters, digits and \
         -._~%!$&'()+,;:@=)"
    )]
    Literal { path: String, segment: String },
    #[error("{0:?} must start with '/' to be a path template")]
    Relative(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Token {
    Literal(String),
    /// `{*}`
    Segment,
    /// `{**}`
    Rest,
}

const ONE_SEGMENT: &str = "{*}";
const ANY_SEGMENTS: &str = "{**}";

/// Splits a request target into path and query (dropping any `#fragment`) and normalizes the path per `mode`.
pub fn normalize_path(path_and_query: &str, mode: PathNormalization) -> Result<NormalizedPath, RequestRejection> {
    let target = path_and_query.split('#').next().unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (target, None),
    };
    if path.as_bytes().windows(3).any(|w| w == b"%00") {
        return Err(RequestRejection::EncodedNul(path.to_string()));
    }
    if mode == PathNormalization::None {
        return Ok(NormalizedPath {
            path: path.to_string(),
            query,
        });
    }
    if !path.starts_with('/') {
        return Err(RequestRejection::NotOriginForm(path.to_string()));
    }
    let mut path = path.to_string();
    if mode == PathNormalization::DecodeAndMergeSlashes {
        path = unescape_slashes(&path);
    }
    path = remove_dot_segments(&canonical_escapes(&path));
    if mode >= PathNormalization::MergeSlashes {
        path = merge_slashes(&path);
    }
    Ok(NormalizedPath { path, query })
}

/// Refuses a method with lower-case letters, as Istio does (methods are compared case-sensitively).
pub fn check_method(method: &str) -> Result<(), RequestRejection> {
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(RequestRejection::LowercaseMethod(method.to_string()));
    }
    Ok(())
}

/// The pattern of a `paths` value: a template when it has `{*}` or `{**}`, else Istio's `*` wildcards.
pub(super) fn path_match(value: &str) -> Result<PathMatch, TemplateError> {
    let template = value.contains(ONE_SEGMENT) || value.contains(ANY_SEGMENTS);
    check_segments(value, template)?;
    if template {
        return PathTemplate::parse(value).map(PathMatch::Template);
    }
    Ok(match value {
        "*" => PathMatch::Presence,
        _ => match wildcard(value) {
            StringMatch::Exact(exact) => PathMatch::Exact(exact),
            StringMatch::Prefix(prefix) => PathMatch::Prefix(prefix),
            StringMatch::Suffix(suffix) => PathMatch::Suffix(suffix),
            StringMatch::Presence => PathMatch::Presence,
        },
    })
}

/// Istio's `CheckValidPathTemplate`: braces only as whole `{*}`/`{**}` segments, nothing after `{**}` but
/// literals, and (in a template) only plain path characters in the literal segments.
fn check_segments(value: &str, template: bool) -> Result<(), TemplateError> {
    let mut after_rest = false;
    for segment in value.trim_matches('/').split('/') {
        match segment {
            ONE_SEGMENT | ANY_SEGMENTS if after_rest => {
                return Err(TemplateError::AfterAnySegments(value.to_string()));
            }
            ONE_SEGMENT => {}
            ANY_SEGMENTS => after_rest = true,
            _ if segment.contains(['{', '}']) => return Err(TemplateError::Brace(value.to_string())),
            _ if template && !is_literal(segment) => {
                return Err(TemplateError::Literal {
                    path: value.to_string(),
                    segment: segment.to_string(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// `*` is presence, a leading `*` a suffix, a trailing `*` a prefix; any other `*` is literal.
fn wildcard(value: &str) -> StringMatch {
    if value == "*" {
        StringMatch::Presence
    } else if let Some(suffix) = value.strip_prefix('*') {
        StringMatch::Suffix(suffix.to_string())
    } else if let Some(prefix) = value.strip_suffix('*') {
        StringMatch::Prefix(prefix.to_string())
    } else {
        StringMatch::Exact(value.to_string())
    }
}

/// A non-empty run of [`is_pchar`] characters: a literal segment of a template.
fn is_literal(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(is_pchar)
}

/// RFC 3986 `pchar` less `*`: what one URI-template segment may hold (Envoy's `kLiteral`).
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b)
}

/// `%2F` → `/` and `%5C` → `\` (any hex case).
fn unescape_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        match escape.to_ascii_uppercase().as_str() {
            "%2F" => out.push('/'),
            "%5C" => out.push('\\'),
            _ => {
                out.push('%');
                rest = &rest[at + 1..];
                continue;
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
}

/// Decodes escaped unreserved characters, upper-cases the hex of the other escapes, and reads `\` as `/`.
fn canonical_escapes(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let (b, len) = match (bytes[i], escape_at(bytes, i)) {
            (b'%', Some(decoded)) if decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded) => (decoded, 3),
            (b'%', Some(_)) => {
                out.extend([
                    b'%',
                    bytes[i + 1].to_ascii_uppercase(),
                    bytes[i + 2].to_ascii_uppercase(),
                ]);
                i += 3;
                continue;
            }
            (b'\\', _) => (b'/', 1),
            (b, _) => (b, 1),
        };
        out.push(b);
        i += len;
    }
    // Only ASCII was replaced by ASCII, so the bytes are as valid UTF-8 as the input was: the fallback never runs.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The byte a `%XX` escape at `i` stands for, if `i` starts one.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    let digit = |at: usize| (*bytes.get(at)? as char).to_digit(16);
    match (bytes.get(i), digit(i + 1), digit(i + 2)) {
        (Some(b'%'), Some(hi), Some(lo)) => u8::try_from(hi * 16 + lo).ok(),
        _ => None,
    }
}

/// RFC 3986 section 5.2.4 on an absolute path: `.` segments vanish and `..` removes the segment before it (never
/// going above the root); a trailing `.` or `..` leaves a trailing `/`.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.into_iter().enumerate() {
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            _ => {
                out.push(segment);
                continue;
            }
        }
        if i == last {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

// === impl NormalizedPath ===

impl NormalizedPath {
    /// The request target to forward upstream: the normalized path and the query as received.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

// === impl PathTemplate ===

impl PathTemplate {
    /// Parses a template whose segments [`check_segments`] accepted.
    fn parse(value: &str) -> Result<Self, TemplateError> {
        if !value.starts_with('/') {
            return Err(TemplateError::Relative(value.to_string()));
        }
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut rest = value;
        while let Some(c) = rest.chars().next() {
            let (token, len) = if rest.starts_with(ANY_SEGMENTS) {
                (Token::Rest, ANY_SEGMENTS.len())
            } else if rest.starts_with(ONE_SEGMENT) {
                (Token::Segment, ONE_SEGMENT.len())
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
                continue;
            };
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(token);
            rest = &rest[len..];
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(Self {
            text: value.to_string(),
            tokens,
        })
    }

    /// Whether the whole of `path` matches. Segments are whole, so a `{*}` is always followed by `/` or the end and
    /// can take its segment greedily; after `{**}` only literal text follows, which must end the path.
    pub fn matches(&self, path: &str) -> bool {
        let mut rest = path;
        for (i, token) in self.tokens.iter().enumerate() {
            match token {
                Token::Literal(literal) => match rest.strip_prefix(literal.as_str()) {
                    Some(after) => rest = after,
                    None => return false,
                },
                Token::Segment => {
                    let len = rest.bytes().take_while(|b| is_pchar(*b)).count();
                    if len == 0 {
                        return false;
                    }
                    rest = &rest[len..];
                }
                Token::Rest => return self.rest_matches(i + 1, rest),
            }
        }
        rest.is_empty()
    }

    /// After a `{**}`: the literal tokens from `from` must end `rest`, and what comes before them be path text.
    fn rest_matches(&self, from: usize, rest: &str) -> bool {
        let tail: String = (self.tokens[from..].iter())
            .map(|t| match t {
                Token::Literal(literal) => literal.as_str(),
                Token::Segment | Token::Rest => "",
            })
            .collect();
        match rest.strip_suffix(tail.as_str()) {
            Some(middle) => middle.bytes().all(|b| is_pchar(b) || b == b'/'),
            None => false,
        }
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<PathTemplate> for String {
    fn from(template: PathTemplate) -> String {
        template.text
    }
}

#[cfg(test)]
mod tests;

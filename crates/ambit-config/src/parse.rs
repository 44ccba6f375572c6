//! Parsing texts (what `ambit apply -f` reads) into validated objects, or into every problem found.
//!
//! A text is JSON when it starts with `{` or `[` (a top-level array holds objects), and otherwise YAML, split at
//! lines that are `---` (alone or followed by a space, tab or comment), which YAML reserves as document markers
//! even inside block scalars, so a syntax error in one document does not hide the others; a `...` line ends a
//! document too. Text before the first marker is a document only if it holds more than comments and directives.
//! Empty documents are skipped but keep their number. A `kind: List` (v1) stands for its `items`, whose field
//! paths start with `items[i]`.
//!
//! Limits, so that one request cannot hold the control plane: a text of at most 8 MiB; a YAML document, or one
//! JSON object, of at most 1 MiB (the order of the API server's own request limits).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::documents::{self, Problem, list_items, required_string, type_name};
use crate::kind::{Kind, ObjectKey};
use crate::object::{DEFAULT_NAMESPACE, Object};
use crate::validate;

/// The largest text [`parse`] reads.
pub const MAX_TEXT_BYTES: usize = 8 * 1024 * 1024;
/// The largest YAML document (or JSON object) [`parse`] reads.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Parses and validates every object of a text: all of them, or every problem found (with the file name
/// `file`, the document number and the field path). Duplicates (same kind, namespace and name) are errors on
/// the second one; namespaced objects without a namespace are in `default`.
pub fn parse(file: &str, text: &str) -> Result<Vec<Object>, Vec<Diagnostic>> {
    parse_sources([(file, text)])
}

/// [`parse`] for a cluster source's objects: a JSON v1 `List` of every Namespace, Pod, ... of a cluster. The same
/// validation, without the size limits, which guard the API against oversized input while such a list grows with
/// the cluster (about 2 KiB per pod) and comes from a trusted source; and read item by item, so that only one item
/// at a time is held as a JSON tree (a whole tree is several times the text's size).
pub fn parse_source(file: &str, text: &str) -> Result<Vec<Object>, Vec<Diagnostic>> {
    let mut batch = Batch::new(Mode::Objects);
    batch.limited = false;
    batch.json_list(file, text.strip_prefix('\u{feff}').unwrap_or(text));
    batch.finish().map(|(objects, _)| objects)
}

/// [`parse`] for several texts as one batch, (file, text) pairs: a duplicate across texts is an error too.
pub fn parse_sources<'a>(
    sources: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Object>, Vec<Diagnostic>> {
    let mut batch = Batch::new(Mode::Objects);
    for (file, text) in sources {
        batch.text(file, text);
    }
    batch.finish().map(|(objects, _)| objects)
}

/// The keys of the objects a text names, read from `apiVersion`, `kind` and `metadata` only (for `ambit delete
/// -f`, which ignores the rest, as kubectl does). Repeated keys are given once.
pub fn parse_keys(file: &str, text: &str) -> Result<Vec<ObjectKey>, Vec<Diagnostic>> {
    let mut batch = Batch::new(Mode::Keys);
    batch.text(file, text);
    batch.finish().map(|(_, keys)| keys)
}

/// What a batch collects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Validated objects.
    Objects,
    /// Keys only.
    Keys,
}

/// The objects (or keys) of the texts parsed so far, and the problems found.
struct Batch {
    mode: Mode,
    /// Whether [`MAX_TEXT_BYTES`] and [`MAX_DOCUMENT_BYTES`] apply.
    limited: bool,
    objects: Vec<Object>,
    keys: Vec<ObjectKey>,
    diagnostics: Vec<Diagnostic>,
    /// Where each key was first defined.
    first: HashMap<ObjectKey, String>,
}

/// Where a value comes from: file, 1-based document number, the path of a List item (`items[2]`), and whether
/// the text was JSON (whose objects are measured one by one).
#[derive(Clone)]
struct Position<'a> {
    file: &'a str,
    document: usize,
    prefix: String,
    json: bool,
}

/// What a document turned out to be.
enum Identified {
    Object(Kind),
    List,
}

// === impl Batch ===

impl Batch {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            limited: true,
            objects: Vec::new(),
            keys: Vec::new(),
            diagnostics: Vec::new(),
            first: HashMap::new(),
        }
    }

    fn finish(self) -> Result<(Vec<Object>, Vec<ObjectKey>), Vec<Diagnostic>> {
        match self.diagnostics.is_empty() {
            true => Ok((self.objects, self.keys)),
            false => Err(self.diagnostics),
        }
    }

    fn text(&mut self, file: &str, text: &str) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if self.limited && text.len() > MAX_TEXT_BYTES {
            let message = format!(
                "the text has {} bytes; the limit is 8 MiB ({MAX_TEXT_BYTES} bytes)",
                text.len()
            );
            return self.diagnostics.push(at(file, 0, "", None, message));
        }
        if text.trim_start().starts_with(['{', '[']) {
            self.json(file, text);
        } else {
            self.yaml(file, text);
        }
    }

    fn json(&mut self, file: &str, text: &str) {
        let position = Position::new(file, 1, true);
        match documents::parse_json(text) {
            Err(message) => self.fail(&position, None, "", message),
            Ok(Value::Array(items)) => self.add_items(items, &position, ""),
            Ok(value) => self.add(value, &position),
        }
    }

    /// A JSON v1 `List`, its items added one at a time as they are read.
    fn json_list(&mut self, file: &str, text: &str) {
        use serde::de::DeserializeSeed;
        let position = Position::new(file, 1, true);
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let seed = ListSeed {
            batch: self,
            position: &position,
        };
        let header = seed.deserialize(&mut deserializer).and_then(|header| {
            deserializer.end()?;
            Ok(header)
        });
        match header {
            Err(error) => self.fail(&position, None, "", format!("invalid JSON: {error}")),
            Ok(header) => {
                let text = |key: &str| header.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
                if (text("apiVersion"), text("kind")) != ("v1".into(), "List".into()) {
                    let message = "a cluster source must be a JSON v1 List".to_string();
                    self.fail(&position, None, "", message);
                }
            }
        }
    }

    fn yaml(&mut self, file: &str, text: &str) {
        for ((lines_before, document), number) in documents::split(text).into_iter().zip(1..) {
            let position = Position::new(file, number, false);
            if self.limited && document.len() > MAX_DOCUMENT_BYTES {
                let message = size_message("document", document.len());
                self.fail(&position, None, "", message);
                continue;
            }
            match documents::parse_yaml(document, lines_before) {
                Ok(None) => {}
                Ok(Some(value)) => self.add(value, &position),
                Err(message) => self.fail(&position, None, "", message),
            }
        }
    }

    /// Adds one document, or List item.
    fn add(&mut self, value: Value, position: &Position<'_>) {
        match identify(&value) {
            Err((field, message)) => self.fail(position, None, field, message),
            Ok(Identified::List) => match list_items(value) {
                Some(items) => self.add_items(items, position, "items"),
                None => self.fail(position, None, "items", "must be a list of objects".to_string()),
            },
            Ok(Identified::Object(kind)) => self.add_object(kind, value, position),
        }
    }

    /// Adds the items of a List (`field` "items") or of a top-level JSON array (`field` "").
    fn add_items(&mut self, items: Vec<Value>, position: &Position<'_>, field: &str) {
        for (item, i) in items.into_iter().zip(0..) {
            let prefix = validate::index(&position.prefix, field, i);
            self.add(item, &position.at(prefix));
        }
    }

    fn add_object(&mut self, kind: Kind, value: Value, position: &Position<'_>) {
        let label = label(kind, &value);
        let size = if position.json && self.limited {
            value.to_string().len()
        } else {
            0
        };
        if size > MAX_DOCUMENT_BYTES {
            return self.fail(position, Some(label), "", size_message("object", size));
        }
        let result = match self.mode {
            Mode::Objects => validate::object(kind, value).map(|object| (object.key(), Some(object))),
            Mode::Keys => raw_key(kind, &value).map(|key| (key, None)),
        };
        match result {
            Ok((key, object)) => self.claim(key, object, position, label),
            Err(findings) => {
                for finding in findings {
                    self.fail(position, Some(label.clone()), &finding.field, finding.message);
                }
            }
        }
    }

    /// Records a valid object, unless its key was already defined (an error, except for keys only).
    fn claim(&mut self, key: ObjectKey, object: Option<Object>, position: &Position<'_>, label: String) {
        match self.first.entry(key.clone()) {
            Entry::Occupied(first) if self.mode == Mode::Objects => {
                let message = format!("duplicate {key}; first defined in {}", first.get());
                self.fail(position, Some(label), "metadata.name", message);
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(entry) => {
                entry.insert(position.location());
                self.keys.push(key);
                self.objects.extend(object);
            }
        }
    }

    fn fail(&mut self, position: &Position<'_>, object: Option<String>, field: &str, message: String) {
        let field = validate::join(&position.prefix, field);
        let diagnostic = at(position.file, position.document, &field, object, message);
        self.diagnostics.push(diagnostic);
    }
}

/// Reads a JSON object, passing each element of its `items` to the batch as soon as it is read; the other fields
/// (`apiVersion`, `kind`, ...) are returned.
struct ListSeed<'b, 'p, 'f> {
    batch: &'b mut Batch,
    position: &'p Position<'f>,
}

impl<'de> serde::de::DeserializeSeed<'de> for ListSeed<'_, '_, '_> {
    type Value = serde_json::Map<String, Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ListSeed<'_, '_, '_> {
    type Value = serde_json::Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a v1 List")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut header = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                map.next_value_seed(ItemsSeed {
                    batch: &mut *self.batch,
                    position: self.position,
                })?;
            } else {
                header.insert(key, map.next_value()?);
            }
        }
        Ok(header)
    }
}

/// The `items` of a [`ListSeed`], added one by one.
struct ItemsSeed<'b, 'p, 'f> {
    batch: &'b mut Batch,
    position: &'p Position<'f>,
}

impl<'de> serde::de::DeserializeSeed<'de> for ItemsSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemsSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(item) = seq.next_element::<Value>()? {
            let prefix = validate::index(&self.position.prefix, "items", index);
            self.batch.add(item, &self.position.at(prefix));
            index += 1;
        }
        Ok(())
    }
}

fn at(file: &str, document: usize, field: &str, object: Option<String>, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        document,
        object,
        field: field.to_string(),
        message,
    }
}

fn size_message(what: &str, size: usize) -> String {
    format!("the {what} has {size} bytes; the limit is 1 MiB ({MAX_DOCUMENT_BYTES} bytes)")
}

/// Finds the kind of a document from its `apiVersion` and `kind`.
fn identify(value: &Value) -> Result<Identified, Problem> {
    let Value::Object(map) = value else {
        let found = type_name(value);
        return Err((
            "",
            format!("an object must be a mapping with apiVersion and kind, not {found}"),
        ));
    };
    let kind = required_string(map, "kind")?;
    let api_version = required_string(map, "apiVersion")?;
    if kind == "List" {
        return match api_version {
            "v1" => Ok(Identified::List),
            _ => Err(("apiVersion", format!("List is apiVersion \"v1\", not {api_version:?}"))),
        };
    }
    let Some(found) = Kind::ALL.into_iter().find(|known| known.name() == kind) else {
        let message = format!(
            "unknown kind {kind:?} (apiVersion {api_version:?}); supported: {}",
            supported()
        );
        return Err(("kind", message));
    };
    if !found.api_versions().contains(&api_version) {
        let expected: Vec<String> = found.api_versions().iter().map(|v| format!("{v:?}")).collect();
        let message = format!("{kind} is apiVersion {}, not {api_version:?}", expected.join(" or "));
        return Err(("apiVersion", message));
    }
    Ok(Identified::Object(found))
}

/// "Namespace (v1), ..., GRPCRoute (gateway.networking.k8s.io/v1), List (v1)".
fn supported() -> String {
    let kinds = Kind::ALL
        .iter()
        .map(|kind| format!("{kind} ({})", kind.api_versions().join(" or ")));
    let kinds: Vec<String> = kinds.chain(["List (v1)".to_string()]).collect();
    kinds.join(", ")
}

/// The key from the raw `metadata` (for [`parse_keys`]): the name is required.
fn raw_key(kind: Kind, value: &Value) -> Result<ObjectKey, Vec<validate::Finding>> {
    let (namespace, name) = raw_identity(value);
    match name {
        Some(name) => Ok(ObjectKey::new(kind, namespace.unwrap_or(DEFAULT_NAMESPACE), name)),
        None => Err(vec![validate::Finding {
            field: "metadata.name".to_string(),
            message: "required".to_string(),
        }]),
    }
}

/// `metadata.namespace` and `metadata.name`, when they are non-empty strings.
fn raw_identity(value: &Value) -> (Option<&str>, Option<&str>) {
    let field = |key| {
        let text = value.get("metadata")?.get(key)?.as_str()?;
        Some(text).filter(|text| !text.is_empty())
    };
    (field("namespace"), field("name"))
}

/// "AuthorizationPolicy web/deny-all", "Namespace web"; just the kind when the name is missing.
fn label(kind: Kind, value: &Value) -> String {
    match raw_identity(value) {
        (_, None) => kind.name().to_string(),
        (namespace, Some(name)) => ObjectKey::new(kind, namespace.unwrap_or(DEFAULT_NAMESPACE), name).to_string(),
    }
}

// === impl Position ===

impl<'a> Position<'a> {
    fn new(file: &'a str, document: usize, json: bool) -> Self {
        Self {
            file,
            document,
            prefix: String::new(),
            json,
        }
    }

    /// The position of an item inside this one.
    fn at(&self, prefix: String) -> Self {
        Self { prefix, ..self.clone() }
    }

    /// "policies.yaml document 2", "policies.yaml document 1 items[3]".
    fn location(&self) -> String {
        let place = format!("{} document {}", self.file, self.document);
        match self.prefix.as_str() {
            "" => place,
            prefix => format!("{place} {prefix}"),
        }
    }
}

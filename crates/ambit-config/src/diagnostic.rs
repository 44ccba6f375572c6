//! `Diagnostic`: one problem with the objects given to [`crate::parse`] or the [`crate::Store`], located by file,
//! document, object and field path.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One problem, located as exactly as known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file (or other source name) as given; empty when not about a text (e.g. a store check).
    pub file: String,
    /// 1-based index of the YAML document within the file (empty documents count); 0 when not about a document.
    pub document: usize,
    /// The object, e.g. "AuthorizationPolicy web/deny-all" or "Namespace web", when known.
    pub object: Option<String>,
    /// The field path, e.g. `spec.rules[0].from[0].source.principals[1]`; empty when about the whole object.
    pub field: String,
    pub message: String,
}

// === impl Diagnostic ===

impl Diagnostic {
    /// A problem with an object that is not located in a text: a check of the store.
    pub fn object(object: impl fmt::Display, field: &str, message: impl Into<String>) -> Self {
        Self {
            file: String::new(),
            document: 0,
            object: Some(object.to_string()),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    /// `<file>: document <n>: <object>: <field>: <message>`, leaving out the parts that are empty (or 0).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let document = match self.document {
            0 => String::new(),
            n => format!("document {n}"),
        };
        let object = self.object.as_deref().unwrap_or_default();
        let parts = [self.file.as_str(), &document, object, &self.field];
        for part in parts.into_iter().filter(|part| !part.is_empty()) {
            write!(f, "{part}: ")?;
        }
        f.write_str(&self.message)
    }
}

//! Metadata patches: label and annotation changes made through the API (`ambit label`, `ambit annotate`, the node
//! agent's `ambient.istio.io/redirection` annotation) to the objects a cluster source feeds. The source rewrites
//! its objects whole, so a patch is kept as a layer (the keys it sets and the keys it removes) that the
//! [`crate::Store`] lays over the source's object every time the source changes it.
//!
//! A patch is a JSON merge patch of `metadata.labels` and `metadata.annotations` (`null` removes a key), checked
//! with Kubernetes' rules: keys are qualified names (an optional DNS subdomain prefix of at most 253 characters and
//! `/`, then a name of at most 63), label values at most 63 characters of `A-Za-z0-9-_.` starting and ending
//! alphanumeric, and an object's annotations at most 256 KiB in all.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::kind::{Kind, ObjectKey};
use crate::object::{DEFAULT_NAMESPACE, Object};
use crate::syntax;
use crate::validate::{self, Findings};

/// The kinds whose metadata may be patched: those a node agent and users mark (enrollment and redirection).
pub const PATCHABLE_KINDS: [Kind; 2] = [Kind::Pod, Kind::Namespace];

/// Changes of an object's labels and annotations: each key set to a value, or removed (`None`, JSON `null`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataPatch {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, Option<String>>,
}

/// A patch of one object, as the API receives it (`POST /v1/patch`) and the config store file keeps it:
/// `{"kind":"Pod","namespace":"web","name":"a","uid":"...","metadata":{"labels":{"k":"v","gone":null}}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectPatch {
    pub kind: Kind,
    /// The object's namespace (`default` when empty); ignored for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    /// The uid of the object the patch is for: a patch of a re-created object (another uid) is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default)]
    pub metadata: MetadataPatch,
}

/// A patch as the store keeps it: the accumulated changes and, for a Pod, the uid of the pod they were made for
/// (a pod re-created under the same name does not inherit them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredPatch {
    pub uid: Option<String>,
    pub metadata: MetadataPatch,
}

/// Why the store refused a patch; the store is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchError {
    /// The kind's metadata is not patched (only [`PATCHABLE_KINDS`]).
    NotPatchable(Kind),
    /// No such object in the store.
    NotFound(ObjectKey),
    /// The object exists but has another uid than the one given: it was re-created.
    OtherUid {
        key: ObjectKey,
        expected: String,
        found: Option<String>,
    },
    /// Keys or values break Kubernetes' rules; each diagnostic names the field path (`metadata.labels["key"]`).
    Invalid(Vec<Diagnostic>),
}

/// The Kubernetes limit on the total size of an object's annotations (keys and values).
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Labels and annotations as Kubernetes' metadata holds them.
type Map = BTreeMap<String, String>;

// === impl MetadataPatch ===

impl MetadataPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }

    /// Checks every key and value with Kubernetes' rules; the problems name `object` and the field path of the key
    /// (`metadata.labels["Bad key"]`). Removed keys are checked too: a key that cannot exist cannot be removed.
    pub fn check(&self, object: &ObjectKey) -> Result<(), Vec<Diagnostic>> {
        let mut findings = Findings::default();
        for (key, value) in &self.labels {
            let at = validate::map_path("metadata.labels", key);
            if findings.check(&at, key, syntax::qualified_name)
                && let Some(value) = value
            {
                findings.check(&at, value, syntax::label_value);
            }
        }
        for key in self.annotations.keys() {
            findings.check(
                &validate::map_path("metadata.annotations", key),
                key,
                syntax::qualified_name,
            );
        }
        findings.diagnostics(object)
    }

    /// Merges `later` into this patch, as applying this one and then `later` would: `later`'s keys win.
    pub fn merge(&mut self, later: &MetadataPatch) {
        let merge = |into: &mut BTreeMap<String, Option<String>>, from: &BTreeMap<String, Option<String>>| {
            into.extend(from.iter().map(|(key, value)| (key.clone(), value.clone())));
        };
        merge(&mut self.labels, &later.labels);
        merge(&mut self.annotations, &later.annotations);
    }

    /// Applies the patch to `object`'s labels and annotations (kinds without Kubernetes metadata, Istio's policy
    /// types, are left as they are). A map the patch leaves empty is removed, as the API server stores it.
    pub fn apply_to(&self, object: &mut Object) {
        let Some(meta) = object.k8s_meta_mut() else { return };
        apply_map(&mut meta.labels, &self.labels);
        apply_map(&mut meta.annotations, &self.annotations);
    }
}

/// Sets and removes `changes`' keys in `map`; `None` when the map ends up empty. A map without changes is kept
/// as it is.
fn apply_map(map: &mut Option<Map>, changes: &BTreeMap<String, Option<String>>) {
    if changes.is_empty() {
        return;
    }
    let mut current = map.take().unwrap_or_default();
    for (key, value) in changes {
        match value {
            Some(value) => current.insert(key.clone(), value.clone()),
            None => current.remove(key),
        };
    }
    *map = (!current.is_empty()).then_some(current);
}

/// Checks the total size of an object's annotations (keys and values), as the API server does.
pub(crate) fn check_annotations_size(object: &Object) -> Result<(), Vec<Diagnostic>> {
    let size: usize = object.annotations().iter().map(|(k, v)| k.len() + v.len()).sum();
    if size <= MAX_ANNOTATIONS_BYTES {
        return Ok(());
    }
    let message = format!("must total at most 256 KiB (they would have {size} bytes)");
    Err(vec![Diagnostic::object(object.key(), "metadata.annotations", message)])
}

// === impl ObjectPatch ===

impl ObjectPatch {
    /// The key of the patched object: a namespaced object without a namespace is in `default`.
    pub fn key(&self) -> ObjectKey {
        let namespace = if self.namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            &self.namespace
        };
        ObjectKey::new(self.kind, namespace, &self.name)
    }

    /// The record of a stored patch (what the config store file keeps).
    pub fn from_stored(key: &ObjectKey, stored: &StoredPatch) -> Self {
        Self {
            kind: key.kind,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid: stored.uid.clone(),
            metadata: stored.metadata.clone(),
        }
    }
}

// === impl PatchError ===

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::NotPatchable(kind) => {
                let kinds: Vec<&str> = PATCHABLE_KINDS.iter().map(|kind| kind.name()).collect();
                write!(f, "{kind} metadata cannot be patched; only {}", kinds.join(" and "))
            }
            PatchError::NotFound(key) => write!(f, "{key} not found"),
            PatchError::OtherUid { key, expected, found } => {
                let found = found.as_deref().unwrap_or("none");
                write!(f, "{key} has uid {found}, not {expected}: it was re-created")
            }
            PatchError::Invalid(diagnostics) => {
                let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("; "))
            }
        }
    }
}

impl std::error::Error for PatchError {}

#[cfg(test)]
mod tests;

//! Validation of one identified document into a typed [`Object`], with every problem found at its field path.
//!
//! The stages: top-level fields (strict kinds reject unknown ones), `metadata` (checked as the API server checks
//! it, defaulted, and for the config kinds reduced to name, namespace, labels and annotations, because the store
//! owns the rest), deserialization into the kind's type (a type error stops there), and the kind's own checks
//! (`policy`, `gateway`, `route`, `kube`). Checks go on after a problem so that one pass reports them all.

mod gateway;
mod kube;
mod policy;
mod route;

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::kind::{Kind, ObjectKey};
use crate::object::{DEFAULT_NAMESPACE, Object};
use crate::syntax::{self, Rule};

/// The top-level fields of an object of a strict kind. `status` is accepted (as the API server does on the main
/// resource) and dropped.
const TOP_LEVEL_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// The fields of Kubernetes' ObjectMeta: anything else in `metadata` of a strict kind is an unknown field.
const METADATA_FIELDS: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// The metadata the store keeps of a config object; the rest is the store's to set.
const KEPT_METADATA: [&str; 4] = ["name", "namespace", "labels", "annotations"];

/// The Kubernetes limit on the total size of an object's annotations (keys and values).
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// One problem: the field path (empty for the whole object) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    pub field: String,
    pub message: String,
}

/// The problems found so far in one object.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    list: Vec<Finding>,
}

/// Validates an identified document (a mapping whose `apiVersion` and `kind` name `kind`) into an object.
pub(crate) fn object(kind: Kind, mut value: Value) -> Result<Object, Vec<Finding>> {
    let mut findings = Findings::default();
    if let Value::Object(map) = &mut value {
        top_level(kind, map, &mut findings);
        if !metadata(kind, map, &mut findings) {
            return Err(findings.list);
        }
    }
    let object = match typed(kind, value) {
        Ok(object) => object,
        Err(finding) => {
            findings.error_once(&finding.field, finding.message);
            return Err(findings.list);
        }
    };
    check(&object, &mut findings);
    findings.finish(object)
}

/// Validates an object built elsewhere (not parsed), by its JSON form: the same checks as [`object`].
pub(crate) fn again(object: &Object) -> Result<Object, Vec<Finding>> {
    self::object(object.kind(), object.to_json())
}

/// Checks the top-level fields and drops those that are not part of the typed object.
fn top_level(kind: Kind, map: &mut Map<String, Value>, findings: &mut Findings) {
    if kind.is_config() {
        for key in map.keys().filter(|key| !TOP_LEVEL_FIELDS.contains(&key.as_str())) {
            findings.error(key, unknown_field(key, &TOP_LEVEL_FIELDS));
        }
        map.retain(|key, _| key == "metadata" || key == "spec");
        match map.get("spec") {
            Some(Value::Object(_)) | None => {}
            Some(Value::Null) => _ = map.remove("spec"),
            Some(_) => {
                findings.error("spec", "must be a mapping");
                map.remove("spec");
            }
        }
    }
    map.remove("apiVersion");
    map.remove("kind");
}

/// Checks `metadata`, defaults the namespace, and reduces a config object's metadata to what the store keeps.
/// False if it is not even a mapping: then nothing else can be checked.
fn metadata(kind: Kind, map: &mut Map<String, Value>, findings: &mut Findings) -> bool {
    let entry = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = entry else {
        findings.error("metadata", "must be a mapping");
        return false;
    };
    if kind.is_config() {
        for key in meta.keys().filter(|key| !METADATA_FIELDS.contains(&key.as_str())) {
            findings.error(&format!("metadata.{key}"), unknown_field(key, &METADATA_FIELDS));
        }
        meta.retain(|key, _| KEPT_METADATA.contains(&key.as_str()));
    }
    default_namespace(kind, meta);
    match deserialize::<ObjectMeta>(Value::Object(meta.clone()), "metadata") {
        Ok(typed) => check_metadata(kind, &typed, findings),
        Err(finding) => findings.list.push(finding),
    }
    true
}

/// Namespaced objects without a namespace are in `default`; cluster-scoped ones have none.
fn default_namespace(kind: Kind, meta: &mut Map<String, Value>) {
    if !kind.namespaced() {
        meta.remove("namespace");
        return;
    }
    let unset = match meta.get("namespace") {
        None | Some(Value::Null) => true,
        Some(Value::String(namespace)) => namespace.is_empty(),
        Some(_) => false,
    };
    if unset {
        meta.insert("namespace".into(), DEFAULT_NAMESPACE.into());
    }
}

fn check_metadata(kind: Kind, meta: &ObjectMeta, findings: &mut Findings) {
    match meta.name.as_deref().filter(|name| !name.is_empty()) {
        None => findings.error("metadata.name", "required"),
        Some(name) => {
            findings.check("metadata.name", name, name_rule(kind));
        }
    }
    if let Some(namespace) = &meta.namespace {
        findings.check("metadata.namespace", namespace, syntax::dns_label);
    }
    labels(meta.labels.iter().flatten(), "metadata.labels", findings);
    annotations(meta.annotations.iter().flatten(), "metadata.annotations", findings);
}

/// The syntax of the kind's names: DNS labels for Namespaces, RFC 1035 labels for Services (as Kubernetes
/// requires), DNS subdomains for the rest.
fn name_rule(kind: Kind) -> Rule {
    match kind {
        Kind::Namespace => syntax::dns_label,
        Kind::Service => syntax::dns_1035_label,
        _ => syntax::dns_subdomain,
    }
}

/// Checks label keys and values at `field` (e.g. `metadata.labels`).
pub(crate) fn labels<'a>(labels: impl Iterator<Item = (&'a String, &'a String)>, field: &str, f: &mut Findings) {
    for (key, value) in labels {
        let at = map_path(field, key);
        if f.check(&at, key, syntax::qualified_name) {
            f.check(&at, value, syntax::label_value);
        }
    }
}

/// Checks annotation keys at `field` and their total size.
fn annotations<'a>(annotations: impl Iterator<Item = (&'a String, &'a String)>, field: &str, f: &mut Findings) {
    let mut size = 0;
    for (key, value) in annotations {
        f.check(&map_path(field, key), key, syntax::qualified_name);
        size += key.len() + value.len();
    }
    if size > MAX_ANNOTATIONS_BYTES {
        f.error(field, format!("must total at most 256 KiB (they have {size} bytes)"));
    }
}

/// Deserializes the checked value into the kind's type.
fn typed(kind: Kind, value: Value) -> Result<Object, Finding> {
    Ok(match kind {
        Kind::Namespace => Object::Namespace(deserialize(value, "")?),
        Kind::ServiceAccount => Object::ServiceAccount(deserialize(value, "")?),
        Kind::Pod => Object::Pod(deserialize(value, "")?),
        Kind::Service => Object::Service(deserialize(value, "")?),
        Kind::AuthorizationPolicy => Object::AuthorizationPolicy(deserialize(value, "")?),
        Kind::PeerAuthentication => Object::PeerAuthentication(deserialize(value, "")?),
        Kind::Gateway => Object::Gateway(deserialize(value, "")?),
        Kind::HttpRoute => Object::HttpRoute(deserialize(value, "")?),
        Kind::GrpcRoute => Object::GrpcRoute(deserialize(value, "")?),
    })
}

/// The kind's own checks of a typed object.
fn check(object: &Object, findings: &mut Findings) {
    match object {
        Object::Namespace(_) | Object::ServiceAccount(_) => {}
        Object::Pod(pod) => kube::pod(pod, findings),
        Object::Service(service) => kube::service(service, findings),
        Object::AuthorizationPolicy(policy) => policy::authorization_policy(policy, findings),
        Object::PeerAuthentication(policy) => policy::peer_authentication(policy, findings),
        Object::Gateway(gateway) => gateway::gateway(gateway, findings),
        Object::HttpRoute(route) => route::http_route(route, findings),
        Object::GrpcRoute(route) => route::grpc_route(route, findings),
    }
}

/// Deserializes `value` (found at `prefix`), giving a type error at its field path.
fn deserialize<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, Finding> {
    serde_path_to_error::deserialize(value).map_err(|error| Finding {
        field: join(prefix, &path_text(error.path())),
        message: error.inner().to_string(),
    })
}

/// The field path as this crate writes it: `spec.rules[0].from`, `metadata.labels["app.kubernetes.io/name"]`.
fn path_text(path: &serde_path_to_error::Path) -> String {
    let mut text = String::new();
    for segment in path {
        match segment {
            serde_path_to_error::Segment::Seq { index } => _ = write!(text, "[{index}]"),
            serde_path_to_error::Segment::Map { key } => text = map_path(&text, key),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    text
}

/// `field.key` for a plain key, `field[8080]` for a number, `field["key"]` for any other.
pub(crate) fn map_path(field: &str, key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let number = !key.is_empty() && key.chars().all(|c| c.is_ascii_digit());
    match (plain, number) {
        (true, _) => join(field, key),
        (_, true) => format!("{field}[{key}]"),
        _ => format!("{field}[{key:?}]"),
    }
}

fn unknown_field(key: &str, known: &[&str]) -> String {
    let known: Vec<String> = known.iter().map(|name| format!("`{name}`")).collect();
    format!("unknown field `{key}`, expected one of {}", known.join(", "))
}

/// `a.b`, or just one of them when the other is empty.
pub(crate) fn join(path: &str, field: &str) -> String {
    match (path.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (_, true) => path.to_string(),
        _ => format!("{path}.{field}"),
    }
}

/// `path.field[index]`.
pub(crate) fn index(path: &str, field: &str, index: usize) -> String {
    format!("{}[{index}]", join(path, field))
}

// === impl Findings ===

impl Findings {
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        let (field, message) = (field.to_string(), message.into());
        self.list.push(Finding { field, message });
    }

    /// Records a problem unless one is already recorded at the same field (two checks of the same rule).
    pub fn error_once(&mut self, field: &str, message: impl Into<String>) {
        if !self.list.iter().any(|finding| finding.field == field) {
            self.error(field, message);
        }
    }

    /// Checks `value` at `field` with `rule`; whether it passed.
    pub fn check(&mut self, field: &str, value: &str, rule: Rule) -> bool {
        let result = rule(value);
        if let Err(reason) = &result {
            self.error(field, format!("{value:?} {reason}"));
        }
        result.is_ok()
    }

    /// Checks an optional value.
    pub fn check_some(&mut self, field: &str, value: Option<&String>, rule: Rule) {
        if let Some(value) = value {
            self.check(field, value, rule);
        }
    }

    /// A port number: 1 to 65535.
    pub fn port(&mut self, field: &str, port: i32) {
        self.range(field, port, 1, 65535);
    }

    /// A number from `min` to `max`.
    pub fn range(&mut self, field: &str, value: i32, min: i32, max: i32) {
        if !(min..=max).contains(&value) {
            self.error(
                field,
                format!("{value} is out of range: use a number from {min} to {max}"),
            );
        }
    }

    /// A list of at most `max` items.
    pub fn at_most<T>(&mut self, field: &str, items: &[T], max: usize) {
        if items.len() > max {
            self.error(field, format!("has {} items; at most {max} are allowed", items.len()));
        }
    }

    /// A required, non-empty string.
    pub fn required(&mut self, field: &str, value: &str) -> bool {
        if value.is_empty() {
            self.error(field, "required");
        }
        !value.is_empty()
    }

    fn finish(self, object: Object) -> Result<Object, Vec<Finding>> {
        if self.list.is_empty() {
            Ok(object)
        } else {
            Err(self.list)
        }
    }

    /// Ok when nothing was found, else the findings as diagnostics about `object`.
    pub fn diagnostics(self, object: &ObjectKey) -> Result<(), Vec<crate::Diagnostic>> {
        if self.list.is_empty() {
            return Ok(());
        }
        let diagnostic = |f: Finding| crate::Diagnostic::object(object, &f.field, f.message);
        Err(self.list.into_iter().map(diagnostic).collect())
    }
}

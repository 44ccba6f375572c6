//! Checks of `metadata` shared by all Kubernetes kinds, and the registry that finds duplicate objects.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::document::DEFAULT_NAMESPACE;
use super::plan::Context;
use super::syntax::{self, Rule};
use super::{Labels, Scope};

/// The Kubernetes kinds, as far as names go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Namespace,
    ServiceAccount,
    Pod,
    Deployment,
    Service,
    AuthorizationPolicy,
    PeerAuthentication,
    Gateway,
    HttpRoute,
    GrpcRoute,
}

/// The checked identity and metadata of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Meta {
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub annotations: Labels,
}

/// Where each object (kind, namespace, name) was first defined.
#[derive(Debug, Default)]
pub(super) struct Registry {
    first: HashMap<(Kind, String, String), String>,
}

/// Checks an object's metadata and records it in the registry: its identity if usable, and whether it is the
/// first object of its kind with that namespace and name.
pub(super) fn register(
    kind: Kind,
    meta: &ObjectMeta,
    context: &mut Context<'_>,
    scope: &mut Scope<'_>,
) -> (Option<Meta>, bool) {
    let checked = check(kind, meta, context, scope);
    let Some(meta) = &checked else {
        return (None, false);
    };
    let fresh = context.registry.claim_defined(kind, meta, scope);
    (checked, fresh)
}

/// Checks `metadata`: the name (required), the namespace (must be declared), labels and annotations. Returns
/// None if the name or namespace is unusable.
fn check(kind: Kind, meta: &ObjectMeta, context: &Context<'_>, scope: &mut Scope<'_>) -> Option<Meta> {
    let (labels, annotations) = labels_and_annotations(meta, &mut scope.at("metadata"));
    let name = check_name(meta.name.as_deref(), kind.rule(), scope);
    let namespace = match kind {
        Kind::Namespace => Some(String::new()),
        _ => check_namespace(meta, context, scope),
    };
    let (namespace, name) = (namespace?, name?);
    Some(Meta {
        namespace,
        name,
        labels,
        annotations,
    })
}

/// The labels and annotations of `meta`, checked (`scope` is at the metadata).
pub(super) fn labels_and_annotations(meta: &ObjectMeta, scope: &mut Scope<'_>) -> (Labels, Labels) {
    let labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    syntax::check_labels(&labels, "labels", scope);
    syntax::check_annotations(&annotations, "annotations", scope);
    (labels, annotations)
}

fn check_name(name: Option<&str>, rule: Rule, scope: &mut Scope<'_>) -> Option<String> {
    let Some(name) = name.filter(|name| !name.is_empty()) else {
        return scope.fail("metadata.name", "required");
    };
    let valid = scope.valid("metadata.name", name, "name", rule);
    valid.then(|| name.to_string())
}

/// The object's namespace (`default` if unset), which must be declared.
fn check_namespace(meta: &ObjectMeta, context: &Context<'_>, scope: &mut Scope<'_>) -> Option<String> {
    let namespace = meta.namespace.as_deref().filter(|ns| !ns.is_empty());
    let namespace = namespace.unwrap_or(DEFAULT_NAMESPACE);
    if context.namespaces.contains(namespace) {
        return Some(namespace.to_string());
    }
    let message = format!("namespace {namespace:?} is not defined; add a Namespace document");
    scope.fail("metadata.namespace", message)
}

/// "namespace/name", or just the name if there is no namespace.
pub(super) fn qualified(namespace: &str, name: &str) -> String {
    match namespace {
        "" => name.to_string(),
        namespace => format!("{namespace}/{name}"),
    }
}

// === impl Kind ===

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
        }
    }

    /// The syntax of the kind's names: labels for Namespaces, RFC 1035 labels for Services, else subdomains.
    fn rule(self) -> Rule {
        match self {
            Kind::Namespace => syntax::dns_label,
            Kind::Service => syntax::dns_1035_label,
            Kind::ServiceAccount
            | Kind::Pod
            | Kind::Deployment
            | Kind::AuthorizationPolicy
            | Kind::PeerAuthentication
            | Kind::Gateway
            | Kind::HttpRoute
            | Kind::GrpcRoute => syntax::dns_subdomain,
        }
    }
}

// === impl Meta ===

impl Meta {
    /// "default/web", or just the name for cluster-scoped objects.
    pub fn qualified(&self) -> String {
        qualified(&self.namespace, &self.name)
    }
}

// === impl Registry ===

impl Registry {
    /// Records an object; if one with the same kind, namespace and name exists, returns where it was defined.
    pub fn claim(&mut self, kind: Kind, meta: &Meta, location: String) -> Result<(), &str> {
        let key = (kind, meta.namespace.clone(), meta.name.clone());
        match self.first.entry(key) {
            Entry::Occupied(first) => Err(first.into_mut()),
            Entry::Vacant(entry) => {
                entry.insert(location);
                Ok(())
            }
        }
    }

    /// Records the object being checked, reporting a duplicate at `metadata.name`. Returns whether it was new.
    fn claim_defined(&mut self, kind: Kind, meta: &Meta, scope: &mut Scope<'_>) -> bool {
        let location = scope.origin.location();
        let Err(first) = self.claim(kind, meta, location) else {
            return true;
        };
        let object = meta.qualified();
        let message = format!("duplicate {} {object}; first defined in {first}", kind.name());
        scope.error("metadata.name", message);
        false
    }
}

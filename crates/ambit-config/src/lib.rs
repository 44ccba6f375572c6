//! The control plane's config store, pure: Kubernetes-shaped objects parsed from YAML or JSON ([`parse`]),
//! validated as the API server and Istio's webhook would, kept with generations and resource versions
//! ([`Store`]), and given Istio's policy status ([`policy_status`]). No IO and no async runtime here: the
//! control plane reads the texts, calls in, and serves or persists what comes out.
//!
//! Two sources feed the store: users apply the config kinds (AuthorizationPolicy, PeerAuthentication, Gateway,
//! HTTPRoute, GRPCRoute); a cluster source (the local cluster, or later the Kubernetes API) replaces the
//! Kubernetes kinds (Namespace, ServiceAccount, Pod, Service) as a whole. Label and annotation changes of the
//! source's Pods and Namespaces ([`patch`]: `ambit label`, the node agent's marks) are kept as a layer over it.
//!
//! The building blocks of parsing and validation that are not specific to the store are public, for the local
//! cluster's manifest loader: [`documents`] (YAML documents, JSON, header fields) and [`syntax`] (the Kubernetes
//! name and value rules).

#![forbid(unsafe_code)]

mod diagnostic;
pub mod documents;
pub mod gateway;
mod kind;
mod object;
mod parse;
pub mod patch;
mod status;
mod store;
pub mod syntax;
mod validate;

#[cfg(test)]
mod tests;

pub use ambit_policy::istio;
pub use diagnostic::Diagnostic;
pub use kind::{Kind, ObjectKey};
pub use object::{DEFAULT_NAMESPACE, Object};
pub use parse::{MAX_DOCUMENT_BYTES, MAX_TEXT_BYTES, parse, parse_keys, parse_source, parse_sources};
pub use patch::{MetadataPatch, ObjectPatch, PatchError};
pub use status::{ZTUNNEL_ACCEPTED, policy_status, to_json_with_status};
pub use store::{Outcome, Store, Stored};

/// Istio's root namespace: policies here apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

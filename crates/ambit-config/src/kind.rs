//! The kinds the store holds, their names, API versions and scope, and the key that identifies one object.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A kind of object the store holds: four Kubernetes kinds fed by a cluster source, and five config kinds
/// applied by users (Istio security policies and Gateway API routing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Namespace,
    ServiceAccount,
    Pod,
    Service,
    AuthorizationPolicy,
    PeerAuthentication,
    Gateway,
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
}

/// The key of one object: kind, namespace (empty for cluster-scoped kinds) and name. Ordered by kind, then
/// namespace, then name, which is the order of [`crate::Store::list`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

const CORE: &[&str] = &["v1"];
const ISTIO_SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];
/// Gateway and HTTPRoute: the CRDs still serve v1beta1 beside v1, with the same schema.
const GATEWAY_API_BETA: &[&str] = &["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"];
const GATEWAY_API: &[&str] = &["gateway.networking.k8s.io/v1"];

// === impl Kind ===

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Namespace,
        Kind::ServiceAccount,
        Kind::Pod,
        Kind::Service,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
    ];

    /// The kind as written in `kind:`: "HTTPRoute", "AuthorizationPolicy", ...
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
        }
    }

    /// The lowercase plural, as in API paths and `kubectl get`: "authorizationpolicies".
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::AuthorizationPolicy => "authorizationpolicies",
            Kind::PeerAuthentication => "peerauthentications",
            Kind::Gateway => "gateways",
            Kind::HttpRoute => "httproutes",
            Kind::GrpcRoute => "grpcroutes",
        }
    }

    /// The short names kubectl accepts (from the Kubernetes, Istio and Gateway API definitions).
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace => &["ns"],
            Kind::ServiceAccount => &["sa"],
            Kind::Pod => &["po"],
            Kind::Service => &["svc"],
            Kind::AuthorizationPolicy => &["ap"],
            Kind::PeerAuthentication => &["pa"],
            Kind::Gateway => &["gtw"],
            Kind::HttpRoute | Kind::GrpcRoute => &[],
        }
    }

    /// The API group: "" for the core kinds.
    pub fn group(self) -> &'static str {
        match self.api_versions()[0].split_once('/') {
            Some((group, _)) => group,
            None => "",
        }
    }

    /// The accepted `apiVersion`s, preferred (the one the store answers with) first.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace | Kind::ServiceAccount | Kind::Pod | Kind::Service => CORE,
            Kind::AuthorizationPolicy | Kind::PeerAuthentication => ISTIO_SECURITY,
            Kind::Gateway | Kind::HttpRoute => GATEWAY_API_BETA,
            Kind::GrpcRoute => GATEWAY_API,
        }
    }

    /// Whether objects of the kind live in a namespace: all but Namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// Whether users apply the kind (`ambit apply`); the other kinds come from the cluster source.
    pub fn is_config(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::ServiceAccount | Kind::Pod | Kind::Service)
    }

    /// The kind a command-line name means, case-insensitively: the kind, its plural, a short name, or either
    /// name followed by its group (`authorizationpolicies.security.istio.io`).
    pub fn parse(name: &str) -> Option<Kind> {
        let name = name.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|kind| kind.answers_to(&name))
    }

    /// Whether the lowercase `name` names this kind.
    fn answers_to(self, name: &str) -> bool {
        let (base, group) = name.split_once('.').unwrap_or((name, ""));
        let names = [self.name().to_ascii_lowercase(), self.plural().to_string()];
        let long = names.iter().any(|known| known == base) && (group.is_empty() || group == self.group());
        long || (self.short_names().contains(&name))
    }

    /// The config kinds' names for messages: "AuthorizationPolicy, PeerAuthentication, Gateway, HTTPRoute and
    /// GRPCRoute".
    pub fn config_kind_names() -> String {
        let names: Vec<&str> = Kind::ALL
            .iter()
            .filter(|kind| kind.is_config())
            .map(|kind| kind.name())
            .collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl ObjectKey ===

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        let namespace = if kind.namespaced() { namespace } else { "" };
        Self {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// "web/deny-all", or just the name for cluster-scoped objects.
    pub fn qualified_name(&self) -> String {
        match self.namespace.as_str() {
            "" => self.name.clone(),
            namespace => format!("{namespace}/{}", self.name),
        }
    }
}

impl fmt::Display for ObjectKey {
    /// "AuthorizationPolicy web/deny-all", "Namespace web".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.qualified_name())
    }
}

//! L7 authorization for waypoints: which AuthorizationPolicies attach to a waypoint ([`attachment`]), their
//! compiled form ([`HttpPolicy`], built by [`compile_http_policy`] or [`waypoint_policies`]), the decision on one
//! HTTP request in Istio's CUSTOM → DENY → ALLOW order with AUDIT marks ([`evaluate_http`]), and the request
//! normalization that decision assumes ([`normalize_path`], [`check_method`]). No IO and no async runtime here.
//!
//! What applies to a waypoint follows istiod (`WorkloadPolicyMatcher.ShouldAttachPolicy`): only policies with
//! `targetRefs` do. A policy attaches when it names the waypoint's Gateway (same namespace), the `istio-waypoint`
//! GatewayClass (root namespace only: every waypoint), or a Service or ServiceEntry in the policy's namespace (then
//! only requests addressed to that service). Policies without `targetRefs`, selector-based or namespace- or
//! mesh-wide, never apply to a waypoint: the destination's node proxy enforces them.
//!
//! Attributes the waypoint cannot check (request authentication, Envoy metadata) and the CUSTOM action fail
//! closed as Istio does for attributes a proxy does not support: an ALLOW rule using one never matches; in a DENY,
//! AUDIT or CUSTOM rule the attribute is ignored, so the rule matches more; a CUSTOM policy that matches denies.
//! Each case is reported as an [`Issue`] on the policy.

mod attach;
mod compile;
mod evaluate;
mod path;

use std::fmt;

use serde::Serialize;

use crate::authorization::{PolicyRef, ServiceAccountMatch, StringMatch};
use crate::cidr::IpNet;
use crate::istio::PolicyAction;

pub use attach::{WAYPOINT_GATEWAY_CLASS, Waypoint, attachment};
pub use compile::{
    CompileError, Effect, HttpProblem, HttpStatus, Issue, IssueKind, compile_http_policy, waypoint_policies,
};
pub use evaluate::{HttpDecision, HttpMatch, HttpReason, HttpRequestAttrs, evaluate_http};
pub use path::{
    NormalizedPath, PathNormalization, PathTemplate, RequestRejection, TemplateError, check_method, normalize_path,
};

/// One AuthorizationPolicy compiled for a waypoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpPolicy {
    pub name: String,
    pub namespace: String,
    pub action: PolicyAction,
    /// Which requests through the waypoint the policy applies to.
    pub attachment: Attachment,
    /// One per `spec.rules` entry, at the same index; the policy matches when any rule does.
    pub rules: Vec<HttpRule>,
    /// A dry-run policy's matches are reported and never change the verdict.
    pub dry_run: bool,
    /// Where the policy is enforced other than as written.
    pub issues: Vec<Issue>,
    /// Set when the policy is invalid: it is then enforced as a placeholder that fails closed (see
    /// [`waypoint_policies`]).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "compile::display")]
    pub invalid: Option<CompileError>,
}

/// Where a policy attaches on a waypoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Attachment {
    /// The waypoint's Gateway or the waypoint GatewayClass: every request through the waypoint.
    Waypoint,
    /// Only requests addressed to one of these services.
    Services(Vec<ServiceKey>),
}

/// A Service or ServiceEntry a request is addressed to, as a `targetRef` names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceKey {
    pub kind: ServiceKind,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ServiceKind {
    /// A Kubernetes Service (core group).
    Service,
    /// An Istio ServiceEntry (`networking.istio.io`).
    ServiceEntry,
}

/// One rule: some `from` alternative, some `to` alternative and every `when` check must hold. An empty `from` or
/// `to` does not constrain, so a rule written `- {}` matches every request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRule {
    /// The `from[].source` alternatives, ORed.
    pub from: Vec<AllOf>,
    /// The `to[].operation` alternatives, ORed.
    pub to: Vec<AllOf>,
    /// The `when` conditions, ANDed.
    pub when: Vec<Check>,
    /// The rule of an ALLOW policy uses an attribute the waypoint cannot check, so it never matches.
    pub never_matches: bool,
}

/// Checks that must all hold: one `source` or one `operation`. With no checks it holds for every request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AllOf {
    pub checks: Vec<Check>,
}

/// One attribute of a request compared with a field's values and not-values (or a `when` condition's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Check {
    /// The peer's SPIFFE ID without `spiffe://`; a peer without identity has none.
    Principal(Values<StringMatch>),
    /// The namespace of the peer's identity; `*` anywhere is a wildcard, as Istio turns it into a regex.
    Namespace(Values<Glob>),
    ServiceAccount(Values<ServiceAccountMatch>),
    /// The trust domain of the peer's identity.
    TrustDomain(Values<StringMatch>),
    /// The address of the peer that connected.
    SourceIp(Values<IpNet>),
    /// The original client address (X-Forwarded-For, when the caller trusts it).
    RemoteIp(Values<IpNet>),
    DestinationIp(Values<IpNet>),
    /// The port the request was addressed to (the Service port for Service traffic).
    DestinationPort(Values<u16>),
    /// The SNI of the downstream TLS connection, when there is one.
    Sni(Values<StringMatch>),
    /// The `:authority` (or `Host`), compared case-insensitively with its port, if any.
    Host(Values<StringMatch>),
    /// The method, compared case-sensitively.
    Method(Values<StringMatch>),
    /// The normalized path without the query.
    Path(Values<PathMatch>),
    /// A request header, by lowercase name; `*` means present, even with an empty value.
    Header {
        name: String,
        values: Values<StringMatch>,
    },
}

/// A field's values (one must match, unless there are none) and not-values (none may match).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Values<T> {
    pub any_of: Vec<T>,
    pub none_of: Vec<T>,
}

/// A path pattern of `paths`/`notPaths`, matched against the normalized path without its query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: any non-empty path.
    Presence,
    /// A path with `{*}` or `{**}` segments.
    Template(PathTemplate),
}

/// A pattern where every `*` matches any run of characters, possibly empty: `team-*-prod`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct Glob(String);

// === impl HttpPolicy ===

impl HttpPolicy {
    pub fn policy_ref(&self) -> PolicyRef {
        PolicyRef::new(&self.namespace, &self.name)
    }

    /// Whether the policy applies to a request addressed to `service` (`None`: addressed to a workload).
    pub fn applies_to(&self, service: Option<&ServiceKey>) -> bool {
        match &self.attachment {
            Attachment::Waypoint => true,
            Attachment::Services(keys) => service.is_some_and(|s| keys.contains(s)),
        }
    }

    /// What to report on the policy.
    pub fn status(&self) -> HttpStatus {
        match &self.invalid {
            Some(error) => HttpStatus::Rejected { error: error.clone() },
            None if self.issues.is_empty() => HttpStatus::Applied,
            None => HttpStatus::PartiallyApplied {
                issues: self.issues.clone(),
            },
        }
    }
}

// === impl HttpRule ===

impl HttpRule {
    /// A rule that matches every request: `- {}`.
    pub fn any() -> Self {
        Self::default()
    }
}

// === impl Values ===

impl<T> Values<T> {
    /// Holds when `any_of` is empty or has a hit, and `none_of` has none.
    pub fn holds(&self, hit: impl Fn(&T) -> bool) -> bool {
        (self.any_of.is_empty() || self.any_of.iter().any(&hit)) && !self.none_of.iter().any(&hit)
    }
}

// === impl ServiceKey ===

impl ServiceKey {
    pub fn service(namespace: &str, name: &str) -> Self {
        Self {
            kind: ServiceKind::Service,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn service_entry(namespace: &str, name: &str) -> Self {
        Self {
            kind: ServiceKind::ServiceEntry,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ServiceKind::Service => "Service",
            ServiceKind::ServiceEntry => "ServiceEntry",
        };
        write!(f, "{kind} {}/{}", self.namespace, self.name)
    }
}

// === impl PathMatch ===

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Self::Suffix(suffix) => path.ends_with(suffix.as_str()),
            Self::Presence => !path.is_empty(),
            Self::Template(template) => template.matches(path),
        }
    }
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(exact) => f.write_str(exact),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
            Self::Presence => f.write_str("*"),
            Self::Template(template) => write!(f, "{template}"),
        }
    }
}

// === impl Glob ===

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self(pattern.to_string())
    }

    /// Whether all of `value` is covered: the literal parts in order, each `*` taking any run between them.
    pub fn matches(&self, value: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = value.strip_prefix(first) else {
            return false;
        };
        let middle: Vec<&str> = parts.collect();
        let Some((last, middle)) = middle.split_last() else {
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.ends_with(last)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Glob> for String {
    fn from(glob: Glob) -> String {
        glob.0
    }
}

#[cfg(test)]
mod tests;

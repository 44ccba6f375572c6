//! The decision on one HTTP request at a waypoint: which compiled policies apply to it, Istio's CUSTOM → DENY →
//! ALLOW order over them, the AUDIT and dry-run marks, and the 403 body that names the deciding policy.

use std::fmt;
use std::net::IpAddr;

use ambit_types::Identity;
use serde::Serialize;

use super::{AllOf, Check, HttpPolicy, HttpRule, ServiceKey};
use crate::authorization::{PolicyRef, StringMatch};
use crate::evaluate::Verdict;
use crate::istio::PolicyAction;

/// What the waypoint knows about one request when it checks policy. Borrowed, so building it copies nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpRequestAttrs<'a> {
    /// The client workload's verified identity from the HBONE mTLS handshake; `None` for a peer without one.
    pub source_identity: Option<&'a Identity>,
    /// The address of the client workload.
    pub source_ip: IpAddr,
    /// The original client address: from X-Forwarded-For when the waypoint trusts it, else `source_ip`.
    pub remote_ip: IpAddr,
    /// The address the client dialed: the Service VIP, or the pod IP for workload-addressed traffic.
    pub destination_ip: IpAddr,
    /// The port the client dialed: the Service port for Service traffic (never the tunnel port).
    pub destination_port: u16,
    /// The SNI of the downstream TLS connection, if the request came over one.
    pub sni: Option<&'a str>,
    /// The Service or ServiceEntry the request is addressed to; `None` for workload-addressed traffic.
    pub service: Option<&'a ServiceKey>,
    /// The method as received (upper case; see [`super::check_method`]).
    pub method: &'a str,
    /// The `:authority` (HTTP/2) or `Host` (HTTP/1.1) as received, with its port if it has one.
    pub authority: &'a str,
    /// The path as [`super::normalize_path`] returns it, without the query (anything from `?` is ignored).
    pub path: &'a str,
    /// The request headers as received (names in any case; a repeated header once per value). `:authority`,
    /// `:method` and `:path` are answered from the fields above.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// The verdict on one request, the policy and rule that decided it, and the AUDIT and dry-run marks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpDecision {
    pub verdict: Verdict,
    /// The policy whose match decided the verdict; `None` when no match decided it.
    pub policy: Option<PolicyRef>,
    /// The index in that policy's `spec.rules` of the rule that matched.
    pub rule: Option<usize>,
    pub reason: HttpReason,
    /// The AUDIT policies that matched: the request is to be audited. They never change the verdict.
    pub audit: Vec<PolicyRef>,
    /// The dry-run policies that matched: reported only, they never change the verdict.
    pub dry_run: Vec<HttpMatch>,
}

/// A policy that matched a request, and the first of its rules that matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    pub policy: PolicyRef,
    pub action: PolicyAction,
    /// Index into the policy's `spec.rules`.
    pub rule: usize,
}

/// Why the verdict is what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HttpReason {
    /// A CUSTOM policy matched; with no external authorizer the waypoint denies.
    DeniedByCustom(HttpMatch),
    /// A DENY policy matched.
    DeniedBy(HttpMatch),
    /// No CUSTOM or DENY policy matched, and an ALLOW policy did.
    AllowedBy(HttpMatch),
    /// ALLOW policies apply and none matched (the policies checked, in order).
    NoAllowPolicyMatched { allow_policies: Vec<PolicyRef> },
    /// No ALLOW policy applies, and no CUSTOM or DENY policy matched.
    NoAllowPolicies,
}

/// Decides one request against the compiled policies of its waypoint, in Istio's order:
///
/// 1. policies that do not apply to the request's service are left out (see [`HttpPolicy::applies_to`]);
/// 2. a matching CUSTOM policy denies (there is no external authorizer to ask, so the waypoint fails closed);
/// 3. a matching DENY policy denies;
/// 4. with no ALLOW policy, the request is allowed;
/// 5. a matching ALLOW policy allows;
/// 6. otherwise the request is denied.
///
/// In each step the first match in `policies` order is reported. Matching AUDIT policies are listed in
/// [`HttpDecision::audit`], and matching dry-run policies in [`HttpDecision::dry_run`]; neither changes the verdict.
pub fn evaluate_http(policies: &[HttpPolicy], attrs: &HttpRequestAttrs<'_>) -> HttpDecision {
    let request = Request::new(attrs);
    let applicable: Vec<&HttpPolicy> = policies.iter().filter(|p| p.applies_to(attrs.service)).collect();
    let enforced = |action| {
        applicable
            .iter()
            .copied()
            .filter(move |p| !p.dry_run && p.action == action)
    };
    let audit = enforced(PolicyAction::Audit)
        .filter_map(|p| HttpMatch::find(p, &request))
        .map(|m| m.policy)
        .collect();
    let dry_run = (applicable.iter().copied())
        .filter(|p| p.dry_run)
        .filter_map(|p| HttpMatch::find(p, &request))
        .collect();
    let first_match = |action| enforced(action).find_map(|p| HttpMatch::find(p, &request));
    let reason = if let Some(m) = first_match(PolicyAction::Custom) {
        HttpReason::DeniedByCustom(m)
    } else if let Some(m) = first_match(PolicyAction::Deny) {
        HttpReason::DeniedBy(m)
    } else if enforced(PolicyAction::Allow).next().is_none() {
        HttpReason::NoAllowPolicies
    } else if let Some(m) = first_match(PolicyAction::Allow) {
        HttpReason::AllowedBy(m)
    } else {
        let allow_policies = enforced(PolicyAction::Allow).map(HttpPolicy::policy_ref).collect();
        HttpReason::NoAllowPolicyMatched { allow_policies }
    };
    HttpDecision::new(reason, audit, dry_run)
}

/// A request with the values checks compare precomputed.
struct Request<'a> {
    attrs: &'a HttpRequestAttrs<'a>,
    /// The SPIFFE ID without `spiffe://`, as principals are written.
    principal: Option<String>,
    authority: String,
    path: &'a str,
}

// === impl Request ===

impl<'a> Request<'a> {
    fn new(attrs: &'a HttpRequestAttrs<'a>) -> Self {
        let principal = (attrs.source_identity).map(|id| {
            let uri = id.to_string();
            uri.strip_prefix("spiffe://").map(str::to_string).unwrap_or(uri)
        });
        Self {
            attrs,
            principal,
            authority: attrs.authority.to_ascii_lowercase(),
            path: attrs.path.split(['?', '#']).next().unwrap_or_default(),
        }
    }

    fn identity(&self) -> Option<&'a Identity> {
        self.attrs.source_identity
    }

    /// The header's values joined with `,`, as Envoy compares a repeated header; `None` when absent.
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        let attrs = self.attrs;
        let pseudo = match name {
            ":authority" => Some(attrs.authority),
            ":method" => Some(attrs.method),
            ":path" => Some(attrs.path),
            _ => None,
        };
        if let Some(value) = pseudo {
            return Some(value.as_bytes().to_vec());
        }
        let mut values = (attrs.headers.iter())
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v);
        let first = values.next()?.to_vec();
        Some(values.fold(first, |mut joined, v| {
            joined.push(b',');
            joined.extend_from_slice(v);
            joined
        }))
    }
}

// === impl HttpRule ===

impl HttpRule {
    fn holds(&self, r: &Request<'_>) -> bool {
        let any = |alternatives: &[AllOf]| alternatives.is_empty() || alternatives.iter().any(|a| a.holds(r));
        !self.never_matches && any(&self.from) && any(&self.to) && self.when.iter().all(|c| c.holds(r))
    }
}

// === impl AllOf ===

impl AllOf {
    fn holds(&self, r: &Request<'_>) -> bool {
        self.checks.iter().all(|c| c.holds(r))
    }
}

// === impl Check ===

impl Check {
    fn holds(&self, r: &Request<'_>) -> bool {
        let attrs = r.attrs;
        let id = r.identity();
        let text = |p: &StringMatch, value: Option<&str>| value.is_some_and(|v| p.matches(v));
        match self {
            Self::Principal(v) => v.holds(|p| text(p, r.principal.as_deref())),
            Self::Namespace(v) => v.holds(|g| id.is_some_and(|id| g.matches(id.namespace()))),
            Self::ServiceAccount(v) => v.holds(|sa| id.is_some_and(|id| sa.matches(id))),
            Self::TrustDomain(v) => v.holds(|p| text(p, id.map(|id| id.trust_domain().as_str()))),
            Self::SourceIp(v) => v.holds(|net| net.contains(attrs.source_ip)),
            Self::RemoteIp(v) => v.holds(|net| net.contains(attrs.remote_ip)),
            Self::DestinationIp(v) => v.holds(|net| net.contains(attrs.destination_ip)),
            Self::DestinationPort(v) => v.holds(|port| *port == attrs.destination_port),
            Self::Sni(v) => v.holds(|p| text(p, attrs.sni)),
            Self::Host(v) => v.holds(|p| p.matches(&r.authority)),
            Self::Method(v) => v.holds(|p| p.matches(attrs.method)),
            Self::Path(v) => v.holds(|p| p.matches(r.path)),
            Self::Header { name, values } => {
                let value = r.header(name);
                values.holds(|p| header_matches(p, value.as_deref()))
            }
        }
    }
}

/// Envoy's header match: `*` means present (even empty); the other patterns compare the bytes.
fn header_matches(pattern: &StringMatch, value: Option<&[u8]>) -> bool {
    let Some(value) = value else {
        return false;
    };
    match pattern {
        StringMatch::Presence => true,
        StringMatch::Exact(exact) => value == exact.as_bytes(),
        StringMatch::Prefix(prefix) => value.starts_with(prefix.as_bytes()),
        StringMatch::Suffix(suffix) => value.ends_with(suffix.as_bytes()),
    }
}

// === impl HttpMatch ===

impl HttpMatch {
    fn find(policy: &HttpPolicy, request: &Request<'_>) -> Option<Self> {
        let rule = policy.rules.iter().position(|rule| rule.holds(request))?;
        Some(Self {
            policy: policy.policy_ref(),
            action: policy.action,
            rule,
        })
    }
}

impl fmt::Display for HttpMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} policy {} (spec.rules[{}] matched)",
            self.action, self.policy, self.rule
        )
    }
}

// === impl HttpDecision ===

impl HttpDecision {
    fn new(reason: HttpReason, audit: Vec<PolicyRef>, dry_run: Vec<HttpMatch>) -> Self {
        let (verdict, matched) = match &reason {
            HttpReason::DeniedByCustom(m) | HttpReason::DeniedBy(m) => (Verdict::Deny, Some(m)),
            HttpReason::AllowedBy(m) => (Verdict::Allow, Some(m)),
            HttpReason::NoAllowPolicyMatched { .. } => (Verdict::Deny, None),
            HttpReason::NoAllowPolicies => (Verdict::Allow, None),
        };
        Self {
            verdict,
            policy: matched.map(|m| m.policy.clone()),
            rule: matched.map(|m| m.rule),
            reason,
            audit,
            dry_run,
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// The body of the 403 answer to a denied request: Envoy's `RBAC: access denied`, then the reason, which names
    /// the policy and rule that denied. `None` when the request is allowed.
    pub fn forbidden_body(&self) -> Option<String> {
        (!self.is_allowed()).then(|| format!("RBAC: access denied: {}\n", self.reason))
    }
}

impl fmt::Display for HttpDecision {
    /// The reason, then the AUDIT and dry-run marks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        for policy in &self.audit {
            write!(f, "; audited by AUDIT policy {policy}")?;
        }
        for m in &self.dry_run {
            write!(f, "; dry-run {m} (not enforced)")?;
        }
        Ok(())
    }
}

// === impl HttpReason ===

impl fmt::Display for HttpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeniedByCustom(m) => write!(
                f,
                "denied by {m}: the waypoint has no external authorizer, so CUSTOM matches are denied"
            ),
            Self::DeniedBy(m) => write!(f, "denied by {m}"),
            Self::AllowedBy(m) => write!(f, "allowed by {m}"),
            Self::NoAllowPolicyMatched { allow_policies } => {
                let names: Vec<String> = allow_policies.iter().map(ToString::to_string).collect();
                write!(f, "no rule matched in ALLOW policies {}", names.join(", "))
            }
            Self::NoAllowPolicies => f.write_str("allowed: no ALLOW policy applies and no DENY policy matched"),
        }
    }
}

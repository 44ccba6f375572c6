//! The L4 authorization policy the node proxy enforces (Istio's workload-API `Authorization`, type URL
//! `istio.security.Authorization`) and its match semantics: which connections its groups, clauses and matches select.

use std::fmt;

use ambit_types::Identity;
use serde::{Deserialize, Serialize};

use crate::cidr::IpNet;
use crate::evaluate::ConnInfo;

/// Printed where the peer has no value for an attribute: a plaintext peer has no principal, namespace or service
/// account.
const ABSENT: &str = "(none)";

/// One authorization policy as the node proxy receives it.
///
/// Serialized in camelCase with Istio's enum names, for the admin dump and the local state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authorization {
    pub name: String,
    pub namespace: String,
    pub scope: Scope,
    pub action: Action,
    /// ORed: the policy matches when any group matches. A policy with no groups never matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
    /// A dry-run policy's matches are reported and never change the verdict.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// Which workloads a policy applies to; see [`crate::applicable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scope {
    /// Every workload in the mesh: what a root-namespace policy without a selector becomes.
    Global,
    /// Every workload in the policy's namespace.
    Namespace,
    /// Only the workloads that list the policy by name (selectors are resolved by the control plane).
    WorkloadSelector,
}

/// What a matching policy does to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Allow,
    Deny,
}

/// One rule of the policy: its clauses are ANDed. A group with no clauses matches every connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Group {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clauses: Vec<Clause>,
}

/// One clause of a rule (its `from`, its `to`, or one `when`): its matches are ORed. A match with every field
/// empty is skipped, so a clause made only of empty matches never holds. A clause with no matches at all holds,
/// as in ztunnel; istiod never sends one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Clause {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
}

/// Conditions on one connection. Field kinds are ANDed, the values of a field are ORed, and a `not_*` field holds
/// when none of its values match. Fields left empty do not constrain; a match with every field empty matches
/// nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// The peer's namespace, from its SPIFFE ID; a plaintext peer has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<StringMatch>,
    /// The peer's SPIFFE ID without `spiffe://`: `cluster.local/ns/a/sa/b`. A plaintext peer has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<StringMatch>,
    /// The TCP peer address (a waypoint's, when a waypoint is in the path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_source_ips: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_ips: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ips: Vec<IpNet>,
    /// The resolved target port, never the tunnel port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<ServiceAccountMatch>,
}

/// A string pattern, printed in Istio's wildcard syntax: `x`, `x*`, `*x` or `*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any non-empty value.
    Presence,
}

/// A peer service account, compared exactly against the namespace and service account of its SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountMatch {
    pub namespace: String,
    pub service_account: String,
}

/// The key of a policy, `<namespace>/<name>`, as workloads list selector-based policies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

/// The rule (group) of a policy that matched a connection, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hit {
    /// Index into [`Authorization::groups`]; translation keeps it equal to the index in the source's `spec.rules`.
    pub group: usize,
    /// For each clause, what held in the first match that held.
    pub evidence: Vec<Evidence>,
}

/// Why one field of a [`Match`] held for a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Evidence {
    /// The connection's value matched `pattern`, one of the field's values.
    Listed {
        attribute: Attribute,
        actual: String,
        pattern: String,
    },
    /// The connection's value matched none of the `not_*` field's values.
    Unlisted {
        attribute: Attribute,
        actual: String,
        excluded: Vec<String>,
    },
}

/// A connection attribute that a [`Match`] field compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Attribute {
    Namespace,
    Principal,
    ServiceAccount,
    SourceIp,
    DestinationIp,
    DestinationPort,
}

/// The attributes of one connection that matches compare, derived once per evaluation.
pub(crate) struct Subject<'a> {
    conn: &'a ConnInfo,
    /// The peer's SPIFFE ID without `spiffe://`, as principals are written.
    principal: Option<String>,
}

// === impl Authorization ===

impl Authorization {
    pub fn policy_ref(&self) -> PolicyRef {
        PolicyRef::new(&self.namespace, &self.name)
    }

    /// Whether the policy matches the connection (dry-run or not).
    pub fn matches(&self, conn: &ConnInfo) -> bool {
        self.matching_group(&Subject::new(conn)).is_some()
    }

    /// The first group that matches the connection, with the evidence; `None` when the policy does not match.
    pub fn explain(&self, conn: &ConnInfo) -> Option<Hit> {
        self.hit(&Subject::new(conn))
    }

    /// Whether some connection could match: false when every group has a clause made only of empty matches
    /// (or there are no groups). Such a DENY policy has no effect and such an ALLOW policy allows nothing.
    pub fn can_match(&self) -> bool {
        self.groups.iter().any(Group::can_match)
    }

    pub(crate) fn matching_group(&self, subject: &Subject<'_>) -> Option<usize> {
        self.groups.iter().position(|group| group.holds(subject))
    }

    pub(crate) fn hit(&self, subject: &Subject<'_>) -> Option<Hit> {
        let (index, group) = self.groups.iter().enumerate().find(|(_, g)| g.holds(subject))?;
        Some(Hit {
            group: index,
            evidence: group.evidence(subject),
        })
    }
}

// === impl Group ===

impl Group {
    /// Whether some connection could match this group; see [`Authorization::can_match`].
    pub fn can_match(&self) -> bool {
        self.clauses
            .iter()
            .all(|clause| clause.matches.is_empty() || clause.matches.iter().any(|m| !m.is_empty()))
    }

    fn holds(&self, subject: &Subject<'_>) -> bool {
        self.clauses.iter().all(|clause| clause.holds(subject))
    }

    fn evidence(&self, subject: &Subject<'_>) -> Vec<Evidence> {
        let held = self
            .clauses
            .iter()
            .filter_map(|c| c.matches.iter().find(|m| m.holds(subject)));
        held.flat_map(|m| m.evidence(subject)).collect()
    }
}

// === impl Clause ===

impl Clause {
    fn holds(&self, subject: &Subject<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.holds(subject))
    }
}

// === impl Match ===

impl Match {
    /// Whether every field is empty: such a match is skipped and matches nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn holds(&self, s: &Subject<'_>) -> bool {
        let conn = s.conn;
        !self.is_empty()
            && field_holds(&self.namespaces, &self.not_namespaces, |p| {
                p.matches_some(s.namespace())
            })
            && field_holds(&self.principals, &self.not_principals, |p| {
                p.matches_some(s.principal())
            })
            && field_holds(&self.service_accounts, &self.not_service_accounts, |p| {
                p.matches_some(s.identity())
            })
            && field_holds(&self.source_ips, &self.not_source_ips, |n| n.contains(conn.source_ip))
            && field_holds(&self.destination_ips, &self.not_destination_ips, |n| {
                n.contains(conn.destination_ip)
            })
            && field_holds(&self.destination_ports, &self.not_destination_ports, |p| {
                *p == conn.destination_port
            })
    }

    /// What held, field by field; call only when [`Match::holds`] is true.
    fn evidence(&self, s: &Subject<'_>) -> Vec<Evidence> {
        let mut out = Vec::new();
        self.peer_evidence(s, &mut out);
        self.address_evidence(s.conn, &mut out);
        out
    }

    fn peer_evidence(&self, s: &Subject<'_>, out: &mut Vec<Evidence>) {
        let (ns, principal, identity) = (s.namespace(), s.principal(), s.identity());
        let text = |value: Option<&str>| value.unwrap_or(ABSENT).to_string();
        let sa_text = || {
            identity.map_or(ABSENT.to_string(), |id| {
                format!("{}/{}", id.namespace(), id.service_account())
            })
        };
        let field = Field::new(&self.namespaces, &self.not_namespaces, Attribute::Namespace);
        field.explain(out, || text(ns), |p| p.matches_some(ns));
        let field = Field::new(&self.principals, &self.not_principals, Attribute::Principal);
        field.explain(out, || text(principal), |p| p.matches_some(principal));
        let (accounts, not_accounts) = (&self.service_accounts, &self.not_service_accounts);
        let field = Field::new(accounts, not_accounts, Attribute::ServiceAccount);
        field.explain(out, sa_text, |p| p.matches_some(identity));
    }

    fn address_evidence(&self, conn: &ConnInfo, out: &mut Vec<Evidence>) {
        let (source, destination, port) = (conn.source_ip, conn.destination_ip, conn.destination_port);
        let field = Field::new(&self.source_ips, &self.not_source_ips, Attribute::SourceIp);
        field.explain(out, || source.to_string(), |n| n.contains(source));
        let field = Field::new(
            &self.destination_ips,
            &self.not_destination_ips,
            Attribute::DestinationIp,
        );
        field.explain(out, || destination.to_string(), |n| n.contains(destination));
        let (ports, not_ports) = (&self.destination_ports, &self.not_destination_ports);
        let field = Field::new(ports, not_ports, Attribute::DestinationPort);
        field.explain(out, || port.to_string(), |p| *p == port);
    }
}

/// A field kind of a [`Match`] holds when its positive list is empty or has a hit, and its `not_*` list has none.
fn field_holds<T>(positive: &[T], negative: &[T], hit: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&hit)) && !negative.iter().any(&hit)
}

/// One field kind of a [`Match`], both lists, for building [`Evidence`].
struct Field<'m, T> {
    positive: &'m [T],
    negative: &'m [T],
    attribute: Attribute,
}

impl<'m, T: fmt::Display> Field<'m, T> {
    fn new(positive: &'m [T], negative: &'m [T], attribute: Attribute) -> Self {
        Self {
            positive,
            negative,
            attribute,
        }
    }

    fn explain(&self, out: &mut Vec<Evidence>, actual: impl Fn() -> String, hit: impl Fn(&T) -> bool) {
        let attribute = self.attribute;
        if let Some(pattern) = self.positive.iter().find(|p| hit(p)) {
            let pattern = pattern.to_string();
            out.push(Evidence::Listed {
                attribute,
                actual: actual(),
                pattern,
            });
        }
        if !self.negative.is_empty() {
            let excluded = self.negative.iter().map(ToString::to_string).collect();
            out.push(Evidence::Unlisted {
                attribute,
                actual: actual(),
                excluded,
            });
        }
    }
}

/// Matching against a value the peer may lack: an absent value matches no pattern, so it satisfies `not_*` lists.
trait Pattern<V: ?Sized> {
    fn matches_some(&self, value: Option<&V>) -> bool;
}

impl Pattern<str> for StringMatch {
    fn matches_some(&self, value: Option<&str>) -> bool {
        value.is_some_and(|v| self.matches(v))
    }
}

impl Pattern<Identity> for ServiceAccountMatch {
    fn matches_some(&self, value: Option<&Identity>) -> bool {
        value.is_some_and(|id| self.matches(id))
    }
}

// === impl StringMatch ===

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(exact) => value == exact,
            Self::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Self::Suffix(suffix) => value.ends_with(suffix.as_str()),
            Self::Presence => !value.is_empty(),
        }
    }
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(exact) => f.write_str(exact),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
            Self::Presence => f.write_str("*"),
        }
    }
}

// === impl ServiceAccountMatch ===

impl ServiceAccountMatch {
    pub fn new(namespace: &str, service_account: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
    }

    pub fn matches(&self, id: &Identity) -> bool {
        id.namespace() == self.namespace && id.service_account() == self.service_account
    }
}

impl fmt::Display for ServiceAccountMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

// === impl PolicyRef ===

impl PolicyRef {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

// === impl Action ===

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
        })
    }
}

// === impl Hit ===

impl fmt::Display for Hit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} matched: ", self.group)?;
        if self.evidence.is_empty() {
            return f.write_str("the rule has no conditions, so it matches every connection");
        }
        for (i, evidence) in self.evidence.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{evidence}")?;
        }
        Ok(())
    }
}

// === impl Evidence ===

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Listed {
                attribute,
                actual,
                pattern,
            } if actual == pattern => write!(f, "{attribute} {actual}"),
            Self::Listed {
                attribute,
                actual,
                pattern,
            } => write!(f, "{attribute} {actual} matches {pattern}"),
            Self::Unlisted {
                attribute,
                actual,
                excluded,
            } => {
                let field = attribute.excluding_field();
                write!(
                    f,
                    "{attribute} {actual} matches none of {field} [{}]",
                    excluded.join(", ")
                )
            }
        }
    }
}

// === impl Attribute ===

impl Attribute {
    /// The name of the [`Match`] field that excludes values of this attribute.
    pub fn excluding_field(self) -> &'static str {
        match self {
            Self::Namespace => "not_namespaces",
            Self::Principal => "not_principals",
            Self::ServiceAccount => "not_service_accounts",
            Self::SourceIp => "not_source_ips",
            Self::DestinationIp => "not_destination_ips",
            Self::DestinationPort => "not_destination_ports",
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Namespace => "namespace",
            Self::Principal => "principal",
            Self::ServiceAccount => "service account",
            Self::SourceIp => "source ip",
            Self::DestinationIp => "destination ip",
            Self::DestinationPort => "destination port",
        })
    }
}

// === impl Subject ===

impl<'a> Subject<'a> {
    pub(crate) fn new(conn: &'a ConnInfo) -> Self {
        let principal = conn.source_identity.as_ref().map(|id| {
            format!(
                "{}/ns/{}/sa/{}",
                id.trust_domain(),
                id.namespace(),
                id.service_account()
            )
        });
        Self { conn, principal }
    }

    fn identity(&self) -> Option<&'a Identity> {
        self.conn.source_identity.as_ref()
    }

    fn namespace(&self) -> Option<&'a str> {
        self.identity().map(Identity::namespace)
    }

    fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }
}

#[cfg(test)]
mod tests;

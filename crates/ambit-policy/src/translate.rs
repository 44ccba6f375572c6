//! Translation of Istio's AuthorizationPolicy (and, in [`peer_authentication`], PeerAuthentication) into the
//! [`Authorization`] the node proxy enforces, as istiod does for ztunnel: scope, action, one group per rule,
//! wildcards, and fail-closed handling of attributes only a waypoint can see.
//!
//! One deliberate difference from istiod: an ALLOW rule dropped for its HTTP attributes is kept as a group that can
//! never match instead of being left out, so a group's index always equals its rule's index in `spec.rules` and a
//! [`crate::Decision`] can name the rule that matched. The behaviour is the same.

mod peer_authentication;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ambit_types::Identity;

use crate::authorization::{Action, Authorization, Clause, Group, Match, Scope, ServiceAccountMatch, StringMatch};
use crate::cidr::{IpNet, IpNetError};
use crate::istio::{
    AuthorizationPolicy, Condition, ObjectMeta, Operation, PolicyAction, Rule, RuleFrom, RuleTo, Source,
};

pub use peer_authentication::{
    CONVERTED_POLICY_PREFIX, EffectiveMtls, MtlsPolicy, STATIC_STRICT_POLICY_NAME, WorkloadMeta,
    peer_authentication_policies, static_strict_policy,
};

/// The annotation that makes a policy dry-run; its value is a Go-style boolean (`true`, `1`, `F`, ...).
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// What a policy becomes at L4: the authorization to send (if any) and the status to report on the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translation {
    pub authorization: Option<Authorization>,
    pub status: PolicyStatus,
}

/// The status to report on an AuthorizationPolicy, in the words istiod uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyStatus {
    /// Enforced exactly as written.
    Applied,
    /// Enforced, but not as written: each reason says how it differs.
    PartiallyApplied { reasons: Vec<Deviation> },
    /// Not sent to the node proxy.
    NotApplied { reason: SkipReason },
}

/// How an enforced policy differs from what was written, because the node proxy sees no HTTP attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deviation {
    /// ALLOW rules (indices into `spec.rules`) that use HTTP attributes never match, failing closed.
    DropAllowRules {
        rules: Vec<usize>,
        attributes: Vec<String>,
        /// Every rule was dropped: the policy allows nothing and denies all traffic to its workloads.
        allows_nothing: bool,
    },
    /// DENY rules enforced without their HTTP attributes whose L4 part can still match: they deny more than
    /// written (an alternative of `from` or `to` made only of HTTP attributes, though, never matches).
    WidenDeny { rules: Vec<usize>, attributes: Vec<String> },
    /// DENY rules that can never match once their HTTP attributes are ignored: they deny nothing.
    NullifyDeny {
        rules: Vec<usize>,
        attributes: Vec<String>,
        /// No rule of the policy can match: the whole policy has no effect.
        whole_policy: bool,
    },
}

/// Why a policy is not sent to the node proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The policy has `targetRef`/`targetRefs`: a waypoint enforces it.
    DeferToWaypoint,
    /// CUSTOM and AUDIT policies cannot be enforced at L4.
    RejectAction(PolicyAction),
}

/// A value of a policy that cannot be translated, at its field path: `spec.rules[0].from[0].source.ipBlocks[1]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct TranslateError {
    pub path: String,
    pub problem: Problem,
}

/// What is wrong with the value at a [`TranslateError`]'s path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("must be set")]
    Missing,
    #[error("must set at least one field")]
    Empty,
    #[error("must not be an empty string")]
    EmptyValue,
    #[error("{0}")]
    Cidr(IpNetError),
    #[error("{0:?} is not a port: use a number from 1 to 65535")]
    Port(String),
    #[error("{value:?} is not a principal: {hint}")]
    Principal { value: String, hint: &'static str },
    #[error("{0:?} is not a namespace: use lowercase letters, digits, '-' and '.', with '*' only at the start or end")]
    Namespace(String),
    #[error("{0:?} is not a service account: use <namespace>/<name> or <name>, without wildcards")]
    ServiceAccount(String),
    #[error("{0:?} has a '*' in the middle: a wildcard is only allowed at the start or the end")]
    Wildcard(String),
    #[error("the condition on {0:?} has neither values nor notValues")]
    NoValues(String),
    #[error("{0:?} is not a boolean: use true or false")]
    Bool(String),
    #[error("port-level mTLS needs a selector: mesh- and namespace-wide policies cannot set it")]
    PortsWithoutSelector,
}

/// One rule translated to a group, with the HTTP attributes it used.
struct RuleTranslation {
    group: Group,
    http: BTreeSet<String>,
}

/// Translates one AuthorizationPolicy as istiod does for ztunnel (see the module docs for the one difference).
///
/// `Err` means a value is invalid or could never match as written (a bad CIDR or port, a principal that is not a
/// workload identity): reject the resource and report the error. Never treat an error as "no policy": leaving out
/// an ALLOW policy opens the workloads it guards.
///
/// Policies with `targetRefs`, and CUSTOM or AUDIT policies, give no authorization and a [`PolicyStatus::NotApplied`]
/// status without their rules being checked.
pub fn translate_authorization_policy(
    policy: &AuthorizationPolicy,
    root_namespace: &str,
) -> Result<Translation, TranslateError> {
    let meta = &policy.metadata;
    check_meta(meta)?;
    let spec = &policy.spec;
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        return Ok(Translation::skip(SkipReason::DeferToWaypoint));
    }
    let action = match spec.action {
        PolicyAction::Allow => Action::Allow,
        PolicyAction::Deny => Action::Deny,
        other => return Ok(Translation::skip(SkipReason::RejectAction(other))),
    };
    let dry_run = dry_run(&meta.annotations)?;
    let rules: Vec<RuleTranslation> = (spec.rules.iter().enumerate())
        .map(|(i, rule)| translate_rule(rule, i, &meta.namespace))
        .collect::<Result<_, _>>()?;
    let status = PolicyStatus::from_rules(action, &rules);
    let authorization = Authorization {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        scope: scope(policy, root_namespace),
        action,
        groups: rules.into_iter().map(|r| r.into_group(action)).collect(),
        dry_run,
    };
    Ok(Translation {
        authorization: Some(authorization),
        status,
    })
}

/// `metadata.name` and `metadata.namespace` must be set.
pub(crate) fn check_meta(meta: &ObjectMeta) -> Result<(), TranslateError> {
    for (path, value) in [("metadata.name", &meta.name), ("metadata.namespace", &meta.namespace)] {
        if value.is_empty() {
            return Err(TranslateError::new(path, Problem::Missing));
        }
    }
    Ok(())
}

fn scope(policy: &AuthorizationPolicy, root_namespace: &str) -> Scope {
    match &policy.spec.selector {
        Some(selector) if !selector.match_labels.is_empty() => Scope::WorkloadSelector,
        _ if policy.metadata.namespace == root_namespace => Scope::Global,
        _ => Scope::Namespace,
    }
}

/// The `istio.io/dry-run` annotation, parsed like Go's `strconv.ParseBool`; absent or empty means false.
fn dry_run(annotations: &BTreeMap<String, String>) -> Result<bool, TranslateError> {
    let Some(value) = annotations.get(DRY_RUN_ANNOTATION) else {
        return Ok(false);
    };
    match value.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(TranslateError::new(
            &format!("metadata.annotations[{DRY_RUN_ANNOTATION:?}]"),
            Problem::Bool(value.clone()),
        )),
    }
}

/// `from`, `to` and each `when` become separate ANDed clauses of one group.
fn translate_rule(rule: &Rule, index: usize, namespace: &str) -> Result<RuleTranslation, TranslateError> {
    let path = format!("spec.rules[{index}]");
    let mut http = BTreeSet::new();
    let mut clauses = Vec::new();
    if !rule.from.is_empty() {
        clauses.push(from_clause(&rule.from, &path, namespace, &mut http)?);
    }
    if !rule.to.is_empty() {
        clauses.push(to_clause(&rule.to, &path, &mut http)?);
    }
    for (j, condition) in rule.when.iter().enumerate() {
        clauses.push(when_clause(condition, &format!("{path}.when[{j}]"), &mut http)?);
    }
    Ok(RuleTranslation {
        group: Group { clauses },
        http,
    })
}

/// The items of `from` become ORed matches of one clause.
fn from_clause(
    from: &[RuleFrom],
    path: &str,
    namespace: &str,
    http: &mut BTreeSet<String>,
) -> Result<Clause, TranslateError> {
    let mut matches = Vec::with_capacity(from.len());
    for (k, item) in from.iter().enumerate() {
        let path = format!("{path}.from[{k}].source");
        let source = (item.source.as_ref())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| TranslateError::new(&path, Problem::Empty))?;
        http.extend(source_http_fields(source).map(String::from));
        matches.push(source_match(source, &path, namespace)?);
    }
    Ok(Clause { matches })
}

fn source_match(source: &Source, path: &str, namespace: &str) -> Result<Match, TranslateError> {
    let service_account = |value: &str| service_account(value, namespace);
    Ok(Match {
        namespaces: parse_all(&source.namespaces, path, "namespaces", namespace_pattern)?,
        not_namespaces: parse_all(&source.not_namespaces, path, "notNamespaces", namespace_pattern)?,
        principals: parse_all(&source.principals, path, "principals", principal)?,
        not_principals: parse_all(&source.not_principals, path, "notPrincipals", principal)?,
        service_accounts: parse_all(&source.service_accounts, path, "serviceAccounts", service_account)?,
        not_service_accounts: parse_all(
            &source.not_service_accounts,
            path,
            "notServiceAccounts",
            service_account,
        )?,
        source_ips: parse_all(&source.ip_blocks, path, "ipBlocks", cidr)?,
        not_source_ips: parse_all(&source.not_ip_blocks, path, "notIpBlocks", cidr)?,
        ..Match::default()
    })
}

/// The fields of a source only a waypoint can check.
fn source_http_fields(source: &Source) -> impl Iterator<Item = &'static str> {
    [
        ("requestPrincipals", &source.request_principals),
        ("notRequestPrincipals", &source.not_request_principals),
        ("remoteIpBlocks", &source.remote_ip_blocks),
        ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
        ("trustDomains", &source.trust_domains),
        ("notTrustDomains", &source.not_trust_domains),
    ]
    .into_iter()
    .filter_map(|(name, values)| (!values.is_empty()).then_some(name))
}

/// The items of `to` become ORed matches of one clause.
fn to_clause(to: &[RuleTo], path: &str, http: &mut BTreeSet<String>) -> Result<Clause, TranslateError> {
    let mut matches = Vec::with_capacity(to.len());
    for (k, item) in to.iter().enumerate() {
        let path = format!("{path}.to[{k}].operation");
        let operation = (item.operation.as_ref())
            .filter(|o| !o.is_empty())
            .ok_or_else(|| TranslateError::new(&path, Problem::Empty))?;
        http.extend(operation_http_fields(operation).map(String::from));
        matches.push(Match {
            destination_ports: parse_all(&operation.ports, &path, "ports", port)?,
            not_destination_ports: parse_all(&operation.not_ports, &path, "notPorts", port)?,
            ..Match::default()
        });
    }
    Ok(Clause { matches })
}

/// The fields of an operation only a waypoint can check.
fn operation_http_fields(operation: &Operation) -> impl Iterator<Item = &'static str> {
    [
        ("hosts", &operation.hosts),
        ("notHosts", &operation.not_hosts),
        ("methods", &operation.methods),
        ("notMethods", &operation.not_methods),
        ("paths", &operation.paths),
        ("notPaths", &operation.not_paths),
    ]
    .into_iter()
    .filter_map(|(name, values)| (!values.is_empty()).then_some(name))
}

/// A `when` becomes a clause of one match; a key only a waypoint can check leaves the match empty.
fn when_clause(condition: &Condition, path: &str, http: &mut BTreeSet<String>) -> Result<Clause, TranslateError> {
    let mut m = Match::default();
    if !fill_condition(&mut m, condition, path)? {
        http.insert(condition.key.clone());
    } else if m.is_empty() {
        return Err(TranslateError::new(path, Problem::NoValues(condition.key.clone())));
    }
    Ok(Clause { matches: vec![m] })
}

/// Sets the fields of `m` for one of the `when` keys the node proxy can check (`values` → the field, `notValues`
/// → its `not_*` field) and says whether the key was one of them.
fn fill_condition(m: &mut Match, condition: &Condition, path: &str) -> Result<bool, TranslateError> {
    let (values, not_values) = (&condition.values, &condition.not_values);
    match condition.key.as_str() {
        "source.ip" => {
            m.source_ips = parse_all(values, path, "values", cidr)?;
            m.not_source_ips = parse_all(not_values, path, "notValues", cidr)?;
        }
        "source.namespace" => {
            m.namespaces = parse_all(values, path, "values", namespace_pattern)?;
            m.not_namespaces = parse_all(not_values, path, "notValues", namespace_pattern)?;
        }
        "source.principal" => {
            m.principals = parse_all(values, path, "values", principal)?;
            m.not_principals = parse_all(not_values, path, "notValues", principal)?;
        }
        "destination.ip" => {
            m.destination_ips = parse_all(values, path, "values", cidr)?;
            m.not_destination_ips = parse_all(not_values, path, "notValues", cidr)?;
        }
        "destination.port" => {
            m.destination_ports = parse_all(values, path, "values", port)?;
            m.not_destination_ports = parse_all(not_values, path, "notValues", port)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Parses each value of the list at `{path}.{field}`; the first failure names its index.
fn parse_all<T>(
    values: &[String],
    path: &str,
    field: &str,
    parse: impl Fn(&str) -> Result<T, Problem>,
) -> Result<Vec<T>, TranslateError> {
    let at = |i: usize, problem| TranslateError::new(&format!("{path}.{field}[{i}]"), problem);
    (values.iter().enumerate())
        .map(|(i, value)| parse(value).map_err(|problem| at(i, problem)))
        .collect()
}

/// Istio's wildcards: `*` is presence, `*x` a suffix, `x*` a prefix; `*` anywhere else is refused.
fn wildcard(value: &str) -> Result<StringMatch, Problem> {
    let (pattern, rest) = match (value.strip_prefix('*'), value.strip_suffix('*')) {
        _ if value.is_empty() => return Err(Problem::EmptyValue),
        _ if value == "*" => return Ok(StringMatch::Presence),
        (Some(rest), _) => (StringMatch::Suffix(rest.to_string()), rest),
        (None, Some(rest)) => (StringMatch::Prefix(rest.to_string()), rest),
        (None, None) => (StringMatch::Exact(value.to_string()), value),
    };
    if rest.contains('*') {
        return Err(Problem::Wildcard(value.to_string()));
    }
    Ok(pattern)
}

/// A principal, written without `spiffe://`; an exact one must be a workload identity, or it could never match.
fn principal(value: &str) -> Result<StringMatch, Problem> {
    let refuse = |hint| Problem::Principal {
        value: value.to_string(),
        hint,
    };
    if value.starts_with("spiffe://") {
        return Err(refuse("write it without \"spiffe://\""));
    }
    let pattern = wildcard(value)?;
    if let StringMatch::Exact(exact) = &pattern
        && format!("spiffe://{exact}").parse::<Identity>().is_err()
    {
        return Err(refuse("use <trust-domain>/ns/<namespace>/sa/<service-account>"));
    }
    Ok(pattern)
}

/// A namespace pattern; an exact one must be a possible namespace name.
fn namespace_pattern(value: &str) -> Result<StringMatch, Problem> {
    let pattern = wildcard(value)?;
    match &pattern {
        StringMatch::Exact(name) if !is_name(name) => Err(Problem::Namespace(value.to_string())),
        _ => Ok(pattern),
    }
}

/// `ns/sa`, or a bare `sa` in the policy's namespace.
fn service_account(value: &str, policy_namespace: &str) -> Result<ServiceAccountMatch, Problem> {
    let (namespace, name) = value.split_once('/').unwrap_or((policy_namespace, value));
    if !is_name(namespace) || !is_name(name) {
        return Err(Problem::ServiceAccount(value.to_string()));
    }
    Ok(ServiceAccountMatch::new(namespace, name))
}

/// A Kubernetes namespace or service-account name: 1 to 253 lowercase letters, digits, `-` or `.`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
}

/// A port from 1 to 65535, written in decimal.
fn port(value: &str) -> Result<u16, Problem> {
    match value.parse::<u16>() {
        Ok(port) if port != 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(Problem::Port(value.to_string())),
    }
}

fn cidr(value: &str) -> Result<IpNet, Problem> {
    value.parse().map_err(Problem::Cidr)
}

// === impl Translation ===

impl Translation {
    fn skip(reason: SkipReason) -> Self {
        Self {
            authorization: None,
            status: PolicyStatus::NotApplied { reason },
        }
    }
}

// === impl RuleTranslation ===

impl RuleTranslation {
    /// ALLOW rules with HTTP attributes fail closed: a group that can never match. DENY rules keep their L4 part.
    fn into_group(self, action: Action) -> Group {
        if action == Action::Deny || self.http.is_empty() {
            return self.group;
        }
        Group {
            clauses: vec![Clause {
                matches: vec![Match::default()],
            }],
        }
    }
}

// === impl PolicyStatus ===

impl PolicyStatus {
    fn from_rules(action: Action, rules: &[RuleTranslation]) -> Self {
        let reasons = match action {
            Action::Allow => Deviation::for_allow(rules),
            Action::Deny => Deviation::for_deny(rules),
        };
        if reasons.is_empty() {
            Self::Applied
        } else {
            Self::PartiallyApplied { reasons }
        }
    }
}

impl fmt::Display for PolicyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Applied => f.write_str("applied"),
            Self::PartiallyApplied { reasons } => {
                let reasons: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                f.write_str(&reasons.join(" "))
            }
            Self::NotApplied { reason } => write!(f, "{reason}"),
        }
    }
}

// === impl Deviation ===

impl Deviation {
    fn for_allow(rules: &[RuleTranslation]) -> Vec<Self> {
        let dropped = Self::select(rules, |_| true);
        if dropped.0.is_empty() {
            return Vec::new();
        }
        let allows_nothing = dropped.0.len() == rules.len();
        let (rules, attributes) = dropped;
        vec![Self::DropAllowRules {
            rules,
            attributes,
            allows_nothing,
        }]
    }

    fn for_deny(rules: &[RuleTranslation]) -> Vec<Self> {
        let whole_policy = !rules.iter().any(|r| r.group.can_match());
        let (widened, attributes) = Self::select(rules, |r| r.group.can_match());
        let mut out = Vec::new();
        if !widened.is_empty() {
            out.push(Self::WidenDeny {
                rules: widened,
                attributes,
            });
        }
        let (nullified, attributes) = Self::select(rules, |r| !r.group.can_match());
        if !nullified.is_empty() {
            out.push(Self::NullifyDeny {
                rules: nullified,
                attributes,
                whole_policy,
            });
        }
        out
    }

    /// The indices of the rules with HTTP attributes that also pass `keep`, and the union of those attributes.
    fn select(rules: &[RuleTranslation], keep: impl Fn(&RuleTranslation) -> bool) -> (Vec<usize>, Vec<String>) {
        let chosen = || rules.iter().enumerate().filter(|(_, r)| !r.http.is_empty() && keep(r));
        let attributes: BTreeSet<&String> = chosen().flat_map(|(_, r)| &r.http).collect();
        (
            chosen().map(|(i, _)| i).collect(),
            attributes.into_iter().cloned().collect(),
        )
    }
}

impl fmt::Display for Deviation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Self::DropAllowRules { rules, attributes, .. }
        | Self::WidenDeny { rules, attributes }
        | Self::NullifyDeny { rules, attributes, .. }) = self;
        write!(
            f,
            "ztunnel does not support HTTP attributes (found: {}). In ambient mode you must use a waypoint proxy to \
             enforce HTTP rules. ",
            attributes.join(", ")
        )?;
        let rules = RuleList(rules);
        match self {
            Self::DropAllowRules { allows_nothing, .. } => {
                let verb = if rules.is_plural() {
                    "never match"
                } else {
                    "never matches"
                };
                write!(
                    f,
                    "Within an ALLOW policy, rules matching HTTP attributes are omitted ({rules} {verb}). "
                )?;
                if *allows_nothing {
                    f.write_str(
                        "No rule is left, so this policy allows nothing: all traffic to its workloads is denied. ",
                    )?;
                }
                f.write_str("This will be more restrictive than requested.")
            }
            Self::WidenDeny { .. } => write!(
                f,
                "DENY policy with HTTP attributes is enforced without the HTTP rules ({rules}). This will be more \
                 restrictive than requested."
            ),
            Self::NullifyDeny { whole_policy: true, .. } => f.write_str(
                "After omitting unsupported HTTP attributes, this DENY policy has no enforceable rules at ztunnel and \
                 will have no effect. Deploy a waypoint proxy and use a targetRef to enforce this policy.",
            ),
            Self::NullifyDeny { .. } => write!(
                f,
                "After omitting unsupported HTTP attributes, {rules} can never match at ztunnel and will have no \
                 effect. Deploy a waypoint proxy and use a targetRef to enforce {}.",
                if rules.is_plural() { "them" } else { "it" }
            ),
        }
    }
}

/// Rule indices printed as field paths: `spec.rules[0], spec.rules[2]`.
struct RuleList<'a>(&'a [usize]);

impl RuleList<'_> {
    fn is_plural(&self) -> bool {
        self.0.len() > 1
    }
}

impl fmt::Display for RuleList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, i) in self.0.iter().enumerate() {
            let sep = if n == 0 { "" } else { ", " };
            write!(f, "{sep}spec.rules[{i}]")?;
        }
        Ok(())
    }
}

// === impl SkipReason ===

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeferToWaypoint => {
                f.write_str("the policy has targetRefs, so a waypoint enforces it; ztunnel does not receive it")
            }
            Self::RejectAction(action) => write!(f, "ztunnel does not support the {action} action"),
        }
    }
}

// === impl TranslateError ===

impl TranslateError {
    pub(crate) fn new(path: &str, problem: Problem) -> Self {
        Self {
            path: path.to_string(),
            problem,
        }
    }
}

#[cfg(test)]
mod tests;

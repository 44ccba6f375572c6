//! Compiling an AuthorizationPolicy into an [`HttpPolicy`] for a waypoint: Istio's validation of the values, its
//! wildcard rules per field, and the fail-closed handling of attributes and actions the waypoint cannot enforce.

use std::collections::BTreeMap;
use std::fmt;

use ambit_types::Identity;
use serde::{Serialize, Serializer};

use super::path::{TemplateError, path_match};
use super::{AllOf, Attachment, Check, Glob, HttpPolicy, HttpRule, PathMatch, Values, Waypoint, attachment};
use crate::authorization::{ServiceAccountMatch, StringMatch};
use crate::cidr::IpNet;
use crate::istio::{AuthorizationPolicy, Condition, Operation, PolicyAction, Rule, Source};
use crate::translate::{DRY_RUN_ANNOTATION, Problem, TranslateError, check_meta};

/// A value of a policy that cannot be compiled, at its field path: `spec.rules[0].to[1].operation.paths[2]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct CompileError {
    pub path: String,
    pub problem: HttpProblem,
}

/// What is wrong with the value at a [`CompileError`]'s path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpProblem {
    /// A problem shared with the node proxy's translation (missing, empty, CIDR, port, principal, ...).
    #[error("{0}")]
    Value(Problem),
    #[error("{0:?} is not a namespace pattern: use lowercase letters, digits, '-', '.' and '*'")]
    Namespace(String),
    #[error("serviceAccounts cannot be combined with principals or namespaces in one source")]
    ServiceAccountsWithIdentity,
    #[error("{0:?} is not a condition key Istio knows")]
    UnknownKey(String),
    #[error("{key:?} is not supported: {hint}")]
    RetiredKey { key: String, hint: &'static str },
    #[error("{0:?} must name its entry in brackets, like request.headers[x-user]")]
    MapKey(String),
    #[error("{0}")]
    Path(TemplateError),
    #[error("provider is only allowed with the CUSTOM action, not {0}")]
    ProviderWithoutCustom(PolicyAction),
}

/// Where a compiled policy is enforced other than as written, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    /// The field path: `spec.rules[0].from[1].source.requestPrincipals`, or `spec.action`.
    pub path: String,
    pub kind: IssueKind,
    pub effect: Effect,
}

/// What the waypoint cannot enforce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IssueKind {
    /// `requestPrincipals`, `notRequestPrincipals` or a `request.auth.*` key: they need RequestAuthentication
    /// (JWT validation), which the waypoint does not do.
    RequestAuthentication,
    /// An `experimental.*` key: Envoy internals the waypoint has no equivalent for.
    Experimental,
    /// The CUSTOM action: the waypoint has no external authorization provider to ask.
    CustomAction { provider: Option<String> },
}

/// How an [`Issue`] changes what the policy does; every effect fails closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    /// An ALLOW rule (index into `spec.rules`) never matches: the policy allows less than written.
    RuleNeverMatches { rule: usize },
    /// In a DENY, AUDIT or CUSTOM rule the attribute is ignored: the rule matches more requests than written.
    AttributeIgnored { rule: usize },
    /// Requests the CUSTOM policy matches are denied, as when its provider cannot be reached.
    DeniesMatches,
}

/// The status to report on a policy attached to a waypoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpStatus {
    /// Enforced as written.
    Applied,
    /// Enforced, but not as written: each issue says how it differs.
    PartiallyApplied { issues: Vec<Issue> },
    /// Invalid: enforced as a placeholder that fails closed (see [`waypoint_policies`]).
    Rejected { error: CompileError },
}

/// Compiles `policy` for `waypoint`: `Ok(None)` when it does not attach to the waypoint (see [`attachment`]).
///
/// `Err` means a value is invalid, or could never match as written (a principal written with `spiffe://`): reject
/// the resource and report the error, and never treat it as "no policy", which would open what an ALLOW policy
/// guards. [`waypoint_policies`] does that by failing closed.
pub fn compile_http_policy(
    policy: &AuthorizationPolicy,
    waypoint: &Waypoint,
) -> Result<Option<HttpPolicy>, CompileError> {
    match attachment(policy, waypoint) {
        Some(attachment) => compile(policy, attachment).map(Some),
        None => Ok(None),
    }
}

/// The policies of `all` that attach to `waypoint`, in `all` order, compiled. Istio orders policies by creation
/// time; pass them in that order so the first matching policy reported is the oldest.
///
/// An invalid policy is kept as a placeholder that fails closed, with the error in [`HttpPolicy::invalid`]: an
/// invalid ALLOW policy allows nothing (and, being an ALLOW policy, denies what no other ALLOW policy allows), and
/// an invalid DENY, CUSTOM or AUDIT policy matches every request in its scope.
pub fn waypoint_policies<'a>(
    all: impl IntoIterator<Item = &'a AuthorizationPolicy>,
    waypoint: &Waypoint,
) -> Vec<HttpPolicy> {
    let compile_one = |policy: &AuthorizationPolicy| {
        let attachment = attachment(policy, waypoint)?;
        Some(compile(policy, attachment.clone()).unwrap_or_else(|error| fail_closed(policy, attachment, error)))
    };
    all.into_iter().filter_map(compile_one).collect()
}

fn compile(policy: &AuthorizationPolicy, attachment: Attachment) -> Result<HttpPolicy, CompileError> {
    let meta = &policy.metadata;
    check_meta(meta)?;
    let spec = &policy.spec;
    if spec.provider.is_some() && spec.action != PolicyAction::Custom {
        return Err(CompileError::new(
            "spec.provider",
            HttpProblem::ProviderWithoutCustom(spec.action),
        ));
    }
    let dry_run = dry_run(&meta.annotations)?;
    let mut issues = Vec::new();
    if spec.action == PolicyAction::Custom {
        let provider = spec.provider.as_ref().map(|p| p.name.clone());
        issues.push(Issue::new(
            "spec.action",
            IssueKind::CustomAction { provider },
            Effect::DeniesMatches,
        ));
    }
    let mut rules = Vec::with_capacity(spec.rules.len());
    for (index, rule) in spec.rules.iter().enumerate() {
        let mut compiler = RuleCompiler::new(index, spec.action, &meta.namespace);
        rules.push(compiler.rule(rule)?);
        issues.append(&mut compiler.issues);
    }
    Ok(HttpPolicy {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        action: spec.action,
        attachment,
        rules,
        dry_run,
        issues,
        invalid: None,
    })
}

/// The placeholder enforced for an invalid policy: ALLOW allows nothing, any other action matches everything.
fn fail_closed(policy: &AuthorizationPolicy, attachment: Attachment, error: CompileError) -> HttpPolicy {
    let action = policy.spec.action;
    let rules = match action {
        PolicyAction::Allow => Vec::new(),
        PolicyAction::Deny | PolicyAction::Audit | PolicyAction::Custom => vec![HttpRule::any()],
    };
    HttpPolicy {
        name: policy.metadata.name.clone(),
        namespace: policy.metadata.namespace.clone(),
        action,
        attachment,
        rules,
        dry_run: false,
        issues: Vec::new(),
        invalid: Some(error),
    }
}

/// The `istio.io/dry-run` annotation, parsed like Go's `strconv.ParseBool`; absent or empty means false.
fn dry_run(annotations: &BTreeMap<String, String>) -> Result<bool, CompileError> {
    let Some(value) = annotations.get(DRY_RUN_ANNOTATION) else {
        return Ok(false);
    };
    match value.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(CompileError::new(
            &format!("metadata.annotations[{DRY_RUN_ANNOTATION:?}]"),
            Problem::Bool(value.clone()).into(),
        )),
    }
}

/// Compiles one rule, collecting the issues of the attributes it cannot check.
struct RuleCompiler<'a> {
    index: usize,
    action: PolicyAction,
    namespace: &'a str,
    issues: Vec<Issue>,
}

impl<'a> RuleCompiler<'a> {
    fn new(index: usize, action: PolicyAction, namespace: &'a str) -> Self {
        Self {
            index,
            action,
            namespace,
            issues: Vec::new(),
        }
    }

    fn rule(&mut self, rule: &Rule) -> Result<HttpRule, CompileError> {
        let path = format!("spec.rules[{}]", self.index);
        let mut out = HttpRule::default();
        for (k, item) in rule.from.iter().enumerate() {
            let path = format!("{path}.from[{k}].source");
            let source = (item.source.as_ref()).filter(|s| !s.is_empty());
            let source = source.ok_or_else(|| CompileError::new(&path, Problem::Empty.into()))?;
            out.from.push(self.source(source, &path)?);
        }
        for (k, item) in rule.to.iter().enumerate() {
            let path = format!("{path}.to[{k}].operation");
            let operation = (item.operation.as_ref()).filter(|o| !o.is_empty());
            let operation = operation.ok_or_else(|| CompileError::new(&path, Problem::Empty.into()))?;
            out.to.push(operation_checks(operation, &path)?);
        }
        for (k, condition) in rule.when.iter().enumerate() {
            if let Some(check) = self.condition(condition, &format!("{path}.when[{k}]"))? {
                out.when.push(check);
            }
        }
        out.never_matches = self.action == PolicyAction::Allow && !self.issues.is_empty();
        Ok(out)
    }

    fn source(&mut self, source: &Source, path: &str) -> Result<AllOf, CompileError> {
        let identity = [
            &source.principals,
            &source.not_principals,
            &source.namespaces,
            &source.not_namespaces,
        ];
        let accounts = [&source.service_accounts, &source.not_service_accounts];
        if identity.iter().any(|v| !v.is_empty()) && accounts.iter().any(|v| !v.is_empty()) {
            return Err(CompileError::new(path, HttpProblem::ServiceAccountsWithIdentity));
        }
        for (field, values) in [
            ("requestPrincipals", &source.request_principals),
            ("notRequestPrincipals", &source.not_request_principals),
        ] {
            check_not_empty(values, &format!("{path}.{field}"))?;
            if !values.is_empty() {
                self.unsupported(format!("{path}.{field}"), IssueKind::RequestAuthentication);
            }
        }
        let f = Field::new(path);
        let service_account = |v: &str| service_account(v, self.namespace);
        let (s, mut checks) = (source, Vec::new());
        push(
            &mut checks,
            f.values("principals", &s.principals, &s.not_principals, principal)?,
            Check::Principal,
        );
        push(
            &mut checks,
            f.values("namespaces", &s.namespaces, &s.not_namespaces, namespace)?,
            Check::Namespace,
        );
        let accounts = f.values(
            "serviceAccounts",
            &s.service_accounts,
            &s.not_service_accounts,
            service_account,
        )?;
        push(&mut checks, accounts, Check::ServiceAccount);
        push(
            &mut checks,
            f.values("trustDomains", &s.trust_domains, &s.not_trust_domains, wildcard)?,
            Check::TrustDomain,
        );
        push(
            &mut checks,
            f.values("ipBlocks", &s.ip_blocks, &s.not_ip_blocks, cidr)?,
            Check::SourceIp,
        );
        let remote = f.values("remoteIpBlocks", &s.remote_ip_blocks, &s.not_remote_ip_blocks, cidr)?;
        push(&mut checks, remote, Check::RemoteIp);
        Ok(AllOf { checks })
    }

    /// A `when` condition; `None` when its key is one the waypoint cannot check (an issue is recorded).
    fn condition(&mut self, condition: &Condition, path: &str) -> Result<Option<Check>, CompileError> {
        let key = condition.key.as_str();
        if key.is_empty() {
            return Err(CompileError::new(&format!("{path}.key"), Problem::Missing.into()));
        }
        if condition.values.is_empty() && condition.not_values.is_empty() {
            return Err(CompileError::new(path, Problem::NoValues(key.to_string()).into()));
        }
        let (f, any, none) = (Field::new(path), &condition.values, &condition.not_values);
        let service_account = |v: &str| service_account(v, self.namespace);
        let check = match key {
            "source.ip" => f.values("values", any, none, cidr)?.map(Check::SourceIp),
            "remote.ip" => f.values("values", any, none, cidr)?.map(Check::RemoteIp),
            "source.namespace" => f.values("values", any, none, namespace)?.map(Check::Namespace),
            "source.principal" => f.values("values", any, none, principal)?.map(Check::Principal),
            "source.serviceAccount" => f
                .values("values", any, none, service_account)?
                .map(Check::ServiceAccount),
            "destination.ip" => f.values("values", any, none, cidr)?.map(Check::DestinationIp),
            "destination.port" => f.values("values", any, none, port)?.map(Check::DestinationPort),
            "connection.sni" => f.values("values", any, none, wildcard)?.map(Check::Sni),
            _ => return self.keyed_condition(condition, path),
        };
        Ok(check)
    }

    /// The keys with a bracketed entry, and the keys the waypoint cannot check or Istio refuses.
    fn keyed_condition(&mut self, condition: &Condition, path: &str) -> Result<Option<Check>, CompileError> {
        let key = condition.key.as_str();
        if let Some(rest) = key.strip_prefix("request.headers") {
            let name = map_key(rest).ok_or_else(|| CompileError::new(path, HttpProblem::MapKey(key.to_string())))?;
            let values = Field::new(path).values("values", &condition.values, &condition.not_values, wildcard)?;
            return Ok(values.map(|values| Check::Header {
                name: name.to_ascii_lowercase(),
                values,
            }));
        }
        let kind = match key {
            "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => {
                IssueKind::RequestAuthentication
            }
            _ if key.starts_with("request.auth.claims") => {
                map_key(&key["request.auth.claims".len()..])
                    .ok_or_else(|| CompileError::new(path, HttpProblem::MapKey(key.to_string())))?;
                IssueKind::RequestAuthentication
            }
            _ if key.starts_with("experimental.envoy.filters.") || key.starts_with("request.experimental.") => {
                let open = key.find('[').unwrap_or(key.len());
                map_key(&key[open..]).ok_or_else(|| CompileError::new(path, HttpProblem::MapKey(key.to_string())))?;
                IssueKind::Experimental
            }
            _ => return Err(CompileError::new(path, retired_or_unknown(key))),
        };
        check_not_empty(&condition.values, &format!("{path}.values"))?;
        check_not_empty(&condition.not_values, &format!("{path}.notValues"))?;
        self.unsupported(format!("{path}.key"), kind);
        Ok(None)
    }

    /// Records an attribute the waypoint cannot check: the ALLOW rule never matches, elsewhere it is ignored.
    fn unsupported(&mut self, path: String, kind: IssueKind) {
        let rule = self.index;
        let effect = match self.action {
            PolicyAction::Allow => Effect::RuleNeverMatches { rule },
            PolicyAction::Deny | PolicyAction::Audit | PolicyAction::Custom => Effect::AttributeIgnored { rule },
        };
        self.issues.push(Issue::new(&path, kind, effect));
    }
}

/// The checks of one `operation`.
fn operation_checks(operation: &Operation, path: &str) -> Result<AllOf, CompileError> {
    let (f, o, mut checks) = (Field::new(path), operation, Vec::new());
    push(
        &mut checks,
        f.values("hosts", &o.hosts, &o.not_hosts, host)?,
        Check::Host,
    );
    push(
        &mut checks,
        f.values("ports", &o.ports, &o.not_ports, port)?,
        Check::DestinationPort,
    );
    push(
        &mut checks,
        f.values("methods", &o.methods, &o.not_methods, wildcard)?,
        Check::Method,
    );
    push(
        &mut checks,
        f.values("paths", &o.paths, &o.not_paths, path_pattern)?,
        Check::Path,
    );
    Ok(AllOf { checks })
}

/// The name of a field's `not` form: `paths` → `notPaths`.
fn not_form(name: &str) -> String {
    let mut chars = name.chars();
    let first = chars.next().map(|c| c.to_ascii_uppercase());
    format!("not{}{}", first.map(String::from).unwrap_or_default(), chars.as_str())
}

/// Adds the check of a field that has values.
fn push<T>(checks: &mut Vec<Check>, values: Option<Values<T>>, check: fn(Values<T>) -> Check) {
    checks.extend(values.map(check));
}

/// The key `request.auth.principal` and friends Istio refuses, with why; any other unknown key.
fn retired_or_unknown(key: &str) -> HttpProblem {
    let hint = match key {
        "destination.namespace" => "the policy's own namespace replaces it",
        "destination.name" | "destination.user" => "it was only supported in v1alpha1",
        _ if key.starts_with("destination.labels") => "targetRefs (or a selector) replace it",
        _ => return HttpProblem::UnknownKey(key.to_string()),
    };
    HttpProblem::RetiredKey {
        key: key.to_string(),
        hint,
    }
}

/// The entry name of `[name]`: non-empty, and the whole rest of the key.
fn map_key(rest: &str) -> Option<&str> {
    let name = rest.strip_prefix('[')?.strip_suffix(']')?;
    (!name.is_empty()).then_some(name)
}

/// The values of the list at `path` must not be empty strings.
fn check_not_empty(values: &[String], path: &str) -> Result<(), CompileError> {
    match values.iter().position(String::is_empty) {
        Some(i) => Err(CompileError::new(&format!("{path}[{i}]"), Problem::EmptyValue.into())),
        None => Ok(()),
    }
}

/// The fields of one source, operation or condition, at their common path.
struct Field<'p> {
    path: &'p str,
}

impl<'p> Field<'p> {
    fn new(path: &'p str) -> Self {
        Self { path }
    }

    /// Parses the field `name` and its `not` form (`paths` and `notPaths`); `None` when both are empty.
    fn values<T>(
        &self,
        name: &str,
        any_of: &[String],
        none_of: &[String],
        parse: impl Fn(&str) -> Result<T, HttpProblem>,
    ) -> Result<Option<Values<T>>, CompileError> {
        if any_of.is_empty() && none_of.is_empty() {
            return Ok(None);
        }
        Ok(Some(Values {
            any_of: self.parse_all(name, any_of, &parse)?,
            none_of: self.parse_all(&not_form(name), none_of, &parse)?,
        }))
    }

    /// Parses each value of `{path}.{field}`; the first failure names its index.
    fn parse_all<T>(
        &self,
        field: &str,
        values: &[String],
        parse: &impl Fn(&str) -> Result<T, HttpProblem>,
    ) -> Result<Vec<T>, CompileError> {
        let at = |i: usize, problem| CompileError::new(&format!("{}.{field}[{i}]", self.path), problem);
        (values.iter().enumerate())
            .map(|(i, value)| parse(value).map_err(|problem| at(i, problem)))
            .collect()
    }
}

/// Istio's wildcards for most fields: `*` is presence, a leading `*` a suffix, a trailing `*` a prefix. A `*`
/// anywhere else is a literal character, as in istiod.
fn wildcard(value: &str) -> Result<StringMatch, HttpProblem> {
    if value.is_empty() {
        return Err(Problem::EmptyValue.into());
    }
    Ok(if value == "*" {
        StringMatch::Presence
    } else if let Some(suffix) = value.strip_prefix('*') {
        StringMatch::Suffix(suffix.to_string())
    } else if let Some(prefix) = value.strip_suffix('*') {
        StringMatch::Prefix(prefix.to_string())
    } else {
        StringMatch::Exact(value.to_string())
    })
}

/// A host pattern, lowercased: hosts are compared case-insensitively.
fn host(value: &str) -> Result<StringMatch, HttpProblem> {
    wildcard(&value.to_ascii_lowercase())
}

/// A principal, written without `spiffe://`; an exact one must be a workload identity, or it could never match.
fn principal(value: &str) -> Result<StringMatch, HttpProblem> {
    let refuse = |hint| Problem::Principal {
        value: value.to_string(),
        hint,
    };
    if value.starts_with("spiffe://") {
        return Err(refuse("write it without \"spiffe://\"").into());
    }
    let pattern = wildcard(value)?;
    if let StringMatch::Exact(exact) = &pattern
        && format!("spiffe://{exact}").parse::<Identity>().is_err()
    {
        return Err(refuse("use <trust-domain>/ns/<namespace>/sa/<service-account>").into());
    }
    Ok(pattern)
}

/// A namespace pattern: Istio turns every `*` into `.*`, so a `*` may stand anywhere.
fn namespace(value: &str) -> Result<Glob, HttpProblem> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'*');
    if value.is_empty() {
        return Err(Problem::EmptyValue.into());
    }
    if !value.bytes().all(allowed) {
        return Err(HttpProblem::Namespace(value.to_string()));
    }
    Ok(Glob::new(value))
}

/// `ns/sa`, or a bare `sa` in the policy's namespace; no wildcards.
fn service_account(value: &str, policy_namespace: &str) -> Result<ServiceAccountMatch, HttpProblem> {
    let (namespace, name) = value.split_once('/').unwrap_or((policy_namespace, value));
    let is_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
    };
    if !is_name(namespace) || !is_name(name) {
        return Err(Problem::ServiceAccount(value.to_string()).into());
    }
    Ok(ServiceAccountMatch::new(namespace, name))
}

/// A port from 1 to 65535, written in decimal.
fn port(value: &str) -> Result<u16, HttpProblem> {
    match value.parse::<u16>() {
        Ok(port) if port != 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(Problem::Port(value.to_string()).into()),
    }
}

fn cidr(value: &str) -> Result<IpNet, HttpProblem> {
    value.parse().map_err(|e| Problem::Cidr(e).into())
}

fn path_pattern(value: &str) -> Result<PathMatch, HttpProblem> {
    if value.is_empty() {
        return Err(Problem::EmptyValue.into());
    }
    path_match(value).map_err(HttpProblem::Path)
}

/// Serializes an error by its message.
pub(super) fn display<T: fmt::Display, S: Serializer>(value: &Option<T>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_none(),
    }
}

// === impl CompileError ===

impl CompileError {
    fn new(path: &str, problem: HttpProblem) -> Self {
        Self {
            path: path.to_string(),
            problem,
        }
    }
}

impl From<TranslateError> for CompileError {
    fn from(e: TranslateError) -> Self {
        Self {
            path: e.path,
            problem: HttpProblem::Value(e.problem),
        }
    }
}

// === impl HttpProblem ===

impl From<Problem> for HttpProblem {
    fn from(problem: Problem) -> Self {
        Self::Value(problem)
    }
}

// === impl Issue ===

impl Issue {
    fn new(path: &str, kind: IssueKind, effect: Effect) -> Self {
        Self {
            path: path.to_string(),
            kind,
            effect,
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.path, self.kind, self.effect)
    }
}

// === impl IssueKind ===

impl fmt::Display for IssueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RequestAuthentication => f.write_str(
                "the waypoint does not validate JWTs (RequestAuthentication), so requests have no request \
                     principal or claims",
            ),
            Self::Experimental => f.write_str("experimental Envoy attributes are not supported by the waypoint"),
            Self::CustomAction { provider: Some(p) } => {
                write!(
                    f,
                    "the waypoint cannot ask the external authorization provider {p:?} (CUSTOM action)"
                )
            }
            Self::CustomAction { provider: None } => {
                f.write_str("the waypoint has no external authorization provider (CUSTOM action)")
            }
        }
    }
}

// === impl Effect ===

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RuleNeverMatches { rule } => write!(
                f,
                "the ALLOW rule spec.rules[{rule}] never matches, which is more restrictive than requested"
            ),
            Self::AttributeIgnored { rule } => write!(
                f,
                "the attribute is ignored, so spec.rules[{rule}] matches more requests than written"
            ),
            Self::DeniesMatches => f.write_str("requests the policy matches are denied"),
        }
    }
}

// === impl HttpStatus ===

impl fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Applied => f.write_str("applied"),
            Self::PartiallyApplied { issues } => {
                let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
                f.write_str(&issues.join(". "))
            }
            Self::Rejected { error } => write!(f, "invalid, so it fails closed: {error}"),
        }
    }
}

//! Checks of Istio's AuthorizationPolicy and PeerAuthentication beyond their types: the rules of Istio's
//! validating webhook, and the values the node proxy's translation reads (checked by translating, so that what
//! the store accepts is exactly what translation accepts).

use ambit_policy::istio::{
    AuthorizationPolicy, AuthorizationPolicySpec, PeerAuthentication, PolicyAction, PolicyTargetReference, Rule,
    WorkloadSelector,
};
use ambit_policy::{MtlsPolicy, TranslateError, translate_authorization_policy};

use super::{Findings, index, join, labels, map_path};
use crate::ROOT_NAMESPACE;

/// The (group, kind) pairs a policy may target, as Istio allows.
const TARGET_KINDS: [(&str, &str); 4] = [
    ("", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// Source fields Istio does not support with the CUSTOM action.
const CUSTOM_UNSUPPORTED_SOURCE: [&str; 8] = [
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
];

/// `when` keys Istio does not support with the CUSTOM action (and any `request.auth.*`).
const CUSTOM_UNSUPPORTED_KEYS: [&str; 3] = ["source.namespace", "source.serviceAccount", "source.principal"];

pub(super) fn authorization_policy(policy: &AuthorizationPolicy, findings: &mut Findings) {
    let spec = &policy.spec;
    one_attachment(spec, findings);
    selector(spec.selector.as_ref(), findings);
    target_refs(spec, &policy.metadata.namespace, findings);
    action(spec, findings);
    for (i, rule) in spec.rules.iter().enumerate() {
        check_rule(rule, &index("spec", "rules", i), spec.action, findings);
    }
    translation(policy, findings);
}

pub(super) fn peer_authentication(policy: &PeerAuthentication, findings: &mut Findings) {
    selector(policy.spec.selector.as_ref(), findings);
    for port in policy.spec.port_level_mtls.keys() {
        if *port == 0 || *port > 65535 {
            let message = format!("{port} is not a port: use a number from 1 to 65535");
            findings.error(&map_path("spec.portLevelMtls", &port.to_string()), message);
        }
    }
    if let Err(error) = MtlsPolicy::from_peer_authentication(policy, 0) {
        translate_error(&error, findings);
    }
}

/// A policy applies to the workloads its selector picks, or to its targets: not both.
fn one_attachment(spec: &AuthorizationPolicySpec, findings: &mut Findings) {
    let set = [
        spec.selector.is_some(),
        spec.target_ref.is_some(),
        !spec.target_refs.is_empty(),
    ];
    if set.into_iter().filter(|set| *set).count() > 1 {
        findings.error("spec", "only one of selector, targetRef and targetRefs may be set");
    }
}

/// `matchLabels` must be valid labels (so neither empty keys nor wildcards). An empty map is accepted, as Istio
/// does (with a warning): it selects like no selector.
fn selector(selector: Option<&WorkloadSelector>, findings: &mut Findings) {
    if let Some(selector) = selector {
        labels(selector.match_labels.iter(), "spec.selector.matchLabels", findings);
    }
}

fn target_refs(spec: &AuthorizationPolicySpec, namespace: &str, findings: &mut Findings) {
    if let Some(target) = &spec.target_ref {
        target_ref(target, "spec.targetRef", namespace, findings);
    }
    for (i, target) in spec.target_refs.iter().enumerate() {
        target_ref(target, &index("spec", "targetRefs", i), namespace, findings);
    }
}

/// A target: named, in the policy's namespace, of a kind Istio can attach policies to.
fn target_ref(target: &PolicyTargetReference, path: &str, namespace: &str, findings: &mut Findings) {
    findings.required(&join(path, "name"), &target.name);
    if let Some(other) = target
        .namespace
        .as_deref()
        .filter(|other| !other.is_empty() && *other != namespace)
    {
        let message = format!("{other:?} is another namespace: cross-namespace targets are not supported");
        findings.error(&join(path, "namespace"), message);
    }
    let known = (TARGET_KINDS.iter()).any(|(group, kind)| *group == target.group && *kind == target.kind);
    if !known {
        let (group, kind) = (&target.group, &target.kind);
        let message = format!(
            "group {group:?}, kind {kind:?} cannot be targeted: use a Service, a ServiceEntry \
             (networking.istio.io), or a Gateway or GatewayClass (gateway.networking.k8s.io)"
        );
        findings.error(&join(path, "kind"), message);
    }
}

/// CUSTOM needs a provider and rules; only CUSTOM takes a provider; DENY needs rules.
fn action(spec: &AuthorizationPolicySpec, findings: &mut Findings) {
    let provider = spec.provider.as_ref();
    let no_rules = "add an empty rule `{}` to match every request";
    match spec.action {
        PolicyAction::Custom => {
            if provider.is_none_or(|provider| provider.name.is_empty()) {
                findings.error("spec.provider.name", "required for the CUSTOM action");
            }
            if spec.rules.is_empty() {
                let message = format!("a CUSTOM policy without rules is never triggered; {no_rules}");
                findings.error("spec.rules", message);
            }
        }
        action if provider.is_some() => {
            findings.error(
                "spec.provider",
                format!("only the CUSTOM action takes a provider, not {action}"),
            );
        }
        PolicyAction::Deny if spec.rules.is_empty() => {
            let message = format!("a DENY policy without rules never denies anything; {no_rules}");
            findings.error("spec.rules", message);
        }
        _ => {}
    }
}

fn check_rule(rule: &Rule, path: &str, action: PolicyAction, findings: &mut Findings) {
    for (k, from) in rule.from.iter().enumerate() {
        let Some(source) = &from.source else { continue };
        let path = join(&index(path, "from", k), "source");
        let identities = [
            &source.namespaces,
            &source.not_namespaces,
            &source.principals,
            &source.not_principals,
        ];
        let accounts = !source.service_accounts.is_empty() || !source.not_service_accounts.is_empty();
        if accounts && identities.iter().any(|values| !values.is_empty()) {
            let message = "cannot be set together with namespaces or principals";
            findings.error(&join(&path, "serviceAccounts"), message);
        }
        if action == PolicyAction::Custom {
            custom_source(source, &path, findings);
        }
    }
    for (j, condition) in rule.when.iter().enumerate() {
        let path = index(path, "when", j);
        when(&condition.key, &path, action, findings);
        if condition.values.is_empty() && condition.not_values.is_empty() {
            findings.error(
                &path,
                format!("the condition on {:?} needs values or notValues", condition.key),
            );
        }
    }
}

/// Identity fields of a source that Istio refuses in a CUSTOM policy.
fn custom_source(source: &ambit_policy::istio::Source, path: &str, findings: &mut Findings) {
    let values = [
        &source.namespaces,
        &source.not_namespaces,
        &source.service_accounts,
        &source.not_service_accounts,
        &source.principals,
        &source.not_principals,
        &source.request_principals,
        &source.not_request_principals,
    ];
    for (field, values) in CUSTOM_UNSUPPORTED_SOURCE.iter().zip(values) {
        if !values.is_empty() {
            findings.error(&join(path, field), "not supported with the CUSTOM action");
        }
    }
}

fn when(key: &str, path: &str, action: PolicyAction, findings: &mut Findings) {
    let path = join(path, "key");
    if key.is_empty() {
        findings.error(&path, "required");
    } else if action == PolicyAction::Custom
        && (CUSTOM_UNSUPPORTED_KEYS.contains(&key) || key.starts_with("request.auth."))
    {
        findings.error(&path, format!("{key:?} is not supported with the CUSTOM action"));
    }
}

/// The values translation reads (principals, namespaces, CIDRs, ports, the dry-run annotation), checked by
/// translating the policy as an ALLOW policy without targets: a waypoint's policies, and CUSTOM and AUDIT ones,
/// are not translated for the node proxy, but their values must be just as valid.
fn translation(policy: &AuthorizationPolicy, findings: &mut Findings) {
    let mut l4 = policy.clone();
    l4.spec.target_ref = None;
    l4.spec.target_refs.clear();
    if !matches!(l4.spec.action, PolicyAction::Allow | PolicyAction::Deny) {
        l4.spec.action = PolicyAction::Allow;
    }
    if let Err(error) = translate_authorization_policy(&l4, ROOT_NAMESPACE) {
        translate_error(&error, findings);
    }
}

/// A translation error, unless a check here already reported that field.
fn translate_error(error: &TranslateError, findings: &mut Findings) {
    findings.error_once(&error.path, error.problem.to_string());
}

//! Tests of AuthorizationPolicy translation: the cases of istiod's translation for ztunnel (scope, action, rule
//! layout, wildcards, `when` keys, HTTP attributes failing closed), the statuses, and one error per invalid value.

use std::net::IpAddr;

use serde_json::json;

use super::*;
use crate::evaluate::{ConnInfo, Verdict, evaluate};

const ROOT: &str = "istio-system";

fn parse(namespace: &str, spec: &str) -> AuthorizationPolicy {
    let text = format!("metadata: {{name: p, namespace: {namespace}}}\nspec: {spec}");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n--- in:\n{text}"))
}

fn translate(namespace: &str, spec: &str) -> Result<Translation, TranslateError> {
    translate_authorization_policy(&parse(namespace, spec), ROOT)
}

fn conn(identity: Option<&str>, source: [u8; 4], port: u16) -> ConnInfo {
    ConnInfo {
        source_identity: identity.map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))),
        source_ip: IpAddr::from(source),
        destination_ip: IpAddr::from([10, 1, 0, 1]),
        destination_port: port,
    }
}

/// `spiffe://cluster.local/ns/a/sa/b` from 10.0.0.1, to port 8080.
fn from_b() -> ConnInfo {
    conn(Some("spiffe://cluster.local/ns/a/sa/b"), [10, 0, 0, 1], 8080)
}

/// `spiffe://cluster.local/ns/other/sa/c` from 192.168.0.1, to port 8080.
fn from_other() -> ConnInfo {
    conn(Some("spiffe://cluster.local/ns/other/sa/c"), [192, 168, 0, 1], 8080)
}

fn plaintext() -> ConnInfo {
    conn(None, [10, 0, 0, 1], 8080)
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

struct Case {
    name: &'static str,
    namespace: &'static str,
    spec: &'static str,
    scope: Scope,
    action: Action,
    groups: serde_json::Value,
    status: PolicyStatus,
    /// The verdict of [`evaluate`] with this policy alone.
    verdicts: Vec<(ConnInfo, Verdict)>,
}

fn cases() -> Vec<Case> {
    use Verdict::{Allow, Deny};
    let partially = |reason| PolicyStatus::PartiallyApplied { reasons: vec![reason] };
    vec![
        Case {
            name: "ALLOW with spec {} allows nothing",
            namespace: "demo",
            spec: "{}",
            scope: Scope::Namespace,
            action: Action::Allow,
            groups: json!([]),
            status: PolicyStatus::Applied,
            verdicts: vec![(from_b(), Deny), (plaintext(), Deny)],
        },
        Case {
            name: "rule - {} matches everything",
            namespace: "demo",
            spec: "{rules: [{}]}",
            scope: Scope::Namespace,
            action: Action::Allow,
            groups: json!([{}]),
            status: PolicyStatus::Applied,
            verdicts: vec![(from_b(), Allow), (plaintext(), Allow)],
        },
        Case {
            name: "DENY rule - {} denies everything",
            namespace: "demo",
            spec: "{action: DENY, rules: [{}]}",
            scope: Scope::Namespace,
            action: Action::Deny,
            groups: json!([{}]),
            status: PolicyStatus::Applied,
            verdicts: vec![(from_b(), Deny), (plaintext(), Deny)],
        },
        Case {
            name: "root namespace without selector is GLOBAL",
            namespace: ROOT,
            spec: "{action: DENY, rules: [{from: [{source: {notPrincipals: ['*']}}]}]}",
            scope: Scope::Global,
            action: Action::Deny,
            groups: json!([{"clauses": [{"matches": [{"notPrincipals": ["presence"]}]}]}]),
            status: PolicyStatus::Applied,
            verdicts: vec![(from_b(), Allow), (plaintext(), Deny)],
        },
        Case {
            name: "selector makes WORKLOAD_SELECTOR, in the root namespace too",
            namespace: ROOT,
            spec: "{selector: {matchLabels: {app: web}}, rules: [{from: [{source: {namespaces: [a]}}]}]}",
            scope: Scope::WorkloadSelector,
            action: Action::Allow,
            groups: json!([{"clauses": [{"matches": [{"namespaces": [{"exact": "a"}]}]}]}]),
            status: PolicyStatus::Applied,
            verdicts: vec![(from_b(), Allow), (from_other(), Deny), (plaintext(), Deny)],
        },
        Case {
            name: "selector without labels is namespace-wide",
            namespace: "demo",
            spec: "{selector: {matchLabels: {}}, rules: [{}]}",
            scope: Scope::Namespace,
            action: Action::Allow,
            groups: json!([{}]),
            status: PolicyStatus::Applied,
            verdicts: vec![],
        },
        Case {
            name: "principals exact and wildcards",
            namespace: "demo",
            spec: "{rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/b, 'cluster.local/ns/x/*', \
                   '*/sa/y', '*'], notPrincipals: [cluster.local/ns/a/sa/evil]}}]}]}",
            scope: Scope::Namespace,
            action: Action::Allow,
            groups: json!([{"clauses": [{"matches": [{
                "principals": [
                    {"exact": "cluster.local/ns/a/sa/b"},
                    {"prefix": "cluster.local/ns/x/"},
                    {"suffix": "/sa/y"},
                    "presence",
                ],
                "notPrincipals": [{"exact": "cluster.local/ns/a/sa/evil"}],
            }]}]}]),
            status: PolicyStatus::Applied,
            verdicts: vec![(from_b(), Allow), (from_other(), Allow), (plaintext(), Deny)],
        },
        Case {
            name: "namespaces and notNamespaces with wildcards",
            namespace: "demo",
            spec: "{rules: [{from: [{source: {namespaces: ['*'], notNamespaces: ['oth*', '*-test']}}]}]}",
            scope: Scope::Namespace,
            action: Action::Allow,
            groups: json!([{"clauses": [{"matches": [{
                "namespaces": ["presence"],
                "notNamespaces": [{"prefix": "oth"}, {"suffix": "-test"}],
            }]}]}]),
            status: PolicyStatus::Applied,
            verdicts: vec![(from_b(), Allow), (from_other(), Deny), (plaintext(), Deny)],
        },
        Case {
            name: "serviceAccounts relative to the policy namespace",
            namespace: "a",
            spec: "{rules: [{from: [{source: {serviceAccounts: [b, other/c], notServiceAccounts: [d]}}]}]}",
            scope: Scope::Namespace,
            action: Action::Allow,
            groups: json!([{"clauses": [{"matches": [{
                "serviceAccounts": [
                    {"namespace": "a", "serviceAccount": "b"},
                    {"namespace": "other", "serviceAccount": "c"},
                ],
                "notServiceAccounts": [{"namespace": "a", "serviceAccount": "d"}],
            }]}]}]),
            status: PolicyStatus::Applied,
            verdicts: vec![(from_b(), Allow), (from_other(), Allow), (plaintext(), Deny)],
        },
        Case {
            name: "from items ORed, to a separate ANDed clause",
            namespace: "demo",
            spec: "{rules: [{from: [{source: {namespaces: [a]}}, {source: {ipBlocks: [192.168.0.0/16], \
                   notIpBlocks: [192.168.9.9]}}], to: [{operation: {ports: ['8080'], notPorts: ['9090']}}]}]}",
            scope: Scope::Namespace,
            action: Action::Allow,
            groups: json!([{"clauses": [
                {"matches": [
                    {"namespaces": [{"exact": "a"}]},
                    {"sourceIps": ["192.168.0.0/16"], "notSourceIps": ["192.168.9.9/32"]},
                ]},
                {"matches": [{"destinationPorts": [8080], "notDestinationPorts": [9090]}]},
            ]}]),
            status: PolicyStatus::Applied,
            verdicts: vec![
                (from_b(), Allow),
                (from_other(), Allow),
                (plaintext(), Deny),
                (
                    conn(Some("spiffe://cluster.local/ns/a/sa/b"), [10, 0, 0, 1], 9090),
                    Deny,
                ),
            ],
        },
        Case {
            name: "each when is its own clause",
            namespace: "demo",
            spec: "{rules: [{when: [{key: source.ip, values: [10.0.0.0/8]}, {key: source.namespace, notValues: \
                   [other]}, {key: source.principal, values: ['cluster.local/*']}, {key: destination.ip, values: \
                   [10.1.0.0/16], notValues: [10.1.9.9]}, {key: destination.port, values: ['8080'], notValues: \
                   ['9090']}]}]}",
            scope: Scope::Namespace,
            action: Action::Allow,
            groups: json!([{"clauses": [
                {"matches": [{"sourceIps": ["10.0.0.0/8"]}]},
                {"matches": [{"notNamespaces": [{"exact": "other"}]}]},
                {"matches": [{"principals": [{"prefix": "cluster.local/"}]}]},
                {"matches": [{"destinationIps": ["10.1.0.0/16"], "notDestinationIps": ["10.1.9.9/32"]}]},
                {"matches": [{"destinationPorts": [8080], "notDestinationPorts": [9090]}]},
            ]}]),
            status: PolicyStatus::Applied,
            verdicts: vec![(from_b(), Allow), (from_other(), Deny), (plaintext(), Deny)],
        },
        Case {
            name: "ALLOW with L7 methods: rule dropped, denies all",
            namespace: "demo",
            spec: "{rules: [{from: [{source: {namespaces: [a]}}], to: [{operation: {ports: ['8080'], methods: \
                   [GET]}}]}]}",
            scope: Scope::Namespace,
            action: Action::Allow,
            groups: json!([{"clauses": [{"matches": [{}]}]}]),
            status: partially(Deviation::DropAllowRules {
                rules: vec![0],
                attributes: strings(&["methods"]),
                allows_nothing: true,
            }),
            verdicts: vec![(from_b(), Deny), (plaintext(), Deny)],
        },
        Case {
            name: "ALLOW with one L7 rule and one L4 rule keeps the L4 rule at its index",
            namespace: "demo",
            spec: "{rules: [{to: [{operation: {paths: [/admin], hosts: [a.example]}}]}, {when: [{key: \
                   'request.headers[x-user]', values: [alice]}]}, {from: [{source: {namespaces: [a]}}]}]}",
            scope: Scope::Namespace,
            action: Action::Allow,
            groups: json!([
                {"clauses": [{"matches": [{}]}]},
                {"clauses": [{"matches": [{}]}]},
                {"clauses": [{"matches": [{"namespaces": [{"exact": "a"}]}]}]},
            ]),
            status: partially(Deviation::DropAllowRules {
                rules: vec![0, 1],
                attributes: strings(&["hosts", "paths", "request.headers[x-user]"]),
                allows_nothing: false,
            }),
            verdicts: vec![(from_b(), Allow), (from_other(), Deny)],
        },
        Case {
            name: "DENY with L4 from and L7 when is a no-op",
            namespace: "demo",
            spec: "{action: DENY, rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/b]}}], when: [{key: \
                   'request.auth.claims[iss]', values: ['https://issuer']}]}]}",
            scope: Scope::Namespace,
            action: Action::Deny,
            groups: json!([{"clauses": [
                {"matches": [{"principals": [{"exact": "cluster.local/ns/a/sa/b"}]}]},
                {"matches": [{}]},
            ]}]),
            status: partially(Deviation::NullifyDeny {
                rules: vec![0],
                attributes: strings(&["request.auth.claims[iss]"]),
                whole_policy: true,
            }),
            verdicts: vec![(from_b(), Allow), (plaintext(), Allow)],
        },
        Case {
            name: "DENY with L7 fields is broader",
            namespace: "demo",
            spec: "{action: DENY, rules: [{to: [{operation: {ports: ['8080'], methods: [POST]}}]}]}",
            scope: Scope::Namespace,
            action: Action::Deny,
            groups: json!([{"clauses": [{"matches": [{"destinationPorts": [8080]}]}]}]),
            status: partially(Deviation::WidenDeny {
                rules: vec![0],
                attributes: strings(&["methods"]),
            }),
            verdicts: vec![(from_b(), Deny), (plaintext(), Deny)],
        },
        Case {
            name: "DENY with only L7 source fields is a no-op",
            namespace: "demo",
            spec: "{action: DENY, rules: [{from: [{source: {requestPrincipals: ['*'], notRemoteIpBlocks: \
                   [10.0.0.0/8]}}]}]}",
            scope: Scope::Namespace,
            action: Action::Deny,
            groups: json!([{"clauses": [{"matches": [{}]}]}]),
            status: partially(Deviation::NullifyDeny {
                rules: vec![0],
                attributes: strings(&["notRemoteIpBlocks", "requestPrincipals"]),
                whole_policy: true,
            }),
            verdicts: vec![(from_b(), Allow), (plaintext(), Allow)],
        },
        Case {
            name: "DENY with a widened rule and a nullified rule",
            namespace: "demo",
            spec: "{action: DENY, rules: [{from: [{source: {namespaces: [other], trustDomains: [td]}}]}, {to: \
                   [{operation: {notMethods: [GET]}}]}, {from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]}",
            scope: Scope::Namespace,
            action: Action::Deny,
            groups: json!([
                {"clauses": [{"matches": [{"namespaces": [{"exact": "other"}]}]}]},
                {"clauses": [{"matches": [{}]}]},
                {"clauses": [{"matches": [{"sourceIps": ["10.0.0.0/8"]}]}]},
            ]),
            status: PolicyStatus::PartiallyApplied {
                reasons: vec![
                    Deviation::WidenDeny {
                        rules: vec![0],
                        attributes: strings(&["trustDomains"]),
                    },
                    Deviation::NullifyDeny {
                        rules: vec![1],
                        attributes: strings(&["notMethods"]),
                        whole_policy: false,
                    },
                ],
            },
            verdicts: vec![
                (from_b(), Deny),
                (from_other(), Deny),
                (conn(None, [172, 16, 0, 1], 80), Allow),
            ],
        },
    ]
}

#[test]
fn translates_as_istiod() {
    for case in cases() {
        let name = case.name;
        let translation = translate(case.namespace, case.spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        let authorization = translation
            .authorization
            .unwrap_or_else(|| panic!("{name}: not applied"));
        assert_eq!(
            (authorization.scope, authorization.action),
            (case.scope, case.action),
            "{name}"
        );
        assert_eq!(
            (authorization.name.as_str(), authorization.namespace.as_str()),
            ("p", case.namespace),
            "{name}"
        );
        assert!(!authorization.dry_run, "{name}");
        let groups = serde_json::to_value(&authorization.groups).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(groups, case.groups, "{name}");
        assert_eq!(translation.status, case.status, "{name}");
        for (conn, verdict) in case.verdicts {
            let decision = evaluate(&[&authorization], &conn);
            assert_eq!(decision.verdict, verdict, "{name}: {conn:?}: {decision}");
        }
    }
}

#[test]
fn skips_what_ztunnel_cannot_enforce() {
    let cases = [
        (
            "targetRefs: waypoint only",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}], rules: [{}]}",
            SkipReason::DeferToWaypoint,
        ),
        (
            "targetRef: waypoint only",
            "{targetRef: {kind: Service, group: '', name: web}, action: DENY}",
            SkipReason::DeferToWaypoint,
        ),
        (
            "targetRefs win over an unsupported action",
            "{targetRefs: [{kind: Service, name: web}], action: CUSTOM, provider: {name: ext}}",
            SkipReason::DeferToWaypoint,
        ),
        (
            "CUSTOM dropped",
            "{action: CUSTOM, provider: {name: ext-authz}, rules: [{}]}",
            SkipReason::RejectAction(PolicyAction::Custom),
        ),
        (
            "AUDIT dropped",
            "{action: AUDIT, rules: [{}]}",
            SkipReason::RejectAction(PolicyAction::Audit),
        ),
        (
            "skipped before its rules are checked",
            "{action: AUDIT, rules: [{to: [{operation: {ports: ['0']}}]}]}",
            SkipReason::RejectAction(PolicyAction::Audit),
        ),
    ];
    for (name, spec, reason) in cases {
        let translation = translate("demo", spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(translation.authorization, None, "{name}");
        assert_eq!(translation.status, PolicyStatus::NotApplied { reason }, "{name}");
    }
}

#[test]
fn status_messages() {
    let status = |spec| {
        translate("demo", spec)
            .map(|t| t.status.to_string())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let cases = [
        ("{rules: [{}]}", "applied"),
        (
            "{action: CUSTOM, provider: {name: x}}",
            "ztunnel does not support the CUSTOM action",
        ),
        ("{action: AUDIT}", "ztunnel does not support the AUDIT action"),
        (
            "{targetRefs: [{kind: Gateway, name: w}]}",
            "the policy has targetRefs, so a waypoint enforces it; ztunnel does not receive it",
        ),
        (
            "{rules: [{to: [{operation: {methods: [GET]}}]}]}",
            "ztunnel does not support HTTP attributes (found: methods). In ambient mode you must use a waypoint \
             proxy to enforce HTTP rules. Within an ALLOW policy, rules matching HTTP attributes are omitted \
             (spec.rules[0] never matches). No rule is left, so this policy allows nothing: all traffic to its \
             workloads is denied. This will be more restrictive than requested.",
        ),
        (
            "{rules: [{to: [{operation: {methods: [GET]}}]}, {}]}",
            "ztunnel does not support HTTP attributes (found: methods). In ambient mode you must use a waypoint \
             proxy to enforce HTTP rules. Within an ALLOW policy, rules matching HTTP attributes are omitted \
             (spec.rules[0] never matches). This will be more restrictive than requested.",
        ),
        (
            "{action: DENY, rules: [{to: [{operation: {ports: ['80'], paths: [/x]}}]}]}",
            "ztunnel does not support HTTP attributes (found: paths). In ambient mode you must use a waypoint \
             proxy to enforce HTTP rules. DENY policy with HTTP attributes is enforced without the HTTP rules \
             (spec.rules[0]). This will be more restrictive than requested.",
        ),
        (
            "{action: DENY, rules: [{when: [{key: 'request.headers[x]', values: [y]}]}]}",
            "ztunnel does not support HTTP attributes (found: request.headers[x]). In ambient mode you must use a \
             waypoint proxy to enforce HTTP rules. After omitting unsupported HTTP attributes, this DENY policy has \
             no enforceable rules at ztunnel and will have no effect. Deploy a waypoint proxy and use a targetRef \
             to enforce this policy.",
        ),
        (
            "{action: DENY, rules: [{when: [{key: 'request.headers[x]', values: [y]}]}, {}]}",
            "ztunnel does not support HTTP attributes (found: request.headers[x]). In ambient mode you must use a \
             waypoint proxy to enforce HTTP rules. After omitting unsupported HTTP attributes, spec.rules[0] can \
             never match at ztunnel and will have no effect. Deploy a waypoint proxy and use a targetRef to \
             enforce it.",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(status(spec), want, "{spec}");
    }
}

#[test]
fn dry_run_annotation() {
    let with = |value: &str| {
        let mut policy = parse("demo", "{rules: [{}]}");
        policy
            .metadata
            .annotations
            .insert(DRY_RUN_ANNOTATION.to_string(), value.to_string());
        translate_authorization_policy(&policy, ROOT)
    };
    for (value, want) in [
        ("true", true),
        ("True", true),
        ("1", true),
        ("false", false),
        ("F", false),
        ("", false),
    ] {
        let translation = with(value).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(translation.authorization.map(|a| a.dry_run), Some(want), "{value:?}");
    }
    let err = with("yes").unwrap_err();
    assert_eq!(
        err.to_string(),
        "metadata.annotations[\"istio.io/dry-run\"]: \"yes\" is not a boolean: use true or false"
    );
}

#[test]
fn invalid_values_name_their_field() {
    let cases = [
        (
            "{rules: [{from: [{source: {ipBlocks: [10.0.0.0/8, 10.0.0.0/33]}}]}]}",
            "spec.rules[0].from[0].source.ipBlocks[1]: \"10.0.0.0/33\" is not a CIDR: the prefix length 33 is longer \
             than the 32 bits of the address",
        ),
        (
            "{rules: [{}, {from: [{source: {namespaces: [a]}}, {source: {notIpBlocks: [10.0.0.256]}}]}]}",
            "spec.rules[1].from[1].source.notIpBlocks[0]: \"10.0.0.256\" is not a CIDR: the address is neither IPv4 \
             nor IPv6",
        ),
        (
            "{rules: [{to: [{operation: {ports: ['0']}}]}]}",
            "spec.rules[0].to[0].operation.ports[0]: \"0\" is not a port: use a number from 1 to 65535",
        ),
        (
            "{rules: [{to: [{operation: {ports: ['80']}}, {operation: {notPorts: ['443', '65536']}}]}]}",
            "spec.rules[0].to[1].operation.notPorts[1]: \"65536\" is not a port: use a number from 1 to 65535",
        ),
        (
            "{rules: [{to: [{operation: {ports: [http]}}]}]}",
            "spec.rules[0].to[0].operation.ports[0]: \"http\" is not a port: use a number from 1 to 65535",
        ),
        (
            "{rules: [{}, {from: [{source: {principals: ['spiffe://cluster.local/ns/a/sa/b']}}]}]}",
            "spec.rules[1].from[0].source.principals[0]: \"spiffe://cluster.local/ns/a/sa/b\" is not a principal: \
             write it without \"spiffe://\"",
        ),
        (
            "{rules: [{from: [{source: {notPrincipals: [cluster.local/ns/a]}}]}]}",
            "spec.rules[0].from[0].source.notPrincipals[0]: \"cluster.local/ns/a\" is not a principal: use \
             <trust-domain>/ns/<namespace>/sa/<service-account>",
        ),
        (
            "{rules: [{from: [{source: {principals: ['cluster.local/*/sa/b']}}]}]}",
            "spec.rules[0].from[0].source.principals[0]: \"cluster.local/*/sa/b\" has a '*' in the middle: a \
             wildcard is only allowed at the start or the end",
        ),
        (
            "{rules: [{from: [{source: {principals: ['']}}]}]}",
            "spec.rules[0].from[0].source.principals[0]: must not be an empty string",
        ),
        (
            "{rules: [{from: [{source: {namespaces: [Prod]}}]}]}",
            "spec.rules[0].from[0].source.namespaces[0]: \"Prod\" is not a namespace: use lowercase letters, \
             digits, '-' and '.', with '*' only at the start or end",
        ),
        (
            "{rules: [{from: [{source: {serviceAccounts: [a/b/c]}}]}]}",
            "spec.rules[0].from[0].source.serviceAccounts[0]: \"a/b/c\" is not a service account: use \
             <namespace>/<name> or <name>, without wildcards",
        ),
        (
            "{rules: [{from: [{source: {notServiceAccounts: ['*']}}]}]}",
            "spec.rules[0].from[0].source.notServiceAccounts[0]: \"*\" is not a service account: use \
             <namespace>/<name> or <name>, without wildcards",
        ),
        (
            "{rules: [{when: [{key: source.ip, values: [10.0.0.0/8]}, {key: source.ip, notValues: [nope]}]}]}",
            "spec.rules[0].when[1].notValues[0]: \"nope\" is not a CIDR: the address is neither IPv4 nor IPv6",
        ),
        (
            "{rules: [{when: [{key: destination.port, values: ['70000']}]}]}",
            "spec.rules[0].when[0].values[0]: \"70000\" is not a port: use a number from 1 to 65535",
        ),
        (
            "{rules: [{when: [{key: source.principal, values: ['spiffe://x/ns/a/sa/b']}]}]}",
            "spec.rules[0].when[0].values[0]: \"spiffe://x/ns/a/sa/b\" is not a principal: write it without \
             \"spiffe://\"",
        ),
        (
            "{rules: [{when: [{key: source.namespace}]}]}",
            "spec.rules[0].when[0]: the condition on \"source.namespace\" has neither values nor notValues",
        ),
        (
            "{rules: [{from: [{}]}]}",
            "spec.rules[0].from[0].source: must set at least one field",
        ),
        (
            "{rules: [{from: [{source: {}}]}]}",
            "spec.rules[0].from[0].source: must set at least one field",
        ),
        (
            "{rules: [{to: [{operation: {}}]}]}",
            "spec.rules[0].to[0].operation: must set at least one field",
        ),
    ];
    for (spec, want) in cases {
        let err = translate("demo", spec)
            .err()
            .unwrap_or_else(|| panic!("{spec}: no error"));
        assert_eq!(err.to_string(), want, "{spec}");
    }
}

#[test]
fn metadata_is_required() {
    let cases = [
        ("spec: {}", "metadata.name: must be set"),
        ("metadata: {name: p}\nspec: {}", "metadata.namespace: must be set"),
    ];
    for (text, want) in cases {
        let policy: AuthorizationPolicy = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let err = translate_authorization_policy(&policy, ROOT).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
}

#[test]
fn unknown_spec_fields_are_refused() {
    // A field this crate does not know would otherwise be ignored, and an ignored condition widens an ALLOW.
    let cases = [
        "metadata: {name: p, namespace: demo}\nspec: {rules: [{from: [{source: {principalz: [x]}}]}]}",
        "metadata: {name: p, namespace: demo}\nspec: {rules: [{to: [{operation: {port: ['80']}}]}]}",
        "metadata: {name: p, namespace: demo}\nspec: {action: MAYBE}",
    ];
    for text in cases {
        assert!(serde_saphyr::from_str::<AuthorizationPolicy>(text).is_err(), "{text}");
    }
}

#[test]
fn reads_kubernetes_manifests() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-frontend
  namespace: shop
  labels: {team: web}
  creationTimestamp: "2026-01-01T00:00:00Z"
spec:
  selector:
    matchLabels:
      app: cart
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/frontend"]
    to:
    - operation:
        ports: ["8080"]
"#;
    let json = r#"{
      "apiVersion": "security.istio.io/v1",
      "kind": "AuthorizationPolicy",
      "metadata": {"name": "allow-frontend", "namespace": "shop", "uid": "1234"},
      "spec": {
        "selector": {"matchLabels": {"app": "cart"}},
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/frontend"]}}],
                   "to": [{"operation": {"ports": ["8080"]}}]}]
      }
    }"#;
    let from_yaml: AuthorizationPolicy = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    let from_json: AuthorizationPolicy = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_yaml, from_json);
    let translation = translate_authorization_policy(&from_yaml, ROOT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(translation.status, PolicyStatus::Applied);
    let frontend = conn(Some("spiffe://cluster.local/ns/shop/sa/frontend"), [10, 0, 0, 9], 8080);
    let authorization = translation.authorization.unwrap_or_else(|| panic!("not applied"));
    assert_eq!(authorization.scope, Scope::WorkloadSelector);
    assert_eq!(
        evaluate(&[&authorization], &frontend).to_string(),
        "allowed by ALLOW policy shop/allow-frontend (rule 0 matched: principal cluster.local/ns/shop/sa/frontend, \
         destination port 8080)"
    );
}

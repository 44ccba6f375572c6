//! Tests of the decision: Istio's DENY → ALLOW order, dry-run reporting, plaintext peers, the reasons' text, and
//! which policies apply to a workload.

use std::net::IpAddr;

use super::*;
use crate::authorization::{Clause, Group, Match, StringMatch};

const PEER: &str = "spiffe://cluster.local/ns/a/sa/b";

fn conn(identity: Option<&str>, port: u16) -> ConnInfo {
    ConnInfo {
        source_identity: identity.map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))),
        source_ip: IpAddr::from([10, 0, 0, 1]),
        destination_ip: IpAddr::from([10, 1, 0, 1]),
        destination_port: port,
    }
}

fn mtls() -> ConnInfo {
    conn(Some(PEER), 8080)
}

fn plaintext() -> ConnInfo {
    conn(None, 8080)
}

fn exact(s: &str) -> StringMatch {
    StringMatch::Exact(s.to_string())
}

fn policy(name: &str, action: Action, matches: Vec<Match>) -> Authorization {
    Authorization {
        name: name.to_string(),
        namespace: "demo".to_string(),
        scope: Scope::Namespace,
        action,
        groups: vec![Group {
            clauses: vec![Clause { matches }],
        }],
        dry_run: false,
    }
}

fn principal(p: &str) -> Match {
    Match {
        principals: vec![exact(p)],
        ..Match::default()
    }
}

fn namespace(ns: &str) -> Match {
    Match {
        namespaces: vec![exact(ns)],
        ..Match::default()
    }
}

fn port(p: u16) -> Match {
    Match {
        destination_ports: vec![p],
        ..Match::default()
    }
}

fn plaintext_peer() -> Match {
    Match {
        not_principals: vec![StringMatch::Presence],
        ..Match::default()
    }
}

fn dry(mut policy: Authorization) -> Authorization {
    policy.dry_run = true;
    policy
}

fn allow(name: &str, m: Match) -> Authorization {
    policy(name, Action::Allow, vec![m])
}

fn deny(name: &str, m: Match) -> Authorization {
    policy(name, Action::Deny, vec![m])
}

/// A policy with no groups: an ALLOW written as `spec: {}`.
fn allow_nothing(name: &str) -> Authorization {
    Authorization {
        groups: Vec::new(),
        ..allow(name, Match::default())
    }
}

struct Case {
    name: &'static str,
    policies: Vec<Authorization>,
    conn: ConnInfo,
    verdict: Verdict,
    matched: Option<&'static str>,
    text: &'static str,
}

#[test]
fn evaluation_order() {
    let b = "cluster.local/ns/a/sa/b";
    let cases = vec![
        Case {
            name: "no policies: allow",
            policies: vec![],
            conn: mtls(),
            verdict: Verdict::Allow,
            matched: None,
            text: "allowed: no policy applies to the workload",
        },
        Case {
            name: "matching deny: deny",
            policies: vec![deny("deny-all", principal(b))],
            conn: mtls(),
            verdict: Verdict::Deny,
            matched: Some("demo/deny-all"),
            text: "denied by DENY policy demo/deny-all (rule 0 matched: principal cluster.local/ns/a/sa/b)",
        },
        Case {
            name: "deny beats allow, whatever the order",
            policies: vec![allow("allow-b", principal(b)), deny("deny-port", port(8080))],
            conn: mtls(),
            verdict: Verdict::Deny,
            matched: Some("demo/deny-port"),
            text: "denied by DENY policy demo/deny-port (rule 0 matched: destination port 8080)",
        },
        Case {
            name: "first matching deny is reported",
            policies: vec![deny("d1", port(8080)), deny("d2", principal(b))],
            conn: mtls(),
            verdict: Verdict::Deny,
            matched: Some("demo/d1"),
            text: "denied by DENY policy demo/d1 (rule 0 matched: destination port 8080)",
        },
        Case {
            name: "deny not matching, no allow: allow",
            policies: vec![deny("deny-9090", port(9090))],
            conn: mtls(),
            verdict: Verdict::Allow,
            matched: None,
            text: "allowed: no ALLOW policy applies and the DENY policy did not match",
        },
        Case {
            name: "two denies not matching",
            policies: vec![deny("d1", port(9090)), deny("d2", port(9091))],
            conn: mtls(),
            verdict: Verdict::Allow,
            matched: None,
            text: "allowed: no ALLOW policy applies and none of the 2 DENY policies matched",
        },
        Case {
            name: "allow matches: allow",
            policies: vec![deny("d", port(9090)), allow("allow-a", namespace("a"))],
            conn: mtls(),
            verdict: Verdict::Allow,
            matched: Some("demo/allow-a"),
            text: "allowed by ALLOW policy demo/allow-a (rule 0 matched: namespace a)",
        },
        Case {
            name: "allows exist, none matches: deny",
            policies: vec![allow("allow-x", namespace("x")), allow("allow-9090", port(9090))],
            conn: mtls(),
            verdict: Verdict::Deny,
            matched: None,
            text: "allow policies exist, but none allowed (no rule matched in ALLOW demo/allow-x, demo/allow-9090)",
        },
        Case {
            name: "allow with no rules allows nothing",
            policies: vec![allow_nothing("allow-nothing")],
            conn: mtls(),
            verdict: Verdict::Deny,
            matched: None,
            text: "allow policies exist, but none allowed (no rule matched in ALLOW demo/allow-nothing)",
        },
        Case {
            name: "dry-run deny does not deny, and is reported",
            policies: vec![dry(deny("deny-dry", principal(b)))],
            conn: mtls(),
            verdict: Verdict::Allow,
            matched: None,
            text: "allowed: no policy applies to the workload; dry-run DENY policy demo/deny-dry (rule 0 matched: \
                   principal cluster.local/ns/a/sa/b) (not enforced)",
        },
        Case {
            name: "dry-run deny beside a matching allow",
            policies: vec![dry(deny("deny-dry", port(8080))), allow("allow-a", namespace("a"))],
            conn: mtls(),
            verdict: Verdict::Allow,
            matched: Some("demo/allow-a"),
            text: "allowed by ALLOW policy demo/allow-a (rule 0 matched: namespace a); dry-run DENY policy \
                   demo/deny-dry (rule 0 matched: destination port 8080) (not enforced)",
        },
        Case {
            name: "dry-run deny not matching is not reported",
            policies: vec![dry(deny("deny-dry", port(9090)))],
            conn: mtls(),
            verdict: Verdict::Allow,
            matched: None,
            text: "allowed: no policy applies to the workload",
        },
        Case {
            name: "dry-run allow does not make allow policies exist",
            policies: vec![dry(allow("allow-dry", namespace("x")))],
            conn: mtls(),
            verdict: Verdict::Allow,
            matched: None,
            text: "allowed: no policy applies to the workload",
        },
        Case {
            name: "enforced deny beats a dry-run allow",
            policies: vec![dry(allow("allow-dry", namespace("a"))), deny("deny-a", namespace("a"))],
            conn: mtls(),
            verdict: Verdict::Deny,
            matched: Some("demo/deny-a"),
            text: "denied by DENY policy demo/deny-a (rule 0 matched: namespace a); dry-run ALLOW policy \
                   demo/allow-dry (rule 0 matched: namespace a) (not enforced)",
        },
        Case {
            name: "plaintext vs allow principals",
            policies: vec![allow("allow-b", principal(b))],
            conn: plaintext(),
            verdict: Verdict::Deny,
            matched: None,
            text: "allow policies exist, but none allowed (no rule matched in ALLOW demo/allow-b)",
        },
        Case {
            name: "plaintext vs allow namespaces",
            policies: vec![allow("allow-a", namespace("a"))],
            conn: plaintext(),
            verdict: Verdict::Deny,
            matched: None,
            text: "allow policies exist, but none allowed (no rule matched in ALLOW demo/allow-a)",
        },
        Case {
            name: "plaintext vs allow presence",
            policies: vec![allow(
                "allow-any-id",
                Match {
                    principals: vec![StringMatch::Presence],
                    ..Match::default()
                },
            )],
            conn: plaintext(),
            verdict: Verdict::Deny,
            matched: None,
            text: "allow policies exist, but none allowed (no rule matched in ALLOW demo/allow-any-id)",
        },
        Case {
            name: "plaintext vs deny without identity",
            policies: vec![deny("strict", plaintext_peer())],
            conn: plaintext(),
            verdict: Verdict::Deny,
            matched: Some("demo/strict"),
            text: "denied by DENY policy demo/strict (rule 0 matched: principal (none) matches none of \
                   not_principals [*])",
        },
        Case {
            name: "mtls vs deny without identity",
            policies: vec![deny("strict", plaintext_peer())],
            conn: mtls(),
            verdict: Verdict::Allow,
            matched: None,
            text: "allowed: no ALLOW policy applies and the DENY policy did not match",
        },
        Case {
            name: "plaintext vs deny not_namespaces",
            policies: vec![deny(
                "outsiders",
                Match {
                    not_namespaces: vec![exact("a")],
                    ..Match::default()
                },
            )],
            conn: plaintext(),
            verdict: Verdict::Deny,
            matched: Some("demo/outsiders"),
            text: "denied by DENY policy demo/outsiders (rule 0 matched: namespace (none) matches none of \
                   not_namespaces [a])",
        },
    ];
    for case in cases {
        let refs: Vec<&Authorization> = case.policies.iter().collect();
        let decision = evaluate(&refs, &case.conn);
        let name = case.name;
        assert_eq!(decision.verdict, case.verdict, "{name}");
        assert_eq!(decision.is_allowed(), case.verdict == Verdict::Allow, "{name}");
        assert_eq!(
            decision.matched.as_ref().map(|r| r.to_string()).as_deref(),
            case.matched,
            "{name}"
        );
        assert_eq!(decision.to_string(), case.text, "{name}");
    }
}

#[test]
fn decision_names_the_group_of_the_rule() {
    let mut policy = allow("two-rules", namespace("x"));
    policy.groups.push(Group {
        clauses: vec![Clause {
            matches: vec![port(8080)],
        }],
    });
    let decision = evaluate(&[&policy], &mtls());
    let Reason::AllowedBy(m) = &decision.reason else {
        panic!("{decision}");
    };
    assert_eq!(m.hit.group, 1);
    assert_eq!(m.action, Action::Allow);
}

#[test]
fn applicable_policies() {
    let with = |namespace: &str, name: &str, scope| Authorization {
        namespace: namespace.to_string(),
        scope,
        ..allow(name, port(1))
    };
    let all = vec![
        with("istio-system", "global", Scope::Global),
        with("istio-system", "root-namespace", Scope::Namespace),
        with("demo", "ns", Scope::Namespace),
        with("other", "ns", Scope::Namespace),
        with("demo", "selected", Scope::WorkloadSelector),
        with("demo", "not-selected", Scope::WorkloadSelector),
        with("istio-system", "istio_converted_static_strict", Scope::WorkloadSelector),
        with("other", "listed-ns", Scope::Namespace),
        with("demo", "listed-and-scoped", Scope::Namespace),
    ];
    let listed = [
        PolicyRef::new("demo", "selected"),
        PolicyRef::new("istio-system", "istio_converted_static_strict"),
        PolicyRef::new("other", "listed-ns"),
        PolicyRef::new("demo", "listed-and-scoped"),
        PolicyRef::new("demo", "unknown"),
    ];
    let got: Vec<String> = applicable(&all, "demo", &listed, "istio-system")
        .iter()
        .map(|p| p.policy_ref().to_string())
        .collect();
    let want = [
        "istio-system/global",
        "istio-system/root-namespace",
        "demo/ns",
        "demo/selected",
        "istio-system/istio_converted_static_strict",
        "other/listed-ns",
        "demo/listed-and-scoped",
    ];
    assert_eq!(got, want);

    let got: Vec<String> = applicable(&all, "other", &[], "istio-system")
        .iter()
        .map(|p| p.policy_ref().to_string())
        .collect();
    assert_eq!(
        got,
        [
            "istio-system/global",
            "istio-system/root-namespace",
            "other/ns",
            "other/listed-ns"
        ]
    );
}

#[test]
fn decision_serializes_for_the_admin_dump() {
    let policy = deny("strict", plaintext_peer());
    let json = serde_json::to_value(evaluate(&[&policy], &plaintext())).unwrap();
    let want = serde_json::json!({
        "verdict": "deny",
        "matched": {"namespace": "demo", "name": "strict"},
        "reason": {"deniedBy": {
            "policy": {"namespace": "demo", "name": "strict"},
            "action": "DENY",
            "hit": {"group": 0, "evidence": [{"unlisted": {
                "attribute": "principal",
                "actual": "(none)",
                "excluded": ["*"],
            }}]},
        }},
        "dryRun": [],
    });
    assert_eq!(json, want);
}

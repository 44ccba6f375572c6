//! Tests of match semantics: every field kind and its `not_*` form, wildcards, empty matches, clauses and groups,
//! IPv4 and IPv6 networks, ports, and the evidence printed for a hit.

use std::net::IpAddr;

use super::*;

const PEER: &str = "spiffe://cluster.local/ns/a/sa/b";

fn conn(identity: Option<&str>, source: &str, destination: &str, port: u16) -> ConnInfo {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{s}: {e}"));
    ConnInfo {
        source_identity: identity.map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))),
        source_ip: ip(source),
        destination_ip: ip(destination),
        destination_port: port,
    }
}

/// `spiffe://cluster.local/ns/a/sa/b` from 10.0.0.1 to 10.1.0.1:8080.
fn mtls() -> ConnInfo {
    conn(Some(PEER), "10.0.0.1", "10.1.0.1", 8080)
}

/// A plaintext peer from 10.0.0.1 to 10.1.0.1:8080.
fn plaintext() -> ConnInfo {
    conn(None, "10.0.0.1", "10.1.0.1", 8080)
}

fn exact(s: &str) -> StringMatch {
    StringMatch::Exact(s.to_string())
}

fn prefix(s: &str) -> StringMatch {
    StringMatch::Prefix(s.to_string())
}

fn suffix(s: &str) -> StringMatch {
    StringMatch::Suffix(s.to_string())
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter()
        .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}

fn sa(namespace: &str, name: &str) -> ServiceAccountMatch {
    ServiceAccountMatch::new(namespace, name)
}

fn policy(groups: Vec<Group>) -> Authorization {
    Authorization {
        name: "p".to_string(),
        namespace: "demo".to_string(),
        scope: Scope::Namespace,
        action: Action::Allow,
        groups,
        dry_run: false,
    }
}

fn clause(matches: Vec<Match>) -> Clause {
    Clause { matches }
}

fn group(clauses: Vec<Clause>) -> Group {
    Group { clauses }
}

/// A policy of one group, one clause, one match.
fn single(m: Match) -> Authorization {
    policy(vec![group(vec![clause(vec![m])])])
}

/// A [`Match`] with the given fields set and the others empty.
macro_rules! m {
    ($($field:ident: $value:expr),* $(,)?) => {
        Match { $($field: $value,)* ..Match::default() }
    };
}

#[test]
fn match_fields() {
    let any = || vec![StringMatch::Presence];
    let b = "cluster.local/ns/a/sa/b";
    let from = |s: &str| conn(Some(PEER), s, "10.1.0.1", 8080);
    let v6 = || conn(Some(PEER), "fd12::1", "fd00::9", 8080);
    let to_port = |port| conn(Some(PEER), "10.0.0.1", "10.1.0.1", port);
    #[rustfmt::skip]
    let cases: Vec<(&str, Match, ConnInfo, bool)> = vec![
        ("empty match matches nothing", m!(), mtls(), false),
        ("empty match, plaintext", m!(), plaintext(), false),
        // namespaces
        ("namespace exact", m!(namespaces: vec![exact("a")]), mtls(), true),
        ("namespace other", m!(namespaces: vec![exact("x")]), mtls(), false),
        ("namespaces ORed", m!(namespaces: vec![exact("x"), exact("a")]), mtls(), true),
        ("namespace prefix", m!(namespaces: vec![prefix("a")]), mtls(), true),
        ("namespace presence", m!(namespaces: any()), mtls(), true),
        ("plaintext has no namespace", m!(namespaces: any()), plaintext(), false),
        ("plaintext has no empty namespace", m!(namespaces: vec![exact("")]), plaintext(), false),
        ("not_namespaces other", m!(not_namespaces: vec![exact("x")]), mtls(), true),
        ("not_namespaces same", m!(not_namespaces: vec![exact("a")]), mtls(), false),
        ("not_namespaces any of", m!(not_namespaces: vec![exact("x"), exact("a")]), mtls(), false),
        ("not_namespaces, plaintext", m!(not_namespaces: vec![exact("a")]), plaintext(), true),
        // principals, compared without spiffe://
        ("principal exact", m!(principals: vec![exact(b)]), mtls(), true),
        ("principal with scheme never matches", m!(principals: vec![exact(PEER)]), mtls(), false),
        ("principal other sa", m!(principals: vec![exact("cluster.local/ns/a/sa/c")]), mtls(), false),
        ("principal prefix", m!(principals: vec![prefix("cluster.local/ns/a/")]), mtls(), true),
        ("principal prefix other ns", m!(principals: vec![prefix("cluster.local/ns/x/")]), mtls(), false),
        ("principal suffix", m!(principals: vec![suffix("/sa/b")]), mtls(), true),
        ("principal suffix other", m!(principals: vec![suffix("/sa/c")]), mtls(), false),
        ("principal presence", m!(principals: any()), mtls(), true),
        ("principal presence, plaintext", m!(principals: any()), plaintext(), false),
        ("principal empty prefix, plaintext", m!(principals: vec![prefix("")]), plaintext(), false),
        ("not_principals presence, mtls", m!(not_principals: any()), mtls(), false),
        ("not_principals presence, plaintext", m!(not_principals: any()), plaintext(), true),
        ("not_principals other", m!(not_principals: vec![exact("cluster.local/ns/a/sa/c")]), mtls(), true),
        (
            "principal and not_principal",
            m!(principals: vec![prefix("cluster.local/")], not_principals: vec![suffix("/b")]),
            mtls(),
            false,
        ),
        // service accounts
        ("service account", m!(service_accounts: vec![sa("a", "b")]), mtls(), true),
        ("service account other ns", m!(service_accounts: vec![sa("x", "b")]), mtls(), false),
        ("service account other name", m!(service_accounts: vec![sa("a", "c")]), mtls(), false),
        ("service account, plaintext", m!(service_accounts: vec![sa("a", "b")]), plaintext(), false),
        ("not_service_accounts same", m!(not_service_accounts: vec![sa("a", "b")]), mtls(), false),
        ("not_service_accounts other", m!(not_service_accounts: vec![sa("a", "c")]), mtls(), true),
        ("not_service_accounts, plaintext", m!(not_service_accounts: vec![sa("a", "b")]), plaintext(), true),
        // source ips
        ("source in /8", m!(source_ips: nets(&["10.0.0.0/8"])), from("10.9.9.9"), true),
        ("source outside /8", m!(source_ips: nets(&["10.0.0.0/8"])), from("11.0.0.1"), false),
        ("source host", m!(source_ips: nets(&["10.0.0.1"])), from("10.0.0.1"), true),
        ("source other host", m!(source_ips: nets(&["10.0.0.2"])), from("10.0.0.1"), false),
        ("sources ORed", m!(source_ips: nets(&["192.168.0.0/16", "10.0.0.0/24"])), from("10.0.0.7"), true),
        ("source v4-mapped", m!(source_ips: nets(&["10.0.0.0/8"])), from("::ffff:10.0.0.1"), true),
        ("source v6", m!(source_ips: nets(&["fd00::/8"])), v6(), true),
        ("source v6 outside", m!(source_ips: nets(&["fd00::/16"])), v6(), false),
        ("source v4 net, v6 peer", m!(source_ips: nets(&["0.0.0.0/0"])), v6(), false),
        ("not_source_ips inside", m!(not_source_ips: nets(&["10.0.0.0/8"])), from("10.0.0.1"), false),
        ("not_source_ips outside", m!(not_source_ips: nets(&["10.0.0.0/8"])), from("172.16.0.1"), true),
        // destination ips
        ("destination in", m!(destination_ips: nets(&["10.1.0.0/16"])), mtls(), true),
        ("destination out", m!(destination_ips: nets(&["10.2.0.0/16"])), mtls(), false),
        ("destination v6", m!(destination_ips: nets(&["fd00::9/128"])), v6(), true),
        ("not_destination_ips in", m!(not_destination_ips: nets(&["10.1.0.1"])), mtls(), false),
        ("not_destination_ips out", m!(not_destination_ips: nets(&["10.1.0.2"])), mtls(), true),
        // ports
        ("port", m!(destination_ports: vec![8080]), mtls(), true),
        ("port other", m!(destination_ports: vec![80]), mtls(), false),
        ("ports ORed", m!(destination_ports: vec![80, 8080]), mtls(), true),
        ("not port same", m!(not_destination_ports: vec![8080]), mtls(), false),
        ("not port other", m!(not_destination_ports: vec![80]), to_port(8080), true),
        ("port and not port", m!(destination_ports: vec![80], not_destination_ports: vec![80]), to_port(80), false),
        // field kinds ANDed
        ("namespace and port", m!(namespaces: vec![exact("a")], destination_ports: vec![8080]), mtls(), true),
        ("namespace and other port", m!(namespaces: vec![exact("a")], destination_ports: vec![9090]), mtls(), false),
        (
            "plaintext, network, port",
            m!(not_principals: any(), source_ips: nets(&["10.0.0.0/8"]), destination_ports: vec![8080]),
            plaintext(),
            true,
        ),
    ];
    for (name, m, conn, want) in cases {
        assert_eq!(single(m).matches(&conn), want, "{name}");
    }
}

#[test]
fn groups_and_clauses() {
    let ns = |s: &str| Match {
        namespaces: vec![exact(s)],
        ..Match::default()
    };
    let port = |p: u16| Match {
        destination_ports: vec![p],
        ..Match::default()
    };
    // (name, groups, want for mtls() on port 8080, matching group)
    let cases: Vec<(&str, Vec<Group>, Option<usize>)> = vec![
        ("no groups never matches", vec![], None),
        ("group without clauses matches everything", vec![group(vec![])], Some(0)),
        (
            "clause of empty matches never holds",
            vec![group(vec![clause(vec![Match::default()])])],
            None,
        ),
        (
            "clause of two empty matches",
            vec![group(vec![clause(vec![Match::default(), Match::default()])])],
            None,
        ),
        (
            "empty match beside a real one",
            vec![group(vec![clause(vec![Match::default(), ns("a")])])],
            Some(0),
        ),
        (
            "clause without matches holds (as ztunnel)",
            vec![group(vec![clause(vec![])])],
            Some(0),
        ),
        (
            "clauses ANDed, both hold",
            vec![group(vec![clause(vec![ns("a")]), clause(vec![port(8080)])])],
            Some(0),
        ),
        (
            "clauses ANDed, one fails",
            vec![group(vec![clause(vec![ns("a")]), clause(vec![port(9090)])])],
            None,
        ),
        (
            "empty-match clause sinks the group",
            vec![group(vec![clause(vec![ns("a")]), clause(vec![Match::default()])])],
            None,
        ),
        (
            "matches ORed",
            vec![group(vec![clause(vec![ns("x"), port(8080)])])],
            Some(0),
        ),
        (
            "groups ORed: second",
            vec![
                group(vec![clause(vec![ns("x")])]),
                group(vec![clause(vec![port(8080)])]),
            ],
            Some(1),
        ),
        (
            "groups ORed: first wins",
            vec![group(vec![]), group(vec![clause(vec![port(8080)])])],
            Some(0),
        ),
        (
            "no group matches",
            vec![group(vec![clause(vec![ns("x")])]), group(vec![clause(vec![port(1)])])],
            None,
        ),
    ];
    for (name, groups, want) in cases {
        let policy = policy(groups);
        assert_eq!(policy.explain(&mtls()).map(|hit| hit.group), want, "{name}");
        assert_eq!(policy.matches(&mtls()), want.is_some(), "{name}");
    }
}

#[test]
fn zero_clause_group_matches_plaintext_too() {
    assert!(policy(vec![group(vec![])]).matches(&plaintext()));
}

#[test]
fn can_match() {
    let real = Match {
        destination_ports: vec![80],
        ..Match::default()
    };
    let cases: Vec<(&str, Vec<Group>, bool)> = vec![
        ("no groups", vec![], false),
        ("empty group", vec![group(vec![])], true),
        (
            "only empty matches",
            vec![group(vec![clause(vec![Match::default()])])],
            false,
        ),
        ("real match", vec![group(vec![clause(vec![real.clone()])])], true),
        (
            "one dead clause kills the group",
            vec![group(vec![clause(vec![real.clone()]), clause(vec![Match::default()])])],
            false,
        ),
        (
            "another group is alive",
            vec![
                group(vec![clause(vec![Match::default()])]),
                group(vec![clause(vec![real])]),
            ],
            true,
        ),
    ];
    for (name, groups, want) in cases {
        assert_eq!(policy(groups).can_match(), want, "{name}");
    }
}

#[test]
fn evidence_text() {
    let d = Match::default;
    let cases: Vec<(&str, Vec<Group>, ConnInfo, &str)> = vec![
        (
            "exact principal",
            vec![group(vec![clause(vec![Match {
                principals: vec![exact("cluster.local/ns/a/sa/b")],
                ..d()
            }])])],
            mtls(),
            "rule 0 matched: principal cluster.local/ns/a/sa/b",
        ),
        (
            "principal prefix",
            vec![group(vec![clause(vec![Match {
                principals: vec![exact("x/ns/y/sa/z"), prefix("cluster.local/ns/a/")],
                ..d()
            }])])],
            mtls(),
            "rule 0 matched: principal cluster.local/ns/a/sa/b matches cluster.local/ns/a/*",
        ),
        (
            "plaintext peer against not_principals",
            vec![group(vec![clause(vec![Match {
                not_principals: vec![StringMatch::Presence],
                ..d()
            }])])],
            plaintext(),
            "rule 0 matched: principal (none) matches none of not_principals [*]",
        ),
        (
            "empty rule",
            vec![group(vec![])],
            plaintext(),
            "rule 0 matched: the rule has no conditions, so it matches every connection",
        ),
        (
            "second group, two clauses, first holding match reported",
            vec![
                group(vec![clause(vec![Match {
                    namespaces: vec![exact("x")],
                    ..d()
                }])]),
                group(vec![
                    clause(vec![
                        Match {
                            source_ips: nets(&["192.168.0.0/16"]),
                            ..d()
                        },
                        Match {
                            source_ips: nets(&["10.0.0.0/8"]),
                            namespaces: vec![suffix("a")],
                            ..d()
                        },
                    ]),
                    clause(vec![Match {
                        destination_ports: vec![8080],
                        not_destination_ports: vec![1, 2],
                        ..d()
                    }]),
                ]),
            ],
            mtls(),
            "rule 1 matched: namespace a matches *a, source ip 10.0.0.1 matches 10.0.0.0/8, destination port 8080, \
             destination port 8080 matches none of not_destination_ports [1, 2]",
        ),
        (
            "service account and destination",
            vec![group(vec![clause(vec![Match {
                service_accounts: vec![sa("a", "b")],
                not_service_accounts: vec![sa("a", "c")],
                destination_ips: nets(&["10.1.0.0/16"]),
                ..d()
            }])])],
            mtls(),
            "rule 0 matched: service account a/b, service account a/b matches none of not_service_accounts [a/c], \
             destination ip 10.1.0.1 matches 10.1.0.0/16",
        ),
    ];
    for (name, groups, conn, want) in cases {
        let hit = policy(groups)
            .explain(&conn)
            .unwrap_or_else(|| panic!("{name}: no hit"));
        assert_eq!(hit.to_string(), want, "{name}");
    }
}

#[test]
fn serde_round_trip() {
    let policy = Authorization {
        name: "deny-plaintext".to_string(),
        namespace: "istio-system".to_string(),
        scope: Scope::WorkloadSelector,
        action: Action::Deny,
        groups: vec![group(vec![clause(vec![Match {
            not_principals: vec![StringMatch::Presence],
            principals: vec![prefix("cluster.local/")],
            source_ips: nets(&["10.0.0.0/8", "fd00::/8"]),
            service_accounts: vec![sa("a", "b")],
            destination_ports: vec![8080],
            ..Match::default()
        }])])],
        dry_run: true,
    };
    let json = serde_json::to_value(&policy).unwrap();
    let want = serde_json::json!({
        "name": "deny-plaintext",
        "namespace": "istio-system",
        "scope": "WORKLOAD_SELECTOR",
        "action": "DENY",
        "groups": [{"clauses": [{"matches": [{
            "principals": [{"prefix": "cluster.local/"}],
            "notPrincipals": ["presence"],
            "sourceIps": ["10.0.0.0/8", "fd00::/8"],
            "destinationPorts": [8080],
            "serviceAccounts": [{"namespace": "a", "serviceAccount": "b"}],
        }]}]}],
        "dryRun": true,
    });
    assert_eq!(json, want);
    assert_eq!(serde_json::from_value::<Authorization>(json).unwrap(), policy);
}

#[test]
fn serde_rejects_bad_state() {
    let cases = [
        r#"{"name":"x","namespace":"y","scope":"NAMESPACE","action":"AUDIT"}"#,
        r#"{"name":"x","namespace":"y","scope":"NAMESPACE","action":"DENY","rules":[]}"#,
        r#"{"name":"x","namespace":"y","scope":"NAMESPACE","action":"DENY",
            "groups":[{"clauses":[{"matches":[{"sourceIps":["10.0.0.0/40"]}]}]}]}"#,
        r#"{"name":"x","namespace":"y","scope":"NAMESPACE","action":"DENY",
            "groups":[{"clauses":[{"matches":[{"destinationPorts":[70000]}]}]}]}"#,
    ];
    for text in cases {
        assert!(serde_json::from_str::<Authorization>(text).is_err(), "{text}");
    }
}

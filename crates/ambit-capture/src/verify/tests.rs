//! Drift detection against `nft list ruleset` text as nft 1.0.6 prints the default capture ruleset.

use std::net::Ipv4Addr;

use super::*;

/// `nft list ruleset` after loading `pod_ruleset(&CaptureConfig::default())`, with a foreign table before it.
const LISTED: &str = "table ip other {
\tset addrs {
\t\ttype ipv4_addr
\t\telements = { 10.0.0.1, 10.0.0.2 }
\t}

\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t\tip daddr @addrs accept
\t}
}
table inet istio-ambient-mangle {
\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tjump istio-prerouting
\t}

\tchain output {
\t\ttype route hook output priority mangle; policy accept;
\t\tjump istio-output
\t}

\tchain istio-prerouting {
\t\tmeta mark & 0x00000fff == 0x00000539 ct mark set ct mark & 0xfffff111 | 0x00000111
\t}

\tchain istio-output {
\t\tct mark & 0x00000fff == 0x00000111 meta mark set ct mark
\t}
}
table inet istio-ambient-nat {
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump istio-prerouting
\t}

\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tjump istio-output
\t}

\tchain istio-prerouting {
\t\tip saddr 169.254.7.127 meta l4proto tcp accept
\t\tip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0x00000fff != 0x00000539 redirect to :15006
\t}

\tchain istio-output {
\t\tip daddr 169.254.7.127 meta l4proto tcp accept
\t\tmeta l4proto tcp meta mark & 0x00000fff == 0x00000111 accept
\t\tip daddr != 127.0.0.1 oifname \"lo\" accept
\t\tmeta l4proto tcp ip daddr != 127.0.0.1 meta mark & 0x00000fff != 0x00000539 redirect to :15001
\t}
}
";

const NAT: &str = "inet istio-ambient-nat";
const MANGLE: &str = "inet istio-ambient-mangle";
const BYPASS_MARK: &str = "iifname != \"lo\" meta l4proto tcp ct state new ct mark set ct mark & 0xfffff539 | 0x539";
const BYPASS_RESTORE: &str = "ct mark & 0xfff == 0x539 meta mark set ct mark";
const PROBE_ACCEPT: &str = "ip saddr 169.254.7.127 meta l4proto tcp accept";
const INBOUND: &str = "ip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006";
const OUTBOUND: &str = "meta l4proto tcp ip daddr != 127.0.0.1 meta mark & 0xfff != 0x539 redirect to :15001";

fn drift_of(listed: &str, cfg: &CaptureConfig) -> Vec<Drift> {
    table_drift(&parse_listing(listed), &pod_tables(cfg))
}

fn nat_rule(rule: &str) -> (String, String, String) {
    (NAT.to_string(), "istio-output".to_string(), rule.to_string())
}

#[test]
fn installed_listing_is_clean() {
    assert_eq!(drift_of(LISTED, &CaptureConfig::default()), []);
}

#[test]
fn listing_keeps_foreign_tables_apart() {
    let listing = parse_listing(LISTED);
    assert_eq!(listing.len(), 3);
    assert_eq!(listing["ip other"]["output"].len(), 2);
    assert_eq!(listing[NAT]["istio-output"][3], OUTBOUND);
}

#[test]
fn missing_table_is_reported_once() {
    let start = LISTED.find("table inet istio-ambient-nat").unwrap();
    let drift = drift_of(&LISTED[..start], &CaptureConfig::default());
    assert_eq!(drift, [Drift::MissingTable { table: NAT.to_string() }]);
    assert_eq!(drift[0].to_string(), "table inet istio-ambient-nat is missing");
}

#[test]
fn missing_redirect_is_reported() {
    let listed = LISTED.replace(
        "\t\tmeta l4proto tcp ip daddr != 127.0.0.1 meta mark & 0x00000fff != 0x00000539 redirect to :15001\n",
        "",
    );
    let drift = drift_of(&listed, &CaptureConfig::default());
    let (table, chain, rule) = nat_rule(OUTBOUND);
    assert_eq!(drift, [Drift::MissingRule { table, chain, rule }]);
}

#[test]
fn slipped_in_accept_is_unexpected() {
    let listed = LISTED.replace(
        "\t\tmeta l4proto tcp meta mark",
        "\t\taccept\n\t\tmeta l4proto tcp meta mark",
    );
    let (table, chain, rule) = nat_rule("accept");
    assert_eq!(
        drift_of(&listed, &CaptureConfig::default()),
        [Drift::UnexpectedRule { table, chain, rule }]
    );
}

#[test]
fn swapped_rules_are_reordered() {
    let accept = "\t\tip daddr != 127.0.0.1 oifname \"lo\" accept\n";
    let listed = LISTED.replace(accept, "").replace(
        "\t\tmeta l4proto tcp meta mark",
        &format!("{accept}\t\tmeta l4proto tcp meta mark"),
    );
    assert_eq!(
        drift_of(&listed, &CaptureConfig::default()),
        [Drift::Reordered {
            table: NAT.to_string(),
            chain: "istio-output".to_string()
        }]
    );
}

#[test]
fn bypass_inbound_expects_no_inbound_redirect() {
    let cfg = CaptureConfig {
        bypass_inbound: true,
        ..CaptureConfig::default()
    };
    let drift = drift_of(LISTED, &cfg);
    let unexpected = |rule: &str| Drift::UnexpectedRule {
        table: NAT.to_string(),
        chain: "istio-prerouting".to_string(),
        rule: rule.to_string(),
    };
    let missing = |chain: &str, rule: &str| Drift::MissingRule {
        table: MANGLE.to_string(),
        chain: chain.to_string(),
        rule: rule.to_string(),
    };
    // Without inbound capture the probe exception goes too, and direct inbound is marked for the guard.
    assert_eq!(
        drift,
        [
            missing("istio-prerouting", BYPASS_MARK),
            missing("istio-output", BYPASS_RESTORE),
            unexpected(PROBE_ACCEPT),
            unexpected(INBOUND)
        ]
    );
    let listed = LISTED
        .replace(
            &format!(
                "\t\t{}\n",
                INBOUND.replace("0xfff", "0x00000fff").replace("0x539", "0x00000539")
            ),
            "",
        )
        .replace(&format!("\t\t{PROBE_ACCEPT}\n"), "")
        .replace(
            "| 0x00000111\n",
            "| 0x00000111\n\t\tiifname != \"lo\" meta l4proto tcp ct state new ct mark set ct mark & 0xfffff539 | 0x00000539\n",
        )
        .replace(
            "== 0x00000111 meta mark set ct mark\n",
            "== 0x00000111 meta mark set ct mark\n\t\tct mark & 0x00000fff == 0x00000539 meta mark set ct mark\n",
        );
    assert_eq!(drift_of(&listed, &cfg), []);
}

#[test]
fn missing_chain_is_reported() {
    let listed = LISTED.replace("\tchain istio-output {\n\t\tct mark", "\tchain renamed {\n\t\tct mark");
    assert_eq!(
        drift_of(&listed, &CaptureConfig::default()),
        [Drift::MissingChain {
            table: "inet istio-ambient-mangle".to_string(),
            chain: "istio-output".to_string()
        }]
    );
}

/// The guard as install leaves it for `CaptureConfig::default()` in a pod with address 10.244.1.5.
fn installed_guard() -> GuardState {
    GuardState {
        pod_ip: Some(Ipv4Addr::new(10, 244, 1, 5)),
        link_up: Some(true),
        routes: vec![
            "default dev ambit-guard scope link src 10.244.1.5".to_string(),
            "unreachable default metric 1000".to_string(),
            "throw 169.254.7.127".to_string(),
        ],
        rules: vec![
            (32763, vec!["from all fwmark 0x539/0xfff lookup main".to_string()]),
            (32765, vec!["from all ipproto tcp lookup 134".to_string()]),
        ],
        sysctls: vec!["1".to_string(), "1".to_string()],
    }
}

#[test]
fn guard_drift_names_each_part() {
    let route = |r: &str| r.to_string();
    let guard_route = |r: &str| format!("{r} table 134");
    let cases: Vec<(&str, GuardState, Vec<Drift>)> = vec![
        ("installed", installed_guard(), vec![]),
        (
            "link deleted (the kernel drops its route)",
            GuardState {
                link_up: None,
                routes: vec![route("unreachable default metric 1000"), route("throw 169.254.7.127")],
                ..installed_guard()
            },
            vec![
                Drift::MissingLink {
                    link: "ambit-guard".to_string(),
                },
                Drift::MissingRoute {
                    route: guard_route("default dev ambit-guard scope link src 10.244.1.5"),
                },
            ],
        ),
        (
            "link down",
            GuardState {
                link_up: Some(false),
                ..installed_guard()
            },
            vec![Drift::LinkDown {
                link: "ambit-guard".to_string(),
            }],
        ),
        (
            "route with another source, and a way out",
            GuardState {
                routes: vec![
                    route("default dev ambit-guard scope link src 10.244.1.6"),
                    route("unreachable default metric 1000"),
                    route("throw 169.254.7.127"),
                    route("10.0.0.0/8 via 10.244.1.1 dev eth0"),
                ],
                ..installed_guard()
            },
            vec![
                Drift::MissingRoute {
                    route: guard_route("default dev ambit-guard scope link src 10.244.1.5"),
                },
                Drift::UnexpectedRoute {
                    route: guard_route("default dev ambit-guard scope link src 10.244.1.6"),
                },
                Drift::UnexpectedRoute {
                    route: guard_route("10.0.0.0/8 via 10.244.1.1 dev eth0"),
                },
            ],
        ),
        (
            "rules deleted and replaced",
            GuardState {
                rules: vec![(32763, vec![]), (32765, vec![route("from all ipproto udp lookup 134")])],
                ..installed_guard()
            },
            vec![
                Drift::MissingIpRule {
                    rule: "32763: from all fwmark 0x539/0xfff lookup main".to_string(),
                },
                Drift::UnexpectedIpRule {
                    rule: "32765: from all ipproto udp lookup 134".to_string(),
                },
                Drift::MissingIpRule {
                    rule: "32765: from all ipproto tcp lookup 134".to_string(),
                },
            ],
        ),
        (
            "sysctl reset",
            GuardState {
                sysctls: vec!["0".to_string(), "2".to_string()],
                ..installed_guard()
            },
            vec![
                Drift::Sysctl {
                    key: "net.ipv4.tcp_migrate_req".to_string(),
                    found: "0".to_string(),
                    want: "1".to_string(),
                },
                Drift::Sysctl {
                    key: "net.ipv4.tcp_tw_reuse".to_string(),
                    found: "2".to_string(),
                    want: "1".to_string(),
                },
            ],
        ),
        (
            "one sysctl reset",
            GuardState {
                sysctls: vec!["1".to_string(), "0".to_string()],
                ..installed_guard()
            },
            vec![Drift::Sysctl {
                key: "net.ipv4.tcp_tw_reuse".to_string(),
                found: "0".to_string(),
                want: "1".to_string(),
            }],
        ),
    ];
    for (case, found, want) in cases {
        assert_eq!(guard_drift(&found, &CaptureConfig::default()), want, "{case}");
    }
}

#[test]
fn guard_drift_reads_well() {
    let cases = [
        (
            Drift::MissingLink {
                link: "ambit-guard".to_string(),
            },
            "link ambit-guard is missing",
        ),
        (
            Drift::LinkDown {
                link: "ambit-guard".to_string(),
            },
            "link ambit-guard is down",
        ),
        (
            Drift::UnexpectedRoute {
                route: "10.0.0.0/8 dev eth0 table 134".to_string(),
            },
            "unexpected route `10.0.0.0/8 dev eth0 table 134`",
        ),
        (
            Drift::Sysctl {
                key: "net.ipv4.tcp_migrate_req".to_string(),
                found: "0".to_string(),
                want: "1".to_string(),
            },
            "sysctl net.ipv4.tcp_migrate_req is 0, not 1",
        ),
    ];
    for (drift, text) in cases {
        assert_eq!(drift.to_string(), text);
    }
}

#[test]
fn any_part_of_capture_counts_as_installed() {
    let none = GuardState {
        pod_ip: Some(Ipv4Addr::new(10, 244, 1, 5)),
        link_up: None,
        routes: Vec::new(),
        rules: vec![(32763, Vec::new()), (32765, Vec::new())],
        sysctls: vec!["1".to_string(), "1".to_string()],
    };
    let cases: Vec<(&str, bool, GuardState, bool)> = vec![
        ("nothing (the sysctl alone)", false, none.clone(), false),
        ("a table", true, none.clone(), true),
        ("everything", true, installed_guard(), true),
        (
            "the guard link, down",
            false,
            GuardState {
                link_up: Some(false),
                ..none.clone()
            },
            true,
        ),
        (
            "a guard route",
            false,
            GuardState {
                routes: vec!["throw 169.254.7.127".to_string()],
                ..none.clone()
            },
            true,
        ),
        (
            "a guard rule",
            false,
            GuardState {
                rules: vec![
                    (32763, Vec::new()),
                    (32765, vec!["from all ipproto tcp lookup 134".to_string()]),
                ],
                ..none.clone()
            },
            true,
        ),
    ];
    for (case, table, guard, want) in cases {
        assert_eq!(any_part(table, &guard), want, "{case}");
    }
}

//! Golden checks of the capture ruleset and of the normalisation used to compare it with nft's listing.

use super::*;

const DEFAULT_RULESET: &str = "\
table inet istio-ambient-mangle {}
delete table inet istio-ambient-mangle
table inet istio-ambient-nat {}
delete table inet istio-ambient-nat
table inet istio-ambient-mangle {
  chain prerouting {
    type filter hook prerouting priority -150; policy accept;
    jump istio-prerouting
  }
  chain output {
    type route hook output priority -150; policy accept;
    jump istio-output
  }
  chain istio-prerouting {
    meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff111 | 0x111
  }
  chain istio-output {
    ct mark & 0xfff == 0x111 meta mark set ct mark
  }
}
table inet istio-ambient-nat {
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump istio-prerouting
  }
  chain output {
    type nat hook output priority -100; policy accept;
    jump istio-output
  }
  chain istio-prerouting {
    ip saddr 169.254.7.127 meta l4proto tcp accept
    ip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006
  }
  chain istio-output {
    ip daddr 169.254.7.127 meta l4proto tcp accept
    meta l4proto tcp meta mark & 0xfff == 0x111 accept
    ip daddr != 127.0.0.1 oifname \"lo\" accept
    meta l4proto tcp ip daddr != 127.0.0.1 meta mark & 0xfff != 0x539 redirect to :15001
  }
}
";

fn lines_of<'a>(tables: &'a [Table], table: &str, chain: &str) -> &'a [String] {
    let table = tables.iter().find(|t| t.name == table).unwrap();
    &table.chains.iter().find(|c| c.name == chain).unwrap().lines
}

#[test]
fn defaults_are_istios() {
    let cfg = CaptureConfig::default();
    assert_eq!(
        (cfg.inbound_port, cfg.outbound_port, cfg.hbone_port),
        (15006, 15001, 15008)
    );
    assert_eq!(
        (cfg.mark, cfg.tproxy_mark, cfg.mask, cfg.route_table),
        (1337, 0x111, 0xfff, 100)
    );
    assert!(!cfg.bypass_inbound);
    assert_eq!(cfg.ip_rule(), "from all fwmark 0x111/0xfff lookup 100");
}

#[test]
fn default_ruleset_is_golden() {
    assert_eq!(pod_ruleset(&CaptureConfig::default()), DEFAULT_RULESET);
}

#[test]
fn ruleset_replaces_previous_tables_first() {
    let text = pod_ruleset(&CaptureConfig::default());
    assert!(text.starts_with(&removal_ruleset()));
    assert_eq!(
        removal_ruleset(),
        "table inet istio-ambient-mangle {}\ndelete table inet istio-ambient-mangle\n\
         table inet istio-ambient-nat {}\ndelete table inet istio-ambient-nat\n"
    );
}

#[test]
fn each_rule_is_in_its_chain_in_order() {
    let tables = pod_tables(&CaptureConfig::default());
    let cases: &[(&str, &str, &[&str])] = &[
        (
            MANGLE_TABLE,
            "prerouting",
            &[
                "type filter hook prerouting priority -150; policy accept;",
                "jump istio-prerouting",
            ],
        ),
        (
            MANGLE_TABLE,
            "output",
            &[
                "type route hook output priority -150; policy accept;",
                "jump istio-output",
            ],
        ),
        (
            MANGLE_TABLE,
            "istio-prerouting",
            &["meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff111 | 0x111"],
        ),
        (
            MANGLE_TABLE,
            "istio-output",
            &["ct mark & 0xfff == 0x111 meta mark set ct mark"],
        ),
        (
            NAT_TABLE,
            "prerouting",
            &[
                "type nat hook prerouting priority -100; policy accept;",
                "jump istio-prerouting",
            ],
        ),
        (
            NAT_TABLE,
            "output",
            &[
                "type nat hook output priority -100; policy accept;",
                "jump istio-output",
            ],
        ),
        (
            NAT_TABLE,
            "istio-prerouting",
            &[
                "ip saddr 169.254.7.127 meta l4proto tcp accept",
                "ip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006",
            ],
        ),
        (
            NAT_TABLE,
            "istio-output",
            &[
                "ip daddr 169.254.7.127 meta l4proto tcp accept",
                "meta l4proto tcp meta mark & 0xfff == 0x111 accept",
                "ip daddr != 127.0.0.1 oifname \"lo\" accept",
                "meta l4proto tcp ip daddr != 127.0.0.1 meta mark & 0xfff != 0x539 redirect to :15001",
            ],
        ),
    ];
    for (table, chain, want) in cases {
        assert_eq!(lines_of(&tables, table, chain), *want, "{table} {chain}");
    }
}

#[test]
fn bypass_inbound_drops_the_inbound_redirect_and_marks_direct_inbound() {
    let cfg = CaptureConfig {
        bypass_inbound: true,
        ..CaptureConfig::default()
    };
    let text = pod_ruleset(&cfg);
    assert!(!text.contains("redirect to :15006"), "{text}");
    assert!(text.contains("redirect to :15001"), "{text}");
    let tables = pod_tables(&cfg);
    assert!(lines_of(&tables, NAT_TABLE, "istio-prerouting").is_empty());
    assert_eq!(lines_of(&tables, NAT_TABLE, "prerouting")[1], "jump istio-prerouting");
    // The app's replies to inbound connections that reach it directly carry the proxy's mark past the guard.
    assert_eq!(
        lines_of(&tables, MANGLE_TABLE, "istio-prerouting"),
        [
            "meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff111 | 0x111",
            "iifname != \"lo\" meta l4proto tcp ct state new ct mark set ct mark & 0xfffff539 | 0x539",
        ]
    );
    assert_eq!(
        lines_of(&tables, MANGLE_TABLE, "istio-output"),
        [
            "ct mark & 0xfff == 0x111 meta mark set ct mark",
            "ct mark & 0xfff == 0x539 meta mark set ct mark",
        ]
    );
    for table in tables {
        for chain in table.chains {
            for line in chain.lines {
                assert_eq!(normalize(&line), line);
            }
        }
    }
}

#[test]
fn guard_rules_surround_istios_rule() {
    let cases = [
        (
            CaptureConfig::default(),
            [
                "from all fwmark 0x539/0xfff lookup main",
                "from all ipproto tcp lookup 134",
            ],
        ),
        (
            CaptureConfig {
                mark: 0x42,
                mask: 0xff,
                ..CaptureConfig::default()
            },
            [
                "from all fwmark 0x42/0xff lookup main",
                "from all ipproto tcp lookup 134",
            ],
        ),
    ];
    for (cfg, want) in cases {
        let rules = cfg.guard_rules();
        let texts: Vec<&str> = rules.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(texts, want);
        let prefs: Vec<u32> = rules.iter().map(|r| r.pref).collect();
        assert_eq!(prefs, [GUARD_MARK_PREF, GUARD_PREF]);
        for rule in &rules {
            assert_eq!(normalize(&rule.rule), rule.rule);
        }
    }
}

#[test]
fn guard_routes_follow_the_pod_address_and_probe_source() {
    let pod = Some(Ipv4Addr::new(10, 244, 1, 5));
    let no_probe = CaptureConfig {
        probe_source: None,
        ..CaptureConfig::default()
    };
    let cases: [(CaptureConfig, Option<Ipv4Addr>, &[&str]); 3] = [
        (
            CaptureConfig::default(),
            pod,
            &[
                "default dev ambit-guard scope link src 10.244.1.5",
                "unreachable default metric 1000",
                "throw 169.254.7.127",
            ],
        ),
        (
            CaptureConfig::default(),
            None,
            &[
                "default dev ambit-guard scope link",
                "unreachable default metric 1000",
                "throw 169.254.7.127",
            ],
        ),
        (
            no_probe,
            pod,
            &[
                "default dev ambit-guard scope link src 10.244.1.5",
                "unreachable default metric 1000",
            ],
        ),
    ];
    for (cfg, pod_ip, want) in cases {
        assert_eq!(cfg.guard_routes(pod_ip), want, "{cfg:?} {pod_ip:?}");
    }
}

#[test]
fn ports_and_marks_are_substituted() {
    let cfg = CaptureConfig {
        inbound_port: 25006,
        outbound_port: 25001,
        hbone_port: 25008,
        mark: 0x42,
        tproxy_mark: 0x24,
        mask: 0xff,
        route_table: 200,
        bypass_inbound: false,
        probe_source: None,
    };
    let tables = pod_tables(&cfg);
    assert_eq!(
        lines_of(&tables, NAT_TABLE, "istio-prerouting"),
        ["ip daddr != 127.0.0.1 tcp dport != 25008 meta mark & 0xff != 0x42 redirect to :25006"]
    );
    assert_eq!(
        lines_of(&tables, NAT_TABLE, "istio-output"),
        [
            "meta l4proto tcp meta mark & 0xff == 0x24 accept",
            "ip daddr != 127.0.0.1 oifname \"lo\" accept",
            "meta l4proto tcp ip daddr != 127.0.0.1 meta mark & 0xff != 0x42 redirect to :25001",
        ]
    );
    assert_eq!(
        lines_of(&tables, MANGLE_TABLE, "istio-prerouting"),
        ["meta mark & 0xff == 0x42 ct mark set ct mark & 0xffffff24 | 0x24"]
    );
    assert_eq!(
        lines_of(&tables, MANGLE_TABLE, "istio-output"),
        ["ct mark & 0xff == 0x24 meta mark set ct mark"]
    );
    assert_eq!(cfg.ip_rule(), "from all fwmark 0x24/0xff lookup 200");
    let text = pod_ruleset(&cfg);
    for default in ["15006", "15001", "15008", "0x539", "0x111", "0xfff "] {
        assert!(!text.contains(default), "{default} left in {text}");
    }
}

#[test]
fn normalize_matches_nft_listing() {
    let cases = [
        (
            "\t\tmeta mark & 0x00000fff != 0x00000539 redirect to :15006",
            "meta mark & 0xfff != 0x539 redirect to :15006",
        ),
        (
            "type filter hook prerouting priority mangle; policy accept;",
            "type filter hook prerouting priority -150; policy accept;",
        ),
        (
            "type nat hook prerouting priority dstnat; policy accept;",
            "type nat hook prerouting priority -100; policy accept;",
        ),
        (
            "type nat hook output priority -100; policy accept;",
            "type nat hook output priority -100; policy accept;",
        ),
        (
            "ct mark set ct mark & 0xfffff111 | 0x00000111",
            "ct mark set ct mark & 0xfffff111 | 0x111",
        ),
        ("oifname \"lo\"  accept", "oifname \"lo\" accept"),
    ];
    for (listed, want) in cases {
        assert_eq!(normalize(listed), want);
    }
}

#[test]
fn rendered_lines_are_already_normal() {
    for table in pod_tables(&CaptureConfig::default()) {
        for chain in table.chains {
            for line in chain.lines {
                assert_eq!(normalize(&line), line);
            }
        }
    }
}

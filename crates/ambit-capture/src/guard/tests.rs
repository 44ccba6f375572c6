//! The guard's listings as iproute2 prints them, and the commands install and remove derive from what they find.

use super::*;

/// The guard as install leaves it for `CaptureConfig::default()` in a pod with address 10.244.1.5.
fn installed() -> GuardState {
    GuardState {
        pod_ip: Some(Ipv4Addr::new(10, 244, 1, 5)),
        link_up: Some(true),
        routes: strings(&[
            "default dev ambit-guard scope link src 10.244.1.5",
            "unreachable default metric 1000",
            "throw 169.254.7.127",
        ]),
        rules: vec![
            (32763, strings(&["from all fwmark 0x539/0xfff lookup main"])),
            (32765, strings(&["from all ipproto tcp lookup 134"])),
        ],
        sysctls: vec!["1".to_string(), "1".to_string()],
    }
}

/// A namespace without the guard.
fn bare() -> GuardState {
    GuardState {
        link_up: None,
        routes: vec![],
        rules: vec![(32763, vec![]), (32765, vec![])],
        sysctls: vec!["0".to_string(), "2".to_string()],
        ..installed()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn commands(steps: &[Vec<String>]) -> Vec<String> {
    steps.iter().map(|s| s.join(" ")).collect()
}

#[test]
fn install_does_only_what_is_missing() {
    let cases: Vec<(&str, GuardState, &[&str])> = vec![
        ("intact", installed(), &[]),
        (
            "fresh",
            bare(),
            &[
                "link add ambit-guard type ifb",
                "link set ambit-guard up",
                "route replace default dev ambit-guard scope link src 10.244.1.5 table 134",
                "route replace unreachable default metric 1000 table 134",
                "route replace throw 169.254.7.127 table 134",
                "rule add from all fwmark 0x539/0xfff lookup main pref 32763",
                "rule add from all ipproto tcp lookup 134 pref 32765",
            ],
        ),
        (
            "device down (the kernel dropped its route)",
            GuardState {
                link_up: Some(false),
                routes: strings(&["unreachable default metric 1000", "throw 169.254.7.127"]),
                ..installed()
            },
            &[
                "link set ambit-guard up",
                "route replace default dev ambit-guard scope link src 10.244.1.5 table 134",
            ],
        ),
        (
            "a way out in the table, and a stale source",
            GuardState {
                routes: strings(&[
                    "default dev ambit-guard scope link src 10.244.1.6 linkdown",
                    "unreachable default metric 1000",
                    "throw 169.254.7.127",
                    "10.0.0.0/8 via 10.244.1.1 dev eth0",
                ]),
                ..installed()
            },
            &[
                "route replace default dev ambit-guard scope link src 10.244.1.5 table 134",
                "route del default dev ambit-guard scope link src 10.244.1.6 table 134",
                "route del 10.0.0.0/8 via 10.244.1.1 dev eth0 table 134",
            ],
        ),
        (
            "the tcp rule replaced by another",
            GuardState {
                rules: vec![
                    (32763, strings(&["from all fwmark 0x539/0xfff lookup main"])),
                    (
                        32765,
                        strings(&["from all ipproto udp lookup 134", "from all lookup main"]),
                    ),
                ],
                ..installed()
            },
            &[
                "rule add from all ipproto tcp lookup 134 pref 32765",
                "rule del pref 32765",
                "rule del pref 32765",
            ],
        ),
        (
            "an extra rule beside the right one",
            GuardState {
                rules: vec![
                    (
                        32763,
                        strings(&["from all lookup main", "from all fwmark 0x539/0xfff lookup main"]),
                    ),
                    (32765, strings(&["from all ipproto tcp lookup 134"])),
                ],
                ..installed()
            },
            &["rule del pref 32763 from all lookup main"],
        ),
    ];
    for (case, found, want) in cases {
        assert_eq!(
            commands(&install_steps(&found, &CaptureConfig::default())),
            want,
            "{case}"
        );
    }
}

#[test]
fn install_follows_the_pod_address_and_probe_source() {
    let found = GuardState { pod_ip: None, ..bare() };
    let cfg = CaptureConfig {
        probe_source: None,
        ..CaptureConfig::default()
    };
    let steps = commands(&install_steps(&found, &cfg));
    assert_eq!(
        steps[2..4],
        [
            "route replace default dev ambit-guard scope link table 134",
            "route replace unreachable default metric 1000 table 134",
        ]
    );
    assert!(!steps.iter().any(|s| s.contains("throw")), "{steps:?}");
}

#[test]
fn remove_takes_the_tcp_rule_away_first() {
    let cases: Vec<(&str, GuardState, &[&str])> = vec![
        (
            "installed",
            installed(),
            &[
                "rule del pref 32765",
                "rule del pref 32763",
                "route del default dev ambit-guard scope link src 10.244.1.5 table 134",
                "route del unreachable default metric 1000 table 134",
                "route del throw 169.254.7.127 table 134",
                "link del ambit-guard",
            ],
        ),
        ("already gone", bare(), &[]),
    ];
    for (case, found, want) in cases {
        assert_eq!(commands(&remove_steps(&found)), want, "{case}");
    }
}

#[test]
fn listed_routes_lose_their_state_flags_for_deletion() {
    let cases = [
        (
            "default dev ambit-guard scope link src 10.0.0.1 linkdown",
            "default dev ambit-guard scope link src 10.0.0.1",
        ),
        ("unreachable default metric 1000", "unreachable default metric 1000"),
        (
            "10.0.0.0/8 via 10.0.0.1 dev eth0 proto static dead onlink",
            "10.0.0.0/8 via 10.0.0.1 dev eth0 proto static onlink",
        ),
    ];
    for (listed, want) in cases {
        assert_eq!(deletable(listed), want);
    }
}

#[test]
fn link_state_is_read_from_the_listing() {
    let listing = "\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: ambit-guard: <BROADCAST,NOARP,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UNKNOWN mode DEFAULT qlen 32\\    link/ether 42:3c:da:5e:0a:bb brd ff:ff:ff:ff:ff:ff
3: eth0@if7: <BROADCAST,MULTICAST> mtu 1500 qdisc noqueue state DOWN mode DEFAULT group default qlen 1000\\    link/ether 9e:1c:27:b4:55:01 brd ff:ff:ff:ff:ff:ff link-netns peer
";
    let cases = [
        ("ambit-guard", Some(true)),
        ("eth0", Some(false)),
        ("lo", Some(true)),
        ("ambit", None),
        ("ambit-guard2", None),
    ];
    for (name, want) in cases {
        assert_eq!(link_state(listing, name), want, "{name}");
    }
}

#[test]
fn pod_address_skips_loopback_and_the_guard() {
    let cases = [
        (
            "3: eth0    inet 10.244.1.5/32 scope global eth0\\       valid_lft forever preferred_lft forever\n",
            Some(Ipv4Addr::new(10, 244, 1, 5)),
        ),
        (
            "1: lo    inet 10.9.9.9/32 scope global lo\\       valid_lft forever\n\
             2: ambit-guard    inet 10.8.8.8/32 scope global ambit-guard\\       valid_lft forever\n\
             3: eth0@if9    inet 10.250.3.1/24 brd 10.250.3.255 scope global eth0\\       valid_lft forever\n\
             4: net1    inet 192.168.0.2/24 scope global net1\\       valid_lft forever\n",
            Some(Ipv4Addr::new(10, 250, 3, 1)),
        ),
        ("", None),
    ];
    for (listing, want) in cases {
        assert_eq!(first_address(listing), want, "{listing:?}");
    }
}

//! The policy routing of capture in a pod namespace: the `fwmark … lookup TABLE` rule at [`RULE_PREF`] and the
//! local default route of that table, installed idempotently, removed, and read back; and the rule and route
//! helpers the guard shares.

use crate::CaptureError;
use crate::command::ip;
use crate::rules::{CaptureConfig, LOCAL_ROUTE, RULE_PREF, normalize};

/// Adds the local route (replacing it) and makes the rule at [`RULE_PREF`] exactly the configured one, leaving an
/// already correct rule untouched so that replies in flight are never misrouted.
pub(crate) fn install(netns: &str, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    let table = cfg.route_table.to_string();
    ip(netns, &route_args("replace", LOCAL_ROUTE, &table))?;
    let rules = rules_at(netns, RULE_PREF)?;
    if rules == [normalize(&cfg.ip_rule())] {
        return Ok(());
    }
    delete_rules_at(netns, RULE_PREF, rules.len())?;
    let pref = RULE_PREF.to_string();
    let rule = cfg.ip_rule();
    let mut args = vec!["rule", "add"];
    args.extend(rule.split_whitespace());
    args.extend(["pref", &pref]);
    ip(netns, &args).map(drop)
}

/// Deletes every rule at [`RULE_PREF`] and the local route of the configured table; absent ones are no error.
pub(crate) fn remove(netns: &str, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    delete_rules_at(netns, RULE_PREF, rules_at(netns, RULE_PREF)?.len())?;
    if has_local_route(netns, cfg)? {
        ip(netns, &route_args("del", LOCAL_ROUTE, &cfg.route_table.to_string()))?;
    }
    Ok(())
}

/// Whether the configured table holds the local default route over `lo`.
pub(crate) fn has_local_route(netns: &str, cfg: &CaptureConfig) -> Result<bool, CaptureError> {
    Ok(holds_local_route(&all_routes(netns)?, cfg))
}

/// Whether `routes` ([`all_routes`] output) holds the configured table's local default route over `lo`.
pub(crate) fn holds_local_route(routes: &str, cfg: &CaptureConfig) -> bool {
    table_routes(routes, cfg.route_table)
        .iter()
        .any(|route| is_local_route(route))
}

/// The rules at `pref`, normalised and without their `PREF:` prefix.
pub(crate) fn rules_at(netns: &str, pref: u32) -> Result<Vec<String>, CaptureError> {
    let listing = ip(netns, &["rule", "show", "pref", &pref.to_string()])?;
    Ok(parse_rules(&listing))
}

/// Every policy-routing rule of the namespace (`ip rule show`), for [`rules_in`]: one command where a check would
/// otherwise list each priority on its own.
pub(crate) fn all_rules(netns: &str) -> Result<String, CaptureError> {
    ip(netns, &["rule", "show"])
}

/// The rules at `pref` in [`all_rules`] output, normalised and without their `PREF:` prefix.
pub(crate) fn rules_in(listing: &str, pref: u32) -> Vec<String> {
    let prefix = format!("{pref}:");
    let at_pref: String = (listing.lines())
        .filter(|line| line.trim_start().starts_with(&prefix))
        .map(|line| format!("{line}\n"))
        .collect();
    parse_rules(&at_pref)
}

/// Deletes the first `count` rules at `pref` (all of them when `count` is their number).
fn delete_rules_at(netns: &str, pref: u32, count: usize) -> Result<(), CaptureError> {
    let pref = pref.to_string();
    for _ in 0..count {
        ip(netns, &["rule", "del", "pref", &pref])?;
    }
    Ok(())
}

/// `ip -4 route show table all`: the IPv4 routes of every table, each naming its table unless it is `main`.
pub(crate) fn all_routes(netns: &str) -> Result<String, CaptureError> {
    ip(netns, &["-4", "route", "show", "table", "all"])
}

/// `ip route VERB ROUTE… table TABLE`.
fn route_args<'a>(verb: &'a str, route: &'a str, table: &'a str) -> Vec<&'a str> {
    let mut args = vec!["route", verb];
    args.extend(route.split_whitespace());
    args.extend(["table", table]);
    args
}

/// Rules from `ip rule show` output, normalised and without their `PREF:` prefix.
pub(crate) fn parse_rules(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(_, rule)| normalize(rule))
        .filter(|rule| !rule.is_empty())
        .collect()
}

/// The routes of `table` in [`all_routes`] output, normalised and without their `table N`. A table that does not
/// exist simply has none here, where `ip route show table N` would fail on it.
pub(crate) fn table_routes(listing: &str, table: u32) -> Vec<String> {
    let table = table.to_string();
    listing
        .lines()
        .filter_map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let at = tokens.windows(2).position(|w| w == ["table", table.as_str()])?;
            Some(normalize(&[&tokens[..at], &tokens[at + 2..]].concat().join(" ")))
        })
        .collect()
}

/// `ip route show` lists `0.0.0.0/0` as `default`.
fn is_local_route(line: &str) -> bool {
    line.split_whitespace().take(4).eq(["local", "default", "dev", "lo"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_parsed_without_their_pref() {
        let cases: &[(&str, &[&str])] = &[
            (
                "32764:\tfrom all fwmark 0x111/0xfff lookup 100 \n",
                &["from all fwmark 0x111/0xfff lookup 100"],
            ),
            (
                "32763:\tfrom all fwmark 0x539/0xfff lookup main\n32763:\tfrom all lookup 7\n",
                &["from all fwmark 0x539/0xfff lookup main", "from all lookup 7"],
            ),
            ("", &[]),
        ];
        for (listing, want) in cases {
            assert_eq!(parse_rules(listing), *want, "{listing:?}");
        }
    }

    #[test]
    fn rules_at_one_priority_are_picked_from_all_rules() {
        let listing = "0:\tfrom all lookup local\n32763:\tfrom all fwmark 0x539/0xfff lookup main\n\
                       32764:\tfrom all fwmark 0x111/0xfff lookup 100\n32765:\tfrom all ipproto tcp lookup 134\n\
                       32765:\tfrom all lookup 7\n32766:\tfrom all lookup main\n";
        assert_eq!(rules_in(listing, 32764), ["from all fwmark 0x111/0xfff lookup 100"]);
        assert_eq!(
            rules_in(listing, 32765),
            ["from all ipproto tcp lookup 134", "from all lookup 7"]
        );
        assert!(rules_in(listing, 32762).is_empty());
        assert!(
            rules_in(listing, 3276).is_empty(),
            "a prefix of another priority is not that priority"
        );
    }

    #[test]
    fn table_routes_are_picked_from_all_tables() {
        let listing = "\
local default dev lo table 100 scope host 
default dev ambit-guard table 134 scope link src 10.244.1.5 
unreachable default table 134 metric 1000 
throw 169.254.7.127 table 134 
default via 10.244.1.1 dev eth0 
10.244.1.1 dev eth0 scope link 
local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1 
1.2.3.4 via 10.244.1.1 dev eth0 table 1340 
";
        let cases: &[(u32, &[&str])] = &[
            (
                134,
                &[
                    "default dev ambit-guard scope link src 10.244.1.5",
                    "unreachable default metric 1000",
                    "throw 169.254.7.127",
                ],
            ),
            (100, &["local default dev lo scope host"]),
            (135, &[]),
        ];
        for (table, want) in cases {
            assert_eq!(table_routes(listing, *table), *want, "table {table}");
        }
    }

    #[test]
    fn local_route_is_recognised() {
        assert!(is_local_route("local default dev lo scope host "));
        assert!(!is_local_route("local default dev lo2 scope host"));
        assert!(!is_local_route("default via 10.0.0.1 dev eth0"));
    }

    #[test]
    fn route_arguments_name_the_table() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            (
                "replace",
                LOCAL_ROUTE,
                "100",
                &["route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", "100"],
            ),
            (
                "del",
                "throw 169.254.7.127",
                "134",
                &["route", "del", "throw", "169.254.7.127", "table", "134"],
            ),
        ];
        for (verb, route, table, want) in cases {
            assert_eq!(route_args(verb, route, table), *want);
        }
    }
}

//! The policy routing of capture in a pod namespace: the `fwmark … lookup TABLE` rule at [`RULE_PREF`] and the
//! local default route of that table, installed idempotently, removed, and read back.

use crate::CaptureError;
use crate::command::ip;
use crate::rules::{CaptureConfig, LOCAL_ROUTE, RULE_PREF, normalize};

/// Adds the local route (replacing it) and makes the rule at [`RULE_PREF`] exactly the configured one, leaving an
/// already correct rule untouched so that replies in flight are never misrouted.
pub(crate) fn install(netns: &str, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    let table = cfg.route_table.to_string();
    ip(netns, &route_args("replace", &table))?;
    let rules = rules(netns)?;
    if rules == [normalize(&cfg.ip_rule())] {
        return Ok(());
    }
    delete_rules(netns, rules.len())?;
    let pref = RULE_PREF.to_string();
    let rule = cfg.ip_rule();
    let mut args = vec!["rule", "add"];
    args.extend(rule.split_whitespace());
    args.extend(["pref", &pref]);
    ip(netns, &args).map(drop)
}

/// Deletes every rule at [`RULE_PREF`] and the local route of the configured table; absent ones are no error.
pub(crate) fn remove(netns: &str, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    delete_rules(netns, rules(netns)?.len())?;
    if has_local_route(netns, cfg)? {
        ip(netns, &route_args("del", &cfg.route_table.to_string()))?;
    }
    Ok(())
}

/// The rules at [`RULE_PREF`], normalised and without their `PREF:` prefix.
pub(crate) fn rules(netns: &str) -> Result<Vec<String>, CaptureError> {
    let pref = RULE_PREF.to_string();
    let listing = ip(netns, &["rule", "show", "pref", &pref])?;
    Ok(parse_rules(&listing))
}

/// Whether the configured table holds the local default route over `lo`.
pub(crate) fn has_local_route(netns: &str, cfg: &CaptureConfig) -> Result<bool, CaptureError> {
    let listing = ip(netns, &["route", "show", "table", &cfg.route_table.to_string()])?;
    Ok(listing.lines().any(is_local_route))
}

fn route_args<'a>(verb: &'a str, table: &'a str) -> Vec<&'a str> {
    let mut args = vec!["route", verb];
    args.extend(LOCAL_ROUTE.split_whitespace());
    args.extend(["table", table]);
    args
}

fn delete_rules(netns: &str, count: usize) -> Result<(), CaptureError> {
    let pref = RULE_PREF.to_string();
    for _ in 0..count {
        ip(netns, &["rule", "del", "pref", &pref])?;
    }
    Ok(())
}

fn parse_rules(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(_, rule)| normalize(rule))
        .filter(|rule| !rule.is_empty())
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
        let listing = "32764:\tfrom all fwmark 0x111/0xfff lookup 100 \n";
        assert_eq!(parse_rules(listing), ["from all fwmark 0x111/0xfff lookup 100"]);
        assert!(parse_rules("").is_empty());
    }

    #[test]
    fn local_route_is_recognised() {
        assert!(is_local_route("local default dev lo scope host "));
        assert!(!is_local_route("local default dev lo2 scope host"));
        assert!(!is_local_route("default via 10.0.0.1 dev eth0"));
    }

    #[test]
    fn route_arguments_name_the_table() {
        assert_eq!(
            route_args("replace", "100"),
            ["route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", "100"]
        );
    }
}

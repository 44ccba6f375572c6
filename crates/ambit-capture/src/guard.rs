//! The fail-closed guard of a pod namespace (see [`rules`](crate::rules) for its logic) and the
//! `tcp_migrate_req` and `tcp_tw_reuse` sysctls: installed idempotently and without a window in which TCP could leave unguarded,
//! removed, and read back for [`verify`](crate::verify).

use std::net::Ipv4Addr;

use crate::CaptureError;
use crate::command::{in_netns, ip};
use crate::routing::{all_routes, all_rules, rules_in, table_routes};
use crate::rules::{CaptureConfig, GUARD_LINK, GUARD_LINK_KIND, GUARD_TABLE, IpRule, POD_SYSCTLS, normalize};

/// The guard and the sysctl as read back from a namespace: the input of
/// [`guard_drift`](crate::verify::guard_drift).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuardState {
    /// The address the guard's route must use as source: the pod's first global IPv4 address.
    pub pod_ip: Option<Ipv4Addr>,
    /// `None` when [`GUARD_LINK`] does not exist, else whether it is up.
    pub link_up: Option<bool>,
    /// The routes of [`GUARD_TABLE`], normalised, without `table N`.
    pub routes: Vec<String>,
    /// The rules found at the priority of each of `cfg.guard_rules()`, in that order, normalised.
    pub rules: Vec<(u32, Vec<String>)>,
    /// The values of [`POD_SYSCTLS`], in that order.
    pub sysctls: Vec<String>,
}

/// Sets the sysctl, then brings up the guard's device, its table and finally its rules, leaving whatever is already
/// correct untouched (see [`install_steps`]).
pub(crate) fn install(netns: &str, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    let found = read(netns, cfg)?;
    for (sysctl, value) in POD_SYSCTLS.iter().zip(&found.sysctls) {
        if value != sysctl.on {
            write_sysctl(netns, sysctl.key, sysctl.on)?;
        }
    }
    run(netns, &install_steps(&found, cfg))
}

/// Removes the guard in the reverse order (rules, table, device) and resets the sysctl to the kernel's default;
/// what is already gone is no error.
pub(crate) fn remove(netns: &str, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    let found = read(netns, cfg)?;
    run(netns, &remove_steps(&found))?;
    for (sysctl, value) in POD_SYSCTLS.iter().zip(&found.sysctls) {
        if value != sysctl.off {
            write_sysctl(netns, sysctl.key, sysctl.off)?;
        }
    }
    Ok(())
}

/// Reads the guard's parts and the sysctl back.
pub(crate) fn read(netns: &str, cfg: &CaptureConfig) -> Result<GuardState, CaptureError> {
    read_with(netns, cfg, &all_rules(netns)?, &all_routes(netns)?)
}

/// As [`read`], with the namespace's rule and route listings ([`all_rules`], [`all_routes`]) already in hand.
pub(crate) fn read_with(
    netns: &str,
    cfg: &CaptureConfig,
    rule_listing: &str,
    route_listing: &str,
) -> Result<GuardState, CaptureError> {
    let rules = (cfg.guard_rules().iter())
        .map(|rule| (rule.pref, rules_in(rule_listing, rule.pref)))
        .collect();
    Ok(GuardState {
        pod_ip: pod_ip(netns)?,
        link_up: link_state(&ip(netns, &["-o", "link", "show"])?, GUARD_LINK),
        routes: table_routes(route_listing, GUARD_TABLE),
        rules,
        sysctls: (POD_SYSCTLS.iter())
            .map(|sysctl| read_sysctl(netns, sysctl.key))
            .collect::<Result<_, _>>()?,
    })
}

/// Runs `ip -n NETNS` with each step's arguments in turn.
fn run(netns: &str, steps: &[Vec<String>]) -> Result<(), CaptureError> {
    for step in steps {
        ip(netns, &step.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// The `ip` commands (arguments after `ip -n NETNS`) that turn the guard `found` into the one `cfg` wants, in order:
/// the device (created, brought up), the routes its table lacks, the routes it should not have, then the rules.
/// None when the guard is intact. No step opens a way out while it runs: the table is complete before a rule
/// points at it, and a missing rule is added before the others at its priority are deleted (the kernel puts a new
/// rule after those of equal priority, and `rule del pref` deletes the first), so that no priority is left empty.
pub(crate) fn install_steps(found: &GuardState, cfg: &CaptureConfig) -> Vec<Vec<String>> {
    let mut steps = Vec::new();
    if found.link_up.is_none() {
        steps.push(words(&format!("link add {GUARD_LINK} type {GUARD_LINK_KIND}")));
    }
    if found.link_up != Some(true) {
        steps.push(words(&format!("link set {GUARD_LINK} up")));
    }
    let want = cfg.guard_routes(found.pod_ip);
    for route in want.iter().filter(|r| !found.routes.contains(r)) {
        steps.push(words(&format!("route replace {route} table {GUARD_TABLE}")));
    }
    for route in found.routes.iter().filter(|r| !want.contains(r)) {
        steps.push(words(&format!("route del {} table {GUARD_TABLE}", deletable(route))));
    }
    for rule in cfg.guard_rules() {
        let at = found.rules.iter().find(|(pref, _)| *pref == rule.pref);
        steps.extend(rule_steps(&rule, at.map_or(&[][..], |(_, rules)| rules)));
    }
    steps
}

/// Makes `rule` the only one at its priority, given the rules `found` there.
fn rule_steps(rule: &IpRule, found: &[String]) -> Vec<Vec<String>> {
    let want = normalize(&rule.rule);
    let pref = rule.pref;
    if found.contains(&want) {
        return found
            .iter()
            .filter(|r| **r != want)
            .map(|extra| words(&format!("rule del pref {pref} {extra}")))
            .collect();
    }
    let mut steps = vec![words(&format!("rule add {want} pref {pref}"))];
    steps.extend(found.iter().map(|_| words(&format!("rule del pref {pref}"))));
    steps
}

/// The `ip` commands that take the guard `found` away: its rules (the `ipproto tcp` one first), its table's routes
/// and its device.
pub(crate) fn remove_steps(found: &GuardState) -> Vec<Vec<String>> {
    let mut steps: Vec<Vec<String>> = found
        .rules
        .iter()
        .rev()
        .flat_map(|(pref, rules)| rules.iter().map(move |_| words(&format!("rule del pref {pref}"))))
        .collect();
    for route in &found.routes {
        steps.push(words(&format!("route del {} table {GUARD_TABLE}", deletable(route))));
    }
    if found.link_up.is_some() {
        steps.push(words(&format!("link del {GUARD_LINK}")));
    }
    steps
}

fn words(command: &str) -> Vec<String> {
    command.split_whitespace().map(str::to_string).collect()
}

/// The source address of the guard's route: the pod's first global IPv4 address, which is the one its connections
/// use when it has only one (as a pod has).
fn pod_ip(netns: &str) -> Result<Option<Ipv4Addr>, CaptureError> {
    Ok(first_address(&ip(
        netns,
        &["-4", "-o", "addr", "show", "scope", "global"],
    )?))
}

fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Reads a sysctl from a thread inside the namespace (`/proc/sys/net` shows the opener's).
fn read_sysctl(netns: &str, key: &'static str) -> Result<String, CaptureError> {
    let path = sysctl_path(key);
    let value = in_netns(netns, move || std::fs::read_to_string(&path))?;
    value
        .map(|v| v.trim().to_string())
        .map_err(|source| sysctl_error(netns, key, source))
}

fn write_sysctl(netns: &str, key: &'static str, value: &'static str) -> Result<(), CaptureError> {
    let path = sysctl_path(key);
    in_netns(netns, move || std::fs::write(&path, value))?.map_err(|source| sysctl_error(netns, key, source))
}

fn sysctl_error(netns: &str, key: &'static str, source: std::io::Error) -> CaptureError {
    CaptureError::Sysctl {
        netns: netns.to_string(),
        key,
        source,
    }
}

/// A listed route as `ip route del` takes it: without the state flags the kernel adds (`linkdown`, `dead`, …).
fn deletable(route: &str) -> String {
    const FLAGS: [&str; 8] = [
        "linkdown",
        "dead",
        "pervasive",
        "offload",
        "trap",
        "rt_offload",
        "rt_trap",
        "rt_offload_failed",
    ];
    route
        .split_whitespace()
        .filter(|t| !FLAGS.contains(t))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the named link exists in `ip -o link show` output, and then whether it is administratively up.
fn link_state(listing: &str, name: &str) -> Option<bool> {
    listing.lines().find_map(|line| {
        let mut fields = line.split(": ");
        let _index = fields.next()?;
        let link = fields.next()?;
        let link = link.split_once('@').map_or(link, |(link, _peer)| link);
        if link != name {
            return None;
        }
        let flags = fields.next()?.strip_prefix('<')?.split_once('>')?.0;
        Some(flags.split(',').any(|flag| flag == "UP"))
    })
}

/// The first address in `ip -4 -o addr show scope global` output, on a link other than `lo` and the guard's.
fn first_address(listing: &str) -> Option<Ipv4Addr> {
    listing.lines().find_map(|line| {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let link = tokens.get(1)?;
        let link = link.split_once('@').map_or(*link, |(link, _peer)| link);
        if link == "lo" || link == GUARD_LINK {
            return None;
        }
        let at = tokens.iter().position(|t| *t == "inet")?;
        tokens.get(at + 1)?.split('/').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests;

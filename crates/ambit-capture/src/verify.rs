//! Reading capture back from a pod namespace and reporting how it differs from what [`install`](crate::install)
//! would have put there: missing tables, chains, rules, policy rules, routes, the guard's device or the sysctl, and
//! rules or guard routes nobody asked for (an `accept` slipped in before a redirect bypasses capture; a route in
//! the guard's table could let TCP out).

use std::collections::BTreeMap;
use std::fmt;

use crate::command::{ensure_namespace, nft};
use crate::guard::GuardState;
use crate::rules::{
    CaptureConfig, Chain, FAMILY, GUARD_LINK, GUARD_TABLE, LOCAL_ROUTE, POD_SYSCTLS, RULE_PREF, Table, normalize,
    pod_tables,
};
use crate::{CaptureError, guard, routing};

/// Where a pod's capture differs from its configuration; empty when capture is intact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub drift: Vec<Drift>,
}

/// One difference between the capture found and the capture expected. Tables are named with their family
/// (`inet istio-ambient-nat`); rules are normalised (see [`normalize`]); policy rules carry their priority
/// (`32765: from all ipproto tcp lookup 134`) and routes their table (`throw 169.254.7.127 table 134`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    MissingTable {
        table: String,
    },
    MissingChain {
        table: String,
        chain: String,
    },
    MissingRule {
        table: String,
        chain: String,
        rule: String,
    },
    UnexpectedRule {
        table: String,
        chain: String,
        rule: String,
    },
    /// The chain holds the expected rules, but out of order or repeated.
    Reordered {
        table: String,
        chain: String,
    },
    MissingIpRule {
        rule: String,
    },
    UnexpectedIpRule {
        rule: String,
    },
    MissingRoute {
        route: String,
    },
    /// A route in the guard's table that install does not put there.
    UnexpectedRoute {
        route: String,
    },
    /// The guard's device does not exist.
    MissingLink {
        link: String,
    },
    /// The guard's device exists but is down.
    LinkDown {
        link: String,
    },
    /// A sysctl of the namespace has another value than install sets.
    Sysctl {
        key: String,
        found: String,
        want: String,
    },
}

/// A table's chains and their normalised lines, as `nft list ruleset` shows them.
type Listing = BTreeMap<String, BTreeMap<String, Vec<String>>>;

// === impl VerifyReport ===

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.drift.is_empty()
    }
}

// === impl Drift ===

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::MissingTable { table } => write!(f, "table {table} is missing"),
            Drift::MissingChain { table, chain } => write!(f, "chain {chain} of table {table} is missing"),
            Drift::MissingRule { table, chain, rule } => write!(f, "{table} {chain}: rule `{rule}` is missing"),
            Drift::UnexpectedRule { table, chain, rule } => write!(f, "{table} {chain}: unexpected rule `{rule}`"),
            Drift::Reordered { table, chain } => write!(f, "{table} {chain}: rules out of order or repeated"),
            Drift::MissingIpRule { rule } => write!(f, "ip rule `{rule}` is missing"),
            Drift::UnexpectedIpRule { rule } => write!(f, "unexpected ip rule `{rule}`"),
            Drift::MissingRoute { route } => write!(f, "route `{route}` is missing"),
            Drift::UnexpectedRoute { route } => write!(f, "unexpected route `{route}`"),
            Drift::MissingLink { link } => write!(f, "link {link} is missing"),
            Drift::LinkDown { link } => write!(f, "link {link} is down"),
            Drift::Sysctl { key, found, want } => write!(f, "sysctl {key} is {found}, not {want}"),
        }
    }
}

/// Whether any part of capture is in the namespace: one of its nftables tables, the guard's link, a guard route or
/// a guard rule. For a node agent that finds a pod it keeps no record of and does not enroll: capture left behind
/// (by an agent that died while releasing the pod, say) would keep blocking the pod's TCP, so it is removed.
pub fn installed(netns: &str, cfg: &CaptureConfig) -> Result<bool, CaptureError> {
    ensure_namespace(netns)?;
    let listing = parse_listing(&nft(netns, &["list", "ruleset"], None)?);
    let tables = pod_tables(cfg);
    let missing = table_drift(&listing, &tables)
        .iter()
        .filter(|d| matches!(d, Drift::MissingTable { .. }))
        .count();
    Ok(any_part(missing < tables.len(), &guard::read(netns, cfg)?))
}

/// [`installed`]'s decision: a table is there, or any part of the guard (the sysctl alone does not count: it is
/// harmless, and remove resets it anyway).
pub(crate) fn any_part(some_table: bool, guard: &GuardState) -> bool {
    some_table || guard.link_up.is_some() || !guard.routes.is_empty() || guard.rules.iter().any(|(_, r)| !r.is_empty())
}

/// Reads the named namespace's nftables ruleset, policy rules, routes, guard device and sysctl, and reports where
/// they differ from what [`install`](crate::install) with `cfg` leaves. Tables and chains other than capture's are
/// ignored.
pub fn verify(netns: &str, cfg: &CaptureConfig) -> Result<VerifyReport, CaptureError> {
    ensure_namespace(netns)?;
    let listing = parse_listing(&nft(netns, &["list", "ruleset"], None)?);
    let mut drift = table_drift(&listing, &pod_tables(cfg));
    // Each listing once: the agent runs this for every enrolled pod every second.
    let (rules, routes) = (routing::all_rules(netns)?, routing::all_routes(netns)?);
    drift.extend(rule_drift(
        RULE_PREF,
        &cfg.ip_rule(),
        &routing::rules_in(&rules, RULE_PREF),
    ));
    if !routing::holds_local_route(&routes, cfg) {
        drift.push(Drift::MissingRoute {
            route: format!("{LOCAL_ROUTE} table {}", cfg.route_table),
        });
    }
    drift.extend(guard_drift(&guard::read_with(netns, cfg, &rules, &routes)?, cfg));
    Ok(VerifyReport { drift })
}

/// How the rules found at `pref` differ from the one rule wanted there.
fn rule_drift(pref: u32, want: &str, found: &[String]) -> Vec<Drift> {
    let want = normalize(want);
    let mut drift: Vec<Drift> = found
        .iter()
        .filter(|rule| **rule != want)
        .map(|rule| Drift::UnexpectedIpRule {
            rule: format!("{pref}: {rule}"),
        })
        .collect();
    if !found.contains(&want) {
        drift.push(Drift::MissingIpRule {
            rule: format!("{pref}: {want}"),
        });
    }
    drift
}

/// How the guard and the sysctl read back differ from what install leaves: the device, the guard table's routes
/// (missing, then unexpected), the rules in priority order, then the sysctl.
pub(crate) fn guard_drift(found: &GuardState, cfg: &CaptureConfig) -> Vec<Drift> {
    let link = || GUARD_LINK.to_string();
    let mut drift = match found.link_up {
        None => vec![Drift::MissingLink { link: link() }],
        Some(false) => vec![Drift::LinkDown { link: link() }],
        Some(true) => Vec::new(),
    };
    let want = cfg.guard_routes(found.pod_ip);
    let in_table = |route: &String| format!("{route} table {GUARD_TABLE}");
    drift.extend(
        want.iter()
            .filter(|r| !found.routes.contains(r))
            .map(|r| Drift::MissingRoute { route: in_table(r) }),
    );
    drift.extend(
        found
            .routes
            .iter()
            .filter(|r| !want.contains(r))
            .map(|r| Drift::UnexpectedRoute { route: in_table(r) }),
    );
    for rule in cfg.guard_rules() {
        let at = found.rules.iter().find(|(pref, _)| *pref == rule.pref);
        drift.extend(rule_drift(
            rule.pref,
            &rule.rule,
            at.map_or(&[][..], |(_, rules)| rules),
        ));
    }
    for (sysctl, value) in POD_SYSCTLS.iter().zip(&found.sysctls) {
        if value != sysctl.on {
            drift.push(Drift::Sysctl {
                key: sysctl.key.to_string(),
                found: value.clone(),
                want: sysctl.on.to_string(),
            });
        }
    }
    drift
}

fn table_drift(listing: &Listing, expected: &[Table]) -> Vec<Drift> {
    let mut drift = Vec::new();
    for table in expected {
        let name = format!("{FAMILY} {}", table.name);
        let Some(chains) = listing.get(&name) else {
            drift.push(Drift::MissingTable { table: name });
            continue;
        };
        for chain in &table.chains {
            match chains.get(chain.name) {
                Some(lines) => drift.extend(chain_drift(&name, chain, lines)),
                None => drift.push(Drift::MissingChain {
                    table: name.clone(),
                    chain: chain.name.to_string(),
                }),
            }
        }
    }
    drift
}

fn chain_drift(table: &str, chain: &Chain, found: &[String]) -> Vec<Drift> {
    let (table, name) = (table.to_string(), chain.name.to_string());
    let missing = chain
        .lines
        .iter()
        .filter(|l| !found.contains(l))
        .map(|rule| Drift::MissingRule {
            table: table.clone(),
            chain: name.clone(),
            rule: rule.clone(),
        });
    let unexpected = found
        .iter()
        .filter(|l| !chain.lines.contains(l))
        .map(|rule| Drift::UnexpectedRule {
            table: table.clone(),
            chain: name.clone(),
            rule: rule.clone(),
        });
    let mut drift: Vec<Drift> = missing.chain(unexpected).collect();
    if drift.is_empty() && found != chain.lines {
        drift.push(Drift::Reordered { table, chain: name });
    }
    drift
}

/// The blocks of `nft list ruleset` output being read.
enum Block {
    Table(String),
    Chain(String),
    /// Sets, maps and anything else with a body.
    Other,
}

/// Tables, their chains and the chains' lines (normalised) from `nft list ruleset` text.
fn parse_listing(text: &str) -> Listing {
    let mut listing = Listing::new();
    let mut open: Vec<Block> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "}" {
            open.pop();
        } else if let Some(head) = line.strip_suffix('{') {
            open.push(open_block(&mut listing, &open, head));
        } else if let [Block::Table(table), Block::Chain(chain)] = open.as_slice()
            && let Some(lines) = listing.get_mut(table).and_then(|chains| chains.get_mut(chain))
        {
            lines.push(normalize(line));
        }
    }
    listing
}

/// Registers a table or chain header (`table inet NAME {`, `chain NAME {`) in the listing.
fn open_block(listing: &mut Listing, open: &[Block], head: &str) -> Block {
    let words: Vec<&str> = head.split_whitespace().collect();
    match (open, words.as_slice()) {
        ([], ["table", family, name]) => {
            let table = format!("{family} {name}");
            listing.entry(table.clone()).or_default();
            Block::Table(table)
        }
        ([Block::Table(table)], ["chain", name]) => {
            if let Some(chains) = listing.get_mut(table) {
                chains.entry(name.to_string()).or_default();
            }
            Block::Chain(name.to_string())
        }
        _ => Block::Other,
    }
}

#[cfg(test)]
mod tests;

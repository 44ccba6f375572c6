//! The capture rules of a pod network namespace as pure values: the configuration (Istio's constants), the two
//! nftables tables of Istio's nftables mode and the policy-routing rule and route, rendered as text for `nft -f -`
//! and `ip`, and normalised for comparison with what the kernel lists back.
//!
//! Logic (IPv4), as Istio's in-pod rules:
//! - mangle prerouting: a packet carrying the proxy's mark sets the connection's mark to the tproxy mark;
//! - nat prerouting: TCP not to 127.0.0.1, not to the HBONE port, without the proxy's mark → the inbound port;
//! - mangle output (a `route` chain, so a changed mark re-routes): a connection marked with the tproxy mark copies
//!   it to the packet, whose policy route (`fwmark … lookup 100`, `local 0.0.0.0/0 dev lo table 100`) brings the
//!   app's reply back to the proxy's transparent socket;
//! - nat output: tproxy-marked TCP and traffic to the pod's own IP over `lo` are accepted, other TCP not to
//!   127.0.0.1 and without the proxy's mark → the outbound port.

use std::fmt::Write as _;

/// The address family of the tables: `inet` covers IPv4 and IPv6, though the rules only match IPv4.
pub const FAMILY: &str = "inet";
/// The table holding the REDIRECT rules (Istio's name in nftables mode).
pub const NAT_TABLE: &str = "istio-ambient-nat";
/// The table holding the connection-mark rules (Istio's name in nftables mode).
pub const MANGLE_TABLE: &str = "istio-ambient-mangle";
/// The priority of the policy-routing rule (Istio's); capture owns every rule at this priority.
pub const RULE_PREF: u32 = 32764;

/// The route of [`CaptureConfig::route_table`], as `ip route replace` takes it without its table: every address is
/// local, so a tproxy-marked packet is delivered to the socket bound to its (foreign) destination.
pub const LOCAL_ROUTE: &str = "local 0.0.0.0/0 dev lo";

/// The ports, marks and routing table of capture; [`Default`] gives Istio's values. `mark` and `tproxy_mark` must
/// lie within `mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Where inbound plaintext TCP is redirected (the proxy's inbound listener).
    pub inbound_port: u16,
    /// Where the pod's outbound TCP is redirected (the proxy's outbound listener).
    pub outbound_port: u16,
    /// The inbound HBONE port, never redirected.
    pub hbone_port: u16,
    /// SO_MARK on every socket the proxy creates in the pod, exempting them from redirection.
    pub mark: u32,
    /// The connection mark of the proxy's connections to the app, whose replies are routed back to the proxy.
    pub tproxy_mark: u32,
    /// The bits of the packet and connection marks that capture owns.
    pub mask: u32,
    /// The routing table delivering tproxy-marked packets locally.
    pub route_table: u32,
    /// Capture outbound traffic only (Istio's `ambient.istio.io/bypass-inbound-capture`).
    pub bypass_inbound: bool,
    /// The source address of the node's health probes (Istio's 169.254.7.127): connections from it reach the app
    /// directly, so probes see the app rather than the proxy, and STRICT mTLS does not fail them.
    pub probe_source: Option<std::net::Ipv4Addr>,
}

/// The address kubelet probes come from in ambient (ambient §2.3).
pub const PROBE_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 7, 127);

/// An nftables table of capture: its name and chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    pub chains: Vec<Chain>,
}

/// A chain and its lines in order; a base chain's first line is its `type … hook …` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub lines: Vec<String>,
}

// === impl CaptureConfig ===

impl CaptureConfig {
    /// The policy-routing rule, as `ip rule add` takes it after `add` (and `ip rule show` lists it after `PREF:`).
    pub fn ip_rule(&self) -> String {
        format!(
            "from all fwmark {:#x}/{:#x} lookup {}",
            self.tproxy_mark, self.mask, self.route_table
        )
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            inbound_port: 15006,
            outbound_port: 15001,
            hbone_port: 15008,
            mark: 0x539,
            tproxy_mark: 0x111,
            mask: 0xfff,
            route_table: 100,
            bypass_inbound: false,
            probe_source: Some(PROBE_SOURCE),
        }
    }
}

/// The full ruleset for a pod namespace, replacing any previous capture tables in one transaction.
pub fn pod_ruleset(cfg: &CaptureConfig) -> String {
    let mut text = removal_ruleset();
    for table in pod_tables(cfg) {
        render_table(&mut text, &table);
    }
    text
}

/// A transaction deleting the capture tables, which succeeds whether they exist or not.
pub fn removal_ruleset() -> String {
    [MANGLE_TABLE, NAT_TABLE]
        .iter()
        .map(|t| format!("table {FAMILY} {t} {{}}\ndelete table {FAMILY} {t}\n"))
        .collect()
}

/// The capture tables as values: the mangle table, then the nat table.
pub fn pod_tables(cfg: &CaptureConfig) -> Vec<Table> {
    vec![mangle_table(cfg), nat_table(cfg)]
}

fn mangle_table(cfg: &CaptureConfig) -> Table {
    let (mask, mark, tproxy) = (cfg.mask, cfg.mark, cfg.tproxy_mark);
    // CONNMARK --set-xmark tproxy/mask: keep the bits outside the mask, set tproxy inside it. Written as nft lists
    // it back (it folds `& !mask | tproxy` into this form).
    let keep = !mask | tproxy;
    Table {
        name: MANGLE_TABLE,
        chains: vec![
            base_chain("prerouting", "filter", -150),
            base_chain("output", "route", -150),
            chain(
                "istio-prerouting",
                vec![format!(
                    "meta mark & {mask:#x} == {mark:#x} ct mark set ct mark & {keep:#x} | {tproxy:#x}"
                )],
            ),
            chain(
                "istio-output",
                vec![format!("ct mark & {mask:#x} == {tproxy:#x} meta mark set ct mark")],
            ),
        ],
    }
}

fn nat_table(cfg: &CaptureConfig) -> Table {
    let (mask, mark, tproxy) = (cfg.mask, cfg.mark, cfg.tproxy_mark);
    let inbound = format!(
        "ip daddr != 127.0.0.1 tcp dport != {} meta mark & {mask:#x} != {mark:#x} redirect to :{}",
        cfg.hbone_port, cfg.inbound_port
    );
    let outbound = format!(
        "meta l4proto tcp ip daddr != 127.0.0.1 meta mark & {mask:#x} != {mark:#x} redirect to :{}",
        cfg.outbound_port
    );
    let mut output = Vec::new();
    if let Some(probe) = cfg.probe_source {
        output.push(format!("ip daddr {probe} meta l4proto tcp accept"));
    }
    output.extend([
        format!("meta l4proto tcp meta mark & {mask:#x} == {tproxy:#x} accept"),
        "ip daddr != 127.0.0.1 oifname \"lo\" accept".to_string(),
        outbound,
    ]);
    let mut prerouting = Vec::new();
    if !cfg.bypass_inbound {
        if let Some(probe) = cfg.probe_source {
            prerouting.push(format!("ip saddr {probe} meta l4proto tcp accept"));
        }
        prerouting.push(inbound);
    }
    Table {
        name: NAT_TABLE,
        chains: vec![
            base_chain("prerouting", "nat", -100),
            base_chain("output", "nat", -100),
            chain("istio-prerouting", prerouting),
            chain("istio-output", output),
        ],
    }
}

/// A base chain on the hook of its name, jumping to `istio-<hook>`.
fn base_chain(hook: &'static str, kind: &str, priority: i32) -> Chain {
    chain(
        hook,
        vec![
            format!("type {kind} hook {hook} priority {priority}; policy accept;"),
            format!("jump istio-{hook}"),
        ],
    )
}

fn chain(name: &'static str, lines: Vec<String>) -> Chain {
    Chain { name, lines }
}

fn render_table(out: &mut String, table: &Table) {
    let _ = writeln!(out, "table {FAMILY} {} {{", table.name);
    for chain in &table.chains {
        let _ = writeln!(out, "  chain {} {{", chain.name);
        for line in &chain.lines {
            let _ = writeln!(out, "    {line}");
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
}

/// A rule or chain statement in a form that does not depend on how nft prints it: single spaces, hexadecimal
/// numbers without leading zeros (`0x00000fff` → `0xfff`), chain priorities as numbers (`mangle` → `-150`).
pub fn normalize(line: &str) -> String {
    let mut out = Vec::new();
    let mut after_priority = false;
    for token in line.split_whitespace() {
        out.push(if after_priority { priority(token) } else { hex(token) });
        after_priority = token == "priority";
    }
    out.join(" ")
}

fn hex(token: &str) -> String {
    token
        .strip_prefix("0x")
        .and_then(|digits| u64::from_str_radix(digits, 16).ok())
        .map_or_else(|| token.to_string(), |value| format!("{value:#x}"))
}

/// A chain priority token (`mangle;`, `-150;`) as a number, keeping its trailing `;`.
fn priority(token: &str) -> String {
    let (name, rest) = token.split_at(token.find(';').unwrap_or(token.len()));
    let number = match name {
        "raw" => "-300",
        "mangle" => "-150",
        "dstnat" => "-100",
        "filter" => "0",
        "security" => "50",
        "srcnat" => "100",
        other => other,
    };
    format!("{number}{rest}")
}

#[cfg(test)]
mod tests;

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
//! - with `bypass_inbound`, inbound TCP reaches the app directly: mangle prerouting gives such a connection the
//!   proxy's mark as its connection mark and mangle output copies it to the replies, which the guard lets through.
//!
//! The fail-closed guard (ambit's own, not Istio's), policy routing that needs no nftables table:
//! - `fwmark <mark>/<mask> lookup main` at [`GUARD_MARK_PREF`]: the proxy's own sockets route as before;
//! - `ipproto tcp lookup` [`GUARD_TABLE`] at [`GUARD_PREF`], after Istio's tproxy rule at [`RULE_PREF`] (so the
//!   app's replies to spoofed sources still reach the proxy) and just before `main`: every other TCP packet that
//!   leaves the pod is routed by the guard table, whose default route goes into [`GUARD_LINK`], a device that drops
//!   everything it is given, and whose fallback `unreachable` route fails it should that device vanish. The probe
//!   address is thrown back to `main`, so the replies to the node's health probes still leave.
//! - An app's connection to the outside finds a route there (a `connect()` looks its route up before netfilter's
//!   output hook, so a blackhole route would fail captured connections too); with capture in place the nat table's
//!   REDIRECT re-routes it to `lo`, and without it the packet is dropped: TCP fails, never leaves in plaintext.
//!   Local traffic (the `local` table comes first), UDP and ICMP are untouched.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

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
    pub probe_source: Option<Ipv4Addr>,
}

/// The address kubelet probes come from in ambient (ambient §2.3).
pub const PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(169, 254, 7, 127);

/// The guard's device: every unmarked TCP packet that capture did not redirect is routed into it and dropped.
pub const GUARD_LINK: &str = "ambit-guard";
/// The kind of [`GUARD_LINK`]: an `ifb` drops every packet sent to it that tc did not redirect there, as a `dummy`
/// would, and is built into kernels that lack `dummy`.
pub const GUARD_LINK_KIND: &str = "ifb";
/// The routing table of the guard; capture owns every route in it.
pub const GUARD_TABLE: u32 = 134;
/// The priority of the rule sending the proxy's own marked sockets to `main`, before the guard; capture owns every
/// rule at this priority.
pub const GUARD_MARK_PREF: u32 = 32763;
/// The priority of the guard's `ipproto tcp` rule: after Istio's [`RULE_PREF`], just before `main` (32766);
/// capture owns every rule at this priority.
pub const GUARD_PREF: u32 = 32765;
/// The priority of the kernel's `lookup main` rule.
const MAIN_PREF: u32 = 32766;

// The proxy's exception comes before the guard, Istio's tproxy rule sees the app's replies to spoofed sources before
// the guard does, and the guard comes before `main`.
const _: () = assert!(GUARD_MARK_PREF < RULE_PREF && RULE_PREF < GUARD_PREF && GUARD_PREF < MAIN_PREF);

/// The metric of the guard table's `unreachable` default, behind the route into [`GUARD_LINK`]: it takes over when
/// that device is deleted or down (the kernel drops its routes then), so the guard still fails closed.
pub const GUARD_FALLBACK_METRIC: u32 = 1000;
/// The sysctl letting a closing SO_REUSEPORT listener hand its queued connections to another listener of its group,
/// which a node-proxy upgrade relies on; install sets it to [`MIGRATE_REQ_ON`] in the pod, remove to
/// [`MIGRATE_REQ_OFF`] (the kernel's default).
pub const MIGRATE_REQ_SYSCTL: &str = "net.ipv4.tcp_migrate_req";
/// [`MIGRATE_REQ_SYSCTL`] with capture installed.
pub const MIGRATE_REQ_ON: &str = "1";
/// [`MIGRATE_REQ_SYSCTL`] without capture.
pub const MIGRATE_REQ_OFF: &str = "0";
/// Lets the pod's connects reuse a local port whose previous connection is in TIME_WAIT (timestamps make it safe).
/// With capture, an application's short connections close against its node proxy, which relays the server's FIN a
/// hop later than a direct server would send it, so the application usually closes first and keeps the TIME_WAIT;
/// at a few hundred new connections a second to one destination its ephemeral ports would run out (connect then
/// spends milliseconds searching the port range) without reuse. Install sets [`TW_REUSE_ON`], remove the kernel's
/// default [`TW_REUSE_OFF`] (reuse for loopback only).
pub const TW_REUSE_SYSCTL: &str = "net.ipv4.tcp_tw_reuse";
/// [`TW_REUSE_SYSCTL`] with capture installed.
pub const TW_REUSE_ON: &str = "1";
/// [`TW_REUSE_SYSCTL`] without capture.
pub const TW_REUSE_OFF: &str = "2";

/// A sysctl of the pod's namespace that capture sets, and its value with and without capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSysctl {
    pub key: &'static str,
    pub on: &'static str,
    pub off: &'static str,
}

/// Every sysctl capture sets in a pod, in the order they are read, set and verified.
pub const POD_SYSCTLS: [PodSysctl; 2] = [
    PodSysctl {
        key: MIGRATE_REQ_SYSCTL,
        on: MIGRATE_REQ_ON,
        off: MIGRATE_REQ_OFF,
    },
    PodSysctl {
        key: TW_REUSE_SYSCTL,
        on: TW_REUSE_ON,
        off: TW_REUSE_OFF,
    },
];

/// A policy-routing rule at its priority, as `ip rule add` takes it after `add` (without `pref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRule {
    pub pref: u32,
    pub rule: String,
}

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

    /// The guard's policy-routing rules, in the order install adds them: the exception for the proxy's own
    /// sockets first, so that they never meet the guard.
    pub fn guard_rules(&self) -> Vec<IpRule> {
        vec![
            IpRule {
                pref: GUARD_MARK_PREF,
                rule: format!("from all fwmark {:#x}/{:#x} lookup main", self.mark, self.mask),
            },
            IpRule {
                pref: GUARD_PREF,
                rule: format!("from all ipproto tcp lookup {GUARD_TABLE}"),
            },
        ]
    }

    /// The routes of [`GUARD_TABLE`], as `ip route replace` takes them without their table and as `ip route show`
    /// lists them: into [`GUARD_LINK`] from `pod_ip` (the address the app's connections would have had; the
    /// kernel picks one when `None`), the `unreachable` fallback, and the probe address thrown back to the next
    /// rule.
    pub fn guard_routes(&self, pod_ip: Option<Ipv4Addr>) -> Vec<String> {
        let mut routes = vec![match pod_ip {
            Some(ip) => format!("default dev {GUARD_LINK} scope link src {ip}"),
            None => format!("default dev {GUARD_LINK} scope link"),
        }];
        routes.push(format!("unreachable default metric {GUARD_FALLBACK_METRIC}"));
        if let Some(probe) = self.probe_source {
            routes.push(format!("throw {probe}"));
        }
        routes
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
    // CONNMARK --set-xmark value/mask: keep the bits outside the mask, set the value inside it. Written as nft lists
    // it back (it folds `& !mask | value` into this form).
    let set = |value: u32| format!("ct mark set ct mark & {:#x} | {value:#x}", !mask | value);
    let restore = |value: u32| format!("ct mark & {mask:#x} == {value:#x} meta mark set ct mark");
    let mut prerouting = vec![format!("meta mark & {mask:#x} == {mark:#x} {}", set(tproxy))];
    let mut output = vec![restore(tproxy)];
    if cfg.bypass_inbound {
        // Inbound TCP from outside the pod reaches the app itself: its replies carry the proxy's mark, so the
        // guard's mark rule routes them by `main` rather than into the guard's device.
        prerouting.push(format!("iifname != \"lo\" meta l4proto tcp ct state new {}", set(mark)));
        output.push(restore(mark));
    }
    Table {
        name: MANGLE_TABLE,
        chains: vec![
            base_chain("prerouting", "filter", -150),
            base_chain("output", "route", -150),
            chain("istio-prerouting", prerouting),
            chain("istio-output", output),
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

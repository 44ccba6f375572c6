//! The cluster's network, built with iproute2: a fabric namespace holding a bridge, one namespace per node attached
//! to it, one namespace per pod with a veth to its node, and the routes between them. Nothing is created in, or
//! routed to, the host's own network namespace: every link is created directly inside the namespaces it joins.
//!
//! Addressing (see `model.rs` for how the plan allocates it):
//! - the fabric bridge `br0` carries the control plane's address, so `ambit control` (run in the fabric namespace)
//!   is reached from every node directly on the fabric;
//! - the fabric routes each node's pod /24 via the node's address (pods reach the control plane);
//! - node `eth0` carries the node address on the fabric; routes to the other nodes' pod /24s go via their addresses;
//! - a pod's `eth0` has its pod IP as a /32, a link route to its node's gateway (the /24's first address) and a
//!   default route through it; the node side of the veth (`veth<last octet>`) carries the gateway address and a
//!   host route to the pod, so all pod traffic is routed (and NATed, for ClusterIPs) by the node namespace.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::layout::Layout;
use crate::model::{ClusterPlan, NodePlan, PodPlan};

/// The bridge inside the fabric namespace.
pub const BRIDGE: &str = "br0";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}` (is iproute2/nftables installed?)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] ambit_netns::NetnsError),
}

/// Runs a command to completion, feeding `stdin`, and turns a non-zero exit into an error carrying its stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), NetError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the command's own failure below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| NetError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetError::Command {
        command,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Runs `ip -n NS -batch -` with the given lines; stops at the first failing line.
fn ip_batch(ns: &str, lines: &[String]) -> Result<(), NetError> {
    let input = lines.join("\n") + "\n";
    run("ip", &["-n", ns, "-batch", "-"], Some(&input))
}

fn add_netns(name: &str) -> Result<(), NetError> {
    run("ip", &["netns", "add", name], None)
}

/// Writes a sysctl of the named namespace (through /proc/sys/net as seen by a thread inside it).
fn sysctl(ns: &str, entries: &[(&'static str, &'static str)]) -> Result<(), NetError> {
    let entries = entries.to_vec();
    ambit_netns::run_in(ns, move || {
        for (key, value) in entries {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).map_err(|source| NetError::Write { path, source })?;
        }
        Ok(())
    })?
}

/// The node-side veth of a pod.
pub fn pod_veth(pod_ip: Ipv4Addr) -> String {
    format!("veth{}", pod_ip.octets()[3])
}

/// Creates the fabric and every node, with routes between the nodes' pod ranges. The fabric also routes each pod
/// range to its node, so pods reach the control plane (a waypoint pod fetches its certificate and config there, as
/// a Kubernetes pod reaches istiod).
pub fn create_fabric(layout: &Layout, plan: &ClusterPlan) -> Result<(), NetError> {
    let fabric = layout.fabric_ns();
    add_netns(&fabric)?;
    let mut lines = vec![
        "link set lo up".into(),
        format!("link add {BRIDGE} type bridge"),
        format!("link set {BRIDGE} up"),
        format!(
            "addr add {}/{} dev {BRIDGE}",
            plan.control_address,
            plan.node_cidr.prefix()
        ),
    ];
    lines.extend(
        (plan.nodes.iter()).map(|node| format!("route add {} via {} dev {BRIDGE}", node.pod_cidr, node.address)),
    );
    ip_batch(&fabric, &lines)?;
    for (i, node) in plan.nodes.iter().enumerate() {
        create_node(layout, plan, i, node)?;
    }
    Ok(())
}

fn create_node(layout: &Layout, plan: &ClusterPlan, index: usize, node: &NodePlan) -> Result<(), NetError> {
    let ns = layout.node_ns(&node.name);
    add_netns(&ns)?;
    let port = format!("node{index}");
    ip_batch(
        &layout.fabric_ns(),
        &[
            format!("link add {port} type veth peer name eth0 netns {ns}"),
            format!("link set {port} master {BRIDGE} up"),
        ],
    )?;
    let mut lines = vec![
        "link set lo up".to_string(),
        format!("addr add {}/{} dev eth0", node.address, plan.node_cidr.prefix()),
        "link set eth0 up".to_string(),
        format!("addr add {}/32 dev lo", plan.dns_ip),
        // Pod readiness probes come from here; in-pod capture lets this source through to the app.
        format!("addr add {}/32 dev lo", ambit_capture::PROBE_SOURCE),
    ];
    for other in plan.nodes.iter().filter(|o| o.name != node.name) {
        lines.push(format!("route add {} via {} dev eth0", other.pod_cidr, other.address));
    }
    ip_batch(&ns, &lines)?;
    sysctl(
        &ns,
        &[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ],
    )
}

/// The gateway address of a node's pods.
pub fn gateway(node: &NodePlan) -> Ipv4Addr {
    // A /24 always has a first host address.
    node.pod_cidr.nth(1).unwrap_or(node.address)
}

/// Creates a pod's namespace, its veth to the node, addresses and routes, and its /etc overrides.
pub fn create_pod(layout: &Layout, plan: &ClusterPlan, pod: &PodPlan) -> Result<(), NetError> {
    let Some(node) = plan.node(&pod.node) else {
        return Err(NetError::Command {
            command: format!("place pod {}/{}", pod.namespace, pod.name),
            stderr: format!("node {} is not in the plan", pod.node),
        });
    };
    let ns = layout.pod_ns(&pod.namespace, &pod.name);
    let gw = gateway(node);
    let veth = pod_veth(pod.ip);
    add_netns(&ns)?;
    ip_batch(
        &layout.node_ns(&node.name),
        &[
            format!("link add {veth} type veth peer name eth0 netns {ns}"),
            format!("addr add {gw}/32 dev {veth}"),
            format!("link set {veth} up"),
            format!("route add {}/32 dev {veth} scope link src {gw}", pod.ip),
        ],
    )?;
    ip_batch(
        &ns,
        &[
            "link set lo up".into(),
            format!("addr add {}/32 dev eth0", pod.ip),
            "link set eth0 up".into(),
            format!("route add {gw}/32 dev eth0 scope link"),
            format!("route add default via {gw} dev eth0"),
        ],
    )?;
    write_etc(layout, plan, pod)
}

/// resolv.conf and hosts for the pod, which `ip netns exec` bind-mounts over the host's when it runs the pod's
/// processes.
fn write_etc(layout: &Layout, plan: &ClusterPlan, pod: &PodPlan) -> Result<(), NetError> {
    let dir = layout.etc_dir(&pod.namespace, &pod.name);
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| NetError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    std::fs::create_dir_all(&dir).map_err(|source| NetError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let domain = &plan.cluster_domain;
    write("resolv.conf", resolv_conf(plan.dns_ip, &pod.namespace, domain))?;
    write(
        "hosts",
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
            pod.ip, pod.name
        ),
    )
}

/// A pod's resolv.conf, as the kubelet writes it for `dnsPolicy: ClusterFirst`.
pub fn resolv_conf(dns: Ipv4Addr, namespace: &str, domain: &str) -> String {
    format!("nameserver {dns}\nsearch {namespace}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n")
}

/// Deletes a named namespace; its links go with it once no process holds it.
pub fn delete_netns(name: &str) -> Result<(), NetError> {
    run("ip", &["netns", "del", name], None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_searches_like_the_kubelet() {
        let text = resolv_conf(Ipv4Addr::new(10, 96, 0, 10), "web", "cluster.local");
        assert_eq!(
            text,
            "nameserver 10.96.0.10\nsearch web.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
    }

    #[test]
    fn veth_names_fit_ifnamsiz() {
        assert_eq!(pod_veth(Ipv4Addr::new(10, 244, 1, 254)), "veth254");
    }

    #[test]
    fn failing_command_reports_stderr() {
        let err = run("ip", &["link", "show", "dev", "ambit-no-such-link"], None).unwrap_err();
        assert!(err.to_string().contains("ambit-no-such-link"), "{err}");
    }
}

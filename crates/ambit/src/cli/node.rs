//! `ambit node`: runs the node proxy of one node until SIGTERM. On a local cluster every path and address defaults
//! from the cluster's layout; each can be given explicitly to run it elsewhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ambit_node::app::{DEFAULT_ROOT_NAMESPACE, NodeConfig, StateSource, XdsScope};
use ambit_types::TrustDomain;

use super::control::parse_trust_domain;

#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// The node this proxy serves.
    #[arg(long)]
    node: String,
    /// Read workloads, services and policies from this state file instead of the control plane's xDS stream.
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// The control plane's xDS address, host:port (default: the CA's address).
    #[arg(long, value_name = "HOST:PORT")]
    xds_address: Option<String>,
    /// The enrolled pods of this node and their network namespaces (default: the cluster's file for the node).
    #[arg(long, value_name = "FILE")]
    enrollment_file: Option<PathBuf>,
    /// The CA's host:port (default: the cluster's control plane on port 15012).
    #[arg(long, value_name = "HOST:PORT")]
    ca_address: Option<String>,
    /// The mesh trust bundle, PEM (default: the cluster CA's root-cert.pem).
    #[arg(long, value_name = "FILE")]
    ca_root: Option<PathBuf>,
    /// The node's bearer token for the CA (default: the cluster's token for the node).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[arg(long, default_value = "cluster.local", value_name = "TD", value_parser = parse_trust_domain)]
    trust_domain: TrustDomain,
    /// Policies in this namespace apply to every workload.
    #[arg(long, default_value = DEFAULT_ROOT_NAMESPACE, value_name = "NS")]
    root_namespace: String,
    #[arg(long, default_value = "127.0.0.1:15000", value_name = "ADDR")]
    admin_address: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15020", value_name = "ADDR")]
    metrics_address: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15021", value_name = "ADDR")]
    readiness_address: SocketAddr,
    /// How long connections may finish after SIGTERM before they are closed, e.g. 5s.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = ambit_apps::load::parse_duration)]
    drain_grace: Duration,
    /// How often the state and enrollment files are checked for changes.
    #[arg(long, default_value = "200ms", value_name = "DURATION", value_parser = ambit_apps::load::parse_duration)]
    poll_interval: Duration,
    /// Data-plane worker threads (default: half the machine's cores, at least 1 and at most 2, as ztunnel's 2 on a
    /// node with 4 or more).
    #[arg(long, env = "AMBIT_NODE_WORKERS")]
    workers: Option<usize>,
    /// Which addresses to ask the control plane for: `node` (this node's workloads and every service; others are
    /// looked up as connections need them) or `all` (every workload of the mesh).
    #[arg(long, default_value = "node", value_name = "SCOPE", value_parser = parse_scope)]
    xds_scope: XdsScope,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let explicit = args.enrollment_file.is_some()
        && args.ca_address.is_some()
        && args.ca_root.is_some()
        && args.token_file.is_some();
    // Anything not given comes from the local cluster this node belongs to.
    let cluster = if explicit {
        None
    } else {
        let layout = args.cluster.resolve()?;
        let plan = super::load_plan(&layout)?;
        anyhow::ensure!(
            plan.nodes.iter().any(|node| node.name == args.node),
            "cluster {} has no node {}",
            plan.name,
            args.node
        );
        Some((layout, plan))
    };
    let from_cluster = |f: &dyn Fn(&ambit_cluster::layout::Layout, &ambit_cluster::model::ClusterPlan) -> PathBuf| {
        cluster
            .as_ref()
            .map(|(layout, plan)| f(layout, plan))
            .unwrap_or_default()
    };
    let ca_address = args.ca_address.unwrap_or_else(|| {
        let address = cluster.as_ref().map(|(_, plan)| plan.control_address.to_string());
        format!("{}:15012", address.unwrap_or_default())
    });
    let state = match args.state_file {
        Some(path) => StateSource::File(path),
        None => StateSource::Xds {
            address: args.xds_address.unwrap_or_else(|| ca_address.clone()),
        },
    };
    let config = NodeConfig {
        state,
        enrollment_file: args
            .enrollment_file
            .unwrap_or_else(|| from_cluster(&|layout, _| layout.node_pods_file(&args.node))),
        ca_address,
        ca_root: args
            .ca_root
            .unwrap_or_else(|| from_cluster(&|layout, _| layout.ca_dir().join("root-cert.pem"))),
        token_file: args
            .token_file
            .unwrap_or_else(|| from_cluster(&|layout, _| layout.node_token_file(&args.node))),
        node: args.node,
        poll_interval: args.poll_interval,
        trust_domain: args.trust_domain,
        root_namespace: args.root_namespace,
        admin_address: args.admin_address,
        metrics_address: args.metrics_address,
        readiness_address: args.readiness_address,
        drain_grace: args.drain_grace,
        worker_threads: args.workers.unwrap_or_else(default_workers),
        xds_scope: args.xds_scope,
    };
    ambit_node::app::run(config)?;
    Ok(ExitCode::SUCCESS)
}

/// `node` or `all`.
fn parse_scope(text: &str) -> Result<XdsScope, String> {
    match text {
        "node" => Ok(XdsScope::Node),
        "all" => Ok(XdsScope::All),
        other => Err(format!("{other:?} is not a scope: use node or all")),
    }
}

/// Half the cores this process may run on, clamped to 1..=2: the proxy shares the node with its workloads, and on a
/// small machine one thread per proxy avoids cross-thread wake-ups on every hop.
fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / 2).clamp(1, 2)
}

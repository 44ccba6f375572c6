//! `ambit node`: runs the node proxy of one node until SIGTERM. On a local cluster every path and address defaults
//! from the cluster's layout; each can be given explicitly to run it elsewhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ambit_node::app::zds::DEFAULT_CLUSTER_ID;
use ambit_node::app::{DEFAULT_ROOT_NAMESPACE, NodeConfig, StateSource, XdsScope};
use ambit_types::TrustDomain;

use super::control::parse_trust_domain;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    action: Option<NodeAction>,
    /// The node this proxy serves.
    #[arg(long, required = true)]
    node: Option<String>,
    /// Read workloads, services and policies from this state file instead of the control plane's xDS stream.
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// The control plane's xDS address, host:port (default: the CA's address).
    #[arg(long, value_name = "HOST:PORT")]
    xds_address: Option<String>,
    /// Read the enrolled pods of this node and their network namespaces from this file instead of the node agent.
    /// Not read with --zds-socket.
    #[arg(long, value_name = "FILE")]
    enrollment_file: Option<PathBuf>,
    /// Take the pods to serve, and their network namespaces, from the node agent's ZDS socket (default: the
    /// cluster's socket for the node, unless --enrollment-file is given).
    #[arg(long, value_name = "PATH")]
    zds_socket: Option<PathBuf>,
    /// The cluster id of the pods' workload uids (`<cluster-id>//Pod/<namespace>/<name>`), as the control plane
    /// names them; matches the pods the node agent hands over with their workloads.
    #[arg(long, default_value = DEFAULT_CLUSTER_ID, value_name = "ID")]
    cluster_id: String,
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
    /// How long the connections of a pod no longer served (removed by the agent or from the enrollment file) may
    /// finish before they are closed, e.g. 5s.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = ambit_apps::load::parse_duration)]
    drain_grace: Duration,
    /// After SIGTERM, SIGINT or /quitquitquit, how long established connections may finish before they are closed,
    /// e.g. 30s; 0 closes them at once (default: no limit, they run until they end).
    #[arg(long, value_name = "DURATION", value_parser = ambit_apps::load::parse_duration)]
    drain_deadline: Option<Duration>,
    /// Create this file (holding the PID) once the proxy is first ready; `ambit node upgrade` starts the new
    /// instance with it, since the readiness port answers for either instance while both run.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
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

#[derive(clap::Subcommand, Debug)]
enum NodeAction {
    /// Replace a node's proxy on the running local cluster without dropping a connection: a new instance starts
    /// beside the old one and takes over the pods; the old one stops accepting and serves its established
    /// connections until they end.
    Upgrade(UpgradeArgs),
}

#[derive(clap::Args, Debug)]
struct UpgradeArgs {
    /// The node whose proxy to upgrade.
    #[arg(long)]
    node: String,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(NodeAction::Upgrade(upgrade)) => run_upgrade(upgrade),
        None => run_proxy(args),
    }
}

/// `ambit node upgrade`: asks the cluster's supervisor for the upgrade and reports the two instances.
fn run_upgrade(args: UpgradeArgs) -> anyhow::Result<ExitCode> {
    use ambit_cluster::upgrade::{RESULT_WAIT, upgrade_node};
    let layout = args.cluster.resolve()?;
    let plan = super::load_plan(&layout)?;
    let nodes: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    let outcome = upgrade_node(&layout, &nodes, &args.node, RESULT_WAIT)?;
    let pid = |pid: Option<u32>| pid.map_or("?".to_string(), |p| p.to_string());
    println!(
        "node/{} upgraded: new proxy pid {} serves; old pid {} drains its connections",
        args.node,
        pid(outcome.new_pid),
        pid(outcome.old_pid)
    );
    Ok(ExitCode::SUCCESS)
}

fn run_proxy(args: NodeArgs) -> anyhow::Result<ExitCode> {
    super::allocator::reexec_with("node", &[super::allocator::LAZY_ARENA_COMMIT]);
    let node = args.node.clone().ok_or_else(|| anyhow::anyhow!("--node is required"))?;
    let explicit = (args.enrollment_file.is_some() || args.zds_socket.is_some())
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
            plan.nodes.iter().any(|n| n.name == node),
            "cluster {} has no node {}",
            plan.name,
            node
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
        enrollment_file: args.enrollment_file.clone().unwrap_or_default(),
        // On a local cluster the node agent's socket, unless an enrollment file was named instead.
        zds_socket: args.zds_socket.or_else(|| {
            let from_layout = cluster.as_ref().map(|(layout, _)| layout.zds_socket(&node));
            from_layout.filter(|_| args.enrollment_file.is_none())
        }),
        cluster_id: args.cluster_id,
        ca_address,
        ca_root: args
            .ca_root
            .unwrap_or_else(|| from_cluster(&|layout, _| layout.ca_dir().join("root-cert.pem"))),
        token_file: args
            .token_file
            .unwrap_or_else(|| from_cluster(&|layout, _| layout.node_token_file(&node))),
        node,
        poll_interval: args.poll_interval,
        trust_domain: args.trust_domain,
        root_namespace: args.root_namespace,
        admin_address: args.admin_address,
        metrics_address: args.metrics_address,
        readiness_address: args.readiness_address,
        drain_grace: args.drain_grace,
        drain_deadline: args.drain_deadline,
        ready_file: args.ready_file,
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

//! `ambit waypoint`: runs a waypoint (the L7 proxy of a Gateway of class `istio-waypoint`) until SIGTERM. On a
//! local cluster, where it runs as the Gateway's pod, the control plane's address, the trust bundle and the node's
//! credential come from the cluster's layout and the pod's environment; each can be given explicitly.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use ambit_node::app::DEFAULT_ROOT_NAMESPACE;
use ambit_types::TrustDomain;
use ambit_waypoint::app::WaypointConfig;
use anyhow::Context;

use super::control::parse_trust_domain;

#[derive(clap::Args, Debug)]
pub struct WaypointArgs {
    /// The waypoint's Gateway (class istio-waypoint).
    #[arg(long, env = "AMBIT_WAYPOINT_GATEWAY")]
    gateway: String,
    /// The Gateway's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The service account whose identity the waypoint presents (default: the Gateway's name, as istiod names it).
    #[arg(long, env = "POD_SERVICE_ACCOUNT")]
    service_account: Option<String>,
    /// The node the waypoint runs on; its credential gets the waypoint's certificate.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// The waypoint pod's IP.
    #[arg(long, env = "POD_IP")]
    pod_ip: Option<IpAddr>,
    /// The control plane (CA and xDS), host:port (default: the cluster's control plane on port 15012).
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
    /// Policies in this namespace targeting the istio-waypoint GatewayClass apply to every waypoint.
    #[arg(long, default_value = DEFAULT_ROOT_NAMESPACE, value_name = "NS")]
    root_namespace: String,
    /// The HBONE listener.
    #[arg(long, default_value = "0.0.0.0:15008", value_name = "ADDR")]
    listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:15000", value_name = "ADDR")]
    admin_address: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15020", value_name = "ADDR")]
    metrics_address: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15021", value_name = "ADDR")]
    readiness_address: SocketAddr,
    /// Runtime worker threads [default: half the cores, 1 or 2].
    #[arg(long, env = "AMBIT_WAYPOINT_WORKERS")]
    workers: Option<usize>,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

pub fn run(args: WaypointArgs) -> anyhow::Result<ExitCode> {
    super::allocator::reexec_with("waypoint", &[super::allocator::LAZY_ARENA_COMMIT]);
    let explicit = args.ca_address.is_some() && args.ca_root.is_some() && args.token_file.is_some();
    let cluster = if explicit {
        None
    } else {
        let layout = args.cluster.resolve()?;
        let plan = super::load_plan(&layout)?;
        Some((layout, plan))
    };
    let ca_address = match (args.ca_address, &cluster) {
        (Some(address), _) => address,
        (None, Some((_, plan))) => format!("{}:15012", plan.control_address),
        (None, None) => anyhow::bail!("--ca-address is required outside a local cluster"),
    };
    let ca_root = args
        .ca_root
        .or_else(|| {
            cluster
                .as_ref()
                .map(|(layout, _)| layout.ca_dir().join("root-cert.pem"))
        })
        .context("--ca-root is required outside a local cluster")?;
    let token_file = args
        .token_file
        .or_else(|| cluster.as_ref().map(|(layout, _)| layout.node_token_file(&args.node)))
        .context("--token-file is required outside a local cluster")?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let config = WaypointConfig {
        service_account: args.service_account.unwrap_or_else(|| args.gateway.clone()),
        namespace: args.namespace,
        gateway: args.gateway,
        node: args.node,
        pod_ip: args.pod_ip,
        trust_domain: args.trust_domain,
        root_namespace: args.root_namespace,
        ca_address,
        ca_root,
        token_file,
        listen: args.listen,
        admin_address: args.admin_address,
        metrics_address: args.metrics_address,
        readiness_address: args.readiness_address,
        worker_threads: args.workers.unwrap_or((cores / 2).clamp(1, 2)),
    };
    ambit_waypoint::app::run(config)?;
    Ok(ExitCode::SUCCESS)
}

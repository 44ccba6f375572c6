//! `ambit control`: runs the control plane (the CA, the config store and its API, workload xDS) until SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ambit_control::ControlConfig;
use ambit_control::ca::auth::PodPlacement;
use ambit_control::config::{DEFAULT_CA_DIR, DEFAULT_CLUSTER_DOMAIN, DEFAULT_LISTEN, DEFAULT_TRUST_DOMAIN};
use ambit_types::TrustDomain;
use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct ControlArgs {
    /// Address of the CA's TLS gRPC endpoint.
    #[arg(long, default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The self-signed root CA (made on first start) and the ledger of issued certificates.
    #[arg(long, default_value = DEFAULT_CA_DIR, value_name = "DIR")]
    ca_dir: PathBuf,
    /// Plug-in CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem).
    #[arg(long, value_name = "DIR")]
    cacerts: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN, value_name = "TD", value_parser = parse_trust_domain)]
    trust_domain: TrustDomain,
    /// Longest certificate validity a node proxy may ask for (default: the CA's, 7 days), e.g. 48h.
    #[arg(long, value_name = "DURATION", value_parser = ambit_apps::load::parse_duration)]
    max_ttl: Option<Duration>,
    /// JSON object of node name to bearer token (default: node-credentials.json beside the plan).
    #[arg(long, value_name = "FILE")]
    node_credentials: Option<PathBuf>,
    /// The cluster plan whose pods say which identities each node may ask for (default: the running cluster's).
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// The cluster source: a v1 List of Namespaces, ServiceAccounts, Pods and Services, followed as it is rewritten
    /// (default: the running cluster's objects.json, when --plan is not given).
    #[arg(long, value_name = "FILE")]
    objects_file: Option<PathBuf>,
    /// Where applied config persists (default: the running cluster's config-store.json, when --plan is not given;
    /// else kept in memory only).
    #[arg(long, value_name = "FILE")]
    config_store: Option<PathBuf>,
    /// The config API socket for `ambit apply/delete/get/describe` (default: the running cluster's control.sock,
    /// when --plan is not given).
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// The DNS suffix of Service hostnames.
    #[arg(long, default_value = DEFAULT_CLUSTER_DOMAIN, value_name = "DOMAIN")]
    cluster_domain: String,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

pub fn parse_trust_domain(s: &str) -> Result<TrustDomain, String> {
    TrustDomain::new(s).map_err(|e| e.to_string())
}

pub fn run(mut args: ControlArgs) -> anyhow::Result<ExitCode> {
    // The control plane's memory comes and goes in bursts on many threads (a rewrite of the cluster source, the
    // initial sync of every stream): tens of MiB would sit idle under mimalloc's purge delay (ARCHITECTURE.md,
    // "Performance").
    super::allocator::reexec_with(
        "control",
        &[super::allocator::PROMPT_PURGE, super::allocator::LAZY_ARENA_COMMIT],
    );
    // By default, the running local cluster's plan, credentials, objects, config store and API socket.
    let (plan, node_credentials) = match (args.plan.clone(), args.node_credentials.clone()) {
        (Some(plan), Some(credentials)) => (plan, credentials),
        (plan, credentials) => {
            let layout = args.cluster.resolve()?;
            let (objects, store, socket) = (
                layout.objects_file(),
                layout.config_store_file(),
                layout.control_socket(),
            );
            args.objects_file.get_or_insert(objects);
            args.config_store.get_or_insert(store);
            args.api_socket.get_or_insert(socket);
            (
                plan.unwrap_or_else(|| layout.plan_file()),
                credentials.unwrap_or_else(|| layout.node_credentials_file()),
            )
        }
    };
    let config = ControlConfig {
        listen: args.listen,
        ca_dir: args.ca_dir,
        cacerts: args.cacerts,
        trust_domain: args.trust_domain,
        max_ttl: args.max_ttl,
        node_credentials,
        pods: pod_placements(&plan)?,
        objects_file: args.objects_file,
        config_store: args.config_store,
        api_socket: args.api_socket,
        cluster_domain: args.cluster_domain,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(ambit_control::run(config))?;
    Ok(ExitCode::SUCCESS)
}

/// Where each pod of the plan runs, and as which service account.
fn pod_placements(plan_file: &Path) -> anyhow::Result<Vec<PodPlacement>> {
    let bytes = std::fs::read(plan_file).with_context(|| format!("cannot read the plan {}", plan_file.display()))?;
    let plan: ambit_cluster::model::ClusterPlan =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a cluster plan", plan_file.display()))?;
    let pods = plan.pods.into_iter().map(|pod| PodPlacement {
        node: pod.node,
        namespace: pod.namespace,
        service_account: pod.service_account,
    });
    Ok(pods.collect())
}

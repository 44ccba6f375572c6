//! Command-line parsing and dispatch: one module per subcommand.

mod agent;
mod allocator;
mod api;
mod app;
mod apply;
mod ca;
mod cluster;
mod control;
mod describe;
mod exec;
mod get;
mod label;
mod logs;
mod logsink;
mod node;
mod proxy_config;
mod waypoint;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// ambit: a sidecarless service mesh, and the local cluster to try it on.
#[derive(Parser, Debug)]
#[command(name = "ambit", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "AMBIT_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, remove and list local clusters.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Show nodes, pods or services of a local cluster, or the objects its control plane holds (policies, Gateway
    /// API routes, namespaces, service accounts).
    Get(get::GetArgs),
    /// Apply manifests (AuthorizationPolicy, PeerAuthentication, Gateway, HTTPRoute, GRPCRoute) to the control
    /// plane as one batch: all or none.
    Apply(apply::ApplyArgs),
    /// Delete the objects that manifests name from the control plane, as one batch: all or none.
    Delete(apply::DeleteArgs),
    /// Set (key=value) or remove (key-) labels of a pod or namespace.
    Label(label::LabelArgs),
    /// Set (key=value) or remove (key-) annotations of a pod or namespace.
    Annotate(label::LabelArgs),
    /// Show a pod as the mesh sees it, and what its node proxy decides about a sample connection.
    #[command(subcommand)]
    Describe(describe::DescribeCommand),
    /// Run a command inside a pod's network namespace, with the pod's environment.
    Exec(exec::ExecArgs),
    /// Print a container's log.
    Logs(logs::LogsArgs),
    /// Sample workloads: the echo server and the load generator.
    #[command(subcommand)]
    App(app::AppCommand),
    /// Run the control plane (for now the CA service) until SIGTERM.
    Control(control::ControlArgs),
    /// Run the node proxy of one node until SIGTERM.
    Node(Box<node::NodeArgs>),
    /// Run the node agent of one node until SIGTERM: enrolls its pods (capture, node proxy, annotation).
    Agent(agent::AgentArgs),
    /// Run a waypoint (the L7 proxy of a Gateway of class istio-waypoint) until SIGTERM.
    Waypoint(Box<waypoint::WaypointArgs>),
    /// Show what one node proxy holds: workloads, services, policies, certificates or pod proxies.
    ProxyConfig(proxy_config::ProxyConfigArgs),
    /// The mesh CA: print the trust bundle, issue a certificate directly, check issued certificates.
    #[command(subcommand)]
    Ca(ca::CaCommand),
}

/// Which local cluster a command talks to.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterSelector {
    /// The cluster's name; needed only when several clusters run.
    #[arg(long, env = "AMBIT_CLUSTER")]
    pub cluster: Option<String>,
}

impl ClusterSelector {
    /// The named cluster, or the only one running.
    pub fn resolve(&self) -> anyhow::Result<ambit_cluster::layout::Layout> {
        use ambit_cluster::layout::{Layout, clusters};
        if let Some(name) = &self.cluster {
            return Ok(Layout::new(name));
        }
        match clusters().as_slice() {
            [] => anyhow::bail!("no local cluster is running; start one with `ambit cluster up -f FILE`"),
            [one] => Ok(Layout::new(one)),
            many => anyhow::bail!("several clusters run ({}); choose one with --cluster", many.join(", ")),
        }
    }
}

/// The plan of a running cluster.
pub fn load_plan(layout: &ambit_cluster::layout::Layout) -> anyhow::Result<ambit_cluster::model::ClusterPlan> {
    use anyhow::Context;
    let bytes =
        std::fs::read(layout.plan_file()).with_context(|| format!("cluster {} has no plan", layout.cluster()))?;
    serde_json::from_slice(&bytes).context("the cluster's plan.json is not readable")
}

/// A pod and one of its containers: the named one, or the first.
pub fn find_container<'a>(
    plan: &'a ambit_cluster::model::ClusterPlan,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> anyhow::Result<(
    &'a ambit_cluster::model::PodPlan,
    &'a ambit_cluster::model::ContainerPlan,
)> {
    use anyhow::Context;
    let pod = plan
        .pod(namespace, pod)
        .with_context(|| format!("pod {namespace}/{pod} not found in cluster {}", plan.name))?;
    let found = match container {
        Some(name) => pod.containers.iter().find(|c| c.name == name),
        None => pod.containers.first(),
    };
    let container = found.with_context(|| format!("pod {} has no container {}", pod.name, container.unwrap_or("")))?;
    Ok((pod, container))
}

/// Installs the log subscriber: stderr through [`logsink::LogSink`] (buffered, flushed every 100 ms by a thread of
/// its own), text or JSON, filtered by `AMBIT_LOG` (default `info`). Keep the guard until the process ends: dropping it
/// flushes what is left.
pub fn init_tracing(format: LogFormat) -> logsink::FlushGuard<std::io::Stderr> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AMBIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (sink, guard) = logsink::LogSink::stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || sink.clone())
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::Get(args) => get::run(args),
        Command::Apply(args) => apply::run_apply(args),
        Command::Delete(args) => apply::run_delete(args),
        Command::Label(args) => label::run(args, label::Field::Labels),
        Command::Annotate(args) => label::run(args, label::Field::Annotations),
        Command::Describe(cmd) => describe::run(cmd),
        Command::Exec(args) => exec::run(args),
        Command::Logs(args) => logs::run(args),
        Command::App(cmd) => app::run(cmd),
        Command::Control(args) => control::run(args),
        Command::Node(args) => node::run(*args),
        Command::Agent(args) => agent::run(args),
        Command::Waypoint(args) => waypoint::run(*args),
        Command::ProxyConfig(args) => proxy_config::run(args),
        Command::Ca(cmd) => ca::run(cmd),
    }
}

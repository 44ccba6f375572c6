//! `ambit agent`: runs the node agent of one node until SIGTERM or SIGINT. It enrolls the node's pods in the mesh
//! (capture, hand-over to the node proxy over ZDS, the redirection annotation) and keeps checking them. Stopping it
//! leaves every pod as it is: the next agent takes over without disturbing traffic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ambit_agent::{Agent, AgentConfig, CaptureConfig, Host, HostNamespaces, NftCapture, POLL_WAIT};
use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The node whose pods this agent serves.
    #[arg(long)]
    node: String,
    /// The control plane's API socket (`ambit control --api-socket`).
    #[arg(long, value_name = "PATH")]
    control_socket: PathBuf,
    /// Where to serve ZDS to the node proxy (`ambit node --zds-socket`).
    #[arg(long, value_name = "PATH")]
    zds_socket: PathBuf,
    /// Look for pods' network namespaces in this directory (e.g. /run/netns); without it, every process's
    /// namespace is looked at (capture then needs the namespace to also have a name under /run/netns).
    #[arg(long, value_name = "DIR")]
    netns_dir: Option<PathBuf>,
    /// Only the namespaces in --netns-dir whose names start with this.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    netns_prefix: String,
    /// Serve /metrics and /healthz/ready on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_address: Option<SocketAddr>,
    /// How often every enrolled pod's capture and node proxy listeners are checked, e.g. 1s.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = ambit_apps::load::parse_duration)]
    check_interval: Duration,
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    super::allocator::reexec_with("agent", &[super::allocator::LAZY_ARENA_COMMIT]);
    anyhow::ensure!(!args.check_interval.is_zero(), "--check-interval must be above zero");
    let capture = CaptureConfig::default();
    let config = AgentConfig {
        node: args.node,
        control_socket: args.control_socket,
        zds_socket: args.zds_socket,
        metrics_address: args.metrics_address,
        check_interval: args.check_interval,
        poll_wait: POLL_WAIT,
        listener_ports: vec![capture.outbound_port, capture.inbound_port, capture.hbone_port],
    };
    let host = Host {
        namespaces: Arc::new(HostNamespaces::new(args.netns_dir, args.netns_prefix)),
        capture: Arc::new(NftCapture::new(capture)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let agent = Agent::bind(config, host).await?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        tokio::select! {
            end = agent.run() => match end {
                Err(error) => Err(anyhow::Error::new(error)),
                Ok(never) => match never {},
            },
            _ = terminate.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })?;
    tracing::info!("node agent stopped; pods keep their capture");
    Ok(ExitCode::SUCCESS)
}

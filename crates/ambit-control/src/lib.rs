//! The control plane: the CA service and workload xDS (and later the config store).
//!
//! [`run`] serves, over one TLS gRPC server on port 15012, Istio's `IstioCertificateService` (node proxies
//! authenticate with their node's bearer token and obtain certificates for the identities of the pods on their node)
//! and Envoy's delta ADS carrying the workload API (the same token; see [`xds`]).

pub mod ca;
pub mod config;
pub mod server;
pub mod sources;
pub mod xds;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::ca::auth::{NodeCredentials, StaticNodeIndex};
use crate::ca::ledger::Ledger;
use crate::ca::service::CaService;
pub use crate::config::ControlConfig;
use crate::server::Services;
use crate::xds::{AdsService, ResourceStore};

/// How often the state file is checked for rewrites.
const STATE_POLL: Duration = Duration::from_millis(100);

/// After SIGTERM, how long open requests may take before the process exits anyway.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs the control plane until SIGTERM or SIGINT.
pub async fn run(config: ControlConfig) -> anyhow::Result<()> {
    let ca = ca::open_ca(&config.ca_dir, config.cacerts.as_deref(), config.ca_config())?;
    let ca = Arc::new(ca);
    let ledger = Arc::new(Ledger::open(&config.ca_dir)?);
    let credentials = NodeCredentials::load(&config.node_credentials)?;
    let index = StaticNodeIndex::new(&config.trust_domain, &config.pods).context("cannot index the pods by node")?;
    let service = CaService::new(ca.clone(), credentials.clone(), index, ledger);
    // Fed by the state file when one is given (the local cluster's); Kubernetes and `ambit apply` come later.
    let store = ResourceStore::new();
    if let Some(path) = config.state_file.clone() {
        tokio::spawn(sources::follow_state_file(path, STATE_POLL, store.clone()));
    }
    let services = Services::new(service).with_ads(AdsService::new(&store, credentials));
    let tls = server::serving_tls(ca.clone())?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let identity = ca::control_identity(&config.trust_domain);
    tracing::info!(listen = %config.listen, %identity, pods = config.pods.len(), "control plane serving the CA and xDS");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server::serve(listener, tls, services, async {
        let _ = stopped.await;
    });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return Ok(result?),
        signal = shutdown_signal() => tracing::info!(signal = signal?, "shutting down"),
    }
    let _ = stop.send(());
    match tokio::time::timeout(DRAIN, server).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!(after = ?DRAIN, "requests still open; exiting");
            Ok(())
        }
    }
}

/// Waits for SIGTERM or SIGINT; returns the signal's name.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

//! The control plane: the CA service, the config store and workload xDS.
//!
//! [`run`] serves, over one TLS gRPC server on port 15012, Istio's `IstioCertificateService` (node proxies
//! authenticate with their node's bearer token and obtain certificates for the identities of the pods on their node)
//! and Envoy's delta ADS carrying the workload API (the same token; see [`xds`]). The workload API is translated
//! ([`translate`]) from the [`config_store`]: the cluster's objects (from a source, [`sources`]) and the config users
//! apply through the [`api`] socket.

pub mod api;
pub mod ca;
pub mod config;
pub mod config_store;
pub mod describe;
pub mod server;
pub mod sources;
pub mod translate;
pub mod xds;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::ca::auth::{NodeCredentials, NodeIndex, StaticNodeIndex};
use crate::ca::ledger::Ledger;
use crate::ca::service::CaService;
pub use crate::config::ControlConfig;
use crate::config_store::ConfigStore;
use crate::server::Services;
use crate::xds::{AdsService, ResourceStore};

/// How often the objects file is checked for rewrites.
const OBJECTS_POLL: Duration = Duration::from_millis(100);

/// After SIGTERM, how long open requests may take before the process exits anyway.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs the control plane until SIGTERM or SIGINT.
pub async fn run(config: ControlConfig) -> anyhow::Result<()> {
    let ca = ca::open_ca(&config.ca_dir, config.cacerts.as_deref(), config.ca_config())?;
    let ca = Arc::new(ca);
    let ledger = Arc::new(Ledger::open(&config.ca_dir)?);
    let credentials = NodeCredentials::load(&config.node_credentials)?;
    let resources = ResourceStore::new();
    let store = ConfigStore::new(
        resources.clone(),
        config.config_store.clone(),
        config.translate_settings(),
        config.trust_domain.clone(),
    );
    let (first_objects, objects_loaded) = tokio::sync::oneshot::channel();
    match config.objects_file.clone() {
        Some(path) => drop(tokio::spawn(sources::follow_objects_file(
            path,
            OBJECTS_POLL,
            store.clone(),
            Some(first_objects),
        ))),
        None => drop(first_objects.send(())),
    }
    // A node may ask for the identities of its pods: those of the plan (`--plan`) and those the cluster source
    // lists, which follow the cluster as it changes.
    let planned = StaticNodeIndex::new(&config.trust_domain, &config.pods).context("cannot index the pods by node")?;
    let index = EitherIndex(planned, store.pod_index());
    let service = CaService::new(ca.clone(), credentials.clone(), index, ledger);
    let loader = load_and_serve_api(store, objects_loaded, config.api_socket.clone());
    let services = Services::new(service).with_ads(AdsService::new(&resources, credentials));
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
    tokio::pin!(loader);
    tokio::select! {
        result = &mut server => return Ok(result?),
        result = &mut loader => return result,
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

/// Allows what either index allows.
struct EitherIndex<A, B>(A, B);

impl<A: NodeIndex, B: NodeIndex> NodeIndex for EitherIndex<A, B> {
    fn allows(&self, node: &str, identity: &ambit_types::Identity) -> bool {
        self.0.allows(node, identity) || self.1.allows(node, identity)
    }
}

/// Once the cluster source delivered its first objects: restores the persisted config (which starts publishing to
/// the xDS streams), then serves the config API until the process ends. Returns only on failure.
async fn load_and_serve_api(
    store: ConfigStore,
    objects_loaded: tokio::sync::oneshot::Receiver<()>,
    api_socket: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    // A sender dropped without sending means the source task ended: nothing will ever load.
    objects_loaded
        .await
        .context("the cluster source stopped before delivering any object")?;
    let restored = store.restore()?;
    tracing::info!(objects = restored, "config store restored; publishing");
    let Some(path) = api_socket else {
        return std::future::pending().await;
    };
    let listener = api::bind(&path)?;
    tracing::info!(socket = %path.display(), "config API serving");
    api::serve(listener, path, store).await;
    anyhow::bail!("the config API stopped")
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

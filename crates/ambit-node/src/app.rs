//! The node proxy process (`ambit node`): wires the state source, the certificate manager, the per-pod proxies and
//! the admin endpoints together, and runs until SIGTERM, SIGINT or `POST /quitquitquit`.
//!
//! Threads: the data plane runs on a multi-threaded tokio runtime (`worker_threads`, 2 by default, as ztunnel);
//! the admin, metrics and readiness servers run on their own single-threaded runtime, so a scrape never competes
//! with traffic. Each enrolled pod gets a pod proxy holding its three in-pod listeners ([`pods`]). The pods come from
//! the node agent over ZDS ([`zds`], with `zds_socket`), else from the enrollment file ([`enrollment`]).
//!
//! Shutdown and upgrade (ambient §7.2, §7.3), on SIGTERM, SIGINT or `POST /quitquitquit`: readiness turns false, the
//! ZDS connection closes (the agent then talks only to the newer proxy), the admin, metrics and readiness listeners
//! close (the newer proxy, bound beside on the same ports with SO_REUSEPORT, alone answers them), every in-pod
//! listener stops accepting, inbound HBONE connections get GOAWAY, and established connections keep running until
//! they end or the drain deadline (`drain_deadline`; none by default), when what is left is closed. A second SIGTERM
//! or SIGINT closes what is left at once. Then the process exits.

pub mod ca;
pub mod dump;
pub mod enrollment;
pub mod pods;
pub mod state_gauges;
#[cfg(test)]
pub(crate) mod test_support;
pub mod zds;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ambit_identity::cert::TrustBundle;
use ambit_identity::manager::{CertificateManager, ManagerConfig, SystemClock};
use ambit_telemetry::Metrics;
use ambit_telemetry::prometheus_client::registry::Registry;
use ambit_types::TrustDomain;
use anyhow::Context;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::{AdminState, serve_admin, serve_metrics, serve_readiness};
use crate::app::pods::ListenerPorts;
use crate::state::source::watch_file;
pub use ambit_xds::delta::XdsScope;
use ambit_xds::delta::{ConnectionState, Transport, XdsClient, XdsConfig, XdsHandle};

/// Istio's root namespace: policies there apply mesh-wide.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// The drain deadline that never comes in practice (tokio's own "far future"): connections run until they end.
const UNLIMITED_DRAIN: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Everything `ambit node` is told.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node this proxy serves (its pods' certificates are the only ones the CA gives it).
    pub node: String,
    /// Where workloads, services and policies come from.
    pub state: StateSource,
    /// The enrolled pods of this node and their network namespaces (see [`enrollment`]); not read with
    /// `zds_socket`.
    pub enrollment_file: PathBuf,
    /// The node agent's ZDS socket: when set, the pods to serve and their namespaces come from the agent.
    pub zds_socket: Option<PathBuf>,
    /// The cluster id of the workload uids of the pods the agent hands over (`<cluster-id>//Pod/<ns>/<name>`).
    pub cluster_id: String,
    /// How often the two files are checked for changes.
    pub poll_interval: Duration,
    /// The CA's `host:port`.
    pub ca_address: String,
    /// The mesh's trust bundle (PEM): the CA and peers are verified against it.
    pub ca_root: PathBuf,
    /// The node's bearer token for the CA.
    pub token_file: PathBuf,
    pub trust_domain: TrustDomain,
    pub root_namespace: String,
    /// Admin endpoints (`/config_dump`, `/quitquitquit`, ...): localhost only.
    pub admin_address: SocketAddr,
    pub metrics_address: SocketAddr,
    pub readiness_address: SocketAddr,
    /// How long a removed pod's connections may finish before they are closed.
    pub drain_grace: Duration,
    /// How long established connections may finish after shutdown starts before they are closed; `None`: until they
    /// end.
    pub drain_deadline: Option<Duration>,
    /// Created (holding the PID) once the proxy is first ready: how an upgrade knows the new instance serves.
    pub ready_file: Option<PathBuf>,
    /// Data-plane worker threads.
    pub worker_threads: usize,
    /// Which addresses to ask the control plane for (xDS only): [`XdsScope::Node`] holds the node's workloads and
    /// every service, and looks up the rest as connections need it.
    pub xds_scope: XdsScope,
}

/// The source of the node proxy's state.
#[derive(Clone, Debug)]
pub enum StateSource {
    /// The control plane's delta xDS stream at `host:port` (TLS, the CA's trust bundle and the node's token).
    Xds { address: String },
    /// A state file in the workload API's shape, polled for rewrites (see `state::source`).
    File(PathBuf),
}

/// What every pod proxy of the node shares.
#[derive(Clone)]
pub struct NodeContext {
    pub snapshot: watch::Receiver<Arc<crate::state::Snapshot>>,
    pub certificates: CertificateManager,
    pub bundle: watch::Receiver<TrustBundle>,
    pub metrics: Metrics,
    pub root_namespace: String,
    pub drain_grace: Duration,
    /// On-demand address lookups, in the xDS node scope.
    pub lookups: Option<crate::state::xds::Lookups>,
}

/// The mesh trust bundle (PEM) and the node's bearer token for the control plane, read from their files; an
/// unreadable or empty one is an error naming the file. Shared by the node proxy and the waypoint.
pub fn load_credentials(
    ca_root: &std::path::Path,
    token_file: &std::path::Path,
) -> anyhow::Result<(TrustBundle, String)> {
    let bundle_pem = std::fs::read_to_string(ca_root)
        .with_context(|| format!("cannot read the trust bundle {}", ca_root.display()))?;
    let bundle = TrustBundle::from_pem(&bundle_pem)
        .with_context(|| format!("{} is not a PEM trust bundle", ca_root.display()))?;
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("cannot read the node token {}", token_file.display()))?;
    let token = token.trim().to_string();
    anyhow::ensure!(!token.is_empty(), "the node token {} is empty", token_file.display());
    Ok((bundle, token))
}

/// Runs the node proxy until it is asked to stop, then drains. Blocks the calling thread.
pub fn run(config: NodeConfig) -> anyhow::Result<()> {
    raise_file_limit();
    let (bundle, token) = load_credentials(&config.ca_root, &config.token_file)?;

    // SO_REUSEPORT: during an upgrade the new proxy binds the same ports beside this one.
    let bind = |addr: SocketAddr, what: &str| -> anyhow::Result<std::net::TcpListener> {
        let options = ambit_netns::ListenOptions {
            reuse_port: true,
            ..ambit_netns::ListenOptions::default()
        };
        ambit_netns::listen(addr, options).with_context(|| format!("cannot listen on {addr} ({what})"))
    };
    let admin_listener = bind(config.admin_address, "admin")?;
    let metrics_listener = bind(config.metrics_address, "metrics")?;
    let readiness_listener = bind(config.readiness_address, "readiness")?;

    let dataplane = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads.max(1))
        .thread_name("ambit-dataplane")
        .enable_all()
        .build()
        .context("cannot start the data-plane runtime")?;

    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let manager_metrics = pods::ManagerMetrics::register(&mut registry);
    let state_gauges = state_gauges::StateGauges::register(&mut registry);
    let registry = Arc::new(registry);

    let (ready_tx, ready_rx) = watch::channel(false);
    let (quit_tx, quit_rx) = watch::channel(false);
    // The endpoints stop when draining starts; the xDS client (on the same thread) when the process exits.
    let (stop_http_tx, stop_http_rx) = watch::channel(false);
    let (stop_admin_tx, stop_admin_rx) = watch::channel(false);

    // The certificate manager and the CA channel spawn their tasks on the runtime they are created in.
    let _entered = dataplane.enter();
    let source = ca::LazyCaClient::new(
        config.ca_address.clone(),
        bundle.clone(),
        token.clone(),
        &config.trust_domain,
    );
    let certificates = CertificateManager::new(Arc::new(source), Arc::new(SystemClock), ManagerConfig::default());
    let mut xds_client = None;
    let mut lookups = None;
    let (snapshot, state_task) = match &config.state {
        StateSource::File(path) => {
            let (snapshot, task) = dataplane
                .block_on(watch_file(path.clone(), config.poll_interval))
                .context("cannot load the mesh state")?;
            (snapshot, Some(task))
        }
        StateSource::Xds { address } => {
            let (addresses, authorizations, snapshot) = crate::state::xds::handlers();
            let xds = XdsConfig {
                address: address.clone(),
                transport: Transport::Tls {
                    bundle: bundle.clone(),
                    server: ambit_xds::ca::control_identity(&config.trust_domain),
                },
                token: token.clone(),
                node_name: config.node.clone(),
                node_ip: None,
                on_demand: Vec::new(),
            };
            // The handler answers lookups; the client, built around it, sends them.
            let handle = Arc::new(std::sync::OnceLock::<XdsHandle>::new());
            if config.xds_scope == XdsScope::Node {
                let handle = Arc::clone(&handle);
                lookups = Some(addresses.lookups(move |key| {
                    let sent = handle
                        .get()
                        .map(|h| h.subscribe(ambit_api::WORKLOAD_ADDRESS_TYPE_URL, vec![key]));
                    if !matches!(sent, Some(Ok(()))) {
                        warn!("the xDS client is not running; lookup not sent");
                    }
                }));
            }
            let client = XdsClient::new(xds, vec![Box::new(addresses), Box::new(authorizations)])
                .context("cannot configure the xDS client")?
                .with_scope(config.xds_scope);
            let _ = handle.set(client.handle());
            info!(scope = %config.xds_scope, "addresses from the control plane");
            xds_client = Some(client);
            (snapshot, None)
        }
    };
    let xds_state = xds_client.as_ref().map(XdsClient::state);
    let (_bundle_tx, bundle_rx) = watch::channel(bundle);
    let context = NodeContext {
        snapshot,
        certificates: certificates.clone(),
        bundle: bundle_rx,
        metrics,
        root_namespace: config.root_namespace.clone(),
        drain_grace: config.drain_grace,
        lookups,
    };
    dataplane.spawn(state_gauges.follow(context.snapshot.clone()));
    let manager = pods::PodManager::new(context.clone(), manager_metrics, ListenerPorts::default());
    let dump = Arc::new(dump::NodeDump::new(config.node.clone(), context, manager.clone()));
    let admin = AdminState::new(dump, ready_rx.clone(), quit_tx);

    let admin_thread = std::thread::Builder::new()
        .name("ambit-admin".into())
        .spawn(move || {
            let listeners = [admin_listener, metrics_listener, readiness_listener];
            let stop = AdminStop {
                http: stop_http_rx,
                xds: stop_admin_rx,
            };
            serve_admin_thread(listeners, admin, registry, ready_rx, stop, xds_client)
        })
        .context("cannot start the admin thread")?;

    info!(node = %config.node, admin = %config.admin_address, metrics = %config.metrics_address,
        readiness = %config.readiness_address, "node proxy starting");
    let result = dataplane.block_on(serve(config, manager, ready_tx, quit_rx, xds_state, stop_http_tx));
    if let Some(task) = state_task {
        task.abort();
    }
    let _ = stop_admin_tx.send(true);
    if admin_thread.join().is_err() {
        warn!("the admin thread panicked");
    }
    drop(_entered);
    dataplane.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Raises the soft limit on open files to the hard limit: each proxied connection holds two or three descriptors,
/// and each pod a few more, so the usual soft limit of 1024 would cap the node at a few hundred connections.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!(%error, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(error) => warn!(%error, "cannot read the open-file limit"),
    }
}

/// What `/healthz/ready` waits for: the mesh state (each xDS type's first response accepted), the pods in step with
/// their source (over ZDS, the first snapshot applied; from the enrollment file, every listed namespace opened), and
/// every pod proxy serving (listeners bound, certificate in hand).
pub struct Readiness {
    /// The xDS client's state; `None` with a state file.
    pub xds: Option<watch::Receiver<ConnectionState>>,
    pub pods_synced: watch::Receiver<bool>,
    pub manager: pods::PodManager,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        let state = self.xds.as_ref().is_none_or(|state| state.borrow().is_synced());
        state && *self.pods_synced.borrow() && self.manager.all_ready()
    }
}

/// Keeps the pods in step with their source (ZDS or the enrollment file) and readiness in step with the pods, until a
/// stop signal; then drains (see the module documentation).
async fn serve(
    config: NodeConfig,
    manager: pods::PodManager,
    ready: watch::Sender<bool>,
    mut quit: watch::Receiver<bool>,
    xds: Option<watch::Receiver<ConnectionState>>,
    stop_http: watch::Sender<bool>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let (pods_synced_tx, pods_synced) = watch::channel(false);
    let (zds, enrollment) = match &config.zds_socket {
        Some(path) => {
            info!(socket = %path.display(), cluster_id = %config.cluster_id, "pods from the node agent over ZDS");
            let handler = zds::ZdsHandler::new(manager.clone(), config.cluster_id.clone(), pods_synced_tx);
            let path = path.clone();
            let task = tokio::spawn(async move {
                let never = ambit_zds::connect_proxy(&path, handler).await;
                match never {}
            });
            (Some(task), None)
        }
        None => (None, Some((config.enrollment_file.clone(), pods_synced_tx))),
    };
    let readiness = Readiness {
        xds,
        pods_synced,
        manager: manager.clone(),
    };
    let mut tick = tokio::time::interval(config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = None;
    let mut ready_file = config.ready_file.clone();
    let reason = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = quit.wait_for(|quit| *quit) => break "/quitquitquit",
        }
        if let Some((file, synced)) = &enrollment {
            let error = match enrollment::EnrollmentFile::read(file) {
                Ok(pods) => {
                    let unopened = manager.reconcile(&pods);
                    synced.send_replace(unopened.is_empty());
                    (!unopened.is_empty()).then(|| unopened.join("; "))
                }
                // The pods keep their listeners: the last good enrollment stays in force.
                Err(error) => Some(format!(
                    "ignoring an invalid enrollment file: {:#}",
                    anyhow::Error::new(error)
                )),
            };
            if error.is_some() && last_error != error {
                warn!(
                    error = error.as_deref().unwrap_or_default(),
                    "enrollment not applied in full"
                );
            }
            last_error = error;
        }
        ready.send_if_modified(|ready| {
            let now = readiness.ready();
            let changed = *ready != now;
            if changed {
                info!(ready = now, pods = manager.len(), "readiness changed");
            }
            *ready = now;
            changed
        });
        if let Some(path) = ready_file.take_if(|_| *ready.borrow()) {
            write_ready_file(&path);
        }
    };
    let deadline = config
        .drain_deadline
        .map_or(UNLIMITED_DRAIN, |d| d.min(UNLIMITED_DRAIN));
    let shown = config
        .drain_deadline
        .map_or("none (until connections end)".to_string(), |d| format!("{d:?}"));
    info!(signal = reason, deadline = %shown, "draining: listeners closed, established connections finish");
    ready.send_replace(false);
    if let Some(zds) = zds {
        // Dropping the driver closes the connection: the agent then serves only the newer proxy.
        zds.abort();
    }
    stop_http.send_replace(true);
    tokio::select! {
        () = manager.drain_all(deadline) => info!("drained; exiting"),
        signal = async {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        } => warn!(signal, "second stop signal while draining; closing every connection now"),
    }
    Ok(())
}

/// Says this instance is ready by creating `path` (holding its PID): beside an older instance during an upgrade, the
/// readiness port answers for either, so whoever started this one watches the file instead.
fn write_ready_file(path: &std::path::Path) {
    match std::fs::write(path, std::process::id().to_string()) {
        Ok(()) => info!(file = %path.display(), "ready; said so in the ready file"),
        Err(error) => warn!(file = %path.display(), %error, "cannot write the ready file"),
    }
}

/// When the admin thread's parts stop: the HTTP endpoints when draining starts, the xDS client at exit.
struct AdminStop {
    http: watch::Receiver<bool>,
    xds: watch::Receiver<bool>,
}

/// The admin, metrics and readiness servers, and the xDS client when there is one, on a single-threaded runtime
/// (away from the data plane, as ztunnel), until `stop` turns true.
fn serve_admin_thread(
    [admin, metrics, readiness]: [std::net::TcpListener; 3],
    state: AdminState,
    registry: Arc<Registry>,
    ready: watch::Receiver<bool>,
    stop: AdminStop,
    xds: Option<XdsClient>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            warn!(%error, "cannot start the admin runtime; admin endpoints are off");
            return;
        }
    };
    runtime.block_on(async move {
        let stopped = |mut stop: watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let listener = |l: std::net::TcpListener| tokio::net::TcpListener::from_std(l);
        let (admin, metrics, readiness) = match (listener(admin), listener(metrics), listener(readiness)) {
            (Ok(a), Ok(m), Ok(r)) => (a, m, r),
            _ => {
                warn!("cannot register the admin listeners; admin endpoints are off");
                return;
            }
        };
        let xds = async {
            if let Some(client) = xds {
                client.run(stopped(stop.xds.clone())).await;
            }
        };
        let http = stop.http;
        tokio::join!(
            serve_admin(admin, state, stopped(http.clone())),
            serve_metrics(metrics, registry, stopped(http.clone())),
            serve_readiness(readiness, ready, stopped(http.clone())),
            xds,
        );
    });
}

#[cfg(test)]
mod tests;

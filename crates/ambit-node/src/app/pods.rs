//! The per-pod proxies of the node: for each enrolled pod, three listeners inside its network namespace (outbound
//! 15001, plaintext inbound 15006, HBONE 15008; ambient §2.4), each socket marked 0x539 with SO_REUSEPORT, and the
//! outbound proxy, plaintext inbound and HBONE server behind them.
//!
//! [`PodManager::reconcile`] starts a proxy for every pod newly listed in the enrollment file and drains the proxies
//! of pods no longer listed (or whose namespace changed). A pod is ready once its listeners are bound and its
//! certificate is available; until then its captured traffic is refused, never passed in plaintext.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ambit_hbone::drain::{self, DrainTrigger, DrainWatch};
use ambit_hbone::{HboneServer, PoolSettings, ServerSettings};
use ambit_identity::cert::{TrustBundle, WorkloadCertificate};
use ambit_identity::tls;
use ambit_netns::{ListenOptions, SocketFactory};
use ambit_telemetry::prometheus_client::metrics::counter::Counter;
use ambit_telemetry::prometheus_client::metrics::gauge::Gauge;
use ambit_telemetry::prometheus_client::registry::Registry;
use ambit_types::Identity;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use super::NodeContext;
use crate::proxy::inbound::{INBOUND_MARK, InboundHandler, PodAppConnector};
use crate::proxy::outbound::{OutboundProxy, PodDialer, SoOriginalDst};
use crate::proxy::plaintext::serve_plaintext;
use crate::state::WorkloadUid;

/// The in-pod ports (ambient §2.4).
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
pub const HBONE_PORT: u16 = 15008;
/// Sockets kept ready in each pod's namespace for its upstream connections.
const SOCKETS_READY: usize = 16;
/// Pause between attempts to bind a pod's listeners.
const BIND_RETRY: Duration = Duration::from_secs(1);

/// ztunnel's workload-manager metrics, in the root registry (no `istio_` prefix, ambient §6.1).
#[derive(Clone, Debug, Default)]
pub struct ManagerMetrics {
    active: Gauge,
    pending: Gauge,
    started: Counter,
    stopped: Counter,
}

/// The pod proxies of the node. Cheap to clone; clones share.
#[derive(Clone)]
pub struct PodManager {
    inner: Arc<ManagerInner>,
}

struct ManagerInner {
    context: NodeContext,
    metrics: ManagerMetrics,
    pods: Mutex<BTreeMap<WorkloadUid, PodProxy>>,
}

/// One pod's proxy: its drain trigger and what it reports.
struct PodProxy {
    netns: PathBuf,
    drain: DrainTrigger,
    status: Arc<Mutex<PodStatus>>,
    inbound: crate::proxy::inbound::Connections,
}

/// Where a pod proxy stands, for readiness and the config dump.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub state: PodState,
    pub identity: Option<String>,
    /// The last reason the proxy could not make progress (binding, workload unknown, certificate).
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum PodState {
    /// Binding the listeners, or waiting for the workload's certificate.
    #[default]
    Starting,
    /// Every listener is serving.
    Ready,
    /// Removed from the enrollment; connections finish until the drain deadline.
    Draining,
}

/// A pod proxy as the config dump shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDump {
    pub uid: String,
    pub netns: String,
    #[serde(flatten)]
    pub status: PodStatus,
    pub inbound_connections: usize,
}

// === impl ManagerMetrics ===

impl ManagerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "workload_manager_active_proxy_count",
            "The number of active pod proxies",
            metrics.active.clone(),
        );
        registry.register(
            "workload_manager_pending_proxy_count",
            "The number of pod proxies not yet serving",
            metrics.pending.clone(),
        );
        registry.register(
            "workload_manager_proxies_started",
            "The number of pod proxies started",
            metrics.started.clone(),
        );
        registry.register(
            "workload_manager_proxies_stopped",
            "The number of pod proxies stopped",
            metrics.stopped.clone(),
        );
        metrics
    }
}

// === impl PodManager ===

impl PodManager {
    pub fn new(context: NodeContext, metrics: ManagerMetrics) -> Self {
        let inner = ManagerInner {
            context,
            metrics,
            pods: Mutex::new(BTreeMap::new()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Starts proxies for pods in `wanted` that have none, and drains those not in it (or in another namespace).
    /// Must be called within the data-plane runtime.
    pub fn reconcile(&self, wanted: &BTreeMap<WorkloadUid, PathBuf>) {
        let mut pods = self.lock();
        let gone: Vec<WorkloadUid> = pods
            .iter()
            .filter(|(uid, pod)| wanted.get(*uid) != Some(&pod.netns))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            if let Some(pod) = pods.remove(&uid) {
                info!(pod = %uid, netns = %pod.netns.display(), "pod removed from the enrollment; draining its proxy");
                self.stop(pod, uid);
            }
        }
        for (uid, netns) in wanted {
            if !pods.contains_key(uid) {
                info!(pod = %uid, netns = %netns.display(), "starting the pod's proxy");
                let pod = self.start(uid.clone(), netns.clone());
                pods.insert(uid.clone(), pod);
            }
        }
        self.update_gauges(&pods);
    }

    /// Whether every pod proxy serves (true with no pod).
    pub fn all_ready(&self) -> bool {
        self.lock().values().all(|pod| pod.status().state == PodState::Ready)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pod proxy, for the config dump.
    pub fn dump(&self) -> Vec<PodDump> {
        let pods = self.lock();
        pods.iter()
            .map(|(uid, pod)| PodDump {
                uid: uid.to_string(),
                netns: pod.netns.display().to_string(),
                status: pod.status(),
                inbound_connections: pod.inbound.len(),
            })
            .collect()
    }

    /// Drains every pod proxy with `grace` and waits until they are done (at most `grace` and a second more).
    pub async fn drain_all(&self, grace: Duration) {
        let pods: Vec<(WorkloadUid, PodProxy)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        let mut waits = tokio::task::JoinSet::new();
        for (_, pod) in pods {
            pod.drain.start(grace);
            waits.spawn(async move { pod.drain.drained().await });
        }
        let all = async { while waits.join_next().await.is_some() {} };
        if tokio::time::timeout(grace + Duration::from_secs(1), all).await.is_err() {
            warn!("connections were still open after the drain deadline; closing them");
        }
    }

    fn start(&self, uid: WorkloadUid, netns: PathBuf) -> PodProxy {
        let (trigger, watch) = drain::channel();
        let status = Arc::new(Mutex::new(PodStatus::default()));
        let context = &self.inner.context;
        // Sockets for the pod's upstream connections, made ahead inside its namespace.
        let sockets = match SocketFactory::new(&netns, SOCKETS_READY) {
            Ok(factory) => Some(Arc::new(factory)),
            Err(error) => {
                warn!(pod = %uid, %error, "cannot prepare sockets in the pod's namespace; making each on demand");
                None
            }
        };
        let mut connector = PodAppConnector::new(netns.clone());
        connector.sockets = sockets.clone();
        let inbound = InboundHandler::new(
            uid.clone(),
            context.snapshot.clone(),
            context.root_namespace.clone(),
            Arc::clone(&context.metrics.tcp),
            connector,
        )
        .with_lookups(context.lookups.clone());
        let connections = inbound.connections().clone();
        let task = run_pod(
            context.clone(),
            uid.clone(),
            netns.clone(),
            inbound,
            sockets,
            Arc::clone(&status),
            watch,
        );
        let span = tracing::info_span!("pod", pod = %uid);
        tokio::spawn(task.instrument(span));
        self.inner.metrics.started.inc();
        PodProxy {
            netns,
            drain: trigger,
            status,
            inbound: connections,
        }
    }

    fn stop(&self, pod: PodProxy, uid: WorkloadUid) {
        pod.status.lock().unwrap_or_else(PoisonError::into_inner).state = PodState::Draining;
        let grace = self.inner.context.drain_grace;
        let metrics = self.inner.metrics.clone();
        tokio::spawn(async move {
            pod.drain.start(grace);
            let _ = tokio::time::timeout(grace + Duration::from_secs(1), pod.drain.drained()).await;
            metrics.stopped.inc();
            debug!(pod = %uid, "pod proxy stopped");
        });
    }

    fn update_gauges(&self, pods: &BTreeMap<WorkloadUid, PodProxy>) {
        let pending = pods
            .values()
            .filter(|pod| pod.status().state != PodState::Ready)
            .count();
        self.inner.metrics.active.set(pods.len() as i64);
        self.inner.metrics.pending.set(pending as i64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<WorkloadUid, PodProxy>> {
        self.inner.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a pod proxy's task records its progress.
struct StatusHandle(Arc<Mutex<PodStatus>>);

impl StatusHandle {
    fn update(&self, f: impl FnOnce(&mut PodStatus)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

// === impl PodProxy ===

impl PodProxy {
    fn status(&self) -> PodStatus {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// One pod's proxy, until its drain starts: binds the listeners (retrying), serves outbound and plaintext inbound at
/// once, and HBONE once the pod's certificate is there. Each server holds a clone of `drain` until it is done.
async fn run_pod(
    context: NodeContext,
    uid: WorkloadUid,
    netns: PathBuf,
    inbound: InboundHandler<PodAppConnector>,
    sockets: Option<Arc<SocketFactory>>,
    status: Arc<Mutex<PodStatus>>,
    drain: DrainWatch,
) {
    let set = StatusHandle(status);
    let mut signal = drain.clone();
    let listeners = loop {
        let attempt = tokio::task::spawn_blocking({
            let netns = netns.clone();
            move || bind_listeners(&netns)
        });
        let error = match attempt.await {
            Ok(Ok(listeners)) => break listeners,
            Ok(Err(error)) => format!("{error:#}"),
            Err(error) => error.to_string(),
        };
        warn!(%error, "cannot open the pod's listeners; retrying");
        set.update(|s| s.error = Some(error.clone()));
        tokio::select! {
            _ = signal.signaled() => return,
            () = tokio::time::sleep(BIND_RETRY) => {}
        }
    };
    let [outbound_listener, plaintext_listener, hbone_listener] = listeners;

    let dialer = PodDialer {
        netns: netns.clone(),
        mark: INBOUND_MARK,
        sockets,
    };
    let outbound = OutboundProxy::new(
        uid.clone(),
        context.snapshot.clone(),
        context.certificates.clone(),
        context.bundle.clone(),
        PoolSettings::default(),
        dialer,
        Arc::clone(&context.metrics.tcp),
        SoOriginalDst,
        context.lookups.clone(),
    );
    tokio::spawn(outbound.serve(outbound_listener, drain.clone()).in_current_span());
    tokio::spawn(serve_plaintext(inbound.clone(), plaintext_listener, SoOriginalDst, drain.clone()).in_current_span());
    let watcher = inbound.policy_watcher();
    let mut watcher_drain = drain.clone();
    tokio::spawn(
        async move {
            tokio::select! {
                () = watcher => {}
                _ = watcher_drain.signaled() => {}
            }
        }
        .in_current_span(),
    );

    // HBONE needs the pod's identity (from the state) and its certificate (from the CA).
    let Some(identity) = wait_identity(&context, &uid, &mut signal, &set).await else {
        return;
    };
    set.update(|s| s.identity = Some(identity.to_string()));
    let Some((tls, tls_task)) = server_tls(&context, &identity, &mut signal, &set).await else {
        return;
    };
    let server = HboneServer::new(inbound, ServerSettings::default(), drain.clone());
    set.update(|s| {
        s.state = PodState::Ready;
        s.error = None;
    });
    info!(%identity, "pod proxy ready");
    server.serve_listener(hbone_listener, tls).await;
    tls_task.abort();
}

/// The three listeners, created inside the pod's namespace with the proxy's mark and SO_REUSEPORT.
fn bind_listeners(netns: &Path) -> anyhow::Result<[TcpListener; 3]> {
    use anyhow::Context;
    let options = ListenOptions {
        mark: Some(INBOUND_MARK),
        reuse_port: true,
        ..ListenOptions::default()
    };
    let bind = |port: u16| -> anyhow::Result<TcpListener> {
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        let std = ambit_netns::listen_in(netns, addr, options)
            .with_context(|| format!("cannot listen on {addr} in {}", netns.display()))?;
        Ok(TcpListener::from_std(std)?)
    };
    Ok([bind(OUTBOUND_PORT)?, bind(INBOUND_PLAINTEXT_PORT)?, bind(HBONE_PORT)?])
}

/// The pod's identity once the state knows the workload; None if draining starts first.
async fn wait_identity(
    context: &NodeContext,
    uid: &WorkloadUid,
    signal: &mut DrainWatch,
    set: &StatusHandle,
) -> Option<Identity> {
    let mut snapshot = context.snapshot.clone();
    loop {
        if let Some(workload) = snapshot.borrow_and_update().workload(uid) {
            return Some(workload.identity());
        }
        set.update(|s| s.error = Some(format!("the mesh state has no workload {uid}")));
        tokio::select! {
            _ = signal.signaled() => return None,
            changed = snapshot.changed() => changed.ok()?,
        }
    }
}

/// The pod's HBONE server configuration, kept current as the certificate rotates or the bundle changes; None if
/// draining starts before the first certificate.
async fn server_tls(
    context: &NodeContext,
    identity: &Identity,
    signal: &mut DrainWatch,
    set: &StatusHandle,
) -> Option<(watch::Receiver<Arc<rustls::ServerConfig>>, tokio::task::JoinHandle<()>)> {
    let mut certs = context.certificates.subscribe(identity);
    let mut bundle = context.bundle.clone();
    let first = loop {
        let current = certs.borrow_and_update().clone();
        if let Some(cert) = current {
            match tls::server_config(&cert, &bundle.borrow()) {
                Ok(config) => break config,
                Err(error) => set.update(|s| s.error = Some(format!("cannot build the HBONE server TLS: {error}"))),
            }
        } else {
            let error = match context.certificates.fetch(identity).await {
                Ok(_) => continue,
                Err(error) => format!("{:#}", anyhow::Error::new(error)),
            };
            set.update(|s| s.error = Some(error.clone()));
        }
        tokio::select! {
            _ = signal.signaled() => return None,
            changed = certs.changed() => changed.ok()?,
        }
    };
    let (tx, rx) = watch::channel(first);
    let task = tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    changed = certs.changed() => if changed.is_err() { return },
                    changed = bundle.changed() => if changed.is_err() { return },
                }
                let cert: Option<WorkloadCertificate> = certs.borrow_and_update().clone();
                let roots: TrustBundle = bundle.borrow_and_update().clone();
                if let Some(cert) = cert {
                    match tls::server_config(&cert, &roots) {
                        Ok(config) => {
                            debug!(serial = cert.serial(), "new HBONE server certificate");
                            tx.send_replace(config);
                        }
                        Err(error) => warn!(%error, "cannot rebuild the HBONE server TLS; keeping the previous one"),
                    }
                }
            }
        }
        .in_current_span(),
    );
    Some((rx, task))
}

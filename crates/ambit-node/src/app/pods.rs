//! The per-pod proxies of the node: for each enrolled pod, three listeners inside its network namespace (outbound
//! 15001, plaintext inbound 15006, HBONE 15008; ambient §2.4), each socket marked 0x539 with SO_REUSEPORT, and the
//! outbound proxy, plaintext inbound and HBONE server behind them.
//!
//! Pods come from one of two places. From the node agent over ZDS ([`super::zds`]): [`PodManager::add`] binds the
//! listeners in the namespace handed over before it returns (so the agent's ack means they are bound), and
//! [`PodManager::remove`] drains a pod's proxy. From the enrollment file: [`PodManager::reconcile`] starts a proxy for
//! every pod newly listed and drains the proxies of pods no longer listed (or whose namespace changed). Either way the
//! proxy holds the namespace as an open descriptor ([`PodNetns`]). A pod is ready once its listeners are bound and its
//! certificate is available; until then its captured traffic is refused, never passed in plaintext.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
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
use ambit_zds::PodUid;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use super::NodeContext;
use crate::proxy::inbound::{INBOUND_MARK, InboundHandler, PodAppConnector};
use crate::proxy::netns::PodNetns;
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

/// The ports a pod proxy listens on inside its pod: [`OUTBOUND_PORT`], [`INBOUND_PLAINTEXT_PORT`] and
/// [`HBONE_PORT`] by default (the pod's capture rules redirect to those); 0 picks free ones (tests in the test's
/// own namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerPorts {
    pub outbound: u16,
    pub plaintext: u16,
    pub hbone: u16,
}

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
    ports: ListenerPorts,
    pods: Mutex<BTreeMap<PodKey, PodProxy>>,
}

/// How a pod proxy is known: by the workload uid the enrollment file lists, or by the Kubernetes pod uid ZDS names
/// pods by (two pods of one name can then briefly coexist while a pod is re-created).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PodKey {
    Enrolled(WorkloadUid),
    Zds(PodUid),
}

/// One pod's proxy: its drain trigger and what it reports.
struct PodProxy {
    workload: WorkloadUid,
    netns: PodNetns,
    drain: DrainTrigger,
    status: Arc<Mutex<PodStatus>>,
    inbound: crate::proxy::inbound::Connections,
    /// Closes inbound connections that a policy change no longer allows, through the drain too (which may last as
    /// long as they do): it ends when the proxy is dropped, once drained.
    _policy: AbortOnDrop,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a pod proxy stands, for readiness and the config dump.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub state: PodState,
    pub identity: Option<String>,
    /// The addresses of its listeners inside the pod, once bound (outbound, plaintext inbound, HBONE).
    pub listeners: Vec<SocketAddr>,
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
    /// Removed; connections finish until the drain deadline.
    Draining,
}

/// A pod proxy as the config dump shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDump {
    /// The workload uid (`<cluster-id>//Pod/<namespace>/<name>`).
    pub uid: String,
    /// The Kubernetes pod uid, for a pod the node agent handed over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The path of the pod's namespace, or its inode for one handed over as a descriptor.
    pub netns: String,
    #[serde(flatten)]
    pub status: PodStatus,
    pub inbound_connections: usize,
}

/// What [`PodManager::add`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// The pod was already served in that namespace, listeners bound: nothing changed.
    Unchanged,
    /// A new pod proxy listens.
    Started,
    /// A new pod proxy listens in the new namespace (or for the new workload); the previous one drains.
    Replaced,
}

/// What an Add must do, given the proxy held for the same pod ([`plan_add`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddPlan {
    /// Served as asked already: nothing to do.
    Keep,
    /// No proxy yet: bind and start one.
    Start,
    /// Bind a new proxy, then drain the one held.
    Replace,
}

/// The proxy held for a pod, as [`plan_add`] compares it with an Add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldPod {
    pub same_namespace: bool,
    pub same_workload: bool,
    /// Its listeners are bound (not a failed start still retrying).
    pub listening: bool,
}

/// What an Add of a pod does: nothing when the pod is already served in the same namespace for the same workload
/// with its listeners bound; a start when the pod has no proxy; else a replacement (a re-created sandbox, a renamed
/// workload, or a start that could not bind yet: binding is tried again now, so the agent's retry means something).
pub fn plan_add(held: Option<HeldPod>) -> AddPlan {
    match held {
        None => AddPlan::Start,
        Some(HeldPod {
            same_namespace: true,
            same_workload: true,
            listening: true,
        }) => AddPlan::Keep,
        Some(_) => AddPlan::Replace,
    }
}

// === impl ListenerPorts ===

impl Default for ListenerPorts {
    fn default() -> Self {
        Self {
            outbound: OUTBOUND_PORT,
            plaintext: INBOUND_PLAINTEXT_PORT,
            hbone: HBONE_PORT,
        }
    }
}

impl ListenerPorts {
    /// Every address of the pod, in the order outbound, plaintext inbound, HBONE.
    fn addrs(self) -> [SocketAddr; 3] {
        [self.outbound, self.plaintext, self.hbone].map(|port| SocketAddr::from(([0, 0, 0, 0], port)))
    }
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

// === impl PodKey ===

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PodKey::Enrolled(uid) => uid.fmt(f),
            PodKey::Zds(uid) => uid.fmt(f),
        }
    }
}

// === impl PodManager ===

impl PodManager {
    /// Pod proxies listening on `ports` inside each pod ([`ListenerPorts::default`] in production).
    pub fn new(context: NodeContext, metrics: ManagerMetrics, ports: ListenerPorts) -> Self {
        let inner = ManagerInner {
            context,
            metrics,
            ports,
            pods: Mutex::new(BTreeMap::new()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Serves the ZDS pod `pod`, workload `workload`, inside `netns`, as [`plan_add`] says. Returns once the new
    /// proxy's listeners are bound, or with why they could not be (naming the pod, the address and the namespace);
    /// the proxy then keeps trying to bind in the background. Blocks for the thread that enters the namespace.
    /// Must be called within the data-plane runtime.
    pub fn add(&self, pod: &PodUid, workload: WorkloadUid, netns: PodNetns) -> Result<Added, String> {
        let key = PodKey::Zds(pod.clone());
        let held = self.lock().get(&key).map(|held| HeldPod {
            same_namespace: held.netns.same_namespace(&netns),
            same_workload: held.workload == workload,
            listening: !held.status().listeners.is_empty(),
        });
        let plan = plan_add(held);
        if plan == AddPlan::Keep {
            debug!(%pod, %workload, %netns, "pod already served in this namespace");
            return Ok(Added::Unchanged);
        }
        // Outside the lock: binding waits for a thread that enters the namespace.
        let bound = netns.listen_all(self.inner.ports.addrs(), listen_options());
        let error = bound
            .as_ref()
            .err()
            .map(|error| format!("pod {pod} ({workload}): cannot open its listeners: {error}"));
        let proxy = self.start(&key, workload.clone(), netns.clone(), bound.ok());
        if let Some(error) = &error {
            proxy.status.lock().unwrap_or_else(PoisonError::into_inner).error = Some(error.clone());
        }
        let mut pods = self.lock();
        let previous = pods.insert(key.clone(), proxy);
        if let Some(previous) = previous {
            info!(%pod, %workload, %netns, previous = %previous.netns, "pod handed over again; draining its previous proxy");
            self.stop(previous, &key);
        } else {
            info!(%pod, %workload, %netns, "pod proxy started");
        }
        self.update_gauges(&pods);
        match error {
            Some(error) => Err(error),
            None if plan == AddPlan::Start => Ok(Added::Started),
            None => Ok(Added::Replaced),
        }
    }

    /// Drains the proxy of ZDS pod `pod`, if there is one (connections finish until the pod drain deadline).
    /// Returns whether there was one. Must be called within the data-plane runtime.
    pub fn remove(&self, pod: &PodUid) -> bool {
        let key = PodKey::Zds(pod.clone());
        let mut pods = self.lock();
        let Some(proxy) = pods.remove(&key) else {
            return false;
        };
        info!(%pod, workload = %proxy.workload, netns = %proxy.netns, "pod removed; draining its proxy");
        self.stop(proxy, &key);
        self.update_gauges(&pods);
        true
    }

    /// Whether ZDS pod `pod` has a proxy.
    pub fn serves(&self, pod: &PodUid) -> bool {
        self.lock().contains_key(&PodKey::Zds(pod.clone()))
    }

    /// Starts proxies for pods in `wanted` (from the enrollment file) that have none, and drains those not in it (or
    /// listed with another namespace path). Returns why the namespaces that could not be opened were not (those pods
    /// are tried again on the next call). Must be called within the data-plane runtime.
    pub fn reconcile(&self, wanted: &BTreeMap<WorkloadUid, PathBuf>) -> Vec<String> {
        let mut pods = self.lock();
        let gone: Vec<PodKey> = pods
            .iter()
            .filter_map(|(key, pod)| match key {
                PodKey::Enrolled(uid) if wanted.get(uid).map(PathBuf::as_path) != pod.netns.path() => Some(key.clone()),
                _ => None,
            })
            .collect();
        for key in gone {
            if let Some(pod) = pods.remove(&key) {
                info!(pod = %key, netns = %pod.netns, "pod removed from the enrollment; draining its proxy");
                self.stop(pod, &key);
            }
        }
        let mut errors = Vec::new();
        for (uid, path) in wanted {
            let key = PodKey::Enrolled(uid.clone());
            if pods.contains_key(&key) {
                continue;
            }
            match PodNetns::open(path) {
                Ok(netns) => {
                    info!(pod = %uid, %netns, "starting the pod's proxy");
                    let pod = self.start(&key, uid.clone(), netns, None);
                    pods.insert(key, pod);
                }
                Err(error) => errors.push(format!("pod {uid}: cannot open {}: {error}", path.display())),
            }
        }
        self.update_gauges(&pods);
        errors
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
            .map(|(key, pod)| PodDump {
                uid: pod.workload.to_string(),
                pod_uid: match key {
                    PodKey::Zds(uid) => Some(uid.to_string()),
                    PodKey::Enrolled(_) => None,
                },
                netns: match pod.netns.path() {
                    Some(path) => path.display().to_string(),
                    None => format!("net:[{}]", pod.netns.inode()),
                },
                status: pod.status(),
                inbound_connections: pod.inbound.len(),
            })
            .collect()
    }

    /// Drains every pod proxy and waits until they are done, at most `deadline` and a second more: every listener
    /// closes at once, HBONE connections get GOAWAY, and connections still open at the deadline are closed.
    pub async fn drain_all(&self, deadline: Duration) {
        let pods: Vec<(PodKey, PodProxy)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        self.update_gauges(&BTreeMap::new());
        let mut waits = tokio::task::JoinSet::new();
        for (_, pod) in pods {
            pod.status.lock().unwrap_or_else(PoisonError::into_inner).state = PodState::Draining;
            pod.drain.start(deadline);
            waits.spawn(async move { pod.drain.drained().await });
        }
        let all = async { while waits.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline + Duration::from_secs(1), all)
            .await
            .is_err()
        {
            warn!("connections were still open after the drain deadline; closing them");
        }
    }

    /// A pod proxy for `workload` in `netns` on its own task: serving on `listeners` if bound already, else binding
    /// them (retrying) first.
    fn start(
        &self,
        key: &PodKey,
        workload: WorkloadUid,
        netns: PodNetns,
        listeners: Option<[std::net::TcpListener; 3]>,
    ) -> PodProxy {
        let (trigger, watch) = drain::channel();
        let status = PodStatus {
            listeners: listeners.as_ref().map(|l| local_addrs(l)).unwrap_or_default(),
            ..PodStatus::default()
        };
        let status = Arc::new(Mutex::new(status));
        let context = &self.inner.context;
        // Sockets for the pod's upstream connections, made ahead inside its namespace.
        let sockets = match netns.socket_factory(SOCKETS_READY) {
            Ok(factory) => Some(Arc::new(factory)),
            Err(error) => {
                warn!(pod = %key, %error, "cannot prepare sockets in the pod's namespace; making each on demand");
                None
            }
        };
        let mut connector = PodAppConnector::new(netns.clone());
        connector.sockets = sockets.clone();
        let inbound = InboundHandler::new(
            workload.clone(),
            context.snapshot.clone(),
            context.root_namespace.clone(),
            Arc::clone(&context.metrics.tcp),
            connector,
        )
        .with_lookups(context.lookups.clone());
        let connections = inbound.connections().clone();
        let span = tracing::info_span!("pod", pod = %workload);
        let policy = tokio::spawn(inbound.policy_watcher().instrument(span.clone()));
        let pod = PodTask {
            context: context.clone(),
            uid: workload.clone(),
            netns: netns.clone(),
            ports: self.inner.ports,
            inbound,
            sockets,
            status: Arc::clone(&status),
            drain: watch,
        };
        tokio::spawn(run_pod(pod, listeners).instrument(span));
        self.inner.metrics.started.inc();
        PodProxy {
            workload,
            netns,
            drain: trigger,
            status,
            inbound: connections,
            _policy: AbortOnDrop(policy.abort_handle()),
        }
    }

    fn stop(&self, pod: PodProxy, key: &PodKey) {
        pod.status.lock().unwrap_or_else(PoisonError::into_inner).state = PodState::Draining;
        let grace = self.inner.context.drain_grace;
        let metrics = self.inner.metrics.clone();
        let key = key.clone();
        tokio::spawn(async move {
            pod.drain.start(grace);
            let _ = tokio::time::timeout(grace + Duration::from_secs(1), pod.drain.drained()).await;
            metrics.stopped.inc();
            debug!(pod = %key, "pod proxy stopped");
        });
    }

    fn update_gauges(&self, pods: &BTreeMap<PodKey, PodProxy>) {
        let pending = pods
            .values()
            .filter(|pod| pod.status().state != PodState::Ready)
            .count();
        self.inner.metrics.active.set(pods.len() as i64);
        self.inner.metrics.pending.set(pending as i64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PodKey, PodProxy>> {
        self.inner.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The in-pod listeners' options: the proxy's mark (so the pod's rules let its own traffic through) and SO_REUSEPORT
/// (so a new node proxy binds beside the old one during an upgrade).
fn listen_options() -> ListenOptions {
    ListenOptions {
        mark: Some(INBOUND_MARK),
        reuse_port: true,
        ..ListenOptions::default()
    }
}

fn local_addrs(listeners: &[std::net::TcpListener]) -> Vec<SocketAddr> {
    listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
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

/// What one pod proxy's task works with.
struct PodTask {
    context: NodeContext,
    uid: WorkloadUid,
    netns: PodNetns,
    ports: ListenerPorts,
    inbound: InboundHandler<PodAppConnector>,
    sockets: Option<Arc<SocketFactory>>,
    status: Arc<Mutex<PodStatus>>,
    drain: DrainWatch,
}

/// One pod's proxy, until its drain starts: binds the listeners unless given them (retrying), serves outbound and
/// plaintext inbound at once, and HBONE once the pod's certificate is there. Each server holds a clone of `drain`
/// until it is done.
async fn run_pod(pod: PodTask, listeners: Option<[std::net::TcpListener; 3]>) {
    let PodTask {
        context,
        uid,
        netns,
        ports,
        inbound,
        sockets,
        status,
        drain,
    } = pod;
    let set = StatusHandle(status);
    let mut signal = drain.clone();
    let listeners = match listeners {
        Some(listeners) => listeners,
        None => {
            let Some(listeners) = bind_retrying(&netns, ports, &mut signal, &set).await else {
                return;
            };
            listeners
        }
    };
    let [outbound_listener, plaintext_listener, hbone_listener] = match listeners.map(TcpListener::from_std) {
        [Ok(outbound), Ok(plaintext), Ok(hbone)] => [outbound, plaintext, hbone],
        _ => {
            set.update(|s| s.error = Some("cannot register the listeners with the runtime".into()));
            warn!("cannot register the pod's listeners with the runtime");
            return;
        }
    };

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

/// The pod's listeners, bound inside its namespace off the runtime, retrying every [`BIND_RETRY`]; None if draining
/// starts first.
async fn bind_retrying(
    netns: &PodNetns,
    ports: ListenerPorts,
    signal: &mut DrainWatch,
    set: &StatusHandle,
) -> Option<[std::net::TcpListener; 3]> {
    loop {
        let attempt = tokio::task::spawn_blocking({
            let netns = netns.clone();
            move || netns.listen_all(ports.addrs(), listen_options())
        });
        let error = match attempt.await {
            Ok(Ok(listeners)) => {
                set.update(|s| {
                    s.listeners = local_addrs(&listeners);
                    s.error = None;
                });
                return Some(listeners);
            }
            Ok(Err(error)) => format!("cannot open the pod's listeners: {error}"),
            Err(error) => error.to_string(),
        };
        warn!(%error, "cannot open the pod's listeners; retrying");
        set.update(|s| s.error = Some(error.clone()));
        tokio::select! {
            _ = signal.signaled() => return None,
            () = tokio::time::sleep(BIND_RETRY) => {}
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_keeps_only_a_pod_served_as_asked() {
        let held = |same_namespace, same_workload, listening| {
            Some(HeldPod {
                same_namespace,
                same_workload,
                listening,
            })
        };
        let cases = [
            (None, AddPlan::Start),
            (held(true, true, true), AddPlan::Keep),
            (held(false, true, true), AddPlan::Replace),
            (held(true, false, true), AddPlan::Replace),
            (held(true, true, false), AddPlan::Replace),
            (held(false, false, false), AddPlan::Replace),
        ];
        for (held, want) in cases {
            assert_eq!(plan_add(held), want, "{held:?}");
        }
    }

    #[test]
    fn the_default_ports_are_ambients() {
        let addrs = ListenerPorts::default().addrs().map(|addr| addr.to_string());
        assert_eq!(addrs, ["0.0.0.0:15001", "0.0.0.0:15006", "0.0.0.0:15008"]);
    }
}

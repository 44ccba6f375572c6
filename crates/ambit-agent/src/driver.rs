//! The agent's tokio driver: it reads the node's pods from the control plane (long poll, reconnecting with backoff
//! and keeping the last view while the control plane is away), serves ZDS to the node proxy, and on every event
//! plans ([`crate::plan`]) and executes the steps: capture through [`Capture`], namespaces through [`Namespaces`]
//! (both blocking, on the blocking pool), the hand-over by publishing the proxy's pod set, the annotation through
//! the API. A check runs every interval on the blocking pool and reports drift back to the loop.
//!
//! One task owns all state (the records, the namespace cache, the view): events arrive on channels, so nothing is
//! locked. The long poll, the ZDS server and the metrics endpoint run beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ambit_netns::SeqpacketListener;
use ambit_zds::{AgentEvent, Backoff, Netns, Pod, PodSet, PodUid, RequestKind, WorkloadInfo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::api::Client;
use crate::enrollment::enrollment;
use crate::host::{Capture, CaptureFailure, Namespaces, PodNetns};
use crate::metrics::AgentMetrics;
use crate::plan::{self, Action, Check, Context, Drift, Observed, PodRecord};
use crate::pods::{NodeView, REDIRECTION_ANNOTATION, REDIRECTION_ENABLED};

/// How long the control plane is asked to hold a long poll (its default).
pub const POLL_WAIT: Duration = Duration::from_secs(30);
/// The long poll's reconnect delays while the control plane is away.
const POLL_BACKOFF_INITIAL: Duration = Duration::from_millis(200);
const POLL_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Plan-and-execute rounds per event at most; each round moves every pod one step.
const MAX_ROUNDS: usize = 16;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node whose pods the agent serves.
    pub node: String,
    /// The control plane's API socket.
    pub control_socket: PathBuf,
    /// Where the agent serves ZDS to the node proxy.
    pub zds_socket: PathBuf,
    /// Where `/metrics` and `/healthz/ready` are served; none without.
    pub metrics_address: Option<SocketAddr>,
    /// How often every enrolled pod is checked.
    pub check_interval: Duration,
    /// How long the control plane is asked to hold a long poll.
    pub poll_wait: Duration,
    /// The proxy's in-pod listener ports, checked once it acked a pod (outbound, inbound, HBONE).
    pub listener_ports: Vec<u16>,
}

/// What the agent acts on: the node's namespaces and capture.
#[derive(Clone)]
pub struct Host {
    pub namespaces: Arc<dyn Namespaces>,
    pub capture: Arc<dyn Capture>,
}

/// An agent with its sockets bound, ready to run.
pub struct Agent {
    config: AgentConfig,
    host: Host,
    zds: SeqpacketListener,
    metrics_listener: Option<TcpListener>,
    registry: Registry,
    metrics: AgentMetrics,
}

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot serve ZDS on {}", path.display())]
    ZdsListen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on the metrics address {address}")]
    MetricsListen {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("serving ZDS on {} stopped", path.display())]
    ZdsServe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the agent knows of a pod from the control plane: kept while the pod is in the view or the agent has a
/// record for it.
#[derive(Debug, Clone)]
struct PodFacts {
    /// `namespace/name`, for logs.
    display: String,
    namespace: String,
    name: String,
    info: WorkloadInfo,
    ips: Vec<IpAddr>,
}

/// One check to run on the blocking pool.
struct CheckJob {
    check: Check,
    netns: PodNetns,
    ips: Vec<IpAddr>,
}

/// What a check found, or why it could not look.
type CheckResult = (Check, Result<Option<Drift>, String>);

/// The loop's state.
struct Driver {
    config: AgentConfig,
    host: Host,
    client: Client,
    metrics: AgentMetrics,
    /// What the latest view says of each pod.
    observed: BTreeMap<PodUid, Observed>,
    /// How many views were applied.
    view: u64,
    records: BTreeMap<PodUid, PodRecord>,
    known: BTreeMap<PodUid, PodFacts>,
    /// The namespace found for each pod.
    netns: BTreeMap<PodUid, PodNetns>,
    /// The ZDS connections open now.
    connected: BTreeSet<u64>,
    pods: watch::Sender<Arc<PodSet<Netns>>>,
    checking: bool,
    /// Pods already looked at for capture left behind ([`Driver::probe_leftovers`]), and those where it was found.
    probed: BTreeSet<PodUid>,
    leftovers: BTreeSet<PodUid>,
}

// === impl Agent ===

impl Agent {
    /// Binds the ZDS socket (replacing a stale one; creating its directory) and the metrics address.
    pub async fn bind(config: AgentConfig, host: Host) -> Result<Agent, AgentError> {
        let zds_error = |source| AgentError::ZdsListen {
            path: config.zds_socket.clone(),
            source,
        };
        if let Some(dir) = config.zds_socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(zds_error)?;
        }
        let zds = SeqpacketListener::bind(&config.zds_socket).map_err(zds_error)?;
        let metrics_listener = match config.metrics_address {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|source| AgentError::MetricsListen { address, source })?,
            ),
            None => None,
        };
        let mut registry = Registry::default();
        let metrics = AgentMetrics::register(&mut registry);
        Ok(Agent {
            config,
            host,
            zds,
            metrics_listener,
            registry,
            metrics,
        })
    }

    /// The address `/metrics` is served on (the bound one, when the port was 0).
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn zds_socket(&self) -> &Path {
        self.zds.path()
    }

    /// Runs until serving ZDS fails (the future can be dropped to stop it; capture and annotations are left as
    /// they are, for the next agent to take over).
    pub async fn run(self) -> Result<Infallible, AgentError> {
        let Agent {
            config,
            host,
            zds,
            metrics_listener,
            registry,
            metrics,
        } = self;
        let zds_path = zds.path().to_path_buf();
        let (ready_tx, ready_rx) = watch::channel(false);
        let mut background = JoinSet::new();
        if let Some(listener) = metrics_listener {
            background.spawn(crate::admin::serve(listener, Arc::new(registry), ready_rx));
        }
        let client = Client::new(config.control_socket.clone());
        let (views_tx, views) = watch::channel(None);
        let watcher = watch_node(client.clone(), config.node.clone(), config.poll_wait, views_tx);
        let (pods, pods_rx) = watch::channel(Arc::new(PodSet::new()));
        let (events_tx, events) = mpsc::unbounded_channel();
        let serve = ambit_zds::serve_agent(zds, pods_rx, events_tx);
        tracing::info!(node = %config.node, zds = %zds_path.display(), control = %config.control_socket.display(),
            "node agent started");
        let mut driver = Driver {
            config,
            host,
            client,
            metrics,
            observed: BTreeMap::new(),
            view: 0,
            records: BTreeMap::new(),
            known: BTreeMap::new(),
            netns: BTreeMap::new(),
            connected: BTreeSet::new(),
            pods,
            checking: false,
            probed: BTreeSet::new(),
            leftovers: BTreeSet::new(),
        };
        let end = driver.run(views, events, ready_tx, watcher, serve).await;
        Err(AgentError::ZdsServe {
            path: zds_path,
            source: end,
        })
    }
}

// === impl Driver ===

impl Driver {
    /// The loop; returns why serving ZDS failed.
    async fn run(
        &mut self,
        mut views: watch::Receiver<Option<Arc<NodeView>>>,
        mut events: mpsc::UnboundedReceiver<AgentEvent>,
        ready: watch::Sender<bool>,
        watcher: impl Future<Output = Infallible>,
        serve: impl Future<Output = io::Result<Infallible>>,
    ) -> io::Error {
        let mut ticker = tokio::time::interval(self.config.check_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (checks_tx, mut checks) = mpsc::unbounded_channel();
        tokio::pin!(watcher, serve);
        loop {
            let due = plan::next_due(&self.records, Instant::now());
            let wake = async move {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                never = &mut watcher => match never {},
                end = &mut serve => match end {
                    Err(error) => return error,
                    Ok(never) => match never {},
                },
                // The sender lives in `watcher`, which never ends.
                Ok(()) = views.changed() => {
                    let view = views.borrow_and_update().clone();
                    if let Some(view) = view {
                        self.apply_view(&view);
                        self.probe_leftovers().await;
                    }
                }
                Some(event) = events.recv() => self.on_event(event),
                Some(results) = checks.recv() => self.apply_checks(results),
                _ = ticker.tick() => self.start_checks(&checks_tx),
                () = wake => {}
            }
            self.reconcile().await;
            if self.view > 0 && !*ready.borrow() {
                tracing::info!(pods = self.observed.len(), "first view of the node applied; ready");
                ready.send_replace(true);
            }
        }
    }

    fn context(&self, now: Instant) -> Context<'_> {
        Context {
            now,
            view: self.view,
            connected: &self.connected,
        }
    }

    /// Takes in a new view of the node: what each pod is now.
    fn apply_view(&mut self, view: &NodeView) {
        self.view += 1;
        let namespaces = view.namespaces_by_name();
        let mut observed = BTreeMap::new();
        for pod in &view.pods {
            let meta = &pod.metadata;
            if meta.uid.is_empty() || (!pod.spec.node_name.is_empty() && pod.spec.node_name != self.config.node) {
                tracing::debug!(pod = %pod.display_name(), "pod without a uid or of another node; ignored");
                continue;
            }
            let uid = PodUid::new(meta.uid.as_str());
            let decision = enrollment(pod, namespaces.get(meta.namespace.as_str()).copied());
            let was = self.observed.get(&uid).map(|o| o.enrolled);
            if was != Some(decision.is_enrolled()) && (was.is_some() || decision.is_enrolled()) {
                match decision {
                    crate::Enrollment::Enrolled => tracing::info!(pod = %pod.display_name(), %uid, "pod enrolls"),
                    crate::Enrollment::NotEnrolled(reason) => {
                        tracing::info!(pod = %pod.display_name(), %uid, %reason, "pod leaves")
                    }
                }
            }
            observed.insert(
                uid.clone(),
                Observed {
                    enrolled: decision.is_enrolled(),
                    annotated: pod.redirection_enabled(),
                    leftover: self.leftovers.contains(&uid),
                },
            );
            let facts = PodFacts {
                display: pod.display_name(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                info: WorkloadInfo {
                    name: meta.name.clone(),
                    namespace: meta.namespace.clone(),
                    service_account: pod.service_account().to_string(),
                },
                ips: pod.ips().unwrap_or_default(),
            };
            self.known.insert(uid, facts);
        }
        self.observed = observed;
    }

    fn on_event(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::Connected { conn } => {
                tracing::info!(conn, "node proxy connected");
                self.connected.insert(conn);
            }
            AgentEvent::Disconnected { conn, reason } => {
                tracing::info!(conn, %reason, "node proxy disconnected");
                self.connected.remove(&conn);
            }
            AgentEvent::Acked { conn, ack } => self.on_ack(conn, ack),
        }
        self.metrics.zds_connections.set(self.connected.len() as i64);
    }

    fn on_ack(&mut self, conn: u64, ack: ambit_zds::Acked) {
        let Some(uid) = ack.uid else { return };
        let Some(record) = self.records.remove(&uid) else {
            return;
        };
        let annotated = self.observed.get(&uid).is_some_and(|o| o.annotated);
        let pod = self.display(&uid);
        match (&ack.kind, &ack.error) {
            (RequestKind::Add, None) => tracing::debug!(%pod, %uid, conn, "node proxy serves the pod"),
            (kind, Some(error)) => {
                tracing::warn!(%pod, %uid, conn, %kind, %error, "node proxy failed the request; handing the pod again after a backoff")
            }
            _ => {}
        }
        let record = record.acked(
            ack.kind,
            ack.error.is_some(),
            conn,
            annotated,
            &self.context(Instant::now()),
        );
        self.records.insert(uid, record);
    }

    /// Plans and executes until nothing is left to do now.
    async fn reconcile(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let actions = plan::plan(&self.observed, &self.records, &self.context(Instant::now()));
            if actions.is_empty() {
                break;
            }
            self.resolve_netns(&actions).await;
            let mut progressed = false;
            for (uid, action) in actions {
                let outcome = self.execute(&uid, action).await;
                let record = self.records.remove(&uid);
                let ctx = Context {
                    now: Instant::now(),
                    view: self.view,
                    connected: &self.connected,
                };
                let next = match outcome {
                    Ok(()) => {
                        progressed = true;
                        if action == Action::RemoveCapture {
                            self.leftovers.remove(&uid);
                        }
                        PodRecord::done(record, action, &ctx)
                    }
                    Err(error) => {
                        let pod = self
                            .known
                            .get(&uid)
                            .map_or_else(|| uid.to_string(), |f| f.display.clone());
                        tracing::warn!(%pod, %uid, %action, %error, "step failed; retrying after a backoff");
                        PodRecord::failed(record, action, &ctx)
                    }
                };
                self.records.insert(uid, next);
            }
            self.publish();
            if !progressed {
                break;
            }
        }
        plan::forget_gone(&self.observed, &mut self.records);
        let (records, observed) = (&self.records, &self.observed);
        self.known
            .retain(|uid, _| observed.contains_key(uid) || records.contains_key(uid));
        self.netns.retain(|uid, _| {
            records
                .get(uid)
                .is_some_and(|r| !matches!(r.state, plan::PodState::Left { .. }))
        });
        self.publish();
        self.metrics
            .enrolled_pods
            .set(plan::enrolled_count(&self.records) as i64);
    }

    /// Looks once, for every pod seen for the first time that the agent does not enroll and keeps no record of (and
    /// that is not annotated, which the leave path handles), whether capture is in its namespace anyway: left by an
    /// agent that died while releasing the pod, it would block the pod's TCP for good. Such pods are marked
    /// `leftover`, and the plan removes their capture.
    async fn probe_leftovers(&mut self) {
        let candidates: Vec<(PodUid, Vec<IpAddr>)> = (self.observed.iter())
            .filter(|(uid, o)| !o.enrolled && !o.annotated && !self.records.contains_key(*uid))
            .filter(|(uid, _)| !self.probed.contains(*uid))
            .filter_map(|(uid, _)| Some((uid.clone(), self.known.get(uid)?.ips.clone())))
            .filter(|(_, ips)| !ips.is_empty())
            .collect();
        self.probed.retain(|uid| self.observed.contains_key(uid));
        self.leftovers.retain(|uid| self.observed.contains_key(uid));
        if candidates.is_empty() {
            return;
        }
        self.probed.extend(candidates.iter().map(|(uid, _)| uid.clone()));
        let host = self.host.clone();
        let probed = blocking(move || {
            let wanted: BTreeSet<IpAddr> = candidates.iter().flat_map(|(_, ips)| ips.iter().copied()).collect();
            let by_ip = host.namespaces.find(&wanted);
            let mut found = Vec::new();
            for (uid, ips) in candidates {
                let Some(netns) = ips.iter().find_map(|ip| by_ip.get(ip).cloned()) else {
                    continue;
                };
                match host.capture.installed(&netns) {
                    Ok(true) => found.push((uid, netns)),
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%uid, %error, "cannot tell whether capture was left behind"),
                }
            }
            found
        })
        .await;
        let found = match probed {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "cannot look for capture left behind");
                return;
            }
        };
        for (uid, netns) in found {
            tracing::warn!(pod = %self.display(&uid), %uid, "capture left behind in a pod that is not enrolled; removing it");
            if let Some(observed) = self.observed.get_mut(&uid) {
                observed.leftover = true;
            }
            self.leftovers.insert(uid.clone());
            self.netns.insert(uid, netns);
        }
    }

    /// Finds the namespaces of the pods whose actions need one: a cached one is checked again before capture is
    /// installed in it; the missing ones are looked for in one scan.
    async fn resolve_netns(&mut self, actions: &[(PodUid, Action)]) {
        let needed: Vec<(PodUid, Vec<IpAddr>, Option<PodNetns>)> = actions
            .iter()
            .filter(|(_, a)| {
                matches!(
                    a,
                    Action::InstallCapture | Action::RepairCapture | Action::RemoveCapture
                )
            })
            .filter_map(|(uid, action)| {
                let ips = self.known.get(uid)?.ips.clone();
                let cached = self.netns.get(uid).cloned();
                // Only an install re-checks the cache: the checks catch a namespace that changed under the others.
                let recheck = *action == Action::InstallCapture && cached.is_some();
                (cached.is_none() || recheck).then_some((uid.clone(), ips, cached))
            })
            .collect();
        if needed.is_empty() {
            return;
        }
        let namespaces = self.host.namespaces.clone();
        let searched = blocking(move || {
            let mut found = BTreeMap::new();
            let mut missing = Vec::new();
            for (uid, ips, cached) in needed {
                match cached {
                    Some(netns) if namespaces.holds(&netns, &ips) => {
                        found.insert(uid, Some(netns));
                    }
                    _ => missing.push((uid, ips)),
                }
            }
            let wanted: BTreeSet<IpAddr> = missing.iter().flat_map(|(_, ips)| ips.iter().copied()).collect();
            let by_ip = if wanted.is_empty() {
                BTreeMap::new()
            } else {
                namespaces.find(&wanted)
            };
            for (uid, ips) in missing {
                found.insert(uid, ips.iter().find_map(|ip| by_ip.get(ip).cloned()));
            }
            found
        })
        .await;
        let found = match searched {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "cannot look for pod namespaces");
                return;
            }
        };
        for (uid, netns) in found {
            match netns {
                Some(netns) => {
                    tracing::debug!(%uid, netns = %netns.path.display(), "pod namespace found");
                    self.netns.insert(uid, netns);
                }
                None => {
                    self.netns.remove(&uid);
                }
            }
        }
    }

    /// Executes one action; the error says why it failed, for the log.
    async fn execute(&mut self, uid: &PodUid, action: Action) -> Result<(), String> {
        let pod = self.display(uid);
        let netns = self.netns.get(uid).cloned();
        let no_netns = || {
            let ips = self.known.get(uid).map(|f| format!("{:?}", f.ips)).unwrap_or_default();
            format!("no network namespace holds the pod's IPs {ips}")
        };
        match action {
            Action::InstallCapture => {
                let netns = netns.ok_or_else(no_netns)?;
                let capture = self.host.capture.clone();
                let path = netns.path.clone();
                let kept = blocking(move || {
                    // Capture that is already right is left alone (an agent restart disturbs nothing).
                    if capture.verify(&netns).is_ok_and(|drift| drift.is_empty()) {
                        return Ok(true);
                    }
                    capture.install(&netns).map(|()| false)
                })
                .await
                .and_then(|r| r.map_err(|e| e.to_string()))?;
                let what = if kept {
                    "capture already in place"
                } else {
                    "capture installed"
                };
                tracing::info!(%pod, %uid, netns = %path.display(), "{what}");
            }
            Action::RepairCapture => {
                let netns = netns.ok_or_else(no_netns)?;
                let capture = self.host.capture.clone();
                blocking(move || capture.install(&netns))
                    .await
                    .and_then(|r| r.map_err(|e| e.to_string()))?;
                tracing::info!(%pod, %uid, "capture reinstalled");
            }
            Action::RemoveCapture => {
                if let Some(netns) = netns {
                    let capture = self.host.capture.clone();
                    match blocking(move || capture.remove(&netns)).await? {
                        Ok(()) | Err(CaptureFailure::Gone(_)) => {}
                        Err(error) => return Err(error.to_string()),
                    }
                    tracing::info!(%pod, %uid, "capture removed");
                }
                self.netns.remove(uid);
            }
            Action::HandToProxy => {
                netns.ok_or_else(no_netns)?;
                tracing::info!(%pod, %uid, "handing the pod to the node proxy");
            }
            Action::Rehand => tracing::info!(%pod, %uid, "taking the pod from the node proxy to hand it again"),
            Action::RemoveFromProxy => tracing::info!(%pod, %uid, "removing the pod from the node proxy"),
            Action::PatchEnabled => {
                self.patch(uid, Some(REDIRECTION_ENABLED)).await?;
                tracing::info!(%pod, %uid, "pod enrolled: {REDIRECTION_ANNOTATION}={REDIRECTION_ENABLED}");
            }
            Action::Unpatch => {
                self.patch(uid, None).await?;
                tracing::info!(%pod, %uid, "{REDIRECTION_ANNOTATION} removed");
            }
        }
        Ok(())
    }

    /// Sets (or with `None` removes) the redirection annotation of the pod. Removing it from a pod that is gone
    /// (404) is done.
    async fn patch(&self, uid: &PodUid, value: Option<&str>) -> Result<(), String> {
        let facts = self.known.get(uid).ok_or("the pod is not known")?;
        let changes = [(REDIRECTION_ANNOTATION, value)];
        match (self.client)
            .patch_pod_annotations(&facts.namespace, &facts.name, uid.as_str(), &changes)
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if value.is_none() && error.is_not_found() => Ok(()),
            Err(error) => Err(chain(&error)),
        }
    }

    /// Publishes the proxy's pod set: the pods in it by state, with their namespace and identity.
    fn publish(&self) {
        let set: PodSet<Netns> = self
            .records
            .iter()
            .filter(|(_, record)| record.state.in_pod_set())
            .filter_map(|(uid, _)| {
                let netns = self.netns.get(uid)?;
                let facts = self.known.get(uid)?;
                let pod = Pod {
                    info: facts.info.clone(),
                    netns: Some(netns.handle.clone()),
                };
                Some((uid.clone(), pod))
            })
            .collect();
        self.pods.send_if_modified(|current| {
            let changed = **current != set;
            if changed {
                *current = Arc::new(set);
            }
            changed
        });
    }

    /// Starts the due checks on the blocking pool, unless the last ones still run.
    fn start_checks(&mut self, results: &mpsc::UnboundedSender<Vec<CheckResult>>) {
        if self.checking {
            return;
        }
        let checks = plan::checks(&self.observed, &self.records, &self.context(Instant::now()));
        let jobs: Vec<CheckJob> = checks
            .into_iter()
            .filter_map(|check| {
                let netns = self.netns.get(&check.uid)?.clone();
                let ips = self.known.get(&check.uid)?.ips.clone();
                Some(CheckJob { check, netns, ips })
            })
            .collect();
        if jobs.is_empty() {
            return;
        }
        self.checking = true;
        let (host, ports, results) = (self.host.clone(), self.config.listener_ports.clone(), results.clone());
        tokio::task::spawn_blocking(move || {
            let found = jobs
                .into_iter()
                .map(|job| {
                    let finding = inspect(&host, &ports, &job);
                    (job.check, finding)
                })
                .collect();
            let _ = results.send(found);
        });
    }

    /// Takes in what the checks found: each new drift is counted, logged, and repaired by the next plan.
    fn apply_checks(&mut self, results: Vec<CheckResult>) {
        self.checking = false;
        self.metrics.capture_checks.inc_by(results.len() as u64);
        for (check, finding) in results {
            let pod = self.display(&check.uid);
            let finding = match finding {
                Ok(finding) => finding,
                Err(error) => {
                    tracing::warn!(%pod, uid = %check.uid, %error, "cannot check the pod's capture");
                    continue;
                }
            };
            let Some(record) = self.records.get_mut(&check.uid) else {
                continue;
            };
            let Some(drift) = record.found(&check, finding) else {
                continue;
            };
            tracing::warn!(%pod, uid = %check.uid, %drift, "drift found; repairing");
            self.metrics.repaired(drift);
            if *drift == Drift::Netns {
                self.netns.remove(&check.uid);
            }
        }
    }

    fn display(&self, uid: &PodUid) -> String {
        self.known
            .get(uid)
            .map_or_else(|| uid.to_string(), |f| f.display.clone())
    }
}

/// One pod's check: is its namespace still the one found, are the rules intact, and (when due) do the proxy's
/// listeners listen.
fn inspect(host: &Host, ports: &[u16], job: &CheckJob) -> Result<Option<Drift>, String> {
    if !host.namespaces.holds(&job.netns, &job.ips) {
        return Ok(Some(Drift::Netns));
    }
    let drift = match host.capture.verify(&job.netns) {
        Ok(drift) => drift,
        Err(CaptureFailure::Gone(_)) => return Ok(Some(Drift::Netns)),
        Err(error) => return Err(error.to_string()),
    };
    if !drift.is_empty() {
        return Ok(Some(Drift::Rules(drift)));
    }
    if job.check.listeners.is_none() {
        return Ok(None);
    }
    let listening = host.namespaces.listening(&job.netns).map_err(|e| e.to_string())?;
    let missing: Vec<u16> = ports.iter().copied().filter(|p| !listening.contains(p)).collect();
    Ok((!missing.is_empty()).then_some(Drift::Listeners(missing)))
}

/// Reads the node's pods from the control plane for ever: each new revision goes out on `views`. While the control
/// plane is away it retries with backoff and the last view stays in force (a pod is never unenrolled for that).
async fn watch_node(
    client: Client,
    node: String,
    wait: Duration,
    views: watch::Sender<Option<Arc<NodeView>>>,
) -> Infallible {
    let mut revision: Option<String> = None;
    let mut backoff = Backoff::new(POLL_BACKOFF_INITIAL, POLL_BACKOFF_MAX, Backoff::JITTER);
    let mut failing = false;
    loop {
        match client.node_pods(&node, revision.as_deref(), wait).await {
            Ok(view) => {
                if failing {
                    tracing::info!("the control plane answers again");
                }
                failing = false;
                backoff.reset();
                if revision.as_deref() != Some(view.revision.as_str()) {
                    tracing::debug!(revision = %view.revision, pods = view.pods.len(), "new view of the node");
                    revision = Some(view.revision.clone());
                    views.send_replace(Some(Arc::new(view)));
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(error = %chain(&error), "cannot read the node's pods; keeping the last state and retrying");
                } else {
                    tracing::debug!(error = %chain(&error), "still cannot read the node's pods");
                }
                failing = true;
                tokio::time::sleep(backoff.next_delay(fastrand::f64())).await;
            }
        }
    }
}

/// Runs a blocking call on the blocking pool; a panic in it is an error.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the blocking task failed: {e}"))
}

/// An error and its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

//! The supervisor of a running local cluster (`ambit cluster supervise`, started in the background by `cluster up`):
//! runs the cluster's own components (`ambit control` in the fabric namespace, one `ambit agent` and one `ambit node`
//! per node namespace, the two joined by the node's ZDS socket),
//! runs each container as a process inside its pod's namespace, restarts it per `restartPolicy` with backoff,
//! probes readiness from the node, keeps service endpoints, nftables rules and the DNS table in step with the ready
//! pods, and writes `status.json` on every change. It also publishes the cluster's Kubernetes objects
//! (`objects.json`, see `objects`): the control plane's cluster source, from which it builds the node proxies' state.
//! They are written before the control plane starts and again whenever they change (every readiness change among
//! them). SIGTERM stops every container, then the node proxies and the control plane, and exits. SIGUSR1 takes the
//! node-proxy upgrades `ambit node upgrade` asked for (see [`crate::upgrade`]): a new instance starts beside the old
//! one, and once it is ready the old one is told to stop accepting and drain.
//!
//! Like istiod's gateway controller, it deploys the waypoint of every waypoint Gateway applied while the cluster runs:
//! it polls the control plane's config store (`config-store.json`) every [`STORE_POLL`] and plans the ServiceAccount,
//! Pod and Service of each waypoint Gateway that has no pod (see `manifest::waypoint`), then creates the pod's
//! network, writes the grown plan (`plan.json`, which `ambit get/exec/logs` read), starts the pod and publishes its
//! objects. A Gateway that cannot get its waypoint (a namespace the cluster lacks, a name taken, ...) is reported in
//! the supervisor's log. Pods are only ever added: deleting a waypoint Gateway leaves its pod running (logged).
//!
//! Start order: the objects first, then the components; the node agents and proxies once the control plane accepts
//! connections (or after `CONTROL_WAIT`); the containers of a node that has an enrolled pod once its proxy is ready (or after
//! `NODE_READY_WAIT`: capture fails closed, so starting anyway leaks nothing). Other containers start at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ambit_capture::PROBE_SOURCE;
use ambit_config::Object;
use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use crate::dns::DnsTable;
use crate::endpoints::{self, PodKey, ServiceEndpoints};
use crate::layout::{self, Layout};
use crate::manifest::waypoint::{self, Added};
use crate::mesh;
use crate::model::{ClusterPlan, ContainerPlan, NodePlan, PodPlan, Probe, ProbeAction, RestartPolicy};
use crate::net;
use crate::objects;
use crate::status::{self, ClusterStatus, ContainerState, ContainerStatus, Phase, PodStatus, unix_now};

/// Time a container gets between SIGTERM and SIGKILL when the cluster stops.
const GRACE: Duration = Duration::from_secs(3);
/// Restart backoff: doubles from the first value up to the second; reset after a run of the third.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// Time the node proxies and the control plane get between SIGTERM and SIGKILL (a node proxy drains up to 5 s).
const SYSTEM_GRACE: Duration = Duration::from_secs(7);
/// The control plane's port (the CA over TLS gRPC), on the plan's control address.
pub const CONTROL_PORT: u16 = 15012;
/// How long node proxies wait for the control plane to accept connections before they start anyway.
const CONTROL_WAIT: Duration = Duration::from_secs(10);
/// The node proxy's readiness endpoint, on its node's address.
pub const NODE_READY_PORT: u16 = 15021;
pub const NODE_READY_PATH: &str = "/healthz/ready";
/// How long the containers of a node with enrolled pods wait for the node proxy's readiness.
const NODE_READY_WAIT: Duration = Duration::from_secs(30);
/// How often a start gate probes.
const GATE_POLL: Duration = Duration::from_millis(100);
/// How long a new node-proxy instance has to become ready during an upgrade before it is given up.
const UPGRADE_READY_WAIT: Duration = Duration::from_secs(30);
/// The node agent's metrics and readiness port, on its node's address (istio-cni's metrics port).
pub const AGENT_METRICS_PORT: u16 = 15014;
/// How often the supervisor looks for a change of the control plane's config store (waypoint Gateways to deploy).
const STORE_POLL: Duration = Duration::from_millis(500);

/// What the container runners and probes report to the supervisor's single state owner.
#[derive(Debug)]
enum Event {
    Started {
        pod: usize,
        container: usize,
        pid: u32,
    },
    Exited {
        pod: usize,
        container: usize,
        exit_code: i32,
        reason: String,
        restarting: bool,
    },
    Probe {
        pod: usize,
        container: usize,
        ok: bool,
    },
}

/// Per-container state owned by the supervisor loop.
#[derive(Debug, Default)]
struct Tracked {
    state: Option<ContainerState>,
    restarts: u32,
    probe_ready: bool,
    successes: u32,
    failures: u32,
}

struct Supervisor {
    layout: Layout,
    /// The cluster's plan: the one `cluster up` made, grown by the waypoints deployed since (pods only appended).
    plan: Arc<ClusterPlan>,
    /// Per pod of the plan (same positions), per container.
    tracked: Vec<Vec<Tracked>>,
    ready: BTreeSet<PodKey>,
    /// The objects last written to `objects.json`, so that it is rewritten only when they change.
    objects: Option<serde_json::Value>,
    endpoints: Vec<ServiceEndpoints>,
    /// The endpoints must be recomputed even if readiness did not change: at start, and after the plan grew.
    endpoints_stale: bool,
    dns: watch::Sender<Arc<DnsTable>>,
    started_at: u64,
    /// Why each waypoint Gateway (namespace, name) last could not get its waypoint, so it is logged once per reason.
    refused: BTreeMap<(String, String), String>,
    /// The waypoint pods whose Gateway was deleted, so each is logged once.
    orphans: BTreeSet<(String, String)>,
}

/// Entry point of `ambit cluster supervise`: runs until SIGTERM or SIGINT.
pub fn run(cluster: &str) -> anyhow::Result<()> {
    let layout = Layout::new(cluster);
    let plan: ClusterPlan = serde_json::from_slice(
        &std::fs::read(layout.plan_file()).with_context(|| format!("no plan for cluster {cluster}"))?,
    )
    .context("plan.json is not readable")?;
    std::fs::write(layout.supervisor_pid_file(), std::process::id().to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(supervise(layout, Arc::new(plan)))
}

async fn supervise(layout: Layout, plan: Arc<ClusterPlan>) -> anyhow::Result<()> {
    let (dns_tx, dns_rx) = watch::channel(Arc::new(DnsTable::new(&plan.cluster_domain)));
    start_dns(&layout, &plan, dns_rx).await?;
    // The first objects (no pod ready yet) are in place before the control plane reads them.
    let mut sup = Supervisor::new(layout.clone(), plan.clone(), dns_tx);
    sup.publish();
    // The components stop after the containers, so they have their own stop signal.
    let (system_stop_tx, system_stop_rx) = watch::channel(false);
    let (components, node_gates, upgrades) = start_components(&layout, &plan, &system_stop_rx);
    let (events_tx, mut events) = mpsc::channel(256);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut pods = PodStarter {
        layout: layout.clone(),
        gates: node_gates,
        events: events_tx,
        stop: stop_rx,
        runners: tokio::task::JoinSet::new(),
    };
    for pi in 0..plan.pods.len() {
        pods.start(&plan, pi);
    }
    let mut store = StoreWatch::new(layout.config_store_file());
    let mut store_poll = tokio::time::interval(STORE_POLL);
    store_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    // The supervisor outlives the terminal that started it: a hangup is not a reason to stop the cluster.
    let mut hangup = signal(SignalKind::hangup())?;
    let mut upgrade = signal(SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            Some(ev) = events.recv() => sup.handle(ev),
            _ = store_poll.tick() => {
                if let Some(objects) = store.changed() {
                    sup.follow_store(&objects, &mut pods);
                }
            }
            _ = hangup.recv() => tracing::info!("ignoring SIGHUP"),
            _ = upgrade.recv() => take_upgrade_requests(&layout, &upgrades),
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // No pod is added any more: without the starter's sender, the events end once the runners and probes have.
    let mut runners = pods.finish();
    tracing::info!("stopping every container");
    let _ = stop_tx.send(true);
    let drain = async {
        while let Some(ev) = events.recv().await {
            sup.handle(ev);
        }
    };
    let _ = tokio::time::timeout(GRACE + Duration::from_secs(2), async {
        tokio::join!(drain, async { while runners.join_next().await.is_some() {} })
    })
    .await;
    tracing::info!("stopping the node proxies and the control plane");
    let _ = system_stop_tx.send(true);
    stop_components(components).await;
    sup.write_status(true);
    Ok(())
}

/// Starts pods' containers: a [`Runner`] per container, behind its node's start gate, and a readiness probe loop for
/// each container that has a probe; at start, and for the pods added while the cluster runs (it keeps a sender of
/// the supervisor's events for them).
struct PodStarter {
    layout: Layout,
    /// The start gates of the nodes that have enrolled pods (see [`start_components`]).
    gates: BTreeMap<String, watch::Receiver<bool>>,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
    runners: tokio::task::JoinSet<()>,
}

// === impl PodStarter ===

impl PodStarter {
    /// Starts the containers of the pod at position `pi` of `plan`.
    fn start(&mut self, plan: &ClusterPlan, pi: usize) {
        let pod = &plan.pods[pi];
        for (ci, container) in pod.containers.iter().enumerate() {
            let mut runner = Runner::new(&self.layout, plan, pi, ci, self.events.clone(), self.stop.clone());
            runner.gate = self.gates.get(&pod.node).cloned();
            self.runners.spawn(runner.run());
            if let Some(probe) = &container.readiness {
                tokio::spawn(probe_loop(
                    self.layout.node_ns(&pod.node),
                    pod.ip,
                    probe.clone(),
                    pi,
                    ci,
                    self.events.clone(),
                    self.stop.clone(),
                ));
            }
        }
    }

    /// The runners, with the starter's event sender dropped (so the events end when the runners and probes do).
    fn finish(self) -> tokio::task::JoinSet<()> {
        self.runners
    }
}

/// Follows the control plane's config store file, which it replaces (by rename) on every change.
struct StoreWatch {
    path: PathBuf,
    /// The modification time, inode and size of the file last read.
    seen: Option<(std::time::SystemTime, u64, u64)>,
}

// === impl StoreWatch ===

impl StoreWatch {
    fn new(path: PathBuf) -> Self {
        Self { path, seen: None }
    }

    /// The store's objects if the file changed since the last call (and parses); None otherwise. A file that does not
    /// parse is logged, and read again once it changes.
    fn changed(&mut self) -> Option<Vec<Object>> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.path).ok()?;
        let stamp = (meta.modified().ok()?, meta.ino(), meta.len());
        if self.seen == Some(stamp) {
            return None;
        }
        self.seen = Some(stamp);
        let name = self.path.display().to_string();
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| tracing::warn!(store = %name, error = %e, "cannot read the config store"))
            .ok()?;
        match ambit_config::parse(&name, &text) {
            Ok(objects) => Some(objects),
            Err(diagnostics) => {
                let problems: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
                let problems = problems.join("; ");
                tracing::warn!(store = %name, %problems, "the config store does not parse; waypoints not followed");
                None
            }
        }
    }
}

/// Removes what creating a pod's network made (best effort): its namespace and its `/etc` overrides.
fn remove_pod_network(layout: &Layout, pod: &PodPlan) {
    let ns = layout.pod_ns(&pod.namespace, &pod.name);
    if ambit_netns::list(&ns).contains(&ns)
        && let Err(e) = net::delete_netns(&ns)
    {
        tracing::warn!(namespace = %ns, error = %e, "cannot remove a pod's namespace");
    }
    let _ = std::fs::remove_dir_all(layout.etc_dir(&pod.namespace, &pod.name));
}

/// The node-proxy components' upgrade channels, by node.
type Upgrades = BTreeMap<String, mpsc::Sender<crate::upgrade::Request>>;

/// Starts the control plane, one node agent and one node proxy per node, and the start gates of the nodes that have
/// enrolled pods: a receiver per such node that turns true once its proxy is ready (or `NODE_READY_WAIT` passed).
fn start_components(
    layout: &Layout,
    plan: &ClusterPlan,
    stop: &watch::Receiver<bool>,
) -> (
    tokio::task::JoinSet<()>,
    BTreeMap<String, watch::Receiver<bool>>,
    Upgrades,
) {
    let mut components = tokio::task::JoinSet::new();
    components.spawn(Component::control(layout, plan, stop.clone()).run());
    let (control_tx, control_rx) = watch::channel(false);
    let control = Gate {
        what: "the control plane".into(),
        ns: layout.fabric_ns(),
        ip: plan.control_address,
        action: ProbeAction::Tcp { port: CONTROL_PORT },
        limit: CONTROL_WAIT,
    };
    tokio::spawn(control.open(control_tx, stop.clone()));
    let mut upgrades = Upgrades::new();
    for node in &plan.nodes {
        let agent = Component::agent(layout, node, Some(control_rx.clone()), stop.clone());
        components.spawn(agent.run());
        let (tx, rx) = mpsc::channel(4);
        let mut component = Component::node(layout, &node.name, Some(control_rx.clone()), stop.clone());
        component.upgrades = Some(rx);
        components.spawn(component.run());
        upgrades.insert(node.name.clone(), tx);
    }
    let enrolled = mesh::enrolled(plan);
    let enrolled_nodes: BTreeSet<&str> = plan
        .pods
        .iter()
        .filter(|p| enrolled.contains(&(p.namespace.clone(), p.name.clone())))
        .map(|p| p.node.as_str())
        .collect();
    let mut gates = BTreeMap::new();
    for node in plan.nodes.iter().filter(|n| enrolled_nodes.contains(n.name.as_str())) {
        let (tx, rx) = watch::channel(false);
        let gate = Gate {
            what: format!("the node proxy of {}", node.name),
            ns: layout.node_ns(&node.name),
            ip: node.address,
            action: ProbeAction::Http {
                port: NODE_READY_PORT,
                path: NODE_READY_PATH.into(),
            },
            limit: NODE_READY_WAIT,
        };
        tokio::spawn(gate.open(tx, stop.clone()));
        gates.insert(node.name.clone(), rx);
    }
    (components, gates, upgrades)
}

/// Hands every pending upgrade request (see [`crate::upgrade`]) to its node's proxy component.
fn take_upgrade_requests(layout: &Layout, upgrades: &Upgrades) {
    for (node, tx) in upgrades {
        let path = layout.upgrade_request(node);
        let Ok(id) = std::fs::read_to_string(&path) else {
            continue;
        };
        let _ = std::fs::remove_file(&path);
        let request = crate::upgrade::Request {
            id: id.trim().to_string(),
        };
        tracing::info!(%node, id = %request.id, "node proxy upgrade requested");
        if tx.try_send(request.clone()).is_err() {
            crate::upgrade::write_result(
                layout,
                node,
                &request.failed("an upgrade of this node is already running"),
            );
        }
    }
}

/// Waits for every component to have stopped (each SIGKILLs its process group after [`SYSTEM_GRACE`]).
async fn stop_components(mut components: tokio::task::JoinSet<()>) {
    let all = async { while components.join_next().await.is_some() {} };
    if tokio::time::timeout(SYSTEM_GRACE + Duration::from_secs(1), all)
        .await
        .is_err()
    {
        tracing::warn!("a component did not stop in time");
    }
}

/// Returns once the cluster stops (or the supervisor is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Waits until `gate` opens (true, or its sender is gone); false if the cluster stops first.
async fn wait_gate(gate: &mut watch::Receiver<bool>, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = gate.wait_for(|open| *open) => true,
        _ = stopped(stop) => false,
    }
}

/// Binds the cluster DNS server (UDP and TCP on the DNS address) inside every node namespace.
async fn start_dns(layout: &Layout, plan: &ClusterPlan, table: watch::Receiver<Arc<DnsTable>>) -> anyhow::Result<()> {
    let addr = SocketAddr::from((plan.dns_ip, 53));
    for node in &plan.nodes {
        let (udp, tcp) = ambit_netns::run_in(&layout.node_ns(&node.name), move || {
            let udp = std::net::UdpSocket::bind(addr)?;
            let tcp = std::net::TcpListener::bind(addr)?;
            udp.set_nonblocking(true)?;
            tcp.set_nonblocking(true)?;
            Ok::<_, std::io::Error>((udp, tcp))
        })?
        .with_context(|| format!("cannot bind DNS {addr} on node {}", node.name))?;
        tokio::spawn(crate::dns::serve_udp(
            tokio::net::UdpSocket::from_std(udp)?,
            table.clone(),
        ));
        tokio::spawn(crate::dns::serve_tcp(
            tokio::net::TcpListener::from_std(tcp)?,
            table.clone(),
        ));
    }
    Ok(())
}

// === impl Supervisor ===

impl Supervisor {
    fn new(layout: Layout, plan: Arc<ClusterPlan>, dns: watch::Sender<Arc<DnsTable>>) -> Self {
        let tracked = plan
            .pods
            .iter()
            .map(|p| p.containers.iter().map(|_| Tracked::default()).collect())
            .collect();
        Self {
            layout,
            plan,
            tracked,
            ready: BTreeSet::new(),
            objects: None,
            endpoints: Vec::new(),
            endpoints_stale: true,
            dns,
            started_at: unix_now(),
            refused: BTreeMap::new(),
            orphans: BTreeSet::new(),
        }
    }

    /// Deploys the waypoint of every waypoint Gateway of the config store's `objects` that has no pod yet, and logs
    /// the Gateways that cannot have one and the waypoint pods whose Gateway was deleted (each once).
    fn follow_store(&mut self, objects: &[Object], pods: &mut PodStarter) {
        let orphans: BTreeSet<(String, String)> = waypoint::orphaned(&self.plan, objects).into_iter().collect();
        for (namespace, pod) in orphans.difference(&self.orphans) {
            tracing::info!(%namespace, %pod, "the waypoint's Gateway was deleted; its pod keeps running (the local \
                cluster does not remove pods while it runs)");
        }
        self.orphans = orphans;
        for gateway in waypoint::unplanned(&self.plan, objects) {
            let meta = &gateway.metadata;
            let key = (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            );
            let outcome = waypoint::plan_added(&self.plan, gateway).and_then(|added| self.deploy(added, pods));
            match outcome {
                Ok(pod) => {
                    tracing::info!(namespace = %key.0, gateway = %key.1, %pod, "waypoint deployed");
                    self.refused.remove(&key);
                }
                Err(reason) if self.refused.get(&key) != Some(&reason) => {
                    tracing::warn!(namespace = %key.0, gateway = %key.1, %reason, "the Gateway gets no waypoint");
                    self.refused.insert(key, reason);
                }
                Err(_) => {}
            }
        }
    }

    /// Runs a waypoint's objects: the pod's network, the plan that includes them (written for the CLI), the pod's
    /// containers, and the objects, endpoints and DNS names published. Returns the pod's name. On failure nothing
    /// changed: the pod's network is removed again.
    fn deploy(&mut self, added: Added, pods: &mut PodStarter) -> Result<String, String> {
        let pod = added.pod.clone();
        let plan = waypoint::with_added(ClusterPlan::clone(&self.plan), added);
        let created = net::create_pod(&self.layout, &plan, &pod).map_err(|e| format!("cannot create its network: {e}"));
        let written = created.and_then(|()| {
            let path = self.layout.plan_file();
            status::write_json_atomic(&path, &plan).map_err(|e| format!("cannot write {}: {e}", path.display()))
        });
        if let Err(reason) = written {
            remove_pod_network(&self.layout, &pod);
            return Err(reason);
        }
        self.plan = Arc::new(plan);
        self.track_new_pods();
        self.endpoints_stale = true;
        pods.start(&self.plan, self.plan.pods.len() - 1);
        self.publish();
        Ok(pod.name)
    }

    /// Tracks the containers of the pods the plan gained (appended at its end).
    fn track_new_pods(&mut self) {
        let new = self.plan.pods.iter().skip(self.tracked.len());
        let new: Vec<Vec<Tracked>> = new
            .map(|p| p.containers.iter().map(|_| Tracked::default()).collect())
            .collect();
        self.tracked.extend(new);
    }

    fn handle(&mut self, ev: Event) {
        tracing::debug!(?ev, "event");
        match ev {
            Event::Started { pod, container, pid } => {
                let t = &mut self.tracked[pod][container];
                t.state = Some(ContainerState::Running {
                    pid,
                    started_at: unix_now(),
                });
                (t.probe_ready, t.successes, t.failures) = (false, 0, 0);
            }
            Event::Exited {
                pod,
                container,
                exit_code,
                reason,
                restarting,
            } => {
                let t = &mut self.tracked[pod][container];
                t.state = Some(if restarting {
                    ContainerState::Waiting {
                        reason: "CrashLoopBackOff".into(),
                    }
                } else {
                    ContainerState::Terminated {
                        exit_code,
                        reason,
                        finished_at: unix_now(),
                    }
                });
                t.restarts += u32::from(restarting);
                t.probe_ready = false;
            }
            Event::Probe { pod, container, ok } => self.probe_result(pod, container, ok),
        }
        self.publish();
    }

    fn probe_result(&mut self, pod: usize, container: usize, ok: bool) {
        let Some(probe) = &self.plan.pods[pod].containers[container].readiness else {
            return;
        };
        let t = &mut self.tracked[pod][container];
        if ok {
            (t.successes, t.failures) = (t.successes + 1, 0);
            if t.successes >= probe.success_threshold {
                t.probe_ready = true;
            }
        } else {
            (t.successes, t.failures) = (0, t.failures + 1);
            if t.failures >= probe.failure_threshold {
                t.probe_ready = false;
            }
        }
    }

    fn container_ready(&self, pod: usize, container: usize) -> bool {
        let t = &self.tracked[pod][container];
        let running = matches!(t.state, Some(ContainerState::Running { .. }));
        let probed = self.plan.pods[pod].containers[container].readiness.is_none() || t.probe_ready;
        running && probed
    }

    /// Recomputes readiness; on a change reprograms every node and the DNS table; rewrites the objects when they
    /// changed (a readiness change always changes them); always rewrites the status.
    fn publish(&mut self) {
        let ready: BTreeSet<PodKey> = self
            .plan
            .pods
            .iter()
            .enumerate()
            .filter(|(pi, p)| (0..p.containers.len()).all(|ci| self.container_ready(*pi, ci)))
            .map(|(_, p)| (p.namespace.clone(), p.name.clone()))
            .collect();
        if ready != self.ready || self.endpoints_stale {
            self.ready = ready;
            self.endpoints_stale = false;
            self.endpoints = endpoints::compute(&self.plan, &self.ready);
            self.program_nodes();
            let _ = self.dns.send(Arc::new(dns_table(&self.plan, &self.endpoints)));
        }
        let status = self.status(false);
        self.write_objects(&status);
        if let Err(e) = status.write(&self.layout.status_file()) {
            tracing::error!(error = %e, "cannot write status");
        }
    }

    fn program_nodes(&self) {
        let rules = endpoints::ruleset(&self.endpoints);
        for node in &self.plan.nodes {
            let ns = self.layout.node_ns(&node.name);
            if let Err(e) = crate::net::run("ip", &["netns", "exec", &ns, "nft", "-f", "-"], Some(&rules)) {
                tracing::error!(node = %node.name, error = %e, "cannot program service rules");
            }
        }
    }

    /// Writes `objects.json` if the objects differ from those last written (kept unwritten after a failure, so the
    /// next change retries).
    fn write_objects(&mut self, status: &ClusterStatus) {
        // No pod is marked redirected here: the node agents mark them through the control plane.
        let objects = objects::cluster_objects(&self.plan, Some(status), &BTreeSet::new());
        if self.objects.as_ref() == Some(&objects) {
            return;
        }
        match status::write_json_atomic(&self.layout.objects_file(), &objects) {
            Ok(()) => self.objects = Some(objects),
            Err(e) => tracing::error!(error = %e, "cannot write the cluster objects"),
        }
    }

    fn write_status(&self, stopped: bool) {
        if let Err(e) = self.status(stopped).write(&self.layout.status_file()) {
            tracing::error!(error = %e, "cannot write status");
        }
    }

    /// The supervisor's view of every pod; a pod is ready when every container is.
    fn status(&self, stopped: bool) -> ClusterStatus {
        let pods = self
            .plan
            .pods
            .iter()
            .enumerate()
            .map(|(pi, p)| self.pod_status(pi, p))
            .collect();
        ClusterStatus {
            supervisor_pid: std::process::id(),
            started_at: self.started_at,
            pods,
            endpoints: self.endpoints.clone(),
            stopped,
        }
    }

    fn pod_status(&self, pi: usize, pod: &PodPlan) -> PodStatus {
        let containers: Vec<ContainerStatus> = pod
            .containers
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                let t = &self.tracked[pi][ci];
                ContainerStatus {
                    name: c.name.clone(),
                    state: t.state.clone().unwrap_or(ContainerState::Waiting {
                        reason: "ContainerCreating".into(),
                    }),
                    ready: self.container_ready(pi, ci),
                    restarts: t.restarts,
                }
            })
            .collect();
        PodStatus {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            phase: phase(&containers),
            ready: self.ready.contains(&(pod.namespace.clone(), pod.name.clone())),
            containers,
        }
    }
}

fn phase(containers: &[ContainerStatus]) -> Phase {
    let running = containers
        .iter()
        .any(|c| matches!(c.state, ContainerState::Running { .. }));
    let codes: Option<Vec<i32>> = containers
        .iter()
        .map(|c| match c.state {
            ContainerState::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        })
        .collect();
    match (running, codes) {
        (true, _) => Phase::Running,
        (false, Some(codes)) if codes.iter().all(|c| *c == 0) => Phase::Succeeded,
        (false, Some(_)) => Phase::Failed,
        (false, None) => Phase::Pending,
    }
}

/// The DNS names of the cluster: each service's FQDN answers with its ClusterIP, or with its ready pod IPs when
/// headless.
pub fn dns_table(plan: &ClusterPlan, endpoints: &[ServiceEndpoints]) -> DnsTable {
    let mut table = DnsTable::new(&plan.cluster_domain);
    for eps in endpoints {
        let fqdn = format!("{}.{}.svc.{}", eps.name, eps.namespace, plan.cluster_domain);
        let addrs = match eps.cluster_ip {
            Some(ip) => vec![ip],
            None => endpoints::ready_ips(eps),
        };
        table.insert(&fqdn, addrs);
    }
    table
}

/// A probe that opens a start gate: polled from a namespace every [`GATE_POLL`] until it succeeds, or until `limit`
/// passed (then the gate opens anyway, with a warning).
struct Gate {
    what: String,
    ns: String,
    ip: Ipv4Addr,
    action: ProbeAction,
    limit: Duration,
}

// === impl Gate ===

impl Gate {
    async fn open(self, gate: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let started = Instant::now();
        loop {
            let (ns, ip, action) = (self.ns.clone(), self.ip, self.action.clone());
            let probe = move || ambit_netns::run_in(&ns, move || probe_once(ip, &action, Duration::from_secs(1), None));
            let ok = tokio::task::spawn_blocking(probe)
                .await
                .map(|r| r.unwrap_or(false))
                .unwrap_or(false);
            if ok {
                tracing::info!(elapsed = ?started.elapsed(), "{} is ready", self.what);
                break;
            }
            if started.elapsed() >= self.limit {
                tracing::warn!(
                    "{} is not ready after {:?}; starting what waits for it anyway",
                    self.what,
                    self.limit
                );
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(GATE_POLL) => {}
                _ = stopped(&mut stop) => return,
            }
        }
        gate.send_replace(true);
    }
}

/// One of the cluster's own processes (`ambit control`, `ambit agent`, `ambit node`): run inside its namespace like a
/// container, with its output appended to its component log, restarted with backoff whenever it exits, until the
/// cluster stops; then SIGTERM, and SIGKILL to its process group after [`SYSTEM_GRACE`]. A node proxy can also be
/// upgraded in place (see [`Component::upgrade`]).
struct Component {
    name: String,
    ns: String,
    /// The supervisor's own binary, resolved when the supervisor starts, so a restart after a rebuild runs the new
    /// binary at the same path.
    exe: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    workdir: PathBuf,
    layout: Layout,
    /// What the first start waits for (the control plane, for a node proxy).
    gate: Option<watch::Receiver<bool>>,
    stop: watch::Receiver<bool>,
    /// The node of a node proxy, and its upgrade requests.
    node: Option<String>,
    upgrades: Option<mpsc::Receiver<crate::upgrade::Request>>,
}

// === impl Component ===

impl Component {
    /// `ambit control` in the fabric namespace, on the control address: it serves the cluster's CA and credentials,
    /// translates the cluster's objects and its config store into the node proxies' state, and serves the config
    /// API (`ambit apply`, `get`, ...) on the control socket.
    fn control(layout: &Layout, plan: &ClusterPlan, stop: watch::Receiver<bool>) -> Self {
        let path = |p: PathBuf| p.display().to_string();
        let args = vec![
            "control".into(),
            "--listen".into(),
            SocketAddr::from((plan.control_address, CONTROL_PORT)).to_string(),
            "--ca-dir".into(),
            path(layout.ca_dir()),
            "--plan".into(),
            path(layout.plan_file()),
            "--node-credentials".into(),
            path(layout.node_credentials_file()),
            "--objects-file".into(),
            path(layout.objects_file()),
            "--config-store".into(),
            path(layout.config_store_file()),
            "--api-socket".into(),
            path(layout.control_socket()),
            "--cluster-domain".into(),
            plan.cluster_domain.clone(),
            "--trust-domain".into(),
            crate::runtime::TRUST_DOMAIN.into(),
        ];
        Self::new(
            layout,
            layout::CONTROL_COMPONENT.into(),
            layout.fabric_ns(),
            args,
            None,
            stop,
        )
    }

    /// `ambit agent` in the node's namespace: it follows the node's pods through the control plane's API socket,
    /// finds their network namespaces among the cluster's, keeps their capture, and serves them to the node proxy
    /// on the node's ZDS socket.
    fn agent(
        layout: &Layout,
        node: &NodePlan,
        gate: Option<watch::Receiver<bool>>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let path = |p: PathBuf| p.display().to_string();
        let args = vec![
            "agent".into(),
            "--node".into(),
            node.name.clone(),
            "--control-socket".into(),
            path(layout.control_socket()),
            "--zds-socket".into(),
            path(layout.zds_socket(&node.name)),
            "--netns-dir".into(),
            ambit_netns::NETNS_DIR.into(),
            "--netns-prefix".into(),
            layout.pod_ns_prefix(),
            "--metrics-address".into(),
            SocketAddr::from((node.address, AGENT_METRICS_PORT)).to_string(),
        ];
        let name = layout::agent_component(&node.name);
        Self::new(layout, name, layout.node_ns(&node.name), args, gate, stop)
    }

    /// `ambit node` in the node's namespace, taking its pods from the node agent's ZDS socket; it finds everything
    /// else from the cluster's layout.
    fn node(layout: &Layout, node: &str, gate: Option<watch::Receiver<bool>>, stop: watch::Receiver<bool>) -> Self {
        let zds = layout.zds_socket(node).display().to_string();
        let args = [
            "node",
            "--node",
            node,
            "--cluster",
            layout.cluster(),
            "--zds-socket",
            &zds,
        ]
        .map(String::from)
        .to_vec();
        let name = layout::node_component(node);
        let mut component = Self::new(layout, name, layout.node_ns(node), args, gate, stop);
        component.node = Some(node.to_string());
        component
    }

    fn new(
        layout: &Layout,
        name: String,
        ns: String,
        args: Vec<String>,
        gate: Option<watch::Receiver<bool>>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot find the supervisor's binary; running `ambit` from PATH");
            PathBuf::from("ambit")
        });
        Self {
            exe,
            log: layout.component_log(&name),
            workdir: layout.dir().to_path_buf(),
            layout: layout.clone(),
            name,
            ns,
            args,
            gate,
            stop,
            node: None,
            upgrades: None,
        }
    }

    async fn run(mut self) {
        if let Some(mut gate) = self.gate.take()
            && !wait_gate(&mut gate, &mut self.stop).await
        {
            return;
        }
        let mut backoff = BACKOFF_START;
        // Old node-proxy instances draining after an upgrade.
        let mut draining = tokio::task::JoinSet::new();
        let mut instances = 0u64;
        loop {
            let began = Instant::now();
            match self.spawn(&[]) {
                Ok(mut child) => {
                    let mut pid = child.id().unwrap_or(0);
                    tracing::info!(component = %self.name, pid, "started");
                    loop {
                        tokio::select! {
                            status = child.wait() => {
                                let (exit_code, reason) = exit_outcome(status);
                                tracing::warn!(component = %self.name, pid, exit_code, %reason, "exited");
                                break;
                            }
                            _ = stopped(&mut self.stop) => {
                                terminate(&mut child, pid, SYSTEM_GRACE).await;
                                while draining.join_next().await.is_some() {}
                                tracing::info!(component = %self.name, "stopped");
                                return;
                            }
                            Some(request) = next_upgrade(&mut self.upgrades) => {
                                instances += 1;
                                let outcome = self.upgrade(&mut child, &mut pid, instances, &mut draining).await;
                                let result = match outcome {
                                    Ok((old, new)) => request.done(old, new),
                                    Err(error) => {
                                        tracing::warn!(component = %self.name, %error, "upgrade failed");
                                        request.failed(&error)
                                    }
                                };
                                if let Some(node) = &self.node {
                                    crate::upgrade::write_result(&self.layout, node, &result);
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(component = %self.name, error = %e, "cannot start"),
            }
            if began.elapsed() >= BACKOFF_RESET {
                backoff = BACKOFF_START;
            }
            tracing::info!(component = %self.name, ?backoff, "restarting");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut self.stop) => {
                    while draining.join_next().await.is_some() {}
                    return;
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Replaces the running node proxy `child` without dropping a connection: starts a new instance beside it (the
    /// in-pod listeners share their ports through SO_REUSEPORT; the node agent hands its pods to the newest
    /// connection), waits until the new one says it is ready, then sends the old one SIGTERM, on which it stops
    /// accepting and serves its established connections until they end. The old instance is kept in `draining` until
    /// it exits (or the cluster stops). Returns the old and new PIDs; on failure the old instance keeps running.
    async fn upgrade(
        &mut self,
        child: &mut tokio::process::Child,
        pid: &mut u32,
        instance: u64,
        draining: &mut tokio::task::JoinSet<()>,
    ) -> Result<(u32, u32), String> {
        let node = self.node.clone().ok_or("only a node proxy can be upgraded")?;
        let ready = self.layout.node_ready_file(&node, instance);
        let _ = std::fs::remove_file(&ready);
        let ready_arg = ready.display().to_string();
        let mut new = self
            .spawn(&["--ready-file", &ready_arg])
            .map_err(|e| format!("cannot start a new instance: {e}"))?;
        let new_pid = new.id().unwrap_or(0);
        tracing::info!(component = %self.name, old = *pid, new = new_pid, "upgrade: new instance started");
        let began = Instant::now();
        while !ready.exists() {
            if let Ok(Some(status)) = new.try_wait() {
                return Err(format!("the new instance exited before it was ready ({status})"));
            }
            if began.elapsed() >= UPGRADE_READY_WAIT {
                terminate(&mut new, new_pid, SYSTEM_GRACE).await;
                return Err(format!("the new instance was not ready within {UPGRADE_READY_WAIT:?}"));
            }
            tokio::select! {
                _ = tokio::time::sleep(GATE_POLL) => {}
                _ = stopped(&mut self.stop) => {
                    terminate(&mut new, new_pid, SYSTEM_GRACE).await;
                    return Err("the cluster is stopping".into());
                }
            }
        }
        let _ = std::fs::remove_file(&ready);
        let mut old = std::mem::replace(child, new);
        let old_pid = std::mem::replace(pid, new_pid);
        tracing::info!(component = %self.name, old = old_pid, new = new_pid, elapsed = ?began.elapsed(),
            "upgrade: new instance ready; the old one drains");
        let _ = killpg(Pid::from_raw(old_pid as i32), Signal::SIGTERM);
        let (name, mut stop) = (self.name.clone(), self.stop.clone());
        draining.spawn(async move {
            tokio::select! {
                status = old.wait() => {
                    let (exit_code, reason) = exit_outcome(status);
                    tracing::info!(component = %name, pid = old_pid, exit_code, %reason, "upgrade: the old instance exited");
                }
                _ = stopped(&mut stop) => terminate(&mut old, old_pid, SYSTEM_GRACE).await,
            }
        });
        Ok((old_pid, new_pid))
    }

    fn spawn(&self, extra: &[&str]) -> std::io::Result<tokio::process::Child> {
        let log = OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(&self.exe)
            .args(&self.args)
            .args(extra)
            .env_clear()
            .envs(component_env())
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        cmd.spawn()
    }
}

/// The next upgrade request of a component that takes them; never, for one that does not.
async fn next_upgrade(
    upgrades: &mut Option<mpsc::Receiver<crate::upgrade::Request>>,
) -> Option<crate::upgrade::Request> {
    match upgrades {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The environment of a component: the supervisor's PATH, the run directory override (so `ambit node` finds the
/// same layout), the log settings, with `AMBIT_LOG=info` unless set.
fn component_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        "PATH",
        "AMBIT_RUN_DIR",
        "AMBIT_LOG",
        "AMBIT_LOG_FORMAT",
        "AMBIT_NODE_WORKERS",
    ]
    .into_iter()
    .filter_map(|key| Some((key.to_string(), std::env::var(key).ok()?)))
    .collect();
    if !env.iter().any(|(key, _)| key == "AMBIT_LOG") {
        env.push(("AMBIT_LOG".into(), "info".into()));
    }
    env
}

/// Runs one container, again and again as its restart policy says, until the cluster stops.
struct Runner {
    pod: usize,
    container: usize,
    pod_ns: String,
    plan: PodPlan,
    spec: ContainerPlan,
    /// The cluster's name, given to containers as `AMBIT_CLUSTER`.
    cluster: String,
    log: PathBuf,
    workdir: PathBuf,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
    /// What the first start waits for (the node proxy, on a node with enrolled pods).
    gate: Option<watch::Receiver<bool>>,
}

// === impl Runner ===

impl Runner {
    fn new(
        layout: &Layout,
        plan: &ClusterPlan,
        pod: usize,
        container: usize,
        events: mpsc::Sender<Event>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let p = &plan.pods[pod];
        let spec = p.containers[container].clone();
        Self {
            pod,
            container,
            pod_ns: layout.pod_ns(&p.namespace, &p.name),
            log: layout.container_log(&p.namespace, &p.name, &spec.name),
            workdir: layout.pod_home(&p.namespace, &p.name),
            plan: p.clone(),
            spec,
            cluster: layout.cluster().to_string(),
            events,
            stop,
            gate: None,
        }
    }

    async fn run(mut self) {
        if let Some(mut gate) = self.gate.take()
            && !wait_gate(&mut gate, &mut self.stop).await
        {
            return;
        }
        let mut backoff = BACKOFF_START;
        loop {
            let began = Instant::now();
            let (exit_code, reason) = match self.spawn() {
                Ok(child) => match self.wait(child).await {
                    Some(outcome) => outcome,
                    None => return,
                },
                Err(e) => (-1, format!("StartError: {e}")),
            };
            let restarting = match self.plan.restart_policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => exit_code != 0,
                RestartPolicy::Never => false,
            } && !*self.stop.borrow();
            let ev = Event::Exited {
                pod: self.pod,
                container: self.container,
                exit_code,
                reason,
                restarting,
            };
            let _ = self.events.send(ev).await;
            if !restarting {
                return;
            }
            if began.elapsed() >= BACKOFF_RESET {
                backoff = BACKOFF_START;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        std::fs::create_dir_all(&self.workdir)?;
        let log = OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.pod_ns])
            .args(&self.spec.argv)
            .env_clear()
            .envs(container_env(&self.cluster, &self.plan, &self.spec, &self.workdir))
            .current_dir(
                self.spec
                    .working_dir
                    .as_ref()
                    .map(PathBuf::from)
                    .unwrap_or(self.workdir.clone()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        cmd.spawn()
    }

    /// Waits for the process to end; on stop, terminates its process group and returns None.
    async fn wait(&mut self, mut child: tokio::process::Child) -> Option<(i32, String)> {
        let pid = child.id().unwrap_or(0);
        let started = Event::Started {
            pod: self.pod,
            container: self.container,
            pid,
        };
        let _ = self.events.send(started).await;
        tokio::select! {
            status = child.wait() => Some(exit_outcome(status)),
            _ = self.stop.changed() => {
                terminate(&mut child, pid, GRACE).await;
                let ev = Event::Exited {
                    pod: self.pod, container: self.container, exit_code: 143,
                    reason: "Terminated".into(), restarting: false,
                };
                let _ = self.events.send(ev).await;
                None
            }
        }
    }
}

fn exit_outcome(status: std::io::Result<std::process::ExitStatus>) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(0), _) => (0, "Completed".into()),
            (Some(code), _) => (code, "Error".into()),
            (None, Some(sig)) => (128 + sig, format!("Signal {sig}")),
            (None, None) => (-1, "Error".into()),
        },
        Err(e) => (-1, format!("Error: {e}")),
    }
}

/// SIGTERM to the process group of a container or component, then SIGKILL after the grace period.
async fn terminate(child: &mut tokio::process::Child, pid: u32, grace: Duration) {
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// The environment of a container process: PATH (with the ambit binary's directory first, so manifests can say
/// `command: [ambit, ...]`), HOME, HOSTNAME and AMBIT_CLUSTER (so `ambit` commands in a pod, such as a waypoint,
/// find their cluster), then the container's own resolved env.
pub fn container_env(
    cluster: &str,
    pod: &PodPlan,
    spec: &ContainerPlan,
    home: &std::path::Path,
) -> Vec<(String, String)> {
    let host_path =
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.display().to_string()));
    let path = match exe_dir {
        Some(dir) => format!("{dir}:{host_path}"),
        None => host_path,
    };
    let mut env = vec![
        ("PATH".to_string(), path),
        ("HOME".to_string(), home.display().to_string()),
        ("HOSTNAME".to_string(), pod.name.clone()),
        ("AMBIT_CLUSTER".to_string(), cluster.to_string()),
    ];
    env.retain(|(k, _)| !spec.env.iter().any(|(sk, _)| sk == k));
    env.extend(spec.env.iter().cloned());
    env
}

async fn probe_loop(
    node_ns: String,
    ip: Ipv4Addr,
    probe: Probe,
    pod: usize,
    container: usize,
    events: mpsc::Sender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_secs(probe.initial_delay_seconds.into());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        let (ns, action, timeout) = (
            node_ns.clone(),
            probe.action.clone(),
            Duration::from_secs(probe.timeout_seconds.max(1).into()),
        );
        let ok = tokio::task::spawn_blocking(move || {
            ambit_netns::run_in(&ns, move || probe_once(ip, &action, timeout, Some(PROBE_SOURCE)))
        })
        .await
        .map(|r| r.unwrap_or(false))
        .unwrap_or(false);
        if events.send(Event::Probe { pod, container, ok }).await.is_err() {
            return;
        }
        delay = Duration::from_secs(probe.period_seconds.max(1).into());
    }
}

/// One probe from the node: a TCP connect, or an HTTP GET answered with 200..400.
/// `source`, when given, is the local address the probe connects from (it must be on the node): pod probes come from
/// Istio's probe address so that in-pod capture lets them reach the app directly (ambient §2.3).
fn probe_once(ip: Ipv4Addr, action: &ProbeAction, timeout: Duration, source: Option<Ipv4Addr>) -> bool {
    use std::io::{Read, Write};
    let (port, path) = match action {
        ProbeAction::Tcp { port } => (*port, None),
        ProbeAction::Http { port, path } => (*port, Some(path)),
    };
    let Ok(mut stream) = connect_from(source, SocketAddr::from((ip, port)), timeout) else {
        return false;
    };
    let Some(path) = path else { return true };
    let _ = stream.set_read_timeout(Some(timeout));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: ambit-probe\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() {
        return false;
    }
    let code: u16 = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (200..400).contains(&code)
}

/// A TCP connection to `to`, bound to `source` first when given.
fn connect_from(source: Option<Ipv4Addr>, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&to, timeout);
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&to.into(), timeout)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: "c".into(),
            state,
            ready: false,
            restarts: 0,
        }
    }

    #[test]
    fn phase_follows_containers() {
        let run = ContainerState::Running { pid: 1, started_at: 0 };
        let done = |code| ContainerState::Terminated {
            exit_code: code,
            reason: String::new(),
            finished_at: 0,
        };
        let wait = ContainerState::Waiting {
            reason: "CrashLoopBackOff".into(),
        };
        let cases = [
            (vec![cs(run.clone()), cs(done(0))], Phase::Running),
            (vec![cs(done(0)), cs(done(0))], Phase::Succeeded),
            (vec![cs(done(0)), cs(done(2))], Phase::Failed),
            (vec![cs(wait)], Phase::Pending),
        ];
        for (containers, want) in cases {
            assert_eq!(phase(&containers), want, "{containers:?}");
        }
    }

    #[test]
    fn exit_outcomes() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_outcome(Ok(std::process::ExitStatus::from_raw(0))).0, 0);
        assert_eq!(exit_outcome(Ok(std::process::ExitStatus::from_raw(3 << 8))).0, 3);
        assert_eq!(
            exit_outcome(Ok(std::process::ExitStatus::from_raw(9))),
            (137, "Signal 9".to_string())
        );
    }
}

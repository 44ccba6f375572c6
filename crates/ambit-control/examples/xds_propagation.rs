//! The control plane's benchmark (`make bench`, "control plane" rows): how long one policy change takes to reach
//! every node proxy with 10,000 workloads in the store, and the control plane's memory with them loaded.
//!
//! It writes a state file of 10,000 workloads (100 namespaces, 50 nodes, 500 services, 50 policies) into a temporary
//! directory, starts the real `ambit control` on it as a child process, connects one delta xDS client per node
//! in-process (`ambit_xds::delta::XdsClient` over TLS with the node's token, as the node proxy does; the first alone,
//! then the others at once), waits until every client holds every resource, and reads the control plane's VmRSS and
//! VmHWM. Then, several times, it rewrites the state file with one more DENY policy (atomic rename) and times how
//! long until every client has applied it. The control plane checks the state file every 100 ms (`STATE_POLL`), so each figure includes a
//! wait of 0 to 100 ms before the rewrite is even read.
//!
//! ```text
//! cargo build --release --bin ambit
//! cargo run --release --example xds_propagation -p ambit-control -- target/release/ambit
//! ```
//!
//! Options: `--workloads N` (10000), `--clients N` (10), `--changes N` (5). Prints rows for the bench table; exits
//! non-zero only when the measurement itself fails (a missed target is reported, not fatal).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ambit_api::istio::security as pb_security;
use ambit_api::prost::Message;
use ambit_api::{AUTHORIZATION_TYPE_URL, WORKLOAD_ADDRESS_TYPE_URL};
use ambit_cluster::model::{ClusterPlan, ContainerPlan, NamespacePlan, NodePlan, PodPlan, RestartPolicy};
use ambit_control::ca::auth::generate_token;
use ambit_identity::cert::TrustBundle;
use ambit_node::state::model::{
    Hostname, Namespace, NetworkAddress, Port, PortMapping, Service, ServiceAccount, ServiceKey, TunnelProtocol,
    Workload, WorkloadType, WorkloadUid,
};
use ambit_node::state::source::StateFile;
use ambit_policy::{Action, Authorization, Clause, Group, Match, PolicyRef, Scope, StringMatch};
use ambit_types::TrustDomain;
use ambit_xds::delta::{Handler, Rejection, Transport, Update, XdsClient, XdsConfig};
use anyhow::{Context, bail};
use tokio::sync::{mpsc, watch};

/// The nodes workloads are spread over (and the most clients, one per node).
const NODES: usize = 50;
/// Apps per namespace, each a service with its own service account.
const APPS_PER_NAMESPACE: usize = 5;
/// The issue's targets.
const TARGET_LATENCY: Duration = Duration::from_secs(1);
const TARGET_RSS_MIB: f64 = 200.0;
/// How often `ambit control` checks the state file (`STATE_POLL` in ambit-control).
const STATE_POLL: Duration = Duration::from_millis(100);
/// Longest wait for the control plane to listen, the clients to sync, or a change to arrive.
const DEADLINE: Duration = Duration::from_secs(60);
const TRUST_DOMAIN: &str = "cluster.local";
/// The bench table's label column (scripts/bench.sh).
const LABEL_WIDTH: usize = 46;
const VALUE_WIDTH: usize = 44;

struct Options {
    ambit: PathBuf,
    workloads: usize,
    clients: usize,
    changes: usize,
}

/// What one client reports to the measurement.
struct Arrival {
    client: usize,
    policy: String,
    at: Instant,
}

/// Counts what a client holds of one type (names added minus names removed).
struct Counter {
    type_url: &'static str,
    held: HashSet<String>,
    count: Arc<AtomicUsize>,
    /// For policies: reports each DENY policy the first time it arrives.
    arrivals: Option<(usize, mpsc::UnboundedSender<Arrival>)>,
}

/// The `ambit control` child; killed when dropped.
struct ControlPlane {
    child: Child,
    log: PathBuf,
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("xds_propagation: {error:#}");
            eprintln!("usage: xds_propagation AMBIT [--workloads N] [--clients N] [--changes N]");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("xds_propagation: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xds_propagation: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        ambit: PathBuf::new(),
        workloads: 10_000,
        clients: 10,
        changes: 5,
    };
    let mut ambit = None;
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> anyhow::Result<usize> {
            let value = args.next().with_context(|| format!("{name} needs a value"))?;
            let n: usize = value
                .parse()
                .with_context(|| format!("{name} {value:?} is not a number"))?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        };
        match arg.as_str() {
            "--workloads" => options.workloads = number("--workloads")?,
            "--clients" => options.clients = number("--clients")?.min(NODES),
            "--changes" => options.changes = number("--changes")?,
            _ if arg.starts_with('-') => bail!("unknown option {arg}"),
            _ if ambit.is_none() => ambit = Some(PathBuf::from(arg)),
            _ => bail!("unexpected argument {arg}"),
        }
    }
    options.ambit = ambit.context("the path of the ambit binary is required")?;
    Ok(options)
}

async fn bench(options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let mesh = Mesh::new(options.workloads);
    let (mut state, plan) = mesh.generate()?;
    let tokens: BTreeMap<String, String> = (0..NODES)
        .map(|n| Ok((node_name(n), generate_token()?)))
        .collect::<anyhow::Result<_>>()?;

    let state_file = dir.path().join("mesh-state.json");
    write_state(&state_file, &state)?;
    let state_bytes = fs::metadata(&state_file)?.len();
    let plan_file = dir.path().join("plan.json");
    fs::write(&plan_file, serde_json::to_vec(&plan)?).context("cannot write the plan")?;
    let credentials_file = dir.path().join("node-credentials.json");
    let mut credentials = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&credentials_file)
        .context("cannot write the node credentials")?;
    credentials.write_all(&serde_json::to_vec(&tokens)?)?;
    let ca_dir = dir.path().join("ca");

    // The root is made here, before the control plane opens it.
    let root = Command::new(&options.ambit)
        .args(["ca", "root", "--ca-dir"])
        .arg(&ca_dir)
        .output()
        .with_context(|| format!("cannot run {}", options.ambit.display()))?;
    if !root.status.success() {
        bail!(
            "`ambit ca root` failed: {}",
            String::from_utf8_lossy(&root.stderr).trim()
        );
    }
    let bundle = TrustBundle::from_pem(&String::from_utf8_lossy(&root.stdout)).context("`ambit ca root` output")?;

    let listen = free_port()?;
    let mut control = ControlPlane::start(options, &ca_dir, &plan_file, &credentials_file, &state_file, listen)?;
    control.wait_listening(listen)?;
    let pid = control.child.id();

    // One client per node, as many node proxies: the first alone (the control plane with one stream), then the rest
    // at once.
    let expected = (state.workloads.len() + state.services.len(), state.policies.len());
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut fleet = Fleet {
        listen,
        transport: Transport::Tls {
            bundle,
            server: ambit_xds::ca::control_identity(&TrustDomain::new(TRUST_DOMAIN)?),
        },
        tokens,
        arrivals: arrivals_tx,
        stop: stop_rx,
        counts: Vec::new(),
    };
    fleet.connect()?;
    fleet.wait_synced(&mut control, expected).await?;
    let one_stream = settled_memory(pid).await?;
    let started = Instant::now();
    while fleet.counts.len() < options.clients {
        fleet.connect()?;
    }
    fleet.wait_synced(&mut control, expected).await?;
    let sync_time = started.elapsed();
    let synced_memory = settled_memory(pid).await?;

    // The policy changes: each adds one DENY policy and waits until every client has applied it.
    let cpu_before = cpu_seconds(pid)?;
    let mut rounds = Vec::new();
    for change in 0..options.changes {
        // Spread the rewrites over the poll period, so the figures sample its phase rather than repeat one.
        let offset = STATE_POLL.mul_f64(change as f64 / options.changes as f64);
        tokio::time::sleep(Duration::from_millis(300) + offset).await;
        let policy = deny_policy(change, mesh.namespaces);
        let key = format!("{}/{}", policy.namespace, policy.name);
        state.policies.push(policy);
        write_state(&state_file, &state)?;
        let t0 = Instant::now();
        let mut seen: Vec<Option<Duration>> = vec![None; options.clients];
        while seen.iter().any(Option::is_none) {
            let arrival = tokio::time::timeout_at((t0 + DEADLINE).into(), arrivals.recv()).await;
            let Ok(Some(arrival)) = arrival else {
                control.check_running()?;
                let missing = seen.iter().filter(|s| s.is_none()).count();
                bail!(
                    "policy {key}: {missing} of {} clients did not get it within {DEADLINE:?}",
                    options.clients
                );
            };
            if arrival.policy == key && seen[arrival.client].is_none() {
                seen[arrival.client] = Some(arrival.at.saturating_duration_since(t0));
            }
        }
        let mut latencies: Vec<Duration> = seen.into_iter().flatten().collect();
        latencies.sort();
        rounds.push(latencies);
    }
    let cpu_used = cpu_seconds(pid)? - cpu_before;
    let final_memory = settled_memory(pid).await?;
    let _ = stop_tx.send(true);
    drop(control);

    let memory = [one_stream, synced_memory, final_memory];
    report(options, &mesh, state_bytes, sync_time, memory, &rounds, cpu_used);
    Ok(())
}

/// Prints the rows: `memory` is the control plane's with one stream synced, with every stream synced, and after the
/// policy changes.
fn report(
    options: &Options,
    mesh: &Mesh,
    state_bytes: u64,
    sync_time: Duration,
    memory: [Memory; 3],
    rounds: &[Vec<Duration>],
    cpu_used: f64,
) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // Per change: when the slowest client had it (every node proxy), and when the median client did.
    let all: Vec<f64> = rounds
        .iter()
        .map(|r| ms(r.last().copied().unwrap_or_default()))
        .collect();
    let median_client: Vec<f64> = rounds.iter().map(|r| ms(r[r.len() / 2])).collect();
    let cell = |values: &[f64]| {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(0.0, f64::max);
        format!("{:.0} [{min:.0}-{max:.0}] ms", median(values))
    };
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let resident = |m: Memory| format!("{:.1} MiB (VmHWM {:.1} MiB)", mib(m.rss_kib), mib(m.hwm_kib));
    let rss_target = |m: Memory| {
        format!(
            "< {TARGET_RSS_MIB:.0} MiB  {}",
            verdict(mib(m.rss_kib) < TARGET_RSS_MIB)
        )
    };
    let [one, synced, last] = memory;
    let (clients, changes) = (options.clients, rounds.len());

    println!(
        "\ncontrol plane: {} workloads, {} services, {} policies, {} namespaces, {NODES} nodes; {clients} xDS streams",
        thousands(options.workloads),
        mesh.services(),
        mesh.policies(),
        mesh.namespaces
    );
    let label = format!("measurement (median of {changes} changes [min-max])");
    println!("{label:<LABEL_WIDTH$} {:<VALUE_WIDTH$} target", "value");
    println!("{}", "-".repeat(LABEL_WIDTH + VALUE_WIDTH + 20));
    let row = |label: &str, value: String, target: String| {
        println!(
            "{}",
            format!("{label:<LABEL_WIDTH$} {value:<VALUE_WIDTH$} {target}").trim_end()
        );
    };
    let latency_ok = median(&all) < ms(TARGET_LATENCY);
    let latency_target = format!("< {:.0} ms  {}", ms(TARGET_LATENCY), verdict(latency_ok));
    row(
        &format!("policy change to all {clients} node proxies"),
        cell(&all),
        latency_target,
    );
    row("  to the median node proxy", cell(&median_client), String::new());
    row(
        &format!("control plane RSS, {clients} streams synced"),
        resident(synced),
        rss_target(synced),
    );
    row(
        &format!("  after the {changes} policy changes"),
        resident(last),
        rss_target(last),
    );
    if clients > 1 {
        let per_stream = (mib(synced.rss_kib) - mib(one.rss_kib)) / (clients - 1) as f64;
        let value = format!("{:.1} MiB, then {per_stream:+.1} MiB per stream", mib(one.rss_kib));
        row("  with 1 stream synced", value, String::new());
    }
    let cpu = format!("{:.0} ms", cpu_used * 1e3 / changes.max(1) as f64);
    row("  control plane CPU per policy change", cpu, String::new());
    if clients > 1 {
        let label = format!("initial sync of {} streams at once", clients - 1);
        row(&label, format!("{:.0} ms", ms(sync_time)), String::new());
    }
    println!(
        "figures: crates/ambit-control/examples/xds_propagation.rs against `ambit control --state-file` (a {:.1} MiB \
         state file, rewritten with one more DENY policy per change),",
        state_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  {clients} delta xDS clients in the same process; the control plane reads the file every {} ms, so each \
         change includes 0-{} ms before it is read. Targets are informational.",
        STATE_POLL.as_millis(),
        STATE_POLL.as_millis()
    );
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn node_name(n: usize) -> String {
    format!("node-{}", n + 1)
}

/// A port on loopback nobody listens on now (the control plane binds it right after).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?)
}

/// Replaces the state file atomically, as the local cluster's supervisor does (pretty JSON, then a rename).
fn write_state(path: &Path, state: &StateFile) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(state)?).context("cannot write the state file")?;
    fs::rename(&tmp, path).context("cannot replace the state file")?;
    Ok(())
}

// === the clients ===

/// The xDS clients, one per node, each counting what it holds.
struct Fleet {
    listen: SocketAddr,
    transport: Transport,
    tokens: BTreeMap<String, String>,
    arrivals: mpsc::UnboundedSender<Arrival>,
    stop: watch::Receiver<bool>,
    /// Per client: the addresses and the policies it holds.
    counts: Vec<(Arc<AtomicUsize>, Arc<AtomicUsize>)>,
}

impl Fleet {
    /// Starts the next node's client.
    fn connect(&mut self) -> anyhow::Result<()> {
        let client = self.counts.len();
        let node = node_name(client);
        let (addresses, policies) = (Arc::default(), Arc::default());
        self.counts.push((Arc::clone(&addresses), Arc::clone(&policies)));
        let arrivals = Some((client, self.arrivals.clone()));
        let handlers: Vec<Box<dyn Handler>> = vec![
            Box::new(Counter::new(WORKLOAD_ADDRESS_TYPE_URL, addresses, None)),
            Box::new(Counter::new(AUTHORIZATION_TYPE_URL, policies, arrivals)),
        ];
        let config = XdsConfig {
            address: self.listen.to_string(),
            transport: self.transport.clone(),
            token: self.tokens.get(&node).context("no token for the node")?.clone(),
            node_name: node,
            node_ip: None,
            on_demand: Vec::new(),
        };
        let xds = XdsClient::new(config, handlers).context("cannot configure an xDS client")?;
        let mut stop = self.stop.clone();
        tokio::spawn(xds.run(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }));
        Ok(())
    }

    /// Waits until every client holds `expected` (addresses, policies).
    async fn wait_synced(&self, control: &mut ControlPlane, expected: (usize, usize)) -> anyhow::Result<()> {
        let started = Instant::now();
        let held = || -> Vec<(usize, usize)> {
            let load = |count: &AtomicUsize| count.load(Ordering::Relaxed);
            self.counts.iter().map(|(a, p)| (load(a), load(p))).collect()
        };
        while held().iter().any(|h| *h != expected) {
            control.check_running()?;
            if started.elapsed() > DEADLINE {
                bail!(
                    "the clients did not sync within {DEADLINE:?}: (addresses, policies) held {:?}",
                    held()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

// === the mesh ===

/// The shape of the generated mesh: `workloads` pods spread over namespaces of 100, five apps (each a service with
/// its own service account) per namespace, and 50 nodes.
struct Mesh {
    workloads: usize,
    namespaces: usize,
}

impl Mesh {
    fn new(workloads: usize) -> Self {
        Self {
            workloads,
            namespaces: workloads.div_ceil(100),
        }
    }

    fn services(&self) -> usize {
        self.namespaces * APPS_PER_NAMESPACE
    }

    /// One per even namespace ([`base_policy`]).
    fn policies(&self) -> usize {
        self.namespaces.div_ceil(2)
    }

    /// The state file and the plan (whose pods the control plane indexes by node).
    fn generate(&self) -> anyhow::Result<(StateFile, ClusterPlan)> {
        let mut state = StateFile::default();
        let mut pods = Vec::with_capacity(self.workloads);
        let service_key = |ns: &str, app: usize| -> anyhow::Result<ServiceKey> {
            let hostname = Hostname::new(&format!("{}.{ns}.svc.{TRUST_DOMAIN}", app_name(app)))?;
            Ok(ServiceKey::new(Namespace::new(ns)?, hostname))
        };
        for n in 0..self.namespaces {
            let ns = namespace_name(n);
            for app in 0..APPS_PER_NAMESPACE {
                let key = service_key(&ns, app)?;
                let mut service = Service::new(&app_name(app), key.namespace.clone(), key.hostname.clone());
                let ip =
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + (n * APPS_PER_NAMESPACE + app) as u32 + 1);
                service.addresses = vec![NetworkAddress {
                    network: String::new(),
                    address: ip.into(),
                }];
                service.ports = vec![
                    Port {
                        service_port: 80,
                        target_port: 8080,
                        ..Port::default()
                    },
                    Port {
                        service_port: 9090,
                        target_port: 9090,
                        ..Port::default()
                    },
                ];
                state.services.push(service);
            }
            // Every other namespace has a policy: a namespace-wide ALLOW, or an ALLOW that selects app-0's pods.
            if n.is_multiple_of(2) {
                state.policies.push(base_policy(n));
            }
        }
        for i in 0..self.workloads {
            let (n, j) = (i % self.namespaces, i / self.namespaces);
            let (ns, app, replica) = (namespace_name(n), j % APPS_PER_NAMESPACE, j / APPS_PER_NAMESPACE);
            let name = format!("{}-{replica}", app_name(app));
            let node = node_name(i % NODES);
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 1)) + i as u32);
            let labels = BTreeMap::from([
                ("app".to_string(), app_name(app)),
                ("version".to_string(), "v1".to_string()),
            ]);
            let mut workload = Workload::new(
                WorkloadUid::new(&format!("Kubernetes//Pod/{ns}/{name}"))?,
                Namespace::new(&ns)?,
            );
            workload.name = name.clone();
            workload.addresses = vec![ip.into()];
            workload.tunnel_protocol = TunnelProtocol::Hbone;
            workload.service_account = ServiceAccount::new(&service_account(app))?;
            workload.node = node.clone();
            workload.canonical_name = app_name(app);
            workload.canonical_revision = "v1".to_string();
            workload.workload_type = WorkloadType::Deployment;
            workload.workload_name = app_name(app);
            workload.services = BTreeMap::from([(
                service_key(&ns, app)?,
                vec![
                    PortMapping {
                        service_port: 80,
                        target_port: 8080,
                    },
                    PortMapping {
                        service_port: 9090,
                        target_port: 9090,
                    },
                ],
            )]);
            if n % 4 == 2 && app == 0 {
                workload.authorization_policies = vec![PolicyRef::new(&ns, "allow-app-0")];
            }
            workload.cluster_id = "Kubernetes".to_string();
            workload.labels = labels.clone();
            state.workloads.push(workload);
            pods.push(PodPlan {
                namespace: ns.clone(),
                name: name.clone(),
                uid: format!("{ns}-{name}"),
                node,
                ip,
                labels,
                annotations: BTreeMap::new(),
                service_account: service_account(app),
                restart_policy: RestartPolicy::Always,
                owner: Some(app_name(app)),
                containers: vec![ContainerPlan {
                    name: "app".to_string(),
                    argv: vec!["ambit".to_string(), "app".to_string(), "echo".to_string()],
                    env: Vec::new(),
                    working_dir: None,
                    ports: Vec::new(),
                    readiness: None,
                }],
            });
        }
        let plan = ClusterPlan {
            name: "bench".to_string(),
            cluster_domain: TRUST_DOMAIN.to_string(),
            pod_cidr: "10.64.0.0/10".parse()?,
            service_cidr: "10.96.0.0/12".parse()?,
            node_cidr: "172.31.0.0/24".parse()?,
            control_address: Ipv4Addr::new(172, 31, 0, 1),
            dns_ip: Ipv4Addr::new(10, 96, 0, 10),
            nodes: (0..NODES)
                .map(|n| -> anyhow::Result<NodePlan> {
                    Ok(NodePlan {
                        name: node_name(n),
                        address: Ipv4Addr::new(172, 31, 0, 2 + n as u8),
                        pod_cidr: format!("10.64.{n}.0/24").parse()?,
                        labels: BTreeMap::new(),
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            namespaces: (0..self.namespaces)
                .map(|n| NamespacePlan {
                    name: namespace_name(n),
                    labels: BTreeMap::from([("istio.io/dataplane-mode".to_string(), "ambient".to_string())]),
                    annotations: BTreeMap::new(),
                })
                .collect(),
            service_accounts: Vec::new(),
            pods,
            services: Vec::new(),
            authorization_policies: Vec::new(),
            peer_authentications: Vec::new(),
        };
        Ok((state, plan))
    }
}

fn namespace_name(n: usize) -> String {
    format!("ns-{n:03}")
}

fn app_name(app: usize) -> String {
    format!("app-{app}")
}

fn service_account(app: usize) -> String {
    format!("sa-app-{app}")
}

fn exact(value: String) -> StringMatch {
    StringMatch::Exact(value)
}

/// The policy of namespace `n` (an even one): a namespace-wide ALLOW from its own namespace, or an ALLOW of app-0's
/// pods for app-1's service account on port 8080.
fn base_policy(n: usize) -> Authorization {
    let ns = namespace_name(n);
    let (name, scope, matches) = if n.is_multiple_of(4) {
        let from = Match {
            namespaces: vec![exact(ns.clone())],
            ..Match::default()
        };
        ("allow-same-namespace", Scope::Namespace, vec![from])
    } else {
        let from = Match {
            principals: vec![exact(format!("{TRUST_DOMAIN}/ns/{ns}/sa/{}", service_account(1)))],
            destination_ports: vec![8080],
            ..Match::default()
        };
        ("allow-app-0", Scope::WorkloadSelector, vec![from])
    };
    Authorization {
        name: name.to_string(),
        namespace: ns,
        scope,
        action: Action::Allow,
        groups: vec![Group {
            clauses: vec![Clause { matches }],
        }],
        dry_run: false,
    }
}

/// The policy change number `change`: a namespace-wide DENY of another namespace's traffic to port 9090.
fn deny_policy(change: usize, namespaces: usize) -> Authorization {
    let from = Match {
        namespaces: vec![exact(namespace_name((change + 1) % namespaces))],
        ..Match::default()
    };
    let to = Match {
        destination_ports: vec![9090],
        ..Match::default()
    };
    Authorization {
        name: format!("deny-change-{change}"),
        namespace: namespace_name(change % namespaces),
        scope: Scope::Namespace,
        action: Action::Deny,
        groups: vec![Group {
            clauses: vec![Clause { matches: vec![from] }, Clause { matches: vec![to] }],
        }],
        dry_run: false,
    }
}

// === impl Counter ===

impl Counter {
    fn new(
        type_url: &'static str,
        count: Arc<AtomicUsize>,
        arrivals: Option<(usize, mpsc::UnboundedSender<Arrival>)>,
    ) -> Self {
        Self {
            type_url,
            held: HashSet::new(),
            count,
            arrivals,
        }
    }
}

impl Handler for Counter {
    fn type_url(&self) -> &'static str {
        self.type_url
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejection>> {
        let at = Instant::now();
        for resource in &update.added {
            let new = self.held.insert(resource.name.clone());
            let Some((client, arrivals)) = self.arrivals.as_ref().filter(|_| new) else {
                continue;
            };
            // Only the change policies are decoded, to check they arrived as sent.
            if !resource.name.contains("/deny-change-") {
                continue;
            }
            let body = resource
                .resource
                .as_ref()
                .map(|any| any.value.as_slice())
                .unwrap_or_default();
            match pb_security::Authorization::decode(body) {
                Ok(policy) if policy.action() == pb_security::Action::Deny => {
                    let policy = resource.name.clone();
                    let _ = arrivals.send(Arrival {
                        client: *client,
                        policy,
                        at,
                    });
                }
                _ => {
                    return Err(vec![Rejection::new(
                        &resource.name,
                        "not the DENY policy that was written",
                    )]);
                }
            }
        }
        for name in &update.removed {
            self.held.remove(name);
        }
        self.count.store(self.held.len(), Ordering::Relaxed);
        Ok(())
    }
}

// === the control plane process ===

/// Resident and peak resident size, KiB.
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).context("cannot read the control plane's status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib = line[name.len()..].trim().trim_end_matches("kB").trim();
        Ok(kib.parse()?)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// The memory of the process once the last syncs' ACKs landed and their transient buffers went.
async fn settled_memory(pid: u32) -> anyhow::Result<Memory> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    memory(pid)
}

/// User and system CPU time of the process so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).context("cannot read the control plane's stat")?;
    // Fields after the command name (which may hold spaces): state is the 3rd field, utime and stime the 14th and 15th.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields.get(11).context("short stat")?.parse::<u64>()? + fields.get(12).context("short stat")?.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks() as f64)
}

/// `getconf CLK_TCK`: the unit of /proc's CPU times (100 on Linux).
fn clock_ticks() -> u64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().ok();
    let text = output.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    text.and_then(|t| t.parse().ok()).filter(|t| *t > 0).unwrap_or(100)
}

impl ControlPlane {
    fn start(
        options: &Options,
        ca_dir: &Path,
        plan: &Path,
        credentials: &Path,
        state: &Path,
        listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        let log = ca_dir.with_file_name("control.log");
        let log_file = fs::File::create(&log).context("cannot create the control plane's log")?;
        let child = Command::new(&options.ambit)
            .arg("control")
            .args(["--listen", &listen.to_string()])
            .arg("--ca-dir")
            .arg(ca_dir)
            .arg("--plan")
            .arg(plan)
            .arg("--node-credentials")
            .arg(credentials)
            .arg("--state-file")
            .arg(state)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {} control", options.ambit.display()))?;
        Ok(Self { child, log })
    }

    fn wait_listening(&mut self, listen: SocketAddr) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.check_running()?;
            if TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if started.elapsed() > DEADLINE {
                bail!(
                    "the control plane did not listen on {listen} within {DEADLINE:?}{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An error with the end of the log if the control plane exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("the control plane exited ({status}){}", self.log_tail()),
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; its log ends:\n  {tail}")
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

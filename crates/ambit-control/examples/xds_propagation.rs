//! The control plane's benchmark (`make bench`, "control plane" rows): how long one policy change takes to reach
//! every node proxy with 10,000 workloads in the store, and the control plane's memory with them loaded.
//!
//! It generates the mesh (10,000 pods over 100 namespaces and 50 nodes, 500 services, 50 AuthorizationPolicies) as
//! Kubernetes objects, written as the local cluster writes them (`ambit_cluster::objects`): the objects file (a v1
//! `List` of Namespaces, ServiceAccounts, Pods with their status, and Services), the config store (the policies, a
//! v1 `List`) and the plan. It starts the real `ambit control` on them as a child process, connects one delta xDS
//! client per node in-process (`ambit_xds::delta::XdsClient` over TLS with the node's token, as the node proxy does;
//! the first alone, then the others at once), waits until every client holds every resource, and reads the control
//! plane's VmRSS and VmHWM. Then, several times, it applies one more DENY AuthorizationPolicy through the config API
//! (`POST /v1/apply` on the Unix socket, as `ambit apply` does) and times from just before the request until every
//! client has the policy and the reply has come back. Nothing on that path polls. Last, it starts two real node
//! proxies (`ambit node`, no pods to serve) on the same control plane, one asking for every workload of the mesh
//! (`--xds-scope all`), one for its node's (`--xds-scope node`, the default), waits until their `ambit_state_*` gauges show
//! the whole state, and reads their memory: the node proxy's cost of a large mesh.
//!
//! ```text
//! cargo build --release -p ambit --bin ambit -p ambit-control --example xds_propagation
//! target/release/examples/xds_propagation target/release/ambit
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
use ambit_cluster::model::{
    ClusterPlan, ContainerPlan, ContainerPort, NamespacePlan, NodePlan, PodPlan, Protocol, RestartPolicy,
    ServiceAccountPlan, ServicePlan, ServicePort, TargetPort,
};
use ambit_cluster::status::{ClusterStatus, ContainerState, ContainerStatus, Phase, PodStatus};
use ambit_cluster::{mesh, objects};
use ambit_control::ca::auth::generate_token;
use ambit_identity::cert::TrustBundle;
use ambit_policy::istio::AuthorizationPolicy;
use ambit_types::TrustDomain;
use ambit_xds::delta::{Handler, Rejection, Transport, Update, XdsClient, XdsConfig};
use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// The nodes workloads are spread over (and the most clients, one per node).
const NODES: usize = 50;
/// Apps per namespace, each a Deployment with its own Service and service account.
const APPS_PER_NAMESPACE: usize = 5;
/// The issue's targets.
const TARGET_LATENCY: Duration = Duration::from_secs(1);
const TARGET_RSS_MIB: f64 = 200.0;
/// The pause before each policy change, so that each starts from a quiet control plane.
const PAUSE: Duration = Duration::from_millis(300);
/// Longest wait for the control plane to listen, the clients to sync, a reply, or a change to arrive.
const DEADLINE: Duration = Duration::from_secs(60);
const TRUST_DOMAIN: &str = "cluster.local";
const CLUSTER_DOMAIN: &str = "cluster.local";
/// The container ports of every pod: the Services' named `http` target and the metrics port.
const HTTP_PORT: u16 = 8080;
const METRICS_PORT: u16 = 9090;
/// The alphabet of Kubernetes' generated names (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
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
    /// The config API socket.
    api: PathBuf,
}

/// The files `ambit control` reads, in the temporary directory.
struct Files {
    plan: PathBuf,
    credentials: PathBuf,
    objects: PathBuf,
    config_store: PathBuf,
    ca_dir: PathBuf,
    api_socket: PathBuf,
}

/// One policy change as measured: when the slowest and the median client had the policy, and when the apply's
/// reply came back, each from just before the request.
struct Round {
    all: Duration,
    median_client: Duration,
    reply: Duration,
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
    let plan = mesh.plan()?;
    let tokens: BTreeMap<String, String> = (0..NODES)
        .map(|n| Ok((node_name(n), generate_token()?)))
        .collect::<anyhow::Result<_>>()?;
    let files = Files::new(dir.path());
    let source = write_inputs(&files, &plan, &tokens)?;

    let bundle = make_root(&options.ambit, &files.ca_dir)?;
    let bundle_pem = bundle.to_pem();
    let listen = free_port()?;
    let mut control = ControlPlane::start(options, &files, listen)?;
    control.wait_listening(listen)?;
    let pid = control.child.id();

    // One client per node, as many node proxies: the first alone (the control plane with one stream), then the rest
    // at once.
    let expected = mesh.published();
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
    control.wait_api().await?;

    // The policy changes: each applies one more DENY policy and waits until every client has it.
    let cpu_before = cpu_seconds(pid)?;
    let mut rounds = Vec::new();
    for change in 0..options.changes {
        tokio::time::sleep(PAUSE).await;
        let (key, manifest) = deny_policy(change, mesh.namespaces);
        rounds.push(change_policy(&mut control, &mut arrivals, options.clients, &key, &manifest).await?);
    }
    let cpu_used = cpu_seconds(pid)? - cpu_before;
    let final_memory = settled_memory(pid).await?;
    let _ = stop_tx.send(true);

    // The node proxies with the whole mesh in their state, after the control plane's own measurements.
    let bundle_file = dir.path().join("root-cert.pem");
    write_new(&bundle_file, bundle_pem.as_bytes(), 0o644).context("cannot write the trust bundle")?;
    // One at a time: each is timed from its start until it holds the state, alone on the control plane.
    let mut node_memory = Vec::new();
    let mut proxy_cpu_per_change = None;
    let mut applied = 0;
    for (scope, node) in [("all", node_name(NODES - 1)), ("node", node_name(NODES - 2))] {
        let expected = StateSize {
            workloads: if scope == "all" {
                plan.pods.len()
            } else {
                plan.pods.iter().filter(|p| p.node == node).count()
            },
            services: mesh.services(),
            // The generated policies, the DENY policy of each change and those applied below.
            policies: mesh.policies() + rounds.len() + applied,
        };
        let token = fleet.tokens.get(&node).context("no token for the node")?;
        let mut proxy = NodeProxy::start(options, dir.path(), &node, scope, listen, &bundle_file, token)?;
        let synced = proxy.wait_state(expected, &mut control).await?;
        node_memory.push((scope, expected, synced, settled_memory(proxy.child.id()).await?));
        if scope == "all" {
            // Its CPU per policy change: every change rebuilds the proxy's snapshot of the whole mesh.
            let before = cpu_seconds(proxy.child.id())?;
            for change in 0..options.changes {
                tokio::time::sleep(PAUSE).await;
                let (key, manifest) = deny_policy(options.changes + change, mesh.namespaces);
                apply(&control.api, &key, &manifest).await?;
            }
            let changed = StateSize {
                policies: expected.policies + options.changes,
                ..expected
            };
            proxy.wait_state(changed, &mut control).await?;
            let per_change = (cpu_seconds(proxy.child.id())? - before) / options.changes as f64;
            proxy_cpu_per_change = Some(per_change);
            applied += options.changes;
        }
    }
    drop(control);

    let memory = [one_stream, synced_memory, final_memory];
    report(options, &mesh, source, sync_time, memory, &rounds, cpu_used);
    report_node_proxies(&node_memory, proxy_cpu_per_change);
    Ok(())
}

/// What a node proxy's state holds, from its `ambit_state_*` gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StateSize {
    workloads: usize,
    services: usize,
    policies: usize,
}

/// An `ambit node` child without pods to serve, its state from the control plane; killed when dropped.
struct NodeProxy {
    child: Child,
    started: Instant,
    log: PathBuf,
    metrics: SocketAddr,
}

impl NodeProxy {
    fn start(
        options: &Options,
        dir: &Path,
        node: &str,
        scope: &str,
        control: SocketAddr,
        bundle: &Path,
        token: &str,
    ) -> anyhow::Result<Self> {
        let token_file = dir.join(format!("{node}.token"));
        write_new(&token_file, token.as_bytes(), 0o600).context("cannot write the node token")?;
        let enrollment = dir.join(format!("{node}.enrollment.json"));
        write_new(&enrollment, b"{\"pods\": []}", 0o644).context("cannot write the enrollment file")?;
        let log = dir.join(format!("{node}.log"));
        let log_file = fs::File::create(&log).context("cannot create the node proxy's log")?;
        let (admin, metrics, readiness) = (free_port()?, free_port()?, free_port()?);
        let started = Instant::now();
        let child = Command::new(&options.ambit)
            .args(["node", "--node", node, "--xds-scope", scope])
            .args([
                "--xds-address",
                &control.to_string(),
                "--ca-address",
                &control.to_string(),
            ])
            .arg("--ca-root")
            .arg(bundle)
            .arg("--token-file")
            .arg(&token_file)
            .arg("--enrollment-file")
            .arg(&enrollment)
            .args([
                "--admin-address",
                &admin.to_string(),
                "--metrics-address",
                &metrics.to_string(),
            ])
            .args([
                "--readiness-address",
                &readiness.to_string(),
                "--trust-domain",
                TRUST_DOMAIN,
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {} node", options.ambit.display()))?;
        Ok(Self {
            child,
            started,
            log,
            metrics,
        })
    }

    /// Waits until the proxy's gauges show `expected`; returns how long that took from the proxy's start.
    async fn wait_state(&mut self, expected: StateSize, control: &mut ControlPlane) -> anyhow::Result<Duration> {
        let started = self.started;
        let mut held = None;
        loop {
            control.check_running()?;
            if let Some(status) = self.child.try_wait()? {
                bail!("the node proxy exited ({status}){}", tail(&self.log));
            }
            held = self.state().ok().or(held);
            if held == Some(expected) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > DEADLINE {
                bail!(
                    "the node proxy did not hold the mesh within {DEADLINE:?}: held {held:?}, expected {expected:?}{}",
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The state size from a scrape of `/metrics`.
    fn state(&self) -> anyhow::Result<StateSize> {
        let mut stream = TcpStream::connect_timeout(&self.metrics, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: proxy\r\n\r\n")?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stream, &mut text)?;
        let gauge = |name: &str| -> anyhow::Result<usize> {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
                .with_context(|| format!("no {name} in the node proxy's metrics"))?;
            Ok(line.trim().parse()?)
        };
        Ok(StateSize {
            workloads: gauge("ambit_state_workloads")?,
            services: gauge("ambit_state_services")?,
            policies: gauge("ambit_state_policies")?,
        })
    }
}

impl Drop for NodeProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node proxies' rows of the table.
fn report_node_proxies(rows: &[(&str, StateSize, Duration, Memory)], cpu_per_change: Option<f64>) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (scope, size, synced, memory) in rows {
        let label = format!("node proxy RSS, --xds-scope {scope}");
        let value = format!("{:.1} MiB (VmHWM {:.1} MiB)", mib(memory.rss_kib), mib(memory.hwm_kib));
        let held = format!(
            "holding {} workloads, {} services, {} policies, {:.0} ms after its start",
            thousands(size.workloads),
            thousands(size.services),
            thousands(size.policies),
            synced.as_secs_f64() * 1e3
        );
        println!("{label:<LABEL_WIDTH$} {value:<VALUE_WIDTH$} {held}");
    }
    if let Some(cpu) = cpu_per_change {
        let label = "  node proxy CPU per policy change, scope all";
        println!("{label:<LABEL_WIDTH$} {:.0} ms", cpu * 1e3);
    }
    println!(
        "  node proxies: `ambit node` on the same control plane with no pods to serve, read once their \
         ambit_state_* gauges show the state above."
    );
}

/// Writes what `ambit control` reads, as the local cluster writes it: the objects file as its supervisor does
/// (pretty JSON), the config store as `cluster up` seeds it, the plan and the node credentials.
fn write_inputs(files: &Files, plan: &ClusterPlan, tokens: &BTreeMap<String, String>) -> anyhow::Result<Source> {
    let cluster = objects::cluster_objects(plan, Some(&running(plan)), &mesh::enrolled(plan));
    let pretty = serde_json::to_vec_pretty(&cluster)?;
    write_new(&files.objects, &pretty, 0o644).context("cannot write the objects")?;
    let store = serde_json::to_vec_pretty(&objects::config_store(plan))?;
    write_new(&files.config_store, &store, 0o600).context("cannot write the config store")?;
    write_new(&files.plan, &serde_json::to_vec(plan)?, 0o644).context("cannot write the plan")?;
    write_new(&files.credentials, &serde_json::to_vec(tokens)?, 0o600).context("cannot write the node credentials")?;
    Ok(Source {
        bytes: pretty.len() as u64,
        objects: cluster["items"].as_array().map_or(0, Vec::len),
    })
}

/// Makes the CA's root with `ambit ca root` (before the control plane opens it) and returns it as a bundle.
fn make_root(ambit: &Path, ca_dir: &Path) -> anyhow::Result<TrustBundle> {
    let root = Command::new(ambit)
        .args(["ca", "root", "--ca-dir"])
        .arg(ca_dir)
        .output()
        .with_context(|| format!("cannot run {}", ambit.display()))?;
    if !root.status.success() {
        bail!(
            "`ambit ca root` failed: {}",
            String::from_utf8_lossy(&root.stderr).trim()
        );
    }
    TrustBundle::from_pem(&String::from_utf8_lossy(&root.stdout)).context("`ambit ca root` output")
}

/// One policy change: applies `manifest` (the policy `key`) through the config API and waits until each of the
/// `clients` has the policy.
async fn change_policy(
    control: &mut ControlPlane,
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
    clients: usize,
    key: &str,
    manifest: &str,
) -> anyhow::Result<Round> {
    let t0 = Instant::now();
    let file = format!("{}.yaml", key.replace('/', "-"));
    let reply = tokio::time::timeout(DEADLINE, apply(&control.api, &file, manifest))
        .await
        .with_context(|| format!("applying {key}: no reply within {DEADLINE:?}"))?
        .with_context(|| format!("applying {key}"))?;
    let mut seen: Vec<Option<Duration>> = vec![None; clients];
    while seen.iter().any(Option::is_none) {
        let arrival = tokio::time::timeout_at((t0 + DEADLINE).into(), arrivals.recv()).await;
        let Ok(Some(arrival)) = arrival else {
            control.check_running()?;
            let missing = seen.iter().filter(|s| s.is_none()).count();
            bail!("policy {key}: {missing} of {clients} clients did not get it within {DEADLINE:?}");
        };
        if arrival.policy == key && seen[arrival.client].is_none() {
            seen[arrival.client] = Some(arrival.at.saturating_duration_since(t0));
        }
    }
    let arrivals = seen.into_iter().flatten().collect();
    Ok(Round::new(arrivals, reply.saturating_duration_since(t0)))
}

/// The objects file as measured.
struct Source {
    bytes: u64,
    objects: usize,
}

/// Prints the rows: `memory` is the control plane's with one stream synced, with every stream synced, and after the
/// policy changes.
fn report(
    options: &Options,
    mesh: &Mesh,
    source: Source,
    sync_time: Duration,
    memory: [Memory; 3],
    rounds: &[Round],
    cpu_used: f64,
) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let all: Vec<f64> = rounds.iter().map(|r| ms(r.all)).collect();
    let median_client: Vec<f64> = rounds.iter().map(|r| ms(r.median_client)).collect();
    let replies: Vec<f64> = rounds.iter().map(|r| ms(r.reply)).collect();
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
    row("  config API reply to the apply", cell(&replies), String::new());
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
        "figures: crates/ambit-control/examples/xds_propagation.rs against `ambit control --objects-file \
         --config-store --api-socket` (a {:.1} MiB objects file of {} Kubernetes objects);",
        source.bytes as f64 / (1024.0 * 1024.0),
        thousands(source.objects)
    );
    println!(
        "  each change is one `POST /v1/apply` of a new DENY AuthorizationPolicy, timed from just before the request \
         until all {clients} delta xDS clients (in the same process) have it and the reply is in; nothing polls on \
         that path. Targets are informational."
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

/// Creates the file `path` with `mode` and writes `bytes` to it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)
}

// === impl Files ===

impl Files {
    fn new(dir: &Path) -> Self {
        Self {
            plan: dir.join("plan.json"),
            credentials: dir.join("node-credentials.json"),
            objects: dir.join("objects.json"),
            config_store: dir.join("config-store.json"),
            ca_dir: dir.join("ca"),
            api_socket: dir.join("control.sock"),
        }
    }
}

// === impl Round ===

impl Round {
    /// From the arrival times of every client and the reply's.
    fn new(mut arrivals: Vec<Duration>, reply: Duration) -> Self {
        arrivals.sort();
        let last = arrivals.last().copied().unwrap_or_default();
        Self {
            all: last.max(reply),
            median_client: arrivals.get(arrivals.len() / 2).copied().unwrap_or_default(),
            reply,
        }
    }
}

// === the config API ===

/// `POST /v1/apply` of one manifest on the config API socket, as `ambit apply` sends it; when the reply came, once
/// it said every object was created.
async fn apply(socket: &Path, name: &str, text: &str) -> anyhow::Result<Instant> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to the config API at {}", socket.display()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("cannot start HTTP on the config API")?;
    let driver = tokio::spawn(connection);
    let body = json!({ "sources": [{ "name": name, "text": text }] });
    let request = hyper::Request::post("/v1/apply")
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = sender.send_request(request).await.context("no reply")?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("cannot read the reply")?
        .to_bytes();
    let at = Instant::now();
    driver.abort();
    let reply = String::from_utf8_lossy(&bytes);
    if !status.is_success() {
        bail!("the config API answered {status}: {reply}");
    }
    check_created(&reply).with_context(|| format!("the reply {reply}"))?;
    Ok(at)
}

/// Whether an apply's reply (`{"results":[{"outcome":...}]}`) says every object was created.
fn check_created(reply: &str) -> anyhow::Result<()> {
    let reply: Value = serde_json::from_str(reply).context("is not JSON")?;
    let results = reply["results"].as_array().context("has no results")?;
    if results.is_empty() || results.iter().any(|r| r["outcome"] != "created") {
        bail!("does not say created");
    }
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
                    "the clients did not sync within {DEADLINE:?}: (addresses, policies) held {:?}, expected {expected:?}{}",
                    held(),
                    control.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

// === the mesh ===
// === the mesh ===

/// The shape of the generated mesh: `workloads` pods spread over namespaces of 100, five apps (each a Deployment
/// with a Service and its own service account) per namespace, and 50 nodes.
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

    /// What every client must hold once synced, (addresses, policies): every pod has an IP and is Running, so each
    /// is a workload, each Service an address, and both kinds of [`base_policy`] are enforced by node proxies.
    fn published(&self) -> (usize, usize) {
        (self.workloads + self.services(), self.policies())
    }

    /// The cluster: namespaces enrolled in ambient, each app a Deployment's pods with a Service selecting them,
    /// and the policies (whose pods the control plane's CA also indexes by node).
    fn plan(&self) -> anyhow::Result<ClusterPlan> {
        let apps = (0..self.namespaces).flat_map(|n| (0..APPS_PER_NAMESPACE).map(move |app| (n, app)));
        let apps: Vec<(usize, usize)> = apps.collect();
        let policies = (0..self.namespaces).filter(|n| n.is_multiple_of(2)).map(base_policy);
        Ok(ClusterPlan {
            name: "bench".to_string(),
            cluster_domain: CLUSTER_DOMAIN.to_string(),
            pod_cidr: "10.64.0.0/10".parse()?,
            service_cidr: "10.96.0.0/12".parse()?,
            node_cidr: "172.31.0.0/24".parse()?,
            control_address: Ipv4Addr::new(172, 31, 0, 1),
            dns_ip: Ipv4Addr::new(10, 96, 0, 10),
            nodes: (0..NODES).map(node_plan).collect::<anyhow::Result<_>>()?,
            namespaces: (0..self.namespaces).map(namespace_plan).collect(),
            service_accounts: apps.iter().map(|&(n, app)| service_account_plan(n, app)).collect(),
            pods: (0..self.workloads).map(|i| self.pod(i)).collect(),
            services: apps.iter().map(|&(n, app)| service_plan(n, app)).collect(),
            authorization_policies: policies.collect::<anyhow::Result<_>>()?,
            peer_authentications: Vec::new(),
            gateway_api: Default::default(),
        })
    }

    /// Pod `i`: namespaces, then apps, take turns, so that every namespace has about as many pods of each app.
    fn pod(&self, i: usize) -> PodPlan {
        let (n, j) = (i % self.namespaces, i / self.namespaces);
        let (ns, app, replica) = (namespace_name(n), j % APPS_PER_NAMESPACE, j / APPS_PER_NAMESPACE);
        // As a Deployment names its pods: `<deployment>-<template hash>-<suffix>`.
        let name = format!("{}-{}-{}", app_name(app), template_hash(n, app), pod_suffix(replica));
        let port = |name: &str, port| ContainerPort {
            name: Some(name.to_string()),
            port,
            protocol: Protocol::Tcp,
        };
        PodPlan {
            uid: format!("{ns}-{name}"),
            namespace: ns,
            name,
            node: node_name(i % NODES),
            ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 1)) + i as u32),
            labels: app_labels(app),
            annotations: BTreeMap::new(),
            service_account: service_account(app),
            restart_policy: RestartPolicy::Always,
            owner: Some(app_name(app)),
            containers: vec![ContainerPlan {
                name: "app".to_string(),
                argv: vec!["ambit".to_string(), "app".to_string(), "echo".to_string()],
                env: Vec::new(),
                working_dir: None,
                ports: vec![port("http", HTTP_PORT), port("metrics", METRICS_PORT)],
                readiness: None,
            }],
        }
    }
}

/// Every pod of the plan Running and Ready, as the supervisor reports them.
fn running(plan: &ClusterPlan) -> ClusterStatus {
    let pod = |pod: &PodPlan| PodStatus {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        phase: Phase::Running,
        ready: true,
        containers: (pod.containers.iter())
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                state: ContainerState::Running { pid: 1, started_at: 0 },
                ready: true,
                restarts: 0,
            })
            .collect(),
    };
    ClusterStatus {
        pods: plan.pods.iter().map(pod).collect(),
        ..ClusterStatus::default()
    }
}

fn node_plan(n: usize) -> anyhow::Result<NodePlan> {
    Ok(NodePlan {
        name: node_name(n),
        address: Ipv4Addr::new(172, 31, 0, 2 + n as u8),
        pod_cidr: format!("10.64.{n}.0/24").parse()?,
        labels: BTreeMap::new(),
    })
}

fn namespace_plan(n: usize) -> NamespacePlan {
    NamespacePlan {
        name: namespace_name(n),
        labels: BTreeMap::from([(mesh::DATAPLANE_MODE_LABEL.to_string(), "ambient".to_string())]),
        annotations: BTreeMap::new(),
    }
}

fn service_account_plan(n: usize, app: usize) -> ServiceAccountPlan {
    ServiceAccountPlan {
        namespace: namespace_name(n),
        name: service_account(app),
    }
}

/// App `app`'s Service in namespace `n`: HTTP on 80 to the pods' named port `http`, and the metrics port.
fn service_plan(n: usize, app: usize) -> ServicePlan {
    let index = (n * APPS_PER_NAMESPACE + app) as u32;
    let port = |name: &str, port, target| ServicePort {
        name: Some(name.to_string()),
        port,
        protocol: Protocol::Tcp,
        target,
    };
    ServicePlan {
        namespace: namespace_name(n),
        name: app_name(app),
        cluster_ip: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 11)) + index)),
        selector: BTreeMap::from([("app".to_string(), app_name(app))]),
        ports: vec![
            port("http", 80, TargetPort::Name("http".to_string())),
            port("metrics", METRICS_PORT, TargetPort::Number(METRICS_PORT)),
        ],
        labels: BTreeMap::from([("app".to_string(), app_name(app))]),
    }
}

fn namespace_name(n: usize) -> String {
    format!("ns-{n:03}")
}

fn app_name(app: usize) -> String {
    format!("app-{app}")
}

fn app_labels(app: usize) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), app_name(app)),
        ("version".to_string(), "v1".to_string()),
    ])
}

fn service_account(app: usize) -> String {
    format!("sa-app-{app}")
}

/// The pod template hash of app `app`'s Deployment in namespace `n`: 10 characters, as Kubernetes writes them.
fn template_hash(n: usize, app: usize) -> String {
    generated_name(&format!("{}/{}", namespace_name(n), app_name(app)), 10)
}

/// The random suffix of a Deployment's pod, 5 characters, here derived from the replica's number.
fn pod_suffix(replica: usize) -> String {
    generated_name(&replica.to_string(), 5)
}

/// `len` characters of [`NAME_ALPHABET`] from an FNV-1a hash of `seed`: the same seed, the same name.
fn generated_name(seed: &str, len: usize) -> String {
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let base = NAME_ALPHABET.len() as u64;
    let digit = |i: u32| char::from(NAME_ALPHABET[(hash / base.pow(i) % base) as usize]);
    (0..len as u32).map(digit).collect()
}

/// The policy of namespace `n` (an even one): a namespace-wide ALLOW from its own namespace, or an ALLOW of app-0's
/// pods for app-1's service account on port 8080.
fn base_policy(n: usize) -> anyhow::Result<AuthorizationPolicy> {
    let ns = namespace_name(n);
    let policy = if n.is_multiple_of(4) {
        json!({
            "metadata": { "name": "allow-same-namespace", "namespace": ns },
            "spec": { "action": "ALLOW", "rules": [{ "from": [{ "source": { "namespaces": [ns] } }] }] },
        })
    } else {
        let principal = format!("{TRUST_DOMAIN}/ns/{ns}/sa/{}", service_account(1));
        json!({
            "metadata": { "name": "allow-app-0", "namespace": ns },
            "spec": {
                "selector": { "matchLabels": { "app": app_name(0) } },
                "action": "ALLOW",
                "rules": [{
                    "from": [{ "source": { "principals": [principal] } }],
                    "to": [{ "operation": { "ports": [HTTP_PORT.to_string()] } }],
                }],
            },
        })
    };
    serde_json::from_value(policy).with_context(|| format!("the policy of {ns}"))
}

/// The policy change number `change`, as its xDS name and its manifest: a namespace-wide DENY of another
/// namespace's traffic to port 9090.
fn deny_policy(change: usize, namespaces: usize) -> (String, String) {
    let (ns, from) = (
        namespace_name(change % namespaces),
        namespace_name((change + 1) % namespaces),
    );
    let name = format!("deny-change-{change}");
    let manifest = format!(
        "apiVersion: security.istio.io/v1\n\
         kind: AuthorizationPolicy\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"{from}\"]\n    \
         to:\n    - operation:\n        ports: [\"{METRICS_PORT}\"]\n"
    );
    (format!("{ns}/{name}"), manifest)
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
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("cannot read /proc/{pid}/status"))?;
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
    /// Starts `ambit control` on the generated files, logging to `control.log` beside them.
    fn start(options: &Options, files: &Files, listen: SocketAddr) -> anyhow::Result<Self> {
        let log = files.ca_dir.with_file_name("control.log");
        let log_file = fs::File::create(&log).context("cannot create the control plane's log")?;
        let child = Command::new(&options.ambit)
            .arg("control")
            .args(["--listen", &listen.to_string()])
            .arg("--ca-dir")
            .arg(&files.ca_dir)
            .arg("--plan")
            .arg(&files.plan)
            .arg("--node-credentials")
            .arg(&files.credentials)
            .arg("--objects-file")
            .arg(&files.objects)
            .arg("--config-store")
            .arg(&files.config_store)
            .arg("--api-socket")
            .arg(&files.api_socket)
            .args(["--cluster-domain", CLUSTER_DOMAIN, "--trust-domain", TRUST_DOMAIN])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {} control", options.ambit.display()))?;
        Ok(Self {
            child,
            log,
            api: files.api_socket.clone(),
        })
    }

    /// Waits until the config API accepts connections (it opens once the config store is restored).
    async fn wait_api(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.check_running()?;
            if tokio::net::UnixStream::connect(&self.api).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > DEADLINE {
                bail!(
                    "the config API did not open at {} within {DEADLINE:?}{}",
                    self.api.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        tail(&self.log)
    }
}

/// The last 20 lines of the log at `path`, as the end of an error message.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its log ends:\n  {tail}")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Bringing a cluster up and down: preflight checks, the mesh CA, network creation, in-pod capture for the pods the
//! manifests enroll (as Istio's CNI plugin does at sandbox creation; the node agents take them over), the control
//! plane's config store seeded with the manifests' policies and Gateway API objects (their waypoint Gateways among
//! them, whose pods the plan holds), starting the supervisor, waiting for pods, and a teardown that finds every host
//! resource from the cluster's name alone (so it also works after the supervisor was killed, or over a leftover
//! cluster).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::layout::Layout;
use crate::model::{ClusterPlan, PodPlan, RestartPolicy};
use crate::status::{ClusterStatus, Phase, write_json_atomic};
use crate::{mesh, net, objects};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the local cluster needs root: it creates network namespaces, veth links and nftables rules (run as root)")]
    NotRoot,
    #[error("`{tool}` is not installed; install it with `apt-get install -y {package}` (or run `make demo`)")]
    MissingTool { tool: &'static str, package: &'static str },
    #[error("cannot create the cluster network")]
    Network(#[source] net::NetError),
    #[error("cannot create the mesh CA in {path}")]
    Ca {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot install capture in pod {pod}")]
    Capture {
        pod: String,
        #[source]
        source: ambit_capture::CaptureError,
    },
    #[error("cannot write {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the supervisor of cluster {cluster} exited; its log says:\n{log}")]
    SupervisorDied { cluster: String, log: String },
    #[error("pods not ready after {seconds}s: {pods}")]
    NotReady { seconds: u64, pods: String },
}

/// Maps an IO error on `path` to [`RuntimeError::Io`].
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.display().to_string();
    move |source| RuntimeError::Io { path, source }
}

/// The mesh's trust domain: the CA's, and the one `ambit control` is started with.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// How long `down` lets a SIGTERMed supervisor stop its containers (3 s grace), then the node proxies and the
/// control plane (up to 7 s), before it SIGKILLs it.
const SUPERVISOR_STOP: Duration = Duration::from_secs(14);

/// What `down` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DownReport {
    pub namespaces: usize,
    pub processes: usize,
    pub supervisor_stopped: bool,
}

/// Checks what `cluster up` needs before anything is created.
pub fn preflight() -> Result<(), RuntimeError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(RuntimeError::NotRoot);
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(RuntimeError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// Creates the cluster's network and starts its supervisor. On failure everything created is removed again.
pub fn up(plan: &ClusterPlan) -> Result<Layout, RuntimeError> {
    let layout = Layout::new(&plan.name);
    if let Err(e) = create(&layout, plan) {
        let _ = down(&plan.name);
        return Err(e);
    }
    Ok(layout)
}

/// Everything before the supervisor: files (the config store the control plane starts from among them), the CA (so
/// `root-cert.pem` exists when node proxies start), the network, and capture in every enrolled pod right after its
/// namespace is made, so no container of an enrolled pod ever runs without it (the node agent finds the capture in
/// place, hands the pod to its node proxy and marks it redirected).
fn create(layout: &Layout, plan: &ClusterPlan) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(layout.system_logs_dir()).map_err(io(&layout.system_logs_dir()))?;
    write_json_atomic(&layout.plan_file(), plan).map_err(io(&layout.plan_file()))?;
    let store = layout.config_store_file();
    write_private_json_atomic(&store, &objects::config_store(plan)).map_err(io(&store))?;
    provision_credentials(layout, plan)?;
    create_ca(layout)?;
    net::create_fabric(layout, plan).map_err(RuntimeError::Network)?;
    let enrolled = mesh::enrolled(plan);
    for pod in &plan.pods {
        net::create_pod(layout, plan, pod).map_err(RuntimeError::Network)?;
        if enrolled.contains(&(pod.namespace.clone(), pod.name.clone())) {
            install_capture(layout, pod)?;
        }
    }
    start_supervisor(layout)
}

/// Writes `value` as JSON to a temporary file of mode 0600 beside `path` and renames it into place: the config store
/// is the control plane's, readable by root only, and a reader never sees half of it.
fn write_private_json_atomic(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    // A leftover temporary file may have another mode, which opening it would keep.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The mesh's self-signed root CA in [`Layout::ca_dir`], made before any component runs.
fn create_ca(layout: &Layout) -> Result<(), RuntimeError> {
    use ambit_identity::ca::{CaConfig, CertificateAuthority};
    let dir = layout.ca_dir();
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| RuntimeError::Ca {
        path: dir.display().to_string(),
        source,
    };
    let trust_domain = ambit_types::TrustDomain::new(TRUST_DOMAIN).map_err(|e| failed(e.into()))?;
    CertificateAuthority::load_or_create(&dir, CaConfig::new(trust_domain), SystemTime::now())
        .map_err(|e| failed(e.into()))?;
    Ok(())
}

/// Istio's nftables capture inside the pod's namespace (outbound to 15001, inbound to 15006, 15008 untouched).
fn install_capture(layout: &Layout, pod: &PodPlan) -> Result<(), RuntimeError> {
    let ns = layout.pod_ns(&pod.namespace, &pod.name);
    ambit_capture::install(&ns, &ambit_capture::CaptureConfig::default()).map_err(|source| RuntimeError::Capture {
        pod: format!("{}/{}", pod.namespace, pod.name),
        source,
    })
}

/// A random token per node, readable by root only: what a node's proxy presents to the control plane's CA.
fn provision_credentials(layout: &Layout, plan: &ClusterPlan) -> Result<(), RuntimeError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = layout.credentials_dir();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let write_private = |path: &Path, text: &str| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io(path))
    };
    let mut random = std::fs::File::open("/dev/urandom").map_err(io(Path::new("/dev/urandom")))?;
    let mut tokens = std::collections::BTreeMap::new();
    for node in &plan.nodes {
        let mut bytes = [0u8; 32];
        random.read_exact(&mut bytes).map_err(io(Path::new("/dev/urandom")))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&layout.node_token_file(&node.name), &token)?;
        tokens.insert(node.name.clone(), token);
    }
    // A map of strings always serializes.
    let json = serde_json::to_string_pretty(&tokens).unwrap_or_default();
    write_private(&layout.node_credentials_file(), &json)
}

fn start_supervisor(layout: &Layout) -> Result<(), RuntimeError> {
    let log_path = layout.supervisor_log();
    let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
    Command::new(&exe)
        .args(["cluster", "supervise", "--name", layout.cluster()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io(&log_path))?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(io(&exe))?;
    Ok(())
}

/// Waits until every pod is ready (or, for pods that are meant to finish, has finished).
pub fn wait_ready(layout: &Layout, plan: &ClusterPlan, timeout: Duration) -> Result<ClusterStatus, RuntimeError> {
    let started = Instant::now();
    loop {
        let pending = match ClusterStatus::read(&layout.status_file()) {
            Ok(status) => {
                let pending = unready(plan, &status);
                if pending.is_empty() {
                    return Ok(status);
                }
                pending.join(", ")
            }
            Err(_) => "the supervisor has not reported yet".to_string(),
        };
        // The pid file appears once the supervisor runs; give it a moment before calling its absence a death.
        if started.elapsed() > Duration::from_secs(2) {
            check_supervisor(layout)?;
        }
        if started.elapsed() >= timeout {
            return Err(RuntimeError::NotReady {
                seconds: timeout.as_secs(),
                pods: pending,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pods that are neither ready nor (for pods that may finish) finished.
fn unready(plan: &ClusterPlan, status: &ClusterStatus) -> Vec<String> {
    plan.pods
        .iter()
        .filter(|p| {
            let Some(s) = status.pod(&p.namespace, &p.name) else {
                return true;
            };
            let finished = p.restart_policy != RestartPolicy::Always && s.phase == Phase::Succeeded;
            !(s.ready || finished)
        })
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

fn check_supervisor(layout: &Layout) -> Result<(), RuntimeError> {
    if supervisor_alive(layout) {
        return Ok(());
    }
    let log = std::fs::read_to_string(layout.supervisor_log()).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    Err(RuntimeError::SupervisorDied {
        cluster: layout.cluster().to_string(),
        log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// The supervisor's pid, if its pid file names a live `ambit cluster supervise` of this cluster.
pub fn supervisor_pid(layout: &Layout) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(layout.supervisor_pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.iter().any(|a| *a == b"supervise") && args.iter().any(|a| *a == layout.cluster().as_bytes());
    ours.then_some(pid)
}

fn supervisor_alive(layout: &Layout) -> bool {
    match supervisor_pid(layout) {
        // A zombie still has a cmdline until reaped; its state says Z.
        Some(pid) => !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(true),
        None => false,
    }
}

/// Removes every namespace, link, rule, file and process of the cluster. Safe to run on a half-made, crashed or
/// absent cluster.
pub fn down(cluster: &str) -> Result<DownReport, RuntimeError> {
    let layout = Layout::new(cluster);
    let mut report = DownReport {
        supervisor_stopped: stop_supervisor(&layout),
        ..DownReport::default()
    };
    let mut names = ambit_netns::list(&layout.prefix());
    // Pods first, then nodes, then the fabric: the order links were made in, reversed.
    names.sort_by_key(|n| (!n.contains(".pod."), !n.contains(".node."), n.clone()));
    for name in &names {
        report.processes += kill_all_in(name);
    }
    for name in &names {
        if let Err(e) = net::delete_netns(name) {
            tracing::warn!(namespace = %name, error = %e, "cannot delete namespace");
        } else {
            report.namespaces += 1;
        }
    }
    for dir in layout.etc_dirs() {
        let _ = std::fs::remove_dir_all(dir);
    }
    if layout.dir().exists() {
        std::fs::remove_dir_all(layout.dir()).map_err(io(layout.dir()))?;
    }
    Ok(report)
}

/// SIGTERM to a live supervisor (it stops the containers, then the node proxies and the control plane), SIGKILL if
/// it has not exited in time. What it leaves behind runs in the cluster's namespaces (`ambit control` in the fabric,
/// `ambit node` in each node), where [`kill_all_in`] finds it.
fn stop_supervisor(layout: &Layout) -> bool {
    let Some(pid) = supervisor_pid(layout) else {
        return false;
    };
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + SUPERVISOR_STOP;
    while supervisor_alive(layout) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if supervisor_alive(layout) {
        let _ = kill(pid, Signal::SIGKILL);
    }
    true
}

/// SIGKILLs every process in a namespace until none is left (or two seconds passed); returns how many were killed.
fn kill_all_in(ns: &str) -> usize {
    let mut killed = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pids = ambit_netns::pids_in(ns);
        if pids.is_empty() || Instant::now() >= deadline {
            return killed;
        }
        for pid in pids {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_config_store_is_written_private_and_whole_over_leftovers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ambit-runtime-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config-store.json");
        // A leftover temporary file readable by all, and an older store.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, "leftover").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&path, "old").unwrap();
        let value = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": []});
        write_private_json_atomic(&path, &value).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let leftover = tmp.exists();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((mode, written, leftover), (0o600, value, false));
    }
}

//! The agent end to end without root: a fake control plane serving the node-pods long poll and the patch endpoint on
//! a unix socket, a node proxy on the real ZDS driver (`ambit_zds::connect_proxy`) with a recording handler, and
//! fake namespaces and capture in place of the node's. Every fake writes what happened into one shared log, so the
//! tests check the order of steps across them (annotation, proxy, capture).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ambit_agent::{Agent, AgentConfig, Capture, CaptureFailure, Host, Namespaces, PodNetns};
use ambit_zds::{Netns, PodUid, ProxyHandler, WorkloadInfo};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use common::*;

// === the node ===

/// Pods' namespaces, all of them the test's own underneath (so the proxy can check the descriptor), told apart by a
/// made-up path per IP.
struct FakeNamespaces {
    /// The IPs whose namespace exists.
    present: Mutex<BTreeSet<IpAddr>>,
    /// The ports listening in every namespace.
    listening: Mutex<BTreeSet<u16>>,
}

impl FakeNamespaces {
    fn new(ips: &[&str]) -> Arc<Self> {
        Arc::new(FakeNamespaces {
            present: Mutex::new(ips.iter().map(|ip| ip.parse().unwrap()).collect()),
            listening: Mutex::new(PORTS.into_iter().collect()),
        })
    }

    fn set_listening(&self, ports: &[u16]) {
        *self.listening.lock().unwrap() = ports.iter().copied().collect();
    }
}

fn fake_path(ip: &IpAddr) -> PathBuf {
    PathBuf::from(format!("fake-netns/{ip}"))
}

impl Namespaces for FakeNamespaces {
    fn find(&self, ips: &BTreeSet<IpAddr>) -> BTreeMap<IpAddr, PodNetns> {
        let present = self.present.lock().unwrap();
        ips.iter()
            .filter(|ip| present.contains(ip))
            .map(|ip| {
                let netns = PodNetns {
                    path: fake_path(ip),
                    name: Some(format!("pod-{ip}")),
                    handle: Netns::open(Path::new("/proc/self/ns/net")).unwrap(),
                };
                (*ip, netns)
            })
            .collect()
    }

    fn holds(&self, netns: &PodNetns, ips: &[IpAddr]) -> bool {
        let present = self.present.lock().unwrap();
        ips.iter().any(|ip| present.contains(ip) && netns.path == fake_path(ip))
    }

    fn listening(&self, _netns: &PodNetns) -> io::Result<BTreeSet<u16>> {
        Ok(self.listening.lock().unwrap().clone())
    }
}

/// Capture as a set of namespaces (by path) it is installed in, and drift to report for them.
struct FakeCapture {
    installed: Mutex<BTreeSet<PathBuf>>,
    drift: Mutex<Vec<String>>,
    log: Log,
}

impl FakeCapture {
    fn new(log: Log) -> Arc<Self> {
        Arc::new(FakeCapture {
            installed: Mutex::new(BTreeSet::new()),
            drift: Mutex::new(Vec::new()),
            log,
        })
    }

    fn is_installed(&self, ip: &str) -> bool {
        self.installed
            .lock()
            .unwrap()
            .contains(&fake_path(&ip.parse().unwrap()))
    }
}

impl Capture for FakeCapture {
    fn install(&self, netns: &PodNetns) -> Result<(), CaptureFailure> {
        self.installed.lock().unwrap().insert(netns.path.clone());
        self.drift.lock().unwrap().clear();
        self.log.push(format!("capture install {}", netns.path.display()));
        Ok(())
    }

    fn remove(&self, netns: &PodNetns) -> Result<(), CaptureFailure> {
        self.installed.lock().unwrap().remove(&netns.path);
        self.log.push(format!("capture remove {}", netns.path.display()));
        Ok(())
    }

    fn verify(&self, netns: &PodNetns) -> Result<Vec<String>, CaptureFailure> {
        if !self.installed.lock().unwrap().contains(&netns.path) {
            return Ok(vec!["table inet istio-ambient-nat is missing".to_string()]);
        }
        Ok(self.drift.lock().unwrap().clone())
    }

    fn installed(&self, netns: &PodNetns) -> Result<bool, CaptureFailure> {
        Ok(self.installed.lock().unwrap().contains(&netns.path))
    }
}

/// The node proxy's handler: logs each request; fails the first `fail_adds` Adds of each uid.
struct Recorder {
    log: Log,
    fail_adds: usize,
    failed: BTreeMap<String, usize>,
}

impl ProxyHandler for Recorder {
    fn add(&mut self, uid: &PodUid, info: WorkloadInfo, _netns: OwnedFd) -> Result<(), String> {
        let failed = self.failed.entry(uid.to_string()).or_default();
        if *failed < self.fail_adds {
            *failed += 1;
            self.log.push(format!("proxy add-failed {uid}"));
            return Err(format!("cannot bind the listeners of {}", info.name));
        }
        self.log.push(format!(
            "proxy add {uid} {}/{} sa={}",
            info.namespace, info.name, info.service_account
        ));
        Ok(())
    }

    fn keep(&mut self, uid: &PodUid) {
        self.log.push(format!("proxy keep {uid}"));
    }

    fn del(&mut self, uid: &PodUid) {
        self.log.push(format!("proxy del {uid}"));
    }

    fn snapshot_done(&mut self, stale: Vec<PodUid>) {
        self.log.push(format!("proxy snapshot-done {stale:?}"));
    }
}

// === the test bed ===

struct Bed {
    _dir: tempfile::TempDir,
    log: Log,
    control: ControlPlane,
    namespaces: Arc<FakeNamespaces>,
    capture: Arc<FakeCapture>,
    zds: PathBuf,
    metrics: std::net::SocketAddr,
    agent: JoinHandle<()>,
    proxy: Option<JoinHandle<()>>,
}

impl Bed {
    /// A control plane holding `pods` and `namespaces` (started), the fakes, and the agent (started). `setup` runs
    /// on the fakes before the agent starts.
    async fn start(pods: Vec<Value>, namespaces: Vec<Value>, ips: &[&str], setup: impl FnOnce(&FakeCapture)) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::default();
        let mut control = ControlPlane::new(dir.path().join("control.sock"), pods, namespaces, log.clone());
        control.start();
        let namespaces = FakeNamespaces::new(ips);
        let capture = FakeCapture::new(log.clone());
        setup(&capture);
        let config = AgentConfig {
            node: NODE.to_string(),
            control_socket: control.socket.clone(),
            zds_socket: dir.path().join("run/zds.sock"),
            metrics_address: Some("127.0.0.1:0".parse().unwrap()),
            check_interval: Duration::from_millis(100),
            poll_wait: Duration::from_secs(30),
            listener_ports: PORTS.to_vec(),
        };
        let host = Host {
            namespaces: namespaces.clone(),
            capture: capture.clone(),
        };
        let agent = Agent::bind(config, host).await.unwrap();
        let metrics = agent.metrics_address().unwrap();
        let zds = agent.zds_socket().to_path_buf();
        let agent = tokio::spawn(async move {
            let end = agent.run().await;
            panic!("the agent stopped: {end:?}");
        });
        Bed {
            _dir: dir,
            log,
            control,
            namespaces,
            capture,
            zds,
            metrics,
            agent,
            proxy: None,
        }
    }

    /// Connects a node proxy that fails the first `fail_adds` Adds of each pod.
    fn connect_proxy(&mut self, fail_adds: usize) {
        let handler = Recorder {
            log: self.log.clone(),
            fail_adds,
            failed: BTreeMap::new(),
        };
        let path = self.zds.clone();
        self.proxy = Some(tokio::spawn(async move {
            ambit_zds::connect_proxy(&path, handler).await;
        }));
    }

    async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics, path).await
    }

    async fn wait_ready(&self) {
        wait_ready(self.metrics).await
    }

    async fn wait_metric(&self, line: &str) {
        wait_metric(self.metrics, line).await
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.agent.abort();
        if let Some(proxy) = &self.proxy {
            proxy.abort();
        }
    }
}

fn web_pods() -> (Vec<Value>, Vec<Value>) {
    let pods = vec![
        pod("echo", "web", "10.0.0.1", json!({"app": "echo"}), json!({})),
        pod("plain", "other", "10.0.0.2", json!({}), Value::Null),
    ];
    let namespaces = vec![
        namespace("web", json!({"istio.io/dataplane-mode": "ambient"})),
        namespace("other", json!({})),
    ];
    (pods, namespaces)
}

#[tokio::test]
async fn enrolls_after_the_ack_and_leaves_in_reverse_order() {
    let (pods, namespaces) = web_pods();
    let mut bed = Bed::start(pods, namespaces, &["10.0.0.1", "10.0.0.2"], |_| {}).await;
    // Capture goes in before any proxy is there; the annotation waits for the proxy's ack.
    let installed = bed.log.wait_for("capture install fake-netns/10.0.0.1").await;
    bed.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !bed.log.entries().iter().any(|e| e.starts_with("patch")),
        "{:?}",
        bed.log.entries()
    );
    bed.connect_proxy(0);
    let added = bed.log.wait_for("proxy add uid-echo web/echo sa=sa-echo").await;
    let patched = bed.log.wait_for(&format!("patch echo uid=uid-echo {ENABLED}")).await;
    assert!(installed < added && added < patched, "{:?}", bed.log.entries());
    bed.wait_metric("ambit_agent_enrolled_pods 1").await;
    bed.wait_metric("ambit_agent_zds_connections 1").await;
    assert_eq!(
        bed.control.pod("echo")["metadata"]["annotations"]["ambient.istio.io/redirection"],
        "enabled"
    );
    // The pod of the unlabelled namespace is left alone.
    assert!(!bed.capture.is_installed("10.0.0.2"));
    assert!(
        !bed.log
            .entries()
            .iter()
            .any(|e| e.contains("plain") || e.contains("10.0.0.2"))
    );

    // Opting out: annotation, then the proxy, then capture.
    bed.control.set_pod_label("echo", "istio.io/dataplane-mode", "none");
    let unpatched = bed.log.wait_for(&format!("patch echo uid=uid-echo {REMOVED}")).await;
    let deleted = bed.log.wait_for("proxy del uid-echo").await;
    let removed = bed.log.wait_for("capture remove fake-netns/10.0.0.1").await;
    assert!(unpatched < deleted && deleted < removed, "{:?}", bed.log.entries());
    bed.wait_metric("ambit_agent_enrolled_pods 0").await;
    assert!(
        bed.control.pod("echo")["metadata"]["annotations"]
            .get("ambient.istio.io/redirection")
            .is_none()
    );
    // Settled: nothing more happens.
    let settled = bed.log.entries().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bed.log.entries().len(), settled, "{:?}", bed.log.entries());
}

#[tokio::test]
async fn drift_is_repaired_counted_and_listeners_rehanded() {
    let (pods, namespaces) = web_pods();
    let mut bed = Bed::start(pods, namespaces, &["10.0.0.1"], |_| {}).await;
    bed.connect_proxy(0);
    bed.log.wait_for(&format!("patch echo uid=uid-echo {ENABLED}")).await;
    bed.wait_metric("ambit_agent_enrolled_pods 1").await;

    // A rule goes missing: reinstalled, counted.
    bed.capture
        .drift
        .lock()
        .unwrap()
        .push("inet istio-ambient-nat output: rule `x` is missing".into());
    eventually("a second install", || {
        (bed.log.count("capture install fake-netns/10.0.0.1") == 2).then_some(())
    })
    .await;
    bed.wait_metric("ambit_agent_capture_repairs_total{reason=\"rules\"} 1")
        .await;

    // The proxy's listeners vanish: the pod is taken from the proxy and handed again, counted.
    bed.namespaces.set_listening(&[15001]);
    bed.log.wait_for("proxy del uid-echo").await;
    bed.namespaces.set_listening(&PORTS);
    eventually("a second add", || {
        (bed.log.count("proxy add uid-echo web/echo sa=sa-echo") == 2).then_some(())
    })
    .await;
    bed.wait_metric("ambit_agent_capture_repairs_total{reason=\"listeners\"} 1")
        .await;
    // The annotation was not touched by the repairs; the pod stays enrolled.
    assert_eq!(bed.log.count(&format!("patch echo uid=uid-echo {ENABLED}")), 1);
    bed.wait_metric("ambit_agent_enrolled_pods 1").await;
    let (_, metrics) = bed.get("/metrics").await;
    let checks: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ambit_agent_capture_checks_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(checks >= 3, "{metrics}");

    // The sandbox is re-created: the namespace no longer holds the IP; capture goes into the new one (which has
    // none), and the proxy gets the new one.
    bed.namespaces.present.lock().unwrap().clear();
    bed.wait_metric("ambit_agent_capture_repairs_total{reason=\"netns\"} 1")
        .await;
    bed.log.wait_for("proxy del uid-echo").await;
    bed.capture.installed.lock().unwrap().clear();
    bed.namespaces
        .present
        .lock()
        .unwrap()
        .insert("10.0.0.1".parse().unwrap());
    eventually("a third install", || {
        (bed.log.count("capture install fake-netns/10.0.0.1") == 3).then_some(())
    })
    .await;
    eventually("a third add", || {
        (bed.log.count("proxy add uid-echo web/echo sa=sa-echo") == 3).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_control_plane_unenrolls_nothing() {
    let (pods, namespaces) = web_pods();
    let mut bed = Bed::start(pods, namespaces, &["10.0.0.1"], |_| {}).await;
    bed.connect_proxy(0);
    bed.log.wait_for(&format!("patch echo uid=uid-echo {ENABLED}")).await;
    bed.control.stop();
    let before = bed.log.entries();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        bed.log.entries(),
        before,
        "nothing may change while the control plane is away"
    );
    assert!(bed.capture.is_installed("10.0.0.1"));
    bed.wait_metric("ambit_agent_enrolled_pods 1").await;

    // It comes back with the pod opted out: now the agent lets it go.
    bed.control.set_pod_label("echo", "istio.io/dataplane-mode", "none");
    bed.control.start();
    bed.log.wait_for(&format!("patch echo uid=uid-echo {REMOVED}")).await;
    bed.log.wait_for("capture remove fake-netns/10.0.0.1").await;
}

#[tokio::test]
async fn a_restarted_agent_keeps_what_is_right() {
    // The pod was enrolled by an earlier agent: capture in place, annotation set.
    let pods = vec![pod(
        "echo",
        "web",
        "10.0.0.1",
        json!({"istio.io/dataplane-mode": "ambient"}),
        json!({"ambient.istio.io/redirection": "enabled"}),
    )];
    let mut bed = Bed::start(pods, vec![namespace("web", json!({}))], &["10.0.0.1"], |capture| {
        capture
            .installed
            .lock()
            .unwrap()
            .insert(fake_path(&"10.0.0.1".parse().unwrap()));
    })
    .await;
    bed.connect_proxy(0);
    bed.log.wait_for("proxy add uid-echo web/echo sa=sa-echo").await;
    bed.wait_metric("ambit_agent_enrolled_pods 1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entries = bed.log.entries();
    assert!(
        !entries
            .iter()
            .any(|e| e.starts_with("capture") || e.starts_with("patch")),
        "{entries:?}"
    );
}

#[tokio::test]
async fn capture_left_behind_in_a_pod_that_is_not_enrolled_is_removed() {
    // An earlier agent died while releasing `echo`: the annotation is gone, its capture is not. `other` was never
    // captured: it is left alone.
    let pods = vec![
        pod("echo", "web", "10.0.0.1", json!({}), json!({})),
        pod("other", "web", "10.0.0.2", json!({}), json!({})),
    ];
    let mut bed = Bed::start(
        pods,
        vec![namespace("web", json!({}))],
        &["10.0.0.1", "10.0.0.2"],
        |capture| {
            capture
                .installed
                .lock()
                .unwrap()
                .insert(fake_path(&"10.0.0.1".parse().unwrap()));
        },
    )
    .await;
    bed.connect_proxy(0);
    let echo = fake_path(&"10.0.0.1".parse().unwrap());
    bed.log.wait_for(&format!("capture remove {}", echo.display())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entries = bed.log.entries();
    assert_eq!(
        entries.iter().filter(|e| e.starts_with("capture")).count(),
        1,
        "{entries:?}"
    );
    assert!(
        !entries
            .iter()
            .any(|e| e.starts_with("patch") || e.starts_with("proxy add")),
        "{entries:?}"
    );
}

#[tokio::test]
async fn a_failed_add_is_handed_again_and_patched_only_once_served() {
    let (pods, namespaces) = web_pods();
    let mut bed = Bed::start(pods, namespaces, &["10.0.0.1"], |_| {}).await;
    bed.connect_proxy(1);
    let failed = bed.log.wait_for("proxy add-failed uid-echo").await;
    let added = bed.log.wait_for("proxy add uid-echo web/echo sa=sa-echo").await;
    let patched = bed.log.wait_for(&format!("patch echo uid=uid-echo {ENABLED}")).await;
    assert!(failed < added && added < patched, "{:?}", bed.log.entries());
    // The failed pod was withdrawn (a Del) before the second Add.
    let del = bed.log.wait_for("proxy del uid-echo").await;
    assert!(failed < del && del < added, "{:?}", bed.log.entries());
}

#[tokio::test]
async fn a_reconnecting_proxy_gets_every_enrolled_pod_again() {
    let (pods, namespaces) = web_pods();
    let mut bed = Bed::start(pods, namespaces, &["10.0.0.1"], |_| {}).await;
    bed.connect_proxy(0);
    bed.log.wait_for(&format!("patch echo uid=uid-echo {ENABLED}")).await;
    bed.proxy.take().unwrap().abort();
    bed.wait_metric("ambit_agent_zds_connections 0").await;
    bed.connect_proxy(0);
    eventually("a second add", || {
        (bed.log.count("proxy add uid-echo web/echo sa=sa-echo") == 2).then_some(())
    })
    .await;
    bed.log.wait_for("proxy snapshot-done []").await;
    bed.wait_metric("ambit_agent_zds_connections 1").await;
    assert_eq!(bed.log.count(&format!("patch echo uid=uid-echo {ENABLED}")), 1);
}

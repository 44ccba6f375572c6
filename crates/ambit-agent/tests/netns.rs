//! The agent as root against real network namespaces: the real namespace finder and nftables capture, a fake control
//! plane, and a node proxy on the real ZDS driver whose handler binds the in-pod listeners in the namespace it is
//! given. The pod namespace is `ambit-agt-<pid>-echo` with a veth pair inside holding 10.251.<pid % 250>.1; it is
//! deleted when the test ends, also on failure. Not being root is a failure, never a skip.
//!
//! Run with `cargo test -p ambit-agent --features netns-tests --test netns`.
#![cfg(feature = "netns-tests")]

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ambit_agent::{Agent, AgentConfig, CaptureConfig, Host, HostNamespaces, NftCapture};
use ambit_capture::Drift;
use ambit_netns::{ListenOptions, NETNS_DIR};
use ambit_zds::{PodUid, ProxyHandler, WorkloadInfo};
use serde_json::json;

use common::*;

/// A pod namespace with a veth pair inside, the pod's IP on one end; deleted on drop.
struct PodNs {
    name: String,
    ip: Ipv4Addr,
}

impl PodNs {
    fn create(name: String, ip: Ipv4Addr) -> PodNs {
        let ns = PodNs { name, ip };
        ns.delete();
        sh(&["ip", "netns", "add", &ns.name]);
        let n = ["ip", "-n", &ns.name];
        sh(&[&n[..], &["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]].concat());
        sh(&[&n[..], &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]].concat());
        for link in ["eth0", "eth1", "lo"] {
            sh(&[&n[..], &["link", "set", link, "up"]].concat());
        }
        ns
    }

    fn delete(&self) {
        // A namespace that was never created is no error here.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        self.delete();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_root() {
    assert!(
        is_root(),
        "the netns tests need root (they create network namespaces); run them as root"
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// A node proxy that binds the three in-pod listeners in each pod's namespace and holds them until the pod is
/// deleted (or the test drops them).
struct ListeningProxy {
    log: Log,
    listeners: Arc<Mutex<BTreeMap<String, Vec<TcpListener>>>>,
}

impl ProxyHandler for ListeningProxy {
    fn add(&mut self, uid: &PodUid, info: WorkloadInfo, netns: OwnedFd) -> Result<(), String> {
        let path = PathBuf::from(format!("/proc/self/fd/{}", netns.as_raw_fd()));
        let opts = ListenOptions {
            reuse_port: true,
            ..ListenOptions::default()
        };
        let bound: Result<Vec<TcpListener>, _> = PORTS
            .iter()
            .map(|port| ambit_netns::listen_in(&path, SocketAddr::from(([0, 0, 0, 0], *port)), opts))
            .collect();
        let bound = bound.map_err(|e| e.to_string())?;
        self.listeners.lock().unwrap().insert(uid.to_string(), bound);
        self.log
            .push(format!("proxy add {uid} {}/{}", info.namespace, info.name));
        Ok(())
    }

    fn keep(&mut self, _uid: &PodUid) {}

    fn del(&mut self, uid: &PodUid) {
        self.listeners.lock().unwrap().remove(uid.as_str());
        self.log.push(format!("proxy del {uid}"));
    }

    fn snapshot_done(&mut self, _stale: Vec<PodUid>) {}
}

fn verify(ns: &PodNs) -> Vec<Drift> {
    ambit_capture::verify(&ns.name, &CaptureConfig::default())
        .unwrap()
        .drift
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_repairs_and_releases_a_real_pod_namespace() {
    assert_root();
    let pid = std::process::id();
    let prefix = format!("ambit-agt-{pid}-");
    let ns = PodNs::create(format!("{prefix}echo"), Ipv4Addr::new(10, 251, (pid % 250) as u8, 1));
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let pods = vec![pod(
        "echo",
        "web",
        &ns.ip.to_string(),
        json!({"istio.io/dataplane-mode": "ambient"}),
        json!({}),
    )];
    let mut control = ControlPlane::new(dir.path().join("control.sock"), pods, vec![], log.clone());
    control.start();
    let config = AgentConfig {
        node: NODE.to_string(),
        control_socket: control.socket.clone(),
        zds_socket: dir.path().join("zds.sock"),
        metrics_address: Some("127.0.0.1:0".parse().unwrap()),
        check_interval: Duration::from_millis(200),
        poll_wait: Duration::from_secs(30),
        listener_ports: PORTS.to_vec(),
    };
    let host = Host {
        namespaces: Arc::new(HostNamespaces::new(Some(PathBuf::from(NETNS_DIR)), prefix)),
        capture: Arc::new(NftCapture::new(CaptureConfig::default())),
    };
    let agent = Agent::bind(config, host).await.unwrap();
    let (metrics, zds) = (agent.metrics_address().unwrap(), agent.zds_socket().to_path_buf());
    let agent = tokio::spawn(agent.run());
    let listeners = Arc::new(Mutex::new(BTreeMap::new()));
    let handler = ListeningProxy {
        log: log.clone(),
        listeners: listeners.clone(),
    };
    let proxy = tokio::spawn(async move { ambit_zds::connect_proxy(Path::new(&zds), handler).await });

    // Enrolled: capture in place in the real namespace, the proxy listening there, the pod annotated.
    log.wait_for(&format!("patch echo uid=uid-echo {ENABLED}")).await;
    assert_eq!(verify(&ns), []);
    wait_metric(metrics, "ambit_agent_enrolled_pods 1").await;

    // Someone deletes the nat table: the agent puts it back.
    sh(&[
        "ip",
        "netns",
        "exec",
        &ns.name,
        "nft",
        "delete",
        "table",
        "inet",
        "istio-ambient-nat",
    ]);
    wait_metric(metrics, "ambit_agent_capture_repairs_total{reason=\"rules\"} 1").await;
    eventually("capture repaired", || verify(&ns).is_empty().then_some(())).await;

    // The proxy loses the pod's listeners: the agent hands the pod again and the proxy binds them again.
    listeners.lock().unwrap().clear();
    wait_metric(metrics, "ambit_agent_capture_repairs_total{reason=\"listeners\"} 1").await;
    eventually("listeners bound again", || {
        listeners.lock().unwrap().contains_key("uid-echo").then_some(())
    })
    .await;

    // Opted out: annotation removed, the proxy drops the pod, capture goes.
    control.set_pod_label("echo", "istio.io/dataplane-mode", "none");
    log.wait_for(&format!("patch echo uid=uid-echo {REMOVED}")).await;
    eventually("the proxy's del", || {
        (log.count("proxy del uid-echo") == 2).then_some(())
    })
    .await;
    eventually("capture removed", || {
        verify(&ns)
            .iter()
            .any(|d| matches!(d, Drift::MissingTable { .. }))
            .then_some(())
    })
    .await;
    wait_metric(metrics, "ambit_agent_enrolled_pods 0").await;
    agent.abort();
    proxy.abort();
}

//! End-to-end test of node-scoped workload xDS (`ambit node --xds-scope node`, the default) on a two-node local
//! cluster: before any traffic node-1 holds its own pods and every service but not node-2's pods; a client on
//! node-1 then reaches a server on node-2 by pod IP and by ClusterIP over mTLS at the first try (the node proxy
//! looks the destination up while the connection waits), and node-1 holds the server afterwards. It needs root and
//! fails (never skips) without it.
#![cfg(feature = "netns-tests")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Two nodes; namespace `scope` enrolled in ambient with an echo pod (and service) on node-2 and a client pod on
/// node-1 running as service account `client`.
const MANIFEST: &str = r#"
apiVersion: ambit.dev/v1alpha1
kind: Cluster
metadata: {name: unused}
spec:
  nodes: [{name: node-1}, {name: node-2}]
---
apiVersion: v1
kind: Namespace
metadata: {name: scope, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: scope}
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: scope, labels: {app: echo}}
spec:
  nodeName: node-2
  containers:
  - name: echo
    command: [ambit, app, echo, --http, "0.0.0.0:8080"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: scope}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: scope}
spec:
  nodeName: node-1
  serviceAccountName: client
  containers:
  - {name: client, command: [sleep, infinity]}
"#;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/scope/sa/client";
const ECHO_ID: &str = "spiffe://cluster.local/ns/scope/sa/default";

/// `ambit proxy-config <kind> --node <node> -o json`, parsed; `None` while the proxy cannot answer.
fn proxy_config(c: &TestCluster, kind: &str, node: &str) -> Option<Vec<serde_json::Value>> {
    let out = ambit(&c.args(&["proxy-config", kind, "--node", node, "-o", "json"]));
    if !out.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("proxy-config -o json is JSON");
    Some(json.as_array().expect("a list").clone())
}

/// The names of the workloads `node`'s proxy holds.
fn workload_names(c: &TestCluster, node: &str) -> Vec<String> {
    let workloads = proxy_config(c, "workloads", node).unwrap_or_default();
    let names = workloads.iter().filter_map(|w| w["name"].as_str());
    names.map(str::to_string).collect()
}

/// Waits up to 5 s (the proxies may still be getting the last readiness changes after `cluster up`) until
/// `node` holds each workload of `names`, healthy; returns the names it holds then.
fn wait_healthy(c: &TestCluster, node: &str, names: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let workloads = proxy_config(c, "workloads", node).unwrap_or_default();
        let healthy = |name: &&str| workloads.iter().any(|w| w["name"] == *name && w["status"] == "HEALTHY");
        if names.iter().all(healthy) || Instant::now() > deadline {
            let held = workloads.iter().filter_map(|w| w["name"].as_str());
            return held.map(str::to_string).collect();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `curl` from a pod: (succeeded, body).
fn curl(c: &TestCluster, ns: &str, pod: &str, url: &str) -> (bool, String) {
    let out = c.exec(ns, pod, &format!("curl -sS -m 5 {url}"));
    (out.status.success(), text(&out))
}

/// The node proxy's Prometheus exposition, read inside the node's namespace.
fn node_metrics(c: &TestCluster, node: &str) -> String {
    let ns = format!("ambit.{}.node.{node}", c.name);
    let url = "http://127.0.0.1:15020/metrics";
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "curl", "-sS", "-m", "5", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "metrics of {node}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number of `metric` series whose labels include every one of `labels`.
fn series(metrics: &str, metric: &str, labels: &[&str]) -> usize {
    let prefix = format!("{metric}{{");
    let lines = metrics.lines().filter(|line| line.starts_with(&prefix));
    lines
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .count()
}

#[test]
fn a_node_holds_its_own_pods_and_looks_up_the_rest() {
    let c = TestCluster::start("scope", MANIFEST);
    let echo_ip = c.pod_ip("scope", "echo");

    // Before any traffic: each node holds its own pod and not the other node's. Once node-2 holds the echo pod
    // healthy, the control plane's state is the one node-1 will be sent.
    let node_1 = wait_healthy(&c, "node-1", &["client"]);
    assert!(
        node_1.iter().any(|n| n == "client"),
        "node-1 lacks its client pod: {node_1:?}"
    );
    assert!(
        !node_1.iter().any(|n| n == "echo"),
        "node-1 holds node-2's echo before any traffic: {node_1:?}"
    );
    let node_2 = wait_healthy(&c, "node-2", &["echo"]);
    assert!(
        node_2.iter().any(|n| n == "echo"),
        "node-2 lacks its echo pod: {node_2:?}"
    );
    assert!(
        !node_2.iter().any(|n| n == "client"),
        "node-2 holds node-1's client: {node_2:?}"
    );

    // ... but every service: node-1 knows the echo ClusterIP (without its endpoint).
    let services = proxy_config(&c, "services", "node-1").expect("node-1's services");
    let echo = services
        .iter()
        .find(|s| s["name"] == "echo" && s["namespace"] == "scope");
    let echo = echo.unwrap_or_else(|| panic!("node-1 lacks the echo service: {services:?}"));
    let vip = echo["addresses"][0]["address"]
        .as_str()
        .expect("the echo ClusterIP")
        .to_string();

    // By pod IP, first try: node-1 looks the address up while the connection waits.
    let (ok, body) = curl(&c, "scope", "client", &format!("http://{echo_ip}:8080/by-pod-ip"));
    assert!(ok, "client -> echo pod IP: {body}");
    assert!(body.contains("pod=echo"), "{body}");
    // By ClusterIP, first try: the service's endpoints are looked up.
    let (ok, body) = curl(&c, "scope", "client", &format!("http://{vip}/by-cluster-ip"));
    assert!(ok, "client -> echo ClusterIP {vip}: {body}");
    assert!(body.contains("pod=echo"), "{body}");

    // Both went through the tunnel with mutual TLS, from the client's identity to the echo's.
    let metrics = node_metrics(&c, "node-1");
    let labels = [
        "reporter=\"source\"",
        "connection_security_policy=\"mutual_tls\"",
        &format!("source_principal=\"{CLIENT_ID}\""),
        &format!("destination_principal=\"{ECHO_ID}\""),
        "destination_workload=\"echo\"",
    ];
    // The pod-IP connection names no service.
    let by_pod_ip = [&labels[..], &["destination_service=\"unknown\""]].concat();
    assert!(
        series(&metrics, "istio_tcp_connections_opened_total", &by_pod_ip) > 0,
        "node-1 has no mTLS series to the echo pod IP:\n{metrics}"
    );
    let by_service = [&labels[..], &["destination_service=\"echo.scope.svc.cluster.local\""]].concat();
    assert!(
        series(&metrics, "istio_tcp_connections_opened_total", &by_service) > 0,
        "node-1 has no mTLS series to the echo service:\n{metrics}"
    );

    // Afterwards node-1 holds the server's workload (and node-2 still does not hold the client).
    let node_1 = workload_names(&c, "node-1");
    assert!(
        node_1.iter().any(|n| n == "echo"),
        "node-1 did not keep the looked-up echo: {node_1:?}"
    );
    let services = proxy_config(&c, "services", "node-1").expect("node-1's services");
    assert!(services.iter().any(|s| s["name"] == "echo"), "{services:?}");
    let node_2 = workload_names(&c, "node-2");
    assert!(
        !node_2.iter().any(|n| n == "client"),
        "node-2 holds node-1's client: {node_2:?}"
    );
}

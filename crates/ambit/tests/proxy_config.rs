//! End-to-end test of `ambit proxy-config`: what the node proxies of a two-node local cluster hold, read from their
//! admin endpoints inside the node namespaces; with node-scoped xDS (the default), each holds its own node's pods and
//! looks the others up when traffic needs them. It needs root and fails (never skips) without it.
#![cfg(feature = "netns-tests")]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Two nodes; namespace `pc` enrolled in ambient with an echo pod (and service) on node-2, a client pod on node-1
/// running as service account `client`, and a namespace-wide policy admitting only that client.
const MANIFEST: &str = r#"
apiVersion: ambit.dev/v1alpha1
kind: Cluster
metadata: {name: unused}
spec:
  nodes: [{name: node-1}, {name: node-2}]
---
apiVersion: v1
kind: Namespace
metadata: {name: pc, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: pc}
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: pc, labels: {app: echo}}
spec:
  nodeName: node-2
  containers:
  - name: echo
    command: [ambit, app, echo, --http, "0.0.0.0:8080"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: pc}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: pc}
spec:
  nodeName: node-1
  serviceAccountName: client
  containers:
  - {name: client, command: [sleep, infinity]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-client, namespace: pc}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/pc/sa/client"]}
"#;

/// The rows of a table whose first line is its header, split on whitespace.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The row whose cell `column` is `value`.
fn row<'a>(table: &'a [Vec<String>], column: usize, value: &str) -> Option<&'a Vec<String>> {
    table.iter().find(|r| r.get(column).map(String::as_str) == Some(value))
}

#[test]
fn proxy_config_shows_what_each_node_proxy_holds() {
    let cluster = TestCluster::start("pc", MANIFEST);
    let pc = |args: &[&str]| {
        let mut all = vec!["proxy-config"];
        all.extend(args);
        ambit(&cluster.args(&all))
    };
    let out = |args: &[&str]| {
        let o = pc(args);
        assert!(o.status.success(), "proxy-config {args:?} failed: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };

    // Right after `cluster up` the proxies may still be getting the last state. Each node proxy holds its own
    // node's workloads (node-scoped xDS; others are looked up when traffic needs them).
    let workloads_of = |node: &str, pod: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let o = pc(&["workloads", "--node", node]);
            let table = String::from_utf8_lossy(&o.stdout).into_owned();
            if o.status.success() && row(&rows(&table), 1, pod).is_some() || Instant::now() > deadline {
                assert!(o.status.success(), "proxy-config workloads failed: {}", text(&o));
                return table;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    for (pod, node, other) in [("echo", "node-2", "client"), ("client", "node-1", "echo")] {
        let workloads = workloads_of(node, pod);
        let header: Vec<&str> = workloads.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["NAMESPACE", "POD/NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"]
        );
        let ws = rows(&workloads);
        let r = row(&ws, 1, pod).unwrap_or_else(|| panic!("no workload {pod} in:\n{workloads}"));
        let ip = cluster.pod_ip("pc", pod);
        assert_eq!(
            r,
            &["pc", pod, ip.as_str(), node, "None", "HBONE"],
            "workloads:\n{workloads}"
        );
        assert!(
            row(&ws, 1, other).is_none(),
            "{node} holds {other}, of another node:\n{workloads}"
        );
    }

    // The echo pod's proxy on node-2 serves, with the pod's identity.
    let pods = out(&["pods", "--node", "node-2"]);
    let echo = row(&rows(&pods), 0, "Kubernetes//Pod/pc/echo")
        .unwrap_or_else(|| panic!("no echo pod proxy in:\n{pods}"))
        .clone();
    assert_eq!(echo[2], "Ready", "pods:\n{pods}");
    assert_eq!(echo[3], "spiffe://cluster.local/ns/pc/sa/default", "pods:\n{pods}");
    // The pod's namespace as the agent handed it over: by inode, as the kernel names it (`net:[INODE]`).
    let netns = std::fs::metadata(format!("/run/netns/ambit.{}.pod.pc.echo", cluster.name)).unwrap();
    assert_eq!(
        echo[1],
        format!("net:[{}]", std::os::unix::fs::MetadataExt::ino(&netns)),
        "netns of echo: {pods}"
    );
    assert!(
        row(&rows(&pods), 0, "Kubernetes//Pod/pc/client").is_none(),
        "node-2 proxies a pod of node-1:\n{pods}"
    );

    // node-1 holds the client's certificate.
    let certs = out(&["certs", "--node", "node-1"]);
    let client = row(&rows(&certs), 0, "spiffe://cluster.local/ns/pc/sa/client")
        .unwrap_or_else(|| panic!("no client certificate in:\n{certs}"))
        .clone();
    assert_eq!(client[1..4], ["Leaf", "Available", "true"], "certs:\n{certs}");

    // Every proxy holds the policy.
    for node in ["node-1", "node-2"] {
        let policies = out(&["policies", "--node", node]);
        let p = row(&rows(&policies), 1, "only-client")
            .unwrap_or_else(|| panic!("no policy on {node} in:\n{policies}"))
            .clone();
        assert_eq!(p, ["pc", "only-client", "ALLOW", "NAMESPACE"], "policies:\n{policies}");
    }
    // Every service reaches every node; its endpoints only where they run (node-2) until traffic looks them up.
    for (node, endpoints) in [("node-1", "0"), ("node-2", "1")] {
        let services = out(&["services", "--node", node]);
        let svc = row(&rows(&services), 1, "echo")
            .unwrap_or_else(|| panic!("no echo service on {node} in:\n{services}"))
            .clone();
        assert_eq!(svc[0], "pc");
        assert_eq!(svc[3..], ["None", endpoints], "services on {node}:\n{services}");
    }

    // -o json is that section of the dump.
    let json = out(&["workloads", "--node", "node-1", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("workloads as JSON");
    let names: Vec<&str> = json
        .as_array()
        .expect("a list of workloads")
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["client"], "{json}");
    for kind in ["services", "policies", "certs", "pods"] {
        let json = out(&[kind, "--node", "node-2", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{kind} -o json: {e}"));
        assert!(v.is_array(), "{kind}: {v}");
    }

    // Node-scoped xDS at work: node-1 knows the echo ClusterIP but holds neither the echo pod nor its endpoint;
    // the client reaches it by pod IP and by ClusterIP at the first try (node-1 looks the destination up while the
    // connection waits), over mutual TLS, and node-1 holds the echo workload afterwards.
    let services = out(&["services", "--node", "node-1", "-o", "json"]);
    let services: serde_json::Value = serde_json::from_str(&services).unwrap();
    let echo = services.as_array().unwrap().iter().find(|s| s["name"] == "echo");
    let vip = echo.unwrap_or_else(|| panic!("node-1 lacks the echo service: {services}"))["addresses"][0]["address"]
        .as_str()
        .expect("the echo ClusterIP")
        .to_string();
    let echo_ip = cluster.pod_ip("pc", "echo");
    for url in [
        format!("http://{echo_ip}:8080/by-pod-ip"),
        format!("http://{vip}/by-cluster-ip"),
    ] {
        let (ok, body) = curl(&cluster, "pc", "client", &url);
        assert!(ok && body.contains("pod=echo"), "client -> {url}: {body}");
    }
    let metrics = node_metrics(&cluster, "node-1");
    let labels = [
        "reporter=\"source\"",
        "connection_security_policy=\"mutual_tls\"",
        "source_principal=\"spiffe://cluster.local/ns/pc/sa/client\"",
        "destination_principal=\"spiffe://cluster.local/ns/pc/sa/default\"",
        "destination_workload=\"echo\"",
    ];
    for service in ["unknown", "echo.pc.svc.cluster.local"] {
        let service = format!("destination_service=\"{service}\"");
        let with_service = [&labels[..], &[service.as_str()]].concat();
        assert!(
            !series(&metrics, "istio_tcp_connections_opened_total", &with_service).is_empty(),
            "node-1 has no mTLS series with {service}:\n{metrics}"
        );
    }
    let workloads = out(&["workloads", "--node", "node-1"]);
    assert!(
        row(&rows(&workloads), 1, "echo").is_some(),
        "node-1 did not keep the looked-up echo:\n{workloads}"
    );
    let workloads = out(&["workloads", "--node", "node-2"]);
    assert!(
        row(&rows(&workloads), 1, "client").is_none(),
        "node-2 holds node-1's client:\n{workloads}"
    );

    // A node that does not exist is an error naming it.
    let nope = pc(&["pods", "--node", "nope"]);
    assert!(!nope.status.success(), "--node nope succeeded");
    assert!(text(&nope).contains("nope"), "{}", text(&nope));
}

//! End-to-end tests of the node agent on the local cluster: running pods join and leave the mesh without a restart,
//! capture that is removed by hand is repaired and leaks nothing meanwhile, node proxies and agents survive being
//! killed, and a node-proxy upgrade under load fails no connection. They need root and fail (never skip) without it.
#![cfg(feature = "netns-tests")]

mod common;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Two nodes; namespace `mesh` enrolled in ambient, `late` not (yet). Each has a client on node-1 and an echo server
/// (HTTP 8080, TCP echo 9000) on node-2.
const MANIFEST: &str = r#"
apiVersion: ambit.dev/v1alpha1
kind: Cluster
metadata: {name: unused}
spec:
  nodes: [{name: node-1}, {name: node-2}]
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: late}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: mesh}
spec:
  nodeName: node-2
  containers:
  - name: echo
    command: [ambit, app, echo, --http, "0.0.0.0:8080", --tcp, "0.0.0.0:9000"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh}
spec:
  nodeName: node-1
  containers:
  - {name: main, command: [sleep, infinity]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: late}
spec:
  nodeName: node-2
  containers:
  - name: echo
    command: [ambit, app, echo, --http, "0.0.0.0:8080", --tcp, "0.0.0.0:9000"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: late}
spec:
  nodeName: node-1
  containers:
  - {name: main, command: [sleep, infinity]}
"#;

/// Istio's nftables table of the in-pod redirects.
const NAT_TABLE: &str = "istio-ambient-nat";

/// The pids of a pod's running containers, from the supervisor's status (the agent's own short-lived `ip`/`nft`
/// commands also run in the pod's namespace, so the namespace's process list is not the pod's).
fn pod_pids(c: &TestCluster, ns: &str, pod: &str) -> Vec<u32> {
    let status = c.status();
    let pods = status["pods"].as_array().unwrap();
    let pod = pods
        .iter()
        .find(|p| p["namespace"] == ns && p["name"] == pod)
        .unwrap_or_else(|| panic!("no pod {ns}/{pod} in the status"));
    let containers = pod["containers"].as_array().unwrap();
    let mut pids: Vec<u32> = containers
        .iter()
        .filter_map(|c| c["state"]["Running"]["pid"].as_u64().map(|p| p as u32))
        .collect();
    pids.sort();
    // Each is still the same process, alive.
    assert!(pids.iter().all(|pid| pid_alive(*pid)), "{pids:?}");
    pids
}

/// Whether the pod's namespace holds the capture's nat table.
fn has_capture(c: &TestCluster, ns: &str, pod: &str) -> bool {
    let netns = format!("ambit.{}.pod.{ns}.{pod}", c.name);
    Command::new("ip")
        .args(["netns", "exec", &netns, "nft", "list", "table", "inet", NAT_TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Whether the control plane describes the pod as enrolled (HBONE: the agent marked it redirected).
fn described_enrolled(c: &TestCluster, ns: &str, pod: &str) -> bool {
    let out = ambit(&c.args(&["describe", "pod", pod, "-n", ns]));
    out.status.success() && text(&out).contains("enrolled (HBONE)")
}

/// A node's address on the fabric, from the cluster plan.
fn node_address(c: &TestCluster, node: &str) -> Ipv4Addr {
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.run_dir().join("plan.json")).unwrap()).unwrap();
    let nodes = plan["nodes"].as_array().unwrap();
    let node = nodes.iter().find(|n| n["name"] == node).unwrap();
    node["address"].as_str().unwrap().parse().unwrap()
}

/// The node agent's Prometheus exposition (`<node address>:15014/metrics`), read inside the node's namespace.
fn agent_metrics(c: &TestCluster, node: &str) -> String {
    let ns = format!("ambit.{}.node.{node}", c.name);
    let url = format!("http://{}:15014/metrics", node_address(c, node));
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "curl", "-sS", "-m", "5", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "agent metrics of {node}: {}", text(&out));
    text(&out)
}

/// The sum of the values of `metric`'s series that carry every label of `labels`.
fn metric_sum(metrics: &str, metric: &str, labels: &[&str]) -> f64 {
    let bare = metrics
        .lines()
        .filter(|line| labels.is_empty() && line.split_whitespace().next() == Some(metric));
    let labelled = series(metrics, metric, labels).into_iter();
    bare.chain(labelled)
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The pid of a node's `ambit agent` process.
fn agent_pid(c: &TestCluster, node: &str) -> Option<u32> {
    let ns = format!("ambit.{}.node.{node}", c.name);
    let out = Command::new("ip").args(["netns", "pids", &ns]).output().unwrap();
    text(&out)
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.get(1) == Some(&&b"agent"[..]) && args.windows(2).any(|w| w[0] == b"--node" && w[1] == node.as_bytes())
        })
}

/// Every `ambit node` process of a node (two while an upgrade drains the old one).
fn node_proxy_pids(c: &TestCluster, node: &str) -> Vec<u32> {
    let ns = format!("ambit.{}.node.{node}", c.name);
    let out = Command::new("ip").args(["netns", "pids", &ns]).output().unwrap();
    text(&out)
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.get(1) == Some(&&b"node"[..]) && args.windows(2).any(|w| w[0] == b"--node" && w[1] == node.as_bytes())
        })
        .collect()
}

/// Runs a Python script in a pod; its standard output, trimmed.
fn python(c: &TestCluster, ns: &str, pod: &str, script: &str) -> String {
    let out = ambit(&[
        "exec",
        "-n",
        ns,
        pod,
        "--cluster",
        &c.name,
        "--",
        "python3",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "python in {ns}/{pod}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// `ambit app load ARGS -o json` run from a pod in the background.
fn start_load(c: &TestCluster, ns: &str, pod: &str, args: &[&str]) -> Child {
    let mut command = Command::new(AMBIT);
    command.args([
        "exec",
        "-n",
        ns,
        pod,
        "--cluster",
        &c.name,
        "--",
        "ambit",
        "app",
        "load",
    ]);
    command.args(args).args(["-o", "json"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The JSON report of a finished load.
fn load_report(load: Child) -> serde_json::Value {
    let out = load.wait_with_output().unwrap();
    assert!(out.status.success(), "the load did not run: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("load report: {e}: {}", text(&out)))
}

#[test]
fn running_pods_join_and_leave_the_mesh_without_a_restart() {
    let c = TestCluster::start("enroll", MANIFEST);
    let server_ip = c.pod_ip("late", "server");
    let client_ip = c.pod_ip("late", "client");
    let url = |marker: &str| format!("http://{server_ip}:8080/{marker}");
    assert!(
        eventually(Duration::from_secs(10), || curl(&c, "late", "client", &url("warm")).0),
        "late/client -> late/server before enrollment"
    );
    let pids = (pod_pids(&c, "late", "client"), pod_pids(&c, "late", "server"));
    assert!(!pids.0.is_empty() && !pids.1.is_empty(), "no app processes: {pids:?}");
    assert!(!has_capture(&c, "late", "client") && !described_enrolled(&c, "late", "client"));

    // Before: plaintext on the fabric (the capture below proves it can see it).
    let capture = Capture::start(&c, "node0");
    let (sent, body) = curl(&c, "late", "client", &url("BEFORE-MARKER-5d1e"));
    assert!(sent, "{body}");
    let before = capture.finish();
    assert!(
        before.iter().any(|s| contains(&s.payload, "BEFORE-MARKER-5d1e")),
        "the unenrolled client's request must cross the fabric in plaintext"
    );

    // Enroll the running pods: label their namespace.
    ok(&c.args(&["label", "namespace", "late", "istio.io/dataplane-mode=ambient"]));
    assert!(
        eventually(Duration::from_secs(10), || described_enrolled(&c, "late", "client")
            && described_enrolled(&c, "late", "server")),
        "the agents did not enroll the late pods"
    );
    assert!(has_capture(&c, "late", "client") && has_capture(&c, "late", "server"));
    // `ambit get pods` shows the annotation the agent patched, as `kubectl get` shows the live object.
    let pod = ok(&c.args(&["get", "pods", "client", "-n", "late", "-o", "json"]));
    let pod: serde_json::Value = serde_json::from_str(&pod).unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["ambient.istio.io/redirection"], "enabled",
        "{pod}"
    );
    // New connections are mTLS once both node proxies have the server's HBONE address.
    let mtls = [
        "connection_security_policy=\"mutual_tls\"",
        "source_principal=\"spiffe://cluster.local/ns/late/sa/default\"",
    ];
    assert!(
        eventually(Duration::from_secs(10), || curl(&c, "late", "client", &url("probe")).0
            && !series(
                &node_metrics(&c, "node-2"),
                "istio_tcp_connections_opened_total",
                &mtls
            )
            .is_empty()),
        "no mTLS connection from late/client reached node-2"
    );
    let capture = Capture::start(&c, "node0");
    let (sent, body) = curl(&c, "late", "client", &url("MESH-MARKER-8c2a"));
    assert!(sent, "{body}");
    assert!(
        body.contains(&format!("peer={client_ip}:")),
        "the server must see the client's pod IP: {body}"
    );
    let during = capture.finish();
    let client: Ipv4Addr = client_ip.parse().unwrap();
    let of_client: Vec<&Segment> = during
        .iter()
        .filter(|s| s.src.0 == client || s.dst.0 == client)
        .collect();
    assert!(!of_client.is_empty(), "no traffic of the client was captured");
    assert!(
        of_client.iter().all(|s| s.src.1 == 15008 || s.dst.1 == 15008),
        "the enrolled client sent non-HBONE traffic: {of_client:?}"
    );
    assert!(
        !during.iter().any(|s| contains(&s.payload, "MESH-MARKER-8c2a")),
        "plaintext crossed the fabric"
    );
    assert_eq!(
        (pod_pids(&c, "late", "client"), pod_pids(&c, "late", "server")),
        pids,
        "enrollment restarted a pod's processes"
    );

    // Leave: remove the label; capture goes, traffic is plain again, the processes stay.
    ok(&c.args(&["label", "namespace", "late", "istio.io/dataplane-mode-"]));
    assert!(
        eventually(Duration::from_secs(10), || !described_enrolled(&c, "late", "client")
            && !described_enrolled(&c, "late", "server")
            && !has_capture(&c, "late", "client")
            && !has_capture(&c, "late", "server")),
        "the agents did not release the late pods"
    );
    assert!(
        eventually(Duration::from_secs(10), || curl(&c, "late", "client", &url("after")).0),
        "late/client -> late/server after leaving the mesh"
    );
    let capture = Capture::start(&c, "node0");
    let (sent, body) = curl(&c, "late", "client", &url("AFTER-MARKER-3b7f"));
    assert!(sent, "{body}");
    let after = capture.finish();
    assert!(
        after.iter().any(|s| contains(&s.payload, "AFTER-MARKER-3b7f")),
        "after leaving the mesh the request is plain TCP again"
    );
    assert_eq!(
        (pod_pids(&c, "late", "client"), pod_pids(&c, "late", "server")),
        pids,
        "leaving the mesh restarted a pod's processes"
    );
}

/// Run in the client pod: deletes the capture's nat table, then at once tries a plain connection to the server and
/// sends a marker. Prints `raced` when the table was back before the connection started (the agent repaired it
/// first: the attempt proves nothing), else `failed` or `connected`.
fn gap_script(server_ip: &str) -> String {
    format!(
        "import socket,subprocess\n\
         subprocess.run(['nft','delete','table','inet','{NAT_TABLE}'],check=True)\n\
         back=subprocess.run(['nft','list','table','inet','{NAT_TABLE}'],capture_output=True).returncode==0\n\
         if back:\n\
         \x20 print('raced')\n\
         else:\n\
         \x20 try:\n\
         \x20   s=socket.create_connection(('{server_ip}',8080),timeout=3)\n\
         \x20   s.sendall(b'GET /GAP-MARKER-6e0d HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
         \x20   s.settimeout(3)\n\
         \x20   print('connected' if s.recv(64) else 'failed')\n\
         \x20 except Exception:\n\
         \x20   print('failed')\n"
    )
}

#[test]
fn capture_removed_by_hand_is_repaired_and_the_gap_leaks_nothing() {
    let c = TestCluster::start("repair", MANIFEST);
    let server_ip = c.pod_ip("mesh", "server");
    let client: Ipv4Addr = c.pod_ip("mesh", "client").parse().unwrap();
    let reachable = || curl(&c, "mesh", "client", &format!("http://{server_ip}:8080/")).0;
    assert!(
        eventually(Duration::from_secs(10), reachable),
        "mesh/client -> mesh/server"
    );
    assert!(has_capture(&c, "mesh", "client"));
    let repairs_before = metric_sum(
        &agent_metrics(&c, "node-1"),
        "ambit_agent_capture_repairs_total",
        &["reason=\"rules\""],
    );

    let capture = Capture::start(&c, "node0");
    let mut outcome = String::new();
    let mut repaired_in = Duration::ZERO;
    for _ in 0..3 {
        let removed = Instant::now();
        outcome = python(&c, "mesh", "client", &gap_script(&server_ip));
        assert!(
            eventually(Duration::from_secs(5), || has_capture(&c, "mesh", "client")),
            "the removed rules were not repaired within 5 s"
        );
        repaired_in = removed.elapsed();
        if outcome != "raced" {
            break;
        }
    }
    assert_eq!(outcome, "failed", "with its rules gone the pod's connection must fail");
    assert!(
        repaired_in < Duration::from_secs(5) + Duration::from_secs(4),
        "repair took {repaired_in:?}"
    );
    // Repaired: the pod talks through the mesh again.
    assert!(
        eventually(Duration::from_secs(5), reachable),
        "no traffic after the repair"
    );
    let segments = capture.finish();
    let plain: Vec<&Segment> = segments
        .iter()
        .filter(|s| (s.src.0 == client || s.dst.0 == client) && s.src.1 != 15008 && s.dst.1 != 15008)
        .collect();
    assert!(
        plain.is_empty(),
        "the pod's traffic left outside the tunnel during the gap: {plain:?}"
    );
    assert!(
        !segments.iter().any(|s| contains(&s.payload, "GAP-MARKER-6e0d")),
        "plaintext crossed the fabric"
    );

    let metrics = agent_metrics(&c, "node-1");
    let repairs = metric_sum(&metrics, "ambit_agent_capture_repairs_total", &["reason=\"rules\""]);
    assert!(
        repairs > repairs_before,
        "the repair was not counted: {repairs_before} -> {repairs}"
    );
    assert!(metric_sum(&metrics, "ambit_agent_capture_checks_total", &[]) > 0.0);
}

#[test]
fn killed_node_proxies_come_back_within_5s_and_a_killed_agent_fails_nothing() {
    let c = TestCluster::start("kill", MANIFEST);
    let server_ip = c.pod_ip("mesh", "server");
    let url = format!("http://{server_ip}:8080/");
    let reachable = || curl(&c, "mesh", "client", &url).0;
    assert!(
        eventually(Duration::from_secs(10), reachable),
        "mesh/client -> mesh/server"
    );

    // The agents are not on the data path: killing both under load fails no request.
    let load = start_load(
        &c,
        "mesh",
        "client",
        &["--url", &url, "--new-connection", "--rate", "100", "--duration", "6s"],
    );
    std::thread::sleep(Duration::from_secs(1));
    let agents: Vec<u32> = ["node-1", "node-2"]
        .iter()
        .map(|n| agent_pid(&c, n).expect("agent runs"))
        .collect();
    for pid in &agents {
        kill("-KILL", *pid);
    }
    let report = load_report(load);
    assert_eq!(
        report["errors"], 0,
        "requests failed while the agents were killed: {report}"
    );
    assert!(report["requests"].as_u64().unwrap() > 400, "{report}");
    assert!(
        eventually(Duration::from_secs(10), || ["node-1", "node-2"]
            .iter()
            .zip(&agents)
            .all(|(n, old)| agent_pid(&c, n).is_some_and(|p| p != *old))),
        "the agents were not restarted"
    );

    // A node proxy killed under load is back, serving the pod, within 5 s.
    let load = start_load(
        &c,
        "mesh",
        "client",
        &[
            "--url",
            &url,
            "--new-connection",
            "--rate",
            "50",
            "--duration",
            "8s",
            "--timeout",
            "1s",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    let old = node_proxy_pid(&c, "node-2").expect("node-2's proxy runs");
    let killed = Instant::now();
    kill("-KILL", old);
    assert!(
        eventually(Duration::from_secs(5), || node_proxy_pid(&c, "node-2")
            .is_some_and(|p| p != old)
            && reachable()),
        "node-2's proxy was not back within 5 s"
    );
    let back_in = killed.elapsed();
    assert!(back_in < Duration::from_secs(6), "back after {back_in:?}");
    let report = load_report(load);
    assert!(
        report["requests"].as_u64().unwrap() > 100,
        "traffic did not resume: {report}"
    );
}

#[test]
fn upgrading_both_node_proxies_under_load_fails_and_resets_nothing() {
    let c = TestCluster::start("upgrade", MANIFEST);
    let server_ip = c.pod_ip("mesh", "server");
    let url = format!("http://{server_ip}:8080/");
    assert!(
        eventually(Duration::from_secs(10), || curl(&c, "mesh", "client", &url).0),
        "mesh/client -> mesh/server"
    );
    let before: Vec<u32> = ["node-1", "node-2"]
        .iter()
        .map(|n| node_proxy_pid(&c, n).unwrap())
        .collect();

    // 500 new connections per second, and 50 long-lived connections streaming requests, across the nodes.
    let seconds = "16s";
    let new_connections = start_load(
        &c,
        "mesh",
        "client",
        &[
            "--url",
            &url,
            "--new-connection",
            "--rate",
            "500",
            "--connections",
            "50",
            "--duration",
            seconds,
        ],
    );
    let tcp = format!("{server_ip}:9000");
    let long_lived = start_load(
        &c,
        "mesh",
        "client",
        &[
            "--tcp",
            &tcp,
            "--connections",
            "50",
            "--rate",
            "250",
            "--duration",
            seconds,
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    for node in ["node-2", "node-1"] {
        let out = ok(&c.args(&["node", "upgrade", "--node", node]));
        assert!(out.contains("upgraded"), "{out}");
        std::thread::sleep(Duration::from_secs(2));
    }
    let fresh = load_report(new_connections);
    let streams = load_report(long_lived);
    assert_eq!(
        fresh["errors"], 0,
        "new connections failed during the upgrades: {fresh}"
    );
    assert_eq!(
        streams["errors"], 0,
        "long-lived connections failed or were reset during the upgrades: {streams}"
    );
    assert!(fresh["requests"].as_u64().unwrap() > 500 * 14, "{fresh}");
    assert!(streams["requests"].as_u64().unwrap() > 250 * 14, "{streams}");

    // New instances serve; the old ones exit once their connections ended.
    for (node, old) in ["node-1", "node-2"].iter().zip(&before) {
        assert!(
            eventually(Duration::from_secs(10), || node_proxy_pids(&c, node) != vec![*old]
                && !node_proxy_pids(&c, node).contains(old)
                && node_proxy_pids(&c, node).len() == 1),
            "{node}: the old proxy {old} did not hand over and exit: {:?}",
            node_proxy_pids(&c, node)
        );
    }
    assert!(curl(&c, "mesh", "client", &url).0, "no traffic after the upgrades");
}

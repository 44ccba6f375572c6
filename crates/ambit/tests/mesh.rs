//! End-to-end tests of the mesh on the local cluster: enrolled pods on two nodes talk through the node proxies over
//! HBONE, the fabric between the nodes carries only TLS to port 15008, and L4 policy is enforced. They need root
//! and fail (never skip) without it.
#![cfg(feature = "netns-tests")]

mod common;

use std::io::{BufRead, BufReader, Lines};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// Two nodes; namespaces `mesh`, `guarded` and `strict` enrolled in ambient, `plain` not. `guarded` admits only
/// the `mesh/client` identity; `strict` requires mTLS.
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
metadata: {name: guarded, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: strict, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: mesh}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: other, namespace: mesh}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: mesh}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        command: [ambit, app, echo, --http, "0.0.0.0:8080", --tcp, "0.0.0.0:9000"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: mesh}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh}
spec:
  nodeName: node-1
  serviceAccountName: client
  containers:
  - {name: client, command: [sleep, infinity]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: mesh}
spec:
  nodeName: node-1
  serviceAccountName: other
  containers:
  - {name: other, command: [sleep, infinity]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: mesh}
spec:
  nodeName: node-2
  containers:
  - name: nginx
    command:
    - sh
    - -c
    - |
      mkdir -p www logs && echo nginx-says-hello > www/index.html
      printf 'user root;\npid nginx.pid;\nevents {}\nhttp {\n  access_log off;\n  server { listen 8080; root www; }\n}\n' > nginx.conf
      exec nginx -p "$PWD/" -e stderr -c nginx.conf -g 'daemon off;'
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: vault, namespace: guarded}
spec:
  nodeName: node-2
  containers:
  - name: echo
    command: [ambit, app, echo, --http, "0.0.0.0:8080"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-client, namespace: guarded}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/mesh/sa/client"]}
---
apiVersion: v1
kind: Pod
metadata: {name: locked, namespace: strict}
spec:
  nodeName: node-2
  containers:
  - name: echo
    command: [ambit, app, echo, --http, "0.0.0.0:8080"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: strict}
spec:
  mtls: {mode: STRICT}
---
apiVersion: v1
kind: Pod
metadata: {name: outsider, namespace: plain}
spec:
  nodeName: node-1
  containers:
  - {name: outsider, command: [sleep, infinity]}
"#;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/mesh/sa/client";
const ECHO_ID: &str = "spiffe://cluster.local/ns/mesh/sa/default";

/// Rewrites the cluster's objects file (the control plane's cluster source) through `edit`, atomically as the
/// supervisor does; returns the original text, to put back with [`write_objects`].
fn edit_objects(c: &TestCluster, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let path = c.run_dir().join("objects.json");
    let original = std::fs::read(&path).unwrap();
    let mut objects: serde_json::Value = serde_json::from_slice(&original).unwrap();
    edit(&mut objects);
    write_objects(c, &serde_json::to_vec_pretty(&objects).unwrap());
    original
}

fn write_objects(c: &TestCluster, bytes: &[u8]) {
    let path = c.run_dir().join("objects.json");
    let tmp = path.with_extension("json.edit");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// A DENY-everything AuthorizationPolicy for namespace `mesh`, as a user writes it.
const DENY_ALL: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: mesh
spec:
  action: DENY
  rules:
  - {}
"#;

#[test]
fn enrolled_pods_talk_over_mtls_across_nodes_and_policy_is_enforced() {
    let c = TestCluster::start("mesh", MANIFEST);
    let client_ip = c.pod_ip("mesh", "client");
    let web_ip = c.pod_ip("mesh", "web");
    let pods = c.get_pods("mesh");
    let echo: Vec<(String, String, String)> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "echo")
        .map(|p| {
            let field = |v: &serde_json::Value| v.as_str().unwrap().to_string();
            (
                field(&p["metadata"]["name"]),
                field(&p["spec"]["nodeName"]),
                field(&p["status"]["podIP"]),
            )
        })
        .collect();
    let (remote_echo, remote_echo_ip) = echo
        .iter()
        .find(|(_, node, _)| node == "node-2")
        .map(|(name, _, ip)| (name.clone(), ip.clone()))
        .expect("an echo pod on node-2");

    // The node proxies poll the mesh state: the last readiness changes reach them a moment after `cluster up`.
    let synced = eventually(Duration::from_secs(5), || {
        echo.iter()
            .all(|(_, _, ip)| curl(&c, "mesh", "client", &format!("http://{ip}:8080/")).0)
            && curl(&c, "mesh", "client", "http://echo.mesh.svc.cluster.local/").0
    });
    assert!(synced, "the echo pods are not reachable through the mesh");

    // Everything the enrolled client says to node-2 crosses the fabric through node-1's port: read it there.
    let capture = Capture::start(&c, "node0");

    // A ClusterIP reaches endpoints on both nodes, through the tunnel, and the server sees the client's pod IP.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..16 {
        let (ok, body) = curl(
            &c,
            "mesh",
            "client",
            "http://echo.mesh.svc.cluster.local/MESH-MARKER-7f3a",
        );
        assert!(ok, "client -> echo service: {body}");
        assert!(
            body.contains(&format!("peer={client_ip}:")),
            "the app must see the client's pod IP: {body}"
        );
        let pod = body
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        seen.insert(pod);
    }
    let names: std::collections::BTreeSet<String> = echo.iter().map(|(name, ..)| format!("pod={name}")).collect();
    assert_eq!(
        seen, names,
        "the ClusterIP must spread over the endpoints on both nodes"
    );

    // A program nobody here wrote, on both ends: curl against Debian's nginx.
    let (ok, body) = curl(&c, "mesh", "client", &format!("-i http://{web_ip}:8080/"));
    assert!(
        ok && body.contains("nginx-says-hello") && body.contains("Server: nginx"),
        "curl -> nginx: {body}"
    );

    // A client outside the mesh talks plaintext (PERMISSIVE accepts it): proof that the capture sees payloads.
    let (ok, body) = curl(
        &c,
        "plain",
        "outsider",
        &format!("http://{remote_echo_ip}:8080/PLAIN-MARKER-19c2"),
    );
    assert!(ok, "outsider -> echo (PERMISSIVE): {body}");
    assert!(body.contains(&format!("pod={remote_echo}")), "{body}");

    let segments = capture.finish();
    let client: Ipv4Addr = client_ip.parse().unwrap();
    let from_client: Vec<&Segment> = segments
        .iter()
        .filter(|s| s.src.0 == client || s.dst.0 == client)
        .collect();
    assert!(!from_client.is_empty(), "no traffic of the client was captured");
    let not_hbone: Vec<_> = from_client
        .iter()
        .filter(|s| s.src.1 != 15008 && s.dst.1 != 15008)
        .collect();
    assert!(
        not_hbone.is_empty(),
        "the enrolled client sent non-HBONE traffic on the fabric: {not_hbone:?}"
    );
    let plaintext = segments
        .iter()
        .filter(|s| contains(&s.payload, "MESH-MARKER-7f3a"))
        .count();
    assert_eq!(
        plaintext, 0,
        "application plaintext of the enrolled client crossed the fabric"
    );
    // TLS records (type, then version 3.3) in both directions.
    let record =
        |s: &&&Segment| s.payload.len() > 5 && (0x14..=0x17).contains(&s.payload[0]) && s.payload[1..3] == [3, 3];
    assert!(
        from_client.iter().filter(|s| s.dst.1 == 15008).any(|s| record(&s)),
        "no TLS record sent to 15008"
    );
    assert!(
        from_client.iter().filter(|s| s.src.1 == 15008).any(|s| record(&s)),
        "no TLS record from 15008"
    );
    assert!(
        segments.iter().any(|s| contains(&s.payload, "PLAIN-MARKER-19c2")),
        "the capture must see the unenrolled client's plaintext (else it proves nothing)"
    );

    // Metrics on both nodes: mutual TLS, both SPIFFE principals.
    let labels = [
        "connection_security_policy=\"mutual_tls\"",
        &format!("source_principal=\"{CLIENT_ID}\""),
        &format!("destination_principal=\"{ECHO_ID}\""),
    ];
    let source = node_metrics(&c, "node-1");
    let mut source_labels = labels.to_vec();
    source_labels.push("reporter=\"source\"");
    assert!(
        !series(&source, "istio_tcp_connections_opened_total", &source_labels).is_empty(),
        "node-1 metrics lack the mTLS source series:\n{source}"
    );
    let destination = node_metrics(&c, "node-2");
    let mut destination_labels = labels.to_vec();
    destination_labels.push("reporter=\"destination\"");
    // node-2 does not hold node-1's client (node-scoped xDS): its workload labels come from the tunnel's baggage.
    destination_labels.push("source_workload=\"client\"");
    destination_labels.push("source_workload_namespace=\"mesh\"");
    assert!(
        !series(&destination, "istio_tcp_connections_opened_total", &destination_labels).is_empty(),
        "node-2 metrics lack the mTLS destination series:\n{destination}"
    );
    let by_service = [
        "reporter=\"destination\"",
        "destination_service=\"echo.mesh.svc.cluster.local\"",
    ];
    assert!(
        !series(&destination, "istio_tcp_connections_opened_total", &by_service).is_empty(),
        "node-2 does not name the service the client called:\n{destination}"
    );

    // The admin endpoint shows what node-2 serves: its pods with their identities, their certificates, the state.
    let ns = format!("ambit.{}.node.node-2", c.name);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "curl",
            "-sS",
            "-m",
            "5",
            "http://127.0.0.1:15000/config_dump",
        ])
        .output()
        .unwrap();
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("config_dump is JSON");
    let pods = dump["pods"].as_array().expect("pods in the config dump");
    let remote_uid = format!("Kubernetes//Pod/mesh/{remote_echo}");
    let pod = pods
        .iter()
        .find(|p| p["uid"] == remote_uid.as_str())
        .expect("node-2 serves the remote echo pod");
    assert_eq!(
        (pod["state"].as_str(), pod["identity"].as_str()),
        (Some("Ready"), Some(ECHO_ID)),
        "{pod}"
    );
    assert!(
        pods.iter()
            .all(|p| !p["uid"].as_str().unwrap().contains("/mesh/client")),
        "node-2 serves node-1's pod"
    );
    let certs = dump["certificates"].as_array().unwrap();
    assert!(
        certs
            .iter()
            .any(|c| c["identity"] == ECHO_ID && c["state"] == "Available"),
        "{certs:?}"
    );
    // Node-scoped xDS: node-2 holds its own pods' workloads (and what its traffic looked up), every policy.
    let workloads = dump["workloads"].as_array().unwrap();
    assert!(
        workloads.iter().any(|w| w["uid"] == remote_uid.as_str()),
        "{workloads:?}"
    );
    assert!(!dump["policies"].as_array().unwrap().is_empty());

    // ALLOW by principal: only mesh/client reaches guarded/vault.
    let vault_ip = c.pod_ip("guarded", "vault");
    let (ok, body) = curl(&c, "mesh", "client", &format!("http://{vault_ip}:8080/"));
    assert!(ok, "the allowed principal is refused: {body}");
    let (ok, body) = curl(&c, "mesh", "other", &format!("http://{vault_ip}:8080/"));
    assert!(!ok, "a principal the ALLOW policy does not name got through: {body}");
    let (ok, body) = curl(&c, "plain", "outsider", &format!("http://{vault_ip}:8080/"));
    assert!(!ok, "a plaintext client got past an ALLOW-by-principal policy: {body}");

    // STRICT refuses the unenrolled client; mTLS clients pass.
    let locked_ip = c.pod_ip("strict", "locked");
    let (ok, body) = curl(&c, "plain", "outsider", &format!("http://{locked_ip}:8080/"));
    assert!(!ok, "STRICT accepted a plaintext client: {body}");
    // node-2 does not hold node-1's outsider (node-scoped xDS) and plaintext carries no baggage: it looks the
    // source up, so the refusal names it.
    let refused = [
        "reporter=\"destination\"",
        "response_flags=\"DENY\"",
        "source_workload=\"outsider\"",
        "source_workload_namespace=\"plain\"",
    ];
    let named = series(
        &node_metrics(&c, "node-2"),
        "istio_tcp_connections_failed_total",
        &refused,
    )
    .len();
    assert!(named > 0, "node-2 does not name the plaintext source it refused");
    let (ok, body) = curl(&c, "mesh", "client", &format!("http://{locked_ip}:8080/"));
    assert!(ok, "STRICT refused an mTLS client: {body}");

    // A peer presenting the wrong identity is refused: the state says strict/locked runs as `impostor`, but its
    // node proxy proves `default`.
    let original = edit_objects(&c, |objects| {
        for pod in objects["items"].as_array_mut().unwrap() {
            if pod["kind"] == "Pod" && pod["metadata"]["name"] == "locked" {
                pod["spec"]["serviceAccountName"] = "impostor".into();
            }
        }
    });
    let refused = eventually(Duration::from_secs(5), || {
        !curl(&c, "mesh", "client", &format!("http://{locked_ip}:8080/")).0
    });
    assert!(refused, "a server proving another identity than expected was accepted");
    let failures = series(
        &node_metrics(&c, "node-1"),
        "istio_tcp_connections_failed_total",
        &[
            "response_flags=\"TLS_FAILURE\"",
            "destination_principal=\"spiffe://cluster.local/ns/strict/sa/impostor\"",
        ],
    )
    .len();
    assert!(failures > 0, "the identity mismatch is not reported as TLS_FAILURE");
    write_objects(&c, &original);
    let back = eventually(Duration::from_secs(5), || {
        curl(&c, "mesh", "client", &format!("http://{locked_ip}:8080/")).0
    });
    assert!(back, "restoring the identity did not restore the connection");

    // A DENY policy takes effect within 1 s and closes the live connection it now forbids.
    let mut live = live_connection(&c, "mesh", "client", &remote_echo_ip, 9000, 15);
    let mut lines = BufReader::new(live.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "connected");
    std::thread::sleep(Duration::from_millis(300));
    let applied = c.apply(DENY_ALL);
    let written = unix_now();
    assert!(
        applied.contains("authorizationpolicy.security.istio.io/deny-all created"),
        "{applied}"
    );
    let closed = lines.next().expect("the live connection's end").unwrap();
    let _ = live.wait();
    let closed_at: f64 = closed.strip_prefix("closed ").expect(&closed).parse().unwrap();
    assert!(
        closed_at - written < 1.0,
        "the live connection was closed {:.3} s after the DENY policy was applied",
        closed_at - written
    );
    let (ok, body) = curl(&c, "mesh", "client", &format!("http://{remote_echo_ip}:8080/"));
    assert!(!ok, "a new connection passed the DENY policy: {body}");
    let node2 = node_metrics(&c, "node-2");
    let denied = series(
        &node2,
        "istio_tcp_connections_failed_total",
        &["reporter=\"destination\"", "response_flags=\"DENY\""],
    );
    assert!(
        !denied.is_empty(),
        "denied connections are not counted with response_flags=DENY"
    );
    // What the control plane holds and says about it.
    let listed = common::ok(&c.args(&["get", "authorizationpolicies", "-n", "mesh"]));
    assert!(listed.contains("deny-all") && listed.contains("DENY"), "{listed}");
    let described = common::ok(&c.args(&["describe", "pod", "client", "-n", "mesh"]));
    assert!(
        described.contains("mesh/deny-all") && described.contains("DENIED"),
        "{described}"
    );

    let deleted = c.delete(DENY_ALL);
    assert!(deleted.contains("deny-all deleted"), "{deleted}");
    let lifted = eventually(Duration::from_secs(1), || {
        curl(&c, "mesh", "client", &format!("http://{remote_echo_ip}:8080/")).0
    });
    assert!(lifted, "deleting the DENY policy did not restore traffic within 1 s");
}

/// One enrolled client on node-1 and an enrolled TCP echo server on node-2.
const DRAIN_MANIFEST: &str = r#"
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
  - {name: client, command: [sleep, infinity]}
"#;

/// A python loop in `pod` that exchanges a few bytes with `addr` every 20 ms over one connection; prints
/// `connected`, then `closed <unix time>` when the connection fails, or `still open` after `seconds`.
fn live_connection(c: &TestCluster, ns: &str, pod: &str, ip: &str, port: u16, seconds: u32) -> Child {
    let script = format!(
        "import socket,time\n\
         s=socket.create_connection(('{ip}',{port}),timeout=5)\n\
         s.settimeout(5)\n\
         print('connected',flush=True)\n\
         give_up=time.time()+{seconds}\n\
         while time.time()<give_up:\n\
         \x20 try:\n\
         \x20   s.sendall(b'ping')\n\
         \x20   d=s.recv(64)\n\
         \x20   assert d\n\
         \x20 except Exception as e:\n\
         \x20   print('closed',repr(time.time()),flush=True)\n\
         \x20   break\n\
         \x20 time.sleep(0.02)\n\
         else:\n\
         \x20 print('still open',flush=True)\n"
    );
    let args = [
        "exec",
        "-n",
        ns,
        pod,
        "--cluster",
        &c.name,
        "--",
        "python3",
        "-c",
        &script,
    ];
    Command::new(AMBIT).args(args).stdout(Stdio::piped()).spawn().unwrap()
}

/// [`DRAIN_MANIFEST`] up with the client reaching the server through the mesh, and a [`live_connection`] from the
/// client to the server's TCP echo, connected, that gives up after `seconds`.
fn with_live_connection(tag: &str, seconds: u32) -> (TestCluster, String, Child, Lines<BufReader<ChildStdout>>) {
    let c = TestCluster::start(tag, DRAIN_MANIFEST);
    let server_ip = c.pod_ip("mesh", "server");
    let reachable = || curl(&c, "mesh", "client", &format!("http://{server_ip}:8080/")).0;
    assert!(
        eventually(Duration::from_secs(5), reachable),
        "client -> server through the mesh"
    );
    let mut live = live_connection(&c, "mesh", "client", &server_ip, 9000, seconds);
    let mut lines = BufReader::new(live.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "connected");
    (c, server_ip, live, lines)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn sigterm_drains_live_connections_until_they_end_and_the_proxy_comes_back() {
    let (c, server_ip, mut live, mut lines) = with_live_connection("drain", 8);
    let reachable = || curl(&c, "mesh", "client", &format!("http://{server_ip}:8080/")).0;
    let pid = node_proxy_pid(&c, "node-2").expect("node-2's proxy runs");
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );

    // The draining proxy serves the established connection until the client ends it (no deadline by default)...
    let line = lines.next().expect("the live connection's end").unwrap();
    let _ = live.wait();
    assert_eq!(line, "still open", "the drain cut the established connection");
    // ... then exits, and the supervisor starts a new one that serves the pod again.
    assert!(
        eventually(Duration::from_secs(15), || node_proxy_pid(&c, "node-2")
            .is_some_and(|p| p != pid)
            && reachable()),
        "the node proxy did not come back"
    );
}

/// The pid of the cluster's `ambit control` process.
fn control_pid(c: &TestCluster) -> Option<u32> {
    let ns = format!("ambit.{}.fabric", c.name);
    let out = Command::new("ip").args(["netns", "pids", &ns]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).nth(1) == Some(&b"control"[..])
        })
}

#[test]
fn node_proxies_keep_serving_while_the_control_plane_is_away_and_resync_after() {
    let (c, server_ip, mut live, mut lines) = with_live_connection("away", 30);
    let reachable = || curl(&c, "mesh", "client", &format!("http://{server_ip}:8080/")).0;

    let pid = control_pid(&c).expect("the control plane runs");
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        eventually(Duration::from_secs(2), || control_pid(&c).is_none()),
        "the control plane did not die"
    );
    // Known workloads keep talking, over new connections too, while no control plane runs.
    assert!(reachable(), "a new connection failed while the control plane was away");

    // The supervisor restarts it; the node proxies reconnect and follow its state again.
    assert!(
        eventually(Duration::from_secs(15), || control_pid(&c).is_some_and(|p| p != pid)),
        "the control plane was not restarted"
    );
    // The restarted control plane serves its config API once it has reloaded the objects and the config store.
    assert!(
        eventually(Duration::from_secs(10), || ambit(&c.args(&[
            "get",
            "authorizationpolicies",
            "-A"
        ]))
        .status
        .success()),
        "the restarted control plane's config API never answered"
    );
    c.apply(DENY_ALL);
    let denied_at = unix_now();
    assert!(
        eventually(Duration::from_secs(10), || !reachable()),
        "a policy applied after the restart never reached the node proxies"
    );
    c.delete(DENY_ALL);
    assert!(
        eventually(Duration::from_secs(10), reachable),
        "lifting the policy did not restore traffic"
    );

    // The connection opened before the control plane died lived through the outage and the resync: it ended only
    // when the DENY policy closed it.
    let line = lines.next().expect("the live connection's end").unwrap();
    let _ = live.wait();
    let closed_at: f64 = line.strip_prefix("closed ").expect(&line).parse().unwrap();
    assert!(
        closed_at >= denied_at,
        "the live connection ended {:.2} s before the DENY policy, during the outage or the resync",
        denied_at - closed_at
    );
}

//! End-to-end tests of the local cluster on real network namespaces. They need root and fail (never skip) without
//! it. Each test uses its own cluster name, and tears its cluster down also when it fails.
#![cfg(feature = "netns-tests")]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The manifests most tests start from: two nodes, an echo Deployment, a client pod, an echo Service and a
/// Service whose selector matches nothing (a warning).
const MANIFEST: &str = r#"
apiVersion: ambit.dev/v1alpha1
kind: Cluster
metadata: {name: unused}
spec:
  nodes: [{name: node-1}, {name: node-2}]
---
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: demo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        command: [ambit, app, echo, --http, "0.0.0.0:8080"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: orphan, namespace: demo}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec:
  nodeName: node-1
  serviceAccountName: client
  containers:
  - name: client
    command: [sh, -c, 'echo "hello from $(POD_NAME) on $(NODE_NAME)"; exec sleep infinity']
"#;

/// The tests' cluster: MANIFEST plus extra documents.
trait Demo: Sized {
    fn up(tag: &str) -> Self {
        Self::up_with(tag, "")
    }
    fn up_with(tag: &str, extra: &str) -> Self;
    fn pods(&self) -> serde_json::Value;
    fn echo_pods(&self) -> Vec<(String, String, String)>;
    fn sh(&self, script: &str) -> Output;
    fn sh_ok(&self, script: &str) -> String;
}

impl Demo for TestCluster {
    fn up_with(tag: &str, extra: &str) -> Self {
        TestCluster::start(tag, &format!("{MANIFEST}{extra}"))
    }

    fn pods(&self) -> serde_json::Value {
        self.get_pods("demo")
    }

    /// (name, node, ip) of the echo pods.
    fn echo_pods(&self) -> Vec<(String, String, String)> {
        let pods = self.pods();
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "echo")
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["spec"]["nodeName"].as_str().unwrap().to_string(),
                    p["status"]["podIP"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Runs a shell command in the client pod.
    fn sh(&self, script: &str) -> Output {
        self.exec("demo", "client", script)
    }

    fn sh_ok(&self, script: &str) -> String {
        self.exec_ok("demo", "client", script)
    }
}

#[test]
fn pods_talk_across_nodes_through_cluster_ip_and_by_dns_name() {
    // A job that fails twice, then succeeds: restarted with backoff, in the same working directory.
    let job = r#"---
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: demo}
spec:
  restartPolicy: OnFailure
  containers:
  - name: job
    command: [sh, -c, 'n=$(cat runs 2>/dev/null || echo 0); echo $((n+1)) > runs; echo "run $n"; [ "$n" -ge 2 ]']
"#;
    let c = TestCluster::up_with("traffic", job);
    assert!(
        c.up_output.contains("warning") && c.up_output.contains("matches no pod"),
        "{}",
        c.up_output
    );

    let echo = c.echo_pods();
    assert_eq!(echo.len(), 2);
    let nodes: BTreeSet<_> = echo.iter().map(|e| e.1.clone()).collect();
    assert_eq!(nodes.len(), 2, "replicas spread over both nodes: {echo:?}");

    // Pod to pod across nodes, and the server sees the client's own pod IP.
    let client_ip = c.pods()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == "client")
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .unwrap();
    let (remote, _, remote_ip) = echo.iter().find(|e| e.1 == "node-2").unwrap();
    let body = c.sh_ok(&format!("curl -sS --max-time 5 http://{remote_ip}:8080/across"));
    assert!(body.contains(&format!("pod={remote}")), "{body}");
    assert!(body.contains(&format!("peer={client_ip}:")), "{body}");

    // The ClusterIP spreads over both endpoints (on different nodes).
    let answers =
        c.sh_ok("for i in $(seq 30); do curl -sS --max-time 5 http://echo.demo.svc.cluster.local/ | head -n1; done");
    for (name, _, _) in &echo {
        assert!(
            answers.contains(&format!("pod={name} ")),
            "{name} never answered:\n{answers}"
        );
    }

    // The three DNS name forms resolve to the ClusterIP.
    let svc = ok(&c.args(&["get", "services", "-n", "demo", "-o", "json"]));
    let svc: serde_json::Value = serde_json::from_str(&svc).unwrap();
    let vip = svc["items"][0]["spec"]["clusterIP"].as_str().unwrap().to_string();
    for name in ["echo", "echo.demo", "echo.demo.svc.cluster.local"] {
        let resolved = c.sh_ok(&format!("getent hosts {name}"));
        assert!(
            resolved.starts_with(&vip),
            "{name} resolved to {resolved:?}, want {vip}"
        );
        let body = c.sh_ok(&format!("curl -sS --max-time 5 http://{name}/dns"));
        assert!(body.contains("GET /dns"), "{body}");
    }
    assert!(
        !c.sh("getent hosts nosuchsvc").status.success(),
        "unknown names do not resolve"
    );

    // exec passes the exit code through; logs show what the container printed.
    assert_eq!(c.sh("exit 3").status.code(), Some(3));
    let logs = ok(&c.args(&["logs", "-n", "demo", "client"]));
    assert!(logs.contains("hello from client on node-1"), "{logs}");
    let wide = ok(&c.args(&["get", "services", "-n", "demo", "-o", "wide"]));
    assert!(wide.contains(&format!("{remote_ip}:8080")), "{wide}");

    // The job finished after two restarts; get prints it as kubectl would, and as Kubernetes objects.
    // (While it runs, a container without a probe counts as ready, so `up` may return before the job is done.)
    let job_row = || {
        let pods = ok(&c.args(&["get", "pods", "-n", "demo"]));
        pods.lines()
            .find(|l| l.trim_start().starts_with("job "))
            .unwrap_or_default()
            .to_string()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !job_row().contains("Completed") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let row = job_row();
    assert!(row.contains("Completed") && row.trim_end().ends_with(" 2"), "{row}");
    assert!(ok(&c.args(&["logs", "-n", "demo", "job"])).contains("run 2"));
    let yaml = ok(&c.args(&["get", "nodes", "-o", "yaml"]));
    assert!(
        yaml.contains("kind: Node") && yaml.contains("podCIDR: 10.244.1.0/24"),
        "{yaml}"
    );

    // Each node has a private credential for the control plane, and the control plane a map of them.
    use std::os::unix::fs::PermissionsExt;
    let creds = PathBuf::from(format!("/run/ambit/{}/credentials", c.name));
    for node in ["node-1", "node-2"] {
        let file = creds.join(format!("{node}.token"));
        let token = std::fs::read_to_string(&file).unwrap();
        assert!(
            token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
            "{token}"
        );
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let map: serde_json::Value =
        serde_json::from_slice(&std::fs::read(creds.join("node-credentials.json")).unwrap()).unwrap();
    assert_eq!(map.as_object().unwrap().len(), 2, "{map}");

    // The control plane's cluster source lists every pod and service as the Kubernetes API would.
    let objects_file = PathBuf::from(format!("/run/ambit/{}/objects.json", c.name));
    let objects: serde_json::Value = serde_json::from_slice(&std::fs::read(&objects_file).unwrap()).unwrap();
    let items = objects["items"].as_array().expect("a v1 List");
    let of_kind = |kind: &str| items.iter().filter(|o| o["kind"] == kind).count();
    assert_eq!(of_kind("Pod"), 4, "{objects}");
    assert!(
        items
            .iter()
            .any(|o| o["kind"] == "Service" && o["metadata"]["name"] == "echo" && o["metadata"]["namespace"] == "demo"),
        "{objects}"
    );

    let pids = c.container_pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    c.down();
    c.assert_gone(&pids);
}

#[test]
fn down_after_sigkilled_supervisor_and_two_clusters_side_by_side() {
    let links_before = host_links();
    let a = TestCluster::up("a");
    let b = TestCluster::up("b");
    for c in [&a, &b] {
        let body = c.sh_ok("curl -sS --max-time 5 http://echo/");
        assert!(body.contains("namespace=demo"), "{body}");
    }
    assert_eq!(host_links(), links_before, "the host's own network is untouched");

    let pids = a.container_pids();
    let supervisor = a.supervisor_pid();
    let killed = Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while pid_alive(supervisor) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        pids.iter().all(|p| pid_alive(*p)),
        "containers outlive a SIGKILLed supervisor"
    );
    a.down();
    a.assert_gone(&pids);

    // The other cluster is unaffected.
    let body = b.sh_ok("curl -sS --max-time 5 http://echo.demo/");
    assert!(body.contains("namespace=demo"), "{body}");
    let pids = b.container_pids();
    b.down();
    b.assert_gone(&pids);
    assert_eq!(host_links(), links_before);
}

#[test]
fn up_over_a_leftover_cluster_cleans_it_first() {
    let c = TestCluster::up("again");
    let old = c.container_pids();
    let file = c.dir.join("cluster.yaml");
    let out = ambit(&["cluster", "up", "-f", file.to_str().unwrap(), "--name", &c.name]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("exists already"), "{}", text(&out));
    assert!(old.iter().all(|p| !pid_alive(*p)), "old containers were stopped");
    let body = c.sh_ok("curl -sS --max-time 5 http://echo/");
    assert!(body.contains("namespace=demo"), "{body}");
}

/// Each invalid manifest is rejected before anything is created, with the file, document, field and reason.
#[test]
fn bad_input_is_rejected_and_nothing_is_created() {
    require_root();
    let cluster =
        "apiVersion: ambit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: bad}\nspec:\n  nodes: [{name: node-1}]\n";
    let pod = |spec: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{spec}");
    let good_container = "  containers: [{name: c, command: [sleep, '1']}]\n";
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 70000}]\n";
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "unknown kind",
            format!("{cluster}---\napiVersion: v1\nkind: Pdo\nmetadata: {{name: x}}\n"),
            &["document 2", "unknown kind \"Pdo\""],
        ),
        (
            "unknown node",
            format!(
                "{cluster}---\n{}",
                pod(&format!("  nodeName: node-9\n{good_container}"))
            ),
            &["document 2", "spec.nodeName", "node-9"],
        ),
        (
            "duplicate name",
            format!("{cluster}---\n{}---\n{}", pod(good_container), pod(good_container)),
            &["document 3", "duplicate Pod default/p"],
        ),
        (
            "bad port",
            format!("{cluster}---\n{service}"),
            &["document 2", "spec.ports[0].port", "70000"],
        ),
        (
            "cidr overlap",
            cluster.replace("  nodes:", "  serviceCIDR: 10.244.0.0/20\n  nodes:"),
            &["document 1", "overlap"],
        ),
        (
            "missing command",
            format!("{cluster}---\n{}", pod("  containers: [{name: c}]\n")),
            &["document 2", "spec.containers[0].command"],
        ),
    ];
    let dir = std::env::temp_dir().join(format!("ambit-e2e-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (what, manifest, expect) in cases {
        let name = unique("bad");
        let file = dir.join(format!("{}.yaml", what.replace(' ', "-")));
        std::fs::write(&file, manifest).unwrap();
        let out = ambit(&["cluster", "up", "-f", file.to_str().unwrap(), "--name", &name]);
        let msg = text(&out);
        assert!(!out.status.success(), "{what}: accepted:\n{msg}");
        assert!(
            msg.contains(file.to_str().unwrap()),
            "{what}: the message names the file:\n{msg}"
        );
        for e in expect {
            assert!(msg.contains(e), "{what}: want {e:?} in:\n{msg}");
        }
        assert!(
            netns_with_prefix(&format!("ambit.{name}.")).is_empty(),
            "{what}: namespaces were created"
        );
        assert!(
            !Path::new(&format!("/run/ambit/{name}")).exists(),
            "{what}: runtime dir was created"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_up_without_root_says_so() {
    require_root();
    // A copy of the binary any user can run, and the test manifests, run as nobody.
    let dir = std::env::temp_dir().join(format!("ambit-e2e-noroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("ambit");
    std::fs::copy(AMBIT, &exe).unwrap();
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rX", dir.to_str().unwrap()])
        .status()
        .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args(["cluster", "up", "-f", file.to_str().unwrap(), "--name", "noroot"])
        .output()
        .expect("run setpriv (util-linux)");
    let msg = text(&out);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "{msg}");
    assert!(msg.contains("needs root"), "{msg}");
}

/// A child process killed on drop.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_ca_issues_a_node_only_the_identities_of_its_own_pods() {
    use ambit_identity::cert::TrustBundle;
    use ambit_types::{Identity, TrustDomain};
    use ambit_xds::ca::{CaClient, CaClientError, control_identity};

    let c = TestCluster::up("ca");
    let ca_dir = c.dir.join("ca");
    let ca_dir = ca_dir.to_str().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let args = ["control", "--listen", &addr, "--ca-dir", ca_dir, "--cluster", &c.name];
    let log = std::fs::File::create(c.dir.join("control.log")).unwrap();
    let control = Command::new(AMBIT).args(args).stderr(log).spawn();
    let _control = ChildGuard(control.expect("start ambit control"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "ambit control did not listen on {addr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let bundle = TrustBundle::from_pem(&ok(&["ca", "root", "--ca-dir", ca_dir])).unwrap();
    let token =
        |node: &str| std::fs::read_to_string(format!("/run/ambit/{}/credentials/{node}.token", c.name)).unwrap();
    let server = control_identity(&TrustDomain::new("cluster.local").unwrap());
    let client_sa: Identity = "spiffe://cluster.local/ns/demo/sa/client".parse().unwrap();
    let echo_sa: Identity = "spiffe://cluster.local/ns/demo/sa/default".parse().unwrap();
    let code = |e: CaClientError| match e {
        CaClientError::Rpc(status) => status.code(),
        other => panic!("not an RPC refusal: {other}"),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connect = |token: String| {
            let (addr, bundle, server) = (addr.clone(), bundle.clone(), server.clone());
            async move { CaClient::connect(&addr, bundle, &token, server).await.unwrap() }
        };
        // node-1 runs the client pod: it gets the client identity, and the chain verifies against the root.
        let node1 = connect(token("node-1")).await;
        let cert = node1.create_certificate(&client_sa, None).await.unwrap();
        assert_eq!(cert.identity(), &client_sa);
        assert_eq!(
            bundle.verify(cert.chain(), std::time::SystemTime::now()).unwrap(),
            client_sa
        );
        // node-2 runs no pod of that service account; it does run an echo pod.
        let node2 = connect(token("node-2")).await;
        let denied = node2.create_certificate(&client_sa, None).await.unwrap_err();
        assert_eq!(code(denied), tonic::Code::PermissionDenied);
        assert_eq!(
            node2.create_certificate(&echo_sa, None).await.unwrap().identity(),
            &echo_sa
        );
        // A caller without a valid node credential gets nothing.
        let stranger = connect("0".repeat(64)).await;
        assert_eq!(
            code(stranger.create_certificate(&echo_sa, None).await.unwrap_err()),
            tonic::Code::Unauthenticated
        );
    });
    let check = ok(&["ca", "check", "--ca-dir", ca_dir]);
    assert!(
        check.contains(&client_sa.to_string()) && check.contains("node-1"),
        "{check}"
    );
}

//! End-to-end tests of the waypoint on the local cluster: a Gateway of class `istio-waypoint` gets its pod, Services
//! labelled `istio.io/use-waypoint` are sent through it by the node proxies over HBONE, and the acceptances of the
//! waypoint hold for unmodified clients (curl, the gRPC client): a weighted split, header and path routes, retries
//! against a half-failing backend, a request timeout, fault injection, an L7 DENY on a path, gRPC balanced per
//! request, and failing closed while the waypoint is stopped. They need root and fail (never skip) without it.
#![cfg(feature = "netns-tests")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// Two nodes; namespace `app` in ambient with its waypoint on node-1 and the client on node-1; the backends on
/// node-2: web-v1 and web-v2 (Service `web` over both, bound to the waypoint, and one Service per version), two
/// pods failing half their requests (`flaky`), two gRPC echo pods (`grpc`), and `faulty` (web-v2 with faults).
const MANIFEST: &str = r#"
apiVersion: ambit.dev/v1alpha1
kind: Cluster
metadata: {name: unused}
spec:
  nodes: [{name: node-1}, {name: node-2}]
---
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: app
  annotations: {ambit.dev/node: node-1}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v1, namespace: app}
spec:
  replicas: 1
  selector: {matchLabels: {app: web, version: v1}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      nodeName: node-2
      containers:
      - name: echo
        command: [ambit, app, echo, --http, "0.0.0.0:8080"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v2, namespace: app}
spec:
  replicas: 1
  selector: {matchLabels: {app: web, version: v2}}
  template:
    metadata: {labels: {app: web, version: v2}}
    spec:
      nodeName: node-2
      containers:
      - name: echo
        command: [ambit, app, echo, --http, "0.0.0.0:8080"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: flaky, namespace: app}
spec:
  replicas: 2
  selector: {matchLabels: {app: flaky}}
  template:
    metadata: {labels: {app: flaky}}
    spec:
      nodeName: node-2
      containers:
      - name: echo
        command: [ambit, app, echo, --http, "0.0.0.0:8080", --fail-percent, "50"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: grpc, namespace: app}
spec:
  replicas: 2
  selector: {matchLabels: {app: grpc}}
  template:
    metadata: {labels: {app: grpc}}
    spec:
      nodeName: node-2
      containers:
      - name: echo
        command: [ambit, app, echo, --grpc, "0.0.0.0:9090"]
        readinessProbe: {tcpSocket: {port: 9090}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app, labels: {istio.io/use-waypoint: waypoint}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: app}
spec:
  selector: {app: web, version: v1}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: app}
spec:
  selector: {app: web, version: v2}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: faulty, namespace: app, labels: {istio.io/use-waypoint: waypoint}}
spec:
  selector: {app: web, version: v2}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: flaky, namespace: app, labels: {istio.io/use-waypoint: waypoint}}
spec:
  selector: {app: flaky}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: grpc, namespace: app, labels: {istio.io/use-waypoint: waypoint}}
spec:
  selector: {app: grpc}
  ports: [{name: grpc, port: 9090, targetPort: 9090}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app}
spec:
  nodeName: node-1
  containers:
  - {name: main, command: [sleep, infinity]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    backendRefs: [{name: web-v1, port: 80}]
    timeouts: {request: 2s}
  - backendRefs:
    - {name: web-v1, port: 80, weight: 90}
    - {name: web-v2, port: 80, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: faulty
  namespace: app
  annotations: {fault.ambit.dev/abort-status: "418", fault.ambit.dev/abort-percent: "25"}
spec:
  parentRefs: [{group: "", kind: Service, name: faulty}]
  rules:
  - backendRefs: [{name: faulty, port: 80}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: app}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
"#;

/// The retry route of `flaky`, with `attempts` retries on 503.
fn flaky_route(attempts: u32) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: flaky, namespace: app}}
spec:
  parentRefs: [{{group: "", kind: Service, name: flaky}}]
  rules:
  - backendRefs: [{{name: flaky, port: 80}}]
    retry: {{codes: [503], attempts: {attempts}, backoff: 1ms}}
"#
    )
}

/// `count` requests from the client pod over one keep-alive connection (curl's URL ranges): per request, the
/// status and the answering pod's name without its ReplicaSet suffix (`web-v1`).
fn requests(c: &TestCluster, url: &str, count: usize, headers: &[&str]) -> Vec<(u16, String)> {
    let headers: String = headers.iter().map(|h| format!(" -H '{h}'")).collect();
    let separator = if url.contains('?') { '&' } else { '?' };
    let script = format!(
        "curl -s -m 60 -o /dev/null{headers} -w '%{{http_code}} %header{{x-echo-pod}}\\n' '{url}{separator}n=[1-{count}]'"
    );
    let out = c.exec_ok("app", "client", &script);
    let lines: Vec<(u16, String)> = out
        .lines()
        .map(|line| {
            let (code, pod) = line.split_once(' ').unwrap_or((line, ""));
            (code.parse().unwrap_or(0), workload(pod))
        })
        .collect();
    assert_eq!(lines.len(), count, "{out}");
    lines
}

/// `web-v1-p7fbqp82wf-zz2zj` -> `web-v1`.
fn workload(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    if parts.len() > 2 {
        parts[..parts.len() - 2].join("-")
    } else {
        pod.to_string()
    }
}

fn counts(results: &[(u16, String)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (code, pod) in results {
        *counts.entry(format!("{code} {pod}")).or_default() += 1;
    }
    counts
}

/// The waypoint pod's name and its container's pid.
fn waypoint_pod(c: &TestCluster) -> (String, u32) {
    let status = c.status();
    let pod = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["namespace"] == "app" && p["name"].as_str().unwrap().starts_with("waypoint-"))
        .expect("the waypoint's pod")
        .clone();
    let pid = pod["containers"][0]["state"]["Running"]["pid"]
        .as_u64()
        .expect("running") as u32;
    (pod["name"].as_str().unwrap().to_string(), pid)
}

fn signal(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

fn pod_ready(c: &TestCluster, name: &str) -> bool {
    let status = c.status();
    let pods = status["pods"].as_array().unwrap();
    pods.iter()
        .find(|p| p["name"] == name)
        .is_some_and(|p| p["ready"].as_bool() == Some(true))
}

#[test]
fn l7_traffic_management_through_the_waypoint() {
    let c = TestCluster::start("wp", MANIFEST);
    let web = "http://web.app.svc.cluster.local/";

    // Warm-up: right after `cluster up` the pods' readiness may not have reached the waypoint's state yet (a request
    // in that window is answered 503 `UH`, no healthy upstream); measure once the service answers steadily.
    let steady = eventually(Duration::from_secs(20), || {
        requests(&c, web, 50, &[]).iter().all(|(code, _)| *code == 200)
    });
    assert!(steady, "web never answered 50 requests in a row through the waypoint");

    // A 90/10 split lands within 5 points over 2000 requests.
    let split = requests(&c, web, 2000, &[]);
    let by_pod = counts(&split);
    let v1 = by_pod.get("200 web-v1").copied().unwrap_or(0);
    let v2 = by_pod.get("200 web-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 2000, "{by_pod:?}");
    assert!((1700..=1900).contains(&v1), "90/10 split: {by_pod:?}");

    // Header and path routes pick their backend.
    let by_header = counts(&requests(&c, web, 50, &["x-version: v2"]));
    assert_eq!(by_header, BTreeMap::from([("200 web-v2".to_string(), 50)]));
    let by_path = counts(&requests(&c, "http://web.app.svc.cluster.local/v1/items", 50, &[]));
    assert_eq!(by_path, BTreeMap::from([("200 web-v1".to_string(), 50)]));

    // A request timeout answers 504 at the configured time (2 s, within 10%: wide enough for a loaded machine).
    let timed = c.exec_ok(
        "app",
        "client",
        "curl -s -o /dev/null -w '%{http_code} %{time_starttransfer}\\n' \
         http://web.app.svc.cluster.local/ 'http://web.app.svc.cluster.local/slow?delay_ms=6000'",
    );
    let last = timed.lines().last().unwrap_or_default().to_string();
    let (code, seconds) = last.split_once(' ').unwrap();
    let seconds: f64 = seconds.parse().unwrap();
    assert_eq!(code, "504", "{timed}");
    // time_starttransfer counts from the start of this transfer on the kept-alive connection.
    assert!((1.8..=2.2).contains(&seconds), "answered after {seconds} s: {timed}");

    // An L7 DENY on a path answers 403 naming the policy; other paths pass.
    let denied = c.exec_ok(
        "app",
        "client",
        "curl -s -w ' %{http_code}' http://web.app.svc.cluster.local/admin/users",
    );
    assert!(denied.ends_with(" 403"), "{denied}");
    assert!(
        denied.contains("RBAC: access denied") && denied.contains("app/no-admin"),
        "{denied}"
    );
    let allowed = counts(&requests(&c, "http://web.app.svc.cluster.local/v1/public", 10, &[]));
    assert_eq!(allowed, BTreeMap::from([("200 web-v1".to_string(), 10)]));

    // A fault abort returns its code at its percentage (25% of 2000).
    let faults = requests(&c, "http://faulty.app.svc.cluster.local/", 2000, &[]);
    let aborted = faults.iter().filter(|(code, _)| *code == 418).count();
    let passed = faults
        .iter()
        .filter(|(code, pod)| *code == 200 && pod == "web-v2")
        .count();
    assert_eq!(aborted + passed, 2000, "{:?}", counts(&faults));
    assert!((400..=600).contains(&aborted), "{aborted} of 2000 aborted");

    // Retries turn a backend failing half its requests into at least 99% success.
    c.apply(&flaky_route(0));
    let mut without = 0;
    assert!(
        eventually(Duration::from_secs(5), || {
            let results = requests(&c, "http://flaky.app.svc.cluster.local/", 400, &[]);
            without = results.iter().filter(|(code, _)| *code == 200).count();
            without < 300
        }),
        "without retries {without} of 400 succeeded"
    );
    c.apply(&flaky_route(10));
    let mut with = 0;
    assert!(
        eventually(Duration::from_secs(5), || {
            let results = requests(&c, "http://flaky.app.svc.cluster.local/", 2000, &[]);
            with = results.iter().filter(|(code, _)| *code == 200).count();
            with >= 1980
        }),
        "with 10 retries {with} of 2000 succeeded"
    );

    // gRPC unary and streaming calls on one channel are balanced per request across both endpoints.
    let out = c.exec_ok(
        "app",
        "client",
        "ambit app grpc --target grpc.app.svc.cluster.local:9090 --calls 100 --stream-count 3",
    );
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    for kind in ["unary", "stream"] {
        let calls = &summary[kind];
        assert_eq!(calls["ok"], 100, "{kind}: {summary}");
        let pods = calls["pods"].as_object().unwrap();
        assert_eq!(pods.len(), 2, "{kind}: {summary}");
        assert!(pods.values().all(|n| n.as_u64().unwrap() >= 25), "{kind}: {summary}");
    }

    // The waypoint reports Istio's request metrics, the denial included.
    let (pod, pid) = waypoint_pod(&c);
    let metrics = c.exec_ok("app", &pod, "curl -s localhost:15020/metrics");
    let denied = series(
        &metrics,
        "istio_requests_total",
        &["reporter=\"waypoint\"", "response_code=\"403\""],
    );
    assert_eq!(denied.len(), 1, "{metrics}");
    let grpc = series(
        &metrics,
        "istio_requests_total",
        &["request_protocol=\"grpc\"", "grpc_response_status=\"0\""],
    );
    assert!(!grpc.is_empty(), "{metrics}");

    // A bound service fails closed while its waypoint is stopped, and recovers when it is back; a service that is
    // not bound is not affected.
    signal("-STOP", pid);
    let stopped = eventually(Duration::from_secs(15), || !pod_ready(&c, &pod));
    assert!(stopped, "the waypoint pod stays ready while stopped");
    let (ok, out) = curl(&c, "app", "client", "-o /dev/null http://web.app.svc.cluster.local/");
    let direct = curl(&c, "app", "client", "-o /dev/null http://web-v1.app.svc.cluster.local/");
    signal("-CONT", pid);
    assert!(!ok, "a bound service answered while its waypoint was stopped: {out}");
    assert!(direct.0, "an unbound service failed: {}", direct.1);
    let recovered = eventually(Duration::from_secs(15), || {
        curl(&c, "app", "client", "-o /dev/null http://web.app.svc.cluster.local/").0
    });
    assert!(
        recovered,
        "the bound service did not recover once the waypoint was back"
    );
}

/// Two nodes; namespace `ambient` in ambient with an echo pod on node-2, Service `web` bound to the waypoint `wp`,
/// which does not exist yet, and a client on node-1.
const LATER_MANIFEST: &str = r#"
apiVersion: ambit.dev/v1alpha1
kind: Cluster
metadata: {name: unused}
spec:
  nodes: [{name: node-1}, {name: node-2}]
---
apiVersion: v1
kind: Namespace
metadata: {name: ambient, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: ambient}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      nodeName: node-2
      containers:
      - name: echo
        command: [ambit, app, echo, --http, "0.0.0.0:8080"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ambient, labels: {istio.io/use-waypoint: wp}}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ambient}
spec:
  nodeName: node-1
  containers:
  - {name: main, command: [sleep, infinity]}
"#;

/// The waypoint `web` is bound to, applied once the cluster runs.
const LATER_WAYPOINT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: ambient}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#;

/// The name of the ready pod of waypoint `wp`, as `ambit get pods -n ambient` lists it.
fn ready_wp_pod(c: &TestCluster) -> Option<String> {
    let pods = c.get_pods("ambient");
    let items = pods["items"].as_array()?;
    let wp = items.iter().find(|pod| {
        pod["metadata"]["name"]
            .as_str()
            .is_some_and(|name| name.starts_with("wp-"))
    })?;
    let conditions = wp["status"]["conditions"].as_array()?;
    let ready = conditions
        .iter()
        .any(|condition| condition["type"] == "Ready" && condition["status"] == "True");
    ready.then(|| wp["metadata"]["name"].as_str().unwrap_or_default().to_string())
}

#[test]
fn a_waypoint_applied_later_gets_its_pod() {
    let c = TestCluster::start("wplater", LATER_MANIFEST);
    let web = "http://web.ambient.svc.cluster.local/";
    let answer = format!("curl -sS -m 5 -o /dev/null -w '%{{http_code}} %header{{x-echo-pod}}' {web}");

    // Bound to a waypoint that does not exist: the node proxy fails closed.
    let before = c.exec("ambient", "client", &answer);
    assert!(
        !before.status.success(),
        "answered without its waypoint: {}",
        text(&before)
    );
    assert!(ready_wp_pod(&c).is_none(), "a waypoint pod before its Gateway");

    // The Gateway applied: its pod runs and is ready within 20 s, and the service answers through it.
    c.apply(LATER_WAYPOINT);
    let mut pod = None;
    let deployed = eventually(Duration::from_secs(20), || {
        pod = ready_wp_pod(&c);
        pod.is_some()
    });
    let listed = ok(&c.args(&["get", "pods", "-n", "ambient"]));
    assert!(deployed, "no ready waypoint pod within 20 s:\n{listed}");
    let pod = pod.unwrap_or_default();
    assert!(listed.contains(&pod), "{listed}");
    let mut last = String::new();
    let served = eventually(Duration::from_secs(10), || {
        let out = c.exec("ambient", "client", &answer);
        last = text(&out);
        out.status.success() && last.starts_with("200 echo-")
    });
    assert!(served, "web did not answer through its waypoint: {last}");

    // The waypoint served it: its request metrics, as Istio's waypoint reports them.
    let metrics = c.exec_ok("ambient", &pod, "curl -s localhost:15020/metrics");
    let through = series(
        &metrics,
        "istio_requests_total",
        &[
            "reporter=\"waypoint\"",
            "response_code=\"200\"",
            "destination_service_name=\"web\"",
        ],
    );
    assert_eq!(through.len(), 1, "{metrics}");

    // `cluster down` removes the added pod like the others.
    let pids = c.container_pids();
    assert_eq!(pids.len(), 3, "echo, client and the waypoint: {pids:?}");
    c.down();
    c.assert_gone(&pids);
}

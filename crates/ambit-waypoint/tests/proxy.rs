//! The waypoint's request path end to end on loopback: tunnels served as HTTP/1.1 or HTTP/2, routed by HTTPRoutes to
//! echo servers (plain TCP endpoints on 127.0.0.x), with splits, matches, retries, timeouts, faults and L7
//! authorization. The HBONE legs are covered by the local-cluster tests; here the tunnel's inner stream is an
//! in-memory pipe.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ambit_apps::echo::{self, EchoConfig, EchoHandle, FailRate, ListenSpec, ListenerKind};
use ambit_config::Object;
use ambit_hbone::Authority;
use ambit_identity::cert::TrustBundle;
use ambit_identity::manager::{
    CertificateManager, CertificateSource, FetchError, FetchFuture, ManagerConfig, SystemClock,
};
use ambit_telemetry::http::RequestMetrics;
use ambit_telemetry::prometheus_client::registry::Registry;
use ambit_telemetry::{ConnectionContext, Reporter};
use ambit_types::Identity;
use ambit_waypoint::config::L7Config;
use ambit_waypoint::proxy::{Shared, Tunnel};
use ambit_waypoint::state::L7State;
use ambit_waypoint::target::WaypointId;
use ambit_waypoint::upstream::Upstreams;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Request headers of a test case.
type Headers<'a> = &'a [(&'a str, &'a str)];

const VIP_WEB: &str = "10.96.0.10";
const VIP_FLAKY: &str = "10.96.0.20";
const VIP_PAIR: &str = "10.96.0.30";
const VIP_DOWN: &str = "10.96.0.40";

/// A certificate source for tests whose endpoints are all plain TCP: never asked.
struct NoCertificates;

impl CertificateSource for NoCertificates {
    fn fetch(&self, identity: Identity) -> FetchFuture<'_> {
        Box::pin(async move { Err(FetchError(format!("no CA in this test (asked for {identity})"))) })
    }
}

/// Echo servers for pods v1 and v2 (always fine) and f1 and f2 (each failing half its requests with 503).
struct Backends {
    servers: Vec<(String, EchoHandle)>,
}

impl Backends {
    async fn start() -> Self {
        let mut servers = Vec::new();
        for (pod, ip, fail) in [
            ("v1", "127.0.0.11", FailRate::NEVER),
            ("v2", "127.0.0.12", FailRate::NEVER),
            ("f1", "127.0.0.13", FailRate::from_whole_percent(50)),
            ("f2", "127.0.0.14", FailRate::from_whole_percent(50)),
        ] {
            let identity = echo::Identity {
                pod: pod.to_string(),
                namespace: "app".to_string(),
                node: "node-1".to_string(),
                ip: ip.to_string(),
            };
            let spec = ListenSpec::new(ListenerKind::Http, SocketAddr::new(ip.parse().unwrap(), 0));
            let handle = echo::spawn(EchoConfig::new(identity).with_fail_rate(fail), &[spec])
                .await
                .unwrap();
            servers.push((pod.to_string(), handle));
        }
        Self { servers }
    }

    async fn shutdown(&mut self) {
        for (_, handle) in self.servers.drain(..) {
            handle.shutdown().await.unwrap();
        }
    }

    fn addr(&self, pod: &str) -> SocketAddr {
        let (_, handle) = self.servers.iter().find(|(name, _)| name == pod).unwrap();
        handle.addr(ListenerKind::Http).unwrap()
    }
}

/// The workload state: services web (v1, v2), web-v1, web-v2, flaky (f1, f2) and pair (v1, v2), all on port 80 and
/// bound to waypoint app/wp; each pod maps port 80 to its echo server's port.
fn snapshot(backends: &Backends) -> ambit_node::state::Snapshot {
    let waypoint = json!({"destination": {"hostname": "app/wp.app.svc.cluster.local"}});
    let membership: [(&str, &[&str]); 4] = [
        ("v1", &["web", "web-v1", "pair"]),
        ("v2", &["web", "web-v2", "pair"]),
        ("f1", &["flaky"]),
        ("f2", &["flaky"]),
    ];
    let workloads: Vec<Value> = membership
        .iter()
        .map(|(pod, services)| {
            let addr = backends.addr(pod);
            let mapping: BTreeMap<String, Value> = services
                .iter()
                .map(|s| {
                    let key = format!("app/{s}.app.svc.cluster.local");
                    (key, json!([{"service_port": 80, "target_port": addr.port()}]))
                })
                .collect();
            json!({"uid": format!("Kubernetes//Pod/app/{pod}"), "name": pod, "namespace": "app",
                   "addresses": [addr.ip().to_string()], "status": "HEALTHY", "services": mapping})
        })
        .collect();
    // Service `down`: one endpoint where nothing listens (port 9 on 127.0.0.15).
    let mut workloads = workloads;
    workloads.push(
        json!({"uid": "Kubernetes//Pod/app/gone", "name": "gone", "namespace": "app",
        "addresses": ["127.0.0.15"], "status": "HEALTHY",
        "services": {"app/down.app.svc.cluster.local": [{"service_port": 80, "target_port": 9}]}}),
    );
    let service = |name: &str, vip: &str| {
        json!({"name": name, "namespace": "app", "hostname": format!("{name}.app.svc.cluster.local"),
               "addresses": [{"address": vip}], "ports": [{"service_port": 80, "target_port": 8080}],
               "waypoint": waypoint})
    };
    let services = [
        service("web", VIP_WEB),
        service("web-v1", "10.96.0.11"),
        service("web-v2", "10.96.0.12"),
        service("flaky", VIP_FLAKY),
        service("pair", VIP_PAIR),
        service("down", VIP_DOWN),
    ];
    let state = json!({"workloads": workloads, "services": services});
    ambit_node::state::parse(Path::new("state.json"), &state.to_string(), 1).unwrap()
}

fn config(yaml: &str) -> L7Config {
    let mut config = L7Config::default();
    for object in ambit_config::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("{e:?}")) {
        let key = object.key();
        let name = format!("{:?}/{}/{}", key.kind, key.namespace, key.name);
        match object {
            Object::HttpRoute(route) => _ = config.http_routes.insert(name, *route),
            Object::AuthorizationPolicy(policy) => _ = config.policies.insert(name, *policy),
            Object::Gateway(gateway) => _ = config.gateways.insert(name, *gateway),
            other => panic!("unexpected {:?}", other.key()),
        }
    }
    config
}

struct Waypoint {
    shared: Arc<Shared>,
    registry: Registry,
    backends: Backends,
}

impl Waypoint {
    async fn start(yaml: &str) -> Self {
        let backends = Backends::start().await;
        let me = WaypointId {
            namespace: "app".into(),
            name: "wp".into(),
            addresses: vec![],
        };
        let state = L7State::build(
            Arc::new(snapshot(&backends)),
            Arc::new(config(yaml)),
            &me,
            "istio-system",
        );
        assert!(state.problems.is_empty(), "{:?}", state.problems);
        let (_tx, state) = watch::channel(Arc::new(state));
        std::mem::forget(_tx);
        let certificates = CertificateManager::new(
            Arc::new(NoCertificates),
            Arc::new(SystemClock),
            ManagerConfig::default(),
        );
        let identity: Identity = "spiffe://cluster.local/ns/app/sa/wp".parse().unwrap();
        let (_bundle_tx, bundle) = watch::channel(TrustBundle::new(Vec::new()));
        std::mem::forget(_bundle_tx);
        let upstreams = Upstreams::new(identity, certificates, bundle);
        let mut registry = Registry::default();
        let metrics = Arc::new(RequestMetrics::register(&mut registry));
        let tcp_metrics = Arc::new(ambit_telemetry::TcpMetrics::register(&mut registry));
        let shared = Arc::new(Shared::new(me, state, upstreams, metrics, tcp_metrics));
        Self {
            shared,
            registry,
            backends,
        }
    }

    /// A tunnel from `client` (identity `sa`) to `vip:80`, served as HTTP.
    fn tunnel(&self, vip: &str, sa: &str) -> tokio::io::DuplexStream {
        self.tunnel_as(vip, sa, Some(true))
    }

    /// A tunnel served as HTTP (`Some(true)`), as TCP (`Some(false)`) or as its first bytes say (`None`).
    fn tunnel_as(&self, vip: &str, sa: &str, http: Option<bool>) -> tokio::io::DuplexStream {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let peer: Identity = format!("spiffe://cluster.local/ns/app/sa/{sa}").parse().unwrap();
        let addr = SocketAddr::new(vip.parse::<IpAddr>().unwrap(), 80);
        // As the HBONE handler makes it: the waypoint reports, over mTLS, for the verified peer.
        let mut ctx = ConnectionContext::new(Reporter::Waypoint);
        ctx.mtls = true;
        ctx.source_principal = Some(peer.clone());
        let tunnel = Arc::new(Tunnel {
            authority: Authority::Addr(addr),
            peer_identity: Some(peer),
            client: "10.0.0.1:40000".parse().unwrap(),
            ctx,
        });
        tokio::spawn(ambit_waypoint::inbound::serve_tunnel(
            Arc::clone(&self.shared),
            tunnel,
            http,
            theirs,
        ));
        ours
    }

    /// The request metrics as Prometheus text.
    fn metrics(&self) -> String {
        let mut text = String::new();
        ambit_telemetry::prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    async fn http1(&self, vip: &str, sa: &str) -> http1::SendRequest<Empty<Bytes>> {
        let (sender, conn) = http1::handshake(TokioIo::new(self.tunnel(vip, sa))).await.unwrap();
        tokio::spawn(conn);
        sender
    }
}

/// Sends `GET path` with `headers`; the status, the answering pod (`x-echo-pod`) and the body.
async fn get(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::get(path).header("host", "web.app.svc.cluster.local");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender.ready().await.unwrap();
    let response = sender.send_request(request.body(Empty::new()).unwrap()).await.unwrap();
    let status = response.status();
    let pod = response
        .headers()
        .get("x-echo-pod")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, pod, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_weighted_split_lands_within_five_points() {
    let waypoint = Waypoint::start(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: app}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs:
    - {name: web-v1, port: 80, weight: 90}
    - {name: web-v2, port: 80, weight: 10}
"#,
    )
    .await;
    let mut client = waypoint.http1(VIP_WEB, "client").await;
    let mut v1 = 0;
    for _ in 0..2000 {
        let (status, pod, _) = get(&mut client, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        v1 += usize::from(pod.as_deref() == Some("v1"));
    }
    let share = v1 as f64 / 2000.0;
    assert!((0.85..=0.95).contains(&share), "v1 got {share:.3} of the requests");
}

#[tokio::test]
async fn header_and_path_matches_pick_their_backend() {
    let waypoint = Waypoint::start(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: by-match, namespace: app}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /two}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: web-v1, port: 80}]
"#,
    )
    .await;
    let mut client = waypoint.http1(VIP_WEB, "client").await;
    let cases: [(&str, Headers, &str); 5] = [
        ("/", &[], "v1"),
        ("/one", &[], "v1"),
        ("/two/x", &[], "v2"),
        ("/twofold", &[], "v1"),
        ("/", &[("x-version", "v2")], "v2"),
    ];
    for (path, headers, pod) in cases {
        for _ in 0..10 {
            let (status, got, _) = get(&mut client, path, headers).await;
            assert_eq!(
                (status, got.as_deref()),
                (StatusCode::OK, Some(pod)),
                "{path} {headers:?}"
            );
        }
    }
}

#[tokio::test]
async fn retries_turn_a_half_failing_backend_into_success() {
    let route = |attempts: u32| {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: retry, namespace: app}}
spec:
  parentRefs: [{{group: "", kind: Service, name: flaky}}]
  rules:
  - backendRefs: [{{name: flaky, port: 80}}]
    retry: {{codes: [503], attempts: {attempts}, backoff: 1ms}}
"#
        )
    };
    // Without retries about half fail; with 10 retries at most 0.5^11 of them would.
    for (attempts, range) in [(0, 0.35..=0.65), (10, 0.99..=1.0)] {
        let waypoint = Waypoint::start(&route(attempts)).await;
        let mut client = waypoint.http1(VIP_FLAKY, "client").await;
        let mut ok = 0;
        for _ in 0..1000 {
            let (status, _, _) = get(&mut client, "/", &[]).await;
            ok += usize::from(status == StatusCode::OK);
        }
        let share = ok as f64 / 1000.0;
        assert!(range.contains(&share), "{attempts} retries: {share:.3} succeeded");
    }
}

#[tokio::test]
async fn a_request_timeout_answers_504_on_time() {
    let waypoint = Waypoint::start(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: slow, namespace: app}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs: [{name: web, port: 80}]
    timeouts: {request: 1s}
"#,
    )
    .await;
    let mut client = waypoint.http1(VIP_WEB, "client").await;
    let started = Instant::now();
    let (status, _, body) = get(&mut client, "/?delay_ms=3000", &[]).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        (Duration::from_millis(900)..=Duration::from_millis(1100)).contains(&elapsed),
        "answered after {elapsed:?}"
    );
    let (status, _, _) = get(&mut client, "/?delay_ms=10", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_fault_abort_returns_its_code_at_its_percentage() {
    let waypoint = Waypoint::start(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: faulty
  namespace: app
  annotations: {fault.ambit.dev/abort-status: "418", fault.ambit.dev/abort-percent: "30"}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs: [{name: web, port: 80}]
"#,
    )
    .await;
    let mut client = waypoint.http1(VIP_WEB, "client").await;
    let mut aborted = 0;
    for _ in 0..2000 {
        let (status, pod, _) = get(&mut client, "/", &[]).await;
        match status {
            StatusCode::IM_A_TEAPOT => aborted += 1,
            StatusCode::OK => assert!(pod.is_some()),
            other => panic!("unexpected {other}"),
        }
    }
    let share = aborted as f64 / 2000.0;
    assert!((0.25..=0.35).contains(&share), "{share:.3} aborted");
}

#[tokio::test]
async fn an_l7_deny_on_a_path_returns_403_naming_the_policy() {
    let waypoint = Waypoint::start(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: app}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
"#,
    )
    .await;
    let mut client = waypoint.http1(VIP_WEB, "client").await;
    let (status, pod, body) = get(&mut client, "/admin/users", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(pod, None);
    assert!(
        body.contains("RBAC: access denied") && body.contains("app/no-admin"),
        "{body}"
    );
    let (status, pod, _) = get(&mut client, "/public", &[]).await;
    assert_eq!((status, pod.is_some()), (StatusCode::OK, true));
    // The same path through another service is not covered by the policy.
    let mut pair = waypoint.http1(VIP_PAIR, "client").await;
    let (status, _, _) = get(&mut pair, "/admin/users", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn http2_requests_on_one_connection_are_balanced_per_request() {
    let waypoint = Waypoint::start("").await;
    let io = TokioIo::new(waypoint.tunnel(VIP_PAIR, "client"));
    let (mut sender, conn) = http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut pods: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..200 {
        let request = Request::get("http://pair.app.svc.cluster.local/")
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let pod = response
            .headers()
            .get("x-echo-pod")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        *pods.entry(pod).or_default() += 1;
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.values().all(|&n| n >= 60), "{pods:?}");
}

#[tokio::test]
async fn an_unreachable_backend_answers_503_with_its_response_flags() {
    let waypoint = Waypoint::start("").await;
    let mut client = waypoint.http1(VIP_DOWN, "client").await;
    let (status, pod, body) = get(&mut client, "/", &[]).await;
    assert_eq!((status, pod), (StatusCode::SERVICE_UNAVAILABLE, None));
    assert!(body.contains("upstream connect error"), "{body}");
    // Tried three times (Istio's default retries), then UF (connect failure) and URX (retries exhausted).
    let metrics = waypoint.metrics();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"503\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.contains("response_flags=\"UF,URX\""), "{line}");
    assert!(
        line.contains("destination_workload=\"gone\"") && line.contains("reporter=\"waypoint\""),
        "{line}"
    );
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused_without_harm() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let waypoint = Waypoint::start("").await;
    let cases: [(Vec<u8>, &str); 3] = [
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            [
                b"GET / HTTP/1.1\r\nhost: web\r\nx-big: ".to_vec(),
                vec![b'a'; 100 * 1024],
                b"\r\n\r\n".to_vec(),
            ]
            .concat(),
            "HTTP/1.1 431",
        ),
        (b"GET /%00 HTTP/1.1\r\nhost: web\r\n\r\n".to_vec(), "HTTP/1.1 400"),
    ];
    for (request, expected) in cases {
        let mut io = waypoint.tunnel(VIP_WEB, "client");
        let _ = io.write_all(&request).await;
        let mut answer = vec![0; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut answer))
            .await
            .unwrap()
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with(expected), "{expected}: {answer}");
    }
    // The waypoint still serves.
    let mut client = waypoint.http1(VIP_WEB, "client").await;
    assert_eq!(get(&mut client, "/", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_gateway_annotation_chooses_round_robin() {
    let waypoint = Waypoint::start(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: wp
  namespace: app
  annotations: {ambit.dev/load-balancer: ROUND_ROBIN}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#,
    )
    .await;
    let mut client = waypoint.http1(VIP_PAIR, "client").await;
    let mut pods = Vec::new();
    for _ in 0..20 {
        let (status, pod, _) = get(&mut client, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        pods.push(pod.unwrap());
    }
    // Round robin over two endpoints of equal weight alternates.
    assert!(pods.windows(2).all(|w| w[0] != w[1]), "{pods:?}");
}

#[tokio::test]
async fn closed_upstream_connections_leave_the_pools() {
    let mut waypoint = Waypoint::start("").await;
    let mut client = waypoint.http1(VIP_PAIR, "client").await;
    for _ in 0..10 {
        assert_eq!(get(&mut client, "/", &[]).await.0, StatusCode::OK);
    }
    // Idle keep-alive connections to the endpoints are pooled.
    assert!(waypoint.shared.upstreams.prune() >= 1);
    // The endpoints go away: their connections close and are forgotten.
    waypoint.backends.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while waypoint.shared.upstreams.prune() > 0 {
        assert!(Instant::now() < deadline, "closed connections stay in the pools");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tcp_tunnels_are_relayed_checked_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let waypoint = Waypoint::start(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-intruder, namespace: app}
spec:
  targetRefs: [{group: "", kind: Service, name: pair}]
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/app/sa/intruder"]}}]
"#,
    )
    .await;
    // A tunnel declared TCP is relayed to an endpoint byte for byte: the echo server answers the raw request.
    let mut io = waypoint.tunnel_as(VIP_PAIR, "client", Some(false));
    io.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    // A denied peer gets nothing.
    let mut io = waypoint.tunnel_as(VIP_PAIR, "intruder", Some(false));
    let _ = io.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // Istio's TCP metrics, reported by the waypoint.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let metrics = waypoint.metrics();
    let opened: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_opened_total{") && l.contains("reporter=\"waypoint\""))
        .collect();
    assert!(!opened.is_empty(), "{metrics}");
    let denied = metrics
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_closed_total{"))
        .any(|l| {
            l.contains("response_flags=\"DENY\"")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/app/sa/intruder\"")
        });
    assert!(denied, "{metrics}");
}

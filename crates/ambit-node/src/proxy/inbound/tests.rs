//! End-to-end over loopback: a real HBONE server with [`InboundHandler`], the HBONE pool as client (dialing from
//! 127.0.0.2, the client pod's address), and an echo application.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ambit_hbone::drain::{self, DrainTrigger};
use ambit_hbone::{Authority, ConnectHeaders, Dialer, HbonePool, HboneServer, HboneStream, PoolKey, PoolSettings};
use ambit_hbone::{ConnectError, ServerSettings};
use ambit_identity::ca::{CaConfig, CertificateAuthority};
use ambit_identity::tls;
use ambit_policy::{Action, Authorization, Clause, Group, Match, Scope, StringMatch};
use ambit_telemetry::Metrics;
use ambit_telemetry::prometheus_client::registry::Registry;
use ambit_types::{Identity, TrustDomain};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use super::*;
use crate::state::{Namespace, ServiceAccount, TunnelProtocol};

const LOCAL_IP: &str = "127.0.0.1";
const CLIENT_IP: &str = "127.0.0.2";
const ROOT: &str = "istio-system";

fn uid(name: &str) -> WorkloadUid {
    WorkloadUid::new(&format!("Kubernetes//Pod/demo/{name}")).unwrap()
}

fn pod(name: &str, ip: &str) -> Workload {
    let mut w = Workload::new(uid(name), Namespace::new("demo").unwrap());
    w.name = name.to_string();
    w.addresses = vec![ip.parse().unwrap()];
    w.tunnel_protocol = TunnelProtocol::Hbone;
    w.service_account = ServiceAccount::new(name).unwrap();
    w.labels.insert("app".into(), name.into());
    w
}

fn id(sa: &str) -> Identity {
    format!("spiffe://cluster.local/ns/demo/sa/{sa}").parse().unwrap()
}

/// A namespace-wide policy of `demo` matching the principal of service account `sa`.
fn policy(name: &str, action: Action, sa: &str) -> Authorization {
    let matched = Match {
        principals: vec![StringMatch::Exact(format!("cluster.local/ns/demo/sa/{sa}"))],
        ..Match::default()
    };
    Authorization {
        name: name.to_string(),
        namespace: "demo".to_string(),
        scope: Scope::Namespace,
        action,
        groups: vec![Group {
            clauses: vec![Clause { matches: vec![matched] }],
        }],
        dry_run: false,
    }
}

fn snapshot(version: u64, policies: Vec<Authorization>) -> Arc<Snapshot> {
    let workloads = vec![pod("server", LOCAL_IP), pod("client", CLIENT_IP)];
    Arc::new(Snapshot::new(version, workloads, Vec::new(), policies).unwrap())
}

/// Dials from a fixed source address, as the client pod would.
struct FromDialer(IpAddr);

impl Dialer for FromDialer {
    async fn dial(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.0, 0))?;
        socket.connect(addr).await
    }
}

async fn echo_app() -> SocketAddr {
    let listener = TcpListener::bind((LOCAL_IP, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind((LOCAL_IP, 0)).await.unwrap();
    listener.local_addr().unwrap().port()
}

struct Harness {
    _dir: tempfile::TempDir,
    registry: Registry,
    publish: watch::Sender<Arc<Snapshot>>,
    pool: HbonePool<FromDialer>,
    key: PoolKey,
    client_tls: Arc<rustls::ClientConfig>,
    connections: Connections,
    _drain: DrainTrigger,
}

impl Harness {
    async fn start(policies: Vec<Authorization>) -> Self {
        Self::for_local(uid("server"), policies).await
    }

    async fn for_local(local: WorkloadUid, policies: Vec<Authorization>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = CaConfig::new(TrustDomain::new("cluster.local").unwrap());
        let ca = CertificateAuthority::load_or_create(dir.path(), config, SystemTime::now()).unwrap();
        let bundle = ca.trust_bundle();
        let server_cert = ca.issue(&id("server"), None, SystemTime::now()).unwrap();
        let client_cert = ca.issue(&id("client"), None, SystemTime::now()).unwrap();
        let server_tls = tls::server_config(&server_cert, &bundle).unwrap();
        let client_tls = tls::client_config(&client_cert, &bundle, vec![id("server")]).unwrap();

        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let (publish, snapshots) = watch::channel(snapshot(1, policies));
        let handler = InboundHandler::new(local, snapshots, ROOT.to_string(), metrics.tcp, LocalAppConnector);
        let connections = handler.connections().clone();
        tokio::spawn(handler.policy_watcher());
        let (trigger, drain_watch) = drain::channel();
        let server = HboneServer::new(handler, ServerSettings::default(), drain_watch);
        let listener = TcpListener::bind((LOCAL_IP, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tls_tx, tls_rx) = watch::channel(server_tls);
        tokio::spawn(async move {
            let _keep = _tls_tx;
            server.serve_listener(listener, tls_rx).await;
        });
        let key = PoolKey {
            source: id("client"),
            destination_identities: vec![id("server")],
            destination: addr,
        };
        let pool = HbonePool::with_dialer(PoolSettings::default(), FromDialer(CLIENT_IP.parse().unwrap()));
        Self {
            _dir: dir,
            registry,
            publish,
            pool,
            key,
            client_tls,
            connections,
            _drain: trigger,
        }
    }

    async fn connect(&self, authority: &str) -> Result<HboneStream, ConnectError> {
        let authority: Authority = authority.parse().unwrap();
        self.pool
            .connect(&self.key, &self.client_tls, &authority, &ConnectHeaders::default())
            .await
    }

    async fn status(&self, authority: &str) -> Option<StatusCode> {
        match self.connect(authority).await {
            Ok(_) => Some(StatusCode::OK),
            Err(error) => error.status(),
        }
    }

    fn metrics(&self) -> String {
        ambit_telemetry::encode(&self.registry).unwrap()
    }

    /// The encoded lines of metric `name` that contain every one of `fragments`.
    fn lines(&self, name: &str, fragments: &[&str]) -> Vec<String> {
        let prefix = format!("{name}{{");
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(&prefix) && fragments.iter().all(|f| l.contains(f)))
            .map(str::to_string)
            .collect()
    }
}

async fn echo_once(stream: &mut HboneStream, payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    stream.flush().await.unwrap();
    let mut buf = vec![0; payload.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(buf, payload);
}

#[tokio::test]
async fn allowed_connection_echoes_and_reports_destination_metrics() {
    let h = Harness::start(Vec::new()).await;
    let app = echo_app().await;
    let mut stream = h.connect(&app.to_string()).await.unwrap();
    echo_once(&mut stream, b"hello inbound").await;
    assert_eq!(h.connections.len(), 1);

    let opened = h.lines(
        "istio_tcp_connections_opened_total",
        &[
            "reporter=\"destination\"",
            "connection_security_policy=\"mutual_tls\"",
            "source_principal=\"spiffe://cluster.local/ns/demo/sa/client\"",
            "destination_principal=\"spiffe://cluster.local/ns/demo/sa/server\"",
            "source_workload=\"client\"",
            "destination_workload=\"server\"",
            "destination_app=\"server\"",
            "response_flags=\"-\"",
        ],
    );
    assert_eq!(opened.len(), 1, "{}", h.metrics());
    assert!(opened[0].ends_with(" 1"), "{}", opened[0]);

    stream.shutdown().await.unwrap();
    drop(stream);
    // The relay ends once the echo app closes its side too; the closed counter and the bytes follow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let closed = h.lines("istio_tcp_connections_closed_total", &["reporter=\"destination\""]);
        let received = h.lines("istio_tcp_received_bytes_total", &["reporter=\"destination\""]);
        if closed.len() == 1 && received.iter().any(|l| l.ends_with(" 13")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", h.metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.connections.is_empty());
}

#[tokio::test]
async fn authority_of_another_ip_is_a_bad_request() {
    let h = Harness::start(Vec::new()).await;
    let app = echo_app().await;
    let status = h.status(&format!("127.0.0.3:{}", app.port())).await;
    assert_eq!(status, Some(StatusCode::BAD_REQUEST));
    // Refused before any guard: no connection metric.
    assert!(h.lines("istio_tcp_connections_opened_total", &[]).is_empty());
}

#[tokio::test]
async fn authority_on_the_hbone_port_is_a_bad_request() {
    let h = Harness::start(Vec::new()).await;
    let status = h.status(&format!("{LOCAL_IP}:15008")).await;
    assert_eq!(status, Some(StatusCode::BAD_REQUEST));
}

#[tokio::test]
async fn deny_policy_for_the_client_is_unauthorized() {
    let h = Harness::start(vec![policy("deny-client", Action::Deny, "client")]).await;
    let app = echo_app().await;
    let status = h.status(&app.to_string()).await;
    assert_eq!(status, Some(StatusCode::UNAUTHORIZED));
    let failed = h.lines(
        "istio_tcp_connections_failed_total",
        &["reporter=\"destination\"", "response_flags=\"DENY\""],
    );
    assert_eq!(failed.len(), 1, "{}", h.metrics());
    assert!(h.connections.is_empty());
}

#[tokio::test]
async fn allow_policy_for_another_principal_only_is_unauthorized() {
    let h = Harness::start(vec![policy("allow-other", Action::Allow, "other")]).await;
    let app = echo_app().await;
    assert_eq!(h.status(&app.to_string()).await, Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn allow_policy_for_the_client_admits_it() {
    let h = Harness::start(vec![policy("allow-client", Action::Allow, "client")]).await;
    let app = echo_app().await;
    let mut stream = h.connect(&app.to_string()).await.unwrap();
    echo_once(&mut stream, b"allowed").await;
}

#[tokio::test]
async fn app_not_listening_is_unavailable() {
    let h = Harness::start(Vec::new()).await;
    let port = closed_port().await;
    let status = h.status(&format!("{LOCAL_IP}:{port}")).await;
    assert_eq!(status, Some(StatusCode::SERVICE_UNAVAILABLE));
    let failed = h.lines("istio_tcp_connections_failed_total", &["response_flags=\"CONNECT\""]);
    assert_eq!(failed.len(), 1, "{}", h.metrics());
}

#[tokio::test]
async fn unknown_local_workload_is_unavailable() {
    let h = Harness::for_local(uid("missing"), Vec::new()).await;
    let app = echo_app().await;
    assert_eq!(h.status(&app.to_string()).await, Some(StatusCode::SERVICE_UNAVAILABLE));
}

#[tokio::test]
async fn live_connection_is_closed_when_policy_changes_to_deny() {
    let h = Harness::start(Vec::new()).await;
    let app = echo_app().await;
    let mut stream = h.connect(&app.to_string()).await.unwrap();
    echo_once(&mut stream, b"before").await;

    h.publish
        .send(snapshot(2, vec![policy("deny-client", Action::Deny, "client")]))
        .unwrap();
    let mut buf = [0; 16];
    let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf))
        .await
        .expect("the connection was not closed within 1 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !h.connections.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection stayed registered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failed = h.lines("istio_tcp_connections_failed_total", &["response_flags=\"DENY\""]);
    assert_eq!(failed.len(), 1, "{}", h.metrics());
}

#[tokio::test]
async fn policy_change_that_still_allows_keeps_the_connection() {
    let h = Harness::start(Vec::new()).await;
    let app = echo_app().await;
    let mut stream = h.connect(&app.to_string()).await.unwrap();
    h.publish
        .send(snapshot(2, vec![policy("deny-other", Action::Deny, "other")]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    echo_once(&mut stream, b"still here").await;
    assert_eq!(h.connections.len(), 1);
}

#[tokio::test]
async fn application_connections_have_nodelay_from_every_connector() {
    let app = echo_app().await;
    let client: SocketAddr = format!("{CLIENT_IP}:40000").parse().unwrap();
    let own = || PodNetns::open(std::path::Path::new("/proc/self/ns/net")).unwrap();
    let factory = Arc::new(own().socket_factory(2).unwrap());
    // Time for the factory's thread to make its first sockets (without them the connector makes its own).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cases: [(&str, Box<dyn Fn() -> _>); 2] = [
        ("without a socket factory", Box::new(|| PodAppConnector::new(own()))),
        (
            "with a socket factory",
            Box::new(|| PodAppConnector::new(own()).with_sockets(Arc::clone(&factory))),
        ),
    ];
    for (what, connector) in cases {
        let stream = connector().connect(app, client).await.unwrap();
        assert!(stream.nodelay().unwrap(), "{what}");
    }
    let stream = LocalAppConnector.connect(app, client).await.unwrap();
    assert!(stream.nodelay().unwrap(), "local connector");
}

#[test]
fn recheck_is_pure_and_follows_the_snapshot() {
    let (_tx, rx) = watch::channel(snapshot(1, Vec::new()));
    let metrics = Arc::new(TcpMetrics::default());
    let handler = InboundHandler::new(uid("server"), rx, ROOT.to_string(), metrics, LocalAppConnector);
    let conn = |sa: &str| ConnInfo {
        source_identity: Some(id(sa)),
        source_ip: CLIENT_IP.parse().unwrap(),
        destination_ip: LOCAL_IP.parse().unwrap(),
        destination_port: 8080,
    };
    assert!(handler.recheck(&snapshot(1, Vec::new()), &conn("client")));
    let deny = snapshot(2, vec![policy("deny-client", Action::Deny, "client")]);
    assert!(!handler.recheck(&deny, &conn("client")));
    assert!(handler.recheck(&deny, &conn("other")));
    let allow = snapshot(3, vec![policy("allow-other", Action::Allow, "other")]);
    assert!(!handler.recheck(&allow, &conn("client")));
    let empty = Arc::new(Snapshot::new(4, Vec::new(), Vec::new(), Vec::new()).unwrap());
    assert!(
        !handler.recheck(&empty, &conn("client")),
        "a vanished workload allows nothing"
    );
}

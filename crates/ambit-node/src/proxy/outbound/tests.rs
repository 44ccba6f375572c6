//! Loopback tests: a real HBONE server on `<random 127/8 address>:15008` in front of an echo application, the
//! outbound proxy with [`PlainDialer`] and a fixed original destination.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use ambit_hbone::drain::{self, DrainTrigger};
use ambit_hbone::{ConnectHandler, HboneServer, InboundRequest, PlainDialer, PoolSettings, Refusal, ServerSettings};
use ambit_hbone::{StreamStats, headers::TRACEPARENT};
use ambit_identity::ca::{CaConfig, CertificateAuthority};
use ambit_telemetry::prometheus_client::registry::Registry;
use ambit_types::TrustDomain;
use http::header::FORWARDED;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::state::{Hostname, Namespace, NetworkAddress, Port, PortMapping, ServiceAccount, TunnelProtocol};
use crate::state::{Service, ServiceKey};

const TIMEOUT: Duration = Duration::from_secs(10);

/// What the test HBONE server saw.
#[derive(Default)]
struct Seen {
    accepts: AtomicUsize,
    requests: Mutex<Vec<InboundRequest>>,
}

/// Connects every CONNECT to its authority, after checking it names the destination pod, or, for a server playing
/// a waypoint, one of the destinations it stands in front of.
struct EchoHandler {
    pod_ip: IpAddr,
    waypoint_for: Vec<IpAddr>,
    seen: Arc<Seen>,
}

impl ConnectHandler for EchoHandler {
    type Upstream = TcpStream;

    async fn connect(&self, request: InboundRequest) -> Result<TcpStream, Refusal> {
        let addr = request.authority.addr();
        self.seen.requests.lock().unwrap().push(request);
        let Some(addr) = addr.filter(|a| a.ip() == self.pod_ip || self.waypoint_for.contains(&a.ip())) else {
            return Err(Refusal::BadRequest("authority is not the pod's address".into()));
        };
        TcpStream::connect(addr).await.map_err(Refusal::AppConnect)
    }

    fn completed(&self, _upstream: TcpStream, _stats: StreamStats) {}
}

struct Harness {
    _dir: tempfile::TempDir,
    ca: CertificateAuthority,
    td: TrustDomain,
    /// The destination pod's address, where the HBONE server listens on 15008.
    pod_ip: IpAddr,
    /// An echo application on the destination pod's address.
    app: SocketAddr,
    seen: Arc<Seen>,
    registry: Registry,
    metrics: Arc<TcpMetrics>,
    _drain: DrainTrigger,
}

fn identity(td: &TrustDomain, sa: &str) -> Identity {
    Identity::new(td.clone(), "demo", sa).unwrap()
}

fn pod(name: &str, ip: IpAddr) -> Workload {
    let uid = WorkloadUid::new(&format!("Kubernetes//Pod/demo/{name}")).unwrap();
    let mut workload = Workload::new(uid, Namespace::new("demo").unwrap());
    workload.name = name.to_string();
    workload.addresses = vec![ip];
    workload.tunnel_protocol = TunnelProtocol::Hbone;
    workload.service_account = ServiceAccount::new(name).unwrap();
    workload
}

fn local_uid() -> WorkloadUid {
    WorkloadUid::new("Kubernetes//Pod/demo/client").unwrap()
}

const VIP: &str = "10.96.0.10";

/// Echoes every connection accepted on `ip` (any port).
async fn echo_on(ip: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
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

/// A listener on `<random 127/8 address>:15008`.
async fn bind_hbone() -> TcpListener {
    loop {
        let ip = Ipv4Addr::new(127, fastrand::u8(1..255), fastrand::u8(1..255), fastrand::u8(2..255));
        if let Ok(listener) = TcpListener::bind((ip, crate::state::HBONE_PORT)).await {
            return listener;
        }
    }
}

/// How a scripted HBONE server treats its first connection, as a server proxy going away during an upgrade may;
/// later connections are served normally.
#[derive(Clone, Copy, Debug)]
enum GoingAway {
    /// GOAWAY before processing any stream: the CONNECT is refused unprocessed.
    GoAway,
    /// RST_STREAM(REFUSED_STREAM) to the CONNECT.
    RefusedStream,
    /// The connection closes once the CONNECT arrived, without an answer.
    CloseBeforeAnswer,
}

/// Serves one HBONE connection as `how` says, never answering a CONNECT.
async fn going_away(tcp: TcpStream, tls: Arc<rustls::ServerConfig>, how: GoingAway) {
    let tls = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await.unwrap();
    let mut conn = h2::server::handshake(tls).await.unwrap();
    match how {
        GoingAway::GoAway => {
            conn.abrupt_shutdown(h2::Reason::NO_ERROR);
            // Polling sends the GOAWAY and then closes; a stream that still slips through is refused.
            while let Some(accepted) = conn.accept().await {
                if let Ok((_, mut respond)) = accepted {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            }
        }
        GoingAway::RefusedStream => {
            while let Some(accepted) = conn.accept().await {
                if let Ok((_, mut respond)) = accepted {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            }
        }
        GoingAway::CloseBeforeAnswer => {
            let accepted = conn.accept().await;
            assert!(matches!(accepted, Some(Ok(_))), "the CONNECT arrived");
            // The connection goes first, so that nothing (not even a reset of the stream) is sent.
            drop(conn);
            drop(accepted);
        }
    }
}

impl Harness {
    /// The destination pod's HBONE server presents `server_sa`'s certificate (the pod's own is `dest`).
    async fn start(server_sa: &str) -> Self {
        Self::start_with(server_sa, None).await
    }

    /// As [`Harness::start`], with the first HBONE connection treated as `first` says.
    async fn start_with(server_sa: &str, first: Option<GoingAway>) -> Self {
        Self::launch(server_sa, first, Vec::new()).await
    }

    /// The HBONE server plays a waypoint presenting `server_sa`'s certificate: it also connects CONNECTs whose
    /// authority is one of `waypoint_for`.
    async fn start_waypoint(server_sa: &str, waypoint_for: Vec<IpAddr>) -> Self {
        Self::launch(server_sa, None, waypoint_for).await
    }

    async fn launch(server_sa: &str, first: Option<GoingAway>, waypoint_for: Vec<IpAddr>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let td = TrustDomain::new("cluster.local").unwrap();
        let ca =
            CertificateAuthority::load_or_create(dir.path(), CaConfig::new(td.clone()), SystemTime::now()).unwrap();
        let listener = bind_hbone().await;
        let pod_ip = listener.local_addr().unwrap().ip();
        let app = echo_on(pod_ip).await;
        let seen = Arc::new(Seen::default());
        let (trigger, watch) = drain::channel();
        let handler = EchoHandler {
            pod_ip,
            waypoint_for,
            seen: Arc::clone(&seen),
        };
        let server = HboneServer::new(handler, ServerSettings::default(), watch);
        let cert = ca.issue(&identity(&td, server_sa), None, SystemTime::now()).unwrap();
        let tls = tls::server_config(&cert, &ca.trust_bundle()).unwrap();
        let accepts = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = accepts.accepts.fetch_add(1, Ordering::SeqCst);
                if let (0, Some(how)) = (n, first) {
                    tokio::spawn(going_away(tcp, Arc::clone(&tls), how));
                    continue;
                }
                let (server, tls) = (server.clone(), Arc::clone(&tls));
                tokio::spawn(async move {
                    let _ = server.serve_connection(tcp, tls).await;
                });
            }
        });
        let mut registry = Registry::default();
        let metrics = Arc::new(TcpMetrics::register(&mut registry));
        Self {
            _dir: dir,
            ca,
            td,
            pod_ip,
            app,
            seen,
            registry,
            metrics,
            _drain: trigger,
        }
    }

    fn snapshot(&self) -> Snapshot {
        let local = pod("client", IpAddr::from([127, 0, 0, 1]));
        let mut dest = pod("dest", self.pod_ip);
        let key: ServiceKey = "demo/echo.demo.svc.cluster.local".parse().unwrap();
        dest.services.insert(
            key,
            vec![PortMapping {
                service_port: 80,
                target_port: self.app.port(),
            }],
        );
        let mut service = Service::new(
            "echo",
            Namespace::new("demo").unwrap(),
            Hostname::new("echo.demo.svc.cluster.local").unwrap(),
        );
        service.addresses = vec![NetworkAddress {
            network: String::new(),
            address: VIP.parse().unwrap(),
        }];
        service.ports = vec![Port {
            service_port: 80,
            target_port: self.app.port(),
            ..Port::default()
        }];
        Snapshot::new(1, vec![local, dest], vec![service], Vec::new()).unwrap()
    }

    /// Starts an outbound proxy for the local pod whose captured connections all had `dst`; returns its address.
    async fn proxy(&self, dst: SocketAddr) -> SocketAddr {
        self.proxy_over(self.snapshot(), dst).await
    }

    /// As [`Harness::proxy`], over `snapshot`.
    async fn proxy_over(&self, snapshot: Snapshot, dst: SocketAddr) -> SocketAddr {
        let (_, snapshot) = watch::channel(Arc::new(snapshot));
        let (_, bundle) = watch::channel(self.ca.trust_bundle());
        let cert = self
            .ca
            .issue(&identity(&self.td, "client"), None, SystemTime::now())
            .unwrap();
        let proxy = OutboundProxy::new(
            local_uid(),
            snapshot,
            FixedCert(cert),
            bundle,
            PoolSettings::default(),
            PlainDialer,
            Arc::clone(&self.metrics),
            FixedOriginalDst(dst),
            None,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(proxy.serve(listener, never_drains()));
        addr
    }

    fn metrics_text(&self) -> String {
        ambit_telemetry::encode(&self.registry).unwrap()
    }

    /// The exposition once a `metric` series contains every one of `labels`.
    async fn wait_for(&self, metric: &str, labels: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let text = self.metrics_text();
            let found = text
                .lines()
                .any(|line| line.starts_with(metric) && labels.iter().all(|l| line.contains(l)));
            if found {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {metric} with {labels:?} in:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Sends `msg` through the proxy and expects it echoed; then closes.
async fn echo_through(proxy: SocketAddr, msg: &[u8]) {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client.write_all(msg).await.unwrap();
    let mut buf = vec![0; msg.len()];
    tokio::time::timeout(TIMEOUT, client.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, msg);
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(TIMEOUT, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn pod_ip_is_tunnelled_with_its_own_authority() {
    let h = Harness::start("dest").await;
    let proxy = h.proxy(h.app).await;
    echo_through(proxy, b"hello pod").await;

    let requests = h.seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.authority, Authority::Addr(h.app));
    assert_eq!(request.local_addr, SocketAddr::new(h.pod_ip, 15008));
    assert_eq!(request.peer_identity, Some(identity(&h.td, "client")));
    let forwarded = request.headers.get(FORWARDED).unwrap().to_str().unwrap();
    assert!(forwarded.starts_with("for=\"127.0.0.1:"), "{forwarded}");
    let traceparent = request.headers.get(TRACEPARENT).unwrap().to_str().unwrap();
    assert!(traceparent.parse::<TraceParent>().is_ok(), "{traceparent}");
    let baggage = request.headers.get("baggage").unwrap().to_str().unwrap();
    assert!(baggage.contains("k8s.namespace.name="), "{baggage}");
}

#[tokio::test]
async fn a_connect_refused_by_a_server_going_away_is_retried_on_a_new_connection() {
    for how in [
        GoingAway::GoAway,
        GoingAway::RefusedStream,
        GoingAway::CloseBeforeAnswer,
    ] {
        let h = Harness::start_with("dest", Some(how)).await;
        let proxy = h.proxy(h.app).await;
        echo_through(proxy, b"through the second connection").await;
        assert_eq!(h.seen.accepts.load(Ordering::SeqCst), 2, "{how:?}: one new connection");
        assert_eq!(h.seen.requests.lock().unwrap().len(), 1, "{how:?}: served once");
        let text = h.metrics_text();
        let failed = text
            .lines()
            .filter(|line| !line.starts_with('#') && line.contains("tcp_connections_failed"));
        assert_eq!(failed.count(), 0, "{how:?}: nothing failed\n{text}");
    }
}

#[test]
fn only_a_connect_the_server_never_processed_is_retried() {
    use std::error::Error as _;
    // A stream error from the connection's IO (the connection closing before the answer) cannot be built outside h2;
    // the end-to-end test above covers it.
    let cases = [
        (ConnectError::Refused(h2::Error::from(h2::Reason::REFUSED_STREAM)), true),
        (ConnectError::Stream(h2::Error::from(h2::Reason::CONNECT_ERROR)), false),
        (ConnectError::Status(StatusCode::SERVICE_UNAVAILABLE), false),
        (ConnectError::Status(StatusCode::UNAUTHORIZED), false),
        (ConnectError::Authority("x".into()), false),
    ];
    for (error, want) in cases {
        assert_eq!(server_went_away(&error), want, "{error}: {:?}", error.source());
    }
}

#[test]
fn baggage_describes_the_source_workload() {
    use crate::state::model::{Locality, Namespace, WorkloadType};
    let uid = WorkloadUid::new("Kubernetes//Pod/shop/cart-1").unwrap();
    let mut workload = Workload::new(uid, Namespace::new("shop").unwrap());
    workload.name = "cart-1".into();
    workload.workload_name = "cart".into();
    workload.workload_type = WorkloadType::Deployment;
    workload.canonical_name = "cart".into();
    workload.canonical_revision = "v2".into();
    workload.cluster_id = "Kubernetes".into();
    assert_eq!(
        super::baggage(&workload),
        "k8s.cluster.name=Kubernetes,k8s.namespace.name=shop,k8s.deployment.name=cart,service.name=cart,service.version=v2"
    );
    workload.workload_type = WorkloadType::Pod;
    workload.workload_name.clear();
    workload.canonical_revision.clear();
    workload.locality = Some(Locality {
        region: "eu".into(),
        zone: "eu-1".into(),
        subzone: String::new(),
    });
    assert_eq!(
        super::baggage(&workload),
        "k8s.cluster.name=Kubernetes,k8s.namespace.name=shop,k8s.pod.name=cart-1,service.name=cart,\
         cloud.region=eu,cloud.availability_zone=eu-1"
    );
}

#[tokio::test]
async fn service_vip_goes_to_the_endpoint_target_port() {
    let h = Harness::start("dest").await;
    let proxy = h.proxy(SocketAddr::new(VIP.parse().unwrap(), 80)).await;
    echo_through(proxy, b"hello service").await;

    let requests = h.seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].authority, Authority::Addr(h.app));
    let forwarded = requests[0].headers.get(FORWARDED).unwrap().to_str().unwrap();
    assert!(forwarded.ends_with(";host=echo.demo.svc.cluster.local"), "{forwarded}");
    h.wait_for(
        "istio_tcp_connections_closed_total",
        &[
            r#"destination_service="echo.demo.svc.cluster.local""#,
            r#"destination_workload="dest""#,
        ],
    )
    .await;
}

#[tokio::test]
async fn unknown_destination_passes_through() {
    let h = Harness::start("dest").await;
    let outside = echo_on(IpAddr::from([127, 0, 0, 3])).await;
    let proxy = h.proxy(outside).await;
    echo_through(proxy, b"hello outside").await;

    assert!(h.seen.requests.lock().unwrap().is_empty());
    assert_eq!(h.seen.accepts.load(Ordering::SeqCst), 0);
    h.wait_for(
        "istio_tcp_connections_closed_total",
        &[
            r#"reporter="source""#,
            r#"connection_security_policy="unknown""#,
            r#"response_flags="-""#,
        ],
    )
    .await;
}

#[tokio::test]
async fn source_metrics_carry_mtls_and_both_principals() {
    let h = Harness::start("dest").await;
    let proxy = h.proxy(h.app).await;
    echo_through(proxy, b"0123456789").await;

    let labels = [
        r#"reporter="source""#,
        r#"connection_security_policy="mutual_tls""#,
        r#"source_principal="spiffe://cluster.local/ns/demo/sa/client""#,
        r#"destination_principal="spiffe://cluster.local/ns/demo/sa/dest""#,
        r#"source_workload="client""#,
        r#"destination_workload="dest""#,
        r#"response_flags="-""#,
    ];
    let text = h.wait_for("istio_tcp_connections_closed_total", &labels).await;
    // Source reporter: the client's 10 bytes are "received during request".
    let received = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_received_bytes_total") && labels.iter().all(|x| l.contains(x)))
        .unwrap();
    assert!(received.ends_with(" 10"), "{received}");
    assert!(!text.contains("istio_tcp_connections_failed_total{"), "{text}");
}

#[tokio::test]
async fn unexpected_server_identity_closes_the_client_and_records_the_failure() {
    let h = Harness::start("impostor").await;
    let proxy = h.proxy(h.app).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    let _ = client.write_all(b"secret").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, client.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(read.is_err() || buf.is_empty(), "{read:?} {buf:?}");
    assert!(h.seen.requests.lock().unwrap().is_empty());
    h.wait_for(
        "istio_tcp_connections_failed_total",
        &[r#"reporter="source""#, r#"response_flags="TLS_FAILURE""#],
    )
    .await;
}

#[tokio::test]
async fn captured_connections_share_one_hbone_connection() {
    let h = Harness::start("dest").await;
    let proxy = h.proxy(h.app).await;
    echo_through(proxy, b"first").await;
    echo_through(proxy, b"second").await;
    let mut a = TcpStream::connect(proxy).await.unwrap();
    let mut b = TcpStream::connect(proxy).await.unwrap();
    for (stream, msg) in [(&mut a, b"third"), (&mut b, b"forth")] {
        stream.write_all(msg).await.unwrap();
        let mut buf = [0; 5];
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, msg);
    }
    assert_eq!(h.seen.requests.lock().unwrap().len(), 4);
    assert_eq!(h.seen.accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn plan_errors_close_the_client_and_record_the_failure() {
    let h = Harness::start("dest").await;
    // The service has no port 81.
    let proxy = h.proxy(SocketAddr::new(VIP.parse().unwrap(), 81)).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, client.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(read.is_err() || buf.is_empty());
    h.wait_for(
        "istio_tcp_connections_failed_total",
        &[
            r#"response_flags="CONNECT""#,
            r#"destination_service="echo.demo.svc.cluster.local""#,
        ],
    )
    .await;
}

/// The production instantiation (certificate manager, SO_ORIGINAL_DST, pod dialer) can run on spawned tasks.
#[test]
fn production_proxy_is_spawnable() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    fn check(proxy: OutboundProxy<CertificateManager, SoOriginalDst, PodDialer>, listener: TcpListener) {
        assert_send(&proxy.serve(listener, never_drains()));
    }
    let _ = check;
}

/// A drain watch whose trigger is gone: it never signals.
fn never_drains() -> ambit_hbone::drain::DrainWatch {
    ambit_hbone::drain::channel().1
}

/// The node scope: the proxy holds only its own pod; a connection to the destination pod's IP looks up its alias
/// (one subscription, however many connections), waits for the answer and tunnels to it on the first try.
#[tokio::test]
async fn an_unknown_pod_ip_is_looked_up_then_tunnelled() {
    use ambit_api::envoy::service::discovery::v3::Resource;
    use ambit_api::istio::workload as pb;
    use ambit_api::prost::Message;
    use ambit_xds::delta::{Handler, Update};

    let h = Harness::start("dest").await;
    let full = h.snapshot();
    let resource = |workload: &Workload, aliases: Vec<String>| Resource {
        name: workload.uid.as_str().to_string(),
        version: "1".to_string(),
        resource: Some(ambit_api::prost_types::Any {
            type_url: ambit_api::WORKLOAD_ADDRESS_TYPE_URL.to_string(),
            value: pb::Address::from(workload).encode_to_vec(),
        }),
        aliases,
    };
    let update = |added| Update {
        added,
        removed: Vec::new(),
        initial: false,
    };
    let (mut addresses, _, snapshot) = crate::state::xds::handlers();
    let local = full.workload(&local_uid()).unwrap().clone();
    addresses.apply(update(vec![resource(&local, Vec::new())])).unwrap();
    assert!(
        snapshot.borrow().workload_by_ip(h.pod_ip).is_none(),
        "the destination is not held"
    );

    // The control plane, played by the subscriber: it answers the alias of the destination pod with the pod.
    let dest = full.workload_by_ip(h.pod_ip).unwrap().clone();
    let alias = format!("/{}", h.pod_ip);
    let subscribed = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(Mutex::new(None::<crate::state::xds::AddressHandler>));
    let lookups = addresses.lookups({
        let (subscribed, handler, alias) = (Arc::clone(&subscribed), Arc::clone(&handler), alias.clone());
        move |key: String| {
            subscribed.lock().unwrap().push(key.clone());
            if key == alias {
                let answer = update(vec![resource(&dest, vec![key])]);
                handler.lock().unwrap().as_mut().unwrap().apply(answer).unwrap();
            }
        }
    });
    *handler.lock().unwrap() = Some(addresses);

    let (_, bundle) = watch::channel(h.ca.trust_bundle());
    let cert = h.ca.issue(&identity(&h.td, "client"), None, SystemTime::now()).unwrap();
    let proxy = OutboundProxy::new(
        local_uid(),
        snapshot,
        FixedCert(cert),
        bundle,
        PoolSettings::default(),
        PlainDialer,
        Arc::clone(&h.metrics),
        FixedOriginalDst(h.app),
        Some(lookups),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, never_drains()));

    echo_through(addr, b"looked up").await;
    echo_through(addr, b"held now").await;
    assert_eq!(*subscribed.lock().unwrap(), [alias], "one lookup");
    let requests = h.seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "both connections were tunnelled");
    assert_eq!(requests[0].authority, Authority::Addr(h.app));
    assert_eq!(requests[0].peer_identity, Some(identity(&h.td, "client")));
}

const WAYPOINT_KEY: &str = "demo/waypoint.demo.svc.cluster.local";

/// The waypoint's pod on the HBONE server's address (service account `waypoint`, not enrolled, an endpoint of the
/// waypoint's service) and that service.
fn waypoint_objects(h: &Harness) -> (Workload, Service) {
    let key: ServiceKey = WAYPOINT_KEY.parse().unwrap();
    let mut pod = pod("waypoint", h.pod_ip);
    pod.tunnel_protocol = TunnelProtocol::None;
    let mapping = PortMapping {
        service_port: 15008,
        target_port: 15008,
    };
    pod.services.insert(key.clone(), vec![mapping]);
    let mut service = Service::new("waypoint", key.namespace, key.hostname);
    service.addresses = vec![NetworkAddress {
        network: String::new(),
        address: "10.96.0.99".parse().unwrap(),
    }];
    service.ports = vec![Port {
        service_port: 15008,
        target_port: 15008,
        ..Port::default()
    }];
    (pod, service)
}

/// Service `echo` with VIP `vip` and the port `vip` names, bound to the waypoint.
fn bound_service(vip: SocketAddr) -> Service {
    let mut service = Service::new(
        "echo",
        Namespace::new("demo").unwrap(),
        Hostname::new("echo.demo.svc.cluster.local").unwrap(),
    );
    service.addresses = vec![NetworkAddress {
        network: String::new(),
        address: vip.ip(),
    }];
    service.ports = vec![Port {
        service_port: vip.port(),
        target_port: vip.port(),
        ..Port::default()
    }];
    service.waypoint = Some(crate::state::GatewayAddress::hostname(WAYPOINT_KEY.parse().unwrap()));
    service
}

/// A service bound to a waypoint: the tunnel goes to the waypoint pod (not enrolled, yet reached over HBONE), which
/// presents its own identity, with the VIP as the authority; telemetry names the service, and the waypoint as the
/// destination workload and principal.
#[tokio::test]
async fn a_service_bound_to_a_waypoint_is_tunnelled_to_the_waypoint_with_the_vip_as_authority() {
    // The VIP is a loopback address where an echo listens, so that the waypoint can connect to the authority.
    let vip = echo_on(IpAddr::from([127, 0, 0, 4])).await;
    let h = Harness::start_waypoint("waypoint", vec![vip.ip()]).await;
    let (waypoint, waypoint_service) = waypoint_objects(&h);
    let local = pod("client", IpAddr::from([127, 0, 0, 1]));
    let snapshot = Snapshot::new(
        1,
        vec![local, waypoint],
        vec![bound_service(vip), waypoint_service],
        Vec::new(),
    )
    .unwrap();
    let proxy = h.proxy_over(snapshot, vip).await;
    echo_through(proxy, b"through the waypoint").await;

    let requests = h.seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].authority, Authority::Addr(vip));
    assert_eq!(requests[0].local_addr, SocketAddr::new(h.pod_ip, 15008));
    assert_eq!(requests[0].peer_identity, Some(identity(&h.td, "client")));
    h.wait_for(
        "istio_tcp_connections_closed_total",
        &[
            r#"reporter="source""#,
            r#"destination_service="echo.demo.svc.cluster.local""#,
            r#"destination_service_name="echo""#,
            r#"destination_workload="waypoint""#,
            r#"destination_principal="spiffe://cluster.local/ns/demo/sa/waypoint""#,
            r#"connection_security_policy="mutual_tls""#,
        ],
    )
    .await;
}

/// A bound service whose waypoint has no ready pod is refused, never sent direct: the client is closed and the
/// failure names the service.
#[tokio::test]
async fn a_service_bound_to_a_waypoint_without_pods_is_refused() {
    let vip = echo_on(IpAddr::from([127, 0, 0, 4])).await;
    let h = Harness::start_waypoint("waypoint", vec![vip.ip()]).await;
    let (_, waypoint_service) = waypoint_objects(&h);
    let local = pod("client", IpAddr::from([127, 0, 0, 1]));
    let services = vec![bound_service(vip), waypoint_service];
    let snapshot = Snapshot::new(1, vec![local], services, Vec::new()).unwrap();
    let proxy = h.proxy_over(snapshot, vip).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, client.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(read.is_err() || buf.is_empty());
    h.wait_for(
        "istio_tcp_connections_failed_total",
        &[
            r#"response_flags="CONNECT""#,
            r#"destination_service="echo.demo.svc.cluster.local""#,
        ],
    )
    .await;
    assert_eq!(h.seen.accepts.load(Ordering::SeqCst), 0, "nothing reached the waypoint");
}

/// The node scope, a pod IP bound to a waypoint that the node holds neither of: the pod's alias is looked up, then
/// (the answer naming a waypoint) the waypoint's service, which brings its pod; the tunnel goes to the waypoint with
/// the pod IP as the authority.
#[tokio::test]
async fn an_unknown_pod_ip_with_a_waypoint_is_looked_up_twice_then_tunnelled_to_the_waypoint() {
    use ambit_api::envoy::service::discovery::v3::Resource;
    use ambit_api::istio::workload as pb;
    use ambit_api::prost::Message;
    use ambit_xds::delta::{Handler, Update};

    let backend = echo_on(IpAddr::from([127, 0, 0, 5])).await;
    let h = Harness::start_waypoint("waypoint", vec![backend.ip()]).await;
    let (waypoint, waypoint_service) = waypoint_objects(&h);
    let local = pod("client", IpAddr::from([127, 0, 0, 1]));
    let mut dest = pod("dest", backend.ip());
    dest.waypoint = Some(crate::state::GatewayAddress::hostname(WAYPOINT_KEY.parse().unwrap()));

    let resource = |name: &str, address: pb::Address, aliases: Vec<String>| Resource {
        name: name.to_string(),
        version: "1".to_string(),
        resource: Some(ambit_api::prost_types::Any {
            type_url: ambit_api::WORKLOAD_ADDRESS_TYPE_URL.to_string(),
            value: address.encode_to_vec(),
        }),
        aliases,
    };
    let update = |added| Update {
        added,
        removed: Vec::new(),
        initial: false,
    };
    let (mut addresses, _, snapshot) = crate::state::xds::handlers();
    // The node scope's wildcard: the local pod and every service.
    let initial = vec![
        resource(local.uid.as_str(), pb::Address::from(&local), Vec::new()),
        resource(WAYPOINT_KEY, pb::Address::from(&waypoint_service), Vec::new()),
    ];
    addresses.apply(update(initial)).unwrap();

    // The control plane, played by the subscriber: the alias brings the pod, the waypoint's name its service and
    // endpoint.
    let alias = format!("/{}", backend.ip());
    let subscribed = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(Mutex::new(None::<crate::state::xds::AddressHandler>));
    let lookups = addresses.lookups({
        let (subscribed, handler, alias) = (Arc::clone(&subscribed), Arc::clone(&handler), alias.clone());
        move |key: String| {
            subscribed.lock().unwrap().push(key.clone());
            let answer = if key == alias {
                vec![resource(dest.uid.as_str(), pb::Address::from(&dest), vec![key])]
            } else if key == WAYPOINT_KEY {
                vec![
                    resource(WAYPOINT_KEY, pb::Address::from(&waypoint_service), Vec::new()),
                    resource(waypoint.uid.as_str(), pb::Address::from(&waypoint), Vec::new()),
                ]
            } else {
                return;
            };
            handler.lock().unwrap().as_mut().unwrap().apply(update(answer)).unwrap();
        }
    });
    *handler.lock().unwrap() = Some(addresses);

    let (_, bundle) = watch::channel(h.ca.trust_bundle());
    let cert = h.ca.issue(&identity(&h.td, "client"), None, SystemTime::now()).unwrap();
    let proxy = OutboundProxy::new(
        local_uid(),
        snapshot,
        FixedCert(cert),
        bundle,
        PoolSettings::default(),
        PlainDialer,
        Arc::clone(&h.metrics),
        FixedOriginalDst(backend),
        Some(lookups),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, never_drains()));

    echo_through(addr, b"looked up twice").await;
    echo_through(addr, b"held now").await;
    assert_eq!(*subscribed.lock().unwrap(), [alias, WAYPOINT_KEY.to_string()]);
    let requests = h.seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "both connections went through the waypoint");
    assert_eq!(requests[0].authority, Authority::Addr(backend));
    assert_eq!(requests[0].local_addr, SocketAddr::new(h.pod_ip, 15008));
    h.wait_for(
        "istio_tcp_connections_closed_total",
        &[
            r#"destination_workload="waypoint""#,
            r#"destination_principal="spiffe://cluster.local/ns/demo/sa/waypoint""#,
        ],
    )
    .await;
}

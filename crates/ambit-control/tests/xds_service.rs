//! Delta ADS end to end over real TLS gRPC on loopback, served beside the CA on one server: a client generated from
//! the protobuf definitions with a node token, the initial resources, ACKs, deltas and removals as the store
//! changes, a reconnect with `initial_resource_versions`, refusals, a slow client, and shutdown.

use std::sync::Arc;
use std::time::Duration;

use ambit_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use ambit_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use ambit_api::istio::security::Authorization;
use ambit_api::istio::workload::{Address, NetworkAddress, Port, PortList, Service, Workload, address};
use ambit_api::prost::Message;
use ambit_api::{AUTHORIZATION_TYPE_URL, WORKLOAD_ADDRESS_TYPE_URL};
use ambit_control::ca::auth::{NodeCredentials, generate_token};
use ambit_control::ca::ledger::Ledger;
use ambit_control::ca::service::CaService;
use ambit_control::ca::{control_identity, open_ca};
use ambit_control::server::{Services, serve, serving_tls};
use ambit_control::xds::{AdsService, ResourceStore, Resources};
use ambit_identity::ca::{CaConfig, CertificateAuthority};
use ambit_identity::tls::anonymous_client_config;
use ambit_types::TrustDomain;
use ambit_xds::ca::connect_channel;
use futures::channel::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// How long a delta may take to arrive after the store changed.
const DELTA_DEADLINE: Duration = Duration::from_secs(1);

const CLIENT_UID: &str = "Kubernetes//Pod/demo/client-0";
const SERVER_UID: &str = "Kubernetes//Pod/demo/server-0";
const ECHO: &str = "demo/echo.demo.svc.cluster.local";

struct Harness {
    addr: String,
    ca: Arc<CertificateAuthority>,
    store: ResourceStore,
    token: String,
    server: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

/// One ADS stream: requests go out through `tx`, responses come back on `responses`.
struct Xds {
    tx: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

fn trust_domain() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

/// The CA and ADS on one TLS server on 127.0.0.1:0, for node-1 (and node-2) tokens, serving an empty snapshot.
async fn start() -> Harness {
    let h = start_unpublished().await;
    h.store.publish(Resources::empty());
    h
}

/// As [`start`], before any snapshot was published (a control plane still loading its config).
async fn start_unpublished() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(open_ca(&dir.path().join("ca"), None, CaConfig::new(trust_domain())).unwrap());
    let ledger = Arc::new(Ledger::open(&dir.path().join("ca")).unwrap());
    let token = generate_token().unwrap();
    let tokens = [
        ("node-1".to_string(), token.clone()),
        ("node-2".to_string(), generate_token().unwrap()),
    ];
    let credentials = NodeCredentials::new(tokens.into()).unwrap();
    let index = ambit_control::ca::auth::StaticNodeIndex::default();
    let store = ResourceStore::new();
    let services = Services::new(CaService::new(ca.clone(), credentials.clone(), index, ledger))
        .with_ads(AdsService::new(&store, credentials));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tls = serving_tls(ca.clone()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve(listener, tls, services, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Harness {
        addr,
        ca,
        store,
        token,
        server,
        stop: Some(stop),
        _dir: dir,
    }
}

impl Harness {
    /// A fresh connection (its own HTTP/2 connection) checking the control plane's identity.
    async fn channel(&self) -> Channel {
        let config = anonymous_client_config(&self.ca.trust_bundle(), vec![control_identity(&trust_domain())]).unwrap();
        connect_channel(&self.addr, config).await.unwrap()
    }

    /// Opens a stream with `token` and sends `first`.
    async fn open(&self, token: Option<&str>, first: DeltaDiscoveryRequest) -> Result<Xds, Status> {
        let (tx, rx) = mpsc::unbounded();
        tx.unbounded_send(first).unwrap();
        let mut request = tonic::Request::new(rx);
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        let mut client = AggregatedDiscoveryServiceClient::new(self.channel().await);
        let responses = client.delta_aggregated_resources(request).await?.into_inner();
        Ok(Xds { tx, responses })
    }

    /// A wildcard stream of node-1 for `type_url`.
    async fn wildcard(&self, type_url: &str) -> Xds {
        self.open(Some(&self.token), subscribe(type_url, &[])).await.unwrap()
    }
}

impl Xds {
    /// The next response, within [`DELTA_DEADLINE`].
    async fn next(&mut self) -> DeltaDiscoveryResponse {
        let next = tokio::time::timeout(DELTA_DEADLINE, self.responses.message()).await;
        next.expect("no response within the deadline")
            .unwrap()
            .expect("the stream ended")
    }

    fn send(&self, request: DeltaDiscoveryRequest) {
        self.tx.unbounded_send(request).unwrap();
    }

    fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            response_nonce: response.nonce.clone(),
            ..subscribe(&response.type_url, &[])
        });
    }

    /// Asserts that nothing arrives for a while.
    async fn quiet(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(300), self.responses.message()).await;
        assert!(next.is_err(), "unexpected {next:?}");
    }
}

fn subscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names_subscribe: names.iter().map(|name| name.to_string()).collect(),
        ..DeltaDiscoveryRequest::default()
    }
}

fn workload(uid: &str, ip: [u8; 4]) -> Workload {
    Workload {
        uid: uid.to_string(),
        name: uid.rsplit('/').next().unwrap().to_string(),
        namespace: "demo".to_string(),
        addresses: vec![ip.to_vec()],
        service_account: "client".to_string(),
        node: "node-1".to_string(),
        tunnel_protocol: 1,
        services: [(ECHO.to_string(), PortList { ports: vec![port()] })].into(),
        ..Workload::default()
    }
}

fn port() -> Port {
    Port {
        service_port: 80,
        target_port: 8080,
        ..Port::default()
    }
}

fn echo() -> Service {
    Service {
        name: "echo".to_string(),
        namespace: "demo".to_string(),
        hostname: "echo.demo.svc.cluster.local".to_string(),
        addresses: vec![NetworkAddress {
            network: String::new(),
            address: vec![10, 96, 0, 20],
            length: None,
        }],
        ports: vec![port()],
        ..Service::default()
    }
}

fn policy() -> Authorization {
    Authorization {
        name: "allow-client".to_string(),
        namespace: "demo".to_string(),
        ..Authorization::default()
    }
}

fn names(response: &DeltaDiscoveryResponse) -> Vec<&str> {
    response.resources.iter().map(|r| r.name.as_str()).collect()
}

fn decode(response: &DeltaDiscoveryResponse, name: &str) -> address::Type {
    let resource = response.resources.iter().find(|r| r.name == name).unwrap();
    let any = resource.resource.as_ref().unwrap();
    assert_eq!(any.type_url, WORKLOAD_ADDRESS_TYPE_URL);
    Address::decode(any.value.as_slice()).unwrap().r#type.unwrap()
}

#[tokio::test]
async fn a_node_gets_the_initial_resources_then_deltas_and_removals() {
    let h = start().await;
    let workloads = vec![
        workload(CLIENT_UID, [10, 244, 1, 2]),
        workload(SERVER_UID, [10, 244, 1, 3]),
    ];
    h.store
        .publish(Resources::from_protos(workloads, vec![echo()], vec![policy()]));
    let mut xds = h.wildcard(WORKLOAD_ADDRESS_TYPE_URL).await;

    let initial = xds.next().await;
    assert_eq!(initial.type_url, WORKLOAD_ADDRESS_TYPE_URL);
    assert_eq!(names(&initial), [CLIENT_UID, SERVER_UID, ECHO]);
    assert!(initial.removed_resources.is_empty());
    let address::Type::Workload(client) = decode(&initial, CLIENT_UID) else {
        panic!("not a workload")
    };
    assert_eq!(client, workload(CLIENT_UID, [10, 244, 1, 2]));
    let address::Type::Service(service) = decode(&initial, ECHO) else {
        panic!("not a service")
    };
    assert_eq!(service, echo());
    let aliases: Vec<_> = initial.resources.iter().map(|r| r.aliases.clone()).collect();
    assert_eq!(aliases, [vec!["/10.244.1.2"], vec!["/10.244.1.3"], vec!["/10.96.0.20"]]);
    xds.ack(&initial);

    // The policy type on the same stream.
    xds.send(subscribe(AUTHORIZATION_TYPE_URL, &[]));
    let policies = xds.next().await;
    assert_eq!(
        (policies.type_url.as_str(), names(&policies)),
        (AUTHORIZATION_TYPE_URL, vec!["demo/allow-client"])
    );
    let any = policies.resources[0].resource.as_ref().unwrap();
    assert_eq!(Authorization::decode(any.value.as_slice()).unwrap(), policy());
    xds.ack(&policies);

    // The client moves: only it is sent.
    let moved = vec![
        workload(CLIENT_UID, [10, 244, 1, 9]),
        workload(SERVER_UID, [10, 244, 1, 3]),
    ];
    h.store
        .publish(Resources::from_protos(moved.clone(), vec![echo()], vec![policy()]));
    let delta = xds.next().await;
    assert_eq!(
        (delta.type_url.as_str(), names(&delta)),
        (WORKLOAD_ADDRESS_TYPE_URL, vec![CLIENT_UID])
    );
    assert_ne!(delta.nonce, initial.nonce);
    let address::Type::Workload(client) = decode(&delta, CLIENT_UID) else {
        panic!("not a workload")
    };
    assert_eq!(client.addresses, [vec![10, 244, 1, 9]]);
    xds.ack(&delta);

    // The service goes away.
    h.store
        .publish(Resources::from_protos(moved, Vec::new(), vec![policy()]));
    let removal = xds.next().await;
    assert_eq!(
        (names(&removal), removal.removed_resources.as_slice()),
        (vec![], &[ECHO.to_string()][..])
    );
    xds.ack(&removal);
    xds.quiet().await;
}

#[tokio::test]
async fn a_reconnect_with_initial_versions_gets_only_what_changed() {
    let h = start().await;
    let workloads = vec![
        workload(CLIENT_UID, [10, 244, 1, 2]),
        workload(SERVER_UID, [10, 244, 1, 3]),
    ];
    h.store
        .publish(Resources::from_protos(workloads, vec![echo()], Vec::new()));
    let mut xds = h.wildcard(WORKLOAD_ADDRESS_TYPE_URL).await;
    let initial = xds.next().await;
    xds.ack(&initial);
    drop(xds);

    // While the client is away, the server workload moves and the service goes.
    let changed = vec![
        workload(CLIENT_UID, [10, 244, 1, 2]),
        workload(SERVER_UID, [10, 244, 1, 7]),
    ];
    h.store.publish(Resources::from_protos(changed, Vec::new(), Vec::new()));
    let held = initial
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    let reconnect = DeltaDiscoveryRequest {
        initial_resource_versions: held,
        ..subscribe(WORKLOAD_ADDRESS_TYPE_URL, &[])
    };
    let mut xds = h.open(Some(&h.token), reconnect).await.unwrap();
    let response = xds.next().await;
    assert_eq!(names(&response), [SERVER_UID]);
    assert_eq!(response.removed_resources, [ECHO]);
    let address::Type::Workload(server) = decode(&response, SERVER_UID) else {
        panic!("not a workload")
    };
    assert_eq!(server.addresses, [vec![10, 244, 1, 7]]);
}

#[tokio::test]
async fn on_demand_by_alias() {
    let h = start().await;
    let workloads = vec![
        workload(CLIENT_UID, [10, 244, 1, 2]),
        workload(SERVER_UID, [10, 244, 1, 3]),
    ];
    h.store
        .publish(Resources::from_protos(workloads, vec![echo()], Vec::new()));
    let nothing = DeltaDiscoveryRequest {
        resource_names_unsubscribe: vec!["*".to_string()],
        ..subscribe(WORKLOAD_ADDRESS_TYPE_URL, &["*"])
    };
    let mut xds = h.open(Some(&h.token), nothing).await.unwrap();
    let empty = xds.next().await;
    assert!(
        empty.resources.is_empty() && empty.removed_resources.is_empty(),
        "{empty:?}"
    );
    xds.send(DeltaDiscoveryRequest {
        response_nonce: empty.nonce.clone(),
        ..subscribe(WORKLOAD_ADDRESS_TYPE_URL, &["/10.244.1.3", "/10.1.1.1"])
    });
    let found = xds.next().await;
    assert_eq!(names(&found), [SERVER_UID]);
    assert_eq!(found.resources[0].aliases, ["/10.244.1.3"]);
    assert_eq!(found.removed_resources, ["/10.1.1.1"]);
}

/// The node scope over the real server: node-1's stream, declared with the client's own `Node`, gets node-1's
/// workloads and the services but not node-2's pod; looking it up by alias brings it; the service brings its
/// endpoints; policies stay wildcard; a pod moving onto node-1 arrives and one moving off it is removed.
#[tokio::test]
async fn a_node_scoped_stream_gets_its_node_and_looks_up_the_rest() {
    const REMOTE_UID: &str = "Kubernetes//Pod/demo/remote-0";
    let h = start().await;
    // The client is no endpoint; the server and remote-0 are endpoints of echo.
    let mesh = |client_node: &str, remote_node: &str| {
        let on = |node: &str, workload: Workload| Workload {
            node: node.to_string(),
            ..workload
        };
        let client = Workload {
            services: Default::default(),
            ..on(client_node, workload(CLIENT_UID, [10, 244, 1, 2]))
        };
        let server = on("node-2", workload(SERVER_UID, [10, 244, 2, 3]));
        let remote = on(remote_node, workload(REMOTE_UID, [10, 244, 2, 4]));
        Resources::from_protos(vec![client, server, remote], vec![echo()], vec![policy()])
    };
    h.store.publish(mesh("node-1", "node-2"));
    let node = ambit_xds::delta::XdsClient::new(
        ambit_xds::delta::XdsConfig {
            address: h.addr.clone(),
            transport: ambit_xds::delta::Transport::Plaintext,
            token: h.token.clone(),
            node_name: "node-1".to_string(),
            node_ip: None,
            on_demand: Vec::new(),
        },
        vec![Box::new(Nothing(WORKLOAD_ADDRESS_TYPE_URL))],
    )
    .unwrap()
    .with_scope(ambit_xds::delta::XdsScope::Node)
    .node()
    .clone();
    let first = DeltaDiscoveryRequest {
        node: Some(node.clone()),
        ..subscribe(WORKLOAD_ADDRESS_TYPE_URL, &[])
    };
    let mut xds = h.open(Some(&h.token), first).await.unwrap();
    let initial = xds.next().await;
    assert_eq!(
        names(&initial),
        [CLIENT_UID, ECHO],
        "node-1's workloads and every service"
    );
    xds.ack(&initial);
    xds.send(DeltaDiscoveryRequest {
        node: Some(node),
        ..subscribe(AUTHORIZATION_TYPE_URL, &[])
    });
    let policies = xds.next().await;
    assert_eq!(names(&policies), ["demo/allow-client"], "policies stay wildcard");
    xds.ack(&policies);

    xds.send(subscribe(WORKLOAD_ADDRESS_TYPE_URL, &["/10.244.2.4"]));
    let found = xds.next().await;
    assert_eq!(names(&found), [REMOTE_UID], "the alias brings node-2's pod");
    xds.ack(&found);
    xds.send(subscribe(WORKLOAD_ADDRESS_TYPE_URL, &[ECHO]));
    let expanded = xds.next().await;
    assert_eq!(names(&expanded), [SERVER_UID, ECHO], "the service brings its endpoints");
    xds.ack(&expanded);
    xds.quiet().await;

    // remote-0 moves onto node-1 (it changed, and stays); then the client pod leaves node-1 (it is removed).
    h.store.publish(mesh("node-1", "node-1"));
    let moved = xds.next().await;
    assert_eq!(names(&moved), [REMOTE_UID]);
    xds.ack(&moved);
    h.store.publish(mesh("node-3", "node-1"));
    let left = xds.next().await;
    assert!(left.resources.is_empty(), "{left:?}");
    assert_eq!(left.removed_resources, [CLIENT_UID]);
}

/// A handler that takes everything, for building a client's `Node`.
struct Nothing(&'static str);

impl ambit_xds::delta::Handler for Nothing {
    fn type_url(&self) -> &'static str {
        self.0
    }

    fn apply(&mut self, _: ambit_xds::delta::Update) -> Result<(), Vec<ambit_xds::delta::Rejection>> {
        Ok(())
    }
}

#[tokio::test]
async fn missing_or_unknown_tokens_are_unauthenticated() {
    let h = start().await;
    let cases = [(None, "no credentials"), (Some(generate_token().unwrap()), "not known")];
    for (token, message) in cases {
        let request = subscribe(WORKLOAD_ADDRESS_TYPE_URL, &[]);
        let Err(status) = h.open(token.as_deref(), request).await else {
            panic!("a stream opened with {token:?}");
        };
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains(message), "{status:?}");
    }
}

#[tokio::test]
async fn state_of_the_world_ads_is_unimplemented() {
    let h = start().await;
    let mut grpc = tonic::client::Grpc::new(h.channel().await);
    grpc.ready().await.unwrap();
    let path = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
    let request = tonic::Request::new(futures::stream::iter([()]));
    let result = grpc.streaming(request, path.parse().unwrap(), EmptyCodec).await;
    assert_eq!(result.err().map(|status| status.code()), Some(Code::Unimplemented));
}

#[tokio::test]
async fn a_slow_client_does_not_hold_up_the_others() {
    let h = start().await;
    let mut slow = h.wildcard(WORKLOAD_ADDRESS_TYPE_URL).await;
    let mut fast = h.wildcard(WORKLOAD_ADDRESS_TYPE_URL).await;
    slow.next().await;
    fast.next().await;
    // Each snapshot holds a 256 KiB workload: the slow client, which reads nothing, fills its HTTP/2 window and its
    // response buffer within a few of them.
    for round in 0..40u8 {
        let mut big = workload(CLIENT_UID, [10, 244, 1, round]);
        big.hostname = "x".repeat(256 * 1024);
        h.store
            .publish(Resources::from_protos(vec![big], Vec::new(), Vec::new()));
        let delta = fast.next().await;
        let address::Type::Workload(got) = decode(&delta, CLIENT_UID) else {
            panic!("not a workload")
        };
        assert_eq!(got.addresses, [vec![10, 244, 1, round]], "round {round}");
        fast.ack(&delta);
    }
}

#[tokio::test]
async fn nothing_is_answered_before_the_first_snapshot() {
    let h = start_unpublished().await;
    let mut xds = h.wildcard(WORKLOAD_ADDRESS_TYPE_URL).await;
    let early = tokio::time::timeout(Duration::from_millis(300), xds.responses.message()).await;
    assert!(early.is_err(), "answered before anything was loaded: {early:?}");
    let client = workload(CLIENT_UID, [10, 244, 1, 2]);
    h.store
        .publish(Resources::from_protos(vec![client], Vec::new(), Vec::new()));
    let first = xds.next().await;
    assert_eq!(
        first.resources.len(),
        1,
        "the first answer is the first snapshot: {first:?}"
    );
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let mut h = start().await;
    let mut xds = h.wildcard(WORKLOAD_ADDRESS_TYPE_URL).await;
    xds.next().await;
    h.stop.take().unwrap().send(()).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(2), xds.responses.message()).await;
    match end.expect("the stream is still open") {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(None) => {}
        Ok(Some(response)) => panic!("a response after shutdown: {response:?}"),
    }
    tokio::time::timeout(Duration::from_secs(2), &mut h.server)
        .await
        .expect("the server still drains")
        .unwrap();
}

/// Sends and expects empty messages: enough to call a method the server does not implement.
struct EmptyCodec;

impl tonic::codec::Codec for EmptyCodec {
    type Encode = ();
    type Decode = ();
    type Encoder = EmptyCodec;
    type Decoder = EmptyCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EmptyCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EmptyCodec
    }
}

impl tonic::codec::Encoder for EmptyCodec {
    type Item = ();
    type Error = Status;

    fn encode(&mut self, _: (), _: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

impl tonic::codec::Decoder for EmptyCodec {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, _: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, Status> {
        Ok(Some(()))
    }
}

//! The delta ADS client against an in-process fake control plane that the test scripts request by request: ACKs,
//! NACKs, reconnects with the versions held, on-demand subscriptions, shutdown, and the TLS transport.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ambit_api::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use ambit_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use ambit_api::prost_types::{Any, value::Kind};
use ambit_api::{AUTHORIZATION_TYPE_URL, WORKLOAD_ADDRESS_TYPE_URL};
use ambit_identity::ca::{CaConfig, CertificateAuthority};
use ambit_identity::tls::server_config_optional_client_auth;
use ambit_types::TrustDomain;
use ambit_xds::ca::control_identity;
use ambit_xds::delta::{
    ClientStopped, ConnectionState, Handler, Rejection, SCOPE_METADATA, Transport, Update, XdsClient, XdsConfig,
    XdsHandle, XdsScope,
};
use futures::Stream;
use futures::channel::mpsc as stream_channel;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

const ADDRESS: &str = WORKLOAD_ADDRESS_TYPE_URL;
const AUTHZ: &str = AUTHORIZATION_TYPE_URL;
/// Longest wait for something that must happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long to watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

// --- the fake control plane ---

/// One `DeltaAggregatedResources` call, handed to the test.
struct Session {
    requests: Streaming<DeltaDiscoveryRequest>,
    responses: stream_channel::UnboundedSender<Result<DeltaDiscoveryResponse, Status>>,
    authorization: Option<String>,
}

struct FakeAds {
    sessions: mpsc::UnboundedSender<Session>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        let (responses, stream) = stream_channel::unbounded();
        let session = Session {
            requests: request.into_inner(),
            responses,
            authorization,
        };
        self.sessions
            .send(session)
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The fake server's calls, in order.
struct Sessions(mpsc::UnboundedReceiver<Session>);

impl Sessions {
    async fn next(&mut self) -> Session {
        let session = timeout(WAIT, self.0.recv())
            .await
            .expect("the client did not open a stream");
        session.expect("server gone")
    }

    async fn none(&mut self) {
        assert!(timeout(QUIET, self.0.recv()).await.is_err(), "unexpected stream");
    }
}

/// Serves the fake ADS in plaintext on `addr` (`127.0.0.1:0` for any port); the address it listens on.
fn serve_plaintext(addr: &str) -> (String, Sessions) {
    let incoming = TcpIncoming::bind(addr.parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap().to_string();
    let (sessions, rx) = mpsc::unbounded_channel();
    let service = AggregatedDiscoveryServiceServer::new(FakeAds { sessions });
    tokio::spawn(Server::builder().add_service(service).serve_with_incoming(incoming));
    (addr, Sessions(rx))
}

impl Session {
    async fn request(&mut self) -> DeltaDiscoveryRequest {
        let message = timeout(WAIT, self.requests.message())
            .await
            .expect("no request in time");
        message
            .expect("request stream failed")
            .expect("the client closed its side")
    }

    /// The initial requests of every type of the stream, by type URL.
    async fn initial_requests(&mut self, types: usize) -> BTreeMap<String, DeltaDiscoveryRequest> {
        let mut requests = BTreeMap::new();
        for _ in 0..types {
            let request = self.request().await;
            requests.insert(request.type_url.clone(), request);
        }
        requests
    }

    async fn no_request(&mut self) {
        let message = timeout(QUIET, self.requests.message()).await;
        assert!(message.is_err(), "unexpected request {message:?}");
    }

    fn send(&self, response: DeltaDiscoveryResponse) {
        self.responses.unbounded_send(Ok(response)).unwrap();
    }

    /// Sends `response` and returns the client's answer, checked to be for that type and nonce.
    async fn exchange(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let (type_url, nonce) = (response.type_url.clone(), response.nonce.clone());
        self.send(response);
        let answer = self.request().await;
        assert_eq!(
            (answer.type_url.as_str(), answer.response_nonce.as_str()),
            (type_url.as_str(), nonce.as_str())
        );
        answer
    }

    /// Ends the stream with a gRPC error.
    fn fail(self, status: Status) {
        self.responses.unbounded_send(Err(status)).unwrap();
    }
}

fn response(type_url: &str, nonce: &str, resources: Vec<Resource>, removed: &[&str]) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        resources,
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A resource whose body is `text` (the test handler's encoding).
fn resource(type_url: &str, name: &str, version: &str, text: &str) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(Any {
            type_url: type_url.into(),
            value: text.as_bytes().to_vec(),
        }),
        aliases: Vec::new(),
    }
}

fn versions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

// --- the handler and the client ---

/// What a [`TextHandler`] holds, shared with the test.
#[derive(Clone, Default)]
struct Store(Arc<Mutex<Held>>);

#[derive(Clone, Debug, Default)]
struct Held {
    /// Name → body text.
    resources: BTreeMap<String, String>,
    /// The `initial` flag of every update applied.
    initial: Vec<bool>,
}

impl Store {
    fn resources(&self) -> BTreeMap<String, String> {
        self.0.lock().unwrap().resources.clone()
    }

    fn initial(&self) -> Vec<bool> {
        self.0.lock().unwrap().initial.clone()
    }
}

/// Bodies are UTF-8 text; a body starting with "invalid" is refused, and with it the whole update.
struct TextHandler {
    type_url: &'static str,
    store: Store,
}

impl Handler for TextHandler {
    fn type_url(&self) -> &'static str {
        self.type_url
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejection>> {
        let mut held = self.store.0.lock().unwrap();
        let mut next = held.resources.clone();
        let mut rejections = Vec::new();
        for resource in update.added {
            let body = resource.resource.map(|any| any.value).unwrap_or_default();
            match String::from_utf8(body) {
                Ok(text) if !text.starts_with("invalid") => {
                    next.insert(resource.name, text);
                }
                Ok(text) => rejections.push(Rejection::new(resource.name, format!("invalid value {text:?}"))),
                Err(e) => rejections.push(Rejection::new(resource.name, e.to_string())),
            }
        }
        for name in update.removed {
            next.remove(&name);
        }
        if !rejections.is_empty() {
            return Err(rejections);
        }
        held.resources = next;
        held.initial.push(update.initial);
        Ok(())
    }
}

fn handler(type_url: &'static str, store: &Store) -> Box<dyn Handler> {
    Box::new(TextHandler {
        type_url,
        store: store.clone(),
    })
}

fn config(addr: &str, transport: Transport, on_demand: &[&str]) -> XdsConfig {
    XdsConfig {
        address: addr.to_string(),
        transport,
        token: "node-token".into(),
        node_name: "node-1".into(),
        node_ip: Some("172.31.0.2".parse().unwrap()),
        on_demand: on_demand.iter().map(|s| s.to_string()).collect(),
    }
}

/// A client running on its own task; it stops when this is dropped.
struct Running {
    handle: XdsHandle,
    state: watch::Receiver<ConnectionState>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn start(config: XdsConfig, handlers: Vec<Box<dyn Handler>>) -> Running {
    start_scoped(config, handlers, XdsScope::All)
}

fn start_scoped(config: XdsConfig, handlers: Vec<Box<dyn Handler>>, scope: XdsScope) -> Running {
    let client = XdsClient::new(config, handlers).unwrap().with_scope(scope);
    let (stop, stopped) = oneshot::channel::<()>();
    Running {
        handle: client.handle(),
        state: client.state(),
        stop,
        task: tokio::spawn(client.run(async {
            let _ = stopped.await;
        })),
    }
}

impl Running {
    async fn wait_until(&mut self, what: &str, f: impl FnMut(&ConnectionState) -> bool) {
        let reached = timeout(WAIT, self.state.wait_for(f)).await.map(|r| r.is_ok());
        assert_eq!(reached, Ok(true), "not {what}: {:?}", *self.state.borrow());
    }

    fn synced(&self, type_url: &str) -> bool {
        self.state.borrow().synced[type_url]
    }
}

fn metadata(request: &DeltaDiscoveryRequest, key: &str) -> Option<String> {
    let fields = &request.node.as_ref()?.metadata.as_ref()?.fields;
    match &fields.get(key)?.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

// --- tests ---

#[tokio::test]
async fn one_stream_carries_every_type_and_each_response_is_acked_with_its_nonce() {
    let (addr, mut sessions) = serve_plaintext("127.0.0.1:0");
    let (addresses, policies) = (Store::default(), Store::default());
    let handlers = vec![handler(ADDRESS, &addresses), handler(AUTHZ, &policies)];
    let mut client = start(config(&addr, Transport::Plaintext, &[]), handlers);

    let mut session = sessions.next().await;
    assert_eq!(session.authorization.as_deref(), Some("Bearer node-token"));
    let initial = session.initial_requests(2).await;
    assert_eq!(initial.keys().collect::<Vec<_>>(), [AUTHZ, ADDRESS]);
    for request in initial.values() {
        let node = request.node.as_ref().expect("node on the initial request");
        assert_eq!(
            node.id,
            "ztunnel~172.31.0.2~node-1.ambit-system~ambit-system.svc.cluster.local"
        );
        assert_eq!(metadata(request, "NODE_NAME").as_deref(), Some("node-1"));
        assert!(request.resource_names_subscribe.is_empty(), "wildcard");
        assert!(request.resource_names_unsubscribe.is_empty() && request.initial_resource_versions.is_empty());
        assert!(request.response_nonce.is_empty() && request.error_detail.is_none());
    }
    client.wait_until("connected", |s| s.connected).await;
    assert!(!client.synced(ADDRESS) && !client.synced(AUTHZ));

    let resources = vec![
        resource(ADDRESS, "ns/a", "1", "alpha"),
        resource(ADDRESS, "ns/b", "1", "beta"),
    ];
    let ack = session.exchange(response(ADDRESS, "a-1", resources, &[])).await;
    assert_eq!(ack.error_detail, None);
    assert!(ack.node.is_none() && ack.resource_names_subscribe.is_empty());
    let expected = [("ns/a", "alpha"), ("ns/b", "beta")].map(|(n, t)| (n.to_string(), t.to_string()));
    assert_eq!(addresses.resources(), expected.into());
    assert!(
        client.synced(ADDRESS) && !client.synced(AUTHZ),
        "{:?}",
        *client.state.borrow()
    );

    let ack = session
        .exchange(response(AUTHZ, "p-1", vec![resource(AUTHZ, "ns/deny", "1", "d")], &[]))
        .await;
    assert_eq!(ack.error_detail, None);
    assert_eq!(policies.resources().len(), 1);
    assert!(client.state.borrow().is_synced());

    let ack = session.exchange(response(ADDRESS, "a-2", vec![], &["ns/b"])).await;
    assert_eq!(ack.error_detail, None);
    assert_eq!(addresses.resources().keys().collect::<Vec<_>>(), ["ns/a"]);
    assert_eq!(addresses.initial(), [true, false]);
}

#[tokio::test]
async fn an_invalid_update_is_nacked_with_the_reason_and_the_previous_state_kept() {
    let (addr, mut sessions) = serve_plaintext("127.0.0.1:0");
    let addresses = Store::default();
    let client = start(
        config(&addr, Transport::Plaintext, &[]),
        vec![handler(ADDRESS, &addresses)],
    );
    let mut session = sessions.next().await;
    session.request().await;
    session
        .exchange(response(
            ADDRESS,
            "1",
            vec![resource(ADDRESS, "ns/a", "1", "alpha")],
            &[],
        ))
        .await;

    let update = vec![
        resource(ADDRESS, "ns/a", "2", "alpha-2"),
        resource(ADDRESS, "ns/bad", "1", "invalid port"),
        resource(ADDRESS, "ns/worse", "1", "invalid uid"),
    ];
    let nack = session.exchange(response(ADDRESS, "2", update, &[])).await;
    let detail = nack.error_detail.expect("a NACK");
    assert_eq!(
        detail.message,
        "ns/bad: invalid value \"invalid port\"; ns/worse: invalid value \"invalid uid\""
    );
    assert_eq!(
        addresses.resources(),
        versions(&[("ns/a", "alpha")]),
        "the previous state"
    );

    // The protocol's own checks NACK too, before the handler.
    let nack = session
        .exchange(response(ADDRESS, "3", vec![resource(AUTHZ, "ns/x", "1", "x")], &[]))
        .await;
    let message = nack.error_detail.expect("a NACK").message;
    assert_eq!(message, format!("ns/x: body of type {AUTHZ}"));

    // A NACK ends nothing: the next good update is applied and ACKed.
    let ack = session
        .exchange(response(
            ADDRESS,
            "4",
            vec![resource(ADDRESS, "ns/a", "2", "alpha-2")],
            &[],
        ))
        .await;
    assert_eq!(ack.error_detail, None);
    assert_eq!(addresses.resources(), versions(&[("ns/a", "alpha-2")]));
    assert!(client.state.borrow().is_synced());
}

#[tokio::test]
async fn a_first_update_that_is_nacked_does_not_sync_the_type() {
    let (addr, mut sessions) = serve_plaintext("127.0.0.1:0");
    let client = start(
        config(&addr, Transport::Plaintext, &[]),
        vec![handler(ADDRESS, &Store::default())],
    );
    let mut session = sessions.next().await;
    session.request().await;
    let nack = session
        .exchange(response(
            ADDRESS,
            "1",
            vec![resource(ADDRESS, "a", "1", "invalid")],
            &[],
        ))
        .await;
    assert!(nack.error_detail.is_some());
    assert!(!client.synced(ADDRESS));
    session
        .exchange(response(ADDRESS, "2", vec![resource(ADDRESS, "a", "1", "ok")], &[]))
        .await;
    assert!(client.synced(ADDRESS));
}

#[tokio::test]
async fn after_the_stream_drops_the_client_reconnects_with_the_versions_it_accepted() {
    let (addr, mut sessions) = serve_plaintext("127.0.0.1:0");
    let (addresses, policies) = (Store::default(), Store::default());
    let handlers = vec![handler(ADDRESS, &addresses), handler(AUTHZ, &policies)];
    let mut client = start(config(&addr, Transport::Plaintext, &[]), handlers);

    let mut session = sessions.next().await;
    session.initial_requests(2).await;
    let first = vec![
        resource(ADDRESS, "ns/a", "1", "alpha"),
        resource(ADDRESS, "ns/b", "1", "beta"),
    ];
    session.exchange(response(ADDRESS, "1", first, &[])).await;
    let rejected = vec![
        resource(ADDRESS, "ns/a", "2", "alpha-2"),
        resource(ADDRESS, "ns/c", "1", "invalid"),
    ];
    session.exchange(response(ADDRESS, "2", rejected, &[])).await;
    session.exchange(response(ADDRESS, "3", vec![], &["ns/b"])).await;
    session
        .exchange(response(AUTHZ, "4", vec![resource(AUTHZ, "ns/p", "9", "p")], &[]))
        .await;
    assert!(client.state.borrow().is_synced());

    // The control plane ends the stream cleanly.
    drop(session);
    let mut session = sessions.next().await;
    let initial = session.initial_requests(2).await;
    assert_eq!(initial[ADDRESS].initial_resource_versions, versions(&[("ns/a", "1")]));
    assert_eq!(initial[AUTHZ].initial_resource_versions, versions(&[("ns/p", "9")]));
    assert!(initial[ADDRESS].node.is_some(), "the node again on the new stream");
    client.wait_until("connected again", |s| s.connected).await;
    assert!(
        client.state.borrow().is_synced(),
        "still synced: the handlers kept their state"
    );
    assert_eq!(addresses.resources(), versions(&[("ns/a", "alpha")]));

    // The first response on the new stream is flagged initial for the handler.
    session
        .exchange(response(
            ADDRESS,
            "5",
            vec![resource(ADDRESS, "ns/d", "1", "delta")],
            &[],
        ))
        .await;
    assert_eq!(addresses.initial(), [true, false, true]);

    // The control plane fails the stream with a gRPC error: the client reconnects again.
    session.fail(Status::unavailable("restarting"));
    let mut session = sessions.next().await;
    let initial = session.initial_requests(2).await;
    let expected = versions(&[("ns/a", "1"), ("ns/d", "1")]);
    assert_eq!(initial[ADDRESS].initial_resource_versions, expected);
}

#[tokio::test]
async fn the_client_dials_again_until_the_control_plane_listens_and_keeps_subscriptions_made_meanwhile() {
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let addresses = Store::default();
    let mut client = start(
        config(&addr, Transport::Plaintext, &[ADDRESS]),
        vec![handler(ADDRESS, &addresses)],
    );
    client
        .handle
        .subscribe(ADDRESS, vec!["default/10.0.0.1".into()])
        .unwrap();
    tokio::time::sleep(QUIET).await;
    assert!(!client.state.borrow().connected);

    let (_, mut sessions) = serve_plaintext(&addr);
    let mut session = sessions.next().await;
    let request = session.request().await;
    assert_eq!(request.resource_names_subscribe, ["default/10.0.0.1"]);
    client.wait_until("connected", |s| s.connected).await;
}

#[tokio::test]
async fn on_demand_subscriptions_are_sent_on_the_live_stream_and_replayed_after_a_reconnect() {
    let (addr, mut sessions) = serve_plaintext("127.0.0.1:0");
    let (addresses, policies) = (Store::default(), Store::default());
    let handlers = vec![handler(ADDRESS, &addresses), handler(AUTHZ, &policies)];
    let client = start(config(&addr, Transport::Plaintext, &[ADDRESS]), handlers);
    assert!(client.synced(ADDRESS), "on-demand types need no first response");

    let mut session = sessions.next().await;
    let initial = session.initial_requests(2).await;
    let on_demand = &initial[ADDRESS];
    assert_eq!(on_demand.resource_names_subscribe, ["*"], "subscribe to nothing");
    assert_eq!(on_demand.resource_names_unsubscribe, ["*"]);
    assert!(
        initial[AUTHZ].resource_names_subscribe.is_empty(),
        "the other type stays wildcard"
    );

    client
        .handle
        .subscribe(ADDRESS, vec!["default/10.0.0.1".into()])
        .unwrap();
    let request = session.request().await;
    assert_eq!(request.type_url, ADDRESS);
    assert_eq!(request.resource_names_subscribe, ["default/10.0.0.1"]);
    assert!(request.node.is_none() && request.response_nonce.is_empty());

    let names = vec!["default/10.0.0.1".to_string(), "default/10.0.0.2".to_string()];
    client.handle.subscribe(ADDRESS, names).unwrap();
    let request = session.request().await;
    assert_eq!(
        request.resource_names_subscribe,
        ["default/10.0.0.2"],
        "only the new name"
    );

    // Nothing for a wildcard type or a name already subscribed: the next request is the unsubscribe.
    client.handle.subscribe(AUTHZ, vec!["ns/p".into()]).unwrap();
    client
        .handle
        .subscribe(ADDRESS, vec!["default/10.0.0.2".into()])
        .unwrap();
    client
        .handle
        .unsubscribe(ADDRESS, vec!["default/10.0.0.2".into()])
        .unwrap();
    let request = session.request().await;
    assert_eq!(request.type_url, ADDRESS);
    assert_eq!(request.resource_names_unsubscribe, ["default/10.0.0.2"]);
    assert!(request.resource_names_subscribe.is_empty());
    session.no_request().await;

    let mut pod = resource(ADDRESS, "Kubernetes//Pod/default/a", "1", "pod a");
    pod.aliases = vec!["default/10.0.0.1".into()];
    session.exchange(response(ADDRESS, "1", vec![pod], &[])).await;
    assert_eq!(addresses.resources().len(), 1);

    drop(session);
    let mut session = sessions.next().await;
    let initial = session.initial_requests(2).await;
    let replayed = &initial[ADDRESS];
    assert_eq!(replayed.resource_names_subscribe, ["default/10.0.0.1"]);
    assert!(replayed.resource_names_unsubscribe.is_empty());
    assert_eq!(
        replayed.initial_resource_versions,
        versions(&[("Kubernetes//Pod/default/a", "1")])
    );
}

/// The node scope: declared in the metadata of every stream's first requests; Address starts as a wildcard (the
/// control plane sends the node's set unasked, and the client keeps it), names are added on the live stream, and a
/// reconnect asks for the explicit wildcard plus the names.
#[tokio::test]
async fn node_scope_is_a_wildcard_that_also_takes_names() {
    let (addr, mut sessions) = serve_plaintext("127.0.0.1:0");
    let (addresses, policies) = (Store::default(), Store::default());
    let handlers = vec![handler(ADDRESS, &addresses), handler(AUTHZ, &policies)];
    let mut client = start_scoped(config(&addr, Transport::Plaintext, &[]), handlers, XdsScope::Node);
    assert!(!client.synced(ADDRESS), "the node's set is awaited like a wildcard");

    let mut session = sessions.next().await;
    let initial = session.initial_requests(2).await;
    for (type_url, request) in &initial {
        assert_eq!(metadata(request, SCOPE_METADATA).as_deref(), Some("node"), "{type_url}");
        assert_eq!(metadata(request, "NODE_NAME").as_deref(), Some("node-1"), "{type_url}");
        assert!(request.resource_names_subscribe.is_empty(), "{type_url}: a wildcard");
        assert!(request.resource_names_unsubscribe.is_empty(), "{type_url}");
    }
    let local = resource(ADDRESS, "Kubernetes//Pod/default/local", "1", "local pod");
    session.exchange(response(ADDRESS, "1", vec![local], &[])).await;
    client.wait_until("Address synced", |s| s.synced[ADDRESS]).await;

    client.handle.subscribe(ADDRESS, vec!["/10.0.0.9".into()]).unwrap();
    let request = session.request().await;
    assert_eq!(
        (request.type_url.as_str(), request.resource_names_subscribe.as_slice()),
        (ADDRESS, &["/10.0.0.9".to_string()][..])
    );
    let mut remote = resource(ADDRESS, "Kubernetes//Pod/default/remote", "2", "remote pod");
    remote.aliases = vec!["/10.0.0.9".into()];
    session.exchange(response(ADDRESS, "2", vec![remote], &[])).await;
    let held: Vec<String> = addresses.resources().into_keys().collect();
    assert_eq!(
        held,
        ["Kubernetes//Pod/default/local", "Kubernetes//Pod/default/remote"]
    );

    drop(session);
    let mut session = sessions.next().await;
    let initial = session.initial_requests(2).await;
    let replayed = &initial[ADDRESS];
    assert_eq!(replayed.resource_names_subscribe, ["*", "/10.0.0.9"]);
    assert!(replayed.resource_names_unsubscribe.is_empty());
    assert_eq!(
        replayed.initial_resource_versions,
        versions(&[
            ("Kubernetes//Pod/default/local", "1"),
            ("Kubernetes//Pod/default/remote", "2")
        ])
    );
    assert_eq!(metadata(replayed, SCOPE_METADATA).as_deref(), Some("node"));
    assert!(
        initial[AUTHZ].resource_names_subscribe.is_empty(),
        "policies stay wildcard"
    );
}

#[tokio::test]
async fn a_response_of_an_unhandled_type_is_nacked() {
    let (addr, mut sessions) = serve_plaintext("127.0.0.1:0");
    let addresses = Store::default();
    let client = start(
        config(&addr, Transport::Plaintext, &[]),
        vec![handler(ADDRESS, &addresses)],
    );
    let mut session = sessions.next().await;
    session.request().await;
    let unknown = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    let nack = session
        .exchange(response(unknown, "7", vec![resource(unknown, "c", "1", "c")], &[]))
        .await;
    let message = nack.error_detail.expect("a NACK").message;
    assert_eq!(message, format!("no handler for type URL {unknown:?}"));
    assert!(addresses.resources().is_empty() && !client.synced(ADDRESS));
}

#[tokio::test]
async fn the_client_stops_on_shutdown_connected_or_not() {
    let (addr, mut sessions) = serve_plaintext("127.0.0.1:0");
    let client = start(
        config(&addr, Transport::Plaintext, &[]),
        vec![handler(ADDRESS, &Store::default())],
    );
    let mut session = sessions.next().await;
    session.request().await;
    client.stop.send(()).unwrap();
    timeout(WAIT, client.task).await.expect("still running").unwrap();
    let ended = timeout(WAIT, session.requests.message())
        .await
        .expect("the stream stayed open");
    assert!(!matches!(ended, Ok(Some(_))), "the client's side ended: {ended:?}");
    let stopped = client.handle.subscribe(ADDRESS, vec!["x".into()]);
    assert!(matches!(stopped, Err(ClientStopped)));

    // Waiting to redial: nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = config(&format!("127.0.0.1:{port}"), Transport::Plaintext, &[]);
    let client = start(config, vec![handler(ADDRESS, &Store::default())]);
    tokio::time::sleep(QUIET).await;
    client.stop.send(()).unwrap();
    timeout(WAIT, client.task).await.expect("still running").unwrap();
}

// --- TLS ---

/// Serves the fake ADS over TLS with a certificate for the control plane's identity from a fresh CA.
async fn serve_tls(ca: &CertificateAuthority) -> (String, Sessions) {
    let identity = control_identity(&ca.config().trust_domain);
    let cert = ca.issue(&identity, None, SystemTime::now()).unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(server_config_optional_client_auth(&cert, &ca.trust_bundle()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, mut rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            // A client that refuses the server's certificate fails its handshake: skip it.
            if let Ok(tls) = acceptor.accept(tcp).await
                && tx.send(Ok::<_, io::Error>(tls)).await.is_err()
            {
                return;
            }
        }
    });
    let incoming = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let (sessions, session_rx) = mpsc::unbounded_channel();
    let service = AggregatedDiscoveryServiceServer::new(FakeAds { sessions });
    tokio::spawn(Server::builder().add_service(service).serve_with_incoming(incoming));
    (addr, Sessions(session_rx))
}

#[tokio::test]
async fn over_tls_the_client_accepts_only_the_control_plane_identity() {
    let dir = tempfile::tempdir().unwrap();
    let trust_domain = TrustDomain::new("cluster.local").unwrap();
    let ca = CertificateAuthority::load_or_create(dir.path(), CaConfig::new(trust_domain.clone()), SystemTime::now());
    let ca = ca.unwrap();
    let (addr, mut sessions) = serve_tls(&ca).await;
    let bundle = ca.trust_bundle();

    let impostor = "spiffe://cluster.local/ns/demo/sa/impostor".parse().unwrap();
    let expecting_another = Transport::Tls {
        bundle: bundle.clone(),
        server: impostor,
    };
    let wrong = start(
        config(&addr, expecting_another, &[]),
        vec![handler(ADDRESS, &Store::default())],
    );
    sessions.none().await;
    assert!(!wrong.state.borrow().connected);
    drop(wrong);

    let transport = Transport::Tls {
        bundle,
        server: control_identity(&trust_domain),
    };
    let addresses = Store::default();
    let client = start(config(&addr, transport, &[]), vec![handler(ADDRESS, &addresses)]);
    let mut session = sessions.next().await;
    assert_eq!(session.authorization.as_deref(), Some("Bearer node-token"));
    assert_eq!(session.request().await.type_url, ADDRESS);
    let ack = session
        .exchange(response(
            ADDRESS,
            "1",
            vec![resource(ADDRESS, "ns/a", "1", "alpha")],
            &[],
        ))
        .await;
    assert_eq!(ack.error_detail, None);
    assert!(client.synced(ADDRESS));
}

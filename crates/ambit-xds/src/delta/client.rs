//! The driver of the delta ADS stream: dials the control plane, opens one `DeltaAggregatedResources` stream for every
//! type URL, moves responses through each type's [`DeltaState`] and [`Handler`] and the answers back, reconnects
//! with backoff, and publishes the connection state. Decisions are the states'; this module only moves messages and
//! keeps the timers.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ambit_api::WORKLOAD_ADDRESS_TYPE_URL;
use ambit_api::envoy::config::core::v3::Node;
use ambit_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use ambit_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use ambit_api::prost_types::{Struct, Value, value::Kind};
use ambit_identity::ca::CONTROL_PLANE_NAMESPACE;
use ambit_identity::cert::TrustBundle;
use ambit_identity::tls::{TlsError, anonymous_client_config};
use ambit_types::Identity;
use tokio::sync::{mpsc, watch};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tracing::{Instrument, debug, info, info_span, warn};

use super::Handler;
use super::state::{DeltaState, Subscription, Verdict, reject_unknown_type};
use crate::ca::{dial, error_chain};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 PINGs on the stream, so a control plane that vanished without a FIN is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The first wait before redialing; it doubles on each failure, up to [`MAX_BACKOFF`] (ztunnel's bounds).
const INITIAL_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Largest response accepted: a wildcard's first response holds every address of the mesh (tonic's default is
/// 4 MiB).
const MAX_RESPONSE: usize = 200 * 1024 * 1024;
/// The proxy type in the node id. Istiod accepts only its own types there, and serves the workload API to this one.
const NODE_TYPE: &str = "ztunnel";
/// The node metadata field that declares the [`XdsScope`] of the stream (an ambit extension; istiod ignores it).
pub const SCOPE_METADATA: &str = "AMBIT_XDS_SCOPE";

/// Which `istio.workload.Address` resources a node proxy asks for; declared in its node metadata
/// ([`SCOPE_METADATA`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum XdsScope {
    /// Every address of the mesh, as istiod sends ztunnel (metadata absent or `"all"`).
    #[default]
    All,
    /// The workloads of the node's own pods and every service, plus what the proxy looks up on demand (`"node"`):
    /// a node of a large mesh holds only what its pods talk to.
    Node,
}

/// What the client needs besides its handlers.
#[derive(Clone)]
pub struct XdsConfig {
    /// The control plane, `host:port` (with TLS, the port defaults to 15012).
    pub address: String,
    pub transport: Transport,
    /// The node's bearer token, sent as `authorization: Bearer <token>` on every stream.
    pub token: String,
    /// The node's name (Kubernetes node name): metadata `NODE_NAME` and part of the node id.
    pub node_name: String,
    /// The node's IP, when known: metadata `INSTANCE_IPS` and part of the node id.
    pub node_ip: Option<IpAddr>,
    /// Type URLs subscribed on demand (to the names given to [`XdsHandle::subscribe`]) instead of by wildcard.
    pub on_demand: Vec<String>,
}

/// How the client reaches the control plane.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TLS 1.3 without a client certificate, as the CA client: the server's chain must verify against `bundle` and
    /// name `server` (normally [`control_identity`](crate::ca::control_identity)).
    Tls { bundle: TrustBundle, server: Identity },
    /// HTTP/2 in clear text. **For tests only**: the bearer token and the mesh's configuration travel readable.
    Plaintext,
}

/// The client of the control plane's delta ADS stream. Build it, take its [`handle`](Self::handle) and
/// [`state`](Self::state), then [`run`](Self::run) it on the runtime that serves xDS.
pub struct XdsClient {
    endpoint: Endpoint,
    /// `None` for [`Transport::Plaintext`].
    tls: Option<Arc<rustls::ClientConfig>>,
    authorization: MetadataValue<Ascii>,
    node: Node,
    types: BTreeMap<&'static str, Subscriber>,
    commands: mpsc::UnboundedReceiver<Command>,
    handle: XdsHandle,
    state: watch::Sender<ConnectionState>,
    backoff: Backoff,
}

/// One type URL: its protocol state and its consumer.
struct Subscriber {
    state: DeltaState,
    handler: Box<dyn Handler>,
}

/// The client's link to the control plane, as the node proxy's readiness needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionState {
    /// A stream is open (the control plane answered the call); false while connecting or waiting to reconnect.
    pub connected: bool,
    /// Each handled type URL, and whether its first response has been applied (ACKed) since the client started.
    /// A type stays synced across reconnects, since its handler keeps serving what it holds. On-demand types are
    /// synced from the start: they hold only what is looked up.
    pub synced: BTreeMap<&'static str, bool>,
}

/// Changes the on-demand subscriptions of a running [`XdsClient`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct XdsHandle {
    commands: mpsc::UnboundedSender<Command>,
}

#[derive(Debug)]
struct Command {
    type_url: String,
    names: Vec<String>,
    subscribe: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("invalid control plane address {0:?}: use host:port")]
    Address(String),
    #[error("the bearer token cannot be sent as a header value")]
    Token,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("no handlers: the stream would carry nothing")]
    NoHandlers,
    #[error("two handlers for type URL {0}")]
    DuplicateType(String),
    #[error("on-demand type URL {0} has no handler")]
    UnknownOnDemand(String),
}

/// The client is no longer running.
#[derive(Debug, thiserror::Error)]
#[error("the xDS client has stopped")]
pub struct ClientStopped;

/// Why a stream ended.
enum Ended {
    Shutdown,
    Lost(String),
}

/// Redial delays: 10 ms doubling to 15 s, back to 10 ms once a stream has carried a response.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

/// Builds a client and runs it until `shutdown` completes, for callers that need neither its handle nor its state.
pub async fn run(
    config: XdsConfig,
    handlers: Vec<Box<dyn Handler>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), XdsError> {
    XdsClient::new(config, handlers)?.run(shutdown).await;
    Ok(())
}

/// The `Node` the client describes itself with, in ztunnel's form with the node in place of ztunnel's pod:
/// id `ztunnel~<node ip>~<node>.ambit-system~ambit-system.svc.cluster.local` (`0.0.0.0` when the IP is unknown),
/// metadata `NAME` and `NODE_NAME` = the node name, `NAMESPACE` = `ambit-system`, and `INSTANCE_IPS` = the node's IP
/// when known. [`XdsClient::with_scope`] adds [`SCOPE_METADATA`] for the node scope.
pub fn node(name: &str, ip: Option<IpAddr>) -> Node {
    let ns = CONTROL_PLANE_NAMESPACE;
    let shown_ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let text = |s: String| Value {
        kind: Some(Kind::StringValue(s)),
    };
    let mut fields: BTreeMap<String, Value> = [
        ("NAME", name.to_string()),
        ("NAMESPACE", ns.to_string()),
        ("NODE_NAME", name.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), text(v)))
    .collect();
    if let Some(ip) = ip {
        fields.insert("INSTANCE_IPS".to_string(), text(ip.to_string()));
    }
    Node {
        id: format!("{NODE_TYPE}~{shown_ip}~{name}.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

// === impl XdsClient ===

impl XdsClient {
    /// Checks the configuration and builds the TLS settings; nothing is dialed before [`run`](Self::run). One
    /// handler per type URL.
    pub fn new(config: XdsConfig, handlers: Vec<Box<dyn Handler>>) -> Result<Self, XdsError> {
        let authorization = format!("Bearer {}", config.token)
            .parse()
            .map_err(|_| XdsError::Token)?;
        let endpoint = Endpoint::from_shared(format!("http://{}", config.address))
            .map_err(|_| XdsError::Address(config.address.clone()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let tls = match &config.transport {
            Transport::Tls { bundle, server } => Some(anonymous_client_config(bundle, vec![server.clone()])?),
            Transport::Plaintext => None,
        };
        let types = subscribers(handlers, &config.on_demand)?;
        let synced = types
            .iter()
            .map(|(type_url, s)| (*type_url, matches!(s.state.subscription(), Subscription::Names(_))))
            .collect();
        let (state, _) = watch::channel(ConnectionState {
            connected: false,
            synced,
        });
        let (commands_tx, commands) = mpsc::unbounded_channel();
        Ok(Self {
            endpoint,
            tls,
            authorization,
            node: node(&config.node_name, config.node_ip),
            types,
            commands,
            handle: XdsHandle { commands: commands_tx },
            state,
            backoff: Backoff::new(),
        })
    }

    /// Asks for `scope`'s addresses: for [`XdsScope::Node`], the node metadata says so and the
    /// `istio.workload.Address` subscription (unless it is on demand) becomes [`DeltaState::node_scoped`], which
    /// still takes the names given to [`XdsHandle::subscribe`]. [`XdsScope::All`] changes nothing.
    pub fn with_scope(mut self, scope: XdsScope) -> Self {
        if scope == XdsScope::All {
            return self;
        }
        let fields = &mut self.node.metadata.get_or_insert_with(Struct::default).fields;
        let value = Value {
            kind: Some(Kind::StringValue(scope.as_str().to_string())),
        };
        fields.insert(SCOPE_METADATA.to_string(), value);
        if let Some(subscriber) = self.types.get_mut(WORKLOAD_ADDRESS_TYPE_URL)
            && subscriber.state.subscription() == &Subscription::Wildcard
        {
            subscriber.state = DeltaState::node_scoped(WORKLOAD_ADDRESS_TYPE_URL);
        }
        self
    }

    /// The `Node` this client describes itself with on every stream.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Changes on-demand subscriptions, from any task.
    pub fn handle(&self) -> XdsHandle {
        self.handle.clone()
    }

    /// The connection state, updated as streams open and close and types sync.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// Runs streams one after another until `shutdown` completes: dial, initial requests (with the versions held),
    /// then answer every response; when a stream ends, wait the backoff and start again.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut client = AggregatedDiscoveryServiceClient::new(self.channel()).max_decoding_message_size(MAX_RESPONSE);
        let mut shutdown = std::pin::pin!(shutdown);
        for attempt in 1u64.. {
            let span = info_span!("xds", stream = attempt);
            let ended = self.stream(&mut client, shutdown.as_mut()).instrument(span).await;
            self.state
                .send_if_modified(|s| std::mem::replace(&mut s.connected, false));
            let Ended::Lost(reason) = ended else {
                return;
            };
            let delay = self.backoff.next_delay();
            warn!(%reason, retry_in = ?delay, "xDS stream lost");
            if self.pause(delay, shutdown.as_mut()).await.is_break() {
                return;
            }
        }
    }

    /// A channel that dials on first use and again after a failure.
    fn channel(&self) -> Channel {
        let Some(config) = self.tls.clone() else {
            return self.endpoint.connect_lazy();
        };
        let connector = tower::service_fn(move |uri| dial(uri, config.clone()));
        self.endpoint.connect_with_connector_lazy(connector)
    }

    /// One stream, from the call to its end.
    async fn stream<F: Future<Output = ()>>(
        &mut self,
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        mut shutdown: Pin<&mut F>,
    ) -> Ended {
        // Queued before the call: a control plane may answer the call only once it has a request to answer.
        let (requests, outbound) = futures::channel::mpsc::unbounded();
        for subscriber in self.types.values_mut() {
            let mut request = subscriber.state.initial_request();
            request.node = Some(self.node.clone());
            send(&requests, request);
        }
        let mut call = tonic::Request::new(outbound);
        call.metadata_mut().insert("authorization", self.authorization.clone());
        let opened = tokio::select! {
            () = shutdown.as_mut() => return Ended::Shutdown,
            opened = client.delta_aggregated_resources(call) => opened,
        };
        let mut responses = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => return Ended::Lost(status_reason(&status)),
        };
        info!("xDS stream open");
        self.state
            .send_if_modified(|s| !std::mem::replace(&mut s.connected, true));
        loop {
            tokio::select! {
                () = shutdown.as_mut() => return Ended::Shutdown,
                Some(command) = self.commands.recv() => {
                    if let Some(request) = self.command(command) {
                        send(&requests, request);
                    }
                }
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        self.backoff.reset();
                        let answer = self.respond(response);
                        send(&requests, answer);
                    }
                    Ok(None) => return Ended::Lost("the control plane ended the stream".to_string()),
                    Err(status) => return Ended::Lost(status_reason(&status)),
                },
            }
        }
    }

    /// Waits `delay` before the next dial, still taking subscription changes (sent with the next stream's initial
    /// requests). Breaks on shutdown.
    async fn pause<F: Future<Output = ()>>(&mut self, delay: Duration, mut shutdown: Pin<&mut F>) -> ControlFlow<()> {
        let mut wake = std::pin::pin!(tokio::time::sleep(delay));
        loop {
            tokio::select! {
                () = shutdown.as_mut() => return ControlFlow::Break(()),
                () = wake.as_mut() => return ControlFlow::Continue(()),
                Some(command) = self.commands.recv() => {
                    self.command(command);
                }
            }
        }
    }

    /// Applies a subscription change to its type's state; the request to send on a live stream, if any.
    fn command(&mut self, command: Command) -> Option<DeltaDiscoveryRequest> {
        let Some(subscriber) = self.types.get_mut(command.type_url.as_str()) else {
            warn!(
                type_url = command.type_url,
                "subscription change for a type URL without a handler; ignored"
            );
            return None;
        };
        if command.subscribe {
            subscriber.state.subscribe(command.names)
        } else {
            subscriber.state.unsubscribe(command.names)
        }
    }

    /// Hands a response to its type and returns the ACK or NACK.
    fn respond(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let type_url = response.type_url.clone();
        let nonce = response.nonce.clone();
        let (added, removed) = (response.resources.len(), response.removed_resources.len());
        let Some(subscriber) = self.types.get_mut(type_url.as_str()) else {
            let answer = reject_unknown_type(&response);
            let reason = answer.error_detail.as_ref().map(|s| s.message.as_str());
            warn!(type_url, nonce, reason, "rejected a config update (NACK)");
            return answer;
        };
        let reply = subscriber.state.handle_response(response, subscriber.handler.as_mut());
        match &reply.verdict {
            Verdict::Ack => {
                debug!(
                    type_url,
                    nonce,
                    added,
                    removed,
                    initial = reply.initial,
                    "config update applied (ACK)"
                );
                self.state
                    .send_if_modified(|s| match s.synced.get_mut(type_url.as_str()) {
                        Some(synced) => !std::mem::replace(synced, true),
                        None => false,
                    });
            }
            Verdict::Nack(reason) => {
                warn!(
                    type_url,
                    nonce, added, removed, reason, "rejected a config update (NACK)"
                );
            }
        }
        reply.request
    }
}

/// One subscriber per handler: on demand when its type URL is listed, else wildcard.
fn subscribers(
    handlers: Vec<Box<dyn Handler>>,
    on_demand: &[String],
) -> Result<BTreeMap<&'static str, Subscriber>, XdsError> {
    if handlers.is_empty() {
        return Err(XdsError::NoHandlers);
    }
    let mut types = BTreeMap::new();
    for handler in handlers {
        let type_url = handler.type_url();
        let state = if on_demand.iter().any(|t| t == type_url) {
            DeltaState::on_demand(type_url)
        } else {
            DeltaState::wildcard(type_url)
        };
        if types.insert(type_url, Subscriber { state, handler }).is_some() {
            return Err(XdsError::DuplicateType(type_url.to_string()));
        }
    }
    if let Some(unknown) = on_demand.iter().find(|t| !types.contains_key(t.as_str())) {
        return Err(XdsError::UnknownOnDemand(unknown.clone()));
    }
    Ok(types)
}

/// Queues a request on the stream. The receiver lives as long as the call, and a call that ended is noticed on the
/// response side, so a failed send needs no handling of its own.
fn send(requests: &futures::channel::mpsc::UnboundedSender<DeltaDiscoveryRequest>, request: DeltaDiscoveryRequest) {
    let _ = requests.unbounded_send(request);
}

/// A gRPC status as one line: code, message and the transport causes.
fn status_reason(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text = format!("{text}: {}", error_chain(source));
    }
    text
}

impl fmt::Debug for XdsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdsConfig")
            .field("address", &self.address)
            .field("transport", &self.transport)
            .field("token", &"<redacted>")
            .field("node_name", &self.node_name)
            .field("node_ip", &self.node_ip)
            .field("on_demand", &self.on_demand)
            .finish()
    }
}

// === impl XdsScope ===

impl XdsScope {
    /// The value of [`SCOPE_METADATA`] for this scope.
    pub fn as_str(self) -> &'static str {
        match self {
            XdsScope::All => "all",
            XdsScope::Node => "node",
        }
    }

    /// The scope a node declared: [`SCOPE_METADATA`] as a string, `"node"` or `"all"`; absent is `All`.
    pub fn of(node: &Node) -> Result<Self, String> {
        let field = node.metadata.as_ref().and_then(|m| m.fields.get(SCOPE_METADATA));
        match field.map(|value| &value.kind) {
            None => Ok(XdsScope::All),
            Some(Some(Kind::StringValue(text))) => text.parse(),
            Some(_) => Err(format!("node.metadata.{SCOPE_METADATA}: not a string")),
        }
    }
}

impl std::str::FromStr for XdsScope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "all" => Ok(XdsScope::All),
            "node" => Ok(XdsScope::Node),
            other => Err(format!(
                "node.metadata.{SCOPE_METADATA}: {other:?} is not a scope (\"node\" or \"all\")"
            )),
        }
    }
}

impl fmt::Display for XdsScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl ConnectionState ===

impl ConnectionState {
    /// Every type URL is synced: the node proxy has its first configuration and may report ready.
    pub fn is_synced(&self) -> bool {
        self.synced.values().all(|synced| *synced)
    }
}

// === impl XdsHandle ===

impl XdsHandle {
    /// Subscribes an on-demand type URL to `names` (resource names or aliases such as `<network>/<IP>`): sent at
    /// once on a live stream, and part of every initial request after a reconnect. Wildcard types already receive
    /// everything, so nothing is sent for them; an unknown type URL is logged and ignored. The resources arrive
    /// through the type's handler.
    pub fn subscribe(&self, type_url: &str, names: Vec<String>) -> Result<(), ClientStopped> {
        self.change(type_url, names, true)
    }

    /// Ends on-demand subscriptions (see [`DeltaState::unsubscribe`]).
    pub fn unsubscribe(&self, type_url: &str, names: Vec<String>) -> Result<(), ClientStopped> {
        self.change(type_url, names, false)
    }

    fn change(&self, type_url: &str, names: Vec<String>, subscribe: bool) -> Result<(), ClientStopped> {
        let command = Command {
            type_url: type_url.to_string(),
            names,
            subscribe,
        };
        self.commands.send(command).map_err(|_| ClientStopped)
    }
}

// === impl Backoff ===

impl Backoff {
    fn new() -> Self {
        Self { next: INITIAL_BACKOFF }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(MAX_BACKOFF);
        delay
    }

    fn reset(&mut self) {
        self.next = INITIAL_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_fifteen_seconds_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..13).map(|_| backoff.next_delay().as_millis()).collect();
        let expected = [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 15000, 15000];
        assert_eq!(delays, expected);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(10));
    }

    #[test]
    fn node_ids_and_metadata() {
        let text = |node: &Node, key: &str| match &node.metadata.as_ref().unwrap().fields.get(key)?.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        };
        let known = node("node-1", Some("172.31.0.2".parse().unwrap()));
        assert_eq!(
            known.id,
            "ztunnel~172.31.0.2~node-1.ambit-system~ambit-system.svc.cluster.local"
        );
        assert_eq!(text(&known, "NODE_NAME").as_deref(), Some("node-1"));
        assert_eq!(text(&known, "NAME").as_deref(), Some("node-1"));
        assert_eq!(text(&known, "NAMESPACE").as_deref(), Some("ambit-system"));
        assert_eq!(text(&known, "INSTANCE_IPS").as_deref(), Some("172.31.0.2"));

        let unknown = node("node-2", None);
        assert_eq!(
            unknown.id,
            "ztunnel~0.0.0.0~node-2.ambit-system~ambit-system.svc.cluster.local"
        );
        assert_eq!(text(&unknown, "INSTANCE_IPS"), None);
    }

    fn config(on_demand: &[&str]) -> XdsConfig {
        XdsConfig {
            address: "127.0.0.1:15012".into(),
            transport: Transport::Plaintext,
            token: "t".into(),
            node_name: "node-1".into(),
            node_ip: None,
            on_demand: on_demand.iter().map(|s| s.to_string()).collect(),
        }
    }

    struct Nothing(&'static str);

    impl Handler for Nothing {
        fn type_url(&self) -> &'static str {
            self.0
        }

        fn apply(&mut self, _: super::super::Update) -> Result<(), Vec<super::super::Rejection>> {
            Ok(())
        }
    }

    #[test]
    fn configuration_errors() {
        let handlers = |urls: &[&'static str]| -> Vec<Box<dyn Handler>> {
            urls.iter().map(|u| Box::new(Nothing(u)) as Box<dyn Handler>).collect()
        };
        let error = |config, urls| XdsClient::new(config, handlers(urls)).err().map(|e| e.to_string());
        assert_eq!(error(config(&[]), &["a"]), None);
        assert_eq!(error(config(&["a"]), &["a", "b"]), None);
        assert_eq!(
            error(config(&[]), &[]).as_deref(),
            Some("no handlers: the stream would carry nothing")
        );
        assert_eq!(
            error(config(&[]), &["a", "a"]).as_deref(),
            Some("two handlers for type URL a")
        );
        assert_eq!(
            error(config(&["c"]), &["a"]).as_deref(),
            Some("on-demand type URL c has no handler")
        );
        let bad_token = XdsConfig {
            token: "line\nbreak".into(),
            ..config(&[])
        };
        assert!(matches!(
            XdsClient::new(bad_token, handlers(&["a"])),
            Err(XdsError::Token)
        ));
        let bad_address = XdsConfig {
            address: "not an address".into(),
            ..config(&[])
        };
        assert!(matches!(
            XdsClient::new(bad_address, handlers(&["a"])),
            Err(XdsError::Address(_))
        ));
    }

    #[test]
    fn the_node_scope_is_declared_in_the_metadata_and_scopes_the_address_type() {
        let address_types = |on_demand: &[&str]| {
            let handlers: Vec<Box<dyn Handler>> = vec![
                Box::new(Nothing(WORKLOAD_ADDRESS_TYPE_URL)),
                Box::new(Nothing("type.googleapis.com/istio.security.Authorization")),
            ];
            XdsClient::new(config(on_demand), handlers).unwrap()
        };
        let text = |node: &Node| match &node.metadata.as_ref()?.fields.get(SCOPE_METADATA)?.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        };
        let subscription = |client: &XdsClient, type_url: &str| client.types[type_url].state.subscription().clone();
        // (case, client, metadata, the Address subscription, synced from the start)
        let cases = [
            (
                "all: unchanged",
                address_types(&[]).with_scope(XdsScope::All),
                None,
                Subscription::Wildcard,
            ),
            (
                "node: declared, Address node-scoped",
                address_types(&[]).with_scope(XdsScope::Node),
                Some("node"),
                Subscription::NodeScoped(Default::default()),
            ),
            (
                "node with Address on demand: stays on demand",
                address_types(&[WORKLOAD_ADDRESS_TYPE_URL]).with_scope(XdsScope::Node),
                Some("node"),
                Subscription::Names(Default::default()),
            ),
        ];
        for (case, client, metadata, address) in cases {
            assert_eq!(text(client.node()).as_deref(), metadata, "{case}");
            assert_eq!(
                text(client.node()).map(|s| s.parse()),
                metadata.map(|_| Ok(XdsScope::Node)),
                "{case}"
            );
            assert_eq!(
                XdsScope::of(client.node()),
                Ok(metadata.map_or(XdsScope::All, |_| XdsScope::Node)),
                "{case}"
            );
            assert_eq!(subscription(&client, WORKLOAD_ADDRESS_TYPE_URL), address, "{case}");
            let policies = subscription(&client, "type.googleapis.com/istio.security.Authorization");
            assert_eq!(policies, Subscription::Wildcard, "{case}: policies stay wildcard");
            let synced = client.state().borrow().synced[WORKLOAD_ADDRESS_TYPE_URL];
            assert_eq!(synced, matches!(address, Subscription::Names(_)), "{case}");
        }
    }

    #[test]
    fn scopes_parse_from_node_metadata() {
        let with = |value: Option<Kind>| {
            let mut node = node("node-1", None);
            if let Some(kind) = value {
                let fields = &mut node.metadata.as_mut().unwrap().fields;
                fields.insert(SCOPE_METADATA.to_string(), Value { kind: Some(kind) });
            }
            XdsScope::of(&node)
        };
        let string = |s: &str| Some(Kind::StringValue(s.to_string()));
        assert_eq!(with(None), Ok(XdsScope::All));
        assert_eq!(with(string("all")), Ok(XdsScope::All));
        assert_eq!(with(string("node")), Ok(XdsScope::Node));
        let bad = with(string("cluster")).unwrap_err();
        assert!(bad.contains("AMBIT_XDS_SCOPE") && bad.contains("\"cluster\""), "{bad}");
        let bad = with(Some(Kind::BoolValue(true))).unwrap_err();
        assert!(bad.contains("AMBIT_XDS_SCOPE") && bad.contains("not a string"), "{bad}");
        assert_eq!(XdsScope::of(&Node::default()), Ok(XdsScope::All));
    }

    #[test]
    fn on_demand_types_start_synced() {
        let handlers: Vec<Box<dyn Handler>> = vec![Box::new(Nothing("a")), Box::new(Nothing("b"))];
        let client = XdsClient::new(config(&["b"]), handlers).unwrap();
        let state = client.state().borrow().clone();
        assert_eq!(state.synced, [("a", false), ("b", true)].into());
        assert!(!state.connected && !state.is_synced());
    }
}

//! `envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources`: authenticates the caller's node
//! like the CA does (bearer token), then runs one task per stream that answers requests and sends each new snapshot
//! of the [`ResourceStore`] as a delta.
//!
//! Every authenticated node is served every resource, as istiod does without on-demand, unless its first request's
//! `Node` asks for the node scope (metadata `AMBIT_XDS_SCOPE=node`, with `NODE_NAME`): then its addresses are its
//! node's workloads, every service and what it looks up (see [`super::stream`]). A stream's responses go through a small bounded
//! channel: a slow client holds up only its own task, which then stops reading its requests until the client
//! catches up. Streams end when the client closes them or the server shuts down (`UNAVAILABLE`, so the client
//! reconnects elsewhere or later).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ambit_api::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use ambit_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use super::resources::{ResourceStore, Resources};
use super::stream::{Reply, Scope, StreamState, scope_of};
use crate::ca::auth::Authenticator;

/// Responses queued per stream before its task waits for the client.
const RESPONSE_BUFFER: usize = 16;

/// The delta ADS service.
pub struct AdsService<A> {
    authenticator: A,
    resources: watch::Receiver<Arc<Resources>>,
    closing: watch::Sender<bool>,
}

/// Ends every stream of an [`AdsService`]; the server fires it when it shuts down (long-lived streams would otherwise
/// hold the drain open until its deadline).
#[derive(Clone, Debug)]
pub struct StreamCloser(watch::Sender<bool>);

/// The responses of one stream, as the generated server sends them.
#[derive(Debug)]
pub struct ResponseStream(mpsc::Receiver<Result<DeltaDiscoveryResponse, Status>>);

/// The task of one stream.
struct StreamDriver {
    /// The node the caller authenticated as.
    caller: String,
    requests: Streaming<DeltaDiscoveryRequest>,
    resources: watch::Receiver<Arc<Resources>>,
    closing: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    state: StreamState,
}

/// Why a stream ended.
#[derive(Debug)]
enum End {
    ClientClosed,
    ClientGone,
    Failed(Status),
    Shutdown,
}

// === impl AdsService ===

impl<A: Authenticator> AdsService<A> {
    /// Serves the snapshots of `store` to callers that `authenticator` accepts.
    pub fn new(store: &ResourceStore, authenticator: A) -> Self {
        let (closing, _) = watch::channel(false);
        Self {
            authenticator,
            resources: store.subscribe(),
            closing,
        }
    }

    /// The handle that ends every stream, present and future.
    pub fn closer(&self) -> StreamCloser {
        StreamCloser(self.closing.clone())
    }
}

#[tonic::async_trait]
impl<A: Authenticator> AggregatedDiscoveryService for AdsService<A> {
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let peer = request.remote_addr();
        let caller = match self.authenticator.authenticate(request.metadata()).await {
            Ok(caller) => caller,
            Err(e) => {
                tracing::warn!(?peer, error = %e, "xDS stream refused");
                return Err(Status::unauthenticated(e.to_string()));
            }
        };
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let driver = StreamDriver {
            caller: caller.node,
            requests: request.into_inner(),
            resources: self.resources.clone(),
            closing: self.closing.subscribe(),
            tx,
            state: StreamState::new(),
        };
        tokio::spawn(driver.run());
        Ok(Response::new(ResponseStream(rx)))
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientClosed => f.write_str("closed by the client"),
            End::ClientGone => f.write_str("the client went away"),
            End::Failed(status) => write!(f, "the request stream failed: {status}"),
            End::Shutdown => f.write_str("the control plane is shutting down"),
        }
    }
}

// === impl StreamCloser ===

impl StreamCloser {
    /// Ends every open stream with `UNAVAILABLE` and every later one at once.
    pub fn close(&self) {
        self.0.send_replace(true);
    }
}

// === impl ResponseStream ===

impl Stream for ResponseStream {
    type Item = Result<DeltaDiscoveryResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

// === impl StreamDriver ===

impl StreamDriver {
    async fn run(mut self) {
        tracing::info!(node = %self.caller, "xDS stream opened");
        let Err(end) = self.serve().await;
        if let End::Shutdown = end {
            // Best effort: a client too slow to take it learns of the shutdown from the end of the stream.
            let _ = (self.tx).try_send(Err(Status::unavailable("the control plane is shutting down")));
        }
        let xds_node = self.state.node_id().unwrap_or_default();
        tracing::info!(node = %self.caller, xds_node, reason = %end, "xDS stream closed");
    }

    async fn serve(&mut self) -> Result<Infallible, End> {
        // Nothing is answered before the first snapshot is published: an empty answer from a control plane that
        // is still loading would tell a reconnecting node proxy that every workload and policy is gone.
        tokio::select! {
            () = closed(&mut self.closing) => return Err(End::Shutdown),
            () = self.tx.closed() => return Err(End::ClientGone),
            loaded = self.resources.wait_for(|resources| resources.generation() > 0) => {
                if loaded.is_err() {
                    return Err(End::Shutdown);
                }
            }
        }
        // Each type's first request is answered from the snapshot current then; only later ones need a wake-up.
        self.resources.mark_unchanged();
        loop {
            tokio::select! {
                () = closed(&mut self.closing) => return Err(End::Shutdown),
                () = self.tx.closed() => return Err(End::ClientGone),
                message = self.requests.message() => match message {
                    Ok(Some(request)) => self.on_request(request).await?,
                    Ok(None) => return Err(End::ClientClosed),
                    Err(status) => return Err(End::Failed(status)),
                },
                changed = self.resources.changed() => {
                    if changed.is_err() {
                        // The store is gone: the control plane is stopping.
                        return Err(End::Shutdown);
                    }
                    let snapshot = self.resources.borrow_and_update().clone();
                    for response in self.state.respond_all(&snapshot) {
                        self.send(response).await?;
                    }
                }
            }
        }
    }

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), End> {
        let type_url = request.type_url.as_str();
        if type_url.is_empty() {
            tracing::debug!(node = %self.caller, "xDS request without a type URL ignored");
            return Ok(());
        }
        if self.state.scope().is_none() {
            self.state.set_scope(self.scope(&request));
        }
        let outcome = self.state.on_request(&request);
        let (node, xds_node) = (&self.caller, self.state.node_id().unwrap_or_default());
        let (kind, nonce) = (short_type(type_url), &request.response_nonce);
        match outcome.reply {
            Some(Reply::Nack { reason }) => {
                tracing::warn!(%node, xds_node, kind, nonce, reason, "xDS resources refused (NACK)");
            }
            Some(Reply::Ack) => tracing::debug!(%node, kind, nonce, "xDS ACK"),
            Some(Reply::Stale) => tracing::debug!(%node, kind, nonce, "xDS reply to an unknown nonce ignored"),
            None => {}
        }
        if outcome.respond {
            let snapshot = self.resources.borrow().clone();
            // A large answer comes in several responses (see `stream::MAX_RESOURCES_PER_RESPONSE`).
            while let Some(response) = self.state.respond(type_url, &snapshot) {
                self.send(response).await?;
            }
        }
        Ok(())
    }

    /// The scope the stream's first request declares; an invalid declaration is logged and served as
    /// [`Scope::All`] (everything, as istiod would).
    fn scope(&self, request: &DeltaDiscoveryRequest) -> Scope {
        let node = &self.caller;
        let Some(declared) = request.node.as_ref() else {
            return Scope::All;
        };
        match scope_of(declared) {
            Ok(Scope::Node(name)) => {
                if &name != node {
                    tracing::warn!(%node, scoped_to = name, "xDS stream scoped to another node than its token's");
                }
                tracing::info!(%node, scope = "node", "xDS stream scoped to its node");
                Scope::Node(name)
            }
            Ok(Scope::All) => Scope::All,
            Err(reason) => {
                tracing::warn!(%node, reason, "invalid xDS scope; serving every address");
                Scope::All
            }
        }
    }

    /// Queues `response`, waiting while the client is behind (but not past a shutdown).
    async fn send(&mut self, response: DeltaDiscoveryResponse) -> Result<(), End> {
        tracing::debug!(
            node = %self.caller,
            kind = short_type(&response.type_url),
            nonce = response.nonce,
            resources = response.resources.len(),
            removed = response.removed_resources.len(),
            "xDS response"
        );
        tokio::select! {
            sent = self.tx.send(Ok(response)) => sent.map_err(|_| End::ClientGone),
            () = closed(&mut self.closing) => Err(End::Shutdown),
        }
    }
}

/// Completes once `closing` turns true or its sender is gone (the service was dropped).
async fn closed(closing: &mut watch::Receiver<bool>) {
    while !*closing.borrow_and_update() {
        if closing.changed().await.is_err() {
            return;
        }
    }
}

/// `istio.workload.Address` for `type.googleapis.com/istio.workload.Address`.
fn short_type(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

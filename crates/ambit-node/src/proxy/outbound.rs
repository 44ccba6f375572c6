//! Outbound for one local pod: original destination, plan, HBONE or passthrough, telemetry.
//!
//! [`OutboundProxy::serve`] accepts the pod's captured connections and runs each on its own task, and nothing else:
//! the plan, the certificate, the CONNECT through the pod's [`HbonePool`] (ambient §1.3, §1.5) and the copy in both
//! directions all happen on the accepting task. Every connection is reported with `reporter="source"` through a
//! [`ConnectionResult`] (ambient §6.1, §6.2), failures included.
//!
//! In the node scope (with [`Lookups`]) a destination the snapshot may lack (a service's endpoints, an unknown IP,
//! a waypoint's pods) is looked up first, as [`outbound_decision`] says; the connection waits for the answer (at
//! most [`LOOKUP_WAIT`](crate::state::xds::LOOKUP_WAIT)), then is planned again with the new snapshot, which may
//! name one more key (the waypoint of a pod IP that was unknown), up to [`MAX_LOOKUPS`] keys.
//!
//! A plan through a waypoint is an HBONE plan like any other: the tunnel goes to the waypoint pod (its identity
//! expected, its own pool connection), the authority is the original destination, and telemetry names the
//! addressed service with the waypoint pod as the destination workload.

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use ambit_hbone::drain::DrainWatch;
use ambit_hbone::{Authority, ConnectError, ConnectHeaders, DialError, Dialer, HbonePool, PoolKey, TraceParent};
use ambit_identity::cert::{TrustBundle, WorkloadCertificate};
use ambit_identity::manager::{CertificateManager, ManagerError};
use ambit_identity::tls::{self, TlsError};
use ambit_telemetry::{
    ConnectionAddrs, ConnectionContext, ConnectionResult, Direction, Reporter, ResponseFlags, TcpMetrics,
    log_connection_failed,
};
use ambit_types::Identity;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use super::{service_info, workload_info};
use crate::state::select::{BoundDestination, OutboundDecision, outbound_decision};
use crate::state::xds::Lookups;
use crate::state::{FastRandom, OutboundPlan, PlanError, Snapshot, Workload, WorkloadUid};

/// Buffer size of each copy direction.
const COPY_BUFFER: usize = 64 * 1024;
/// Client configurations cached per certificate; beyond this many destination identity sets the cache restarts.
const MAX_CACHED_CONFIGS: usize = 1024;
/// The most keys one connection looks up in turn: an unknown pod IP's alias, then its waypoint's service.
pub const MAX_LOOKUPS: usize = 2;

/// Where the local pod's certificate comes from: the node's [`CertificateManager`], or a fixed one in tests.
pub trait CertSource: Send + Sync + 'static {
    type Error: Error + Send + Sync + 'static;

    /// A valid certificate for `id`.
    fn certificate(&self, id: &Identity) -> impl Future<Output = Result<WorkloadCertificate, Self::Error>> + Send;
}

/// Always the same certificate, whatever identity is asked for.
#[derive(Clone, Debug)]
pub struct FixedCert(pub WorkloadCertificate);

/// The destination a captured connection had before the redirect.
pub trait OriginalDst: Send + Sync + 'static {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr>;
}

/// SO_ORIGINAL_DST, as the in-pod REDIRECT rules leave it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SoOriginalDst;

/// Every connection had this destination (tests).
#[derive(Clone, Copy, Debug)]
pub struct FixedOriginalDst(pub SocketAddr);

/// Connects from inside the pod's network namespace, with the proxy's mark so the pod's rules do not capture the
/// connection again. Used both for the HBONE pool and for passthrough.
#[derive(Clone, Debug)]
pub struct PodDialer {
    pub netns: super::netns::PodNetns,
    pub mark: u32,
    /// Sockets made ahead of time in the pod's namespace (see [`PodAppConnector`](super::inbound::PodAppConnector)).
    pub sockets: Option<Arc<ambit_netns::SocketFactory>>,
}

/// Why an outbound connection failed; recorded in the access log and the failed counter.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("the local workload {0} is not in the current snapshot")]
    UnknownLocal(WorkloadUid),
    #[error("no outbound plan")]
    Plan(#[source] PlanError),
    #[error("no certificate for {identity}")]
    Certificate {
        identity: Identity,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    #[error("building the HBONE client configuration failed")]
    Tls(#[source] TlsError),
    #[error("opening the HBONE tunnel failed")]
    Connect(#[source] ConnectError),
    #[error("connecting to {0} failed")]
    Passthrough(SocketAddr, #[source] io::Error),
    #[error("copying between the client and the upstream failed")]
    Copy(#[source] io::Error),
}

/// The outbound proxy of one local pod. See the module documentation.
pub struct OutboundProxy<C, O, D> {
    inner: Arc<Inner<C, O, D>>,
}

struct Inner<C, O, D> {
    local: WorkloadUid,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    certs: C,
    bundle: watch::Receiver<TrustBundle>,
    pool: HbonePool<D>,
    dialer: D,
    metrics: Arc<TcpMetrics>,
    original_dst: O,
    tls_cache: Mutex<TlsCache>,
    /// On-demand lookups, in the node scope.
    lookups: Option<Lookups>,
}

/// Client configurations for one certificate and bundle, per set of expected server identities.
#[derive(Default)]
struct TlsCache {
    serial: String,
    bundle: Option<TrustBundle>,
    configs: HashMap<Vec<Identity>, Arc<rustls::ClientConfig>>,
}

/// What a decision over one snapshot came to: a route (or why there is none), or a key to look up first.
// Built once per connection and moved out at once: boxing the large variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Step {
    Ready(Prepared),
    Lookup(String),
}

/// What the plan decided (or why there is none), with the telemetry context known so far; taken out of the
/// snapshot so that it is not held during the copy.
struct Prepared {
    ctx: ConnectionContext,
    route: Result<Route, OutboundError>,
}

enum Route {
    Hbone {
        source: Identity,
        next_hop: SocketAddr,
        authority: SocketAddr,
        expected: Vec<Identity>,
        host: Option<String>,
        baggage: String,
    },
    Passthrough {
        destination: SocketAddr,
    },
}

/// A client stream that records its bytes on the connection's result as they flow: bytes read from the client are
/// sent by the source workload, bytes written to it are received.
struct Counted<'a> {
    stream: &'a mut TcpStream,
    result: &'a ConnectionResult,
}

// === impl CertSource ===

impl CertSource for CertificateManager {
    type Error = ManagerError;

    fn certificate(&self, id: &Identity) -> impl Future<Output = Result<WorkloadCertificate, Self::Error>> + Send {
        self.fetch(id)
    }
}

impl CertSource for FixedCert {
    type Error = Infallible;

    async fn certificate(&self, _id: &Identity) -> Result<WorkloadCertificate, Self::Error> {
        Ok(self.0.clone())
    }
}

// === impl OriginalDst ===

impl OriginalDst for SoOriginalDst {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        ambit_netns::original_dst(stream)
    }
}

impl OriginalDst for FixedOriginalDst {
    fn original_dst(&self, _stream: &TcpStream) -> io::Result<SocketAddr> {
        Ok(self.0)
    }
}

// === impl PodDialer ===

impl Dialer for PodDialer {
    async fn dial(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let opts = ambit_netns::ConnectOptions {
            mark: Some(self.mark),
            ..Default::default()
        };
        let ready = self.sockets.as_ref().and_then(|sockets| sockets.take(addr, opts));
        let socket = match ready {
            Some(Ok(socket)) => socket.into(),
            _ => {
                let netns = self.netns.clone();
                tokio::task::spawn_blocking(move || netns.connect_socket(addr, opts))
                    .await
                    .map_err(io::Error::other)??
            }
        };
        let socket = TcpSocket::from_std_stream(socket);
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

// === impl OutboundError ===

impl OutboundError {
    /// The response flags reported for this failure.
    pub fn response_flags(&self) -> ResponseFlags {
        match self {
            OutboundError::UnknownLocal(_) | OutboundError::Certificate { .. } => ResponseFlags::IdentityError,
            OutboundError::Tls(_) => ResponseFlags::TlsFailure,
            OutboundError::Connect(error) => connect_flags(error),
            OutboundError::Plan(_) | OutboundError::Passthrough(..) => ResponseFlags::Connect,
            OutboundError::Copy(_) => ResponseFlags::None,
        }
    }
}

fn connect_flags(error: &ConnectError) -> ResponseFlags {
    match error {
        ConnectError::Dial(dial) => match **dial {
            DialError::Tls(_) => ResponseFlags::TlsFailure,
            DialError::Handshake(_) => ResponseFlags::H2HandshakeFailure,
            DialError::Connect(_) | DialError::Timeout(_) | DialError::Aborted => ResponseFlags::Connect,
        },
        ConnectError::Status(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => ResponseFlags::Deny,
        _ => ResponseFlags::Connect,
    }
}

// === impl OutboundProxy ===

impl<C, O, D> Clone for OutboundProxy<C, O, D> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: CertSource, O: OriginalDst, D: Dialer + Clone> OutboundProxy<C, O, D> {
    /// The proxy of pod `local`. `dialer` opens both the HBONE connections of the pod's own pool and passthrough
    /// connections. With `lookups` (the node scope) missing addresses are looked up before planning.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        local: WorkloadUid,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        certs: C,
        bundle: watch::Receiver<TrustBundle>,
        pool_settings: ambit_hbone::PoolSettings,
        dialer: D,
        metrics: Arc<TcpMetrics>,
        original_dst: O,
        lookups: Option<Lookups>,
    ) -> Self {
        let pool = HbonePool::with_dialer(pool_settings, dialer.clone());
        let inner = Inner {
            local,
            snapshot,
            certs,
            bundle,
            pool,
            dialer,
            metrics,
            original_dst,
            tls_cache: Mutex::new(TlsCache::default()),
            lookups,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The pod's HBONE pool.
    pub fn pool(&self) -> &HbonePool<D> {
        &self.inner.pool
    }

    /// Accepts captured connections until draining starts, each handled on its own task that holds `drain` until
    /// the connection ends; a connection still open at the drain deadline is closed.
    pub async fn serve(self, listener: TcpListener, drain: DrainWatch) {
        let pod = self.inner.local.clone();
        super::serve_until_drained(listener, drain, "outbound", |stream, peer| {
            let proxy = self.clone();
            let span = tracing::debug_span!("outbound", %pod, %peer);
            Some((async move { proxy.handle(stream).await }, span))
        })
        .await;
    }

    /// Carries one captured connection to its destination, then records it. Failures close the client connection.
    pub async fn handle(&self, mut client: TcpStream) {
        let unspecified = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let src = client.peer_addr().unwrap_or(unspecified);
        let dst = match self.inner.original_dst.original_dst(&client) {
            Ok(dst) => dst,
            Err(error) => {
                let local = client.local_addr().unwrap_or(unspecified);
                log_connection_failed(src, local, Direction::Outbound, &error);
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let Prepared { ctx, route } = self.decide(dst).await;
        let route = match route {
            Ok(route) => route,
            Err(error) => {
                let addrs = ConnectionAddrs { src, dst, hbone: None };
                let mut result = ConnectionResult::open(&self.inner.metrics, &ctx, addrs);
                result.fail(&error, error.response_flags());
                result.finish();
                return;
            }
        };
        match route {
            Route::Hbone {
                source,
                next_hop,
                authority,
                expected,
                host,
                baggage,
            } => {
                let hbone = Some(authority.to_string());
                let addrs = ConnectionAddrs {
                    src,
                    dst: next_hop,
                    hbone,
                };
                let key = PoolKey {
                    source,
                    destination_identities: expected,
                    destination: next_hop,
                };
                let headers = ConnectHeaders {
                    forwarded_for: Some(src),
                    forwarded_host: host,
                    baggage: Some(baggage),
                    traceparent: Some(new_traceparent()),
                    ..ConnectHeaders::default()
                };
                // The result opens once the tunnel is up, so that it reports the identity the server proved (one
                // of the expected ones); its duration still counts from here.
                let start = std::time::Instant::now();
                let tunnel = self.open_tunnel(&key, authority, &headers).await;
                let mut ctx = ctx;
                if let Some(peer) = tunnel.as_ref().ok().and_then(|upstream| upstream.peer_identity()) {
                    ctx.destination_principal = Some(peer.clone());
                }
                let mut result = ConnectionResult::open_at(&self.inner.metrics, &ctx, addrs, start);
                match tunnel {
                    Ok(mut upstream) => relay_tunnel(&mut client, &mut upstream, &mut result).await,
                    Err(error) => result.fail(&error, error.response_flags()),
                }
                result.finish();
            }
            Route::Passthrough { destination } => {
                let addrs = ConnectionAddrs {
                    src,
                    dst: destination,
                    hbone: None,
                };
                let mut result = ConnectionResult::open(&self.inner.metrics, &ctx, addrs);
                match self.inner.dialer.dial(destination).await {
                    Ok(mut upstream) => relay(&mut client, &mut upstream, &mut result).await,
                    Err(error) => {
                        let error = OutboundError::Passthrough(destination, error);
                        result.fail(&error, error.response_flags());
                    }
                }
                result.finish();
            }
        }
    }

    /// The plan for `dst` from the current snapshot; in the node scope, after looking up what it lacks (each key
    /// once, at most [`MAX_LOOKUPS`]: what the answers still leave out is planned as the snapshot stands).
    async fn decide(&self, dst: SocketAddr) -> Prepared {
        super::local_known(&self.inner.snapshot, &self.inner.local).await;
        let Some(lookups) = &self.inner.lookups else {
            let snapshot = Arc::clone(&self.inner.snapshot.borrow());
            return self.prepare(&snapshot, dst, |_| true);
        };
        let mut fetched: Vec<String> = Vec::new();
        while fetched.len() < MAX_LOOKUPS {
            let step = {
                let snapshot = Arc::clone(&self.inner.snapshot.borrow());
                self.step(&snapshot, dst, |key| {
                    lookups.answered(key) || fetched.iter().any(|k| k == key)
                })
            };
            let key = match step {
                Step::Ready(prepared) => return prepared,
                Step::Lookup(key) => key,
            };
            let answered = lookups.fetch(&key).await;
            debug!(key, answered, "looked up the destination");
            fetched.push(key);
        }
        let snapshot = Arc::clone(&self.inner.snapshot.borrow());
        self.prepare(&snapshot, dst, |_| true)
    }

    /// [`Self::step`] when nothing may be looked up any more.
    fn prepare(&self, snapshot: &Snapshot, dst: SocketAddr, looked_up: impl Fn(&str) -> bool) -> Prepared {
        match self.step(snapshot, dst, looked_up) {
            Step::Ready(prepared) => prepared,
            // `looked_up` said every key was, so the decision is always a plan; answer as for an unknown address.
            Step::Lookup(_) => self.unplanned(snapshot, dst),
        }
    }

    /// A passthrough to `dst`, for a destination nothing is known of.
    fn unplanned(&self, snapshot: &Snapshot, dst: SocketAddr) -> Prepared {
        let mut ctx = ConnectionContext::new(Reporter::Source);
        ctx.source = snapshot.workload(&self.inner.local).map(workload_info);
        let route = Ok(Route::Passthrough { destination: dst });
        Prepared { ctx, route }
    }

    /// The plan and the telemetry context from `snapshot`, or the key to look up first (see
    /// [`outbound_decision`]).
    fn step(&self, snapshot: &Snapshot, dst: SocketAddr, looked_up: impl Fn(&str) -> bool) -> Step {
        let mut ctx = ConnectionContext::new(Reporter::Source);
        let Some(local) = snapshot.workload(&self.inner.local) else {
            let route = Err(OutboundError::UnknownLocal(self.inner.local.clone()));
            return Step::Ready(Prepared { ctx, route });
        };
        ctx.source = Some(workload_info(local));
        let decision = outbound_decision(snapshot, local, dst, looked_up, &mut FastRandom::new());
        let plan = match decision {
            OutboundDecision::Lookup(key) => return Step::Lookup(key),
            OutboundDecision::Plan(plan) => plan,
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(error) => {
                match &error {
                    PlanError::NoHealthyEndpoint { service, .. }
                    | PlanError::UnknownServicePort { service, .. }
                    | PlanError::WaypointUnavailable {
                        destination: BoundDestination::Service(service),
                        ..
                    } => ctx.destination_service = service_info(snapshot, service),
                    PlanError::WaypointUnavailable {
                        destination: BoundDestination::Workload(uid),
                        ..
                    } => ctx.destination = snapshot.workload(uid).map(workload_info),
                }
                let route = Err(OutboundError::Plan(error));
                return Step::Ready(Prepared { ctx, route });
            }
        };
        let route = match plan {
            OutboundPlan::Hbone {
                next_hop,
                authority,
                expected_identities,
                destination_workload_uid,
                service,
                waypoint,
            } => {
                if let Some(waypoint) = waypoint {
                    debug!(%waypoint, %next_hop, %authority, "through the destination's waypoint");
                }
                let source = local.identity();
                ctx.mtls = true;
                ctx.source_principal = Some(source.clone());
                ctx.destination_principal = expected_identities.first().cloned();
                ctx.destination = snapshot.workload(&destination_workload_uid).map(workload_info);
                ctx.destination_service = service.as_ref().and_then(|key| service_info(snapshot, key));
                let host = service.map(|key| key.hostname.as_str().to_owned());
                Route::Hbone {
                    source,
                    next_hop,
                    authority,
                    expected: expected_identities,
                    host,
                    baggage: baggage(local),
                }
            }
            OutboundPlan::Passthrough {
                destination,
                workload,
                service,
            } => {
                ctx.destination = workload.and_then(|uid| snapshot.workload(&uid).map(workload_info));
                ctx.destination_service = service.as_ref().and_then(|key| service_info(snapshot, key));
                Route::Passthrough { destination }
            }
        };
        Step::Ready(Prepared { ctx, route: Ok(route) })
    }

    /// The pod's certificate, its client configuration for `key`, then the CONNECT through the pool.
    async fn open_tunnel(
        &self,
        key: &PoolKey,
        authority: SocketAddr,
        headers: &ConnectHeaders,
    ) -> Result<ambit_hbone::HboneStream, OutboundError> {
        let cert = self
            .inner
            .certs
            .certificate(&key.source)
            .await
            .map_err(|source| OutboundError::Certificate {
                identity: key.source.clone(),
                source: Box::new(source),
            })?;
        let tls = self.client_config(&cert, &key.destination_identities)?;
        let authority = Authority::Addr(authority);
        let pool = &self.inner.pool;
        let result = match pool.connect(key, &tls, &authority, headers).await {
            // The failed connection is out of the pool by now, so the retry goes to another one (usually new).
            Err(error) if server_went_away(&error) => {
                debug!(
                    ?error,
                    "the server's connection went away before answering; retrying once"
                );
                pool.connect(key, &tls, &authority, headers).await
            }
            result => result,
        };
        result.map_err(OutboundError::Connect)
    }

    /// The client configuration presenting `cert` and expecting `expected`, built once per certificate serial,
    /// trust bundle and identity set.
    fn client_config(
        &self,
        cert: &WorkloadCertificate,
        expected: &[Identity],
    ) -> Result<Arc<rustls::ClientConfig>, OutboundError> {
        let bundle = self.inner.bundle.borrow();
        let mut cache = self.inner.tls_cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.serial != cert.serial() || cache.bundle.as_ref() != Some(&*bundle) {
            cache.serial = cert.serial().to_owned();
            cache.bundle = Some(bundle.clone());
            cache.configs.clear();
        }
        if let Some(config) = cache.configs.get(expected) {
            return Ok(Arc::clone(config));
        }
        let config = tls::client_config(cert, &bundle, expected.to_vec()).map_err(OutboundError::Tls)?;
        if cache.configs.len() >= MAX_CACHED_CONFIGS {
            cache.configs.clear();
        }
        cache.configs.insert(expected.to_vec(), Arc::clone(&config));
        Ok(config)
    }
}

/// Whether a CONNECT failed because the server's connection was going away before it answered: refused unprocessed
/// (GOAWAY, REFUSED_STREAM; the pool already retried those) or the connection closing before the response. Nothing
/// reached the destination's application through that stream (its bytes wait for the 200), so it is safe to send
/// again; a server proxy draining for an upgrade then never fails a client's new connection.
pub(crate) fn server_went_away(error: &ConnectError) -> bool {
    match error {
        ConnectError::Refused(_) => true,
        ConnectError::Stream(error) => error.is_io() || error.is_go_away(),
        _ => false,
    }
}

/// Copies both ways on this task until both sides are done, recording bytes as they flow and the error if any.
async fn relay<U>(client: &mut TcpStream, upstream: &mut U, result: &mut ConnectionResult)
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let outcome = {
        let mut counted = Counted {
            stream: client,
            result: &*result,
        };
        tokio::io::copy_bidirectional_with_sizes(&mut counted, upstream, COPY_BUFFER, COPY_BUFFER).await
    };
    match outcome {
        Ok((sent, received)) => debug!(sent, received, "outbound connection done"),
        Err(error) => result.record_error(&OutboundError::Copy(error)),
    }
}

/// The `baggage` header describing the source workload (ambient §1.3): cluster, namespace, `k8s.<type>.name`,
/// canonical service and revision, and the locality when known. Empty values are left out.
pub fn baggage(workload: &Workload) -> String {
    use crate::state::model::WorkloadType;
    let kind = match workload.workload_type {
        WorkloadType::Deployment => "deployment",
        WorkloadType::Cronjob => "cronjob",
        WorkloadType::Pod => "pod",
        WorkloadType::Job => "job",
    };
    let name = if workload.workload_name.is_empty() {
        &workload.name
    } else {
        &workload.workload_name
    };
    let locality = workload.locality_or_empty();
    let pairs = [
        ("k8s.cluster.name", workload.cluster_id.as_str()),
        ("k8s.namespace.name", workload.namespace.as_str()),
        (&format!("k8s.{kind}.name"), name.as_str()),
        ("service.name", workload.canonical_name.as_str()),
        ("service.version", workload.canonical_revision.as_str()),
        ("cloud.region", locality.region.as_str()),
        ("cloud.availability_zone", locality.zone.as_str()),
    ];
    let present = pairs.iter().filter(|(_, value)| !value.is_empty());
    present
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Relays between the client and its tunnel without an intermediate buffer (see [`ambit_hbone::relay`]),
/// recording bytes as they flow and the error if any.
async fn relay_tunnel(client: &mut TcpStream, upstream: &mut ambit_hbone::HboneStream, result: &mut ConnectionResult) {
    let outcome = {
        let result = &*result;
        ambit_hbone::relay(
            client,
            upstream,
            |n| result.record_sent(n),
            |n| result.record_received(n),
        )
        .await
    };
    match outcome {
        Ok((sent, received)) => debug!(sent, received, "outbound connection done"),
        Err(error) => result.record_error(&OutboundError::Copy(error)),
    }
}

/// A fresh W3C trace context for one connection (ids are never all zero).
fn new_traceparent() -> TraceParent {
    TraceParent {
        trace_id: fastrand::u128(1..),
        parent_id: fastrand::u64(1..),
    }
}

// === impl Counted ===

impl AsyncRead for Counted<'_> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut *self.stream).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            self.result.record_sent(n as u64);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Counted<'_> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut *self.stream).poll_write(cx, buf))?;
        self.result.record_received(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;

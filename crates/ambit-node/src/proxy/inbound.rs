//! Inbound HBONE for one local pod: authority check, L4 authorization, connect to the app, telemetry.
//!
//! [`InboundHandler`] is the [`ConnectHandler`] of the pod's HBONE listener (ambient §1.3–1.4, §4.1, §6):
//!
//! 1. the local workload is looked up in the current snapshot (missing: 503);
//! 2. the authority is validated against it ([`inbound_target`]: 400 on a foreign IP or a self-call port);
//! 3. the connection is authorized against the policies that apply to the pod (deny: 401, `response_flags="DENY"`);
//! 4. the application is connected through the [`AppConnector`] (failure: 503, `response_flags="CONNECT"`);
//! 5. the stream is registered in [`Connections`], so that [`watch_policy`] can close it when a later snapshot no
//!    longer allows it ("connection closed due to policy change").
//!
//! Telemetry is reported with `reporter="destination"`: a [`ConnectionResult`] is opened once the target is known
//! (so denies and connect failures are counted as failed connections with their flags, as ztunnel does), and
//! finished in [`ConnectHandler::completed`]. Refusals before that point are only logged (`connection failed`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ambit_hbone::{ConnectHandler, InboundRequest, Refusal, StreamStats};
use ambit_netns::{ConnectOptions, SocketFactory};
use ambit_policy::{ConnInfo, Decision, Verdict, evaluate};
use ambit_telemetry::{
    ConnectionAddrs, ConnectionContext, ConnectionResult, Direction, Reporter, ResponseFlags, TcpMetrics,
    log_connection_failed,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{debug, info};

use super::netns::PodNetns;
use super::{service_info, workload_info};
use crate::state::xds::Lookups;
use crate::state::{Snapshot, Workload, WorkloadUid, inbound_target, policies_for};

/// The mark on sockets the proxy opens towards local applications, so the pod's redirection rules let them through
/// (ambient §2.4).
pub const INBOUND_MARK: u32 = 0x539;

/// The message logged (and the error reported) when a live connection is closed because policy no longer allows it.
pub const POLICY_CLOSE: &str = "connection closed due to policy change";

/// Connects to the local application on behalf of an inbound tunnel.
pub trait AppConnector: Send + Sync + 'static {
    /// Connects to `app`; `client` is the tunnel's original client, whose IP the connection should come from. The
    /// stream has TCP_NODELAY, as every socket of the proxy: each write is what the client sent in one piece, and
    /// Nagle would hold the second piece of a request back until the application acknowledged the first (up to its
    /// delayed-ACK timeout, 40 ms).
    fn connect(&self, app: SocketAddr, client: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

/// Connects from inside the pod's network namespace, marked with [`INBOUND_MARK`] (or another mark), bound
/// transparently to the client's IP so the application sees the real source address. When the transparent bind is
/// not possible (no CAP_NET_ADMIN, different address family), it connects from the pod's own address instead.
#[derive(Clone, Debug)]
pub struct PodAppConnector {
    pub netns: PodNetns,
    pub mark: u32,
    /// Sockets made ahead of time in the pod's namespace; without one (or when it has none ready), each socket is
    /// made on a thread that enters the namespace.
    pub sockets: Option<Arc<SocketFactory>>,
}

/// A plain `TcpStream::connect` from the current namespace (tests, and hosts without in-pod redirection).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalAppConnector;

/// The live inbound connections of one pod, with the handle that closes each. Cheap to clone; clones share.
#[derive(Clone, Debug, Default)]
pub struct Connections {
    inner: Arc<ConnectionsInner>,
}

#[derive(Debug, Default)]
struct ConnectionsInner {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Tracked>>,
}

#[derive(Clone, Debug)]
struct Tracked {
    conn: ConnInfo,
    close: CancellationToken,
}

/// A connection's place in [`Connections`]; removes it when dropped.
#[derive(Debug)]
struct Registration {
    id: u64,
    connections: Connections,
}

/// The [`ConnectHandler`] of one local pod's HBONE listener. Clones share the live connections.
#[derive(Clone)]
pub struct InboundHandler<C = PodAppConnector> {
    local: WorkloadUid,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    /// On-demand lookups (node-scoped xDS): a plaintext source of another node is looked up to name it.
    lookups: Option<Lookups>,
    root_namespace: String,
    metrics: Arc<TcpMetrics>,
    connector: C,
    connections: Connections,
}

/// The application side of an accepted tunnel: the socket, its telemetry guard and its registration. Reads and
/// writes fail once the connection is closed by a policy change.
pub struct InboundUpstream {
    stream: TcpStream,
    result: ConnectionResult,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    close: CancellationToken,
    _registration: Registration,
}

// === impl PodAppConnector ===

impl PodAppConnector {
    /// A connector for the pod whose namespace is `netns`, with [`INBOUND_MARK`].
    pub fn new(netns: PodNetns) -> Self {
        Self {
            netns,
            mark: INBOUND_MARK,
            sockets: None,
        }
    }

    /// Takes sockets from `sockets` (made in the same namespace) when it has them ready.
    pub fn with_sockets(mut self, sockets: Arc<SocketFactory>) -> Self {
        self.sockets = Some(sockets);
        self
    }
}

impl AppConnector for PodAppConnector {
    async fn connect(&self, app: SocketAddr, client: SocketAddr) -> io::Result<TcpStream> {
        let plain = ConnectOptions {
            mark: Some(self.mark),
            bind: None,
            transparent: false,
        };
        // The client's address, when it can be bound (same family as the app): the app then sees its real peer.
        let transparent = (client.is_ipv4() == app.is_ipv4()).then_some(ConnectOptions {
            bind: Some(SocketAddr::new(client.ip(), 0)),
            transparent: true,
            ..plain
        });
        let ready = self
            .sockets
            .as_ref()
            .and_then(|sockets| sockets.take(app, transparent.unwrap_or(plain)));
        let socket = match ready {
            Some(Ok(socket)) => std::net::TcpStream::from(socket),
            _ => {
                let netns = self.netns.clone();
                // Entering the namespace happens on a dedicated thread that this call waits for: keep it off the
                // runtime.
                tokio::task::spawn_blocking(move || match transparent {
                    None => netns.connect_socket(app, plain),
                    Some(transparent) => netns.connect_socket(app, transparent).or_else(|error| {
                        debug!(%error, %client, "binding to the client's address failed; connecting from the pod's address");
                        netns.connect_socket(app, plain)
                    }),
                })
                .await
                .map_err(io::Error::other)??
            }
        };
        let stream = TcpSocket::from_std_stream(socket).connect(app).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

// === impl LocalAppConnector ===

impl AppConnector for LocalAppConnector {
    async fn connect(&self, app: SocketAddr, _client: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(app).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

// === impl Connections ===

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every live connection that `allowed` rejects; returns how many were closed.
    pub fn close_unless(&self, mut allowed: impl FnMut(&ConnInfo) -> bool) -> usize {
        let live: Vec<Tracked> = self.lock().values().cloned().collect();
        let mut closed = 0;
        for tracked in live {
            if !tracked.close.is_cancelled() && !allowed(&tracked.conn) {
                let conn = &tracked.conn;
                let source = conn.source_identity.as_ref().map(ToString::to_string);
                info!(
                    src.addr = %conn.source_ip,
                    src.identity = source.as_deref(),
                    dst.addr = %SocketAddr::new(conn.destination_ip, conn.destination_port),
                    "{POLICY_CLOSE}"
                );
                tracked.close.cancel();
                closed += 1;
            }
        }
        closed
    }

    fn register(&self, conn: ConnInfo, close: CancellationToken) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Tracked { conn, close });
        Registration {
            id,
            connections: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        // A panic while holding the lock cannot leave the map inconsistent: every operation is a single call.
        self.inner.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

/// Whether `conn` to `local` is allowed by the policies of `snapshot` (false when `local` is gone from it).
pub fn allowed(snapshot: &Snapshot, local: &WorkloadUid, root_namespace: &str, conn: &ConnInfo) -> bool {
    snapshot
        .workload(local)
        .is_some_and(|workload| authorize(snapshot, workload, root_namespace, conn).verdict == Verdict::Allow)
}

/// Re-checks the live connections of `local` on every snapshot published on `snapshots`, and closes those no longer
/// allowed (ambient §4.1). Returns when the sender is dropped.
pub async fn watch_policy(
    local: WorkloadUid,
    root_namespace: String,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    connections: Connections,
) {
    while snapshots.changed().await.is_ok() {
        let snapshot = Arc::clone(&snapshots.borrow_and_update());
        let closed = connections.close_unless(|conn| allowed(&snapshot, &local, &root_namespace, conn));
        if closed > 0 {
            debug!(closed, version = snapshot.version(), workload = %local, "policy re-check closed connections");
        }
    }
}

fn authorize(snapshot: &Snapshot, workload: &Workload, root_namespace: &str, conn: &ConnInfo) -> Decision {
    let policies = policies_for(snapshot, workload, root_namespace);
    evaluate(&policies, conn)
}

// === impl InboundHandler ===

impl<C: AppConnector> InboundHandler<C> {
    pub fn new(
        local: WorkloadUid,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        root_namespace: String,
        metrics: Arc<TcpMetrics>,
        connector: C,
    ) -> Self {
        Self {
            local,
            snapshot,
            lookups: None,
            root_namespace,
            metrics,
            connector,
            connections: Connections::new(),
        }
    }

    /// Looks up plaintext sources the snapshot does not hold (node-scoped xDS), so telemetry names them.
    pub fn with_lookups(mut self, lookups: Option<Lookups>) -> Self {
        self.lookups = lookups;
        self
    }

    /// The live connections this handler accepted.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Whether `conn` is still allowed under `snapshot`: the local workload still exists and its policies allow it.
    pub fn recheck(&self, snapshot: &Snapshot, conn: &ConnInfo) -> bool {
        allowed(snapshot, &self.local, &self.root_namespace, conn)
    }

    /// The task that closes this handler's connections when policy changes; spawn it next to the server.
    pub fn policy_watcher(&self) -> impl Future<Output = ()> + Send + 'static {
        watch_policy(
            self.local.clone(),
            self.root_namespace.clone(),
            self.snapshot.clone(),
            self.connections.clone(),
        )
    }

    /// Accepts a plaintext connection captured on the pod's inbound port (ambient §2.3): the same checks as a tunnel,
    /// with no peer identity, so PERMISSIVE admits it and STRICT (a DENY on a missing identity) refuses it.
    /// `req.authority` is the connection's original destination; `req.peer_identity` is ignored.
    pub async fn accept_plaintext(&self, mut req: InboundRequest) -> Result<InboundUpstream, Refusal> {
        req.peer_identity = None;
        super::local_known(&self.snapshot, &self.local).await;
        // A plaintext peer sends no baggage: with node-scoped xDS, a source of another node is looked up (once per
        // address, at most `LOOKUP_WAIT`) so the metrics and the access log can name it.
        if let Some(lookups) = &self.lookups {
            let key = {
                let snapshot = self.snapshot.borrow();
                let local = snapshot.workload(&self.local);
                local.and_then(|local| crate::state::select::source_lookup_key(&snapshot, local, req.peer_addr.ip()))
            };
            if let Some(key) = key.filter(|key| !lookups.answered(key)) {
                lookups.fetch(&key).await;
            }
        }
        self.accept(req, false).await
    }

    async fn accept(&self, req: InboundRequest, tunnel: bool) -> Result<InboundUpstream, Refusal> {
        super::local_known(&self.snapshot, &self.local).await;
        let snapshot = Arc::clone(&self.snapshot.borrow());
        let dst = req.local_addr;
        let early = |refusal: Refusal| {
            log_connection_failed(req.peer_addr, dst, Direction::Inbound, &refusal);
            refusal
        };
        let Some(workload) = snapshot.workload(&self.local) else {
            let refusal = Refusal::Unavailable(format!("no information about local workload {}", self.local).into());
            return Err(early(refusal));
        };
        let target = inbound_target(workload, &req.authority).map_err(|e| early(e.into()))?;
        let conn = ConnInfo {
            source_identity: req.peer_identity.clone(),
            source_ip: req.peer_addr.ip(),
            destination_ip: target.app.ip(),
            destination_port: target.app.port(),
        };
        let ctx = self.context(&snapshot, workload, &req, tunnel);
        let addrs = ConnectionAddrs {
            src: req.peer_addr,
            dst,
            hbone: tunnel.then(|| req.authority.to_string()),
        };
        let mut result = ConnectionResult::open(&self.metrics, &ctx, addrs);

        let decision = authorize(&snapshot, workload, &self.root_namespace, &conn);
        if decision.verdict == Verdict::Deny {
            let refusal = Refusal::Denied(decision.reason.to_string().into());
            result.fail(&refusal, ResponseFlags::Deny);
            result.finish();
            return Err(refusal);
        }
        let stream = match self.connector.connect(target.app, req.peer_addr).await {
            Ok(stream) => stream,
            Err(error) => {
                let refusal = Refusal::AppConnect(error);
                result.fail(&refusal, ResponseFlags::Connect);
                result.finish();
                return Err(refusal);
            }
        };
        let close = CancellationToken::new();
        let registration = self.connections.register(conn.clone(), close.clone());
        // A snapshot published while connecting was not seen by the watcher's pass over this connection.
        let current = Arc::clone(&self.snapshot.borrow());
        if !Arc::ptr_eq(&current, &snapshot) && !self.recheck(&current, &conn) {
            let refusal = Refusal::Denied(POLICY_CLOSE.into());
            result.fail(&refusal, ResponseFlags::Deny);
            result.finish();
            return Err(refusal);
        }
        Ok(InboundUpstream {
            stream,
            result,
            closed: Box::pin(close.clone().cancelled_owned()),
            close,
            _registration: registration,
        })
    }

    /// Telemetry's view of the connection: the peer's verified identity and, when the snapshot knows its address,
    /// its workload (else, over HBONE, what its baggage says); the local pod and its own identity.
    fn context(&self, snapshot: &Snapshot, local: &Workload, req: &InboundRequest, tunnel: bool) -> ConnectionContext {
        let mut ctx = ConnectionContext::new(Reporter::Destination);
        ctx.mtls = tunnel;
        ctx.source_principal = req.peer_identity.clone();
        ctx.destination_principal = Some(local.identity());
        ctx.source = match snapshot.workload_by_ip(req.peer_addr.ip()) {
            Some(source) => Some(workload_info(source)),
            None if tunnel => {
                let baggage = req.headers.get("baggage").and_then(|value| value.to_str().ok());
                super::source_from_baggage(baggage, req.peer_identity.as_ref())
            }
            None => None,
        };
        ctx.destination = Some(workload_info(local));
        let forwarded_host = if tunnel {
            ambit_hbone::forwarded_host(&req.headers)
        } else {
            None
        };
        let target_port = req.authority.port();
        ctx.destination_service = crate::state::inbound_service(local, forwarded_host, target_port)
            .and_then(|key| service_info(snapshot, key));
        ctx
    }
}

impl<C: AppConnector> ConnectHandler for InboundHandler<C> {
    type Upstream = InboundUpstream;

    fn connect(&self, request: InboundRequest) -> impl Future<Output = Result<InboundUpstream, Refusal>> + Send {
        self.accept(request, true)
    }

    fn completed(&self, upstream: InboundUpstream, stats: StreamStats) {
        let InboundUpstream { mut result, close, .. } = upstream;
        result.record_received(stats.bytes_from_downstream);
        result.record_sent(stats.bytes_to_downstream);
        if close.is_cancelled() {
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, POLICY_CLOSE);
            result.fail(&error, ResponseFlags::Deny);
        } else if let Err(error) = &stats.result {
            result.record_error(error);
        }
        result.finish();
    }
}

// === impl InboundUpstream ===

impl InboundUpstream {
    /// Whether the connection was closed by a policy change.
    pub fn is_closed(&self) -> bool {
        self.close.is_cancelled()
    }

    /// Ready with the closing error once the close handle fired; registers the task for that otherwise.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.closed.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::ConnectionAborted, POLICY_CLOSE)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for InboundUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundUpstream")
            .field("stream", &self.stream)
            .field("closed", &self.close.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for InboundUpstream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_closed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for InboundUpstream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_closed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_closed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_closed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;

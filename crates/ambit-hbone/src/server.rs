//! Inbound HBONE: the mTLS + HTTP/2 server for one accepted connection (and an accept loop), CONNECT validation, the
//! caller's [`ConnectHandler`] decision, and graceful drain.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use ambit_types::Identity;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use h2::server::{Connection, SendResponse};
use h2::{Reason, RecvStream};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{self, Instant};
use tokio_rustls::TlsAcceptor;

use crate::Wire;
use tokio_rustls::server::TlsStream;
use tracing::{Instrument, debug, warn};

use crate::authority::{Authority, AuthorityError};
use crate::blame::Blame;
use crate::drain::DrainWatch;
use crate::keepalive::{self, KeepaliveFailure};
use crate::relay::{Relay, RelayError, StreamStats};
use crate::settings::ServerSettings;

/// Pause after a failed `accept` (out of file descriptors, typically) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Decides each CONNECT and provides the application connection. Called on the connection's task: a slow
/// `connect` delays only its own stream.
pub trait ConnectHandler: Send + Sync + 'static {
    /// The application side of a tunnel, e.g. a `TcpStream`, or a wrapper that also carries per-stream state (metric
    /// labels, an access-log guard) to be finished in [`Self::completed`].
    type Upstream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Authorizes the request and connects to the application. The client gets 200 only after this returns `Ok`; a
    /// [`Refusal`] is answered with its status. Dropped unfinished if the client resets the stream meanwhile.
    fn connect(&self, request: InboundRequest) -> impl Future<Output = Result<Self::Upstream, Refusal>> + Send;

    /// Called once for every stream answered 200, when relaying has ended, with the bytes carried and why it ended.
    fn completed(&self, upstream: Self::Upstream, stats: StreamStats);
}

/// A validated CONNECT request, as the handler sees it.
#[derive(Clone, Debug)]
pub struct InboundRequest {
    /// The client certificate's SPIFFE identity (always present with [`ambit_identity::tls::server_config`]).
    pub peer_identity: Option<Identity>,
    /// The TCP peer: the source node proxy, a waypoint or a gateway.
    pub peer_addr: SocketAddr,
    /// The address the connection was accepted on (the destination pod's IP, port 15008).
    pub local_addr: SocketAddr,
    /// The tunnel's target.
    pub authority: Authority,
    /// All request headers: `forwarded`, `baggage`, `traceparent`, `x-forwarded-network`, ...
    pub headers: HeaderMap,
}

/// The handler's reason not to open a tunnel, answered with a status (ambient §1.3). The text is logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// 400: the target is invalid here (authority IP is not this pod's, a self-call port, ...).
    #[error("bad request: {0}")]
    BadRequest(Cow<'static, str>),
    /// 401: authorization policy denies the connection.
    #[error("denied by authorization policy: {0}")]
    Denied(Cow<'static, str>),
    /// 503: connecting to the application failed.
    #[error("connecting to the application failed")]
    AppConnect(#[source] io::Error),
    /// 503: this proxy cannot serve the target now (no workload information, no port mapping, ...).
    #[error("unavailable: {0}")]
    Unavailable(Cow<'static, str>),
}

/// Why a server connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading the connection's socket addresses failed")]
    Addr(#[source] io::Error),
    #[error("the client did not complete the TLS and HTTP/2 handshakes within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("the TLS handshake failed")]
    Tls(#[source] io::Error),
    #[error("the HTTP/2 handshake failed")]
    Handshake(#[source] h2::Error),
    #[error("the HTTP/2 connection failed")]
    Http2(#[source] h2::Error),
    #[error("the client answered no keepalive PING within {0:?}")]
    KeepaliveTimeout(Duration),
    #[error("sending a keepalive PING failed")]
    Keepalive(#[source] h2::Error),
}

/// The inbound HBONE server: cheap to clone, one per listener (per pod in in-pod mode).
pub struct HboneServer<H> {
    inner: Arc<Inner<H>>,
}

struct Inner<H> {
    handler: H,
    settings: ServerSettings,
    drain: DrainWatch,
}

/// What every stream of one connection shares.
struct ConnContext {
    peer_identity: Option<Identity>,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
}

/// A request refused before the handler sees it (400).
#[derive(Debug, thiserror::Error)]
enum Malformed {
    #[error("method {0} is not CONNECT")]
    Method(Method),
    #[error("the request has no :authority")]
    NoAuthority,
    #[error("invalid :authority")]
    Authority(#[source] AuthorityError),
}

/// Where a connection is in its shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// GOAWAY sent; streams finish until the deadline.
    Draining,
    /// Streams were reset; the connection is dropped when the timer fires.
    Closing,
}

// === impl Refusal ===

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Denied(_) => StatusCode::UNAUTHORIZED,
            Refusal::AppConnect(_) | Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn blame(&self) -> Blame {
        match self {
            Refusal::BadRequest(_) => Blame::Downstream,
            Refusal::Denied(_) => Blame::Policy,
            Refusal::AppConnect(_) => Blame::Upstream,
            Refusal::Unavailable(_) => Blame::Local,
        }
    }

    /// Whether the client may succeed by trying again (503s are transient; 400 and 401 are not).
    pub fn retryable(&self) -> bool {
        matches!(self, Refusal::AppConnect(_) | Refusal::Unavailable(_))
    }
}

// === impl ServeError ===

impl ServeError {
    pub fn blame(&self) -> Blame {
        match self {
            ServeError::Addr(_) => Blame::Local,
            // Timeouts, bad certificates, protocol violations and broken connections all come from the client's side.
            _ => Blame::Downstream,
        }
    }

    /// Never: the server cannot retry a connection the client opened.
    pub fn retryable(&self) -> bool {
        false
    }
}

// === impl HboneServer ===

impl<H> Clone for HboneServer<H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<H: ConnectHandler> HboneServer<H> {
    /// A server whose connections hold `drain` until they end, so the trigger's `drained()` also waits for every clone
    /// of this server to be dropped.
    pub fn new(handler: H, settings: ServerSettings, drain: DrainWatch) -> Self {
        Self {
            inner: Arc::new(Inner {
                handler,
                settings,
                drain,
            }),
        }
    }

    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// Accepts connections and serves each on its own task until draining starts; the listener is closed then.
    /// Each connection uses the TLS configuration current when it was accepted.
    pub async fn serve_listener(&self, listener: TcpListener, tls: watch::Receiver<Arc<rustls::ServerConfig>>) {
        let mut drain = self.inner.drain.clone();
        let mut draining = pin!(drain.signaled());
        loop {
            let accepted = tokio::select! {
                _ = &mut draining => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => self.spawn_connection(tcp, peer, Arc::clone(&tls.borrow())),
                Err(error) => {
                    warn!(%error, "accepting an HBONE connection failed");
                    time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn spawn_connection(&self, tcp: TcpStream, peer: SocketAddr, tls: Arc<rustls::ServerConfig>) {
        let server = self.clone();
        let span = tracing::debug_span!("hbone_inbound", %peer);
        let serve = async move {
            if let Err(error) = server.serve_connection(tcp, tls).await {
                debug!(?error, blame = ?error.blame(), "HBONE connection ended");
            }
        };
        tokio::spawn(serve.instrument(span));
    }

    /// Serves one accepted TCP connection: TLS and HTTP/2 handshakes within the handshake timeout, then CONNECT
    /// streams until the client closes, keepalive fails, or a drain completes. Every stream runs on this task.
    pub async fn serve_connection(&self, tcp: TcpStream, tls: Arc<rustls::ServerConfig>) -> Result<(), ServeError> {
        let drain = self.inner.drain.clone();
        let (peer_addr, local_addr) = (tcp.peer_addr(), tcp.local_addr());
        let (peer_addr, local_addr) = (
            peer_addr.map_err(ServeError::Addr)?,
            local_addr.map_err(ServeError::Addr)?,
        );
        let limit = self.inner.settings.handshake_timeout;
        let handshake = time::timeout(limit, self.handshake(tcp, tls)).await;
        let (peer_identity, conn) = handshake.map_err(|_| ServeError::HandshakeTimeout(limit))??;
        let ctx = ConnContext {
            peer_identity,
            peer_addr,
            local_addr,
        };
        self.drive(conn, &ctx, drain).await
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        tls: Arc<rustls::ServerConfig>,
    ) -> Result<(Option<Identity>, Connection<TlsStream<Wire>, Bytes>), ServeError> {
        // Latency over batching: h2 coalesces frames itself before each write.
        tcp.set_nodelay(true).map_err(ServeError::Addr)?;
        let mut tls = TlsAcceptor::from(tls)
            .accept(crate::wire(tcp))
            .await
            .map_err(ServeError::Tls)?;
        tls.get_mut().1.set_buffer_limit(Some(crate::TLS_SEND_BUFFER));
        let peer_identity = ambit_identity::tls::peer_identity(tls.get_ref().1);
        let conn = self
            .inner
            .settings
            .builder()
            .handshake(tls)
            .await
            .map_err(ServeError::Handshake)?;
        Ok((peer_identity, conn))
    }

    /// The connection's event loop: accepts streams, runs them, answers PINGs, and walks the shutdown phases.
    async fn drive(
        &self,
        mut conn: Connection<TlsStream<Wire>, Bytes>,
        ctx: &ConnContext,
        mut drain: DrainWatch,
    ) -> Result<(), ServeError> {
        let settings = &self.inner.settings;
        let mut keepalive = pin!(keepalive::run(conn.ping_pong(), &settings.h2));
        let mut draining = pin!(drain.signaled());
        let mut timer = pin!(time::sleep(Duration::ZERO));
        let mut streams = FuturesUnordered::new();
        let (mut phase, mut open, mut result) = (Phase::Serving, true, Ok(()));
        while open || !streams.is_empty() {
            tokio::select! {
                accepted = conn.accept(), if open => match accepted {
                    Some(Ok((request, respond))) => streams.push(self.serve_stream(request, respond, ctx)),
                    Some(Err(error)) => (open, result) = (false, Err(ServeError::Http2(error))),
                    None => open = false,
                },
                Some(()) = streams.next(), if !streams.is_empty() => {}
                failure = &mut keepalive, if open && phase != Phase::Closing => {
                    result = Err(keepalive_error(failure, settings.h2.keepalive_timeout));
                    phase = close(&mut conn, timer.as_mut(), settings.force_close_grace);
                }
                deadline = &mut draining, if phase == Phase::Serving => {
                    debug!("draining: GOAWAY sent");
                    conn.graceful_shutdown();
                    timer.as_mut().reset(deadline);
                    phase = Phase::Draining;
                }
                () = &mut timer, if phase != Phase::Serving => match phase {
                    Phase::Closing => break,
                    _ => phase = close(&mut conn, timer.as_mut(), settings.force_close_grace),
                },
            }
        }
        result
    }

    /// One stream, from request to the end of its relay.
    async fn serve_stream(&self, request: Request<RecvStream>, mut respond: SendResponse<Bytes>, ctx: &ConnContext) {
        let (parts, recv) = request.into_parts();
        let inbound = match ctx.inbound_request(parts) {
            Ok(inbound) => inbound,
            Err(malformed) => {
                debug!(error = %malformed, "refusing a malformed CONNECT");
                return reply(&mut respond, StatusCode::BAD_REQUEST);
            }
        };
        let authority = inbound.authority.clone();
        let connected = tokio::select! {
            biased;
            connected = self.inner.handler.connect(inbound) => connected,
            _ = poll_fn(|cx| respond.poll_reset(cx)) => {
                debug!(%authority, "the client left before the answer");
                return;
            }
        };
        match connected {
            Ok(upstream) => self.relay(upstream, recv, respond).await,
            Err(refusal) => {
                debug!(%authority, error = %refusal, blame = ?refusal.blame(), "CONNECT refused");
                reply(&mut respond, refusal.status());
            }
        }
    }

    async fn relay(&self, upstream: H::Upstream, recv: RecvStream, mut respond: SendResponse<Bytes>) {
        let (upstream, stats) = match respond.send_response(Response::new(()), false) {
            Ok(send) => Relay::new(upstream, recv, send).run().await,
            Err(error) => (upstream, StreamStats::failed(RelayError::Downstream(error))),
        };
        self.inner.handler.completed(upstream, stats);
    }
}

/// Resets every stream with a GOAWAY and gives them `grace` to report before the connection is dropped.
fn close<T: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<T, Bytes>,
    timer: std::pin::Pin<&mut time::Sleep>,
    grace: Duration,
) -> Phase {
    debug!("closing: open streams are reset");
    conn.abrupt_shutdown(Reason::NO_ERROR);
    timer.reset(Instant::now() + grace);
    Phase::Closing
}

fn keepalive_error(failure: KeepaliveFailure, timeout: Duration) -> ServeError {
    match failure {
        KeepaliveFailure::Timeout => ServeError::KeepaliveTimeout(timeout),
        KeepaliveFailure::Failed(error) => ServeError::Keepalive(error),
    }
}

/// Answers a stream with `status` and no body.
fn reply(respond: &mut SendResponse<Bytes>, status: StatusCode) {
    let mut response = Response::new(());
    *response.status_mut() = status;
    if let Err(error) = respond.send_response(response, true) {
        debug!(%error, %status, "the client left before the answer");
    }
}

// === impl ConnContext ===

impl ConnContext {
    fn inbound_request(&self, parts: http::request::Parts) -> Result<InboundRequest, Malformed> {
        if parts.method != Method::CONNECT {
            return Err(Malformed::Method(parts.method));
        }
        let authority = parts.uri.authority().ok_or(Malformed::NoAuthority)?;
        let authority = authority.as_str().parse().map_err(Malformed::Authority)?;
        Ok(InboundRequest {
            peer_identity: self.peer_identity.clone(),
            peer_addr: self.peer_addr,
            local_addr: self.local_addr,
            authority,
            headers: parts.headers,
        })
    }
}

//! The HTTP/1.1 plumbing shared by the admin, metrics and readiness servers: accepting with a connection bound, one
//! task per connection, header and body timeouts, the body size limit, graceful stop, and response builders.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument as _;

/// The response body of every endpoint: small and fully built before it is sent.
pub(crate) type Body = Full<Bytes>;

pub(crate) const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Bounds applied to each server. The defaults suit endpoints scraped by the kubelet and Prometheus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a connection may take to send a request's headers; also how long an idle keep-alive connection
    /// lives. A client that connects and sends nothing is closed after it (slowloris).
    pub header_read_timeout: Duration,
    /// How long a request's body may take to arrive once its headers have; 408 after it.
    pub body_read_timeout: Duration,
    /// Largest request body accepted; 413 above it.
    pub max_body_bytes: usize,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How long open connections get to finish once shutdown starts, before they are closed.
    pub drain_timeout: Duration,
}

/// A bound listener with the limits of the server that will accept on it. A plain `TcpListener` converts into one
/// with [`HttpLimits::default`].
#[derive(Debug)]
pub struct HttpListener {
    listener: TcpListener,
    limits: HttpLimits,
}

/// Serves one kind of endpoint. Handlers are synchronous: every endpoint answers from memory.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Answers a request whose body has been read in full and within the limits.
    fn handle(&self, req: &Request<Bytes>) -> Response<Body>;
}

/// Why a request's body was not read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body not received within {0:?}")]
    Timeout(Duration),
    #[error("reading the request body failed")]
    Read(#[source] hyper::Error),
}

/// Accepts on `listener` and answers with `handler` until `shutdown` resolves; then stops accepting, lets open
/// connections finish their request (idle ones close at once) for up to [`HttpLimits::drain_timeout`], and returns.
pub(crate) async fn serve<H: Handler>(
    listener: HttpListener,
    name: &'static str,
    handler: H,
    shutdown: impl Future<Output = ()>,
) {
    let server = Server::new(listener.limits, handler);
    let mut tasks = JoinSet::new();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => log_panic(name, joined),
            (stream, peer, permit) = server.accept(&listener.listener) => {
                let conn = server.connection(stream, graceful.watcher());
                let span = tracing::debug_span!("admin_connection", server = name, %peer);
                tasks.spawn(finish(conn, permit).instrument(span));
            }
        }
    }
    drop(listener.listener);
    server.drain(name, graceful, tasks).await;
}

/// A `text/plain` response.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, TEXT_PLAIN, body)
}

/// A response with the given status, content type and body.
pub(crate) fn with_type(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Awaits one served connection, logging how it ended, and frees its slot.
async fn finish(conn: impl Future<Output = hyper::Result<()>>, permit: OwnedSemaphorePermit) {
    if let Err(error) = conn.await {
        tracing::debug!(%error, "admin connection ended with an error");
    }
    drop(permit);
}

fn log_panic(name: &str, joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        tracing::warn!(server = name, %error, "admin connection task failed");
    }
}

/// Reads the body within the limits. A declared length above the limit fails before any of the body is read.
async fn read_body(body: Incoming, limits: &HttpLimits) -> Result<Bytes, BodyError> {
    let limit = limits.max_body_bytes;
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    let collected = tokio::time::timeout(limits.body_read_timeout, Limited::new(body, limit).collect()).await;
    match collected {
        Err(_) => Err(BodyError::Timeout(limits.body_read_timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) => match error.downcast::<hyper::Error>() {
            Ok(error) => Err(BodyError::Read(*error)),
            // `Limited` fails with either the body's own error (above) or `LengthLimitError`.
            Err(_) => Err(BodyError::TooLarge { limit }),
        },
    }
}

/// Answers one request: reads its body, then hands it to the handler.
async fn respond<H: Handler>(
    handler: Arc<H>,
    limits: Arc<HttpLimits>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    match read_body(body, &limits).await {
        Ok(body) => Ok(handler.handle(&Request::from_parts(parts, body))),
        Err(error) => {
            tracing::debug!(%error, method = %parts.method, path = parts.uri.path(), "request rejected");
            Ok(error.response())
        }
    }
}

// === impl HttpLimits ===

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_connections: 128,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

// === impl HttpListener ===

impl HttpListener {
    pub fn new(listener: TcpListener, limits: HttpLimits) -> Self {
        Self { listener, limits }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl From<TcpListener> for HttpListener {
    fn from(listener: TcpListener) -> Self {
        Self::new(listener, HttpLimits::default())
    }
}

// === impl BodyError ===

impl BodyError {
    /// The answer to the request; the connection is closed after it, as the rest of the body is not read.
    fn response(&self) -> Response<Body> {
        let status = match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        };
        let mut resp = text(status, format!("{self}\n"));
        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

// === impl Server ===

/// What every connection of one server shares.
struct Server<H> {
    handler: Arc<H>,
    limits: Arc<HttpLimits>,
    permits: Arc<Semaphore>,
    builder: http1::Builder,
}

impl<H: Handler> Server<H> {
    fn new(limits: HttpLimits, handler: H) -> Self {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        Self {
            handler: Arc::new(handler),
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits: Arc::new(limits),
            builder,
        }
    }

    /// Waits for a free connection slot, then for a connection. Cancel-safe. Accept errors (typically EMFILE) are
    /// logged and retried after a pause rather than ending the server.
    async fn accept(&self, listener: &TcpListener) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        loop {
            let permit = match Arc::clone(&self.permits).acquire_owned().await {
                Ok(permit) => permit,
                // The semaphore is owned here and never closed.
                Err(_) => std::future::pending().await,
            };
            match listener.accept().await {
                Ok((stream, peer)) => return (stream, peer, permit),
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves HTTP/1.1 on `stream` until the client leaves, a timeout closes it, or `watcher` asks it to finish.
    fn connection(&self, stream: TcpStream, watcher: Watcher) -> impl Future<Output = hyper::Result<()>> + use<H> {
        let handler = Arc::clone(&self.handler);
        let limits = Arc::clone(&self.limits);
        let service = service_fn(move |req| respond(Arc::clone(&handler), Arc::clone(&limits), req));
        watcher.watch(self.builder.serve_connection(TokioIo::new(stream), service))
    }

    /// Asks every connection to finish, waits up to the drain timeout, then closes whatever is left.
    async fn drain(&self, name: &str, graceful: GracefulShutdown, mut tasks: JoinSet<()>) {
        if tokio::time::timeout(self.limits.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::debug!(
                server = name,
                open = tasks.len(),
                "drain timed out; closing admin connections"
            );
        }
        tasks.shutdown().await;
    }
}

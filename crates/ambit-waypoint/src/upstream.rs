//! Connections from the waypoint to endpoints: an HBONE tunnel with the waypoint's own identity to `podIP:15008`
//! (authority `podIP:port`) for an endpoint that speaks HBONE, plain TCP otherwise (ambient §5.3, `connect_originate`),
//! and HTTP on top: one HTTP/2 connection per endpoint carrying every request (so gRPC is balanced per request, not per
//! connection), and a stack of idle HTTP/1.1 keep-alive connections per endpoint.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use ambit_hbone::{Authority, ConnectHeaders, HbonePool, HboneStream, PoolKey, PoolSettings};
use ambit_identity::cert::TrustBundle;
use ambit_identity::manager::CertificateManager;
use ambit_identity::tls;
use ambit_types::Identity;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;

/// The body type the waypoint sends in both directions.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The HBONE port of endpoints.
const HBONE_PORT: u16 = 15008;
/// Time to connect to an endpoint (TCP, TLS, HTTP/2 and CONNECT together).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_H1: usize = 64;

/// How to reach one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointTarget {
    /// The endpoint's application address (`podIP:targetPort`).
    pub addr: SocketAddr,
    /// The identity the endpoint's node proxy presents for it, when the endpoint speaks HBONE; `None`: plain TCP.
    pub identity: Option<Identity>,
}

/// The HTTP version towards the endpoint: the client's own (Envoy's `USE_DOWNSTREAM_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Http1,
    Http2,
}

/// Why an endpoint could not be reached or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no certificate for the waypoint's identity {identity}")]
    Certificate {
        identity: Identity,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot build the HBONE client TLS configuration")]
    Tls(#[source] ambit_identity::tls::TlsError),
    #[error("the HBONE tunnel to {addr} failed")]
    Hbone {
        addr: SocketAddr,
        #[source]
        source: ambit_hbone::ConnectError,
    },
    #[error("connecting to {addr} failed")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {0} timed out")]
    Timeout(SocketAddr),
    #[error("the HTTP handshake with {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("the request to {addr} failed")]
    Request {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

/// A connection to an endpoint.
pub enum Io {
    Hbone(Box<HboneStream>),
    Tcp(TcpStream),
}

/// The waypoint's connections to endpoints. Cheap to clone.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Identity,
    certificates: CertificateManager,
    bundle: watch::Receiver<TrustBundle>,
    pool: HbonePool,
    /// Client configurations by expected identity, for the certificate serial in `.0`.
    tls: Mutex<(String, HashMap<Identity, Arc<rustls::ClientConfig>>)>,
    h2: Mutex<HashMap<EndpointTarget, http2::SendRequest<Body>>>,
    h1: Mutex<HashMap<EndpointTarget, Vec<http1::SendRequest<Body>>>>,
}

// === impl UpstreamError ===

impl UpstreamError {
    /// Whether the request never reached the endpoint's application (a connect failure), as opposed to a failure
    /// after it was sent (a reset).
    pub fn is_connect_failure(&self) -> bool {
        !matches!(self, UpstreamError::Request { .. })
    }
}

// === impl Upstreams ===

impl Upstreams {
    pub fn new(identity: Identity, certificates: CertificateManager, bundle: watch::Receiver<TrustBundle>) -> Self {
        let inner = Inner {
            identity,
            certificates,
            bundle,
            pool: HbonePool::new(PoolSettings::default()),
            tls: Mutex::new((String::new(), HashMap::new())),
            h2: Mutex::new(HashMap::new()),
            h1: Mutex::new(HashMap::new()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The waypoint's identity, presented to every endpoint.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// A new connection to `target` (a tunnel through a pooled HBONE connection, or a TCP connection), within the
    /// connect timeout. `headers` go on the CONNECT.
    pub async fn connect(&self, target: &EndpointTarget, headers: &ConnectHeaders) -> Result<Io, UpstreamError> {
        let connecting = async {
            match &target.identity {
                Some(identity) => self.tunnel(target.addr, identity, headers).await,
                None => (TcpStream::connect(target.addr).await)
                    .map(Io::Tcp)
                    .map_err(|source| UpstreamError::Tcp {
                        addr: target.addr,
                        source,
                    }),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(target.addr)))
    }

    async fn tunnel(
        &self,
        addr: SocketAddr,
        expected: &Identity,
        headers: &ConnectHeaders,
    ) -> Result<Io, UpstreamError> {
        let me = &self.inner.identity;
        let cert = (self.inner.certificates.fetch(me).await).map_err(|source| UpstreamError::Certificate {
            identity: me.clone(),
            source: Box::new(source),
        })?;
        let config = {
            let mut cache = self.inner.tls.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.0 != cert.serial() {
                *cache = (cert.serial().to_owned(), HashMap::new());
            }
            match cache.1.get(expected) {
                Some(config) => Arc::clone(config),
                None => {
                    let bundle = self.inner.bundle.borrow().clone();
                    let config =
                        tls::client_config(&cert, &bundle, vec![expected.clone()]).map_err(UpstreamError::Tls)?;
                    cache.1.insert(expected.clone(), Arc::clone(&config));
                    config
                }
            }
        };
        let key = PoolKey {
            source: me.clone(),
            destination_identities: vec![expected.clone()],
            destination: SocketAddr::new(addr.ip(), HBONE_PORT),
        };
        let stream = (self
            .inner
            .pool
            .connect(&key, &config, &Authority::Addr(addr), headers)
            .await)
            .map_err(|source| UpstreamError::Hbone { addr, source })?;
        Ok(Io::Hbone(Box::new(stream)))
    }

    /// Sends `request` to `target` over a pooled HTTP connection of `version` (a new one when none is free) and
    /// returns the response head (its body streams). The request's URI must suit the version: origin form for
    /// HTTP/1.1 (the `Host` header carries the authority), absolute for HTTP/2.
    pub async fn send(
        &self,
        target: &EndpointTarget,
        version: Version,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let addr = target.addr;
        let failed = |source| UpstreamError::Request { addr, source };
        match version {
            Version::Http2 => {
                let mut sender = self.h2_sender(target).await?;
                let result = sender.send_request(request).await;
                if result.is_err() {
                    self.forget_h2(target, &sender);
                }
                result.map_err(failed)
            }
            Version::Http1 => {
                let mut sender = self.h1_sender(target).await?;
                let response = sender.send_request(request).await.map_err(failed)?;
                // Back to the idle stack once the response has been read (hyper says so through `ready`).
                let upstreams = self.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    if sender.ready().await.is_ok() {
                        upstreams.idle_h1(target, sender);
                    }
                });
                Ok(response)
            }
        }
    }

    async fn h2_sender(&self, target: &EndpointTarget) -> Result<http2::SendRequest<Body>, UpstreamError> {
        let cached = self
            .inner
            .h2
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(target)
            .cloned();
        if let Some(sender) = cached.filter(|s| !s.is_closed()) {
            return Ok(sender);
        }
        let io = self.connect(target, &ConnectHeaders::default()).await?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20));
        let (sender, conn) =
            (builder.handshake(TokioIo::new(io)).await).map_err(|source| UpstreamError::Handshake {
                addr: target.addr,
                source,
            })?;
        let addr = target.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(%addr, %error, "upstream HTTP/2 connection ended");
            }
        });
        let mut cache = self.inner.h2.lock().unwrap_or_else(PoisonError::into_inner);
        cache.insert(target.clone(), sender.clone());
        Ok(sender)
    }

    fn forget_h2(&self, target: &EndpointTarget, sender: &http2::SendRequest<Body>) {
        if sender.is_closed() {
            let mut cache = self.inner.h2.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.get(target).is_some_and(http2::SendRequest::is_closed) {
                cache.remove(target);
            }
        }
    }

    async fn h1_sender(&self, target: &EndpointTarget) -> Result<http1::SendRequest<Body>, UpstreamError> {
        loop {
            let idle = (self.inner.h1.lock().unwrap_or_else(PoisonError::into_inner))
                .get_mut(target)
                .and_then(Vec::pop);
            match idle {
                Some(sender) if sender.is_ready() => return Ok(sender),
                Some(_) => continue,
                None => break,
            }
        }
        let io = self.connect(target, &ConnectHeaders::default()).await?;
        let (sender, conn) =
            (http1::Builder::new().handshake(TokioIo::new(io)).await).map_err(|source| UpstreamError::Handshake {
                addr: target.addr,
                source,
            })?;
        let addr = target.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(%addr, %error, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(sender)
    }

    fn idle_h1(&self, target: EndpointTarget, sender: http1::SendRequest<Body>) {
        let mut idle = self.inner.h1.lock().unwrap_or_else(PoisonError::into_inner);
        let stack = idle.entry(target).or_default();
        if stack.len() < MAX_IDLE_H1 {
            stack.push(sender);
        }
    }

    /// Forgets HTTP connections that have closed (their endpoint went away, or the peer closed them), so the pools
    /// hold only live connections however many endpoints come and go. Returns how many remain.
    pub fn prune(&self) -> usize {
        let mut h2 = self.inner.h2.lock().unwrap_or_else(PoisonError::into_inner);
        h2.retain(|_, sender| !sender.is_closed());
        let mut h1 = self.inner.h1.lock().unwrap_or_else(PoisonError::into_inner);
        for stack in h1.values_mut() {
            stack.retain(|sender| !sender.is_closed());
        }
        h1.retain(|_, stack| !stack.is_empty());
        h2.len() + h1.values().map(Vec::len).sum::<usize>()
    }

    /// Open HBONE connections (for the config dump).
    pub fn hbone_connections(&self) -> usize {
        self.inner.pool.connection_count()
    }
}

// === impl Io ===

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            Io::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Hbone(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
            Io::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            Io::Tcp(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            Io::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

//! Outbound HBONE below the pool: dialing (TCP through a [`Dialer`], TLS without SNI, HTTP/2), the CONNECT exchange,
//! and [`HboneStream`], an established tunnel as `AsyncRead + AsyncWrite`.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::{Connection, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::io::poll_read_buf;

use crate::Wire;
use crate::authority::Authority;
use crate::blame::Blame;
use crate::headers::{ConnectHeaders, HeaderError};
use crate::pool::{Lease, StreamLease};
use crate::settings::PoolSettings;

/// Bytes written through an [`HboneStream`] are copied (as `AsyncWrite` lends them) into blocks of this size.
const WRITE_BLOCK: usize = 256 * 1024;

/// Opens the TCP connection to a peer's HBONE port. The node proxy supplies one that creates the socket inside the
/// source pod's network namespace with its mark; [`PlainDialer`] connects from the current namespace.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

/// `TcpStream::connect` from the calling thread's network namespace.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainDialer;

/// Why a new HBONE connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("TCP connect failed")]
    Connect(#[source] io::Error),
    #[error("the TLS handshake failed")]
    Tls(#[source] io::Error),
    #[error("the HTTP/2 handshake failed")]
    Handshake(#[source] h2::Error),
    #[error("connecting did not complete within {0:?}")]
    Timeout(Duration),
    #[error("the connection task ended before connecting (runtime shutting down)")]
    Aborted,
}

/// Why [`crate::HbonePool::connect`] produced no tunnel.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("opening an HBONE connection failed")]
    Dial(#[source] Arc<DialError>),
    #[error("the CONNECT request cannot be built")]
    Request(#[source] HeaderError),
    #[error("{0} is not a valid URI authority")]
    Authority(String),
    /// Safe to retry: the request never reached the application (GOAWAY, REFUSED_STREAM, or the connection was gone
    /// before the request was sent).
    #[error("the stream was not processed by the server")]
    Refused(#[source] h2::Error),
    #[error("the CONNECT exchange failed")]
    Stream(#[source] h2::Error),
    #[error("the server answered CONNECT with {0}")]
    Status(StatusCode),
}

/// A new connection: the handle to open streams with, and the driver to poll.
pub(crate) struct Dialed {
    pub(crate) send: SendRequest<Bytes>,
    pub(crate) conn: Connection<TlsStream<Wire>, Bytes>,
    /// The identity the server proved (its certificate's SPIFFE URI SAN).
    pub(crate) peer: Option<ambit_types::Identity>,
}

/// An established tunnel (the server answered 200). Reads return the server's bytes and EOF on its END_STREAM;
/// `shutdown` sends END_STREAM (half-close) and reading can go on. Dropping it resets a stream still open.
pub struct HboneStream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received bytes not yet read.
    unread: Bytes,
    /// Copies of written bytes, handed to h2 by the chunk.
    block: BytesMut,
    write_closed: bool,
    response_headers: HeaderMap,
    _lease: StreamLease,
}

// === impl PlainDialer ===

impl Dialer for PlainDialer {
    async fn dial(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }
}

// === impl DialError ===

impl DialError {
    pub fn blame(&self) -> Blame {
        match self {
            DialError::Aborted => Blame::Local,
            _ => Blame::Upstream,
        }
    }

    /// Connect failures and timeouts may be transient; a TLS failure (wrong identity, untrusted chain) is not.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            DialError::Connect(_) | DialError::Timeout(_) | DialError::Handshake(_)
        )
    }
}

// === impl ConnectError ===

impl ConnectError {
    /// The response status, for a non-200 answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ConnectError::Status(status) => Some(*status),
            _ => None,
        }
    }

    pub fn blame(&self) -> Blame {
        match self {
            ConnectError::Dial(error) => error.blame(),
            ConnectError::Request(_) | ConnectError::Authority(_) => Blame::Local,
            ConnectError::Status(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Blame::Policy,
            // We asked for a target the server does not serve.
            ConnectError::Status(StatusCode::BAD_REQUEST) => Blame::Local,
            ConnectError::Refused(_) | ConnectError::Stream(_) | ConnectError::Status(_) => Blame::Upstream,
        }
    }

    /// Whether another attempt (perhaps to another endpoint) may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ConnectError::Dial(error) => error.retryable(),
            ConnectError::Refused(_) | ConnectError::Status(StatusCode::SERVICE_UNAVAILABLE) => true,
            ConnectError::Request(_) | ConnectError::Authority(_) => false,
            ConnectError::Stream(_) | ConnectError::Status(_) => false,
        }
    }

    /// A failed exchange: refused unprocessed (GOAWAY, REFUSED_STREAM) is safe to retry elsewhere; nothing else is.
    fn from_h2(error: h2::Error) -> Self {
        if error.is_go_away() || error.reason() == Some(Reason::REFUSED_STREAM) {
            ConnectError::Refused(error)
        } else {
            ConnectError::Stream(error)
        }
    }
}

// === dialing and CONNECT ===

/// TCP through `dialer`, TLS with no SNI (the verifier checks SPIFFE identities, not names), then HTTP/2.
pub(crate) async fn dial<D: Dialer>(
    dialer: &D,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    settings: &PoolSettings,
) -> Result<Dialed, DialError> {
    let tcp = dialer.dial(addr).await.map_err(DialError::Connect)?;
    tcp.set_nodelay(true).map_err(DialError::Connect)?;
    let mut tls = TlsConnector::from(tls)
        .connect(ServerName::IpAddress(addr.ip().into()), crate::wire(tcp))
        .await
        .map_err(DialError::Tls)?;
    tls.get_mut().1.set_buffer_limit(Some(crate::TLS_SEND_BUFFER));
    let peer = ambit_identity::tls::peer_identity(tls.get_ref().1);
    let (send, conn) = settings.builder().handshake(tls).await.map_err(DialError::Handshake)?;
    Ok(Dialed { send, conn, peer })
}

/// The CONNECT request: `:authority` = target, no `:scheme` or `:path`, and the metadata headers.
pub(crate) fn request(authority: &Authority, headers: &ConnectHeaders) -> Result<Request<()>, ConnectError> {
    let mut request = Request::new(());
    *request.method_mut() = Method::CONNECT;
    *request.uri_mut() = authority_form(authority)?;
    headers.write_to(request.headers_mut()).map_err(ConnectError::Request)?;
    Ok(request)
}

/// The URI of a CONNECT: an authority alone.
fn authority_form(authority: &Authority) -> Result<Uri, ConnectError> {
    let text = authority.to_string();
    let mut parts = http::uri::Parts::default();
    parts.authority = Some(text.parse().map_err(|_| ConnectError::Authority(text.clone()))?);
    Uri::from_parts(parts).map_err(|_| ConnectError::Authority(text))
}

/// Sends the CONNECT on a leased connection and waits for the answer.
pub(crate) async fn open(lease: Lease, request: Request<()>) -> Result<HboneStream, ConnectError> {
    let Lease {
        mut send_request,
        stream,
    } = lease;
    let sent = match poll_fn(|cx| send_request.poll_ready(cx)).await {
        Ok(()) => send_request.send_request(request, false),
        Err(error) => Err(error),
    };
    drop(send_request);
    // Nothing was sent: the connection was already going away or gone, so another one may serve the request.
    let (response, send) = sent.map_err(|error| stream.failed(ConnectError::Refused(error)))?;
    let response = response
        .await
        .map_err(|error| stream.failed(ConnectError::from_h2(error)))?;
    if response.status() != StatusCode::OK {
        return Err(ConnectError::Status(response.status()));
    }
    let (parts, recv) = response.into_parts();
    Ok(HboneStream {
        send,
        recv,
        unread: Bytes::new(),
        block: BytesMut::new(),
        write_closed: false,
        response_headers: parts.headers,
        _lease: stream,
    })
}

// === impl HboneStream ===

impl HboneStream {
    /// The SPIFFE identity the server proved in the TLS handshake of this stream's connection.
    pub fn peer_identity(&self) -> Option<&ambit_types::Identity> {
        self._lease.peer_identity()
    }

    /// Headers of the server's 200 (e.g. the destination's `baggage`).
    pub fn response_headers(&self) -> &HeaderMap {
        &self.response_headers
    }

    /// Reads from `source` straight into the stream's send block and queues what was read, with no buffer in
    /// between: `Ready(Ok(0))` at the source's EOF (the caller then shuts the stream down). At most `max` bytes per
    /// call, and no more than h2's flow control allows.
    pub fn poll_send_from<R: AsyncRead + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut source: Pin<&mut R>,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = ready!(self.poll_capacity(cx, max.max(1)))?;
        if self.block.capacity() < n {
            // Reuses the previous block in place once h2 has released every chunk of it.
            self.block.reserve(WRITE_BLOCK.max(n));
        }
        let read = ready!(poll_read_buf(source.as_mut(), cx, &mut (&mut self.block).limit(n)))?;
        if read == 0 {
            return Poll::Ready(Ok(0));
        }
        let data = self.block.split().freeze();
        self.send.send_data(data, false).map_err(io_error)?;
        Poll::Ready(Ok(read))
    }

    /// Writes the server's bytes straight from h2's buffers into `sink`: `Ready(Ok(0))` once the server ended the
    /// stream (the caller then shuts `sink`'s write side).
    pub fn poll_recv_into<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut sink: Pin<&mut W>,
    ) -> Poll<io::Result<usize>> {
        while self.unread.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => self.unread = data,
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
                None => return Poll::Ready(Ok(0)),
            }
        }
        let n = ready!(sink.as_mut().poll_write(cx, &self.unread))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.unread.advance(n);
        // Fails only once the stream is gone, which the next `poll_data` reports.
        let _ = self.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(n))
    }

    fn poll_capacity(&mut self, cx: &mut Context<'_>, wanted: usize) -> Poll<io::Result<usize>> {
        loop {
            self.send.reserve_capacity(wanted);
            let capacity = self.send.capacity();
            if capacity > 0 {
                return Poll::Ready(Ok(capacity.min(wanted)));
            }
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
                None => return Poll::Ready(Err(self.closed_error(cx))),
            }
        }
    }

    /// The stream can no longer send: the server reset it, or the connection is gone.
    fn closed_error(&mut self, cx: &mut Context<'_>) -> io::Error {
        match self.send.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => io::Error::new(io::ErrorKind::ConnectionReset, h2::Error::from(reason)),
            Poll::Ready(Err(error)) => io_error(error),
            Poll::Pending => io::ErrorKind::BrokenPipe.into(),
        }
    }

    fn copy_to_block(&mut self, data: &[u8]) -> Bytes {
        if self.block.capacity() < data.len() {
            // Reuses the previous block in place once h2 has released every chunk of it.
            self.block.reserve(WRITE_BLOCK.max(data.len()));
        }
        self.block.extend_from_slice(data);
        self.block.split().freeze()
    }
}

impl AsyncRead for HboneStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        while this.unread.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.unread = data,
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        // Fails only once the stream is gone, which the next `poll_data` reports.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(self.poll_capacity(cx, buf.len()))?;
        let data = self.copy_to_block(&buf[..n]);
        self.send.send_data(data, false).map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    /// Nothing to do: the connection's task writes whatever h2 has queued.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends END_STREAM: the server shuts down the application's write side; its bytes keep coming.
    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            self.write_closed = true;
            self.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl std::fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneStream")
            .field("stream_id", &self.send.stream_id())
            .finish_non_exhaustive()
    }
}

/// Largest read from the client, handed to h2 as one DATA frame: **64 KiB**. h2 writes each DATA frame with a
/// `writev` of its own, so 256 KiB carried 10-15% more in a single-stream bulk run (`scripts/bench.sh`), but the
/// receiving proxy then holds its stream window in 256 KiB buffers, and its peak RSS rose from ~38 to 54-61 MiB; not
/// worth it. A small request is read whole either way.
const RELAY_CHUNK: usize = 64 * 1024;

/// Relays between a client connection and an established tunnel until both directions are done, with no buffer
/// in between: the client's bytes are read into the stream's send block, the server's written from h2's buffers.
/// `sent` and `received` are told each chunk as it moves (client to server, server to client). A half-close in
/// either direction is passed on. Returns the totals, or the first error.
pub async fn relay<C>(
    client: &mut C,
    stream: &mut HboneStream,
    mut sent: impl FnMut(u64),
    mut received: impl FnMut(u64),
) -> io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut up, mut down) = (0u64, 0u64);
    let (mut up_done, mut down_done) = (false, false);
    poll_fn(|cx| {
        loop {
            let mut progress = false;
            if !up_done {
                match stream.poll_send_from(cx, Pin::new(&mut *client), RELAY_CHUNK) {
                    Poll::Ready(Ok(0)) => {
                        ready!(Pin::new(&mut *stream).poll_shutdown(cx))?;
                        up_done = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        up += n as u64;
                        sent(n as u64);
                        progress = true;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {}
                }
            }
            if !down_done {
                match stream.poll_recv_into(cx, Pin::new(&mut *client)) {
                    Poll::Ready(Ok(0)) => {
                        ready!(Pin::new(&mut *client).poll_shutdown(cx))?;
                        down_done = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        down += n as u64;
                        received(n as u64);
                        progress = true;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {}
                }
            }
            if up_done && down_done {
                return Poll::Ready(Ok((up, down)));
            }
            if !progress {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// An h2 failure as the `io::Error` a byte copier understands: resets and GOAWAYs are `ConnectionReset`.
fn io_error(error: h2::Error) -> io::Error {
    let kind = match error.get_io() {
        Some(io) => io.kind(),
        None if error.is_reset() || error.is_go_away() => io::ErrorKind::ConnectionReset,
        None => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}

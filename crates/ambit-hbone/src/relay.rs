//! The inbound tunnel's data path: bytes between an accepted HBONE stream and the application connection, both ways
//! in one future, with half-close propagated and bytes counted.
//!
//! Downstream → upstream writes each received DATA payload straight to the application (no copy of ours) and returns
//! the flow-control window as bytes are written. Upstream → downstream reads into a reused 256 KiB block, hands the
//! filled part to h2 as `Bytes` without copying, and reads again only once h2 granted the capacity for what it holds,
//! so nothing is buffered without bound and no connection window is reserved by an idle stream.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use crate::blame::Blame;

/// Bytes are read from the application into blocks of this size...
const READ_BLOCK: usize = 256 * 1024;
/// ...and a new block is started when less than this is left in the current one.
const MIN_READ: usize = 16 * 1024;

/// What one inbound stream carried, reported to [`crate::ConnectHandler::completed`].
#[derive(Debug)]
pub struct StreamStats {
    /// Bytes received from the HBONE client and written to the application.
    pub bytes_from_downstream: u64,
    /// Bytes read from the application and queued to the HBONE client.
    pub bytes_to_downstream: u64,
    /// From the 200 response to the end of the relay.
    pub duration: Duration,
    /// `Ok` when both directions ended with a clean half-close.
    pub result: Result<(), RelayError>,
}

/// Why an inbound tunnel ended other than by both sides closing.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the client reset the stream ({0})")]
    DownstreamReset(Reason),
    #[error("the HBONE stream or its connection failed")]
    Downstream(#[source] h2::Error),
    #[error("reading from or writing to the application failed")]
    Upstream(#[source] io::Error),
}

/// Relays between `upstream` and one h2 stream until both directions are done or one fails.
pub(crate) struct Relay<U> {
    upstream: U,
    to_upstream: ToUpstream,
    to_downstream: ToDownstream,
    started: Instant,
}

/// Downstream → upstream: h2 DATA to the application.
struct ToUpstream {
    recv: RecvStream,
    chunk: Bytes,
    bytes: u64,
    eof: bool,
    done: bool,
}

/// Upstream → downstream: the application's bytes to h2 DATA.
struct ToDownstream {
    send: SendStream<Bytes>,
    block: BytesMut,
    chunk: Bytes,
    bytes: u64,
    done: bool,
}

// === impl StreamStats ===

impl StreamStats {
    /// A stream that failed before any byte was relayed.
    pub(crate) fn failed(error: RelayError) -> Self {
        Self {
            bytes_from_downstream: 0,
            bytes_to_downstream: 0,
            duration: Duration::ZERO,
            result: Err(error),
        }
    }
}

// === impl RelayError ===

impl RelayError {
    pub fn blame(&self) -> Blame {
        match self {
            RelayError::DownstreamReset(_) => Blame::Downstream,
            // Our own GOAWAY (drain deadline, failed keepalive) ended it, not a peer's frame or a protocol error.
            RelayError::Downstream(e) if e.is_go_away() && !e.is_remote() && !e.is_library() => Blame::Local,
            RelayError::Downstream(_) => Blame::Downstream,
            RelayError::Upstream(_) => Blame::Upstream,
        }
    }

    /// Never: bytes may already have reached the application, so a tunnel cannot be replayed.
    pub fn retryable(&self) -> bool {
        false
    }
}

/// A reset by the client is reported with its reason; anything else as the h2 error.
fn downstream_error(error: h2::Error) -> RelayError {
    match error.reason() {
        Some(reason) if error.is_reset() && error.is_remote() => RelayError::DownstreamReset(reason),
        _ => RelayError::Downstream(error),
    }
}

fn reset_error(reset: Result<Reason, h2::Error>) -> RelayError {
    match reset {
        Ok(reason) => RelayError::DownstreamReset(reason),
        Err(error) => downstream_error(error),
    }
}

// === impl Relay ===

impl<U: AsyncRead + AsyncWrite + Unpin> Relay<U> {
    pub(crate) fn new(upstream: U, recv: RecvStream, send: SendStream<Bytes>) -> Self {
        Self {
            upstream,
            to_upstream: ToUpstream {
                recv,
                chunk: Bytes::new(),
                bytes: 0,
                eof: false,
                done: false,
            },
            to_downstream: ToDownstream {
                send,
                block: BytesMut::new(),
                chunk: Bytes::new(),
                bytes: 0,
                done: false,
            },
            started: Instant::now(),
        }
    }

    pub(crate) async fn run(mut self) -> (U, StreamStats) {
        let result = poll_fn(|cx| self.poll_relay(cx)).await;
        if let Err(RelayError::Upstream(_)) = &result {
            // RFC 9113 §8.5: an abnormally closed TCP connection is signalled with CONNECT_ERROR.
            self.to_downstream.send.send_reset(Reason::CONNECT_ERROR);
        }
        let stats = StreamStats {
            bytes_from_downstream: self.to_upstream.bytes,
            bytes_to_downstream: self.to_downstream.bytes,
            duration: self.started.elapsed(),
            result,
        };
        (self.upstream, stats)
    }

    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        let mut upstream = Pin::new(&mut self.upstream);
        if !self.to_upstream.done
            && let Poll::Ready(Err(e)) = self.to_upstream.poll_copy(cx, upstream.as_mut())
        {
            return Poll::Ready(Err(e));
        }
        if !self.to_downstream.done
            && let Poll::Ready(Err(e)) = self.to_downstream.poll_copy(cx, upstream.as_mut())
        {
            return Poll::Ready(Err(e));
        }
        if self.to_upstream.done && self.to_downstream.done {
            return Poll::Ready(Ok(()));
        }
        // Both directions may be waiting on the application; a client reset must still end the relay.
        if !self.to_downstream.done
            && let Poll::Ready(reset) = self.to_downstream.send.poll_reset(cx)
        {
            return Poll::Ready(Err(reset_error(reset)));
        }
        Poll::Pending
    }
}

// === impl ToUpstream ===

impl ToUpstream {
    /// Ready(Ok) once the client's END_STREAM was turned into a shutdown of the application's write side.
    fn poll_copy<U: AsyncWrite>(
        &mut self,
        cx: &mut Context<'_>,
        mut upstream: Pin<&mut U>,
    ) -> Poll<Result<(), RelayError>> {
        loop {
            if self.chunk.is_empty() && !self.eof {
                match self.recv.poll_data(cx) {
                    // May be empty (an END_STREAM frame): looped back to read again.
                    Poll::Ready(Some(Ok(chunk))) => self.chunk = chunk,
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(downstream_error(error))),
                    Poll::Ready(None) => self.eof = true,
                    Poll::Pending => return Self::flush_then_pending(cx, upstream),
                }
                continue;
            }
            if self.eof && self.chunk.is_empty() {
                ready!(upstream.as_mut().poll_shutdown(cx)).map_err(RelayError::Upstream)?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_chunk(cx, upstream.as_mut()))?;
        }
    }

    fn poll_write_chunk<U: AsyncWrite>(
        &mut self,
        cx: &mut Context<'_>,
        upstream: Pin<&mut U>,
    ) -> Poll<Result<(), RelayError>> {
        let written = ready!(upstream.poll_write(cx, &self.chunk)).map_err(RelayError::Upstream)?;
        if written == 0 {
            return Poll::Ready(Err(RelayError::Upstream(io::ErrorKind::WriteZero.into())));
        }
        self.chunk.advance(written);
        self.bytes += written as u64;
        // Fails only once the stream is gone, which the next `poll_data` reports.
        let _ = self.recv.flow_control().release_capacity(written);
        Poll::Ready(Ok(()))
    }

    /// Nothing to write for now: push out whatever the application's writer buffers, then wait for h2.
    fn flush_then_pending<U: AsyncWrite>(cx: &mut Context<'_>, upstream: Pin<&mut U>) -> Poll<Result<(), RelayError>> {
        match upstream.poll_flush(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(RelayError::Upstream(error))),
            _ => Poll::Pending,
        }
    }
}

// === impl ToDownstream ===

impl ToDownstream {
    /// Ready(Ok) once the application's EOF was sent as END_STREAM.
    fn poll_copy<U: AsyncRead>(
        &mut self,
        cx: &mut Context<'_>,
        mut upstream: Pin<&mut U>,
    ) -> Poll<Result<(), RelayError>> {
        loop {
            if self.chunk.is_empty() {
                if self.block.capacity() < MIN_READ {
                    // Reuses the previous block in place once h2 has released every chunk of it.
                    self.block.reserve(READ_BLOCK);
                }
                let read =
                    ready!(poll_read_buf(upstream.as_mut(), cx, &mut self.block)).map_err(RelayError::Upstream)?;
                if read == 0 {
                    self.send
                        .send_data(Bytes::new(), true)
                        .map_err(RelayError::Downstream)?;
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
                self.chunk = self.block.split().freeze();
            }
            ready!(self.poll_send_chunk(cx))?;
        }
    }

    /// Hands the chunk to h2 as flow-control capacity is granted.
    fn poll_send_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        while !self.chunk.is_empty() {
            self.send.reserve_capacity(self.chunk.len());
            let capacity = self.send.capacity();
            if capacity == 0 {
                match ready!(self.send.poll_capacity(cx)) {
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Poll::Ready(Err(downstream_error(error))),
                    // No longer sendable: the client reset the stream.
                    None => return Poll::Ready(Err(self.closed(cx))),
                }
            }
            let data = self.chunk.split_to(capacity.min(self.chunk.len()));
            self.bytes += data.len() as u64;
            self.send.send_data(data, false).map_err(RelayError::Downstream)?;
        }
        Poll::Ready(Ok(()))
    }

    fn closed(&mut self, cx: &mut Context<'_>) -> RelayError {
        match self.send.poll_reset(cx) {
            Poll::Ready(reset) => reset_error(reset),
            Poll::Pending => RelayError::DownstreamReset(Reason::STREAM_CLOSED),
        }
    }
}

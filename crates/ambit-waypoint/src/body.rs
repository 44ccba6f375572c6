//! Body wrappers: count the bytes that pass, and complete a request's record (metrics and access log) when its
//! response body ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use ambit_telemetry::http::{ByteCounter, RequestRecord};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::upstream::BoxError;

/// Counts the data bytes of `inner` into a [`ByteCounter`].
pub struct Counted<B> {
    inner: B,
    counter: ByteCounter,
}

/// A response body that completes its [`RequestRecord`] at its end: with the trailers' `grpc-status` when there are
/// trailers, and as a downstream disconnect when dropped before its end.
pub struct Recorded<B> {
    inner: B,
    record: Option<RequestRecord>,
}

// === impl Counted ===

impl<B> Counted<B> {
    pub fn new(inner: B, counter: ByteCounter) -> Self {
        Self { inner, counter }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            self.counter.add(data.len() as u64);
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl Recorded ===

impl<B: HttpBody> Recorded<B> {
    /// Wraps `inner`; a body that is already complete completes the record at once.
    pub fn new(inner: B, record: RequestRecord) -> Self {
        let mut body = Self {
            inner,
            record: Some(record),
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(record) = self.record.take() {
            record.finish();
        }
    }
}

impl<B> HttpBody for Recorded<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Some(record) = &self.record
                {
                    record.response_bytes().add(data.len() as u64);
                }
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(record) = &mut self.record
                {
                    record.response_trailers(trailers);
                }
            }
            Some(Err(_)) => {}
            None => self.finish(),
        }
        if self.inner.is_end_stream() {
            self.finish();
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! Telling HTTP from other TCP on a port whose protocol is not declared, from the first bytes the client sends (as
//! Istio's protocol sniffing does), and replaying those bytes to whoever serves the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (prior knowledge).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HTTP/1.1 methods that may open a connection (RFC 9110, plus PATCH).
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
];

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    Http,
    Tcp,
    /// Too few bytes to tell: read more.
    NeedMore,
}

/// Classifies a connection from the bytes received so far: HTTP when they start with the HTTP/2 preface or an
/// HTTP/1.1 method and a space, TCP as soon as they cannot, [`Sniffed::NeedMore`] while they still might.
pub fn sniff(prefix: &[u8]) -> Sniffed {
    let candidates = std::iter::once(H2_PREFACE).chain(METHODS);
    let mut undecided = false;
    for candidate in candidates {
        let n = prefix.len().min(candidate.len());
        if prefix[..n] == candidate[..n] {
            if n == candidate.len() {
                return Sniffed::Http;
            }
            undecided = true;
        }
    }
    if undecided { Sniffed::NeedMore } else { Sniffed::Tcp }
}

/// An IO whose reads return `prefix` first, then the inner stream's bytes; writes go to the inner stream.
pub struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn first_bytes_tell_http_from_tcp() {
        let cases: [(&[u8], Sniffed); 10] = [
            (b"", Sniffed::NeedMore),
            (b"G", Sniffed::NeedMore),
            (b"GET", Sniffed::NeedMore),
            (b"GET /", Sniffed::Http),
            (b"POST /x HTTP/1.1", Sniffed::Http),
            (b"PRI * HTTP/2.0", Sniffed::NeedMore),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0", Sniffed::Http),
            (b"GETX", Sniffed::Tcp),
            (b"\x16\x03\x01", Sniffed::Tcp),
            (b"hello", Sniffed::Tcp),
        ];
        for (prefix, expected) in cases {
            assert_eq!(sniff(prefix), expected, "{:?}", String::from_utf8_lossy(prefix));
        }
    }

    #[tokio::test]
    async fn the_prefix_is_read_first() {
        let inner: &[u8] = b" world";
        let mut io = Prefixed::new(Bytes::from_static(b"hello"), inner);
        let mut out = String::new();
        io.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}

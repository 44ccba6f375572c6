//! Minimal HTTP/1.1 client of the load generator: one pre-built request, responses parsed
//! with `httparse` (Content-Length, chunked and close-delimited bodies), bodies counted and discarded.

use std::io;

use bytes::{Buf as _, Bytes, BytesMut};
use httparse::Status;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::parse::{Header, HttpUrl};

/// Bytes requested from the socket per read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Largest accepted response head (status line plus headers), and trailer section.
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 64;

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    Io(io::Error),
    Protocol(&'static str),
}

impl From<io::Error> for ExchangeError {
    fn from(error: io::Error) -> Self {
        ExchangeError::Io(error)
    }
}

/// What a complete response looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseInfo {
    pub status: u16,
    pub body_bytes: u64,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

/// Render the request sent for every exchange, once.
///
/// `host` and `user-agent` are added unless given in `headers`; with `close`,
/// `connection: close` replaces any `connection` header.
pub(crate) fn build_request(url: &HttpUrl, headers: &[Header], close: bool) -> Bytes {
    let mut buf = Vec::with_capacity(
        64 + url.path_and_query.len()
            + url.authority.len()
            + headers
                .iter()
                .map(|h| h.name.as_str().len() + h.value.len() + 4)
                .sum::<usize>(),
    );
    buf.extend_from_slice(b"GET ");
    buf.extend_from_slice(url.path_and_query.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|h| h.name == name);
    if !has("host") {
        buf.extend_from_slice(b"host: ");
        buf.extend_from_slice(url.authority.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if !has("user-agent") {
        buf.extend_from_slice(b"user-agent: ambit-load\r\n");
    }
    for header in headers {
        if close && header.name == "connection" {
            continue;
        }
        buf.extend_from_slice(header.name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(header.value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if close {
        buf.extend_from_slice(b"connection: close\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    Bytes::from(buf)
}

/// Send `request` and read one complete response; `buf` is the connection's read buffer.
pub(crate) async fn exchange(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    request: &[u8],
) -> Result<ResponseInfo, ExchangeError> {
    if !buf.is_empty() {
        return Err(ExchangeError::Protocol("unsolicited data before the response"));
    }
    stream.write_all(request).await?;
    read_response(stream, buf).await
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    body: BodyKind,
    keep_alive: bool,
}

async fn read_response(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<ResponseInfo, ExchangeError> {
    loop {
        let head = loop {
            if let Some(head) = parse_head(buf)? {
                break head;
            }
            if buf.len() >= MAX_HEAD {
                return Err(ExchangeError::Protocol("response head too large"));
            }
            read_more(stream, buf).await?;
        };
        if (100..200).contains(&head.status) {
            if head.status == 101 {
                return Err(ExchangeError::Protocol("unexpected protocol switch"));
            }
            // Informational response: the final one follows.
            continue;
        }
        let body_bytes = match head.body {
            BodyKind::Empty => 0,
            BodyKind::Length(len) => {
                discard(stream, buf, len).await?;
                len
            }
            BodyKind::Chunked => discard_chunked(stream, buf).await?,
            BodyKind::UntilClose => discard_until_close(stream, buf).await?,
        };
        return Ok(ResponseInfo {
            status: head.status,
            body_bytes,
            keep_alive: head.keep_alive,
        });
    }
}

/// Parse a response head at the start of `buf` and consume it; `None` when incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, ExchangeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Protocol("too many response headers"));
        }
        Err(_) => return Err(ExchangeError::Protocol("malformed response head")),
    };
    let status = response.code.unwrap_or(0);
    let mut keep_alive = response.version == Some(1);
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(header.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(ExchangeError::Protocol("invalid content-length"))?;
            if length.is_some_and(|previous| previous != len) {
                return Err(ExchangeError::Protocol("conflicting content-length"));
            }
            length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            chunked = header
                .value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .next_back()
                .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        BodyKind::Empty
    } else if transfer_encoding {
        if chunked {
            BodyKind::Chunked
        } else {
            BodyKind::UntilClose
        }
    } else if let Some(len) = length {
        BodyKind::Length(len)
    } else {
        BodyKind::UntilClose
    };
    if body == BodyKind::UntilClose {
        keep_alive = false;
    }
    buf.advance(head_len);
    Ok(Some(Head {
        status,
        body,
        keep_alive,
    }))
}

/// Read more bytes into `buf`; end of stream is an error (the response is incomplete).
async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), ExchangeError> {
    if read_some(stream, buf).await? == 0 {
        return Err(ExchangeError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the response was complete",
        )));
    }
    Ok(())
}

async fn read_some(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    // Reclaims the consumed front of the buffer instead of growing it.
    buf.reserve(READ_CHUNK);
    stream.read_buf(buf).await
}

/// Consume exactly `len` body bytes.
async fn discard(stream: &mut TcpStream, buf: &mut BytesMut, mut len: u64) -> Result<(), ExchangeError> {
    loop {
        let take = usize::try_from(len).unwrap_or(usize::MAX).min(buf.len());
        buf.advance(take);
        len -= take as u64;
        if len == 0 {
            return Ok(());
        }
        read_more(stream, buf).await?;
    }
}

/// Consume a chunked body and its trailers; returns the payload length.
async fn discard_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<u64, ExchangeError> {
    let mut total = 0u64;
    loop {
        let size = loop {
            match httparse::parse_chunk_size(buf) {
                Ok(Status::Complete((used, size))) => {
                    buf.advance(used);
                    break size;
                }
                Ok(Status::Partial) => {
                    if buf.len() >= MAX_HEAD {
                        return Err(ExchangeError::Protocol("chunk size line too long"));
                    }
                    read_more(stream, buf).await?;
                }
                Err(_) => return Err(ExchangeError::Protocol("invalid chunk size")),
            }
        };
        if size == 0 {
            // Trailer section: header lines up to an empty line.
            loop {
                match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        buf.advance(2);
                        return Ok(total);
                    }
                    Some(end) => buf.advance(end + 2),
                    None => {
                        if buf.len() >= MAX_HEAD {
                            return Err(ExchangeError::Protocol("trailer section too large"));
                        }
                        read_more(stream, buf).await?;
                    }
                }
            }
        }
        discard(stream, buf, size).await?;
        total += size;
        while buf.len() < 2 {
            read_more(stream, buf).await?;
        }
        if &buf[..2] != b"\r\n" {
            return Err(ExchangeError::Protocol("chunk not followed by CRLF"));
        }
        buf.advance(2);
    }
}

/// Consume a body delimited by the end of the connection.
async fn discard_until_close(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<u64, ExchangeError> {
    let mut total = buf.len() as u64;
    buf.clear();
    loop {
        let n = read_some(stream, buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn url(s: &str) -> HttpUrl {
        s.parse().unwrap()
    }

    #[test]
    fn request_rendering() {
        let req = build_request(&url("http://echo:8080/a?b=1"), &[], false);
        assert_eq!(
            &req[..],
            b"GET /a?b=1 HTTP/1.1\r\nhost: echo:8080\r\nuser-agent: ambit-load\r\n\r\n"
        );
        let headers: Vec<Header> = ["Host: other", "connection: keep-alive", "x-a: 1"]
            .iter()
            .map(|h| h.parse().unwrap())
            .collect();
        let req = build_request(&url("http://echo/"), &headers, true);
        assert_eq!(
            &req[..],
            b"GET / HTTP/1.1\r\nuser-agent: ambit-load\r\nhost: other\r\nx-a: 1\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn head_parsing() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..]);
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                body: BodyKind::Length(5),
                keep_alive: true
            }
        );
        assert_eq!(&buf[..], b"hello");

        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Len"[..]);
        assert_eq!(parse_head(&mut buf).unwrap(), None);

        let mut buf = BytesMut::from(
            &b"HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"[..],
        );
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(head.status, 503);
        assert_eq!(head.body, BodyKind::Chunked);
        assert!(!head.keep_alive);

        let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]);
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(head.body, BodyKind::UntilClose);
        assert!(!head.keep_alive);

        let mut buf = BytesMut::from(&b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n"[..]);
        assert_eq!(parse_head(&mut buf).unwrap().unwrap().body, BodyKind::Empty);

        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"[..],
            &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..],
            &b"garbage\r\n\r\n"[..],
        ] {
            assert!(parse_head(&mut BytesMut::from(bad)).is_err());
        }
    }

    /// Serve `raw` to one client (in small pieces) and return what the client parsed.
    async fn exchange_with(raw: &'static [u8]) -> (Result<ResponseInfo, ExchangeError>, BytesMut) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await.unwrap();
            for piece in raw.chunks(7) {
                s.write_all(piece).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut buf = BytesMut::new();
        let result = exchange(&mut stream, &mut buf, b"GET / HTTP/1.1\r\n\r\n").await;
        server.await.unwrap();
        (result, buf)
    }

    #[tokio::test]
    async fn chunked_response() {
        let (result, buf) = exchange_with(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\n",
        )
        .await;
        let info = result.unwrap();
        assert_eq!(info.status, 200);
        assert_eq!(info.body_bytes, 21);
        assert!(info.keep_alive);
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn content_length_and_close_delimited() {
        let (result, buf) = exchange_with(b"HTTP/1.1 500 Oops\r\ncontent-length: 12\r\n\r\nhello world!").await;
        let info = result.unwrap();
        assert_eq!((info.status, info.body_bytes), (500, 12));
        assert!(buf.is_empty());

        let (result, _) = exchange_with(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
        let info = result.unwrap();
        assert_eq!(info.body_bytes, 13);
        assert!(!info.keep_alive);
    }

    #[tokio::test]
    async fn truncated_body_is_io_error() {
        let (result, _) = exchange_with(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort").await;
        assert!(matches!(result, Err(ExchangeError::Io(_))));
        let (result, _) = exchange_with(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").await;
        assert!(matches!(result, Err(ExchangeError::Protocol(_))));
    }
}

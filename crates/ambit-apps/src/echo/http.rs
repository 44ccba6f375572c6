//! The echo HTTP handler: describes the request it saw, with query knobs for status, delay and size.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt::{self, Display};
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use serde::Serialize;
use serde::ser::{SerializeSeq as _, SerializeTuple as _, Serializer};

use super::fail::FailRate;
use super::identity::Identity;

/// Largest `delay_ms` honoured; larger values are capped.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Largest `size` honoured; larger values are capped.
pub const MAX_FILLER: usize = 64 * 1024 * 1024;

const FILLER_CHUNK: usize = 64 * 1024;
/// Filler bytes are served as slices of this static block: no allocation or copy per response.
static FILLER: [u8; FILLER_CHUNK] = [b'x'; FILLER_CHUNK];

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const APPLICATION_JSON: &str = "application/json";
static X_ECHO_POD: HeaderName = HeaderName::from_static("x-echo-pod");
static X_ECHO_NAMESPACE: HeaderName = HeaderName::from_static("x-echo-namespace");

/// Server-wide state shared by every HTTP connection.
#[derive(Debug)]
pub(crate) struct HttpShared {
    identity: Identity,
    identity_line: Box<[u8]>,
    pod_header: HeaderValue,
    namespace_header: HeaderValue,
    fail: FailRate,
    /// The body of an injected failure, rendered once.
    fail_body: Bytes,
}

impl HttpShared {
    pub(crate) fn new(identity: Identity, fail: FailRate) -> Self {
        let header = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
        Self {
            identity_line: identity.text_line().into_bytes().into_boxed_slice(),
            pod_header: header(&identity.pod),
            namespace_header: header(&identity.namespace),
            fail_body: Bytes::from(injected_failure_body(&identity.pod, fail)),
            fail,
            identity,
        }
    }

    /// The pod name this server reports.
    pub(crate) fn pod(&self) -> &str {
        &self.identity.pod
    }
}

/// The body of a response failed on purpose: says so, and names the pod and the configured rate.
pub(crate) fn injected_failure_body(pod: &str, fail: FailRate) -> String {
    format!("injected failure: pod={pod} fails {fail} of requests (--fail-percent)\n")
}

/// Per-connection state: addresses are rendered once, not per request.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    shared: Arc<HttpShared>,
    peer: String,
    local: String,
}

impl ConnInfo {
    pub(crate) fn new(shared: Arc<HttpShared>, peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            shared,
            peer: peer.to_string(),
            local: local.to_string(),
        }
    }
}

/// Response knobs read from the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Knobs {
    status: StatusCode,
    delay: Duration,
    size: usize,
    /// `Some(true)` for `format=json`, `Some(false)` for `format=text`.
    json: Option<bool>,
}

impl Knobs {
    fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut knobs = Knobs {
            status: StatusCode::OK,
            delay: Duration::ZERO,
            size: 0,
            json: None,
        };
        let Some(query) = query else {
            return Ok(knobs);
        };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "status" => {
                    knobs.status = value
                        .parse::<u16>()
                        .ok()
                        .filter(|code| (100..=599).contains(code))
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .ok_or_else(|| format!("invalid status {value:?}: expected 100..=599"))?;
                }
                "delay_ms" => {
                    let ms = value
                        .parse::<u64>()
                        .map_err(|_| format!("invalid delay_ms {value:?}"))?;
                    knobs.delay = Duration::from_millis(ms.min(MAX_DELAY_MS));
                }
                "size" => {
                    let size = value.parse::<u64>().map_err(|_| format!("invalid size {value:?}"))?;
                    knobs.size = usize::try_from(size).unwrap_or(MAX_FILLER).min(MAX_FILLER);
                }
                "format" => {
                    knobs.json = match value {
                        "json" => Some(true),
                        "text" | "plain" => Some(false),
                        _ => {
                            return Err(format!("invalid format {value:?}: expected json or text"));
                        }
                    };
                }
                _ => {}
            }
        }
        Ok(knobs)
    }
}

/// Serve one request: read the body, fail it on purpose with the configured probability (503, no knobs
/// applied), else wait `delay_ms` and describe what was seen.
pub(crate) async fn handle(req: Request<Incoming>, conn: Arc<ConnInfo>) -> Result<Response<EchoBody>, Infallible> {
    let shared = &conn.shared;
    let knobs = match Knobs::parse(req.uri().query()) {
        Ok(knobs) => knobs,
        Err(message) => {
            let mut body = message.into_bytes();
            body.push(b'\n');
            return Ok(response(
                shared,
                StatusCode::BAD_REQUEST,
                TEXT_PLAIN,
                EchoBody::new(Bytes::from(body), 0, None),
            ));
        }
    };
    let json = knobs.json.unwrap_or_else(|| accepts_json(req.headers()));
    let (parts, mut body) = req.into_parts();

    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "reading request body failed");
                break;
            }
        }
    }
    if shared.fail.roll() {
        return Ok(response(
            shared,
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT_PLAIN,
            EchoBody::new(shared.fail_body.clone(), 0, None),
        ));
    }
    if !knobs.delay.is_zero() {
        tokio::time::sleep(knobs.delay).await;
    }

    let seen = Seen {
        conn: &conn,
        method: parts.method.as_str(),
        target: RequestTarget::new(&parts.uri, parts.version),
        authority: pseudo_authority(&parts.uri, parts.version),
        version: version_str(parts.version),
        headers: &parts.headers,
        body_bytes,
    };
    // Responses to these statuses carry no body.
    let size = if knobs.status.is_informational()
        || knobs.status == StatusCode::NO_CONTENT
        || knobs.status == StatusCode::NOT_MODIFIED
    {
        None
    } else {
        Some(knobs.size)
    };
    let resp = match (size, json) {
        (None, _) => response(shared, knobs.status, TEXT_PLAIN, EchoBody::empty()),
        (Some(size), false) => response(
            shared,
            knobs.status,
            TEXT_PLAIN,
            EchoBody::new(Bytes::from(seen.text()), size, None),
        ),
        (Some(size), true) => {
            let mut head = seen.json();
            let tail = if size > 0 {
                // Keep the document valid JSON: the filler becomes a string field.
                head.pop();
                head.extend_from_slice(b",\"filler\":\"");
                Some(Bytes::from_static(b"\"}"))
            } else {
                None
            };
            response(
                shared,
                knobs.status,
                APPLICATION_JSON,
                EchoBody::new(Bytes::from(head), size, tail),
            )
        }
    };
    Ok(resp)
}

fn response(shared: &HttpShared, status: StatusCode, content_type: &'static str, body: EchoBody) -> Response<EchoBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_ECHO_POD.clone(), shared.pod_header.clone());
    headers.insert(X_ECHO_NAMESPACE.clone(), shared.namespace_header.clone());
    resp
}

fn accepts_json(headers: &HeaderMap) -> bool {
    const NEEDLE: &[u8] = APPLICATION_JSON.as_bytes();
    headers
        .get_all(ACCEPT)
        .iter()
        .any(|v| v.as_bytes().windows(NEEDLE.len()).any(|w| w == NEEDLE))
}

fn version_str(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

fn is_h1(version: Version) -> bool {
    matches!(version, Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11)
}

/// The `:authority` pseudo-header of an HTTP/2 request (HTTP/1 sends `host` instead).
fn pseudo_authority(uri: &Uri, version: Version) -> Option<&str> {
    if is_h1(version) {
        None
    } else {
        uri.authority().map(|a| a.as_str())
    }
}

/// The request target as the client sent it: the raw URI for HTTP/1, path and query for HTTP/2.
#[derive(Debug, Clone, Copy)]
struct RequestTarget<'a> {
    uri: &'a Uri,
    origin_form: bool,
}

impl<'a> RequestTarget<'a> {
    fn new(uri: &'a Uri, version: Version) -> Self {
        Self {
            uri,
            origin_form: !is_h1(version) && uri.path_and_query().is_some(),
        }
    }
}

impl Display for RequestTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.uri.path_and_query() {
            Some(pq) if self.origin_form => Display::fmt(pq, f),
            _ => Display::fmt(self.uri, f),
        }
    }
}

/// Everything the server saw about one request.
struct Seen<'a> {
    conn: &'a ConnInfo,
    method: &'a str,
    target: RequestTarget<'a>,
    authority: Option<&'a str>,
    version: &'static str,
    headers: &'a HeaderMap,
    body_bytes: u64,
}

impl Seen<'_> {
    /// The plain-text description, built into one pre-sized buffer.
    fn text(&self) -> Vec<u8> {
        let conn = self.conn;
        let identity = &conn.shared.identity_line;
        let headers_len: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 3).sum();
        let capacity = identity.len()
            + conn.peer.len()
            + conn.local.len()
            + self.method.len()
            + self.target.uri.path_and_query().map_or(0, |pq| pq.as_str().len())
            + self.authority.map_or(0, |a| a.len() + 2)
            + headers_len
            + 96;
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(identity);
        buf.extend_from_slice(b"peer=");
        buf.extend_from_slice(conn.peer.as_bytes());
        buf.extend_from_slice(b"\nlocal=");
        buf.extend_from_slice(conn.local.as_bytes());
        buf.push(b'\n');
        buf.extend_from_slice(self.method.as_bytes());
        buf.push(b' ');
        // Writing into a Vec cannot fail.
        let _ = write!(buf, "{}", self.target);
        buf.push(b' ');
        buf.extend_from_slice(self.version.as_bytes());
        buf.push(b'\n');
        if let Some(authority) = self.authority {
            buf.extend_from_slice(b":authority: ");
            buf.extend_from_slice(authority.as_bytes());
            buf.push(b'\n');
        }
        for (name, value) in self.headers {
            buf.extend_from_slice(name.as_str().as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.push(b'\n');
        }
        let _ = writeln!(buf, "body_bytes={}", self.body_bytes);
        buf
    }

    /// The JSON description, serialized straight from borrowed data.
    fn json(&self) -> Vec<u8> {
        let identity = &self.conn.shared.identity;
        let doc = JsonSeen {
            pod: &identity.pod,
            namespace: &identity.namespace,
            node: &identity.node,
            ip: &identity.ip,
            peer: &self.conn.peer,
            local: &self.conn.local,
            method: self.method,
            uri: DisplayStr(self.target),
            version: self.version,
            headers: HeaderList {
                authority: self.authority,
                headers: self.headers,
            },
            body_bytes: self.body_bytes,
        };
        let mut buf = Vec::with_capacity(512);
        // Serializing plain strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut buf, &doc);
        buf
    }
}

#[derive(Serialize)]
struct JsonSeen<'a> {
    pod: &'a str,
    namespace: &'a str,
    node: &'a str,
    ip: &'a str,
    peer: &'a str,
    local: &'a str,
    method: &'a str,
    uri: DisplayStr<RequestTarget<'a>>,
    version: &'a str,
    headers: HeaderList<'a>,
    body_bytes: u64,
}

/// Serializes any `Display` value as a JSON string without an intermediate `String`.
struct DisplayStr<T>(T);

impl<T: Display> Serialize for DisplayStr<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// Headers as a list of `[name, value]` pairs, in the order received.
struct HeaderList<'a> {
    authority: Option<&'a str>,
    headers: &'a HeaderMap,
}

impl Serialize for HeaderList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = self.headers.len() + usize::from(self.authority.is_some());
        let mut seq = serializer.serialize_seq(Some(len))?;
        if let Some(authority) = self.authority {
            seq.serialize_element(&Pair(":authority", Cow::Borrowed(authority)))?;
        }
        for (name, value) in self.headers {
            seq.serialize_element(&Pair(name.as_str(), String::from_utf8_lossy(value.as_bytes())))?;
        }
        seq.end()
    }
}

struct Pair<'a>(&'a str, Cow<'a, str>);

impl Serialize for Pair<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(self.0)?;
        tuple.serialize_element(&*self.1)?;
        tuple.end()
    }
}

/// Response body: a head, `filler` bytes from a static block, and an optional tail.
///
/// Its exact size is known up front, so HTTP/1 responses get a `content-length`.
#[derive(Debug)]
pub(crate) struct EchoBody {
    head: Option<Bytes>,
    filler: usize,
    tail: Option<Bytes>,
}

impl EchoBody {
    fn new(head: Bytes, filler: usize, tail: Option<Bytes>) -> Self {
        Self {
            head: Some(head).filter(|h| !h.is_empty()),
            filler,
            tail: tail.filter(|t| !t.is_empty()),
        }
    }

    fn empty() -> Self {
        Self {
            head: None,
            filler: 0,
            tail: None,
        }
    }

    fn remaining(&self) -> u64 {
        let part = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
        part(&self.head) + self.filler as u64 + part(&self.tail)
    }
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if this.filler > 0 {
            let n = this.filler.min(FILLER_CHUNK);
            this.filler -= n;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))));
        }
        Poll::Ready(this.tail.take().map(|tail| Ok(Frame::data(tail))))
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.filler == 0 && self.tail.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_target(uri: &Uri, version: Version) -> String {
        RequestTarget::new(uri, version).to_string()
    }

    #[test]
    fn knobs_defaults_and_values() {
        let k = Knobs::parse(None).unwrap();
        assert_eq!(k.status, StatusCode::OK);
        assert_eq!(k.delay, Duration::ZERO);
        assert_eq!(k.size, 0);
        assert_eq!(k.json, None);

        let k = Knobs::parse(Some("x=1&status=503&delay_ms=20&size=10&format=json")).unwrap();
        assert_eq!(k.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(k.delay, Duration::from_millis(20));
        assert_eq!(k.size, 10);
        assert_eq!(k.json, Some(true));
    }

    #[test]
    fn knobs_caps_and_errors() {
        let k = Knobs::parse(Some("delay_ms=99999999&size=99999999999")).unwrap();
        assert_eq!(k.delay, Duration::from_millis(MAX_DELAY_MS));
        assert_eq!(k.size, MAX_FILLER);
        assert!(Knobs::parse(Some("status=600")).is_err());
        assert!(Knobs::parse(Some("status=99")).is_err());
        assert!(Knobs::parse(Some("status=abc")).is_err());
        assert!(Knobs::parse(Some("delay_ms=-1")).is_err());
        assert!(Knobs::parse(Some("format=xml")).is_err());
        assert_eq!(Knobs::parse(Some("status=100")).unwrap().status, StatusCode::CONTINUE);
    }

    #[test]
    fn injected_failure_body_names_pod_and_rate() {
        let cases = [
            (
                FailRate::ALWAYS,
                "injected failure: pod=echo-1 fails 100% of requests (--fail-percent)\n",
            ),
            (
                "12.5".parse().unwrap(),
                "injected failure: pod=echo-1 fails 12.5% of requests (--fail-percent)\n",
            ),
        ];
        for (rate, want) in cases {
            assert_eq!(injected_failure_body("echo-1", rate), want);
        }
    }

    #[test]
    fn request_target_forms() {
        let uri: Uri = "http://echo:8080/a?b=1".parse().unwrap();
        assert_eq!(render_target(&uri, Version::HTTP_2), "/a?b=1");
        assert_eq!(render_target(&uri, Version::HTTP_11), "http://echo:8080/a?b=1");
        let uri: Uri = "/a?b=1".parse().unwrap();
        assert_eq!(render_target(&uri, Version::HTTP_11), "/a?b=1");
    }

    #[test]
    fn body_sizes_and_frames() {
        let mut body = EchoBody::new(
            Bytes::from_static(b"head"),
            FILLER_CHUNK + 5,
            Some(Bytes::from_static(b"\"}")),
        );
        assert_eq!(body.size_hint().exact(), Some(4 + FILLER_CHUNK as u64 + 5 + 2));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut lens = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            lens.push(frame.into_data().map(|d| d.len()).unwrap_or(0));
        }
        assert_eq!(lens, vec![4, FILLER_CHUNK, 5, 2]);
        assert!(body.is_end_stream());
    }
}

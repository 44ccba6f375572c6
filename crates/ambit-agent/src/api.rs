//! The agent's client of the control plane API: JSON over HTTP/1.1 on the control plane's unix socket, one request
//! per connection. Two calls: the long poll of the node's pods (`GET /v1/nodes/{node}/pods`) and the metadata patch
//! of a pod (`POST /v1/patch`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::pods::NodeView;

/// How long one exchange may take beyond the time the server was asked to hold a long poll.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest reply read (every pod of a big node, many times over).
const MAX_REPLY: usize = 64 << 20;
/// Bytes escaped in a path segment or query value: all but RFC 3986's unreserved ones, so a node name (a DNS name)
/// goes as it is.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A client of one control plane's API socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing listens on the socket (the control plane is down or restarting).
    #[error("cannot reach the control plane at {}", socket.display())]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The control plane answered with an error status.
    #[error("{request}: the control plane answered {status}: {message}")]
    Status {
        request: String,
        status: u16,
        message: String,
    },
    /// The exchange broke off, timed out, or the reply is not what the API promises.
    #[error("{request}: {reason}")]
    Failed { request: String, reason: String },
}

/// A label or annotation change: `Some` sets the value, `None` removes the key.
pub type MetadataChange<'a> = (&'a str, Option<&'a str>);

// === impl ApiError ===

impl ApiError {
    /// The object does not exist (or the pod's uid differs: it was re-created).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { status: 404, .. })
    }
}

// === impl Client ===

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Client {
            socket,
            timeout: TIMEOUT,
        }
    }

    /// The same client with another timeout per exchange.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Client { timeout, ..self }
    }

    /// `GET /v1/nodes/{node}/pods`: the node's pods and every namespace; answered at once when the revision
    /// differs from `revision`, else when it changes or after `wait` (whole seconds, at least 1).
    pub async fn node_pods(&self, node: &str, revision: Option<&str>, wait: Duration) -> Result<NodeView, ApiError> {
        let target = node_pods_target(node, revision, wait);
        let request = format!("GET {target}");
        let body = self.call(Method::GET, &target, None, wait + self.timeout).await?;
        NodeView::from_json(&body).map_err(|e| ApiError::Failed {
            request,
            reason: format!("the reply does not have the API's shape: {e}"),
        })
    }

    /// `POST /v1/patch` of a pod's annotations, for the pod with `uid` only.
    pub async fn patch_pod_annotations(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        changes: &[MetadataChange<'_>],
    ) -> Result<(), ApiError> {
        let annotations: serde_json::Map<String, Value> = changes
            .iter()
            .map(|(key, value)| (key.to_string(), value.map_or(Value::Null, |v| Value::String(v.into()))))
            .collect();
        let body = json!({
            "kind": "Pod",
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "metadata": { "annotations": annotations },
        });
        self.call(Method::POST, "/v1/patch", Some(body), self.timeout).await?;
        Ok(())
    }

    /// One exchange within `limit`: the reply body of a 2xx, an error otherwise.
    async fn call(
        &self,
        method: Method,
        target: &str,
        body: Option<Value>,
        limit: Duration,
    ) -> Result<Bytes, ApiError> {
        let request = format!("{method} {target}");
        let (status, bytes) = match tokio::time::timeout(limit, self.exchange(method, target, body)).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(ApiError::Failed {
                    request,
                    reason: format!("no reply within {:?}", limit),
                });
            }
        };
        if status.is_success() {
            return Ok(bytes);
        }
        Err(ApiError::Status {
            request,
            status: status.as_u16(),
            message: error_message(&bytes),
        })
    }

    /// Connect, send, read the whole reply.
    async fn exchange(
        &self,
        method: Method,
        target: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let failed = |reason: String| ApiError::Failed {
            request: format!("{method} {target}"),
            reason,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ApiError::Unreachable {
                socket: self.socket.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(format!("cannot start HTTP: {e}")))?;
        let driver = tokio::spawn(connection);
        let request = build_request(method.clone(), target, body).map_err(|e| failed(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed(format!("no reply: {e}")))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| failed(format!("cannot read the reply: {e}")))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }
}

/// `/v1/nodes/NODE/pods?revision=R&timeoutSeconds=T`, the node name escaped.
fn node_pods_target(node: &str, revision: Option<&str>, wait: Duration) -> String {
    let node = utf8_percent_encode(node, UNRESERVED);
    let seconds = wait.as_secs().max(1);
    match revision {
        Some(revision) => {
            let revision = utf8_percent_encode(revision, UNRESERVED);
            format!("/v1/nodes/{node}/pods?revision={revision}&timeoutSeconds={seconds}")
        }
        None => format!("/v1/nodes/{node}/pods?timeoutSeconds={seconds}"),
    }
}

/// The HTTP request: JSON in and out.
fn build_request(
    method: Method,
    target: &str,
    body: Option<Value>,
) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let builder = Request::builder()
        .method(method)
        .uri(target)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::ACCEPT, "application/json");
    match body {
        Some(body) => builder
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string()))),
        None => builder.body(Full::new(Bytes::new())),
    }
}

/// What an error reply says: the API's `{"errors":[{"field","message"}]}` as `field: message; ...`, else the start of
/// the body.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Diagnostic>,
    }
    #[derive(Deserialize)]
    struct Diagnostic {
        #[serde(default)]
        field: String,
        message: String,
    }
    impl fmt::Display for Diagnostic {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self.field.as_str() {
                "" => f.write_str(&self.message),
                field => write!(f, "{field}: {}", self.message),
            }
        }
    }
    if let Ok(errors) = serde_json::from_slice::<Errors>(body) {
        return errors
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
    }
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]).trim().to_string();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_pods_targets_escape_the_node_and_revision() {
        let s = Duration::from_secs;
        let cases = [
            ("node-1.x", None, s(30), "/v1/nodes/node-1.x/pods?timeoutSeconds=30"),
            ("a/b c", None, s(30), "/v1/nodes/a%2Fb%20c/pods?timeoutSeconds=30"),
            (
                "n1",
                Some("17"),
                s(30),
                "/v1/nodes/n1/pods?revision=17&timeoutSeconds=30",
            ),
            (
                "n1",
                Some("a&b"),
                Duration::from_millis(10),
                "/v1/nodes/n1/pods?revision=a%26b&timeoutSeconds=1",
            ),
        ];
        for (node, revision, wait, want) in cases {
            assert_eq!(node_pods_target(node, revision, wait), want);
        }
    }

    #[test]
    fn error_messages_come_from_the_api_diagnostics_or_the_body() {
        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"errors":[{"field":"metadata.annotations.a b","message":"invalid key"},{"message":"x"}]}"#,
                "metadata.annotations.a b: invalid key; x",
            ),
            (b"not found\n", "not found"),
            (b"", "(empty body)"),
        ];
        for (body, want) in cases {
            assert_eq!(error_message(body), *want);
        }
    }
}

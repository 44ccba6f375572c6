//! The client of the control plane's config API (`ambit apply`, `delete`, `get <config kind>`, `describe pod`,
//! `label`, `annotate`): JSON over HTTP/1.1 on the control plane's Unix socket, which the host reaches whatever
//! namespace the control plane runs in. Wire types mirror the API contract; the commands render them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long one request (connect, send, whole reply) may take: an apply validates and persists a batch, which is
/// quick; a control plane that takes longer is stuck.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest reply read: a list of every object of a big cluster fits many times over.
const MAX_REPLY: usize = 64 << 20;
/// Bytes escaped in a query value: those the query grammar (RFC 3986) does not allow, and the ones that split or
/// encode parameters (`&`, `=`, `+`, `#`, `%`). `:` and `/` stay as they are, so a SPIFFE ID reads as itself.
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// One manifest sent to apply or delete: its name (the file as the user gave it, `-` for stdin) and its text.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// One problem the control plane found, about a document of a source or about the request itself (`file` empty and
/// `document` 0).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Diagnostic {
    #[serde(default)]
    pub file: String,
    #[serde(default)]
    pub document: usize,
    #[serde(default)]
    pub object: Option<String>,
    #[serde(default)]
    pub field: String,
    pub message: String,
}

/// What apply or delete did to one object.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct ObjectResult {
    pub kind: String,
    /// Absent or empty for cluster-scoped kinds.
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    /// `created`, `configured`, `unchanged` or `deleted`.
    pub outcome: String,
}

/// `GET /v1/describe/pod`: a pod as the mesh sees it, and the verdict on one sample connection to it.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct PodDescription {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pod's SPIFFE ID.
    pub identity: String,
    pub node: String,
    pub addresses: Vec<String>,
    /// Whether traffic to the pod is tunnelled (HBONE) rather than plaintext.
    pub enrolled: bool,
    pub healthy: bool,
    #[serde(default)]
    pub waypoint: Option<String>,
    /// Hostnames of the services that select the pod.
    pub services: Vec<String>,
    /// Every policy that applies to the pod, in evaluation order.
    pub policies: Vec<PolicySummary>,
    pub sample: SampleVerdict,
}

/// One policy that applies to a described pod.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct PolicySummary {
    pub name: String,
    pub namespace: String,
    /// `WORKLOAD_SELECTOR`, `NAMESPACE` or `GLOBAL`.
    pub scope: String,
    /// `ALLOW`, `DENY`, `AUDIT` or `CUSTOM`.
    pub action: String,
    /// Whether the policy matches the sample connection.
    pub matches: bool,
}

/// The decision on the sample connection of a description.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct SampleVerdict {
    pub peer: String,
    pub port: u16,
    pub allowed: bool,
    /// Which policy or rule decided, in words.
    pub reason: String,
}

/// Why a call to the API failed.
#[derive(Debug)]
pub enum ApiError {
    /// No control plane listens on the socket (missing, refused, not permitted).
    Unreachable {
        socket: PathBuf,
        reason: String,
        hint: &'static str,
    },
    /// The control plane answered with an error status and said why.
    Rejected { status: u16, diagnostics: Vec<Diagnostic> },
    /// The exchange broke off, timed out, or the reply is not what the API promises.
    Failed { request: String, reason: String },
}

/// A client of one control plane's API socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// The query of `GET /v1/objects`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectQuery<'a> {
    /// The Kind name, e.g. `AuthorizationPolicy`.
    pub kind: &'a str,
    /// None: every namespace (and cluster-scoped kinds).
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

// === impl Diagnostic ===

impl fmt::Display for Diagnostic {
    /// `<file>: document <n>: <object>: <field>: <message>`, leaving out the parts that are empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let document = (self.document > 0).then(|| format!("document {}", self.document));
        let parts = [
            Some(self.file.as_str()),
            document.as_deref(),
            self.object.as_deref(),
            Some(self.field.as_str()),
        ];
        for part in parts.into_iter().flatten().filter(|p| !p.is_empty()) {
            write!(f, "{part}: ")?;
        }
        f.write_str(&self.message)
    }
}

// === impl ApiError ===

impl ApiError {
    /// The error of a failed connect to `socket`, with a hint at the likely cause.
    fn unreachable(socket: &Path, error: &std::io::Error) -> Self {
        let hint = match error.kind() {
            std::io::ErrorKind::PermissionDenied => "(the API socket is root's only)",
            _ => "(is the cluster up?)",
        };
        ApiError::Unreachable {
            socket: socket.to_path_buf(),
            reason: error.to_string(),
            hint,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unreachable { socket, reason, hint } => {
                write!(
                    f,
                    "cannot reach the control plane at {}: {reason} {hint}",
                    socket.display()
                )
            }
            ApiError::Rejected { status, diagnostics } => {
                write!(f, "the control plane answered {status}")?;
                for d in diagnostics {
                    write!(f, "; {d}")?;
                }
                Ok(())
            }
            ApiError::Failed { request, reason } => write!(f, "{request}: {reason}"),
        }
    }
}

impl std::error::Error for ApiError {}

// === impl Client ===

impl Client {
    /// A client of the API served on `socket`, with the default [`TIMEOUT`].
    pub fn new(socket: PathBuf) -> Self {
        Client {
            socket,
            timeout: TIMEOUT,
        }
    }

    /// The same client with another per-request timeout (tests, and lookups that have a fallback, wait less than
    /// [`TIMEOUT`]).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Client { timeout, ..self }
    }

    /// `POST /v1/apply`: all sources as one batch, applied entirely or not at all.
    pub async fn apply(&self, sources: &[Source], dry_run: bool) -> Result<Vec<ObjectResult>, ApiError> {
        let body = json!({ "sources": sources, "dryRun": dry_run });
        self.results("/v1/apply", body).await
    }

    /// `POST /v1/delete`: the objects the sources' documents name, all deleted or none.
    pub async fn delete(&self, sources: &[Source], ignore_not_found: bool) -> Result<Vec<ObjectResult>, ApiError> {
        let body = json!({ "sources": sources, "ignoreNotFound": ignore_not_found });
        self.results("/v1/delete", body).await
    }

    /// `GET /v1/objects`: the matching objects as the API server returns them.
    pub async fn objects(&self, query: &ObjectQuery<'_>) -> Result<Vec<Value>, ApiError> {
        #[derive(Deserialize)]
        struct Items {
            items: Vec<Value>,
        }
        let target = query_target(
            "/v1/objects",
            &[
                ("kind", Some(query.kind)),
                ("namespace", query.namespace),
                ("name", query.name),
            ],
        );
        self.call::<Items>(Method::GET, &target, None).await.map(|r| r.items)
    }

    /// `GET /v1/describe/pod`.
    pub async fn describe_pod(
        &self,
        namespace: &str,
        name: &str,
        peer: Option<&str>,
        port: Option<u16>,
    ) -> Result<PodDescription, ApiError> {
        let port = port.map(|p| p.to_string());
        let target = query_target(
            "/v1/describe/pod",
            &[
                ("namespace", Some(namespace)),
                ("name", Some(name)),
                ("peer", peer),
                ("port", port.as_deref()),
            ],
        );
        self.call(Method::GET, &target, None).await
    }

    /// `POST /v1/patch`: a JSON merge patch of a pod's or namespace's labels and annotations; the patched object.
    pub async fn patch(&self, body: &Value) -> Result<Value, ApiError> {
        self.call(Method::POST, "/v1/patch", Some(body.clone())).await
    }

    /// A POST whose reply is `{"results":[...]}`.
    async fn results(&self, path: &str, body: Value) -> Result<Vec<ObjectResult>, ApiError> {
        #[derive(Deserialize)]
        struct Results {
            results: Vec<ObjectResult>,
        }
        self.call::<Results>(Method::POST, path, Some(body))
            .await
            .map(|r| r.results)
    }

    /// One request on a fresh connection, within the timeout: the body of a 2xx reply as `T`, or the error.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        target: &str,
        body: Option<Value>,
    ) -> Result<T, ApiError> {
        let request = format!("{method} {target}");
        let exchange = self.exchange(method, target, body);
        let (status, bytes) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(ApiError::Failed {
                    request,
                    reason: format!("no reply within {} s", self.timeout.as_secs_f64()),
                });
            }
        };
        let reply = interpret(&request, status, &bytes)?;
        decode(&request, reply)
    }

    /// Connect, send, and read the whole reply.
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
            .map_err(|e| ApiError::unreachable(&self.socket, &e))?;
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

/// Runs one command's API calls on a small runtime of the calling thread.
pub fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

/// `path?key=value&...` with the present parameters, values escaped.
fn query_target(path: &str, params: &[(&str, Option<&str>)]) -> String {
    let pairs: Vec<String> = params
        .iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key}={}", utf8_percent_encode(v, QUERY_VALUE))))
        .collect();
    if pairs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

/// The HTTP request: JSON in and out, one request per connection.
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

/// A reply as the API defines it: a 2xx status with a JSON body, or an error status with `{"errors":[...]}`.
fn interpret(request: &str, status: StatusCode, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Diagnostic>,
    }
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|e| ApiError::Failed {
            request: request.to_string(),
            reason: format!("the {status} reply is not JSON: {e}"),
        });
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(errors) => Err(ApiError::Rejected {
            status: status.as_u16(),
            diagnostics: errors.errors,
        }),
        Err(_) => Err(ApiError::Failed {
            request: request.to_string(),
            reason: format!("answered {status}: {}", excerpt(body)),
        }),
    }
}

/// A JSON reply as the type the API promises for it.
fn decode<T: DeserializeOwned>(request: &str, reply: Value) -> Result<T, ApiError> {
    serde_json::from_value(reply).map_err(|e| ApiError::Failed {
        request: request.to_string(),
        reason: format!("the reply does not have the API's shape: {e}"),
    })
}

/// The start of a body, as text, for an error message.
fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".into()
    } else if body.len() > MAX {
        format!("{text}...")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Response, header};

    use super::*;

    /// One request as the test server saw it.
    #[derive(Debug)]
    struct Seen {
        method: String,
        target: String,
        content_type: Option<String>,
        body: Value,
    }

    /// A server on a socket in `dir` that answers the first request of one connection with `status` and `reply`,
    /// and hands back that request.
    fn serve(dir: &Path, status: u16, reply: &'static str) -> (PathBuf, tokio::task::JoinHandle<Seen>) {
        let socket = dir.join("control.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let handle = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let tx = Arc::new(Mutex::new(Some(tx)));
            let service = service_fn(move |request: Request<Incoming>| {
                let tx = tx.clone();
                async move {
                    let method = request.method().to_string();
                    let target = request.uri().to_string();
                    let content_type = request
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .map(|v| v.to_str().unwrap().into());
                    let bytes = request.into_body().collect().await.unwrap().to_bytes();
                    let body = if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).unwrap()
                    };
                    let seen = Seen {
                        method,
                        target,
                        content_type,
                        body,
                    };
                    tx.lock().unwrap().take().unwrap().send(seen).unwrap();
                    let reply = Response::builder()
                        .status(status)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from_static(reply.as_bytes())))
                        .unwrap();
                    Ok::<_, Infallible>(reply)
                }
            });
            // The client closes the connection once it has the reply; how the server sees that does not matter.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            rx.await.unwrap()
        });
        (socket, handle)
    }

    fn source(name: &str, text: &str) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn apply_sends_the_batch_and_reads_the_results() {
        let dir = tempfile::tempdir().unwrap();
        let reply = r#"{"results":[{"kind":"AuthorizationPolicy","namespace":"web","name":"deny","outcome":"created"},
                                   {"kind":"Namespace","name":"web","outcome":"unchanged"}]}"#;
        let (socket, server) = serve(dir.path(), 200, reply);
        let sources = [source("p.yaml", "kind: AuthorizationPolicy\n"), source("-", "{}")];
        let results = Client::new(socket).apply(&sources, true).await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!((seen.method.as_str(), seen.target.as_str()), ("POST", "/v1/apply"));
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        let sent = json!({"sources": [{"name": "p.yaml", "text": "kind: AuthorizationPolicy\n"},
                                      {"name": "-", "text": "{}"}], "dryRun": true});
        assert_eq!(seen.body, sent);
        let names: Vec<(&str, Option<&str>, &str, &str)> = results
            .iter()
            .map(|r| {
                (
                    r.kind.as_str(),
                    r.namespace.as_deref(),
                    r.name.as_str(),
                    r.outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("AuthorizationPolicy", Some("web"), "deny", "created"),
                ("Namespace", None, "web", "unchanged")
            ]
        );
    }

    #[tokio::test]
    async fn delete_sends_ignore_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, server) = serve(dir.path(), 200, r#"{"results":[]}"#);
        let results = Client::new(socket)
            .delete(&[source("a.yaml", "x")], true)
            .await
            .unwrap();
        let seen = server.await.unwrap();
        assert!(results.is_empty());
        assert_eq!(seen.target, "/v1/delete");
        assert_eq!(
            seen.body,
            json!({"sources": [{"name": "a.yaml", "text": "x"}], "ignoreNotFound": true})
        );
    }

    #[tokio::test]
    async fn rejected_batches_carry_the_diagnostics() {
        let dir = tempfile::tempdir().unwrap();
        let reply = r#"{"errors":[{"file":"p.yaml","document":2,"object":"AuthorizationPolicy web/deny",
                                   "field":"spec.action","message":"unknown variant `DROP`"}]}"#;
        let (socket, _server) = serve(dir.path(), 422, reply);
        let error = Client::new(socket)
            .apply(&[source("p.yaml", "")], false)
            .await
            .unwrap_err();
        let ApiError::Rejected { status, diagnostics } = error else {
            panic!("{error:?}")
        };
        assert_eq!(status, 422);
        assert_eq!(
            diagnostics[0].to_string(),
            "p.yaml: document 2: AuthorizationPolicy web/deny: spec.action: unknown variant `DROP`"
        );
    }

    #[tokio::test]
    async fn objects_asks_for_the_kind_namespace_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let reply = r#"{"items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"web"}}]}"#;
        let (socket, server) = serve(dir.path(), 200, reply);
        let query = ObjectQuery {
            kind: "AuthorizationPolicy",
            namespace: Some("web"),
            name: Some("deny"),
        };
        let items = Client::new(socket).objects(&query).await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!(seen.method, "GET");
        assert_eq!(
            seen.target,
            "/v1/objects?kind=AuthorizationPolicy&namespace=web&name=deny"
        );
        assert_eq!(seen.body, Value::Null);
        assert_eq!(items[0]["metadata"]["name"], "web");
    }

    #[tokio::test]
    async fn describe_pod_sends_the_sample_and_reads_the_description() {
        let dir = tempfile::tempdir().unwrap();
        let reply = r#"{"name":"echo","namespace":"web","uid":"u1","identity":"spiffe://td/ns/web/sa/echo",
            "node":"node-1","addresses":["10.244.1.3"],"enrolled":true,"healthy":true,"waypoint":null,
            "services":["echo.web.svc.cluster.local"],
            "policies":[{"name":"deny","namespace":"web","scope":"WORKLOAD_SELECTOR","action":"DENY","matches":true}],
            "sample":{"peer":"spiffe://td/ns/web/sa/curl","port":8080,"allowed":false,"reason":"denied by web/deny"}}"#;
        let (socket, server) = serve(dir.path(), 200, reply);
        let described = Client::new(socket)
            .describe_pod("web", "echo", Some("spiffe://td/ns/web/sa/curl"), Some(8080))
            .await
            .unwrap();
        let seen = server.await.unwrap();
        assert_eq!(
            seen.target,
            "/v1/describe/pod?namespace=web&name=echo&peer=spiffe://td/ns/web/sa/curl&port=8080"
        );
        assert_eq!(described.waypoint, None);
        assert_eq!(described.policies[0].action, "DENY");
        assert_eq!(described.sample.port, 8080);
        assert!(!described.sample.allowed);
    }

    #[tokio::test]
    async fn a_reply_without_the_promised_fields_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, _server) = serve(dir.path(), 200, r#"{"name":"echo"}"#);
        let error = Client::new(socket)
            .describe_pod("web", "echo", None, None)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("GET /v1/describe/pod?namespace=web&name=echo: "),
            "{text}"
        );
        assert!(text.contains("missing field `namespace`"), "{text}");
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let error = Client::new(socket.clone())
            .objects(&ObjectQuery::default())
            .await
            .unwrap_err();
        let expected = format!(
            "cannot reach the control plane at {}: No such file or directory (os error 2) (is the cluster up?)",
            socket.display()
        );
        assert_eq!(error.to_string(), expected);
    }

    #[tokio::test]
    async fn a_socket_without_a_listener_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let error = Client::new(socket).objects(&ObjectQuery::default()).await.unwrap_err();
        assert!(
            matches!(&error, ApiError::Unreachable { reason, .. } if reason.contains("refused")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        // Accepts (the backlog does) but never answers.
        let _listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let client = Client::new(socket).with_timeout(Duration::from_millis(200));
        let error = client
            .objects(&ObjectQuery {
                kind: "Gateway",
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "GET /v1/objects?kind=Gateway: no reply within 0.2 s");
    }

    #[test]
    fn query_values_are_escaped_only_where_needed() {
        type Params<'a> = &'a [(&'a str, Option<&'a str>)];
        let cases: &[(Params, &str)] = &[
            (&[], "/p"),
            (&[("a", None)], "/p"),
            (
                &[("kind", Some("HTTPRoute")), ("namespace", None), ("name", Some("r"))],
                "/p?kind=HTTPRoute&name=r",
            ),
            (
                &[("peer", Some("spiffe://td/ns/a b/sa/x"))],
                "/p?peer=spiffe://td/ns/a%20b/sa/x",
            ),
            (&[("name", Some("a&b=c+d#e%"))], "/p?name=a%26b%3Dc%2Bd%23e%25"),
        ];
        for (params, expected) in cases {
            assert_eq!(query_target("/p", params), *expected, "{params:?}");
        }
    }

    #[test]
    fn diagnostics_leave_out_empty_parts() {
        let d = |file: &str, document, object: Option<&str>, field: &str| Diagnostic {
            file: file.into(),
            document,
            object: object.map(Into::into),
            field: field.into(),
            message: "bad".into(),
        };
        let cases = [
            (
                d("a.yaml", 2, Some("Gateway web/gw"), "spec.listeners"),
                "a.yaml: document 2: Gateway web/gw: spec.listeners: bad",
            ),
            (d("", 0, None, ""), "bad"),
            (d("a.yaml", 0, Some(""), ""), "a.yaml: bad"),
            (d("-", 1, None, "metadata.name"), "-: document 1: metadata.name: bad"),
        ];
        for (diagnostic, expected) in cases {
            assert_eq!(diagnostic.to_string(), expected);
        }
    }

    #[test]
    fn replies_are_json_or_the_api_errors() {
        let ok = interpret("GET /x", StatusCode::OK, br#"{"items":[]}"#).unwrap();
        assert_eq!(ok, json!({"items": []}));
        let cases: &[(StatusCode, &[u8], &str)] = &[
            (
                StatusCode::OK,
                b"<html>",
                "GET /x: the 200 OK reply is not JSON: expected value at line 1 column 1",
            ),
            (
                StatusCode::NOT_FOUND,
                br#"{"errors":[{"message":"pod web/x not found"}]}"#,
                "the control plane answered 404; pod web/x not found",
            ),
            (
                StatusCode::BAD_GATEWAY,
                b"upstream gone\n",
                "GET /x: answered 502 Bad Gateway: upstream gone",
            ),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                b"",
                "GET /x: answered 500 Internal Server Error: (empty body)",
            ),
        ];
        for (status, body, expected) in cases {
            let error = interpret("GET /x", *status, body).unwrap_err();
            assert_eq!(error.to_string(), *expected);
        }
    }
}

//! The config API: HTTP/1.1 with JSON bodies on a Unix socket (mode 0600), for `ambit apply`, `delete`, `get` and
//! `describe`, `label` and `annotate`, and for the node agents. A Unix socket is reachable from any network namespace of the host and guarded by file permissions,
//! so only root on the control plane's host can change the mesh's config; the node proxies' port 15012 serves no
//! write access.
//!
//! - `POST /v1/apply` `{"sources":[{"name","text"}],"dryRun"}` → `{"results":[{"kind","namespace","name","outcome"}]}`
//! - `POST /v1/delete` `{"sources":[...],"ignoreNotFound","dryRun"}` → the same, outcome `deleted`
//! - `GET /v1/objects?kind=K[&namespace=N][&name=X]` → `{"items":[...]}` (404 when a named object is missing)
//! - `GET /v1/describe/pod?namespace=N&name=X[&peer=ID][&port=P]` → a [`crate::describe::PodDescription`]
//! - `POST /v1/patch` an [`ambit_config::ObjectPatch`]
//!   `{"kind":"Pod"|"Namespace","namespace","name","uid","metadata":{"labels":{"k":"v","gone":null},"annotations"}}`
//!   → the patched object (a JSON merge patch of its labels and annotations, kept over the cluster source's
//!   object); 404 when it does not exist or has another uid (it was re-created), 422 naming the bad key's field
//! - `GET /v1/nodes/{node}/pods?revision=R&timeoutSeconds=T` → a [`crate::config_store::NodePods`] (the node's
//!   pods and every namespace), a long poll: at once when the revision is not `R` (or `R` is absent), else when
//!   it changes, else after `T` seconds ([`DEFAULT_POLL`], at most [`MAX_POLL`]) with the same revision
//!
//! Errors are `{"errors":[Diagnostic, ...]}` with 400 (malformed request), 404, 422 (invalid objects) or 500
//! (the change could not be persisted). Request bodies over [`MAX_BODY`] are refused whole.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ambit_config::{Diagnostic, Kind, ObjectKey, ObjectPatch, Outcome, PatchError};
use ambit_types::Identity;
use anyhow::Context;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;

use crate::config_store::{ChangeError, ConfigStore, PatchFailure, Results};

/// The largest request body: a little over the largest text `ambit_config::parse` accepts.
pub const MAX_BODY: usize = 9 << 20;
/// How long a node-pod watch waits for a change when the request does not say (`timeoutSeconds`).
pub const DEFAULT_POLL: Duration = Duration::from_secs(30);
/// The longest a node-pod watch waits; a longer `timeoutSeconds` waits this long.
pub const MAX_POLL: Duration = Duration::from_secs(300);

/// One manifest file sent by the CLI.
#[derive(Debug, Deserialize)]
struct SourceText {
    name: String,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChangeRequest {
    sources: Vec<SourceText>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    ignore_not_found: bool,
}

#[derive(Debug, Serialize)]
struct ResultLine {
    kind: &'static str,
    namespace: String,
    name: String,
    outcome: Outcome,
}

/// Binds the API socket at `path` (replacing a stale one), mode 0600.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove the stale socket {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

/// Serves the API on `listener` until the task is dropped; removes the socket file when done.
pub async fn serve(listener: UnixListener, path: PathBuf, store: ConfigStore) {
    let _cleanup = RemoveOnDrop(path);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "config API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let store = store.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(handle(&store, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "config API connection ended with an error");
            }
        });
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn handle(store: &ConfigStore, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or("");
    let not_allowed = || {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed here", parts.method),
        )
    };
    let answer = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/apply") => match read_json(body).await {
            Ok(change) => apply(store, change),
            Err(answer) => answer,
        },
        (&Method::POST, "/v1/delete") => match read_json(body).await {
            Ok(change) => delete(store, change),
            Err(answer) => answer,
        },
        (&Method::POST, "/v1/patch") => match read_json(body).await {
            Ok(request) => patch(store, &request),
            Err(answer) => answer,
        },
        (&Method::GET, "/v1/objects") => objects(store, &params(query)),
        (&Method::GET, "/v1/describe/pod") => describe_pod(store, &params(query)),
        (_, "/v1/apply" | "/v1/delete" | "/v1/patch" | "/v1/objects" | "/v1/describe/pod") => not_allowed(),
        (method, path) => match (node_of(path), method == Method::GET) {
            (Some(node), true) => node_pods(store, &node, &params(query)).await,
            (Some(_), false) => not_allowed(),
            (None, _) => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        },
    };
    let (status, json) = answer;
    let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

type Answer = (StatusCode, serde_json::Value);

/// The request body as `T`; 400 when it is too large or not `T`'s JSON.
async fn read_json<T: DeserializeOwned>(body: Incoming) -> Result<T, Answer> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed request: {e}")))
}

fn apply(store: &ConfigStore, change: ChangeRequest) -> Answer {
    let objects = match parse_sources(&change.sources) {
        Ok(objects) => objects,
        Err(diagnostics) => return invalid(diagnostics),
    };
    changed(store.apply(objects, change.dry_run))
}

fn delete(store: &ConfigStore, change: ChangeRequest) -> Answer {
    let keys = match parse_keys(&change.sources) {
        Ok(keys) => keys,
        Err(diagnostics) => return invalid(diagnostics),
    };
    changed(store.delete(&keys, change.ignore_not_found, change.dry_run))
}

/// Every source parsed and validated as one batch; the diagnostics of all of them if any fails.
fn parse_sources(sources: &[SourceText]) -> Result<Vec<ambit_config::Object>, Vec<Diagnostic>> {
    ambit_config::parse_sources(sources.iter().map(|s| (s.name.as_str(), s.text.as_str())))
}

/// The objects the sources name (kind, namespace, name; the rest is not read, as `kubectl delete -f`).
fn parse_keys(sources: &[SourceText]) -> Result<Vec<ObjectKey>, Vec<Diagnostic>> {
    let mut keys = Vec::new();
    let mut diagnostics = Vec::new();
    for source in sources {
        match ambit_config::parse_keys(&source.name, &source.text) {
            Ok(found) => keys.extend(found),
            Err(found) => diagnostics.extend(found),
        }
    }
    if diagnostics.is_empty() {
        Ok(keys)
    } else {
        Err(diagnostics)
    }
}

fn changed(result: Result<Results, ChangeError>) -> Answer {
    match result {
        Ok(results) => {
            for (key, outcome) in &results {
                if !matches!(outcome, Outcome::Unchanged) {
                    tracing::info!(object = %key, %outcome, "config changed");
                }
            }
            let lines: Vec<ResultLine> = results
                .into_iter()
                .map(|(key, outcome)| ResultLine {
                    kind: key.kind.name(),
                    namespace: key.namespace,
                    name: key.name,
                    outcome,
                })
                .collect();
            (StatusCode::OK, serde_json::json!({ "results": lines }))
        }
        Err(ChangeError::Invalid(diagnostics)) => invalid(diagnostics),
        Err(e @ ChangeError::Persist(_)) => {
            tracing::error!(error = %e, "config change refused");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

fn objects(store: &ConfigStore, params: &[(String, String)]) -> Answer {
    let Some(kind_name) = param(params, "kind") else {
        return error(StatusCode::BAD_REQUEST, "the query parameter kind is required".into());
    };
    let Some(kind) = Kind::parse(kind_name) else {
        return error(StatusCode::BAD_REQUEST, format!("unknown kind {kind_name:?}"));
    };
    let namespace = param(params, "namespace").filter(|_| kind.namespaced());
    let name = param(params, "name");
    let items = store.list(kind, namespace, name);
    if let (Some(name), true) = (name, items.is_empty()) {
        let key = ObjectKey {
            kind,
            namespace: namespace.unwrap_or_default().to_string(),
            name: name.to_string(),
        };
        return error(StatusCode::NOT_FOUND, format!("{key} not found"));
    }
    (StatusCode::OK, serde_json::json!({ "items": items }))
}

fn describe_pod(store: &ConfigStore, params: &[(String, String)]) -> Answer {
    let (Some(namespace), Some(name)) = (param(params, "namespace"), param(params, "name")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the query parameters namespace and name are required".into(),
        );
    };
    let peer = match param(params, "peer").map(str::parse::<Identity>).transpose() {
        Ok(peer) => peer,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("peer: {e}")),
    };
    let port = match param(params, "port").map(str::parse::<u16>).transpose() {
        Ok(Some(0)) | Err(_) => return error(StatusCode::BAD_REQUEST, "port: use a number from 1 to 65535".into()),
        Ok(port) => port,
    };
    match store.describe_pod(namespace, name, peer.as_ref(), port) {
        Some(description) => (StatusCode::OK, serde_json::to_value(description).unwrap_or_default()),
        None => error(StatusCode::NOT_FOUND, format!("pod {namespace}/{name} not found")),
    }
}

fn patch(store: &ConfigStore, request: &ObjectPatch) -> Answer {
    match store.patch(request) {
        Ok(object) => (StatusCode::OK, object),
        Err(PatchFailure::Refused(PatchError::Invalid(diagnostics))) => invalid(diagnostics),
        Err(PatchFailure::Refused(e @ (PatchError::NotFound(_) | PatchError::OtherUid { .. }))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(PatchFailure::Refused(e @ PatchError::NotPatchable(_))) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ PatchFailure::Persist(_)) => {
            tracing::error!(error = %e, "metadata patch refused");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// The node of a `/v1/nodes/{node}/pods` path, percent-decoded.
fn node_of(path: &str) -> Option<String> {
    let node = path.strip_prefix("/v1/nodes/")?.strip_suffix("/pods")?;
    let node = (!node.is_empty() && !node.contains('/')).then_some(node)?;
    Some(
        percent_encoding::percent_decode_str(node)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The long poll of a node's pods: waits (holding no thread) until the revision differs from the request's.
async fn node_pods(store: &ConfigStore, node: &str, params: &[(String, String)]) -> Answer {
    let timeout = match poll_timeout(param(params, "timeoutSeconds")) {
        Ok(timeout) => timeout,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    store.pods_changed_since(param(params, "revision"), timeout).await;
    let answer = serde_json::to_value(store.node_pods(node));
    (StatusCode::OK, answer.unwrap_or_default())
}

/// `timeoutSeconds`: whole seconds, [`DEFAULT_POLL`] when absent, at most [`MAX_POLL`].
fn poll_timeout(value: Option<&str>) -> Result<Duration, String> {
    let Some(value) = value else { return Ok(DEFAULT_POLL) };
    let seconds = value.parse::<u64>().map_err(|_| {
        format!(
            "timeoutSeconds: {value:?} is not a whole number of seconds (0 to {})",
            MAX_POLL.as_secs()
        )
    })?;
    Ok(Duration::from_secs(seconds).min(MAX_POLL))
}

fn invalid(diagnostics: Vec<Diagnostic>) -> Answer {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        serde_json::json!({ "errors": diagnostics }),
    )
}

fn error(status: StatusCode, message: String) -> Answer {
    let diagnostic = Diagnostic {
        file: String::new(),
        document: 0,
        object: None,
        field: String::new(),
        message,
    };
    (status, serde_json::json!({ "errors": [diagnostic] }))
}

/// The query's `key=value` pairs, percent-decoded.
fn params(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let pairs = query.split('&').filter(|pair| !pair.is_empty());
    pairs
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (decode(key), decode(value)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_watch_paths_name_one_node() {
        let cases = [
            ("/v1/nodes/node-1/pods", Some("node-1")),
            ("/v1/nodes/node%2D1/pods", Some("node-1")),
            ("/v1/nodes//pods", None),
            ("/v1/nodes/a/b/pods", None),
            ("/v1/nodes/node-1", None),
            ("/v1/nodes/node-1/pods/x", None),
            ("/v1/node/node-1/pods", None),
        ];
        for (path, node) in cases {
            assert_eq!(node_of(path).as_deref(), node, "{path}");
        }
    }

    #[test]
    fn poll_timeouts_default_and_cap() {
        let cases = [
            (None, Ok(DEFAULT_POLL)),
            (Some("0"), Ok(Duration::ZERO)),
            (Some("5"), Ok(Duration::from_secs(5))),
            (Some("300"), Ok(MAX_POLL)),
            (Some("3600"), Ok(MAX_POLL)),
            (Some("-1"), Err(())),
            (Some("1.5"), Err(())),
            (Some(""), Err(())),
        ];
        for (value, expected) in cases {
            assert_eq!(poll_timeout(value).map_err(|_| ()), expected, "{value:?}");
        }
        assert!(
            poll_timeout(Some("soon"))
                .unwrap_err()
                .starts_with("timeoutSeconds: \"soon\"")
        );
    }
}

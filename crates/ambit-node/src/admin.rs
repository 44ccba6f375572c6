//! The node proxy's HTTP endpoints, each server on its own listener: admin (`/config_dump`, `/logging`,
//! `/quitquitquit`, `/healthz/ready`; localhost:15000 by default), metrics (`/metrics`, `/stats/prometheus`; :15020)
//! and readiness (`/healthz/ready`; :15021). The caller binds the listeners and runs the servers on the admin runtime,
//! away from the data plane. Nothing here is global: what the endpoints show comes in through [`AdminState`], the
//! metrics [`Registry`] and the readiness watch.

mod server;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use ambit_telemetry::prometheus_client::registry::Registry;
use bytes::Bytes;
use http::header::ALLOW;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use tokio::sync::watch;

use server::{Body, Handler, text, with_type};
pub use server::{HttpLimits, HttpListener};

/// The content type of the metrics endpoints.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const APPLICATION_JSON: &str = "application/json";

const ADMIN_ENDPOINTS: &str = "\
GET  /config_dump                      the proxy's state as JSON
GET  /logging                          the log filter in force
POST /logging?level=<level>            set the log filter: a level, or <target>:<level>,...
POST /quitquitquit                     start a graceful shutdown
GET  /healthz/ready                    200 once ready, 503 before
";
const METRICS_ENDPOINTS: &str = "\
GET  /metrics                          metrics in the OpenMetrics text format
GET  /stats/prometheus                 the same
";
const READINESS_ENDPOINTS: &str = "\
GET  /healthz/ready                    200 once ready, 503 before
";

/// Supplies the body of `/config_dump`: the proxy's sections (workloads, services, policies, certificates,
/// connections, ...), as one JSON object whose keys become top-level keys of the dump. The server adds `version`.
pub trait ConfigDump: Send + Sync + 'static {
    /// The sections as they stand now. A value that is not an object is dumped under `config`.
    fn dump(&self) -> Value;
}

/// Reads and replaces the process's log filter, for `/logging`. The binary implements it over its subscriber's
/// reload handle, so the admin server needs no global state.
pub trait LogControl: Send + Sync + 'static {
    /// The filter in force, in `EnvFilter` syntax.
    fn filter(&self) -> String;

    /// Replaces the filter with `filter`, in `EnvFilter` syntax (`info,access=debug`). On error the old filter
    /// stays in force.
    fn set_filter(&self, filter: &str) -> Result<(), InvalidFilter>;
}

/// A log filter that [`LogControl::set_filter`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid log filter {filter:?}: {reason}")]
pub struct InvalidFilter {
    pub filter: String,
    pub reason: String,
}

/// What the admin server shows and controls.
pub struct AdminState {
    config: Arc<dyn ConfigDump>,
    ready: watch::Receiver<bool>,
    quit: watch::Sender<bool>,
    log_control: Option<Arc<dyn LogControl>>,
}

/// The metrics server's handler.
struct MetricsEndpoint {
    registry: Arc<Registry>,
}

/// The readiness server's handler.
struct ReadinessEndpoint {
    ready: watch::Receiver<bool>,
}

/// A query parameter that is not percent-encoded UTF-8.
#[derive(Debug, thiserror::Error)]
#[error("query parameter {0:?} is not valid percent-encoded UTF-8")]
struct BadQuery(&'static str);

/// Serves the admin endpoints on `listener` until `shutdown` resolves. `POST /quitquitquit` only sets the state's
/// quit signal: stopping this server is part of the shutdown the caller then runs.
pub async fn serve_admin(listener: impl Into<HttpListener>, state: AdminState, shutdown: impl Future<Output = ()>) {
    server::serve(listener.into(), "admin", state, shutdown).await;
}

/// Serves `registry` at `/metrics` and `/stats/prometheus` on `listener` until `shutdown` resolves. Metrics are
/// registered at start-up; the families are shared with their writers, so the registry itself needs no lock.
pub async fn serve_metrics(
    listener: impl Into<HttpListener>,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) {
    server::serve(listener.into(), "metrics", MetricsEndpoint { registry }, shutdown).await;
}

/// Serves `/healthz/ready` on `listener` until `shutdown` resolves: 200 while `ready` holds `true`, 503 otherwise.
pub async fn serve_readiness(
    listener: impl Into<HttpListener>,
    ready: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    server::serve(listener.into(), "readiness", ReadinessEndpoint { ready }, shutdown).await;
}

/// Whether `method` only reads: GET or HEAD.
fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Answers GET and HEAD with `answer`, anything else with 405.
fn read(req: &Request<Bytes>, answer: impl FnOnce() -> Response<Body>) -> Response<Body> {
    if is_read(req.method()) {
        answer()
    } else {
        method_not_allowed("GET, HEAD")
    }
}

/// Answers POST with `answer`, anything else with 405.
fn post(req: &Request<Bytes>, answer: impl FnOnce() -> Response<Body>) -> Response<Body> {
    if req.method() == Method::POST {
        answer()
    } else {
        method_not_allowed("POST")
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed: use {allow}\n"),
    );
    resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

fn not_found(endpoints: &'static str) -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        format!("not found; the endpoints are:\n{endpoints}"),
    )
}

fn readiness(ready: &watch::Receiver<bool>) -> Response<Body> {
    if *ready.borrow() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Applies `POST /logging?level=...`.
fn set_log_filter(control: &dyn LogControl, query: Option<&str>) -> Response<Body> {
    let level = match query_param(query.unwrap_or_default(), "level") {
        Ok(level) => level.unwrap_or_default(),
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    let filter = env_filter(&level);
    if filter.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "missing ?level=<level> or ?level=<target>:<level>,...\n",
        );
    }
    match control.set_filter(&filter) {
        Ok(()) => {
            tracing::info!(filter, "log filter changed through /logging");
            text(StatusCode::OK, format!("log filter: {}\n", control.filter()))
        }
        Err(error) => text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    }
}

/// The percent-decoded value of the first `name` parameter of `query`.
fn query_param<'q>(query: &'q str, name: &'static str) -> Result<Option<Cow<'q, str>>, BadQuery> {
    let value = query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    });
    value
        .map(|v| percent_decode_str(v).decode_utf8().map_err(|_| BadQuery(name)))
        .transpose()
}

/// Turns Istio's `level` syntax (`info`, `access:debug,info`) into `EnvFilter` directives (`access=debug,info`).
/// Directives already in `EnvFilter` syntax pass through.
fn env_filter(level: &str) -> String {
    let directives: Vec<Cow<'_, str>> = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(env_directive)
        .collect();
    directives.join(",")
}

fn env_directive(directive: &str) -> Cow<'_, str> {
    if directive.contains('=') {
        return directive.into();
    }
    match directive.rsplit_once(':') {
        // `a::b` alone is a path, not `a:` at level `b`.
        Some((target, level)) if !target.is_empty() && !target.ends_with(':') => format!("{target}={level}").into(),
        _ => directive.into(),
    }
}

// === impl AdminState ===

impl AdminState {
    /// `config` fills `/config_dump`; `ready` answers `/healthz/ready`; `/quitquitquit` sets `quit` to `true`.
    pub fn new(config: Arc<dyn ConfigDump>, ready: watch::Receiver<bool>, quit: watch::Sender<bool>) -> Self {
        Self {
            config,
            ready,
            quit,
            log_control: None,
        }
    }

    /// Enables `/logging`; without it the endpoint answers 501.
    pub fn with_log_control(mut self, control: Arc<dyn LogControl>) -> Self {
        self.log_control = Some(control);
        self
    }

    fn config_dump(&self) -> Response<Body> {
        let mut dump = match self.config.dump() {
            Value::Object(sections) => sections,
            other => Map::from_iter([("config".to_string(), other)]),
        };
        dump.insert("version".to_string(), env!("CARGO_PKG_VERSION").into());
        match serde_json::to_vec_pretty(&dump) {
            Ok(mut json) => {
                json.push(b'\n');
                with_type(StatusCode::OK, APPLICATION_JSON, json)
            }
            Err(error) => {
                tracing::warn!(%error, "the config dump could not be serialized");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the config dump could not be serialized\n",
                )
            }
        }
    }

    fn quit(&self) -> Response<Body> {
        tracing::info!("shutdown requested through /quitquitquit");
        self.quit.send_replace(true);
        text(StatusCode::OK, "OK\n")
    }

    fn logging(&self, req: &Request<Bytes>) -> Response<Body> {
        let is_post = req.method() == Method::POST;
        if !is_post && !is_read(req.method()) {
            return method_not_allowed("GET, HEAD, POST");
        }
        let Some(control) = self.log_control.as_deref() else {
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "log control is not configured in this process\n",
            );
        };
        if is_post {
            set_log_filter(control, req.uri().query())
        } else {
            text(StatusCode::OK, format!("{}\n", control.filter()))
        }
    }
}

impl Handler for AdminState {
    fn handle(&self, req: &Request<Bytes>) -> Response<Body> {
        match req.uri().path() {
            "/" => read(req, || text(StatusCode::OK, ADMIN_ENDPOINTS)),
            "/config_dump" => read(req, || self.config_dump()),
            "/logging" => self.logging(req),
            "/quitquitquit" => post(req, || self.quit()),
            "/healthz/ready" => read(req, || readiness(&self.ready)),
            _ => not_found(ADMIN_ENDPOINTS),
        }
    }
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &*self.ready.borrow())
            .field("quit", &*self.quit.borrow())
            .field("log_control", &self.log_control.is_some())
            .finish_non_exhaustive()
    }
}

// === impl MetricsEndpoint ===

impl MetricsEndpoint {
    fn encode(&self) -> Response<Body> {
        match ambit_telemetry::encode(&self.registry) {
            Ok(metrics) => with_type(StatusCode::OK, OPENMETRICS_TEXT, metrics),
            Err(_) => {
                tracing::warn!("the metrics registry could not be encoded");
                text(StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be encoded\n")
            }
        }
    }
}

impl Handler for MetricsEndpoint {
    fn handle(&self, req: &Request<Bytes>) -> Response<Body> {
        match req.uri().path() {
            "/metrics" | "/stats/prometheus" => read(req, || self.encode()),
            _ => not_found(METRICS_ENDPOINTS),
        }
    }
}

// === impl ReadinessEndpoint ===

impl Handler for ReadinessEndpoint {
    fn handle(&self, req: &Request<Bytes>) -> Response<Body> {
        match req.uri().path() {
            "/healthz/ready" => read(req, || readiness(&self.ready)),
            _ => not_found(READINESS_ENDPOINTS),
        }
    }
}

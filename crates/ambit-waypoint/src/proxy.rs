//! One HTTP request through the waypoint, in Envoy's filter order: request checks (400), L7 authorization (403),
//! routing (404, redirects), fault injection, then forwarding to an endpoint chosen per request, with the route's
//! timeouts and retries and passive outlier detection; the response gets the route's header changes, and the request
//! its metrics and access-log line. The decisions are the pure cores' (`ambit_l7`, `ambit_policy::http`); this
//! module carries them out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ambit_hbone::Authority;
use ambit_l7::balance::{
    self, Balancer, Endpoint, EndpointId, Outcome, OutlierConfig, RetryDecision, RetryState, Sample,
};
use ambit_l7::route::{Decision, Forward, HeaderOp, RequestHead, ServiceRef};
use ambit_node::state::model::TunnelProtocol;
use ambit_node::state::{Snapshot, Workload};
use ambit_policy::http::{
    HttpReason, HttpRequestAttrs, PathNormalization, check_method, evaluate_http, normalize_path,
};
use ambit_telemetry::ConnectionContext;
use ambit_telemetry::http::{
    L7Protocol, LocalReply, MatchedPolicy, RequestInfo, RequestMetrics, RequestRecord, ResponseFlag,
};
use ambit_types::Identity;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body as HttpBody, Incoming};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use crate::body::{Counted, Recorded};
use crate::state::L7State;
use crate::target::{self, Destination, WaypointId};
use crate::upstream::{Body, EndpointTarget, Upstreams, Version};

/// Request bodies up to this size are held, so that the request can be retried or mirrored; larger or streaming
/// bodies are forwarded once.
const REPLAYABLE_BODY: usize = 64 * 1024;
/// How long a replayable body may take to arrive when the route sets no request timeout.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What every request of the waypoint shares.
pub struct Shared {
    pub me: WaypointId,
    pub state: watch::Receiver<Arc<L7State>>,
    pub upstreams: Upstreams,
    pub metrics: Arc<RequestMetrics>,
    /// Istio's TCP metrics, for tunnels relayed as TCP.
    pub tcp_metrics: Arc<ambit_telemetry::TcpMetrics>,
    /// Per backend Service port: the balancer, and the snapshot version its endpoints come from.
    balancers: Mutex<HashMap<ServiceRef, (u64, Balancer)>>,
}

/// What the requests of one tunnel share: who sent them and where they were addressed.
pub struct Tunnel {
    pub authority: Authority,
    /// The client workload's identity (the source node proxy presents it).
    pub peer_identity: Option<Identity>,
    /// The original client's address (`forwarded: for=`), else the peer's.
    pub client: SocketAddr,
    /// The metric context: reporter, source, destination service.
    pub ctx: ConnectionContext,
}

/// How a request ends, before its response is built.
enum Reply {
    /// The endpoint's response, with the route's response header changes to apply.
    Upstream(Response<Incoming>, Vec<HeaderOp>),
    /// The waypoint answers itself.
    Local(LocalReply, String),
    /// A status the waypoint answers with that has no Envoy response flag (400, 500, redirects), its details and
    /// extra headers.
    Status(StatusCode, &'static str, HeaderMap),
}

/// Which endpoints a request may go to.
enum Backend {
    /// A Service port: balanced per request.
    Service(ServiceRef),
    /// One workload (workload-addressed traffic).
    Workload(SocketAddr),
}

/// One attempt's result.
enum Attempt {
    Response(Response<Incoming>),
    Failed(Outcome, String),
}

// === impl Shared ===

impl Shared {
    pub fn new(
        me: WaypointId,
        state: watch::Receiver<Arc<L7State>>,
        upstreams: Upstreams,
        metrics: Arc<RequestMetrics>,
        tcp_metrics: Arc<ambit_telemetry::TcpMetrics>,
    ) -> Self {
        Self {
            me,
            state,
            upstreams,
            metrics,
            tcp_metrics,
            balancers: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on the balancer of `backend`, its endpoints brought up to date with `snapshot` first.
    fn with_balancer<T>(&self, state: &L7State, backend: &ServiceRef, f: impl FnOnce(&mut Balancer) -> T) -> T {
        let snapshot = &state.snapshot;
        let mut balancers = self.balancers.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = balancers.entry(backend.clone());
        let (version, balancer) = entry.or_insert_with(|| {
            let balancer = Balancer::new(state.algorithm, OutlierConfig::default(), Vec::new());
            (0, balancer)
        });
        if balancer.algorithm() != state.algorithm {
            *balancer = Balancer::new(state.algorithm, OutlierConfig::default(), Vec::new());
            *version = 0;
        }
        if *version != snapshot.version() || *version == 0 {
            balancer.update(endpoints(snapshot, backend));
            *version = snapshot.version();
        }
        f(balancer)
    }
}

impl Shared {
    /// An endpoint of `backend` for a TCP connection (balanced per connection; not counted as a request).
    pub(crate) fn pick_endpoint(&self, state: &L7State, backend: &ServiceRef, sample: Sample) -> Option<SocketAddr> {
        self.with_balancer(state, backend, |balancer| {
            let id = balancer.pick(Instant::now(), sample)?;
            balancer.endpoint(&id).map(|e| e.address)
        })
    }
}

/// The endpoints of a backend Service port, as the balancer names them (`<workload uid>@<address>`).
fn endpoints(snapshot: &Snapshot, backend: &ServiceRef) -> Vec<Endpoint> {
    let Some(service) = target::service_named(snapshot, &backend.namespace, &backend.name) else {
        return Vec::new();
    };
    let endpoint = |e: target::ServiceEndpoint<'_>| Endpoint {
        id: EndpointId::new(format!("{}@{}", e.workload.uid, e.addr)),
        address: e.addr,
        weight: e.workload.capacity.max(1),
        locality: None,
    };
    (target::service_endpoints(snapshot, service, backend.port).into_iter())
        .map(endpoint)
        .collect()
}

/// How the waypoint reaches the workload at `addr`: HBONE with its identity when it speaks HBONE, else plain TCP.
pub(crate) fn endpoint_target(snapshot: &Snapshot, addr: SocketAddr) -> (EndpointTarget, Option<&Workload>) {
    let workload = snapshot.workload_by_ip(addr.ip());
    let identity = workload
        .filter(|w| w.tunnel_protocol == TunnelProtocol::Hbone)
        .map(Workload::identity);
    (EndpointTarget { addr, identity }, workload)
}

/// Serves one request of `tunnel`. Never fails: every problem is an HTTP answer.
pub async fn handle(
    shared: Arc<Shared>,
    tunnel: Arc<Tunnel>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let state = Arc::clone(&shared.state.borrow());
    let local = tunnel.authority.addr().unwrap_or(tunnel.client);
    let info = RequestInfo::from_request(&request).with_addresses(tunnel.client, local);
    let grpc = info.protocol == L7Protocol::Grpc;
    // One span per request (at debug level: present when tracing is on), carrying the W3C trace id the client sent;
    // the `traceparent` header itself is forwarded unchanged.
    let span = tracing::debug_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        trace_id = ambit_telemetry::http::trace_id(request.headers()).unwrap_or_default(),
    );
    let mut record = RequestRecord::start(&shared.metrics, &tunnel.ctx, info);
    let reply = process(&shared, &tunnel, &state, request, &mut record)
        .instrument(span)
        .await;
    Ok(respond(reply, record, grpc))
}

async fn process(
    shared: &Shared,
    tunnel: &Tunnel,
    state: &L7State,
    request: Request<Incoming>,
    record: &mut RequestRecord,
) -> Reply {
    let (mut parts, body) = request.into_parts();
    let snapshot = &state.snapshot;
    let destination = match target::resolve(snapshot, &shared.me, &tunnel.authority) {
        Ok(destination) => destination,
        Err(error) => {
            debug!(%error, "the tunnel's destination is no longer served here");
            return Reply::Local(LocalReply::NoCluster, format!("{error}\n"));
        }
    };
    // 400 before anything else: Envoy's checks of the method and path, and the path normalized as policies assume.
    if let Err(rejection) = check_method(parts.method.as_str()) {
        debug!(%rejection, "bad request");
        return Reply::Status(StatusCode::BAD_REQUEST, "invalid_method", HeaderMap::new());
    }
    let target = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let normalized = match normalize_path(target, PathNormalization::Base) {
        Ok(normalized) => normalized,
        Err(rejection) => {
            debug!(%rejection, "bad request");
            return Reply::Status(StatusCode::BAD_REQUEST, "path_normalization_failed", HeaderMap::new());
        }
    };
    if let Err(details) = set_path(&mut parts, &normalized.path, normalized.query.as_deref()) {
        return bad_request(details);
    }

    // Authorization.
    let head = RequestHead::from_parts(&parts);
    let headers: Vec<(&str, &[u8])> = parts.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
    let request = HttpRequest {
        method: parts.method.as_str(),
        authority: head.authority,
        path: &normalized.path,
        headers: &headers,
    };
    let decision = authorize(state, tunnel, &destination, request);
    if !decision.audit.is_empty() || !decision.dry_run.is_empty() {
        info!(target: "audit", decision = %decision, path = %normalized.path, "L7 policy audit");
    }
    if !decision.is_allowed() {
        let matched = match &decision.reason {
            HttpReason::DeniedBy(m) | HttpReason::DeniedByCustom(m) => Some(MatchedPolicy {
                namespace: m.policy.namespace.as_str().into(),
                name: m.policy.name.as_str().into(),
                rule: m.rule,
            }),
            _ => None,
        };
        let body = decision.forbidden_body().unwrap_or_default();
        return Reply::Local(LocalReply::Denied(matched), body);
    }

    // Routing.
    let (backend, forward) = match destination {
        Destination::Workload { addr, .. } => (Backend::Workload(addr), None),
        Destination::Service { service, port, .. } => {
            let key = ServiceRef::new(service.namespace.as_str(), service.name.as_str(), port);
            let Some(table) = state.table(&key) else {
                return Reply::Local(LocalReply::NoCluster, format!("no route table for {key}\n"));
            };
            match table.decide(&head, fastrand::u32(..)) {
                Decision::Forward(forward) => (Backend::Service(forward.backend.clone()), Some(forward)),
                Decision::Redirect { status, location, .. } => {
                    let mut headers = HeaderMap::new();
                    if let Ok(value) = HeaderValue::try_from(location) {
                        headers.insert(header::LOCATION, value);
                    }
                    return Reply::Status(status, "direct_response", headers);
                }
                Decision::NoRoute => return Reply::Local(LocalReply::NoRoute, String::new()),
                Decision::Invalid { rule } => {
                    warn!(%rule, "the matched rule cannot be honoured");
                    return Reply::Status(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "route_configuration_invalid",
                        HeaderMap::new(),
                    );
                }
            }
        }
    };
    if let Some(rule) = forward.as_ref().and_then(|f| f.rule) {
        record.set_route(&rule.to_string());
    }
    let forward = forward.as_ref();

    // Faults.
    let fault = forward.map(|f| f.fault).unwrap_or_default();
    if let Some(delay) = fault.delay {
        record.add_flag(ResponseFlag::DelayInjected);
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = fault.abort {
        return Reply::Local(LocalReply::FaultAbort(status), "fault filter abort".to_string());
    }

    // The request as it goes upstream.
    if let Some(forward) = forward {
        HeaderOp::apply_all(forward.request.headers, &mut parts.headers);
        if let Some(authority) = forward.request.authority
            && let Err(details) = set_authority(&mut parts, authority)
        {
            return bad_request(details);
        }
        if let Some(path) = &forward.request.path {
            let query = normalized.query.as_deref();
            if let Err(details) = set_path(&mut parts, path, query) {
                return bad_request(details);
            }
        }
    }
    strip_hop_by_hop(&mut parts.headers);
    let response_headers = forward.map(|f| f.response_headers.to_vec()).unwrap_or_default();
    let timeouts = forward.map(|f| f.timeouts).unwrap_or_default();
    let retry = retry_policy(forward);
    let version = if parts.version == http::Version::HTTP_2 {
        Version::Http2
    } else {
        Version::Http1
    };

    // The body: held when small enough to send again, else streamed once.
    let request_bytes = record.request_bytes().clone();
    let replayable =
        body.is_end_stream() || content_length(&parts.headers).is_some_and(|n| n <= REPLAYABLE_BODY as u64);
    let (held, mut streamed) = if replayable {
        let limit = timeouts.request.unwrap_or(BODY_READ_TIMEOUT);
        let collected = tokio::time::timeout(limit, Limited::new(body, REPLAYABLE_BODY).collect()).await;
        match collected {
            Ok(Ok(collected)) => {
                let bytes = collected.to_bytes();
                request_bytes.add(bytes.len() as u64);
                (Some(bytes), None)
            }
            Ok(Err(error)) => {
                debug!(%error, "reading the request body failed");
                return Reply::Status(StatusCode::BAD_REQUEST, "downstream_body_failed", HeaderMap::new());
            }
            Err(_) => return Reply::Local(LocalReply::UpstreamTimeout, "upstream request timeout".into()),
        }
    } else {
        (None, Some(Counted::new(body, request_bytes).boxed_unsync()))
    };
    let retry = if held.is_some() {
        retry
    } else {
        balance::RetryPolicy::none()
    };

    // Mirrors get a copy of a held request; their answers are dropped.
    if let (Some(forward), Some(bytes)) = (forward, &held) {
        for mirror in &forward.mirrors {
            let request = rebuild(&parts, full(bytes.clone()));
            spawn_mirror(shared, state, (*mirror).clone(), version, request);
        }
    }

    let attempts = async {
        let mut tries = RetryState::new();
        loop {
            let body = match (&held, streamed.take()) {
                (Some(bytes), _) => full(bytes.clone()),
                (None, Some(body)) => body,
                // A streamed body is sent once: retries are off for it, so no second try asks for it.
                (None, None) => empty(),
            };
            let request = rebuild(&parts, body);
            let (id, target) = match pick(shared, state, &backend, tries.tried()) {
                Some(picked) => picked,
                None => return Err((LocalReply::NoHealthyUpstream, "no healthy upstream".to_string())),
            };
            if let Backend::Service(backend) = &backend {
                shared.with_balancer(state, backend, |b| b.started(&id));
            }
            let (endpoint, workload) = endpoint_target(&state.snapshot, target);
            if let Some(workload) = workload {
                record.set_destination(&ambit_node::proxy::workload_info(workload), endpoint.identity.as_ref());
            }
            record.set_upstream_host(target);
            let started = Instant::now();
            let attempt = one_attempt(&shared.upstreams, &endpoint, version, request, timeouts.backend_request).await;
            let outcome = match &attempt {
                Attempt::Response(response) => Outcome::Response(response.status().as_u16()),
                Attempt::Failed(outcome, _) => *outcome,
            };
            if let Backend::Service(backend) = &backend {
                let ejected = shared.with_balancer(state, backend, |b| b.finished(&id, outcome, Instant::now()));
                if let Some(ejection) = ejected {
                    info!(endpoint = %id, backend = %backend, ?ejection, "endpoint ejected by outlier detection");
                }
            }
            let decision = tries.finished(&retry, id, outcome, Sample(fastrand::u64(..)));
            match (attempt, decision) {
                (Attempt::Response(response), RetryDecision::GiveUp) => {
                    record.set_upstream_service_time(started.elapsed());
                    return Ok(response);
                }
                (Attempt::Failed(outcome, message), RetryDecision::GiveUp) => {
                    if tries.attempts() > 1 {
                        record.add_flag(ResponseFlag::UpstreamRetryLimitExceeded);
                    }
                    let reply = match outcome {
                        Outcome::ConnectFailure => LocalReply::UpstreamConnectFailure,
                        Outcome::Timeout => LocalReply::UpstreamTimeout,
                        _ => LocalReply::UpstreamReset,
                    };
                    return Err((reply, message));
                }
                (attempt, RetryDecision::RetryAfter(delay)) => {
                    if let Attempt::Failed(_, message) = &attempt {
                        debug!(%message, ?delay, "retrying");
                    }
                    drop(attempt);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    };
    let outcome = match timeouts.request {
        Some(limit) => tokio::time::timeout(limit, attempts)
            .await
            .unwrap_or_else(|_| Err((LocalReply::UpstreamTimeout, "upstream request timeout".to_string()))),
        None => attempts.await,
    };
    match outcome {
        Ok(response) => Reply::Upstream(response, response_headers),
        Err((reply, message)) => {
            // Envoy's text for the failure, then what failed.
            let text = default_text(&reply).trim_end();
            let body = if message == text {
                format!("{text}\n")
            } else {
                format!("{text}: {message}\n")
            };
            Reply::Local(reply, body)
        }
    }
}

/// What authorization reads of a request itself; [`HttpRequest::TCP`] for a tunnel relayed as TCP.
#[derive(Clone, Copy)]
pub(crate) struct HttpRequest<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl HttpRequest<'_> {
    /// A TCP connection has no method, path or headers: rules that need them do not match.
    pub(crate) const TCP: HttpRequest<'static> = HttpRequest {
        method: "",
        authority: "",
        path: "",
        headers: &[],
    };
}

/// The verdict of the policies attached to this waypoint on `request`, sent by the tunnel's peer to `destination`.
pub(crate) fn authorize(
    state: &L7State,
    tunnel: &Tunnel,
    destination: &Destination<'_>,
    request: HttpRequest<'_>,
) -> ambit_policy::http::HttpDecision {
    let service =
        (destination.service()).map(|s| ambit_policy::http::ServiceKey::service(s.namespace.as_str(), &s.name));
    let attrs = HttpRequestAttrs {
        source_identity: tunnel.peer_identity.as_ref(),
        source_ip: tunnel.client.ip(),
        remote_ip: tunnel.client.ip(),
        destination_ip: destination.addr().ip(),
        destination_port: destination.addr().port(),
        sni: None,
        service: service.as_ref(),
        method: request.method,
        authority: request.authority,
        path: request.path,
        headers: request.headers,
    };
    evaluate_http(&state.policies, &attrs)
}

/// The balancer's choice for a service backend (avoiding endpoints already tried), or the one workload.
fn pick(shared: &Shared, state: &L7State, backend: &Backend, tried: &[EndpointId]) -> Option<(EndpointId, SocketAddr)> {
    match backend {
        Backend::Workload(addr) => Some((EndpointId::new(addr.to_string()), *addr)),
        Backend::Service(service) => shared.with_balancer(state, service, |balancer| {
            let id = balancer.pick_excluding(Instant::now(), Sample(fastrand::u64(..)), tried)?;
            let addr = balancer.endpoint(&id)?.address;
            Some((id, addr))
        }),
    }
}

/// Sends one try, within the per-try timeout.
async fn one_attempt(
    upstreams: &Upstreams,
    endpoint: &EndpointTarget,
    version: Version,
    request: Request<Body>,
    limit: Option<Duration>,
) -> Attempt {
    let sending = upstreams.send(endpoint, version, request);
    let result = match limit {
        Some(limit) => match tokio::time::timeout(limit, sending).await {
            Ok(result) => result,
            Err(_) => return Attempt::Failed(Outcome::Timeout, "upstream per-try timeout".to_string()),
        },
        None => sending.await,
    };
    match result {
        Ok(response) => Attempt::Response(response),
        Err(error) => {
            let outcome = if error.is_connect_failure() {
                Outcome::ConnectFailure
            } else {
                Outcome::Reset
            };
            let message = format!("{:#}", anyhow::Error::new(error));
            debug!(%message, "upstream attempt failed");
            Attempt::Failed(outcome, message)
        }
    }
}

/// Sends a mirrored copy in the background; its answer is read and dropped. Mirrors count neither as active
/// requests nor towards outlier detection.
fn spawn_mirror(shared: &Shared, state: &L7State, backend: ServiceRef, version: Version, request: Request<Body>) {
    let Some((_, addr)) = pick(shared, state, &Backend::Service(backend), &[]) else {
        return;
    };
    let (endpoint, _) = endpoint_target(&state.snapshot, addr);
    let upstreams = shared.upstreams.clone();
    tokio::spawn(async move {
        match upstreams.send(&endpoint, version, request).await {
            Ok(response) => drop(response.into_body().collect().await),
            Err(error) => debug!(error = %format!("{:#}", anyhow::Error::new(error)), "mirrored request failed"),
        }
    });
}

/// The request for one try: `parts` (cloned) with `body`.
fn rebuild(parts: &Parts, body: Body) -> Request<Body> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// The retries for a forwarded request: the route's (Gateway API `retry`), else Istio's default (2 retries on
/// connect failures, refused streams, resets and 503).
fn retry_policy(forward: Option<&Forward<'_>>) -> balance::RetryPolicy {
    match forward.and_then(|f| f.retry) {
        Some(retry) => {
            let codes: Vec<u16> = retry.codes.iter().map(StatusCode::as_u16).collect();
            balance::RetryPolicy::gateway(&codes, Some(retry.attempts), retry.backoff)
        }
        None => balance::RetryPolicy::default(),
    }
}

/// Sets the request's path (and query); the error is the 400's details: in the URI, keeping its scheme and authority.
fn set_path(parts: &mut Parts, path: &str, query: Option<&str>) -> Result<(), &'static str> {
    let text = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = Some(PathAndQuery::try_from(text).map_err(|_| "invalid_path")?);
    parts.uri = Uri::from_parts(uri).map_err(|_| "invalid_path")?;
    Ok(())
}

/// Rewrites the authority (the error is the 400's details): the Host header, and the URI's authority when it has one (HTTP/2).
fn set_authority(parts: &mut Parts, authority: &str) -> Result<(), &'static str> {
    let value = HeaderValue::try_from(authority).map_err(|_| "invalid_authority")?;
    if parts.uri.authority().is_some() {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.authority = Some(authority.parse().map_err(|_| "invalid_authority")?);
        parts.uri = Uri::from_parts(uri).map_err(|_| "invalid_authority")?;
    }
    if parts.headers.contains_key(header::HOST) || parts.version != http::Version::HTTP_2 {
        parts.headers.insert(header::HOST, value);
    }
    Ok(())
}

/// An HTTP/2 request forwarded over HTTP/2 needs an absolute URI; HTTP/1.1 keeps the origin form and Host.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    if headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn bad_request(details: &'static str) -> Reply {
    Reply::Status(StatusCode::BAD_REQUEST, details, HeaderMap::new())
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The response sent downstream, and the record completed when its body ends.
fn respond(reply: Reply, mut record: RequestRecord, grpc: bool) -> Response<Body> {
    match reply {
        Reply::Upstream(response, header_ops) => {
            let (mut parts, body) = response.into_parts();
            record.upstream_response(parts.status, &parts.headers);
            HeaderOp::apply_all(&header_ops, &mut parts.headers);
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Recorded::new(body, record).boxed_unsync())
        }
        Reply::Local(reply, text) => {
            record.local_reply(&reply);
            let (status, grpc_status) = reply.downstream_status(if grpc { L7Protocol::Grpc } else { L7Protocol::Http });
            let mut response = if let Some(code) = grpc_status {
                // gRPC: a trailers-only answer carrying the status.
                let mut response = Response::new(empty());
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert("grpc-status", HeaderValue::from(code));
                if let Ok(message) = HeaderValue::try_from(text.trim().replace(['\r', '\n'], " ")) {
                    headers.insert("grpc-message", message);
                }
                response
            } else {
                let body = if text.is_empty() {
                    default_text(&reply).to_string()
                } else {
                    text
                };
                let mut response = Response::new(full(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                response
            };
            *response.status_mut() = status;
            local_body(response, record)
        }
        Reply::Status(status, details, headers) => {
            record.set_status(status);
            record.set_details(details);
            let mut response = Response::new(empty());
            *response.status_mut() = status;
            response.headers_mut().extend(headers);
            local_body(response, record)
        }
    }
}

/// Counts the local answer's bytes and completes the record at its end.
fn local_body(response: Response<Body>, record: RequestRecord) -> Response<Body> {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Recorded::new(body, record).boxed_unsync())
}

/// Envoy's body for a local reply.
fn default_text(reply: &LocalReply) -> &'static str {
    match reply {
        LocalReply::NoRoute => "",
        LocalReply::NoCluster => "no cluster\n",
        LocalReply::NoHealthyUpstream => "no healthy upstream\n",
        LocalReply::UpstreamConnectFailure => "upstream connect error or disconnect/reset before headers\n",
        LocalReply::UpstreamOverflow => "upstream overflow\n",
        LocalReply::UpstreamReset => "upstream connect error or disconnect/reset before headers\n",
        LocalReply::UpstreamTimeout => "upstream request timeout\n",
        LocalReply::FaultAbort(_) => "fault filter abort\n",
        LocalReply::Denied(_) => "RBAC: access denied\n",
    }
}

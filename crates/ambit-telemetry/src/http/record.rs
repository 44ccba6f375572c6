//! The per-request [`RequestRecord`] guard: the driver opens it when a request arrives, fills in the route, the
//! upstream and the response as they become known, feeds the body byte counters, and on
//! [`RequestRecord::finish`] (or on drop, if the request never got there) it records the request metrics and
//! writes one access-log event.
//!
//! # The access log
//!
//! One `request complete` event at info on the `access` target per request, whatever its outcome: the outcome is
//! in `response_code`, `response_flags` and `response_code_details`, not in the level. The fields are those of
//! Istio's default access log (Envoy's names; `duration` and `upstream_service_time` in whole milliseconds,
//! `start_time` in UTC with milliseconds), plus `grpc_status`, `trace_id` and the peers as the TCP access log
//! names them (`src.workload`, `src.namespace`, `src.identity`, `dst.service`, `dst.workload`,
//! `dst.namespace`, `dst.identity`). Fields with no value are left out, as in the TCP log. The subscriber set up
//! by [`crate::init`] renders it as text or JSON.
//!
//! Istio's `connection_termination_details` and `requested_server_name` are never set by ambit's waypoint (it
//! terminates HBONE, so the inner request has no SNI) and are not emitted.

use std::borrow::Cow;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ambit_types::Identity;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use super::flags::{LocalReply, ResponseFlag, ResponseFlagSet, details};
use super::{L7Protocol, RequestLabels, RequestMetrics, grpc_status};
use crate::connection::{ACCESS_TARGET, error_chain, known, log_workload};
use crate::workload::{ConnectionContext, WorkloadInfo};

/// The message of the per-request access-log event.
pub const REQUEST_COMPLETE: &str = "request complete";

/// A body byte counter the driver's body wrappers share with the record.
#[derive(Clone, Debug, Default)]
pub struct ByteCounter(Arc<AtomicU64>);

/// What is known of a request when it arrives. Built by [`RequestInfo::from_request`]; the fields are public so
/// a driver can adjust them (for example an `x-request-id` it generated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub method: Method,
    /// The path and query as received, before any rewrite.
    pub path: String,
    /// `:authority`, or the `Host` header.
    pub authority: Option<String>,
    pub version: Version,
    pub protocol: L7Protocol,
    pub user_agent: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    pub x_forwarded_for: Option<String>,
    /// The trace this request belongs to ([`trace_id`]).
    pub trace_id: Option<String>,
    /// The client's address (for a waypoint: the source pod, from HBONE).
    pub downstream_remote_address: Option<SocketAddr>,
    /// The address the client targeted (for a waypoint: the service VIP and port of the HBONE authority).
    pub downstream_local_address: Option<SocketAddr>,
}

/// Records one request's metrics and access log; see the module docs. Owned by the driver (move it into the
/// response body wrapper to finish when the body ends); the byte counters it hands out can live elsewhere.
#[derive(Debug)]
pub struct RequestRecord {
    metrics: Arc<RequestMetrics>,
    /// The labels known at start (peers, protocol, mTLS); the response labels are added when recording.
    labels: RequestLabels,
    peers: PeerFields,
    request: RequestInfo,
    start: Instant,
    start_time: SystemTime,
    status: Option<StatusCode>,
    grpc_status: Option<u32>,
    flags: ResponseFlagSet,
    details: Option<Cow<'static, str>>,
    route_name: Option<Arc<str>>,
    upstream_host: Option<SocketAddr>,
    upstream_cluster: Option<Arc<str>>,
    upstream_local_address: Option<SocketAddr>,
    upstream_service_time: Option<Duration>,
    upstream_failure: Option<String>,
    request_bytes: ByteCounter,
    response_bytes: ByteCounter,
    done: bool,
}

/// The peer fields of the access log. `None` fields are left out of the event.
#[derive(Debug)]
struct PeerFields {
    mtls: bool,
    src_workload: Option<Arc<str>>,
    src_namespace: Option<Arc<str>>,
    src_identity: Option<String>,
    dst_service: Option<Arc<str>>,
    dst_workload: Option<Arc<str>>,
    dst_namespace: Option<Arc<str>>,
    dst_identity: Option<String>,
}

// === impl ByteCounter ===

impl ByteCounter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

// === impl RequestInfo ===

impl RequestInfo {
    /// Reads the method, path, authority, version, protocol and the logged headers of `req`. Header values that
    /// are not UTF-8 are logged lossily.
    pub fn from_request<B>(req: &http::Request<B>) -> Self {
        let headers = req.headers();
        let uri = req.uri();
        Self {
            method: req.method().clone(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string()),
            authority: uri
                .authority()
                .map(|a| a.as_str().to_string())
                .or_else(|| header_text(headers, http::header::HOST.as_str())),
            version: req.version(),
            protocol: L7Protocol::from_headers(headers),
            user_agent: header_text(headers, http::header::USER_AGENT.as_str()),
            request_id: header_text(headers, "x-request-id"),
            x_forwarded_for: header_text(headers, "x-forwarded-for"),
            trace_id: trace_id(headers),
            downstream_remote_address: None,
            downstream_local_address: None,
        }
    }

    /// Sets the downstream (client) address and the address it targeted.
    pub fn with_addresses(mut self, remote: SocketAddr, local: SocketAddr) -> Self {
        self.downstream_remote_address = Some(remote);
        self.downstream_local_address = Some(local);
        self
    }
}

/// The header's value as text, if present.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// `%PROTOCOL%`: how Envoy names the HTTP version.
fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// The request's trace ID: from W3C `traceparent` (version not `ff`, a non-zero 32-digit trace ID, a 16-digit
/// parent ID), else from B3 (`x-b3-traceid`, or the single `b3` header), as lowercase hex.
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::trim)
    };
    text("traceparent")
        .and_then(traceparent_trace_id)
        .or_else(|| text("x-b3-traceid").and_then(b3_trace_id))
        .or_else(|| text("b3").and_then(|v| v.split('-').next()).and_then(b3_trace_id))
        .map(|id| id.to_ascii_lowercase())
}

fn traceparent_trace_id(value: &str) -> Option<&str> {
    let mut parts = value.split('-');
    let (version, trace, parent, _flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let valid = is_hex(version, 2)
        && !version.eq_ignore_ascii_case("ff")
        && is_hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && is_hex(parent, 16);
    valid.then_some(trace)
}

fn b3_trace_id(value: &str) -> Option<&str> {
    let valid = (is_hex(value, 16) || is_hex(value, 32)) && value.bytes().any(|b| b != b'0');
    valid.then_some(value)
}

/// Whether `s` is exactly `len` hex digits.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `%START_TIME%` as Istio's access log prints it: UTC, milliseconds, e.g. `2022-05-10T13:40:13.396Z`. Times
/// before the Unix epoch print as the epoch.
pub fn format_start_time(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let millis = since.subsec_millis();
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

// === impl RequestRecord ===

impl RequestRecord {
    /// Opens the record now. `ctx` is the downstream connection's context with the destination service filled
    /// in; the destination workload may come later ([`RequestRecord::set_destination`]).
    pub fn start(metrics: &Arc<RequestMetrics>, ctx: &ConnectionContext, request: RequestInfo) -> Self {
        Self::start_at(metrics, ctx, request, Instant::now(), SystemTime::now())
    }

    /// Like [`RequestRecord::start`], with the start given: `start` measures the duration, `start_time` is the
    /// wall-clock time logged.
    pub fn start_at(
        metrics: &Arc<RequestMetrics>,
        ctx: &ConnectionContext,
        request: RequestInfo,
        start: Instant,
        start_time: SystemTime,
    ) -> Self {
        Self {
            metrics: Arc::clone(metrics),
            labels: RequestLabels::from(ctx).with_protocol(request.protocol),
            peers: PeerFields::new(ctx),
            request,
            start,
            start_time,
            status: None,
            grpc_status: None,
            flags: ResponseFlagSet::EMPTY,
            details: None,
            route_name: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            upstream_service_time: None,
            upstream_failure: None,
            request_bytes: ByteCounter::default(),
            response_bytes: ByteCounter::default(),
            done: false,
        }
    }

    /// What the record was opened with.
    pub fn request(&self) -> &RequestInfo {
        &self.request
    }

    /// The name of the route that matched.
    pub fn set_route(&mut self, name: &str) {
        self.route_name = Some(name.into());
    }

    /// The endpoint chosen for the request (the last attempt's, under retries): fills the `destination_*`
    /// workload labels and fields, and the destination principal when the endpoint's identity is known.
    pub fn set_destination(&mut self, workload: &WorkloadInfo, principal: Option<&Identity>) {
        self.labels.fill_destination(workload);
        self.peers.dst_workload = log_workload(workload);
        self.peers.dst_namespace = known(&workload.namespace);
        if let Some(id) = principal {
            self.labels.destination_principal = id.into();
            self.peers.dst_identity = self.peers.mtls.then(|| id.to_string());
        }
    }

    /// `upstream_cluster`: the backend the route chose (ambit names it by service hostname and port).
    pub fn set_upstream_cluster(&mut self, cluster: &str) {
        self.upstream_cluster = Some(cluster.into());
    }

    /// `upstream_host`: the endpoint address of the (last) attempt.
    pub fn set_upstream_host(&mut self, host: SocketAddr) {
        self.upstream_host = Some(host);
    }

    /// `upstream_local_address`: the proxy's side of the upstream connection.
    pub fn set_upstream_local_address(&mut self, addr: SocketAddr) {
        self.upstream_local_address = Some(addr);
    }

    /// `upstream_service_time`: from sending the request upstream to its response headers.
    pub fn set_upstream_service_time(&mut self, elapsed: Duration) {
        self.upstream_service_time = Some(elapsed);
    }

    /// `upstream_transport_failure_reason`: why the upstream connection failed (its message and sources). The
    /// last failure wins: it is the one that decided the outcome.
    pub fn upstream_failed(&mut self, err: &dyn Error) {
        self.upstream_failure = Some(error_chain(err));
    }

    /// The upstream's response headers, relayed downstream: its status, the `grpc-status` of a trailers-only
    /// gRPC response, and `via_upstream`.
    pub fn upstream_response(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.status = Some(status);
        if let Some(code) = grpc_status(headers) {
            self.grpc_status = Some(code);
        }
        self.details = Some(Cow::Borrowed(details::VIA_UPSTREAM));
    }

    /// The response trailers: the `grpc-status` of a gRPC response.
    pub fn response_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(code) = grpc_status(trailers) {
            self.grpc_status = Some(code);
        }
    }

    /// The proxy answered itself: records the status ([`LocalReply::downstream_status`] for this request's
    /// protocol, which the driver must send), the flag and the details.
    pub fn local_reply(&mut self, reply: &LocalReply) {
        let (status, grpc) = reply.downstream_status(self.request.protocol);
        self.status = Some(status);
        self.grpc_status = grpc;
        if let Some(flag) = reply.flag() {
            self.flags.insert(flag);
        }
        self.details = Some(reply.details());
    }

    /// Sets the status sent downstream, for responses neither relayed nor a [`LocalReply`].
    pub fn set_status(&mut self, status: StatusCode) {
        self.status = Some(status);
    }

    /// Sets the `response_code_details`.
    pub fn set_details(&mut self, details: impl Into<Cow<'static, str>>) {
        self.details = Some(details.into());
    }

    /// Adds a response flag (for example `URX` when retries ran out, or `DI` for an injected delay).
    pub fn add_flag(&mut self, flag: ResponseFlag) {
        self.flags.insert(flag);
    }

    /// The counter of request body bytes received from downstream; clone it into the request body wrapper.
    pub fn request_bytes(&self) -> &ByteCounter {
        &self.request_bytes
    }

    /// The counter of response body bytes sent downstream.
    pub fn response_bytes(&self) -> &ByteCounter {
        &self.response_bytes
    }

    /// The labels the metrics would be recorded with now.
    pub fn labels(&self) -> RequestLabels {
        self.labels
            .clone()
            .with_response(self.status, self.grpc_status, self.flags)
    }

    /// Completes the request now.
    pub fn finish(self) {
        self.finish_at(Instant::now());
    }

    /// Completes the request at `end`: records the metrics and writes the access log.
    pub fn finish_at(mut self, end: Instant) {
        self.complete(end);
    }

    fn complete(&mut self, end: Instant) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let duration = end.saturating_duration_since(self.start);
        let labels = self.labels();
        let (received, sent) = (self.request_bytes.get(), self.response_bytes.get());
        self.metrics.record(&labels, duration, received, sent);
        self.log_complete(&labels, duration);
    }

    /// The `request complete` event; see the module docs.
    fn log_complete(&self, labels: &RequestLabels, duration: Duration) {
        let (req, peers) = (&self.request, &self.peers);
        let grpc_status = labels.grpc_response_status;
        tracing::event!(
            target: ACCESS_TARGET,
            tracing::Level::INFO,
            start_time = format_start_time(self.start_time),
            method = req.method.as_str(),
            path = req.path.as_str(),
            protocol = protocol_name(req.version),
            response_code = labels.response_code,
            response_flags = %labels.response_flags,
            response_code_details = self.details.as_deref(),
            grpc_status,
            bytes_received = self.request_bytes.get(),
            bytes_sent = self.response_bytes.get(),
            duration = millis(duration),
            upstream_service_time = self.upstream_service_time.map(millis),
            x_forwarded_for = req.x_forwarded_for.as_deref(),
            user_agent = req.user_agent.as_deref(),
            request_id = req.request_id.as_deref(),
            authority = req.authority.as_deref(),
            upstream_host = self.upstream_host.map(tracing::field::display),
            upstream_cluster = self.upstream_cluster.as_deref(),
            upstream_local_address = self.upstream_local_address.map(tracing::field::display),
            downstream_local_address = req.downstream_local_address.map(tracing::field::display),
            downstream_remote_address = req.downstream_remote_address.map(tracing::field::display),
            upstream_transport_failure_reason = self.upstream_failure.as_deref(),
            route_name = self.route_name.as_deref(),
            trace_id = req.trace_id.as_deref(),
            src.workload = peers.src_workload.as_deref(),
            src.namespace = peers.src_namespace.as_deref(),
            src.identity = peers.src_identity.as_deref(),
            dst.service = peers.dst_service.as_deref(),
            dst.workload = peers.dst_workload.as_deref(),
            dst.namespace = peers.dst_namespace.as_deref(),
            dst.identity = peers.dst_identity.as_deref(),
            "request complete"
        );
    }
}

impl Drop for RequestRecord {
    /// A record dropped without [`RequestRecord::finish`] means the request was abandoned, which for a proxy
    /// is the downstream going away: it completes with `DC` (and `downstream_remote_disconnect` unless details
    /// were set).
    fn drop(&mut self) {
        if !self.done {
            self.flags.insert(ResponseFlag::DownstreamConnectionTermination);
            if self.details.is_none() {
                self.details = Some(Cow::Borrowed(details::DOWNSTREAM_REMOTE_DISCONNECT));
            }
        }
        self.complete(Instant::now());
    }
}

/// Whole milliseconds, as Envoy logs durations.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// === impl PeerFields ===

impl PeerFields {
    fn new(ctx: &ConnectionContext) -> Self {
        let identity = |id: Option<&Identity>| id.filter(|_| ctx.mtls).map(|id| id.to_string());
        let (src, dst) = (ctx.source.as_ref(), ctx.destination.as_ref());
        Self {
            mtls: ctx.mtls,
            src_workload: src.and_then(log_workload),
            src_namespace: src.and_then(|w| known(&w.namespace)),
            src_identity: identity(ctx.source_principal.as_ref()),
            dst_service: ctx.destination_service.as_ref().and_then(|s| known(&s.hostname)),
            dst_workload: dst.and_then(log_workload),
            dst_namespace: dst.and_then(|w| known(&w.namespace)),
            dst_identity: identity(ctx.destination_principal.as_ref()),
        }
    }
}

//! Istio's standard HTTP and gRPC request metrics as a waypoint reports them (`istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`, all labelled with
//! [`RequestLabels`]), the Envoy response flags and details that explain a request's outcome, and the per-request
//! [`RequestRecord`] that records the metrics and writes the access log when the request completes.
//!
//! Values follow what Istio's proxy (Envoy with the `istio.stats` filter) emits, so Istio's dashboards and queries
//! work unchanged with `reporter="waypoint"`:
//!
//! * label names and order are the filter's; free-text labels render a missing value as `unknown`, except
//!   `source_canonical_revision`, which falls back to `latest` as Istio's server-side reporters do;
//! * `request_protocol` is `grpc` for a gRPC content type, else `http`; `response_code` is `0` when no response
//!   was sent; `grpc_response_status` is empty for plain HTTP and, for gRPC, is the `grpc-status` of the trailers
//!   or headers, else the status inferred from the HTTP status, else empty;
//! * `response_flags` are Envoy's short codes joined by `,` (`-` for none). An authorization denial is
//!   `response_code="403"` with no flag: Envoy's RBAC filter sets none and names the policy only in the
//!   access log's `response_code_details` (`rbac_access_denied_matched_policy[...]`), which is what Istio's
//!   dashboards and troubleshooting guides look for;
//! * the three histograms use Envoy's default buckets ([`ISTIO_BUCKETS`]), which Istio does not override. The
//!   duration is observed in fractional milliseconds (Envoy truncates to whole ones).
//!
//! One deviation: `connection_security_policy` reuses the TCP [`SecurityPolicy`], so a plaintext request renders
//! `unknown` where Envoy's server-side reporters print `none`. The waypoint accepts only HBONE, so its requests
//! are always `mutual_tls`.

mod flags;
mod record;

use std::fmt;
use std::time::Duration;

use ambit_types::Identity;
use http::{HeaderMap, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use flags::{LocalReply, MatchedPolicy, ResponseFlag, ResponseFlagSet, details};
pub use record::{ByteCounter, REQUEST_COMPLETE, RequestInfo, RequestRecord, format_start_time, trace_id};

use crate::tcp::{ISTIO_PREFIX, OrUnknown, Reporter, SecurityPolicy};
use crate::workload::{ConnectionContext, DEFAULT_REVISION, ServiceInfo, WorkloadInfo};

/// Envoy's default histogram bucket bounds. Istio configures none for its request histograms, so these are the
/// bounds of `istio_request_duration_milliseconds` (milliseconds) and of `istio_request_bytes` and
/// `istio_response_bytes` (bytes) alike.
pub const ISTIO_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

// Help texts; prometheus-client appends the final period.
const REQUESTS_HELP: &str = "The total number of requests handled by the proxy";
const DURATION_HELP: &str = "The duration of requests in milliseconds";
const REQUEST_BYTES_HELP: &str = "The size of request bodies in bytes";
const RESPONSE_BYTES_HELP: &str = "The size of response bodies in bytes";

/// The `grpc-status` header or trailer.
const GRPC_STATUS: &str = "grpc-status";

/// `request_protocol` of the request metrics.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub enum L7Protocol {
    #[default]
    Http,
    Grpc,
}

/// The labels of every request metric, in the order Istio's stats filter emits them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: Reporter,

    pub source_workload: OrUnknown,
    pub source_canonical_service: OrUnknown,
    pub source_canonical_revision: OrUnknown,
    pub source_workload_namespace: OrUnknown,
    pub source_principal: OrUnknown,
    pub source_app: OrUnknown,
    pub source_version: OrUnknown,
    pub source_cluster: OrUnknown,

    pub destination_workload: OrUnknown,
    pub destination_workload_namespace: OrUnknown,
    pub destination_principal: OrUnknown,
    pub destination_app: OrUnknown,
    pub destination_version: OrUnknown,
    pub destination_service: OrUnknown,
    pub destination_canonical_service: OrUnknown,
    pub destination_canonical_revision: OrUnknown,
    pub destination_service_name: OrUnknown,
    pub destination_service_namespace: OrUnknown,
    pub destination_cluster: OrUnknown,

    pub request_protocol: L7Protocol,
    /// The HTTP status sent downstream, `0` when none was.
    pub response_code: u16,
    /// Empty (`None`) for plain HTTP, and for gRPC when no status is known.
    pub grpc_response_status: Option<u32>,
    pub response_flags: ResponseFlagSet,
    pub connection_security_policy: SecurityPolicy,
}

/// The request metric families. Cheap to share behind an `Arc`; every family is itself reference-counted.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    request_bytes: Family<RequestLabels, Histogram>,
    response_bytes: Family<RequestLabels, Histogram>,
}

// === impl L7Protocol ===

impl L7Protocol {
    /// `grpc` when the request's `content-type` is gRPC's, as Envoy decides it: `application/grpc` itself or
    /// followed by `+` (a codec) or `;` (parameters). gRPC-Web is not gRPC here, as in Envoy.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_grpc_content_type);
        if grpc { L7Protocol::Grpc } else { L7Protocol::Http }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            L7Protocol::Http => "http",
            L7Protocol::Grpc => "grpc",
        }
    }
}

fn is_grpc_content_type(value: &str) -> bool {
    value
        .strip_prefix("application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
}

impl fmt::Display for L7Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for L7Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

// === gRPC status ===

/// The `grpc-status` of a header or trailer block, when present and numeric.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// The gRPC status a client infers from an HTTP status when the response carries none, per gRPC's "HTTP to gRPC
/// status code mapping" (which Envoy applies too): 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
/// 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, anything else UNKNOWN.
pub fn grpc_status_for_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// The `grpc_response_status` label value: none for plain HTTP; for gRPC the status the response carried, else
/// the one inferred from its HTTP status, else none.
pub fn effective_grpc_status(protocol: L7Protocol, carried: Option<u32>, status: Option<StatusCode>) -> Option<u32> {
    match protocol {
        L7Protocol::Http => None,
        L7Protocol::Grpc => carried.or_else(|| status.map(grpc_status_for_http)),
    }
}

// === impl RequestLabels ===

impl RequestLabels {
    /// Labels with only the reporter known: every text label `unknown` (the source revision `latest`), protocol
    /// `http`, no response (`response_code="0"`), no flags, no mTLS.
    pub fn new(reporter: Reporter) -> Self {
        let u = OrUnknown::unknown;
        Self {
            reporter,
            source_workload: u(),
            source_canonical_service: u(),
            source_canonical_revision: DEFAULT_REVISION.into(),
            source_workload_namespace: u(),
            source_principal: u(),
            source_app: u(),
            source_version: u(),
            source_cluster: u(),
            destination_workload: u(),
            destination_workload_namespace: u(),
            destination_principal: u(),
            destination_app: u(),
            destination_version: u(),
            destination_service: u(),
            destination_canonical_service: u(),
            destination_canonical_revision: u(),
            destination_service_name: u(),
            destination_service_namespace: u(),
            destination_cluster: u(),
            request_protocol: L7Protocol::Http,
            response_code: 0,
            grpc_response_status: None,
            response_flags: ResponseFlagSet::EMPTY,
            connection_security_policy: SecurityPolicy::Unknown,
        }
    }

    /// Fills the `source_*` workload labels (not the principal: that comes only from the handshake).
    pub fn with_source(mut self, w: &WorkloadInfo) -> Self {
        self.source_workload = (&w.name).into();
        self.source_canonical_service = (&w.canonical_service).into();
        self.source_canonical_revision = (&w.canonical_revision).into();
        self.source_workload_namespace = (&w.namespace).into();
        self.source_app = (&w.app).into();
        self.source_version = (&w.version).into();
        self.source_cluster = (&w.cluster).into();
        self
    }

    /// Fills the `destination_*` workload labels (not the principal).
    pub fn with_destination(mut self, w: &WorkloadInfo) -> Self {
        self.fill_destination(w);
        self
    }

    fn fill_destination(&mut self, w: &WorkloadInfo) {
        self.destination_workload = (&w.name).into();
        self.destination_workload_namespace = (&w.namespace).into();
        self.destination_app = (&w.app).into();
        self.destination_version = (&w.version).into();
        self.destination_canonical_service = (&w.canonical_service).into();
        self.destination_canonical_revision = (&w.canonical_revision).into();
        self.destination_cluster = (&w.cluster).into();
    }

    /// Fills `destination_service`, `destination_service_name` and `destination_service_namespace`.
    pub fn with_destination_service(mut self, s: &ServiceInfo) -> Self {
        self.destination_service = (&s.hostname).into();
        self.destination_service_name = (&s.name).into();
        self.destination_service_namespace = (&s.namespace).into();
        self
    }

    pub fn with_source_principal(mut self, id: &Identity) -> Self {
        self.source_principal = id.into();
        self
    }

    pub fn with_destination_principal(mut self, id: &Identity) -> Self {
        self.destination_principal = id.into();
        self
    }

    pub fn with_mtls(mut self, mtls: bool) -> Self {
        self.connection_security_policy = SecurityPolicy::from_mtls(mtls);
        self
    }

    pub fn with_protocol(mut self, protocol: L7Protocol) -> Self {
        self.request_protocol = protocol;
        self
    }

    /// Fills the response labels: the status sent (`None`: `0`), the gRPC status as
    /// [`effective_grpc_status`] derives it from `carried_grpc`, and the flags.
    pub fn with_response(
        mut self,
        status: Option<StatusCode>,
        carried_grpc: Option<u32>,
        flags: ResponseFlagSet,
    ) -> Self {
        self.response_code = status.map_or(0, |s| s.as_u16());
        self.grpc_response_status = effective_grpc_status(self.request_protocol, carried_grpc, status);
        self.response_flags = flags;
        self
    }

    /// Applies `f` with the value when there is one.
    fn maybe<T>(self, v: Option<&T>, f: impl FnOnce(Self, &T) -> Self) -> Self {
        match v {
            Some(v) => f(self, v),
            None => self,
        }
    }
}

impl From<&ConnectionContext> for RequestLabels {
    fn from(c: &ConnectionContext) -> Self {
        RequestLabels::new(c.reporter)
            .maybe(c.source.as_ref(), Self::with_source)
            .maybe(c.destination.as_ref(), Self::with_destination)
            .maybe(c.destination_service.as_ref(), Self::with_destination_service)
            .maybe(c.source_principal.as_ref(), Self::with_source_principal)
            .maybe(c.destination_principal.as_ref(), Self::with_destination_principal)
            .with_mtls(c.mtls)
    }
}

// === impl RequestMetrics ===

impl RequestMetrics {
    /// Creates the families and registers them under the `istio` prefix of `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix(ISTIO_PREFIX);
        r.register("requests", REQUESTS_HELP, metrics.requests.clone());
        r.register("request_duration_milliseconds", DURATION_HELP, metrics.duration.clone());
        r.register("request_bytes", REQUEST_BYTES_HELP, metrics.request_bytes.clone());
        r.register("response_bytes", RESPONSE_BYTES_HELP, metrics.response_bytes.clone());
        metrics
    }

    /// Records one completed request: counts it and observes its duration and body sizes.
    pub fn record(&self, labels: &RequestLabels, duration: Duration, request_bytes: u64, response_bytes: u64) {
        self.requests.get_or_create(labels).inc();
        self.duration.get_or_create(labels).observe(duration_ms(duration));
        self.request_bytes.get_or_create(labels).observe(request_bytes as f64);
        self.response_bytes.get_or_create(labels).observe(response_bytes as f64);
    }

    /// The current value of `istio_requests_total` for `labels`.
    pub fn requests(&self, labels: &RequestLabels) -> u64 {
        self.requests.get(labels).map_or(0, |c| c.get())
    }
}

impl Default for RequestMetrics {
    /// Unregistered families (for tests and for components that register later).
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(istio_histogram),
            request_bytes: Family::new_with_constructor(istio_histogram),
            response_bytes: Family::new_with_constructor(istio_histogram),
        }
    }
}

/// A histogram with [`ISTIO_BUCKETS`].
fn istio_histogram() -> Histogram {
    Histogram::new(ISTIO_BUCKETS)
}

/// `d` in fractional milliseconds.
fn duration_ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests;

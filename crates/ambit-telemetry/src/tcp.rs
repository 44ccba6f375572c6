//! Istio's standard TCP metrics as the ztunnel exports them: `istio_tcp_connections_opened_total`,
//! `istio_tcp_connections_closed_total`, `istio_tcp_received_bytes_total`, `istio_tcp_sent_bytes_total`,
//! `istio_tcp_connections_failed_total` (all labelled with [`TcpLabels`]) and `istio_tcp_sockets_open{reporter}`.
//!
//! Label values are typed: enums for the closed sets (reporter, response flags, security policy, protocol) and
//! [`OrUnknown`] for free text, which renders a missing value as `unknown` like Istio does.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use ambit_types::Identity;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::workload::{ConnectionContext, ServiceInfo, WorkloadInfo};

/// The registry prefix of every Istio metric.
pub const ISTIO_PREFIX: &str = "istio";

// Help texts; prometheus-client appends the final period.
const OPENED_HELP: &str = "The total number of TCP connections opened";
const CLOSED_HELP: &str = "The total number of TCP connections closed";
const RECEIVED_HELP: &str = "The size of total bytes received during request in case of a TCP connection";
const SENT_HELP: &str = "The size of total bytes sent during response in case of a TCP connection";
const FAILED_HELP: &str = "The total number of TCP connections that failed (unstable)";
const SOCKETS_HELP: &str = "The number of TCP sockets currently open (unstable)";

/// Which end of the connection the reporting proxy serves.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Reporter {
    /// The client side: the proxy of the workload that opened the connection (outbound).
    Source,
    /// The server side: the proxy of the workload that accepted it (inbound).
    Destination,
    /// A waypoint, reporting once for both sides of what it proxies (Istio's "waypoint single" reporting). It
    /// serves the connections it accepts, so bytes and access-log direction follow [`Reporter::Destination`].
    Waypoint,
}

/// Envoy-style response flags describing why a connection failed; [`ResponseFlags::None`] renders as `-`.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub enum ResponseFlags {
    #[default]
    None,
    /// Denied by authorization policy.
    Deny,
    /// The upstream connection could not be established.
    Connect,
    /// The TLS handshake failed.
    TlsFailure,
    /// The HTTP/2 (HBONE) handshake failed.
    H2HandshakeFailure,
    /// Dropped by network policy.
    NetworkPolicy,
    /// No certificate for the identity was available, or the peer presented an unexpected one.
    IdentityError,
    /// The peer's certificate was revoked.
    CertRevoked,
}

/// `connection_security_policy`: Istio reports only `mutual_tls` or `unknown` for TCP.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub enum SecurityPolicy {
    #[default]
    Unknown,
    MutualTls,
}

/// `request_protocol`: always `tcp` for these metrics.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub enum RequestProtocol {
    #[default]
    Tcp,
}

/// A free-text label value that renders as `unknown` when missing or empty. Empty and missing are one value, so
/// they never split a series.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct OrUnknown(Option<Arc<str>>);

/// The labels of every TCP metric except the sockets gauge, in Istio's order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: Reporter,

    pub source_workload: OrUnknown,
    pub source_canonical_service: OrUnknown,
    pub source_canonical_revision: OrUnknown,
    pub source_workload_namespace: OrUnknown,
    pub source_principal: OrUnknown,
    pub source_app: OrUnknown,
    pub source_version: OrUnknown,
    pub source_cluster: OrUnknown,

    pub destination_service: OrUnknown,
    pub destination_service_namespace: OrUnknown,
    pub destination_service_name: OrUnknown,

    pub destination_workload: OrUnknown,
    pub destination_canonical_service: OrUnknown,
    pub destination_canonical_revision: OrUnknown,
    pub destination_workload_namespace: OrUnknown,
    pub destination_principal: OrUnknown,
    pub destination_app: OrUnknown,
    pub destination_version: OrUnknown,
    pub destination_cluster: OrUnknown,

    pub request_protocol: RequestProtocol,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: SecurityPolicy,
}

/// The labels of `istio_tcp_sockets_open`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketLabels {
    pub reporter: Reporter,
}

/// The TCP metric families. Cheap to share behind an `Arc`; every family is itself reference-counted.
#[derive(Clone, Debug, Default)]
pub struct TcpMetrics {
    pub(crate) opened: Family<TcpLabels, Counter>,
    pub(crate) closed: Family<TcpLabels, Counter>,
    pub(crate) received_bytes: Family<TcpLabels, Counter>,
    pub(crate) sent_bytes: Family<TcpLabels, Counter>,
    pub(crate) failed: Family<TcpLabels, Counter>,
    pub(crate) sockets_open: Family<SocketLabels, Gauge>,
    /// The series of each label set seen, resolved once (see [`TcpMetrics::series`]).
    series: Arc<Mutex<HashMap<TcpLabels, Arc<TcpSeries>>>>,
}

/// The counters one label set feeds for a connection's whole life, resolved from the families together: a connection
/// then looks its labels up once (hashing a label set of 22 values costs about as much as the rest of its metrics
/// work), instead of once per family at open, then again at close. A series, once created, lives as long as its
/// family, so holding them adds no cardinality.
#[derive(Debug)]
pub(crate) struct TcpSeries {
    pub(crate) opened: Counter,
    pub(crate) closed: Counter,
    pub(crate) sent_bytes: Counter,
    pub(crate) received_bytes: Counter,
}

// === impl Reporter ===

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }
}

// === impl ResponseFlags ===

impl ResponseFlags {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlags::None => "-",
            ResponseFlags::Deny => "DENY",
            ResponseFlags::Connect => "CONNECT",
            ResponseFlags::TlsFailure => "TLS_FAILURE",
            ResponseFlags::H2HandshakeFailure => "H2_HANDSHAKE_FAILURE",
            ResponseFlags::NetworkPolicy => "NETWORK_POLICY",
            ResponseFlags::IdentityError => "IDENTITY_ERROR",
            ResponseFlags::CertRevoked => "CERT_REVOKED",
        }
    }
}

// === impl SecurityPolicy ===

impl SecurityPolicy {
    pub fn from_mtls(mtls: bool) -> Self {
        if mtls {
            SecurityPolicy::MutualTls
        } else {
            SecurityPolicy::Unknown
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::Unknown => "unknown",
            SecurityPolicy::MutualTls => "mutual_tls",
        }
    }
}

// === impl RequestProtocol ===

impl RequestProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Tcp => "tcp",
        }
    }
}

/// `Display` and `EncodeLabelValue` through each enum's `as_str`.
macro_rules! label_value_via_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
                fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}

label_value_via_as_str!(Reporter, ResponseFlags, SecurityPolicy, RequestProtocol);

// === impl OrUnknown ===

impl OrUnknown {
    pub const UNKNOWN: &'static str = "unknown";

    /// The missing value.
    pub fn unknown() -> Self {
        Self(None)
    }

    /// The value, or `None` when missing or empty.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The rendered value: the text, or `unknown`.
    pub fn as_str(&self) -> &str {
        self.get().unwrap_or(Self::UNKNOWN)
    }

    /// The value shared, or `None` when missing or empty.
    pub(crate) fn shared(&self) -> Option<Arc<str>> {
        self.0.clone()
    }
}

impl From<Arc<str>> for OrUnknown {
    fn from(v: Arc<str>) -> Self {
        Self(Some(v).filter(|v| !v.is_empty()))
    }
}

impl From<&Arc<str>> for OrUnknown {
    fn from(v: &Arc<str>) -> Self {
        Self::from(Arc::clone(v))
    }
}

impl From<&str> for OrUnknown {
    fn from(v: &str) -> Self {
        Self::from(Arc::<str>::from(v))
    }
}

impl From<&Identity> for OrUnknown {
    fn from(id: &Identity) -> Self {
        Self::from(id.to_string().as_str())
    }
}

impl<T> From<Option<T>> for OrUnknown
where
    OrUnknown: From<T>,
{
    fn from(v: Option<T>) -> Self {
        v.map(Self::from).unwrap_or_default()
    }
}

impl fmt::Display for OrUnknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for OrUnknown {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

// === impl TcpLabels ===

impl TcpLabels {
    /// Labels with only the reporter known: every other text label is `unknown`, no flags, no mTLS.
    pub fn new(reporter: Reporter) -> Self {
        let u = OrUnknown::unknown;
        Self {
            reporter,
            source_workload: u(),
            source_canonical_service: u(),
            source_canonical_revision: u(),
            source_workload_namespace: u(),
            source_principal: u(),
            source_app: u(),
            source_version: u(),
            source_cluster: u(),
            destination_service: u(),
            destination_service_namespace: u(),
            destination_service_name: u(),
            destination_workload: u(),
            destination_canonical_service: u(),
            destination_canonical_revision: u(),
            destination_workload_namespace: u(),
            destination_principal: u(),
            destination_app: u(),
            destination_version: u(),
            destination_cluster: u(),
            request_protocol: RequestProtocol::Tcp,
            response_flags: ResponseFlags::None,
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
        self.destination_workload = (&w.name).into();
        self.destination_canonical_service = (&w.canonical_service).into();
        self.destination_canonical_revision = (&w.canonical_revision).into();
        self.destination_workload_namespace = (&w.namespace).into();
        self.destination_app = (&w.app).into();
        self.destination_version = (&w.version).into();
        self.destination_cluster = (&w.cluster).into();
        self
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

    pub fn with_response_flags(mut self, flags: ResponseFlags) -> Self {
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

impl From<&ConnectionContext> for TcpLabels {
    fn from(c: &ConnectionContext) -> Self {
        TcpLabels::new(c.reporter)
            .maybe(c.source.as_ref(), Self::with_source)
            .maybe(c.destination.as_ref(), Self::with_destination)
            .maybe(c.destination_service.as_ref(), Self::with_destination_service)
            .maybe(c.source_principal.as_ref(), Self::with_source_principal)
            .maybe(c.destination_principal.as_ref(), Self::with_destination_principal)
            .with_mtls(c.mtls)
    }
}

// === impl TcpMetrics ===

impl TcpMetrics {
    /// Creates the families and registers them under the `istio` prefix of `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix(ISTIO_PREFIX);
        r.register("tcp_connections_opened", OPENED_HELP, metrics.opened.clone());
        r.register("tcp_connections_closed", CLOSED_HELP, metrics.closed.clone());
        r.register("tcp_received_bytes", RECEIVED_HELP, metrics.received_bytes.clone());
        r.register("tcp_sent_bytes", SENT_HELP, metrics.sent_bytes.clone());
        r.register("tcp_connections_failed", FAILED_HELP, metrics.failed.clone());
        r.register("tcp_sockets_open", SOCKETS_HELP, metrics.sockets_open.clone());
        metrics
    }

    /// The counters of `labels`, created in their families on first use.
    pub(crate) fn series(&self, labels: &TcpLabels) -> Arc<TcpSeries> {
        // A panic cannot happen under the lock (lookups, clones and inserts only), so a poisoned map is still whole.
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = series.get(labels) {
            return Arc::clone(found);
        }
        let resolved = Arc::new(TcpSeries {
            opened: self.opened.get_or_create_owned(labels),
            closed: self.closed.get_or_create_owned(labels),
            sent_bytes: self.sent_bytes.get_or_create_owned(labels),
            received_bytes: self.received_bytes.get_or_create_owned(labels),
        });
        series.insert(labels.clone(), Arc::clone(&resolved));
        resolved
    }

    /// The current value of `istio_tcp_connections_opened_total` for `labels`.
    pub fn opened(&self, labels: &TcpLabels) -> u64 {
        counter_value(&self.opened, labels)
    }

    /// The current value of `istio_tcp_connections_closed_total` for `labels`.
    pub fn closed(&self, labels: &TcpLabels) -> u64 {
        counter_value(&self.closed, labels)
    }

    /// The current value of `istio_tcp_connections_failed_total` for `labels`.
    pub fn failed(&self, labels: &TcpLabels) -> u64 {
        counter_value(&self.failed, labels)
    }

    /// The current value of `istio_tcp_received_bytes_total` for `labels`.
    pub fn received_bytes(&self, labels: &TcpLabels) -> u64 {
        counter_value(&self.received_bytes, labels)
    }

    /// The current value of `istio_tcp_sent_bytes_total` for `labels`.
    pub fn sent_bytes(&self, labels: &TcpLabels) -> u64 {
        counter_value(&self.sent_bytes, labels)
    }

    /// The current value of `istio_tcp_sockets_open{reporter}`.
    pub fn sockets_open(&self, reporter: Reporter) -> i64 {
        self.sockets_open.get(&SocketLabels { reporter }).map_or(0, |g| g.get())
    }
}

/// Reads a counter without creating its series.
fn counter_value(family: &Family<TcpLabels, Counter>, labels: &TcpLabels) -> u64 {
    family.get(labels).map_or(0, |c| c.get())
}

#[cfg(test)]
mod tests;

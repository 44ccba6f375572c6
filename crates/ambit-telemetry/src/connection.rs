//! The per-connection [`ConnectionResult`] guard: it counts the connection as opened when created, adds bytes to the
//! byte counters as they flow, and on [`ConnectionResult::finish`] (or on drop, if the driver never got there)
//! counts it closed (and failed, on error), lowers the open-sockets gauge and writes the access log.
//!
//! # Byte direction
//!
//! The driver reports bytes from the reporting side's point of view: [`ConnectionResult::record_sent`] for bytes
//! leaving the workload this proxy reports for, towards the other end of the connection, and
//! [`ConnectionResult::record_received`] for bytes arriving at it. So on the source (client) side `sent` is the
//! request stream, and on the destination (server) side `sent` is the response stream.
//!
//! * **Access logs** use that view unchanged: `bytes_sent` / `bytes_recv` are what this side sent / received.
//! * **Metrics** follow Istio, whose `istio_tcp_received_bytes_total` is "bytes received during request" and
//!   `istio_tcp_sent_bytes_total` "bytes sent during response" on both reporters. For `reporter="destination"`
//!   that matches the local view; for `reporter="source"` the two are swapped: the client side's sent bytes land in
//!   `istio_tcp_received_bytes_total` and its received bytes in `istio_tcp_sent_bytes_total` (istio/istio#32399).
//!
//! The byte counters are resolved once, with the labels as they are at open (`response_flags="-"`); the closed and
//! failed counters use the labels at completion, including the response flags set meanwhile.

use std::error::Error;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::tcp::{OrUnknown, Reporter, ResponseFlags, SocketLabels, TcpLabels, TcpMetrics, TcpSeries};
use crate::workload::{ConnectionContext, WorkloadInfo};

/// The tracing target of access logs.
pub const ACCESS_TARGET: &str = "access";

/// The error logged for a guard dropped before [`ConnectionResult::finish`] with no error recorded.
pub const DROPPED_ERROR: &str = "connection closed before it completed (its task was cancelled or panicked)";

/// The direction of a connection as access logs name it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// Reported by the destination side.
    Inbound,
    /// Reported by the source side.
    Outbound,
}

/// The addresses of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionAddrs {
    /// The client's address.
    pub src: SocketAddr,
    /// The next hop, e.g. `podIP:15008` for outbound HBONE.
    pub dst: SocketAddr,
    /// The HBONE CONNECT authority (the inner destination), when tunnelled.
    pub hbone: Option<String>,
}

/// Records one connection's metrics and access log. Create it when the connection is accepted or opened; it is
/// `Sync`, so both copy directions can record bytes through a shared reference.
#[derive(Debug)]
pub struct ConnectionResult {
    metrics: Arc<TcpMetrics>,
    labels: TcpLabels,
    /// The counters of the labels at open; the closed counter serves at completion unless the flags changed.
    series: Arc<TcpSeries>,
    log: LogFields,
    start: Instant,
    sent: AtomicU64,
    received: AtomicU64,
    sockets_open: Gauge,
    error: Option<String>,
    done: bool,
}

/// The access-log fields fixed at open. `None` fields are left out of the event.
#[derive(Debug)]
struct LogFields {
    direction: Direction,
    src_addr: SocketAddr,
    src_workload: Option<Arc<str>>,
    src_namespace: Option<Arc<str>>,
    src_identity: Option<Arc<str>>,
    src_cluster: Option<Arc<str>>,
    dst_addr: SocketAddr,
    dst_hbone_addr: Option<String>,
    dst_service: Option<Arc<str>>,
    dst_workload: Option<Arc<str>>,
    dst_namespace: Option<Arc<str>>,
    dst_identity: Option<Arc<str>>,
    dst_cluster: Option<Arc<str>>,
}

/// Emits an access-log event with the fields every connection event carries, then `$extra` fields.
macro_rules! access_event {
    ($level:expr, $log:expr, $msg:literal $(, $($extra:tt)+)?) => {
        tracing::event!(
            target: ACCESS_TARGET,
            $level,
            src.addr = %$log.src_addr,
            src.workload = $log.src_workload.as_deref(),
            src.namespace = $log.src_namespace.as_deref(),
            src.identity = $log.src_identity.as_deref(),
            src.cluster = $log.src_cluster.as_deref(),
            dst.addr = %$log.dst_addr,
            dst.hbone_addr = $log.dst_hbone_addr.as_deref(),
            dst.service = $log.dst_service.as_deref(),
            dst.workload = $log.dst_workload.as_deref(),
            dst.namespace = $log.dst_namespace.as_deref(),
            dst.identity = $log.dst_identity.as_deref(),
            dst.cluster = $log.dst_cluster.as_deref(),
            direction = $log.direction.as_str(),
            $($($extra)+,)?
            $msg
        )
    };
}

/// Logs a connection refused before a [`ConnectionResult`] could be built (for example an early policy deny):
/// `connection failed` at warn with only the addresses, the direction and the error. It touches no metric.
pub fn log_connection_failed(src: SocketAddr, dst: SocketAddr, direction: Direction, err: &dyn Error) {
    tracing::event!(
        target: ACCESS_TARGET,
        tracing::Level::WARN,
        src.addr = %src,
        dst.addr = %dst,
        direction = direction.as_str(),
        error = error_chain(err),
        "connection failed"
    );
}

// === impl Direction ===

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl From<Reporter> for Direction {
    fn from(r: Reporter) -> Self {
        match r {
            Reporter::Source => Direction::Outbound,
            Reporter::Destination | Reporter::Waypoint => Direction::Inbound,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl ConnectionResult ===

impl ConnectionResult {
    /// Opens the guard now: counts the connection opened, raises the open-sockets gauge and logs
    /// `connection opened` at debug.
    pub fn open(metrics: &Arc<TcpMetrics>, ctx: &ConnectionContext, addrs: ConnectionAddrs) -> Self {
        Self::open_at(metrics, ctx, addrs, Instant::now())
    }

    /// Like [`ConnectionResult::open`], with the connection's start time given (its duration is measured from it).
    pub fn open_at(metrics: &Arc<TcpMetrics>, ctx: &ConnectionContext, addrs: ConnectionAddrs, start: Instant) -> Self {
        let labels = TcpLabels::from(ctx);
        let series = metrics.series(&labels);
        series.opened.inc();
        let sockets_open = metrics
            .sockets_open
            .get_or_create_owned(&SocketLabels { reporter: ctx.reporter });
        sockets_open.inc();
        let log = LogFields::new(ctx, &labels, addrs);
        access_event!(tracing::Level::DEBUG, log, "connection opened");
        Self {
            metrics: Arc::clone(metrics),
            labels,
            series,
            log,
            start,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sockets_open,
            error: None,
            done: false,
        }
    }

    /// Adds `n` bytes sent by this side (see the module docs for the direction). An atomic add on a counter
    /// resolved at open: no label lookup.
    pub fn record_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        byte_counters(&self.series, self.labels.reporter).0.inc_by(n);
    }

    /// Adds `n` bytes received by this side.
    pub fn record_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
        byte_counters(&self.series, self.labels.reporter).1.inc_by(n);
    }

    /// Bytes sent by this side so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes received by this side so far.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The labels the closed (and failed) counters will use, as they stand now.
    pub fn labels(&self) -> &TcpLabels {
        &self.labels
    }

    /// Sets the response flags reported when the connection completes.
    pub fn set_response_flags(&mut self, flags: ResponseFlags) {
        self.labels.response_flags = flags;
    }

    /// Marks the connection failed with `err` (its message and its sources, joined by `: `). The first error
    /// recorded wins: later ones are usually its consequences.
    pub fn record_error(&mut self, err: &dyn Error) {
        if self.error.is_none() {
            self.error = Some(error_chain(err));
        }
    }

    /// [`ConnectionResult::record_error`] and [`ConnectionResult::set_response_flags`] together.
    pub fn fail(&mut self, err: &dyn Error, flags: ResponseFlags) {
        self.record_error(err);
        self.set_response_flags(flags);
    }

    /// Whether an error has been recorded.
    pub fn is_failed(&self) -> bool {
        self.error.is_some()
    }

    /// Completes the connection: success unless an error was recorded.
    pub fn finish(mut self) {
        self.complete();
    }

    fn complete(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if self.labels.response_flags == ResponseFlags::None {
            // As at open (flags are only ever set away from none): the series resolved then.
            self.series.closed.inc();
        } else {
            self.metrics.closed.get_or_create(&self.labels).inc();
        }
        if self.error.is_some() {
            self.metrics.failed.get_or_create(&self.labels).inc();
        }
        self.sockets_open.dec();
        self.log_complete();
    }

    /// `connection complete`: info on success, error (with the `error` field) on failure.
    fn log_complete(&self) {
        let (sent, recv) = (self.bytes_sent(), self.bytes_received());
        let duration = format!("{}ms", self.start.elapsed().as_millis());
        let log = &self.log;
        match &self.error {
            None => access_event!(
                tracing::Level::INFO,
                log,
                "connection complete",
                bytes_sent = sent,
                bytes_recv = recv,
                duration = duration
            ),
            Some(error) => access_event!(
                tracing::Level::ERROR,
                log,
                "connection complete",
                bytes_sent = sent,
                bytes_recv = recv,
                duration = duration,
                error = error.as_str()
            ),
        }
    }
}

impl Drop for ConnectionResult {
    /// A guard dropped without [`ConnectionResult::finish`] completes as a failure: with the error recorded, or
    /// with [`DROPPED_ERROR`].
    fn drop(&mut self) {
        if !self.done && self.error.is_none() {
            self.error = Some(DROPPED_ERROR.to_string());
        }
        self.complete();
    }
}

/// The counters `record_sent` and `record_received` feed, in that order, flipped for the source reporter.
fn byte_counters(series: &TcpSeries, reporter: Reporter) -> (&Counter, &Counter) {
    let (sent, received) = (&series.sent_bytes, &series.received_bytes);
    match reporter {
        Reporter::Destination | Reporter::Waypoint => (sent, received),
        Reporter::Source => (received, sent),
    }
}

/// `err`'s message followed by each of its sources', joined by `: `.
pub(crate) fn error_chain(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        // Writing to a String cannot fail.
        let _ = write!(out, ": {e}");
        next = e.source();
    }
    out
}

// === impl LogFields ===

impl LogFields {
    /// The principals are the labels' (already rendered there), shown only over mTLS.
    fn new(ctx: &ConnectionContext, labels: &TcpLabels, addrs: ConnectionAddrs) -> Self {
        let identity = |principal: &OrUnknown| principal.shared().filter(|_| ctx.mtls);
        let (src, dst) = (ctx.source.as_ref(), ctx.destination.as_ref());
        Self {
            direction: ctx.reporter.into(),
            src_addr: addrs.src,
            src_workload: src.and_then(log_workload),
            src_namespace: src.and_then(|w| known(&w.namespace)),
            src_identity: identity(&labels.source_principal),
            src_cluster: src.and_then(|w| known(&w.cluster)),
            dst_addr: addrs.dst,
            dst_hbone_addr: addrs.hbone,
            dst_service: ctx.destination_service.as_ref().and_then(|s| known(&s.hostname)),
            dst_workload: dst.and_then(log_workload),
            dst_namespace: dst.and_then(|w| known(&w.namespace)),
            dst_identity: identity(&labels.destination_principal),
            dst_cluster: dst.and_then(|w| known(&w.cluster)),
        }
    }
}

/// `Some` unless empty.
pub(crate) fn known(s: &Arc<str>) -> Option<Arc<str>> {
    (!s.is_empty()).then(|| Arc::clone(s))
}

/// The name access logs show for a workload: its pod if known, else the workload name.
pub(crate) fn log_workload(w: &WorkloadInfo) -> Option<Arc<str>> {
    w.pod.as_ref().and_then(known).or_else(|| known(&w.name))
}

#[cfg(test)]
mod tests;

//! Istio-compatible telemetry for ambit: the ztunnel's TCP metrics on prometheus-client, the per-connection
//! [`ConnectionResult`] guard that writes metrics and the access log, and logging set-up.
//!
//! Nothing here is global: each component registers its metrics into a `Registry` it is given
//! ([`Metrics::new`]), and the admin server encodes that registry ([`encode`]).

mod connection;
pub mod http;
mod logging;
mod tcp;
#[cfg(test)]
mod test_util;
mod workload;

use std::sync::Arc;

use prometheus_client::registry::Registry;

pub use connection::{
    ACCESS_TARGET, ConnectionAddrs, ConnectionResult, DROPPED_ERROR, Direction, log_connection_failed,
};
pub use logging::{LogFormat, LoggingError, init};
pub use prometheus_client;
pub use tcp::{
    ISTIO_PREFIX, OrUnknown, Reporter, RequestProtocol, ResponseFlags, SecurityPolicy, SocketLabels, TcpLabels,
    TcpMetrics,
};
pub use workload::{
    APP_LABEL, CANONICAL_NAME_LABEL, CANONICAL_REVISION_LABEL, ConnectionContext, DEFAULT_REVISION, K8S_NAME_LABEL,
    K8S_VERSION_LABEL, ServiceInfo, VERSION_LABEL, WorkloadInfo,
};

/// Every metric family of the node proxy, registered once at start-up and shared by reference.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub tcp: Arc<TcpMetrics>,
}

impl Metrics {
    /// Creates all families and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        Self {
            tcp: Arc::new(TcpMetrics::register(registry)),
        }
    }
}

/// Encodes `registry` in the OpenMetrics text format, `# EOF` included. Fails only if a metric cannot be
/// represented (prometheus-client rejects, for example, a `u64` gauge above `i64::MAX`).
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

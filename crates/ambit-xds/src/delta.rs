//! The delta ADS client: one `DeltaAggregatedResources` stream to the control plane carrying every type URL the node
//! proxy handles, as ztunnel speaks it to istiod.
//!
//! * [`Handler`]: what the node proxy implements per type URL; it applies an [`Update`] or rejects it.
//! * [`DeltaState`]: the sans-IO core of one type URL (accepted versions, subscriptions, the request to send for
//!   each event); table-tested without a stream.
//! * [`XdsClient`]: the driver. It dials, sends the initial requests, feeds responses through the states and
//!   handlers, ACKs or NACKs, reconnects with backoff, and publishes a [`ConnectionState`].

mod client;
mod state;

use std::fmt;

use ambit_api::envoy::service::discovery::v3::Resource;

pub use client::{
    ClientStopped, ConnectionState, SCOPE_METADATA, Transport, XdsClient, XdsConfig, XdsError, XdsHandle, XdsScope,
    node, run,
};
pub use state::{DeltaState, Reply, Subscription, Verdict, reject_unknown_type};

/// The consumer of one type URL's resources.
///
/// A handler applies an update as a whole or not at all: when it returns `Err`, the client NACKs the whole response
/// (`error_detail.message` is the rejections joined by `"; "`), does not record any of its versions, and the
/// handler must still hold exactly what it held before the call. Names it does not know in `removed` are not an
/// error. The call runs on the client's task, so a slow handler delays the stream (not the data plane).
pub trait Handler: Send + 'static {
    /// The type URL this handler consumes, e.g. `type.googleapis.com/istio.workload.Address`.
    fn type_url(&self) -> &'static str;

    /// Applies one response: the resources added or changed and the names removed.
    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejection>>;
}

/// One response of a type URL, as the handler sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    /// Resources added or changed, raw: each carries its name, version and body (`Any`); the handler decodes.
    /// Names are unique, and every resource has a body of the handler's type URL (the client checks that).
    pub added: Vec<Resource>,
    /// Names of resources the control plane no longer has (or no longer sends to this node).
    pub removed: Vec<String>,
    /// The first response of this type on a new stream (after connecting or reconnecting). After a reconnect the
    /// control plane sends only what changed against the versions the client reported, so nothing needs resetting.
    pub initial: bool,
}

/// A resource the handler refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub name: String,
    pub reason: String,
}

// === impl Rejection ===

impl Rejection {
    pub fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.reason)
    }
}

//! Who a data-plane failure is attributed to; every error of this crate names one.

/// The party at fault, for responses, metrics labels and access-log flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Blame {
    /// The side that opened the connection or stream (the HBONE client, as seen by the server).
    Downstream,
    /// The side this proxy connected to (the HBONE server as seen by the pool, the application as seen by the server).
    Upstream,
    /// This proxy: its configuration, its resources, or a shutdown it started.
    Local,
    /// An authorization decision.
    Policy,
}

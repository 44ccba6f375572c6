//! What the node proxy knows of the mesh: workloads, services and policies as one immutable [`Snapshot`], where it
//! comes from (the local state file until the control plane streams it), and the pure decisions taken over it.
//!
//! * [`model`]: Istio's workload-API `Workload` and `Service`, field for field, with the proto's defaults.
//! * [`snapshot`]: the [`Snapshot`], validated and indexed once when it is built; readers share it as
//!   `Arc<Snapshot>` and never lock.
//! * [`source`]: the local state file (JSON), [`load`] and [`watch_file`], which publishes each valid rewrite
//!   through a `watch` channel and keeps the last good snapshot when a rewrite is invalid.
//! * [`select`]: decisions without IO: the [`OutboundPlan`] for a captured connection (load balancing with an
//!   injected [`Random`]), the inbound [`InboundTarget`] of an HBONE authority, and the policies that apply to a
//!   workload.

pub mod model;
pub mod proto;
pub mod select;
pub mod snapshot;
pub mod source;
pub mod xds;

#[cfg(test)]
pub(crate) mod fixtures;

pub use model::{
    AppProtocol, DEFAULT_HBONE_MTLS_PORT, DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, GatewayAddress,
    GatewayDestination, HealthPolicy, Hostname, LoadBalancing, LoadBalancingMode, LoadBalancingScope, Locality,
    NameError, Namespace, NetworkAddress, Port, PortMapping, Service, ServiceAccount, ServiceKey, TunnelProtocol,
    Workload, WorkloadStatus, WorkloadType, WorkloadUid,
};
pub use select::{
    FastRandom, HBONE_PORT, ILLEGAL_INBOUND_PORTS, InboundError, InboundTarget, OutboundPlan, PlanError, Random,
    inbound_service, inbound_target, outbound_plan, policies_for,
};
pub use snapshot::{Problem, Snapshot, SnapshotError, Unresolved};
pub use source::{StateError, StateFile, load, parse, watch_file};

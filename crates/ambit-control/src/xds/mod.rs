//! Workload discovery served by the control plane: Envoy's delta ADS (`DeltaAggregatedResources`) carrying Istio's
//! workload API (`istio.workload.Address`, `istio.security.Authorization`) to node proxies, as istiod serves
//! ztunnel.
//!
//! [`resources`] holds the snapshot and the store sources publish to, [`stream`] the per-stream protocol state
//! (pure), [`service`] the gRPC service that drives one task per stream.

pub mod resources;
pub mod service;
pub mod stream;

pub use resources::{Entry, ResourceStore, Resources};
pub use service::AdsService;

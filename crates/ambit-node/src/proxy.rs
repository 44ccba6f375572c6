//! The data-plane drivers of the node proxy: `inbound` terminates HBONE for a local pod, `outbound` carries a pod's
//! captured connections to their destination. Decisions come from `state` and `ambit_policy`; these modules only
//! move bytes, keep timers and record telemetry.

pub mod inbound;
pub mod outbound;
pub mod plaintext;

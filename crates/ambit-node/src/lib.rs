//! The node proxy (`ambit node`): for every enrolled pod of its node it listens inside the pod's network namespace,
//! carries outbound traffic over HBONE, terminates inbound HBONE, authorizes at L4 and reports Istio's telemetry.
//! `state` holds what it knows of the mesh; `admin` serves the admin, metrics and readiness endpoints.

pub mod admin;
pub mod app;
pub mod proxy;
pub mod state;

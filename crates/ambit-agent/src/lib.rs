//! The node agent (`ambit agent`, one per node; Istio's istio-cni node agent): it watches its node's pods and
//! namespaces on the control plane, decides which pods are enrolled in the mesh, and for each one installs the
//! in-pod capture, hands the pod's network namespace to the node proxy over ZDS and, once the proxy acknowledged,
//! annotates the pod `ambient.istio.io/redirection: enabled` so the control plane advertises HBONE for it. Leaving
//! undoes the same steps in reverse. Every interval it checks each enrolled pod's rules and the proxy's in-pod
//! listeners and repairs what drifted.
//!
//! Decide, then act: [`enrollment()`] and [`plan()`](plan::plan) are pure functions over snapshots (the pod and its
//! namespace; the agent's record of each pod and what the control plane says); [`Agent`] is the thin tokio driver
//! that executes their steps. What touches the node sits behind the [`Namespaces`] and [`Capture`] traits
//! ([`HostNamespaces`], [`NftCapture`]).
//!
//! A restart of the agent disturbs nothing: rules stay in the pods, the agent rebuilds its records from the control
//! plane's view and the namespaces it finds (capture found intact is left alone, an annotation already set is not
//! patched again) and serves the proxy a fresh snapshot.

mod admin;
pub mod api;
mod driver;
pub mod enrollment;
pub mod host;
pub mod metrics;
pub mod plan;
pub mod pods;
pub mod procfs;

use prometheus_client::registry::Registry;

pub use ambit_capture::CaptureConfig;
pub use driver::{Agent, AgentConfig, AgentError, Host, POLL_WAIT};
pub use enrollment::{Enrollment, Exclusion, enrollment};
pub use host::{Capture, CaptureFailure, HostNamespaces, Namespaces, NftCapture, PodNetns};
pub use metrics::AgentMetrics;

/// Encodes `registry` in the OpenMetrics text format (`# EOF` included).
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

//! What telemetry knows about the two ends of a connection: the workloads, the destination service and the verified
//! identities. The proxy fills a [`ConnectionContext`] once per connection; metric labels and access-log fields are
//! both derived from it.
//!
//! Canonical service and revision follow Istio's derivation from pod labels, so dashboards built for Istio group
//! ambit's series the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use ambit_types::Identity;

use crate::tcp::Reporter;

/// Istio's explicit canonical-service label.
pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
/// Istio's explicit canonical-revision label.
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";
/// The Kubernetes recommended application-name label.
pub const K8S_NAME_LABEL: &str = "app.kubernetes.io/name";
/// The Kubernetes recommended application-version label.
pub const K8S_VERSION_LABEL: &str = "app.kubernetes.io/version";
/// The conventional `app` label.
pub const APP_LABEL: &str = "app";
/// The conventional `version` label.
pub const VERSION_LABEL: &str = "version";
/// The revision Istio reports when no label names one.
pub const DEFAULT_REVISION: &str = "latest";

/// One end of a connection as telemetry reports it. Empty strings mean "not known" and render as `unknown`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// The workload name (for a pod: its owning Deployment, StatefulSet, ... or the pod itself).
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub canonical_service: Arc<str>,
    pub canonical_revision: Arc<str>,
    pub app: Arc<str>,
    pub version: Arc<str>,
    /// The cluster ID, `Kubernetes` in a default Istio install.
    pub cluster: Arc<str>,
    /// The pod name, shown in access logs in preference to the workload name.
    pub pod: Option<Arc<str>>,
}

/// The destination service of a connection, when the client addressed a service rather than a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The fully qualified hostname, e.g. `echo.demo.svc.cluster.local`.
    pub hostname: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
}

/// Everything the reporting proxy knows about a connection when it opens.
#[derive(Clone, Debug)]
pub struct ConnectionContext {
    pub reporter: Reporter,
    pub source: Option<WorkloadInfo>,
    pub destination: Option<WorkloadInfo>,
    pub destination_service: Option<ServiceInfo>,
    /// The client's identity as verified by the mTLS handshake; never taken from workload metadata.
    pub source_principal: Option<Identity>,
    /// The server's identity (verified on outbound, our own on inbound).
    pub destination_principal: Option<Identity>,
    /// Whether the connection is carried over mutual TLS (HBONE).
    pub mtls: bool,
}

// === impl ConnectionContext ===

impl ConnectionContext {
    /// A plaintext connection about which nothing but the reporter is known yet.
    pub fn new(reporter: Reporter) -> Self {
        Self {
            reporter,
            source: None,
            destination: None,
            destination_service: None,
            source_principal: None,
            destination_principal: None,
            mtls: false,
        }
    }
}

// === impl WorkloadInfo ===

impl WorkloadInfo {
    /// Derives canonical service, revision, app and version from a pod's labels, as Istio does:
    ///
    /// * canonical service: `service.istio.io/canonical-name`, else `app.kubernetes.io/name`, else `app`, else
    ///   the workload name;
    /// * canonical revision: `service.istio.io/canonical-revision`, else `app.kubernetes.io/version`, else
    ///   `version`, else `latest`;
    /// * app: `app`, else `app.kubernetes.io/name`, else the canonical service;
    /// * version: `version`, else `app.kubernetes.io/version`, else the canonical revision.
    ///
    /// Labels with empty values count as absent.
    pub fn from_labels(name: &str, namespace: &str, labels: &BTreeMap<String, String>, cluster: &str) -> Self {
        let canonical_service = first_label(labels, &[CANONICAL_NAME_LABEL, K8S_NAME_LABEL, APP_LABEL]).unwrap_or(name);
        let canonical_revision = first_label(labels, &[CANONICAL_REVISION_LABEL, K8S_VERSION_LABEL, VERSION_LABEL])
            .unwrap_or(DEFAULT_REVISION);
        let app = first_label(labels, &[APP_LABEL, K8S_NAME_LABEL]).unwrap_or(canonical_service);
        let version = first_label(labels, &[VERSION_LABEL, K8S_VERSION_LABEL]).unwrap_or(canonical_revision);
        Self {
            name: name.into(),
            namespace: namespace.into(),
            canonical_service: canonical_service.into(),
            canonical_revision: canonical_revision.into(),
            app: app.into(),
            version: version.into(),
            cluster: cluster.into(),
            pod: None,
        }
    }

    /// Sets the pod name shown in access logs.
    pub fn with_pod(mut self, pod: &str) -> Self {
        self.pod = Some(pod.into());
        self
    }
}

/// The value of the first of `keys` present with a non-empty value.
fn first_label<'a>(labels: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .filter_map(|k| labels.get(*k))
        .map(String::as_str)
        .find(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Labels in; canonical service, canonical revision, app and version out.
    type Case = (&'static [(&'static str, &'static str)], [&'static str; 4]);

    #[test]
    fn canonical_service_and_revision_follow_istio() {
        let cases: &[Case] = &[
            (&[], ["client-v1", "latest", "client-v1", "latest"]),
            (
                &[("app", "client"), ("version", "v1")],
                ["client", "v1", "client", "v1"],
            ),
            (
                &[
                    (K8S_NAME_LABEL, "k8s-client"),
                    (K8S_VERSION_LABEL, "1.2"),
                    ("app", "client"),
                    ("version", "v1"),
                ],
                ["k8s-client", "1.2", "client", "v1"],
            ),
            (
                &[
                    (CANONICAL_NAME_LABEL, "canon"),
                    (CANONICAL_REVISION_LABEL, "r7"),
                    (K8S_NAME_LABEL, "k8s"),
                ],
                ["canon", "r7", "k8s", "r7"],
            ),
            (
                &[(CANONICAL_NAME_LABEL, ""), ("app", "client")],
                ["client", "latest", "client", "latest"],
            ),
            (&[(K8S_VERSION_LABEL, "2.0")], ["client-v1", "2.0", "client-v1", "2.0"]),
            (
                &[("version", "v3"), (K8S_VERSION_LABEL, "3.0")],
                ["client-v1", "3.0", "client-v1", "v3"],
            ),
        ];
        for (input, want) in cases {
            let w = WorkloadInfo::from_labels("client-v1", "demo", &labels(input), "Kubernetes");
            let got = [&*w.canonical_service, &*w.canonical_revision, &*w.app, &*w.version];
            assert_eq!(&got, want, "labels {input:?}");
            assert_eq!(
                (&*w.name, &*w.namespace, &*w.cluster),
                ("client-v1", "demo", "Kubernetes")
            );
            assert_eq!(w.pod, None);
        }
    }
}

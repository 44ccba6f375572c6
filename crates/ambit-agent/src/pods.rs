//! The control plane's view of one node (its pods and every namespace, with metadata patches applied), as the
//! agent reads it from `GET /v1/nodes/{node}/pods`: only the fields enrollment and the hand-over to the proxy need.
//! Every field may be missing or `null` on the wire, so a sparse object still decodes; what a field's absence means
//! is decided where it is used ([`crate::enrollment`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// The pod label that enrolls a pod (or its namespace) in ambient mode, or opts a pod out.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// The annotation the agent sets once the node proxy serves the pod; the control plane advertises HBONE for the
/// pod only while it says [`REDIRECTION_ENABLED`].
pub const REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";
pub const REDIRECTION_ENABLED: &str = "enabled";
/// The annotation of a pod that has a sidecar (set by Istio's injector); such a pod is never enrolled.
pub const SIDECAR_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// The service account of a pod that names none (Kubernetes' default).
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// One answer of the node-pods endpoint.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NodeView {
    /// Opaque; changes whenever a pod or namespace changes. Sent back to wait for the next change.
    pub revision: String,
    #[serde(default, deserialize_with = "nullable")]
    pub pods: Vec<PodObject>,
    #[serde(default, deserialize_with = "nullable")]
    pub namespaces: Vec<NamespaceObject>,
}

/// A Kubernetes v1 Pod, reduced to what the agent reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PodObject {
    #[serde(deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    #[serde(deserialize_with = "nullable")]
    pub spec: PodSpec,
    #[serde(deserialize_with = "nullable")]
    pub status: PodStatus,
}

/// A Kubernetes v1 Namespace, reduced to its metadata.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NamespaceObject {
    #[serde(deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ObjectMeta {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub namespace: String,
    #[serde(deserialize_with = "nullable")]
    pub uid: String,
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(deserialize_with = "nullable")]
    pub node_name: String,
    #[serde(deserialize_with = "nullable")]
    pub service_account_name: String,
    #[serde(deserialize_with = "nullable")]
    pub host_network: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(deserialize_with = "nullable")]
    pub phase: String,
    #[serde(rename = "podIP", deserialize_with = "nullable")]
    pub pod_ip: String,
    #[serde(rename = "podIPs", deserialize_with = "nullable")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PodIp {
    #[serde(deserialize_with = "nullable")]
    pub ip: String,
}

/// A pod address that is not an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?} is not an IP address")]
pub struct BadIp {
    pub field: String,
    pub value: String,
}

// === impl NodeView ===

impl NodeView {
    /// Decodes a reply body; the error names the field path that broke (`pods[2].metadata.labels`).
    pub fn from_json(body: &[u8]) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut de)
    }

    /// The namespaces by name.
    pub fn namespaces_by_name(&self) -> BTreeMap<&str, &NamespaceObject> {
        self.namespaces
            .iter()
            .map(|ns| (ns.metadata.name.as_str(), ns))
            .collect()
    }
}

// === impl PodObject ===

impl PodObject {
    /// The pod's addresses: `status.podIP` first, then the others of `status.podIPs`, without repeats. Empty while
    /// the pod has none.
    pub fn ips(&self) -> Result<Vec<IpAddr>, BadIp> {
        let primary = Some(("status.podIP".to_string(), &self.status.pod_ip));
        let others = (self.status.pod_ips.iter().enumerate()).map(|(i, p)| (format!("status.podIPs[{i}].ip"), &p.ip));
        let mut ips = Vec::new();
        for (field, value) in primary.into_iter().chain(others) {
            if value.is_empty() {
                continue;
            }
            let ip: IpAddr = value.parse().map_err(|_| BadIp {
                field,
                value: value.clone(),
            })?;
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        Ok(ips)
    }

    /// The service account the pod runs as.
    pub fn service_account(&self) -> &str {
        match self.spec.service_account_name.as_str() {
            "" => DEFAULT_SERVICE_ACCOUNT,
            sa => sa,
        }
    }

    /// Whether the pod carries `ambient.istio.io/redirection: enabled`.
    pub fn redirection_enabled(&self) -> bool {
        self.metadata
            .annotations
            .get(REDIRECTION_ANNOTATION)
            .map(String::as_str)
            == Some(REDIRECTION_ENABLED)
    }

    /// `namespace/name`, for logs.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

/// A field that may be `null` on the wire, read as its default then.
fn nullable<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_view_decodes() {
        let body = br#"{"revision":"17",
            "pods":[{"apiVersion":"v1","kind":"Pod",
                     "metadata":{"name":"echo","namespace":"web","uid":"u1","labels":{"app":"echo"},
                                 "annotations":{"ambient.istio.io/redirection":"enabled"}},
                     "spec":{"nodeName":"node-1","serviceAccountName":"echo","hostNetwork":false,"containers":[]},
                     "status":{"phase":"Running","podIP":"10.0.0.3","podIPs":[{"ip":"10.0.0.3"},{"ip":"fd00::3"}]}}],
            "namespaces":[{"metadata":{"name":"web","labels":{"istio.io/dataplane-mode":"ambient"}}}]}"#;
        let view = NodeView::from_json(body).unwrap();
        assert_eq!(view.revision, "17");
        let pod = &view.pods[0];
        assert_eq!(pod.display_name(), "web/echo");
        assert_eq!(pod.service_account(), "echo");
        assert!(pod.redirection_enabled());
        assert_eq!(
            pod.ips().unwrap(),
            ["10.0.0.3".parse::<IpAddr>().unwrap(), "fd00::3".parse().unwrap()]
        );
        assert_eq!(
            view.namespaces_by_name()["web"].metadata.labels[DATAPLANE_MODE_LABEL],
            "ambient"
        );
    }

    #[test]
    fn sparse_and_null_fields_read_as_empty() {
        let body = br#"{"revision":"1","pods":[{"metadata":{"name":"a","labels":null,"annotations":null},
            "spec":null,"status":{"podIPs":null}}],"namespaces":null}"#;
        let view = NodeView::from_json(body).unwrap();
        let pod = &view.pods[0];
        assert!(pod.metadata.labels.is_empty());
        assert_eq!(pod.service_account(), DEFAULT_SERVICE_ACCOUNT);
        assert_eq!(pod.ips().unwrap(), Vec::<IpAddr>::new());
        assert!(!pod.redirection_enabled());
        assert!(view.namespaces.is_empty());
    }

    #[test]
    fn decode_errors_name_the_field_path() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"pods":[]}"#, "missing field `revision`"),
            (
                br#"{"revision":"1","pods":[{},{"metadata":{"labels":{"a":1}}}]}"#,
                "pods[1].metadata.labels.a",
            ),
            (
                br#"{"revision":"1","pods":[{"spec":{"hostNetwork":"yes"}}]}"#,
                "pods[0].spec.hostNetwork",
            ),
        ];
        for (body, want) in cases {
            let err = NodeView::from_json(body).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should name {want}");
        }
    }

    #[test]
    fn pod_ips_are_parsed_in_order_and_bad_ones_named() {
        let pod = |primary: &str, others: &[&str]| PodObject {
            status: PodStatus {
                pod_ip: primary.to_string(),
                pod_ips: others.iter().map(|ip| PodIp { ip: ip.to_string() }).collect(),
                ..PodStatus::default()
            },
            ..PodObject::default()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(pod("", &["10.0.0.1"]).ips().unwrap(), [ip("10.0.0.1")]);
        assert_eq!(
            pod("10.0.0.1", &["10.0.0.1", "fd00::1"]).ips().unwrap(),
            [ip("10.0.0.1"), ip("fd00::1")]
        );
        let err = pod("10.0.0.1", &["10.0.0.1", "x"]).ips().unwrap_err();
        assert_eq!(err.to_string(), r#"status.podIPs[1].ip: "x" is not an IP address"#);
        let err = pod("10.0.0", &[]).ips().unwrap_err();
        assert_eq!(err.field, "status.podIP");
    }
}

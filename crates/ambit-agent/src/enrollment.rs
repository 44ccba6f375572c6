//! Which pods are enrolled in the mesh: Istio's rules for ambient mode, as a pure function of a pod and its
//! namespace.
//!
//! A pod is enrolled when its label `istio.io/dataplane-mode` is `ambient`, or when it has no such label (or one
//! with another value) and its namespace's label is `ambient`; the pod label `none` opts it out whatever its
//! namespace says. Even then it is not enrolled when capture cannot or must not apply: it shares the node's network
//! (hostNetwork), it has a sidecar (`sidecar.istio.io/status`), it has finished (Succeeded or Failed) or it has no
//! IP yet (its sandbox is not up, so there is no namespace to capture).

use std::fmt;

use crate::pods::{DATAPLANE_MODE_LABEL, NamespaceObject, PodObject, SIDECAR_STATUS_ANNOTATION};

/// The label value that enrolls.
pub const MODE_AMBIENT: &str = "ambient";
/// The pod label value that opts a pod out.
pub const MODE_NONE: &str = "none";

/// Whether a pod is enrolled, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrollment {
    Enrolled,
    NotEnrolled(Exclusion),
}

/// Why a pod is not enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    /// Neither the pod nor its namespace asks for ambient mode.
    NotSelected,
    /// The pod's label is `none`.
    OptedOut,
    /// The pod shares the node's network namespace.
    HostNetwork,
    /// The pod has a sidecar proxy.
    Sidecar,
    /// The pod has finished (phase Succeeded or Failed).
    Terminated,
    /// The pod has no IP address yet (or only invalid ones).
    NoIp,
}

// === impl Enrollment ===

impl Enrollment {
    pub fn is_enrolled(self) -> bool {
        self == Enrollment::Enrolled
    }
}

// === impl Exclusion ===

impl Exclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::NotSelected => "not selected",
            Exclusion::OptedOut => "opted out",
            Exclusion::HostNetwork => "host network",
            Exclusion::Sidecar => "has a sidecar",
            Exclusion::Terminated => "terminated",
            Exclusion::NoIp => "no IP address",
        }
    }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides whether `pod` is enrolled; `namespace` is its namespace object, `None` when the control plane does not
/// know it (then only the pod's own label can enroll it).
pub fn enrollment(pod: &PodObject, namespace: Option<&NamespaceObject>) -> Enrollment {
    let pod_mode = pod.metadata.labels.get(DATAPLANE_MODE_LABEL).map(String::as_str);
    let namespace_mode = namespace.and_then(|ns| ns.metadata.labels.get(DATAPLANE_MODE_LABEL).map(String::as_str));
    let selected = match pod_mode {
        Some(MODE_NONE) => return Enrollment::NotEnrolled(Exclusion::OptedOut),
        Some(MODE_AMBIENT) => true,
        _ => namespace_mode == Some(MODE_AMBIENT),
    };
    let exclusion = if !selected {
        Exclusion::NotSelected
    } else if pod.spec.host_network {
        Exclusion::HostNetwork
    } else if pod.metadata.annotations.contains_key(SIDECAR_STATUS_ANNOTATION) {
        Exclusion::Sidecar
    } else if matches!(pod.status.phase.as_str(), "Succeeded" | "Failed") {
        Exclusion::Terminated
    } else if pod.ips().map_or(true, |ips| ips.is_empty()) {
        Exclusion::NoIp
    } else {
        return Enrollment::Enrolled;
    };
    Enrollment::NotEnrolled(exclusion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::{ObjectMeta, PodSpec, PodStatus};

    /// A running pod with an IP, the given `istio.io/dataplane-mode` label (if any) and tweaks.
    fn pod(mode: Option<&str>, tweak: fn(&mut PodObject)) -> PodObject {
        let mut pod = PodObject {
            metadata: ObjectMeta {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                labels: mode
                    .map(|m| (DATAPLANE_MODE_LABEL.to_string(), m.to_string()))
                    .into_iter()
                    .collect(),
                ..ObjectMeta::default()
            },
            spec: PodSpec::default(),
            status: PodStatus {
                phase: "Running".into(),
                pod_ip: "10.0.0.1".into(),
                ..PodStatus::default()
            },
        };
        tweak(&mut pod);
        pod
    }

    fn namespace(mode: Option<&str>) -> NamespaceObject {
        NamespaceObject {
            metadata: ObjectMeta {
                name: "ns".into(),
                labels: mode
                    .map(|m| (DATAPLANE_MODE_LABEL.to_string(), m.to_string()))
                    .into_iter()
                    .collect(),
                ..ObjectMeta::default()
            },
        }
    }

    /// (pod label, namespace: `None` unknown, `Some(label)`), expected.
    type SelectionCase = (Option<&'static str>, Option<Option<&'static str>>, Enrollment);
    /// (name, change to a selected running pod, expected).
    type ExclusionCase = (&'static str, fn(&mut PodObject), Enrollment);

    #[test]
    fn labels_decide_selection() {
        use Enrollment::*;
        use Exclusion::*;
        let cases: &[SelectionCase] = &[
            (None, Some(Some("ambient")), Enrolled),
            (Some("ambient"), Some(None), Enrolled),
            (Some("ambient"), None, Enrolled),
            (Some("ambient"), Some(Some("none")), Enrolled),
            (Some("none"), Some(Some("ambient")), NotEnrolled(OptedOut)),
            (Some("none"), Some(None), NotEnrolled(OptedOut)),
            (None, Some(None), NotEnrolled(NotSelected)),
            (None, None, NotEnrolled(NotSelected)),
            (None, Some(Some("sidecar")), NotEnrolled(NotSelected)),
            // A pod label other than ambient or none leaves the decision to the namespace.
            (Some("sidecar"), Some(Some("ambient")), Enrolled),
            (Some(""), Some(None), NotEnrolled(NotSelected)),
            // The namespace label `none` means nothing special: not selected.
            (None, Some(Some("none")), NotEnrolled(NotSelected)),
        ];
        for (pod_mode, ns, want) in cases {
            let ns = ns.map(namespace);
            let got = enrollment(&pod(*pod_mode, |_| {}), ns.as_ref());
            assert_eq!(got, *want, "pod {pod_mode:?}, namespace {ns:?}");
        }
    }

    #[test]
    fn selected_pods_that_cannot_be_captured_are_excluded() {
        use Enrollment::*;
        use Exclusion::*;
        let cases: &[ExclusionCase] = &[
            ("plain", |_| {}, Enrolled),
            ("host network", |p| p.spec.host_network = true, NotEnrolled(HostNetwork)),
            (
                "sidecar",
                |p| {
                    p.metadata
                        .annotations
                        .insert(SIDECAR_STATUS_ANNOTATION.into(), "{}".into());
                },
                NotEnrolled(Sidecar),
            ),
            (
                "succeeded",
                |p| p.status.phase = "Succeeded".into(),
                NotEnrolled(Terminated),
            ),
            ("failed", |p| p.status.phase = "Failed".into(), NotEnrolled(Terminated)),
            ("pending with IP", |p| p.status.phase = "Pending".into(), Enrolled),
            ("no phase", |p| p.status.phase.clear(), Enrolled),
            ("no IP", |p| p.status.pod_ip.clear(), NotEnrolled(NoIp)),
            ("invalid IP", |p| p.status.pod_ip = "10.0".into(), NotEnrolled(NoIp)),
            (
                "IP only in podIPs",
                |p| {
                    p.status.pod_ip.clear();
                    p.status.pod_ips = vec![crate::pods::PodIp { ip: "fd00::1".into() }];
                },
                Enrolled,
            ),
            (
                "host network and no IP: the first reason",
                |p| {
                    p.spec.host_network = true;
                    p.status.pod_ip.clear();
                },
                NotEnrolled(HostNetwork),
            ),
        ];
        for (name, tweak, want) in cases {
            let got = enrollment(&pod(Some("ambient"), *tweak), None);
            assert_eq!(got, *want, "{name}");
        }
        // Unselected pods report that first, whatever else is wrong with them.
        let got = enrollment(&pod(None, |p| p.spec.host_network = true), Some(&namespace(None)));
        assert_eq!(got, NotEnrolled(NotSelected));
    }
}

//! Who is in the mesh: the pods enrolled in ambient, and the workload uid the node proxies know them by. The
//! workload API itself is built by the control plane from the cluster's objects (`objects`, `ambit_control::translate`).

use std::collections::BTreeSet;

use ambit_node::state::model::WorkloadUid;

use crate::endpoints::PodKey;
use crate::model::{ClusterPlan, PodPlan};

/// The label that enrolls a pod, or every pod of a namespace, in ambient.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// The cluster id of every workload, as istiod's default.
const CLUSTER_ID: &str = "Kubernetes";

/// The pods enrolled in ambient: label `istio.io/dataplane-mode=ambient` on the pod, or on its namespace unless the
/// pod's label is `none`.
pub fn enrolled(plan: &ClusterPlan) -> BTreeSet<PodKey> {
    let namespace_mode = |pod: &PodPlan| plan.namespace(&pod.namespace)?.labels.get(DATAPLANE_MODE_LABEL);
    let is_enrolled = |pod: &&PodPlan| match pod.labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) {
        Some("ambient") => true,
        Some("none") => false,
        _ => namespace_mode(pod).is_some_and(|mode| mode == "ambient"),
    };
    let keys = plan.pods.iter().filter(is_enrolled);
    keys.map(|pod| (pod.namespace.clone(), pod.name.clone())).collect()
}

/// The uid of a pod's workload, `Kubernetes//Pod/<namespace>/<name>`; None if the names are not valid in the
/// Workload API (the loader's checks make that impossible).
pub fn workload_uid(pod: &PodPlan) -> Option<WorkloadUid> {
    WorkloadUid::new(&format!("{CLUSTER_ID}//Pod/{}/{}", pod.namespace, pod.name)).ok()
}

#[cfg(test)]
mod tests;

//! The data-plane drivers of the node proxy: `inbound` terminates HBONE for a local pod, `outbound` carries a pod's
//! captured connections to their destination. Decisions come from `state` and `ambit_policy`; these modules only
//! move bytes, keep timers and record telemetry.

pub mod inbound;
pub mod outbound;
pub mod plaintext;

use ambit_telemetry::{ServiceInfo, WorkloadInfo};

use crate::state::{ServiceKey, Snapshot, Workload};

/// Telemetry's view of a workload: its workload name (else the pod name), canonical service and revision from the
/// workload API when set, else from its labels, and its pod name.
pub(crate) fn workload_info(workload: &Workload) -> WorkloadInfo {
    let name = if workload.workload_name.is_empty() {
        &workload.name
    } else {
        &workload.workload_name
    };
    let mut info = WorkloadInfo::from_labels(
        name,
        workload.namespace.as_str(),
        &workload.labels,
        &workload.cluster_id,
    );
    if !workload.canonical_name.is_empty() {
        info.canonical_service = workload.canonical_name.as_str().into();
    }
    if !workload.canonical_revision.is_empty() {
        info.canonical_revision = workload.canonical_revision.as_str().into();
    }
    if !workload.name.is_empty() {
        info = info.with_pod(&workload.name);
    }
    info
}

/// Telemetry's view of a service of the snapshot.
pub(crate) fn service_info(snapshot: &Snapshot, key: &ServiceKey) -> Option<ServiceInfo> {
    let service = snapshot.service(key)?;
    Some(ServiceInfo {
        hostname: service.hostname.as_str().into(),
        name: service.name.as_str().into(),
        namespace: service.namespace.as_str().into(),
    })
}

//! The node proxy's side of ZDS (ambient §2.2): the node agent hands over the pods to serve, each with its network
//! namespace as a descriptor, and [`ZdsHandler`] applies each request to the [`PodManager`].
//!
//! * Add: the pod's workload is `<cluster-id>//Pod/<namespace>/<name>` ([`workload_uid`]); the pod proxy's three
//!   listeners are bound inside the namespace before the ack, so an ack without error means they are. A failure is
//!   acked with its reason (the agent logs it and retries) while the proxy keeps trying to bind.
//! * Keep: nothing to do; the proxy keeps what it serves.
//! * Del: the pod's proxy drains.
//! * SnapshotSent: the pods held from before that the snapshot did not mention drain; from the first one on, the
//!   pods are in sync, which readiness waits for.
//!
//! The driver ([`ambit_zds::connect_proxy`]) reconnects on its own; dropping its future closes the connection, which
//! is how a draining proxy leaves the agent to its successor.

use std::os::fd::OwnedFd;

use ambit_zds::{PodUid, ProxyHandler, WorkloadInfo};
use tokio::sync::watch;
use tracing::{info, warn};

use super::pods::{Added, PodManager};
use crate::proxy::netns::PodNetns;
use crate::state::{Namespace, WorkloadUid};

/// Istio's default cluster id, the first part of every workload uid the control plane gives pods.
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

/// Applies the agent's requests to the pod proxies. See the module documentation.
pub struct ZdsHandler {
    manager: PodManager,
    cluster_id: String,
    synced: watch::Sender<bool>,
}

/// The workload uid of the pod `info` describes, `<cluster_id>//Pod/<namespace>/<name>` as the control plane makes
/// it, or why `info` names no pod (the field path and the reason).
pub fn workload_uid(cluster_id: &str, info: &WorkloadInfo) -> Result<WorkloadUid, String> {
    let namespace = Namespace::new(&info.namespace).map_err(|error| format!("workload_info.namespace: {error}"))?;
    let name = &info.name;
    if name.is_empty() || name.contains('/') {
        let reason = if name.is_empty() { "empty" } else { "contains '/'" };
        return Err(format!("workload_info.name {name:?}: {reason}"));
    }
    WorkloadUid::new(&format!("{cluster_id}//Pod/{namespace}/{name}")).map_err(|error| error.to_string())
}

// === impl ZdsHandler ===

impl ZdsHandler {
    /// Drives `manager`; `synced` turns true once the first snapshot is complete.
    pub fn new(manager: PodManager, cluster_id: impl Into<String>, synced: watch::Sender<bool>) -> Self {
        Self {
            manager,
            cluster_id: cluster_id.into(),
            synced,
        }
    }
}

impl ProxyHandler for ZdsHandler {
    fn add(&mut self, uid: &PodUid, info: WorkloadInfo, netns: OwnedFd) -> Result<(), String> {
        let workload = workload_uid(&self.cluster_id, &info).map_err(|error| format!("add {uid}: {error}"))?;
        let netns = PodNetns::from_fd(netns).map_err(|error| format!("add {uid}: {error}"))?;
        match self.manager.add(uid, workload, netns) {
            Ok(Added::Unchanged | Added::Started | Added::Replaced) => Ok(()),
            Err(error) => {
                warn!(%error, "a pod's listeners could not be bound; acking the failure, retrying in the background");
                Err(error)
            }
        }
    }

    fn keep(&mut self, uid: &PodUid) {
        if !self.manager.serves(uid) {
            // The agent lost the pod's namespace (it restarted) while this proxy never had it: nothing can serve the
            // pod until the agent hands the namespace over again.
            warn!(pod = %uid, "the agent asked to keep a pod this proxy does not serve; it stays unserved");
        }
    }

    fn del(&mut self, uid: &PodUid) {
        if !self.manager.remove(uid) {
            info!(pod = %uid, "the agent removed a pod this proxy does not serve");
        }
    }

    fn snapshot_done(&mut self, stale: Vec<PodUid>) {
        for uid in &stale {
            if self.manager.remove(uid) {
                info!(pod = %uid, "pod not in the agent's snapshot; its proxy drains");
            }
        }
        if !self.synced.send_replace(true) {
            info!(pods = self.manager.len(), "first ZDS snapshot applied");
        }
    }
}

#[cfg(test)]
mod tests;

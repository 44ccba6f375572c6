//! Where the control plane's resources come from. Today one source: a state file in the shape the node proxy reads
//! (`ambit_node::state::StateFile`: workloads, services and policies), which the local cluster's supervisor rewrites
//! as pods become ready; each valid rewrite is encoded into workload-API resources and published to the
//! [`ResourceStore`], from which the delta ADS server streams the differences. The store keeps the last good
//! resources while the file is missing or invalid.

use std::path::PathBuf;
use std::time::Duration;

use ambit_node::state::proto::encode_authorization;
use ambit_node::state::source::watch_file;

use crate::xds::{ResourceStore, Resources};

/// Publishes the state file at `path` into `store` and follows its rewrites (checked every `poll`) until the
/// process ends. Waits for the file to appear.
pub async fn follow_state_file(path: PathBuf, poll: Duration, store: ResourceStore) {
    let mut logged = false;
    let (mut snapshots, _task) = loop {
        match watch_file(path.clone(), poll).await {
            Ok(watching) => break watching,
            Err(error) => {
                if !logged {
                    tracing::info!(%error, "waiting for the state file");
                    logged = true;
                }
                tokio::time::sleep(poll).await;
            }
        }
    };
    loop {
        let snapshot = std::sync::Arc::clone(&snapshots.borrow_and_update());
        let workloads = snapshot.workloads().iter().map(Into::into).collect();
        let services = snapshot.services().iter().map(Into::into).collect();
        let policies = snapshot.policies().iter().map(encode_authorization).collect();
        store.publish(Resources::from_protos(workloads, services, policies));
        tracing::debug!(version = snapshot.version(), "published the state file's resources");
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

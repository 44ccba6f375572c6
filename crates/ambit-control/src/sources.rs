//! Where the control plane's resources come from. Today one source: a state file in the shape the node proxy reads
//! (`ambit_node::state::StateFile`: workloads, services and policies), which the local cluster's supervisor rewrites
//! as pods become ready; each valid rewrite is encoded into workload-API resources and published to the
//! [`ResourceStore`], from which the delta ADS server streams the differences. The store keeps the last good
//! resources while the file is missing or invalid. The parsed file is dropped once encoded: only the encoded
//! resources stay in memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ambit_node::state::proto::encode_authorization;
use ambit_node::state::source::parse;

use crate::xds::{ResourceStore, Resources};

/// Publishes the state file at `path` into `store` and follows its rewrites (checked every `poll`) until the
/// process ends. A missing, unreadable or invalid file is logged once per distinct problem and skipped.
pub async fn follow_state_file(path: PathBuf, poll: Duration, store: ResourceStore) {
    let mut last_stamp = None;
    let mut last_problem = None;
    let mut version = 0;
    loop {
        match read_if_changed(&path, last_stamp) {
            Ok(Some((stamp, text))) => {
                version += 1;
                match encode(&path, &text, version) {
                    Ok(resources) => {
                        store.publish(resources);
                        tracing::debug!(version, "published the state file's resources");
                        last_problem = None;
                    }
                    Err(problem) => {
                        if last_problem.as_ref() != Some(&problem) {
                            tracing::warn!(%problem, "ignoring an invalid state file; the last good one keeps serving");
                            last_problem = Some(problem);
                        }
                    }
                }
                last_stamp = Some(stamp);
            }
            Ok(None) => {}
            Err(problem) => {
                if last_problem.as_ref() != Some(&problem) {
                    tracing::info!(%problem, "waiting for the state file");
                    last_problem = Some(problem);
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// What identifies one version of the file without reading it: its inode (the supervisor replaces the file by
/// renaming), size and modification time.
type Stamp = (u64, u64, Option<std::time::SystemTime>);

/// The file's text and its stamp, unless its stamp is `last`: an unchanged file is not read again.
fn read_if_changed(path: &Path, last: Option<Stamp>) -> Result<Option<(Stamp, String)>, String> {
    use std::os::unix::fs::MetadataExt;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(cannot)?;
    let stamp = (meta.ino(), meta.len(), meta.modified().ok());
    if last == Some(stamp) {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(cannot)?;
    Ok(Some((stamp, text)))
}

/// The resources of a state file's text: parsed and checked as the node proxy would, then encoded.
fn encode(path: &Path, text: &str, version: u64) -> Result<Resources, String> {
    let snapshot = parse(path, text, version).map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
    let workloads = snapshot.workloads().iter().map(Into::into).collect();
    let services = snapshot.services().iter().map(Into::into).collect();
    let policies = snapshot.policies().iter().map(encode_authorization).collect();
    Ok(Resources::from_protos(workloads, services, policies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn follows_rewrites_and_keeps_the_last_good_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh-state.json");
        let store = ResourceStore::new();
        let mut updates = store.subscribe();
        tokio::spawn(follow_state_file(
            path.clone(),
            Duration::from_millis(10),
            store.clone(),
        ));
        let policy = |name: &str| {
            format!(
                r#"{{"policies":[{{"name":"{name}","namespace":"demo","scope":"NAMESPACE","action":"DENY","groups":[{{}}]}}]}}"#
            )
        };
        std::fs::write(&path, policy("first")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), updates.changed())
            .await
            .unwrap()
            .unwrap();
        let names = |store: &ResourceStore| {
            let current = store.current();
            current
                .entries(ambit_api::AUTHORIZATION_TYPE_URL)
                .map(|(name, _)| name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&store), ["demo/first"]);
        // An invalid rewrite changes nothing; the next valid one is published.
        std::fs::write(&path, "{not json").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(names(&store), ["demo/first"]);
        std::fs::write(&path, policy("second")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), updates.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(names(&store), ["demo/second"]);
    }
}

//! Where the config store's Kubernetes objects come from. A cluster source publishes the full current set of the
//! cluster's Namespaces, ServiceAccounts, Pods and Services; the store keeps the last good set while the source is
//! missing or invalid. Today one source: the local cluster's objects file (a v1 `List` the supervisor rewrites
//! atomically on every change, `ambit_cluster::objects`); the Kubernetes API (list and watch) comes later behind the
//! same [`ConfigStore::replace_source`] call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config_store::ConfigStore;

/// Follows the objects file at `path` (checked every `poll`) until the process ends, replacing the store's cluster
/// objects with each valid version. `first` is sent once the first version was loaded.
pub async fn follow_objects_file(
    path: PathBuf,
    poll: Duration,
    store: ConfigStore,
    first: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut first = first;
    let mut last_stamp = None;
    let mut last_problem = None;
    loop {
        match read_if_changed(&path, last_stamp) {
            Ok(Some((stamp, text))) => {
                last_stamp = Some(stamp);
                match ambit_config::parse_source(&path.display().to_string(), &text) {
                    Ok(objects) => {
                        let count = objects.len();
                        store.replace_source(objects);
                        tracing::debug!(objects = count, "loaded the cluster's objects");
                        last_problem = None;
                        if let Some(first) = first.take() {
                            let _ = first.send(());
                        }
                    }
                    Err(diagnostics) => {
                        let problem = diagnostics
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ");
                        if last_problem.as_ref() != Some(&problem) {
                            tracing::warn!(%problem, "ignoring an invalid objects file; the last good one keeps serving");
                            last_problem = Some(problem);
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(problem) => {
                if last_problem.as_ref() != Some(&problem) {
                    tracing::info!(%problem, "waiting for the objects file");
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

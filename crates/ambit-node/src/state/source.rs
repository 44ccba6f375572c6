//! The local state file: the node proxy's source of workloads, services and policies until the control plane
//! streams them. Its format ([`StateFile`]), reading it whole or not at all ([`parse`], [`load`]), and following its
//! rewrites ([`watch_file`]).
//!
//! # Format
//!
//! JSON `{ "workloads": [...], "services": [...], "policies": [...] }`, each list optional. Workloads and services
//! are [`Workload`] and [`Service`] (the proto's snake_case field names and defaults), policies are
//! [`ambit_policy::Authorization`] (camelCase). Unknown fields are errors, so a misspelt field is never silently
//! ignored.
//!
//! # Validation
//!
//! A file is accepted whole or rejected whole, with the field path of the first problem:
//! `workloads[3].addresses[0]: "10.0.0.300" is not an IP address at line 12 column 40`. Rejected: JSON errors,
//! wrong types, unknown fields and enum values, invalid names and addresses, and everything [`Snapshot::new`]
//! refuses (duplicate uid, service key, policy name or address, port 0). A policy or service that a workload names
//! but the file lacks is only a warning: it is logged and skipped where it would be used, as Istio skips unknown
//! policies, because the control plane may deliver a workload before what it names.
//!
//! # Rewrites
//!
//! [`watch_file`] polls the file's modification time, size and inode, and when they change, reads it and compares
//! a hash of the content, so a rewrite with identical content publishes nothing. Writers should replace the file
//! atomically (write a temporary file in the same directory, then rename it over the state file); a reader can
//! then never see half a file. An invalid or unreadable rewrite is logged and the last good snapshot stays
//! published: a proxy keeps its last good state.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ambit_policy::Authorization;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::model::{Service, Workload};
use super::snapshot::{Problem, Snapshot, SnapshotError};

/// The content of the state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    #[serde(default)]
    pub workloads: Vec<Workload>,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub policies: Vec<Authorization>,
}

/// Why a state file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not a state file: JSON syntax, a wrong type, an unknown field or enum value, an invalid name or address.
    #[error("{}: {field}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        field: String,
        reason: String,
    },
    /// Well formed, but the snapshot cannot be built from it: a duplicate key or address, a port 0.
    #[error("{}: {field}: {problem}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        problem: Problem,
    },
}

/// What the file looked like when it was last read: a change in any of these means it may have been rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The polling side of [`watch_file`].
struct FileWatcher {
    path: PathBuf,
    /// The stamp of the content last read, valid or not.
    stamp: Option<Stamp>,
    /// The hash of the content last read, valid or not: unchanged content is not parsed (or reported) again.
    read: Option<u64>,
    /// The hash of the content last published: a rewrite back to it publishes nothing.
    published: Option<u64>,
    /// The version of the snapshot last published.
    version: u64,
    /// Whether the last attempt to read the file failed (logged once, not at every poll).
    unreadable: bool,
}

/// Parses the text of a state file into a snapshot numbered `version`; `path` only names the file in errors.
pub fn parse(path: &Path, text: &str, version: u64) -> Result<Snapshot, StateError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let file: StateFile = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let field = e.path().to_string();
        StateError::malformed(path, field, e.into_inner())
    })?;
    deserializer
        .end()
        .map_err(|e| StateError::malformed(path, ".".to_string(), e))?;
    file.into_snapshot(version).map_err(|e| StateError::invalid(path, e))
}

/// Reads and parses the state file as snapshot version 1, logging names it lacks (see the module docs).
pub fn load(path: &Path) -> Result<Snapshot, StateError> {
    let text = std::fs::read_to_string(path).map_err(|source| StateError::read(path, source))?;
    let snapshot = parse(path, &text, 1)?;
    warn_unresolved(path, &snapshot);
    Ok(snapshot)
}

/// Loads the state file (version 1; an invalid file is an error), then polls it every `poll` and publishes each
/// valid rewrite as the next version. Invalid rewrites are logged and skipped. The task ends when every receiver
/// is dropped. Needs a tokio runtime.
pub async fn watch_file(
    path: PathBuf,
    poll: Duration,
) -> Result<(watch::Receiver<Arc<Snapshot>>, JoinHandle<()>), StateError> {
    let mut watcher = FileWatcher::new(path);
    let first = watcher.first().await?;
    let (tx, rx) = watch::channel(Arc::new(first));
    let task = tokio::spawn(watcher.run(tx, poll));
    Ok((rx, task))
}

fn hash(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn warn_unresolved(path: &Path, snapshot: &Snapshot) {
    for unresolved in snapshot.unresolved() {
        tracing::warn!(path = %path.display(), "{unresolved}");
    }
}

// === impl StateFile ===

impl StateFile {
    pub fn into_snapshot(self, version: u64) -> Result<Snapshot, SnapshotError> {
        Snapshot::new(version, self.workloads, self.services, self.policies)
    }
}

// === impl StateError ===

impl StateError {
    fn read(path: &Path, source: io::Error) -> Self {
        Self::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    /// `field` is the path `serde_path_to_error` reports (`.` for the top level).
    fn malformed(path: &Path, field: String, error: serde_json::Error) -> Self {
        let field = if field == "." { "(top level)".to_string() } else { field };
        Self::Malformed {
            path: path.to_path_buf(),
            field,
            reason: error.to_string(),
        }
    }

    fn invalid(path: &Path, error: SnapshotError) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            field: error.field,
            problem: error.problem,
        }
    }

    /// The message with its cause, for logs.
    fn describe(&self) -> String {
        match self {
            Self::Read { source, .. } => format!("{self}: {source}"),
            _ => self.to_string(),
        }
    }
}

// === impl FileWatcher ===

impl FileWatcher {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            stamp: None,
            read: None,
            published: None,
            version: 0,
            unreadable: false,
        }
    }

    /// The first snapshot: unlike later rewrites, an invalid file is an error.
    async fn first(&mut self) -> Result<Snapshot, StateError> {
        let (stamp, text) = self.read().await?;
        let snapshot = parse(&self.path, &text, 1)?;
        self.stamp = Some(stamp);
        (self.read, self.published) = (Some(hash(&text)), Some(hash(&text)));
        self.version = 1;
        warn_unresolved(&self.path, &snapshot);
        tracing::info!(path = %self.path.display(), version = 1, "state file loaded");
        Ok(snapshot)
    }

    async fn run(mut self, tx: watch::Sender<Arc<Snapshot>>, poll: Duration) {
        loop {
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(poll) => {}
            }
            if let Some(snapshot) = self.poll().await {
                tx.send_replace(Arc::new(snapshot));
            }
        }
    }

    /// The next snapshot, when the file was rewritten with new, valid content.
    async fn poll(&mut self) -> Option<Snapshot> {
        let text = self.rewritten().await?;
        let content = Some(hash(&text));
        if std::mem::replace(&mut self.read, content) == content || self.published == content {
            return None;
        }
        let snapshot = parse(&self.path, &text, self.version + 1)
            .map_err(|e| self.rejected(&e))
            .ok()?;
        self.published = content;
        Some(self.accepted(snapshot))
    }

    /// The file's text, when its stamp changed since it was last read.
    async fn rewritten(&mut self) -> Option<String> {
        let stamp = self.stat().await.map_err(|e| self.read_failed(&e)).ok()?;
        if Some(stamp) == self.stamp {
            return None;
        }
        let (stamp, text) = self.read().await.map_err(|e| self.read_failed(&e)).ok()?;
        (self.stamp, self.unreadable) = (Some(stamp), false);
        Some(text)
    }

    fn rejected(&self, error: &StateError) {
        let kept = self.version;
        tracing::warn!(error = %error.describe(), kept, "state file rewrite rejected; keeping the last good one");
    }

    fn accepted(&mut self, snapshot: Snapshot) -> Snapshot {
        self.version = snapshot.version();
        warn_unresolved(&self.path, &snapshot);
        tracing::info!(path = %self.path.display(), version = self.version, "state file reloaded");
        snapshot
    }

    fn read_failed(&mut self, error: &StateError) {
        if !self.unreadable {
            tracing::warn!(error = %error.describe(), "state file unreadable; keeping the last good one");
        }
        self.unreadable = true;
        self.stamp = None;
    }

    async fn stat(&self) -> Result<Stamp, StateError> {
        let metadata = tokio::fs::metadata(&self.path).await;
        let metadata = metadata.map_err(|source| StateError::read(&self.path, source))?;
        Ok(Stamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode: metadata.ino(),
        })
    }

    /// The stamp is taken first, so the text read is at least as new as the stamp.
    async fn read(&self) -> Result<(Stamp, String), StateError> {
        let stamp = self.stat().await?;
        let text = tokio::fs::read_to_string(&self.path).await;
        let text = text.map_err(|source| StateError::read(&self.path, source))?;
        Ok((stamp, text))
    }
}

#[cfg(test)]
mod tests;

//! Upgrading a node proxy of a running local cluster without dropping a connection (`ambit node upgrade --node N`).
//!
//! The command writes a request (`nodes/<node>/upgrade.request`, holding an id) and sends the supervisor SIGUSR1;
//! the supervisor starts a new node-proxy instance beside the running one, waits until it is ready (it serves every
//! enrolled pod: the agent handed them over on its ZDS connection), then sends the old one SIGTERM, on which it stops
//! accepting and keeps its established connections until they end. The supervisor writes the outcome to
//! `nodes/<node>/upgrade.json`, which the command waits for.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// How long `ambit node upgrade` waits for the supervisor's outcome.
pub const RESULT_WAIT: Duration = Duration::from_secs(60);

/// One upgrade request, named by its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: String,
}

/// What became of an upgrade request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub id: String,
    pub ok: bool,
    /// The instance that now drains, and the one that serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why an upgrade could not be asked for or did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cluster {cluster} has no node {node}")]
    UnknownNode { cluster: String, node: String },
    #[error("cluster {0} is not running (no supervisor)")]
    NotRunning(String),
    #[error("cannot write the upgrade request")]
    Io(#[from] std::io::Error),
    #[error("no answer from the supervisor within {0:?}")]
    Timeout(Duration),
    #[error("the upgrade of node {node} failed: {error}")]
    Failed { node: String, error: String },
}

// === impl Request ===

impl Request {
    pub fn done(&self, old_pid: u32, new_pid: u32) -> Outcome {
        Outcome {
            id: self.id.clone(),
            ok: true,
            old_pid: Some(old_pid),
            new_pid: Some(new_pid),
            error: None,
        }
    }

    pub fn failed(&self, error: &str) -> Outcome {
        Outcome {
            id: self.id.clone(),
            ok: false,
            old_pid: None,
            new_pid: None,
            error: Some(error.to_string()),
        }
    }
}

/// Writes the outcome for `ambit node upgrade` to read (logged when it cannot be written).
pub fn write_result(layout: &Layout, node: &str, outcome: &Outcome) {
    let path = layout.upgrade_result(node);
    if let Err(e) = crate::status::write_json_atomic(&path, outcome) {
        tracing::error!(%node, error = %e, "cannot write the upgrade outcome");
    }
}

/// Asks the supervisor of `layout`'s cluster to upgrade `node`'s proxy and waits for the outcome.
pub fn upgrade_node(layout: &Layout, nodes: &[String], node: &str, wait: Duration) -> Result<Outcome, UpgradeError> {
    if !nodes.iter().any(|n| n == node) {
        return Err(UpgradeError::UnknownNode {
            cluster: layout.cluster().to_string(),
            node: node.to_string(),
        });
    }
    let not_running = || UpgradeError::NotRunning(layout.cluster().to_string());
    let pid: i32 = std::fs::read_to_string(layout.supervisor_pid_file())
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(not_running)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let id = format!("{}-{nanos}", std::process::id());
    let request = layout.upgrade_request(node);
    if let Some(dir) = request.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&request, &id)?;
    kill(Pid::from_raw(pid), Signal::SIGUSR1).map_err(|_| not_running())?;
    let began = Instant::now();
    while began.elapsed() < wait {
        let outcome = std::fs::read(layout.upgrade_result(node))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Outcome>(&bytes).ok());
        if let Some(outcome) = outcome.filter(|o| o.id == id) {
            return match outcome.ok {
                true => Ok(outcome),
                false => Err(UpgradeError::Failed {
                    node: node.to_string(),
                    error: outcome.error.unwrap_or_default(),
                }),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(UpgradeError::Timeout(wait))
}

//! The supervisor's view of a running cluster, written to `status.json` on every change and read by the CLI.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::endpoints::ServiceEndpoints;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub supervisor_pid: u32,
    /// Unix seconds.
    pub started_at: u64,
    pub pods: Vec<PodStatus>,
    pub endpoints: Vec<ServiceEndpoints>,
    /// True once the supervisor has stopped every container on its way out.
    pub stopped: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    pub namespace: String,
    pub name: String,
    pub phase: Phase,
    pub ready: bool,
    pub containers: Vec<ContainerStatus>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    pub state: ContainerState,
    pub ready: bool,
    pub restarts: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Waiting {
        reason: String,
    },
    Running {
        pid: u32,
        started_at: u64,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        finished_at: u64,
    },
}

// === impl ClusterStatus ===

impl ClusterStatus {
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodStatus> {
        self.pods.iter().find(|p| p.namespace == namespace && p.name == name)
    }

    /// Reads a status file; a missing or unreadable file is reported as such.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// Writes atomically (a reader never sees half a file).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_json_atomic(path, self)
    }
}

// === impl PodStatus ===

impl PodStatus {
    pub fn restarts(&self) -> u32 {
        self.containers.iter().map(|c| c.restarts).sum()
    }

    /// The pids of the running containers, comma-separated.
    pub fn pids(&self) -> String {
        let pids: Vec<String> = self
            .containers
            .iter()
            .filter_map(|c| match c.state {
                ContainerState::Running { pid, .. } => Some(pid.to_string()),
                _ => None,
            })
            .collect();
        pids.join(",")
    }

    /// Text for the STATUS column, as kubectl prints it.
    pub fn display_status(&self) -> String {
        for c in &self.containers {
            match &c.state {
                ContainerState::Waiting { reason } if !reason.is_empty() => return reason.clone(),
                ContainerState::Terminated { reason, .. } if self.phase != Phase::Succeeded => return reason.clone(),
                _ => {}
            }
        }
        match self.phase {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Completed",
            Phase::Failed => "Error",
        }
        .to_string()
    }
}

/// Serializes `value` as JSON to a temporary file beside `path` and renames it into place.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

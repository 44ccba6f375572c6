//! ZDS, the protocol on which the node agent hands the node proxy the pods it must serve, each with its network
//! namespace as a file descriptor (Istio's `istio.workload.zds`, wire compatible with istio-cni and ztunnel).
//!
//! The agent is the server on a unix SOCK_SEQPACKET socket, the proxy the client. The proxy says hello; the agent
//! replays its pods as a snapshot (an Add with the netns fd, or a Keep when it has no fd to give), one message at a
//! time, each acked; then SnapshotSent, after which the proxy drops every pod the snapshot did not mention; then live
//! Adds and Dels, still one at a time. Only the newest connected proxy receives updates, which is how a new proxy
//! takes over from an old one during an upgrade.
//!
//! Decide, then act: [`AgentSession`] and [`ProxySession`] are sans-IO state machines that validate and produce
//! messages; [`serve_agent`] and [`connect_proxy`] are the thin tokio drivers that move them over the socket, keep
//! deadlines and reconnect. A protocol error ends the connection (as ztunnel does): the proxy reconnects and the
//! agent serves the new connection a full snapshot, so both ends resynchronise from scratch.

mod agent;
mod backoff;
mod driver;
mod proxy;

use std::fmt;

use ambit_api::istio::workload::zds as pb;

pub use agent::{Acked, AgentSession, Pod, PodSet, Transmit};
pub use backoff::Backoff;
pub use driver::{
    AgentEvent, DEADLINE, Netns, ProxyHandler, RECV_BUFFER, connect_proxy, connect_proxy_with, serve_agent,
};
pub use proxy::{Command, ProxySession};

/// A pod's Kubernetes UID, the key ZDS names pods by (not the workload API's `cluster//v1/Pod/ns/name` uid).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodUid(String);

/// Who a pod is, for the proxy to match it with the workload the control plane describes (by namespace, service
/// account and name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadInfo {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
}

/// The four requests the agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Add,
    Keep,
    Del,
    SnapshotSent,
}

/// A peer broke the protocol, or a caller used a session out of turn. The connection cannot go on: the driver
/// closes it and both ends start again with a fresh snapshot.
#[derive(Debug, thiserror::Error)]
pub enum ZdsError {
    #[error("cannot decode a {what}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{kind} carried {got} file descriptors; it must carry {want}")]
    FdCount { kind: RequestKind, got: usize, want: usize },
    #[error("{kind} {reason}")]
    OutOfOrder { kind: RequestKind, reason: &'static str },
    #[error("the proxy speaks ZDS version {0}; only 1 (V1) is known")]
    Version(i32),
    #[error("an ack arrived while no request was outstanding")]
    UnexpectedAck,
    #[error("a request arrived before the previous one was acked")]
    Unacked,
    #[error("ack called with no request to answer")]
    NothingToAck,
    #[error("add.uid {uid}: the file descriptor is not a network namespace")]
    NotNetns { uid: PodUid },
}

// === impl PodUid ===

impl PodUid {
    pub fn new(uid: impl Into<String>) -> Self {
        PodUid(uid.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A uid from the wire, which must not be empty (`field` names where it came from in errors).
    fn from_wire(uid: String, field: &'static str) -> Result<Self, ZdsError> {
        if uid.is_empty() {
            return Err(ZdsError::Invalid {
                field,
                reason: "empty".to_string(),
            });
        }
        Ok(PodUid(uid))
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl WorkloadInfo ===

impl From<pb::WorkloadInfo> for WorkloadInfo {
    fn from(info: pb::WorkloadInfo) -> Self {
        WorkloadInfo {
            name: info.name,
            namespace: info.namespace,
            service_account: info.service_account,
        }
    }
}

impl From<WorkloadInfo> for pb::WorkloadInfo {
    fn from(info: WorkloadInfo) -> Self {
        pb::WorkloadInfo {
            name: info.name,
            namespace: info.namespace,
            service_account: info.service_account,
        }
    }
}

// === impl RequestKind ===

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestKind::Add => "add",
            RequestKind::Keep => "keep",
            RequestKind::Del => "del",
            RequestKind::SnapshotSent => "snapshot_sent",
        })
    }
}

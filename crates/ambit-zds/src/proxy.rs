//! The proxy (client) end of one ZDS connection as a sans-IO state machine: it validates each request from the agent
//! (descriptors, order, fields) into a [`Command`] for the caller to apply, and encodes the ack once the caller has.
//!
//! Rules checked, after ztunnel's: only Add carries a descriptor and exactly one (the others it carried are closed
//! when dropped); Keep only before SnapshotSent; Del only after it; SnapshotSent once. After SnapshotSent the
//! session names the pods the proxy holds that the snapshot did not mention, to be torn down.

use std::collections::BTreeSet;

use prost::Message;

use crate::{PodUid, RequestKind, WorkloadInfo, ZdsError, pb};

/// A validated request, for the caller to apply before acking. `F` is the descriptor type (an `OwnedFd` in the
/// driver).
#[derive(Debug, PartialEq, Eq)]
pub enum Command<F> {
    /// Serve this pod in the namespace `netns` (replacing any proxy for the same uid).
    Add { uid: PodUid, info: WorkloadInfo, netns: F },
    /// Snapshot only: keep serving this pod as before.
    Keep { uid: PodUid },
    /// Stop serving this pod now.
    Del { uid: PodUid },
    /// The snapshot is complete; stop serving these pods, held but not mentioned.
    SnapshotDone { stale: Vec<PodUid> },
}

/// One connection's state on the proxy side.
#[derive(Debug, Default)]
pub struct ProxySession {
    /// The pods the proxy serves, carried over from earlier connections: told by an acked Add or Keep, not deleted.
    held: BTreeSet<PodUid>,
    /// The pods this connection's snapshot mentioned so far.
    mentioned: BTreeSet<PodUid>,
    snapshot_done: bool,
    /// The request the caller is applying, to be acked.
    pending: Option<(RequestKind, Option<PodUid>)>,
}

// === impl ProxySession ===

impl ProxySession {
    /// A session for a new connection, by a proxy that already serves `held` (empty on first start).
    pub fn new(held: BTreeSet<PodUid>) -> Self {
        ProxySession {
            held,
            ..ProxySession::default()
        }
    }

    /// The hello that opens every connection.
    pub fn hello() -> Vec<u8> {
        pb::ZdsHello {
            version: pb::Version::V1 as i32,
        }
        .encode_to_vec()
    }

    /// The pods the proxy serves, to carry into the session of the next connection.
    pub fn held(&self) -> &BTreeSet<PodUid> {
        &self.held
    }

    /// Whether this connection's snapshot is complete.
    pub fn snapshot_done(&self) -> bool {
        self.snapshot_done
    }

    /// Validates one request and the descriptors that came with it. On error, the descriptors are dropped (closed).
    pub fn handle<F>(&mut self, bytes: &[u8], mut fds: Vec<F>) -> Result<Command<F>, ZdsError> {
        if self.pending.is_some() {
            return Err(ZdsError::Unacked);
        }
        let request = pb::WorkloadRequest::decode(bytes).map_err(|source| ZdsError::Decode {
            what: "workload request",
            source,
        })?;
        let payload = request.payload.ok_or_else(|| ZdsError::Invalid {
            field: "workload_request.payload",
            reason: "missing".to_string(),
        })?;
        let kind = kind_of(&payload);
        let want_fds = usize::from(kind == RequestKind::Add);
        if fds.len() != want_fds {
            return Err(ZdsError::FdCount {
                kind,
                got: fds.len(),
                want: want_fds,
            });
        }
        let command = match payload {
            pb::workload_request::Payload::Add(add) => {
                let uid = PodUid::from_wire(add.uid, "add.uid")?;
                let info = add.workload_info.ok_or_else(|| ZdsError::Invalid {
                    field: "add.workload_info",
                    reason: "missing".to_string(),
                })?;
                // Exactly one descriptor, checked above.
                let netns = fds.pop().ok_or(ZdsError::FdCount { kind, got: 0, want: 1 })?;
                Command::Add {
                    uid,
                    info: info.into(),
                    netns,
                }
            }
            pb::workload_request::Payload::Keep(keep) => {
                self.before_snapshot_sent(kind, "after snapshot_sent")?;
                Command::Keep {
                    uid: PodUid::from_wire(keep.uid, "keep.uid")?,
                }
            }
            pb::workload_request::Payload::Del(del) => {
                if !self.snapshot_done {
                    return Err(ZdsError::OutOfOrder {
                        kind,
                        reason: "before snapshot_sent",
                    });
                }
                Command::Del {
                    uid: PodUid::from_wire(del.uid, "del.uid")?,
                }
            }
            pb::workload_request::Payload::SnapshotSent(_) => {
                self.before_snapshot_sent(kind, "a second time")?;
                self.snapshot_done = true;
                let mentioned = std::mem::take(&mut self.mentioned);
                let stale: Vec<PodUid> = self.held.difference(&mentioned).cloned().collect();
                self.held.retain(|uid| mentioned.contains(uid));
                Command::SnapshotDone { stale }
            }
        };
        let uid = match &command {
            Command::Add { uid, .. } | Command::Keep { uid } | Command::Del { uid } => Some(uid.clone()),
            Command::SnapshotDone { .. } => None,
        };
        if let (Some(uid), false) = (&uid, self.snapshot_done) {
            self.mentioned.insert(uid.clone());
        }
        self.pending = Some((kind, uid));
        Ok(command)
    }

    /// The ack for the request last handled, once the caller applied it: `Err` carries why it failed, for the agent
    /// to report. The pod counts as held after an Add or Keep either way (the caller owns retrying a failed start)
    /// and as gone after a Del.
    pub fn ack(&mut self, result: Result<(), String>) -> Result<Vec<u8>, ZdsError> {
        let (kind, uid) = self.pending.take().ok_or(ZdsError::NothingToAck)?;
        match (kind, uid) {
            (RequestKind::Add | RequestKind::Keep, Some(uid)) => {
                self.held.insert(uid);
            }
            (RequestKind::Del, Some(uid)) => {
                self.held.remove(&uid);
            }
            _ => {}
        }
        let ack = pb::Ack {
            error: result.err().unwrap_or_default(),
        };
        let response = pb::WorkloadResponse {
            payload: Some(pb::workload_response::Payload::Ack(ack)),
        };
        Ok(response.encode_to_vec())
    }

    fn before_snapshot_sent(&self, kind: RequestKind, reason: &'static str) -> Result<(), ZdsError> {
        if self.snapshot_done {
            return Err(ZdsError::OutOfOrder { kind, reason });
        }
        Ok(())
    }
}

fn kind_of(payload: &pb::workload_request::Payload) -> RequestKind {
    match payload {
        pb::workload_request::Payload::Add(_) => RequestKind::Add,
        pb::workload_request::Payload::Keep(_) => RequestKind::Keep,
        pb::workload_request::Payload::Del(_) => RequestKind::Del,
        pb::workload_request::Payload::SnapshotSent(_) => RequestKind::SnapshotSent,
    }
}

#[cfg(test)]
mod tests;

//! The agent (server) end of one ZDS connection as a sans-IO state machine: it waits for the proxy's hello, replays
//! a snapshot of the pods, then turns changes of the wanted pods into Adds and Dels, one request outstanding at a
//! time.
//!
//! The session is level-triggered: the caller hands it the whole wanted pod set ([`AgentSession::update`]) and the
//! session diffs it against what it has told the proxy, so a burst of changes collapses into the requests that
//! matter and nothing is lost while a request waits for its ack.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use prost::Message;

use crate::{PodUid, RequestKind, WorkloadInfo, ZdsError, pb};

/// A pod the agent wants the proxy to serve. `N` is the netns handle (the driver's [`crate::Netns`]); `None` when the
/// agent could not reopen the pod's netns (after an agent restart), so the pod can only be kept, not added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod<N> {
    pub info: WorkloadInfo,
    pub netns: Option<N>,
}

/// The pods the agent wants served, by uid.
pub type PodSet<N> = BTreeMap<PodUid, Pod<N>>;

/// One request to send: the bytes of one datagram and the netns to pass beside it (Add only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<N> {
    pub kind: RequestKind,
    /// The pod the request is about (none for SnapshotSent).
    pub uid: Option<PodUid>,
    pub bytes: Vec<u8>,
    pub netns: Option<N>,
}

/// The proxy's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub kind: RequestKind,
    pub uid: Option<PodUid>,
    /// What the proxy reported as failed; `None` for success.
    pub error: Option<String>,
}

/// One connection's state on the agent side.
#[derive(Debug)]
pub struct AgentSession<N> {
    phase: Phase<N>,
    /// The pods the agent wants served now.
    wanted: Arc<PodSet<N>>,
    /// What the proxy has been told on this connection (Add or Keep sent, not deleted since).
    told: PodSet<N>,
    /// The request waiting for its ack.
    outstanding: Option<(RequestKind, Option<PodUid>)>,
}

#[derive(Debug)]
enum Phase<N> {
    AwaitHello,
    /// Replaying the pods wanted when the hello came; SnapshotSent follows the last one.
    Snapshot(VecDeque<(PodUid, Pod<N>)>),
    Live,
}

// === impl AgentSession ===

impl<N: Clone + PartialEq> AgentSession<N> {
    /// A session for a new connection, with the pods wanted now.
    pub fn new(wanted: Arc<PodSet<N>>) -> Self {
        AgentSession {
            phase: Phase::AwaitHello,
            wanted,
            told: PodSet::new(),
            outstanding: None,
        }
    }

    /// Replaces the pods wanted; the difference goes out as Adds and Dels once the snapshot is through.
    pub fn update(&mut self, wanted: Arc<PodSet<N>>) {
        self.wanted = wanted;
    }

    /// Whether the proxy has said hello.
    pub fn greeted(&self) -> bool {
        !matches!(self.phase, Phase::AwaitHello)
    }

    /// Takes one message from the proxy: the hello first, then an ack for each request. Returns the ack, if it was
    /// one. Any other message is a protocol error.
    pub fn handle(&mut self, bytes: &[u8]) -> Result<Option<Acked>, ZdsError> {
        if let Phase::AwaitHello = self.phase {
            let hello = pb::ZdsHello::decode(bytes).map_err(|source| ZdsError::Decode { what: "hello", source })?;
            if hello.version != pb::Version::V1 as i32 {
                return Err(ZdsError::Version(hello.version));
            }
            let snapshot = self
                .wanted
                .iter()
                .map(|(uid, pod)| (uid.clone(), pod.clone()))
                .collect();
            self.phase = Phase::Snapshot(snapshot);
            return Ok(None);
        }
        let response = pb::WorkloadResponse::decode(bytes).map_err(|source| ZdsError::Decode {
            what: "workload response",
            source,
        })?;
        let Some(pb::workload_response::Payload::Ack(ack)) = response.payload else {
            return Err(ZdsError::Invalid {
                field: "workload_response.payload",
                reason: "missing".to_string(),
            });
        };
        let (kind, uid) = self.outstanding.take().ok_or(ZdsError::UnexpectedAck)?;
        let error = Some(ack.error).filter(|e| !e.is_empty());
        Ok(Some(Acked { kind, uid, error }))
    }

    /// The next request to send, if one is due: none before the hello or while a request awaits its ack.
    pub fn poll_transmit(&mut self) -> Option<Transmit<N>> {
        if self.outstanding.is_some() {
            return None;
        }
        let transmit = match &mut self.phase {
            Phase::AwaitHello => return None,
            Phase::Snapshot(queue) => match queue.pop_front() {
                Some((uid, pod)) => self.tell(uid, pod),
                None => {
                    self.phase = Phase::Live;
                    request(
                        RequestKind::SnapshotSent,
                        None,
                        pb::workload_request::Payload::SnapshotSent(pb::SnapshotSent {}),
                        None,
                    )
                }
            },
            Phase::Live => self.next_change()?,
        };
        self.outstanding = Some((transmit.kind, transmit.uid.clone()));
        Some(transmit)
    }

    /// The first difference between the wanted pods and what the proxy was told: a Del for a pod no longer wanted,
    /// else an Add for a new pod or one whose netns or identity changed (a re-created sandbox). A pod without a
    /// netns can only be kept during a snapshot; it is never added live.
    fn next_change(&mut self) -> Option<Transmit<N>> {
        if let Some(uid) = self.told.keys().find(|uid| !self.wanted.contains_key(*uid)).cloned() {
            self.told.remove(&uid);
            let del = pb::DelWorkload { uid: uid.to_string() };
            return Some(request(
                RequestKind::Del,
                Some(uid),
                pb::workload_request::Payload::Del(del),
                None,
            ));
        }
        let (uid, pod) = self
            .wanted
            .iter()
            .find(|(uid, pod)| pod.netns.is_some() && self.told.get(*uid) != Some(*pod))?;
        Some(self.tell(uid.clone(), pod.clone()))
    }

    /// An Add (with the netns) or, without one, a Keep, remembered as told.
    fn tell(&mut self, uid: PodUid, pod: Pod<N>) -> Transmit<N> {
        self.told.insert(uid.clone(), pod.clone());
        match pod.netns {
            Some(netns) => {
                let add = pb::AddWorkload {
                    uid: uid.to_string(),
                    workload_info: Some(pod.info.into()),
                };
                request(
                    RequestKind::Add,
                    Some(uid),
                    pb::workload_request::Payload::Add(add),
                    Some(netns),
                )
            }
            None => {
                let keep = pb::KeepWorkload { uid: uid.to_string() };
                request(
                    RequestKind::Keep,
                    Some(uid),
                    pb::workload_request::Payload::Keep(keep),
                    None,
                )
            }
        }
    }
}

/// The transmit for one request.
fn request<N>(
    kind: RequestKind,
    uid: Option<PodUid>,
    payload: pb::workload_request::Payload,
    netns: Option<N>,
) -> Transmit<N> {
    let bytes = pb::WorkloadRequest { payload: Some(payload) }.encode_to_vec();
    Transmit {
        kind,
        uid,
        bytes,
        netns,
    }
}

#[cfg(test)]
mod tests;

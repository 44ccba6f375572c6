//! The tokio drivers that move the sessions' messages over the seqpacket socket: [`serve_agent`] (the node agent's
//! listener, one task per connected proxy, updates only to the newest) and [`connect_proxy`] (the node proxy's
//! client, reconnecting with backoff and applying requests through a [`ProxyHandler`]). They only do IO, deadlines
//! and task bookkeeping; every protocol decision is the sessions'.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ambit_netns::{SeqpacketListener, SeqpacketStream, is_network_namespace};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::{Acked, AgentSession, Backoff, Command, PodSet, PodUid, ProxySession, WorkloadInfo, ZdsError};

/// The agent's read and write deadline (Istio's): a proxy that takes longer to answer is considered gone.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The receive buffer for one message (Istio's and ztunnel's); a longer message is an error.
pub const RECV_BUFFER: usize = 1024;

/// A pod's network namespace as the agent holds it: an open descriptor, shared by every connection that passes it,
/// identified by the namespace's inode so a re-created sandbox counts as a change.
#[derive(Debug, Clone)]
pub struct Netns {
    fd: Arc<OwnedFd>,
    id: (u64, u64),
}

/// What happened on the agent's connections, for the agent to act on (e.g. mark a pod enrolled once its Add is
/// acked, or retry when the ack carries an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// A proxy connected; it is now the newest and receives the updates.
    Connected { conn: u64 },
    /// A proxy answered a request.
    Acked { conn: u64, ack: Acked },
    /// A connection ended: the proxy closed it (`reason` empty) or it broke the protocol or a deadline.
    Disconnected { conn: u64, reason: String },
}

/// The node proxy's side of ZDS: what it does with each request. Calls run on the driver's task, one at a time, in
/// the agent's order; each is acked when it returns, so they should not block for long.
pub trait ProxyHandler: Send {
    /// Serve pod `uid` inside `netns` (already checked to be a network namespace), replacing any proxy it had for
    /// `uid` if the namespace differs. An error is reported back to the agent; the handler owns retrying.
    fn add(&mut self, uid: &PodUid, info: WorkloadInfo, netns: OwnedFd) -> Result<(), String>;
    /// Keep serving `uid` as before (snapshot only: the agent lost its netns handle, e.g. after a restart).
    fn keep(&mut self, uid: &PodUid);
    /// Stop serving `uid` at once, without draining: the pod is gone.
    fn del(&mut self, uid: &PodUid);
    /// The snapshot is complete: stop serving `stale`, the pods held from before that the agent did not mention.
    /// From here on the proxy is in sync (ready).
    fn snapshot_done(&mut self, stale: Vec<PodUid>);
}

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnEnd {
    #[error("peer closed the connection")]
    Closed,
    #[error(transparent)]
    Protocol(#[from] ZdsError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no {0} within {DEADLINE:?}")]
    Deadline(&'static str),
    #[error("the proxy sent a message while no request was outstanding")]
    Unsolicited,
}

// === impl Netns ===

impl Netns {
    /// Holds `fd` as a pod's netns; it must be a network namespace.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        if !is_network_namespace(fd.as_fd())? {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a network namespace"));
        }
        let meta = File::from(fd.try_clone()?).metadata()?;
        Ok(Netns {
            fd: Arc::new(fd),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Opens the netns at `path` (e.g. `/proc/PID/ns/net`).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file =
            File::open(path).map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
        Self::new(file.into())
    }

    /// The namespace's inode number.
    pub fn inode(&self) -> u64 {
        self.id.1
    }
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Netns {}

impl AsFd for Netns {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// === agent ===

/// Serves ZDS on `listener` until the future is dropped (which closes every connection) or accepting fails. `pods`
/// holds the pods to serve; each change goes to the newest connected proxy. Older connections stay open but get
/// nothing new, unless the newer ones all go away, when the newest remaining one catches up.
pub async fn serve_agent(
    listener: SeqpacketListener,
    pods: watch::Receiver<Arc<PodSet<Netns>>>,
    events: mpsc::UnboundedSender<AgentEvent>,
) -> io::Result<Infallible> {
    // The ids of the open connections, oldest first; the last one receives updates.
    let conns = watch::Sender::new(Vec::<u64>::new());
    let mut tasks = JoinSet::new();
    let mut conn = 0u64;
    loop {
        conn += 1;
        let stream = listener.accept().await?;
        conns.send_modify(|ids| ids.push(conn));
        let _ = events.send(AgentEvent::Connected { conn });
        let (pods, conns_rx, events, conns) = (pods.clone(), conns.subscribe(), events.clone(), conns.clone());
        tasks.spawn(async move {
            let end = agent_conn(conn, &stream, pods, conns_rx, &events).await;
            conns.send_modify(|ids| ids.retain(|id| *id != conn));
            let reason = match end {
                ConnEnd::Closed => String::new(),
                other => other.to_string(),
            };
            tracing::debug!(conn, %reason, "zds connection ended");
            let _ = events.send(AgentEvent::Disconnected { conn, reason });
        });
        // Reap finished connections so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
}

/// One proxy's connection, until it ends.
async fn agent_conn(
    conn: u64,
    stream: &SeqpacketStream,
    mut pods: watch::Receiver<Arc<PodSet<Netns>>>,
    mut conns: watch::Receiver<Vec<u64>>,
    events: &mpsc::UnboundedSender<AgentEvent>,
) -> ConnEnd {
    let mut session = AgentSession::new(pods.borrow_and_update().clone());
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut pods_open = true;
    let result: Result<Infallible, ConnEnd> = async {
        let hello = deadline("hello", recv_message(stream, &mut buf)).await?;
        session.handle(hello)?;
        loop {
            while let Some(transmit) = session.poll_transmit() {
                let fd = transmit.netns.as_ref().map(AsFd::as_fd);
                deadline("send", async { Ok::<_, ConnEnd>(stream.send(&transmit.bytes, fd).await?) }).await?;
                let reply = deadline("ack", recv_message(stream, &mut buf)).await?;
                if let Some(ack) = session.handle(reply)? {
                    if let Some(error) = &ack.error {
                        tracing::warn!(conn, uid = ?ack.uid, kind = %ack.kind, %error, "zds request failed on the proxy");
                    }
                    let _ = events.send(AgentEvent::Acked { conn, ack });
                }
            }
            let latest = conns.borrow_and_update().last() == Some(&conn);
            tokio::select! {
                changed = pods.changed(), if latest && pods_open => match changed {
                    Ok(()) => session.update(pods.borrow_and_update().clone()),
                    // The agent dropped its pod source: nothing more will change.
                    Err(_) => pods_open = false,
                },
                _ = conns.changed() => {
                    if conns.borrow_and_update().last() == Some(&conn) {
                        session.update(pods.borrow_and_update().clone());
                    }
                }
                message = recv_message(stream, &mut buf) => {
                    message?;
                    return Err(ConnEnd::Unsolicited);
                }
            }
        }
    }
    .await;
    let Err(end) = result;
    end
}

/// One message; end of stream is [`ConnEnd::Closed`].
async fn recv_message<'b>(stream: &SeqpacketStream, buf: &'b mut [u8]) -> Result<&'b [u8], ConnEnd> {
    let (len, fds) = stream.recv(buf).await?;
    if len == 0 {
        return Err(ConnEnd::Closed);
    }
    if !fds.is_empty() {
        // The proxy never passes descriptors; the ones received are closed on return.
        return Err(ConnEnd::Protocol(ZdsError::Invalid {
            field: "workload_response",
            reason: format!("carried {} file descriptors; it must carry none", fds.len()),
        }));
    }
    Ok(&buf[..len])
}

async fn deadline<T>(what: &'static str, f: impl Future<Output = Result<T, ConnEnd>>) -> Result<T, ConnEnd> {
    tokio::time::timeout(DEADLINE, f)
        .await
        .map_err(|_| ConnEnd::Deadline(what))?
}

// === proxy ===

/// Runs the node proxy's side of ZDS against the agent at `path` until the future is dropped: connects, applies the
/// agent's requests through `handler`, and on any failure or protocol error reconnects after ztunnel's backoff
/// (5 ms doubling to 15 s, jitter 0.2), keeping what it serves until the next snapshot says otherwise.
pub async fn connect_proxy<H: ProxyHandler>(path: &Path, handler: H) -> Infallible {
    connect_proxy_with(path, handler, Backoff::default()).await
}

/// As [`connect_proxy`], with another reconnect backoff.
pub async fn connect_proxy_with<H: ProxyHandler>(path: &Path, mut handler: H, mut backoff: Backoff) -> Infallible {
    let mut held = BTreeSet::new();
    loop {
        let mut session = ProxySession::new(std::mem::take(&mut held));
        let end = match SeqpacketStream::connect(path) {
            Ok(stream) => proxy_conn(&stream, &mut session, &mut handler).await,
            Err(e) => ConnEnd::Io(e),
        };
        if session.snapshot_done() {
            backoff.reset();
        }
        held = session.held().clone();
        let delay = backoff.next_delay(fastrand::f64());
        tracing::debug!(path = %path.display(), reason = %end, ?delay, "zds connection ended; reconnecting");
        tokio::time::sleep(delay).await;
    }
}

/// One connection to the agent, until it ends.
async fn proxy_conn<H: ProxyHandler>(stream: &SeqpacketStream, session: &mut ProxySession, handler: &mut H) -> ConnEnd {
    let mut buf = vec![0u8; RECV_BUFFER];
    let result: Result<Infallible, ConnEnd> = async {
        stream.send(&ProxySession::hello(), None).await?;
        loop {
            let (len, fds) = stream.recv(&mut buf).await?;
            if len == 0 {
                return Err(ConnEnd::Closed);
            }
            let result = match session.handle(&buf[..len], fds)? {
                Command::Add { uid, info, netns } => {
                    if !is_network_namespace(netns.as_fd())? {
                        return Err(ZdsError::NotNetns { uid }.into());
                    }
                    handler.add(&uid, info, netns)
                }
                Command::Keep { uid } => {
                    handler.keep(&uid);
                    Ok(())
                }
                Command::Del { uid } => {
                    handler.del(&uid);
                    Ok(())
                }
                Command::SnapshotDone { stale } => {
                    handler.snapshot_done(stale);
                    Ok(())
                }
            };
            stream.send(&session.ack(result)?, None).await?;
        }
    }
    .await;
    let Err(end) = result;
    end
}

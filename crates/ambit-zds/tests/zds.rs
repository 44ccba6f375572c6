//! ZDS end to end over a real unix SOCK_SEQPACKET socket: the agent driver against the proxy driver, and each of
//! them against a scripted peer that misbehaves. The netns passed around is the test's own (`/proc/self/ns/net`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ambit_api::istio::workload::zds as pb;
use ambit_api::prost::Message;
use ambit_netns::{SeqpacketListener, SeqpacketStream};
use ambit_zds::{AgentEvent, Netns, Pod, PodSet, PodUid, ProxyHandler, RequestKind, WorkloadInfo};
use pb::workload_request::Payload;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

/// What a proxy handler was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    /// uid, pod name, netns inode
    Add(String, String, u64),
    Keep(String),
    Del(String),
    SnapshotDone(Vec<String>),
}

/// A handler that reports every call and fails the Adds of the uids in `fail`.
struct Recorder {
    calls: mpsc::UnboundedSender<Call>,
    fail: BTreeSet<String>,
}

impl ProxyHandler for Recorder {
    fn add(&mut self, uid: &PodUid, info: WorkloadInfo, netns: OwnedFd) -> Result<(), String> {
        let inode = File::from(netns).metadata().unwrap().ino();
        let _ = self.calls.send(Call::Add(uid.to_string(), info.name, inode));
        if self.fail.contains(uid.as_str()) {
            Err(format!("cannot start proxy for {uid}"))
        } else {
            Ok(())
        }
    }

    fn keep(&mut self, uid: &PodUid) {
        let _ = self.calls.send(Call::Keep(uid.to_string()));
    }

    fn del(&mut self, uid: &PodUid) {
        let _ = self.calls.send(Call::Del(uid.to_string()));
    }

    fn snapshot_done(&mut self, stale: Vec<PodUid>) {
        let _ = self
            .calls
            .send(Call::SnapshotDone(stale.iter().map(ToString::to_string).collect()));
    }
}

fn own_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net").unwrap().ino()
}

fn add(uid: &str) -> Call {
    Call::Add(uid.to_string(), format!("{uid}-pod"), own_inode())
}

fn done(stale: &[&str]) -> Call {
    Call::SnapshotDone(stale.iter().map(ToString::to_string).collect())
}

/// Pods for the agent: `true` with the test's netns (an Add), `false` without (a Keep).
fn pods(entries: &[(&str, bool)]) -> Arc<PodSet<Netns>> {
    let set = entries.iter().map(|(uid, with_netns)| {
        let info = WorkloadInfo {
            name: format!("{uid}-pod"),
            namespace: "default".to_string(),
            service_account: "sa".to_string(),
        };
        let netns = with_netns.then(|| Netns::open(Path::new("/proc/self/ns/net")).unwrap());
        (PodUid::new(*uid), Pod { info, netns })
    });
    Arc::new(set.collect())
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out")
        .expect("channel closed")
}

async fn calls(rx: &mut mpsc::UnboundedReceiver<Call>, n: usize) -> Vec<Call> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(next(rx).await);
    }
    got
}

/// Waits for the next ack event, skipping connection events.
async fn next_ack(events: &mut mpsc::UnboundedReceiver<AgentEvent>) -> (u64, ambit_zds::Acked) {
    loop {
        if let AgentEvent::Acked { conn, ack } = next(events).await {
            return (conn, ack);
        }
    }
}

struct Agent {
    _dir: tempfile::TempDir,
    path: PathBuf,
    pods: watch::Sender<Arc<PodSet<Netns>>>,
    events: mpsc::UnboundedReceiver<AgentEvent>,
    task: JoinHandle<()>,
}

impl Agent {
    fn start(initial: Arc<PodSet<Netns>>) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zds.sock");
        let listener = SeqpacketListener::bind(&path).unwrap();
        let (pods, pods_rx) = watch::channel(initial);
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let _ = ambit_zds::serve_agent(listener, pods_rx, events_tx).await;
        });
        Agent {
            _dir: dir,
            path,
            pods,
            events,
            task,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A node proxy driver with a recording handler, aborted on drop.
struct Proxy {
    calls: mpsc::UnboundedReceiver<Call>,
    task: JoinHandle<()>,
}

impl Proxy {
    fn start(path: &Path, fail: &[&str]) -> Proxy {
        let (tx, calls) = mpsc::unbounded_channel();
        let handler = Recorder {
            calls: tx,
            fail: fail.iter().map(ToString::to_string).collect(),
        };
        let path = path.to_path_buf();
        let task = tokio::spawn(async move {
            ambit_zds::connect_proxy(&path, handler).await;
        });
        Proxy { calls, task }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === agent driver against the proxy driver ===

#[tokio::test]
async fn snapshot_then_live_adds_and_dels() {
    let mut agent = Agent::start(pods(&[("a", true), ("b", true), ("c", false)]));
    let mut proxy = Proxy::start(&agent.path, &[]);
    let want = vec![add("a"), add("b"), Call::Keep("c".to_string()), done(&[])];
    assert_eq!(calls(&mut proxy.calls, 4).await, want);

    agent.pods.send_replace(pods(&[("b", true), ("c", false), ("d", true)]));
    assert_eq!(
        calls(&mut proxy.calls, 2).await,
        vec![Call::Del("a".to_string()), add("d")]
    );

    // Every request was acked, successfully, in order.
    let mut acks = Vec::new();
    for _ in 0..6 {
        let (_, ack) = next_ack(&mut agent.events).await;
        assert_eq!(ack.error, None);
        acks.push((ack.kind, ack.uid.map(|u| u.to_string())));
    }
    let uid = |u: &str| Some(u.to_string());
    let want = vec![
        (RequestKind::Add, uid("a")),
        (RequestKind::Add, uid("b")),
        (RequestKind::Keep, uid("c")),
        (RequestKind::SnapshotSent, None),
        (RequestKind::Del, uid("a")),
        (RequestKind::Add, uid("d")),
    ];
    assert_eq!(acks, want);
}

#[tokio::test]
async fn only_the_newest_proxy_receives_updates() {
    let agent = Agent::start(pods(&[("a", true)]));
    let mut old = Proxy::start(&agent.path, &[]);
    assert_eq!(calls(&mut old.calls, 2).await, vec![add("a"), done(&[])]);
    let mut new = Proxy::start(&agent.path, &[]);
    // The newcomer gets its own full snapshot.
    assert_eq!(calls(&mut new.calls, 2).await, vec![add("a"), done(&[])]);

    agent.pods.send_replace(pods(&[("a", true), ("b", true)]));
    assert_eq!(next(&mut new.calls).await, add("b"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(old.calls.try_recv().is_err(), "the older proxy received an update");

    // Once the newest is gone, the one left catches up with what it missed.
    drop(new);
    assert_eq!(next(&mut old.calls).await, add("b"));
}

#[tokio::test]
async fn failed_add_is_reported_and_updates_go_on() {
    let mut agent = Agent::start(pods(&[("a", true), ("b", true)]));
    let mut proxy = Proxy::start(&agent.path, &["a"]);
    assert_eq!(calls(&mut proxy.calls, 3).await, vec![add("a"), add("b"), done(&[])]);
    let (_, ack) = next_ack(&mut agent.events).await;
    assert_eq!(ack.uid, Some(PodUid::new("a")));
    assert_eq!(ack.error.as_deref(), Some("cannot start proxy for a"));
    let (_, ack) = next_ack(&mut agent.events).await;
    assert_eq!((ack.uid, ack.error), (Some(PodUid::new("b")), None));
    agent.pods.send_replace(pods(&[("a", true), ("b", true), ("c", true)]));
    assert_eq!(next(&mut proxy.calls).await, add("c"));
}

// === the agent driver against a scripted proxy ===

/// Connects, says hello, and returns the first request (with its descriptor count).
async fn scripted_hello(path: &Path, hello: &[u8]) -> SeqpacketStream {
    let stream = SeqpacketStream::connect(path).unwrap();
    stream.send(hello, None).await.unwrap();
    stream
}

async fn recv_request(stream: &SeqpacketStream) -> (Option<Payload>, usize) {
    let mut buf = [0u8; 1024];
    let (len, fds) = tokio::time::timeout(WAIT, stream.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    if len == 0 {
        return (None, fds.len());
    }
    (pb::WorkloadRequest::decode(&buf[..len]).unwrap().payload, fds.len())
}

fn add_uid(payload: &Option<Payload>) -> &str {
    match payload {
        Some(Payload::Add(add)) => &add.uid,
        other => panic!("expected an add, got {other:?}"),
    }
}

async fn disconnect_reason(events: &mut mpsc::UnboundedReceiver<AgentEvent>) -> String {
    loop {
        if let AgentEvent::Disconnected { reason, .. } = next(events).await {
            return reason;
        }
    }
}

#[tokio::test]
async fn agent_drops_a_proxy_that_sends_garbage_and_serves_the_next() {
    let hello = ambit_zds::ProxySession::hello();
    let ack_bytes = pb::WorkloadResponse {
        payload: Some(pb::workload_response::Payload::Ack(pb::Ack::default())),
    }
    .encode_to_vec();
    // (what, hello, reply to the first request, expected disconnect reason)
    type Case<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>, &'a str);
    let cases: Vec<Case> = vec![
        ("garbage hello", vec![0xff, 0xfe, 0xfd], None, "cannot decode a hello"),
        ("hello with version 0", vec![0x08, 0x00], None, "version 0"),
        (
            "garbage ack",
            hello.clone(),
            Some(vec![0x0a, 0x09]),
            "cannot decode a workload response",
        ),
        (
            "hello instead of ack",
            hello.clone(),
            Some(hello.clone()),
            "cannot decode a workload response",
        ),
    ];
    for (what, first, reply, want) in cases {
        let mut agent = Agent::start(pods(&[("a", true), ("b", true)]));
        let bad = scripted_hello(&agent.path, &first).await;
        if let Some(reply) = reply {
            let (request, _) = recv_request(&bad).await;
            assert_eq!(add_uid(&request), "a", "{what}");
            bad.send(&reply, None).await.unwrap();
        }
        let (request, _) = recv_request(&bad).await;
        assert!(request.is_none(), "{what}: the agent kept the connection open");
        let reason = disconnect_reason(&mut agent.events).await;
        assert!(reason.contains(want), "{what}: {reason}");

        // The next proxy gets the whole snapshot from the start.
        let good = scripted_hello(&agent.path, &hello).await;
        let (request, fds) = recv_request(&good).await;
        assert_eq!((add_uid(&request), fds), ("a", 1), "{what}");
        good.send(&ack_bytes, None).await.unwrap();
        assert_eq!(add_uid(&recv_request(&good).await.0), "b", "{what}");
    }
}

#[tokio::test]
async fn agent_recovers_from_a_disconnect_mid_snapshot() {
    let mut agent = Agent::start(pods(&[("a", true), ("b", true), ("c", false)]));
    let first = scripted_hello(&agent.path, &ambit_zds::ProxySession::hello()).await;
    let (request, fds) = recv_request(&first).await;
    assert_eq!((add_uid(&request), fds), ("a", 1));
    drop(first);
    assert_eq!(disconnect_reason(&mut agent.events).await, "");

    let mut proxy = Proxy::start(&agent.path, &[]);
    let want = vec![add("a"), add("b"), Call::Keep("c".to_string()), done(&[])];
    assert_eq!(calls(&mut proxy.calls, 4).await, want);
}

#[tokio::test]
async fn agent_drops_a_proxy_that_does_not_ack_in_time() {
    let mut agent = Agent::start(pods(&[("a", true)]));
    let silent = scripted_hello(&agent.path, &ambit_zds::ProxySession::hello()).await;
    assert_eq!(add_uid(&recv_request(&silent).await.0), "a");
    let started = tokio::time::Instant::now();
    let disconnect = async {
        loop {
            if let Some(AgentEvent::Disconnected { reason, .. }) = agent.events.recv().await {
                return reason;
            }
        }
    };
    let reason = tokio::time::timeout(ambit_zds::DEADLINE * 2, disconnect).await.unwrap();
    assert!(reason.contains("no ack within 5s"), "{reason}");
    assert!(started.elapsed() >= ambit_zds::DEADLINE - Duration::from_millis(100));
    assert!(recv_request(&silent).await.0.is_none(), "the connection stayed open");
}

// === the proxy driver against a scripted agent ===

/// A scripted agent: accepts the proxy's connection and checks its hello.
async fn accept_hello(listener: &SeqpacketListener) -> SeqpacketStream {
    let stream = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("no (re)connection")
        .unwrap();
    let mut buf = [0u8; 64];
    let (len, _) = stream.recv(&mut buf).await.unwrap();
    assert_eq!(&buf[..len], ambit_zds::ProxySession::hello());
    stream
}

fn request(payload: Payload) -> Vec<u8> {
    pb::WorkloadRequest { payload: Some(payload) }.encode_to_vec()
}

fn add_request(uid: &str) -> Vec<u8> {
    let info = pb::WorkloadInfo {
        name: format!("{uid}-pod"),
        namespace: "default".to_string(),
        service_account: "sa".to_string(),
    };
    request(Payload::Add(pb::AddWorkload {
        uid: uid.to_string(),
        workload_info: Some(info),
    }))
}

fn snapshot_sent() -> Vec<u8> {
    request(Payload::SnapshotSent(pb::SnapshotSent {}))
}

/// Sends a request and returns the ack's error text.
async fn send_request(stream: &SeqpacketStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> String {
    stream.send_fds(bytes, fds).await.unwrap();
    let mut buf = [0u8; 1024];
    let (len, _) = tokio::time::timeout(WAIT, stream.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let response = pb::WorkloadResponse::decode(&buf[..len]).unwrap();
    match response.payload {
        Some(pb::workload_response::Payload::Ack(ack)) => ack.error,
        None => panic!("response without ack"),
    }
}

/// Whether the proxy closed the connection (it reads as end of stream).
async fn closed(stream: &SeqpacketStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(WAIT, stream.recv(&mut buf)).await, Ok(Ok((0, _))))
}

fn pipe() -> (OwnedFd, File) {
    let (read, write) = nix::unistd::pipe().unwrap();
    (read, File::from(write))
}

fn read_end_closed(write: &mut File) -> bool {
    matches!(write.write(b"x"), Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
}

#[tokio::test]
async fn proxy_resets_on_bad_requests_and_closes_their_fds() {
    let keep = request(Payload::Keep(pb::KeepWorkload { uid: "a".to_string() }));
    let del = request(Payload::Del(pb::DelWorkload { uid: "a".to_string() }));
    // (what, snapshot completed first?, request, how many pipe read ends ride along)
    let cases: Vec<(&str, bool, Vec<u8>, usize)> = vec![
        ("garbage", false, vec![0xff, 0x00, 0x13], 0),
        ("add without fd", false, add_request("x"), 0),
        ("add with two fds", false, add_request("x"), 2),
        ("del with an fd", true, del, 1),
        ("keep after snapshot sent", true, keep, 0),
        ("snapshot sent with an fd", false, snapshot_sent(), 1),
    ];
    for (what, after_snapshot, bad, pipes) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zds.sock");
        let listener = SeqpacketListener::bind(&path).unwrap();
        let mut proxy = Proxy::start(&path, &[]);
        let conn = accept_hello(&listener).await;
        if after_snapshot {
            assert_eq!(send_request(&conn, &snapshot_sent(), &[]).await, "", "{what}");
            assert_eq!(next(&mut proxy.calls).await, done(&[]), "{what}");
        }
        let (reads, mut writes): (Vec<OwnedFd>, Vec<File>) = (0..pipes).map(|_| pipe()).unzip();
        let fds: Vec<BorrowedFd> = reads.iter().map(AsFd::as_fd).collect();
        conn.send_fds(&bad, &fds).await.unwrap();
        drop(reads);
        assert!(closed(&conn).await, "{what}: the proxy kept the connection");
        for write in &mut writes {
            assert!(read_end_closed(write), "{what}: a received fd stayed open");
        }
        // ztunnel's recovery: reset and reconnect, then a fresh snapshot.
        let again = accept_hello(&listener).await;
        assert_eq!(send_request(&again, &snapshot_sent(), &[]).await, "", "{what}");
        assert_eq!(next(&mut proxy.calls).await, done(&[]), "{what}");
        assert!(
            proxy.calls.try_recv().is_err(),
            "{what}: the handler saw the bad request"
        );
    }
}

#[tokio::test]
async fn proxy_rejects_an_fd_that_is_not_a_netns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zds.sock");
    let listener = SeqpacketListener::bind(&path).unwrap();
    let mut proxy = Proxy::start(&path, &[]);
    let conn = accept_hello(&listener).await;
    let file = tempfile::tempfile().unwrap();
    conn.send(&add_request("x"), Some(file.as_fd())).await.unwrap();
    assert!(closed(&conn).await, "the proxy accepted a regular file as a netns");
    let again = accept_hello(&listener).await;
    let netns = File::open("/proc/self/ns/net").unwrap();
    assert_eq!(send_request(&again, &add_request("y"), &[netns.as_fd()]).await, "");
    assert_eq!(next(&mut proxy.calls).await, add("y"));
}

#[tokio::test]
async fn proxy_resyncs_after_a_bad_message_and_drops_stale_pods() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zds.sock");
    let listener = SeqpacketListener::bind(&path).unwrap();
    let mut proxy = Proxy::start(&path, &[]);
    let netns = File::open("/proc/self/ns/net").unwrap();

    let first = accept_hello(&listener).await;
    assert_eq!(send_request(&first, &add_request("a"), &[netns.as_fd()]).await, "");
    assert_eq!(send_request(&first, &snapshot_sent(), &[]).await, "");
    assert_eq!(calls(&mut proxy.calls, 2).await, vec![add("a"), done(&[])]);
    // One bad message (an Add without its netns) resets the connection...
    first.send(&add_request("x"), None).await.unwrap();
    assert!(closed(&first).await);

    // ...and the next snapshot, which no longer mentions a, brings b and tears a down; live updates flow again.
    let second = accept_hello(&listener).await;
    assert_eq!(send_request(&second, &add_request("b"), &[netns.as_fd()]).await, "");
    // A disconnect mid-snapshot: the proxy reconnects and takes the snapshot from the start.
    drop(second);
    assert_eq!(next(&mut proxy.calls).await, add("b"));
    let third = accept_hello(&listener).await;
    assert_eq!(send_request(&third, &add_request("b"), &[netns.as_fd()]).await, "");
    assert_eq!(send_request(&third, &snapshot_sent(), &[]).await, "");
    assert_eq!(calls(&mut proxy.calls, 2).await, vec![add("b"), done(&["a"])]);
    assert_eq!(send_request(&third, &add_request("c"), &[netns.as_fd()]).await, "");
    assert_eq!(next(&mut proxy.calls).await, add("c"));
}

use super::*;

use pb::workload_request::Payload;

fn req(payload: Payload) -> Vec<u8> {
    pb::WorkloadRequest { payload: Some(payload) }.encode_to_vec()
}

fn add(uid: &str) -> Vec<u8> {
    let info = pb::WorkloadInfo {
        name: "n".to_string(),
        namespace: "ns".to_string(),
        service_account: "sa".to_string(),
    };
    req(Payload::Add(pb::AddWorkload {
        uid: uid.to_string(),
        workload_info: Some(info),
    }))
}

fn keep(uid: &str) -> Vec<u8> {
    req(Payload::Keep(pb::KeepWorkload { uid: uid.to_string() }))
}

fn del(uid: &str) -> Vec<u8> {
    req(Payload::Del(pb::DelWorkload { uid: uid.to_string() }))
}

fn snapshot_sent() -> Vec<u8> {
    req(Payload::SnapshotSent(pb::SnapshotSent {}))
}

fn uids(uids: &[&str]) -> BTreeSet<PodUid> {
    uids.iter().map(|u| PodUid::new(*u)).collect()
}

/// Handles a request with `fds` descriptors (fake ones) and acks it with success.
fn apply(session: &mut ProxySession, bytes: &[u8], fds: usize) -> Command<u8> {
    let command = session.handle(bytes, vec![7u8; fds]).unwrap();
    session.ack(Ok(())).unwrap();
    command
}

#[test]
fn valid_sequence_yields_commands_and_stale_pods() {
    // A proxy that held a, b and z reconnects; the snapshot mentions a (Add) and b (Keep).
    let mut session = ProxySession::new(uids(&["a", "b", "z"]));
    let info = WorkloadInfo {
        name: "n".to_string(),
        namespace: "ns".to_string(),
        service_account: "sa".to_string(),
    };
    assert_eq!(
        apply(&mut session, &add("a"), 1),
        Command::Add {
            uid: PodUid::new("a"),
            info,
            netns: 7
        }
    );
    assert_eq!(
        apply(&mut session, &keep("b"), 0),
        Command::Keep { uid: PodUid::new("b") }
    );
    assert_eq!(
        apply(&mut session, &snapshot_sent(), 0),
        Command::SnapshotDone {
            stale: vec![PodUid::new("z")]
        }
    );
    assert_eq!(session.held(), &uids(&["a", "b"]));
    assert!(matches!(apply(&mut session, &add("c"), 1), Command::Add { .. }));
    assert_eq!(
        apply(&mut session, &del("a"), 0),
        Command::Del { uid: PodUid::new("a") }
    );
    assert_eq!(session.held(), &uids(&["b", "c"]));
}

#[test]
fn failed_add_is_acked_with_its_error() {
    let mut session = ProxySession::new(BTreeSet::new());
    session.handle(&add("a"), vec![1u8]).unwrap();
    let bytes = session.ack(Err("bind failed".to_string())).unwrap();
    let response = pb::WorkloadResponse::decode(bytes.as_slice()).unwrap();
    let Some(pb::workload_response::Payload::Ack(ack)) = response.payload else {
        panic!("{response:?}")
    };
    assert_eq!(ack.error, "bind failed");
    // The caller owns retrying: the pod is held, so a later snapshot that omits it tears it down.
    assert_eq!(session.held(), &uids(&["a"]));
}

#[test]
fn success_ack_has_empty_error() {
    let mut session = ProxySession::new(BTreeSet::new());
    session.handle(&snapshot_sent(), Vec::<u8>::new()).unwrap();
    assert_eq!(session.ack(Ok(())).unwrap(), [0x0a, 0x00]);
}

#[test]
fn bad_requests_are_protocol_errors() {
    let no_info = req(Payload::Add(pb::AddWorkload {
        uid: "a".to_string(),
        workload_info: None,
    }));
    let empty = pb::WorkloadRequest { payload: None }.encode_to_vec();
    // (what, requests applied first with their fd counts, bad request, its fd count, expected error text)
    type Case<'a> = (&'a str, Vec<(Vec<u8>, usize)>, Vec<u8>, usize, &'a str);
    let cases: Vec<Case> = vec![
        (
            "garbage",
            vec![],
            vec![0xff, 0x00, 0x13],
            0,
            "cannot decode a workload request",
        ),
        ("no payload", vec![], empty, 0, "workload_request.payload: missing"),
        (
            "add without fd",
            vec![],
            add("a"),
            0,
            "add carried 0 file descriptors; it must carry 1",
        ),
        (
            "add with two fds",
            vec![],
            add("a"),
            2,
            "add carried 2 file descriptors; it must carry 1",
        ),
        (
            "keep with fd",
            vec![],
            keep("a"),
            1,
            "keep carried 1 file descriptors; it must carry 0",
        ),
        (
            "del with fd",
            vec![(snapshot_sent(), 0)],
            del("a"),
            1,
            "del carried 1 file descriptors; it must carry 0",
        ),
        (
            "snapshot sent with fd",
            vec![],
            snapshot_sent(),
            1,
            "snapshot_sent carried 1 file descriptors",
        ),
        (
            "keep after snapshot",
            vec![(snapshot_sent(), 0)],
            keep("a"),
            0,
            "keep after snapshot_sent",
        ),
        ("del before snapshot", vec![], del("a"), 0, "del before snapshot_sent"),
        (
            "snapshot twice",
            vec![(snapshot_sent(), 0)],
            snapshot_sent(),
            0,
            "snapshot_sent a second time",
        ),
        ("add without info", vec![], no_info, 1, "add.workload_info: missing"),
        ("add with empty uid", vec![], add(""), 1, "add.uid: empty"),
        ("keep with empty uid", vec![], keep(""), 0, "keep.uid: empty"),
        (
            "del with empty uid",
            vec![(snapshot_sent(), 0)],
            del(""),
            0,
            "del.uid: empty",
        ),
    ];
    for (what, before, bad, fds, want) in cases {
        let mut session = ProxySession::new(BTreeSet::new());
        for (bytes, n) in before {
            apply(&mut session, &bytes, n);
        }
        let err = session.handle(&bad, vec![0u8; fds]).expect_err(what);
        assert!(err.to_string().contains(want), "{what}: {err}");
    }
}

#[test]
fn requests_wait_for_the_ack() {
    let mut session = ProxySession::new(BTreeSet::new());
    session.handle(&add("a"), vec![1u8]).unwrap();
    let err = session.handle(&add("b"), vec![1u8]).unwrap_err();
    assert!(matches!(err, ZdsError::Unacked), "{err}");
    session.ack(Ok(())).unwrap();
    assert!(matches!(session.ack(Ok(())), Err(ZdsError::NothingToAck)));
}

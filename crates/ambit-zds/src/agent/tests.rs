use super::*;

/// Pods with a fake netns handle: `Some(n)` an Add with "netns n", `None` a Keep.
fn pods(entries: &[(&str, Option<u32>)]) -> Arc<PodSet<u32>> {
    let set = entries.iter().map(|(uid, netns)| {
        let info = WorkloadInfo {
            name: format!("{uid}-name"),
            namespace: "ns".to_string(),
            service_account: "sa".to_string(),
        };
        (PodUid::new(*uid), Pod { info, netns: *netns })
    });
    Arc::new(set.collect())
}

fn hello() -> Vec<u8> {
    pb::ZdsHello {
        version: pb::Version::V1 as i32,
    }
    .encode_to_vec()
}

fn ack(error: &str) -> Vec<u8> {
    let ack = pb::Ack {
        error: error.to_string(),
    };
    pb::WorkloadResponse {
        payload: Some(pb::workload_response::Payload::Ack(ack)),
    }
    .encode_to_vec()
}

/// Sends every due request, acking each with success, and returns (kind, uid, netns) of each in order.
fn drain(session: &mut AgentSession<u32>) -> Vec<(RequestKind, String, Option<u32>)> {
    let mut sent = Vec::new();
    while let Some(t) = session.poll_transmit() {
        assert!(
            session.poll_transmit().is_none(),
            "a second request went out before the ack"
        );
        let acked = session.handle(&ack("")).unwrap().unwrap();
        assert_eq!((acked.kind, &acked.uid, acked.error), (t.kind, &t.uid, None));
        sent.push((t.kind, t.uid.map(|u| u.to_string()).unwrap_or_default(), t.netns));
    }
    sent
}

fn greeted(wanted: Arc<PodSet<u32>>) -> AgentSession<u32> {
    let mut session = AgentSession::new(wanted);
    assert!(session.poll_transmit().is_none(), "nothing goes out before the hello");
    assert_eq!(session.handle(&hello()).unwrap(), None);
    session
}

#[test]
fn snapshot_replays_adds_and_keeps_then_snapshot_sent() {
    let mut session = greeted(pods(&[("a", Some(1)), ("b", Some(2)), ("c", None)]));
    let sent = drain(&mut session);
    let want = vec![
        (RequestKind::Add, "a".to_string(), Some(1)),
        (RequestKind::Add, "b".to_string(), Some(2)),
        (RequestKind::Keep, "c".to_string(), None),
        (RequestKind::SnapshotSent, String::new(), None),
    ];
    assert_eq!(sent, want);
}

#[test]
fn snapshot_messages_carry_istio_bytes() {
    let mut session = greeted(pods(&[("a", Some(1)), ("c", None)]));
    let add = session.poll_transmit().unwrap();
    let decoded = pb::WorkloadRequest::decode(add.bytes.as_slice()).unwrap();
    let Some(pb::workload_request::Payload::Add(add)) = decoded.payload else {
        panic!("{decoded:?}")
    };
    assert_eq!(add.uid, "a");
    assert_eq!(add.workload_info.unwrap().name, "a-name");
    session.handle(&ack("")).unwrap();
    let keep = session.poll_transmit().unwrap();
    // keep = field 5 of the request, uid = field 1 of KeepWorkload.
    assert_eq!(keep.bytes, [0x2a, 0x03, 0x0a, 0x01, b'c']);
}

#[test]
fn live_changes_become_adds_and_dels() {
    // (what, wanted after the snapshot of a:1 b:2 c:keep, requests expected)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, Option<u32>)>,
        Vec<(RequestKind, &'a str, Option<u32>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "nothing changed",
            vec![("a", Some(1)), ("b", Some(2)), ("c", None)],
            vec![],
        ),
        (
            "new pod",
            vec![("a", Some(1)), ("b", Some(2)), ("c", None), ("d", Some(4))],
            vec![(RequestKind::Add, "d", Some(4))],
        ),
        (
            "pods gone",
            vec![("b", Some(2))],
            vec![(RequestKind::Del, "a", None), (RequestKind::Del, "c", None)],
        ),
        (
            "sandbox re-created: new netns",
            vec![("a", Some(9)), ("b", Some(2)), ("c", None)],
            vec![(RequestKind::Add, "a", Some(9))],
        ),
        (
            "kept pod now has a netns",
            vec![("a", Some(1)), ("b", Some(2)), ("c", Some(3))],
            vec![(RequestKind::Add, "c", Some(3))],
        ),
        (
            "new pod without netns is not sent",
            vec![("a", Some(1)), ("b", Some(2)), ("c", None), ("e", None)],
            vec![],
        ),
    ];
    for (what, wanted, want) in cases {
        let mut session = greeted(pods(&[("a", Some(1)), ("b", Some(2)), ("c", None)]));
        drain(&mut session);
        session.update(pods(&wanted));
        let want: Vec<_> = want.into_iter().map(|(k, u, n)| (k, u.to_string(), n)).collect();
        assert_eq!(drain(&mut session), want, "{what}");
    }
}

#[test]
fn updates_during_the_snapshot_follow_it() {
    let mut session = greeted(pods(&[("a", Some(1)), ("b", Some(2))]));
    let first = session.poll_transmit().unwrap();
    assert_eq!(first.uid, Some(PodUid::new("a")));
    // b goes away and d arrives while a's Add awaits its ack: the snapshot as of the hello finishes first.
    session.update(pods(&[("a", Some(1)), ("d", Some(4))]));
    session.handle(&ack("")).unwrap();
    let sent = drain(&mut session);
    let want = vec![
        (RequestKind::Add, "b".to_string(), Some(2)),
        (RequestKind::SnapshotSent, String::new(), None),
        (RequestKind::Del, "b".to_string(), None),
        (RequestKind::Add, "d".to_string(), Some(4)),
    ];
    assert_eq!(sent, want);
}

#[test]
fn ack_errors_are_reported_and_the_session_goes_on() {
    let mut session = greeted(pods(&[("a", Some(1)), ("b", Some(2))]));
    session.poll_transmit().unwrap();
    let acked = session.handle(&ack("cannot start proxy")).unwrap().unwrap();
    assert_eq!(acked.uid, Some(PodUid::new("a")));
    assert_eq!(acked.error.as_deref(), Some("cannot start proxy"));
    assert_eq!(session.poll_transmit().unwrap().uid, Some(PodUid::new("b")));
}

#[test]
fn bad_messages_are_protocol_errors() {
    let response_without_payload = pb::WorkloadResponse { payload: None }.encode_to_vec();
    let old_version = pb::ZdsHello { version: 0 }.encode_to_vec();
    let future_version = pb::ZdsHello { version: 2 }.encode_to_vec();
    // (what, greet first?, send a request first?, message, expected error text)
    let cases: Vec<(&str, bool, bool, Vec<u8>, &str)> = vec![
        (
            "garbage hello",
            false,
            false,
            vec![0xff, 0xff, 0xff],
            "cannot decode a hello",
        ),
        ("ack instead of hello", false, false, ack(""), "cannot decode a hello"),
        ("version NOT_USED", false, false, old_version, "version 0"),
        ("unknown version", false, false, future_version, "version 2"),
        (
            "garbage response",
            true,
            true,
            vec![0x0a, 0x05, 0x01],
            "cannot decode a workload response",
        ),
        (
            "response without ack",
            true,
            true,
            response_without_payload,
            "workload_response.payload: missing",
        ),
        (
            "ack with nothing outstanding",
            true,
            false,
            ack(""),
            "no request was outstanding",
        ),
        ("second hello", true, true, hello(), "cannot decode a workload response"),
    ];
    for (what, greet, send, message, want) in cases {
        let mut session = AgentSession::new(pods(&[("a", Some(1))]));
        if greet {
            session.handle(&hello()).unwrap();
        }
        if send {
            session.poll_transmit().unwrap();
        }
        let err = session.handle(&message).expect_err(what);
        assert!(err.to_string().contains(want), "{what}: {err}");
    }
}

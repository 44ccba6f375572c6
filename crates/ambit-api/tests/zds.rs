//! Wire compatibility with Istio's ZDS messages (`istio.workload.zds`): hand-encoded bytes pin the field numbers and
//! wire types the istio-cni node agent and ztunnel use.

use ambit_api::istio::workload::zds::{
    Ack, AddWorkload, DelWorkload, KeepWorkload, SnapshotSent, Version, WorkloadInfo, WorkloadRequest,
    WorkloadResponse, ZdsHello, workload_request::Payload, workload_response,
};
use prost::Message;

/// `body` after a length-delimited key, with a one-byte length.
fn delimited(key: u8, body: &[u8]) -> Vec<u8> {
    let len = u8::try_from(body.len()).expect("short test bodies");
    [&[key, len][..], body].concat()
}

fn request(payload: Payload) -> WorkloadRequest {
    WorkloadRequest { payload: Some(payload) }
}

fn info() -> WorkloadInfo {
    WorkloadInfo {
        name: "n".to_string(),
        namespace: "s".to_string(),
        service_account: "a".to_string(),
    }
}

#[test]
fn messages_encode_with_istio_field_numbers() {
    // (what, message bytes, expected bytes): key = field << 3 | wire type (0 varint, 2 length-delimited).
    let info_bytes = [delimited(0x0a, b"n"), delimited(0x12, b"s"), delimited(0x1a, b"a")].concat();
    let add_bytes = [delimited(0x0a, b"u"), delimited(0x12, &info_bytes)].concat();
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "hello version=1 V1",
            ZdsHello {
                version: Version::V1.into(),
            }
            .encode_to_vec(),
            vec![0x08, 0x01],
        ),
        (
            "workload info name=1 namespace=2 sa=3",
            info().encode_to_vec(),
            info_bytes.clone(),
        ),
        (
            "add uid=1 workload_info=2",
            AddWorkload {
                uid: "u".to_string(),
                workload_info: Some(info()),
            }
            .encode_to_vec(),
            add_bytes.clone(),
        ),
        (
            "keep uid=1",
            KeepWorkload { uid: "u".to_string() }.encode_to_vec(),
            delimited(0x0a, b"u"),
        ),
        (
            "del uid=2",
            DelWorkload { uid: "u".to_string() }.encode_to_vec(),
            delimited(0x12, b"u"),
        ),
        ("snapshot sent is empty", SnapshotSent {}.encode_to_vec(), vec![]),
        (
            "ack error=1",
            Ack { error: "e".to_string() }.encode_to_vec(),
            delimited(0x0a, b"e"),
        ),
        (
            "request add=1",
            request(Payload::Add(AddWorkload {
                uid: "u".to_string(),
                workload_info: Some(info()),
            }))
            .encode_to_vec(),
            delimited(0x0a, &add_bytes),
        ),
        (
            "request del=2",
            request(Payload::Del(DelWorkload { uid: "u".to_string() })).encode_to_vec(),
            delimited(0x12, &delimited(0x12, b"u")),
        ),
        (
            "request snapshot_sent=3",
            request(Payload::SnapshotSent(SnapshotSent {})).encode_to_vec(),
            vec![0x1a, 0x00],
        ),
        (
            "request keep=5",
            request(Payload::Keep(KeepWorkload { uid: "u".to_string() })).encode_to_vec(),
            delimited(0x2a, &delimited(0x0a, b"u")),
        ),
        (
            "response ack=1",
            WorkloadResponse {
                payload: Some(workload_response::Payload::Ack(Ack::default())),
            }
            .encode_to_vec(),
            vec![0x0a, 0x00],
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn requests_decode_from_istio_bytes() {
    let add = [delimited(0x0a, b"u"), delimited(0x12, &delimited(0x0a, b"n"))].concat();
    let cases: Vec<(&str, Vec<u8>, Payload)> = vec![
        (
            "add",
            delimited(0x0a, &add),
            Payload::Add(AddWorkload {
                uid: "u".to_string(),
                workload_info: Some(WorkloadInfo {
                    name: "n".to_string(),
                    ..WorkloadInfo::default()
                }),
            }),
        ),
        (
            "del",
            delimited(0x12, &delimited(0x12, b"u")),
            Payload::Del(DelWorkload { uid: "u".to_string() }),
        ),
        (
            "snapshot sent",
            vec![0x1a, 0x00],
            Payload::SnapshotSent(SnapshotSent {}),
        ),
        (
            "keep",
            delimited(0x2a, &delimited(0x0a, b"u")),
            Payload::Keep(KeepWorkload { uid: "u".to_string() }),
        ),
    ];
    for (what, bytes, want) in cases {
        let got = WorkloadRequest::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got.payload, Some(want), "{what}");
    }
}

#[test]
fn reserved_trust_domain_is_skipped() {
    // Field 4 (the deprecated trust_domain) from an older agent is an unknown field, not misread into another one.
    let bytes = [delimited(0x0a, b"n"), delimited(0x22, b"cluster.local")].concat();
    let got = WorkloadInfo::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        got,
        WorkloadInfo {
            name: "n".to_string(),
            ..WorkloadInfo::default()
        }
    );
}

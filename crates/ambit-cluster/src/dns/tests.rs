use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use super::*;

const TYPE_AAAA: u16 = 28;
const TYPE_MX: u16 = 15;
const CLASS_CH: u16 = 3;

const ECHO: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const WEB: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 244, 1, 1),
    Ipv4Addr::new(10, 244, 1, 2),
    Ipv4Addr::new(10, 244, 2, 3),
];

fn table() -> DnsTable {
    let mut table = DnsTable::new("cluster.local");
    table.insert("echo.default.svc.cluster.local", vec![ECHO]);
    table.insert("web.default.svc.cluster.local", WEB.to_vec());
    table.insert("empty.default.svc.cluster.local", Vec::new());
    table
}

/// A query message: the header (RD set unless `flags` says otherwise), one question, nothing else.
fn query_labels(labels: &[&[u8]], qtype: u16, qclass: u16, id: u16, flags: u8) -> Vec<u8> {
    let mut msg = Vec::new();
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[flags, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in labels {
        msg.push(u8::try_from(label.len()).unwrap());
        msg.extend_from_slice(label);
    }
    msg.push(0);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&qclass.to_be_bytes());
    msg
}

fn query(name: &str, qtype: u16, id: u16) -> Vec<u8> {
    let labels: Vec<&[u8]> = name.split('.').filter(|l| !l.is_empty()).map(str::as_bytes).collect();
    query_labels(&labels, qtype, CLASS_IN, id, FLAG_RD)
}

/// Appends an OPT record advertising `payload` bytes with EDNS `version`.
fn with_opt(mut msg: Vec<u8>, payload: u16, version: u8) -> Vec<u8> {
    let arcount = u16::from_be_bytes([msg[10], msg[11]]) + 1;
    msg[10..12].copy_from_slice(&arcount.to_be_bytes());
    msg.push(0);
    msg.extend_from_slice(&TYPE_OPT.to_be_bytes());
    msg.extend_from_slice(&payload.to_be_bytes());
    msg.extend_from_slice(&[0, version, 0x80, 0, 0, 0]);
    msg
}

/// A decoded response; answers must be A records owned by a pointer to the question, as the server writes them.
#[derive(Debug)]
struct Reply {
    id: u16,
    flags: u8,
    rcode: u8,
    counts: [u16; 4],
    question: Vec<u8>,
    answers: Vec<Ipv4Addr>,
    additional: Vec<u8>,
}

impl Reply {
    fn decode(msg: &[u8]) -> Self {
        assert!(msg.len() >= 12, "short response {msg:?}");
        let word = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
        let counts = [word(4), word(6), word(8), word(10)];
        let mut pos = 12;
        if counts[0] == 1 {
            while msg[pos] != 0 {
                pos += 1 + usize::from(msg[pos]);
            }
            pos += 5;
        }
        let question = msg[12..pos].to_vec();
        let mut answers = Vec::new();
        for _ in 0..counts[1] {
            assert_eq!(msg[pos..pos + 12], [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
            answers.push(Ipv4Addr::new(
                msg[pos + 12],
                msg[pos + 13],
                msg[pos + 14],
                msg[pos + 15],
            ));
            pos += 16;
        }
        Self {
            id: word(0),
            flags: msg[2],
            rcode: msg[3] & 0x0F,
            counts,
            question,
            answers,
            additional: msg[pos..].to_vec(),
        }
    }

    fn aa(&self) -> bool {
        self.flags & FLAG_AA != 0
    }

    fn tc(&self) -> bool {
        self.flags & FLAG_TC != 0
    }
}

fn ask(msg: &[u8], table: &DnsTable) -> Reply {
    Reply::decode(&answer(msg, table, PLAIN_UDP_MAX_LEN).expect("a response"))
}

// === DnsTable ===

#[test]
fn lookup_normalizes_and_knows_ancestors() {
    let mut table = DnsTable::new("Cluster.Local.");
    assert_eq!(table.cluster_domain(), "cluster.local");
    table.insert("Echo.Default.SVC.cluster.local.", vec![ECHO, ECHO]);
    table.insert("echo.default.svc.cluster.local", vec![WEB[0], ECHO]);
    let cases = [
        ("echo.default.svc.cluster.local", Lookup::Found(vec![ECHO, WEB[0]])),
        ("ECHO.DEFAULT.svc.cluster.local.", Lookup::Found(vec![ECHO, WEB[0]])),
        ("default.svc.cluster.local", Lookup::Found(vec![])),
        ("svc.cluster.local", Lookup::Found(vec![])),
        ("cluster.local", Lookup::Found(vec![])),
        ("cluster.local.", Lookup::Found(vec![])),
        ("other.default.svc.cluster.local", Lookup::NotFound),
        ("x.echo.default.svc.cluster.local", Lookup::NotFound),
        (
            "10-244-1-5.default.pod.cluster.local",
            Lookup::Found(vec![Ipv4Addr::new(10, 244, 1, 5)]),
        ),
        ("10-244-1.default.pod.cluster.local", Lookup::NotFound),
        ("10-244-1-5-6.default.pod.cluster.local", Lookup::NotFound),
        ("10-244-1-256.default.pod.cluster.local", Lookup::NotFound),
        ("10-244-+1-5.default.pod.cluster.local", Lookup::NotFound),
        ("default.pod.cluster.local", Lookup::Found(vec![])),
        ("pod.cluster.local", Lookup::Found(vec![])),
        ("example.com", Lookup::Refused),
        ("evilcluster.local", Lookup::Refused),
        ("local", Lookup::Refused),
        ("", Lookup::Refused),
    ];
    for (name, expected) in cases {
        assert_eq!(table.lookup(name), expected, "{name}");
    }
}

#[test]
fn insert_ignores_names_outside_the_domain() {
    let mut table = DnsTable::new("cluster.local");
    table.insert("echo.example.com", vec![ECHO]);
    table.insert("a..cluster.local", vec![ECHO]);
    table.insert("", vec![ECHO]);
    assert_eq!(table, DnsTable::new("cluster.local"));
}

#[test]
fn default_table_refuses_everything() {
    let table = DnsTable::default();
    assert_eq!(table.lookup("cluster.local"), Lookup::Refused);
    assert_eq!(table.lookup(""), Lookup::Refused);
    assert_eq!(
        ask(&query("echo.default.svc.cluster.local", TYPE_A, 1), &table).rcode,
        5
    );
}

// === answer ===

#[test]
fn a_hit_has_the_exact_answer_bytes() {
    let msg = query("echo.default.svc.cluster.local", TYPE_A, 0x1234);
    let response = answer(&msg, &table(), PLAIN_UDP_MAX_LEN).unwrap();
    // Header: id, QR|AA|RD, RA=0 NOERROR, QD=1 AN=1 NS=0 AR=0.
    assert_eq!(response[..12], [0x12, 0x34, 0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 0]);
    // The question, echoed.
    assert_eq!(response[12..msg.len()], msg[12..]);
    // Pointer to the question name, type A, class IN, TTL 5, rdlength 4, address.
    assert_eq!(
        response[msg.len()..],
        [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 20]
    );
}

#[test]
fn multiple_addresses_rotate_by_id() {
    let table = table();
    for (id, expected) in [
        (0, [WEB[0], WEB[1], WEB[2]]),
        (1, [WEB[1], WEB[2], WEB[0]]),
        (2, [WEB[2], WEB[0], WEB[1]]),
        (5, [WEB[2], WEB[0], WEB[1]]),
        (0xFFFF, [WEB[0], WEB[1], WEB[2]]),
    ] {
        let reply = ask(&query("web.default.svc.cluster.local", TYPE_A, id), &table);
        assert_eq!(reply.id, id);
        assert_eq!(reply.answers, expected, "id {id}");
    }
}

#[test]
fn rcodes_and_flags() {
    struct Case {
        labels: &'static [&'static [u8]],
        qtype: u16,
        qclass: u16,
        rcode: u8,
        aa: bool,
        answers: &'static [Ipv4Addr],
    }
    const fn case(
        labels: &'static [&'static [u8]],
        qtype: u16,
        rcode: u8,
        aa: bool,
        answers: &'static [Ipv4Addr],
    ) -> Case {
        Case {
            labels,
            qtype,
            qclass: CLASS_IN,
            rcode,
            aa,
            answers,
        }
    }
    const ECHO_NAME: &[&[u8]] = &[b"echo", b"default", b"svc", b"cluster", b"local"];
    let cases = [
        case(ECHO_NAME, TYPE_A, 0, true, &[ECHO]),
        case(ECHO_NAME, TYPE_ANY, 0, true, &[ECHO]),
        // NODATA: the name exists.
        case(ECHO_NAME, TYPE_AAAA, 0, true, &[]),
        case(ECHO_NAME, TYPE_MX, 0, true, &[]),
        case(
            &[b"empty", b"default", b"svc", b"cluster", b"local"],
            TYPE_A,
            0,
            true,
            &[],
        ),
        case(&[b"default", b"svc", b"cluster", b"local"], TYPE_A, 0, true, &[]),
        case(&[b"cluster", b"local"], TYPE_A, 0, true, &[]),
        // Case-insensitive.
        case(
            &[b"ECHO", b"Default", b"svc", b"CLUSTER", b"local"],
            TYPE_A,
            0,
            true,
            &[ECHO],
        ),
        // NXDOMAIN inside the domain, as glibc's search list produces.
        case(
            &[b"missing", b"default", b"svc", b"cluster", b"local"],
            TYPE_A,
            3,
            true,
            &[],
        ),
        case(
            &[b"echo", b"default", b"default", b"svc", b"cluster", b"local"],
            TYPE_A,
            3,
            true,
            &[],
        ),
        case(
            &[b"missing", b"default", b"svc", b"cluster", b"local"],
            TYPE_AAAA,
            3,
            true,
            &[],
        ),
        // A dot inside a label is not a label separator.
        case(&[b"echo.default", b"svc", b"cluster", b"local"], TYPE_A, 3, true, &[]),
        // Pod names.
        case(
            &[b"10-244-1-5", b"default", b"pod", b"cluster", b"local"],
            TYPE_A,
            0,
            true,
            &[POD],
        ),
        case(
            &[b"not-an-ip", b"default", b"pod", b"cluster", b"local"],
            TYPE_A,
            3,
            true,
            &[],
        ),
        // Outside the domain.
        case(&[b"example", b"com"], TYPE_A, 5, false, &[]),
        case(&[b"evilcluster", b"local"], TYPE_A, 5, false, &[]),
        case(&[], TYPE_A, 5, false, &[]),
        // No zone transfers.
        case(&[b"cluster", b"local"], TYPE_AXFR, 5, false, &[]),
        Case {
            qclass: CLASS_CH,
            ..case(ECHO_NAME, TYPE_A, 5, false, &[])
        },
        Case {
            qclass: CLASS_ANY,
            ..case(ECHO_NAME, TYPE_A, 0, true, &[ECHO])
        },
    ];
    let table = table();
    for (index, case) in cases.iter().enumerate() {
        let id = u16::try_from(index).unwrap() * 3;
        let msg = query_labels(case.labels, case.qtype, case.qclass, id, FLAG_RD);
        let reply = ask(&msg, &table);
        let what = format!("case {index}: {reply:?}");
        assert_eq!(reply.id, id, "{what}");
        assert_eq!(reply.rcode, case.rcode, "{what}");
        assert_eq!(reply.aa(), case.aa, "{what}");
        assert!(!reply.tc(), "{what}");
        assert_eq!(reply.flags & FLAG_QR, FLAG_QR, "{what}");
        assert_eq!(reply.flags & FLAG_RD, FLAG_RD, "{what}");
        assert_eq!(reply.flags & FLAG_OPCODE, 0, "{what}");
        assert_eq!(
            answer(&msg, &table, PLAIN_UDP_MAX_LEN).unwrap()[3] & 0x80,
            0,
            "RA: {what}"
        );
        assert_eq!(reply.question, msg[12..], "{what}");
        assert_eq!(reply.answers, case.answers, "{what}");
        assert_eq!(
            reply.counts,
            [1, u16::try_from(case.answers.len()).unwrap(), 0, 0],
            "{what}"
        );
        assert!(reply.additional.is_empty(), "{what}");
    }
}

#[test]
fn rd_is_copied() {
    let msg = query_labels(
        &[b"echo", b"default", b"svc", b"cluster", b"local"],
        TYPE_A,
        CLASS_IN,
        7,
        0,
    );
    let reply = ask(&msg, &table());
    assert_eq!(reply.flags, FLAG_QR | FLAG_AA);
    assert_eq!(reply.answers, [ECHO]);
}

#[test]
fn two_questions_are_formerr() {
    let mut msg = query("echo.default.svc.cluster.local", TYPE_A, 9);
    msg[5] = 2;
    let question = msg[12..].to_vec();
    msg.extend_from_slice(&question);
    let reply = ask(&msg, &table());
    assert_eq!((reply.id, reply.rcode, reply.counts), (9, 1, [0, 0, 0, 0]));
    msg[5] = 0;
    assert_eq!(ask(&msg, &table()).rcode, 1);
}

#[test]
fn malformed_input_is_ignored_or_formerr() {
    let table = table();
    let valid = query("echo.default.svc.cluster.local", TYPE_A, 0xABCD);
    // Too short for an id.
    assert_eq!(answer(&[], &table, 512), None);
    assert_eq!(answer(&[0xAB], &table, 512), None);
    // An id but no full header: FORMERR, header only.
    for len in 2..12 {
        let reply = ask(&valid[..len], &table);
        assert_eq!(
            (reply.id, reply.rcode, reply.counts),
            (0xABCD, 1, [0, 0, 0, 0]),
            "len {len}"
        );
    }
    // Cut anywhere inside the question.
    for len in 12..valid.len() {
        let reply = ask(&valid[..len], &table);
        assert_eq!((reply.rcode, reply.counts[0]), (1, 0), "len {len}");
    }
    // Compression pointer in the question.
    let mut pointer = valid[..12].to_vec();
    pointer.extend_from_slice(&[4, b'e', b'c', b'h', b'o', 0xC0, 0x0C, 0, 1, 0, 1]);
    assert_eq!(ask(&pointer, &table).rcode, 1);
    // Reserved label type.
    let mut reserved = valid[..12].to_vec();
    reserved.extend_from_slice(&[0x41, 0, 0, 1, 0, 1]);
    assert_eq!(ask(&reserved, &table).rcode, 1);
    // A label of 64 bytes.
    let long_label = [b'a'; 64];
    assert_eq!(
        ask(&query_labels(&[&long_label], TYPE_A, CLASS_IN, 1, 0), &table).rcode,
        1
    );
    let label = [b'a'; 63];
    assert_eq!(ask(&query_labels(&[&label], TYPE_A, CLASS_IN, 1, 0), &table).rcode, 5);
    // Names longer than 255 bytes: four 63-byte labels and a suffix make 4 * 64 + 1 = 257.
    let too_long = query_labels(&[&label, &label, &label, &label], TYPE_A, CLASS_IN, 1, 0);
    assert_eq!(ask(&too_long, &table).rcode, 1);
    // 3 * 64 + 62 + 1 = 255 is still fine.
    let at_limit = query_labels(&[&label, &label, &label, &label[..61]], TYPE_A, CLASS_IN, 1, 0);
    assert_eq!(ask(&at_limit, &table).rcode, 5);
    // An additional record that runs past the end.
    let mut cut_record = with_opt(valid.clone(), 1232, 0);
    cut_record.pop();
    assert_eq!(ask(&cut_record, &table).rcode, 1);
    // Two OPT records.
    let two_opts = with_opt(with_opt(valid.clone(), 1232, 0), 1232, 0);
    assert_eq!(ask(&two_opts, &table).rcode, 1);
}

#[test]
fn other_opcodes_are_notimp() {
    let mut msg = query("echo.default.svc.cluster.local", TYPE_A, 77);
    msg[2] = (2 << 3) | FLAG_RD;
    let reply = ask(&msg, &table());
    assert_eq!(reply.id, 77);
    assert_eq!(reply.rcode, 4);
    assert_eq!(reply.flags, FLAG_QR | (2 << 3) | FLAG_RD);
    assert_eq!(reply.counts, [0, 0, 0, 0]);
}

#[test]
fn responses_are_not_answered() {
    let table = table();
    let msg = query("echo.default.svc.cluster.local", TYPE_A, 3);
    let response = answer(&msg, &table, 512).unwrap();
    assert_eq!(answer(&response, &table, 512), None);
    assert_eq!(answer(&[0, 3, 0x80], &table, 512), None);
}

#[test]
fn large_answers_are_truncated() {
    let mut table = table();
    let many: Vec<Ipv4Addr> = (1..=40).map(|i| Ipv4Addr::new(10, 244, 3, i)).collect();
    table.insert("many.default.svc.cluster.local", many.clone());
    let msg = query("many.default.svc.cluster.local", TYPE_A, 40);
    assert_eq!(udp_max_len(&msg), PLAIN_UDP_MAX_LEN);

    let response = answer(&msg, &table, udp_max_len(&msg)).unwrap();
    assert!(response.len() <= PLAIN_UDP_MAX_LEN);
    let reply = Reply::decode(&response);
    assert!(reply.tc() && reply.aa());
    assert_eq!((reply.rcode, reply.counts), (0, [1, 0, 0, 0]));
    assert_eq!(reply.question, msg[12..]);

    // A max_len below 512 counts as 512.
    assert_eq!(answer(&msg, &table, 0).unwrap(), response);

    // Over TCP all 40 fit, rotated by the id.
    let reply = Reply::decode(&answer(&msg, &table, TCP_MAX_LEN).unwrap());
    assert!(!reply.tc());
    assert_eq!(reply.answers, many);

    // An EDNS client with a large buffer gets them over UDP too.
    let edns = with_opt(msg.clone(), 4096, 0);
    assert_eq!(udp_max_len(&edns), EDNS_UDP_MAX_LEN);
    let response = answer(&edns, &table, udp_max_len(&edns)).unwrap();
    let reply = Reply::decode(&response);
    assert!(!reply.tc());
    assert_eq!(reply.answers.len(), 40);
    assert_eq!(reply.counts[3], 1);

    // A small EDNS buffer counts as 512.
    let small = with_opt(msg, 100, 0);
    assert_eq!(udp_max_len(&small), PLAIN_UDP_MAX_LEN);
    assert!(Reply::decode(&answer(&small, &table, udp_max_len(&small)).unwrap()).tc());
}

#[test]
fn edns_queries_get_an_opt_record() {
    let table = table();
    let msg = with_opt(query("echo.default.svc.cluster.local", TYPE_A, 5), 1400, 0);
    let reply = ask(&msg, &table);
    assert_eq!((reply.rcode, reply.counts), (0, [1, 1, 0, 1]));
    assert_eq!(reply.answers, [ECHO]);
    // Root, OPT, payload 1232, extended rcode 0, version 0, no flags, no rdata.
    assert_eq!(reply.additional, [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);

    // Version 1: BADVERS (16) = header rcode 0 and extended rcode 1.
    let msg = with_opt(query("echo.default.svc.cluster.local", TYPE_A, 6), 1400, 1);
    let reply = ask(&msg, &table);
    assert_eq!((reply.rcode, reply.counts), (0, [1, 0, 0, 1]));
    assert_eq!(reply.additional, [0, 0, 41, 0x04, 0xD0, 1, 0, 0, 0, 0, 0]);

    // An OPT-typed record in the answer section is skipped, not taken for EDNS.
    let mut msg = query("echo.default.svc.cluster.local", TYPE_A, 8);
    msg[7] = 1;
    msg.extend_from_slice(&[0xC0, 0x0C, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(udp_max_len(&msg), PLAIN_UDP_MAX_LEN);
    assert_eq!(ask(&msg, &table).counts, [1, 1, 0, 0]);
}

/// A deterministic stand-in for a property test: random and mutated messages never panic, and every response is
/// a well-formed header for the same id.
#[test]
fn answer_never_panics() {
    let table = table();
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds = [
        query("echo.default.svc.cluster.local", TYPE_A, 1),
        query("web.default.svc.cluster.local", TYPE_ANY, 2),
        with_opt(query("x.cluster.local", TYPE_AAAA, 3), 1232, 0),
    ];
    for round in 0..50_000 {
        let msg: Vec<u8> = if round % 2 == 0 {
            let len = usize::try_from(next() % 80).unwrap();
            (0..len).map(|_| next().to_le_bytes()[0]).collect()
        } else {
            let mut msg = seeds[round % seeds.len()].clone();
            for _ in 0..=next() % 3 {
                let at = usize::try_from(next()).unwrap() % msg.len();
                msg[at] = next().to_le_bytes()[0];
            }
            msg.truncate(usize::try_from(next()).unwrap() % (msg.len() + 8));
            msg
        };
        let max_len = udp_max_len(&msg);
        if let Some(response) = answer(&msg, &table, max_len) {
            assert!(response.len() >= 12 && response.len() <= max_len, "{msg:?}");
            assert_eq!(response[..2], msg[..2]);
            assert_ne!(response[2] & FLAG_QR, 0);
        } else {
            assert!(msg.len() < 2 || msg[2] & FLAG_QR != 0, "{msg:?}");
        }
    }
}

// === servers ===

async fn udp_ask(client: &UdpSocket, server: std::net::SocketAddr, msg: &[u8]) -> Reply {
    client.send_to(msg, server).await.unwrap();
    let mut buf = [0u8; 1500];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("udp answer in time")
        .unwrap();
    assert_eq!(from, server);
    Reply::decode(&buf[..len])
}

async fn tcp_send(stream: &mut TcpStream, msg: &[u8]) {
    let mut frame = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(msg);
    stream.write_all(&frame).await.unwrap();
}

async fn tcp_read(stream: &mut TcpStream) -> Reply {
    let read = async {
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await.unwrap();
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut msg).await.unwrap();
        msg
    };
    let msg = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("tcp answer in time");
    Reply::decode(&msg)
}

#[tokio::test]
async fn serves_udp_and_tcp_and_follows_the_table() {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let (sender, receiver) = watch::channel(Arc::new(table()));
    let udp_server = tokio::spawn(serve_udp(udp, receiver.clone()));
    let tcp_server = tokio::spawn(serve_tcp(tcp, receiver));

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reply = udp_ask(&client, udp_addr, &query("echo.default.svc.cluster.local", TYPE_A, 11)).await;
    assert_eq!(
        (reply.id, reply.rcode, reply.answers.as_slice()),
        (11, 0, [ECHO].as_slice())
    );
    // Garbage gets no answer and does not stop the server.
    client.send_to(&[1], udp_addr).await.unwrap();
    let reply = udp_ask(&client, udp_addr, &query("example.com", TYPE_A, 12)).await;
    assert_eq!((reply.id, reply.rcode), (12, 5));

    // Several queries on one connection, the second sent before the first answer is read.
    let mut stream = TcpStream::connect(tcp_addr).await.unwrap();
    tcp_send(&mut stream, &query("web.default.svc.cluster.local", TYPE_A, 1)).await;
    tcp_send(&mut stream, &query("nope.default.svc.cluster.local", TYPE_A, 2)).await;
    let reply = tcp_read(&mut stream).await;
    assert_eq!(
        (reply.id, reply.rcode, reply.answers),
        (1, 0, vec![WEB[1], WEB[2], WEB[0]])
    );
    let reply = tcp_read(&mut stream).await;
    assert_eq!((reply.id, reply.rcode, reply.aa()), (2, 3, true));

    // Swap the table: both transports see the new one.
    let mut next = DnsTable::new("cluster.local");
    let moved = Ipv4Addr::new(10, 96, 0, 99);
    next.insert("echo.default.svc.cluster.local", vec![moved]);
    sender.send(Arc::new(next)).unwrap();
    let reply = udp_ask(&client, udp_addr, &query("echo.default.svc.cluster.local", TYPE_A, 13)).await;
    assert_eq!(reply.answers, [moved]);
    tcp_send(&mut stream, &query("echo.default.svc.cluster.local", TYPE_A, 3)).await;
    assert_eq!(tcp_read(&mut stream).await.answers, [moved]);
    tcp_send(&mut stream, &query("web.default.svc.cluster.local", TYPE_A, 4)).await;
    assert_eq!(tcp_read(&mut stream).await.rcode, 3);

    // An oversized query closes the connection.
    stream.write_all(&[0xFF, 0xFF]).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    // Dropping the sender stops both servers and closes open connections.
    let mut open = TcpStream::connect(tcp_addr).await.unwrap();
    tcp_send(&mut open, &query("echo.default.svc.cluster.local", TYPE_A, 5)).await;
    assert_eq!(tcp_read(&mut open).await.answers, [moved]);
    drop(sender);
    tokio::time::timeout(Duration::from_secs(5), udp_server)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), tcp_server)
        .await
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}

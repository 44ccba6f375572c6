//! The guard's metrics (opened, closed, failed, bytes, sockets gauge) and its access-log events.

use std::time::Duration;

use tracing::Level;

use super::*;
use crate::test_util::{DESTINATION_ID, SOURCE_ID, bare_context, capture, context};

#[derive(Debug, thiserror::Error)]
#[error("denied by policy allow-nothing")]
struct Denied;

#[derive(Debug, thiserror::Error)]
#[error("upstream connect to 10.244.2.7:8080 failed")]
struct ConnectFailed(#[source] std::io::Error);

fn addrs() -> ConnectionAddrs {
    ConnectionAddrs {
        src: "10.244.1.5:40000".parse().unwrap(),
        dst: "10.244.2.7:15008".parse().unwrap(),
        hbone: Some("10.244.2.7:8080".to_string()),
    }
}

fn metrics() -> Arc<TcpMetrics> {
    Arc::new(TcpMetrics::default())
}

fn labels(reporter: Reporter, flags: ResponseFlags) -> TcpLabels {
    TcpLabels::from(&context(reporter)).with_response_flags(flags)
}

#[test]
fn finish_counts_open_close_and_bytes() {
    let m = metrics();
    let conn = ConnectionResult::open(&m, &context(Reporter::Destination), addrs());
    let ok = labels(Reporter::Destination, ResponseFlags::None);
    assert_eq!(
        (m.opened(&ok), m.closed(&ok), m.sockets_open(Reporter::Destination)),
        (1, 0, 1)
    );
    conn.record_sent(100);
    conn.record_received(7);
    conn.record_received(3);
    assert_eq!(
        (m.sent_bytes(&ok), m.received_bytes(&ok)),
        (100, 10),
        "bytes are counted live"
    );
    conn.finish();
    assert_eq!((m.opened(&ok), m.closed(&ok), m.failed(&ok)), (1, 1, 0));
    assert_eq!(m.sockets_open(Reporter::Destination), 0);
}

#[test]
fn connections_with_the_same_labels_share_the_series_of_the_families() {
    let m = metrics();
    let ok = labels(Reporter::Destination, ResponseFlags::None);
    for bytes in [5, 7] {
        let conn = ConnectionResult::open(&m, &context(Reporter::Destination), addrs());
        conn.record_sent(bytes);
        conn.finish();
    }
    // Read back through the families: the counters resolved once are theirs.
    assert_eq!((m.opened(&ok), m.closed(&ok), m.sent_bytes(&ok)), (2, 2, 12));
    assert!(Arc::ptr_eq(&m.series(&ok), &m.series(&ok)));
    let other = labels(Reporter::Source, ResponseFlags::None);
    assert!(!Arc::ptr_eq(&m.series(&ok), &m.series(&other)));
    assert_eq!(m.opened(&other), 0, "resolving a series counts nothing");
}

#[test]
fn drop_without_finish_completes_as_a_failure() {
    let m = metrics();
    let (_, events) = capture(|| {
        let conn = ConnectionResult::open(&m, &context(Reporter::Source), addrs());
        conn.record_sent(5);
        assert_eq!(m.sockets_open(Reporter::Source), 1);
    });
    let ok = labels(Reporter::Source, ResponseFlags::None);
    assert_eq!((m.opened(&ok), m.closed(&ok), m.failed(&ok)), (1, 1, 1));
    assert_eq!(m.sockets_open(Reporter::Source), 0);
    let complete = events.iter().find(|e| e.message == "connection complete").unwrap();
    assert_eq!(complete.level, Level::ERROR);
    assert_eq!(complete.field("error"), DROPPED_ERROR);
}

#[test]
fn denied_connection_counts_failed_with_deny() {
    let m = metrics();
    let mut conn = ConnectionResult::open(&m, &context(Reporter::Destination), addrs());
    conn.fail(&Denied, ResponseFlags::Deny);
    assert!(conn.is_failed());
    conn.finish();
    let (ok, deny) = (
        labels(Reporter::Destination, ResponseFlags::None),
        labels(Reporter::Destination, ResponseFlags::Deny),
    );
    assert_eq!(
        (m.opened(&ok), m.closed(&ok), m.failed(&ok)),
        (1, 0, 0),
        "opened before the flags were known"
    );
    assert_eq!((m.closed(&deny), m.failed(&deny)), (1, 1));
    assert_eq!(m.sockets_open(Reporter::Destination), 0);
}

#[test]
fn dropping_after_an_error_keeps_that_error_and_flags() {
    let m = metrics();
    let (_, events) = capture(|| {
        let mut conn = ConnectionResult::open(&m, &context(Reporter::Source), addrs());
        conn.set_response_flags(ResponseFlags::Connect);
        conn.record_error(&ConnectFailed(std::io::ErrorKind::ConnectionRefused.into()));
        conn.record_error(&Denied);
    });
    assert_eq!(m.failed(&labels(Reporter::Source, ResponseFlags::Connect)), 1);
    let complete = events.iter().find(|e| e.message == "connection complete").unwrap();
    assert_eq!(
        complete.field("error"),
        "upstream connect to 10.244.2.7:8080 failed: connection refused"
    );
}

#[test]
fn byte_metrics_are_flipped_for_the_source_reporter_and_logs_are_not() {
    for reporter in [Reporter::Source, Reporter::Destination, Reporter::Waypoint] {
        let m = metrics();
        let (_, events) = capture(|| {
            let conn = ConnectionResult::open(&m, &context(reporter), addrs());
            conn.record_sent(10);
            conn.record_received(3);
            conn.finish();
        });
        let l = labels(reporter, ResponseFlags::None);
        let (metric_sent, metric_received) = (m.sent_bytes(&l), m.received_bytes(&l));
        match reporter {
            // The client's sent bytes are the request: Istio counts them as received.
            Reporter::Source => assert_eq!((metric_sent, metric_received), (3, 10)),
            Reporter::Destination | Reporter::Waypoint => assert_eq!((metric_sent, metric_received), (10, 3)),
        }
        let complete = events.iter().find(|e| e.message == "connection complete").unwrap();
        assert_eq!(
            (complete.field("bytes_sent"), complete.field("bytes_recv")),
            ("10", "3"),
            "{reporter}"
        );
    }
}

#[test]
fn access_log_of_a_successful_connection() {
    let m = metrics();
    let start = Instant::now().checked_sub(Duration::from_millis(1500)).unwrap();
    let (_, events) = capture(|| {
        let conn = ConnectionResult::open_at(&m, &context(Reporter::Source), addrs(), start);
        conn.record_sent(42);
        conn.record_received(9);
        conn.finish();
    });
    assert_eq!(events.len(), 2, "{events:#?}");
    let (opened, complete) = (&events[0], &events[1]);
    assert_eq!(
        (opened.message.as_str(), opened.level, opened.target.as_str()),
        ("connection opened", Level::DEBUG, "access")
    );
    assert_eq!(
        (complete.message.as_str(), complete.level, complete.target.as_str()),
        ("connection complete", Level::INFO, "access")
    );
    let peers = [
        ("src.addr", "10.244.1.5:40000"),
        ("src.workload", "client-7c9f-abcde"),
        ("src.namespace", "a"),
        ("src.identity", SOURCE_ID),
        ("src.cluster", "Kubernetes"),
        ("dst.addr", "10.244.2.7:15008"),
        ("dst.hbone_addr", "10.244.2.7:8080"),
        ("dst.service", "echo.demo.svc.cluster.local"),
        ("dst.workload", "echo"),
        ("dst.namespace", "demo"),
        ("dst.identity", DESTINATION_ID),
        ("dst.cluster", "Kubernetes"),
        ("direction", "outbound"),
    ];
    for (name, want) in peers {
        assert_eq!(opened.field(name), want, "opened {name}");
        assert_eq!(complete.field(name), want, "complete {name}");
    }
    assert_eq!(
        (complete.field("bytes_sent"), complete.field("bytes_recv")),
        ("42", "9")
    );
    let ms: u128 = complete.field("duration").strip_suffix("ms").unwrap().parse().unwrap();
    assert!((1500..60_000).contains(&ms), "duration {ms}ms");
    assert!(!complete.fields.contains_key("error"));
    assert_eq!(
        opened.fields.len(),
        peers.len(),
        "opened has no byte, duration or error fields"
    );
    assert_eq!(complete.fields.len(), peers.len() + 3);
}

#[test]
fn access_log_of_a_failed_connection() {
    let m = metrics();
    let (_, events) = capture(|| {
        let mut conn = ConnectionResult::open(&m, &context(Reporter::Destination), addrs());
        conn.fail(&Denied, ResponseFlags::Deny);
        conn.finish();
    });
    let complete = &events[1];
    assert_eq!(
        (complete.message.as_str(), complete.level),
        ("connection complete", Level::ERROR)
    );
    assert_eq!(complete.field("error"), "denied by policy allow-nothing");
    assert_eq!(complete.field("direction"), "inbound");
    assert_eq!((complete.field("bytes_sent"), complete.field("bytes_recv")), ("0", "0"));
}

#[test]
fn access_log_leaves_out_what_is_unknown_and_identities_without_mtls() {
    let m = metrics();
    let mut ctx = context(Reporter::Destination);
    ctx.mtls = false;
    let bare = ConnectionAddrs { hbone: None, ..addrs() };
    let (_, events) = capture(|| {
        ConnectionResult::open(&m, &ctx, bare.clone()).finish();
        ConnectionResult::open(&m, &bare_context(Reporter::Destination), bare.clone()).finish();
    });
    let plaintext = &events[1];
    for absent in ["src.identity", "dst.identity", "dst.hbone_addr"] {
        assert!(!plaintext.fields.contains_key(absent), "{absent} in {plaintext:#?}");
    }
    assert_eq!(plaintext.field("src.workload"), "client-7c9f-abcde");
    let unknown = &events[3];
    let names: Vec<_> = unknown.fields.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bytes_recv",
            "bytes_sent",
            "direction",
            "dst.addr",
            "duration",
            "src.addr"
        ]
    );
}

#[test]
fn connection_failed_carries_only_addresses_direction_and_error() {
    let (_, events) = capture(|| {
        let err = ConnectFailed(std::io::ErrorKind::TimedOut.into());
        log_connection_failed(addrs().src, addrs().dst, Direction::Outbound, &err);
    });
    assert_eq!(events.len(), 1);
    let failed = &events[0];
    assert_eq!(
        (failed.message.as_str(), failed.level, failed.target.as_str()),
        ("connection failed", Level::WARN, "access")
    );
    let fields: Vec<_> = failed.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        fields,
        [
            ("direction", "outbound"),
            ("dst.addr", "10.244.2.7:15008"),
            ("error", "upstream connect to 10.244.2.7:8080 failed: timed out"),
            ("src.addr", "10.244.1.5:40000"),
        ]
    );
}

#[test]
fn guard_is_shareable_between_copy_directions() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ConnectionResult>();
    let m = metrics();
    let conn = ConnectionResult::open(&m, &context(Reporter::Destination), addrs());
    std::thread::scope(|s| {
        s.spawn(|| (0..1000).for_each(|_| conn.record_sent(1)));
        s.spawn(|| (0..1000).for_each(|_| conn.record_received(2)));
    });
    assert_eq!((conn.bytes_sent(), conn.bytes_received()), (1000, 2000));
    conn.finish();
}

#[test]
fn direction_follows_the_reporter() {
    assert_eq!(Direction::from(Reporter::Source), Direction::Outbound);
    assert_eq!(Direction::from(Reporter::Destination).to_string(), "inbound");
}

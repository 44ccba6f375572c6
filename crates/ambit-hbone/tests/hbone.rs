//! End-to-end HBONE over loopback: pool → server → handler → application, and the server's refusals, drain and
//! handshake timeout.

mod common;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ambit_hbone::{
    Blame, ConnectError, ConnectHeaders, DialError, Dialer, H2Settings, HbonePool, PoolSettings, RelayError,
    ServeError, ServerSettings, TraceParent,
};
use bytes::Bytes;
use common::{COUNT, ECHO, Harness, client_id, identity, raw_connect, raw_h2, raw_status, server_id, target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};

const LIMIT: Duration = Duration::from_secs(10);

/// Polls `condition` every 10 ms until it holds, for at most 5 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

async fn echo_once(stream: &mut ambit_hbone::HboneStream, payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    let mut back = vec![0; payload.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, payload);
}

#[tokio::test]
async fn round_trip_reaches_the_application_with_identity_authority_and_headers() {
    let mut harness = Harness::start().await;
    let pool = HbonePool::new(PoolSettings::default());
    let tls = harness.client_tls(&client_id());
    let headers = ConnectHeaders {
        forwarded_for: Some("10.9.9.9:4711".parse().unwrap()),
        forwarded_host: Some("echo.default.svc.cluster.local".into()),
        baggage: Some("k8s.namespace.name=client".into()),
        traceparent: Some(TraceParent {
            trace_id: 0x1234,
            parent_id: 0x56,
        }),
        forwarded_network: None,
    };
    let mut stream = pool
        .connect(&harness.key(client_id()), &tls, &target(ECHO), &headers)
        .await
        .unwrap();
    echo_once(&mut stream, b"hello, mesh").await;
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    drop(stream);

    let stats = harness.next_stats().await;
    assert_eq!((stats.bytes_from_downstream, stats.bytes_to_downstream), (11, 11));
    assert!(stats.result.is_ok(), "{:?}", stats.result);
    let requests = harness.server.handler().requests.lock().unwrap();
    let request = &requests[0];
    assert_eq!(request.peer_identity, Some(client_id()));
    assert_eq!(request.authority, target(ECHO));
    assert_eq!(request.local_addr, harness.addr);
    assert_eq!(
        request.headers["forwarded"],
        "for=\"10.9.9.9:4711\";host=echo.default.svc.cluster.local"
    );
    assert_eq!(request.headers["baggage"], "k8s.namespace.name=client");
    assert_eq!(
        request.headers["traceparent"],
        "00-00000000000000000000000000001234-0000000000000056-00"
    );
}

/// Counts dials, to show the pool's dialing is pluggable and shared.
#[derive(Clone, Default)]
struct CountingDialer(Arc<AtomicUsize>);

impl Dialer for CountingDialer {
    async fn dial(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        self.0.fetch_add(1, Ordering::SeqCst);
        TcpStream::connect(addr).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_share_one_connection_per_key() {
    let harness = Harness::start().await;
    let dialer = CountingDialer::default();
    let pool = HbonePool::with_dialer(PoolSettings::default(), dialer.clone());
    let (key, tls) = (harness.key(client_id()), harness.client_tls(&client_id()));
    let tunnels: Vec<_> = (0..8u8)
        .map(|i| {
            let (pool, key, tls) = (pool.clone(), key.clone(), Arc::clone(&tls));
            tokio::spawn(async move {
                let mut stream = pool
                    .connect(&key, &tls, &target(ECHO), &ConnectHeaders::default())
                    .await
                    .unwrap();
                echo_once(&mut stream, &[i; 100_000]).await;
                stream
            })
        })
        .collect();
    let mut streams = Vec::new();
    for tunnel in tunnels {
        streams.push(timeout(LIMIT, tunnel).await.unwrap().unwrap());
    }
    assert_eq!(
        harness.accepted(),
        1,
        "eight concurrent first connects made one connection"
    );
    assert_eq!(dialer.0.load(Ordering::SeqCst), 1, "and one dial");
    assert_eq!(pool.connection_count(), 1);

    let other = identity("other", "cli2");
    let other_tls = harness.client_tls(&other);
    let mut stream = pool
        .connect(
            &harness.key(other),
            &other_tls,
            &target(ECHO),
            &ConnectHeaders::default(),
        )
        .await;
    echo_once(stream.as_mut().unwrap(), b"other").await;
    assert_eq!(harness.accepted(), 2, "another source identity gets its own connection");
    assert_eq!(pool.connection_count(), 2);
    drop(streams);
}

#[tokio::test]
async fn a_full_connection_makes_the_pool_open_another() {
    let settings = ServerSettings {
        max_concurrent_streams: 2,
        ..ServerSettings::default()
    };
    let harness = Harness::with_settings(settings).await;
    let pool = HbonePool::new(PoolSettings::default());
    let (key, tls) = (harness.key(client_id()), harness.client_tls(&client_id()));
    let mut streams = Vec::new();
    for i in 0..5u8 {
        let mut stream = pool
            .connect(&key, &tls, &target(ECHO), &ConnectHeaders::default())
            .await
            .unwrap();
        echo_once(&mut stream, &[i; 10]).await;
        streams.push(stream);
    }
    assert_eq!(
        harness.accepted(),
        3,
        "the server's limit of 2 streams per connection is honoured"
    );
    assert_eq!(pool.connection_count(), 3);
    streams.truncate(4);
    let mut stream = pool
        .connect(&key, &tls, &target(ECHO), &ConnectHeaders::default())
        .await
        .unwrap();
    echo_once(&mut stream, b"reused").await;
    assert_eq!(harness.accepted(), 3, "a freed slot is reused");
}

#[tokio::test]
async fn refusals_answer_400_401_and_503() {
    let harness = Harness::start().await;
    let tls = harness.client_tls(&client_id());
    let mut raw = raw_h2(harness.addr, Arc::clone(&tls)).await;
    let get = http::Request::get("https://10.1.2.3/").body(()).unwrap();
    assert_eq!(raw_status(&mut raw, get).await, 400, "not CONNECT");
    assert_eq!(raw_status(&mut raw, raw_connect("no-port")).await, 400, "no port");
    assert_eq!(raw_status(&mut raw, raw_connect("svc:0")).await, 400, "port 0");
    assert_eq!(
        harness.server.handler().request_count(),
        0,
        "malformed requests never reach the handler"
    );

    let pool = HbonePool::new(PoolSettings::default());
    let key = harness.key(client_id());
    for (port, blame, retryable) in [
        (401, Blame::Policy, false),
        (503, Blame::Upstream, true),
        (400, Blame::Local, false),
    ] {
        let error = pool
            .connect(&key, &tls, &target(port), &ConnectHeaders::default())
            .await
            .unwrap_err();
        assert_eq!(error.status().map(|s| s.as_u16()), Some(port), "{error}");
        assert_eq!((error.blame(), error.retryable()), (blame, retryable), "{port}");
    }
    let error = pool
        .connect(&key, &tls, &target(1), &ConnectHeaders::default())
        .await
        .unwrap_err();
    assert_eq!(
        error.status().map(|s| s.as_u16()),
        Some(503),
        "application connect failed"
    );
    assert_eq!(
        harness.accepted(),
        2,
        "refused streams leave the pooled connection usable"
    );
}

#[tokio::test]
async fn unexpected_server_identity_fails_the_handshake() {
    let harness = Harness::start().await;
    let pool = HbonePool::new(PoolSettings::default());
    let wrong = identity("server", "impostor");
    let tls = harness.pki.client_tls(&client_id(), vec![wrong.clone()]);
    let mut key = harness.key(client_id());
    key.destination_identities = vec![wrong];
    let error = pool
        .connect(&key, &tls, &target(ECHO), &ConnectHeaders::default())
        .await
        .unwrap_err();
    let ConnectError::Dial(dial) = &error else {
        panic!("expected a dial error, got {error:?}")
    };
    assert!(matches!(**dial, DialError::Tls(_)), "{dial:?}");
    assert_eq!((error.blame(), error.retryable()), (Blame::Upstream, false));
    assert_eq!(pool.connection_count(), 0);
    sleep(Duration::from_millis(50)).await;
    assert_eq!(harness.server.handler().request_count(), 0);
}

#[tokio::test]
async fn half_close_reaches_the_application_and_the_answer_still_flows() {
    let mut harness = Harness::start().await;
    let pool = HbonePool::new(PoolSettings::default());
    let tls = harness.client_tls(&client_id());
    let key = harness.key(client_id());
    let mut stream = pool
        .connect(&key, &tls, &target(COUNT), &ConnectHeaders::default())
        .await
        .unwrap();
    stream.write_all(&[7; 1000]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    timeout(LIMIT, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "1000", "the application saw EOF after 1000 bytes and answered");
    drop(stream);
    let stats = harness.next_stats().await;
    assert_eq!((stats.bytes_from_downstream, stats.bytes_to_downstream), (1000, 4));
    assert!(stats.result.is_ok(), "{:?}", stats.result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfer_both_ways() {
    const SIZE: usize = 64 * 1024 * 1024;
    let mut harness = Harness::start().await;
    let pool = HbonePool::new(PoolSettings::default());
    let tls = harness.client_tls(&client_id());
    let stream = pool
        .connect(
            &harness.key(client_id()),
            &tls,
            &target(ECHO),
            &ConnectHeaders::default(),
        )
        .await;
    let (mut read, mut write) = tokio::io::split(stream.unwrap());
    let pattern = |i: usize| (i % 251) as u8;
    let writer = tokio::spawn(async move {
        let chunk: Vec<u8> = (0..SIZE / 64).map(pattern).collect();
        for _ in 0..64 {
            write.write_all(&chunk).await.unwrap();
        }
        write.shutdown().await.unwrap();
    });
    let mut buf = vec![0; 256 * 1024];
    let (mut total, mut mismatches) = (0, 0);
    loop {
        let n = timeout(LIMIT, read.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        mismatches += buf[..n]
            .iter()
            .enumerate()
            .filter(|(j, b)| **b != pattern((total + j) % (SIZE / 64)))
            .count();
        total += n;
    }
    writer.await.unwrap();
    assert_eq!((total, mismatches), (SIZE, 0));
    let stats = harness.next_stats().await;
    assert_eq!(
        (stats.bytes_from_downstream, stats.bytes_to_downstream),
        (SIZE as u64, SIZE as u64)
    );
}

#[tokio::test]
async fn idle_connections_are_released_and_redialed() {
    let harness = Harness::start().await;
    let settings = PoolSettings {
        idle_timeout: Duration::from_millis(200),
        ..PoolSettings::default()
    };
    let pool = HbonePool::new(settings);
    let (key, tls) = (harness.key(client_id()), harness.client_tls(&client_id()));
    let mut stream = pool
        .connect(&key, &tls, &target(ECHO), &ConnectHeaders::default())
        .await
        .unwrap();
    echo_once(&mut stream, b"one").await;
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pool.connection_count(),
        1,
        "a connection with an open stream is not idle"
    );
    drop(stream);
    eventually("the idle connection to be released", || pool.connection_count() == 0).await;
    eventually("the server to see it close", || harness.ended() == 1).await;

    let mut stream = pool
        .connect(&key, &tls, &target(ECHO), &ConnectHeaders::default())
        .await
        .unwrap();
    echo_once(&mut stream, b"two").await;
    assert_eq!(harness.accepted(), 2, "the next connect dialed again");
}

#[tokio::test]
async fn drain_refuses_new_streams_while_open_ones_finish() {
    let (server, mut stats, trigger) = common::server(ServerSettings::default()).await;
    let pki = common::Pki::new();
    let (tls_tx, tls_rx) = tokio::sync::watch::channel(pki.server_tls(&server_id()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move { server.serve_listener(listener, tls_rx).await });

    let mut raw = raw_h2(addr, pki.client_tls(&client_id(), vec![server_id()])).await;
    let (response, mut send) = raw.send_request(raw_connect(&target(ECHO).to_string()), false).unwrap();
    let mut recv = timeout(LIMIT, response).await.unwrap().unwrap().into_body();

    trigger.start(Duration::from_secs(5));
    timeout(LIMIT, serving).await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    let refused = async {
        loop {
            match raw.send_request(raw_connect(&target(ECHO).to_string()), true) {
                Err(error) => break error,
                Ok((response, _)) => assert!(response.await.is_err(), "a stream after GOAWAY must not be served"),
            }
            sleep(Duration::from_millis(10)).await;
        }
    };
    let error = timeout(LIMIT, refused).await.unwrap();
    assert!(error.is_go_away(), "{error:?}");

    send.send_data(Bytes::from_static(b"still here"), true).unwrap();
    let mut echoed = Vec::new();
    while let Some(data) = timeout(LIMIT, recv.data()).await.unwrap() {
        let data = data.unwrap();
        let _ = recv.flow_control().release_capacity(data.len());
        echoed.extend_from_slice(&data);
    }
    assert_eq!(echoed, b"still here");
    let stats = timeout(LIMIT, stats.recv()).await.unwrap().unwrap();
    assert!(stats.result.is_ok(), "{:?}", stats.result);
    drop((raw, tls_tx));
    timeout(LIMIT, trigger.drained()).await.expect("every connection ended");
}

#[tokio::test]
async fn drain_deadline_resets_streams_still_open() {
    let (server, mut stats, trigger) = common::server(ServerSettings::default()).await;
    let pki = common::Pki::new();
    let (tcp_server, tcp_client) = loopback_pair().await;
    let tls = pki.server_tls(&server_id());
    let serving = tokio::spawn(async move { server.serve_connection(tcp_server, tls).await });
    let (send, conn) = h2_over(tcp_client, pki.client_tls(&client_id(), vec![server_id()])).await;
    tokio::spawn(conn);
    let mut send = send;
    let (response, _send) = send
        .send_request(raw_connect(&target(ECHO).to_string()), false)
        .unwrap();
    let mut recv = timeout(LIMIT, response).await.unwrap().unwrap().into_body();

    trigger.start(Duration::from_millis(100));
    assert!(
        timeout(LIMIT, recv.data()).await.unwrap().unwrap().is_err(),
        "the open stream was reset"
    );
    let stats = timeout(LIMIT, stats.recv()).await.unwrap().unwrap();
    let error = stats.result.unwrap_err();
    assert!(matches!(error, RelayError::Downstream(_)), "{error:?}");
    assert_eq!(error.blame(), Blame::Local);
    timeout(LIMIT, serving).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn silent_client_is_closed_after_the_handshake_timeout_without_blocking_others() {
    let settings = ServerSettings {
        handshake_timeout: Duration::from_millis(500),
        ..ServerSettings::default()
    };
    let harness = Harness::with_settings(settings).await;
    let mut silent = TcpStream::connect(harness.addr).await.unwrap();
    let started = Instant::now();

    let pool = HbonePool::new(PoolSettings::default());
    let tls = harness.client_tls(&client_id());
    let mut stream = pool
        .connect(
            &harness.key(client_id()),
            &tls,
            &target(ECHO),
            &ConnectHeaders::default(),
        )
        .await;
    echo_once(stream.as_mut().unwrap(), b"not blocked").await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "served while the silent client waited"
    );

    let mut byte = [0; 1];
    let read = timeout(LIMIT, silent.read(&mut byte)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    eventually("the timeout to be reported", || {
        !harness.errors.lock().unwrap().is_empty()
    })
    .await;
    let errors = harness.errors.lock().unwrap();
    assert!(matches!(errors[0], ServeError::HandshakeTimeout(_)), "{:?}", errors[0]);
    assert_eq!(errors[0].blame(), Blame::Downstream);
}

#[tokio::test]
async fn unresponsive_client_is_closed_by_keepalive() {
    let h2 = H2Settings {
        keepalive_interval: Some(Duration::from_millis(100)),
        keepalive_timeout: Duration::from_millis(200),
        ..H2Settings::default()
    };
    let harness = Harness::with_settings(ServerSettings {
        h2,
        ..ServerSettings::default()
    })
    .await;
    let tcp = TcpStream::connect(harness.addr).await.unwrap();
    // Handshaken, then never polled: PINGs go unanswered.
    let (_send, _conn) = h2_over(tcp, harness.client_tls(&client_id())).await;
    eventually("keepalive to close the connection", || harness.ended() == 1).await;
    let errors = harness.errors.lock().unwrap();
    assert!(matches!(errors[0], ServeError::KeepaliveTimeout(_)), "{:?}", errors[0]);
}

#[tokio::test]
async fn client_reset_is_reported_to_the_handler() {
    let mut harness = Harness::start().await;
    let tls = harness.client_tls(&client_id());
    let mut raw = raw_h2(harness.addr, tls).await;
    let (response, mut send) = raw.send_request(raw_connect(&target(ECHO).to_string()), false).unwrap();
    let _recv = timeout(LIMIT, response).await.unwrap().unwrap();
    send.send_data(Bytes::from_static(b"abc"), false).unwrap();
    sleep(Duration::from_millis(50)).await;
    send.send_reset(h2::Reason::CANCEL);
    let stats = harness.next_stats().await;
    let error = stats.result.unwrap_err();
    assert!(
        matches!(error, RelayError::DownstreamReset(h2::Reason::CANCEL)),
        "{error:?}"
    );
    assert_eq!(stats.bytes_from_downstream, 3);
    poll_fn(|cx| raw.poll_ready(cx)).await.unwrap();
}

#[tokio::test]
async fn dropped_pool_lets_its_connections_close() {
    let harness = Harness::start().await;
    let pool = HbonePool::new(PoolSettings::default());
    let tls = harness.client_tls(&client_id());
    let mut stream = pool
        .connect(
            &harness.key(client_id()),
            &tls,
            &target(ECHO),
            &ConnectHeaders::default(),
        )
        .await;
    echo_once(stream.as_mut().unwrap(), b"x").await;
    drop(pool);
    sleep(Duration::from_millis(100)).await;
    assert_eq!(harness.ended(), 0, "an open stream keeps its connection");
    drop(stream);
    eventually("the server to see the connection close", || harness.ended() == 1).await;
    assert!(harness.errors.lock().unwrap().is_empty(), "closed cleanly");
}

async fn loopback_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (server, client)
}

async fn h2_over(
    tcp: TcpStream,
    tls: Arc<rustls::ClientConfig>,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::client::Connection<tokio_rustls::client::TlsStream<TcpStream>, Bytes>,
) {
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let tls = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    h2::client::handshake(tls).await.unwrap()
}

#[tokio::test]
async fn broken_peers_are_refused_without_affecting_others() {
    use common::Pki;
    let harness = Harness::start().await;
    let pool = HbonePool::new(PoolSettings::default());
    let tls = harness.client_tls(&client_id());
    // A connection that stays open across the broken peers below.
    let mut open = pool
        .connect(
            &harness.key(client_id()),
            &tls,
            &target(ECHO),
            &ConnectHeaders::default(),
        )
        .await
        .unwrap();
    echo_once(&mut open, b"before").await;

    // Not TLS at all.
    let mut garbage = TcpStream::connect(harness.addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = timeout(LIMIT, garbage.read_to_end(&mut rest)).await.unwrap();

    // A client certificate from another CA: an identity the mesh does not know.
    let stranger = Pki::new().client_tls(&client_id(), vec![server_id()]);
    let refused = pool
        .connect(
            &harness.key(identity("other", "stranger")),
            &stranger,
            &target(ECHO),
            &ConnectHeaders::default(),
        )
        .await;
    assert!(refused.is_err(), "a client from a foreign CA got a tunnel");

    // Valid TLS, then bytes that are not HTTP/2.
    let tcp = TcpStream::connect(harness.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls_only = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
        .connect(name, tcp)
        .await
        .unwrap();
    tls_only
        .write_all(b"this is not an HTTP/2 connection preface\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = timeout(LIMIT, tls_only.read_to_end(&mut rest)).await.unwrap();

    eventually("the three refusals to be reported", || {
        harness.errors.lock().unwrap().len() >= 3
    })
    .await;
    {
        let errors = harness.errors.lock().unwrap();
        assert!(
            errors.iter().filter(|e| matches!(e, ServeError::Tls(_))).count() >= 2,
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| matches!(e, ServeError::Handshake(_))),
            "{errors:?}"
        );
        assert!(errors.iter().all(|e| e.blame() == Blame::Downstream), "{errors:?}");
    }
    // The open tunnel and new ones are unaffected.
    echo_once(&mut open, b"after").await;
    let mut fresh = pool
        .connect(
            &harness.key(client_id()),
            &tls,
            &target(ECHO),
            &ConnectHeaders::default(),
        )
        .await
        .unwrap();
    echo_once(&mut fresh, b"fresh").await;
}

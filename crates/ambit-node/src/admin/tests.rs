//! Tests of the admin, metrics and readiness servers over loopback, with a raw HTTP/1.1 client.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ambit_telemetry::prometheus_client::metrics::counter::Counter;
use ambit_telemetry::prometheus_client::registry::Registry;
use ambit_telemetry::{ConnectionAddrs, ConnectionContext, ConnectionResult, Reporter, TcpMetrics};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::*;

const WAIT: Duration = Duration::from_secs(5);
const HEADER_TIMEOUT: Duration = Duration::from_millis(200);
const BODY_TIMEOUT: Duration = Duration::from_millis(200);

type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

struct FakeDump;

/// Accepts any filter but those containing `bogus`.
struct FakeLogs(Mutex<String>);

/// A server on loopback and the means to stop it.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// One parsed response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// The admin server, its quit signal and the sender of its readiness.
struct Admin {
    server: Running,
    quit: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
}

impl ConfigDump for FakeDump {
    fn dump(&self) -> Value {
        json!({
            "workloads": [{"name": "echo-1", "namespace": "default"}],
            "services": [{"hostname": "echo.default.svc.cluster.local"}],
            "policies": [],
            "certificates": [{"identity": "spiffe://cluster.local/ns/default/sa/echo"}],
            "connections": {"open": 2},
        })
    }
}

impl LogControl for FakeLogs {
    fn filter(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    fn set_filter(&self, filter: &str) -> Result<(), InvalidFilter> {
        if filter.contains("bogus") {
            return Err(InvalidFilter {
                filter: filter.to_string(),
                reason: "unknown level".to_string(),
            });
        }
        *self.0.lock().unwrap() = filter.to_string();
        Ok(())
    }
}

impl Running {
    /// Binds loopback with test limits and runs `serve` on it.
    async fn start<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(HttpListener, Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let limits = HttpLimits {
            header_read_timeout: HEADER_TIMEOUT,
            body_read_timeout: BODY_TIMEOUT,
            ..HttpLimits::default()
        };
        let listener = HttpListener::new(listener, limits);
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(serve(listener, shutdown));
        Running { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(WAIT, self.task).await.unwrap().unwrap();
    }
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

async fn start_admin(logs: Option<Arc<dyn LogControl>>) -> Admin {
    let (ready, ready_rx) = watch::channel(false);
    let (quit_tx, quit) = watch::channel(false);
    let mut state = AdminState::new(Arc::new(FakeDump), ready_rx, quit_tx);
    if let Some(logs) = logs {
        state = state.with_log_control(logs);
    }
    let server = Running::start(|l, s| serve_admin(l, state, s)).await;
    Admin { server, quit, ready }
}

/// Reads one response: headers, then a `Content-Length` body.
async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).unwrap().to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(body).unwrap();
    Reply { status, headers, body }
}

/// Sends `head` (request line and headers, no blank line) then `body` on a new connection.
async fn send(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    tokio::time::timeout(WAIT, read_reply(&mut stream)).await.unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, &format!("GET {path} HTTP/1.1"), b"").await
}

async fn post(addr: SocketAddr, path: &str) -> Reply {
    send(addr, &format!("POST {path} HTTP/1.1\r\nContent-Length: 0"), b"").await
}

#[tokio::test]
async fn config_dump_has_the_sections_and_the_version() {
    let admin = start_admin(None).await;
    let reply = get(admin.server.addr, "/config_dump").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.body.contains("\n  \""), "pretty-printed: {}", reply.body);
    let dump: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(dump["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(dump["workloads"][0]["name"], "echo-1");
    assert_eq!(
        dump["certificates"][0]["identity"],
        "spiffe://cluster.local/ns/default/sa/echo"
    );
    for section in ["services", "policies", "connections"] {
        assert!(dump.get(section).is_some(), "missing {section}");
    }
    admin.server.stop().await;
}

#[tokio::test]
async fn quitquitquit_wants_post_and_sets_the_quit_signal() {
    let admin = start_admin(None).await;
    let reply = get(admin.server.addr, "/quitquitquit").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert!(!*admin.quit.borrow());

    let reply = post(admin.server.addr, "/quitquitquit").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "OK\n"));
    assert!(*admin.quit.borrow());
    admin.server.stop().await;
}

#[tokio::test]
async fn admin_answers_readiness_and_lists_endpoints_on_unknown_paths() {
    let admin = start_admin(None).await;
    assert_eq!(get(admin.server.addr, "/healthz/ready").await.status, 503);
    admin.ready.send_replace(true);
    assert_eq!(get(admin.server.addr, "/healthz/ready").await.status, 200);

    let reply = get(admin.server.addr, "/nope").await;
    assert_eq!(reply.status, 404);
    assert!(
        reply.body.contains("/config_dump") && reply.body.contains("/quitquitquit"),
        "{}",
        reply.body
    );
    admin.server.stop().await;
}

#[tokio::test]
async fn logging_reads_and_sets_the_filter() {
    let logs = Arc::new(FakeLogs(Mutex::new("info".to_string())));
    let admin = start_admin(Some(logs.clone())).await;
    let addr = admin.server.addr;
    assert_eq!(get(addr, "/logging").await.body, "info\n");

    let reply = post(addr, "/logging?level=warn%2Caccess%3Adebug,ambit_node::admin:trace").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(logs.filter(), "warn,access=debug,ambit_node::admin=trace");
    assert_eq!(
        get(addr, "/logging").await.body,
        "warn,access=debug,ambit_node::admin=trace\n"
    );

    assert_eq!(post(addr, "/logging?level=bogus").await.status, 400);
    assert_eq!(post(addr, "/logging").await.status, 400);
    assert_eq!(post(addr, "/logging?level=%ff").await.status, 400);
    assert_eq!(logs.filter(), "warn,access=debug,ambit_node::admin=trace");
    assert_eq!(send(addr, "DELETE /logging HTTP/1.1", b"").await.status, 405);
    admin.server.stop().await;
}

#[tokio::test]
async fn logging_without_control_is_not_implemented() {
    let admin = start_admin(None).await;
    let reply = get(admin.server.addr, "/logging").await;
    assert_eq!(reply.status, 501);
    assert!(reply.body.contains("not configured"), "{}", reply.body);
    admin.server.stop().await;
}

#[tokio::test]
async fn metrics_are_openmetrics_text_on_both_paths() {
    let mut registry = Registry::default();
    let tcp = Arc::new(TcpMetrics::register(&mut registry));
    let requests = Counter::<u64>::default();
    registry.register("admin_test_requests", "Requests seen by the test", requests.clone());
    requests.inc_by(3);
    let addrs = ConnectionAddrs {
        src: "10.0.0.1:40000".parse().unwrap(),
        dst: "10.0.0.2:15008".parse().unwrap(),
        hbone: None,
    };
    let conn = ConnectionResult::open(&tcp, &ConnectionContext::new(Reporter::Source), addrs);
    let registry = Arc::new(registry);
    let server = Running::start(|l, s| serve_metrics(l, registry, s)).await;

    for path in ["/metrics", "/stats/prometheus"] {
        let reply = get(server.addr, path).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(OPENMETRICS_TEXT));
        assert!(reply.body.contains("admin_test_requests_total 3\n"), "{}", reply.body);
        let opened = reply
            .body
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_opened_total{"));
        assert!(opened.is_some_and(|l| l.ends_with("} 1")), "{}", reply.body);
        assert!(reply.body.ends_with("# EOF\n"));
    }
    assert_eq!(get(server.addr, "/nope").await.status, 404);
    assert_eq!(post(server.addr, "/metrics").await.status, 405);
    conn.finish();
    server.stop().await;
}

#[tokio::test]
async fn readiness_turns_ready_when_the_watch_does() {
    let (ready, ready_rx) = watch::channel(false);
    let server = Running::start(|l, s| serve_readiness(l, ready_rx, s)).await;
    let reply = get(server.addr, "/healthz/ready").await;
    assert_eq!((reply.status, reply.body.as_str()), (503, "not ready\n"));
    ready.send_replace(true);
    let reply = get(server.addr, "/healthz/ready").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ready\n"));
    assert_eq!(get(server.addr, "/").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let admin = start_admin(None).await;
    let addr = admin.server.addr;
    // Declared too large: refused before any of the body is sent.
    let reply = send(addr, "POST /quitquitquit HTTP/1.1\r\nContent-Length: 70000", b"").await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection"), Some("close"));

    // Chunked, so only counting finds it too large.
    let mut body = format!("{:x}\r\n", 65 * 1024).into_bytes();
    body.extend(std::iter::repeat_n(b'x', 65 * 1024));
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let reply = send(addr, "POST /quitquitquit HTTP/1.1\r\nTransfer-Encoding: chunked", &body).await;
    assert_eq!(reply.status, 413);
    assert!(!*admin.quit.borrow());

    // At the limit is fine.
    let limit = HttpLimits::default().max_body_bytes;
    let head = format!("POST /quitquitquit HTTP/1.1\r\nContent-Length: {limit}");
    assert_eq!(send(addr, &head, &vec![b'x'; limit]).await.status, 200);
    admin.server.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408() {
    let admin = start_admin(None).await;
    let started = Instant::now();
    let reply = send(
        admin.server.addr,
        "POST /quitquitquit HTTP/1.1\r\nContent-Length: 10",
        b"ab",
    )
    .await;
    assert_eq!(reply.status, 408);
    assert!(started.elapsed() >= BODY_TIMEOUT);
    assert!(!*admin.quit.borrow());
    admin.server.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_without_blocking_others() {
    let admin = start_admin(None).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(admin.server.addr).await.unwrap();

    let reply = get(admin.server.addr, "/healthz/ready").await;
    assert_eq!(reply.status, 503);
    assert!(
        started.elapsed() < HEADER_TIMEOUT,
        "another request waited for the silent client"
    );

    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, silent.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= HEADER_TIMEOUT);
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    admin.server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let admin = start_admin(None).await;
    let addr = admin.server.addr;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_reply(&mut idle).await.status, 503);

    let started = Instant::now();
    admin.server.stop().await;
    assert!(
        started.elapsed() < HttpLimits::default().drain_timeout,
        "an idle connection held up shutdown"
    );
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, idle.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn level_syntax_becomes_env_filter_directives() {
    let cases = [
        ("info", "info"),
        ("access:debug", "access=debug"),
        (" warn , access:off ", "warn,access=off"),
        ("ambit_node::admin:trace", "ambit_node::admin=trace"),
        ("ambit_node::admin", "ambit_node::admin"),
        ("hyper=warn", "hyper=warn"),
        (",,", ""),
    ];
    for (level, filter) in cases {
        assert_eq!(env_filter(level), filter, "{level}");
    }
}

#[test]
fn query_params_are_found_and_decoded() {
    assert_eq!(
        query_param("a=1&level=info%2Caccess%3Adebug", "level")
            .unwrap()
            .as_deref(),
        Some("info,access:debug")
    );
    assert_eq!(query_param("levels=info", "level").unwrap(), None);
    assert_eq!(query_param("level", "level").unwrap().as_deref(), Some(""));
    assert!(query_param("level=%c3%28", "level").is_err());
}

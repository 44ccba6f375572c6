//! In-process tests of `ambit app load` against an in-process echo server on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use ambit_apps::echo::{self, EchoConfig, EchoHandle, Identity, ListenSpec, ListenerKind};
use ambit_apps::load::{self, LoadArgs, LoadConfig, LoadError, Mode, OutputFormat, Report, Target};
use clap::Parser;

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

async fn start() -> EchoHandle {
    let specs = [
        ListenSpec::new(ListenerKind::Http, LOOPBACK),
        ListenSpec::new(ListenerKind::Tcp, LOOPBACK),
        ListenSpec::new(ListenerKind::Sink, LOOPBACK),
    ];
    let config = EchoConfig::new(Identity::from_lookup(|_| None));
    echo::spawn(config, &specs).await.unwrap()
}

fn http(server: &EchoHandle, path: &str) -> LoadConfig {
    let url = format!("http://{}{path}", server.addr(ListenerKind::Http).unwrap());
    LoadConfig::new(Target::Http {
        url: url.parse().unwrap(),
        headers: vec!["x-load: yes".parse().unwrap()],
    })
}

/// A loopback port with nothing listening on it.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadArgs,
}

#[tokio::test]
async fn exact_request_count() {
    let server = start().await;
    let mut config = http(&server, "/count");
    config.requests = Some(200);
    config.connections = 4;
    let report = load::run(config).await.unwrap();
    assert_eq!(report.mode, Mode::Http);
    assert_eq!(report.requests, 200, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.connections, 4);
    assert!(report.bytes > 200 * 100, "{report:?}");
    assert!(report.requests_per_sec > 0.0);
    assert!(report.latency_us.p50 > 0 && report.latency_us.max >= report.latency_us.p999);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn new_connection_per_request() {
    let server = start().await;
    let mut config = http(&server, "/new");
    config.requests = Some(50);
    config.connections = 2;
    config.new_connection = true;
    let report = load::run(config).await.unwrap();
    assert_eq!(report.mode, Mode::HttpNewConnection);
    assert_eq!((report.requests, report.errors), (50, 0), "{report:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fixed_rate() {
    let server = start().await;
    let mut config = http(&server, "/rate");
    config.rate = Some(200.0);
    config.duration = Some(Duration::from_secs(1));
    config.connections = 2;
    let report = load::run(config).await.unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(
        (170..=230).contains(&report.requests),
        "expected about 200 requests: {report:?}"
    );
    assert_eq!(report.rate, Some(200.0));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fixed_rate_counts_latency_from_intended_time() {
    // 10 requests/s on one connection against 250 ms responses: the server can
    // only do 4/s, so queued requests must show growing latency.
    let server = start().await;
    let mut config = http(&server, "/slow?delay_ms=250");
    config.rate = Some(10.0);
    config.requests = Some(6);
    let report = load::run(config).await.unwrap();
    assert_eq!(report.requests, 6, "{report:?}");
    // The 6th request is intended at 0.5 s but completes at about 1.5 s.
    assert!(report.latency_us.max >= 900_000, "{report:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bulk_throughput() {
    let server = start().await;
    let addr = server.addr(ListenerKind::Sink).unwrap();
    let mut config = LoadConfig::new(Target::Bulk { addr: addr.to_string() });
    config.duration = Some(Duration::from_millis(400));
    config.warmup = Duration::from_millis(100);
    config.connections = 2;
    let report = load::run(config).await.unwrap();
    assert_eq!(report.mode, Mode::Bulk);
    assert_eq!((report.requests, report.errors), (2, 0), "{report:?}");
    assert!(report.bytes > 0 && report.bytes_per_sec > 0.0, "{report:?}");
    assert!(report.duration_s >= 0.35, "{report:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tcp_request_response() {
    let server = start().await;
    let addr = server.addr(ListenerKind::Tcp).unwrap();
    for new_connection in [false, true] {
        let mut config = LoadConfig::new(Target::Tcp {
            addr: addr.to_string(),
            size: 1000,
        });
        config.requests = Some(40);
        config.connections = 3;
        config.new_connection = new_connection;
        let report = load::run(config).await.unwrap();
        let mode = if new_connection {
            Mode::TcpNewConnection
        } else {
            Mode::Tcp
        };
        assert_eq!(report.mode, mode);
        assert_eq!((report.requests, report.errors), (40, 0), "{report:?}");
        assert_eq!(report.bytes, 40_000);
    }
    // Larger than the socket buffers: write and read overlap.
    let mut config = LoadConfig::new(Target::Tcp {
        addr: addr.to_string(),
        size: 8 * 1024 * 1024,
    });
    config.requests = Some(2);
    let report = load::run(config).await.unwrap();
    assert_eq!((report.requests, report.errors), (2, 0), "{report:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn closed_port_is_a_clear_error() {
    let addr = closed_port().await;
    let config = LoadConfig::new(Target::Http {
        url: format!("http://{addr}/").parse().unwrap(),
        headers: vec![],
    });
    let error = load::run(config).await.unwrap_err();
    assert!(matches!(error, LoadError::NoConnection { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("no connection could be established") && message.contains(&addr.to_string()),
        "{message}"
    );
    let source = std::error::Error::source(&error)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .unwrap();
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);

    let mut config = LoadConfig::new(Target::Tcp {
        addr: addr.to_string(),
        size: 10,
    });
    config.new_connection = true;
    assert!(matches!(load::run(config).await, Err(LoadError::NoConnection { .. })));
}

#[test]
fn main_fails_for_closed_port_and_bad_arguments() {
    let addr = tokio::runtime::Runtime::new().unwrap().block_on(closed_port());
    let cli = Cli::try_parse_from(["load", "--tcp", &addr.to_string(), "-n", "1"]).unwrap();
    assert!(load::main(cli.args).is_err());
    let cli = Cli::try_parse_from(["load", "--tcp", "127.0.0.1:1", "--size", "0"]).unwrap();
    let error = load::main(cli.args).unwrap_err();
    assert!(error.to_string().contains("--size"), "{error}");
}

#[tokio::test]
async fn status_errors_are_counted_by_status() {
    let server = start().await;
    let mut config = http(&server, "/fail?status=500");
    config.requests = Some(20);
    config.connections = 2;
    let report = load::run(config).await.unwrap();
    assert_eq!(report.requests, 0, "{report:?}");
    assert_eq!(report.errors, 20);
    assert_eq!(report.errors_by_kind.status, 20);
    assert_eq!(report.errors_by_status.get(&500), Some(&20));
    assert!(report.to_table().to_string().contains("status 500=20"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn delay_shows_in_latency() {
    let server = start().await;
    let mut config = http(&server, "/slow?delay_ms=20");
    config.requests = Some(10);
    config.connections = 2;
    let report = load::run(config).await.unwrap();
    assert_eq!(report.requests, 10, "{report:?}");
    assert!(report.latency_us.p50 >= 20_000, "{report:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn timeouts_are_errors() {
    let server = start().await;
    let mut config = http(&server, "/slow?delay_ms=1000");
    config.requests = Some(3);
    config.timeout = Duration::from_millis(100);
    let report = load::run(config).await.unwrap();
    assert_eq!(report.requests, 0, "{report:?}");
    assert_eq!(report.errors_by_kind.timeout, 3, "{report:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn warmup_is_excluded() {
    let server = start().await;
    let mut config = http(&server, "/warm");
    config.warmup = Duration::from_millis(400);
    config.duration = Some(Duration::from_millis(300));
    config.rate = Some(100.0);
    let report = load::run(config).await.unwrap();
    // Intended send times every 10 ms; those in the 300 ms after the warm-up count.
    assert_eq!(report.requests, 30, "{report:?}");
    // With the warm-up included it would be at least 0.7 s.
    assert!(report.duration_s < 0.6, "{report:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_report_is_stable() {
    let server = start().await;
    let mut config = http(&server, "/json");
    config.requests = Some(5);
    let report = load::run(config).await.unwrap();
    let json = report.to_json();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for field in [
        "requests",
        "errors",
        "errors_by_kind",
        "duration_s",
        "requests_per_sec",
        "bytes_per_sec",
        "latency_us",
        "connections",
        "mode",
    ] {
        assert!(value.get(field).is_some(), "missing {field}: {json}");
    }
    for field in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(value["latency_us"].get(field).is_some(), "missing {field}");
    }
    assert_eq!(value["mode"], "http");
    let back: Report = serde_json::from_str(&json).unwrap();
    // Integers round-trip exactly; floats to within printing precision.
    assert_eq!(back.requests, report.requests);
    assert_eq!(back.errors_by_kind, report.errors_by_kind);
    assert_eq!(back.latency_us.p99, report.latency_us.p99);
    assert!((back.duration_s - report.duration_s).abs() < 1e-9);
    assert!((back.latency_us.mean - report.latency_us.mean).abs() < 1e-6);
    server.shutdown().await.unwrap();
}

#[test]
fn cli_parsing() {
    let cli = Cli::try_parse_from(["load", "--url", "http://echo:8080/x"]).unwrap();
    let args = &cli.args;
    assert_eq!(args.connections, 1);
    assert_eq!(args.timeout, Duration::from_secs(5));
    assert_eq!(args.warmup, Duration::ZERO);
    assert_eq!(args.output, OutputFormat::Table);
    let config = LoadConfig::from_args(args).unwrap();
    assert_eq!(config.duration, None);
    assert_eq!(config.mode(), Mode::Http);

    let cli = Cli::try_parse_from([
        "load",
        "--url",
        "http://echo/",
        "-c",
        "8",
        "--rate",
        "0",
        "-d",
        "2m",
        "-n",
        "10",
        "--header",
        "x-a: 1",
        "--header",
        "x-b: 2",
        "-o",
        "json",
        "--new-connection",
        "--warmup",
        "500ms",
        "--timeout",
        "1.5s",
    ])
    .unwrap();
    let config = LoadConfig::from_args(&cli.args).unwrap();
    assert_eq!(config.connections, 8);
    assert_eq!(config.rate, None);
    assert_eq!(config.duration, Some(Duration::from_secs(120)));
    assert_eq!(config.requests, Some(10));
    assert_eq!(config.timeout, Duration::from_millis(1500));
    assert_eq!(config.mode(), Mode::HttpNewConnection);
    assert_eq!(cli.args.output, OutputFormat::Json);
    assert_eq!(cli.args.headers.len(), 2);

    let cli = Cli::try_parse_from(["load", "--tcp", "echo:9000", "--bulk", "-d", "1s"]).unwrap();
    assert_eq!(LoadConfig::from_args(&cli.args).unwrap().mode(), Mode::Bulk);

    for bad in [
        &["load"][..],
        &["load", "--url", "http://a/", "--tcp", "a:1"],
        &["load", "--url", "https://a/"],
        &["load", "--url", "http://a/", "--bulk"],
        &["load", "--tcp", "a:1", "--bulk", "-n", "5"],
        &["load", "--tcp", "a:1", "--header", "x: y"],
        &["load", "--url", "http://a/", "-c", "0"],
        &["load", "--url", "http://a/", "-d", "ten"],
        &["load", "--url", "http://a/", "--header", "nocolon"],
    ] {
        assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} should be rejected");
    }
    for rate in ["--rate=-5", "--rate=nan", "--rate=inf"] {
        let cli = Cli::try_parse_from(["load", "--url", "http://a/", rate]).unwrap();
        assert!(LoadConfig::from_args(&cli.args).is_err(), "{rate}");
    }
}

//! The gRPC echo (`ambit app echo --grpc`) and its client (`ambit app grpc`) on loopback: unary and streaming
//! calls, injected failures, unreachable servers, and that a run uses one connection.

use std::net::SocketAddr;
use std::time::Duration;

use ambit_api::ambit::echo::v1::EchoRequest;
use ambit_api::ambit::echo::v1::echo_client::EchoClient;
use ambit_apps::echo::{self, EchoConfig, EchoHandle, Identity, ListenSpec, ListenerKind};
use ambit_apps::grpc::{self, CallSummary, GrpcConfig, GrpcTarget, Summary};
use clap::Parser as _;

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

async fn start(pod: &str) -> EchoHandle {
    let pod = pod.to_owned();
    let identity = Identity::from_lookup(move |name| (name == "POD_NAME").then(|| pod.clone()));
    let specs = [ListenSpec::new(ListenerKind::Grpc, LOOPBACK)];
    echo::spawn(EchoConfig::new(identity), &specs).await.unwrap()
}

fn target(server: &EchoHandle) -> GrpcTarget {
    server.addr(ListenerKind::Grpc).unwrap().to_string().parse().unwrap()
}

fn all_ok(calls: u64, pod: &str) -> CallSummary {
    CallSummary {
        ok: calls,
        pods: [(pod.to_owned(), calls)].into(),
        ..CallSummary::default()
    }
}

fn all_failed(calls: u64, code: &str) -> CallSummary {
    CallSummary {
        errors: calls,
        codes: [(code.to_owned(), calls)].into(),
        ..CallSummary::default()
    }
}

#[tokio::test]
async fn unary_and_stream_calls_share_one_connection() {
    let server = start("echo-a").await;
    let mut config = GrpcConfig::new(target(&server), 20);
    config.stream_count = 5;
    let summary = grpc::run(&config).await.unwrap();
    assert_eq!(
        summary,
        Summary {
            unary: all_ok(20, "echo-a"),
            stream: all_ok(20, "echo-a"),
        }
    );
    assert_eq!(server.accepted(ListenerKind::Grpc), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn replies_echo_the_message_and_name_the_peer() {
    let server = start("echo-a").await;
    let addr = server.addr(ListenerKind::Grpc).unwrap();
    let mut client = EchoClient::connect(format!("http://{addr}")).await.unwrap();
    let req = EchoRequest {
        message: "ping".to_owned(),
        count: 4,
        fail_percent: 0,
    };
    let reply = client.unary(req.clone()).await.unwrap().into_inner();
    assert_eq!(reply.message, "ping");
    assert_eq!(reply.pod, "echo-a");
    assert_eq!(reply.index, 0);
    // The client's end of the connection.
    let peer: SocketAddr = reply.peer.parse().unwrap();
    assert_eq!(peer.ip(), addr.ip());
    assert_ne!(peer.port(), addr.port());

    let mut replies = client.server_stream(req).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while let Some(reply) = replies.message().await.unwrap() {
        assert_eq!((reply.message.as_str(), reply.pod.as_str()), ("ping", "echo-a"));
        // Same client, same connection, same peer.
        assert_eq!(reply.peer, peer.to_string());
        seen.push(reply.index);
    }
    assert_eq!(seen, vec![0, 1, 2, 3]);
    assert_eq!(server.accepted(ListenerKind::Grpc), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn injected_failures_are_counted_by_code() {
    let server = start("echo-a").await;
    let mut config = GrpcConfig::new(target(&server), 7);
    config.fail_percent = 100;
    let summary = grpc::run(&config).await.unwrap();
    assert_eq!(
        summary,
        Summary {
            unary: all_failed(7, "UNAVAILABLE"),
            stream: all_failed(7, "UNAVAILABLE"),
        }
    );
    assert_eq!(server.accepted(ListenerKind::Grpc), 1);

    config.fail_percent = 50;
    config.calls = 200;
    let summary = grpc::run(&config).await.unwrap();
    for (kind, calls) in [("unary", &summary.unary), ("stream", &summary.stream)] {
        assert_eq!(calls.ok + calls.errors, 200, "{kind}");
        // 50 % of 200: far more than 6 standard deviations inside these bounds.
        assert!((40..=160).contains(&calls.errors), "{kind}: {calls:?}");
        assert_eq!(calls.codes.keys().collect::<Vec<_>>(), ["UNAVAILABLE"], "{kind}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_counted_not_fatal() {
    let listener = std::net::TcpListener::bind(LOOPBACK).unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = GrpcConfig::new(addr.to_string().parse().unwrap(), 3);
    config.timeout = Duration::from_secs(2);
    let summary = grpc::run(&config).await.unwrap();
    assert_eq!(
        summary,
        Summary {
            unary: all_failed(3, "UNAVAILABLE"),
            stream: all_failed(3, "UNAVAILABLE"),
        }
    );
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    // Accepts the connection but never speaks HTTP/2.
    let listener = tokio::net::TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut config = GrpcConfig::new(addr.to_string().parse().unwrap(), 1);
    config.timeout = Duration::from_millis(300);
    let summary = grpc::run(&config).await.unwrap();
    assert_eq!(summary.unary.ok + summary.stream.ok, 0, "{summary:?}");
    for calls in [&summary.unary, &summary.stream] {
        assert_eq!(calls.errors, 1, "{summary:?}");
        let code = calls.codes.keys().next().unwrap();
        assert!(
            ["DEADLINE_EXCEEDED", "UNAVAILABLE"].contains(&code.as_str()),
            "{summary:?}"
        );
    }
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: grpc::GrpcArgs,
}

#[test]
fn grpc_args() {
    let cli = Cli::try_parse_from(["grpc", "--target", "echo:9090", "--calls", "10"]).unwrap();
    let config = GrpcConfig::from_args(cli.args);
    assert_eq!(config, GrpcConfig::new("echo:9090".parse().unwrap(), 10));
    assert_eq!(config.stream_count, 3);
    assert_eq!(config.message, "hello");

    let cli = Cli::try_parse_from([
        "grpc",
        "--target",
        "10.0.0.1:50051",
        "--calls",
        "2",
        "--stream-count",
        "1000",
        "--message",
        "m",
        "--fail-percent",
        "100",
        "--timeout",
        "250ms",
    ])
    .unwrap();
    let config = GrpcConfig::from_args(cli.args);
    assert_eq!(
        (
            config.stream_count,
            config.message.as_str(),
            config.fail_percent,
            config.timeout
        ),
        (1000, "m", 100, Duration::from_millis(250))
    );

    let bad: &[&[&str]] = &[
        &["grpc", "--calls", "1"],
        &["grpc", "--target", "echo:9090"],
        &["grpc", "--target", "echo", "--calls", "1"],
        &["grpc", "--target", "echo:9090", "--calls", "-1"],
        &["grpc", "--target", "echo:9090", "--calls", "1", "--stream-count", "0"],
        &[
            "grpc",
            "--target",
            "echo:9090",
            "--calls",
            "1",
            "--stream-count",
            "1001",
        ],
        &["grpc", "--target", "echo:9090", "--calls", "1", "--fail-percent", "101"],
        &["grpc", "--target", "echo:9090", "--calls", "1", "--timeout", "0s"],
    ];
    for argv in bad {
        let error = Cli::try_parse_from(*argv)
            .err()
            .unwrap_or_else(|| panic!("{argv:?} parsed"));
        // clap's usage errors exit with status 2.
        assert_eq!(error.exit_code(), 2, "{argv:?}");
    }
}

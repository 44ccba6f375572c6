//! In-process tests of `ambit app echo`: HTTP/1.1, h2c, query knobs, TCP echo and sink.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ambit_apps::echo::{self, EchoConfig, EchoHandle, FailRate, Identity, ListenSpec, ListenerKind};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

async fn start() -> EchoHandle {
    let specs = [
        ListenSpec::new(ListenerKind::Http, LOOPBACK),
        ListenSpec::new(ListenerKind::Tcp, LOOPBACK),
        ListenSpec::new(ListenerKind::Sink, LOOPBACK),
    ];
    // No environment lookups: the defaults apply.
    let config = EchoConfig::new(Identity::from_lookup(|_| None));
    echo::spawn(config, &specs).await.unwrap()
}

fn http_addr(server: &EchoHandle) -> SocketAddr {
    server.addr(ListenerKind::Http).unwrap()
}

/// One HTTP/1.1 request on a fresh connection.
async fn get_h1(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> (Response<()>, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(target).header("host", "echo");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (Response::from_parts(parts, ()), body)
}

fn text(body: &Bytes) -> &str {
    std::str::from_utf8(body).unwrap()
}

#[tokio::test]
async fn http1_describes_the_request() {
    let server = start().await;
    let addr = http_addr(&server);
    let (resp, body) = get_h1(addr, "/hello?x=1", &[("user-agent", "test/1")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let pod = echo::hostname();
    assert_eq!(resp.headers()["x-echo-pod"], pod.as_str());
    assert_eq!(resp.headers()["x-echo-namespace"], "");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = text(&body);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], format!("pod={pod} namespace= node= ip="));
    assert!(lines[1].starts_with("peer=127.0.0.1:"), "{body}");
    assert_eq!(lines[2], format!("local={addr}"));
    assert_eq!(lines[3], "GET /hello?x=1 HTTP/1.1");
    assert!(lines.contains(&"host: echo"), "{body}");
    assert!(lines.contains(&"user-agent: test/1"), "{body}");
    assert_eq!(*lines.last().unwrap(), "body_bytes=0");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn http1_keep_alive_and_request_body() {
    let server = start().await;
    let stream = TcpStream::connect(http_addr(&server)).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::post("/upload?format=json")
            .header("host", "echo")
            .body(Full::new(Bytes::from(vec![7u8; 12_345])))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["body_bytes"], 12_345);
        assert_eq!(json["method"], "POST");
        // The same connection every time.
        assert_eq!(json["peer"], local.to_string());
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let server = start().await;
    let addr = http_addr(&server);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://echo:{}/hello?x=2", addr.port()))
        .header("x-test", "h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-echo-pod"], echo::hostname().as_str());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = text(&body);
    assert!(body.starts_with(&format!("pod={} namespace= node= ip=\n", echo::hostname())));
    assert!(body.contains("\nGET /hello?x=2 HTTP/2.0\n"), "{body}");
    assert!(
        body.contains(&format!("\n:authority: echo:{}\n", addr.port())),
        "{body}"
    );
    assert!(body.contains("\nx-test: h2\n"), "{body}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn status_knob() {
    let server = start().await;
    let addr = http_addr(&server);
    let (resp, _) = get_h1(addr, "/?status=503", &[]).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (resp, body) = get_h1(addr, "/?status=600", &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(text(&body).contains("invalid status"));
    let (resp, body) = get_h1(addr, "/?status=204", &[]).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn injected_failures() {
    let identity = Identity::from_lookup(|name| (name == "POD_NAME").then(|| "echo-7".to_owned()));
    let specs = [ListenSpec::new(ListenerKind::Http, LOOPBACK)];
    for (percent, status) in [("100", StatusCode::SERVICE_UNAVAILABLE), ("0", StatusCode::OK)] {
        let config = EchoConfig::new(identity.clone()).with_fail_rate(percent.parse::<FailRate>().unwrap());
        let server = echo::spawn(config, &specs).await.unwrap();
        for target in ["/", "/?status=201&format=json", "/?delay_ms=1"] {
            let (resp, body) = get_h1(http_addr(&server), target, &[]).await;
            let want = if target.contains("status=201") && status == StatusCode::OK {
                StatusCode::CREATED
            } else {
                status
            };
            assert_eq!(resp.status(), want, "{percent}% {target}");
            assert_eq!(resp.headers()["x-echo-pod"], "echo-7");
            let body = text(&body);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(
                    body,
                    "injected failure: pod=echo-7 fails 100% of requests (--fail-percent)\n"
                );
            } else {
                assert!(!body.contains("injected failure"), "{body}");
            }
        }
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn delay_knob() {
    let server = start().await;
    let started = Instant::now();
    let (resp, _) = get_h1(http_addr(&server), "/?delay_ms=50", &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(50));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_format() {
    let server = start().await;
    let addr = http_addr(&server);
    for (target, headers) in [
        ("/j?format=json", vec![]),
        ("/j", vec![("accept", "text/html, application/json;q=0.9")]),
    ] {
        let (resp, body) = get_h1(addr, target, &headers).await;
        assert_eq!(resp.headers()["content-type"], "application/json");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["pod"], echo::hostname());
        assert_eq!(json["namespace"], "");
        assert_eq!(json["node"], "");
        assert_eq!(json["ip"], "");
        assert!(json["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(json["local"], addr.to_string());
        assert_eq!(json["method"], "GET");
        assert_eq!(json["uri"], target);
        assert_eq!(json["version"], "HTTP/1.1");
        assert_eq!(json["body_bytes"], 0);
        let headers = json["headers"].as_array().unwrap();
        assert!(headers.contains(&serde_json::json!(["host", "echo"])), "{json}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn size_knob() {
    let server = start().await;
    let addr = http_addr(&server);
    let (_, plain) = get_h1(addr, "/s?size=000000", &[]).await;
    let (resp, big) = get_h1(addr, "/s?size=200000", &[]).await;
    assert_eq!(big.len(), plain.len() + 200_000);
    assert_eq!(resp.headers()["content-length"], big.len().to_string().as_str());
    let (_, body) = get_h1(addr, "/s?size=1000&format=json", &[]).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["filler"].as_str().unwrap().len(), 1000);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tcp_echo_returns_bytes() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr(ListenerKind::Tcp).unwrap())
        .await
        .unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = stream.split();
    let mut echoed = Vec::new();
    let (written, read) = tokio::join!(
        async {
            writer.write_all(&data).await?;
            writer.shutdown().await
        },
        reader.read_to_end(&mut echoed)
    );
    written.unwrap();
    assert_eq!(read.unwrap(), data.len());
    assert_eq!(echoed, data);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sink_returns_the_byte_count() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr(ListenerKind::Sink).unwrap())
        .await
        .unwrap();
    let chunk = vec![1u8; 100_000];
    for _ in 0..10 {
        stream.write_all(&chunk).await.unwrap();
    }
    stream.write_all(b"tail").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "1000004\n");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_is_prompt_with_open_connections() {
    let server = start().await;
    // An idle keep-alive connection and an idle TCP connection stay open.
    let _idle_http = TcpStream::connect(http_addr(&server)).await.unwrap();
    let _idle_tcp = TcpStream::connect(server.addr(ListenerKind::Tcp).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    server.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn echo_args_defaults() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: echo::EchoArgs,
    }
    let cli = Cli::try_parse_from(["echo"]).unwrap();
    assert_eq!(
        cli.args.listen_specs(),
        vec![ListenSpec::new(ListenerKind::Http, "0.0.0.0:8080".parse().unwrap())]
    );
    assert_eq!(cli.args.fail_percent, FailRate::NEVER);
    let cli = Cli::try_parse_from(["echo", "--grpc", "127.0.0.1:9090", "--fail-percent", "12.5"]).unwrap();
    assert_eq!(
        cli.args.listen_specs(),
        vec![ListenSpec::new(ListenerKind::Grpc, "127.0.0.1:9090".parse().unwrap())]
    );
    assert_eq!(cli.args.fail_percent.percent(), 12.5);
    for bad in ["-1", "100.5", "x"] {
        assert!(Cli::try_parse_from(["echo", "--fail-percent", bad]).is_err(), "{bad}");
    }
    let cli = Cli::try_parse_from([
        "echo",
        "--tcp",
        "127.0.0.1:9000",
        "--sink",
        "127.0.0.1:9001",
        "--threads",
        "2",
    ])
    .unwrap();
    assert_eq!(cli.args.threads, Some(2));
    assert_eq!(
        cli.args.listen_specs(),
        vec![
            ListenSpec::new(ListenerKind::Tcp, "127.0.0.1:9000".parse().unwrap()),
            ListenSpec::new(ListenerKind::Sink, "127.0.0.1:9001".parse().unwrap()),
        ]
    );
    assert!(Cli::try_parse_from(["echo", "--threads", "0"]).is_err());
}

//! `ambit app grpc`: a client of the gRPC echo service (`ambit app echo --grpc`) that tells which pods answered.
//!
//! All calls share ONE channel, i.e. one HTTP/2 connection: a proxy that balances per request (a waypoint)
//! spreads them over the backends, one that balances per connection (L4) sends them all to one pod. The
//! summary counts successes per answering pod and failures per status code.

mod summary;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ambit_api::ambit::echo::v1::EchoRequest;
use ambit_api::ambit::echo::v1::echo_client::EchoClient;
use http::uri::Authority;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

pub use self::summary::{CallSummary, Summary, WRONG_REPLY_COUNT, code_name, stream_outcome};

use crate::echo::MAX_STREAM_REPLIES;
use crate::load::parse_duration;

/// Replies asked of each streaming call when `--stream-count` is not given.
pub const DEFAULT_STREAM_COUNT: u32 = 3;

/// Command-line options of `ambit app grpc`.
///
/// Makes `--calls` unary calls, then `--calls` server-streaming calls, one after the other over one connection,
/// and prints one JSON line (see [`Summary`]). Failed calls are counted, not fatal: the exit status is 0 whatever
/// the calls did, and 2 (from the argument parser) for invalid options.
#[derive(clap::Args, Debug, Clone)]
pub struct GrpcArgs {
    /// The echo server's gRPC listener, HOST:PORT (h2c).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: GrpcTarget,
    /// Unary calls to make, and as many server-streaming calls.
    #[arg(long, value_name = "N")]
    pub calls: u32,
    /// Replies each server-streaming call asks for (1 to 1000).
    #[arg(long, value_name = "K", default_value_t = DEFAULT_STREAM_COUNT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_STREAM_REPLIES)))]
    pub stream_count: u32,
    /// The message every call sends (echoed back).
    #[arg(long, value_name = "M", default_value = "hello")]
    pub message: String,
    /// Percentage (0 to 100) of calls the server is asked to fail with UNAVAILABLE.
    #[arg(long, value_name = "P", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub fail_percent: u32,
    /// Time limit of each call, its connection attempt included; an expired call counts as DEADLINE_EXCEEDED.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// A gRPC server address: `host:port` with a port and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget(Authority);

impl GrpcTarget {
    /// The plain-text (h2c) URI of the server.
    fn uri(&self) -> String {
        format!("http://{}", self.0)
    }
}

impl FromStr for GrpcTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let invalid = |reason: &str| format!("invalid target {s:?}: {reason}");
        let authority: Authority = s.parse().map_err(|_| invalid("expected HOST:PORT"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("expected HOST:PORT without user info"));
        }
        if authority.host().is_empty() {
            return Err(invalid("the host is missing"));
        }
        match authority.port_u16() {
            Some(port) if port != 0 => Ok(Self(authority)),
            _ => Err(invalid("expected HOST:PORT with a port from 1 to 65535")),
        }
    }
}

impl fmt::Display for GrpcTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A positive duration (`--timeout`).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let timeout = parse_duration(s)?;
    if timeout.is_zero() {
        return Err(format!("invalid timeout {s:?}: must be positive"));
    }
    Ok(timeout)
}

/// A client run, independent of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    pub target: GrpcTarget,
    /// Unary calls, and as many streaming calls.
    pub calls: u32,
    /// Replies asked of each streaming call (1 to [`MAX_STREAM_REPLIES`]).
    pub stream_count: u32,
    pub message: String,
    /// Share of calls (0-100) the server is asked to fail.
    pub fail_percent: u32,
    /// Time limit of each call.
    pub timeout: Duration,
}

impl GrpcConfig {
    /// `calls` unary and streaming calls to `target` with the defaults of the command line.
    pub fn new(target: GrpcTarget, calls: u32) -> Self {
        Self {
            target,
            calls,
            stream_count: DEFAULT_STREAM_COUNT,
            message: "hello".to_owned(),
            fail_percent: 0,
            timeout: Duration::from_secs(5),
        }
    }

    /// The run the command-line options describe.
    pub fn from_args(args: GrpcArgs) -> Self {
        Self {
            target: args.target,
            calls: args.calls,
            stream_count: args.stream_count,
            message: args.message,
            fail_percent: args.fail_percent,
            timeout: args.timeout,
        }
    }

    fn request(&self) -> EchoRequest {
        EchoRequest {
            message: self.message.clone(),
            count: self.stream_count,
            fail_percent: self.fail_percent,
        }
    }
}

/// Errors that prevent a run (failed calls are counted in the [`Summary`], not errors).
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("invalid target URI {uri:?}")]
    Target {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot build the tokio runtime")]
    Runtime(#[source] std::io::Error),
}

/// Make the calls of `config` over one lazily connected channel and count their outcomes.
///
/// The channel connects on the first call and keeps that HTTP/2 connection for all the others; it reconnects
/// only when the connection is lost.
pub async fn run(config: &GrpcConfig) -> Result<Summary, GrpcError> {
    let uri = config.target.uri();
    let endpoint = Endpoint::from_shared(uri.clone()).map_err(|source| GrpcError::Target { uri, source })?;
    let channel = endpoint.connect_timeout(config.timeout).connect_lazy();
    let mut client = EchoClient::new(channel);
    let mut summary = Summary::default();
    for _ in 0..config.calls {
        let outcome = within(config.timeout, unary_call(&mut client, config.request())).await;
        summary.unary.record(outcome);
    }
    for _ in 0..config.calls {
        let outcome = within(config.timeout, stream_call(&mut client, config.request())).await;
        summary.stream.record(outcome);
    }
    Ok(summary)
}

/// Entry point of `ambit app grpc`: run, then print the summary as one JSON line.
pub fn main(args: GrpcArgs) -> anyhow::Result<()> {
    let config = GrpcConfig::from_args(args);
    let runtime = crate::runtime(1).map_err(GrpcError::Runtime)?;
    let summary = runtime.block_on(run(&config))?;
    println!("{}", summary.to_json());
    Ok(())
}

/// The outcome of `call`, or DEADLINE_EXCEEDED when it takes longer than `timeout`.
async fn within(
    timeout: Duration,
    call: impl Future<Output = Result<String, &'static str>>,
) -> Result<String, &'static str> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(code_name(tonic::Code::DeadlineExceeded)))
}

/// One unary call: the answering pod, or the failure's code name.
async fn unary_call(client: &mut EchoClient<Channel>, req: EchoRequest) -> Result<String, &'static str> {
    let reply = client.unary(req).await.map_err(status_code)?;
    Ok(reply.into_inner().pod)
}

/// One server-streaming call: the pod of its first reply, or the failure's code name.
async fn stream_call(client: &mut EchoClient<Channel>, req: EchoRequest) -> Result<String, &'static str> {
    let expected = req.count;
    let mut replies = client.server_stream(req).await.map_err(status_code)?.into_inner();
    let mut first_pod = None;
    let mut received = 0u32;
    while let Some(reply) = replies.message().await.map_err(status_code)? {
        first_pod.get_or_insert(reply.pod);
        received = received.saturating_add(1);
    }
    stream_outcome(first_pod, received, expected)
}

fn status_code(status: Status) -> &'static str {
    tracing::debug!(code = ?status.code(), message = status.message(), "call failed");
    code_name(status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("echo:9090", Ok("http://echo:9090")),
            ("10.0.0.1:50051", Ok("http://10.0.0.1:50051")),
            ("[::1]:9090", Ok("http://[::1]:9090")),
            ("echo", Err("with a port from 1 to 65535")),
            ("echo:0", Err("with a port from 1 to 65535")),
            (":9090", Err("the host is missing")),
            ("user@echo:9090", Err("without user info")),
            ("http://echo:9090", Err("expected HOST:PORT")),
            ("echo:9090/path", Err("expected HOST:PORT")),
            ("", Err("expected HOST:PORT")),
        ];
        for (input, want) in cases {
            match (input.parse::<GrpcTarget>(), want) {
                (Ok(target), Ok(uri)) => assert_eq!(target.uri(), *uri, "{input:?}"),
                (Err(error), Err(reason)) => {
                    assert!(error.starts_with(&format!("invalid target {input:?}")), "{error}");
                    assert!(error.contains(reason), "{input:?}: {error}");
                }
                (got, _) => panic!("{input:?}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout("0s"),
            Err("invalid timeout \"0s\": must be positive".to_owned())
        );
        assert!(parse_timeout("soon").is_err());
    }
}

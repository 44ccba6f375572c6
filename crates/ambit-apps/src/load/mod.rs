//! `ambit app load`: an HTTP/1.1, TCP request/response and bulk-throughput load generator.
//!
//! Closed-loop by default (each connection sends its next request when the
//! previous one completed). With `--rate`, each connection follows a schedule
//! of intended send times and latency is measured from the intended time, as
//! wrk2 does, so that a stalled server is not hidden by coordinated omission.
//! Latencies go into one HDR histogram per connection, merged when the run ends.

mod http1;
mod parse;
mod report;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use self::parse::{Header, HttpUrl, parse_duration};
pub use self::report::{
    ErrorsByKind, LatencySummary, MAX_LATENCY_US, Mode, Report, format_bytes_per_sec, format_micros, new_histogram,
    summarize,
};

use self::worker::{Plan, Proto, WorkerStats};

/// Duration of a run when neither `--duration` nor `--requests` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Default `--threads`.
pub const DEFAULT_THREADS: usize = 1;
/// Largest `--size` accepted for TCP requests.
pub const MAX_TCP_SIZE: usize = 64 * 1024 * 1024;

/// Report format on standard output.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A human-readable table.
    #[default]
    Table,
    /// One JSON object (see [`Report`]).
    Json,
}

/// Command-line options of `ambit app load`.
///
/// The run stops after `--duration` or `--requests`, whichever comes first
/// (10 s when neither is given); warm-up time comes on top and is not counted.
/// With `--rate`, latency is measured from each request's intended send time
/// (no coordinated omission). The runtime has one thread unless `--threads`
/// says otherwise: one thread drives many connections without cross-thread
/// wake-ups and leaves the other cores to the workload being measured.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["url", "tcp"])))]
pub struct LoadArgs {
    /// HTTP/1.1 target, e.g. http://echo:8080/hello.
    #[arg(long, value_name = "URL")]
    pub url: Option<HttpUrl>,
    /// TCP target (an echo --tcp listener, or --sink with --bulk).
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Total requests per second across all connections (0: as fast as possible).
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Measured run time, e.g. 10s, 500ms, 2m.
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Total measured requests.
    #[arg(short = 'n', long, value_name = "N")]
    pub requests: Option<u64>,
    /// Open a new connection for every request (HTTP: with `connection: close`).
    #[arg(long)]
    pub new_connection: bool,
    /// One-way throughput against an echo --sink listener (needs --tcp).
    #[arg(long, conflicts_with_all = ["url", "new_connection", "rate", "requests"])]
    pub bulk: bool,
    /// Bytes per TCP request.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub size: usize,
    /// Per-request timeout; a timeout counts as an error.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Time run before measuring, excluded from the statistics.
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Report format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Extra HTTP request header `Name: value`; repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE", conflicts_with = "tcp")]
    pub headers: Vec<Header>,
    /// Runtime threads [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// What to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// HTTP/1.1 GET requests.
    Http { url: HttpUrl, headers: Vec<Header> },
    /// TCP request/response of `size` bytes against an echo `--tcp` listener.
    Tcp { addr: String, size: usize },
    /// One-way throughput against an echo `--sink` listener.
    Bulk { addr: String },
}

impl Target {
    fn display(&self) -> String {
        match self {
            Target::Http { url, .. } => url.to_string(),
            Target::Tcp { addr, .. } | Target::Bulk { addr } => addr.clone(),
        }
    }
}

/// A load run, independent of the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    pub target: Target,
    /// Concurrent connections (at least 1).
    pub connections: usize,
    /// Total requests per second; `None` for closed loop.
    pub rate: Option<f64>,
    /// Measured run time; `None` with `requests` set means no time limit.
    pub duration: Option<Duration>,
    /// Measured requests (ok and failed) to send in total.
    pub requests: Option<u64>,
    /// A new connection for every request.
    pub new_connection: bool,
    /// Per-request timeout (connect included).
    pub timeout: Duration,
    /// Excluded time before measuring.
    pub warmup: Duration,
}

impl LoadConfig {
    /// A closed-loop run over one connection with the default duration and timeout.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            connections: 1,
            rate: None,
            duration: None,
            requests: None,
            new_connection: false,
            timeout: Duration::from_secs(5),
            warmup: Duration::ZERO,
        }
    }

    /// The run the command-line options describe.
    pub fn from_args(args: &LoadArgs) -> Result<Self, LoadError> {
        let target = match (&args.url, &args.tcp) {
            (Some(url), None) => Target::Http {
                url: url.clone(),
                headers: args.headers.clone(),
            },
            (None, Some(addr)) if args.bulk => Target::Bulk { addr: addr.clone() },
            (None, Some(addr)) => Target::Tcp {
                addr: addr.clone(),
                size: args.size,
            },
            _ => return Err(invalid("give exactly one of --url and --tcp")),
        };
        if args.bulk && !matches!(target, Target::Bulk { .. }) {
            return Err(invalid("--bulk needs --tcp"));
        }
        let config = Self {
            target,
            connections: args.connections as usize,
            rate: args.rate.filter(|&rate| rate != 0.0),
            duration: args.duration,
            requests: args.requests,
            new_connection: args.new_connection,
            timeout: args.timeout,
            warmup: args.warmup,
        };
        config.validate()?;
        Ok(config)
    }

    /// The kind of traffic this run generates.
    pub fn mode(&self) -> Mode {
        match (&self.target, self.new_connection) {
            (Target::Http { .. }, false) => Mode::Http,
            (Target::Http { .. }, true) => Mode::HttpNewConnection,
            (Target::Tcp { .. }, false) => Mode::Tcp,
            (Target::Tcp { .. }, true) => Mode::TcpNewConnection,
            (Target::Bulk { .. }, _) => Mode::Bulk,
        }
    }

    /// Check the settings for consistency.
    pub fn validate(&self) -> Result<(), LoadError> {
        if self.connections == 0 {
            return Err(invalid("--connections must be at least 1"));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(invalid("--rate must be a positive number"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("--timeout must be positive"));
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err(invalid("--duration must be positive"));
        }
        match &self.target {
            Target::Tcp { size, .. } if *size == 0 || *size > MAX_TCP_SIZE => {
                return Err(invalid(format!("--size must be between 1 and {MAX_TCP_SIZE} bytes")));
            }
            Target::Bulk { .. } if self.new_connection || self.rate.is_some() => {
                return Err(invalid("--bulk cannot be combined with --new-connection or --rate"));
            }
            Target::Bulk { .. } if self.requests.is_some() => {
                return Err(invalid("--bulk runs for a duration; --requests does not apply"));
            }
            _ => {}
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> LoadError {
    LoadError::InvalidArgument(message.into())
}

/// Errors that prevent a load run (failed requests are reported, not errors).
///
/// The underlying cause, where there is one, is the error's `source()`.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid arguments: {0}")]
    InvalidArgument(String),
    #[error("cannot resolve {target}")]
    Resolve {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("{target} resolved to no address")]
    NoAddress { target: String },
    #[error("no connection could be established to {target} ({addr})")]
    NoConnection {
        target: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot build the tokio runtime")]
    Runtime(#[source] io::Error),
    #[error("a load task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Entry point of `ambit app load`: run, then print the report on standard output.
///
/// Failed requests do not make it fail; bad arguments and an unreachable target do.
pub fn main(args: LoadArgs) -> anyhow::Result<()> {
    let config = LoadConfig::from_args(&args)?;
    let threads = args.threads.map_or(DEFAULT_THREADS, usize::from);
    let runtime = crate::runtime(threads).map_err(LoadError::Runtime)?;
    let report = runtime.block_on(run(config))?;
    match args.output {
        OutputFormat::Table => println!("{}", report.to_table()),
        OutputFormat::Json => println!("{}", report.to_json()),
    }
    Ok(())
}

/// Run the load described by `config` on the current runtime and report.
///
/// The target is resolved once. Keep-alive connections (and the bulk streams)
/// are opened before the clock starts; `LoadError::NoConnection` is returned
/// when none of them (or, with `new_connection`, a probe connection) can be
/// established. Each connection is then driven by its own task.
pub async fn run(config: LoadConfig) -> Result<Report, LoadError> {
    config.validate()?;
    let mode = config.mode();
    let target = config.target.display();
    let addr = resolve(&config.target).await?;
    let connections = config.connections;

    let initial = if config.new_connection {
        // A probe only: every request opens its own connection.
        let probe = worker::connect(addr, config.timeout).await;
        let probe = probe.map_err(|source| LoadError::NoConnection {
            target: target.clone(),
            addr,
            source,
        })?;
        drop(probe);
        Vec::new()
    } else {
        open_connections(addr, connections, config.timeout, &target).await?
    };

    tracing::info!(%target, %addr, mode = mode.as_str(), connections, "load starting");
    let duration = match (config.duration, config.requests) {
        (None, None) => Some(DEFAULT_DURATION),
        (duration, _) => duration,
    };
    let interval = match config.rate {
        Some(rate) => Some(
            Duration::try_from_secs_f64(connections as f64 / rate).map_err(|_| invalid("--rate is out of range"))?,
        ),
        None => None,
    };
    let is_bulk = matches!(config.target, Target::Bulk { .. });
    let proto = match &config.target {
        Target::Http { url, headers } => Proto::Http {
            request: http1::build_request(url, headers, config.new_connection),
        },
        Target::Tcp { size, .. } => Proto::Tcp {
            payload: tcp_payload(*size),
        },
        // Bulk streams send no requests; `bulk_loop` does not look at the protocol.
        Target::Bulk { .. } => Proto::Tcp { payload: Bytes::new() },
    };
    let run_start = Instant::now();
    let measure_start = run_start + config.warmup;
    let plan = Arc::new(Plan {
        addr,
        proto,
        new_connection: config.new_connection,
        timeout: config.timeout,
        connections,
        run_start,
        measure_start,
        deadline: duration.map(|d| measure_start + d),
        interval,
    });

    let mut initial = initial.into_iter();
    let mut tasks = Vec::with_capacity(connections);
    for index in 0..connections {
        let conn = initial.next().flatten();
        let plan = plan.clone();
        let task = if is_bulk {
            tokio::spawn(worker::bulk_loop(plan, conn))
        } else {
            let quota = config.requests.map(|n| {
                let (share, rest) = (n / connections as u64, n % connections as u64);
                share + u64::from((index as u64) < rest)
            });
            tokio::spawn(worker::request_loop(plan, index, quota, conn))
        };
        tasks.push(task);
    }
    let mut all = Vec::with_capacity(tasks.len());
    for task in tasks {
        all.push(task.await.map_err(LoadError::Task)?);
    }
    Ok(build_report(&config, mode, target, measure_start, all))
}

/// Resolve the target's host once.
async fn resolve(target: &Target) -> Result<SocketAddr, LoadError> {
    let name = target.display();
    let resolved = match target {
        Target::Http { url, .. } => tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map(|addrs| addrs.collect::<Vec<_>>()),
        Target::Tcp { addr, .. } | Target::Bulk { addr } => tokio::net::lookup_host(addr.as_str())
            .await
            .map(|addrs| addrs.collect::<Vec<_>>()),
    };
    let addrs = resolved.map_err(|source| LoadError::Resolve {
        target: name.clone(),
        source,
    })?;
    addrs.first().copied().ok_or(LoadError::NoAddress { target: name })
}

/// Open the keep-alive connections concurrently; an error when none could be opened.
async fn open_connections(
    addr: SocketAddr,
    connections: usize,
    timeout: Duration,
    target: &str,
) -> Result<Vec<Option<TcpStream>>, LoadError> {
    let results = futures::future::join_all((0..connections).map(|_| worker::connect(addr, timeout))).await;
    let mut first_error = None;
    let mut streams = Vec::with_capacity(connections);
    for result in results {
        match result {
            Ok(stream) => streams.push(Some(stream)),
            Err(error) => {
                tracing::warn!(%addr, %error, "connect failed");
                first_error.get_or_insert(error);
                streams.push(None);
            }
        }
    }
    match first_error {
        Some(source) if streams.iter().all(Option::is_none) => Err(LoadError::NoConnection {
            target: target.to_owned(),
            addr,
            source,
        }),
        _ => Ok(streams),
    }
}

/// A recognisable TCP request payload.
fn tcp_payload(size: usize) -> Bytes {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>().into()
}

/// Merge the per-connection statistics into the report.
fn build_report(
    config: &LoadConfig,
    mode: Mode,
    target: String,
    measure_start: Instant,
    stats: Vec<WorkerStats>,
) -> Report {
    let mut histogram = new_histogram();
    let mut requests = 0;
    let mut bytes = 0;
    let mut errors_by_kind = ErrorsByKind::default();
    let mut errors_by_status = std::collections::BTreeMap::new();
    let mut last_end = None;
    for worker in &stats {
        // Histograms with the same bounds always merge.
        let _ = histogram.add(&worker.histogram);
        requests += worker.ok;
        bytes += worker.bytes;
        errors_by_kind.add(&worker.errors);
        for (status, count) in &worker.statuses {
            *errors_by_status.entry(*status).or_insert(0) += count;
        }
        last_end = last_end.max(worker.last_end);
    }
    let elapsed = last_end
        .unwrap_or(measure_start)
        .saturating_duration_since(measure_start)
        .as_secs_f64();
    let per_sec = |n: u64| {
        if elapsed > 0.0 { n as f64 / elapsed } else { 0.0 }
    };
    Report {
        mode,
        target,
        connections: config.connections,
        rate: config.rate,
        requests,
        errors: errors_by_kind.total(),
        errors_by_kind,
        errors_by_status,
        duration_s: elapsed,
        requests_per_sec: per_sec(requests),
        bytes,
        bytes_per_sec: per_sec(bytes),
        latency_us: summarize(&histogram),
    }
}

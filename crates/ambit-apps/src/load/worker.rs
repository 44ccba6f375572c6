//! Per-connection load tasks: their send schedule, the request/response and bulk loops, and
//! the statistics each task keeps to itself until the run ends.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::http1::{self, ExchangeError, READ_CHUNK};
use super::report::{ErrorsByKind, new_histogram};

/// Size of the chunks written in bulk mode.
pub(crate) const BULK_CHUNK: usize = 64 * 1024;
static BULK_DATA: [u8; BULK_CHUNK] = [b'b'; BULK_CHUNK];

/// Pause after a failed connect in closed-loop mode, so that a dead target is not hammered.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// What one request is.
#[derive(Debug)]
pub(crate) enum Proto {
    /// Send this pre-rendered HTTP/1.1 request, read one response.
    Http { request: Bytes },
    /// Send this payload, read the same bytes back.
    Tcp { payload: Bytes },
}

/// Read-only description of the run shared by all connection tasks.
#[derive(Debug)]
pub(crate) struct Plan {
    pub addr: SocketAddr,
    pub proto: Proto,
    pub new_connection: bool,
    pub timeout: Duration,
    pub connections: usize,
    /// When the schedule starts (warm-up included).
    pub run_start: Instant,
    /// Requests intended to start before this are warm-up and not counted.
    pub measure_start: Instant,
    /// No request is started at or after this.
    pub deadline: Option<Instant>,
    /// Per-connection interval between intended send times (fixed-rate mode).
    pub interval: Option<Duration>,
}

/// Statistics of one connection task, merged when the run ends.
#[derive(Debug)]
pub(crate) struct WorkerStats {
    pub histogram: Histogram<u64>,
    pub ok: u64,
    pub bytes: u64,
    pub errors: ErrorsByKind,
    pub statuses: BTreeMap<u16, u64>,
    /// Completion time of the last counted request.
    pub last_end: Option<Instant>,
}

impl WorkerStats {
    pub(crate) fn new() -> Self {
        Self {
            histogram: new_histogram(),
            ok: 0,
            bytes: 0,
            errors: ErrorsByKind::default(),
            statuses: BTreeMap::new(),
            last_end: None,
        }
    }

    fn fail(&mut self, failure: &Failure) {
        match failure {
            Failure::Connect(_) => self.errors.connect += 1,
            Failure::Timeout => self.errors.timeout += 1,
            Failure::Io(_) => self.errors.io += 1,
            Failure::Protocol(_) => self.errors.protocol += 1,
        }
    }
}

/// Why a request failed (HTTP status errors are not failures of the exchange).
#[derive(Debug)]
enum Failure {
    Connect(io::Error),
    Timeout,
    Io(io::Error),
    Protocol(&'static str),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(error) => write!(f, "connect: {error}"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Io(error) => write!(f, "io: {error}"),
            Failure::Protocol(what) => write!(f, "protocol: {what}"),
        }
    }
}

impl From<ExchangeError> for Failure {
    fn from(error: ExchangeError) -> Self {
        match error {
            ExchangeError::Io(error) => Failure::Io(error),
            ExchangeError::Protocol(what) => Failure::Protocol(what),
        }
    }
}

/// A completed exchange.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    bytes: u64,
    status: Option<u16>,
}

/// Open a TCP connection with `TCP_NODELAY`.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection's request/response loop.
struct Worker {
    plan: Arc<Plan>,
    conn: Option<TcpStream>,
    /// HTTP read buffer.
    buf: BytesMut,
    /// TCP echo read buffer.
    echo: Vec<u8>,
    stats: WorkerStats,
}

impl Worker {
    /// Run one exchange, (re)connecting first if needed.
    async fn attempt(&mut self) -> Result<Outcome, Failure> {
        let plan = &*self.plan;
        let stream = match &mut self.conn {
            Some(stream) => stream,
            None => {
                let stream = connect(plan.addr, plan.timeout).await.map_err(Failure::Connect)?;
                self.buf.clear();
                self.conn.insert(stream)
            }
        };
        let result = match &plan.proto {
            Proto::Http { request } => http1::exchange(stream, &mut self.buf, request)
                .await
                .map(|info| {
                    (
                        Outcome {
                            bytes: info.body_bytes,
                            status: Some(info.status),
                        },
                        info.keep_alive,
                    )
                })
                .map_err(Failure::from),
            Proto::Tcp { payload } => tcp_exchange(stream, payload, &mut self.echo)
                .await
                .map(|bytes| (Outcome { bytes, status: None }, true)),
        };
        match result {
            Ok((outcome, keep_alive)) => {
                if !keep_alive || plan.new_connection {
                    self.conn = None;
                }
                Ok(outcome)
            }
            Err(failure) => {
                self.conn = None;
                Err(failure)
            }
        }
    }
}

/// Send `payload` and read it back; reading runs concurrently with writing so
/// that payloads larger than the socket buffers cannot deadlock.
async fn tcp_exchange(stream: &mut TcpStream, payload: &[u8], echo: &mut Vec<u8>) -> Result<u64, Failure> {
    echo.resize(payload.len(), 0);
    let (mut reader, mut writer) = stream.split();
    tokio::try_join!(writer.write_all(payload), reader.read_exact(echo)).map_err(Failure::Io)?;
    if echo[..] != payload[..] {
        return Err(Failure::Protocol("echoed bytes differ from the request"));
    }
    Ok(payload.len() as u64)
}

/// Request/response loop of connection `index`, counting at most `quota` measured requests.
///
/// In fixed-rate mode, request `k` of this connection is intended to start at
/// `run_start + offset + k * interval` (offsets spread the connections over one
/// interval). When the connection is still busy with an earlier request at that
/// time, latency is measured from the intended time, not from when the request
/// could actually be sent: a stalled server shows up as latency instead of
/// silently lowering the rate (no coordinated omission). When the connection is
/// idle, it is measured from the actual send, so timer granularity is not
/// counted as server latency.
pub(crate) async fn request_loop(
    plan: Arc<Plan>,
    index: usize,
    quota: Option<u64>,
    conn: Option<TcpStream>,
) -> WorkerStats {
    let schedule = plan.interval.map(|interval| {
        let offset = interval.mul_f64(index as f64 / plan.connections as f64);
        (plan.run_start + offset, interval)
    });
    let mut worker = Worker {
        plan,
        conn,
        buf: BytesMut::with_capacity(READ_CHUNK),
        echo: Vec::new(),
        stats: WorkerStats::new(),
    };
    let mut sequence: u64 = 0;
    let mut counted: u64 = 0;
    loop {
        if quota.is_some_and(|quota| counted >= quota) {
            break;
        }
        let now = Instant::now();
        let start = match schedule {
            Some((first, interval)) => first + interval.mul_f64(sequence as f64),
            None => now,
        };
        sequence += 1;
        let plan = &*worker.plan;
        if plan.deadline.is_some_and(|deadline| start >= deadline) {
            break;
        }
        let latency_from = if start > now {
            tokio::time::sleep_until(start).await;
            // The connection sat idle until its turn: lateness past `start` is the timer's (tokio's wheel has
            // 1 ms granularity), not the server's, so measure from the actual send.
            Instant::now()
        } else {
            // Behind schedule: the previous response held this request up, so measure from when it was due.
            start
        };
        let timeout = plan.timeout;
        let measure_start = plan.measure_start;
        let result = match tokio::time::timeout(timeout, worker.attempt()).await {
            Ok(result) => result,
            Err(_) => {
                worker.conn = None;
                Err(Failure::Timeout)
            }
        };
        let end = Instant::now();
        let connect_failed = matches!(result, Err(Failure::Connect(_)));
        if start >= measure_start {
            counted += 1;
            record(&mut worker.stats, result, latency_from, end);
        }
        if connect_failed && schedule.is_none() {
            tokio::time::sleep(CONNECT_BACKOFF).await;
        }
    }
    worker.stats
}

fn record(stats: &mut WorkerStats, result: Result<Outcome, Failure>, start: Instant, end: Instant) {
    stats.last_end = Some(end);
    match result {
        Ok(Outcome {
            status: Some(status), ..
        }) if !(200..400).contains(&status) => {
            stats.errors.status += 1;
            *stats.statuses.entry(status).or_default() += 1;
        }
        Ok(outcome) => {
            stats.ok += 1;
            stats.bytes += outcome.bytes;
            let micros = u64::try_from(end.duration_since(start).as_micros()).unwrap_or(u64::MAX);
            stats.histogram.saturating_record(micros);
        }
        Err(failure) => {
            tracing::debug!(%failure, "request failed");
            stats.fail(&failure);
        }
    }
}

/// Bulk loop: write 64 KiB chunks until the deadline, half-close, then read the
/// sink's byte count. Bytes written before `measure_start` are subtracted from it.
pub(crate) async fn bulk_loop(plan: Arc<Plan>, conn: Option<TcpStream>) -> WorkerStats {
    let mut stats = WorkerStats::new();
    let deadline = plan.deadline.unwrap_or(plan.measure_start);
    let mut stream = match conn {
        Some(stream) => stream,
        None => match connect(plan.addr, plan.timeout).await {
            Ok(stream) => stream,
            Err(error) => {
                stats.fail(&Failure::Connect(error));
                return stats;
            }
        },
    };
    let mut sent: u64 = 0;
    let mut sent_in_warmup: Option<u64> = None;
    loop {
        let now = Instant::now();
        if sent_in_warmup.is_none() && now >= plan.measure_start {
            sent_in_warmup = Some(sent);
        }
        if now >= deadline {
            break;
        }
        // `write` is cancel-safe: when the deadline interrupts it, nothing was written.
        match tokio::time::timeout_at(deadline, stream.write(&BULK_DATA)).await {
            Err(_) => break,
            Ok(Ok(0)) => {
                stats.fail(&Failure::Io(io::ErrorKind::WriteZero.into()));
                return stats;
            }
            Ok(Ok(n)) => sent += n as u64,
            Ok(Err(error)) => {
                stats.fail(&Failure::Io(error));
                return stats;
            }
        }
    }
    let sent_in_warmup = sent_in_warmup.unwrap_or(sent);
    let confirmed = tokio::time::timeout(plan.timeout, async {
        stream.shutdown().await?;
        let mut answer = Vec::with_capacity(24);
        (&mut stream).take(64).read_to_end(&mut answer).await?;
        Ok::<_, io::Error>(answer)
    })
    .await;
    let end = Instant::now();
    let answer = match confirmed {
        Err(_) => {
            stats.fail(&Failure::Timeout);
            return stats;
        }
        Ok(Err(error)) => {
            stats.fail(&Failure::Io(error));
            return stats;
        }
        Ok(Ok(answer)) => answer,
    };
    let Some(count) = std::str::from_utf8(&answer)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .and_then(|s| s.parse::<u64>().ok())
    else {
        stats.fail(&Failure::Protocol("sink did not answer a byte count"));
        return stats;
    };
    stats.last_end = Some(end);
    stats.bytes = count.saturating_sub(sent_in_warmup);
    if count == sent {
        stats.ok = 1;
    } else {
        tracing::debug!(sent, count, "sink confirmed a different byte count");
        stats.fail(&Failure::Protocol("sink byte count differs from bytes sent"));
    }
    stats
}

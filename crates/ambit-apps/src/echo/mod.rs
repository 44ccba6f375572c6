//! `ambit app echo`: an HTTP (HTTP/1.1 + h2c), gRPC (h2c), TCP-echo and sink server that reports what it saw.
//!
//! HTTP responses describe the pod identity, the peer and local addresses, the
//! request line and headers; query parameters `status`, `delay_ms`, `size` and
//! `format` shape the answer (see [`serve`]). gRPC replies (`ambit.echo.v1.Echo`)
//! name the pod and the peer. Both can fail a share of requests on purpose
//! ([`FailRate`]) to exercise retries.

mod fail;
mod grpc;
mod http;
mod identity;
mod stream;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use self::fail::FailRate;
pub use self::grpc::MAX_STREAM_REPLIES;
pub use self::http::{MAX_DELAY_MS, MAX_FILLER};
pub use self::identity::{Identity, hostname};
pub use self::stream::READ_BUFFER;

use self::grpc::GrpcEcho;
use self::http::{ConnInfo, HttpShared};

/// Address used when no listener option is given.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";

/// Command-line options of `ambit app echo`.
///
/// The runtime uses `--threads` worker threads, by default one per CPU: the echo
/// server is the measured workload and should not be the bottleneck.
#[derive(clap::Args, Debug, Clone)]
pub struct EchoArgs {
    /// HTTP/1.1 and h2c (prior knowledge) listener; repeatable. Defaults to
    /// 0.0.0.0:8080 when neither --http, --grpc, --tcp nor --sink is given.
    #[arg(long = "http", value_name = "ADDR")]
    pub http: Vec<SocketAddr>,
    /// gRPC (h2c, prior knowledge) listener serving `ambit.echo.v1.Echo`; repeatable.
    #[arg(long = "grpc", value_name = "ADDR")]
    pub grpc: Vec<SocketAddr>,
    /// Raw TCP echo listener (every byte read is written back); repeatable.
    #[arg(long = "tcp", value_name = "ADDR")]
    pub tcp: Vec<SocketAddr>,
    /// Sink listener: discards input, answers the byte count after the client
    /// half-closes; repeatable.
    #[arg(long = "sink", value_name = "ADDR")]
    pub sink: Vec<SocketAddr>,
    /// Runtime worker threads [default: number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Percentage of HTTP requests (0 to 100, decimals allowed) answered 503 on
    /// purpose, decided independently per request. gRPC calls fail by their
    /// request's `fail_percent` instead.
    #[arg(long, value_name = "P", default_value = "0")]
    pub fail_percent: FailRate,
}

impl EchoArgs {
    /// The listeners these options ask for, applying the `--http 0.0.0.0:8080` default.
    pub fn listen_specs(&self) -> Vec<ListenSpec> {
        let mut specs: Vec<ListenSpec> = self
            .http
            .iter()
            .map(|&addr| ListenSpec::new(ListenerKind::Http, addr))
            .chain(self.grpc.iter().map(|&addr| ListenSpec::new(ListenerKind::Grpc, addr)))
            .chain(self.tcp.iter().map(|&addr| ListenSpec::new(ListenerKind::Tcp, addr)))
            .chain(self.sink.iter().map(|&addr| ListenSpec::new(ListenerKind::Sink, addr)))
            .collect();
        if specs.is_empty() {
            specs.push(ListenSpec::new(
                ListenerKind::Http,
                SocketAddr::from(([0, 0, 0, 0], 8080)),
            ));
        }
        specs
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// HTTP/1.1 keep-alive and h2c with prior knowledge on the same port.
    Http,
    /// gRPC `ambit.echo.v1.Echo` over h2c with prior knowledge.
    Grpc,
    /// Raw TCP echo.
    Tcp,
    /// Read-and-discard, answering the byte count.
    Sink,
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerKind::Http => "http",
            ListenerKind::Grpc => "grpc",
            ListenerKind::Tcp => "tcp",
            ListenerKind::Sink => "sink",
        })
    }
}

/// One listener to open: its kind and address (port 0 picks a free port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSpec {
    pub kind: ListenerKind,
    pub addr: SocketAddr,
}

impl ListenSpec {
    pub fn new(kind: ListenerKind, addr: SocketAddr) -> Self {
        Self { kind, addr }
    }
}

/// A bound listener, ready for [`serve`].
#[derive(Debug)]
pub struct EchoListener {
    pub kind: ListenerKind,
    pub listener: TcpListener,
    /// Connections accepted so far (see [`EchoHandle::accepted`]).
    accepted: Arc<AtomicU64>,
}

impl EchoListener {
    /// Bind the address of `spec`.
    pub async fn bind(spec: ListenSpec) -> Result<Self, EchoError> {
        let listener = TcpListener::bind(spec.addr).await.map_err(|source| EchoError::Bind {
            addr: spec.addr,
            source,
        })?;
        Ok(Self {
            kind: spec.kind,
            listener,
            accepted: Arc::default(),
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<ListenSpec, EchoError> {
        let addr = self.listener.local_addr().map_err(EchoError::LocalAddr)?;
        Ok(ListenSpec::new(self.kind, addr))
    }
}

/// Server settings that are not listeners.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Identity reported in responses and the `x-echo-*` headers.
    pub identity: Identity,
    /// How long to let open connections finish after shutdown before dropping them.
    pub shutdown_grace: Duration,
    /// Share of HTTP requests answered 503 on purpose.
    pub fail: FailRate,
}

impl EchoConfig {
    /// Settings with the given identity, a 1 s shutdown grace period and no injected failures.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            shutdown_grace: Duration::from_secs(1),
            fail: FailRate::NEVER,
        }
    }

    /// These settings, failing HTTP requests at `fail`.
    pub fn with_fail_rate(self, fail: FailRate) -> Self {
        Self { fail, ..self }
    }

    /// Settings with the identity from `POD_NAME`, `POD_NAMESPACE`, `NODE_NAME`, `POD_IP`.
    pub fn from_env() -> Self {
        Self::new(Identity::from_env())
    }
}

/// Errors of the echo server; the underlying cause is the error's `source()`.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the local address of a listener")]
    LocalAddr(#[source] io::Error),
    #[error("cannot install signal handlers")]
    Signal(#[source] io::Error),
    #[error("cannot build the tokio runtime")]
    Runtime(#[source] io::Error),
    #[error("the echo server task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Serve `listeners` until `shutdown` resolves.
///
/// HTTP listeners speak HTTP/1.1 (keep-alive) and h2c with prior knowledge. A
/// response describes the request; the query parameters `status=NNN`
/// (100..=599, else 400), `delay_ms=N` (capped at [`MAX_DELAY_MS`]), `size=N`
/// (filler bytes, capped at [`MAX_FILLER`]) and `format=json|text` shape it;
/// `accept: application/json` also selects JSON. With [`EchoConfig::fail`], that
/// share of HTTP requests is answered 503 with a body saying the failure was
/// injected and naming the pod.
///
/// gRPC listeners serve `ambit.echo.v1.Echo` over h2c: `Unary` echoes the
/// message, `ServerStream` sends `count` replies (at most [`MAX_STREAM_REPLIES`]);
/// every reply names the pod and the connection's peer, and a request's
/// `fail_percent` fails that share of calls with UNAVAILABLE.
///
/// On shutdown the listeners close at once, HTTP connections are shut down
/// gracefully, raw TCP connections are closed, and the call returns when all
/// connections ended or [`EchoConfig::shutdown_grace`] elapsed.
pub async fn serve(
    config: EchoConfig,
    listeners: Vec<EchoListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EchoError> {
    let shared = Arc::new(HttpShared::new(config.identity, config.fail));
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` returns `None` once all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);

    let mut accept_tasks = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let spec = listener.local_addr()?;
        tracing::info!(addr = %spec.addr, kind = %spec.kind, "echo listening");
        let acceptor = Acceptor {
            listener,
            shared: shared.clone(),
            builder: builder.clone(),
            stop: stop_rx.clone(),
            alive: alive_tx.clone(),
        };
        accept_tasks.push(tokio::spawn(acceptor.run()));
    }
    drop(alive_tx);

    shutdown.await;
    tracing::debug!("echo shutting down");
    let _ = stop_tx.send(true);
    for task in accept_tasks {
        if let Err(error) = task.await {
            tracing::warn!(%error, "echo accept task failed");
        }
    }
    if tokio::time::timeout(config.shutdown_grace, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::debug!("echo connections still open after the grace period; dropping them");
    }
    Ok(())
}

/// A running in-process echo server (see [`spawn`]). Dropping it stops the server.
#[derive(Debug)]
pub struct EchoHandle {
    addrs: Vec<ListenSpec>,
    /// Accepted-connection counters, one per listener in `addrs` order.
    accepted: Vec<Arc<AtomicU64>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), EchoError>>,
}

impl EchoHandle {
    /// The bound listeners, in the order requested.
    pub fn addrs(&self) -> &[ListenSpec] {
        &self.addrs
    }

    /// The address of the first listener of `kind`.
    pub fn addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.addrs.iter().find(|s| s.kind == kind).map(|s| s.addr)
    }

    /// TCP connections accepted so far by the listeners of `kind`: tells how many connections a client opened.
    pub fn accepted(&self, kind: ListenerKind) -> u64 {
        self.addrs
            .iter()
            .zip(&self.accepted)
            .filter(|(spec, _)| spec.kind == kind)
            .map(|(_, count)| count.load(Ordering::Relaxed))
            .sum()
    }

    /// Stop the server and wait until it has shut down.
    pub async fn shutdown(mut self) -> Result<(), EchoError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(EchoError::Task)?
    }
}

impl Drop for EchoHandle {
    fn drop(&mut self) {
        // Dropping the sender resolves the server's shutdown future.
        self.stop.take();
    }
}

/// Bind `specs` and serve them on the current runtime in a background task.
pub async fn spawn(config: EchoConfig, specs: &[ListenSpec]) -> Result<EchoHandle, EchoError> {
    let mut listeners = Vec::with_capacity(specs.len());
    let mut addrs = Vec::with_capacity(specs.len());
    let mut accepted = Vec::with_capacity(specs.len());
    for spec in specs {
        let listener = EchoListener::bind(*spec).await?;
        addrs.push(listener.local_addr()?);
        accepted.push(listener.accepted.clone());
        listeners.push(listener);
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(config, listeners, async move {
        let _ = stopped.await;
    }));
    Ok(EchoHandle {
        addrs,
        accepted,
        stop: Some(stop),
        task,
    })
}

/// Entry point of `ambit app echo`: serve until SIGTERM or SIGINT, then exit.
pub fn main(args: EchoArgs) -> anyhow::Result<()> {
    let threads = args.threads.map(usize::from).unwrap_or_else(crate::available_cpus);
    let runtime = crate::runtime(threads).map_err(EchoError::Runtime)?;
    let specs = args.listen_specs();
    runtime.block_on(async {
        let mut listeners = Vec::with_capacity(specs.len());
        for spec in &specs {
            listeners.push(EchoListener::bind(*spec).await?);
        }
        let shutdown = crate::shutdown_signal().map_err(EchoError::Signal)?;
        let config = EchoConfig::from_env().with_fail_rate(args.fail_percent);
        serve(config, listeners, shutdown).await
    })?;
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// Accept loop of one listener.
struct Acceptor {
    listener: EchoListener,
    shared: Arc<HttpShared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
}

impl Acceptor {
    async fn run(mut self) {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.stop.changed() => return,
                accepted = self.listener.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            self.listener.accepted.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            let conn = Connection {
                stream,
                peer,
                stop: self.stop.clone(),
                _alive: self.alive.clone(),
            };
            match self.listener.kind {
                ListenerKind::Http => {
                    tokio::spawn(conn.http(self.shared.clone(), self.builder.clone()));
                }
                ListenerKind::Grpc => {
                    tokio::spawn(conn.grpc(self.shared.pod().to_owned()));
                }
                ListenerKind::Tcp => {
                    tokio::spawn(conn.raw(ListenerKind::Tcp));
                }
                ListenerKind::Sink => {
                    tokio::spawn(conn.raw(ListenerKind::Sink));
                }
            }
        }
    }
}

/// One accepted connection.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    /// Held for the connection's lifetime so that [`serve`] can wait for it.
    _alive: mpsc::Sender<()>,
}

impl Connection {
    async fn http(mut self, shared: Arc<HttpShared>, builder: Arc<auto::Builder<TokioExecutor>>) {
        let local = match self.stream.local_addr() {
            Ok(local) => local,
            Err(error) => {
                tracing::debug!(%error, "cannot read the local address of a connection");
                return;
            }
        };
        let info = Arc::new(ConnInfo::new(shared, self.peer, local));
        let service = service_fn(move |req| http::handle(req, info.clone()));
        let conn = builder.serve_connection(TokioIo::new(self.stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = self.stop.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(peer = %self.peer, %error, "http connection ended with an error");
        }
    }

    async fn grpc(mut self, pod: String) {
        let service = TowerToHyperService::new(GrpcEcho::new(pod, self.peer).into_server());
        let builder = http2::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection(TokioIo::new(self.stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = self.stop.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(peer = %self.peer, %error, "grpc connection ended with an error");
        }
    }

    async fn raw(mut self, kind: ListenerKind) {
        let result = tokio::select! {
            result = async {
                match kind {
                    ListenerKind::Sink => stream::sink(self.stream).await,
                    _ => stream::echo(self.stream).await,
                }
            } => result,
            _ = self.stop.changed() => return,
        };
        if let Err(error) = result {
            tracing::debug!(peer = %self.peer, %kind, %error, "connection ended with an error");
        }
    }
}

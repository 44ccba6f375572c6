//! Fixtures for the HBONE tests: a CA and workload certificates, loopback applications (echo, count), a recording
//! handler, a server with a counting accept loop, and a raw h2 client for requests the pool would never send.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ambit_hbone::drain::{self, DrainTrigger};
use ambit_hbone::{
    Authority, ConnectHandler, HboneServer, InboundRequest, PoolKey, Refusal, ServeError, ServerSettings, StreamStats,
};
use ambit_identity::ca::{CaConfig, CertificateAuthority};
use ambit_identity::cert::TrustBundle;
use ambit_identity::tls;
use ambit_types::{Identity, TrustDomain};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

/// Authority port the handler maps to the echo application.
pub const ECHO: u16 = 7;
/// Authority port the handler maps to the count application (reads to EOF, answers the byte count, closes).
pub const COUNT: u16 = 9;

pub fn identity(ns: &str, sa: &str) -> Identity {
    format!("spiffe://cluster.local/ns/{ns}/sa/{sa}").parse().unwrap()
}

pub fn server_id() -> Identity {
    identity("server", "srv")
}

pub fn client_id() -> Identity {
    identity("client", "cli")
}

pub fn target(port: u16) -> Authority {
    format!("10.1.2.3:{port}").parse().unwrap()
}

/// A CA in a temporary directory.
pub struct Pki {
    _dir: tempfile::TempDir,
    ca: CertificateAuthority,
    bundle: TrustBundle,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = CaConfig::new(TrustDomain::new("cluster.local").unwrap());
        let ca = CertificateAuthority::load_or_create(dir.path(), config, SystemTime::now()).unwrap();
        let bundle = ca.trust_bundle();
        Self { _dir: dir, ca, bundle }
    }

    pub fn server_tls(&self, id: &Identity) -> Arc<rustls::ServerConfig> {
        let cert = self.ca.issue(id, None, SystemTime::now()).unwrap();
        tls::server_config(&cert, &self.bundle).unwrap()
    }

    pub fn client_tls(&self, source: &Identity, expected: Vec<Identity>) -> Arc<rustls::ClientConfig> {
        let cert = self.ca.issue(source, None, SystemTime::now()).unwrap();
        tls::client_config(&cert, &self.bundle, expected).unwrap()
    }
}

/// Records every request it sees; serves the echo and count applications; refuses authority ports 400, 401 and 503
/// with those statuses.
pub struct TestHandler {
    apps: HashMap<u16, SocketAddr>,
    pub requests: Mutex<Vec<InboundRequest>>,
    stats: mpsc::UnboundedSender<StreamStats>,
}

impl ConnectHandler for TestHandler {
    type Upstream = TcpStream;

    async fn connect(&self, request: InboundRequest) -> Result<TcpStream, Refusal> {
        let port = request.authority.port();
        self.requests.lock().unwrap().push(request);
        match port {
            400 => Err(Refusal::BadRequest("test refusal".into())),
            401 => Err(Refusal::Denied("test refusal".into())),
            503 => Err(Refusal::Unavailable("test refusal".into())),
            port => {
                let app = self.apps.get(&port).copied();
                let app = app.ok_or_else(|| Refusal::AppConnect(std::io::ErrorKind::ConnectionRefused.into()))?;
                TcpStream::connect(app).await.map_err(Refusal::AppConnect)
            }
        }
    }

    fn completed(&self, _upstream: TcpStream, stats: StreamStats) {
        let _ = self.stats.send(stats);
    }
}

impl TestHandler {
    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// A server on loopback with its own accept loop that counts connections and keeps their errors.
pub struct Harness {
    pub pki: Pki,
    pub addr: SocketAddr,
    pub server: HboneServer<TestHandler>,
    pub accepted: Arc<AtomicUsize>,
    /// Connections whose `serve_connection` has returned.
    pub ended: Arc<AtomicUsize>,
    pub errors: Arc<Mutex<Vec<ServeError>>>,
    pub stats: mpsc::UnboundedReceiver<StreamStats>,
    pub drain: DrainTrigger,
    pub server_tls: Arc<rustls::ServerConfig>,
}

impl Harness {
    pub async fn start() -> Self {
        Self::with_settings(ServerSettings::default()).await
    }

    pub async fn with_settings(settings: ServerSettings) -> Self {
        let (server, stats, drain) = server(settings).await;
        let pki = Pki::new();
        let server_tls = pki.server_tls(&server_id());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let counters = Counters {
            accepted: accepted.clone(),
            ended: ended.clone(),
            errors: errors.clone(),
        };
        tokio::spawn(accept_loop(listener, server.clone(), Arc::clone(&server_tls), counters));
        Self {
            pki,
            addr,
            server,
            accepted,
            ended,
            errors,
            stats,
            drain,
            server_tls,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    pub fn key(&self, source: Identity) -> PoolKey {
        PoolKey {
            source,
            destination_identities: vec![server_id()],
            destination: self.addr,
        }
    }

    pub fn client_tls(&self, source: &Identity) -> Arc<rustls::ClientConfig> {
        self.pki.client_tls(source, vec![server_id()])
    }

    pub async fn next_stats(&mut self) -> StreamStats {
        tokio::time::timeout(Duration::from_secs(5), self.stats.recv())
            .await
            .unwrap()
            .unwrap()
    }
}

/// A server whose handler knows the echo and count applications.
pub async fn server(
    settings: ServerSettings,
) -> (
    HboneServer<TestHandler>,
    mpsc::UnboundedReceiver<StreamStats>,
    DrainTrigger,
) {
    let apps = HashMap::from([(ECHO, echo_app().await), (COUNT, count_app().await)]);
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = TestHandler {
        apps,
        requests: Mutex::new(Vec::new()),
        stats: tx,
    };
    let (trigger, watch) = drain::channel();
    (HboneServer::new(handler, settings, watch), rx, trigger)
}

#[derive(Clone)]
struct Counters {
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<ServeError>>>,
}

async fn accept_loop(
    listener: TcpListener,
    server: HboneServer<TestHandler>,
    tls: Arc<rustls::ServerConfig>,
    counters: Counters,
) {
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        let (server, tls, counters) = (server.clone(), Arc::clone(&tls), counters.clone());
        tokio::spawn(async move {
            let result = server.serve_connection(tcp, tls).await;
            if let Err(error) = result {
                counters.errors.lock().unwrap().push(error);
            }
            counters.ended.fetch_add(1, Ordering::SeqCst);
        });
    }
}

/// Echoes every byte, and half-closes after the client's EOF.
async fn echo_app() -> SocketAddr {
    serve_app(|mut tcp| async move {
        let (mut read, mut write) = tcp.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
        let _ = write.shutdown().await;
    })
    .await
}

/// Reads to EOF, then answers the number of bytes read as decimal text and closes.
async fn count_app() -> SocketAddr {
    serve_app(|mut tcp| async move {
        let mut all = Vec::new();
        tcp.read_to_end(&mut all).await.unwrap();
        tcp.write_all(all.len().to_string().as_bytes()).await.unwrap();
        tcp.shutdown().await.unwrap();
    })
    .await
}

async fn serve_app<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(tcp));
        }
    });
    addr
}

/// An h2 client on its own mTLS connection, for requests the pool never sends.
pub async fn raw_h2(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    send
}

/// Sends `request` on a raw connection and returns the response status.
pub async fn raw_status(send: &mut h2::client::SendRequest<Bytes>, request: http::Request<()>) -> http::StatusCode {
    let (response, _body) = send.send_request(request, true).unwrap();
    response.await.unwrap().status()
}

/// A CONNECT request whose `:authority` is `authority` verbatim.
pub fn raw_connect(authority: &str) -> http::Request<()> {
    http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(authority)
        .body(())
        .unwrap()
}

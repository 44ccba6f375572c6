//! Serving: one gRPC server over TLS with the control plane's own certificate (issued by its CA and reissued at
//! half-life) for the CA and delta ADS, TLS handshakes done off the accept loop, and a bounded drain on SIGTERM.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ambit_api::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use ambit_api::istio::v1::auth::istio_certificate_service_server::IstioCertificateServiceServer;
use ambit_identity::ca::{CaError, CertificateAuthority};
use ambit_identity::cert::WorkloadCertificate;
use ambit_identity::tls::{TlsError, server_config_optional_client_auth};
use futures::Stream;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::service::Routes;

use crate::ca::auth::{Authenticator, NodeIndex};
use crate::ca::control_identity;
use crate::ca::service::CaService;
use crate::xds::service::{AdsService, StreamCloser};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delay when reissuing the serving certificate failed.
const REISSUE_RETRY: Duration = Duration::from_secs(30);
/// Shortest wait between two issues of the serving certificate.
const MIN_REISSUE: Duration = Duration::from_millis(500);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot issue the control plane's serving certificate: {0}")]
    Issue(Box<CaError>),
    #[error("cannot build the serving TLS configuration: {0}")]
    Tls(#[from] TlsError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<CaError> for ServeError {
    fn from(err: CaError) -> Self {
        ServeError::Issue(Box::new(err))
    }
}

/// The current TLS configuration of the server; a new one replaces it when the certificate is reissued.
pub type ServingTls = watch::Receiver<Arc<ServerConfig>>;

/// Issues the control plane's serving certificate and keeps reissuing it at half-life, for as long as a receiver of
/// the returned configuration lives.
pub fn serving_tls(ca: Arc<CertificateAuthority>) -> Result<ServingTls, ServeError> {
    let (cert, config) = issue_serving(&ca)?;
    let (tx, rx) = watch::channel(config);
    tokio::spawn(reissue_loop(ca, cert, tx));
    Ok(rx)
}

fn issue_serving(ca: &CertificateAuthority) -> Result<(WorkloadCertificate, Arc<ServerConfig>), ServeError> {
    let identity = control_identity(&ca.config().trust_domain);
    let cert = ca.issue(&identity, None, SystemTime::now())?;
    let config = server_config_optional_client_auth(&cert, &ca.trust_bundle())?;
    Ok((cert, config))
}

async fn reissue_loop(ca: Arc<CertificateAuthority>, cert: WorkloadCertificate, tx: watch::Sender<Arc<ServerConfig>>) {
    let mut wait = reissue_in(&cert);
    loop {
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match issue_serving(&ca) {
            Ok((next, config)) => {
                tracing::info!(serial = next.serial(), "control plane serving certificate reissued");
                wait = reissue_in(&next);
                tx.send_replace(config);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?REISSUE_RETRY, "cannot reissue the serving certificate");
                wait = REISSUE_RETRY;
            }
        }
    }
}

/// At the certificate's half-life, but never sooner than half of the validity left: with a validity shorter than
/// the CA's clock-skew backdating, the half-life is already past and reissuing at once would spin.
fn reissue_in(cert: &WorkloadCertificate) -> Duration {
    let until = |at: SystemTime| at.duration_since(SystemTime::now()).unwrap_or_default();
    until(cert.refresh_at())
        .max(until(cert.not_after()) / 2)
        .max(MIN_REISSUE)
}

/// The gRPC services of the server: the CA, and delta ADS once added. A method the server does not implement
/// (such as ADS's state-of-the-world `StreamAggregatedResources`) is answered `UNIMPLEMENTED`.
pub struct Services {
    routes: Routes,
    closers: Vec<StreamCloser>,
}

impl Services {
    /// The CA alone.
    pub fn new<A: Authenticator, N: NodeIndex>(ca: CaService<A, N>) -> Self {
        Self {
            routes: Routes::new(IstioCertificateServiceServer::new(ca)),
            closers: Vec::new(),
        }
    }

    /// Adds `envoy.service.discovery.v3.AggregatedDiscoveryService`; its streams end when the server shuts down.
    pub fn with_ads<B: Authenticator>(mut self, ads: AdsService<B>) -> Self {
        self.closers.push(ads.closer());
        self.routes = self.routes.add_service(AggregatedDiscoveryServiceServer::new(ads));
        self
    }
}

impl<A: Authenticator, N: NodeIndex> From<CaService<A, N>> for Services {
    fn from(ca: CaService<A, N>) -> Self {
        Self::new(ca)
    }
}

/// Serves `services` (a [`CaService`] alone, or [`Services`]) on `listener` over TLS until `shutdown` completes, then
/// ends the xDS streams and drains open requests.
pub async fn serve(
    listener: TcpListener,
    tls: ServingTls,
    services: impl Into<Services>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let Services { routes, closers } = services.into();
    let shutdown = async move {
        shutdown.await;
        for closer in &closers {
            closer.close();
        }
    };
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(tls_incoming(listener, tls), shutdown)
        .await?;
    Ok(())
}

/// Accepted connections after a successful handshake. Handshakes run in their own tasks, so a slow client never
/// holds up the others; failed ones are logged and dropped.
pub fn tls_incoming(listener: TcpListener, tls: ServingTls) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> {
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, tx));
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn accept_loop(listener: TcpListener, tls: ServingTls, tx: mpsc::Sender<io::Result<TlsStream<TcpStream>>>) {
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let acceptor = TlsAcceptor::from(tls.borrow().clone());
                tokio::spawn(handshake(acceptor, tcp, peer, tx.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    tx: mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
) {
    let _ = tcp.set_nodelay(true);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let _ = tx.send(Ok(stream)).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

//! The client of the CA service, as node proxies use it: TLS to the control plane (verified against the mesh roots
//! and the control plane's SPIFFE identity, no client certificate), a bearer token, and one CSR per identity, sent
//! with `ImpersonatedIdentity`. Also what both ends of that conversation share: the metadata key and the control
//! plane's identity.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ambit_api::istio::v1::auth::IstioCertificateRequest;
use ambit_api::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use ambit_api::prost_types::{Struct, Value, value::Kind};
use ambit_identity::ca::{CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT};
use ambit_identity::cert::{CertError, CertificateRequest, TrustBundle, WorkloadCertificate};
use ambit_identity::manager::{CertificateSource, FetchError, FetchFuture};
use ambit_identity::tls::{TlsError, anonymous_client_config};
use ambit_types::{Identity, TrustDomain};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};

/// The metadata key a node proxy sets to the SPIFFE ID it asks a certificate for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// The port of the CA service when an address names none (Istio's).
pub const DEFAULT_PORT: u16 = 15012;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one CA answer: the certificate manager retries, but it must not hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("invalid CA address {0:?}: use host:port")]
    Address(String),
    #[error("the bearer token cannot be sent as a header value")]
    Token,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to the CA at {addr}: {}", error_chain(source))]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("the CA refused the request: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("the CA's answer is not usable: {0}")]
    Certificate(#[from] CertError),
}

/// The identity the control plane serves with: `spiffe://<trust domain>/ns/ambit-system/sa/ambit-control`.
pub fn control_identity(trust_domain: &TrustDomain) -> Identity {
    // Both segments are constant, valid Kubernetes names.
    Identity::new(
        trust_domain.clone(),
        CONTROL_PLANE_NAMESPACE,
        CONTROL_PLANE_SERVICE_ACCOUNT,
    )
    .unwrap_or_else(|e| unreachable!("constant control-plane identity rejected: {e}"))
}

/// A connection to the CA service. Cheap to clone; the channel reconnects by itself.
#[derive(Clone, Debug)]
pub struct CaClient {
    client: IstioCertificateServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
    bundle: TrustBundle,
    ttl: Option<Duration>,
}

impl CaClient {
    /// Connects to `addr` (`host:port`), accepting only a server whose chain verifies against `bundle` and whose
    /// identity is `server` (see [`control_identity`]). `token` is sent as `authorization: Bearer <token>`.
    pub async fn connect(
        addr: &str,
        bundle: TrustBundle,
        token: &str,
        server: Identity,
    ) -> Result<Self, CaClientError> {
        let authorization = format!("Bearer {token}").parse().map_err(|_| CaClientError::Token)?;
        let config = anonymous_client_config(&bundle, vec![server])?;
        let channel = connect_channel(addr, config).await?;
        Ok(Self {
            client: IstioCertificateServiceClient::new(channel),
            authorization,
            bundle,
            ttl: None,
        })
    }

    /// The validity asked for by [`CertificateSource::fetch`]; `None` (the default) lets the CA choose.
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Asks for a certificate for `identity` with a fresh key; `ttl` None lets the CA choose (its default TTL).
    /// The answer must verify against the trust bundle and name exactly `identity`.
    pub async fn create_certificate(
        &self,
        identity: &Identity,
        ttl: Option<Duration>,
    ) -> Result<WorkloadCertificate, CaClientError> {
        let csr = CertificateRequest::generate(identity)?;
        let mut request = tonic::Request::new(certificate_request(&csr.csr_pem, identity, ttl));
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let response = self.client.clone().create_certificate(request).await?.into_inner();
        let certificate = csr.into_certificate(&response.cert_chain)?;
        self.bundle.verify(certificate.chain(), SystemTime::now())?;
        Ok(certificate)
    }
}

/// The certificate manager's source in node proxies.
impl CertificateSource for CaClient {
    fn fetch(&self, identity: Identity) -> FetchFuture<'_> {
        Box::pin(async move {
            let result = self.create_certificate(&identity, self.ttl).await;
            result.map_err(|e| FetchError(format!("certificate for {identity}: {e}")))
        })
    }
}

/// A gRPC channel to `addr` (`host:port`) over TLS with `config` (which should offer ALPN h2). Connects now, so a
/// refused handshake is reported here; later the channel reconnects by itself.
pub async fn connect_channel(addr: &str, config: Arc<rustls::ClientConfig>) -> Result<Channel, CaClientError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| CaClientError::Address(addr.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    let connector = tower::service_fn(move |uri: Uri| dial(uri, config.clone()));
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|source| CaClientError::Connect {
            addr: addr.to_string(),
            source,
        })
}

/// The request a node proxy sends: CSR, validity in seconds (0 = the CA's default) and the impersonated identity.
pub fn certificate_request(csr_pem: &str, identity: &Identity, ttl: Option<Duration>) -> IstioCertificateRequest {
    let seconds = ttl.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
    let value = Value {
        kind: Some(Kind::StringValue(identity.to_string())),
    };
    IstioCertificateRequest {
        csr: csr_pem.to_string(),
        validity_duration: seconds,
        metadata: Some(Struct {
            fields: [(IMPERSONATED_IDENTITY.to_string(), value)].into(),
        }),
    }
}

/// An error and its causes, `: `-separated (tonic's transport error alone says only "transport error").
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text = format!("{text}: {err}");
        cause = err.source();
    }
    text
}

/// TCP, then the TLS handshake (ALPN h2, server identity checked by the rustls configuration).
pub(crate) async fn dial(uri: Uri, config: Arc<rustls::ClientConfig>) -> io::Result<TokioIo<TlsStream<TcpStream>>> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}"));
    let host = uri
        .host()
        .ok_or_else(invalid)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(DEFAULT_PORT);
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    // Only a placeholder for rustls: no SNI is sent and the server is verified by its SPIFFE identity.
    let name = ServerName::try_from(host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(TokioIo::new(tls))
}

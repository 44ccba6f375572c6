//! rustls configurations: HBONE server and client, and the control-plane channel.
//!
//! All of them speak TLS 1.3 only, offer ALPN `h2`, and use [`provider`] (aws-lc-rs; key exchange X25519MLKEM768
//! first, then X25519 and secp256r1; cipher suites TLS13_AES_256_GCM_SHA384 and TLS13_AES_128_GCM_SHA256, as
//! ztunnel). Peers are authenticated by SPIFFE identity, never by DNS name:
//!
//! * a client accepts a server whose chain verifies against the trust bundle and one of whose URI SANs equals one of
//!   the expected identities exactly. The `ServerName` given to the connector is ignored (callers dial pod IPs, so
//!   pass `ServerName::IpAddress` of the peer or any name) and, with SNI disabled, nothing of it is sent;
//! * a server requires (or, for the CA endpoint, accepts without) a client certificate that chains to the bundle
//!   and whose SPIFFE identity is in the server's own trust domain. Which identity may do what is RBAC's business.
//!
//! Session resumption is off on both sides, as in ztunnel: every connection authenticates with the current
//! certificates.

use std::fmt;
use std::sync::{Arc, OnceLock};

use ambit_types::{Identity, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::cert::{self, CertError, TrustBundle, WorkloadCertificate};

/// The only application protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the crypto provider cannot be configured for TLS 1.3")]
    Protocol(#[source] rustls::Error),
    #[error("the trust bundle has no roots: no peer could be verified")]
    EmptyBundle,
    #[error("trust bundle root #{index} is not a usable trust anchor")]
    BadRoot {
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("building the client-certificate verifier failed")]
    ClientVerifier(#[source] VerifierBuilderError),
    #[error("no expected server identity: the client would reject every server")]
    NoExpectedIdentities,
}

/// The crypto provider: aws-lc-rs, key exchange X25519MLKEM768 first, then X25519, secp256r1 (classical fallback).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    let build = || {
        Arc::new(CryptoProvider {
            cipher_suites: vec![
                aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
                aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
            ],
            kx_groups: vec![
                aws_lc_rs::kx_group::X25519MLKEM768,
                aws_lc_rs::kx_group::X25519,
                aws_lc_rs::kx_group::SECP256R1,
            ],
            ..aws_lc_rs::default_provider()
        })
    };
    Arc::clone(PROVIDER.get_or_init(build))
}

/// HBONE server: TLS 1.3 only, ALPN h2, client certificate required, chained to the bundle, and in `cert`'s trust
/// domain.
pub fn server_config(cert: &WorkloadCertificate, bundle: &TrustBundle) -> Result<Arc<ServerConfig>, TlsError> {
    build_server_config(cert, bundle, true)
}

/// Server whose client certificate is optional (the CA endpoint: node proxies authenticate with a token before they
/// have a certificate). A client certificate that is presented is checked as by [`server_config`].
pub fn server_config_optional_client_auth(
    cert: &WorkloadCertificate,
    bundle: &TrustBundle,
) -> Result<Arc<ServerConfig>, TlsError> {
    build_server_config(cert, bundle, false)
}

/// HBONE client: TLS 1.3 only, ALPN h2, no SNI, no resumption, presents `cert`; accepts the server only if its chain
/// verifies against the bundle and one of its URI SANs equals one of `expected` exactly.
pub fn client_config(
    cert: &WorkloadCertificate,
    bundle: &TrustBundle,
    expected: Vec<Identity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    build_client_config(Some(cert), bundle, expected)
}

/// Client with no certificate of its own (to reach the CA), verifying the server as [`client_config`] does.
pub fn anonymous_client_config(bundle: &TrustBundle, expected: Vec<Identity>) -> Result<Arc<ClientConfig>, TlsError> {
    build_client_config(None, bundle, expected)
}

/// The SPIFFE identity of the peer's leaf certificate on an established connection, if any (the leaf's only URI
/// SAN).
pub fn peer_identity(conn: &CommonState) -> Option<Identity> {
    let leaf = conn.peer_certificates()?.first()?;
    cert::identity_of_der(leaf, "the peer certificate").ok()
}

fn build_server_config(
    cert: &WorkloadCertificate,
    bundle: &TrustBundle,
    mandatory: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(bundle)?), provider());
    if !mandatory {
        builder = builder.allow_unauthenticated();
    }
    let verifier = TrustDomainVerifier {
        inner: builder.build().map_err(TlsError::ClientVerifier)?,
        trust_domain: cert.identity().trust_domain().clone(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Protocol)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(cert.certified_key())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn build_client_config(
    cert: Option<&WorkloadCertificate>,
    bundle: &TrustBundle,
    expected: Vec<Identity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    if expected.is_empty() {
        return Err(TlsError::NoExpectedIdentities);
    }
    let verifier = IdentityVerifier {
        roots: Arc::new(root_store(bundle)?),
        expected: expected.iter().map(Identity::to_string).collect(),
        algorithms: provider().signature_verification_algorithms,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Protocol)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match cert {
        Some(cert) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(cert.certified_key()))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

fn root_store(bundle: &TrustBundle) -> Result<RootCertStore, TlsError> {
    if bundle.roots().is_empty() {
        return Err(TlsError::EmptyBundle);
    }
    let mut store = RootCertStore::empty();
    for (index, root) in bundle.roots().iter().enumerate() {
        store
            .add(root.clone())
            .map_err(|source| TlsError::BadRoot { index, source })?;
    }
    Ok(store)
}

/// Why a peer certificate that chains to the bundle is still refused; carried to the handshake's error.
#[derive(thiserror::Error)]
enum PeerRejected {
    #[error("server certificate URI SANs {presented:?} match none of the expected identities {expected:?}")]
    UnexpectedServer {
        presented: Vec<String>,
        expected: Vec<String>,
    },
    #[error("client certificate carries no usable SPIFFE identity")]
    NoClientIdentity(#[source] CertError),
    #[error("client identity {client} is outside this server's trust domain {trust_domain}")]
    ForeignClient {
        client: Identity,
        trust_domain: TrustDomain,
    },
}

/// rustls prints `CertificateError::Other` with `Debug`: show the message there.
impl fmt::Debug for PeerRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl From<PeerRejected> for rustls::Error {
    fn from(rejected: PeerRejected) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(rejected))))
    }
}

/// Client side: the server's chain must verify against the bundle and one of its URI SANs must be expected.
#[derive(Debug)]
struct IdentityVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&parsed, &self.roots, intermediates, now, self.algorithms.all)?;
        let presented = cert::parse_x509(end_entity, "the server certificate")
            .and_then(|c| cert::uri_sans(&c, "the server certificate"))
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if presented.iter().any(|san| self.expected.contains(san)) {
            return Ok(ServerCertVerified::assertion());
        }
        let expected = self.expected.clone();
        Err(PeerRejected::UnexpectedServer { presented, expected }.into())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Server side: webpki's client verification, then the client's SPIFFE trust domain must be the server's own.
#[derive(Debug)]
struct TrustDomainVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
}

impl ClientCertVerifier for TrustDomainVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let client =
            cert::identity_of_der(end_entity, "the client certificate").map_err(PeerRejected::NoClientIdentity)?;
        if client.trust_domain() != &self.trust_domain {
            let trust_domain = self.trust_domain.clone();
            return Err(PeerRejected::ForeignClient { client, trust_domain }.into());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;

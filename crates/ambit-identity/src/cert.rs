//! Certificates, keys, CSRs and trust bundles.
//!
//! A workload certificate is an X.509 chain (leaf first) whose leaf carries exactly one URI SAN, the workload's SPIFFE
//! identity `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, plus the leaf's PKCS#8 private key.
//! A [`CertificateRequest`] is what a node proxy sends to the CA: a fresh ECDSA P-256 key and a CSR whose only SAN is
//! the identity's URI. A [`TrustBundle`] is the set of roots a workload trusts; several roots at once make a root
//! rotation window.
//!
//! Times are `SystemTime`; X.509 stores whole seconds, so certificate times are whole seconds.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ambit_types::{Identity, IdentityError};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use rustls_pki_types::{PrivatePkcs8KeyDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::manager::rfc3339;

/// The PEM label of a PKCS#8 private key.
const PKCS8_LABEL: &str = "PRIVATE KEY";
const CERTIFICATE_LABEL: &str = "CERTIFICATE";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{what}: malformed PEM")]
    Pem {
        what: String,
        #[source]
        source: pem::Error,
    },
    #[error("{what} contains no \"{label}\" PEM block")]
    NoPem { what: String, label: &'static str },
    #[error("the certificate chain is empty: it needs at least the leaf certificate")]
    EmptyChain,
    #[error("{what} is not a valid DER X.509 certificate")]
    Parse {
        what: String,
        #[source]
        source: X509Error,
    },
    #[error("{what}: {count} bytes follow the DER certificate")]
    TrailingBytes { what: String, count: usize },
    #[error("{what} has no URI SAN: a workload certificate carries exactly one, its spiffe:// identity")]
    NoSpiffeSan { what: String },
    #[error("{what} has {count} URI SANs: a workload certificate carries exactly one, its spiffe:// identity")]
    SeveralSans { what: String, count: usize },
    #[error("{what}: its URI SAN is not a SPIFFE workload identity")]
    InvalidIdentity {
        what: String,
        #[source]
        source: IdentityError,
    },
    #[error("{what}: the validity {field} is outside the range of the system clock")]
    TimeRange { what: String, field: &'static str },
    #[error("the private key cannot be loaded by the TLS provider (PKCS#8 ECDSA, RSA or Ed25519 expected)")]
    KeyUnusable(#[source] rustls::Error),
    #[error("the private key does not match the public key of the leaf certificate")]
    KeyMismatch,
    #[error("the CA answered with a certificate for {got}, not for the requested {requested}")]
    IdentityMismatch {
        requested: Box<Identity>,
        got: Box<Identity>,
    },
    #[error("trust bundle root #{index} is not a usable trust anchor")]
    BadRoot {
        index: usize,
        #[source]
        source: webpki::Error,
    },
    #[error("the certificate chain does not verify against the trust bundle")]
    Untrusted(#[source] webpki::Error),
    #[error("the leaf certificate expired at {} (now {})", rfc3339(*.not_after), rfc3339(*.now))]
    Expired { not_after: SystemTime, now: SystemTime },
    #[error("the leaf certificate is not valid before {} (now {})", rfc3339(*.not_before), rfc3339(*.now))]
    NotYetValid { not_before: SystemTime, now: SystemTime },
    #[error("generating the key or the CSR failed")]
    Generate(#[source] rcgen::Error),
}

// === WorkloadCertificate ===

/// A workload's certificate chain and private key. Cheap to clone (Arc inside).
#[derive(Clone)]
pub struct WorkloadCertificate(Arc<Inner>);

struct Inner {
    leaf: LeafInfo,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    certified: Arc<CertifiedKey>,
}

impl WorkloadCertificate {
    /// Parses a chain (PEM strings, leaf first; the root may be included last; one string may hold several blocks)
    /// and the leaf's private key (PKCS#8 PEM). The leaf must carry exactly one URI SAN, a valid SPIFFE workload
    /// identity, and the key must match the leaf.
    pub fn from_pem(chain_pem: &[String], key_pem: &str) -> Result<Self, CertError> {
        let chain = parse_chain_pem(chain_pem)?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| pem_error("the private key PEM", PKCS8_LABEL, e))?;
        Self::from_parts(chain, key)
    }

    /// Builds a certificate from a parsed chain (leaf first) and the leaf's key.
    pub(crate) fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivatePkcs8KeyDer<'static>,
    ) -> Result<Self, CertError> {
        let leaf_der = chain.first().ok_or(CertError::EmptyChain)?;
        let leaf = LeafInfo::parse(leaf_der, "the leaf certificate")?;
        for (index, der) in chain.iter().enumerate().skip(1) {
            parse_x509(der, &format!("chain certificate #{index}"))?;
        }
        let certified = Arc::new(certified_key(chain.clone(), &key)?);
        Ok(Self(Arc::new(Inner {
            leaf,
            chain,
            key,
            certified,
        })))
    }

    pub fn identity(&self) -> &Identity {
        &self.0.leaf.identity
    }

    /// Lowercase hex of the leaf's serial number, without leading zeros.
    pub fn serial(&self) -> &str {
        &self.0.leaf.serial
    }

    pub fn not_before(&self) -> SystemTime {
        self.0.leaf.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.0.leaf.not_after
    }

    /// `not_before + (not_after - not_before) / 2`: when rotation should happen.
    pub fn refresh_at(&self) -> SystemTime {
        // A certificate that ends before it starts has no lifetime: refresh at its start.
        let lifetime = self.not_after().duration_since(self.not_before()).unwrap_or_default();
        self.not_before() + lifetime / 2
    }

    /// Whether `now` is within the leaf's validity, both ends included (as X.509 and webpki define it).
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before() <= now && now <= self.not_after()
    }

    /// The chain, leaf first, as given.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.0.chain
    }

    /// The chain as one PEM string per certificate, leaf first.
    pub fn chain_pem(&self) -> Vec<String> {
        self.0.chain.iter().map(|der| to_pem(CERTIFICATE_LABEL, der)).collect()
    }

    /// The PKCS#8 private key in PEM.
    pub fn key_pem(&self) -> String {
        to_pem(PKCS8_LABEL, self.0.key.secret_pkcs8_der())
    }

    /// The chain and signing key for rustls.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.0.certified)
    }
}

/// Omits the private key.
impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity().to_string())
            .field("serial", &self.serial())
            .field("not_before", &rfc3339(self.not_before()))
            .field("not_after", &rfc3339(self.not_after()))
            .field("chain_len", &self.chain().len())
            .finish()
    }
}

/// Loads the key with the TLS provider and checks that it matches the leaf.
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivatePkcs8KeyDer<'static>,
) -> Result<CertifiedKey, CertError> {
    let signing_key = crate::tls::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.clone_key()))
        .map_err(CertError::KeyUnusable)?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(CertError::KeyMismatch),
        Err(other) => Err(CertError::KeyUnusable(other)),
    }
}

// === CertificateRequest ===

/// A fresh ECDSA P-256 key and a PEM CSR whose only SAN is the identity's URI (what a node proxy sends to the CA).
pub struct CertificateRequest {
    pub identity: Identity,
    pub csr_pem: String,
    key: PrivatePkcs8KeyDer<'static>,
}

impl CertificateRequest {
    pub fn generate(identity: &Identity) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CertError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![spiffe_san(identity).map_err(CertError::Generate)?];
        let csr = params.serialize_request(&key).map_err(CertError::Generate)?;
        Ok(Self {
            identity: identity.clone(),
            csr_pem: csr.pem().map_err(CertError::Generate)?,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// Combines the CA's answer (chain PEMs, leaf first) with the request's key; checks that the leaf's identity
    /// equals the requested one (as ztunnel does) and that the CA certified this request's key.
    pub fn into_certificate(self, chain_pem: &[String]) -> Result<WorkloadCertificate, CertError> {
        let chain = parse_chain_pem(chain_pem)?;
        let leaf_der = chain.first().ok_or(CertError::EmptyChain)?;
        let got = LeafInfo::parse(leaf_der, "the leaf certificate")?.identity;
        if got != self.identity {
            return Err(CertError::IdentityMismatch {
                requested: Box::new(self.identity),
                got: Box::new(got),
            });
        }
        WorkloadCertificate::from_parts(chain, self.key)
    }
}

/// Omits the private key.
impl fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRequest")
            .field("identity", &self.identity.to_string())
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

/// The URI SAN of an identity.
pub(crate) fn spiffe_san(identity: &Identity) -> Result<SanType, rcgen::Error> {
    Ok(SanType::URI(identity.to_string().try_into()?))
}

// === TrustBundle ===

/// The roots a workload trusts. Several roots at once = a root rotation window.
#[derive(Clone, Debug, PartialEq)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// One or more CERTIFICATE blocks, each a usable trust anchor.
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        let roots = parse_certs_pem(pem, "the trust bundle PEM")?;
        for (index, root) in roots.iter().enumerate() {
            webpki::anchor_from_trusted_cert(root).map_err(|source| CertError::BadRoot { index, source })?;
        }
        Ok(Self::new(roots))
    }

    /// The roots in the given order, without duplicates.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Self {
        let mut unique: Vec<CertificateDer<'static>> = Vec::with_capacity(roots.len());
        for root in roots {
            if !unique.contains(&root) {
                unique.push(root);
            }
        }
        Self { roots: unique }
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The roots as concatenated PEM blocks.
    pub fn to_pem(&self) -> String {
        self.roots.iter().map(|der| to_pem(CERTIFICATE_LABEL, der)).collect()
    }

    /// The union of both bundles, without duplicates (a rotation window).
    pub fn merged(&self, other: &TrustBundle) -> TrustBundle {
        Self::new(self.roots.iter().chain(&other.roots).cloned().collect())
    }

    /// Verifies a chain (leaf first, intermediates after it, the root optional) against these roots at `now`, as a
    /// TLS server certificate (mesh leaves are issued for both server and client auth); returns the leaf's SPIFFE
    /// identity.
    pub fn verify(&self, chain: &[CertificateDer<'static>], now: SystemTime) -> Result<Identity, CertError> {
        let leaf = chain.first().ok_or(CertError::EmptyChain)?;
        let anchors = self.anchors()?;
        let end_entity = webpki::EndEntityCert::try_from(leaf).map_err(CertError::Untrusted)?;
        let algorithms = crate::tls::provider().signature_verification_algorithms.all;
        let usage = webpki::KeyUsage::server_auth();
        // `chain[1..]` cannot panic: `first()` above found a leaf.
        end_entity
            .verify_for_usage(algorithms, &anchors, &chain[1..], unix_time(now), usage, None, None)
            .map_err(|e| verification_error(e, now))?;
        Ok(LeafInfo::parse(leaf, "the leaf certificate")?.identity)
    }

    fn anchors(&self) -> Result<Vec<rustls_pki_types::TrustAnchor<'_>>, CertError> {
        let anchor = |(index, root)| {
            webpki::anchor_from_trusted_cert(root).map_err(|source| CertError::BadRoot { index, source })
        };
        self.roots.iter().enumerate().map(anchor).collect()
    }
}

fn verification_error(error: webpki::Error, now: SystemTime) -> CertError {
    match error {
        webpki::Error::CertExpired { not_after, .. } => CertError::Expired {
            not_after: from_unix_time(not_after),
            now,
        },
        webpki::Error::CertNotValidYet { not_before, .. } => CertError::NotYetValid {
            not_before: from_unix_time(not_before),
            now,
        },
        other => CertError::Untrusted(other),
    }
}

// === Parsing helpers shared with `ca` and `tls` ===

/// What the mesh needs from a leaf certificate.
#[derive(Clone, Debug)]
pub(crate) struct LeafInfo {
    pub(crate) identity: Identity,
    pub(crate) serial: String,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

impl LeafInfo {
    /// `what` names the certificate in errors, e.g. "the leaf certificate".
    pub(crate) fn parse(der: &[u8], what: &str) -> Result<Self, CertError> {
        let cert = parse_x509(der, what)?;
        let validity = cert.validity();
        Ok(Self {
            identity: identity_of(&cert, what)?,
            serial: cert.tbs_certificate.serial.to_str_radix(16),
            not_before: system_time(validity.not_before, what, "start (notBefore)")?,
            not_after: system_time(validity.not_after, what, "end (notAfter)")?,
        })
    }
}

/// Parses one DER certificate, refusing trailing bytes.
pub(crate) fn parse_x509<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, CertError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Parse {
        what: what.to_string(),
        source: nom_error(e),
    })?;
    if !rest.is_empty() {
        return Err(CertError::TrailingBytes {
            what: what.to_string(),
            count: rest.len(),
        });
    }
    Ok(cert)
}

/// The URI SANs of a certificate, in order.
pub(crate) fn uri_sans(cert: &X509Certificate<'_>, what: &str) -> Result<Vec<String>, CertError> {
    let san = cert.subject_alternative_name().map_err(|source| CertError::Parse {
        what: what.to_string(),
        source,
    })?;
    let names = san.map(|ext| ext.value.general_names.as_slice()).unwrap_or_default();
    let uri = |name: &GeneralName<'_>| match name {
        GeneralName::URI(uri) => Some(uri.to_string()),
        _ => None,
    };
    Ok(names.iter().filter_map(uri).collect())
}

/// The SPIFFE identity of a certificate: its only URI SAN.
pub(crate) fn identity_of(cert: &X509Certificate<'_>, what: &str) -> Result<Identity, CertError> {
    let what = || what.to_string();
    match uri_sans(cert, &what())?.as_slice() {
        [] => Err(CertError::NoSpiffeSan { what: what() }),
        [uri] => uri
            .parse()
            .map_err(|source| CertError::InvalidIdentity { what: what(), source }),
        several => Err(CertError::SeveralSans {
            what: what(),
            count: several.len(),
        }),
    }
}

/// The SPIFFE identity of a DER certificate.
pub(crate) fn identity_of_der(der: &[u8], what: &str) -> Result<Identity, CertError> {
    identity_of(&parse_x509(der, what)?, what)
}

fn nom_error(error: x509_parser::nom::Err<X509Error>) -> X509Error {
    match error {
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
        x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
    }
}

/// All CERTIFICATE blocks of a PEM text; at least one.
pub(crate) fn parse_certs_pem(text: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, CERTIFICATE_LABEL, e))?;
    if certs.is_empty() {
        return Err(pem_error(what, CERTIFICATE_LABEL, pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// A chain given as PEM strings, each holding one or more CERTIFICATE blocks, flattened in order.
fn parse_chain_pem(chain_pem: &[String]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    if chain_pem.is_empty() {
        return Err(CertError::EmptyChain);
    }
    let mut chain = Vec::new();
    for (index, text) in chain_pem.iter().enumerate() {
        chain.extend(parse_certs_pem(text, &format!("certificate chain entry #{index}"))?);
    }
    Ok(chain)
}

fn pem_error(what: &str, label: &'static str, error: pem::Error) -> CertError {
    match error {
        pem::Error::NoItemsFound => CertError::NoPem {
            what: what.to_string(),
            label,
        },
        source => CertError::Pem {
            what: what.to_string(),
            source,
        },
    }
}

/// One PEM block with `\n` line endings.
pub(crate) fn to_pem(label: &str, der: &[u8]) -> String {
    let config = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    ::pem::encode_config(&::pem::Pem::new(label, der), config)
}

// === Time helpers ===

pub(crate) fn system_time(time: ASN1Time, what: &str, field: &'static str) -> Result<SystemTime, CertError> {
    let out_of_range = || CertError::TimeRange {
        what: what.to_string(),
        field,
    };
    let seconds = time.timestamp();
    let offset = Duration::from_secs(seconds.unsigned_abs());
    let converted = if seconds >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    converted.ok_or_else(out_of_range)
}

/// A clock before 1970 counts as 1970: verification then fails closed (certificates are not yet valid).
pub(crate) fn unix_time(now: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default())
}

fn from_unix_time(time: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(time.as_secs())
}

#[cfg(test)]
mod tests;

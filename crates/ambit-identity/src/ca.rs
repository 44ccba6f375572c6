//! The certificate authority: root or plug-in intermediate, CSR validation and signing.
//!
//! Two ways to get a signing certificate:
//! * [`CertificateAuthority::load_or_create`]: a self-signed ECDSA P-256 root made on first start and persisted
//!   (`root-cert.pem`, and `ca-key.pem` with mode 0600); later starts load it;
//! * [`CertificateAuthority::from_plugin`]: an intermediate in Istio's `cacerts` layout (`ca-cert.pem`, `ca-key.pem`,
//!   `root-cert.pem`, `cert-chain.pem`).
//!
//! [`CertificateAuthority::sign_csr`] is the checked path for a node proxy's CSR (Istio's `CreateCertificate`); the
//! issued leaf keeps the CSR's public key but takes nothing else from it. Certificate times are whole seconds:
//! `now` is truncated to the second, the leaf is valid from `now - 1 min` (clock skew) to `now + ttl`.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ambit_types::{Identity, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_SIG_ED448, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::cert::{self, CertError, CertificateRequest, LeafInfo, TrustBundle, WorkloadCertificate};

/// The namespace of the control plane's own identity `spiffe://<trust-domain>/ns/ambit-system/sa/ambit-control`.
pub const CONTROL_PLANE_NAMESPACE: &str = "ambit-system";
/// The service account of the control plane's own identity.
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "ambit-control";

/// The root certificate(s) trusted by the mesh (self-signed CA and plug-in CA).
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// The signing key (self-signed CA and plug-in CA).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The plug-in CA's signing (intermediate) certificate.
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// The plug-in CA's chain from its signing certificate up to the root.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

/// Backdating of `notBefore`, for peers whose clocks run behind.
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Lifetime of a self-signed root: ten years.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const ROOT_COMMON_NAME: &str = "ambit root CA";
/// Bytes of a random serial number (at most 20 allowed).
const SERIAL_LEN: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaConfig {
    pub trust_domain: TrustDomain,
    /// Validity of a certificate when the request names none: 24 h (ztunnel's `SECRET_TTL`).
    pub default_ttl: Duration,
    /// Longest validity a request may ask for: 7 days.
    pub max_ttl: Duration,
}

impl CaConfig {
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A signed certificate as the CA answers it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuedCertificate {
    pub identity: Identity,
    /// Lowercase hex, as [`WorkloadCertificate::serial`].
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Leaf first, then intermediates, root last.
    pub chain_pem: Vec<String>,
}

/// Why a CSR is refused (or, for `Sign`, could not be signed). No certificate is issued in any case.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is not a PKCS#10 request in a PEM \"CERTIFICATE REQUEST\" block: {0}")]
    Garbage(String),
    #[error("the CSR's signature does not verify with its own public key (or uses an unsupported algorithm)")]
    BadSignature,
    #[error("the CSR has no subject alternative name: it must carry exactly one, the requested spiffe:// URI")]
    NoSan,
    #[error("the CSR has {0} subject alternative names: it must carry exactly one, the requested spiffe:// URI")]
    SeveralSans(usize),
    #[error("the CSR's SAN {found:?} is not the requested identity {requested}")]
    NotRequested { found: String, requested: Identity },
    #[error("the CSR's SAN {0:?} is not a SPIFFE workload identity spiffe://<trust-domain>/ns/<ns>/sa/<sa>")]
    NotSpiffe(String),
    #[error("the CSR's SAN {found:?} is outside this CA's trust domain {expected}")]
    ForeignTrustDomain { found: String, expected: TrustDomain },
    #[error("the CSR's public key is {0}: only ECDSA P-256/P-384 and RSA 2048..=4096 bits are accepted")]
    UnsupportedKey(String),
    #[error("the requested validity of {}s exceeds this CA's maximum of {}s", .requested.as_secs(), .max.as_secs())]
    TtlTooLong { requested: Duration, max: Duration },
    #[error("signing the certificate failed: {0}")]
    Sign(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot access {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "CA key {} has mode {mode:04o}, so group or others may read it: run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("plug-in CA file {}: {reason}", .path.display())]
    Plugin { path: PathBuf, reason: String },
    #[error("CA file {}: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("generating the root CA failed: {0}")]
    Generate(String),
    #[error("the CA refused to issue the certificate")]
    Csr(#[from] CsrError),
    #[error("building the workload certificate (key, CSR or issued chain) failed")]
    Certificate(#[from] CertError),
}

/// Signs workload certificates with a root or plug-in intermediate.
pub struct CertificateAuthority {
    config: CaConfig,
    issuer: Issuer<'static, KeyPair>,
    not_after: SystemTime,
    /// The answer's certificates after the leaf (intermediates, root last), one PEM block each.
    chain_tail: Vec<String>,
    bundle: TrustBundle,
}

impl CertificateAuthority {
    /// Self-signed root CA made on first start and persisted in `dir` (`root-cert.pem`, `ca-key.pem` mode 0600);
    /// loaded on later starts (when either file exists, both must). A key file readable by group/others stops
    /// start-up with [`CaError::KeyPermissions`] naming the file and its mode. When `root-cert.pem` holds several
    /// certificates, the first is the signing root and all are trusted (a rotation window).
    pub fn load_or_create(dir: &Path, config: CaConfig, now: SystemTime) -> Result<Self, CaError> {
        let (key_path, cert_path) = (dir.join(CA_KEY_FILE), dir.join(ROOT_CERT_FILE));
        if exists(&key_path)? || exists(&cert_path)? {
            Self::load_own(&key_path, &cert_path, config)
        } else {
            Self::create(dir, config, now)
        }
    }

    /// Plug-in CA from Istio's `cacerts` layout: ca-cert.pem (intermediate), ca-key.pem, root-cert.pem (one or more
    /// roots), cert-chain.pem (intermediate..root). The key must match ca-cert.pem, and ca-cert.pem must chain
    /// through cert-chain.pem to a root of root-cert.pem; otherwise [`CaError::Plugin`] names the file.
    pub fn from_plugin(dir: &Path, config: CaConfig) -> Result<Self, CaError> {
        let files = PluginFiles::read(dir)?;
        let (signing, key) = signing_pair(&files.ca_cert, &files.key)?;
        let root = files.check_chain()?;
        let mut chain_tail: Vec<String> = files
            .intermediates()
            .map(|der| cert::to_pem("CERTIFICATE", der))
            .collect();
        chain_tail.insert(0, cert::to_pem("CERTIFICATE", &signing.der));
        if *root != signing.der {
            chain_tail.push(cert::to_pem("CERTIFICATE", root));
        }
        Self::assemble(config, signing, key, chain_tail, TrustBundle::new(files.roots.certs))
    }

    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The root(s) workloads must trust.
    pub fn trust_bundle(&self) -> TrustBundle {
        self.bundle.clone()
    }

    /// The CA (signing) certificate's own end of validity (for `ambit ca check`).
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Validates a CSR for `requested` and signs it, keeping the CSR's public key: the leaf's only SAN is the
    /// requested URI, its validity `ttl.unwrap_or(default_ttl)` (a zero TTL means the default, as in Istio), which
    /// must be <= max_ttl. Everything else in the CSR (subject, requested extensions) is ignored. The answer's chain
    /// is leaf first, root last.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        requested: &Identity,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<IssuedCertificate, CsrError> {
        let csr = ParsedCsr::parse(csr_pem)?;
        let identity = self.check_san(&csr.san, requested)?;
        let ttl = self.ttl(ttl)?;
        let leaf = self
            .sign_leaf(&csr.key, &identity, ttl, now)
            .map_err(|e| CsrError::Sign(e.to_string()))?;
        let info = LeafInfo::parse(&leaf, "the issued certificate").map_err(|e| CsrError::Sign(e.to_string()))?;
        let mut chain_pem = vec![cert::to_pem("CERTIFICATE", &leaf)];
        chain_pem.extend(self.chain_tail.iter().cloned());
        Ok(IssuedCertificate {
            identity,
            serial: info.serial,
            not_before: info.not_before,
            not_after: info.not_after,
            chain_pem,
        })
    }

    /// Generates a key and issues a certificate directly (for `ambit ca issue`, the control plane's own serving
    /// certificate, tests), through the same checks as [`Self::sign_csr`].
    pub fn issue(
        &self,
        identity: &Identity,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<WorkloadCertificate, CaError> {
        let request = CertificateRequest::generate(identity)?;
        let issued = self.sign_csr(&request.csr_pem, identity, ttl, now)?;
        Ok(request.into_certificate(&issued.chain_pem)?)
    }

    fn create(dir: &Path, config: CaConfig, now: SystemTime) -> Result<Self, CaError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let generate = |e: rcgen::Error| CaError::Generate(e.to_string());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let params = root_params(&config.trust_domain, now).map_err(generate)?;
        let root = params.self_signed(&key).map_err(generate)?;
        write_private(&dir.join(CA_KEY_FILE), &key.serialize_pem())?;
        write_public(&dir.join(ROOT_CERT_FILE), &root.pem())?;
        Self::load_own(&dir.join(CA_KEY_FILE), &dir.join(ROOT_CERT_FILE), config)
    }

    fn load_own(key_path: &Path, cert_path: &Path, config: CaConfig) -> Result<Self, CaError> {
        check_key_permissions(key_path)?;
        let key = KeyFile::read(key_path, Origin::Own)?;
        let roots = CertFile::read(cert_path, Origin::Own)?;
        let (signing, key) = signing_pair(&roots.first(), &key)?;
        let chain_tail = vec![cert::to_pem("CERTIFICATE", &signing.der)];
        Self::assemble(config, signing, key, chain_tail, TrustBundle::new(roots.certs))
    }

    fn assemble(
        config: CaConfig,
        signing: SigningCert,
        key: KeyPair,
        chain_tail: Vec<String>,
        bundle: TrustBundle,
    ) -> Result<Self, CaError> {
        let issuer = Issuer::from_ca_cert_der(&signing.der, key).map_err(|e| signing.invalid(e.to_string()))?;
        Ok(Self {
            config,
            issuer,
            not_after: signing.not_after,
            chain_tail,
            bundle,
        })
    }

    fn check_san(&self, san: &San, requested: &Identity) -> Result<Identity, CsrError> {
        let uri = match san {
            San::Uri(uri) => uri,
            San::Other(name) => return Err(CsrError::NotSpiffe(name.clone())),
        };
        let identity: Identity = uri.parse().map_err(|_| CsrError::NotSpiffe(uri.clone()))?;
        if identity.trust_domain() != &self.config.trust_domain {
            let expected = self.config.trust_domain.clone();
            return Err(CsrError::ForeignTrustDomain {
                found: uri.clone(),
                expected,
            });
        }
        if &identity != requested {
            let requested = requested.clone();
            return Err(CsrError::NotRequested {
                found: uri.clone(),
                requested,
            });
        }
        Ok(identity)
    }

    /// The validity to issue, in whole seconds.
    fn ttl(&self, requested: Option<Duration>) -> Result<Duration, CsrError> {
        let ttl = match requested.map(|t| Duration::from_secs(t.as_secs())) {
            Some(ttl) if !ttl.is_zero() => ttl,
            _ => self.config.default_ttl,
        };
        if ttl > self.config.max_ttl {
            return Err(CsrError::TtlTooLong {
                requested: ttl,
                max: self.config.max_ttl,
            });
        }
        Ok(ttl)
    }

    fn sign_leaf(
        &self,
        key: &CsrKey,
        identity: &Identity,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<CertificateDer<'static>, rcgen::Error> {
        let start = whole_seconds(now);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![cert::spiffe_san(identity)?];
        params.not_before = offset_date_time(start.checked_sub(CLOCK_SKEW).unwrap_or(UNIX_EPOCH))?;
        params.not_after = offset_date_time(start + ttl)?;
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(key, &self.issuer)?.into())
    }
}

/// Omits the signing key.
impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("config", &self.config)
            .field("not_after", &crate::manager::rfc3339(self.not_after))
            .field("chain_tail_len", &self.chain_tail.len())
            .field("roots", &self.bundle.roots().len())
            .finish_non_exhaustive()
    }
}

fn root_params(trust_domain: &TrustDomain, now: SystemTime) -> Result<CertificateParams, rcgen::Error> {
    let start = whole_seconds(now);
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain.as_str());
    params.distinguished_name.push(DnType::CommonName, ROOT_COMMON_NAME);
    params.not_before = offset_date_time(start.checked_sub(CLOCK_SKEW).unwrap_or(UNIX_EPOCH))?;
    params.not_after = offset_date_time(start + ROOT_VALIDITY)?;
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn whole_seconds(time: SystemTime) -> SystemTime {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs())
}

fn offset_date_time(time: SystemTime) -> Result<OffsetDateTime, rcgen::Error> {
    let seconds = time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    i64::try_from(seconds)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| rcgen::Error::X509(format!("time {seconds}s after the Unix epoch is out of range")))
}

/// 16 random bytes, positive and without a leading zero byte so the encoded serial always has the same length.
fn random_serial() -> Result<SerialNumber, rcgen::Error> {
    let mut bytes = [0u8; SERIAL_LEN];
    crate::tls::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| rcgen::Error::X509("the system random number generator failed".to_string()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

// === CSR parsing ===

/// The one subject alternative name of a CSR.
enum San {
    Uri(String),
    /// Any other kind of name, as x509-parser prints it (e.g. `DNSName(example.com)`).
    Other(String),
}

/// A CSR's public key, as rcgen needs it to sign a certificate for it.
struct CsrKey {
    /// The subjectPublicKey bits: an EC point or a PKCS#1 RSA public key.
    raw: Vec<u8>,
    /// An algorithm whose SubjectPublicKeyInfo identifier matches the key's (rcgen writes the SPKI from it).
    algorithm: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

struct ParsedCsr {
    key: CsrKey,
    san: San,
}

impl ParsedCsr {
    /// Checks, in order: PEM and DER, key type, signature, exactly one SAN.
    fn parse(csr_pem: &str) -> Result<Self, CsrError> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|e| match e {
            pem::Error::NoItemsFound => CsrError::Garbage("no such block found".to_string()),
            other => CsrError::Garbage(format!("malformed PEM ({other})")),
        })?;
        let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| CsrError::Garbage(format!("invalid DER ({e})")))?;
        if !rest.is_empty() {
            return Err(CsrError::Garbage(format!(
                "{} bytes follow the DER request",
                rest.len()
            )));
        }
        let key = csr_key(&csr.certification_request_info.subject_pki)?;
        csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
        Ok(Self {
            key,
            san: single_san(&csr)?,
        })
    }
}

/// Accepts ECDSA P-256/P-384 and RSA 2048..=4096 bits.
fn csr_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<CsrKey, CsrError> {
    let raw = spki.subject_public_key.data.to_vec();
    let algorithm = match spki.parsed() {
        Ok(PublicKey::EC(_)) => ec_algorithm(spki)?,
        Ok(PublicKey::RSA(rsa)) => match rsa_bits(rsa.modulus) {
            2048..=4096 => &rcgen::PKCS_RSA_SHA256,
            bits => return Err(CsrError::UnsupportedKey(format!("RSA with {bits} bits"))),
        },
        _ => return Err(CsrError::UnsupportedKey(key_algorithm_name(spki))),
    };
    Ok(CsrKey { raw, algorithm })
}

fn ec_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> Result<&'static SignatureAlgorithm, CsrError> {
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    match curve {
        Some(oid) if oid == OID_EC_P256 => Ok(&rcgen::PKCS_ECDSA_P256_SHA256),
        Some(oid) if oid == OID_NIST_EC_P384 => Ok(&rcgen::PKCS_ECDSA_P384_SHA384),
        Some(oid) => Err(CsrError::UnsupportedKey(format!("ECDSA on curve {oid}"))),
        None => Err(CsrError::UnsupportedKey("ECDSA without a named curve".to_string())),
    }
}

fn key_algorithm_name(spki: &SubjectPublicKeyInfo<'_>) -> String {
    match &spki.algorithm.algorithm {
        oid if *oid == OID_SIG_ED25519 => "Ed25519".to_string(),
        oid if *oid == OID_SIG_ED448 => "Ed448".to_string(),
        oid => format!("of algorithm {oid}"),
    }
}

/// The bit length of a big-endian modulus (leading zero bytes and bits do not count).
fn rsa_bits(modulus: &[u8]) -> usize {
    let significant: &[u8] = match modulus.iter().position(|b| *b != 0) {
        Some(first) => &modulus[first..],
        None => &[],
    };
    match significant.first() {
        Some(top) => significant.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// All names of all SAN extensions the CSR requests; exactly one is accepted.
fn single_san(csr: &X509CertificationRequest<'_>) -> Result<San, CsrError> {
    let mut names: Vec<San> = Vec::new();
    for extension in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            names.extend(san.general_names.iter().map(|name| match name {
                GeneralName::URI(uri) => San::Uri(uri.to_string()),
                other => San::Other(other.to_string()),
            }));
        }
    }
    match names.len() {
        0 => Err(CsrError::NoSan),
        1 => Ok(names.remove(0)),
        count => Err(CsrError::SeveralSans(count)),
    }
}

// === CA files ===

/// Whose files these are: the error variant names the layout.
#[derive(Clone, Copy)]
enum Origin {
    Own,
    Plugin,
}

impl Origin {
    fn error(self, path: &Path, reason: impl Into<String>) -> CaError {
        let (path, reason) = (path.to_path_buf(), reason.into());
        match self {
            Origin::Own => CaError::Invalid { path, reason },
            Origin::Plugin => CaError::Plugin { path, reason },
        }
    }
}

struct KeyFile {
    path: PathBuf,
    key: PrivateKeyDer<'static>,
    origin: Origin,
}

impl KeyFile {
    /// PKCS#8, SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), as Istio's tooling writes them.
    fn read(path: &Path, origin: Origin) -> Result<Self, CaError> {
        let text = read_file(path)?;
        let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
            .map_err(|e| origin.error(path, format!("no usable PEM private key ({e})")))?;
        Ok(Self {
            path: path.to_path_buf(),
            key,
            origin,
        })
    }

    fn key_pair(&self) -> Result<KeyPair, CaError> {
        KeyPair::try_from(&self.key).map_err(|e| {
            let reason = format!("not an ECDSA P-256/P-384, RSA or Ed25519 private key ({e})");
            self.origin.error(&self.path, reason)
        })
    }
}

struct CertFile {
    path: PathBuf,
    /// Never empty: `parse_certs_pem` refuses a file without certificates, so `certs[0]` cannot panic.
    certs: Vec<CertificateDer<'static>>,
    origin: Origin,
}

impl CertFile {
    fn read(path: &Path, origin: Origin) -> Result<Self, CaError> {
        let text = read_file(path)?;
        let certs = cert::parse_certs_pem(&text, "the file").map_err(|e| origin.error(path, e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            certs,
            origin,
        })
    }

    /// The first certificate, as a one-certificate file.
    fn first(&self) -> CertFile {
        CertFile {
            path: self.path.clone(),
            certs: self.certs[..1].to_vec(),
            origin: self.origin,
        }
    }

    /// `index` comes from enumerating `certs` or is 0, so indexing cannot panic.
    fn parse(&self, index: usize) -> Result<X509Certificate<'_>, CaError> {
        let what = format!("certificate #{index}");
        cert::parse_x509(&self.certs[index], &what).map_err(|e| self.origin.error(&self.path, e.to_string()))
    }

    fn error(&self, reason: impl Into<String>) -> CaError {
        self.origin.error(&self.path, reason)
    }
}

/// A CA certificate that signs, with where it came from for errors.
struct SigningCert {
    der: CertificateDer<'static>,
    not_after: SystemTime,
    path: PathBuf,
    origin: Origin,
}

impl SigningCert {
    fn invalid(&self, reason: String) -> CaError {
        self.origin.error(&self.path, reason)
    }
}

/// Checks that the file holds one CA certificate and that the key file's key is its key.
fn signing_pair(file: &CertFile, key_file: &KeyFile) -> Result<(SigningCert, KeyPair), CaError> {
    if file.certs.len() != 1 {
        return Err(file.error(format!("holds {} certificates; exactly one expected", file.certs.len())));
    }
    let parsed = file.parse(0)?;
    if !parsed.is_ca() {
        return Err(file.error("is not a CA certificate (basicConstraints cA is not set)"));
    }
    let key_usage = parsed.key_usage().ok().flatten().map(|ext| ext.value.key_cert_sign());
    if key_usage == Some(false) {
        return Err(file.error("may not sign certificates (keyUsage lacks keyCertSign)"));
    }
    let key = key_file.key_pair()?;
    if key.der_bytes() != parsed.public_key().subject_public_key.data.as_ref() {
        let file_name = file.path.file_name().unwrap_or_default().to_string_lossy();
        return Err(key_file
            .origin
            .error(&key_file.path, format!("does not match the public key of {file_name}")));
    }
    let not_after = cert::system_time(parsed.validity().not_after, "the CA certificate", "end (notAfter)")
        .map_err(|e| file.error(e.to_string()))?;
    let signing = SigningCert {
        der: file.certs[0].clone(),
        not_after,
        path: file.path.clone(),
        origin: file.origin,
    };
    Ok((signing, key))
}

/// Istio's plug-in `cacerts` files.
struct PluginFiles {
    ca_cert: CertFile,
    key: KeyFile,
    roots: CertFile,
    chain: CertFile,
}

impl PluginFiles {
    fn read(dir: &Path) -> Result<Self, CaError> {
        Ok(Self {
            ca_cert: CertFile::read(&dir.join(CA_CERT_FILE), Origin::Plugin)?,
            key: KeyFile::read(&dir.join(CA_KEY_FILE), Origin::Plugin)?,
            roots: CertFile::read(&dir.join(ROOT_CERT_FILE), Origin::Plugin)?,
            chain: CertFile::read(&dir.join(CERT_CHAIN_FILE), Origin::Plugin)?,
        })
    }

    /// cert-chain.pem without ca-cert.pem and without the roots of root-cert.pem.
    fn intermediates(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        let ca_cert = &self.ca_cert.certs[0];
        self.chain
            .certs
            .iter()
            .filter(move |c| *c != ca_cert && !self.roots.certs.contains(c))
    }

    /// Walks ca-cert.pem → intermediates of cert-chain.pem → a root of root-cert.pem, checking each signature;
    /// returns that root.
    fn check_chain(&self) -> Result<&CertificateDer<'static>, CaError> {
        let mut child = self.ca_cert.parse(0)?;
        let mut child_file = &self.ca_cert;
        for (index, der) in self.chain.certs.iter().enumerate() {
            if !self.intermediates().any(|c| c == der) {
                continue;
            }
            let parent = self.chain.parse(index)?;
            if child.verify_signature(Some(parent.public_key())).is_err() {
                let below = match child_file.path == self.ca_cert.path {
                    true => CA_CERT_FILE,
                    false => "the intermediate before it",
                };
                return Err(self
                    .chain
                    .error(format!("certificate #{index} is not the issuer of {below}")));
            }
            (child, child_file) = (parent, &self.chain);
        }
        self.signing_root(&child, child_file)
    }

    fn signing_root(
        &self,
        child: &X509Certificate<'_>,
        child_file: &CertFile,
    ) -> Result<&CertificateDer<'static>, CaError> {
        for (index, der) in self.roots.certs.iter().enumerate() {
            let root = self.roots.parse(index)?;
            if child.verify_signature(Some(root.public_key())).is_ok() {
                return Ok(der);
            }
        }
        let which = match child_file.path == self.ca_cert.path {
            true => "it",
            false => "the last intermediate of cert-chain.pem",
        };
        Err(child_file.error(format!("{which} is not signed by any certificate of {ROOT_CERT_FILE}")))
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn exists(path: &Path) -> Result<bool, CaError> {
    path.try_exists().map_err(io_error(path))
}

fn read_file(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(io_error(path))
}

/// Refuses a key that group or others may read.
fn check_key_permissions(path: &Path) -> Result<(), CaError> {
    let mode = fs::metadata(path).map_err(io_error(path))?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Creates a new file readable by its owner only (mode 0600 from the start, never wider).
fn write_private(path: &Path, contents: &str) -> Result<(), CaError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents.as_bytes()).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

fn write_public(path: &Path, contents: &str) -> Result<(), CaError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents.as_bytes()).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

#[cfg(test)]
mod tests;

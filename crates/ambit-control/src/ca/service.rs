//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: authenticate the caller's node, work out the requested
//! identity, authorize it against the pods on that node, sign the CSR and record the certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ambit_api::istio::v1::auth::istio_certificate_service_server::IstioCertificateService;
use ambit_api::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use ambit_api::prost_types::value::Kind;
use ambit_identity::ca::{CertificateAuthority, CsrError};
use ambit_types::Identity;
use ambit_xds::ca::IMPERSONATED_IDENTITY;
use tonic::{Request, Response, Status};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::auth::{Authenticator, Caller, NodeIndex};
use super::ledger::{Ledger, LedgerEntry};

/// The CA's gRPC service.
pub struct CaService<A, N> {
    ca: Arc<CertificateAuthority>,
    authenticator: A,
    index: N,
    ledger: Arc<Ledger>,
}

impl<A: Authenticator, N: NodeIndex> CaService<A, N> {
    pub fn new(ca: Arc<CertificateAuthority>, authenticator: A, index: N, ledger: Arc<Ledger>) -> Self {
        Self {
            ca,
            authenticator,
            index,
            ledger,
        }
    }

    fn authorize(&self, caller: &Caller, identity: &Identity) -> Result<(), Status> {
        let expected = &self.ca.config().trust_domain;
        if identity.trust_domain() != expected {
            let found = identity.to_string();
            let err = CsrError::ForeignTrustDomain {
                found,
                expected: expected.clone(),
            };
            return Err(Status::invalid_argument(err.to_string()));
        }
        if self.index.allows(&caller.node, identity) {
            return Ok(());
        }
        tracing::warn!(node = %caller.node, %identity, "certificate refused: no pod on the caller's node runs as it");
        Err(Status::permission_denied(format!(
            "no pod on node {} runs as {identity}",
            caller.node
        )))
    }

    fn sign(
        &self,
        caller: &Caller,
        csr: &str,
        identity: &Identity,
        ttl: Option<Duration>,
    ) -> Result<Vec<String>, Status> {
        let issued = self
            .ca
            .sign_csr(csr, identity, ttl, SystemTime::now())
            .map_err(csr_status)?;
        let entry = LedgerEntry::new(&issued, &caller.node);
        if let Err(e) = self.ledger.record(entry) {
            tracing::error!(error = %e, "issued certificate not written to the ledger file");
        }
        tracing::info!(node = %caller.node, %identity, serial = %issued.serial, "certificate issued");
        Ok(issued.chain_pem)
    }
}

#[tonic::async_trait]
impl<A: Authenticator, N: NodeIndex> IstioCertificateService for CaService<A, N> {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let caller = self.authenticator.authenticate(request.metadata()).await;
        let caller = caller.map_err(|e| Status::unauthenticated(e.to_string()))?;
        let request = request.into_inner();
        let identity = requested_identity(&request)?;
        self.authorize(&caller, &identity)?;
        let cert_chain = self.sign(&caller, &request.csr, &identity, requested_ttl(&request))?;
        Ok(Response::new(IstioCertificateResponse { cert_chain }))
    }
}

/// `metadata["ImpersonatedIdentity"]` if set, else the CSR's single URI SAN.
pub fn requested_identity(request: &IstioCertificateRequest) -> Result<Identity, Status> {
    let impersonated = request
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY));
    let text = match impersonated.map(|v| &v.kind) {
        Some(Some(Kind::StringValue(s))) => s.clone(),
        Some(_) => {
            return Err(Status::invalid_argument(format!(
                "metadata {IMPERSONATED_IDENTITY} must be a string"
            )));
        }
        None => csr_uri_san(&request.csr).map_err(|e| Status::invalid_argument(e.to_string()))?,
    };
    text.parse()
        .map_err(|e| Status::invalid_argument(format!("requested identity: {e}")))
}

/// `validity_duration` in seconds; zero or negative means the CA's default.
pub fn requested_ttl(request: &IstioCertificateRequest) -> Option<Duration> {
    u64::try_from(request.validity_duration)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// The one URI SAN of a PEM CSR (reported with the CA's own error wording).
fn csr_uri_san(csr_pem: &str) -> Result<String, CsrError> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|e| CsrError::Garbage(format!("not PEM: {e}")))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(CsrError::Garbage(format!(
            "a PEM {:?} block, not a CERTIFICATE REQUEST",
            pem.label
        )));
    }
    let (_, csr) =
        X509CertificationRequest::from_der(&pem.contents).map_err(|e| CsrError::Garbage(format!("not a CSR: {e}")))?;
    let mut uris = Vec::new();
    for extension in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            uris.extend(san.general_names.iter().filter_map(|n| match n {
                GeneralName::URI(uri) => Some(uri.to_string()),
                _ => None,
            }));
        }
    }
    match uris.len() {
        0 => Err(CsrError::NoSan),
        1 => Ok(uris.remove(0)),
        n => Err(CsrError::SeveralSans(n)),
    }
}

/// A refused CSR is the caller's mistake (INVALID_ARGUMENT, with the reason); a signing failure is ours (INTERNAL).
fn csr_status(err: CsrError) -> Status {
    match err {
        CsrError::Sign(_) => {
            tracing::error!(error = %err, "signing failed");
            Status::internal(err.to_string())
        }
        _ => Status::invalid_argument(err.to_string()),
    }
}

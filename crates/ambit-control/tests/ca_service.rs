//! The CA service end to end over real TLS gRPC on loopback: a client generated from the protobuf definitions,
//! hand-made CSRs, node tokens, node authorization, the ledger, and `CaClient`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ambit_api::istio::v1::auth::IstioCertificateRequest;
use ambit_api::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use ambit_api::prost_types::{Struct, Value, value::Kind};
use ambit_control::ca::auth::{NodeCredentials, PodPlacement, StaticNodeIndex, generate_token};
use ambit_control::ca::check::{CertStatus, check};
use ambit_control::ca::ledger::{self, Ledger};
use ambit_control::ca::service::CaService;
use ambit_control::ca::{control_identity, open_ca};
use ambit_control::server::{serve, serving_tls};
use ambit_identity::ca::{CaConfig, CertificateAuthority};
use ambit_identity::cert::{CertificateDer, TrustBundle};
use ambit_identity::tls::anonymous_client_config;
use ambit_types::{Identity, TrustDomain};
use ambit_xds::ca::{CaClient, CaClientError, connect_channel};
use rustls::pki_types::pem::PemObject;
use tonic::transport::Channel;
use tonic::{Code, Status};

const CLIENT: &str = "spiffe://cluster.local/ns/demo/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/demo/sa/server";
const MAX_TTL: Duration = Duration::from_secs(48 * 3600);

struct Harness {
    addr: String,
    ca: Arc<CertificateAuthority>,
    ledger: Arc<Ledger>,
    node1_token: String,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn trust_domain() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

fn pod(node: &str, sa: &str) -> PodPlacement {
    PodPlacement {
        node: node.into(),
        namespace: "demo".into(),
        service_account: sa.into(),
    }
}

/// A CA with node-1 running demo/client and node-2 running demo/server, served on 127.0.0.1:0.
async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CaConfig::new(trust_domain());
    config.max_ttl = MAX_TTL;
    let ca = Arc::new(open_ca(&dir.path().join("ca"), None, config).unwrap());
    let ledger = Arc::new(Ledger::open(&dir.path().join("ca")).unwrap());
    let node1_token = generate_token().unwrap();
    let tokens = [
        ("node-1".to_string(), node1_token.clone()),
        ("node-2".to_string(), generate_token().unwrap()),
    ];
    let credentials = NodeCredentials::new(tokens.into()).unwrap();
    let index = StaticNodeIndex::new(&trust_domain(), &[pod("node-1", "client"), pod("node-2", "server")]).unwrap();
    let service = CaService::new(ca.clone(), credentials, index, ledger.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tls = serving_tls(ca.clone()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, tls, service, async {
        let _ = stopped.await;
    }));
    Harness {
        addr,
        ca,
        ledger,
        node1_token,
        dir,
        _stop: stop,
    }
}

impl Harness {
    /// A client generated from the protobuf definitions, over TLS that checks the control plane's identity.
    async fn raw_client(&self) -> IstioCertificateServiceClient<Channel> {
        let bundle = self.ca.trust_bundle();
        let config = anonymous_client_config(&bundle, vec![control_identity(&trust_domain())]).unwrap();
        IstioCertificateServiceClient::new(connect_channel(&self.addr, config).await.unwrap())
    }

    async fn call(&self, request: tonic::Request<IstioCertificateRequest>) -> Result<Vec<String>, Status> {
        let response = self.raw_client().await.create_certificate(request).await?;
        Ok(response.into_inner().cert_chain)
    }
}

/// A P-256 CSR whose only SAN is `uri`.
fn csr(uri: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn request(
    csr: &str,
    impersonate: Option<&str>,
    seconds: i64,
    token: Option<&str>,
) -> tonic::Request<IstioCertificateRequest> {
    let metadata = impersonate.map(|identity| {
        let value = Value {
            kind: Some(Kind::StringValue(identity.to_string())),
        };
        Struct {
            fields: [("ImpersonatedIdentity".to_string(), value)].into(),
        }
    });
    let message = IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: seconds,
        metadata,
    };
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn der_chain(chain_pem: &[String]) -> Vec<CertificateDer<'static>> {
    chain_pem
        .iter()
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
        .collect()
}

fn uri_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => uri.to_string(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn generated_client_gets_a_chain_for_an_identity_on_its_node() {
    let h = start().await;
    let chain_pem = h
        .call(request(&csr(CLIENT), Some(CLIENT), 3600, Some(&h.node1_token)))
        .await
        .unwrap();
    assert!(chain_pem.len() >= 2, "leaf and root at least: {chain_pem:?}");
    let chain = der_chain(&chain_pem);
    let bundle = h.ca.trust_bundle();
    assert_eq!(chain.last().unwrap(), &bundle.roots()[0], "the root comes last");
    assert_eq!(bundle.verify(&chain, SystemTime::now()).unwrap(), id(CLIENT));
    assert_eq!(uri_sans(&chain[0]), [CLIENT]);
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let validity = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!(
        (3500..=3700).contains(&validity),
        "asked for one hour, got {validity} s"
    );
}

#[tokio::test]
async fn without_impersonation_the_csr_san_is_the_requested_identity() {
    let h = start().await;
    let chain_pem = h
        .call(request(&csr(CLIENT), None, 0, Some(&h.node1_token)))
        .await
        .unwrap();
    assert_eq!(uri_sans(&der_chain(&chain_pem)[0]), [CLIENT]);
    let denied = h
        .call(request(&csr(SERVER), None, 0, Some(&h.node1_token)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
}

#[tokio::test]
async fn an_identity_without_a_pod_on_the_callers_node_is_denied() {
    let h = start().await;
    let status = h
        .call(request(&csr(SERVER), Some(SERVER), 0, Some(&h.node1_token)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), format!("no pod on node node-1 runs as {SERVER}"));
    assert!(h.ledger.entries().is_empty());
}

#[tokio::test]
async fn missing_or_unknown_tokens_are_unauthenticated() {
    let h = start().await;
    let cases = [(None, "no credentials"), (Some(generate_token().unwrap()), "not known")];
    for (token, message) in cases {
        let status = h
            .call(request(&csr(CLIENT), Some(CLIENT), 0, token.as_deref()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains(message), "{status:?}");
    }
}

#[tokio::test]
async fn bad_csrs_are_invalid_arguments_with_the_reason() {
    let h = start().await;
    let now = SystemTime::now();
    let client = id(CLIENT);
    let foreign = "spiffe://other.org/ns/demo/sa/client";
    // (CSR, impersonated identity, the CA's own error for that CSR).
    let cases = [
        (
            "garbage".to_string(),
            Some(CLIENT),
            h.ca.sign_csr("garbage", &client, None, now).unwrap_err().to_string(),
        ),
        (
            csr(foreign),
            Some(CLIENT),
            h.ca.sign_csr(&csr(foreign), &client, None, now)
                .unwrap_err()
                .to_string(),
        ),
        (csr(foreign), Some(foreign), foreign.to_string()),
        (csr(foreign), None, foreign.to_string()),
    ];
    for (csr, impersonate, message) in cases {
        let status = h
            .call(request(&csr, impersonate, 0, Some(&h.node1_token)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(&message),
            "{:?} does not contain {message:?}",
            status.message()
        );
    }
}

#[tokio::test]
async fn a_ttl_over_the_maximum_is_an_invalid_argument() {
    let h = start().await;
    let ttl = MAX_TTL + Duration::from_secs(1);
    let expected =
        h.ca.sign_csr(&csr(CLIENT), &id(CLIENT), Some(ttl), SystemTime::now())
            .unwrap_err();
    let seconds = i64::try_from(ttl.as_secs()).unwrap();
    let status = h
        .call(request(&csr(CLIENT), Some(CLIENT), seconds, Some(&h.node1_token)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), expected.to_string());
}

#[tokio::test]
async fn ca_client_round_trip_is_recorded_in_the_ledger() {
    let h = start().await;
    let server = control_identity(&trust_domain());
    let client = CaClient::connect(&h.addr, h.ca.trust_bundle(), &h.node1_token, server)
        .await
        .unwrap();
    let cert = client
        .create_certificate(&id(CLIENT), Some(Duration::from_secs(7200)))
        .await
        .unwrap();
    assert_eq!(cert.identity(), &id(CLIENT));
    assert!(cert.is_valid_at(SystemTime::now()));
    let again = client.create_certificate(&id(CLIENT), None).await.unwrap();
    assert_ne!(again.serial(), cert.serial());

    let entries = ledger::read(&h.dir.path().join("ca").join(ledger::LEDGER_FILE)).unwrap();
    assert_eq!(entries, h.ledger.entries());
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (entries[0].identity.clone(), entries[0].serial.as_str()),
        (id(CLIENT), cert.serial())
    );
    assert_eq!(entries[0].caller, "node-1");
    assert_eq!(entries[0].not_after, cert.not_after());

    let report = check(h.ca.not_after(), entries, SystemTime::now());
    assert!(!report.ca_expired());
    assert_eq!(report.certificates.len(), 2);
    assert!(report.certificates.iter().all(|c| c.status == CertStatus::Valid));
    let later = check(
        h.ca.not_after(),
        h.ledger.entries(),
        cert.not_after() - Duration::from_secs(60),
    );
    assert_eq!(later.certificates[0].status, CertStatus::Expiring);
}

#[tokio::test]
async fn ca_client_is_a_certificate_source() {
    use ambit_identity::manager::CertificateSource;
    let h = start().await;
    let server = control_identity(&trust_domain());
    let client = CaClient::connect(&h.addr, h.ca.trust_bundle(), &h.node1_token, server)
        .await
        .unwrap();
    let client = client.with_ttl(Some(Duration::from_secs(600)));
    let cert = client.fetch(id(CLIENT)).await.unwrap();
    assert_eq!(cert.identity(), &id(CLIENT));
    let left = cert.not_after().duration_since(SystemTime::now()).unwrap().as_secs();
    assert!((590..=600).contains(&left), "asked for 600 s, {left} s left");
    let Err(err) = client.fetch(id(SERVER)).await else {
        panic!("fetched an identity not on node-1")
    };
    assert!(
        err.0.contains("PermissionDenied") || err.0.contains("no pod on node node-1"),
        "{err}"
    );
}

#[tokio::test]
async fn ca_client_refuses_a_server_with_another_identity() {
    let h = start().await;
    let impostor_expected = id("spiffe://cluster.local/ns/ambit-system/sa/someone-else");
    let result = CaClient::connect(&h.addr, h.ca.trust_bundle(), &h.node1_token, impostor_expected).await;
    let err = result.err().unwrap();
    assert!(matches!(err, CaClientError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains("ambit-control"),
        "the message names the identity presented: {err}"
    );
}

#[tokio::test]
async fn ca_client_refuses_a_server_outside_its_trust_bundle() {
    let h = start().await;
    let other = tempfile::tempdir().unwrap();
    let other_ca = open_ca(other.path(), None, CaConfig::new(trust_domain())).unwrap();
    let server = control_identity(&trust_domain());
    let result = CaClient::connect(&h.addr, other_ca.trust_bundle(), &h.node1_token, server).await;
    assert!(
        matches!(result, Err(CaClientError::Connect { .. })),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn ca_client_reports_a_refusal_as_the_status() {
    let h = start().await;
    let server = control_identity(&trust_domain());
    let client = CaClient::connect(&h.addr, h.ca.trust_bundle(), &h.node1_token, server)
        .await
        .unwrap();
    let Err(err) = client.create_certificate(&id(SERVER), None).await else {
        panic!("a certificate for an identity not on node-1");
    };
    assert!(
        matches!(&err, CaClientError::Rpc(s) if s.code() == Code::PermissionDenied),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_serving_certificate_is_reissued_at_half_life() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CaConfig::new(trust_domain());
    config.default_ttl = Duration::from_secs(2);
    let ca = Arc::new(open_ca(dir.path(), None, config).unwrap());
    let mut tls = serving_tls(ca).unwrap();
    let first = tls.borrow_and_update().clone();
    tokio::time::timeout(Duration::from_secs(5), tls.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !Arc::ptr_eq(&first, &tls.borrow()),
        "a new configuration replaced the first one"
    );
}

#[test]
fn trust_bundle_pem_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let ca = open_ca(dir.path(), None, CaConfig::new(trust_domain())).unwrap();
    let bundle = TrustBundle::from_pem(&ca.trust_bundle().to_pem()).unwrap();
    assert_eq!(bundle, ca.trust_bundle());
}

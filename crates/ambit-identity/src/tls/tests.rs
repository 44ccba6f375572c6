//! Unit tests of the rustls configurations (handshakes are in `tests/handshake.rs`).

use rustls::NamedGroup;
use rustls::client::Resumption;

use super::*;
use crate::ca::{CaConfig, CertificateAuthority};

fn identity(s: &str) -> Identity {
    s.parse().unwrap()
}

fn issued() -> (tempfile::TempDir, WorkloadCertificate, TrustBundle) {
    let dir = tempfile::tempdir().unwrap();
    let config = CaConfig::new(TrustDomain::new("cluster.local").unwrap());
    let ca = CertificateAuthority::load_or_create(dir.path(), config, std::time::SystemTime::now()).unwrap();
    let cert = ca
        .issue(
            &identity("spiffe://cluster.local/ns/a/sa/b"),
            None,
            std::time::SystemTime::now(),
        )
        .unwrap();
    (dir, cert, ca.trust_bundle())
}

#[test]
fn provider_prefers_hybrid_post_quantum_key_exchange() {
    let groups: Vec<NamedGroup> = provider().kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(
        groups,
        [NamedGroup::X25519MLKEM768, NamedGroup::X25519, NamedGroup::secp256r1]
    );
    let suites: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(
        suites,
        [
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        ]
    );
    assert!(Arc::ptr_eq(&provider(), &provider()), "built once");
}

#[test]
fn client_sends_no_sni_resumes_nothing_and_offers_h2() {
    let (_dir, cert, bundle) = issued();
    let expected = vec![identity("spiffe://cluster.local/ns/x/sa/y")];
    for config in [
        client_config(&cert, &bundle, expected.clone()).unwrap(),
        anonymous_client_config(&bundle, expected.clone()).unwrap(),
    ] {
        assert!(!config.enable_sni);
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
        assert_eq!(
            format!("{:?}", config.resumption),
            format!("{:?}", Resumption::disabled())
        );
    }
    assert!(
        client_config(&cert, &bundle, expected)
            .unwrap()
            .client_auth_cert_resolver
            .has_certs()
    );
}

#[test]
fn server_issues_no_tickets_and_offers_h2() {
    let (_dir, cert, bundle) = issued();
    for config in [
        server_config(&cert, &bundle).unwrap(),
        server_config_optional_client_auth(&cert, &bundle).unwrap(),
    ] {
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
        assert_eq!(config.send_tls13_tickets, 0);
        assert!(!config.ticketer.enabled());
    }
}

#[test]
fn configurations_refuse_unusable_inputs() {
    let (_dir, cert, bundle) = issued();
    let empty = TrustBundle::new(vec![]);
    assert!(matches!(server_config(&cert, &empty), Err(TlsError::EmptyBundle)));
    let expected = vec![identity("spiffe://cluster.local/ns/x/sa/y")];
    assert!(matches!(
        client_config(&cert, &empty, expected),
        Err(TlsError::EmptyBundle)
    ));
    let err = client_config(&cert, &bundle, vec![]).unwrap_err();
    assert!(matches!(err, TlsError::NoExpectedIdentities), "{err:?}");
    let junk = TrustBundle::new(vec![CertificateDer::from(b"junk".to_vec())]);
    assert!(matches!(
        server_config(&cert, &junk),
        Err(TlsError::BadRoot { index: 0, .. })
    ));
}

#[test]
fn rejections_print_their_message_inside_rustls_errors() {
    let rejected = PeerRejected::ForeignClient {
        client: identity("spiffe://other.example/ns/a/sa/b"),
        trust_domain: TrustDomain::new("cluster.local").unwrap(),
    };
    let error = rustls::Error::from(rejected);
    assert!(
        error.to_string().contains(
            "client identity spiffe://other.example/ns/a/sa/b is outside this server's trust domain cluster.local"
        ),
        "{error}"
    );
}

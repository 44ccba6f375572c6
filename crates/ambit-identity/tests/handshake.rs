//! HBONE mTLS handshakes over loopback, both ends in the test.

mod common;

use std::time::SystemTime;

use ambit_identity::tls::{self, ALPN_H2};
use common::{handshake, id, new_ca};
use rustls::{NamedGroup, ProtocolVersion};

const CLIENT: &str = "spiffe://cluster.local/ns/demo/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/demo/sa/server";

#[tokio::test]
async fn mutual_tls_succeeds_for_the_expected_identity() {
    let (_dir, ca) = new_ca("cluster.local");
    let server_cert = ca.issue(&id(SERVER), None, SystemTime::now()).unwrap();
    let client_cert = ca.issue(&id(CLIENT), None, SystemTime::now()).unwrap();
    let bundle = ca.trust_bundle();
    let server = tls::server_config(&server_cert, &bundle).unwrap();
    // The expected list may hold several identities (workload plus service SANs); one match is enough.
    let expected = vec![id("spiffe://cluster.local/ns/demo/sa/other"), id(SERVER)];
    let client = tls::client_config(&client_cert, &bundle, expected).unwrap();

    let (client_side, server_side) = handshake(server, client).await.ok();
    assert_eq!(client_side.peer, Some(id(SERVER)));
    assert_eq!(server_side.peer, Some(id(CLIENT)));
    for side in [&client_side, &server_side] {
        assert_eq!(side.alpn.as_deref(), Some(ALPN_H2));
        assert_eq!(side.group, Some(NamedGroup::X25519MLKEM768));
        assert_eq!(side.version, Some(ProtocolVersion::TLSv1_3));
    }
}

#[tokio::test]
async fn client_refuses_a_server_with_another_identity() {
    let (_dir, ca) = new_ca("cluster.local");
    let server_cert = ca.issue(&id(SERVER), None, SystemTime::now()).unwrap();
    let client_cert = ca.issue(&id(CLIENT), None, SystemTime::now()).unwrap();
    let bundle = ca.trust_bundle();
    let server = tls::server_config(&server_cert, &bundle).unwrap();
    let expected = vec![id("spiffe://cluster.local/ns/demo/sa/server-but-not-quite")];
    let client = tls::client_config(&client_cert, &bundle, expected).unwrap();

    let (client_err, _) = handshake(server, client).await.failed();
    assert!(
        client_err.contains("match none of the expected identities"),
        "{client_err}"
    );
    assert!(client_err.contains(SERVER), "{client_err}");
}

#[tokio::test]
async fn client_refuses_a_server_from_an_untrusted_root() {
    let (_dir, ca) = new_ca("cluster.local");
    let (_other_dir, impostor_ca) = new_ca("cluster.local");
    let server_cert = impostor_ca.issue(&id(SERVER), None, SystemTime::now()).unwrap();
    let client_cert = ca.issue(&id(CLIENT), None, SystemTime::now()).unwrap();
    let server = tls::server_config(&server_cert, &impostor_ca.trust_bundle().merged(&ca.trust_bundle())).unwrap();
    let client = tls::client_config(&client_cert, &ca.trust_bundle(), vec![id(SERVER)]).unwrap();

    let (client_err, _) = handshake(server, client).await.failed();
    // Both roots are named "ambit root CA", so webpki tries the trusted one and its signature check fails.
    assert!(
        client_err.contains("invalid peer certificate: BadSignature"),
        "{client_err}"
    );
}

#[tokio::test]
async fn server_refuses_a_client_from_a_foreign_trust_domain() {
    let (_dir, ca) = new_ca("cluster.local");
    let (_other_dir, foreign_ca) = new_ca("other.example");
    let bundle = ca.trust_bundle().merged(&foreign_ca.trust_bundle());
    let server_cert = ca.issue(&id(SERVER), None, SystemTime::now()).unwrap();
    let client_cert = foreign_ca
        .issue(&id("spiffe://other.example/ns/demo/sa/client"), None, SystemTime::now())
        .unwrap();
    // The bundle trusts both roots, so only the trust-domain check can refuse the client.
    let server = tls::server_config(&server_cert, &bundle).unwrap();
    let client = tls::client_config(&client_cert, &bundle, vec![id(SERVER)]).unwrap();

    let (_, server_err) = handshake(server, client).await.failed();
    assert!(
        server_err.contains("outside this server's trust domain cluster.local"),
        "{server_err}"
    );
}

#[tokio::test]
async fn server_refuses_a_client_without_a_certificate() {
    let (_dir, ca) = new_ca("cluster.local");
    let server_cert = ca.issue(&id(SERVER), None, SystemTime::now()).unwrap();
    let server = tls::server_config(&server_cert, &ca.trust_bundle()).unwrap();
    let client = tls::anonymous_client_config(&ca.trust_bundle(), vec![id(SERVER)]).unwrap();

    let (_, server_err) = handshake(server, client).await.failed();
    assert!(
        server_err.contains("NoCertificatesPresented") || server_err.contains("no certificates"),
        "{server_err}"
    );
}

#[tokio::test]
async fn optional_client_auth_accepts_anonymous_and_certified_clients() {
    let (_dir, ca) = new_ca("cluster.local");
    let (_other_dir, foreign_ca) = new_ca("other.example");
    let bundle = ca.trust_bundle().merged(&foreign_ca.trust_bundle());
    let control = id("spiffe://cluster.local/ns/ambit-system/sa/ambit-control");
    let server_cert = ca.issue(&control, None, SystemTime::now()).unwrap();
    let server = tls::server_config_optional_client_auth(&server_cert, &bundle).unwrap();

    let anonymous = tls::anonymous_client_config(&bundle, vec![control.clone()]).unwrap();
    let (client_side, server_side) = handshake(server.clone(), anonymous).await.ok();
    assert_eq!((client_side.peer, server_side.peer), (Some(control.clone()), None));

    let client_cert = ca.issue(&id(CLIENT), None, SystemTime::now()).unwrap();
    let certified = tls::client_config(&client_cert, &bundle, vec![control.clone()]).unwrap();
    let (_, server_side) = handshake(server.clone(), certified).await.ok();
    assert_eq!(server_side.peer, Some(id(CLIENT)));

    let foreign_cert = foreign_ca
        .issue(&id("spiffe://other.example/ns/a/sa/b"), None, SystemTime::now())
        .unwrap();
    let foreign = tls::client_config(&foreign_cert, &bundle, vec![control]).unwrap();
    let (_, server_err) = handshake(server, foreign).await.failed();
    assert!(
        server_err.contains("outside this server's trust domain"),
        "{server_err}"
    );
}

#[tokio::test]
async fn root_rotation_window_lets_old_and_new_leaves_talk() {
    let (_old_dir, old_ca) = new_ca("cluster.local");
    let (_new_dir, new_ca) = new_ca("cluster.local");
    let window = old_ca.trust_bundle().merged(&new_ca.trust_bundle());
    assert_eq!(window.roots().len(), 2);
    let old_leaf = old_ca.issue(&id(SERVER), None, SystemTime::now()).unwrap();
    let new_leaf = new_ca.issue(&id(CLIENT), None, SystemTime::now()).unwrap();
    assert_eq!(window.verify(old_leaf.chain(), SystemTime::now()).unwrap(), id(SERVER));
    assert_eq!(window.verify(new_leaf.chain(), SystemTime::now()).unwrap(), id(CLIENT));

    // Old-root server, new-root client, and the other way round.
    let server = tls::server_config(&old_leaf, &window).unwrap();
    let client = tls::client_config(&new_leaf, &window, vec![id(SERVER)]).unwrap();
    let (c, s) = handshake(server, client).await.ok();
    assert_eq!((c.peer, s.peer), (Some(id(SERVER)), Some(id(CLIENT))));

    let server = tls::server_config(&new_leaf, &window).unwrap();
    let client = tls::client_config(&old_leaf, &window, vec![id(CLIENT)]).unwrap();
    let (c, s) = handshake(server, client).await.ok();
    assert_eq!((c.peer, s.peer), (Some(id(CLIENT)), Some(id(SERVER))));

    // Without the window, the old-root server is refused by a client that trusts only the new root.
    let server = tls::server_config(&old_leaf, &window).unwrap();
    let client = tls::client_config(&new_leaf, &new_ca.trust_bundle(), vec![id(SERVER)]).unwrap();
    handshake(server, client).await.failed();
}

#[tokio::test]
async fn plugin_ca_leaves_handshake() {
    let config = ambit_identity::ca::CaConfig::new(common::trust_domain("cluster.local"));
    let ca = ambit_identity::ca::CertificateAuthority::from_plugin(&common::fixture("istio-cacerts"), config).unwrap();
    let server_cert = ca.issue(&id(SERVER), None, SystemTime::now()).unwrap();
    let client_cert = ca.issue(&id(CLIENT), None, SystemTime::now()).unwrap();
    let bundle = ca.trust_bundle();
    let server = tls::server_config(&server_cert, &bundle).unwrap();
    let client = tls::client_config(&client_cert, &bundle, vec![id(SERVER)]).unwrap();
    let (c, s) = handshake(server, client).await.ok();
    assert_eq!((c.peer, s.peer), (Some(id(SERVER)), Some(id(CLIENT))));
}

/// Our client offers the post-quantum hybrid first, and still connects to a peer that only speaks classical X25519.
#[tokio::test]
async fn classical_key_exchange_is_the_fallback() {
    use std::sync::Arc;

    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;

    let (_dir, ca) = new_ca("cluster.local");
    let server_cert = ca.issue(&id(SERVER), None, SystemTime::now()).unwrap();
    let client_cert = ca.issue(&id(CLIENT), None, SystemTime::now()).unwrap();
    let mut classical = (*tls::provider()).clone();
    classical.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let key = PrivateKeyDer::from_pem_slice(server_cert.key_pem().as_bytes()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(classical))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(server_cert.chain().to_vec(), key)
        .unwrap();
    server.alpn_protocols = vec![ALPN_H2.to_vec()];
    let client = tls::client_config(&client_cert, &ca.trust_bundle(), vec![id(SERVER)]).unwrap();

    let (client_side, _) = handshake(Arc::new(server), client).await.ok();
    assert_eq!(client_side.group, Some(NamedGroup::X25519));
    assert_eq!(client_side.peer, Some(id(SERVER)));
}

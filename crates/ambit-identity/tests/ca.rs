//! The CA end to end: issued certificates, CSR refusals, the persisted root, plug-in CAs.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ambit_identity::ca::{self, CaConfig, CaError, CertificateAuthority, CsrError};
use ambit_identity::cert::{CertificateRequest, TrustBundle, WorkloadCertificate};
use common::{fixture, id, new_ca, now, trust_domain};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const CLIENT: &str = "spiffe://cluster.local/ns/demo/sa/client";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn parse_leaf(pem: &str) -> Vec<u8> {
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    let der: rustls_pki_types::CertificateDer<'static> = der;
    der.to_vec()
}

fn chain_ders(chain_pem: &[String]) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    chain_pem.iter().map(|p| parse_leaf(p).into()).collect()
}

#[test]
fn issued_certificate_has_exactly_the_requested_san_ttl_and_usages() {
    let (_dir, ca) = new_ca("cluster.local");
    let request = CertificateRequest::generate(&id(CLIENT)).unwrap();
    let at = now();
    let issued = ca.sign_csr(&request.csr_pem, &id(CLIENT), None, at).unwrap();

    assert_eq!(issued.identity, id(CLIENT));
    assert_eq!(
        issued.not_after.duration_since(at).unwrap(),
        DAY,
        "default TTL is 24 h, reported exactly"
    );
    assert_eq!(
        at.duration_since(issued.not_before).unwrap(),
        Duration::from_secs(60),
        "1 min clock skew"
    );
    assert_eq!(issued.chain_pem.len(), 2, "leaf then root");
    assert_eq!(issued.chain_pem[1], ca.trust_bundle().to_pem(), "root last");

    let der = parse_leaf(&issued.chain_pem[0]);
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    let sans = &leaf.subject_alternative_name().unwrap().unwrap().value.general_names;
    assert_eq!(sans.len(), 1);
    assert!(matches!(sans[0], GeneralName::URI(uri) if uri == CLIENT));
    let usage = leaf.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && usage.key_encipherment() && !usage.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!leaf.is_ca());
    assert_eq!(leaf.tbs_certificate.serial.to_str_radix(16), issued.serial);
    assert_eq!(leaf.public_key().raw, public_key_of_csr(&request.csr_pem));

    let verified = ca.trust_bundle().verify(&chain_ders(&issued.chain_pem), now()).unwrap();
    assert_eq!(verified, id(CLIENT));
    let cert = request.into_certificate(&issued.chain_pem).unwrap();
    assert_eq!(cert.serial(), issued.serial);
    assert_eq!(cert.not_after(), issued.not_after);
}

fn public_key_of_csr(csr_pem: &str) -> Vec<u8> {
    let der: rustls_pki_types::CertificateSigningRequestDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(csr_pem.as_bytes()).unwrap();
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref()).unwrap();
    csr.certification_request_info.subject_pki.raw.to_vec()
}

#[test]
fn ttl_is_honoured_exactly_and_serials_are_random() {
    let (_dir, ca) = new_ca("cluster.local");
    let ttl = Duration::from_secs(3 * 3600);
    // One instant for issuing and checking: `now()` again later may be the next second.
    let at = now();
    let a = ca.issue(&id(CLIENT), Some(ttl), at).unwrap();
    let b = ca.issue(&id(CLIENT), Some(ca.config().max_ttl), at).unwrap();
    assert_eq!(a.not_after().duration_since(at).unwrap(), ttl);
    assert_eq!(b.not_after().duration_since(at).unwrap(), ca.config().max_ttl);
    assert_ne!(a.serial(), b.serial());
    assert_eq!(a.serial().len(), 32, "16 random bytes, top byte non-zero");
    let zero = ca.issue(&id(CLIENT), Some(Duration::ZERO), at).unwrap();
    assert_eq!(
        zero.not_after().duration_since(at).unwrap(),
        DAY,
        "zero means the default, as in Istio"
    );
    assert_eq!(ca.trust_bundle().verify(a.chain(), now()).unwrap(), id(CLIENT));
}

/// A CSR made with rcgen: `key` signs it, `sans` are its only names.
fn csr(key: &KeyPair, sans: &[&str]) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.strip_prefix("dns:") {
            Some(dns) => SanType::DnsName(dns.try_into().unwrap()),
            None => SanType::URI((*s).try_into().unwrap()),
        })
        .collect();
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// A valid CSR whose signature no longer matches (last byte of the signature flipped).
fn csr_with_bad_signature() -> String {
    let pem = csr(&p256(), &[CLIENT]);
    let der: rustls_pki_types::CertificateSigningRequestDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    let mut bytes = der.to_vec();
    *bytes.last_mut().unwrap() ^= 0x01;
    to_pem("CERTIFICATE REQUEST", &bytes)
}

fn to_pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der))
}

#[test]
fn bad_csrs_are_refused_each_with_its_reason() {
    let (_dir, ca) = new_ca("cluster.local");
    let requested = id(CLIENT);
    type Check = fn(&CsrError) -> bool;
    let cases: Vec<(&str, String, Option<Duration>, Check, &str)> = vec![
        (
            "no SAN",
            csr(&p256(), &[]),
            None,
            |e| matches!(e, CsrError::NoSan),
            "no subject alternative name",
        ),
        (
            "several SANs",
            csr(&p256(), &[CLIENT, "spiffe://cluster.local/ns/demo/sa/other"]),
            None,
            |e| matches!(e, CsrError::SeveralSans(2)),
            "has 2 subject alternative names",
        ),
        (
            "another identity",
            csr(&p256(), &["spiffe://cluster.local/ns/demo/sa/other"]),
            None,
            |e| matches!(e, CsrError::NotRequested { found, .. } if found == "spiffe://cluster.local/ns/demo/sa/other"),
            "is not the requested identity spiffe://cluster.local/ns/demo/sa/client",
        ),
        (
            "non-SPIFFE URI",
            csr(&p256(), &["https://x"]),
            None,
            |e| matches!(e, CsrError::NotSpiffe(uri) if uri == "https://x"),
            "\"https://x\" is not a SPIFFE workload identity",
        ),
        (
            "DNS name",
            csr(&p256(), &["dns:client.demo.svc"]),
            None,
            |e| matches!(e, CsrError::NotSpiffe(_)),
            "DNSName(client.demo.svc)",
        ),
        (
            "foreign trust domain",
            csr(&p256(), &["spiffe://other.example/ns/demo/sa/client"]),
            None,
            |e| matches!(e, CsrError::ForeignTrustDomain { expected, .. } if expected.as_str() == "cluster.local"),
            "outside this CA's trust domain cluster.local",
        ),
        (
            "Ed25519 key",
            csr(&KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(), &[CLIENT]),
            None,
            |e| matches!(e, CsrError::UnsupportedKey(k) if k == "Ed25519"),
            "public key is Ed25519: only ECDSA P-256/P-384 and RSA 2048..=4096",
        ),
        (
            "P-521 key",
            csr(
                &KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap(),
                &[CLIENT],
            ),
            None,
            |e| matches!(e, CsrError::UnsupportedKey(_)),
            "ECDSA on curve 1.3.132.0.35",
        ),
        (
            "RSA 1024 key (OpenSSL)",
            fs::read_to_string(fixture("openssl-csr/rsa1024.csr.pem")).unwrap(),
            None,
            |e| matches!(e, CsrError::UnsupportedKey(_)),
            "RSA with 1024 bits",
        ),
        (
            "bad signature",
            csr_with_bad_signature(),
            None,
            |e| matches!(e, CsrError::BadSignature),
            "signature",
        ),
        (
            "garbage bytes",
            "\u{1}\u{2}garbage".to_string(),
            None,
            |e| matches!(e, CsrError::Garbage(_)),
            "no such block found",
        ),
        (
            "PEM garbage",
            to_pem("CERTIFICATE REQUEST", b"not DER"),
            None,
            |e| matches!(e, CsrError::Garbage(_)),
            "invalid DER",
        ),
        (
            "certificate instead of CSR",
            ca.trust_bundle().to_pem(),
            None,
            |e| matches!(e, CsrError::Garbage(_)),
            "not a PKCS#10 request in a PEM \"CERTIFICATE REQUEST\" block: no such block found",
        ),
        (
            "TTL over max",
            csr(&p256(), &[CLIENT]),
            Some(Duration::from_secs(8 * 24 * 3600)),
            |e| matches!(e, CsrError::TtlTooLong { .. }),
            "validity of 691200s exceeds this CA's maximum of 604800s",
        ),
    ];
    for (name, csr_pem, ttl, check, message) in cases {
        let err = ca.sign_csr(&csr_pem, &requested, ttl, now()).unwrap_err();
        assert!(check(&err), "{name}: unexpected {err:?}");
        assert!(err.to_string().contains(message), "{name}: {err} lacks {message:?}");
    }
}

#[test]
fn p384_rsa_and_openssl_csrs_are_accepted() {
    let (_dir, ca) = new_ca("cluster.local");
    let rsa = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let openssl = fs::read_to_string(fixture("openssl-csr/p256.csr.pem")).unwrap();
    for csr_pem in [csr(&rsa, &[CLIENT]), csr(&p384, &[CLIENT]), openssl] {
        let issued = ca.sign_csr(&csr_pem, &id(CLIENT), None, now()).unwrap();
        let der = parse_leaf(&issued.chain_pem[0]);
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(
            leaf.public_key().raw,
            public_key_of_csr(&csr_pem),
            "the CSR's key is kept"
        );
        assert_eq!(
            ca.trust_bundle().verify(&chain_ders(&issued.chain_pem), now()).unwrap(),
            id(CLIENT)
        );
    }
}

#[test]
fn issue_refuses_like_sign_csr() {
    let (_dir, ca) = new_ca("cluster.local");
    let err = ca
        .issue(&id("spiffe://other.example/ns/a/sa/b"), None, now())
        .unwrap_err();
    assert!(
        matches!(err, CaError::Csr(CsrError::ForeignTrustDomain { .. })),
        "{err:?}"
    );
    let err = ca
        .issue(&id(CLIENT), Some(Duration::from_secs(30 * 24 * 3600)), now())
        .unwrap_err();
    assert!(matches!(err, CaError::Csr(CsrError::TtlTooLong { .. })), "{err:?}");
}

#[test]
fn root_is_persisted_with_a_private_key_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let config = CaConfig::new(trust_domain("cluster.local"));
    // One instant for the creation and the check of its validity: `now()` again later may be the next second.
    let created = now();
    let first = CertificateAuthority::load_or_create(dir.path(), config.clone(), created).unwrap();
    let key_mode = fs::metadata(dir.path().join(ca::CA_KEY_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    let root_pem = fs::read_to_string(dir.path().join(ca::ROOT_CERT_FILE)).unwrap();
    assert_eq!(first.trust_bundle().to_pem(), root_pem);

    let later = now() + Duration::from_secs(3600);
    let second = CertificateAuthority::load_or_create(dir.path(), config, later).unwrap();
    assert_eq!(
        second.trust_bundle(),
        first.trust_bundle(),
        "same root on the second start"
    );
    assert_eq!(second.not_after(), first.not_after());
    let cert = second.issue(&id(CLIENT), None, now()).unwrap();
    assert_eq!(first.trust_bundle().verify(cert.chain(), now()).unwrap(), id(CLIENT));

    let der = first.trust_bundle().roots()[0].to_vec();
    let (_, root) = X509Certificate::from_der(&der).unwrap();
    assert!(root.is_ca());
    assert_eq!(
        root.subject().iter_common_name().next().unwrap().as_str().unwrap(),
        "ambit root CA"
    );
    assert_eq!(
        first.not_after().duration_since(created).unwrap(),
        3650 * DAY,
        "ten years"
    );
}

#[test]
fn key_readable_by_others_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = CaConfig::new(trust_domain("cluster.local"));
    CertificateAuthority::load_or_create(dir.path(), config.clone(), now()).unwrap();
    let key = dir.path().join(ca::CA_KEY_FILE);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), config, now()).unwrap_err();
    assert!(
        matches!(&err, CaError::KeyPermissions { path, mode: 0o644 } if path == &key),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&key.display().to_string()), "{message}");
    assert!(message.contains("0644") && message.contains("chmod 600"), "{message}");
}

#[test]
fn half_present_or_mismatched_own_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = CaConfig::new(trust_domain("cluster.local"));
    CertificateAuthority::load_or_create(dir.path(), config.clone(), now()).unwrap();
    fs::remove_file(dir.path().join(ca::ROOT_CERT_FILE)).unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), config.clone(), now()).unwrap_err();
    assert!(
        matches!(&err, CaError::Io { path, .. } if path.ends_with(ca::ROOT_CERT_FILE)),
        "{err:?}"
    );

    let other = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_create(other.path(), config.clone(), now()).unwrap();
    fs::copy(
        other.path().join(ca::ROOT_CERT_FILE),
        dir.path().join(ca::ROOT_CERT_FILE),
    )
    .unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), config, now()).unwrap_err();
    assert!(
        matches!(&err, CaError::Invalid { path, .. } if path.ends_with(ca::CA_KEY_FILE)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("does not match the public key of root-cert.pem"),
        "{err}"
    );
}

/// Writes a root and an intermediate made with rcgen into `dir`, in Istio's `cacerts` layout.
fn write_plugin(dir: &Path) {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let root = CertifiedIssuer::self_signed(ca_params("Plug-in Root", None), root_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let intermediate = ca_params("Plug-in Intermediate", Some(0))
        .signed_by(&key, &root)
        .unwrap();
    fs::write(dir.join("root-cert.pem"), root.pem()).unwrap();
    fs::write(dir.join("ca-cert.pem"), intermediate.pem()).unwrap();
    fs::write(dir.join("ca-key.pem"), key.serialize_pem()).unwrap();
    fs::write(dir.join("cert-chain.pem"), intermediate.pem() + &root.pem()).unwrap();
}

fn ca_params(name: &str, path_len: Option<u8>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, BasicConstraints::Constrained));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = path_len.is_some();
    params
}

fn check_plugin_issues(dir: &Path) {
    let ca = CertificateAuthority::from_plugin(dir, CaConfig::new(trust_domain("cluster.local"))).unwrap();
    let roots = TrustBundle::from_pem(&fs::read_to_string(dir.join("root-cert.pem")).unwrap()).unwrap();
    assert_eq!(ca.trust_bundle(), roots);
    let request = CertificateRequest::generate(&id(CLIENT)).unwrap();
    let issued = ca.sign_csr(&request.csr_pem, &id(CLIENT), None, now()).unwrap();
    assert_eq!(issued.chain_pem.len(), 3, "leaf, intermediate, root");
    assert_eq!(
        issued.chain_pem[1],
        fs::read_to_string(dir.join("ca-cert.pem")).unwrap()
    );
    assert_eq!(issued.chain_pem[2], roots.to_pem(), "the answer ends with the root");
    assert_eq!(roots.verify(&chain_ders(&issued.chain_pem), now()).unwrap(), id(CLIENT));
    let cert: WorkloadCertificate = request.into_certificate(&issued.chain_pem).unwrap();
    assert_eq!(roots.verify(cert.chain(), now()).unwrap(), id(CLIENT));
}

#[test]
fn plugin_ca_made_with_rcgen_issues_leaves_that_chain_to_its_root() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin(dir.path());
    check_plugin_issues(dir.path());
}

#[test]
fn plugin_ca_made_like_istio_tooling_with_openssl_issues_leaves_that_chain_to_its_root() {
    check_plugin_issues(&fixture("istio-cacerts"));
}

#[test]
fn plugin_problems_name_the_file() {
    let config = || CaConfig::new(trust_domain("cluster.local"));
    for missing in ["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"] {
        let dir = tempfile::tempdir().unwrap();
        write_plugin(dir.path());
        fs::remove_file(dir.path().join(missing)).unwrap();
        let err = CertificateAuthority::from_plugin(dir.path(), config()).unwrap_err();
        assert!(
            matches!(&err, CaError::Io { path, .. } if path.ends_with(missing)),
            "{missing}: {err:?}"
        );
        assert!(err.to_string().contains(missing), "{err}");
    }

    let dir = tempfile::tempdir().unwrap();
    write_plugin(dir.path());
    fs::write(
        dir.path().join("ca-key.pem"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let err = CertificateAuthority::from_plugin(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, CaError::Plugin { path, .. } if path.ends_with("ca-key.pem")),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("does not match the public key of ca-cert.pem"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    write_plugin(dir.path());
    let stranger = tempfile::tempdir().unwrap();
    write_plugin(stranger.path());
    let stranger_root = fs::read_to_string(stranger.path().join("root-cert.pem")).unwrap();
    fs::write(dir.path().join("root-cert.pem"), &stranger_root).unwrap();
    // cert-chain.pem still ends with the real root, which root-cert.pem no longer holds.
    let err = CertificateAuthority::from_plugin(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, CaError::Plugin { path, .. } if path.ends_with("cert-chain.pem")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("last intermediate of cert-chain.pem is not signed by any certificate of root-cert.pem")
    );
    let ca_cert = fs::read_to_string(dir.path().join("ca-cert.pem")).unwrap();
    fs::write(dir.path().join("cert-chain.pem"), ca_cert + &stranger_root).unwrap();
    let err = CertificateAuthority::from_plugin(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, CaError::Plugin { path, .. } if path.ends_with("ca-cert.pem")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("it is not signed by any certificate of root-cert.pem"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    write_plugin(dir.path());
    let root = fs::read_to_string(dir.path().join("root-cert.pem")).unwrap();
    let stranger_intermediate = fs::read_to_string(stranger.path().join("ca-cert.pem")).unwrap();
    fs::write(dir.path().join("cert-chain.pem"), stranger_intermediate + &root).unwrap();
    let err = CertificateAuthority::from_plugin(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, CaError::Plugin { path, .. } if path.ends_with("cert-chain.pem")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("certificate #0 is not the issuer of ca-cert.pem"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    write_plugin(dir.path());
    let key = KeyPair::generate().unwrap();
    let not_a_ca = CertificateParams::new(vec!["leaf.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    fs::write(dir.path().join("ca-cert.pem"), not_a_ca.pem()).unwrap();
    fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
    let err = CertificateAuthority::from_plugin(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, CaError::Plugin { path, .. } if path.ends_with("ca-cert.pem")),
        "{err:?}"
    );
    assert!(err.to_string().contains("is not a CA certificate"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write_plugin(dir.path());
    fs::write(dir.path().join("cert-chain.pem"), "garbage").unwrap();
    let err = CertificateAuthority::from_plugin(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, CaError::Plugin { path, .. } if path.ends_with("cert-chain.pem")),
        "{err:?}"
    );
}

#[test]
fn unreadable_plugin_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin(dir.path());
    let key = dir.path().join("ca-key.pem");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&key).is_ok() {
        return; // Running as root: permissions do not stop reads; the missing-file case covers the path.
    }
    let err = CertificateAuthority::from_plugin(dir.path(), CaConfig::new(trust_domain("cluster.local"))).unwrap_err();
    assert!(matches!(&err, CaError::Io { path, .. } if path == &key), "{err:?}");
}

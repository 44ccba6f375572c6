//! Unit tests of certificates, requests and trust bundles.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, SanType};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;

use super::*;
use crate::ca::{CaConfig, CertificateAuthority};

const CLIENT: &str = "spiffe://cluster.local/ns/demo/sa/client";
const HOUR: Duration = Duration::from_secs(3600);

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

/// 2026-11-20T10:00:00Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_168_800)
}

fn new_ca() -> (tempfile::TempDir, CertificateAuthority) {
    let dir = tempfile::tempdir().unwrap();
    let config = CaConfig::new(ambit_types::TrustDomain::new("cluster.local").unwrap());
    let ca = CertificateAuthority::load_or_create(dir.path(), config, t0()).unwrap();
    (dir, ca)
}

/// A self-signed certificate with the given SANs and validity, as (chain PEMs, key PEM).
fn self_signed(sans: &[&str], from: SystemTime, until: SystemTime) -> (Vec<String>, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.strip_prefix("dns:") {
            Some(dns) => SanType::DnsName(dns.try_into().unwrap()),
            None => SanType::URI((*s).try_into().unwrap()),
        })
        .collect();
    let at = |t: SystemTime| {
        let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap()
    };
    params.not_before = at(from);
    params.not_after = at(until);
    let cert = params.self_signed(&key).unwrap();
    (vec![cert.pem()], key.serialize_pem())
}

#[test]
fn pem_round_trip_keeps_everything() {
    let (_dir, ca) = new_ca();
    let cert = ca.issue(&id(CLIENT), None, t0()).unwrap();
    let again = WorkloadCertificate::from_pem(&cert.chain_pem(), &cert.key_pem()).unwrap();
    assert_eq!(again.identity(), &id(CLIENT));
    assert_eq!(again.serial(), cert.serial());
    assert_eq!(again.chain(), cert.chain());
    assert_eq!(
        (again.not_before(), again.not_after()),
        (cert.not_before(), cert.not_after())
    );
    assert_eq!(again.key_pem(), cert.key_pem());
    assert!(again.key_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(again.certified_key().cert, cert.chain());
    // One string may also hold the whole chain.
    let joined = WorkloadCertificate::from_pem(&[cert.chain_pem().concat()], &cert.key_pem()).unwrap();
    assert_eq!(joined.chain(), cert.chain());
    let debug = format!("{cert:?}");
    assert!(debug.contains(CLIENT) && !debug.contains("PRIVATE"), "{debug}");
}

#[test]
fn from_pem_refuses_bad_input_precisely() {
    let (_dir, ca) = new_ca();
    let good = ca.issue(&id(CLIENT), None, t0()).unwrap();
    let other = ca.issue(&id(CLIENT), None, t0()).unwrap();
    let (no_uri, no_uri_key) = self_signed(&["dns:client.demo"], t0(), t0() + HOUR);
    let (two, two_key) = self_signed(&[CLIENT, "spiffe://cluster.local/ns/demo/sa/b"], t0(), t0() + HOUR);
    let (https, https_key) = self_signed(&["https://x"], t0(), t0() + HOUR);
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    type Check = fn(&CertError) -> bool;
    let cases: Vec<(&str, Vec<String>, String, Check, &str)> = vec![
        (
            "no chain",
            vec![],
            good.key_pem(),
            |e| matches!(e, CertError::EmptyChain),
            "chain is empty",
        ),
        (
            "not PEM",
            vec!["garbage".into()],
            good.key_pem(),
            |e| matches!(e, CertError::NoPem { .. }),
            "certificate chain entry #0 contains no \"CERTIFICATE\" PEM block",
        ),
        (
            "bad base64",
            vec!["-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into()],
            good.key_pem(),
            |e| matches!(e, CertError::Pem { .. }),
            "certificate chain entry #0: malformed PEM",
        ),
        (
            "not DER",
            vec![to_pem("CERTIFICATE", b"nope")],
            good.key_pem(),
            |e| matches!(e, CertError::Parse { .. }),
            "the leaf certificate is not a valid DER X.509 certificate",
        ),
        (
            "SEC1 key",
            good.chain_pem(),
            sec1.to_string(),
            |e| {
                matches!(
                    e,
                    CertError::NoPem {
                        label: "PRIVATE KEY",
                        ..
                    }
                )
            },
            "the private key PEM contains no \"PRIVATE KEY\" PEM block",
        ),
        (
            "key of another certificate",
            good.chain_pem(),
            other.key_pem(),
            |e| matches!(e, CertError::KeyMismatch),
            "does not match",
        ),
        (
            "no URI SAN",
            no_uri,
            no_uri_key,
            |e| matches!(e, CertError::NoSpiffeSan { .. }),
            "the leaf certificate has no URI SAN",
        ),
        (
            "two URI SANs",
            two,
            two_key,
            |e| matches!(e, CertError::SeveralSans { count: 2, .. }),
            "the leaf certificate has 2 URI SANs",
        ),
        (
            "non-SPIFFE URI",
            https,
            https_key,
            |e| matches!(e, CertError::InvalidIdentity { .. }),
            "its URI SAN is not a SPIFFE workload identity",
        ),
    ];
    for (name, chain, key, check, message) in cases {
        let err = WorkloadCertificate::from_pem(&chain, &key).unwrap_err();
        assert!(check(&err), "{name}: unexpected {err:?}");
        assert!(err.to_string().contains(message), "{name}: {err} lacks {message:?}");
    }
}

#[test]
fn refresh_happens_exactly_at_half_life() {
    let (chain, key) = self_signed(&[CLIENT], t0(), t0() + 2 * HOUR);
    let cert = WorkloadCertificate::from_pem(&chain, &key).unwrap();
    assert_eq!(cert.refresh_at(), t0() + HOUR);

    let (_dir, ca) = new_ca();
    let issued = ca.issue(&id(CLIENT), None, t0()).unwrap();
    let lifetime = issued.not_after().duration_since(issued.not_before()).unwrap();
    assert_eq!(issued.refresh_at(), issued.not_before() + lifetime / 2);
    // 24 h plus the 1 min backdating: half-life is 30 s before now + 12 h.
    assert_eq!(issued.refresh_at(), t0() + 12 * HOUR - Duration::from_secs(30));
}

#[test]
fn validity_includes_both_ends() {
    let (chain, key) = self_signed(&[CLIENT], t0(), t0() + HOUR);
    let cert = WorkloadCertificate::from_pem(&chain, &key).unwrap();
    assert!(!cert.is_valid_at(t0() - Duration::from_secs(1)));
    assert!(cert.is_valid_at(t0()));
    assert!(cert.is_valid_at(t0() + HOUR));
    assert!(!cert.is_valid_at(t0() + HOUR + Duration::from_secs(1)));
}

#[test]
fn request_carries_only_the_uri_san_and_a_p256_key() {
    let request = CertificateRequest::generate(&id(CLIENT)).unwrap();
    let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(request.csr_pem.as_bytes()).unwrap();
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).unwrap();
    csr.verify_signature().unwrap();
    let spki = &csr.certification_request_info.subject_pki;
    let curve = spki.algorithm.parameters.as_ref().unwrap().as_oid().unwrap();
    assert_eq!(curve, x509_parser::oid_registry::OID_EC_P256);
    let extensions: Vec<_> = csr.requested_extensions().unwrap().collect();
    assert_eq!(extensions.len(), 1);
    let ParsedExtension::SubjectAlternativeName(san) = extensions[0] else {
        panic!("{extensions:?}");
    };
    assert_eq!(san.general_names, vec![GeneralName::URI(CLIENT)]);
    assert!(!format!("{request:?}").contains("PRIVATE KEY"));
}

#[test]
fn into_certificate_checks_identity_and_key() {
    let (_dir, ca) = new_ca();
    let request = CertificateRequest::generate(&id(CLIENT)).unwrap();
    let other = ca
        .issue(&id("spiffe://cluster.local/ns/demo/sa/other"), None, t0())
        .unwrap();
    let err = request.into_certificate(&other.chain_pem()).unwrap_err();
    assert!(
        matches!(&err, CertError::IdentityMismatch { got, .. } if **got == *other.identity()),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("certificate for spiffe://cluster.local/ns/demo/sa/other, not for the requested"),
        "{err}"
    );

    let request = CertificateRequest::generate(&id(CLIENT)).unwrap();
    let same_identity_other_key = ca.issue(&id(CLIENT), None, t0()).unwrap();
    let err = request
        .into_certificate(&same_identity_other_key.chain_pem())
        .unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch), "{err:?}");
}

#[test]
fn bundle_pem_round_trip_and_merge_without_duplicates() {
    let (_a, first) = new_ca();
    let (_b, second) = new_ca();
    let (a, b) = (first.trust_bundle(), second.trust_bundle());
    let both = a.merged(&b);
    assert_eq!(both.roots().len(), 2);
    assert_eq!(both.merged(&a), both);
    assert_eq!(TrustBundle::from_pem(&both.to_pem()).unwrap(), both);
    assert_eq!(TrustBundle::new([a.roots(), a.roots()].concat()), a);

    let err = TrustBundle::from_pem("").unwrap_err();
    assert!(
        err.to_string()
            .contains("the trust bundle PEM contains no \"CERTIFICATE\" PEM block"),
        "{err}"
    );
    let err = TrustBundle::from_pem(&(a.to_pem() + &to_pem("CERTIFICATE", b"junk"))).unwrap_err();
    assert!(matches!(err, CertError::BadRoot { index: 1, .. }), "{err:?}");
}

#[test]
fn verify_reports_time_and_trust_failures() {
    let (_dir, ca) = new_ca();
    let cert = ca.issue(&id(CLIENT), Some(HOUR), t0()).unwrap();
    let bundle = ca.trust_bundle();
    assert_eq!(bundle.verify(cert.chain(), t0()).unwrap(), id(CLIENT));

    let late = t0() + 2 * HOUR;
    let err = bundle.verify(cert.chain(), late).unwrap_err();
    assert!(
        matches!(err, CertError::Expired { not_after, .. } if not_after == cert.not_after()),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("expired at 2026-11-20T11:00:00Z (now 2026-11-20T12:00:00Z)"),
        "{message}"
    );

    let early = t0() - HOUR;
    let err = bundle.verify(cert.chain(), early).unwrap_err();
    assert!(matches!(err, CertError::NotYetValid { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not valid before 2026-11-20T09:59:00Z"),
        "{err}"
    );

    let (_other_dir, other) = new_ca();
    let err = other.trust_bundle().verify(cert.chain(), t0()).unwrap_err();
    assert!(matches!(err, CertError::Untrusted(_)), "{err:?}");
    assert!(matches!(bundle.verify(&[], t0()), Err(CertError::EmptyChain)));
}

#[test]
fn rfc3339_formats_utc_seconds() {
    assert_eq!(rfc3339(t0() + Duration::from_millis(999)), "2026-11-20T10:00:00Z");
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(1)), "1969-12-31T23:59:59Z");
}

//! Unit tests of the CA's private rules: TTL, time truncation, serials, RSA key sizes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

fn config() -> CaConfig {
    CaConfig::new(TrustDomain::new("cluster.local").unwrap())
}

#[test]
fn config_defaults_are_one_day_and_one_week() {
    let config = config();
    assert_eq!(config.default_ttl, Duration::from_secs(86_400));
    assert_eq!(config.max_ttl, Duration::from_secs(604_800));
}

#[test]
fn ttl_is_whole_seconds_zero_means_default_and_max_is_inclusive() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(dir.path(), config(), SystemTime::now()).unwrap();
    assert_eq!(ca.ttl(None).unwrap(), ca.config.default_ttl);
    assert_eq!(ca.ttl(Some(Duration::ZERO)).unwrap(), ca.config.default_ttl);
    assert_eq!(
        ca.ttl(Some(Duration::from_millis(90_500))).unwrap(),
        Duration::from_secs(90)
    );
    assert_eq!(ca.ttl(Some(ca.config.max_ttl)).unwrap(), ca.config.max_ttl);
    let over = ca.config.max_ttl + Duration::from_secs(1);
    assert!(matches!(ca.ttl(Some(over)), Err(CsrError::TtlTooLong { requested, .. }) if requested == over));
}

#[test]
fn fractional_now_is_truncated_to_the_second() {
    let t = UNIX_EPOCH + Duration::new(1_795_168_800, 999_999_999);
    assert_eq!(whole_seconds(t), UNIX_EPOCH + Duration::from_secs(1_795_168_800));
}

#[test]
fn rsa_bits_ignore_leading_zeros() {
    assert_eq!(rsa_bits(&[0x00, 0x80, 0x00]), 16);
    assert_eq!(rsa_bits(&[0x7f, 0x00]), 15);
    assert_eq!(rsa_bits(&[0x00, 0x00]), 0);
    assert_eq!(rsa_bits(&[]), 0);
}

#[test]
fn serials_are_positive_and_sixteen_bytes() {
    for _ in 0..32 {
        let serial = random_serial().unwrap().to_bytes();
        assert_eq!(serial.len(), SERIAL_LEN);
        assert_eq!(serial[0] & 0xc0, 0x40);
    }
}

#[test]
fn authority_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CertificateAuthority>();
}

#[test]
fn control_plane_identity_is_well_formed() {
    let id = Identity::new(
        config().trust_domain,
        CONTROL_PLANE_NAMESPACE,
        CONTROL_PLANE_SERVICE_ACCOUNT,
    )
    .unwrap();
    assert_eq!(
        id.to_string(),
        "spiffe://cluster.local/ns/ambit-system/sa/ambit-control"
    );
}

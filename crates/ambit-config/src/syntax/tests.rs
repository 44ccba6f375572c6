//! Each syntax rule against values on both sides of its limits.

use super::*;

#[test]
fn durations_follow_the_gateway_api_pattern() {
    let cases = [
        ("0s", Some(0)),
        ("10s", Some(10_000)),
        ("500ms", Some(500)),
        ("1h2m", Some(3_720_000)),
        ("1h1m1s1ms", Some(3_661_001)),
        ("99999ms", Some(99_999)),
        ("1m1m1m1m", Some(240_000)),
        ("", None),
        ("10", None),
        ("1d", None),
        ("1.5s", None),
        ("-1s", None),
        ("100000s", None),
        ("1h1m1s1ms1h", None),
        ("10 s", None),
        ("s", None),
    ];
    for (value, expected) in cases {
        assert_eq!(duration_ms(value).ok(), expected, "{value:?}");
    }
}

#[test]
fn rules_accept_and_refuse() {
    let long_label = "a".repeat(64);
    let long_subdomain = vec!["a".repeat(63); 4].join(".");
    let cases: [(Rule, &str, bool); 34] = [
        (dns_label, "web-1", true),
        (dns_label, &long_label[1..], true),
        (dns_label, &long_label, false),
        (dns_label, "Web", false),
        (dns_label, "-web", false),
        (dns_label, "a.b", false),
        (dns_1035_label, "web", true),
        (dns_1035_label, "1web", false),
        (dns_subdomain, "a.b-c.d", true),
        (dns_subdomain, &long_subdomain, false),
        (dns_subdomain, "a..b", false),
        (hostname, "*.example.com", true),
        (hostname, "api.example.com", true),
        (hostname, "*", false),
        (hostname, "a.*.com", false),
        (hostname, "10.0.0.1", false),
        (hostname, "::1", false),
        (precise_hostname, "*.example.com", false),
        (port_name, "http-web", true),
        (port_name, "8080", false),
        (port_name, "a--b", false),
        (port_name, "abcdefghijklmnop", false),
        (qualified_name, "app", true),
        (qualified_name, "app.kubernetes.io/name", true),
        (qualified_name, "/name", false),
        (qualified_name, "a/b/c", false),
        (qualified_name, "Example.com/name", false),
        (label_value, "", true),
        (label_value, "v1.2_3-x", true),
        (label_value, "-x", false),
        (header_name, "x-request-id", true),
        (header_name, "bad header", false),
        (kind, "Service", true),
        (kind, "1Service", false),
    ];
    for (rule, value, valid) in cases {
        assert_eq!(rule(value).is_ok(), valid, "{value:?}: {:?}", rule(value));
    }
}

#[test]
fn reasons_name_the_broken_part() {
    assert_eq!(
        dns_label("Web").err().as_deref(),
        Some("must consist of lowercase letters, digits and '-' (found 'W')")
    );
    assert_eq!(
        dns_label(&"a".repeat(64)).err().as_deref(),
        Some("must be at most 63 characters (it has 64)")
    );
    let prefix = qualified_name("Bad/name").err().unwrap_or_default();
    assert!(
        prefix.starts_with("has a prefix \"Bad\" that must consist of"),
        "{prefix}"
    );
}

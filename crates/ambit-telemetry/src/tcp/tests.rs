//! Label rendering and registration of the TCP metrics, checked against the exposition text.

use prometheus_client::registry::Registry;

use super::*;
use crate::test_util::{DESTINATION_ID, SOURCE_ID, bare_context, context};

const FULL_DESTINATION_LABELS: &str = concat!(
    r#"reporter="destination","#,
    r#"source_workload="client",source_canonical_service="client",source_canonical_revision="v1","#,
    r#"source_workload_namespace="a",source_principal="spiffe://cluster.local/ns/a/sa/b","#,
    r#"source_app="client",source_version="v1",source_cluster="Kubernetes","#,
    r#"destination_service="echo.demo.svc.cluster.local",destination_service_namespace="demo","#,
    r#"destination_service_name="echo","#,
    r#"destination_workload="echo",destination_canonical_service="echo",destination_canonical_revision="v2","#,
    r#"destination_workload_namespace="demo",destination_principal="spiffe://cluster.local/ns/demo/sa/echo","#,
    r#"destination_app="echo",destination_version="v2",destination_cluster="Kubernetes","#,
    r#"request_protocol="tcp",response_flags="-",connection_security_policy="mutual_tls""#,
);

fn registered() -> (Registry, TcpMetrics) {
    let mut registry = Registry::default();
    let metrics = TcpMetrics::register(&mut registry);
    (registry, metrics)
}

fn text(registry: &Registry) -> String {
    crate::encode(registry).unwrap()
}

#[test]
fn full_labels_render_in_istio_order() {
    let (registry, metrics) = registered();
    let labels = TcpLabels::from(&context(Reporter::Destination));
    metrics.opened.get_or_create(&labels).inc();
    let text = text(&registry);
    let want = format!("istio_tcp_connections_opened_total{{{FULL_DESTINATION_LABELS}}} 1\n");
    assert!(text.contains(&want), "missing\n{want}\nin\n{text}");
    assert!(text.contains(&format!(r#"source_principal="{SOURCE_ID}""#)));
    assert!(text.contains(&format!(r#"destination_principal="{DESTINATION_ID}""#)));
}

#[test]
fn missing_values_render_unknown() {
    let (registry, metrics) = registered();
    metrics
        .opened
        .get_or_create(&TcpLabels::from(&bare_context(Reporter::Source)))
        .inc();
    let text = text(&registry);
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .unwrap();
    let (labels, value) = line.rsplit_once(' ').unwrap();
    assert_eq!(value, "1");
    let pairs: Vec<_> = labels["istio_tcp_connections_opened_total{".len()..labels.len() - 1]
        .split(',')
        .collect();
    assert_eq!(pairs.len(), 23, "{line}");
    assert_eq!(pairs[0], r#"reporter="source""#);
    for pair in &pairs[1..20] {
        assert!(pair.ends_with(r#"="unknown""#), "{pair} in {line}");
    }
    assert_eq!(
        &pairs[20..],
        [
            r#"request_protocol="tcp""#,
            r#"response_flags="-""#,
            r#"connection_security_policy="unknown""#
        ]
    );
}

#[test]
fn families_are_registered_under_istio_with_their_kinds() {
    let (registry, metrics) = registered();
    let labels = TcpLabels::new(Reporter::Source);
    for family in [
        &metrics.opened,
        &metrics.closed,
        &metrics.received_bytes,
        &metrics.sent_bytes,
        &metrics.failed,
    ] {
        family.get_or_create(&labels).inc();
    }
    metrics
        .sockets_open
        .get_or_create(&SocketLabels {
            reporter: Reporter::Source,
        })
        .inc();
    let text = text(&registry);
    for (name, kind) in [
        ("istio_tcp_connections_opened", "counter"),
        ("istio_tcp_connections_closed", "counter"),
        ("istio_tcp_received_bytes", "counter"),
        ("istio_tcp_sent_bytes", "counter"),
        ("istio_tcp_connections_failed", "counter"),
        ("istio_tcp_sockets_open", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} in\n{text}"
        );
    }
    assert!(
        text.contains("istio_tcp_sockets_open{reporter=\"source\"} 1\n"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn closed_sets_render_istio_values() {
    let flags = [
        (ResponseFlags::None, "-"),
        (ResponseFlags::Deny, "DENY"),
        (ResponseFlags::Connect, "CONNECT"),
        (ResponseFlags::TlsFailure, "TLS_FAILURE"),
        (ResponseFlags::H2HandshakeFailure, "H2_HANDSHAKE_FAILURE"),
        (ResponseFlags::NetworkPolicy, "NETWORK_POLICY"),
        (ResponseFlags::IdentityError, "IDENTITY_ERROR"),
        (ResponseFlags::CertRevoked, "CERT_REVOKED"),
    ];
    for (flag, want) in flags {
        assert_eq!(flag.to_string(), want);
    }
    assert_eq!(SecurityPolicy::from_mtls(true).to_string(), "mutual_tls");
    assert_eq!(SecurityPolicy::from_mtls(false).to_string(), "unknown");
    assert_eq!(Reporter::Source.to_string(), "source");
    assert_eq!(Reporter::Destination.to_string(), "destination");
    assert_eq!(RequestProtocol::Tcp.to_string(), "tcp");
}

#[test]
fn response_flags_render_in_the_label_set() {
    let (registry, metrics) = registered();
    let labels = TcpLabels::new(Reporter::Destination).with_response_flags(ResponseFlags::H2HandshakeFailure);
    metrics.failed.get_or_create(&labels).inc();
    assert!(text(&registry).contains(r#"response_flags="H2_HANDSHAKE_FAILURE""#));
}

#[test]
fn empty_and_missing_are_one_value() {
    assert_eq!(OrUnknown::from(""), OrUnknown::unknown());
    assert_eq!(OrUnknown::from(None::<&str>), OrUnknown::unknown());
    assert_eq!(OrUnknown::from("").as_str(), "unknown");
    assert_eq!(OrUnknown::from(Some("x")).get(), Some("x"));
    let empty = WorkloadInfo::default();
    assert_eq!(
        TcpLabels::new(Reporter::Source).with_source(&empty),
        TcpLabels::new(Reporter::Source)
    );
}

#[test]
fn principals_come_only_from_the_context_principals() {
    let mut ctx = context(Reporter::Source);
    ctx.source_principal = None;
    let labels = TcpLabels::from(&ctx);
    assert_eq!(labels.source_principal, OrUnknown::unknown());
    assert_eq!(labels.destination_principal.as_str(), DESTINATION_ID);
    assert_eq!(labels.source_workload.as_str(), "client", "the pod name is not a label");
}

#[test]
fn readers_do_not_create_series() {
    let (registry, metrics) = registered();
    let labels = TcpLabels::new(Reporter::Source);
    assert_eq!(metrics.opened(&labels), 0);
    assert_eq!(metrics.sockets_open(Reporter::Source), 0);
    assert!(!text(&registry).contains("istio_tcp_connections_opened_total{"));
}

//! Request labels and histograms checked against the exposition text, the response flag and local reply tables,
//! and the record's access-log event.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Request, StatusCode, Version};
use prometheus_client::registry::Registry;
use tracing::Level;

use super::*;
use crate::connection::{ConnectionAddrs, ConnectionResult, Direction};
use crate::tcp::{TcpLabels, TcpMetrics};
use crate::test_util::{Captured, DESTINATION_ID, SOURCE_ID, bare_context, capture, context};

const FULL_WAYPOINT_LABELS: &str = concat!(
    r#"reporter="waypoint","#,
    r#"source_workload="client",source_canonical_service="client",source_canonical_revision="v1","#,
    r#"source_workload_namespace="a",source_principal="spiffe://cluster.local/ns/a/sa/b","#,
    r#"source_app="client",source_version="v1",source_cluster="Kubernetes","#,
    r#"destination_workload="echo",destination_workload_namespace="demo","#,
    r#"destination_principal="spiffe://cluster.local/ns/demo/sa/echo","#,
    r#"destination_app="echo",destination_version="v2","#,
    r#"destination_service="echo.demo.svc.cluster.local",destination_canonical_service="echo","#,
    r#"destination_canonical_revision="v2",destination_service_name="echo",destination_service_namespace="demo","#,
    r#"destination_cluster="Kubernetes","#,
    r#"request_protocol="http",response_code="200",grpc_response_status="",response_flags="-","#,
    r#"connection_security_policy="mutual_tls""#,
);

/// Header name and value pairs of a table case.
type HeaderPairs = &'static [(&'static str, &'static str)];

/// The request, the local reply, then the response code, gRPC status and flags recorded.
type ReplyCase = (Request<()>, LocalReply, u16, Option<u32>, &'static str);

fn registered() -> (Registry, Arc<RequestMetrics>) {
    let mut registry = Registry::default();
    let metrics = Arc::new(RequestMetrics::register(&mut registry));
    (registry, metrics)
}

fn text(registry: &Registry) -> String {
    crate::encode(registry).unwrap()
}

/// The label pairs of the first sample line of `metric` in `text`, and its value.
fn sample<'a>(text: &'a str, metric: &str) -> (Vec<&'a str>, &'a str) {
    let prefix = format!("{metric}{{");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {metric} in\n{text}"));
    let (labels, value) = line.rsplit_once(' ').unwrap();
    (labels[prefix.len()..labels.len() - 1].split(',').collect(), value)
}

/// The `_count` and `_sum` of the first series of histogram `name`.
fn count_and_sum(text: &str, name: &str) -> (u64, f64) {
    let (_, count) = sample(text, &format!("{name}_count"));
    let (_, sum) = sample(text, &format!("{name}_sum"));
    (count.parse().unwrap(), sum.parse().unwrap())
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri)
        .header("host", "echo.demo:8080")
        .header("user-agent", "curl/8.5.0")
        .header("x-request-id", "5b1e4c2a-0000-4000-8000-000000000001")
        .header("x-forwarded-for", "10.0.0.9")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .body(())
        .unwrap()
}

fn grpc(path: &str) -> Request<()> {
    Request::post(path)
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

fn info(req: &Request<()>) -> RequestInfo {
    RequestInfo::from_request(req)
        .with_addresses("10.244.1.5:40000".parse().unwrap(), "10.96.0.20:8080".parse().unwrap())
}

fn headers(pairs: HeaderPairs) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v)))
        .collect()
}

fn complete_event(events: &[Captured]) -> &Captured {
    let mut complete = events.iter().filter(|e| e.message == REQUEST_COMPLETE);
    let event = complete
        .next()
        .unwrap_or_else(|| panic!("no request complete in {events:#?}"));
    assert!(complete.next().is_none(), "one event per request: {events:#?}");
    event
}

// === labels ===

#[test]
fn full_labels_render_in_istio_order() {
    let (registry, metrics) = registered();
    let labels = RequestLabels::from(&context(Reporter::Waypoint)).with_response(
        Some(StatusCode::OK),
        None,
        ResponseFlagSet::EMPTY,
    );
    metrics.record(&labels, Duration::from_millis(3), 0, 10);
    let text = text(&registry);
    let want = format!("istio_requests_total{{{FULL_WAYPOINT_LABELS}}} 1\n");
    assert!(text.contains(&want), "missing\n{want}\nin\n{text}");
    assert!(text.contains(&format!(r#"source_principal="{SOURCE_ID}""#)));
    assert!(text.contains(&format!(r#"destination_principal="{DESTINATION_ID}""#)));
}

#[test]
fn missing_values_render_as_istio_server_reporters_do() {
    let (registry, metrics) = registered();
    let labels = RequestLabels::from(&bare_context(Reporter::Waypoint));
    metrics.record(&labels, Duration::ZERO, 0, 0);
    let text = text(&registry);
    let (pairs, value) = sample(&text, "istio_requests_total");
    assert_eq!(value, "1");
    assert_eq!(pairs.len(), 25, "{pairs:?}");
    assert_eq!(pairs[0], r#"reporter="waypoint""#);
    for pair in &pairs[1..20] {
        let want = if pair.starts_with("source_canonical_revision=") {
            r#"="latest""#
        } else {
            r#"="unknown""#
        };
        assert!(pair.ends_with(want), "{pair} in {pairs:?}");
    }
    assert_eq!(
        &pairs[20..],
        [
            r#"request_protocol="http""#,
            r#"response_code="0""#,
            r#"grpc_response_status="""#,
            r#"response_flags="-""#,
            r#"connection_security_policy="unknown""#,
        ]
    );
}

#[test]
fn grpc_response_status_follows_envoy() {
    // (protocol, grpc-status carried, HTTP status) -> label value
    let cases: &[(L7Protocol, Option<u32>, Option<u16>, &str)] = &[
        (L7Protocol::Http, None, Some(200), ""),
        (L7Protocol::Http, Some(5), Some(200), ""),
        (L7Protocol::Grpc, Some(0), Some(200), "0"),
        (L7Protocol::Grpc, Some(5), Some(200), "5"),
        (L7Protocol::Grpc, None, Some(503), "14"),
        (L7Protocol::Grpc, None, Some(200), "2"),
        (L7Protocol::Grpc, None, None, ""),
    ];
    for (protocol, carried, status, want) in cases {
        let (registry, metrics) = registered();
        let status = status.map(|s| StatusCode::from_u16(s).unwrap());
        let labels = RequestLabels::new(Reporter::Waypoint)
            .with_protocol(*protocol)
            .with_response(status, *carried, ResponseFlagSet::EMPTY);
        metrics.record(&labels, Duration::ZERO, 0, 0);
        let text = text(&registry);
        let (pairs, _) = sample(&text, "istio_requests_total");
        let want_pair = format!(r#"grpc_response_status="{want}""#);
        assert!(
            pairs.contains(&want_pair.as_str()),
            "{protocol} {carried:?} {status:?}: {pairs:?}"
        );
        assert!(pairs.contains(&format!(r#"request_protocol="{protocol}""#).as_str()));
    }
}

#[test]
fn grpc_status_for_http_follows_the_grpc_mapping() {
    let cases = [
        (400, 13),
        (401, 16),
        (403, 7),
        (404, 12),
        (429, 14),
        (502, 14),
        (503, 14),
        (504, 14),
        (500, 2),
        (200, 2),
    ];
    for (http, grpc) in cases {
        assert_eq!(
            grpc_status_for_http(StatusCode::from_u16(http).unwrap()),
            grpc,
            "{http}"
        );
    }
}

#[test]
fn grpc_status_reads_the_header() {
    let cases: &[(HeaderPairs, Option<u32>)] = &[
        (&[("grpc-status", "0")], Some(0)),
        (&[("grpc-status", "14")], Some(14)),
        (&[("grpc-status", " 7 ")], Some(7)),
        (&[("grpc-status", "UNAVAILABLE")], None),
        (&[("grpc-message", "boom")], None),
        (&[], None),
    ];
    for (pairs, want) in cases {
        assert_eq!(grpc_status(&headers(pairs)), *want, "{pairs:?}");
    }
}

#[test]
fn request_protocol_is_grpc_for_grpc_content_types_only() {
    let cases = [
        (Some("application/grpc"), L7Protocol::Grpc),
        (Some("application/grpc+proto"), L7Protocol::Grpc),
        (Some("application/grpc;charset=utf-8"), L7Protocol::Grpc),
        (Some("application/grpc-web"), L7Protocol::Http),
        (Some("application/grpc-web+proto"), L7Protocol::Http),
        (Some("application/json"), L7Protocol::Http),
        (None, L7Protocol::Http),
    ];
    for (content_type, want) in cases {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        assert_eq!(L7Protocol::from_headers(&h), want, "{content_type:?}");
    }
    assert_eq!(
        (L7Protocol::Http.to_string(), L7Protocol::Grpc.to_string()),
        ("http".into(), "grpc".into())
    );
}

// === histograms ===

#[test]
fn histograms_use_istio_buckets_in_their_units() {
    let (registry, metrics) = registered();
    let labels =
        RequestLabels::new(Reporter::Waypoint).with_response(Some(StatusCode::OK), None, ResponseFlagSet::EMPTY);
    metrics.record(&labels, Duration::from_micros(7_500), 120, 4_000);
    metrics.record(&labels, Duration::from_secs(2), 0, 2_000_000);
    let text = text(&registry);
    for (name, kind) in [
        ("istio_requests", "counter"),
        ("istio_request_duration_milliseconds", "histogram"),
        ("istio_request_bytes", "histogram"),
        ("istio_response_bytes", "histogram"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} in\n{text}"
        );
    }
    // Cumulative counts at each bound, +Inf last: 7.5 ms and 2000 ms; 120 and 0 bytes; 4000 and 2e6 bytes.
    let cases: [(&str, [u64; 20]); 3] = [
        (
            "istio_request_duration_milliseconds",
            [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
        ),
        (
            "istio_request_bytes",
            [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
        ),
        (
            "istio_response_bytes",
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2],
        ),
    ];
    for (name, counts) in cases {
        let bucket_lines: Vec<(String, u64)> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
            .map(|l| {
                let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
                (le, l.rsplit_once(' ').unwrap().1.parse().unwrap())
            })
            .collect();
        let bounds: Vec<&str> = bucket_lines.iter().map(|(le, _)| le.as_str()).collect();
        let mut want_bounds: Vec<String> = ISTIO_BUCKETS.iter().map(|b| format!("{b:?}")).collect();
        want_bounds.push("+Inf".to_string());
        assert_eq!(bounds, want_bounds, "{name}");
        let got: Vec<u64> = bucket_lines.iter().map(|(_, c)| *c).collect();
        assert_eq!(got, counts, "{name}");
    }
    assert_eq!(count_and_sum(&text, "istio_request_duration_milliseconds"), (2, 2007.5));
    assert_eq!(count_and_sum(&text, "istio_request_bytes"), (2, 120.0));
    assert_eq!(count_and_sum(&text, "istio_response_bytes"), (2, 2_004_000.0));
    assert_eq!(metrics.requests(&labels), 2);
}

#[test]
fn istio_buckets_are_envoys_defaults() {
    assert_eq!(
        ISTIO_BUCKETS,
        [
            0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 1e4, 3e4, 6e4, 3e5, 6e5, 1.8e6,
            3.6e6
        ]
    );
}

#[test]
fn readers_do_not_create_series() {
    let (registry, metrics) = registered();
    let labels = RequestLabels::new(Reporter::Waypoint);
    assert_eq!(metrics.requests(&labels), 0);
    assert!(!text(&registry).contains("istio_requests_total{"));
}

// === response flags ===

#[test]
fn response_flags_map_to_envoy_short_codes_in_envoy_order() {
    let table = [
        (ResponseFlag::NoHealthyUpstream, "UH"),
        (ResponseFlag::UpstreamRequestTimeout, "UT"),
        (ResponseFlag::LocalReset, "LR"),
        (ResponseFlag::UpstreamRemoteReset, "UR"),
        (ResponseFlag::UpstreamConnectionFailure, "UF"),
        (ResponseFlag::UpstreamConnectionTermination, "UC"),
        (ResponseFlag::UpstreamOverflow, "UO"),
        (ResponseFlag::NoRouteFound, "NR"),
        (ResponseFlag::DelayInjected, "DI"),
        (ResponseFlag::FaultInjected, "FI"),
        (ResponseFlag::RateLimited, "RL"),
        (ResponseFlag::DownstreamConnectionTermination, "DC"),
        (ResponseFlag::UpstreamRetryLimitExceeded, "URX"),
        (ResponseFlag::StreamIdleTimeout, "SI"),
        (ResponseFlag::DownstreamProtocolError, "DPE"),
        (ResponseFlag::DurationTimeout, "DT"),
        (ResponseFlag::UpstreamProtocolError, "UPE"),
        (ResponseFlag::NoClusterFound, "NC"),
        (ResponseFlag::DownstreamRemoteReset, "DR"),
    ];
    assert_eq!(
        ResponseFlag::ALL.to_vec(),
        table.map(|(f, _)| f).to_vec(),
        "ALL is Envoy's order"
    );
    for (flag, code) in table {
        assert_eq!((flag.short_code(), flag.to_string()), (code, code.to_string()));
        assert_eq!(ResponseFlagSet::from(flag).to_string(), code);
    }
}

#[test]
fn flag_sets_render_joined_in_envoy_order() {
    use ResponseFlag::*;
    let cases: &[(&[ResponseFlag], &str)] = &[
        (&[], "-"),
        (&[UpstreamRetryLimitExceeded, NoHealthyUpstream], "UH,URX"),
        (&[DelayInjected, FaultInjected, DelayInjected], "DI,FI"),
        (&[DownstreamConnectionTermination, UpstreamConnectionFailure], "UF,DC"),
    ];
    for (flags, want) in cases {
        let set: ResponseFlagSet = flags.iter().copied().collect();
        assert_eq!(set.to_string(), *want, "{flags:?}");
        assert_eq!(set.is_empty(), flags.is_empty());
        assert!(flags.iter().all(|f| set.contains(*f)));
    }
    let (registry, metrics) = registered();
    let flags = ResponseFlagSet::from(UpstreamRetryLimitExceeded).with(NoHealthyUpstream);
    let labels =
        RequestLabels::new(Reporter::Waypoint).with_response(Some(StatusCode::SERVICE_UNAVAILABLE), None, flags);
    metrics.record(&labels, Duration::ZERO, 0, 0);
    assert!(text(&registry).contains(r#"response_code="503",grpc_response_status="",response_flags="UH,URX""#));
}

#[test]
fn local_replies_map_to_envoy_status_flag_and_details() {
    let policy = MatchedPolicy {
        namespace: "demo".into(),
        name: "deny-admin".into(),
        rule: 1,
    };
    let teapot = StatusCode::IM_A_TEAPOT;
    let cases: Vec<(LocalReply, u16, Option<&str>, &str)> = vec![
        (LocalReply::NoRoute, 404, Some("NR"), "route_not_found"),
        (LocalReply::NoCluster, 503, Some("NC"), "cluster_not_found"),
        (LocalReply::NoHealthyUpstream, 503, Some("UH"), "no_healthy_upstream"),
        (
            LocalReply::UpstreamConnectFailure,
            503,
            Some("UF"),
            "upstream_reset_before_response_started{connection_failure}",
        ),
        (
            LocalReply::UpstreamOverflow,
            503,
            Some("UO"),
            "upstream_reset_before_response_started{overflow}",
        ),
        (
            LocalReply::UpstreamReset,
            503,
            Some("UR"),
            "upstream_reset_before_response_started{remote_reset}",
        ),
        (
            LocalReply::UpstreamTimeout,
            504,
            Some("UT"),
            "upstream_response_timeout",
        ),
        (LocalReply::FaultAbort(teapot), 418, Some("FI"), "fault_filter_abort"),
        (
            LocalReply::Denied(None),
            403,
            None,
            "rbac_access_denied_matched_policy[none]",
        ),
        (
            LocalReply::Denied(Some(policy)),
            403,
            None,
            "rbac_access_denied_matched_policy[ns[demo]-policy[deny-admin]-rule[1]]",
        ),
    ];
    for (reply, status, flag, details) in cases {
        assert_eq!(reply.status().as_u16(), status, "{reply:?}");
        assert_eq!(reply.flag().map(ResponseFlag::short_code), flag, "{reply:?}");
        assert_eq!(reply.details(), details, "{reply:?}");
        assert_eq!(
            reply.downstream_status(L7Protocol::Http),
            (reply.status(), None),
            "{reply:?}"
        );
        let grpc = grpc_status_for_http(reply.status());
        assert_eq!(
            reply.downstream_status(L7Protocol::Grpc),
            (StatusCode::OK, Some(grpc)),
            "{reply:?}"
        );
    }
}

// === the record ===

#[test]
fn record_counts_the_request_and_logs_istios_fields() {
    let (registry, metrics) = registered();
    let start = Instant::now();
    let start_time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_652_190_013_396);
    let mut ctx = context(Reporter::Waypoint);
    ctx.destination = None;
    ctx.destination_principal = None;
    let (_, events) = capture(|| {
        let mut record = RequestRecord::start_at(&metrics, &ctx, info(&get("/api/items?limit=2")), start, start_time);
        record.set_route("demo.echo-route.0");
        record.set_upstream_cluster("echo.demo.svc.cluster.local:8080");
        let echo = context(Reporter::Waypoint)
            .destination
            .unwrap()
            .with_pod("echo-5d4f-xyz12");
        record.set_destination(&echo, Some(&DESTINATION_ID.parse().unwrap()));
        record.set_upstream_host("10.244.2.7:8080".parse().unwrap());
        record.set_upstream_local_address("10.244.3.3:51000".parse().unwrap());
        record.set_upstream_service_time(Duration::from_millis(11));
        record.upstream_response(StatusCode::OK, &HeaderMap::new());
        record.request_bytes().add(12);
        let body = record.response_bytes().clone();
        body.add(300);
        body.add(42);
        record.finish_at(start + Duration::from_millis(15));
    });
    let labels = RequestLabels::from(&context(Reporter::Waypoint)).with_response(
        Some(StatusCode::OK),
        None,
        ResponseFlagSet::EMPTY,
    );
    let text = text(&registry);
    assert_eq!(metrics.requests(&labels), 1, "{text}");
    assert_eq!(count_and_sum(&text, "istio_request_duration_milliseconds"), (1, 15.0));
    assert_eq!(count_and_sum(&text, "istio_request_bytes"), (1, 12.0));
    assert_eq!(count_and_sum(&text, "istio_response_bytes"), (1, 342.0));

    let event = complete_event(&events);
    assert_eq!((event.level, event.target.as_str()), (Level::INFO, "access"));
    let want = [
        ("start_time", "2022-05-10T13:40:13.396Z"),
        ("method", "GET"),
        ("path", "/api/items?limit=2"),
        ("protocol", "HTTP/1.1"),
        ("response_code", "200"),
        ("response_flags", "-"),
        ("response_code_details", "via_upstream"),
        ("bytes_received", "12"),
        ("bytes_sent", "342"),
        ("duration", "15"),
        ("upstream_service_time", "11"),
        ("x_forwarded_for", "10.0.0.9"),
        ("user_agent", "curl/8.5.0"),
        ("request_id", "5b1e4c2a-0000-4000-8000-000000000001"),
        ("authority", "echo.demo:8080"),
        ("upstream_host", "10.244.2.7:8080"),
        ("upstream_cluster", "echo.demo.svc.cluster.local:8080"),
        ("upstream_local_address", "10.244.3.3:51000"),
        ("downstream_local_address", "10.96.0.20:8080"),
        ("downstream_remote_address", "10.244.1.5:40000"),
        ("route_name", "demo.echo-route.0"),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("src.workload", "client-7c9f-abcde"),
        ("src.namespace", "a"),
        ("src.identity", SOURCE_ID),
        ("dst.service", "echo.demo.svc.cluster.local"),
        ("dst.workload", "echo-5d4f-xyz12"),
        ("dst.namespace", "demo"),
        ("dst.identity", DESTINATION_ID),
    ];
    let got: Vec<(&str, &str)> = event.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut want_sorted = want.to_vec();
    want_sorted.sort();
    assert_eq!(got, want_sorted);
}

#[test]
fn grpc_record_takes_the_status_from_the_trailers() {
    let (_, metrics) = registered();
    let ctx = context(Reporter::Waypoint);
    let (_, events) = capture(|| {
        let mut record = RequestRecord::start(&metrics, &ctx, info(&grpc("/echo.Echo/Say")));
        record.upstream_response(StatusCode::OK, &HeaderMap::new());
        record.response_trailers(&headers(&[("grpc-status", "5")]));
        assert_eq!(record.labels().grpc_response_status, Some(5));
        record.finish();
    });
    let labels = RequestLabels::from(&ctx).with_protocol(L7Protocol::Grpc).with_response(
        Some(StatusCode::OK),
        Some(5),
        ResponseFlagSet::EMPTY,
    );
    assert_eq!(metrics.requests(&labels), 1);
    let event = complete_event(&events);
    assert_eq!(
        (event.field("protocol"), event.field("grpc_status"), event.field("path")),
        ("HTTP/2", "5", "/echo.Echo/Say")
    );
}

#[test]
fn local_replies_record_what_the_driver_sends() {
    let (_, metrics) = registered();
    let ctx = context(Reporter::Waypoint);
    let cases: &[ReplyCase] = &[
        (get("/"), LocalReply::NoHealthyUpstream, 503, None, "UH"),
        (
            grpc("/echo.Echo/Say"),
            LocalReply::NoHealthyUpstream,
            200,
            Some(14),
            "UH",
        ),
        (get("/admin"), LocalReply::Denied(None), 403, None, "-"),
        (grpc("/echo.Echo/Say"), LocalReply::Denied(None), 200, Some(7), "-"),
    ];
    for (req, reply, status, grpc_status, flags) in cases {
        let (_, events) = capture(|| {
            let mut record = RequestRecord::start(&metrics, &ctx, info(req));
            record.local_reply(reply);
            let labels = record.labels();
            assert_eq!(
                (labels.response_code, labels.grpc_response_status),
                (*status, *grpc_status),
                "{reply:?}"
            );
            assert_eq!(labels.response_flags.to_string(), *flags, "{reply:?}");
            record.finish();
        });
        let event = complete_event(&events);
        assert_eq!(event.field("response_code"), status.to_string());
        assert_eq!(event.field("response_flags"), *flags);
        assert_eq!(event.field("response_code_details"), reply.details());
    }
}

#[test]
fn retries_exhausted_keep_the_upstream_status_and_add_urx() {
    let (_, metrics) = registered();
    let mut record = RequestRecord::start(&metrics, &context(Reporter::Waypoint), info(&get("/")));
    record.upstream_failed(&std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused",
    ));
    record.upstream_response(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new());
    record.add_flag(ResponseFlag::UpstreamRetryLimitExceeded);
    let labels = record.labels();
    assert_eq!(
        (labels.response_code, labels.response_flags.to_string()),
        (503, "URX".to_string())
    );
    let (_, events) = capture(|| record.finish());
    let event = complete_event(&events);
    assert_eq!(event.field("upstream_transport_failure_reason"), "connection refused");
    assert_eq!(event.field("response_code_details"), "via_upstream");
}

#[test]
fn dropped_record_completes_as_a_downstream_close() {
    let (_, metrics) = registered();
    let ctx = context(Reporter::Waypoint);
    let (_, events) = capture(|| {
        let record = RequestRecord::start(&metrics, &ctx, info(&get("/slow")));
        record.request_bytes().add(5);
    });
    let labels =
        RequestLabels::from(&ctx).with_response(None, None, ResponseFlag::DownstreamConnectionTermination.into());
    assert_eq!(metrics.requests(&labels), 1);
    let event = complete_event(&events);
    assert_eq!(
        (
            event.field("response_code"),
            event.field("response_flags"),
            event.field("response_code_details")
        ),
        ("0", "DC", "downstream_remote_disconnect")
    );
    assert_eq!(event.field("bytes_received"), "5");
}

#[test]
fn record_moves_between_tasks_and_counters_are_shared() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RequestRecord>();
    let (_, metrics) = registered();
    let record = RequestRecord::start(&metrics, &context(Reporter::Waypoint), info(&get("/")));
    let (request, response) = (record.request_bytes().clone(), record.response_bytes().clone());
    std::thread::scope(|s| {
        s.spawn(|| (0..1000).for_each(|_| request.add(1)));
        s.spawn(|| (0..1000).for_each(|_| response.add(2)));
    });
    assert_eq!(
        (record.request_bytes().get(), record.response_bytes().get()),
        (1000, 2000)
    );
    record.finish();
}

#[test]
fn dropped_record_keeps_a_sent_status() {
    let (_, metrics) = registered();
    let ctx = context(Reporter::Waypoint);
    let (_, events) = capture(|| {
        let mut record = RequestRecord::start(&metrics, &ctx, info(&get("/stream")));
        record.upstream_response(StatusCode::OK, &HeaderMap::new());
    });
    let event = complete_event(&events);
    assert_eq!(
        (
            event.field("response_code"),
            event.field("response_flags"),
            event.field("response_code_details")
        ),
        ("200", "DC", "via_upstream")
    );
}

#[test]
fn access_log_leaves_out_what_is_unknown() {
    let (_, metrics) = registered();
    let req = Request::get("/").body(()).unwrap();
    let (_, events) = capture(|| {
        let mut record = RequestRecord::start(
            &metrics,
            &bare_context(Reporter::Waypoint),
            RequestInfo::from_request(&req),
        );
        record.set_status(StatusCode::NO_CONTENT);
        record.finish();
    });
    let event = complete_event(&events);
    let names: Vec<_> = event.fields.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bytes_received",
            "bytes_sent",
            "duration",
            "method",
            "path",
            "protocol",
            "response_code",
            "response_flags",
            "start_time",
        ]
    );
    assert_eq!(event.field("response_code"), "204");
}

#[test]
fn identities_are_logged_only_over_mtls() {
    let (_, metrics) = registered();
    let mut ctx = context(Reporter::Waypoint);
    ctx.mtls = false;
    let (_, events) = capture(|| {
        let mut record = RequestRecord::start(&metrics, &ctx, info(&get("/")));
        let echo = ctx.destination.clone().unwrap();
        record.set_destination(&echo, Some(&DESTINATION_ID.parse().unwrap()));
        assert_eq!(
            record.labels().destination_principal.as_str(),
            DESTINATION_ID,
            "labels keep principals"
        );
        record.finish();
    });
    let event = complete_event(&events);
    for absent in ["src.identity", "dst.identity"] {
        assert!(!event.fields.contains_key(absent), "{absent} in {event:#?}");
    }
}

// === request info, trace IDs, time ===

#[test]
fn request_info_reads_authority_path_and_protocol() {
    let h2 = Request::post("https://echo.demo.svc.cluster.local:8080/echo.Echo/Say?x=1")
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc+proto")
        .body(())
        .unwrap();
    let i = RequestInfo::from_request(&h2);
    assert_eq!(
        (i.authority.as_deref(), i.path.as_str(), i.protocol, i.method.as_str()),
        (
            Some("echo.demo.svc.cluster.local:8080"),
            "/echo.Echo/Say?x=1",
            L7Protocol::Grpc,
            "POST"
        )
    );
    let h1 = RequestInfo::from_request(&get("/a%20b"));
    assert_eq!(
        (h1.authority.as_deref(), h1.path.as_str()),
        (Some("echo.demo:8080"), "/a%20b")
    );
    assert_eq!(h1.version, Version::HTTP_11);
    assert_eq!(
        (h1.downstream_remote_address, h1.downstream_local_address),
        (None, None)
    );
}

#[test]
fn trace_id_comes_from_w3c_then_b3() {
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let cases: &[(HeaderPairs, Option<&str>)] = &[
        (
            &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")],
            Some(id),
        ),
        (
            &[("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")],
            Some(id),
        ),
        (
            &[("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")],
            None,
        ),
        (
            &[("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")],
            None,
        ),
        (&[("traceparent", "00-4bf92f3577b34da6-00f067aa0ba902b7-01")], None),
        (
            &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7")],
            None,
        ),
        (
            &[
                ("traceparent", "garbage"),
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ],
            Some("80f198ee56343ba864fe8b2a57d3eff7"),
        ),
        (&[("x-b3-traceid", "a3ce929d0e0e4736")], Some("a3ce929d0e0e4736")),
        (&[("x-b3-traceid", "xyz")], None),
        (
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
            Some("80f198ee56343ba864fe8b2a57d3eff7"),
        ),
        (&[("b3", "0")], None),
        (&[], None),
    ];
    for (pairs, want) in cases {
        assert_eq!(trace_id(&headers(pairs)).as_deref(), *want, "{pairs:?}");
    }
}

#[test]
fn start_time_prints_utc_with_milliseconds() {
    let cases = [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_652_190_013_396, "2022-05-10T13:40:13.396Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (951_868_799_999, "2000-02-29T23:59:59.999Z"),
        (1_709_164_800_001, "2024-02-29T00:00:00.001Z"),
        (1_735_689_599_000, "2024-12-31T23:59:59.000Z"),
        (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
    ];
    for (ms, want) in cases {
        assert_eq!(
            format_start_time(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            want,
            "{ms}"
        );
    }
    let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
    assert_eq!(format_start_time(before), "1970-01-01T00:00:00.000Z");
}

// === the waypoint reporter ===

#[test]
fn waypoint_reporter_renders_and_logs_inbound() {
    assert_eq!(Reporter::Waypoint.to_string(), "waypoint");
    assert_eq!(Direction::from(Reporter::Waypoint), Direction::Inbound);
    let m = Arc::new(TcpMetrics::default());
    let conn = ConnectionResult::open(
        &m,
        &context(Reporter::Waypoint),
        ConnectionAddrs {
            src: "10.244.1.5:40000".parse().unwrap(),
            dst: "10.244.3.3:15008".parse().unwrap(),
            hbone: Some("10.96.0.20:8080".to_string()),
        },
    );
    assert_eq!(m.sockets_open(Reporter::Waypoint), 1);
    conn.finish();
    assert_eq!(m.closed(&TcpLabels::from(&context(Reporter::Waypoint))), 1);
}

//! Which tunnels the waypoint accepts and which endpoints serve a Service port.

use std::path::Path;

use serde_json::json;

use super::*;

/// Service `app/web` (VIP 10.96.0.10, port 80 -> 8080, HTTP) bound to waypoint `app/wp`; service `app/db` (VIP
/// 10.96.0.11) bound to nothing; pods web-1 (healthy, bound to the waypoint as a workload), web-2 (healthy), web-3
/// (unhealthy), db-1; the waypoint pod wp-1.
fn snapshot() -> Snapshot {
    let waypoint = json!({"destination": {"hostname": "app/wp.app.svc.cluster.local"}, "hbone_mtls_port": 15008});
    let web = json!({"app/web.app.svc.cluster.local": [{"service_port": 80, "target_port": 8080}]});
    let state = json!({
        "workloads": [
            {"uid": "K//Pod/app/web-1", "namespace": "app", "addresses": ["10.0.1.1"], "status": "HEALTHY",
             "services": web, "waypoint": waypoint},
            {"uid": "K//Pod/app/web-2", "namespace": "app", "addresses": ["10.0.1.2"], "status": "HEALTHY",
             "services": web},
            {"uid": "K//Pod/app/web-3", "namespace": "app", "addresses": ["10.0.1.3"], "status": "UNHEALTHY",
             "services": web},
            {"uid": "K//Pod/app/db-1", "namespace": "app", "addresses": ["10.0.1.4"], "status": "HEALTHY",
             "services": {"app/db.app.svc.cluster.local": [{"service_port": 5432, "target_port": 5432}]}},
            {"uid": "K//Pod/app/wp-1", "namespace": "app", "addresses": ["10.0.1.9"], "status": "HEALTHY"}
        ],
        "services": [
            {"name": "web", "namespace": "app", "hostname": "web.app.svc.cluster.local",
             "addresses": [{"address": "10.96.0.10"}],
             "ports": [{"service_port": 80, "target_port": 8080, "app_protocol": "HTTP11"}],
             "waypoint": waypoint},
            {"name": "db", "namespace": "app", "hostname": "db.app.svc.cluster.local",
             "addresses": [{"address": "10.96.0.11"}], "ports": [{"service_port": 5432, "target_port": 5432}]}
        ]
    });
    ambit_node::state::parse(Path::new("state.json"), &state.to_string(), 1).expect("valid state")
}

fn me() -> WaypointId {
    WaypointId {
        namespace: "app".into(),
        name: "wp".into(),
        addresses: vec!["10.0.1.9".parse().unwrap()],
    }
}

fn authority(text: &str) -> Authority {
    text.parse().unwrap()
}

#[test]
fn tunnels_are_accepted_only_for_what_is_bound_here() {
    let snapshot = snapshot();
    let cases: [(&str, Result<&str, &str>); 6] = [
        ("10.96.0.10:80", Ok("service app/web.app.svc.cluster.local:80 http")),
        ("10.0.1.1:8080", Ok("workload K//Pod/app/web-1")),
        (
            "10.96.0.10:81",
            Err("service app/web.app.svc.cluster.local has no port 81"),
        ),
        (
            "10.96.0.11:5432",
            Err("service app/db.app.svc.cluster.local is not bound to waypoint app/wp"),
        ),
        (
            "10.0.1.2:8080",
            Err("workload K//Pod/app/web-2 is not bound to waypoint app/wp"),
        ),
        (
            "10.9.9.9:80",
            Err("10.9.9.9:80 is neither a service address nor a workload address this waypoint knows"),
        ),
    ];
    for (text, expected) in cases {
        let got = resolve(&snapshot, &me(), &authority(text)).map(|d| match d {
            Destination::Service { service, port, .. } => {
                let http = if d.declares_http() == Some(true) { "http" } else { "?" };
                format!("service {}:{port} {http}", service.key())
            }
            Destination::Workload { workload, .. } => format!("workload {}", workload.uid),
        });
        match expected {
            Ok(want) => assert_eq!(got.as_deref(), Ok(want), "{text}"),
            Err(want) => assert_eq!(got.unwrap_err().to_string(), want, "{text}"),
        }
    }
}

#[test]
fn a_waypoint_is_recognized_by_service_or_address() {
    let by_service: GatewayAddress =
        serde_json::from_value(json!({"destination": {"hostname": "app/wp.app.svc.cluster.local"}})).unwrap();
    let other_ns: GatewayAddress =
        serde_json::from_value(json!({"destination": {"hostname": "web/wp.web.svc.cluster.local"}})).unwrap();
    let other_name: GatewayAddress =
        serde_json::from_value(json!({"destination": {"hostname": "app/wpx.app.svc.cluster.local"}})).unwrap();
    let by_address: GatewayAddress =
        serde_json::from_value(json!({"destination": {"address": {"address": "10.0.1.9"}}})).unwrap();
    assert!(me().is(&by_service));
    assert!(!me().is(&other_ns));
    assert!(!me().is(&other_name));
    assert!(me().is(&by_address));
}

#[test]
fn service_endpoints_are_the_healthy_ones_with_their_target_port() {
    let snapshot = snapshot();
    let web = service_named(&snapshot, "app", "web").unwrap();
    let addrs: Vec<String> = service_endpoints(&snapshot, web, 80)
        .iter()
        .map(|e| e.addr.to_string())
        .collect();
    assert_eq!(addrs, ["10.0.1.1:8080", "10.0.1.2:8080"]);
    assert!(service_endpoints(&snapshot, web, 81).is_empty());
    assert!(service_named(&snapshot, "app", "nope").is_none());
}

//! The serialized form (proto field names, Istio enum names, defaults for absent fields), identities, and the names
//! the model refuses.

use serde_json::{Value, json};

use super::*;

fn workload_from(value: Value) -> Result<Workload, String> {
    serde_json::from_value(value).map_err(|e| e.to_string())
}

#[test]
fn absent_fields_take_the_protos_defaults() {
    let workload = workload_from(json!({"uid": "Kubernetes//Pod/demo/a", "namespace": "demo"})).unwrap();
    assert_eq!(
        workload,
        Workload::new(
            WorkloadUid::new("Kubernetes//Pod/demo/a").unwrap(),
            Namespace::new("demo").unwrap()
        )
    );
    assert_eq!(workload.trust_domain.as_str(), "cluster.local");
    assert_eq!(workload.service_account.as_str(), "default");
    assert_eq!(workload.capacity, 1);
    assert_eq!(workload.tunnel_protocol, TunnelProtocol::None);
    assert_eq!(workload.status, WorkloadStatus::Healthy);
    assert_eq!(
        workload.identity().to_string(),
        "spiffe://cluster.local/ns/demo/sa/default"
    );
}

#[test]
fn empty_trust_domain_and_service_account_mean_the_defaults() {
    let value = json!({"uid": "u", "namespace": "demo", "trust_domain": "", "service_account": ""});
    let workload = workload_from(value).unwrap();
    assert_eq!(
        workload.identity().to_string(),
        "spiffe://cluster.local/ns/demo/sa/default"
    );
}

#[test]
fn identity_uses_trust_domain_namespace_and_service_account() {
    let value = json!({"uid": "u", "namespace": "shop", "trust_domain": "corp.example", "service_account": "cart"});
    let workload = workload_from(value).unwrap();
    assert_eq!(workload.identity().to_string(), "spiffe://corp.example/ns/shop/sa/cart");
}

fn full_workload() -> Value {
    json!({
        "uid": "Kubernetes//Pod/demo/echo-1",
        "name": "echo-1",
        "namespace": "demo",
        "addresses": ["10.0.1.1", "fd00::1:1"],
        "network": "net-1",
        "tunnel_protocol": "HBONE",
        "trust_domain": "cluster.local",
        "service_account": "echo",
        "waypoint": {"destination": {"hostname": "demo/waypoint.demo.svc.cluster.local"}, "hbone_mtls_port": 15008},
        "node": "node-a",
        "canonical_name": "echo",
        "canonical_revision": "v1",
        "workload_type": "POD",
        "workload_name": "echo",
        "services": {"demo/echo.demo.svc.cluster.local": [{"service_port": 80, "target_port": 8080}]},
        "authorization_policies": ["demo/allow-client"],
        "status": "UNHEALTHY",
        "cluster_id": "Kubernetes",
        "locality": {"region": "r1", "zone": "z1", "subzone": "s1"},
        "capacity": 3,
        "labels": {"app": "echo", "version": "v1"}
    })
}

#[test]
fn a_workload_round_trips_with_the_protos_field_names() {
    let workload = workload_from(full_workload()).unwrap();
    assert_eq!(workload.capacity, 3);
    assert_eq!(
        workload.authorization_policies,
        [PolicyRef::new("demo", "allow-client")]
    );
    let key: ServiceKey = "demo/echo.demo.svc.cluster.local".parse().unwrap();
    assert_eq!(workload.port_mapping(&key, 80), Some(8080));
    assert_eq!(workload.port_mapping(&key, 81), None);
    assert!(workload.has_address("::ffff:10.0.1.1".parse().unwrap()));
    assert_eq!(serde_json::to_value(&workload).unwrap(), full_workload());
}

fn full_service() -> Value {
    json!({
        "name": "echo",
        "namespace": "demo",
        "hostname": "echo.demo.svc.cluster.local",
        "addresses": [{"network": "", "address": "10.96.0.10"}],
        "ports": [{"service_port": 80, "target_port": 8080, "app_protocol": "HTTP11"}],
        "subject_alt_names": ["spiffe://cluster.local/ns/demo/sa/echo-legacy"],
        "waypoint": {"destination": {"address": {"network": "", "address": "10.0.5.5"}}, "hbone_mtls_port": 15009},
        "load_balancing": {
            "routing_preference": ["NETWORK", "REGION", "ZONE", "SUBZONE", "NODE", "CLUSTER"],
            "mode": "FAILOVER",
            "health_policy": "ALLOW_ALL"
        }
    })
}

#[test]
fn a_service_round_trips_with_the_protos_field_names() {
    let service: Service = serde_json::from_value(full_service()).unwrap();
    assert_eq!(service.key().to_string(), "demo/echo.demo.svc.cluster.local");
    assert_eq!(service.port(80).map(|p| p.app_protocol), Some(AppProtocol::Http11));
    assert_eq!(service.waypoint.as_ref().unwrap().to_string(), "10.0.5.5:15009");
    assert_eq!(serde_json::to_value(&service).unwrap(), full_service());
}

#[test]
fn gateway_port_defaults_to_15008() {
    let gateway: GatewayAddress =
        serde_json::from_value(json!({"destination": {"hostname": "demo/wp.demo.svc.cluster.local"}})).unwrap();
    assert_eq!(gateway.hbone_mtls_port, DEFAULT_HBONE_MTLS_PORT);
}

#[test]
fn malformed_values_are_refused_with_the_reason() {
    let base = || json!({"uid": "u", "namespace": "demo"});
    let with = |field: &str, value: Value| {
        let mut workload = base();
        workload[field] = value;
        workload
    };
    let cases = [
        (with("uid", json!("")), "the uid must not be empty"),
        (with("namespace", json!("Demo")), "\"Demo\" is not a namespace"),
        (
            with("service_account", json!("a b")),
            "\"a b\" is not a service account",
        ),
        (with("trust_domain", json!("Cluster")), "invalid trust domain"),
        (
            with("addresses", json!(["10.0.0.300"])),
            "\"10.0.0.300\" is not an IP address",
        ),
        (
            with("authorization_policies", json!(["allow"])),
            "\"allow\" is not a policy name",
        ),
        (with("services", json!({"echo": []})), "\"echo\" is not a service key"),
        (
            with("tunnel_protocol", json!("LEGACY_ISTIO_MTLS")),
            "unknown variant `LEGACY_ISTIO_MTLS`",
        ),
        (with("capacity", json!(-1)), "invalid value: integer `-1`"),
        (with("colour", json!("blue")), "unknown field `colour`"),
        (json!({"uid": "u"}), "missing field `namespace`"),
    ];
    for (value, want) in cases {
        let error = workload_from(value.clone()).unwrap_err();
        assert!(error.contains(want), "{value}: {error:?} should contain {want:?}");
    }
}

#[test]
fn names_are_checked_when_made() {
    assert!(Namespace::new("demo-1.x").is_ok());
    assert_eq!(Namespace::new(""), Err(NameError::Namespace(String::new())));
    assert!(ServiceAccount::new("Default").is_err());
    assert!(Hostname::new("a/b").is_err());
    assert!(Hostname::new("").is_err());
    assert!(WorkloadUid::new("").is_err());
    for key in ["echo", "demo/", "/echo.demo", "Demo/echo"] {
        assert_eq!(
            key.parse::<ServiceKey>(),
            Err(NameError::ServiceKey(key.to_string())),
            "{key}"
        );
    }
    assert_eq!(default_trust_domain().as_str(), DEFAULT_TRUST_DOMAIN);
}

#[test]
fn unspecified_scope_is_refused() {
    let error = serde_json::from_value::<LoadBalancing>(json!({"routing_preference": ["UNSPECIFIED_SCOPE"]}));
    assert!(
        error
            .unwrap_err()
            .to_string()
            .contains("unknown variant `UNSPECIFIED_SCOPE`")
    );
    let lb: LoadBalancing = serde_json::from_value(json!({})).unwrap();
    assert_eq!(
        (lb.mode, lb.health_policy),
        (LoadBalancingMode::Unspecified, HealthPolicy::OnlyHealthy)
    );
}

//! Tests of translation: workloads, services, waypoints and policies from Kubernetes objects and Istio config.

use std::net::IpAddr;
use std::path::Path;

use ambit_policy::{Action, STATIC_STRICT_POLICY_NAME, Scope};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

/// Owned objects, for [`Inputs`].
#[derive(Clone, Debug, Default)]
struct Objects {
    namespaces: Vec<core::Namespace>,
    pods: Vec<core::Pod>,
    services: Vec<core::Service>,
    authorization_policies: Vec<AuthorizationPolicy>,
    peer_authentications: Vec<PeerAuthentication>,
    gateways: Vec<WaypointGateway>,
}

impl Objects {
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            namespaces: self.namespaces.iter().collect(),
            pods: self.pods.iter().collect(),
            services: self.services.iter().collect(),
            authorization_policies: self.authorization_policies.iter().collect(),
            peer_authentications: self.peer_authentications.iter().collect(),
            gateways: &self.gateways,
        }
    }

    fn state(&self) -> StateFile {
        translate(&self.inputs(), &Settings::default())
    }

    fn pod_mut(&mut self, namespace: &str, name: &str) -> &mut core::Pod {
        let found = self
            .pods
            .iter_mut()
            .find(|p| p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.name.as_deref() == Some(name));
        found.unwrap_or_else(|| panic!("no pod {namespace}/{name}"))
    }

    fn service_mut(&mut self, namespace: &str, name: &str) -> &mut core::Service {
        let found = self
            .services
            .iter_mut()
            .find(|s| s.metadata.namespace.as_deref() == Some(namespace) && s.metadata.name.as_deref() == Some(name));
        found.unwrap_or_else(|| panic!("no service {namespace}/{name}"))
    }

    fn with_policies(mut self, policies: Value) -> Self {
        for policy in policies.as_array().expect("a list of policies") {
            match policy["kind"].as_str() {
                Some("AuthorizationPolicy") => self.authorization_policies.push(object(policy.clone())),
                Some("PeerAuthentication") => self.peer_authentications.push(object(policy.clone())),
                other => panic!("not a policy kind: {other:?}"),
            }
        }
        self
    }
}

fn object<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|error| panic!("{error}: {value}"))
}

fn namespace(name: &str, labels: Value) -> core::Namespace {
    object(json!({ "metadata": { "name": name, "labels": labels } }))
}

/// A running, ready pod on `node-1` whose capture is in place, with one container port `http` 8080/TCP.
fn pod(namespace: &str, name: &str, ip: &str, labels: Value) -> core::Pod {
    object(json!({
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": { REDIRECTION_ANNOTATION: "enabled" },
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [{ "name": "main", "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }] }],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{ "type": "Ready", "status": "True" }],
        },
    }))
}

fn service(namespace: &str, name: &str, cluster_ip: &str, selector: Value, ports: Value) -> core::Service {
    object(json!({
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "type": "ClusterIP", "clusterIP": cluster_ip, "selector": selector, "ports": ports },
    }))
}

/// Namespace `web`; pods `web/a` (captured), `web/b` (not), `default/c` (captured), `default/d` (not); a service
/// `web/web` selecting `app: web` with a named and a numbered target port; a headless service `default/headless`.
fn mesh() -> Objects {
    let mut b = pod("web", "b", "10.1.0.2", json!({ "app": "other" }));
    b.metadata.annotations = None;
    let mut d = pod("default", "d", "10.1.0.4", json!({}));
    d.metadata.annotations = None;
    let web_ports = json!([
        { "name": "http", "port": 80, "targetPort": "http" },
        { "name": "metrics", "port": 81, "targetPort": 9090 },
    ]);
    Objects {
        namespaces: vec![namespace("web", json!({})), namespace("default", json!({}))],
        pods: vec![
            pod("web", "a", "10.1.0.1", json!({ "app": "web", "version": "v2" })),
            b,
            pod("default", "c", "10.1.0.3", json!({ "app": "web" })),
            d,
        ],
        services: vec![
            service("web", "web", "10.96.0.10", json!({ "app": "web" }), web_ports),
            service(
                "default",
                "headless",
                "None",
                json!({ "app": "web" }),
                json!([{ "port": 80 }]),
            ),
        ],
        ..Objects::default()
    }
}

fn workload<'a>(state: &'a StateFile, namespace: &str, name: &str) -> &'a Workload {
    let found = (state.workloads.iter()).find(|w| w.namespace.as_str() == namespace && w.name == name);
    found.unwrap_or_else(|| panic!("no workload {namespace}/{name} in {:?}", names(state)))
}

fn find_workload<'a>(state: &'a StateFile, namespace: &str, name: &str) -> Option<&'a Workload> {
    (state.workloads.iter()).find(|w| w.namespace.as_str() == namespace && w.name == name)
}

fn names(state: &StateFile) -> Vec<String> {
    state
        .workloads
        .iter()
        .map(|w| format!("{}/{}", w.namespace, w.name))
        .collect()
}

fn published_service<'a>(state: &'a StateFile, namespace: &str, name: &str) -> &'a Service {
    let found = (state.services.iter()).find(|s| s.namespace.as_str() == namespace && s.name == name);
    found.unwrap_or_else(|| panic!("no service {namespace}/{name}"))
}

fn policy_names(workload: &Workload) -> Vec<String> {
    workload
        .authorization_policies
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn published_policies(state: &StateFile) -> Vec<String> {
    state.policies.iter().map(|p| p.policy_ref().to_string()).collect()
}

fn key(text: &str) -> ServiceKey {
    text.parse().unwrap_or_else(|error| panic!("{error}"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|error| panic!("{text}: {error}"))
}

#[test]
fn tunnel_protocol_follows_the_redirection_annotation() {
    let cases = [
        (Some("enabled"), TunnelProtocol::Hbone),
        (Some("pending"), TunnelProtocol::None),
        (Some("disabled"), TunnelProtocol::None),
        (Some(""), TunnelProtocol::None),
        (None, TunnelProtocol::None),
    ];
    for (annotation, expected) in cases {
        let mut objects = mesh();
        let annotations = annotation.map(|value| BTreeMap::from([(REDIRECTION_ANNOTATION.to_string(), value.into())]));
        objects.pod_mut("web", "a").metadata.annotations = annotations;
        let state = objects.state();
        assert_eq!(workload(&state, "web", "a").tunnel_protocol, expected, "{annotation:?}");
    }
}

#[test]
fn the_mesh_fixture_tunnels_to_captured_pods_only() {
    let state = mesh().state();
    let cases = [
        ("web", "a", TunnelProtocol::Hbone),
        ("web", "b", TunnelProtocol::None),
        ("default", "c", TunnelProtocol::Hbone),
        ("default", "d", TunnelProtocol::None),
    ];
    for (namespace, name, protocol) in cases {
        assert_eq!(
            workload(&state, namespace, name).tunnel_protocol,
            protocol,
            "{namespace}/{name}"
        );
    }
}

#[test]
fn workload_identity_and_telemetry_fields() {
    let state = mesh().state();
    let a = workload(&state, "web", "a");
    assert_eq!(a.uid.as_str(), "Kubernetes//Pod/web/a");
    assert_eq!(a.addresses, vec![ip("10.1.0.1")]);
    assert_eq!(a.service_account.as_str(), "default");
    assert_eq!(a.node, "node-1");
    assert_eq!(
        (a.canonical_name.as_str(), a.canonical_revision.as_str()),
        ("web", "v2")
    );
    assert_eq!((a.workload_type, a.workload_name.as_str()), (WorkloadType::Pod, "a"));
    assert_eq!(a.cluster_id, "Kubernetes");
    assert_eq!(a.labels.get("version").map(String::as_str), Some("v2"));
    assert_eq!(a.waypoint, None);
    let d = workload(&state, "default", "d");
    assert_eq!(
        (d.canonical_name.as_str(), d.canonical_revision.as_str()),
        ("d", "latest")
    );
}

#[test]
fn settings_name_the_uid_cluster_and_hostnames() {
    let settings = Settings {
        cluster_domain: "example.org".to_string(),
        root_namespace: "mesh-root".to_string(),
        cluster_id: "east".to_string(),
        trust_domain: ambit_types::TrustDomain::new("example.org").unwrap(),
    };
    let objects = mesh();
    let state = translate(&objects.inputs(), &settings);
    let a = workload(&state, "web", "a");
    assert_eq!((a.uid.as_str(), a.cluster_id.as_str()), ("east//Pod/web/a", "east"));
    assert_eq!(a.identity().to_string(), "spiffe://example.org/ns/web/sa/default");
    assert_eq!(
        a.services.keys().collect::<Vec<_>>(),
        [&key("web/web.web.svc.example.org")]
    );
    assert_eq!(
        published_service(&state, "web", "web").hostname.as_str(),
        "web.web.svc.example.org"
    );
}

#[test]
fn service_account_defaults_to_default() {
    let cases = [(None, "default"), (Some(""), "default"), (Some("reviews"), "reviews")];
    for (account, expected) in cases {
        let mut objects = mesh();
        let spec = objects.pod_mut("web", "a").spec.as_mut().expect("a spec");
        spec.service_account_name = account.map(str::to_string);
        let state = objects.state();
        assert_eq!(
            workload(&state, "web", "a").service_account.as_str(),
            expected,
            "{account:?}"
        );
    }
}

#[test]
fn workload_name_and_type_come_from_the_controller() {
    struct Case {
        owners: Value,
        hash: Option<&'static str>,
        expected: (&'static str, WorkloadType),
    }
    let owner = |kind: &str, name: &str, controller: bool| json!([{ "apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u-1", "controller": controller }]);
    let cases = [
        Case {
            owners: json!(null),
            hash: None,
            expected: ("a", WorkloadType::Pod),
        },
        Case {
            owners: owner("ReplicaSet", "web-7d4b9c", true),
            hash: Some("7d4b9c"),
            expected: ("web", WorkloadType::Deployment),
        },
        Case {
            owners: owner("ReplicaSet", "front-end-7d4b9c", true),
            hash: Some("7d4b9c"),
            expected: ("front-end", WorkloadType::Deployment),
        },
        Case {
            owners: owner("ReplicaSet", "front-end-7d4b9c", true),
            hash: None,
            expected: ("front-end", WorkloadType::Deployment),
        },
        Case {
            owners: owner("ReplicaSet", "web-7d4b9c", false),
            hash: Some("7d4b9c"),
            expected: ("a", WorkloadType::Pod),
        },
        Case {
            owners: owner("StatefulSet", "db", true),
            hash: None,
            expected: ("db", WorkloadType::Pod),
        },
        Case {
            owners: owner("ReplicaSet", "solo", true),
            hash: None,
            expected: ("solo", WorkloadType::Deployment),
        },
    ];
    for Case { owners, hash, expected } in cases {
        let mut objects = mesh();
        let pod = objects.pod_mut("web", "a");
        pod.metadata.owner_references = object(owners.clone());
        pod.metadata.labels = Some(
            hash.map(|h| (POD_TEMPLATE_HASH_LABEL.to_string(), h.to_string()))
                .into_iter()
                .collect(),
        );
        let state = objects.state();
        let a = workload(&state, "web", "a");
        assert_eq!(
            (a.workload_name.as_str(), a.workload_type),
            expected,
            "{owners} {hash:?}"
        );
        assert_eq!(
            a.canonical_name, expected.0,
            "without app labels, the canonical name is the workload's"
        );
    }
}

#[test]
fn only_live_pods_with_an_ip_are_workloads() {
    type Edit = fn(&mut core::PodStatus);
    let cases: [(&str, Edit, Option<Vec<&str>>); 7] = [
        ("running", |_| {}, Some(vec!["10.1.0.1"])),
        (
            "pending with an IP",
            |s| s.phase = Some("Pending".into()),
            Some(vec!["10.1.0.1"]),
        ),
        ("no IP yet", |s| s.pod_ip = None, None),
        ("succeeded", |s| s.phase = Some("Succeeded".into()), None),
        ("failed", |s| s.phase = Some("Failed".into()), None),
        ("not an IP", |s| s.pod_ip = Some("ten".into()), None),
        ("dual stack", dual_stack, Some(vec!["10.1.0.1", "fd00::1"])),
    ];
    fn dual_stack(status: &mut core::PodStatus) {
        status.pod_ips = object(json!([{ "ip": "10.1.0.1" }, { "ip": "fd00::1" }]));
    }
    for (case, edit, expected) in cases {
        let mut objects = mesh();
        edit(objects.pod_mut("web", "a").status.as_mut().expect("a status"));
        let state = objects.state();
        let addresses = find_workload(&state, "web", "a").map(|w| w.addresses.clone());
        let expected = expected.map(|ips| ips.into_iter().map(ip).collect::<Vec<_>>());
        assert_eq!(addresses, expected, "{case}");
    }
    let mut objects = mesh();
    objects.pod_mut("web", "a").status = None;
    assert!(find_workload(&objects.state(), "web", "a").is_none(), "no status");
}

#[test]
fn health_follows_the_ready_condition() {
    let cases = [
        (json!([{ "type": "Ready", "status": "True" }]), WorkloadStatus::Healthy),
        (
            json!([{ "type": "Ready", "status": "False" }]),
            WorkloadStatus::Unhealthy,
        ),
        (
            json!([{ "type": "Ready", "status": "Unknown" }]),
            WorkloadStatus::Unhealthy,
        ),
        (
            json!([{ "type": "ContainersReady", "status": "True" }]),
            WorkloadStatus::Unhealthy,
        ),
        (json!(null), WorkloadStatus::Unhealthy),
    ];
    for (conditions, expected) in cases {
        let mut objects = mesh();
        let status = objects.pod_mut("web", "a").status.as_mut().expect("a status");
        status.conditions = object(conditions.clone());
        let state = objects.state();
        assert_eq!(workload(&state, "web", "a").status, expected, "{conditions}");
    }
}

#[test]
fn service_ports_map_to_the_pod_and_named_targets_are_zero() {
    let state = mesh().state();
    let web = key("web/web.web.svc.cluster.local");
    let mapping = |service_port, target_port| PortMapping {
        service_port,
        target_port,
    };
    let a = workload(&state, "web", "a");
    assert_eq!(a.services.get(&web), Some(&vec![mapping(80, 8080), mapping(81, 9090)]));
    assert!(workload(&state, "web", "b").services.is_empty());
    let c = workload(&state, "default", "c");
    let headless = key("default/headless.default.svc.cluster.local");
    assert_eq!(c.services.keys().collect::<Vec<_>>(), [&headless]);
    assert_eq!(
        c.services.get(&headless),
        Some(&vec![mapping(80, 80)]),
        "no targetPort: the port"
    );
    let service = published_service(&state, "web", "web");
    let targets: Vec<(u16, u16)> = service.ports.iter().map(|p| (p.service_port, p.target_port)).collect();
    assert_eq!(targets, [(80, 0), (81, 9090)]);
    assert_eq!(service.addresses.len(), 1);
    assert!(published_service(&state, "default", "headless").addresses.is_empty());
}

#[test]
fn target_ports_resolve_per_pod() {
    // (service port, the pod's container port) -> the pod's mapping and the Service's published target port.
    let cases = [
        (
            json!({ "port": 80, "targetPort": "http" }),
            json!({ "name": "http", "containerPort": 8080 }),
            Some(8080),
            0,
        ),
        (
            json!({ "port": 80, "targetPort": "http" }),
            json!({ "name": "web", "containerPort": 8080 }),
            None,
            0,
        ),
        (
            json!({ "port": 80, "targetPort": "http" }),
            json!({ "name": "http", "containerPort": 8080, "protocol": "UDP" }),
            None,
            0,
        ),
        (
            json!({ "port": 80, "targetPort": 9090 }),
            json!({ "name": "http", "containerPort": 8080 }),
            Some(9090),
            9090,
        ),
        (
            json!({ "port": 80 }),
            json!({ "name": "http", "containerPort": 8080 }),
            Some(80),
            80,
        ),
    ];
    for (port, container_port, mapped, published) in cases {
        let mut objects = mesh();
        objects.service_mut("web", "web").spec.as_mut().expect("a spec").ports = Some(vec![object(port.clone())]);
        let containers = &mut objects.pod_mut("web", "a").spec.as_mut().expect("a spec").containers;
        containers[0].ports = Some(vec![object(container_port.clone())]);
        let state = objects.state();
        let a = workload(&state, "web", "a");
        let web = key("web/web.web.svc.cluster.local");
        assert_eq!(a.port_mapping(&web, 80), mapped, "{port} on {container_port}");
        assert!(
            a.services.contains_key(&web),
            "still an endpoint: {port} on {container_port}"
        );
        let service = published_service(&state, "web", "web");
        assert_eq!(service.port(80).map(|p| p.target_port), Some(published), "{port}");
    }
}

#[test]
fn only_tcp_ports_are_published() {
    let mut objects = mesh();
    let ports = json!([
        { "name": "dns", "port": 53, "protocol": "UDP" },
        { "name": "dns-tcp", "port": 53, "protocol": "TCP" },
        { "name": "sctp", "port": 9000, "protocol": "SCTP" },
    ]);
    objects.service_mut("web", "web").spec.as_mut().expect("a spec").ports = object(ports);
    let state = objects.state();
    let service = published_service(&state, "web", "web");
    assert_eq!(service.ports.iter().map(|p| p.service_port).collect::<Vec<_>>(), [53]);
    let a = workload(&state, "web", "a");
    let mappings = a.services.get(&key("web/web.web.svc.cluster.local"));
    assert_eq!(mappings.map(Vec::len), Some(1));
}

#[test]
fn service_addresses_are_its_cluster_ips() {
    let cases = [
        (json!({ "clusterIP": "10.96.0.10" }), vec!["10.96.0.10"]),
        (json!({ "clusterIP": "None" }), vec![]),
        (json!({ "clusterIP": "" }), vec![]),
        (json!({}), vec![]),
        (
            json!({ "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"] }),
            vec!["10.96.0.10", "fd00::10"],
        ),
        (json!({ "clusterIP": "None", "clusterIPs": ["None"] }), vec![]),
    ];
    for (spec, expected) in cases {
        let mut objects = mesh();
        let mut spec_value = spec.clone();
        spec_value["selector"] = json!({ "app": "web" });
        objects.service_mut("web", "web").spec = Some(object(spec_value));
        let state = objects.state();
        let service = published_service(&state, "web", "web");
        let addresses: Vec<IpAddr> = service.addresses.iter().map(|a| a.address).collect();
        assert_eq!(addresses, expected.into_iter().map(ip).collect::<Vec<_>>(), "{spec}");
        assert!(service.addresses.iter().all(|a| a.network.is_empty()));
    }
}

#[test]
fn services_select_pods_of_their_namespace_by_a_non_empty_selector() {
    let cases = [
        (json!({ "app": "web" }), vec!["web/a"]),
        (json!({ "app": "web", "version": "v2" }), vec!["web/a"]),
        (json!({ "app": "web", "version": "v1" }), vec![]),
        (json!({}), vec![]),
        (json!(null), vec![]),
    ];
    for (selector, expected) in cases {
        let mut objects = mesh();
        objects
            .service_mut("web", "web")
            .spec
            .as_mut()
            .expect("a spec")
            .selector = object(selector.clone());
        let state = objects.state();
        let web = key("web/web.web.svc.cluster.local");
        let endpoints: Vec<String> = (state.workloads.iter())
            .filter(|w| w.services.contains_key(&web))
            .map(|w| format!("{}/{}", w.namespace, w.name))
            .collect();
        assert_eq!(endpoints, expected, "{selector}");
    }
}

/// Namespace `app` with pod `app/p` and service `app/s`; a Gateway `app/wp` of class `istio-waypoint` (with
/// `istio.io/waypoint-for: <waypoint_for>` when given), its Service `app/wp` and its ready pod `app/wp-1`.
fn waypoint_objects(waypoint_for: Option<&str>) -> Objects {
    let waypoint_labels =
        json!({ "gateway.networking.k8s.io/gateway-name": "wp", GATEWAY_MANAGED_LABEL: MESH_CONTROLLER });
    let gateway_labels = waypoint_for.map(|value| (WAYPOINT_FOR_LABEL.to_string(), value.to_string()));
    let mut waypoint_service = service(
        "app",
        "wp",
        "10.96.0.9",
        waypoint_labels.clone(),
        json!([{ "port": 15008 }]),
    );
    waypoint_service.metadata.labels = object(waypoint_labels.clone());
    Objects {
        namespaces: vec![namespace("app", json!({})), namespace("waypoints", json!({}))],
        pods: vec![
            pod("app", "p", "10.2.0.1", json!({ "app": "p" })),
            pod("app", "wp-1", "10.2.0.9", waypoint_labels),
        ],
        services: vec![
            service("app", "s", "10.96.0.1", json!({ "app": "p" }), json!([{ "port": 80 }])),
            waypoint_service,
        ],
        gateways: vec![WaypointGateway {
            namespace: "app".to_string(),
            name: "wp".to_string(),
            class_name: WAYPOINT_CLASS.to_string(),
            labels: gateway_labels.into_iter().collect(),
        }],
        ..Objects::default()
    }
}

fn set_label(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.labels
        .get_or_insert_default()
        .insert(key.to_string(), value.to_string());
}

fn label_pod(objects: &mut Objects, key: &str, value: &str) {
    set_label(&mut objects.pod_mut("app", "p").metadata, key, value);
}

fn label_service(objects: &mut Objects, key: &str, value: &str) {
    set_label(&mut objects.service_mut("app", "s").metadata, key, value);
}

fn label_namespace(objects: &mut Objects, key: &str, value: &str) {
    let found = objects
        .namespaces
        .iter_mut()
        .find(|ns| ns.metadata.name.as_deref() == Some("app"));
    set_label(&mut found.expect("namespace app").metadata, key, value);
}

/// Moves the waypoint (Gateway, Service and pod) to namespace `waypoints`.
fn move_waypoint(objects: &mut Objects) {
    objects.gateways[0].namespace = "waypoints".to_string();
    objects.service_mut("app", "wp").metadata.namespace = Some("waypoints".to_string());
    objects.pod_mut("app", "wp-1").metadata.namespace = Some("waypoints".to_string());
}

#[test]
fn waypoints_bind_when_allowed_and_fail_closed_until_ready() {
    const WP: Option<&str> = Some("app/wp.app.svc.cluster.local:15008");
    const OTHER_NS: Option<&str> = Some("waypoints/wp.waypoints.svc.cluster.local:15008");
    /// (case, waypoint-for, edit, the pod's waypoint, the service's waypoint)
    type Row = (
        &'static str,
        Option<&'static str>,
        fn(&mut Objects),
        Option<&'static str>,
        Option<&'static str>,
    );
    const OTHER: Option<&str> = Some("app/other.app.svc.cluster.local:15008");
    fn unready(o: &mut Objects) {
        let status = o.pod_mut("app", "wp-1").status.as_mut().expect("a status");
        status.conditions = object(json!([{ "type": "Ready", "status": "False" }]));
    }
    let cases: [Row; 20] = [
        ("no binding", Some("all"), |_| {}, None, None),
        (
            "service label, default for",
            None,
            |o| label_service(o, USE_WAYPOINT_LABEL, "wp"),
            None,
            WP,
        ),
        (
            "pod label, for service",
            Some("service"),
            |o| label_pod(o, USE_WAYPOINT_LABEL, "wp"),
            None,
            None,
        ),
        (
            "pod label, for workload",
            Some("workload"),
            |o| label_pod(o, USE_WAYPOINT_LABEL, "wp"),
            WP,
            None,
        ),
        (
            "service label, for workload",
            Some("workload"),
            |o| label_service(o, USE_WAYPOINT_LABEL, "wp"),
            None,
            None,
        ),
        (
            "namespace label, for all",
            Some("all"),
            |o| label_namespace(o, USE_WAYPOINT_LABEL, "wp"),
            WP,
            WP,
        ),
        (
            "namespace label, default for",
            None,
            |o| label_namespace(o, USE_WAYPOINT_LABEL, "wp"),
            None,
            WP,
        ),
        (
            "for none",
            Some("none"),
            |o| label_namespace(o, USE_WAYPOINT_LABEL, "wp"),
            None,
            None,
        ),
        (
            "namespace label, pod opts out",
            Some("all"),
            |o| {
                label_namespace(o, USE_WAYPOINT_LABEL, "wp");
                label_pod(o, USE_WAYPOINT_LABEL, NO_WAYPOINT);
            },
            None,
            WP,
        ),
        (
            "namespace opts out, service binds",
            Some("all"),
            |o| {
                label_namespace(o, USE_WAYPOINT_LABEL, NO_WAYPOINT);
                label_service(o, USE_WAYPOINT_LABEL, "wp");
            },
            None,
            WP,
        ),
        // Not ready or missing: still bound, so the node proxies fail closed; unless the bypass label says go direct.
        (
            "no ready waypoint pod",
            Some("all"),
            |o| {
                label_namespace(o, USE_WAYPOINT_LABEL, "wp");
                unready(o);
            },
            WP,
            WP,
        ),
        (
            "no ready waypoint pod, namespace bypasses",
            Some("all"),
            |o| {
                label_namespace(o, USE_WAYPOINT_LABEL, "wp");
                label_namespace(o, BYPASS_UNREADY_WAYPOINT_LABEL, "true");
                unready(o);
            },
            None,
            None,
        ),
        (
            "no ready waypoint pod, namespace bypasses, service does not",
            Some("all"),
            |o| {
                label_namespace(o, USE_WAYPOINT_LABEL, "wp");
                label_namespace(o, BYPASS_UNREADY_WAYPOINT_LABEL, "true");
                label_service(o, BYPASS_UNREADY_WAYPOINT_LABEL, "false");
                unready(o);
            },
            None,
            WP,
        ),
        (
            "ready waypoint, bypass label changes nothing",
            Some("all"),
            |o| {
                label_namespace(o, USE_WAYPOINT_LABEL, "wp");
                label_namespace(o, BYPASS_UNREADY_WAYPOINT_LABEL, "true");
            },
            WP,
            WP,
        ),
        (
            "no waypoint service",
            Some("all"),
            |o| {
                label_namespace(o, USE_WAYPOINT_LABEL, "wp");
                o.services.retain(|s| s.metadata.name.as_deref() != Some("wp"));
            },
            WP,
            WP,
        ),
        (
            "wrong class: no such waypoint, default for",
            Some("all"),
            |o| {
                label_namespace(o, USE_WAYPOINT_LABEL, "wp");
                o.gateways[0].class_name = "istio".to_string();
            },
            None,
            WP,
        ),
        (
            "unknown waypoint: default for",
            Some("all"),
            |o| label_namespace(o, USE_WAYPOINT_LABEL, "other"),
            None,
            OTHER,
        ),
        (
            "unknown waypoint, service bypasses",
            Some("all"),
            |o| {
                label_namespace(o, USE_WAYPOINT_LABEL, "other");
                label_service(o, BYPASS_UNREADY_WAYPOINT_LABEL, "true");
            },
            None,
            None,
        ),
        (
            "cross-namespace",
            Some("all"),
            |o| {
                move_waypoint(o);
                label_service(o, USE_WAYPOINT_LABEL, "wp");
                label_service(o, USE_WAYPOINT_NAMESPACE_LABEL, "waypoints");
            },
            None,
            OTHER_NS,
        ),
        (
            "cross-namespace without the namespace label: a missing waypoint",
            Some("all"),
            |o| {
                move_waypoint(o);
                label_service(o, USE_WAYPOINT_LABEL, "wp");
            },
            None,
            WP,
        ),
    ];
    for (case, waypoint_for, edit, pod_waypoint, service_waypoint) in cases {
        let mut objects = waypoint_objects(waypoint_for);
        edit(&mut objects);
        let state = objects.state();
        let shown = |waypoint: &Option<GatewayAddress>| waypoint.as_ref().map(ToString::to_string);
        let p = workload(&state, "app", "p");
        assert_eq!(shown(&p.waypoint).as_deref(), pod_waypoint, "{case}: the pod");
        let s = published_service(&state, "app", "s");
        assert_eq!(shown(&s.waypoint).as_deref(), service_waypoint, "{case}: the service");
    }
}

#[test]
fn a_waypoint_has_no_waypoint_itself() {
    let mut objects = waypoint_objects(Some("all"));
    label_namespace(&mut objects, USE_WAYPOINT_LABEL, "wp");
    let state = objects.state();
    assert_eq!(workload(&state, "app", "wp-1").waypoint, None);
    assert_eq!(published_service(&state, "app", "wp").waypoint, None);
    assert!(workload(&state, "app", "p").waypoint.is_some());
}

#[test]
fn selector_policies_are_listed_on_the_selected_workloads_only() {
    let objects = mesh().with_policies(json!([
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "allow-web", "namespace": "web" },
            "spec": { "selector": { "matchLabels": { "app": "web" } }, "rules": [{ "from": [{ "source": { "namespaces": ["web"] } }] }] },
        },
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "deny-all", "namespace": "web" },
            "spec": { "action": "DENY", "rules": [{}] },
        },
    ]));
    let state = objects.state();
    assert_eq!(policy_names(workload(&state, "web", "a")), ["web/allow-web"]);
    assert!(policy_names(workload(&state, "web", "b")).is_empty());
    assert!(
        policy_names(workload(&state, "default", "c")).is_empty(),
        "same labels, other namespace"
    );
    assert_eq!(published_policies(&state), ["web/allow-web", "web/deny-all"]);
    let deny_all = state.policies.iter().find(|p| p.name == "deny-all").expect("deny-all");
    assert_eq!((deny_all.scope, deny_all.action), (Scope::Namespace, Action::Deny));
}

#[test]
fn root_namespace_selector_policies_select_in_every_namespace() {
    let objects = mesh().with_policies(json!([
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "web-everywhere", "namespace": "istio-system" },
            "spec": { "selector": { "matchLabels": { "app": "web" } }, "rules": [{}] },
        },
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "a-web", "namespace": "web" },
            "spec": { "selector": { "matchLabels": { "app": "web" } }, "rules": [{}] },
        },
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "global", "namespace": "istio-system" },
            "spec": { "action": "DENY", "rules": [{ "from": [{ "source": { "namespaces": ["evil"] } }] }] },
        },
    ]));
    let state = objects.state();
    assert_eq!(
        policy_names(workload(&state, "web", "a")),
        ["istio-system/web-everywhere", "web/a-web"],
        "sorted"
    );
    assert_eq!(
        policy_names(workload(&state, "default", "c")),
        ["istio-system/web-everywhere"]
    );
    assert!(
        policy_names(workload(&state, "default", "d")).is_empty(),
        "global policies are found by scope"
    );
    let global = state.policies.iter().find(|p| p.name == "global").expect("global");
    assert_eq!(global.scope, Scope::Global);
}

#[test]
fn policies_the_node_proxy_does_not_enforce_are_left_out() {
    let objects = mesh().with_policies(json!([
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "at-waypoint", "namespace": "web" },
            "spec": { "targetRefs": [{ "kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "wp" }] },
        },
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "custom", "namespace": "web" },
            "spec": { "action": "CUSTOM", "provider": { "name": "ext" }, "rules": [{}] },
        },
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "invalid", "namespace": "web" },
            "spec": { "selector": { "matchLabels": { "app": "web" } }, "rules": [{ "from": [{ "source": { "ipBlocks": ["10.0.0.300"] } }] }] },
        },
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "kept", "namespace": "web" },
            "spec": { "rules": [{}] },
        },
    ]));
    let state = objects.state();
    assert_eq!(published_policies(&state), ["web/kept"]);
    assert!(policy_names(workload(&state, "web", "a")).is_empty());
}

#[test]
fn peer_authentication_becomes_deny_policies() {
    let strict_static = format!("istio-system/{STATIC_STRICT_POLICY_NAME}");
    let pa = |namespace: &str, name: &str, spec: Value| json!({ "kind": "PeerAuthentication", "metadata": { "name": name, "namespace": namespace }, "spec": spec });
    let strict = json!({ "mtls": { "mode": "STRICT" } });
    let permissive = json!({ "mtls": { "mode": "PERMISSIVE" } });
    let port_level = json!({
        "selector": { "matchLabels": { "app": "web" } },
        "mtls": { "mode": "STRICT" },
        "portLevelMtls": { "8080": { "mode": "PERMISSIVE" } },
    });
    let converted = "web/converted_peer_authentication_web-ports";
    // (case, PeerAuthentications oldest first, policies of web/a, of web/b, of default/c, published)
    let cases = [
        (
            "namespace STRICT",
            json!([pa("web", "strict", strict.clone())]),
            vec![strict_static.as_str()],
            vec![strict_static.as_str()],
            vec![],
            vec![strict_static.as_str()],
        ),
        (
            "mesh-wide STRICT",
            json!([pa("istio-system", "default", strict.clone())]),
            vec![strict_static.as_str()],
            vec![strict_static.as_str()],
            vec![strict_static.as_str()],
            vec![strict_static.as_str()],
        ),
        (
            "mesh STRICT, namespace PERMISSIVE",
            json!([
                pa("istio-system", "default", strict.clone()),
                pa("web", "lax", permissive.clone())
            ]),
            vec![],
            vec![],
            vec![strict_static.as_str()],
            vec![strict_static.as_str()],
        ),
        (
            "the oldest of a namespace wins: STRICT",
            json!([
                pa("web", "first", strict.clone()),
                pa("web", "second", permissive.clone())
            ]),
            vec![strict_static.as_str()],
            vec![strict_static.as_str()],
            vec![],
            vec![strict_static.as_str()],
        ),
        (
            "the oldest of a namespace wins: PERMISSIVE",
            json!([
                pa("web", "first", permissive.clone()),
                pa("web", "second", strict.clone())
            ]),
            vec![],
            vec![],
            vec![],
            vec![],
        ),
        (
            "port-level exception",
            json!([pa("web", "web-ports", port_level.clone())]),
            vec![converted],
            vec![],
            vec![],
            vec![converted],
        ),
    ];
    for (case, pas, a, b, c, published) in cases {
        let state = mesh().with_policies(pas).state();
        assert_eq!(policy_names(workload(&state, "web", "a")), a, "{case}: web/a");
        assert_eq!(policy_names(workload(&state, "web", "b")), b, "{case}: web/b");
        assert_eq!(policy_names(workload(&state, "default", "c")), c, "{case}: default/c");
        assert_eq!(published_policies(&state), published, "{case}");
    }
}

#[test]
fn port_level_mtls_denies_plaintext_except_on_the_permissive_port() {
    let objects = mesh().with_policies(json!([{
        "kind": "PeerAuthentication",
        "metadata": { "name": "web-ports", "namespace": "web" },
        "spec": {
            "selector": { "matchLabels": { "app": "web" } },
            "mtls": { "mode": "STRICT" },
            "portLevelMtls": { "8080": { "mode": "PERMISSIVE" } },
        },
    }]));
    let state = objects.state();
    let converted = &state.policies[0];
    let plaintext = |port| ambit_policy::ConnInfo {
        source_identity: None,
        source_ip: ip("10.9.9.9"),
        destination_ip: ip("10.1.0.1"),
        destination_port: port,
    };
    assert_eq!(
        (converted.scope, converted.action),
        (Scope::WorkloadSelector, Action::Deny)
    );
    assert!(!converted.matches(&plaintext(8080)), "8080 is permissive");
    assert!(converted.matches(&plaintext(9090)), "every other port is strict");
}

#[test]
fn output_is_sorted_and_independent_of_object_order() {
    let objects = mesh().with_policies(json!([
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "z", "namespace": "web" },
            "spec": { "selector": { "matchLabels": { "app": "web" } }, "rules": [{}] },
        },
        {
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "a", "namespace": "web" },
            "spec": { "selector": { "matchLabels": { "app": "web" } }, "rules": [{}] },
        },
        {
            "kind": "PeerAuthentication",
            "metadata": { "name": "default", "namespace": "istio-system" },
            "spec": { "mtls": { "mode": "STRICT" } },
        },
    ]));
    let state = objects.state();
    let uids: Vec<&str> = state.workloads.iter().map(|w| w.uid.as_str()).collect();
    let mut sorted = uids.clone();
    sorted.sort();
    assert_eq!(uids, sorted);
    let keys: Vec<ServiceKey> = state.services.iter().map(Service::key).collect();
    assert!(keys.is_sorted(), "{keys:?}");
    assert!(published_policies(&state).is_sorted());
    let mut reversed = objects.clone();
    reversed.namespaces.reverse();
    reversed.pods.reverse();
    reversed.services.reverse();
    reversed.authorization_policies.reverse();
    assert_eq!(reversed.state(), state);
}

#[test]
fn a_pod_listed_twice_is_one_workload() {
    let mut objects = mesh();
    let mut again = objects.pods[0].clone();
    again.metadata.labels = None;
    objects.pods.push(again);
    let state = objects.state();
    assert_eq!(state.workloads.len(), 4);
    assert_eq!(
        workload(&state, "web", "a").canonical_revision,
        "v2",
        "the first copy stays"
    );
}

#[test]
fn objects_the_workload_api_cannot_name_are_left_out() {
    let mut objects = mesh();
    objects.pods.push(pod("Web", "upper", "10.1.0.7", json!({})));
    let mut unnamed = pod("web", "x", "10.1.0.8", json!({}));
    unnamed.metadata.name = None;
    objects.pods.push(unnamed);
    objects
        .pod_mut("web", "b")
        .spec
        .as_mut()
        .expect("a spec")
        .service_account_name = Some("Bad_SA".into());
    objects
        .services
        .push(service("Web", "s", "10.96.0.7", json!({ "app": "web" }), json!([])));
    let state = objects.state();
    assert_eq!(names(&state), ["default/c", "default/d", "web/a"]);
    assert_eq!(state.services.len(), 2);
}

#[test]
fn the_state_round_trips_through_the_node_proxy_parser() {
    let mut objects = mesh().with_policies(json!([{
        "kind": "PeerAuthentication",
        "metadata": { "name": "default", "namespace": "istio-system" },
        "spec": { "mtls": { "mode": "STRICT" } },
    }]));
    let status = objects.pod_mut("web", "b").status.as_mut().expect("a status");
    status.conditions = None;
    let mut waypoint = waypoint_objects(Some("all"));
    label_namespace(&mut waypoint, USE_WAYPOINT_LABEL, "wp");
    objects.namespaces.extend(waypoint.namespaces);
    objects.pods.extend(waypoint.pods);
    objects.services.extend(waypoint.services);
    objects.gateways.extend(waypoint.gateways);
    let state = objects.state();
    let text = serde_json::to_string_pretty(&state).expect("a state serializes");
    let snapshot = ambit_node::state::source::parse(Path::new("mesh-state.json"), &text, 1);
    let snapshot = snapshot.unwrap_or_else(|error| panic!("{error}\n{text}"));
    assert!(snapshot.unresolved().is_empty(), "{:?}", snapshot.unresolved());
    let back: StateFile = serde_json::from_str(&text).expect("the state parses back");
    assert_eq!(back, state);
}

#[test]
fn a_service_ports_protocol_comes_from_app_protocol_then_its_name() {
    let cases = [
        (None, Some("http"), AppProtocol::Http11),
        (None, Some("http-web"), AppProtocol::Http11),
        (None, Some("grpc"), AppProtocol::Grpc),
        (None, Some("http2-api"), AppProtocol::Http2),
        (None, Some("tcp-db"), AppProtocol::Tcp),
        (None, Some("https"), AppProtocol::Tls),
        (None, Some("web"), AppProtocol::Unknown),
        (None, None, AppProtocol::Unknown),
        (Some("kubernetes.io/h2c"), Some("tcp"), AppProtocol::Http2),
        (Some("GRPC"), None, AppProtocol::Grpc),
        (Some("mysql"), Some("http"), AppProtocol::Http11),
    ];
    for (declared, name, expected) in cases {
        let port = core::ServicePort {
            app_protocol: declared.map(str::to_string),
            name: name.map(str::to_string),
            port: 80,
            ..Default::default()
        };
        assert_eq!(app_protocol(&port), expected, "{declared:?} {name:?}");
    }
}

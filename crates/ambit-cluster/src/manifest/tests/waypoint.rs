//! Tests of the Gateway API kinds in manifests and of the waypoints planned for `istio-waypoint` Gateways.

use std::collections::BTreeMap;

use ambit_config::Object;
use ambit_config::gateway::Gateway;

use super::super::document::{GATEWAY_API, GATEWAY_API_BETA};
use super::super::waypoint::{self, GATEWAY_NAME_LABEL, MANAGED_LABEL, MESH_CONTROLLER};
use super::*;
use crate::model::{ClusterPlan, Ipv4Cidr, ServicePlan};

/// Namespace `web`, document 2 of [`with_cluster`] texts.
const WEB: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n";

/// A Gateway `namespace/name` of class `class`, with `extra` metadata lines (indented by two) and one HBONE
/// listener.
fn gateway(namespace: &str, name: &str, class: &str, extra: &str) -> String {
    let extra: String = extra.lines().map(|line| format!("  {line}\n")).collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: \
         {namespace}\n{extra}spec:\n  gatewayClassName: {class}\n  listeners:\n  - name: mesh\n    port: 15008\n    \
         protocol: HBONE\n"
    )
}

fn waypoint(name: &str, extra: &str) -> String {
    gateway("web", name, "istio-waypoint", extra)
}

/// An HTTPRoute `web/name` of apiVersion `version` with the flow-style `spec`.
fn http_route(version: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/{version}\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: \
         web\nspec: {spec}\n"
    )
}

const HTTP_SPEC: &str = "{parentRefs: [{group: '', kind: Service, name: reviews, port: 9080}], rules: [{backendRefs: \
                         [{name: reviews-v1, port: 9080}]}]}";

fn grpc_route(version: &str, name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/{version}\nkind: GRPCRoute\nmetadata:\n  name: {name}\n  namespace: \
         web\nspec: {{parentRefs: [{{group: '', kind: Service, name: echo, port: 7070}}], rules: [{{backendRefs: \
         [{{name: echo, port: 7070}}]}}]}}\n"
    )
}

/// The Cluster document, Namespace `web` (enrolled in ambient), then `documents` from document 3 on.
fn manifests(documents: &[String]) -> String {
    let web = format!("{WEB}  labels:\n    istio.io/dataplane-mode: ambient\n");
    with_cluster(&[web].iter().chain(documents).cloned().collect::<Vec<_>>().join("---\n"))
}

fn plan_of(documents: &[String]) -> ClusterPlan {
    load_ok(&manifests(documents)).plan
}

/// The pods of the plan that run a waypoint for `gateway`.
fn waypoint_pods<'a>(plan: &'a ClusterPlan, gateway: &str) -> Vec<&'a PodPlan> {
    let selects = |pod: &&PodPlan| pod.labels.get(GATEWAY_NAME_LABEL).map(String::as_str) == Some(gateway);
    plan.pods.iter().filter(selects).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn the_loader_accepts_the_gateway_api_versions_the_config_store_accepts() {
    use ambit_config::Kind;
    assert_eq!(GATEWAY_API_BETA, Kind::Gateway.api_versions());
    assert_eq!(GATEWAY_API_BETA, Kind::HttpRoute.api_versions());
    assert_eq!(GATEWAY_API, Kind::GrpcRoute.api_versions());
}

#[test]
fn a_waypoint_gateway_gets_a_service_account_pod_and_service() {
    let app = pod("app", "").replace("metadata:\n", "metadata:\n  namespace: web\n");
    let plan = plan_of(&[waypoint("waypoint", ""), app]);
    let pods = waypoint_pods(&plan, "waypoint");
    let [pod] = pods[..] else {
        panic!("expected one waypoint pod, found {pods:?}")
    };
    // Names: `<gateway>-<5 characters of the generated-name alphabet>`, stable for a cluster, namespace and name.
    let suffix = pod.name.strip_prefix("waypoint-").unwrap_or_default();
    let alphabet = |c: char| "bcdfghjklmnpqrstvwxz2456789".contains(c);
    assert!(suffix.len() == 5 && suffix.chars().all(alphabet), "{}", pod.name);
    assert_eq!(plan_of(&[waypoint("waypoint", "")]).pods[0].name, pod.name);
    let renamed = load_ok(&manifests(&[waypoint("waypoint", "")]).replace("name: test", "name: other"));
    assert_ne!(
        renamed.plan.pods[0].name, pod.name,
        "the cluster's name is part of the hash"
    );
    // The pod, as istiod's gateway controller renders it.
    let expected_labels = labels(&[
        (GATEWAY_NAME_LABEL, "waypoint"),
        (MANAGED_LABEL, MESH_CONTROLLER),
        ("istio.io/dataplane-mode", "none"),
    ]);
    assert_eq!(pod.namespace, "web");
    assert_eq!(pod.labels, expected_labels);
    assert!(pod.annotations.is_empty());
    assert_eq!(pod.owner.as_deref(), Some("waypoint"));
    assert_eq!(pod.service_account, "waypoint");
    assert_eq!(pod.restart_policy, RestartPolicy::Always);
    let [container] = &pod.containers[..] else {
        panic!("expected one container: {:?}", pod.containers)
    };
    assert_eq!(container.name, "waypoint");
    let argv = ["ambit", "waypoint", "--gateway", "waypoint"];
    assert_eq!(container.argv, argv);
    let ports: Vec<(Option<&str>, u16, Protocol)> = (container.ports.iter())
        .map(|port| (port.name.as_deref(), port.port, port.protocol))
        .collect();
    let expected_ports = [
        (Some("mesh"), 15008, Protocol::Tcp),
        (Some("metrics"), 15020, Protocol::Tcp),
        (Some("status-port"), 15021, Protocol::Tcp),
    ];
    assert_eq!(ports, expected_ports);
    let probe = Probe {
        action: ProbeAction::Http {
            port: 15021,
            path: "/healthz/ready".into(),
        },
        initial_delay_seconds: 0,
        period_seconds: 1,
        timeout_seconds: 1,
        failure_threshold: 3,
        success_threshold: 1,
    };
    assert_eq!(container.readiness, Some(probe));
    // The downward-API environment every container gets.
    assert_eq!(env_of(pod, "POD_NAME"), Some(pod.name.as_str()));
    assert_eq!(env_of(pod, "POD_NAMESPACE"), Some("web"));
    assert_eq!(env_of(pod, "POD_SERVICE_ACCOUNT"), Some("waypoint"));
    assert_eq!(env_of(pod, "NODE_NAME"), Some(pod.node.as_str()));
    assert_eq!(env_of(pod, "POD_IP"), Some(pod.ip.to_string().as_str()));
    // Never captured, though its namespace is enrolled; the app beside it is.
    let enrolled = crate::mesh::enrolled(&plan);
    assert!(!enrolled.contains(&("web".to_string(), pod.name.clone())));
    assert!(enrolled.contains(&("web".to_string(), "app".to_string())));
    // The ServiceAccount and the Service.
    assert!(
        plan.service_accounts
            .iter()
            .any(|sa| (sa.namespace.as_str(), sa.name.as_str()) == ("web", "waypoint"))
    );
    let service = plan
        .services
        .iter()
        .find(|s| (s.namespace.as_str(), s.name.as_str()) == ("web", "waypoint"));
    let service = service.unwrap_or_else(|| panic!("no Service web/waypoint in {:?}", plan.services));
    assert_eq!(service.selector, labels(&[(GATEWAY_NAME_LABEL, "waypoint")]));
    assert_eq!(
        service.labels,
        labels(&[(GATEWAY_NAME_LABEL, "waypoint"), (MANAGED_LABEL, MESH_CONTROLLER)])
    );
    let ports: Vec<(Option<&str>, u16, Protocol, TargetPort)> = (service.ports.iter())
        .map(|port| (port.name.as_deref(), port.port, port.protocol, port.target.clone()))
        .collect();
    assert_eq!(ports, [(Some("mesh"), 15008, Protocol::Tcp, TargetPort::Number(15008))]);
    assert!(service.cluster_ip.is_some_and(|ip| plan.service_cidr.contains(ip)));
    assert!(pod.matches(&service.selector));
}

#[test]
fn only_the_istio_waypoint_class_gets_a_waypoint() {
    let cases = [
        // (gatewayClassName, waypoint pods)
        ("istio-waypoint", 1),
        ("istio", 0),
        ("istio-east-west", 0),
        ("Istio-Waypoint", 0),
    ];
    for (class, want) in cases {
        let plan = plan_of(&[gateway("web", "gw", class, "")]);
        assert_eq!(waypoint_pods(&plan, "gw").len(), want, "{class}");
        assert_eq!(plan.services.len(), want, "{class}");
        assert_eq!(
            plan.gateway_api.gateways.len(),
            1,
            "{class}: the Gateway itself is kept"
        );
        let account = plan.service_accounts.iter().any(|sa| sa.name == "gw");
        assert_eq!(account, want == 1, "{class}");
    }
}

#[test]
fn waypoint_pods_are_placed_like_other_pods_or_pinned_by_annotation() {
    let pinned = |node: &str| format!("annotations:\n  ambit.dev/node: {node}");
    /// (case, documents after the namespace, (gateway, node) expected)
    type Case<'a> = (&'a str, Vec<String>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        ("alone: the first node", vec![waypoint("a", "")], vec![("a", "node-1")]),
        ("pinned", vec![waypoint("a", &pinned("node-2"))], vec![("a", "node-2")]),
        (
            "spread: the second goes where fewer pods run",
            vec![waypoint("a", ""), waypoint("b", "")],
            vec![("a", "node-1"), ("b", "node-2")],
        ),
        (
            "after a bare pod on node-1",
            vec![
                pod("app", "").replace("spec:\n", "spec:\n  nodeName: node-1\n"),
                waypoint("a", ""),
            ],
            vec![("a", "node-2")],
        ),
        (
            "both pinned to node-1",
            vec![waypoint("a", &pinned("node-1")), waypoint("b", &pinned("node-1"))],
            vec![("a", "node-1"), ("b", "node-1")],
        ),
    ];
    for (case, documents, want) in cases {
        let plan = plan_of(&documents);
        for (gateway, node) in want {
            let pods = waypoint_pods(&plan, gateway);
            let nodes: Vec<&str> = pods.iter().map(|pod| pod.node.as_str()).collect();
            assert_eq!(nodes, [node], "{case}: {gateway}");
        }
    }
}

#[test]
fn a_waypoint_pod_is_at_its_gateway_position() {
    let plan = plan_of(&[pod("first", ""), waypoint("waypoint", ""), pod("last", "")]);
    let names: Vec<&str> = plan.pods.iter().map(|pod| pod.name.as_str()).collect();
    let [first, waypoint, last] = names[..] else {
        panic!("{names:?}")
    };
    assert_eq!((first, last), ("first", "last"));
    assert!(waypoint.starts_with("waypoint-"), "{names:?}");
}

#[test]
fn gateway_api_objects_load_with_their_namespace() {
    let documents = [
        waypoint("waypoint", ""),
        http_route("v1beta1", "reviews", HTTP_SPEC),
        grpc_route("v1", "echo"),
        // No namespace: `default`.
        gateway("web", "plain", "istio", "").replace("  namespace: web\n", ""),
    ];
    let plan = plan_of(&documents);
    let keys = |metas: Vec<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| -> Vec<String> {
        let key = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or("?"),
                meta.name.as_deref().unwrap_or("?")
            )
        };
        metas.into_iter().map(key).collect()
    };
    let api = &plan.gateway_api;
    assert_eq!(
        keys(api.gateways.iter().map(|g| &g.metadata).collect()),
        ["web/waypoint", "default/plain"]
    );
    assert_eq!(
        keys(api.http_routes.iter().map(|r| &r.metadata).collect()),
        ["web/reviews"]
    );
    assert_eq!(
        keys(api.grpc_routes.iter().map(|r| &r.metadata).collect()),
        ["web/echo"]
    );
    assert_eq!(api.http_routes[0].spec.rules.len(), 1);
}

#[test]
fn a_plan_written_before_the_gateway_api_loads() {
    let plan = plan_of(&[pod("app", "")]);
    let mut json = serde_json::to_value(&plan).unwrap_or_default();
    let removed = json.as_object_mut().and_then(|map| map.remove("gateway_api"));
    assert!(removed.is_some(), "the plan serializes the field: {json}");
    let old: ClusterPlan = serde_json::from_value(json).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(old, plan);
}

#[test]
fn bad_gateway_api_objects_and_waypoints() {
    let web = |document: String| manifests(&[document]);
    let pod_name = plan_of(&[waypoint("waypoint", "")]).pods[0].name.clone();
    let route_twice = http_route("v1", "reviews", HTTP_SPEC);
    check_cases(vec![
        case(
            "Gateway without listeners",
            web(waypoint("waypoint", "").replace(
                "  listeners:\n  - name: mesh\n    port: 15008\n    protocol: HBONE\n",
                "",
            )),
            3,
            "spec.listeners",
            "at least one listener is required",
        ),
        case(
            "Gateway listener port out of range",
            web(waypoint("waypoint", "").replace("15008", "70000")),
            3,
            "spec.listeners[0].port",
            "70000",
        ),
        case(
            "Gateway unknown spec field",
            web(waypoint("waypoint", "").replace("gatewayClassName", "gatewayClass")),
            3,
            "spec.gatewayClass",
            "unknown field `gatewayClass`",
        ),
        case(
            "Gateway without a class",
            web(waypoint("waypoint", "").replace("  gatewayClassName: istio-waypoint\n", "")),
            3,
            "spec.gatewayClassName",
            "required",
        ),
        case(
            "HTTPRoute backend port out of range",
            web(http_route(
                "v1",
                "reviews",
                &HTTP_SPEC.replace("reviews-v1, port: 9080", "v1, port: 70000"),
            )),
            3,
            "spec.rules[0].backendRefs[0].port",
            "70000 is out of range",
        ),
        case(
            "HTTPRoute path not starting with /",
            web(http_route(
                "v1",
                "reviews",
                "{parentRefs: [{group: '', kind: Service, name: web}], rules: [{matches: [{path: {type: PathPrefix, \
                 value: api}}]}]}",
            )),
            3,
            "spec.rules[0].matches[0].path.value",
            "must start with '/'",
        ),
        case(
            "GRPCRoute is v1 only",
            web(grpc_route("v1beta1", "echo")),
            3,
            "apiVersion",
            r#"GRPCRoute is apiVersion "gateway.networking.k8s.io/v1", not "gateway.networking.k8s.io/v1beta1""#,
        ),
        case(
            "Gateway in a List: the item's path",
            web(format!(
                "apiVersion: v1\nkind: List\nitems:\n- {}",
                waypoint("waypoint", "").replace("15008", "0").replace('\n', "\n  ")
            )),
            3,
            "items[0].spec.listeners[0].port",
            "out of range",
        ),
        case(
            "undeclared namespace",
            with_cluster(&gateway("shop", "waypoint", "istio-waypoint", "")),
            2,
            "metadata.namespace",
            r#"namespace "shop" is not defined"#,
        ),
        case(
            "undeclared namespace of an invalid route",
            with_cluster(&http_route("v1", "reviews", HTTP_SPEC).replace("9080}]}]", "0}]}]")),
            2,
            "metadata.namespace",
            r#"namespace "web" is not defined"#,
        ),
        case(
            "duplicate HTTPRoute",
            web(format!("{route_twice}---\n{route_twice}")),
            4,
            "metadata.name",
            "duplicate HTTPRoute web/reviews; first defined in test.yaml document 3",
        ),
        case(
            "bad label key, once",
            web(waypoint("waypoint", "labels:\n  'bad key': x")),
            3,
            r#"metadata.labels["bad key"]"#,
            "",
        ),
        case(
            "waypoint name not a Service name",
            web(waypoint("1waypoint", "")),
            3,
            "metadata.name",
            r#"a waypoint's name is its Service's: "1waypoint""#,
        ),
        case(
            "waypoint pinned to an unknown node",
            web(waypoint("waypoint", "annotations:\n  ambit.dev/node: node-9")),
            3,
            r#"metadata.annotations["ambit.dev/node"]"#,
            r#"unknown node "node-9"; nodes are: node-1, node-2"#,
        ),
        case(
            "a ServiceAccount named like the waypoint",
            web(format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: waypoint\n  namespace: web\n---\n{}",
                waypoint("waypoint", "")
            )),
            4,
            "metadata.name",
            "its waypoint needs ServiceAccount web/waypoint, which is already defined in test.yaml document 3",
        ),
        case(
            "a Service named like the waypoint, after it",
            web(format!(
                "{}---\n{}",
                waypoint("waypoint", ""),
                service("waypoint", "ports:\n- port: 80\n")
                    .replace("name: waypoint", "name: waypoint\n  namespace: web")
            )),
            3,
            "metadata.name",
            "its waypoint needs Service web/waypoint, which is already defined in test.yaml document 4",
        ),
        case(
            "a Deployment named like the waypoint",
            web(format!(
                "{}---\n{}",
                waypoint("waypoint", ""),
                deployment(&format!("selector:\n  matchLabels: {{app: api}}\n{TEMPLATE}"))
                    .replace("name: api\nspec", "name: waypoint\n  namespace: web\nspec")
            )),
            3,
            "metadata.name",
            "its waypoint needs Deployment web/waypoint, which is already defined in test.yaml document 4",
        ),
        case(
            "a Pod named like the waypoint's",
            web(format!(
                "{}---\n{}",
                pod(&pod_name, "").replace("metadata:\n", "metadata:\n  namespace: web\n"),
                waypoint("waypoint", "")
            )),
            4,
            "metadata.name",
            "its waypoint needs Pod web/",
        ),
    ]);
}

#[test]
fn an_invalid_gateway_reports_each_problem_once() {
    let text = manifests(&[waypoint("waypoint", "labels:\n  'bad key': x")]);
    let found = errors(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].object.as_deref(), Some("Gateway web/waypoint"));
}

// === waypoints applied to a running cluster ===

/// The objects of an `ambit apply` text, as the config store holds them.
fn applied(text: &str) -> Vec<Object> {
    ambit_config::parse("applied.yaml", text).unwrap_or_else(|problems| panic!("{problems:?}\n--- in:\n{text}"))
}

/// The Gateway of an `ambit apply` text.
fn applied_gateway(text: &str) -> Gateway {
    match &applied(text)[..] {
        [Object::Gateway(gateway)] => gateway.as_ref().clone(),
        other => panic!("expected one Gateway: {other:?}"),
    }
}

/// `text` with its object moved to namespace `web`.
fn in_web(text: String) -> String {
    text.replacen("metadata:\n", "metadata:\n  namespace: web\n", 1)
}

#[test]
fn a_waypoint_applied_later_is_planned_as_the_loader_plans_one_of_the_manifests() {
    let pinned = |node: &str| format!("annotations:\n  ambit.dev/node: {node}");
    let app = in_web(pod("app", ""));
    let app_on_1 = app.replace("spec:\n", "spec:\n  nodeName: node-1\n");
    let api = in_web(service("api", "selector: {app: api}\nports:\n- port: 80\n"));
    let in_default = waypoint("waypoint", "").replace("  namespace: web\n", "");
    // (case, documents of the running cluster, the applied Gateway)
    let cases: Vec<(&str, Vec<String>, String)> = vec![
        ("an empty cluster", vec![], waypoint("waypoint", "")),
        (
            "the node with fewer pods",
            vec![app_on_1.clone()],
            waypoint("waypoint", ""),
        ),
        (
            "pinned beside a pod",
            vec![app_on_1.clone()],
            waypoint("waypoint", &pinned("node-1")),
        ),
        ("the next ClusterIP", vec![app, api], waypoint("waypoint", "")),
        ("no namespace: default", vec![app_on_1], in_default),
    ];
    for (case, documents, gateway_text) in cases {
        let before = plan_of(&documents);
        let after = plan_of(&[documents, vec![gateway_text.clone()]].concat());
        let objects = applied(&gateway_text);
        let gateway = applied_gateway(&gateway_text);
        assert_eq!(waypoint::unplanned(&before, &objects), [&gateway], "{case}");
        assert!(waypoint::unplanned(&after, &objects).is_empty(), "{case}");
        let added = waypoint::plan_added(&before, &gateway).unwrap_or_else(|error| panic!("{case}: {error}"));
        // What the loader plans for the same Gateway in the manifests (apart from the Gateway itself).
        let expected = ClusterPlan {
            gateway_api: before.gateway_api.clone(),
            ..after
        };
        assert_eq!(waypoint::with_added(before, added), expected, "{case}");
    }
}

#[test]
fn a_waypoint_applied_later_that_cannot_run_is_refused() {
    let taken = |document: String| vec![in_web(document)];
    let pod_name = plan_of(&[waypoint("waypoint", "")]).pods[0].name.clone();
    let account = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: waypoint\n".to_string();
    let deployment = deployment(&format!("selector:\n  matchLabels: {{app: api}}\n{TEMPLATE}"));
    let pod_taken = format!("metadata.name: its waypoint needs Pod web/{pod_name}, which the cluster already has");
    // (case, documents of the running cluster, the applied Gateway, the start of the error)
    let cases: Vec<(&str, Vec<String>, String, &str)> = vec![
        (
            "another class",
            vec![],
            gateway("web", "waypoint", "istio", ""),
            r#"spec.gatewayClassName: "istio" is not "istio-waypoint""#,
        ),
        (
            "a name that cannot name a Service",
            vec![],
            waypoint("1waypoint", ""),
            r#"metadata.name: a waypoint's name is its Service's: "1waypoint" "#,
        ),
        (
            "a namespace the cluster lacks",
            vec![],
            gateway("shop", "waypoint", "istio-waypoint", ""),
            r#"metadata.namespace: namespace "shop" is not one of the cluster's (namespaces are made by `cluster up`)"#,
        ),
        (
            "a node the cluster lacks",
            vec![],
            waypoint("waypoint", "annotations:\n  ambit.dev/node: node-9"),
            r#"metadata.annotations["ambit.dev/node"]: unknown node "node-9"; nodes are: node-1, node-2"#,
        ),
        (
            "its ServiceAccount taken",
            taken(account),
            waypoint("waypoint", ""),
            "metadata.name: its waypoint needs ServiceAccount web/waypoint, which the cluster already has",
        ),
        (
            "its Deployment taken",
            taken(deployment.replace("name: api\nspec", "name: waypoint\nspec")),
            waypoint("waypoint", ""),
            "metadata.name: its waypoint needs Deployment web/waypoint, which the cluster already has",
        ),
        (
            "its pod's name taken",
            taken(pod(&pod_name, "")),
            waypoint("waypoint", ""),
            &pod_taken,
        ),
        (
            "its Service taken, with its ServiceAccount",
            vec![
                in_web(service("waypoint", "ports:\n- port: 80\n")),
                in_web("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: waypoint\n".to_string()),
            ],
            waypoint("waypoint", ""),
            "metadata.name: its waypoint needs ServiceAccount web/waypoint and Service web/waypoint, which the \
             cluster already has",
        ),
    ];
    for (case, documents, gateway_text, expected) in cases {
        let plan = plan_of(&documents);
        let gateway = applied_gateway(&gateway_text);
        match waypoint::plan_added(&plan, &gateway) {
            Ok(added) => panic!("{case}: planned {added:?}"),
            Err(error) => assert!(error.starts_with(expected), "{case}: {error}\n  expected: {expected}"),
        }
    }
}

/// The addresses a running cluster holds: pods on node-1 and services at these offsets of node-1's pod range and
/// serviceCIDR, the DNS server at an offset of serviceCIDR, which has this prefix length.
struct Held {
    pods: Vec<u64>,
    services: Vec<u64>,
    dns: u64,
    prefix: u8,
}

/// Where the waypoint goes: (node, pod IP, ClusterIP), or the error.
type Outcome = Result<(&'static str, Ipv4Addr, Ipv4Addr), String>;

#[test]
fn a_waypoint_applied_later_takes_the_first_free_addresses() {
    let base = plan_of(&[pod("app", "").replace("spec:\n", "spec:\n  nodeName: node-1\n")]);
    let node_1 = base.nodes[0].pod_cidr;
    let cidr = base.service_cidr;
    let at = |n: u64, cidr: Ipv4Cidr| cidr.nth(n).unwrap_or_else(|| panic!("no address {n} in {cidr}"));
    // A pod of `base` renamed and moved to offset `n` of node-1's range.
    let pod_at = |n: u64| PodPlan {
        name: format!("pod-{n}"),
        ip: at(n, node_1),
        ..base.pods[0].clone()
    };
    let service_at = |n: u64| ServicePlan {
        namespace: "default".into(),
        name: format!("service-{n}"),
        cluster_ip: Some(at(n, cidr)),
        selector: BTreeMap::new(),
        ports: Vec::new(),
        labels: BTreeMap::new(),
    };
    let held = |pods: Vec<u64>, services: Vec<u64>, dns: u64| Held {
        pods,
        services,
        dns,
        prefix: cidr.prefix(),
    };
    let pinned = waypoint("waypoint", "annotations:\n  ambit.dev/node: node-1");
    let spread = waypoint("waypoint", "");
    let exhausted = format!(
        "no address left in serviceCIDR {}/28 (allocation starts at its 16th)",
        cidr.network()
    );
    // (case, the addresses held, the applied Gateway, the outcome)
    let cases: Vec<(&str, Held, &String, Outcome)> = vec![
        (
            "a gap in the pod range is filled",
            held(vec![2, 4], vec![], 10),
            &pinned,
            Ok(("node-1", at(3, node_1), at(16, cidr))),
        ),
        (
            "ClusterIPs held and the DNS server's are skipped",
            held(vec![2], vec![16, 18], 17),
            &pinned,
            Ok(("node-1", at(3, node_1), at(19, cidr))),
        ),
        (
            "a full node refuses a pinned waypoint",
            held((2..252).collect(), vec![], 10),
            &pinned,
            Err("node node-1 is full: at most 250 pods per node".into()),
        ),
        (
            "an unpinned waypoint goes to the node with fewer pods",
            held((2..252).collect(), vec![], 10),
            &spread,
            Ok(("node-2", at(2, base.nodes[1].pod_cidr), at(16, cidr))),
        ),
        (
            "no ClusterIP left",
            Held {
                prefix: 28,
                ..held(vec![2], vec![], 10)
            },
            &pinned,
            Err(exhausted),
        ),
    ];
    for (case, held, gateway_text, want) in cases {
        let service_cidr = Ipv4Cidr::new(cidr.network(), held.prefix).unwrap_or_else(|e| panic!("{e}"));
        let plan = ClusterPlan {
            pods: held.pods.into_iter().map(pod_at).collect(),
            services: held.services.into_iter().map(service_at).collect(),
            dns_ip: at(held.dns, cidr),
            service_cidr,
            ..base.clone()
        };
        let outcome = waypoint::plan_added(&plan, &applied_gateway(gateway_text));
        let got = outcome.map(|added| (added.pod.node.clone(), added.pod.ip, added.service.cluster_ip));
        let want = want.map(|(node, ip, cluster_ip)| (node.to_string(), ip, Some(cluster_ip)));
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn a_waypoint_pod_whose_gateway_was_deleted_is_orphaned() {
    let gateway_text = waypoint("waypoint", "");
    let plan = plan_of(&[gateway_text.clone(), pod("app", "")]);
    let pod = waypoint_pods(&plan, "waypoint")[0].name.clone();
    let other_class = gateway("web", "waypoint", "istio", "");
    let other_namespace = gateway("default", "waypoint", "istio-waypoint", "");
    type Pods = Vec<(String, String)>;
    // (case, the config store's objects, the orphaned pods as (namespace, name))
    let cases: Vec<(&str, String, Pods)> = vec![
        ("the Gateway is there", gateway_text, vec![]),
        ("no Gateway", String::new(), vec![("web".into(), pod.clone())]),
        (
            "a Gateway of another class",
            other_class,
            vec![("web".into(), pod.clone())],
        ),
        (
            "a waypoint Gateway of another namespace",
            other_namespace,
            vec![("web".into(), pod)],
        ),
    ];
    for (case, store, want) in cases {
        assert_eq!(waypoint::orphaned(&plan, &applied(&store)), want, "{case}");
    }
}

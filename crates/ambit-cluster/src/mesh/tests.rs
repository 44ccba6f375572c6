//! Tests of the mesh state: enrollment, workloads, services and policies, from manifests through the loader.

use std::path::Path;

use ambit_node::state::model::{PortMapping, ServiceKey};
use ambit_policy::STATIC_STRICT_POLICY_NAME;

use super::*;
use crate::manifest::{Source, load};

const CLUSTER: &str = "\
apiVersion: ambit.dev/v1alpha1
kind: Cluster
metadata:
  name: test
spec:
  nodes:
  - name: node-1
";

/// Namespace `web` (enrolled), then pods: `web/a`, `web/b` (opted out), `default/c` (enrolled by its own label),
/// `default/d`; a service `web` selecting `app: web` with a named and a numbered target port; a headless service.
const MESH: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: web
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: web
  labels:
    app: web
    version: v2
spec:
  containers:
  - name: main
    command: [sleep, infinity]
    ports:
    - name: http
      containerPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: web
  labels:
    app: other
    istio.io/dataplane-mode: none
spec:
  containers:
  - name: main
    command: [sleep, infinity]
---
apiVersion: v1
kind: Pod
metadata:
  name: c
  labels:
    app: web
    istio.io/dataplane-mode: ambient
spec:
  containers:
  - name: main
    command: [sleep, infinity]
---
apiVersion: v1
kind: Pod
metadata:
  name: d
spec:
  containers:
  - name: main
    command: [sleep, infinity]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
  - name: metrics
    port: 81
    targetPort: 9090
---
apiVersion: v1
kind: Service
metadata:
  name: headless
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - port: 80
";

fn plan(extra: &str) -> ClusterPlan {
    let text = format!("{CLUSTER}---\n{MESH}{extra}");
    let sources = [Source {
        name: "mesh.yaml".to_string(),
        text,
    }];
    load(&sources).unwrap_or_else(|error| panic!("{error}")).plan
}

fn key(namespace: &str, name: &str) -> PodKey {
    (namespace.to_string(), name.to_string())
}

fn keys(names: &[(&str, &str)]) -> BTreeSet<PodKey> {
    names.iter().map(|(namespace, name)| key(namespace, name)).collect()
}

fn workload<'a>(state: &'a StateFile, namespace: &str, name: &str) -> &'a Workload {
    let found = state
        .workloads
        .iter()
        .find(|w| w.namespace.as_str() == namespace && w.name == name);
    found.unwrap_or_else(|| panic!("no workload {namespace}/{name}"))
}

fn policy_names(workload: &Workload) -> Vec<String> {
    workload
        .authorization_policies
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn state_of(plan: &ClusterPlan) -> StateFile {
    mesh_state(plan, &BTreeSet::new(), &enrolled(plan))
}

#[test]
fn enrollment_by_namespace_or_pod_label() {
    let plan = plan("");
    assert_eq!(enrolled(&plan), keys(&[("web", "a"), ("default", "c")]));
}

#[test]
fn enrolled_pods_are_hbone_the_others_none() {
    let plan = plan("");
    let state = state_of(&plan);
    let cases = [("web", "a", TunnelProtocol::Hbone), ("web", "b", TunnelProtocol::None)];
    let cases = cases.into_iter().chain([
        ("default", "c", TunnelProtocol::Hbone),
        ("default", "d", TunnelProtocol::None),
    ]);
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
    let plan = plan("");
    let state = state_of(&plan);
    let a = workload(&state, "web", "a");
    assert_eq!(a.uid.as_str(), "Kubernetes//Pod/web/a");
    assert_eq!(a.addresses, vec![std::net::IpAddr::from(plan.pods[0].ip)]);
    assert_eq!(a.service_account.as_str(), "default");
    assert_eq!(a.node, "node-1");
    assert_eq!(
        (a.canonical_name.as_str(), a.canonical_revision.as_str()),
        ("web", "v2")
    );
    assert_eq!((a.workload_type, a.workload_name.as_str()), (WorkloadType::Pod, "a"));
    let d = workload(&state, "default", "d");
    assert_eq!(
        (d.canonical_name.as_str(), d.canonical_revision.as_str()),
        ("d", "latest")
    );
}

#[test]
fn service_ports_map_to_the_pod_and_named_targets_are_zero() {
    let plan = plan("");
    let state = state_of(&plan);
    let web: ServiceKey = "web/web.web.svc.cluster.local".parse().unwrap();
    let mappings = |service_port, target_port| PortMapping {
        service_port,
        target_port,
    };
    let a = workload(&state, "web", "a");
    assert_eq!(
        a.services.get(&web),
        Some(&vec![mappings(80, 8080), mappings(81, 9090)])
    );
    assert!(workload(&state, "web", "b").services.is_empty());
    let c = workload(&state, "default", "c");
    let headless: ServiceKey = "default/headless.default.svc.cluster.local".parse().unwrap();
    assert_eq!(c.services.keys().collect::<Vec<_>>(), [&headless]);
    let service = state.services.iter().find(|s| s.name == "web").unwrap();
    let targets: Vec<(u16, u16)> = service.ports.iter().map(|p| (p.service_port, p.target_port)).collect();
    assert_eq!(targets, [(80, 0), (81, 9090)]);
    assert_eq!(service.addresses.len(), 1);
    let headless = state.services.iter().find(|s| s.name == "headless").unwrap();
    assert!(headless.addresses.is_empty());
}

#[test]
fn health_follows_readiness() {
    let plan = plan("");
    let state = mesh_state(&plan, &keys(&[("web", "a")]), &enrolled(&plan));
    assert_eq!(workload(&state, "web", "a").status, WorkloadStatus::Healthy);
    assert_eq!(workload(&state, "web", "b").status, WorkloadStatus::Unhealthy);
}

#[test]
fn strict_peer_authentication_adds_the_static_strict_policy_to_its_namespace() {
    let strict = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\n  \
                  namespace: web\nspec:\n  mtls:\n    mode: STRICT\n";
    let state = state_of(&plan(strict));
    let reference = format!("istio-system/{STATIC_STRICT_POLICY_NAME}");
    assert_eq!(policy_names(workload(&state, "web", "a")), [reference.as_str()]);
    assert_eq!(policy_names(workload(&state, "web", "b")), [reference.as_str()]);
    assert!(policy_names(workload(&state, "default", "c")).is_empty());
    let names: Vec<&str> = state.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, [STATIC_STRICT_POLICY_NAME]);
}

#[test]
fn selector_policies_are_listed_on_the_selected_workloads_only() {
    let policies = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-web\n  \
                    namespace: web\nspec:\n  selector:\n    matchLabels:\n      app: web\n  rules:\n  - from:\n    \
                    - source:\n        namespaces: [web]\n---\napiVersion: security.istio.io/v1\nkind: \
                    AuthorizationPolicy\nmetadata:\n  name: deny-all\n  namespace: web\nspec:\n  action: DENY\n  \
                    rules:\n  - {}\n";
    let state = state_of(&plan(policies));
    assert_eq!(policy_names(workload(&state, "web", "a")), ["web/allow-web"]);
    assert!(policy_names(workload(&state, "web", "b")).is_empty());
    assert!(
        policy_names(workload(&state, "default", "c")).is_empty(),
        "same labels, other namespace"
    );
    let names: Vec<&str> = state.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["allow-web", "deny-all"]);
}

#[test]
fn the_state_round_trips_through_the_node_proxy_parser() {
    let strict = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  \
                  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n";
    let plan = plan(strict);
    let state = mesh_state(&plan, &keys(&[("web", "a"), ("default", "d")]), &enrolled(&plan));
    let text = serde_json::to_string_pretty(&state).unwrap();
    let snapshot = ambit_node::state::source::parse(Path::new("mesh-state.json"), &text, 1);
    let snapshot = snapshot.unwrap_or_else(|error| panic!("{error}\n{text}"));
    assert!(snapshot.unresolved().is_empty(), "{:?}", snapshot.unresolved());
    let back: StateFile = serde_json::from_str(&text).unwrap();
    assert_eq!(back, state);
}

//! Tests of the cluster objects and the config store seed, from manifests through the loader.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::manifest::{Source, load};
use crate::mesh;
use crate::model::PodPlan;
use crate::status::{ContainerState, ContainerStatus, Phase, PodStatus};

const CLUSTER: &str = "\
apiVersion: ambit.dev/v1alpha1
kind: Cluster
metadata:
  name: test
spec:
  nodes:
  - name: node-1
  - name: node-2
";

/// Namespace `web` (enrolled, labelled and annotated) with a ServiceAccount `reviews`; pods `web/a` (named TCP and
/// UDP ports, runs as `reviews`), `web/b` (opted out, with a redirection annotation of its own), `default/c`;
/// Deployments `web/api` (two replicas) and one whose long name cuts the template hash out of its pods' names;
/// services: `web/web` (named and numbered target ports, a UDP port), `default/headless`.
const OBJECTS: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: web
  labels:
    istio.io/dataplane-mode: ambient
    team: reviews
  annotations:
    owner: someone
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: reviews
  namespace: web
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: web
  labels:
    app: web
spec:
  nodeName: node-2
  serviceAccountName: reviews
  containers:
  - name: main
    command: [sleep, infinity]
    ports:
    - name: http
      containerPort: 8080
    - name: dns
      containerPort: 5353
      protocol: UDP
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: web
  labels:
    istio.io/dataplane-mode: none
  annotations:
    ambient.istio.io/redirection: enabled
    note: kept
spec:
  containers:
  - name: main
    command: [sleep, infinity]
---
apiVersion: v1
kind: Pod
metadata:
  name: c
spec:
  containers:
  - name: one
    command: [sleep, infinity]
  - name: two
    command: [sleep, infinity]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: main
        command: [sleep, infinity]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: a-deployment-name-long-enough-to-cut-the-hash-off
spec:
  selector:
    matchLabels: {app: long}
  template:
    metadata:
      labels: {app: long}
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
  labels:
    app: web
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
  - name: dns
    port: 53
    protocol: UDP
    targetPort: dns
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

const LONG_DEPLOYMENT: &str = "a-deployment-name-long-enough-to-cut-the-hash-off";

/// An AuthorizationPolicy without a namespace (so `default`), one in `web`, and two PeerAuthentications.
const POLICIES: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-reviews
spec:
  selector:
    matchLabels:
      app: web
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/web/sa/reviews]
    to:
    - operation:
        ports: ['8080']
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: web
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: web
spec:
  action: DENY
  rules:
  - {}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: mesh
  namespace: istio-system
  annotations:
    why: mesh-wide
spec:
  mtls:
    mode: PERMISSIVE
";

fn plan(extra: &str) -> ClusterPlan {
    let text = format!("{CLUSTER}---\n{extra}");
    let sources = [Source {
        name: "objects.yaml".to_string(),
        text,
    }];
    load(&sources).unwrap_or_else(|error| panic!("{error}")).plan
}

fn planned_pod<'a>(plan: &'a ClusterPlan, namespace: &str, name: &str) -> &'a PodPlan {
    plan.pod(namespace, name)
        .unwrap_or_else(|| panic!("no pod {namespace}/{name} in the plan"))
}

/// The pods of a Deployment, in the plan's order.
fn made_by<'a>(plan: &'a ClusterPlan, deployment: &str) -> Vec<&'a PodPlan> {
    let pods = plan.pods.iter();
    pods.filter(|pod| pod.owner.as_deref() == Some(deployment)).collect()
}

/// A status in which each listed pod has its containers running, ready or not.
fn status(pods: &[(&str, &str, bool)]) -> ClusterStatus {
    let pod = |(namespace, name, ready): &(&str, &str, bool)| PodStatus {
        namespace: namespace.to_string(),
        name: name.to_string(),
        phase: Phase::Running,
        ready: *ready,
        containers: vec![ContainerStatus {
            name: "main".into(),
            state: ContainerState::Running { pid: 1, started_at: 0 },
            ready: *ready,
            restarts: 0,
        }],
    };
    ClusterStatus {
        pods: pods.iter().map(pod).collect(),
        ..ClusterStatus::default()
    }
}

fn objects_of(plan: &ClusterPlan, status: Option<&ClusterStatus>) -> Value {
    cluster_objects(plan, status, &mesh::enrolled(plan))
}

fn items(list: &Value) -> &[Value] {
    assert_eq!((&list["apiVersion"], &list["kind"]), (&json!("v1"), &json!("List")));
    list["items"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The items of a kind.
fn of_kind<'a>(list: &'a Value, kind: &str) -> Vec<&'a Value> {
    items(list).iter().filter(|item| item["kind"] == kind).collect()
}

/// `namespace/name` of an object, or `name` for a cluster-scoped one.
fn key_of(item: &Value) -> String {
    let name = item["metadata"]["name"].as_str().unwrap_or_default();
    match item["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

fn keys_of(list: &Value, kind: &str) -> Vec<String> {
    of_kind(list, kind).into_iter().map(key_of).collect()
}

fn object<'a>(list: &'a Value, kind: &str, key: &str) -> &'a Value {
    let found = of_kind(list, kind).into_iter().find(|item| key_of(item) == key);
    found.unwrap_or_else(|| panic!("no {kind} {key} in {list:#}"))
}

fn ready_condition(pod: &Value) -> Option<&str> {
    let conditions = pod["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|condition| condition["type"] == "Ready")?;
    ready["status"].as_str()
}

#[test]
fn kinds_come_in_order_each_sorted_by_namespace_and_name() {
    let plan = plan(OBJECTS);
    let list = objects_of(&plan, None);
    let kinds: Vec<&str> = items(&list).iter().filter_map(|item| item["kind"].as_str()).collect();
    let mut grouped = kinds.clone();
    grouped.dedup();
    assert_eq!(grouped, ["Namespace", "ServiceAccount", "Pod", "Service"]);
    for kind in ["Namespace", "ServiceAccount", "Pod", "Service"] {
        let keys = keys_of(&list, kind);
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{kind}");
    }
    assert_eq!(keys_of(&list, "Service"), ["default/headless", "web/web"]);
    assert_eq!(of_kind(&list, "Pod").len(), plan.pods.len());
    // The same cluster always gives the same objects.
    assert_eq!(objects_of(&plan, None), list);
}

#[test]
fn namespaces_with_their_labels_and_annotations_are_active() {
    let plan = plan(OBJECTS);
    let list = objects_of(&plan, None);
    let names = keys_of(&list, "Namespace");
    assert_eq!(names, ["default", "istio-system", "kube-system", "web"]);
    let cases = [
        (
            "web",
            json!({"istio.io/dataplane-mode": "ambient", "team": "reviews", "kubernetes.io/metadata.name": "web"}),
            json!({"owner": "someone"}),
        ),
        (
            "default",
            json!({"kubernetes.io/metadata.name": "default"}),
            Value::Null,
        ),
    ];
    for (name, labels, annotations) in cases {
        let namespace = object(&list, "Namespace", name);
        assert_eq!(namespace["apiVersion"], "v1", "{name}");
        assert_eq!(namespace["metadata"]["labels"], labels, "{name}");
        assert_eq!(namespace["metadata"]["annotations"], annotations, "{name}");
        assert_eq!(namespace["status"]["phase"], "Active", "{name}");
    }
}

#[test]
fn service_accounts_are_each_namespaces_default_and_the_declared_and_used_ones() {
    let declared = plan(OBJECTS);
    // A plan that lists no account (the loader never makes one): the defaults and the pods' accounts still are.
    let mut undeclared = declared.clone();
    undeclared.service_accounts.clear();
    let mut unused = declared.clone();
    unused.pods.retain(|pod| pod.service_account == "default");
    let defaults = [
        "default/default",
        "istio-system/default",
        "kube-system/default",
        "web/default",
    ];
    let cases = [
        ("declared and used", &declared, &["web/reviews"][..]),
        ("used only", &undeclared, &["web/reviews"][..]),
        ("declared only", &unused, &["web/reviews"][..]),
    ];
    for (case, plan, extra) in cases {
        let list = objects_of(plan, None);
        let accounts = keys_of(&list, "ServiceAccount");
        let mut want: Vec<&str> = defaults.iter().chain(extra).copied().collect();
        want.sort();
        assert_eq!(accounts, want, "{case}");
        // Every pod runs as a listed account.
        for pod in of_kind(&list, "Pod") {
            let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
            let account = pod["spec"]["serviceAccountName"].as_str().unwrap_or_default();
            let key = format!("{namespace}/{account}");
            assert!(accounts.contains(&key), "{case}: {} runs as {key}", key_of(pod));
        }
    }
    let mut bare = undeclared;
    bare.pods.retain(|pod| pod.service_account == "default");
    assert_eq!(keys_of(&objects_of(&bare, None), "ServiceAccount"), defaults);
}

#[test]
fn the_ready_condition_is_the_supervisors_readiness() {
    let plan = plan(OBJECTS);
    let status = status(&[("web", "a", true), ("web", "b", false)]);
    let cases = [
        // (status, pod, Ready condition, phase)
        (Some(&status), "web/a", "True", "Running"),
        (Some(&status), "web/b", "False", "Running"),
        (Some(&status), "default/c", "False", "Pending"),
        (None, "web/a", "False", "Pending"),
    ];
    for (status, key, ready, phase) in cases {
        let list = objects_of(&plan, status);
        let pod = object(&list, "Pod", key);
        assert_eq!(
            ready_condition(pod),
            Some(ready),
            "{key} with status {}",
            status.is_some()
        );
        assert_eq!(pod["status"]["phase"], phase, "{key}");
    }
}

#[test]
fn pods_carry_addresses_node_and_service_account() {
    let plan = plan(OBJECTS);
    let list = objects_of(&plan, None);
    let cases = [("web", "a", "node-2", "reviews"), ("default", "c", "node-1", "default")];
    for (namespace, name, node, account) in cases {
        let planned = planned_pod(&plan, namespace, name);
        let pod = object(&list, "Pod", &format!("{namespace}/{name}"));
        let pod_ip = planned.ip.to_string();
        let host_ip = plan.node(node).map(|node| node.address.to_string()).unwrap_or_default();
        assert_eq!(pod["metadata"]["uid"], planned.uid.as_str(), "{name}");
        assert_eq!(pod["spec"]["nodeName"], node, "{name}");
        assert_eq!(pod["spec"]["serviceAccountName"], account, "{name}");
        assert_eq!(pod["status"]["podIP"], pod_ip.as_str(), "{name}");
        assert_eq!(pod["status"]["podIPs"], json!([{"ip": pod_ip}]), "{name}");
        assert_eq!(pod["status"]["hostIP"], host_ip.as_str(), "{name}");
        assert_eq!(pod["status"]["hostIPs"], json!([{"ip": host_ip}]), "{name}");
    }
}

#[test]
fn container_ports_keep_their_names_and_protocols() {
    let plan = plan(OBJECTS);
    let list = objects_of(&plan, None);
    let pod = object(&list, "Pod", "web/a");
    let want = json!([
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
    ]);
    assert_eq!(pod["spec"]["containers"][0]["ports"], want);
}

#[test]
fn a_deployments_pods_are_controlled_by_its_replica_set() {
    let plan = plan(OBJECTS);
    let list = objects_of(&plan, None);
    let api = made_by(&plan, "api");
    let long = made_by(&plan, LONG_DEPLOYMENT);
    assert_eq!((api.len(), long.len()), (2, 1));
    // The hash in the pod names, `api-<hash>-<suffix>`.
    let api_hash = api[0].name.split('-').nth(1).unwrap_or_default().to_string();
    assert_eq!(api_hash.len(), 10, "{}", api[0].name);
    let cases = [
        (&api[0], "api", Some(api_hash.clone())),
        (&api[1], "api", Some(api_hash)),
        (&long[0], LONG_DEPLOYMENT, None),
    ];
    let mut uids = BTreeMap::new();
    for (planned, deployment, hash) in cases {
        let key = format!("{}/{}", planned.namespace, planned.name);
        let pod = object(&list, "Pod", &key);
        let owners = pod["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(owners.len(), 1, "{key}: {owners:?}");
        let owner = &owners[0];
        let replica_set = owner["name"].as_str().unwrap_or_default();
        assert_eq!(
            (&owner["apiVersion"], &owner["kind"], &owner["controller"]),
            (&json!("apps/v1"), &json!("ReplicaSet"), &json!(true)),
            "{key}"
        );
        // istiod's rule: the workload is the ReplicaSet's name without its last `-segment`.
        let (workload, template_hash) = replica_set.rsplit_once('-').unwrap_or_default();
        assert_eq!(workload, deployment, "{key}");
        assert_eq!(pod["metadata"]["labels"]["pod-template-hash"], template_hash, "{key}");
        if let Some(hash) = hash {
            assert_eq!(template_hash, hash, "{key}");
        }
        let uid = owner["uid"].as_str().unwrap_or_default().to_string();
        assert!(!uid.is_empty() && uid != planned.uid, "{key}: {uid}");
        uids.entry(replica_set.to_string())
            .or_insert_with(BTreeSet::new)
            .insert(uid);
    }
    // One uid per ReplicaSet, different ReplicaSets different uids.
    assert_eq!(uids.len(), 2, "{uids:?}");
    assert!(uids.values().all(|uids| uids.len() == 1), "{uids:?}");
    let bare = object(&list, "Pod", "web/a");
    assert_eq!(bare["metadata"]["ownerReferences"], Value::Null);
    assert_eq!(bare["metadata"]["labels"], json!({"app": "web"}));
}

#[test]
fn enrolled_pods_are_annotated_as_redirected_and_only_they() {
    let plan = plan(OBJECTS);
    let list = objects_of(&plan, None);
    let api = made_by(&plan, "api");
    let api = format!("web/{}", api[0].name);
    let cases = [
        // (pod, annotations): `web` is enrolled by its namespace, `web/b` opts out and its own annotation is dropped.
        ("web/a", json!({"ambient.istio.io/redirection": "enabled"})),
        (api.as_str(), json!({"ambient.istio.io/redirection": "enabled"})),
        ("web/b", json!({"note": "kept"})),
        ("default/c", Value::Null),
    ];
    for (key, annotations) in cases {
        let pod = object(&list, "Pod", key);
        assert_eq!(pod["metadata"]["annotations"], annotations, "{key}");
    }
    // The enrolled set given is the one used.
    let none = cluster_objects(&plan, None, &BTreeSet::new());
    assert_eq!(object(&none, "Pod", "web/a")["metadata"]["annotations"], Value::Null);
}

#[test]
fn services_with_cluster_ips_headless_and_named_ports() {
    let plan = plan(OBJECTS);
    let list = objects_of(&plan, None);
    let web_ip = plan
        .services
        .iter()
        .find(|svc| svc.name == "web")
        .and_then(|svc| svc.cluster_ip);
    let web_ip = web_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let cases = [
        (
            "web/web",
            web_ip.as_str(),
            json!([
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                {"name": "metrics", "port": 81, "protocol": "TCP", "targetPort": 9090},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
            ]),
        ),
        (
            "default/headless",
            "None",
            json!([{"port": 80, "protocol": "TCP", "targetPort": 80}]),
        ),
    ];
    for (key, cluster_ip, ports) in cases {
        let service = object(&list, "Service", key);
        assert_eq!(service["spec"]["clusterIP"], cluster_ip, "{key}");
        assert_eq!(service["spec"]["clusterIPs"], json!([cluster_ip]), "{key}");
        assert_eq!(service["spec"]["ports"], ports, "{key}");
        assert_eq!(service["spec"]["selector"], json!({"app": "web"}), "{key}");
    }
    assert_eq!(
        object(&list, "Service", "web/web")["metadata"]["labels"],
        json!({"app": "web"})
    );
}

#[test]
fn the_config_store_seed_holds_the_policies_as_written() {
    let cases = [
        // (manifests, [(kind, namespace/name)] in order)
        ("", vec![]),
        (
            POLICIES,
            vec![
                ("AuthorizationPolicy", "default/allow-reviews"),
                ("AuthorizationPolicy", "web/deny-all"),
                ("PeerAuthentication", "web/strict"),
                ("PeerAuthentication", "istio-system/mesh"),
            ],
        ),
    ];
    for (manifests, want) in cases {
        let seed = config_store(&plan(&format!("{OBJECTS}---\n{manifests}")));
        let got: Vec<(&str, String)> = items(&seed)
            .iter()
            .map(|item| (item["kind"].as_str().unwrap_or_default(), key_of(item)))
            .collect();
        let want: Vec<(&str, String)> = want.into_iter().map(|(kind, key)| (kind, key.to_string())).collect();
        assert_eq!(got, want);
        for item in items(&seed) {
            assert_eq!(item["apiVersion"], ISTIO_SECURITY_API_VERSION, "{}", key_of(item));
        }
    }
    let seed = config_store(&plan(&format!("{OBJECTS}---\n{POLICIES}")));
    let allow = object(&seed, "AuthorizationPolicy", "default/allow-reviews");
    let spec = json!({
        "selector": {"matchLabels": {"app": "web"}},
        "action": "ALLOW",
        "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/web/sa/reviews"]}}],
            "to": [{"operation": {"ports": ["8080"]}}],
        }],
    });
    assert_eq!(allow["spec"], spec);
    let mesh = object(&seed, "PeerAuthentication", "istio-system/mesh");
    assert_eq!(mesh["metadata"]["annotations"], json!({"why": "mesh-wide"}));
    assert_eq!(mesh["spec"], json!({"mtls": {"mode": "PERMISSIVE"}}));
}

/// A waypoint Gateway in `web` (written as v1beta1), an HTTPRoute bound to the Service `web/web` and a GRPCRoute.
const GATEWAY_API: &str = "\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata:
  name: waypoint
  namespace: web
  labels:
    istio.io/waypoint-for: service
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: web
spec:
  parentRefs:
  - group: ''
    kind: Service
    name: web
    port: 80
  rules:
  - backendRefs:
    - name: web
      port: 80
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: echo
  namespace: web
spec:
  parentRefs:
  - group: ''
    kind: Service
    name: web
    port: 81
  rules:
  - backendRefs:
    - name: web
      port: 81
";

#[test]
fn the_config_store_seed_holds_the_gateway_api_objects_after_the_policies() {
    let seed = config_store(&plan(&format!("{OBJECTS}---\n{GATEWAY_API}---\n{POLICIES}")));
    let got: Vec<(&str, &str, String)> = (items(&seed).iter())
        .map(|item| {
            let api_version = item["apiVersion"].as_str().unwrap_or_default();
            (item["kind"].as_str().unwrap_or_default(), api_version, key_of(item))
        })
        .collect();
    let gateway_api = "gateway.networking.k8s.io/v1";
    let want = [
        (
            "AuthorizationPolicy",
            ISTIO_SECURITY_API_VERSION,
            "default/allow-reviews",
        ),
        ("AuthorizationPolicy", ISTIO_SECURITY_API_VERSION, "web/deny-all"),
        ("PeerAuthentication", ISTIO_SECURITY_API_VERSION, "web/strict"),
        ("PeerAuthentication", ISTIO_SECURITY_API_VERSION, "istio-system/mesh"),
        ("Gateway", gateway_api, "web/waypoint"),
        ("HTTPRoute", gateway_api, "web/web"),
        ("GRPCRoute", gateway_api, "web/echo"),
    ];
    let want: Vec<(&str, &str, String)> = want.into_iter().map(|(k, v, key)| (k, v, key.to_string())).collect();
    assert_eq!(got, want);
    let gateway = object(&seed, "Gateway", "web/waypoint");
    let spec = json!({
        "gatewayClassName": "istio-waypoint",
        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
    });
    assert_eq!(gateway["spec"], spec);
    assert_eq!(
        gateway["metadata"]["labels"],
        json!({"istio.io/waypoint-for": "service"})
    );
    // The control plane reads the seed with the config store's parser and restores it whole.
    let text = serde_json::to_string(&seed).unwrap_or_default();
    let objects = ambit_config::parse("config-store.json", &text).unwrap_or_else(|e| panic!("{e:?}"));
    let mut store = ambit_config::Store::default();
    let restored = store.restore(objects).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(restored.len(), 7);
    for kind in [
        ambit_config::Kind::Gateway,
        ambit_config::Kind::HttpRoute,
        ambit_config::Kind::GrpcRoute,
    ] {
        assert_eq!(store.list(kind, Some("web")).len(), 1, "{kind}");
    }
}

#[test]
fn a_waypoint_is_a_service_account_pod_and_service_of_the_cluster() {
    let plan = plan(&format!("{OBJECTS}---\n{GATEWAY_API}"));
    let list = objects_of(&plan, None);
    assert!(keys_of(&list, "ServiceAccount").contains(&"web/waypoint".to_string()));
    let service = object(&list, "Service", "web/waypoint");
    let labels = json!({
        "gateway.networking.k8s.io/gateway-name": "waypoint",
        "gateway.istio.io/managed": "istio.io-mesh-controller",
    });
    assert_eq!(service["metadata"]["labels"], labels);
    let selector = json!({"gateway.networking.k8s.io/gateway-name": "waypoint"});
    assert_eq!(service["spec"]["selector"], selector);
    let ports = json!([{"name": "mesh", "port": 15008, "protocol": "TCP", "targetPort": 15008}]);
    assert_eq!(service["spec"]["ports"], ports);
    let pods = of_kind(&list, "Pod");
    let pod = pods.iter().find(|pod| key_of(pod).starts_with("web/waypoint-"));
    let pod = pod.unwrap_or_else(|| panic!("no waypoint pod in {list:#}"));
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["gateway.networking.k8s.io/gateway-name"], "waypoint");
    assert_eq!(labels["gateway.istio.io/managed"], "istio.io-mesh-controller");
    assert_eq!(labels["istio.io/dataplane-mode"], "none");
    // Web is enrolled in ambient; its waypoint is not captured.
    assert_eq!(pod["metadata"]["annotations"], Value::Null);
    assert_eq!(pod["spec"]["serviceAccountName"], "waypoint");
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            &owner["kind"],
            owner["name"].as_str().map(|name| name.starts_with("waypoint-"))
        ),
        (&json!("ReplicaSet"), Some(true))
    );
}

//! Tests of manifest loading: the fixtures, one bad input per check, warnings, document numbering and formats.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::*;
use crate::model::{PodPlan, Probe, ProbeAction, Protocol, RestartPolicy, TargetPort};

mod waypoint;

/// A Cluster document with two nodes: document 1 of [`with_cluster`] texts.
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

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/manifests")
        .join(name)
}

fn source(name: &str, text: &str) -> Source {
    Source {
        name: name.to_string(),
        text: text.to_string(),
    }
}

fn load_text(text: &str) -> Result<Loaded, LoadError> {
    load(&[source("test.yaml", text)])
}

fn load_ok(text: &str) -> Loaded {
    load_text(text).unwrap_or_else(|error| panic!("{error}\n--- in:\n{text}"))
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match load_text(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(error) => error.diagnostics,
    }
}

/// The Cluster document, then `body` from document 2 on.
fn with_cluster(body: &str) -> String {
    format!("{CLUSTER}---\n{body}")
}

/// A Cluster document whose spec has `extra` (indented by two) after the nodes.
fn cluster_with(extra: &str) -> String {
    let extra: String = extra.lines().map(|line| format!("  {line}\n")).collect();
    format!("{CLUSTER}{extra}")
}

/// A bare pod `name` with one container running `sleep`, and `extra` container lines.
fn pod(name: &str, extra: &str) -> String {
    let extra: String = extra.lines().map(|line| format!("    {line}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: main\n    \
         command: [sleep, infinity]\n{extra}"
    )
}

fn service(name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|line| format!("  {line}\n")).collect();
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

fn demo() -> Loaded {
    let sources = read_sources(&testdata("demo.yaml")).unwrap_or_else(|error| panic!("{error}"));
    load(&sources).unwrap_or_else(|error| panic!("{error}"))
}

fn env_of<'a>(pod: &'a PodPlan, name: &str) -> Option<&'a str> {
    pod.containers[0]
        .env
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

// === the demo fixture ===

#[test]
fn demo_nodes_and_ranges() {
    let plan = demo().plan;
    assert_eq!(plan.name, "demo");
    assert_eq!(plan.cluster_domain, "cluster.local");
    assert_eq!(plan.pod_cidr.to_string(), "10.244.0.0/16");
    assert_eq!(plan.service_cidr.to_string(), "10.96.0.0/16");
    assert_eq!(plan.node_cidr.to_string(), "172.31.0.0/24");
    assert_eq!(plan.control_address, Ipv4Addr::new(172, 31, 0, 1));
    assert_eq!(plan.dns_ip, Ipv4Addr::new(10, 96, 0, 10));
    let nodes: Vec<(&str, String, String)> = plan
        .nodes
        .iter()
        .map(|node| (node.name.as_str(), node.address.to_string(), node.pod_cidr.to_string()))
        .collect();
    let expected = [
        ("node-1", "172.31.0.2".to_string(), "10.244.1.0/24".to_string()),
        ("node-2", "172.31.0.3".to_string(), "10.244.2.0/24".to_string()),
    ];
    assert_eq!(nodes, expected);
    assert_eq!(plan.nodes[1].labels.get("zone").map(String::as_str), Some("b"));
}

#[test]
fn demo_pods_are_spread_and_addressed() {
    let plan = demo().plan;
    let placed: Vec<(&str, &str, String)> = plan
        .pods
        .iter()
        .map(|pod| (pod.name.as_str(), pod.node.as_str(), pod.ip.to_string()))
        .collect();
    assert_eq!(placed.len(), 3);
    // The client comes first in the file; then the replicas spread over both nodes, the first where the
    // Deployment has no pod and fewer pods run (node-2), the second on node-1.
    assert_eq!(placed[0], ("client", "node-1", "10.244.1.2".to_string()));
    assert_eq!((placed[1].1, placed[1].2.as_str()), ("node-2", "10.244.2.2"));
    assert_eq!((placed[2].1, placed[2].2.as_str()), ("node-1", "10.244.1.3"));
    for replica in &plan.pods[1..] {
        assert_eq!(replica.owner.as_deref(), Some("echo"));
        assert_eq!(replica.service_account, "echo");
        assert_eq!(replica.restart_policy, RestartPolicy::Always);
        assert_eq!(replica.labels.get("app").map(String::as_str), Some("echo"));
        assert_eq!(
            replica.annotations.get("example.com/role").map(String::as_str),
            Some("backend")
        );
        assert_generated_name(&replica.name, "echo");
    }
    assert_ne!(plan.pods[1].name, plan.pods[2].name);
    let client = &plan.pods[0];
    assert_eq!(
        (client.owner.as_deref(), client.service_account.as_str()),
        (None, "default")
    );
    assert_eq!(client.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(client.namespace, "shop");
}

/// `<deployment>-<hash10>-<suffix5>` over the generated-name alphabet.
fn assert_generated_name(name: &str, deployment: &str) {
    let rest = name
        .strip_prefix(&format!("{deployment}-"))
        .unwrap_or_else(|| panic!("{name}"));
    let (hash, suffix) = rest.split_once('-').unwrap_or_else(|| panic!("{name}"));
    assert_eq!((hash.len(), suffix.len()), (10, 5), "{name}");
    assert!(
        rest.chars()
            .all(|c| c == '-' || "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{name}"
    );
}

#[test]
fn demo_uids_are_uuid_shaped_and_distinct() {
    let plan = demo().plan;
    for pod in &plan.pods {
        let groups: Vec<usize> = pod.uid.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{}", pod.uid);
    }
    assert_ne!(plan.pods[0].uid, plan.pods[1].uid);
}

#[test]
fn demo_env_is_resolved_in_order() {
    let plan = demo().plan;
    let echo = &plan.pods[1];
    let names: Vec<&str> = echo.containers[0].env.iter().map(|(name, _)| name.as_str()).collect();
    let expected = [
        "MY_NAME",
        "GREETING",
        "ROLE",
        "POD_NAME",
        "POD_NAMESPACE",
        "POD_IP",
        "NODE_NAME",
        "POD_SERVICE_ACCOUNT",
    ];
    assert_eq!(names, expected);
    assert_eq!(env_of(echo, "MY_NAME"), Some(echo.name.as_str()));
    // NODE_NAME is not among the entries before GREETING, so it stays as written, as in Kubernetes.
    assert_eq!(
        env_of(echo, "GREETING"),
        Some(format!("hello from {} on $(NODE_NAME)", echo.name).as_str())
    );
    assert_eq!(env_of(echo, "ROLE"), Some("backend"));
    assert_eq!(env_of(echo, "POD_NAME"), Some(echo.name.as_str()));
    assert_eq!(env_of(echo, "POD_NAMESPACE"), Some("shop"));
    assert_eq!(env_of(echo, "POD_IP"), Some("10.244.2.2"));
    assert_eq!(env_of(echo, "NODE_NAME"), Some("node-2"));
    assert_eq!(env_of(echo, "POD_SERVICE_ACCOUNT"), Some("echo"));
    assert_eq!(env_of(&plan.pods[0], "NODE_IP"), Some("172.31.0.2"));
}

#[test]
fn demo_argv_is_expanded() {
    let plan = demo().plan;
    let echo = &plan.pods[1];
    let expected = [
        "ambit-apps",
        "echo",
        "--listen",
        "10.244.2.2:8080",
        "--name",
        echo.name.as_str(),
        "$(NOT_EXPANDED)",
        "$(UNKNOWN)",
    ];
    assert_eq!(echo.containers[0].argv, expected);
    assert_eq!(echo.containers[0].working_dir.as_deref(), Some("/tmp"));
    let client = &plan.pods[0].containers[0];
    let expected = [
        "ambit-apps",
        "load",
        "--target",
        "http://echo.shop.svc.cluster.local/",
        "--from",
        "172.31.0.2",
    ];
    assert_eq!(client.argv, expected);
}

#[test]
fn demo_readiness_probe() {
    let plan = demo().plan;
    let probe = Probe {
        action: ProbeAction::Http {
            port: 8080,
            path: "/ready".to_string(),
        },
        initial_delay_seconds: 0,
        period_seconds: 2,
        timeout_seconds: 1,
        failure_threshold: 3,
        success_threshold: 1,
    };
    assert_eq!(plan.pods[1].containers[0].readiness, Some(probe));
    assert_eq!(plan.pods[0].containers[0].readiness, None);
}

#[test]
fn demo_service_and_named_target_port() {
    let loaded = demo();
    assert_eq!(loaded.warnings, []);
    let plan = loaded.plan;
    assert_eq!(plan.services.len(), 1);
    let echo = &plan.services[0];
    assert_eq!((echo.namespace.as_str(), echo.name.as_str()), ("shop", "echo"));
    assert_eq!(echo.cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 16)));
    let port = &echo.ports[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol),
        (Some("http"), 80, Protocol::Tcp)
    );
    assert_eq!(port.target, TargetPort::Name("http".to_string()));
    let selected: Vec<&PodPlan> = plan.pods.iter().filter(|pod| pod.matches(&echo.selector)).collect();
    assert_eq!(selected.len(), 2);
    for pod in selected {
        assert_eq!(pod.resolve_target(&port.target, port.protocol), Some(8080));
    }
    assert_eq!(plan.pods[0].resolve_target(&port.target, port.protocol), None);
}

#[test]
fn demo_namespaces_and_service_accounts() {
    let plan = demo().plan;
    let namespaces: Vec<&str> = plan.namespaces.iter().map(|ns| ns.name.as_str()).collect();
    assert_eq!(namespaces, ["default", "istio-system", "kube-system", "shop"]);
    let shop = plan.namespace("shop").map(|ns| ns.labels.clone()).unwrap_or_default();
    assert_eq!(shop.get("team").map(String::as_str), Some("web"));
    let accounts: Vec<(&str, &str)> = plan
        .service_accounts
        .iter()
        .map(|sa| (sa.namespace.as_str(), sa.name.as_str()))
        .collect();
    assert_eq!(
        accounts,
        [
            ("default", "default"),
            ("istio-system", "default"),
            ("kube-system", "default"),
            ("shop", "default"),
            ("shop", "echo")
        ]
    );
}

#[test]
fn demo_is_deterministic() {
    assert_eq!(demo(), demo());
}

// === a directory of manifests ===

#[test]
fn split_directory_reads_yaml_yml_json_in_order() {
    let sources = read_sources(&testdata("split")).unwrap_or_else(|error| panic!("{error}"));
    let names: Vec<String> = sources
        .iter()
        .map(|source| source.name.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["01-cluster.yaml", "02-web.yml", "03-web.json"]);
    let plan = load(&sources).unwrap_or_else(|error| panic!("{error}")).plan;
    assert_eq!(
        (plan.name.as_str(), plan.cluster_domain.as_str()),
        ("split", "ambit.test")
    );
    assert_eq!(plan.nodes[0].address, Ipv4Addr::new(192, 168, 77, 2));
    assert_eq!(plan.nodes[0].pod_cidr.to_string(), "10.200.1.0/24");
    assert_eq!(plan.dns_ip, Ipv4Addr::new(10, 201, 0, 10));
    let services: Vec<(&str, Option<Ipv4Addr>)> = plan
        .services
        .iter()
        .map(|svc| (svc.name.as_str(), svc.cluster_ip))
        .collect();
    assert_eq!(
        services,
        [("web", Some(Ipv4Addr::new(10, 201, 0, 5))), ("web-headless", None)]
    );
    assert_eq!(plan.services[0].ports[0].target, TargetPort::Number(8080));
    let web = &plan.pods[0];
    assert_eq!((web.node.as_str(), web.ip), ("alpha", Ipv4Addr::new(10, 200, 1, 2)));
    let readiness = web.containers[0].readiness.as_ref().map(|probe| probe.action.clone());
    assert_eq!(readiness, Some(ProbeAction::Tcp { port: 8080 }));
}

#[test]
fn read_sources_names_a_missing_path() {
    let path = testdata("does-not-exist.yaml");
    let error = read_sources(&path).err().unwrap_or_else(|| panic!("expected an error"));
    assert_eq!(error.diagnostics.len(), 1);
    assert_eq!(error.diagnostics[0].file, path.display().to_string());
    assert!(error.diagnostics[0].message.starts_with("cannot read: "), "{error}");
}

// === bad inputs ===

/// One bad input: the error expected among the diagnostics.
struct Case {
    name: &'static str,
    text: String,
    document: usize,
    field: &'static str,
    message: &'static str,
}

fn case(name: &'static str, text: String, document: usize, field: &'static str, message: &'static str) -> Case {
    Case {
        name,
        text,
        document,
        field,
        message,
    }
}

fn check_cases(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let found = errors(&case.text);
        let hit = found
            .iter()
            .any(|d| d.document == case.document && d.field == case.field && d.message.contains(case.message));
        if !hit {
            let found: Vec<String> = found.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{}: expected document {} field {:?} message containing {:?}; found:\n  {}",
                case.name,
                case.document,
                case.field,
                case.message,
                found.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_documents() {
    check_cases(vec![
        case(
            "unknown kind",
            with_cluster("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"),
            2,
            "kind",
            r#"unknown kind "ConfigMap" (apiVersion "v1"); supported: Namespace"#,
        ),
        case(
            "wrong apiVersion",
            with_cluster("apiVersion: v1\nkind: Deployment\nmetadata:\n  name: x\n"),
            2,
            "apiVersion",
            r#"Deployment is apiVersion "apps/v1", not "v1""#,
        ),
        case(
            "missing kind",
            with_cluster("apiVersion: v1\nmetadata:\n  name: x\n"),
            2,
            "kind",
            "required",
        ),
        case(
            "missing apiVersion",
            with_cluster("kind: Pod\n"),
            2,
            "apiVersion",
            "required",
        ),
        case(
            "not a mapping",
            with_cluster("- a\n- b\n"),
            2,
            "",
            "a manifest must be a mapping",
        ),
        case(
            "YAML syntax error",
            with_cluster("apiVersion: v1\nkind: Pod\nmetadata: {name: [x\n"),
            2,
            "",
            "at line 12",
        ),
        case(
            "type error with its path",
            with_cluster(&service("web", "ports:\n- port: x\n")),
            2,
            "spec.ports[0].port",
            r#"invalid type: string "x", expected i32"#,
        ),
        case("no Cluster document", pod("web", ""), 0, "", cluster::NO_CLUSTER),
        case(
            "two Cluster documents",
            format!("{CLUSTER}---\n{CLUSTER}"),
            2,
            "",
            "a second Cluster document (the first is in test.yaml document 1)",
        ),
        case(
            "list items not a list",
            with_cluster("apiVersion: v1\nkind: List\nitems: 3\n"),
            2,
            "items",
            "must be",
        ),
    ]);
}

#[test]
fn bad_cluster() {
    check_cases(vec![
        case(
            "unknown field",
            cluster_with("foo: 1"),
            1,
            "spec.foo",
            "unknown field `foo`",
        ),
        case(
            "CIDR overlap",
            cluster_with("podCIDR: 10.244.0.0/16\nserviceCIDR: 10.244.0.0/20"),
            1,
            "spec.serviceCIDR",
            "CIDR overlap: spec.podCIDR 10.244.0.0/16 overlaps spec.serviceCIDR 10.244.0.0/20",
        ),
        case(
            "CIDR syntax",
            cluster_with("podCIDR: 10.244.0/16"),
            1,
            "spec.podCIDR",
            "is not an IPv4 CIDR",
        ),
        case(
            "CIDR host bits",
            cluster_with("nodeCIDR: 172.31.0.1/24"),
            1,
            "spec.nodeCIDR",
            "has host bits set",
        ),
        case(
            "podCIDR too long",
            cluster_with("podCIDR: 10.244.0.0/24"),
            1,
            "spec.podCIDR",
            "at most /23",
        ),
        case(
            "podCIDR too small for the nodes",
            cluster_with("podCIDR: 10.244.0.0/23"),
            1,
            "spec.podCIDR",
            "has room for 1 nodes (a /24 each, the first /24 unused), but there are 2 nodes",
        ),
        case(
            "serviceCIDR too long",
            cluster_with("serviceCIDR: 10.96.0.0/29"),
            1,
            "spec.serviceCIDR",
            "at most /28",
        ),
        case(
            "nodeCIDR too long",
            cluster_with("nodeCIDR: 172.31.0.0/30"),
            1,
            "spec.nodeCIDR",
            "at most /29",
        ),
    ]);
}

#[test]
fn bad_cluster_names_and_nodes() {
    check_cases(vec![
        case(
            "cluster name too long",
            CLUSTER.replace("name: test", "name: a-very-long-cluster-name"),
            1,
            "metadata.name",
            "at most 20 characters",
        ),
        case(
            "invalid cluster name",
            CLUSTER.replace("name: test", "name: Test"),
            1,
            "metadata.name",
            "lowercase",
        ),
        case(
            "missing cluster name",
            CLUSTER.replace("  name: test\n", "  {}\n"),
            1,
            "metadata.name",
            "required",
        ),
        case(
            "no nodes",
            CLUSTER.replace("  nodes:\n  - name: node-1\n  - name: node-2\n", "  nodes: []\n"),
            1,
            "spec.nodes",
            "at least",
        ),
        case(
            "invalid node name",
            CLUSTER.replace("node-2", "Node_2"),
            1,
            "spec.nodes[1].name",
            "lowercase",
        ),
        case(
            "duplicate node",
            CLUSTER.replace("node-2", "node-1"),
            1,
            "spec.nodes[1].name",
            "duplicate node name",
        ),
        case(
            "bad domain",
            cluster_with("clusterDomain: Cluster.Local"),
            1,
            "spec.clusterDomain",
            "lowercase",
        ),
    ]);
}

#[test]
fn bad_node_cidr_capacity() {
    let nodes: String = (1..=6).map(|i| format!("  - name: n{i}\n")).collect();
    let text = CLUSTER.replace("  - name: node-1\n  - name: node-2\n", &nodes) + "  nodeCIDR: 10.0.0.0/29\n";
    check_cases(vec![case(
        "nodeCIDR capacity",
        text,
        1,
        "spec.nodeCIDR",
        "has room for 5 nodes",
    )]);
}

#[test]
fn bad_names_and_references() {
    check_cases(vec![
        case(
            "invalid pod name",
            with_cluster(&pod("Web_1", "")),
            2,
            "metadata.name",
            r#"name "Web_1" must consist"#,
        ),
        case(
            "service name is RFC 1035",
            with_cluster(&service("1web", "ports:\n- port: 80\n")),
            2,
            "metadata.name",
            "must start with a lowercase letter",
        ),
        case(
            "namespace name",
            with_cluster("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a.b\n"),
            2,
            "metadata.name",
            "lowercase letters, digits and '-'",
        ),
        case(
            "missing name",
            with_cluster("apiVersion: v1\nkind: Pod\nspec: {}\n"),
            2,
            "metadata.name",
            "required",
        ),
        case(
            "container name",
            with_cluster(&pod("web", "").replace("- name: main", "- name: Main")),
            2,
            "spec.containers[0].name",
            "container name",
        ),
    ]);
}

#[test]
fn bad_references() {
    check_cases(vec![
        case(
            "duplicate pod",
            with_cluster(&format!("{}---\n{}", pod("web", ""), pod("web", ""))),
            3,
            "metadata.name",
            "duplicate Pod default/web; first defined in test.yaml document 2",
        ),
        case(
            "undeclared namespace",
            with_cluster(&pod("web", "").replace("  name: web\n", "  name: web\n  namespace: shop\n")),
            2,
            "metadata.namespace",
            r#"namespace "shop" is not defined; add a Namespace document"#,
        ),
        case(
            "undeclared service account",
            with_cluster(&pod("web", "").replace("spec:\n", "spec:\n  serviceAccountName: robot\n")),
            2,
            "spec.serviceAccountName",
            r#"service account "robot" is not defined in namespace "default""#,
        ),
        case(
            "unknown node",
            with_cluster(&pod("web", "").replace("spec:\n", "spec:\n  nodeName: node-9\n")),
            2,
            "spec.nodeName",
            r#"unknown node "node-9"; nodes are: node-1, node-2"#,
        ),
        case(
            "bad label value",
            with_cluster(&pod("web", "").replace("  name: web\n", "  name: web\n  labels:\n    app: -x\n")),
            2,
            "metadata.labels",
            r#"label "app": value "-x" must consist"#,
        ),
    ]);
}

#[test]
fn bad_containers() {
    let no_command = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: main\n";
    check_cases(vec![
        case(
            "missing command",
            with_cluster(no_command),
            2,
            "spec.containers[0].command",
            "required: the local cluster has no images, a container runs its command+args as a host process",
        ),
        case(
            "empty containers",
            with_cluster("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers: []\n"),
            2,
            "spec.containers",
            "at least one container is required",
        ),
        case(
            "containerPort 0",
            with_cluster(&pod("web", "ports:\n- containerPort: 0")),
            2,
            "spec.containers[0].ports[0].containerPort",
            "0 is out of range 1-65535",
        ),
        case(
            "SCTP",
            with_cluster(&pod("web", "ports:\n- containerPort: 80\n  protocol: SCTP")),
            2,
            "spec.containers[0].ports[0].protocol",
            "SCTP is not supported",
        ),
        case(
            "port name too long",
            with_cluster(&pod(
                "web",
                "ports:\n- containerPort: 80\n  name: a-very-long-port-name",
            )),
            2,
            "spec.containers[0].ports[0].name",
            "must be at most 15 characters (it has 21)",
        ),
        case(
            "duplicate port names",
            with_cluster(&pod(
                "web",
                "ports:\n- containerPort: 80\n  name: http\n- containerPort: 81\n  name: http",
            )),
            2,
            "spec.containers[0].ports[1].name",
            r#"duplicate port name "http" (also spec.containers[0].ports[0].name)"#,
        ),
    ]);
}

#[test]
fn bad_env_and_probes() {
    check_cases(vec![
        case(
            "secretKeyRef",
            with_cluster(&pod(
                "web",
                "env:\n- name: A\n  valueFrom:\n    secretKeyRef: {name: s, key: k}",
            )),
            2,
            "spec.containers[0].env[0].valueFrom.secretKeyRef",
            "secretKeyRef is not supported by the local cluster",
        ),
        case(
            "unsupported fieldPath",
            with_cluster(&pod(
                "web",
                "env:\n- name: A\n  valueFrom:\n    fieldRef: {fieldPath: status.phase}",
            )),
            2,
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
            r#"unsupported fieldPath "status.phase""#,
        ),
        case(
            "envFrom",
            with_cluster(&pod("web", "envFrom:\n- configMapRef: {name: c}")),
            2,
            "spec.containers[0].envFrom",
            "envFrom is not supported",
        ),
        case(
            "exec probe",
            with_cluster(&pod("web", "readinessProbe:\n  exec: {command: [cat]}")),
            2,
            "spec.containers[0].readinessProbe.exec",
            "exec probes are not supported",
        ),
        case(
            "unresolvable probe port",
            with_cluster(&pod("web", "readinessProbe:\n  tcpSocket: {port: metrics}")),
            2,
            "spec.containers[0].readinessProbe.tcpSocket.port",
            r#"no container port named "metrics" in this pod"#,
        ),
        case(
            "negative probe period",
            with_cluster(&pod(
                "web",
                "readinessProbe:\n  tcpSocket: {port: 80}\n  periodSeconds: -1",
            )),
            2,
            "spec.containers[0].readinessProbe.periodSeconds",
            "must not be negative",
        ),
    ]);
}

#[test]
fn bad_pod_specs() {
    check_cases(vec![
        case(
            "restartPolicy",
            with_cluster(&pod("web", "").replace("spec:\n", "spec:\n  restartPolicy: Sometimes\n")),
            2,
            "spec.restartPolicy",
            r#"unknown restartPolicy "Sometimes""#,
        ),
        case(
            "hostNetwork",
            with_cluster(&pod("web", "").replace("spec:\n", "spec:\n  hostNetwork: true\n")),
            2,
            "spec.hostNetwork",
            "not supported",
        ),
        case(
            "initContainers",
            with_cluster(&pod("web", "").replace("spec:\n", "spec:\n  initContainers:\n  - {name: init}\n")),
            2,
            "spec.initContainers",
            "initContainers are not supported",
        ),
    ]);
}

fn deployment(spec: &str) -> String {
    let spec: String = spec.lines().map(|line| format!("  {line}\n")).collect();
    format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n{spec}")
}

const TEMPLATE: &str = "template:
  metadata:
    labels: {app: api}
  spec:
    containers:
    - name: api
      command: [api]
";

#[test]
fn bad_deployments() {
    check_cases(vec![
        case(
            "selector does not match",
            with_cluster(&deployment(&format!(
                "selector:\n  matchLabels: {{app: web}}\n{TEMPLATE}"
            ))),
            2,
            "spec.selector",
            "selector app=web does not match the template labels (app=api)",
        ),
        case(
            "missing selector",
            with_cluster(&deployment(TEMPLATE)),
            2,
            "spec.selector.matchLabels",
            "required",
        ),
        case(
            "matchExpressions",
            with_cluster(&deployment(&format!(
                "selector:\n  matchLabels: {{app: api}}\n  matchExpressions:\n  - {{key: a, operator: Exists}}\n{TEMPLATE}"
            ))),
            2,
            "spec.selector.matchExpressions",
            "not supported",
        ),
        case(
            "negative replicas",
            with_cluster(&deployment(&format!(
                "replicas: -1\nselector:\n  matchLabels: {{app: api}}\n{TEMPLATE}"
            ))),
            2,
            "spec.replicas",
            "-1 must not be negative",
        ),
        case(
            "too many replicas",
            with_cluster(&deployment(&format!(
                "replicas: 101\nselector:\n  matchLabels: {{app: api}}\n{TEMPLATE}"
            ))),
            2,
            "spec.replicas",
            "at most 100",
        ),
        case(
            "restartPolicy Never",
            with_cluster(&deployment(&format!(
                "selector:\n  matchLabels: {{app: api}}\n{}",
                TEMPLATE.replace("  spec:\n", "  spec:\n    restartPolicy: Never\n")
            ))),
            2,
            "spec.template.spec.restartPolicy",
            "must have restartPolicy Always",
        ),
        case(
            "template container without command",
            with_cluster(&deployment(&format!(
                "selector:\n  matchLabels: {{app: api}}\n{}",
                TEMPLATE.replace("      command: [api]\n", "")
            ))),
            2,
            "spec.template.spec.containers[0].command",
            "required",
        ),
    ]);
}

#[test]
fn bad_services() {
    check_cases(vec![
        case(
            "port 0",
            with_cluster(&service("web", "ports:\n- port: 0\n")),
            2,
            "spec.ports[0].port",
            "0 is out of range 1-65535",
        ),
        case(
            "port 70000",
            with_cluster(&service("web", "ports:\n- port: 70000\n")),
            2,
            "spec.ports[0].port",
            "70000 is out of range 1-65535",
        ),
        case(
            "targetPort out of range",
            with_cluster(&service("web", "ports:\n- port: 80\n  targetPort: 65536\n")),
            2,
            "spec.ports[0].targetPort",
            "65536 is out of range 1-65535",
        ),
        case(
            "targetPort name",
            with_cluster(&service("web", "ports:\n- port: 80\n  targetPort: \"8080\"\n")),
            2,
            "spec.ports[0].targetPort",
            "must contain at least one letter",
        ),
        case(
            "no ports",
            with_cluster(&service("web", "selector: {app: web}\n")),
            2,
            "spec.ports",
            "at least one port",
        ),
        case(
            "unnamed second port",
            with_cluster(&service("web", "ports:\n- name: a\n  port: 80\n- port: 81\n")),
            2,
            "spec.ports[1].name",
            "required when the service has several ports",
        ),
        case(
            "duplicate port",
            with_cluster(&service(
                "web",
                "ports:\n- name: a\n  port: 80\n- name: b\n  port: 80\n",
            )),
            2,
            "spec.ports[1].port",
            r#"duplicate port "80/TCP" (also spec.ports[0].port)"#,
        ),
    ]);
}

#[test]
fn bad_service_types_and_addresses() {
    let headless = service("db", "clusterIP: None\nselector: {app: db}\nports:\n- port: 5432\n");
    check_cases(vec![
        case(
            "NodePort",
            with_cluster(&service("web", "type: NodePort\nports:\n- port: 80\n")),
            2,
            "spec.type",
            "NodePort is not supported by the local cluster",
        ),
        case(
            "clusterIP outside serviceCIDR",
            with_cluster(&format!(
                "{headless}---\n{}",
                service("web", "clusterIP: 10.0.0.5\nports:\n- port: 80\n")
            )),
            3,
            "spec.clusterIP",
            "10.0.0.5 is outside serviceCIDR 10.96.0.0/16",
        ),
        case(
            "clusterIP is the DNS address",
            with_cluster(&service("web", "clusterIP: 10.96.0.10\nports:\n- port: 80\n")),
            2,
            "spec.clusterIP",
            "reserved for the cluster DNS server",
        ),
        case(
            "clusterIP is the network address",
            with_cluster(&service("web", "clusterIP: 10.96.0.0\nports:\n- port: 80\n")),
            2,
            "spec.clusterIP",
            "network address",
        ),
        case(
            "clusterIP not an address",
            with_cluster(&service("web", "clusterIP: none\nports:\n- port: 80\n")),
            2,
            "spec.clusterIP",
            "is not an IPv4 address",
        ),
        case(
            "duplicate clusterIP",
            with_cluster(&format!(
                "{}---\n{}",
                service("a", "clusterIP: 10.96.0.20\nports:\n- port: 80\n"),
                service("b", "clusterIP: 10.96.0.20\nports:\n- port: 80\n")
            )),
            3,
            "spec.clusterIP",
            "10.96.0.20 is already the ClusterIP of Service default/a (test.yaml document 2)",
        ),
        case(
            "serviceCIDR exhausted",
            cluster_with("serviceCIDR: 10.96.0.0/28") + "---\n" + &service("web", "ports:\n- port: 80\n"),
            2,
            "spec.clusterIP",
            "no address left in serviceCIDR 10.96.0.0/28",
        ),
    ]);
}

#[test]
fn a_node_runs_at_most_250_pods() {
    let template = TEMPLATE.replace("  spec:\n", "  spec:\n    nodeName: node-1\n");
    let deployments: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            deployment(&format!(
                "replicas: 100\nselector:\n  matchLabels: {{app: api}}\n{template}"
            ))
            .replace("name: api\nspec", &format!("name: {name}\nspec"))
        })
        .collect();
    let text = with_cluster(&deployments.join("---\n"));
    let found = errors(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].document, found[0].field.as_str()), (4, ""));
    assert!(
        found[0]
            .message
            .contains("node node-1 is full: at most 250 pods per node"),
        "{found:?}"
    );
}

#[test]
fn a_pod_named_like_a_deployment_pod_is_a_duplicate() {
    let made = deployment(&format!("selector:\n  matchLabels: {{app: api}}\n{TEMPLATE}"));
    let name = load_ok(&with_cluster(&made)).plan.pods[0].name.clone();
    let found = errors(&with_cluster(&format!("{made}---\n{}", pod(&name, ""))));
    let expected =
        format!("duplicate Pod default/{name}; first defined in test.yaml document 2 (Deployment default/api)");
    assert!(
        found.iter().any(|d| d.document == 3 && d.message == expected),
        "{found:?}"
    );
    let found = errors(&with_cluster(&format!("{}---\n{made}", pod(&name, ""))));
    let expected = format!("makes Pod default/{name}, which is already defined in test.yaml document 2");
    assert!(
        found
            .iter()
            .any(|d| d.document == 3 && d.field == "metadata.name" && d.message == expected)
    );
}

#[test]
fn long_deployment_names_make_pod_names_that_fit_a_dns_label() {
    let name = "a".repeat(60);
    let made = deployment(&format!("selector:\n  matchLabels: {{app: api}}\n{TEMPLATE}"));
    let made = made.replace("name: api\nspec", &format!("name: {name}\nspec"));
    let plan = load_ok(&with_cluster(&made)).plan;
    let pod = &plan.pods[0].name;
    assert_eq!(pod.len(), 63, "{pod}");
    // As Kubernetes' generateName does, the base is cut to 58 characters before the 5-character suffix.
    assert!(pod.starts_with(&name[..58]), "{pod}");
}

// === warnings, several errors, numbering ===

#[test]
fn a_variable_set_twice_is_a_warning() {
    let env = "env:\n- {name: A, value: one}\n- {name: A, value: two}";
    let loaded = load_ok(&with_cluster(&pod("web", env)));
    let fields: Vec<&str> = loaded.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(fields, ["spec.containers[0].env[1].name"]);
    let env = &loaded.plan.pods[0].containers[0].env;
    assert_eq!(
        env[..2],
        [("A", "one"), ("A", "two")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

#[test]
fn selector_matching_nothing_is_a_warning() {
    let text = with_cluster(&service(
        "web",
        "selector: {app: nobody}\nports:\n- port: 80\n  targetPort: http\n",
    ));
    let loaded = load_ok(&text);
    assert_eq!(loaded.plan.services[0].cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 16)));
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let warning = &loaded.warnings[0];
    assert_eq!((warning.document, warning.field.as_str()), (2, "spec.selector"));
    assert_eq!(
        warning.message,
        r#"selector app=nobody matches no pod in namespace "default""#
    );
}

#[test]
fn named_target_port_no_pod_has_is_a_warning() {
    let web = pod("web", "ports:\n- containerPort: 80\n  name: http")
        .replace("  name: web\n", "  name: web\n  labels: {app: web}\n");
    let svc = service(
        "web",
        "selector: {app: web}\nports:\n- port: 80\n  targetPort: metrics\n",
    );
    let loaded = load_ok(&with_cluster(&format!("{web}---\n{svc}")));
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.warnings[0].field, "spec.ports[0].targetPort");
    assert!(loaded.warnings[0].message.contains(r#"has a TCP port named "metrics""#));
}

#[test]
fn all_errors_are_reported_sorted_by_file_and_document() {
    let first = with_cluster(&format!(
        "{}---\n{}---\n{}",
        service("web", "ports:\n- port: 0\n"),
        pod("a", "").replace("    command: [sleep, infinity]\n", ""),
        pod("b", "").replace("spec:\n", "spec:\n  nodeName: elsewhere\n"),
    ));
    let second = "apiVersion: v1\nkind: Secret\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: [x\n";
    let error = load(&[source("b.yaml", &first), source("a.yaml", second)])
        .err()
        .unwrap_or_else(|| panic!());
    let found: Vec<(&str, usize, &str)> = error
        .diagnostics
        .iter()
        .map(|d| (d.file.as_str(), d.document, d.field.as_str()))
        .collect();
    let expected = [
        ("b.yaml", 2, "spec.ports[0].port"),
        ("b.yaml", 3, "spec.containers[0].command"),
        ("b.yaml", 4, "spec.nodeName"),
        ("a.yaml", 1, "kind"),
        ("a.yaml", 2, ""),
    ];
    assert_eq!(found, expected, "{error}");
}

#[test]
fn empty_documents_count_and_leading_comments_do_not() {
    let text = format!(
        "# a header comment\n---\n{CLUSTER}---\n# nothing here\n---\n---\n{}",
        pod("web", "ports:\n- containerPort: 0")
    );
    let found = errors(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].document, 4);
    assert_eq!(found[0].object.as_deref(), Some("Pod default/web"));
}

#[test]
fn syntax_error_does_not_hide_other_documents() {
    let text = with_cluster(&format!(
        "a: [\n---\n{}",
        pod("web", "").replace("spec:\n", "spec:\n  nodeName: x\n")
    ));
    let found = errors(&text);
    let fields: Vec<(usize, &str)> = found.iter().map(|d| (d.document, d.field.as_str())).collect();
    assert_eq!(fields, [(2, ""), (3, "spec.nodeName")], "{found:?}");
    assert!(found[0].message.starts_with("invalid YAML: "), "{found:?}");
}

#[test]
fn content_after_a_document_end_marker_is_a_new_document() {
    let text = format!(
        "{CLUSTER}...\n{}",
        pod("web", "").replace("spec:\n", "spec:\n  nodeName: x\n")
    );
    let found = errors(&text);
    assert_eq!(
        (found[0].document, found[0].field.as_str()),
        (2, "spec.nodeName"),
        "{found:?}"
    );
}

#[test]
fn list_items_are_located_by_index() {
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: shop}\n\
                - apiVersion: v1\n  kind: Service\n  metadata: {name: web, namespace: shop}\n  spec:\n    ports:\n    \
                - port: 0\n";
    let found = errors(&with_cluster(list));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].field, "items[1].spec.ports[0].port");
    assert_eq!(found[0].object.as_deref(), Some("Service shop/web"));
}

#[test]
fn services_are_allocated_by_name_skipping_requested_addresses() {
    let services = [
        service("b", "ports:\n- port: 80\n"),
        service("a", "ports:\n- port: 80\n"),
        service("c", "clusterIP: 10.96.0.17\nports:\n- port: 80\n"),
    ];
    let plan = load_ok(&with_cluster(&services.join("---\n"))).plan;
    let ips: Vec<(&str, String)> = plan
        .services
        .iter()
        .map(|svc| {
            (
                svc.name.as_str(),
                svc.cluster_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    let expected = [("a", "10.96.0.16"), ("b", "10.96.0.18"), ("c", "10.96.0.17")];
    assert_eq!(ips, expected.map(|(name, ip)| (name, ip.to_string())));
}

#[test]
fn replicas_spread_and_names_are_stable() {
    let made = deployment(&format!(
        "replicas: 3\nselector:\n  matchLabels: {{app: api}}\n{TEMPLATE}"
    ));
    let plan = load_ok(&with_cluster(&made)).plan;
    let nodes: Vec<&str> = plan.pods.iter().map(|pod| pod.node.as_str()).collect();
    assert_eq!(nodes, ["node-1", "node-2", "node-1"]);
    let names: Vec<&str> = plan.pods.iter().map(|pod| pod.name.as_str()).collect();
    let hashes: Vec<&str> = names.iter().map(|name| &name[4..14]).collect();
    assert!(hashes.iter().all(|hash| *hash == hashes[0]), "{names:?}");
    let again = load_ok(&with_cluster(&made)).plan;
    assert_eq!(plan, again);
}

// === expansion and formats ===

#[test]
fn expansion_follows_kubernetes() {
    let vars = [("A", "1"), ("B", "two")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    let cases = [
        ("$(A)-$(B)", "1-two"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("$(C)", "$(C)"),
        ("$(A", "$(A"),
        ("cost: $5", "cost: $5"),
        ("end$", "end$"),
        ("$()", "$()"),
    ];
    for (input, expected) in cases {
        assert_eq!(env::expand(input, &vars), expected, "{input}");
    }
}

#[test]
fn diagnostic_display() {
    let full = Diagnostic {
        file: "demo.yaml".to_string(),
        document: 3,
        object: Some("Service default/echo".to_string()),
        field: "spec.ports[0].port".to_string(),
        message: "70000 is out of range 1-65535".to_string(),
    };
    assert_eq!(
        full.to_string(),
        "demo.yaml: document 3 (Service default/echo): spec.ports[0].port: 70000 is out of range 1-65535"
    );
    let bare = Diagnostic {
        object: None,
        field: String::new(),
        ..full.clone()
    };
    assert_eq!(bare.to_string(), "demo.yaml: document 3: 70000 is out of range 1-65535");
    assert_eq!(Diagnostic::global("no Cluster").to_string(), "no Cluster");
    let error = LoadError {
        diagnostics: vec![full, bare],
    };
    let expected = "2 errors in the manifests:\n\
                    demo.yaml: document 3 (Service default/echo): spec.ports[0].port: 70000 is out of range 1-65535\n\
                    demo.yaml: document 3: 70000 is out of range 1-65535";
    assert_eq!(error.to_string(), expected);
    let one = LoadError::single(Diagnostic::global("x"));
    assert_eq!(one.to_string(), "1 error in the manifests:\nx");
}

// === Istio policies ===

/// An AuthorizationPolicy `name` in namespace `default` with this `spec` (indented by two).
fn authorization_policy(api_version: &str, name: &str, spec: &str) -> String {
    let spec: String = match spec {
        "" => " {}\n".to_string(),
        spec => spec
            .lines()
            .map(|line| format!("\n  {line}"))
            .chain(["\n".to_string()])
            .collect(),
    };
    format!("apiVersion: {api_version}\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\nspec:{spec}")
}

fn peer_authentication(namespace: &str, name: &str, mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: \
         {namespace}\nspec:\n  mtls:\n    mode: {mode}\n"
    )
}

const ALLOW_FROM_BLOCK: &str = "selector:\n  matchLabels:\n    app: web\nrules:\n- from:\n  - source:\n      \
                                ipBlocks: [10.0.0.0/8]\n";

#[test]
fn bad_istio_policies() {
    let bad_cidr = "rules:\n- from:\n  - source:\n      ipBlocks: [10.0.0.0/8, 10.0.0.300/32]\n";
    let twice = authorization_policy("security.istio.io/v1", "allow", "");
    check_cases(vec![
        case(
            "bad ipBlocks CIDR, at its field path",
            with_cluster(&authorization_policy("security.istio.io/v1", "allow", bad_cidr)),
            2,
            "spec.rules[0].from[0].source.ipBlocks[1]",
            "10.0.0.300",
        ),
        case(
            "unknown spec field",
            with_cluster(&authorization_policy(
                "security.istio.io/v1beta1",
                "allow",
                "rulez: []\n",
            )),
            2,
            "spec.rulez",
            "unknown field",
        ),
        case(
            "wrong apiVersion",
            with_cluster(&authorization_policy("security.istio.io/v2", "allow", "")),
            2,
            "apiVersion",
            r#"AuthorizationPolicy is apiVersion "security.istio.io/v1" or "security.istio.io/v1beta1""#,
        ),
        case(
            "duplicate name",
            with_cluster(&format!("{twice}---\n{twice}")),
            3,
            "metadata.name",
            "duplicate AuthorizationPolicy default/allow",
        ),
        case(
            "undeclared namespace",
            with_cluster(&peer_authentication("web", "default", "STRICT")),
            2,
            "metadata.namespace",
            r#"namespace "web" is not defined"#,
        ),
        case(
            "port-level mTLS without a selector",
            with_cluster(
                "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa\nspec:\n  \
                 portLevelMtls:\n    8080:\n      mode: DISABLE\n",
            ),
            2,
            "spec.portLevelMtls",
            "needs a selector",
        ),
    ]);
}

#[test]
fn istio_policies_load_with_their_namespace() {
    let body = [
        authorization_policy("security.istio.io/v1", "allow-web", ALLOW_FROM_BLOCK),
        authorization_policy("security.istio.io/v1beta1", "deny-nothing", "action: DENY\n"),
        peer_authentication("istio-system", "default", "STRICT"),
    ];
    let loaded = load_ok(&with_cluster(&body.join("---\n")));
    let plan = &loaded.plan;
    let names: Vec<(&str, &str)> = (plan.authorization_policies.iter())
        .map(|p| (p.metadata.namespace.as_str(), p.metadata.name.as_str()))
        .collect();
    assert_eq!(names, [("default", "allow-web"), ("default", "deny-nothing")]);
    assert_eq!(plan.peer_authentications.len(), 1);
    assert_eq!(plan.peer_authentications[0].metadata.namespace, "istio-system");
    assert!(plan.namespace("istio-system").is_some());
}

#[test]
fn a_policy_not_enforced_as_written_is_a_warning() {
    let spec = "targetRefs:\n- kind: Service\n  group: \"\"\n  name: web\n";
    let loaded = load_ok(&with_cluster(&authorization_policy(
        "security.istio.io/v1",
        "waypoint",
        spec,
    )));
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.warnings[0].field, "spec");
    assert!(
        loaded.warnings[0].message.contains("waypoint"),
        "{}",
        loaded.warnings[0]
    );
}

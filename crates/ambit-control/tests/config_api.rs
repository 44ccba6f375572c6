//! The control plane as a whole, in process: objects from an objects file, config applied through the API socket,
//! and what a delta xDS client built from Istio's protobuf files (the field numbers of `istio.workload` and
//! `istio.security`) decodes from the stream. Also: invalid config is refused with its field path and changes
//! nothing, deletes reach the stream, and applied config survives a restart. Metadata patches (`POST /v1/patch`)
//! reach the stream and the node-pod watch (`GET /v1/nodes/{node}/pods`), survive a restart, and go with the pod.
//! The waypoint's L7 config (routes, waypoint Gateways, targeted policies) reaches its own resource type.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ambit_api::ambit::config::v1::ConfigObject;
use ambit_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use ambit_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use ambit_api::istio::security::{self as pb_security, string_match::MatchType};
use ambit_api::istio::workload::{self as pb, address};
use ambit_api::prost::Message;
use ambit_api::{AUTHORIZATION_TYPE_URL, CONFIG_OBJECT_TYPE_URL, WORKLOAD_ADDRESS_TYPE_URL};
use ambit_control::ControlConfig;
use ambit_control::ca::{control_identity, open_ca};
use ambit_identity::ca::CaConfig;
use ambit_identity::tls::anonymous_client_config;
use ambit_types::TrustDomain;
use ambit_xds::ca::connect_channel;
use futures::channel::mpsc;
use tonic::Streaming;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(5);

/// Namespace `web`, the enrolled and ready pod `web/server-0` on node-1 serving `http` on 8080, and Service
/// `web/server` (ClusterIP 10.96.0.20, port 80 → `http`).
const OBJECTS: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}},
  {"apiVersion": "v1", "kind": "Pod",
   "metadata": {"name": "server-0", "namespace": "web", "labels": {"app": "server"},
                "annotations": {"ambient.istio.io/redirection": "enabled"}},
   "spec": {"nodeName": "node-1", "serviceAccountName": "server",
            "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
   "status": {"phase": "Running", "podIP": "10.244.1.5",
              "conditions": [{"type": "Ready", "status": "True"}]}},
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "server", "namespace": "web"},
   "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "server"},
            "ports": [{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}
]}"#;

const POLICY: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-client
  namespace: web
spec:
  selector:
    matchLabels:
      app: server
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/web/sa/client]
    to:
    - operation:
        ports: ['8080']
";

struct Control {
    runtime: tokio::runtime::Runtime,
    listen: SocketAddr,
    socket: PathBuf,
}

fn trust_domain() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

/// Starts `ambit control` in process on its own runtime over the files in `dir`; returns once the API answers.
fn start(dir: &Path, instance: &str) -> Control {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let socket = dir.join(format!("control-{instance}.sock"));
    let config = ControlConfig {
        listen,
        ca_dir: dir.join("ca"),
        cacerts: None,
        trust_domain: trust_domain(),
        max_ttl: None,
        node_credentials: dir.join("node-credentials.json"),
        pods: Vec::new(),
        objects_file: Some(dir.join("objects.json")),
        config_store: Some(dir.join("config-store.json")),
        api_socket: Some(socket.clone()),
        cluster_domain: "cluster.local".to_string(),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.spawn(async move {
        if let Err(e) = ambit_control::run(config).await {
            panic!("the control plane failed: {e:#}");
        }
    });
    let deadline = Instant::now() + DEADLINE;
    while request(&socket, "GET", "/v1/objects?kind=Namespace", "").is_err() {
        assert!(Instant::now() < deadline, "the config API never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    Control {
        runtime,
        listen,
        socket,
    }
}

/// One HTTP/1.1 request over the API socket: (status, JSON body).
fn request(socket: &Path, method: &str, path: &str, body: &str) -> std::io::Result<(u16, serde_json::Value)> {
    let mut stream = UnixStream::connect(socket)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: ambit\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response[9..12].parse().map_err(std::io::Error::other)?;
    let (_, json) = response.split_once("\r\n\r\n").unwrap_or_default();
    Ok((status, serde_json::from_str(json).map_err(std::io::Error::other)?))
}

fn change(control: &Control, verb: &str, text: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"sources": [{"name": "policy.yaml", "text": text}]}).to_string();
    request(&control.socket, "POST", &format!("/v1/{verb}"), &body).unwrap()
}

fn policies(control: &Control) -> serde_json::Value {
    let (status, body) = request(&control.socket, "GET", "/v1/objects?kind=AuthorizationPolicy", "").unwrap();
    assert_eq!(status, 200, "{body}");
    body["items"].clone()
}

/// A wildcard delta stream of node-1 for `type_url`, with the client generated from Istio's protobuf files.
async fn stream(dir: &Path, listen: SocketAddr, type_url: &str) -> Streaming<DeltaDiscoveryResponse> {
    let ca = open_ca(&dir.join("ca"), None, CaConfig::new(trust_domain())).unwrap();
    let tls = anonymous_client_config(&ca.trust_bundle(), vec![control_identity(&trust_domain())]).unwrap();
    let channel = connect_channel(&listen.to_string(), tls).await.unwrap();
    let (tx, rx) = mpsc::unbounded();
    tx.unbounded_send(DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        ..DeltaDiscoveryRequest::default()
    })
    .unwrap();
    // The stream ends when the sender is dropped: keep it for the test's length.
    std::mem::forget(tx);
    let mut request = tonic::Request::new(rx);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    client.delta_aggregated_resources(request).await.unwrap().into_inner()
}

async fn next(responses: &mut Streaming<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
    let next = tokio::time::timeout(DEADLINE, responses.message()).await;
    next.expect("no response in time").unwrap().expect("the stream ended")
}

/// Responses until one carries `name`; its resource body.
async fn until_resource(responses: &mut Streaming<DeltaDiscoveryResponse>, name: &str) -> Vec<u8> {
    loop {
        let response = next(responses).await;
        if let Some(resource) = response.resources.iter().find(|r| r.name == name) {
            return resource.resource.as_ref().expect("a body").value.clone();
        }
    }
}

fn exact(value: &str) -> pb_security::StringMatch {
    pb_security::StringMatch {
        match_type: Some(MatchType::Exact(value.to_string())),
    }
}

fn setup() -> tempfile::TempDir {
    setup_with(OBJECTS)
}

/// A directory with the CA, node-1's credentials and `objects` as the objects file.
fn setup_with(objects: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("objects.json"), objects).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let tokens: HashMap<&str, &str> = [("node-1", TOKEN)].into();
    let credentials = dir.path().join("node-credentials.json");
    std::fs::write(&credentials, serde_json::to_vec(&tokens).unwrap()).unwrap();
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).unwrap();
    open_ca(&dir.path().join("ca"), None, CaConfig::new(trust_domain())).unwrap();
    dir
}

#[test]
fn applied_config_reaches_an_istio_client_as_written_and_survives_a_restart() {
    let dir = setup();
    let control = start(dir.path(), "first");
    let (status, body) = change(&control, "apply", POLICY);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "created", "{body}");

    let (policy, workload, service) = control.runtime.block_on(async {
        let mut authorizations = stream(dir.path(), control.listen, AUTHORIZATION_TYPE_URL).await;
        let policy = until_resource(&mut authorizations, "web/allow-client").await;
        let mut addresses = stream(dir.path(), control.listen, WORKLOAD_ADDRESS_TYPE_URL).await;
        let first = next(&mut addresses).await;
        let body = |name: &str| {
            let found = first.resources.iter().find(|r| r.name == name);
            found
                .unwrap_or_else(|| panic!("no {name} in {first:?}"))
                .resource
                .clone()
                .unwrap()
                .value
        };
        (
            policy,
            body("Kubernetes//Pod/web/server-0"),
            body("web/server.web.svc.cluster.local"),
        )
    });

    // The policy, decoded with Istio's field numbers, is what the YAML says: one group, its `from` and its `to`
    // as two ANDed clauses.
    let decoded = pb_security::Authorization::decode(policy.as_slice()).unwrap();
    let expected = pb_security::Authorization {
        name: "allow-client".into(),
        namespace: "web".into(),
        scope: pb_security::Scope::WorkloadSelector.into(),
        action: pb_security::Action::Allow.into(),
        groups: vec![pb_security::Group {
            rules: vec![
                pb_security::Rules {
                    matches: vec![pb_security::Match {
                        principals: vec![exact("cluster.local/ns/web/sa/client")],
                        ..Default::default()
                    }],
                },
                pb_security::Rules {
                    matches: vec![pb_security::Match {
                        destination_ports: vec![8080],
                        ..Default::default()
                    }],
                },
            ],
        }],
        ..Default::default()
    };
    assert_eq!(decoded, expected);

    // The pod: its identity, address, node, HBONE (capture in place), the policy that selects it, and the service
    // port resolved to its named container port.
    let address::Type::Workload(workload) = pb::Address::decode(workload.as_slice()).unwrap().r#type.unwrap() else {
        panic!("not a workload");
    };
    assert_eq!(workload.uid, "Kubernetes//Pod/web/server-0");
    assert_eq!(
        (workload.namespace.as_str(), workload.service_account.as_str()),
        ("web", "server")
    );
    assert_eq!(workload.addresses, vec![vec![10, 244, 1, 5]]);
    assert_eq!(workload.node, "node-1");
    assert_eq!(workload.tunnel_protocol, i32::from(pb::TunnelProtocol::Hbone));
    assert_eq!(workload.status, i32::from(pb::WorkloadStatus::Healthy));
    assert_eq!(workload.authorization_policies, ["web/allow-client"]);
    let ports = &workload.services["web/server.web.svc.cluster.local"].ports;
    assert_eq!((ports[0].service_port, ports[0].target_port), (80, 8080));
    let address::Type::Service(service) = pb::Address::decode(service.as_slice()).unwrap().r#type.unwrap() else {
        panic!("not a service");
    };
    assert_eq!((service.name.as_str(), service.namespace.as_str()), ("server", "web"));
    assert_eq!(service.addresses[0].address, vec![10, 96, 0, 20]);
    assert_eq!((service.ports[0].service_port, service.ports[0].target_port), (80, 0));

    // Invalid config is refused whole with its field path; the store keeps what it had.
    let bad = POLICY.replace(
        "cluster.local/ns/web/sa/client",
        "spiffe://cluster.local/ns/web/sa/client",
    );
    let bad = format!("{bad}---\n{}", POLICY.replace("allow-client", "second"));
    let (status, body) = change(&control, "apply", &bad);
    assert_eq!(status, 422, "{body}");
    let error = &body["errors"][0];
    assert_eq!(error["field"], "spec.rules[0].from[0].source.principals[0]", "{body}");
    assert_eq!(error["document"], 1, "{body}");
    let names: Vec<_> = policies(&control)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, ["allow-client"], "an invalid batch changed the store");
    assert_eq!(
        policies(&control)[0]["status"]["conditions"][0]["type"],
        "ZtunnelAccepted"
    );

    // Restarted on the same files, the control plane serves the applied policy again.
    drop(control);
    let persisted = std::fs::read_to_string(dir.path().join("config-store.json")).unwrap();
    assert!(persisted.contains("allow-client"), "{persisted}");
    let control = start(dir.path(), "second");
    assert_eq!(policies(&control)[0]["metadata"]["name"], "allow-client");

    // A delete reaches the stream as a removal.
    let removed = control.runtime.block_on(async {
        let mut authorizations = stream(dir.path(), control.listen, AUTHORIZATION_TYPE_URL).await;
        until_resource(&mut authorizations, "web/allow-client").await;
        let (status, body) = change(&control, "delete", POLICY);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"][0]["outcome"], "deleted", "{body}");
        next(&mut authorizations).await.removed_resources
    });
    assert_eq!(removed, ["web/allow-client"]);
}

/// Namespace `web`; on node-1 the enrolled `web/server-0` and `web/client-0` (uid `uid-client-0`), not yet marked
/// redirected; on node-2 `web/other-0`.
fn patch_objects(client_uid: &str) -> String {
    let pod = |name: &str, uid: &str, node: &str, ip: &str, annotations: serde_json::Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "web", "uid": uid, "labels": {"app": name},
                         "annotations": annotations},
            "spec": {"nodeName": node, "serviceAccountName": "default", "containers": [{"name": "app"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]}})
    };
    let enabled = serde_json::json!({"ambient.istio.io/redirection": "enabled"});
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web", "uid": "uid-web"}},
        pod("server-0", "uid-server-0", "node-1", "10.244.1.5", enabled),
        pod("client-0", client_uid, "node-1", "10.244.1.6", serde_json::json!({})),
        pod("other-0", "uid-other-0", "node-2", "10.244.2.5", serde_json::json!({})),
    ]});
    list.to_string()
}

const CLIENT_UID: &str = "Kubernetes//Pod/web/client-0";

fn patch(control: &Control, body: serde_json::Value) -> (u16, serde_json::Value) {
    request(&control.socket, "POST", "/v1/patch", &body.to_string()).unwrap()
}

/// The agent's enrollment of client-0: the dataplane-mode label and the redirection annotation.
fn enroll_client(uid: &str) -> serde_json::Value {
    serde_json::json!({"kind": "Pod", "namespace": "web", "name": "client-0", "uid": uid,
        "metadata": {"labels": {"istio.io/dataplane-mode": "ambient"},
                     "annotations": {"ambient.istio.io/redirection": "enabled"}}})
}

/// `GET /v1/nodes/{node}/pods?{query}`: the body, and how long the answer took.
fn node_pods(socket: &Path, node: &str, query: &str) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let (status, body) = request(socket, "GET", &format!("/v1/nodes/{node}/pods?{query}"), "").unwrap();
    assert_eq!(status, 200, "{body}");
    (body, started.elapsed())
}

fn names(items: &serde_json::Value) -> Vec<String> {
    let items = items.as_array().expect("a list");
    items
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn pod_object(control: &Control, name: &str) -> serde_json::Value {
    let path = format!("/v1/objects?kind=Pod&namespace=web&name={name}");
    let (status, body) = request(&control.socket, "GET", &path, "").unwrap();
    assert_eq!(status, 200, "{body}");
    body["items"][0].clone()
}

/// Responses until one carries the workload `uid`; the workload.
async fn until_workload(responses: &mut Streaming<DeltaDiscoveryResponse>, uid: &str) -> pb::Workload {
    let body = until_resource(responses, uid).await;
    match pb::Address::decode(body.as_slice()).unwrap().r#type.unwrap() {
        address::Type::Workload(workload) => workload,
        address::Type::Service(service) => panic!("{uid} is a service: {service:?}"),
    }
}

#[test]
fn a_patched_pod_reaches_xds_and_wakes_the_node_watch() {
    let dir = setup_with(&patch_objects("uid-client-0"));
    let control = start(dir.path(), "patch");

    // The node's pods and every namespace, at once without a revision.
    let (first, _) = node_pods(&control.socket, "node-1", "");
    assert_eq!(names(&first["pods"]), ["client-0", "server-0"]);
    assert_eq!(names(&first["namespaces"]), ["web"]);
    let pod = &first["pods"][0];
    assert_eq!(pod["metadata"]["uid"], "uid-client-0");
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    assert_eq!(pod["status"]["podIPs"][0]["ip"], "10.244.1.6");
    let revision = first["revision"].as_str().unwrap().to_string();
    let (unknown, _) = node_pods(&control.socket, "node-9", "");
    assert_eq!(
        (names(&unknown["pods"]).len(), unknown["revision"].as_str()),
        (0, Some(revision.as_str()))
    );

    // Nothing changes: the watch waits out its timeout and answers the same revision.
    let (same, waited) = node_pods(
        &control.socket,
        "node-1",
        &format!("revision={revision}&timeoutSeconds=1"),
    );
    assert_eq!(same["revision"], revision.as_str());
    assert!(waited >= Duration::from_millis(900), "answered after {waited:?}");

    let (workload, woken) = control.runtime.block_on(async {
        let mut addresses = stream(dir.path(), control.listen, WORKLOAD_ADDRESS_TYPE_URL).await;
        let before = until_workload(&mut addresses, CLIENT_UID).await;
        assert_eq!(before.tunnel_protocol, i32::from(pb::TunnelProtocol::None));

        // A watch waiting on the current revision, woken by the patch.
        let socket = control.socket.clone();
        let query = format!("revision={revision}&timeoutSeconds=30");
        let waiter = std::thread::spawn(move || node_pods(&socket, "node-1", &query));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = patch(&control, enroll_client("uid-client-0"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["metadata"]["labels"]["istio.io/dataplane-mode"], "ambient",
            "{body}"
        );
        assert_eq!(body["metadata"]["labels"]["app"], "client-0", "{body}");
        let woken = waiter.join().unwrap();
        (until_workload(&mut addresses, CLIENT_UID).await, woken)
    });
    // HBONE once the pod is marked redirected.
    assert_eq!(workload.tunnel_protocol, i32::from(pb::TunnelProtocol::Hbone));
    let (after, waited) = woken;
    assert!(
        waited < Duration::from_secs(10),
        "the patch did not wake the watch ({waited:?})"
    );
    let patched = after["revision"].as_str().unwrap().to_string();
    assert_ne!(patched, revision);
    assert_eq!(
        after["pods"][0]["metadata"]["annotations"]["ambient.istio.io/redirection"],
        "enabled"
    );

    // A stale revision is answered at once.
    let (stale, waited) = node_pods(
        &control.socket,
        "node-1",
        &format!("revision={revision}&timeoutSeconds=30"),
    );
    assert_eq!(stale["revision"], patched.as_str());
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // The patch shows in the objects and in describe.
    let object = pod_object(&control, "client-0");
    assert_eq!(object["metadata"]["labels"]["istio.io/dataplane-mode"], "ambient");
    let (status, description) = request(
        &control.socket,
        "GET",
        "/v1/describe/pod?namespace=web&name=client-0",
        "",
    )
    .unwrap();
    assert_eq!(
        (status, &description["enrolled"]),
        (200, &serde_json::json!(true)),
        "{description}"
    );

    // Refused patches name why and change nothing.
    let wrong_uid = enroll_client("uid-of-an-older-pod");
    let missing =
        serde_json::json!({"kind": "Pod", "namespace": "web", "name": "gone", "metadata": {"labels": {"a": "b"}}});
    let bad = serde_json::json!({"kind": "Pod", "namespace": "web", "name": "client-0",
        "metadata": {"labels": {"good": "v", "Bad key": "v"}}});
    let cases = [
        (wrong_uid, 404, "", "has uid uid-client-0, not uid-of-an-older-pod"),
        (missing, 404, "", "Pod web/gone not found"),
        (bad, 422, r#"metadata.labels["Bad key"]"#, "\"Bad key\" must"),
    ];
    for (body, expected_status, field, message) in cases {
        let (status, answer) = patch(&control, body.clone());
        assert_eq!(status, expected_status, "{body}: {answer}");
        let error = &answer["errors"][0];
        assert_eq!(error["field"], field, "{answer}");
        assert!(error["message"].as_str().unwrap().contains(message), "{answer}");
    }
    assert_eq!(
        pod_object(&control, "client-0"),
        object,
        "a refused patch changed the pod"
    );
    let (now, _) = node_pods(&control.socket, "node-1", "timeoutSeconds=0");
    assert_eq!(now["revision"], patched.as_str());

    // Removing the annotation (null) takes HBONE away again.
    let unmark = serde_json::json!({"kind": "Pod", "namespace": "web", "name": "client-0",
        "metadata": {"annotations": {"ambient.istio.io/redirection": null}}});
    let workload = control.runtime.block_on(async {
        let mut addresses = stream(dir.path(), control.listen, WORKLOAD_ADDRESS_TYPE_URL).await;
        until_workload(&mut addresses, CLIENT_UID).await;
        let (status, body) = patch(&control, unmark);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["metadata"].get("annotations"), None, "{body}");
        until_workload(&mut addresses, CLIENT_UID).await
    });
    assert_eq!(workload.tunnel_protocol, i32::from(pb::TunnelProtocol::None));
}

#[test]
fn patches_survive_a_restart_and_go_with_the_pod() {
    let dir = setup_with(&patch_objects("uid-client-0"));
    let control = start(dir.path(), "first");
    let (status, body) = patch(&control, enroll_client("uid-client-0"));
    assert_eq!(status, 200, "{body}");
    let namespace = serde_json::json!({"kind": "Namespace", "name": "web",
        "metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}});
    let (status, body) = patch(&control, namespace);
    assert_eq!(status, 200, "{body}");
    let (before, _) = node_pods(&control.socket, "node-1", "");
    drop(control);
    let persisted = std::fs::read_to_string(dir.path().join("config-store.json")).unwrap();
    assert!(persisted.contains("metadataPatches"), "{persisted}");

    // Restarted on the same files: the same pods and namespaces, under a revision of the new process.
    let control = start(dir.path(), "second");
    let (after, _) = node_pods(&control.socket, "node-1", "");
    assert_eq!(after["pods"], before["pods"]);
    assert_eq!(
        after["namespaces"][0]["metadata"]["labels"]["istio.io/dataplane-mode"],
        "ambient"
    );
    assert_ne!(after["revision"], before["revision"]);
    let workload = control.runtime.block_on(async {
        let mut addresses = stream(dir.path(), control.listen, WORKLOAD_ADDRESS_TYPE_URL).await;
        until_workload(&mut addresses, CLIENT_UID).await
    });
    assert_eq!(workload.tunnel_protocol, i32::from(pb::TunnelProtocol::Hbone));

    // The pod re-created (another uid): its patch is dropped, from the store and from the file; the namespace's stays.
    let objects = dir.path().join("objects.json");
    let next = dir.path().join("objects.json.next");
    std::fs::write(&next, patch_objects("uid-client-0-again")).unwrap();
    std::fs::rename(&next, &objects).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while pod_object(&control, "client-0")["metadata"]["uid"] != "uid-client-0-again" {
        assert!(Instant::now() < deadline, "the new objects file was never loaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let object = pod_object(&control, "client-0");
    assert_eq!(
        object["metadata"]["labels"],
        serde_json::json!({"app": "client-0"}),
        "{object}"
    );
    assert_eq!(object["metadata"]["annotations"], serde_json::json!({}), "{object}");
    let persisted: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config-store.json")).unwrap()).unwrap();
    assert_eq!(names_of_patches(&persisted), ["Namespace/web"], "{persisted}");
    // The old uid no longer exists: a patch for it is refused.
    let (status, body) = patch(&control, enroll_client("uid-client-0"));
    assert_eq!(status, 404, "{body}");
}

fn names_of_patches(persisted: &serde_json::Value) -> Vec<String> {
    let patches = persisted["metadataPatches"].as_array().cloned().unwrap_or_default();
    patches
        .iter()
        .map(|p| format!("{}/{}", p["kind"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect()
}

/// A waypoint Gateway, an HTTPRoute on the server's Service, an AuthorizationPolicy targeting that Service (L7: the
/// waypoint's) and one selecting pods (L4: the node proxies').
const L7_CONFIG: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: web}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: web}
spec:
  parentRefs: [{group: '', kind: Service, name: server, port: 8080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: server, port: 8080, weight: 90}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: web}
spec:
  targetRefs: [{kind: Service, group: '', name: server}]
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l4-only, namespace: web}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules: [{from: [{source: {namespaces: [web]}}]}]
";

#[test]
fn the_waypoints_l7_config_reaches_its_own_resource_type() {
    let dir = setup();
    let control = start(dir.path(), "l7");
    let (status, body) = change(&control, "apply", L7_CONFIG);
    assert_eq!(status, 200, "{body}");
    let (names, route, removed) = control.runtime.block_on(async {
        let mut config = stream(dir.path(), control.listen, CONFIG_OBJECT_TYPE_URL).await;
        let first = next(&mut config).await;
        let mut names: Vec<String> = first.resources.iter().map(|r| r.name.clone()).collect();
        names.sort();
        let route = first
            .resources
            .iter()
            .find(|r| r.name == "HTTPRoute/web/split")
            .cloned();
        // Deleting the route reaches the stream as a removal.
        let delete =
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: split, namespace: web}\n";
        let (status, body) = change(&control, "delete", delete);
        assert_eq!(status, 200, "{body}");
        let removed = loop {
            let response = next(&mut config).await;
            if !response.removed_resources.is_empty() {
                break response.removed_resources;
            }
        };
        (names, route, removed)
    });
    // The L4-only policy goes to the node proxies as an Authorization, not here.
    assert_eq!(
        names,
        [
            "AuthorizationPolicy/web/no-admin",
            "Gateway/web/waypoint",
            "HTTPRoute/web/split"
        ]
    );
    let route = route.expect("the route").resource.expect("a body");
    assert_eq!(route.type_url, CONFIG_OBJECT_TYPE_URL);
    let object = ConfigObject::decode(route.value.as_slice()).unwrap();
    assert_eq!(
        (
            object.api_version.as_str(),
            object.kind.as_str(),
            object.namespace.as_str(),
            object.name.as_str()
        ),
        ("gateway.networking.k8s.io/v1", "HTTPRoute", "web", "split")
    );
    let json: serde_json::Value = serde_json::from_slice(&object.json).unwrap();
    assert_eq!(json["spec"]["rules"][0]["backendRefs"][0]["weight"], 90, "{json}");
    assert!(json.get("status").is_none(), "{json}");
    assert_eq!(removed, ["HTTPRoute/web/split"]);
}

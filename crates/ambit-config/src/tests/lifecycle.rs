//! The store over time: outcomes, generations and resource versions of apply, delete and the cluster source,
//! listing, and persistence.

use super::*;

const ALLOW_FRONTEND: &str = "allow-frontend";

/// The baseline policy with another port.
fn baseline_policy_on(port: &str) -> String {
    BASELINE_POLICY.replace("\"8080\"", &format!("\"{port}\""))
}

fn stored<'a>(store: &'a Store, kind: Kind, namespace: &str, name: &str) -> &'a Stored {
    let key = key(kind, namespace, name);
    store.get(&key).unwrap_or_else(|| panic!("{key} is not stored"))
}

#[test]
fn applying_again_is_unchanged_and_a_new_spec_is_a_new_generation() {
    let mut store = baseline();
    let first = stored(&store, Kind::AuthorizationPolicy, "web", ALLOW_FRONTEND).clone();
    assert_eq!(
        (first.generation, first.resource_version, first.created),
        (1, store.revision(), store.revision())
    );

    let outcomes = apply_ok(&mut store, BASELINE_POLICY);
    assert_eq!(
        outcomes,
        [(
            key(Kind::AuthorizationPolicy, "web", ALLOW_FRONTEND),
            Outcome::Unchanged
        )]
    );
    assert_eq!(stored(&store, Kind::AuthorizationPolicy, "web", ALLOW_FRONTEND), &first);

    let outcomes = apply_ok(&mut store, &baseline_policy_on("9090"));
    assert_eq!(outcomes[0].1, Outcome::Configured);
    let second = stored(&store, Kind::AuthorizationPolicy, "web", ALLOW_FRONTEND);
    assert_eq!(second.generation, 2);
    assert_eq!(second.resource_version, first.resource_version + 1);
    assert_eq!(second.created, first.created);
    assert_eq!(store.revision(), second.resource_version);
}

/// Labels and annotations are configuration (Configured) but not spec (the generation stays).
#[test]
fn metadata_changes_keep_the_generation() {
    let mut store = baseline();
    apply_ok(
        &mut store,
        &gateway("{gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}"),
    );
    let relabelled = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, \
                      namespace: web, labels: {istio.io/waypoint-for: all}}\nspec: {gatewayClassName: istio-waypoint, \
                      listeners: [{name: mesh, port: 15008, protocol: HBONE}]}\n";
    let annotated = BASELINE_POLICY.replace("namespace: web\n", "namespace: web\n  annotations: {owner: team-a}\n");
    for (text, kind, name) in [
        (relabelled, Kind::Gateway, "waypoint"),
        (&annotated, Kind::AuthorizationPolicy, ALLOW_FRONTEND),
    ] {
        let revision = store.revision();
        let outcomes = apply_ok(&mut store, text);
        assert_eq!(outcomes[0].1, Outcome::Configured, "{text}");
        let now = stored(&store, kind, "web", name);
        assert_eq!((now.generation, now.resource_version), (1, revision + 1), "{text}");
    }
}

#[test]
fn delete_removes_and_reports_missing_objects() {
    let mut store = baseline();
    let policy = key(Kind::AuthorizationPolicy, "web", ALLOW_FRONTEND);
    let missing = key(Kind::HttpRoute, "web", "nothing");

    let before = store.clone();
    let diagnostics = store
        .delete(&[policy.clone(), missing.clone()], false)
        .err()
        .unwrap_or_default();
    assert_eq!(lines(&diagnostics), "HTTPRoute web/nothing: not found");
    assert_eq!(store, before, "nothing is deleted when one key is missing");

    let outcomes = store.delete(&[policy.clone(), missing, policy.clone()], true);
    assert_eq!(outcomes, Ok(vec![(policy.clone(), Outcome::Deleted)]));
    assert_eq!(store.get(&policy), None);
    assert_eq!(store.revision(), before.revision() + 1);

    let diagnostics = store.delete(&[policy], false).err().unwrap_or_default();
    assert_eq!(diagnostics.len(), 1);
}

#[test]
fn kubernetes_kinds_cannot_be_deleted_by_users() {
    let mut store = baseline();
    let namespace = key(Kind::Namespace, "", "web");
    let diagnostics = store
        .delete(std::slice::from_ref(&namespace), true)
        .err()
        .unwrap_or_default();
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].field, "kind");
    assert!(
        diagnostics[0]
            .message
            .starts_with("Namespace objects come from the cluster"),
        "{}",
        diagnostics[0]
    );
    assert!(store.get(&namespace).is_some());
}

const SOURCE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: web}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-0, namespace: web, labels: {app: reviews}}
spec:
  containers: [{name: reviews, image: "reviews:v1"}]
status:
  phase: Pending
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: web}
spec:
  ports: [{port: 9080}]
"#;

#[test]
fn the_source_replaces_the_kubernetes_kinds_only() {
    let mut store = baseline();
    let config = store.config_objects();
    assert!(store.replace_source(parse_ok(SOURCE)));
    assert_eq!(store.config_objects(), config, "config objects are untouched");
    assert!(
        store.get(&key(Kind::Namespace, "", "default")).is_none(),
        "namespaces not in the source go"
    );
    assert_eq!(store.list(Kind::Pod, None).len(), 1);

    let revision = store.revision();
    assert!(!store.replace_source(parse_ok(SOURCE)), "the same set changes nothing");
    assert_eq!(store.revision(), revision);

    let ready = SOURCE.replace("phase: Pending", "phase: Running");
    assert!(store.replace_source(parse_ok(&ready)));
    let pod = stored(&store, Kind::Pod, "web", "reviews-0");
    assert_eq!(
        (pod.generation, pod.resource_version),
        (1, revision + 1),
        "a status change is no new generation"
    );

    let upgraded = ready.replace("reviews:v1", "reviews:v2");
    assert!(store.replace_source(parse_ok(&upgraded)));
    assert_eq!(stored(&store, Kind::Pod, "web", "reviews-0").generation, 2);
}

#[test]
fn the_source_ignores_config_kinds_and_nameless_objects() {
    let mut store = Store::default();
    let mut objects = parse_ok(&peer_authentication("{}"));
    let nameless = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n";
    let mut nameless = parse_ok(nameless);
    if let Some(Object::Namespace(namespace)) = nameless.first_mut() {
        namespace.metadata.name = None;
    }
    objects.extend(nameless);
    assert!(!store.replace_source(objects));
    assert_eq!(store, Store::default());
}

#[test]
fn lists_are_sorted_by_namespace_and_name() {
    let mut store = baseline();
    let policy = |namespace: &str, name: &str| {
        let meta = format!("{{name: {name}, namespace: {namespace}}}");
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {meta}\n---\n")
    };
    let text = policy("web", "zeta") + &policy("web", "alpha") + &policy("istio-system", "mesh");
    apply_ok(&mut store, &text);
    let listed = |namespace| -> Vec<String> {
        let stored = store.list(Kind::PeerAuthentication, namespace);
        stored
            .iter()
            .map(|stored| stored.object.key().qualified_name())
            .collect()
    };
    assert_eq!(listed(None), ["istio-system/mesh", "web/alpha", "web/zeta"]);
    assert_eq!(listed(Some("web")), ["web/alpha", "web/zeta"]);
    assert_eq!(listed(Some("default")), Vec::<String>::new());
    assert_eq!(store.list(Kind::Namespace, None).len(), 3);
    assert_eq!(
        store.list(Kind::Namespace, Some("web")).len(),
        3,
        "a cluster-scoped kind ignores the namespace"
    );
    let created: Vec<u64> = ["zeta", "alpha"]
        .map(|name| stored(&store, Kind::PeerAuthentication, "web", name).created)
        .into();
    assert!(created[0] < created[1], "created counts in order of application");
}

/// What `config_objects` returns, written as JSON and applied to a new store, gives the same config.
#[test]
fn config_objects_persist_and_restore() {
    let mut store = baseline();
    apply_ok(
        &mut store,
        &gateway("{gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}"),
    );
    apply_ok(
        &mut store,
        &http_route("{parentRefs: [{name: waypoint}], rules: [{backendRefs: [{name: web, port: 80}]}]}"),
    );
    let saved: Vec<serde_json::Value> = store.config_objects().iter().map(Object::to_json).collect();
    let text = serde_json::Value::Array(saved).to_string();

    let mut restored = Store::default();
    restored.replace_source(parse_ok(NAMESPACES));
    apply_ok(&mut restored, &text);
    assert_eq!(restored.config_objects(), store.config_objects());
    assert_eq!(store.objects().count(), restored.objects().count());
}

/// `restore` keeps persisted config whose namespace the source no longer lists, and still refuses invalid objects.
#[test]
fn restore_skips_only_the_namespace_check() {
    let orphan = authorization_policy("{action: DENY, rules: [{}]}").replace("namespace: web", "namespace: gone");
    let mut store = baseline();
    assert!(store.apply(parse_ok(&orphan)).is_err(), "apply needs the namespace");
    let before = store.clone();
    let results = store.restore(parse_ok(&orphan)).expect("restored");
    assert_eq!(results.len(), 1);
    assert_ne!(store, before);
    let mut objects = parse_ok(&authorization_policy(
        "{rules: [{from: [{source: {ipBlocks: ['10.0.0.0/8']}}]}]}",
    ));
    if let Some(Object::AuthorizationPolicy(policy)) = objects.first_mut()
        && let Some(source) = policy.spec.rules[0].from[0].source.as_mut()
    {
        source.ip_blocks = vec!["10.0.0.0/40".into()];
    }
    let mut fresh = baseline();
    let unchanged = fresh.clone();
    assert!(
        fresh.restore(objects).is_err(),
        "an invalid persisted object is refused"
    );
    assert_eq!(fresh, unchanged);
}

/// Objects built in code (not parsed) are validated by `apply` all the same.
#[test]
fn apply_validates_objects_built_in_code() {
    let mut store = baseline();
    let mut objects = parse_ok(&authorization_policy(
        "{rules: [{from: [{source: {ipBlocks: ['10.0.0.0/8']}}]}]}",
    ));
    if let Some(Object::AuthorizationPolicy(policy)) = objects.first_mut()
        && let Some(source) = policy.spec.rules[0].from[0].source.as_mut()
    {
        source.ip_blocks = vec!["10.0.0.0/40".into()];
    }
    objects.push(objects[0].clone());
    let before = store.clone();
    let diagnostics = store.apply(objects).err().unwrap_or_default();
    let fields: Vec<&str> = diagnostics.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        fields,
        ["spec.rules[0].from[0].source.ipBlocks[0]", "metadata.name"],
        "{}",
        lines(&diagnostics)
    );
    assert!(diagnostics[1].message.contains("appears twice in the batch"));
    assert_eq!(store, before);
}

/// A cluster source's list may exceed the API's limits: `parse_source` reads it, `parse` refuses it.
#[test]
fn a_cluster_source_is_not_held_to_the_api_limits() {
    let annotation = "x".repeat(10 * 1024);
    let pods: Vec<serde_json::Value> = (0..900)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("pod-{i}"), "namespace": "web", "annotations": {"note": annotation}},
                "spec": {"containers": [{"name": "c"}]}
            })
        })
        .collect();
    let text = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": pods}).to_string();
    assert!(text.len() > crate::MAX_TEXT_BYTES);
    assert!(crate::parse("objects.json", &text).is_err());
    let objects = crate::parse_source("objects.json", &text).expect("the whole list");
    assert_eq!(objects.len(), 900);
}

/// A trimmed pod keeps what translation and the CA read, and drops the rest.
#[test]
fn trimmed_pods_keep_what_the_mesh_reads() {
    let text = r#"{"apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "a", "namespace": "web", "uid": "u-1", "labels": {"app": "a"},
                   "annotations": {"ambient.istio.io/redirection": "enabled"},
                   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a-5d8f", "uid": "r", "controller": true}],
                   "managedFields": [{"manager": "kubectl"}]},
      "spec": {"nodeName": "node-1", "serviceAccountName": "api",
               "containers": [{"name": "app", "image": "app:1", "command": ["run"], "env": [{"name": "X", "value": "1"}],
                               "ports": [{"name": "http", "containerPort": 8080}]}]},
      "status": {"phase": "Running", "podIP": "10.0.0.5", "hostIP": "172.31.0.2",
                 "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}}"#;
    let pod = parse_ok(text).remove(0).trimmed();
    let json = pod.to_json();
    assert_eq!(json["metadata"]["labels"]["app"], "a");
    assert_eq!(
        json["metadata"]["annotations"]["ambient.istio.io/redirection"],
        "enabled"
    );
    assert_eq!(json["metadata"]["ownerReferences"][0]["name"], "a-5d8f");
    assert!(json["metadata"].get("managedFields").is_none(), "{json}");
    assert_eq!(json["spec"]["nodeName"], "node-1");
    assert_eq!(json["spec"]["serviceAccountName"], "api");
    let container = &json["spec"]["containers"][0];
    assert_eq!(
        (&container["name"], &container["ports"][0]["name"]),
        (&"app".into(), &"http".into())
    );
    assert!(container.get("command").is_none() && container.get("env").is_none() && container.get("image").is_none());
    assert_eq!(json["status"]["podIP"], "10.0.0.5");
    assert_eq!(
        json["status"]["conditions"].as_array().unwrap().len(),
        1,
        "only Ready: {json}"
    );
}

/// The cluster source is a JSON List; a bad item is located by its index.
#[test]
fn a_cluster_source_must_be_a_list_and_bad_items_are_located() {
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "web"}, "spec": {"containers": []}}"#;
    let problems = crate::parse_source("objects.json", pod).unwrap_err();
    assert!(problems[0].message.contains("v1 List"), "{problems:?}");
    let bad = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Not_A_Name"}}]}"#;
    let problems = crate::parse_source("objects.json", bad).unwrap_err();
    assert!(problems[0].field.starts_with("items[1]"), "{problems:?}");
    let truncated = &bad[..bad.len() - 3];
    assert!(
        crate::parse_source("objects.json", truncated).unwrap_err()[0]
            .message
            .contains("invalid JSON")
    );
}

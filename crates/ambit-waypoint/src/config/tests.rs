//! Tests of the L7 config handler: objects in, typed snapshot out, a bad response refused whole.

use ambit_api::envoy::service::discovery::v3::Resource;
use ambit_api::prost_types::Any;

use super::*;

const ROUTE: &str = r#"{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
  "metadata": {"name": "split", "namespace": "web"},
  "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "server", "port": 8080}],
           "rules": [{"backendRefs": [{"name": "server", "port": 8080, "weight": 90}]}]}}"#;
const POLICY: &str = r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
  "metadata": {"name": "no-admin", "namespace": "web"},
  "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "server"}], "action": "DENY",
           "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}}"#;
const GATEWAY: &str = r#"{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
  "metadata": {"name": "waypoint", "namespace": "web"},
  "spec": {"gatewayClassName": "istio-waypoint", "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}"#;

/// A resource as the control plane sends it, with `name` as its resource name.
fn resource(name: &str, kind: &str, namespace: &str, object: &str, json: &str) -> Resource {
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let wrapper = ConfigObject {
        api_version: value["apiVersion"].as_str().unwrap_or_default().to_string(),
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: object.to_string(),
        json: json.as_bytes().to_vec(),
    };
    Resource {
        name: name.to_string(),
        version: "1".to_string(),
        resource: Some(Any {
            type_url: CONFIG_OBJECT_TYPE_URL.to_string(),
            value: wrapper.encode_to_vec(),
        }),
        ..Resource::default()
    }
}

fn update(added: Vec<Resource>, removed: &[&str]) -> Update {
    Update {
        added,
        removed: removed.iter().map(ToString::to_string).collect(),
        initial: false,
    }
}

fn good() -> Vec<Resource> {
    vec![
        resource("HTTPRoute/web/split", "HTTPRoute", "web", "split", ROUTE),
        resource(
            "AuthorizationPolicy/web/no-admin",
            "AuthorizationPolicy",
            "web",
            "no-admin",
            POLICY,
        ),
        resource("Gateway/web/waypoint", "Gateway", "web", "waypoint", GATEWAY),
    ]
}

#[test]
fn objects_are_parsed_and_sorted_by_kind() {
    let (mut handler, rx) = ConfigHandler::new();
    handler.apply(update(good(), &[])).unwrap();
    let config = rx.borrow().clone();
    assert_eq!(config.http_routes.keys().collect::<Vec<_>>(), ["HTTPRoute/web/split"]);
    assert_eq!(
        config.policies.keys().collect::<Vec<_>>(),
        ["AuthorizationPolicy/web/no-admin"]
    );
    assert_eq!(config.gateways.keys().collect::<Vec<_>>(), ["Gateway/web/waypoint"]);
    assert!(config.grpc_routes.is_empty());
    let route = &config.http_routes["HTTPRoute/web/split"];
    assert_eq!(route.spec.rules[0].backend_refs[0].weight, Some(90));

    handler.apply(update(Vec::new(), &["HTTPRoute/web/split"])).unwrap();
    assert!(rx.borrow().http_routes.is_empty());
    assert_eq!(rx.borrow().policies.len(), 1);
}

#[test]
fn a_bad_resource_refuses_the_whole_response_and_keeps_the_last_good_config() {
    // (case, the bad resource, what the reason says)
    let cases: [(&str, Resource, &str); 5] = [
        (
            "name does not match",
            resource("HTTPRoute/web/other", "HTTPRoute", "web", "split", ROUTE),
            "does not name its object",
        ),
        (
            "invalid object",
            resource(
                "HTTPRoute/web/split",
                "HTTPRoute",
                "web",
                "split",
                &ROUTE.replace("\"weight\": 90", "\"weight\": -1"),
            ),
            "weight",
        ),
        (
            "not JSON",
            resource("HTTPRoute/web/split", "HTTPRoute", "web", "split", "{not json"),
            "JSON",
        ),
        (
            "not L7 config",
            resource(
                "Namespace//web",
                "Namespace",
                "",
                "web",
                r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}"#,
            ),
            "not L7 config",
        ),
        (
            "wrong namespace inside",
            resource("HTTPRoute/api/split", "HTTPRoute", "api", "split", ROUTE),
            "not HTTPRoute/api/split",
        ),
    ];
    for (case, bad, says) in cases {
        let (mut handler, rx) = ConfigHandler::new();
        handler.apply(update(good(), &[])).unwrap();
        let before = rx.borrow().http_routes.len() + rx.borrow().policies.len();
        let name = bad.name.clone();
        let mut added = vec![resource(
            "HTTPRoute/web/more",
            "HTTPRoute",
            "web",
            "more",
            &ROUTE.replace("split", "more"),
        )];
        added.push(bad);
        let rejected = handler.apply(update(added, &["Gateway/web/waypoint"])).unwrap_err();
        assert_eq!(rejected.len(), 1, "{case}: {rejected:?}");
        assert_eq!(rejected[0].name, name, "{case}");
        assert!(rejected[0].reason.contains(says), "{case}: {}", rejected[0].reason);
        // Nothing of the refused response was applied: not the good route, not the removal.
        let config = rx.borrow().clone();
        assert_eq!(config.http_routes.len() + config.policies.len(), before, "{case}");
        assert!(!config.http_routes.contains_key("HTTPRoute/web/more"), "{case}");
        assert_eq!(config.gateways.len(), 1, "{case}");
    }
}

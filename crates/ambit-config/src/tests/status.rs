//! The ZtunnelAccepted condition of AuthorizationPolicies, as istiod writes it, and objects with their status.

use serde_json::{Value, json};

use super::*;

/// The one condition of a policy with `spec`, or None.
fn condition(spec: &str) -> Option<Value> {
    let objects = parse_ok(&authorization_policy(spec));
    let status = policy_status(&objects[0], ROOT_NAMESPACE)?;
    let conditions = status.get("conditions")?.as_array()?;
    assert_eq!(conditions.len(), 1, "{status}");
    conditions.first().cloned()
}

#[test]
fn policy_status_follows_istiod() {
    let principal = "{from: [{source: {principals: ['cluster.local/ns/web/sa/a']}}]}";
    let cases = [
        (
            "applied",
            format!("{{rules: [{principal}]}}"),
            Some(("True", "Accepted", "attached to ztunnel")),
        ),
        (
            "HTTP attributes in ALLOW",
            "{rules: [{to: [{operation: {methods: [GET]}}]}]}".to_string(),
            Some((
                "True",
                "UnsupportedValue",
                "ztunnel does not support HTTP attributes (found: methods). In ambient mode you must use a waypoint \
                 proxy to enforce HTTP rules. Within an ALLOW policy, rules matching HTTP attributes are omitted",
            )),
        ),
        (
            "HTTP attributes in DENY",
            "{action: DENY, rules: [{to: [{operation: {ports: ['80'], paths: [/admin]}}]}]}".to_string(),
            Some((
                "True",
                "UnsupportedValue",
                "DENY policy with HTTP attributes is enforced without the HTTP rules",
            )),
        ),
        (
            "targetRefs",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]}".to_string(),
            None,
        ),
        (
            "CUSTOM",
            "{action: CUSTOM, provider: {name: ext}, rules: [{}]}".to_string(),
            Some((
                "False",
                "UnsupportedValue",
                "ztunnel does not support the CUSTOM action",
            )),
        ),
        (
            "AUDIT",
            format!("{{action: AUDIT, rules: [{principal}]}}"),
            Some(("False", "UnsupportedValue", "ztunnel does not support the AUDIT action")),
        ),
    ];
    for (name, spec, expected) in cases {
        let condition = condition(&spec);
        let Some((status, reason, message)) = expected else {
            assert_eq!(condition, None, "{name}");
            continue;
        };
        let condition = condition.unwrap_or_else(|| panic!("{name}: no condition"));
        assert_eq!(condition["type"], "ZtunnelAccepted", "{name}");
        assert_eq!(
            (condition["status"].as_str(), condition["reason"].as_str()),
            (Some(status), Some(reason)),
            "{name}"
        );
        let text = condition["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{name}: {text}");
    }
}

#[test]
fn only_authorization_policies_have_a_status() {
    for object in parse_ok(&(peer_authentication("{}") + "---\n" + &http_route("{}"))) {
        assert_eq!(policy_status(&object, ROOT_NAMESPACE), None, "{:?}", object.kind());
    }
}

#[test]
fn stored_objects_show_generation_version_and_status() {
    let mut store = baseline();
    let text = BASELINE_POLICY.replace("security.istio.io/v1", "security.istio.io/v1beta1");
    apply_ok(&mut store, &text.replace("\"8080\"", "\"9090\""));
    let stored = store.get(&key(Kind::AuthorizationPolicy, "web", "allow-frontend"));
    let json = stored
        .map(|stored| to_json_with_status(stored, ROOT_NAMESPACE))
        .unwrap_or_default();
    assert_eq!(json["apiVersion"], "security.istio.io/v1");
    assert_eq!(json["metadata"]["generation"], 2);
    assert_eq!(json["metadata"]["resourceVersion"], json!(store.revision().to_string()));
    let expected = json!({
        "type": "ZtunnelAccepted",
        "status": "True",
        "reason": "Accepted",
        "message": "attached to ztunnel",
        "observedGeneration": 2,
    });
    assert_eq!(json["status"]["conditions"], json!([expected]));

    let namespace = store.get(&key(Kind::Namespace, "", "web"));
    let json = namespace
        .map(|stored| to_json_with_status(stored, ROOT_NAMESPACE))
        .unwrap_or_default();
    assert_eq!(
        (json["kind"].as_str(), json["metadata"]["generation"].as_i64()),
        (Some("Namespace"), Some(1))
    );
    assert_eq!(json.get("status"), None);
}

//! The status the control plane reports on stored objects, in Istio's words: the `ZtunnelAccepted` condition of
//! an AuthorizationPolicy, and the object as `kubectl get -o yaml` would show it.

use ambit_policy::istio::AuthorizationPolicy;
use ambit_policy::{PolicyStatus, SkipReason, translate_authorization_policy};
use serde_json::{Value, json};

use crate::object::Object;
use crate::store::Stored;

/// The condition istiod writes on an AuthorizationPolicy about ztunnel (the node proxy).
pub const ZTUNNEL_ACCEPTED: &str = "ZtunnelAccepted";

/// One condition: (status, reason, message).
type Condition = (bool, &'static str, String);

/// The `status` of an AuthorizationPolicy as istiod reports it for the node proxy:
/// `{"conditions":[{"type":"ZtunnelAccepted","status":...,"reason":...,"message":...}]}`.
///
/// As istiod (`convertAuthorizationPolicy` and `WorkloadAuthorization.GetConditions`):
/// - enforced as written: `True`, `Accepted`, "attached to ztunnel";
/// - enforced with HTTP attributes dropped: `True`, `UnsupportedValue`, istiod's "ztunnel does not support HTTP
///   attributes ..." text (from ambit_policy's [`PolicyStatus`]);
/// - CUSTOM or AUDIT: `False`, `UnsupportedValue`, "ztunnel does not support the CUSTOM action";
/// - with `targetRef(s)`: None. istiod writes no `ZtunnelAccepted` condition on a waypoint's policy; the
///   `WaypointAccepted` condition is the waypoint binding's to report, which needs the Gateway, not this object.
///
/// A policy that does not translate (never stored: the store validates) gets `False`, `Invalid` and the error.
/// None for every other kind: istiod reports no status on PeerAuthentication, and this store none on the rest.
pub fn policy_status(object: &Object, root_namespace: &str) -> Option<Value> {
    let Object::AuthorizationPolicy(policy) = object else {
        return None;
    };
    let (status, reason, message) = ztunnel_condition(policy, root_namespace)?;
    let condition = json!({
        "type": ZTUNNEL_ACCEPTED,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
    });
    Some(json!({ "conditions": [condition] }))
}

fn ztunnel_condition(policy: &AuthorizationPolicy, root_namespace: &str) -> Option<Condition> {
    let translation = match translate_authorization_policy(policy, root_namespace) {
        Ok(translation) => translation,
        Err(error) => return Some((false, "Invalid", error.to_string())),
    };
    match translation.status {
        PolicyStatus::Applied => Some((true, "Accepted", "attached to ztunnel".to_string())),
        status @ PolicyStatus::PartiallyApplied { .. } => Some((true, "UnsupportedValue", status.to_string())),
        PolicyStatus::NotApplied {
            reason: SkipReason::DeferToWaypoint,
        } => None,
        PolicyStatus::NotApplied {
            reason: reason @ SkipReason::RejectAction(_),
        } => Some((false, "UnsupportedValue", reason.to_string())),
    }
}

/// A stored object as the API server returns it: [`Object::to_json`] with `metadata.generation`,
/// `metadata.resourceVersion` (a string, as Kubernetes writes it) and the [`policy_status`], whose conditions
/// carry `observedGeneration`.
pub fn to_json_with_status(stored: &Stored, root_namespace: &str) -> Value {
    let mut json = stored.object.to_json();
    if let Some(Value::Object(metadata)) = json.get_mut("metadata") {
        metadata.insert("generation".into(), stored.generation.into());
        metadata.insert("resourceVersion".into(), stored.resource_version.to_string().into());
    }
    if let (Some(mut status), Value::Object(map)) = (policy_status(&stored.object, root_namespace), &mut json) {
        observed(&mut status, stored.generation);
        map.insert("status".into(), status);
    }
    json
}

/// Sets `observedGeneration` on every condition.
fn observed(status: &mut Value, generation: i64) {
    let conditions = status.get_mut("conditions").and_then(Value::as_array_mut);
    for condition in conditions.into_iter().flatten() {
        if let Value::Object(condition) = condition {
            condition.insert("observedGeneration".into(), generation.into());
        }
    }
}

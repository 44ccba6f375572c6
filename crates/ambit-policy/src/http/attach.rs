//! Which AuthorizationPolicies attach to a waypoint, and to which of its requests, following istiod's
//! `WorkloadPolicyMatcher.ShouldAttachPolicy` for waypoint proxies.

use super::{Attachment, ServiceKey};
use crate::istio::{AuthorizationPolicy, PolicyTargetReference};

/// The GatewayClass of waypoints; a root-namespace policy targeting it applies to every waypoint.
pub const WAYPOINT_GATEWAY_CLASS: &str = "istio-waypoint";

const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
const ISTIO_NETWORKING_GROUP: &str = "networking.istio.io";

/// The waypoint whose policies are wanted: its Gateway, and the mesh root namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Waypoint {
    /// The namespace of the waypoint's Gateway.
    pub namespace: String,
    /// The name of the waypoint's Gateway.
    pub name: String,
    pub root_namespace: String,
}

/// Where `policy` attaches on `waypoint`, or `None` when it does not apply to the waypoint at all.
///
/// Only `targetRefs` (or the older single `targetRef`) attach a policy to a waypoint, as in istiod:
/// * a `Gateway` (`gateway.networking.k8s.io`) with the waypoint's name, from a policy in the waypoint's
///   namespace (a `targetRef.namespace`, if set, must be that namespace too): every request;
/// * the `istio-waypoint` `GatewayClass`, from a policy in the root namespace: every request of every waypoint;
/// * a `Service` (core group) or `ServiceEntry` (`networking.istio.io`): requests addressed to the service of that
///   name in the policy's namespace. istiod ignores `targetRef.namespace` here, and so does this.
///
/// A policy without `targetRefs` never attaches, whatever its selector: waypoints do not use selectors, and
/// namespace- and mesh-wide policies are enforced by the destination's node proxy. Other kinds (HTTPRoute, a classic
/// Istio Gateway, ...) do not attach either.
pub fn attachment(policy: &AuthorizationPolicy, waypoint: &Waypoint) -> Option<Attachment> {
    let namespace = &policy.metadata.namespace;
    let mut services = Vec::new();
    for target in target_refs(policy) {
        if attaches_whole(target, namespace, waypoint) {
            return Some(Attachment::Waypoint);
        }
        if let Some(service) = service_key(target, namespace)
            && !services.contains(&service)
        {
            services.push(service);
        }
    }
    (!services.is_empty()).then_some(Attachment::Services(services))
}

/// `targetRefs`, or the deprecated `targetRef` when `targetRefs` is empty.
fn target_refs(policy: &AuthorizationPolicy) -> impl Iterator<Item = &PolicyTargetReference> {
    let spec = &policy.spec;
    let legacy = spec.target_ref.iter().filter(|_| spec.target_refs.is_empty());
    spec.target_refs.iter().chain(legacy)
}

/// Whether the reference names the waypoint's Gateway or the waypoint GatewayClass.
fn attaches_whole(target: &PolicyTargetReference, policy_namespace: &str, waypoint: &Waypoint) -> bool {
    if target.group != GATEWAY_API_GROUP {
        return false;
    }
    match target.kind.as_str() {
        "GatewayClass" => target.name == WAYPOINT_GATEWAY_CLASS && policy_namespace == waypoint.root_namespace,
        "Gateway" => {
            let same_namespace = target
                .namespace
                .as_ref()
                .is_none_or(|ns| ns.is_empty() || *ns == waypoint.namespace);
            target.name == waypoint.name && policy_namespace == waypoint.namespace && same_namespace
        }
        _ => false,
    }
}

/// The service a `Service` or `ServiceEntry` reference names, in the policy's namespace.
fn service_key(target: &PolicyTargetReference, policy_namespace: &str) -> Option<ServiceKey> {
    let core = target.group.is_empty() || target.group == "core";
    match target.kind.as_str() {
        "Service" if core => Some(ServiceKey::service(policy_namespace, &target.name)),
        "ServiceEntry" if target.group == ISTIO_NETWORKING_GROUP => {
            Some(ServiceKey::service_entry(policy_namespace, &target.name))
        }
        _ => None,
    }
}

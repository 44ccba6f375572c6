//! What a running local cluster tells its control plane, in the shapes the Kubernetes API server would use:
//!
//! - [`cluster_objects`]: the cluster source (`objects.json`, rewritten by the supervisor whenever it changes): every
//!   Namespace, ServiceAccount, Pod (with its readiness and enrollment) and Service, as a v1 `List`. The control
//!   plane translates them into the node proxies' state, as istiod does from the API server.
//! - [`config_store`]: the first contents of the control plane's config store (`config-store.json`, written by
//!   `cluster up`): the manifests' AuthorizationPolicies, PeerAuthentications, Gateways, HTTPRoutes and GRPCRoutes,
//!   as a v1 `List`.
//!
//! Both are pure, and every list is in a stable order (namespace, then name), so the same cluster always gives the
//! same bytes and a rewrite happens only when something changed.

use std::collections::BTreeSet;

use ambit_config::Object;
use serde::Serialize;
use serde_json::Value;

use crate::endpoints::PodKey;
use crate::model::{ClusterPlan, GatewayApiObjects};
use crate::status::ClusterStatus;
use crate::view;

/// The `apiVersion` of Istio's security objects in the config store (the version Istio stores and serves).
pub const ISTIO_SECURITY_API_VERSION: &str = "security.istio.io/v1";
/// The ServiceAccount every namespace has.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The cluster's Kubernetes objects as a v1 `List`: Namespaces by name, ServiceAccounts (each namespace's
/// `default`, the declared ones and those pods use), Pods and Services, each by namespace and name. A pod is Ready
/// when `status` says so (the supervisor's readiness: every container ready) and carries the redirection
/// annotation when it is in `redirected`. A running cluster passes none: the node agents add the annotation through
/// the control plane once a pod's node proxy serves it (a manifest's own value is dropped); generated clusters (the
/// control-plane bench) pass the pods to show as redirected.
pub fn cluster_objects(plan: &ClusterPlan, status: Option<&ClusterStatus>, redirected: &BTreeSet<PodKey>) -> Value {
    let mut items = Vec::new();
    let mut namespaces: Vec<_> = plan.namespaces.iter().collect();
    namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    items.extend(
        namespaces
            .into_iter()
            .map(|namespace| to_value(view::namespace(namespace))),
    );
    let accounts = service_accounts(plan).into_iter();
    items.extend(accounts.map(|(namespace, name)| to_value(view::service_account(&namespace, &name))));
    let mut pods: Vec<_> = plan.pods.iter().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let pod = |pod: &crate::model::PodPlan| {
        let key = (pod.namespace.clone(), pod.name.clone());
        to_value(view::pod_with(plan, pod, status, redirected.contains(&key)))
    };
    items.extend(pods.into_iter().map(pod));
    let mut services: Vec<_> = plan.services.iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    items.extend(services.into_iter().map(|service| to_value(view::service(service))));
    view::list(&items)
}

/// The ServiceAccounts of the cluster as (namespace, name): `default` in every namespace, every declared one, and
/// every one a pod runs as (the loader makes the last a subset of the others; a pod's account is listed anyway, so
/// that no pod ever names an account the control plane has not seen).
fn service_accounts(plan: &ClusterPlan) -> BTreeSet<(String, String)> {
    let defaults = plan
        .namespaces
        .iter()
        .map(|ns| (ns.name.clone(), DEFAULT_SERVICE_ACCOUNT.to_string()));
    let declared = plan
        .service_accounts
        .iter()
        .map(|sa| (sa.namespace.clone(), sa.name.clone()));
    let used = plan
        .pods
        .iter()
        .map(|pod| (pod.namespace.clone(), pod.service_account.clone()));
    defaults.chain(declared).chain(used).collect()
}

/// The seed of the control plane's config store as a v1 `List`: the plan's AuthorizationPolicies, then its
/// PeerAuthentications, each in manifest order (a PeerAuthentication's position is its age, which settles
/// conflicts), as written with the namespace filled in, under `security.istio.io/v1`; then its Gateways, HTTPRoutes
/// and GRPCRoutes, each in manifest order, as the config store serves them (`gateway.networking.k8s.io/v1`).
pub fn config_store(plan: &ClusterPlan) -> Value {
    let authorization = plan.authorization_policies.iter();
    let authorization = authorization.map(|policy| istio_object("AuthorizationPolicy", &policy.metadata, &policy.spec));
    let peer = plan.peer_authentications.iter();
    let peer = peer.map(|policy| istio_object("PeerAuthentication", &policy.metadata, &policy.spec));
    let items: Vec<Value> = authorization
        .chain(peer)
        .chain(gateway_api(&plan.gateway_api))
        .collect();
    view::list(&items)
}

/// The Gateway API objects, each kind in manifest order, with their preferred `apiVersion` and `kind`.
fn gateway_api(objects: &GatewayApiObjects) -> impl Iterator<Item = Value> + '_ {
    let gateways = objects.gateways.iter().map(|o| Object::Gateway(Box::new(o.clone())));
    let http = objects
        .http_routes
        .iter()
        .map(|o| Object::HttpRoute(Box::new(o.clone())));
    let grpc = objects
        .grpc_routes
        .iter()
        .map(|o| Object::GrpcRoute(Box::new(o.clone())));
    gateways.chain(http).chain(grpc).map(|object| object.to_json())
}

/// An Istio object with its `apiVersion` and `kind`, which the policy types leave out.
fn istio_object(kind: &str, metadata: &impl Serialize, spec: &impl Serialize) -> Value {
    serde_json::json!({
        "apiVersion": ISTIO_SECURITY_API_VERSION,
        "kind": kind,
        "metadata": to_value(metadata),
        "spec": to_value(spec),
    })
}

fn to_value(value: impl Serialize) -> Value {
    // Kubernetes and Istio API types always serialize to JSON (their map keys are strings).
    serde_json::to_value(value).unwrap_or_default()
}

#[cfg(test)]
mod tests;

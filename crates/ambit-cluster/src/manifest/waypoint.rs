//! Waypoints: for every Gateway of class `istio-waypoint` (namespace N, name G), the objects istiod's gateway
//! controller would deploy, planned with the manifests' own objects:
//!
//! - ServiceAccount N/G.
//! - Pod N/`G-<suffix5>` (`suffix5`: the hash of cluster, N and G in the alphabet of generated names; the part
//!   before it cut to 58 characters as for a Deployment's pods), owned by the Deployment G, running as G, labelled
//!   `gateway.networking.k8s.io/gateway-name: G`, `gateway.istio.io/managed: istio.io-mesh-controller` and
//!   `istio.io/dataplane-mode: none` (never captured). One container `waypoint` runs `ambit waypoint --gateway G`
//!   (the supervisor gives every container `AMBIT_CLUSTER`, so it finds its cluster under any `--name`) with ports 15008 (`mesh`), 15020 (`metrics`) and 15021 (`status-port`), ready on an HTTP GET of
//!   `:15021/healthz/ready` every second; restart policy Always. It is placed like any pod (the Deployment G as its
//!   owner), on the node the Gateway's annotation `ambit.dev/node` names if it has one.
//! - Service N/G: ClusterIP, selecting `gateway.networking.k8s.io/gateway-name: G`, port 15008 named `mesh`, with the
//!   gateway-name and managed labels. The control plane calls the waypoint ready when this Service selects a ready
//!   pod.
//!
//! The Gateway's name must be an RFC 1035 label, as its Service's is. A ServiceAccount, Deployment, Pod or Service
//! of the manifests with the same namespace and name as one of these (or as the Deployment G) is an error on the
//! Gateway, naming the other document.
//!
//! A waypoint Gateway applied to a running cluster (`ambit apply`) gets the same objects from the supervisor, which
//! follows the control plane's config store: [`unplanned`] finds the waypoint Gateways without a pod, and
//! [`plan_added`] plans their objects against the running cluster's plan by the loader's rules (placement as in
//! `schedule`, the next free pod IP of the node and the next free ClusterIP), refusing what clashes with the plan's
//! objects; [`with_added`] is the plan that includes them. Deleting such a Gateway leaves its pod running
//! ([`orphaned`] names those pods), as the plan never shrinks while the cluster runs.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ambit_config::Object;
use ambit_config::gateway::Gateway;

use crate::model::{
    ClusterPlan, ContainerPort, NodePlan, PodPlan, Probe, ProbeAction, Protocol, RestartPolicy, ServiceAccountPlan,
    ServicePlan, ServicePort, TargetPort,
};

use super::container::ContainerSpec;
use super::deployment::MAX_GENERATED_BASE;
use super::document::DEFAULT_NAMESPACE;
use super::env::{self, PodFacts};
use super::hash;
use super::meta::{Kind, Meta};
use super::plan::Context;
use super::pod::PodSpecChecked;
use super::schedule::MAX_PODS_PER_NODE;
use super::service::FIRST_ALLOCATED;
use super::service::{Address, ServiceChecked};
use super::syntax;
use super::workload::PodSource;
use super::{Labels, Origin, Report, Scope};

/// The class of waypoint Gateways.
pub(super) const WAYPOINT_CLASS: &str = ambit_policy::http::WAYPOINT_GATEWAY_CLASS;
/// The annotation of a waypoint Gateway that pins its pod to a node.
pub(super) const NODE_ANNOTATION: &str = "ambit.dev/node";
/// The label naming a pod's or Service's Gateway.
pub(super) const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// The label marking what a gateway controller deployed, and its value for waypoints
/// (`ambit_control::translate::{GATEWAY_MANAGED_LABEL, MESH_CONTROLLER}`).
pub(super) const MANAGED_LABEL: &str = "gateway.istio.io/managed";
pub(super) const MESH_CONTROLLER: &str = "istio.io-mesh-controller";
/// The waypoint pod opts out of capture: it terminates HBONE itself.
const DATAPLANE_MODE_LABEL: &str = crate::mesh::DATAPLANE_MODE_LABEL;
/// The program of the waypoint's container: the ambit binary, which the supervisor puts first in `PATH`.
pub(super) const PROGRAM: &str = "ambit";
pub(super) const CONTAINER: &str = "waypoint";
/// HBONE, where node proxies send the waypoint's traffic; the Service's only port.
pub(super) const MESH_PORT: u16 = 15008;
pub(super) const METRICS_PORT: u16 = 15020;
/// Readiness (`/healthz/ready`).
pub(super) const STATUS_PORT: u16 = 15021;
pub(super) const READY_PATH: &str = "/healthz/ready";
const SUFFIX_LEN: usize = 5;

/// A waypoint Gateway of the manifests: valid, and the first with its namespace and name.
#[derive(Clone, Debug)]
pub(super) struct Waypoint<'a> {
    /// The Gateway document.
    pub origin: &'a Origin,
    pub namespace: String,
    pub name: String,
    /// The node of the annotation `ambit.dev/node`, a node of the cluster.
    pub node: Option<String>,
}

/// The objects of one waypoint.
struct Made<'a> {
    /// The ServiceAccount, named like the Deployment that owns the pod.
    account: Meta,
    pod: PodSource<'a>,
    service: ServiceChecked<'a>,
}

/// The waypoint of a valid Gateway (`scope` at its document), if its class is `istio-waypoint`: its name must suit
/// a Service, and its node annotation name a node.
pub(super) fn of<'a>(
    origin: &'a Origin,
    gateway: &Gateway,
    context: &Context<'_>,
    scope: &mut Scope<'_>,
) -> Option<Waypoint<'a>> {
    if gateway.spec.gateway_class_name != WAYPOINT_CLASS {
        return None;
    }
    let metadata = &gateway.metadata;
    let name = metadata.name.clone().unwrap_or_default();
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let before = scope.errors();
    if let Err(reason) = syntax::dns_1035_label(&name) {
        let message = format!("a waypoint's name is its Service's: {name:?} {reason}");
        scope.error("metadata.name", message);
    }
    let annotations = metadata.annotations.as_ref();
    let node = annotations.and_then(|annotations| annotations.get(NODE_ANNOTATION));
    let node = node.and_then(|node| check_node(node, context, scope));
    let waypoint = Waypoint {
        origin,
        namespace,
        name,
        node,
    };
    (scope.errors() == before).then_some(waypoint)
}

/// The node of the annotation: one of the cluster's.
fn check_node(node: &str, context: &Context<'_>, scope: &mut Scope<'_>) -> Option<String> {
    let field = format!("metadata.annotations[{NODE_ANNOTATION:?}]");
    let nodes = context.nodes.unwrap_or_default();
    let known = context.nodes.is_none() || nodes.iter().any(|known| known == node);
    if !known {
        let nodes = nodes.join(", ");
        return scope.fail(&field, format!("unknown node {node:?}; nodes are: {nodes}"));
    }
    Some(node.to_string())
}

/// Adds the objects of every waypoint of cluster `cluster` to the pods (each at its Gateway's position in document
/// order) and the services, and their ServiceAccounts to the context. A waypoint whose objects clash with others is
/// reported on its Gateway and left out.
pub(super) fn add<'a>(
    cluster: &str,
    waypoints: &[Waypoint<'a>],
    pods: &mut Vec<PodSource<'a>>,
    services: &mut Vec<ServiceChecked<'a>>,
    context: &mut Context<'_>,
    report: &mut Report,
) {
    for waypoint in waypoints {
        let made = made(cluster, waypoint);
        if claim(&made, waypoint, context, &mut report.scope(waypoint.origin)) {
            let Made { account, pod, service } = made;
            context.accounts.add(account.namespace, account.name);
            pods.push(pod);
            services.push(service);
        }
    }
    pods.sort_by_key(|pod| pod.origin.seq);
}

/// The ServiceAccount, Pod and Service of a waypoint.
fn made<'a>(cluster: &str, waypoint: &Waypoint<'a>) -> Made<'a> {
    let account = object_meta(waypoint, waypoint.name.clone(), Labels::new());
    let name = pod_name(cluster, &waypoint.namespace, &waypoint.name);
    let pod = PodSource {
        origin: waypoint.origin,
        meta: object_meta(waypoint, name, pod_labels(&waypoint.name)),
        owner: Some(waypoint.name.clone()),
        spec: pod_spec(&waypoint.name, waypoint.node.clone()),
    };
    let service = ServiceChecked {
        origin: waypoint.origin,
        meta: object_meta(waypoint, waypoint.name.clone(), managed_labels(&waypoint.name)),
        address: Address::Allocate,
        selector: selector(&waypoint.name),
        ports: vec![service_port()],
    };
    Made { account, pod, service }
}

fn object_meta(waypoint: &Waypoint<'_>, name: String, labels: Labels) -> Meta {
    Meta {
        namespace: waypoint.namespace.clone(),
        name,
        labels,
        annotations: Labels::new(),
    }
}

/// `G-<suffix5>`, the suffix a hash of cluster, namespace and Gateway.
fn pod_name(cluster: &str, namespace: &str, gateway: &str) -> String {
    let base = format!("{gateway}-");
    let base: String = base.chars().take(MAX_GENERATED_BASE).collect();
    let key = format!("{cluster}\0{namespace}\0{gateway}");
    let suffix = hash::alnum(hash::fnv1a(key.as_bytes()), SUFFIX_LEN);
    format!("{base}{suffix}")
}

fn selector(gateway: &str) -> Labels {
    Labels::from([(GATEWAY_NAME_LABEL.to_string(), gateway.to_string())])
}

/// The gateway-name and managed labels, of the pod and the Service.
fn managed_labels(gateway: &str) -> Labels {
    let mut labels = selector(gateway);
    labels.insert(MANAGED_LABEL.to_string(), MESH_CONTROLLER.to_string());
    labels
}

fn pod_labels(gateway: &str) -> Labels {
    let mut labels = managed_labels(gateway);
    labels.insert(DATAPLANE_MODE_LABEL.to_string(), "none".to_string());
    labels
}

/// The pod spec of the waypoint of Gateway `gateway`, pinned to `node` if given.
fn pod_spec(gateway: &str, node: Option<String>) -> PodSpecChecked {
    PodSpecChecked {
        node_name: node,
        service_account: gateway.to_string(),
        restart_policy: RestartPolicy::Always,
        containers: vec![container(gateway)],
    }
}

fn container(gateway: &str) -> ContainerSpec {
    let argv = [PROGRAM, "waypoint", "--gateway", gateway];
    let ports = [
        ("mesh", MESH_PORT),
        ("metrics", METRICS_PORT),
        ("status-port", STATUS_PORT),
    ];
    ContainerSpec {
        name: CONTAINER.to_string(),
        argv: argv.map(str::to_string).to_vec(),
        env: Vec::new(),
        working_dir: None,
        ports: ports.map(|(name, port)| container_port(name, port)).to_vec(),
        readiness: Some(readiness()),
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        port,
        protocol: Protocol::Tcp,
    }
}

/// GET `:15021/healthz/ready` every second; the other settings Kubernetes' defaults.
fn readiness() -> Probe {
    Probe {
        action: ProbeAction::Http {
            port: STATUS_PORT,
            path: READY_PATH.to_string(),
        },
        initial_delay_seconds: 0,
        period_seconds: 1,
        timeout_seconds: 1,
        failure_threshold: 3,
        success_threshold: 1,
    }
}

fn service_port() -> ServicePort {
    ServicePort {
        name: Some("mesh".to_string()),
        port: MESH_PORT,
        protocol: Protocol::Tcp,
        target: TargetPort::Number(MESH_PORT),
    }
}

/// Records the waypoint's objects in the registry; whether none was taken (each one taken is reported).
fn claim(made: &Made<'_>, waypoint: &Waypoint<'_>, context: &mut Context<'_>, scope: &mut Scope<'_>) -> bool {
    let location = format!(
        "{} (Gateway {}/{})",
        scope.origin.location(),
        waypoint.namespace,
        waypoint.name
    );
    let objects = [
        (Kind::ServiceAccount, &made.account),
        (Kind::Deployment, &made.account),
        (Kind::Pod, &made.pod.meta),
        (Kind::Service, &made.service.meta),
    ];
    let mut free = true;
    for (kind, meta) in objects {
        if let Err(first) = context.registry.claim(kind, meta, location.clone()) {
            let (kind, object) = (kind.name(), meta.qualified());
            let message = format!("its waypoint needs {kind} {object}, which is already defined in {first}");
            scope.error("metadata.name", message);
            free = false;
        }
    }
    free
}

// === waypoints applied to a running cluster ===

/// The objects a waypoint Gateway applied to a running cluster adds to its plan.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Added {
    pub account: ServiceAccountPlan,
    pub pod: PodPlan,
    pub service: ServicePlan,
}

/// The waypoint Gateways (class `istio-waypoint`) among `objects` (the config store's) that have no waypoint pod in
/// `plan` yet, in order: those applied after `cluster up`.
pub(crate) fn unplanned<'o>(plan: &ClusterPlan, objects: &'o [Object]) -> Vec<&'o Gateway> {
    let planned: BTreeSet<(String, String)> = plan.pods.iter().filter_map(served).collect();
    let unplanned = |gateway: &&Gateway| !planned.contains(&key(gateway));
    waypoint_gateways(objects).filter(unplanned).collect()
}

/// The waypoint pods of `plan` whose Gateway is not among `objects` (it was deleted), as (namespace, pod name): they
/// keep running, as the plan of a running cluster never shrinks.
pub(crate) fn orphaned(plan: &ClusterPlan, objects: &[Object]) -> Vec<(String, String)> {
    let gateways: BTreeSet<(String, String)> = waypoint_gateways(objects).map(key).collect();
    let orphan = |pod: &PodPlan| {
        let gateway = served(pod)?;
        let pod = (pod.namespace.clone(), pod.name.clone());
        (!gateways.contains(&gateway)).then_some(pod)
    };
    plan.pods.iter().filter_map(orphan).collect()
}

/// Plans the ServiceAccount, Pod and Service of the waypoint of `gateway`, applied to the running cluster of `plan`,
/// as the loader plans those of the manifests' waypoints: the same names, labels, container and environment; the
/// node of its `ambit.dev/node` annotation or else the node running the fewest pods (the first of those), the first
/// free address of that node's pod range, and the first free ClusterIP. An error names the Gateway's field at
/// fault: a class other than `istio-waypoint`, a name that cannot name a Service, a namespace or node the cluster
/// does not have, an object of the plan with a name the waypoint needs, a full node or serviceCIDR.
pub(crate) fn plan_added(plan: &ClusterPlan, gateway: &Gateway) -> Result<Added, String> {
    let class = &gateway.spec.gateway_class_name;
    if class != WAYPOINT_CLASS {
        return Err(format!("spec.gatewayClassName: {class:?} is not {WAYPOINT_CLASS:?}"));
    }
    let (namespace, name) = key(gateway);
    let invalid = |reason| format!("metadata.name: a waypoint's name is its Service's: {name:?} {reason}");
    syntax::dns_1035_label(&name).map_err(invalid)?;
    if plan.namespace(&namespace).is_none() {
        let message = "is not one of the cluster's (namespaces are made by `cluster up`)";
        return Err(format!("metadata.namespace: namespace {namespace:?} {message}"));
    }
    let pod = pod_name(&plan.name, &namespace, &name);
    check_free(plan, &namespace, &name, &pod)?;
    let node = node_for(plan, gateway)?;
    let ip = free_pod_ip(plan, node)?;
    let cluster_ip = free_cluster_ip(plan)?;
    Ok(Added {
        account: ServiceAccountPlan {
            namespace: namespace.clone(),
            name: name.clone(),
        },
        pod: pod_plan(plan, &namespace, &name, pod, node, ip),
        service: ServicePlan {
            namespace,
            name: name.clone(),
            cluster_ip: Some(cluster_ip),
            selector: selector(&name),
            ports: vec![service_port()],
            labels: managed_labels(&name),
        },
    })
}

/// `plan` with a waypoint's objects: the pod appended (so the positions of the pods before it stay valid), the
/// ServiceAccount and the Service at their places in (namespace, name) order.
pub(crate) fn with_added(mut plan: ClusterPlan, added: Added) -> ClusterPlan {
    let Added { account, pod, service } = added;
    let accounts = &mut plan.service_accounts;
    let at = accounts.partition_point(|other| (&other.namespace, &other.name) < (&account.namespace, &account.name));
    accounts.insert(at, account);
    let services = &mut plan.services;
    let at = services.partition_point(|other| (&other.namespace, &other.name) < (&service.namespace, &service.name));
    services.insert(at, service);
    plan.pods.push(pod);
    plan
}

/// The Gateways of class `istio-waypoint` among `objects`.
fn waypoint_gateways(objects: &[Object]) -> impl Iterator<Item = &Gateway> {
    objects.iter().filter_map(|object| match object {
        Object::Gateway(gateway) if gateway.spec.gateway_class_name == WAYPOINT_CLASS => Some(gateway.as_ref()),
        _ => None,
    })
}

/// A Gateway's (namespace, name); a namespaced object that names no namespace is in `default`.
fn key(gateway: &Gateway) -> (String, String) {
    let metadata = &gateway.metadata;
    let namespace = metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let name = metadata.name.clone().unwrap_or_default();
    (namespace.to_string(), name)
}

/// The Gateway (namespace, name) a pod is the waypoint of: the gateway-name label of a pod the mesh controller
/// deployed.
fn served(pod: &PodPlan) -> Option<(String, String)> {
    let managed = pod
        .labels
        .get(MANAGED_LABEL)
        .is_some_and(|value| value == MESH_CONTROLLER);
    let gateway = pod.labels.get(GATEWAY_NAME_LABEL).filter(|_| managed)?;
    Some((pod.namespace.clone(), gateway.clone()))
}

/// Fails naming every object of the plan that has a name the waypoint of Gateway `namespace/gateway` needs: its
/// ServiceAccount, Deployment (a pod owned by it), Pod or Service.
fn check_free(plan: &ClusterPlan, namespace: &str, gateway: &str, pod: &str) -> Result<(), String> {
    let is = |object_namespace: &str, object: &str, name: &str| object_namespace == namespace && object == name;
    let taken = [
        (
            "ServiceAccount",
            gateway,
            (plan.service_accounts.iter()).any(|sa| is(&sa.namespace, &sa.name, gateway)),
        ),
        (
            "Deployment",
            gateway,
            (plan.pods.iter()).any(|p| is(&p.namespace, p.owner.as_deref().unwrap_or_default(), gateway)),
        ),
        ("Pod", pod, plan.pod(namespace, pod).is_some()),
        (
            "Service",
            gateway,
            (plan.services.iter()).any(|s| is(&s.namespace, &s.name, gateway)),
        ),
    ];
    let taken: Vec<String> = (taken.iter())
        .filter(|(_, _, taken)| *taken)
        .map(|(kind, name, _)| format!("{kind} {namespace}/{name}"))
        .collect();
    match taken[..] {
        [] => Ok(()),
        _ => Err(format!(
            "metadata.name: its waypoint needs {}, which the cluster already has",
            taken.join(" and ")
        )),
    }
}

/// The node of the Gateway's `ambit.dev/node` annotation, or else the node running the fewest pods, the first of
/// those (the scheduler's choice for the first pod of a Deployment).
fn node_for<'p>(plan: &'p ClusterPlan, gateway: &Gateway) -> Result<&'p NodePlan, String> {
    let annotations = gateway.metadata.annotations.as_ref();
    let Some(node) = annotations.and_then(|annotations| annotations.get(NODE_ANNOTATION)) else {
        let load = |node: &&NodePlan| plan.pods.iter().filter(|pod| pod.node == node.name).count();
        return plan
            .nodes
            .iter()
            .min_by_key(load)
            .ok_or_else(|| "the cluster has no node".to_string());
    };
    plan.node(node).ok_or_else(|| {
        let nodes: Vec<&str> = plan.nodes.iter().map(|node| node.name.as_str()).collect();
        let nodes = nodes.join(", ");
        format!("metadata.annotations[{NODE_ANNOTATION:?}]: unknown node {node:?}; nodes are: {nodes}")
    })
}

/// The first address of the node's pod range from `.2` on that no pod holds (`.1` is the node's gateway), within
/// the node's capacity, as the scheduler hands them out.
fn free_pod_ip(plan: &ClusterPlan, node: &NodePlan) -> Result<Ipv4Addr, String> {
    let used: BTreeSet<Ipv4Addr> = plan.pods.iter().map(|pod| pod.ip).collect();
    let range = (2..2 + MAX_PODS_PER_NODE).filter_map(|n| node.pod_cidr.nth(n));
    let mut free = range.filter(|ip| !used.contains(ip));
    let full = || format!("node {} is full: at most {MAX_PODS_PER_NODE} pods per node", node.name);
    free.next().ok_or_else(full)
}

/// The first address of serviceCIDR from its 16th on that no Service holds, neither the DNS server's nor the
/// broadcast address, as the loader allocates ClusterIPs.
fn free_cluster_ip(plan: &ClusterPlan) -> Result<Ipv4Addr, String> {
    let cidr = plan.service_cidr;
    let held = plan.services.iter().filter_map(|service| service.cluster_ip);
    let used: BTreeSet<Ipv4Addr> = held.chain([plan.dns_ip]).collect();
    let range = (FIRST_ALLOCATED..cidr.size().saturating_sub(1)).filter_map(|n| cidr.nth(n));
    let mut free = range.filter(|ip| !used.contains(ip));
    let exhausted = || format!("no address left in serviceCIDR {cidr} (allocation starts at its 16th)");
    free.next().ok_or_else(exhausted)
}

/// The waypoint pod `namespace/name` of Gateway `gateway` on `node` at `ip`, its containers' environment resolved as
/// the loader resolves every pod's.
fn pod_plan(
    plan: &ClusterPlan,
    namespace: &str,
    gateway: &str,
    name: String,
    node: &NodePlan,
    ip: Ipv4Addr,
) -> PodPlan {
    let spec = pod_spec(gateway, Some(node.name.clone()));
    let (labels, annotations) = (pod_labels(gateway), Labels::new());
    let uid = hash::uid(&plan.name, namespace, &name);
    let facts = PodFacts {
        name: &name,
        namespace,
        uid: &uid,
        node: &node.name,
        service_account: &spec.service_account,
        ip,
        host_ip: node.address,
        labels: &labels,
        annotations: &annotations,
    };
    let containers = spec.containers.iter();
    let containers = containers
        .map(|container| env::container_plan(container, &facts))
        .collect();
    PodPlan {
        namespace: namespace.to_string(),
        name,
        uid,
        node: node.name.clone(),
        ip,
        labels,
        annotations,
        service_account: spec.service_account,
        restart_policy: spec.restart_policy,
        owner: Some(gateway.to_string()),
        containers,
    }
}

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
//! Gateway, naming the other document. Only the manifests' Gateways get a waypoint: one applied later with
//! `ambit apply` has no pod.

use ambit_config::gateway::Gateway;

use crate::model::{ContainerPort, Probe, ProbeAction, Protocol, RestartPolicy, ServicePort, TargetPort};

use super::container::ContainerSpec;
use super::deployment::MAX_GENERATED_BASE;
use super::hash;
use super::meta::{Kind, Meta};
use super::plan::Context;
use super::pod::PodSpecChecked;
use super::service::{Address, ServiceChecked};
use super::syntax;
use super::workload::PodSource;
use super::{Labels, Origin, Report, Scope};

/// The class of waypoint Gateways (`ambit_control::translate::WAYPOINT_CLASS`).
pub(super) const WAYPOINT_CLASS: &str = "istio-waypoint";
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
    let pod = PodSource {
        origin: waypoint.origin,
        meta: object_meta(waypoint, pod_name(cluster, waypoint), pod_labels(&waypoint.name)),
        owner: Some(waypoint.name.clone()),
        spec: pod_spec(waypoint),
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
fn pod_name(cluster: &str, waypoint: &Waypoint<'_>) -> String {
    let base = format!("{}-", waypoint.name);
    let base: String = base.chars().take(MAX_GENERATED_BASE).collect();
    let key = format!("{cluster}\0{}\0{}", waypoint.namespace, waypoint.name);
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

fn pod_spec(waypoint: &Waypoint<'_>) -> PodSpecChecked {
    PodSpecChecked {
        node_name: waypoint.node.clone(),
        service_account: waypoint.name.clone(),
        restart_policy: RestartPolicy::Always,
        containers: vec![container(&waypoint.name)],
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

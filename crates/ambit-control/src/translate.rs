//! Translation of the cluster's Kubernetes objects and the user's Istio config into the workload API the node
//! proxies receive ([`StateFile`]), as istiod builds it for ztunnel (ambient §2.1, §3.3–3.5, §4.3–4.4, §5.1). Pure:
//! the same objects always give the same, sorted, state.
//!
//! - One Workload per Pod that has an IP and has not terminated: uid `<cluster id>//Pod/<namespace>/<name>`, HBONE
//!   only once the node agent has annotated the pod `ambient.istio.io/redirection: enabled` (so peers tunnel only
//!   to pods whose capture is in place), HEALTHY when the pod is Ready, the canonical name and revision from its
//!   labels, the workload name and type from its controller, and the Services that select it with their TCP target
//!   ports resolved against its container ports.
//! - One Service per Kubernetes Service: `<name>.<namespace>.svc.<cluster domain>`, its cluster IPs (none when
//!   headless), its TCP ports (a named target port sent as 0, which each endpoint resolves).
//! - Waypoints bound by `istio.io/use-waypoint` on the object or its Namespace. Unlike istiod, which publishes a
//!   waypoint only once it has a ready pod and lets traffic go direct until then (bypassing its L7 policy without a
//!   word), a binding is published even when the waypoint is not ready or does not exist, so the node proxies fail
//!   that traffic closed and say why; [`BYPASS_UNREADY_WAYPOINT_LABEL`] on the object or its Namespace restores
//!   istiod's behaviour.
//! - Every AuthorizationPolicy the node proxy enforces, and the DENY policies PeerAuthentications become.
//!   Workloads list the selector-scoped ones that select them; namespace and global ones are found by scope.
//!
//! Only TCP ports are published: the mesh carries TCP, and a port listed for two protocols would be a duplicate in
//! the workload API. Objects whose names the workload API cannot carry are left out rather than published wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ambit_node::state::model::{
    AppProtocol, GatewayAddress, Hostname, Namespace, NetworkAddress, Port, PortMapping, Service, ServiceAccount,
    ServiceKey, TunnelProtocol, Workload, WorkloadStatus, WorkloadType, WorkloadUid,
};
use ambit_node::state::source::StateFile;
use ambit_policy::istio::{AuthorizationPolicy, PeerAuthentication, WorkloadSelector};
use ambit_policy::{
    Authorization, MtlsPolicy, PolicyRef, WorkloadMeta, peer_authentication_policies, translate_authorization_policy,
};
use ambit_telemetry::WorkloadInfo;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The pod annotation the node agent sets once the pod's traffic is captured: `enabled` (or `pending` while the node
/// proxy has not acknowledged the pod yet).
pub const REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";
/// The [`REDIRECTION_ANNOTATION`] value that makes a workload reachable over HBONE.
pub const REDIRECTION_ENABLED: &str = "enabled";
/// Binds a Pod, Service or every one of a Namespace to a waypoint by name; [`NO_WAYPOINT`] opts out.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// The namespace of the waypoint [`USE_WAYPOINT_LABEL`] names, when it is not the object's own.
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
/// On a waypoint Gateway: which objects may bind to it (`service`, the default, `workload`, `all` or `none`).
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
/// The `gatewayClassName` of waypoints.
pub const WAYPOINT_CLASS: &str = ambit_policy::http::WAYPOINT_GATEWAY_CLASS;
/// The [`USE_WAYPOINT_LABEL`] value that opts out of the namespace's waypoint.
pub const NO_WAYPOINT: &str = "none";
/// The label istiod puts on the waypoint's own pods and Service ([`MESH_CONTROLLER`]): a waypoint has no waypoint.
pub const GATEWAY_MANAGED_LABEL: &str = "gateway.istio.io/managed";
/// The [`GATEWAY_MANAGED_LABEL`] value of waypoints.
pub const MESH_CONTROLLER: &str = "istio.io-mesh-controller";
/// `"true"` on a Service, Pod or Namespace: while its waypoint is not ready (or missing), its traffic goes direct, as
/// with istiod, instead of failing closed. The object's own value wins over its Namespace's.
pub const BYPASS_UNREADY_WAYPOINT_LABEL: &str = "ambit.dev/bypass-unready-waypoint";
/// The `waypoint-for` of a waypoint that does not say, and of one that does not exist.
const DEFAULT_WAYPOINT_FOR: &str = "service";
/// The label a Deployment's pods carry with the suffix of their ReplicaSet's name.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Everything translation reads: the cluster's objects and the user's config, oldest first within each kind
/// (PeerAuthentication conflicts are settled by age). Borrowed, so translating a large store copies no object.
#[derive(Clone, Debug, Default)]
pub struct Inputs<'a> {
    pub namespaces: Vec<&'a core::Namespace>,
    pub pods: Vec<&'a core::Pod>,
    pub services: Vec<&'a core::Service>,
    pub authorization_policies: Vec<&'a AuthorizationPolicy>,
    pub peer_authentications: Vec<&'a PeerAuthentication>,
    pub gateways: &'a [WaypointGateway],
}

/// The parts of a Gateway API Gateway that waypoint binding reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaypointGateway {
    pub namespace: String,
    pub name: String,
    pub class_name: String,
    pub labels: BTreeMap<String, String>,
}

/// The mesh-wide names translation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The DNS suffix of Service hostnames, `cluster.local`.
    pub cluster_domain: String,
    /// Istio's root namespace, `istio-system`: its policies without a selector apply mesh-wide.
    pub root_namespace: String,
    /// The cluster id written into workload uids and `cluster_id`, istiod's default `Kubernetes`.
    pub cluster_id: String,
    /// The mesh's trust domain: every workload's identity is `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
    pub trust_domain: ambit_types::TrustDomain,
}

/// A waypoint named by an object's labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct WaypointName {
    namespace: String,
    name: String,
}

/// What an object's own [`USE_WAYPOINT_LABEL`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Binding {
    OptOut,
    To(WaypointName),
}

/// A waypoint Gateway as binding sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WaypointState<'a> {
    waypoint_for: &'a str,
    ready: bool,
}

/// The kind of object asking for a waypoint, which the waypoint's [`WAYPOINT_FOR_LABEL`] must allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binder {
    Workload,
    Service,
}

/// The objects translation looks things up in, indexed once.
struct Cluster<'a> {
    settings: &'a Settings,
    namespace_labels: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    services_by_namespace: BTreeMap<&'a str, Vec<&'a core::Service>>,
    /// The waypoint Gateways (class `istio-waypoint`), with their `waypoint-for` value and whether they are ready
    /// to serve (a Service of the Gateway's name with a ready pod).
    waypoints: BTreeMap<WaypointName, WaypointState<'a>>,
}

/// An enforced AuthorizationPolicy that selects workloads by label.
struct Selecting {
    namespace: String,
    selector: WorkloadSelector,
    policy: PolicyRef,
}

/// The policies of the mesh, translated once.
struct MeshPolicies {
    selecting: Vec<Selecting>,
    peer: Vec<MtlsPolicy>,
    /// Every authorization to publish, by (namespace, name).
    all: BTreeMap<(String, String), Authorization>,
}

/// Labels of an object that has none.
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// The workload API state for these objects: workloads sorted by uid, services by key, policies by name.
pub fn translate(inputs: &Inputs<'_>, settings: &Settings) -> StateFile {
    let cluster = Cluster::new(inputs, settings);
    let mut policies = MeshPolicies::new(inputs, &settings.root_namespace);
    let mut workloads = BTreeMap::new();
    for workload in inputs.pods.iter().filter_map(|pod| cluster.workload(pod)) {
        // A uid seen twice is one pod listed twice: the first (oldest) copy stays.
        if !workloads.contains_key(&workload.uid) {
            let mut workload = workload;
            workload.authorization_policies = policies.for_workload(&workload, &settings.root_namespace);
            workloads.insert(workload.uid.clone(), workload);
        }
    }
    let mut services = BTreeMap::new();
    for service in inputs.services.iter().filter_map(|svc| cluster.service(svc)) {
        services.entry(service.key()).or_insert(service);
    }
    StateFile {
        workloads: workloads.into_values().collect(),
        services: services.into_values().collect(),
        policies: policies.all.into_values().collect(),
    }
}

/// `<name>.<namespace>.svc.<cluster domain>`.
pub fn service_hostname(name: &str, namespace: &str, settings: &Settings) -> String {
    format!("{name}.{namespace}.svc.{}", settings.cluster_domain)
}

/// The workload name and type of a pod, from its controller: a ReplicaSet `web-7d4b9c` is Deployment `web` (its
/// name without the pod's `pod-template-hash`, as istiod strips it, or else without its last `-` part); another
/// controller (a StatefulSet, a Job) gives its own name and type Pod; no controller, the pod's name and type Pod.
/// istiod differs for other controllers: Jobs are JOB or CRONJOB, and the rest are named after the pod.
pub fn workload_name_and_type(pod: &core::Pod) -> (String, WorkloadType) {
    let mut owners = pod.metadata.owner_references.iter().flatten();
    let Some(controller) = owners.find(|owner| owner.controller == Some(true)) else {
        return (
            name_of(&pod.metadata).unwrap_or_default().to_string(),
            WorkloadType::Pod,
        );
    };
    if controller.kind != "ReplicaSet" {
        return (controller.name.clone(), WorkloadType::Pod);
    }
    let hash = labels_of(&pod.metadata).get(POD_TEMPLATE_HASH_LABEL);
    (deployment_name(&controller.name, hash), WorkloadType::Deployment)
}

/// The Deployment of a ReplicaSet named `<deployment>-<hash>`.
fn deployment_name(replica_set: &str, hash: Option<&String>) -> String {
    let by_label = hash.and_then(|hash| replica_set.strip_suffix(hash.as_str())?.strip_suffix('-'));
    let by_shape = || replica_set.rsplit_once('-').map(|(deployment, _)| deployment);
    let name = by_label.or_else(by_shape).filter(|name| !name.is_empty());
    name.unwrap_or(replica_set).to_string()
}

/// HBONE once the node agent reports the pod's capture in place ([`REDIRECTION_ANNOTATION`] `enabled`).
fn tunnel_protocol(pod: &core::Pod) -> TunnelProtocol {
    let annotations = pod.metadata.annotations.as_ref();
    let redirection = annotations.and_then(|a| a.get(REDIRECTION_ANNOTATION));
    match redirection.map(String::as_str) {
        Some(REDIRECTION_ENABLED) => TunnelProtocol::Hbone,
        _ => TunnelProtocol::None,
    }
}

/// The pod's IPs (`status.podIPs`, else `status.podIP`), unless it has terminated (Succeeded or Failed): a pod
/// without them is no workload.
fn live_addresses(pod: &core::Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut texts: Vec<&str> = status.pod_ips.iter().flatten().map(|ip| ip.ip.as_str()).collect();
    if texts.is_empty() {
        texts.extend(status.pod_ip.as_deref());
    }
    parse_ips(texts)
}

/// The addresses among `texts`, in order, each once; what is not an IP address (`None`, empty) is left out.
fn parse_ips<'t>(texts: impl IntoIterator<Item = &'t str>) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    for ip in texts.into_iter().filter_map(|text| text.parse().ok()) {
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    addresses
}

/// Whether the pod's `Ready` condition is `True`.
fn is_ready(pod: &core::Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether the pod can serve: it is a live workload and Ready.
fn is_serving(pod: &core::Pod) -> bool {
    !live_addresses(pod).is_empty() && is_ready(pod)
}

/// `spec.serviceAccountName`, or `default`.
fn service_account_name(pod: &core::Pod) -> &str {
    let name = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref());
    name.filter(|name| !name.is_empty()).unwrap_or("default")
}

fn name_of(meta: &ObjectMeta) -> Option<&str> {
    meta.name.as_deref().filter(|name| !name.is_empty())
}

/// The object's namespace; `default` when unset, as the API server fills it in.
fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
}

fn labels_of(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    meta.labels.as_ref().unwrap_or(&NO_LABELS)
}

/// Whether the Service's selector is set and every one of its labels is among `labels`.
fn selects(svc: &core::Service, labels: &BTreeMap<String, String>) -> bool {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    selector.is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Whether a port's protocol is TCP (the default).
fn is_tcp(protocol: Option<&String>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

/// The Service's TCP ports, with their numbers; ports out of range are left out.
fn tcp_ports(svc: &core::Service) -> impl Iterator<Item = (u16, &core::ServicePort)> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).into_iter().flatten();
    let ports = ports.filter(|port| is_tcp(port.protocol.as_ref()));
    ports.filter_map(|port| Some((nonzero_port(port.port)?, port)))
}

/// A Service port's protocol as Istio selects it: `appProtocol`, else the port name's prefix (`http-web`, `grpc`);
/// `Unknown` when neither says (the waypoint then looks at the first bytes).
fn app_protocol(port: &core::ServicePort) -> AppProtocol {
    let named = |text: &str| match text.to_ascii_lowercase().as_str() {
        "http" | "http1" => Some(AppProtocol::Http11),
        "http2" | "h2c" | "kubernetes.io/h2c" => Some(AppProtocol::Http2),
        "grpc" | "grpc-web" => Some(AppProtocol::Grpc),
        "tcp" => Some(AppProtocol::Tcp),
        "tls" | "https" | "kubernetes.io/wss" => Some(AppProtocol::Tls),
        _ => None,
    };
    let declared = port.app_protocol.as_deref().and_then(named);
    let from_name = || {
        port.name
            .as_deref()
            .and_then(|name| named(name.split('-').next().unwrap_or_default()))
    };
    declared.or_else(from_name).unwrap_or(AppProtocol::Unknown)
}

fn nonzero_port(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|port| *port != 0)
}

/// A Service port's target as the Service publishes it: a number (the service port when unset), or 0 when named.
fn published_target(service_port: u16, port: &core::ServicePort) -> u16 {
    match &port.target_port {
        None => service_port,
        Some(IntOrString::Int(number)) => nonzero_port(*number).unwrap_or(0),
        Some(IntOrString::String(_)) => 0,
    }
}

/// A Service port's target on one pod: a number as is, a name resolved against the pod's TCP container ports.
fn pod_target(pod: &core::Pod, service_port: u16, port: &core::ServicePort) -> Option<u16> {
    let name = match &port.target_port {
        None => return Some(service_port),
        Some(IntOrString::Int(number)) => return nonzero_port(*number),
        Some(IntOrString::String(name)) => name,
    };
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let ports = containers.iter().flat_map(|c| c.ports.iter().flatten());
    let mut named = ports.filter(|p| p.name.as_ref() == Some(name) && is_tcp(p.protocol.as_ref()));
    named.find_map(|p| nonzero_port(p.container_port))
}

/// The Service's cluster IPs (`clusterIPs`, else `clusterIP`); none when headless (`None`) or unset.
fn cluster_ips(svc: &core::Service) -> Vec<IpAddr> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let mut texts: Vec<&str> = spec.cluster_ips.iter().flatten().map(String::as_str).collect();
    if texts.is_empty() {
        texts.extend(spec.cluster_ip.as_deref());
    }
    parse_ips(texts)
}

/// What an object's own labels say about its waypoint; `None` when they say nothing. The waypoint's namespace is
/// `default_namespace` unless [`USE_WAYPOINT_NAMESPACE_LABEL`] names another.
fn binding(labels: &BTreeMap<String, String>, default_namespace: &str) -> Option<Binding> {
    let name = labels.get(USE_WAYPOINT_LABEL)?;
    if name == NO_WAYPOINT {
        return Some(Binding::OptOut);
    }
    let namespace = labels
        .get(USE_WAYPOINT_NAMESPACE_LABEL)
        .map_or(default_namespace, String::as_str);
    Some(Binding::To(WaypointName {
        namespace: namespace.to_string(),
        name: name.clone(),
    }))
}

/// Whether a waypoint's `istio.io/waypoint-for` value lets `binder` bind to it.
fn allows(waypoint_for: &str, binder: Binder) -> bool {
    matches!(
        (waypoint_for, binder),
        ("all", _) | ("workload", Binder::Workload) | ("service", Binder::Service)
    )
}

// === impl Settings ===

impl Default for Settings {
    /// istiod's defaults: `cluster.local`, `istio-system`, `Kubernetes`, trust domain `cluster.local`.
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_string(),
            root_namespace: "istio-system".to_string(),
            cluster_id: "Kubernetes".to_string(),
            trust_domain: ambit_node::state::model::default_trust_domain(),
        }
    }
}

// === impl Cluster ===

impl<'a> Cluster<'a> {
    fn new(inputs: &Inputs<'a>, settings: &'a Settings) -> Self {
        let namespaces = inputs.namespaces.iter();
        let namespace_labels = namespaces.filter_map(|ns| Some((name_of(&ns.metadata)?, labels_of(&ns.metadata))));
        let mut services_by_namespace: BTreeMap<&str, Vec<&core::Service>> = BTreeMap::new();
        for svc in &inputs.services {
            services_by_namespace
                .entry(namespace_of(&svc.metadata))
                .or_default()
                .push(svc);
        }
        let mut cluster = Self {
            settings,
            namespace_labels: namespace_labels.collect(),
            services_by_namespace,
            waypoints: BTreeMap::new(),
        };
        cluster.waypoints = cluster.waypoint_states(inputs);
        cluster
    }

    /// The waypoint Gateways (class `istio-waypoint`) and whether each can serve: a Service of the Gateway's name
    /// that selects a ready pod (istiod gives the Gateway an address only then).
    fn waypoint_states(&self, inputs: &Inputs<'a>) -> BTreeMap<WaypointName, WaypointState<'a>> {
        let gateways = inputs.gateways.iter().filter(|gw| gw.class_name == WAYPOINT_CLASS);
        let entry = |gw: &'a WaypointGateway| {
            let waypoint_for = gw
                .labels
                .get(WAYPOINT_FOR_LABEL)
                .map_or(DEFAULT_WAYPOINT_FOR, String::as_str);
            let name = WaypointName {
                namespace: gw.namespace.clone(),
                name: gw.name.clone(),
            };
            let ready = self.has_ready_endpoint(&inputs.pods, &gw.namespace, &gw.name);
            (name, WaypointState { waypoint_for, ready })
        };
        gateways.map(entry).collect()
    }

    fn has_ready_endpoint(&self, pods: &[&core::Pod], namespace: &str, name: &str) -> bool {
        let Some(svc) = self
            .services_in(namespace)
            .find(|svc| name_of(&svc.metadata) == Some(name))
        else {
            return false;
        };
        let in_namespace = pods.iter().filter(|pod| namespace_of(&pod.metadata) == namespace);
        in_namespace
            .filter(|pod| selects(svc, labels_of(&pod.metadata)))
            .any(|pod| is_serving(pod))
    }

    fn services_in(&self, namespace: &str) -> impl Iterator<Item = &'a core::Service> {
        self.services_by_namespace.get(namespace).into_iter().flatten().copied()
    }

    /// The workload of a pod, without its policies; `None` when the pod is not a live workload or its names are
    /// not valid in the workload API.
    fn workload(&self, pod: &core::Pod) -> Option<Workload> {
        let settings = self.settings;
        let (name, namespace) = (name_of(&pod.metadata)?, namespace_of(&pod.metadata));
        let addresses = live_addresses(pod);
        if addresses.is_empty() {
            return None;
        }
        let uid = WorkloadUid::new(&format!("{}//Pod/{namespace}/{name}", settings.cluster_id)).ok()?;
        let mut workload = Workload::new(uid, Namespace::new(namespace).ok()?);
        workload.trust_domain = settings.trust_domain.clone();
        let labels = labels_of(&pod.metadata);
        let (workload_name, workload_type) = workload_name_and_type(pod);
        // Istio's canonical service and revision rules, as telemetry labels them.
        let info = WorkloadInfo::from_labels(&workload_name, namespace, labels, &settings.cluster_id);
        workload.name = name.to_string();
        workload.addresses = addresses;
        workload.tunnel_protocol = tunnel_protocol(pod);
        workload.service_account = ServiceAccount::new(service_account_name(pod)).ok()?;
        workload.waypoint = self.waypoint(&pod.metadata, Binder::Workload);
        workload.node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        workload.canonical_name = info.canonical_service.to_string();
        workload.canonical_revision = info.canonical_revision.to_string();
        workload.workload_type = workload_type;
        workload.workload_name = workload_name;
        workload.services = self.endpoint_of(pod, namespace, labels);
        workload.status = if is_ready(pod) {
            WorkloadStatus::Healthy
        } else {
            WorkloadStatus::Unhealthy
        };
        workload.cluster_id = settings.cluster_id.clone();
        workload.labels = labels.clone();
        Some(workload)
    }

    /// The Services of the pod's namespace that select it, each with its TCP ports mapped to the pod's (a named
    /// port the pod does not have is left out).
    fn endpoint_of(
        &self,
        pod: &core::Pod,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> BTreeMap<ServiceKey, Vec<PortMapping>> {
        let selecting = self.services_in(namespace).filter(|svc| selects(svc, labels));
        let mapping = |svc: &core::Service| {
            let ports = tcp_ports(svc).filter_map(|(service_port, port)| {
                let target_port = pod_target(pod, service_port, port)?;
                Some(PortMapping {
                    service_port,
                    target_port,
                })
            });
            Some((self.service_key(svc)?, ports.collect()))
        };
        selecting.filter_map(mapping).collect()
    }

    /// The Service of a Kubernetes Service; `None` when its names are not valid in the workload API.
    fn service(&self, svc: &core::Service) -> Option<Service> {
        let key = self.service_key(svc)?;
        let mut service = Service::new(name_of(&svc.metadata)?, key.namespace, key.hostname);
        let address = |address| NetworkAddress {
            network: String::new(),
            address,
        };
        service.addresses = cluster_ips(svc).into_iter().map(address).collect();
        let port = |(service_port, port): (u16, &core::ServicePort)| Port {
            service_port,
            target_port: published_target(service_port, port),
            app_protocol: app_protocol(port),
        };
        service.ports = tcp_ports(svc).map(port).collect();
        service.waypoint = self.waypoint(&svc.metadata, Binder::Service);
        Some(service)
    }

    fn service_key(&self, svc: &core::Service) -> Option<ServiceKey> {
        let (name, namespace) = (name_of(&svc.metadata)?, namespace_of(&svc.metadata));
        let hostname = Hostname::new(&service_hostname(name, namespace, self.settings)).ok()?;
        Some(ServiceKey::new(Namespace::new(namespace).ok()?, hostname))
    }

    /// The waypoint of a Pod or Service: the one its labels name, else its Namespace's, if that waypoint lets
    /// `binder` bind (one that does not exist is taken as the default, `service`). A waypoint that is not ready, or
    /// does not exist, is still published, so the node proxies fail the traffic closed (no endpoint to reach), unless
    /// [`BYPASS_UNREADY_WAYPOINT_LABEL`] says to go direct meanwhile. A waypoint's own pods and Service have none.
    fn waypoint(&self, meta: &ObjectMeta, binder: Binder) -> Option<GatewayAddress> {
        let labels = labels_of(meta);
        if labels.get(GATEWAY_MANAGED_LABEL).is_some_and(|v| v == MESH_CONTROLLER) {
            return None;
        }
        let namespace = namespace_of(meta);
        let inherited = || binding(self.namespace_labels.get(namespace)?, namespace);
        let Binding::To(name) = binding(labels, namespace).or_else(inherited)? else {
            return None;
        };
        let state = self.waypoints.get(&name).copied().unwrap_or(WaypointState {
            waypoint_for: DEFAULT_WAYPOINT_FOR,
            ready: false,
        });
        if !allows(state.waypoint_for, binder) {
            return None;
        }
        if !state.ready && self.bypasses_unready(labels, namespace) {
            return None;
        }
        let hostname = Hostname::new(&service_hostname(&name.name, &name.namespace, self.settings)).ok()?;
        let key = ServiceKey::new(Namespace::new(&name.namespace).ok()?, hostname);
        // On the HBONE port 15008, the waypoint Gateway's only listener.
        Some(GatewayAddress::hostname(key))
    }
}

// === impl Cluster (waypoints) ===

impl Cluster<'_> {
    /// Whether [`BYPASS_UNREADY_WAYPOINT_LABEL`] is `true` on the object, or, when the object does not set it, on its
    /// Namespace.
    fn bypasses_unready(&self, labels: &BTreeMap<String, String>, namespace: &str) -> bool {
        let own = labels.get(BYPASS_UNREADY_WAYPOINT_LABEL);
        let inherited = || self.namespace_labels.get(namespace)?.get(BYPASS_UNREADY_WAYPOINT_LABEL);
        own.or_else(inherited).is_some_and(|value| value == "true")
    }
}

// === impl MeshPolicies ===

impl MeshPolicies {
    /// Translates the policies. The config store validated each one, so none should fail; one that does is left
    /// out, as are those the node proxy does not enforce (waypoint-bound, CUSTOM, AUDIT).
    fn new(inputs: &Inputs<'_>, root_namespace: &str) -> Self {
        let mut policies = Self {
            selecting: Vec::new(),
            peer: Vec::new(),
            all: BTreeMap::new(),
        };
        for policy in &inputs.authorization_policies {
            policies.add_authorization(policy, root_namespace);
        }
        let peer = inputs.peer_authentications.iter().zip(0..);
        let peer = peer.filter_map(|(pa, index)| MtlsPolicy::from_peer_authentication(pa, index).ok());
        policies.peer = peer.collect();
        policies
    }

    fn add_authorization(&mut self, policy: &AuthorizationPolicy, root_namespace: &str) {
        let translated = translate_authorization_policy(policy, root_namespace).ok();
        let Some(authorization) = translated.and_then(|translation| translation.authorization) else {
            return;
        };
        let selector = policy.spec.selector.as_ref().filter(|s| !s.match_labels.is_empty());
        if let Some(selector) = selector {
            self.selecting.push(Selecting {
                namespace: policy.metadata.namespace.clone(),
                selector: selector.clone(),
                policy: authorization.policy_ref(),
            });
        }
        self.insert(authorization);
    }

    fn insert(&mut self, authorization: Authorization) {
        let key = (authorization.namespace.clone(), authorization.name.clone());
        self.all.entry(key).or_insert(authorization);
    }

    /// The selector-scoped policies that apply to a workload: the AuthorizationPolicies of its namespace (or of the
    /// root namespace) that select it, sorted, then those its PeerAuthentications become (added to the published
    /// policies).
    fn for_workload(&mut self, workload: &Workload, root_namespace: &str) -> Vec<PolicyRef> {
        let namespace = workload.namespace.as_str();
        let applies = |s: &&Selecting| {
            let in_scope = s.namespace == namespace || s.namespace == root_namespace;
            in_scope && s.selector.selects(&workload.labels)
        };
        let selected: BTreeSet<PolicyRef> = self
            .selecting
            .iter()
            .filter(applies)
            .map(|s| s.policy.clone())
            .collect();
        let mut refs: Vec<PolicyRef> = selected.into_iter().collect();
        let meta = WorkloadMeta {
            namespace,
            labels: &workload.labels,
        };
        let mtls = peer_authentication_policies(&self.peer, &meta, root_namespace);
        refs.extend(mtls.policy_refs());
        mtls.authorizations.into_iter().for_each(|a| self.insert(a));
        refs
    }
}

#[cfg(test)]
mod tests;

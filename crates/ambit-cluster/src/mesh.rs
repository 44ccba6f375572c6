//! The mesh state of a running cluster: the node proxy's state file ([`StateFile`]), built from the plan and the
//! pods' readiness as istiod would build the Workload API for ztunnel.
//!
//! - One Workload per pod: uid `Kubernetes//Pod/<ns>/<name>`, HBONE when the pod is enrolled in ambient ([`enrolled`]),
//!   which is correct from the start because `cluster up` installs an enrolled pod's capture when it creates the
//!   pod's namespace, before any of its containers starts (so it only ever talks through the tunnel); HEALTHY when
//!   ready, the canonical name and revision from the labels Istio reads, and the services that select
//!   it with their target ports resolved on this pod.
//! - One Service per planned service: `<name>.<ns>.svc.<domain>`, its ClusterIP (none when headless), and its
//!   ports, a named target port sent as 0 as Istio does.
//! - The policies: every AuthorizationPolicy the node proxy enforces, and the DENY policies PeerAuthentications
//!   turn into. Workloads list the selector-scoped ones that apply to them.
//!
//! Only TCP ports are published: the mesh carries TCP, and a service port listed for two protocols would be a
//! duplicate in the Workload API. Everything here is pure.

use std::collections::{BTreeMap, BTreeSet};

use ambit_node::state::model::{
    Hostname, Namespace, NetworkAddress, Port, PortMapping, Service, ServiceAccount, ServiceKey, TunnelProtocol,
    Workload, WorkloadStatus, WorkloadType, WorkloadUid,
};
use ambit_node::state::source::StateFile;
use ambit_policy::istio::AuthorizationPolicy;
use ambit_policy::{
    Authorization, MtlsPolicy, PolicyRef, WorkloadMeta, peer_authentication_policies, translate_authorization_policy,
};
use ambit_telemetry::WorkloadInfo;

use crate::endpoints::PodKey;
use crate::model::{ClusterPlan, PodPlan, Protocol, ROOT_NAMESPACE, ServicePlan, TargetPort};

/// The label that enrolls a pod, or every pod of a namespace, in ambient.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// The cluster id of every workload, as istiod's default.
const CLUSTER_ID: &str = "Kubernetes";

/// The policies of the mesh, translated once.
struct MeshPolicies {
    /// The enforced AuthorizationPolicies that select workloads by label, with their source.
    selecting: Vec<(AuthorizationPolicy, PolicyRef)>,
    peer: Vec<MtlsPolicy>,
    /// Every authorization to publish, by (namespace, name).
    all: BTreeMap<(String, String), Authorization>,
}

/// The state file for this plan, with `ready` pods healthy and `enrolled` pods reached over HBONE.
pub fn mesh_state(plan: &ClusterPlan, ready: &BTreeSet<PodKey>, enrolled: &BTreeSet<PodKey>) -> StateFile {
    let mut policies = MeshPolicies::new(plan);
    let workloads = plan.pods.iter().filter_map(|pod| {
        let key = (pod.namespace.clone(), pod.name.clone());
        let mut workload = workload(plan, pod, ready.contains(&key), enrolled.contains(&key))?;
        workload.authorization_policies = policies.for_pod(pod);
        Some(workload)
    });
    let workloads = workloads.collect();
    let services = plan.services.iter().filter_map(|svc| service(plan, svc)).collect();
    let policies = policies.all.into_values().collect();
    StateFile {
        workloads,
        services,
        policies,
    }
}

/// The pods enrolled in ambient: label `istio.io/dataplane-mode=ambient` on the pod, or on its namespace unless the
/// pod's label is `none`.
pub fn enrolled(plan: &ClusterPlan) -> BTreeSet<PodKey> {
    let namespace_mode = |pod: &PodPlan| plan.namespace(&pod.namespace)?.labels.get(DATAPLANE_MODE_LABEL);
    let is_enrolled = |pod: &&PodPlan| match pod.labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) {
        Some("ambient") => true,
        Some("none") => false,
        _ => namespace_mode(pod).is_some_and(|mode| mode == "ambient"),
    };
    let keys = plan.pods.iter().filter(is_enrolled);
    keys.map(|pod| (pod.namespace.clone(), pod.name.clone())).collect()
}

/// The uid of a pod's workload, `Kubernetes//Pod/<namespace>/<name>`; None if the names are not valid in the
/// Workload API (see [`workload`]).
pub fn workload_uid(pod: &PodPlan) -> Option<WorkloadUid> {
    WorkloadUid::new(&format!("{CLUSTER_ID}//Pod/{}/{}", pod.namespace, pod.name)).ok()
}

/// The workload of a pod, without its policies; None if a name of the plan is not valid in the Workload API
/// (the loader's checks make that impossible; such a pod is left out rather than published wrong).
fn workload(plan: &ClusterPlan, pod: &PodPlan, ready: bool, enrolled: bool) -> Option<Workload> {
    let uid = workload_uid(pod)?;
    let mut workload = Workload::new(uid, Namespace::new(&pod.namespace).ok()?);
    let workload_name = pod.owner.clone().unwrap_or_else(|| pod.name.clone());
    workload.name = pod.name.clone();
    workload.addresses = vec![pod.ip.into()];
    // Capture is installed when an enrolled pod's namespace is made, before any container starts (`runtime`).
    workload.tunnel_protocol = if enrolled {
        TunnelProtocol::Hbone
    } else {
        TunnelProtocol::None
    };
    workload.service_account = ServiceAccount::new(&pod.service_account).ok()?;
    workload.node = pod.node.clone();
    // Istio's canonical service and revision rules, as telemetry labels them.
    let info = WorkloadInfo::from_labels(&workload_name, &pod.namespace, &pod.labels, CLUSTER_ID);
    workload.canonical_name = info.canonical_service.to_string();
    workload.canonical_revision = info.canonical_revision.to_string();
    workload.workload_type = if pod.owner.is_some() {
        WorkloadType::Deployment
    } else {
        WorkloadType::Pod
    };
    workload.workload_name = workload_name;
    workload.services = endpoint_of(plan, pod);
    workload.status = if ready {
        WorkloadStatus::Healthy
    } else {
        WorkloadStatus::Unhealthy
    };
    workload.cluster_id = CLUSTER_ID.to_string();
    workload.labels = pod.labels.clone();
    Some(workload)
}

/// The services that select the pod, each with its TCP ports mapped to the pod's (unresolved named ports left out).
fn endpoint_of(plan: &ClusterPlan, pod: &PodPlan) -> BTreeMap<ServiceKey, Vec<PortMapping>> {
    let selecting = plan
        .services
        .iter()
        .filter(|svc| svc.namespace == pod.namespace && pod.matches(&svc.selector));
    let mapping = |svc: &ServicePlan| {
        let ports = svc.ports.iter().filter(|port| port.protocol == Protocol::Tcp);
        let mappings = ports.filter_map(|port| {
            let target_port = pod.resolve_target(&port.target, port.protocol)?;
            Some(PortMapping {
                service_port: port.port,
                target_port,
            })
        });
        Some((service_key(plan, svc)?, mappings.collect()))
    };
    selecting.filter_map(mapping).collect()
}

/// The Service of a planned service; None if its names are not valid in the Workload API (see [`workload`]).
fn service(plan: &ClusterPlan, svc: &ServicePlan) -> Option<Service> {
    let namespace = Namespace::new(&svc.namespace).ok()?;
    let mut service = Service::new(&svc.name, namespace, Hostname::new(&hostname(plan, svc)).ok()?);
    let address = |ip: std::net::Ipv4Addr| NetworkAddress {
        network: String::new(),
        address: ip.into(),
    };
    service.addresses = svc.cluster_ip.map(address).into_iter().collect();
    let ports = svc.ports.iter().filter(|port| port.protocol == Protocol::Tcp);
    let port = |port: &crate::model::ServicePort| Port {
        service_port: port.port,
        target_port: match port.target {
            TargetPort::Number(number) => number,
            TargetPort::Name(_) => 0,
        },
        ..Port::default()
    };
    service.ports = ports.map(port).collect();
    Some(service)
}

/// `<name>.<namespace>.svc.<cluster domain>`.
fn hostname(plan: &ClusterPlan, svc: &ServicePlan) -> String {
    format!("{}.{}.svc.{}", svc.name, svc.namespace, plan.cluster_domain)
}

fn service_key(plan: &ClusterPlan, svc: &ServicePlan) -> Option<ServiceKey> {
    let namespace = Namespace::new(&svc.namespace).ok()?;
    Some(ServiceKey::new(namespace, Hostname::new(&hostname(plan, svc)).ok()?))
}

// === impl MeshPolicies ===

impl MeshPolicies {
    /// Translates the plan's policies. The loader translated each one already, so none fails here; one that did
    /// would be left out, as it would never have been loaded.
    fn new(plan: &ClusterPlan) -> Self {
        let mut policies = Self {
            selecting: Vec::new(),
            peer: Vec::new(),
            all: BTreeMap::new(),
        };
        for policy in &plan.authorization_policies {
            policies.add_authorization(policy);
        }
        let peer = plan.peer_authentications.iter().zip(0..);
        let peer = peer.filter_map(|(pa, index)| MtlsPolicy::from_peer_authentication(pa, index).ok());
        policies.peer = peer.collect();
        policies
    }

    fn add_authorization(&mut self, policy: &AuthorizationPolicy) {
        let translated = translate_authorization_policy(policy, ROOT_NAMESPACE).ok();
        let Some(authorization) = translated.and_then(|translation| translation.authorization) else {
            return;
        };
        let has_selector = policy
            .spec
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if has_selector {
            self.selecting.push((policy.clone(), authorization.policy_ref()));
        }
        self.insert(authorization);
    }

    fn insert(&mut self, authorization: Authorization) {
        let key = (authorization.namespace.clone(), authorization.name.clone());
        self.all.entry(key).or_insert(authorization);
    }

    /// The selector-scoped policies that apply to a pod: AuthorizationPolicies of its namespace (or of the root
    /// namespace) that select it, then those its PeerAuthentications become (added to the published policies).
    fn for_pod(&mut self, pod: &PodPlan) -> Vec<PolicyRef> {
        let applies = |(policy, _): &&(AuthorizationPolicy, PolicyRef)| {
            let namespace = &policy.metadata.namespace;
            let in_scope = *namespace == pod.namespace || namespace == ROOT_NAMESPACE;
            let selects = policy.spec.selector.as_ref().is_some_and(|s| s.selects(&pod.labels));
            in_scope && selects
        };
        let mut refs: Vec<PolicyRef> = self.selecting.iter().filter(applies).map(|(_, r)| r.clone()).collect();
        let meta = WorkloadMeta {
            namespace: &pod.namespace,
            labels: &pod.labels,
        };
        let mtls = peer_authentication_policies(&self.peer, &meta, ROOT_NAMESPACE);
        refs.extend(mtls.policy_refs());
        mtls.authorizations
            .into_iter()
            .for_each(|authorization| self.insert(authorization));
        refs
    }
}

#[cfg(test)]
mod tests;

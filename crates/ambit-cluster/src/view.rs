//! The cluster as Kubernetes API objects: Nodes, Pods and Services built from the plan and the supervisor's status,
//! shaped as the API server would return them, for `ambit get -o yaml|json` and for the control plane's cluster
//! source (`objects`).
//!
//! Pods carry what Istio reads from the API server: IPs, node, service account, container ports (named targetPorts
//! resolve against them), the Ready condition, a controller ReplicaSet for a Deployment's pods, and the
//! `ambient.istio.io/redirection` annotation that Istio's CNI agent writes on a pod once capture is in place.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::manifest::hash;
use crate::model::{ClusterPlan, NamespacePlan, NodePlan, PodPlan, ServicePlan, TargetPort};
use crate::status::{ClusterStatus, ContainerState, Phase};

/// The annotation Istio's CNI agent sets to `enabled` on a pod once its traffic is redirected to the node proxy;
/// istiod reaches a pod over HBONE only when it is set. The node agent owns it (it patches it through the control
/// plane once the node proxy serves the pod), whatever a manifest says.
pub const REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";
/// The label the Deployment controller puts on its ReplicaSets' pods: the pod template's hash.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The label the API server puts on every Namespace: its name (so that selectors can pick namespaces by name).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Length of the template hash and of the random suffix in a Deployment pod's name (see `manifest::deployment`).
const TEMPLATE_HASH_LEN: usize = 10;
const POD_SUFFIX_LEN: usize = 5;

fn meta(name: &str, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: (!labels.is_empty()).then(|| labels.clone()),
        ..ObjectMeta::default()
    }
}

/// A Namespace with its labels (plus [`NAMESPACE_NAME_LABEL`]) and annotations, Active.
pub fn namespace(namespace: &NamespacePlan) -> core::Namespace {
    let mut labels = namespace.labels.clone();
    labels.insert(NAMESPACE_NAME_LABEL.into(), namespace.name.clone());
    let mut metadata = meta(&namespace.name, None, &labels);
    metadata.annotations = (!namespace.annotations.is_empty()).then(|| namespace.annotations.clone());
    core::Namespace {
        metadata,
        spec: None,
        status: Some(core::NamespaceStatus {
            phase: Some("Active".into()),
            ..Default::default()
        }),
    }
}

/// A ServiceAccount: only its name matters to the mesh (it is the workload identity).
pub fn service_account(namespace: &str, name: &str) -> core::ServiceAccount {
    core::ServiceAccount {
        metadata: meta(name, Some(namespace), &BTreeMap::new()),
        ..Default::default()
    }
}

pub fn node(plan: &ClusterPlan, node: &NodePlan) -> core::Node {
    let mut labels = node.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), node.name.clone());
    let mut metadata = meta(&node.name, None, &labels);
    metadata.annotations = Some(BTreeMap::from([("ambit.dev/cluster".to_string(), plan.name.clone())]));
    core::Node {
        metadata,
        spec: Some(core::NodeSpec {
            pod_cidr: Some(node.pod_cidr.to_string()),
            pod_cidrs: Some(vec![node.pod_cidr.to_string()]),
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            addresses: Some(vec![core::NodeAddress {
                type_: "InternalIP".into(),
                address: node.address.to_string(),
            }]),
            conditions: Some(vec![core::NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// A pod as the plan and the supervisor know it, without the redirection annotation (which lives in the control
/// plane, written by the node agent).
pub fn pod(plan: &ClusterPlan, pod: &PodPlan, status: Option<&ClusterStatus>) -> core::Pod {
    pod_with(plan, pod, status, false)
}

/// A pod as the API server returns it, `enrolled` saying whether its capture is in place (the redirection
/// annotation). Ready when `status` says the pod is ready; Pending and not ready without a status.
pub fn pod_with(plan: &ClusterPlan, pod: &PodPlan, status: Option<&ClusterStatus>, enrolled: bool) -> core::Pod {
    let st = status.and_then(|s| s.pod(&pod.namespace, &pod.name));
    let replica_set = replica_set(pod);
    let mut labels = pod.labels.clone();
    if let Some(owner) = &replica_set {
        labels.insert(POD_TEMPLATE_HASH_LABEL.into(), owner.template_hash.clone());
    }
    let mut metadata = meta(&pod.name, Some(&pod.namespace), &labels);
    metadata.uid = Some(pod.uid.clone());
    let annotations = pod_annotations(&pod.annotations, enrolled);
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    metadata.owner_references = replica_set.map(|owner| vec![owner.reference(plan, &pod.namespace)]);
    core::Pod {
        metadata,
        spec: Some(pod_spec(pod)),
        status: Some(pod_status(plan, pod, st)),
    }
}

/// The pod's annotations with [`REDIRECTION_ANNOTATION`] `enabled` if enrolled, and without it otherwise.
fn pod_annotations(annotations: &BTreeMap<String, String>, enrolled: bool) -> BTreeMap<String, String> {
    let mut annotations = annotations.clone();
    annotations.remove(REDIRECTION_ANNOTATION);
    if enrolled {
        annotations.insert(REDIRECTION_ANNOTATION.into(), "enabled".into());
    }
    annotations
}

/// The ReplicaSet that owns a Deployment's pod, as the Deployment controller names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSetRef {
    /// `<deployment>-<template hash>`: what is left after dropping the last `-segment` is the Deployment's name.
    pub name: String,
    pub template_hash: String,
}

/// The ReplicaSet of a pod a Deployment made; None for a bare Pod. The template hash is the one in the pod's name
/// (`<deployment>-<hash>-<suffix>`); when a long Deployment name cut it off, a hash of the Deployment's namespace and
/// name stands in, so every pod of the Deployment still names the same ReplicaSet.
pub fn replica_set(pod: &PodPlan) -> Option<ReplicaSetRef> {
    let deployment = pod.owner.as_deref()?;
    let named = pod
        .name
        .strip_prefix(deployment)
        .and_then(|rest| rest.strip_prefix('-'));
    let hash_in_name = named.and_then(|rest| match rest.split('-').collect::<Vec<_>>()[..] {
        [hash, suffix] if hash.len() == TEMPLATE_HASH_LEN && suffix.len() == POD_SUFFIX_LEN => Some(hash.to_string()),
        _ => None,
    });
    let key = format!("{}/{deployment}", pod.namespace);
    let template_hash = hash_in_name.unwrap_or_else(|| hash::alnum(hash::fnv1a(key.as_bytes()), TEMPLATE_HASH_LEN));
    let name = format!("{deployment}-{template_hash}");
    Some(ReplicaSetRef { name, template_hash })
}

// === impl ReplicaSetRef ===

impl ReplicaSetRef {
    /// The pod's controller reference to this ReplicaSet, with a uid derived like the pods' (the `ReplicaSet/`
    /// prefix keeps it apart from any pod's, as pod names have no `/`).
    fn reference(&self, plan: &ClusterPlan, namespace: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: self.name.clone(),
            uid: hash::uid(&plan.name, namespace, &format!("ReplicaSet/{}", self.name)),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// The pod's spec: node, service account, restart policy and containers with their named ports.
fn pod_spec(pod: &PodPlan) -> core::PodSpec {
    let containers = pod
        .containers
        .iter()
        .map(|c| core::Container {
            name: c.name.clone(),
            command: Some(c.argv.clone()),
            env: Some(
                c.env
                    .iter()
                    .map(|(k, v)| core::EnvVar {
                        name: k.clone(),
                        value: Some(v.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(
                c.ports
                    .iter()
                    .map(|p| core::ContainerPort {
                        name: p.name.clone(),
                        container_port: p.port.into(),
                        protocol: Some(p.protocol.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        })
        .collect();
    core::PodSpec {
        node_name: Some(pod.node.clone()),
        service_account_name: Some(pod.service_account.clone()),
        restart_policy: Some(format!("{:?}", pod.restart_policy)),
        containers,
        ..Default::default()
    }
}

fn pod_status(plan: &ClusterPlan, pod: &PodPlan, st: Option<&crate::status::PodStatus>) -> core::PodStatus {
    let phase = st.map(|s| s.phase).unwrap_or(Phase::Pending);
    let ready = st.map(|s| s.ready).unwrap_or(false);
    let containers = st.map(|s| {
        s.containers
            .iter()
            .map(|c| core::ContainerStatus {
                name: c.name.clone(),
                ready: c.ready,
                restart_count: c.restarts as i32,
                state: Some(container_state(&c.state)),
                ..Default::default()
            })
            .collect()
    });
    let host_ip = plan.node(&pod.node).map(|n| n.address.to_string());
    core::PodStatus {
        phase: Some(format!("{phase:?}")),
        pod_ip: Some(pod.ip.to_string()),
        pod_ips: Some(vec![core::PodIP { ip: pod.ip.to_string() }]),
        host_ips: host_ip.clone().map(|ip| vec![core::HostIP { ip }]),
        host_ip,
        conditions: Some(vec![core::PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..Default::default()
        }]),
        container_statuses: containers,
        ..Default::default()
    }
}

fn container_state(state: &ContainerState) -> core::ContainerState {
    match state {
        ContainerState::Waiting { reason } => core::ContainerState {
            waiting: Some(core::ContainerStateWaiting {
                reason: Some(reason.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ContainerState::Running { .. } => core::ContainerState {
            running: Some(core::ContainerStateRunning::default()),
            ..Default::default()
        },
        ContainerState::Terminated { exit_code, reason, .. } => core::ContainerState {
            terminated: Some(core::ContainerStateTerminated {
                exit_code: *exit_code,
                reason: Some(reason.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

pub fn service(svc: &ServicePlan) -> core::Service {
    let ports = svc
        .ports
        .iter()
        .map(|p| core::ServicePort {
            name: p.name.clone(),
            port: p.port.into(),
            protocol: Some(p.protocol.to_string()),
            target_port: Some(match &p.target {
                TargetPort::Number(n) => IntOrString::Int((*n).into()),
                TargetPort::Name(s) => IntOrString::String(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    let cluster_ip = svc.cluster_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "None".into());
    core::Service {
        metadata: meta(&svc.name, Some(&svc.namespace), &svc.labels),
        spec: Some(core::ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(cluster_ip.clone()),
            cluster_ips: Some(vec![cluster_ip]),
            selector: (!svc.selector.is_empty()).then(|| svc.selector.clone()),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

/// A `v1` List of objects, as `kubectl get -o yaml` prints several.
pub fn list<T: serde::Serialize>(items: &[T]) -> serde_json::Value {
    serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

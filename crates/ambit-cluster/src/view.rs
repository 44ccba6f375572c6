//! The cluster as Kubernetes API objects (for `ambit get -o yaml|json`): Nodes, Pods and Services built from the
//! plan and the supervisor's status, shaped as the API server would return them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{ClusterPlan, NodePlan, PodPlan, ServicePlan, TargetPort};
use crate::status::{ClusterStatus, ContainerState, Phase};

fn meta(name: &str, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: (!labels.is_empty()).then(|| labels.clone()),
        ..ObjectMeta::default()
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

pub fn pod(plan: &ClusterPlan, pod: &PodPlan, status: Option<&ClusterStatus>) -> core::Pod {
    let st = status.and_then(|s| s.pod(&pod.namespace, &pod.name));
    let mut metadata = meta(&pod.name, Some(&pod.namespace), &pod.labels);
    metadata.uid = Some(pod.uid.clone());
    metadata.annotations = (!pod.annotations.is_empty()).then(|| pod.annotations.clone());
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
    core::Pod {
        metadata,
        spec: Some(core::PodSpec {
            node_name: Some(pod.node.clone()),
            service_account_name: Some(pod.service_account.clone()),
            restart_policy: Some(format!("{:?}", pod.restart_policy)),
            containers,
            ..Default::default()
        }),
        status: Some(pod_status(plan, pod, st)),
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
    core::PodStatus {
        phase: Some(format!("{phase:?}")),
        pod_ip: Some(pod.ip.to_string()),
        host_ip: plan.node(&pod.node).map(|n| n.address.to_string()),
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

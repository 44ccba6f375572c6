//! Pod specs, of Pods and of Deployment templates.
//!
//! Not supported (errors): `initContainers`, `hostNetwork: true`. Other fields that need a container runtime,
//! volumes or a scheduler (`volumes`, `affinity`, `tolerations`, ...) are ignored.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::model::RestartPolicy;

use super::container::{self, ContainerSpec};
use super::meta::Meta;
use super::namespace::DEFAULT_SERVICE_ACCOUNT;
use super::plan::Context;
use super::probe::{self, PortScope};
use super::{Scope, has_items};

/// A checked pod spec, before placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PodSpecChecked {
    /// `spec.nodeName`: a node of the cluster.
    pub node_name: Option<String>,
    pub service_account: String,
    pub restart_policy: RestartPolicy,
    pub containers: Vec<ContainerSpec>,
}

/// What a pod spec is checked against: the context, and the pod's namespace (None if it is unusable, which
/// was reported).
#[derive(Clone, Copy)]
pub(super) struct PodContext<'a> {
    pub context: &'a Context<'a>,
    pub namespace: Option<&'a str>,
}

const INIT_CONTAINERS: &str = "initContainers are not supported by the local cluster";
const HOST_NETWORK: &str = "not supported by the local cluster: every pod has its own network namespace";
const RESTART_POLICIES: &str = "supported: Always, OnFailure, Never";

/// Checks a pod spec (`scope` is at it: `spec`, or `spec.template.spec`). None if anything is wrong.
pub(super) fn check(spec: &PodSpec, pod: PodContext<'_>, scope: &mut Scope<'_>) -> Option<PodSpecChecked> {
    let before = scope.errors();
    check_unsupported(spec, scope);
    let node_name = check_node_name(spec.node_name.as_deref(), pod.context, scope);
    let service_account = check_service_account(spec, pod, scope);
    let restart_policy = check_restart_policy(spec.restart_policy.as_deref(), scope);
    let containers = check_containers(&spec.containers, scope);
    let checked = PodSpecChecked {
        node_name,
        service_account,
        restart_policy,
        containers,
    };
    (scope.errors() == before).then_some(checked)
}

fn check_unsupported(spec: &PodSpec, scope: &mut Scope<'_>) {
    if has_items(&spec.init_containers) {
        scope.error("initContainers", INIT_CONTAINERS);
    }
    if spec.host_network == Some(true) {
        scope.error("hostNetwork", HOST_NETWORK);
    }
}

/// `spec.nodeName`, which must be a node of the cluster.
fn check_node_name(name: Option<&str>, context: &Context<'_>, scope: &mut Scope<'_>) -> Option<String> {
    let name = name.filter(|name| !name.is_empty())?;
    let nodes = context.nodes.unwrap_or_default();
    if context.nodes.is_some() && !nodes.iter().any(|node| node == name) {
        let nodes = nodes.join(", ");
        scope.error("nodeName", format!("unknown node {name:?}; nodes are: {nodes}"));
    }
    Some(name.to_string())
}

/// `serviceAccountName`, or the deprecated `serviceAccount`, or `default`; it must exist in the namespace.
fn check_service_account(spec: &PodSpec, pod: PodContext<'_>, scope: &mut Scope<'_>) -> String {
    let (field, name) = service_account(spec);
    let Some(namespace) = pod.namespace else {
        return name;
    };
    if !pod.context.accounts.contains(namespace, &name) {
        let message = format!("service account {name:?} is not defined in namespace {namespace:?}");
        scope.error(field, format!("{message}; add a ServiceAccount document"));
    }
    name
}

/// The field that names the pod's service account, and the name.
fn service_account(spec: &PodSpec) -> (&'static str, String) {
    let named = |value: &Option<String>| value.clone().filter(|name| !name.is_empty());
    let (name, deprecated) = (named(&spec.service_account_name), named(&spec.service_account));
    match (name, deprecated) {
        (Some(name), _) => ("serviceAccountName", name),
        (None, Some(name)) => ("serviceAccount", name),
        (None, None) => ("serviceAccountName", DEFAULT_SERVICE_ACCOUNT.to_string()),
    }
}

fn check_restart_policy(policy: Option<&str>, scope: &mut Scope<'_>) -> RestartPolicy {
    match policy {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(other) => {
            let message = format!("unknown restartPolicy {other:?}; {RESTART_POLICIES}");
            scope.error("restartPolicy", message);
            RestartPolicy::Always
        }
    }
}

fn check_containers(containers: &[Container], scope: &mut Scope<'_>) -> Vec<ContainerSpec> {
    if containers.is_empty() {
        scope.error("containers", "at least one container is required");
    }
    let mut check = |(container, index)| {
        let mut scope = scope.at(format_args!("containers[{index}]"));
        container::check(container, &mut scope)
    };
    let mut specs: Vec<ContainerSpec> = containers.iter().zip(0..).map(&mut check).collect();
    scope.unique(container_names(containers), "container name");
    scope.unique(port_names(containers), "port name");
    check_probes(containers, &mut specs, scope);
    specs
}

fn container_names(containers: &[Container]) -> impl Iterator<Item = (String, &str)> {
    containers.iter().zip(0..).map(container_name)
}

fn container_name((container, index): (&Container, usize)) -> (String, &str) {
    (format!("containers[{index}].name"), &container.name)
}

/// The named ports of the pod, with their fields: names are unique within the pod.
fn port_names(containers: &[Container]) -> impl Iterator<Item = (String, &str)> {
    containers.iter().zip(0..).flat_map(container_port_names)
}

fn container_port_names((container, index): (&Container, usize)) -> impl Iterator<Item = (String, &str)> {
    let ports = container.ports.iter().flatten().zip(0..);
    ports.filter_map(move |(port, i)| {
        let name = port.name.as_deref()?;
        Some((format!("containers[{index}].ports[{i}].name"), name))
    })
}

/// Readiness probes, once every container's ports are known.
fn check_probes(containers: &[Container], specs: &mut [ContainerSpec], scope: &mut Scope<'_>) {
    for (container, index) in containers.iter().zip(0..) {
        let Some(readiness) = &container.readiness_probe else {
            continue;
        };
        let mut scope = scope.at(format_args!("containers[{index}].readinessProbe"));
        let probe = probe::check(readiness, &PortScope::new(specs, index), &mut scope);
        if let Some(spec) = specs.get_mut(index) {
            spec.readiness = probe;
        }
    }
}

// === impl PodContext ===

impl<'a> PodContext<'a> {
    /// The context of a pod whose checked metadata is `meta` (None if unusable).
    pub fn new(context: &'a Context<'a>, meta: Option<&'a Meta>) -> Self {
        let namespace = meta.map(|meta| meta.namespace.as_str());
        Self { context, namespace }
    }
}

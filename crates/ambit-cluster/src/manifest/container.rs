//! Containers. There are no images: a container is its `command` + `args`, run as a host process inside the
//! pod's network namespace, so `command` is required. Fields that only make sense with images or a container
//! runtime (`image`, `resources`, `securityContext`, ...) are ignored.

use k8s_openapi::api::core::v1::{self as k8s, Container, EnvVar};

use crate::model::ContainerPort;

use super::syntax;
use super::{Scope, has_items};

const COMMAND_REQUIRED: &str =
    "required: the local cluster has no images, a container runs its command+args as a host process";
const HOST_PORT: &str = "hostPort is not supported by the local cluster: a pod is reached at its own IP";
const VALUE_AND_SOURCE: &str = "may not be set with a non-empty value";
const ENV_FROM: &str = "envFrom is not supported by the local cluster (it has no ConfigMaps or Secrets); \
                        use env with value or valueFrom.fieldRef";

/// A checked container, before its pod is placed (env values that depend on placement are still references).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ContainerSpec {
    pub name: String,
    /// `command` followed by `args`, not yet expanded.
    pub argv: Vec<String>,
    pub env: Vec<EnvEntry>,
    pub working_dir: Option<String>,
    pub ports: Vec<ContainerPort>,
    pub readiness: Option<crate::model::Probe>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct EnvEntry {
    pub name: String,
    pub value: EnvValue,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum EnvValue {
    /// `value`, with `$(VAR)` references still to expand.
    Literal(String),
    /// `valueFrom.fieldRef`.
    Field(FieldRef),
}

/// A downward-API field an env var can refer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FieldRef {
    Name,
    Namespace,
    Uid,
    NodeName,
    ServiceAccountName,
    PodIp,
    HostIp,
    Label(String),
    Annotation(String),
}

const FIELD_PATHS: &str = "metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], \
                           metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, status.podIP, \
                           status.hostIP";

/// The fieldPaths without a key.
const PLAIN_FIELDS: [(&str, FieldRef); 7] = [
    ("metadata.name", FieldRef::Name),
    ("metadata.namespace", FieldRef::Namespace),
    ("metadata.uid", FieldRef::Uid),
    ("spec.nodeName", FieldRef::NodeName),
    ("spec.serviceAccountName", FieldRef::ServiceAccountName),
    ("status.podIP", FieldRef::PodIp),
    ("status.hostIP", FieldRef::HostIp),
];

/// Checks one container (`scope` is at it, e.g. `spec.containers[0]`). The readiness probe is left to the pod,
/// which knows every container's ports.
pub(super) fn check(container: &Container, scope: &mut Scope<'_>) -> ContainerSpec {
    let name = container.name.clone();
    scope.valid("name", &name, "container name", syntax::dns_label);
    let argv = check_command(container, scope);
    let env = check_env(container, scope);
    let working_dir = container.working_dir.clone();
    let ports = check_ports(container.ports.as_deref().unwrap_or_default(), scope);
    let readiness = None;
    ContainerSpec {
        name,
        argv,
        env,
        working_dir,
        ports,
        readiness,
    }
}

fn check_command(container: &Container, scope: &mut Scope<'_>) -> Vec<String> {
    let command = container.command.as_deref().unwrap_or_default();
    match command.first().map(String::as_str) {
        None => scope.error("command", COMMAND_REQUIRED),
        Some("") => scope.error("command[0]", "the program to run must not be empty"),
        Some(_) => {}
    }
    let args = container.args.iter().flatten();
    command.iter().chain(args).cloned().collect()
}

fn check_ports(ports: &[k8s::ContainerPort], scope: &mut Scope<'_>) -> Vec<ContainerPort> {
    let mut check = |(port, index)| check_port(port, &mut scope.at(format_args!("ports[{index}]")));
    ports.iter().zip(0..).filter_map(&mut check).collect()
}

fn check_port(port: &k8s::ContainerPort, scope: &mut Scope<'_>) -> Option<ContainerPort> {
    let protocol = syntax::protocol(port.protocol.as_deref(), "protocol", scope);
    if let Some(name) = &port.name {
        scope.valid("name", name, "port name", syntax::port_name);
    }
    if port.host_port.is_some_and(|host_port| host_port != 0) {
        scope.error("hostPort", HOST_PORT);
    }
    let number = syntax::port_number(port.container_port, "containerPort", scope)?;
    let name = port.name.clone();
    Some(ContainerPort {
        name,
        port: number,
        protocol,
    })
}

fn check_env(container: &Container, scope: &mut Scope<'_>) -> Vec<EnvEntry> {
    if has_items(&container.env_from) {
        scope.error("envFrom", ENV_FROM);
    }
    let vars = container.env.as_deref().unwrap_or_default();
    warn_repeated(vars, scope);
    let mut check = |(var, index)| check_env_var(var, &mut scope.at(format_args!("env[{index}]")));
    vars.iter().zip(0..).filter_map(&mut check).collect()
}

/// A variable set twice is allowed (the later value wins), but likely a mistake.
fn warn_repeated(vars: &[EnvVar], scope: &mut Scope<'_>) {
    let mut seen = std::collections::HashSet::new();
    for (var, index) in vars.iter().zip(0..) {
        if !seen.insert(var.name.as_str()) {
            let message = format!("{} is set again; the later value wins", var.name);
            scope.warn(&format!("env[{index}].name"), message);
        }
    }
}

fn check_env_var(var: &EnvVar, scope: &mut Scope<'_>) -> Option<EnvEntry> {
    scope.valid("name", &var.name, "variable name", syntax::env_name);
    let literal = var.value.clone().unwrap_or_default();
    let value = match &var.value_from {
        None => EnvValue::Literal(literal),
        Some(_) if !literal.is_empty() => return scope.fail("valueFrom", VALUE_AND_SOURCE),
        Some(source) => EnvValue::Field(check_source(source, &mut scope.at("valueFrom"))?),
    };
    let name = var.name.clone();
    Some(EnvEntry { name, value })
}

/// `valueFrom`: only `fieldRef` is supported.
fn check_source(source: &k8s::EnvVarSource, scope: &mut Scope<'_>) -> Option<FieldRef> {
    let mut supported = true;
    for name in unsupported_sources(source) {
        supported = false;
        let message = format!("{name} is not supported by the local cluster; only valueFrom.fieldRef is");
        scope.error(name, message);
    }
    match (&source.field_ref, supported) {
        (Some(selector), true) => check_field_ref(selector, &mut scope.at("fieldRef")),
        (None, true) => scope.fail("", "needs fieldRef"),
        (_, false) => None,
    }
}

fn unsupported_sources(source: &k8s::EnvVarSource) -> impl Iterator<Item = &'static str> {
    let secret = ("secretKeyRef", source.secret_key_ref.is_some());
    let config_map = ("configMapKeyRef", source.config_map_key_ref.is_some());
    let resource = ("resourceFieldRef", source.resource_field_ref.is_some());
    let file = ("fileKeyRef", source.file_key_ref.is_some());
    let set = [secret, config_map, resource, file].into_iter();
    set.filter_map(|(name, set)| set.then_some(name))
}

fn check_field_ref(selector: &k8s::ObjectFieldSelector, scope: &mut Scope<'_>) -> Option<FieldRef> {
    let version = selector.api_version.as_deref();
    if let Some(version) = version.filter(|version| *version != "v1") {
        scope.error("apiVersion", format!("{version:?} is not supported; use v1"));
    }
    let path = &selector.field_path;
    let message = || format!("unsupported fieldPath {path:?}; supported: {FIELD_PATHS}");
    parse_field_path(path).or_else(|| scope.fail("fieldPath", message()))
}

fn parse_field_path(path: &str) -> Option<FieldRef> {
    let plain = PLAIN_FIELDS.iter().find(|(name, _)| *name == path);
    let label = || subscript(path, "metadata.labels").map(FieldRef::Label);
    let annotation = || subscript(path, "metadata.annotations").map(FieldRef::Annotation);
    plain.map(|(_, field)| field.clone()).or_else(label).or_else(annotation)
}

/// The key of `PREFIX['key']`.
fn subscript(path: &str, prefix: &str) -> Option<String> {
    let key = path.strip_prefix(prefix)?.strip_prefix("['")?;
    let key = key.strip_suffix("']")?;
    (!key.is_empty()).then(|| key.to_string())
}

//! A container's environment and argv, once its pod is placed.
//!
//! `env` is resolved in order: a literal `value` has its `$(VAR)` references expanded from the entries before
//! it (`$$` is a literal `$`; unknown references stay as written), as Kubernetes does; a `fieldRef` takes the
//! pod's value. Then POD_NAME, POD_NAMESPACE, POD_IP, NODE_NAME and POD_SERVICE_ACCOUNT are appended unless the
//! container sets them. `argv` is `command` + `args` expanded from that final environment.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::model::ContainerPlan;

use super::Labels;
use super::container::{ContainerSpec, EnvEntry, EnvValue, FieldRef};
use super::schedule::Placement;
use super::workload::PodSource;

/// What the downward API knows about a placed pod.
#[derive(Clone, Copy, Debug)]
pub(super) struct PodFacts<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub node: &'a str,
    pub service_account: &'a str,
    pub ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub labels: &'a Labels,
    pub annotations: &'a Labels,
}

/// Variables by name; later entries replace earlier ones, as for the process.
type Vars = HashMap<String, String>;

/// The plan of a container of a placed pod.
pub(super) fn container_plan(spec: &ContainerSpec, pod: &PodFacts<'_>) -> ContainerPlan {
    let env = resolve_env(&spec.env, pod);
    let vars: Vars = env.iter().cloned().collect();
    let argv = spec.argv.iter().map(|arg| expand(arg, &vars)).collect();
    let (name, working_dir) = (spec.name.clone(), spec.working_dir.clone());
    let (ports, readiness) = (spec.ports.clone(), spec.readiness.clone());
    ContainerPlan {
        name,
        argv,
        env,
        working_dir,
        ports,
        readiness,
    }
}

fn resolve_env(entries: &[EnvEntry], pod: &PodFacts<'_>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut known = Vars::new();
    for entry in entries {
        let value = match &entry.value {
            EnvValue::Literal(text) => expand(text, &known),
            EnvValue::Field(field) => pod.field(field),
        };
        known.insert(entry.name.clone(), value.clone());
        env.push((entry.name.clone(), value));
    }
    let implicit = pod.implicit().into_iter();
    env.extend(implicit.filter(|(name, _)| !known.contains_key(name)));
    env
}

/// Expands `$(VAR)` from `vars`; `$$` is a literal `$`; unknown or unterminated references stay as written.
pub(super) fn expand(text: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = expand_reference(&rest[at + 1..], vars, &mut out);
    }
    out.push_str(rest);
    out
}

/// Expands what follows a `$` into `out`; returns the text after it.
fn expand_reference<'t>(after: &'t str, vars: &Vars, out: &mut String) -> &'t str {
    if let Some(rest) = after.strip_prefix('$') {
        out.push('$');
        return rest;
    }
    let reference = after.strip_prefix('(').and_then(|inner| inner.split_once(')'));
    let Some((name, rest)) = reference else {
        out.push('$');
        return after;
    };
    match vars.get(name) {
        Some(value) => out.push_str(value),
        None => out.push_str(&format!("$({name})")),
    }
    rest
}

// === impl PodFacts ===

impl<'a> PodFacts<'a> {
    pub fn new(pod: &'a PodSource<'_>, placement: &'a Placement, uid: &'a str) -> Self {
        let (meta, spec) = (&pod.meta, &pod.spec);
        Self {
            name: &meta.name,
            namespace: &meta.namespace,
            uid,
            node: &placement.node,
            service_account: &spec.service_account,
            ip: placement.ip,
            host_ip: placement.host_ip,
            labels: &meta.labels,
            annotations: &meta.annotations,
        }
    }

    fn field(&self, field: &FieldRef) -> String {
        let text = match field {
            FieldRef::Name => self.name,
            FieldRef::Namespace => self.namespace,
            FieldRef::Uid => self.uid,
            FieldRef::NodeName => self.node,
            FieldRef::ServiceAccountName => self.service_account,
            FieldRef::PodIp => return self.ip.to_string(),
            FieldRef::HostIp => return self.host_ip.to_string(),
            // A missing label or annotation is empty, as in Kubernetes.
            FieldRef::Label(key) => self.labels.get(key).map_or("", String::as_str),
            FieldRef::Annotation(key) => self.annotations.get(key).map_or("", String::as_str),
        };
        text.to_string()
    }

    /// The variables every container gets unless it sets them itself.
    fn implicit(&self) -> [(String, String); 5] {
        [
            ("POD_NAME", self.name.to_string()),
            ("POD_NAMESPACE", self.namespace.to_string()),
            ("POD_IP", self.ip.to_string()),
            ("NODE_NAME", self.node.to_string()),
            ("POD_SERVICE_ACCOUNT", self.service_account.to_string()),
        ]
        .map(|(name, value)| (name.to_string(), value))
    }
}

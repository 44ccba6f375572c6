//! Deployments, expanded into their pods at load time.
//!
//! A Deployment makes `spec.replicas` (default 1, at most 100) pods named `<deployment>-<hash10>-<suffix5>`, like
//! the pods of a Kubernetes ReplicaSet: `hash10` is the FNV-1a 64 hash of the pod template (as JSON) and
//! `suffix5` the hash of `<deployment>/<index>` (`<deployment>/<index>/<attempt>` if that collides with an earlier
//! replica), both written in [`super::hash::alnum`]'s alphabet. As Kubernetes' `generateName` does, the part
//! before the suffix is cut to 58 characters so that pod names fit in a DNS label.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::model::RestartPolicy;

use super::hash;
use super::meta;
use super::pod::{self, PodContext, PodSpecChecked};
use super::syntax;
use super::{Labels, Scope, has_items};

const MAX_REPLICAS: u32 = 100;
const EXPRESSIONS: &str = "not supported by the local cluster; use matchLabels";
const MATCH_LABELS: &str = "required: the labels that select the Deployment's pods";
const RESTART_ALWAYS: &str = "a Deployment's pods must have restartPolicy Always (the default)";
const TEMPLATE_HASH_LEN: usize = 10;
const SUFFIX_LEN: usize = 5;
/// The longest base of a generated name, leaving room for the suffix within a DNS label.
pub(super) const MAX_GENERATED_BASE: usize = 58;

/// A checked Deployment: what its pods are made of.
#[derive(Clone, Debug)]
pub(super) struct DeploymentChecked {
    pub replicas: u32,
    /// The template's labels, which the pods get.
    pub labels: Labels,
    pub annotations: Labels,
    pub spec: PodSpecChecked,
    /// The `hash10` of the pod names.
    pub template_hash: String,
}

/// Checks a Deployment. None if anything is wrong.
pub(super) fn check(deployment: &Deployment, pod: PodContext<'_>, scope: &mut Scope<'_>) -> Option<DeploymentChecked> {
    let (spec, before) = (&deployment.spec, scope.errors());
    let replicas = check_replicas(spec.replicas, scope);
    let selector = check_selector(&spec.selector, &mut scope.at("spec.selector"));
    let (labels, annotations) = check_template_meta(&spec.template, scope);
    check_selector_matches(selector.as_ref(), &labels, scope);
    let pod_spec = check_template_spec(&spec.template, pod, scope);
    let (replicas, spec, template_hash) = (replicas?, pod_spec?, template_hash(&spec.template));
    let checked = DeploymentChecked {
        replicas,
        labels,
        annotations,
        spec,
        template_hash,
    };
    (scope.errors() == before).then_some(checked)
}

fn check_replicas(replicas: Option<i32>, scope: &mut Scope<'_>) -> Option<u32> {
    let replicas = replicas.unwrap_or(1);
    let problem = match u32::try_from(replicas) {
        Ok(count) if count <= MAX_REPLICAS => return Some(count),
        Ok(_) => format!("{replicas} is too many: at most {MAX_REPLICAS} on the local cluster"),
        Err(_) => format!("{replicas} must not be negative"),
    };
    scope.fail("spec.replicas", problem)
}

/// The selector's `matchLabels`, which are required; `matchExpressions` are not supported.
fn check_selector(selector: &LabelSelector, scope: &mut Scope<'_>) -> Option<Labels> {
    if has_items(&selector.match_expressions) {
        scope.error("matchExpressions", EXPRESSIONS);
    }
    let labels = selector.match_labels.clone().unwrap_or_default();
    if labels.is_empty() {
        return scope.fail("matchLabels", MATCH_LABELS);
    }
    syntax::check_labels(&labels, "matchLabels", scope);
    Some(labels)
}

fn check_template_meta(template: &PodTemplateSpec, scope: &mut Scope<'_>) -> (Labels, Labels) {
    let meta = template.metadata.clone().unwrap_or_default();
    meta::labels_and_annotations(&meta, &mut scope.at("spec.template.metadata"))
}

/// Every selector label must be among the template's labels, as Kubernetes requires.
fn check_selector_matches(selector: Option<&Labels>, labels: &Labels, scope: &mut Scope<'_>) {
    let matches = |selector: &&Labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v));
    let Some(selector) = selector.filter(|selector| !matches(selector)) else {
        return;
    };
    let selector = syntax::selector_text(selector);
    let labels = Some(syntax::selector_text(labels)).filter(|labels| !labels.is_empty());
    let labels = labels.unwrap_or_else(|| "none".to_string());
    let message = format!("selector {selector} does not match the template labels ({labels})");
    scope.error("spec.selector", message);
}

fn check_template_spec(
    template: &PodTemplateSpec,
    pod: PodContext<'_>,
    scope: &mut Scope<'_>,
) -> Option<PodSpecChecked> {
    let Some(spec) = &template.spec else {
        return scope.fail("spec.template.spec", "required");
    };
    let checked = pod::check(spec, pod, &mut scope.at("spec.template.spec"))?;
    match checked.restart_policy {
        RestartPolicy::Always => Some(checked),
        _ => scope.fail("spec.template.spec.restartPolicy", RESTART_ALWAYS),
    }
}

/// `hash10` of the pod names: the hash of the template as JSON.
fn template_hash(template: &PodTemplateSpec) -> String {
    // Serializing API types to JSON cannot fail (all map keys are strings); an empty input would still hash.
    let json = serde_json::to_vec(template).unwrap_or_default();
    hash::alnum(hash::fnv1a(&json), TEMPLATE_HASH_LEN)
}

/// The names of the pods of Deployment `name`, in replica order.
pub(super) fn pod_names(name: &str, checked: &DeploymentChecked) -> Vec<String> {
    let base = format!("{name}-{}-", checked.template_hash);
    let base: String = base.chars().take(MAX_GENERATED_BASE).collect();
    let mut names = Vec::new();
    for index in 0..checked.replicas {
        let mut candidates = (0..).map(|attempt| format!("{base}{}", suffix(name, index, attempt)));
        if let Some(pod_name) = candidates.find(|candidate| !names.contains(candidate)) {
            names.push(pod_name);
        }
    }
    names
}

/// `suffix5` of replica `index`: the hash of `<deployment>/<index>`, or of `<deployment>/<index>/<attempt>`
/// after a collision.
fn suffix(name: &str, index: u32, attempt: u32) -> String {
    let key = match attempt {
        0 => format!("{name}/{index}"),
        attempt => format!("{name}/{index}/{attempt}"),
    };
    hash::alnum(hash::fnv1a(key.as_bytes()), SUFFIX_LEN)
}

//! Pods and Deployments, in document order: every pod the cluster will run, with duplicates found across both
//! (a Pod named like a pod a Deployment makes is a duplicate).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

use super::deployment::{self, DeploymentChecked};
use super::document::{Doc, Objects};
use super::meta::{self, Kind, Meta};
use super::plan::Context;
use super::pod::{self, PodContext, PodSpecChecked};
use super::{Origin, Report, Scope};

/// A pod to place: a Pod, or one replica of a Deployment.
#[derive(Clone, Debug)]
pub(super) struct PodSource<'a> {
    /// The Pod or Deployment document.
    pub origin: &'a Origin,
    /// The pod's namespace, name, labels and annotations.
    pub meta: Meta,
    /// The Deployment that makes it.
    pub owner: Option<String>,
    pub spec: PodSpecChecked,
}

enum Workload<'a> {
    Pod(&'a Doc<Pod>),
    Deployment(&'a Doc<Deployment>),
}

/// Checks Pods and Deployments; returns the valid pods in document order (a Deployment's at its position, in
/// replica order).
pub(super) fn check<'a>(objects: &'a Objects, context: &mut Context<'_>, report: &mut Report) -> Vec<PodSource<'a>> {
    let mut workloads: Vec<Workload<'a>> = objects.pods.iter().map(Workload::Pod).collect();
    workloads.extend(objects.deployments.iter().map(Workload::Deployment));
    workloads.sort_by_key(|workload| workload.origin().seq);
    let mut pods = Vec::new();
    for workload in workloads {
        match workload {
            Workload::Pod(doc) => pods.extend(check_pod(doc, context, report)),
            Workload::Deployment(doc) => pods.extend(check_deployment(doc, context, report)),
        }
    }
    pods
}

fn check_pod<'a>(doc: &'a Doc<Pod>, context: &mut Context<'_>, report: &mut Report) -> Option<PodSource<'a>> {
    let mut scope = report.scope(&doc.origin);
    let (meta, fresh) = meta::register(Kind::Pod, &doc.value.metadata, context, &mut scope);
    let pod = PodContext::new(context, meta.as_ref());
    let spec = match &doc.value.spec {
        Some(spec) => pod::check(spec, pod, &mut scope.at("spec")),
        None => scope.fail("spec", "required"),
    };
    let (origin, meta, spec) = (&doc.origin, meta?, spec?);
    fresh.then_some(PodSource {
        origin,
        meta,
        owner: None,
        spec,
    })
}

fn check_deployment<'a>(
    doc: &'a Doc<Deployment>,
    context: &mut Context<'_>,
    report: &mut Report,
) -> Vec<PodSource<'a>> {
    let mut scope = report.scope(&doc.origin);
    let metadata = &doc.value.metadata;
    let (meta, fresh) = meta::register(Kind::Deployment, metadata, context, &mut scope);
    let pod = PodContext::new(context, meta.as_ref());
    let checked = deployment::check(&doc.value, pod, &mut scope);
    match (meta, checked, fresh) {
        (Some(meta), Some(checked), true) => made_pods(doc, &meta, &checked, context, &mut scope),
        _ => Vec::new(),
    }
}

/// The pods of a valid Deployment, each recorded in the registry (a clash is reported on the Deployment).
fn made_pods<'a>(
    doc: &'a Doc<Deployment>,
    deployment: &Meta,
    checked: &DeploymentChecked,
    context: &mut Context<'_>,
    scope: &mut Scope<'_>,
) -> Vec<PodSource<'a>> {
    let names = deployment::pod_names(&deployment.name, checked).into_iter();
    let pods = names.map(|name| made_pod(&doc.origin, deployment, checked, name));
    pods.filter(|pod| claim_made_pod(&pod.meta, deployment, context, scope))
        .collect()
}

fn made_pod<'a>(origin: &'a Origin, deployment: &Meta, checked: &DeploymentChecked, name: String) -> PodSource<'a> {
    let meta = Meta {
        namespace: deployment.namespace.clone(),
        name,
        labels: checked.labels.clone(),
        annotations: checked.annotations.clone(),
    };
    let (owner, spec) = (Some(deployment.name.clone()), checked.spec.clone());
    PodSource {
        origin,
        meta,
        owner,
        spec,
    }
}

/// Records a pod a Deployment makes; a clash is reported on the Deployment.
fn claim_made_pod(pod: &Meta, deployment: &Meta, context: &mut Context<'_>, scope: &mut Scope<'_>) -> bool {
    let location = scope.origin.location();
    let location = format!("{location} (Deployment {})", deployment.qualified());
    let Err(first) = context.registry.claim(Kind::Pod, pod, location) else {
        return true;
    };
    let message = format!("makes Pod {}, which is already defined in {first}", pod.qualified());
    scope.error("metadata.name", message);
    false
}

// === impl Workload ===

impl Workload<'_> {
    fn origin(&self) -> &Origin {
        match self {
            Workload::Pod(doc) => &doc.origin,
            Workload::Deployment(doc) => &doc.origin,
        }
    }
}

//! Istio's AuthorizationPolicy and PeerAuthentication: their metadata is checked like that of any namespaced
//! object (name, declared namespace, duplicates), then each is validated by translating it as istiod does for the
//! node proxy, with the mesh root namespace `istio-system`. A translation error is reported at its field path
//! (`spec.rules[0].from[0].source.ipBlocks[1]`); a policy that translates but is not enforced as written (targetRefs,
//! AUDIT or CUSTOM, HTTP attributes) is a warning. The plan keeps the objects as written, namespace filled in.

use ambit_policy::istio::{AuthorizationPolicy, ObjectMeta as IstioMeta, PeerAuthentication};
use ambit_policy::{MtlsPolicy, PolicyStatus, TranslateError, translate_authorization_policy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::ROOT_NAMESPACE;

use super::document::{Doc, Objects};
use super::meta::{self, Kind};
use super::plan::Context;
use super::{Report, Scope};

/// The checked policies, each in document order.
#[derive(Debug, Default)]
pub(super) struct Policies {
    pub authorization: Vec<AuthorizationPolicy>,
    pub peer: Vec<PeerAuthentication>,
}

/// Checks every AuthorizationPolicy and PeerAuthentication; the valid ones, with their namespace set.
pub(super) fn check(objects: &Objects, context: &mut Context<'_>, report: &mut Report) -> Policies {
    let docs = objects.authorization_policies.iter();
    let authorization = docs
        .filter_map(|doc| check_authorization(doc, context, report))
        .collect();
    let docs = objects.peer_authentications.iter().zip(0..);
    let peer = docs
        .filter_map(|(doc, index)| check_peer(doc, index, context, report))
        .collect();
    Policies { authorization, peer }
}

fn check_authorization(
    doc: &Doc<AuthorizationPolicy>,
    context: &mut Context<'_>,
    report: &mut Report,
) -> Option<AuthorizationPolicy> {
    let mut scope = report.scope(&doc.origin);
    let namespace = register(Kind::AuthorizationPolicy, &doc.value.metadata, context, &mut scope)?;
    let mut policy = doc.value.clone();
    policy.metadata.namespace = namespace;
    let translation = translate_authorization_policy(&policy, ROOT_NAMESPACE);
    let status = translation
        .map_err(|error| translate_error(&error, &mut scope))
        .ok()?
        .status;
    if status != PolicyStatus::Applied {
        scope.warn("spec", format!("not enforced as written: {status}"));
    }
    Some(policy)
}

/// `index` is the PeerAuthentication's position among them: its age, for conflicts between policies.
fn check_peer(
    doc: &Doc<PeerAuthentication>,
    index: u64,
    context: &mut Context<'_>,
    report: &mut Report,
) -> Option<PeerAuthentication> {
    let mut scope = report.scope(&doc.origin);
    let namespace = register(Kind::PeerAuthentication, &doc.value.metadata, context, &mut scope)?;
    let mut policy = doc.value.clone();
    policy.metadata.namespace = namespace;
    let checked = MtlsPolicy::from_peer_authentication(&policy, index);
    checked.map_err(|error| translate_error(&error, &mut scope)).ok()?;
    Some(policy)
}

/// Checks the metadata and records the object; its namespace (`default` if unset) if it is valid and new.
fn register(kind: Kind, istio: &IstioMeta, context: &mut Context<'_>, scope: &mut Scope<'_>) -> Option<String> {
    let present = |text: &String| Some(text.clone()).filter(|text| !text.is_empty());
    let metadata = ObjectMeta {
        name: present(&istio.name),
        namespace: present(&istio.namespace),
        annotations: Some(istio.annotations.clone()),
        ..ObjectMeta::default()
    };
    match meta::register(kind, &metadata, context, scope) {
        (Some(meta), true) => Some(meta.namespace),
        _ => None,
    }
}

fn translate_error(error: &TranslateError, scope: &mut Scope<'_>) {
    scope.error(&error.path, error.problem.to_string());
}

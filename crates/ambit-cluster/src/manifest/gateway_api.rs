//! The Gateway API kinds (Gateway, HTTPRoute, GRPCRoute): each document is validated exactly as the control
//! plane's config store validates what `ambit apply` sends ([`ambit_config::parse`]: strict fields, the CRDs'
//! limits and patterns, the Gateway API's rules), every problem at its field path; then its metadata is checked like
//! that of any namespaced object of the manifests (declared namespace, duplicates). The plan keeps the objects as
//! the store will hold them: metadata reduced to name, namespace (filled in), labels and annotations. A Gateway of
//! class `istio-waypoint` is also a waypoint to deploy (`waypoint`).

use ambit_config::{Kind as ConfigKind, Object};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::model::GatewayApiObjects;

use super::document::{Doc, GatewayApiDoc, Objects};
use super::meta::{self, Kind};
use super::plan::Context;
use super::waypoint::{self, Waypoint};
use super::{Report, Scope};

/// What the validation of one document gave the config store but not this loader: a bug in one of them.
const UNEXPECTED: &str = "the config store's validation gave no object for this document (a bug in ambit)";

/// The valid Gateway API objects, and the waypoints among the Gateways.
#[derive(Debug, Default)]
pub(super) struct Checked<'a> {
    pub objects: GatewayApiObjects,
    pub waypoints: Vec<Waypoint<'a>>,
}

/// Checks every Gateway, HTTPRoute and GRPCRoute; the valid ones, each kind in document order.
pub(super) fn check<'a>(objects: &'a Objects, context: &mut Context<'_>, report: &mut Report) -> Checked<'a> {
    let mut checked = Checked::default();
    for doc in &objects.gateway_api {
        match check_doc(doc, context, report) {
            Some(Object::Gateway(gateway)) => {
                let waypoint = waypoint::of(&doc.origin, &gateway, context, &mut report.scope(&doc.origin));
                checked.waypoints.extend(waypoint);
                checked.objects.gateways.push(*gateway);
            }
            Some(Object::HttpRoute(route)) => checked.objects.http_routes.push(*route),
            Some(Object::GrpcRoute(route)) => checked.objects.grpc_routes.push(*route),
            // The config store parses a document of a Gateway API kind into an object of that kind.
            Some(_) | None => {}
        }
    }
    checked
}

/// The object of one document if it is valid and the first with its kind, namespace and name.
fn check_doc(doc: &Doc<GatewayApiDoc>, context: &mut Context<'_>, report: &mut Report) -> Option<Object> {
    let mut scope = report.scope(&doc.origin);
    let validated = validate(&doc.value.value, &mut scope);
    let metadata = match &validated {
        Ok(object) => metadata_of(object)?,
        Err(Metadata::Valid) => raw_metadata(&doc.value.value)?,
        Err(Metadata::Invalid) => return None,
    };
    let kind = meta_kind(doc.value.kind)?;
    let (meta, fresh) = meta::register(kind, &metadata, context, &mut scope);
    let object = validated.ok()?;
    (meta.is_some() && fresh).then_some(object)
}

/// Whether the metadata of an invalid object passed the config store's checks, so that it can still be checked
/// against the other objects (its namespace declared, its name not taken) without repeating a problem.
enum Metadata {
    Valid,
    Invalid,
}

/// The object as the config store validates it, or every problem reported (at the document's own field paths).
fn validate(value: &Value, scope: &mut Scope<'_>) -> Result<Object, Metadata> {
    let file = scope.origin.file.clone();
    let diagnostics = match ambit_config::parse(&file, &value.to_string()) {
        // The text of one JSON object is one object.
        Ok(objects) => return objects.into_iter().next().ok_or_else(|| unexpected(scope)),
        Err(diagnostics) => diagnostics,
    };
    let about_metadata = |field: &str| field == "metadata" || field.starts_with("metadata.");
    let metadata = match diagnostics.iter().any(|d| about_metadata(&d.field)) {
        true => Metadata::Invalid,
        false => Metadata::Valid,
    };
    for diagnostic in diagnostics {
        scope.error(&diagnostic.field, diagnostic.message);
    }
    Err(metadata)
}

fn unexpected(scope: &mut Scope<'_>) -> Metadata {
    scope.error("", UNEXPECTED);
    Metadata::Invalid
}

/// The metadata of a validated Gateway API object.
fn metadata_of(object: &Object) -> Option<ObjectMeta> {
    match object {
        Object::Gateway(gateway) => Some(gateway.metadata.clone()),
        Object::HttpRoute(route) => Some(route.metadata.clone()),
        Object::GrpcRoute(route) => Some(route.metadata.clone()),
        _ => None,
    }
}

/// `metadata` as written, when the config store found nothing wrong with it.
fn raw_metadata(value: &Value) -> Option<ObjectMeta> {
    let metadata = value.get("metadata")?.clone();
    serde_json::from_value(metadata).ok()
}

fn meta_kind(kind: ConfigKind) -> Option<Kind> {
    match kind {
        ConfigKind::Gateway => Some(Kind::Gateway),
        ConfigKind::HttpRoute => Some(Kind::HttpRoute),
        ConfigKind::GrpcRoute => Some(Kind::GrpcRoute),
        _ => None,
    }
}

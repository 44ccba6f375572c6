//! Tests of the crate as its callers use it: parse texts, apply them to a store, read back. Shared fixtures
//! here; one module per concern.

mod invalid;
mod lifecycle;
mod patches;
mod status;
mod valid;

use super::*;

/// The Namespaces of the baseline store, as a cluster source gives them.
const NAMESPACES: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: web}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
";

/// The baseline's one config object: an ALLOW policy in `web`.
const BASELINE_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-frontend
  namespace: web
spec:
  selector:
    matchLabels:
      app: backend
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/web/sa/frontend"]
    to:
    - operation:
        ports: ["8080"]
"#;

/// A store holding the Namespaces `default`, `web` and `istio-system` and [`BASELINE_POLICY`].
fn baseline() -> Store {
    let mut store = Store::default();
    assert!(store.replace_source(parse_ok(NAMESPACES)));
    let applied = store.apply(parse_ok(BASELINE_POLICY));
    applied.unwrap_or_else(|diagnostics| panic!("{diagnostics:?}"));
    store
}

fn parse_ok(text: &str) -> Vec<Object> {
    parse("test.yaml", text).unwrap_or_else(|diagnostics| panic!("{}\n--- in:\n{text}", lines(&diagnostics)))
}

/// Parses `text` and applies it: the outcomes, or the diagnostics of whichever step failed.
fn apply(store: &mut Store, text: &str) -> Result<Vec<(ObjectKey, Outcome)>, Vec<Diagnostic>> {
    store.apply(parse("test.yaml", text)?)
}

fn apply_ok(store: &mut Store, text: &str) -> Vec<(ObjectKey, Outcome)> {
    apply(store, text).unwrap_or_else(|diagnostics| panic!("{}\n--- in:\n{text}", lines(&diagnostics)))
}

fn key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(kind, namespace, name)
}

/// Diagnostics one per line, for failure messages.
fn lines(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// An object of `kind` (with its `apiVersion`) named `name` in `web`, with `spec` (YAML flow style).
fn object(api_version: &str, kind: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: {name}, namespace: web}}\nspec: {spec}\n")
}

fn authorization_policy(spec: &str) -> String {
    object("security.istio.io/v1", "AuthorizationPolicy", "policy", spec)
}

fn peer_authentication(spec: &str) -> String {
    object("security.istio.io/v1", "PeerAuthentication", "mtls", spec)
}

fn gateway(spec: &str) -> String {
    object("gateway.networking.k8s.io/v1", "Gateway", "waypoint", spec)
}

fn http_route(spec: &str) -> String {
    object("gateway.networking.k8s.io/v1", "HTTPRoute", "route", spec)
}

fn grpc_route(spec: &str) -> String {
    object("gateway.networking.k8s.io/v1", "GRPCRoute", "grpc", spec)
}

//! Valid inputs: realistic Istio and Gateway API objects parse, apply, and serialize back unchanged; the text
//! formats (YAML documents, Lists, JSON); kind names; defaults.

use serde_json::json;

use super::*;

/// What `istioctl waypoint generate` writes.
const WAYPOINT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  labels:
    istio.io/waypoint-for: service
  name: waypoint
  namespace: web
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
"#;

/// An ingress Gateway with TLS termination, route namespaces by selector, and an address.
const INGRESS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata:
  name: ingress
  namespace: istio-system
  annotations:
    networking.istio.io/service-type: ClusterIP
spec:
  gatewayClassName: istio
  addresses:
  - value: 10.96.0.50
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels:
            shared-gateway-access: "true"
      kinds:
      - kind: HTTPRoute
  - name: https
    port: 443
    protocol: HTTPS
    hostname: shop.example.com
    tls:
      mode: Terminate
      certificateRefs:
      - kind: Secret
        name: shop-cert
    allowedRoutes:
      namespaces:
        from: All
  infrastructure:
    labels:
      team: edge
"#;

/// Traffic shifting, header matches, header changes, a redirect, a rewrite, a mirror, timeouts and retries.
const REVIEWS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: web
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  hostnames:
  - reviews.web.svc.cluster.local
  rules:
  - name: canary
    matches:
    - path:
        type: PathPrefix
        value: /api
      headers:
      - name: end-user
        value: jason
      method: GET
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add:
        - name: x-canary
          value: "true"
        remove: [x-debug]
    backendRefs:
    - name: reviews-v2
      port: 9080
      weight: 90
    - name: reviews-v3
      port: 9080
      weight: 10
    timeouts:
      request: 10s
      backendRequest: 500ms
  - matches:
    - path:
        type: Exact
        value: /old
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        statusCode: 301
  - matches:
    - path:
        type: PathPrefix
        value: /v1
      queryParams:
      - type: RegularExpression
        name: version
        value: "^v[0-9]+$"
    filters:
    - type: URLRewrite
      urlRewrite:
        path:
          type: ReplacePrefixMatch
          replacePrefixMatch: /v2
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: reviews-shadow
          port: 9080
        percent: 10
    backendRefs:
    - name: reviews
      port: 9080
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          set:
          - name: x-route
            value: v1-compat
    retry:
      attempts: 3
      backoff: 100ms
      codes: [503]
"#;

const ECHO: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: echo
  namespace: web
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: echo
    port: 7070
  hostnames: [echo.web.svc.cluster.local]
  rules:
  - matches:
    - method:
        service: grpc.examples.echo.Echo
        method: UnaryEcho
      headers:
      - name: x-version
        value: v2
    backendRefs:
    - name: echo-v2
      port: 7070
  - matches:
    - method:
        type: RegularExpression
        service: "grpc\\.health\\..*"
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: x-served-by
          value: echo
    backendRefs:
    - name: echo
      port: 7070
"#;

/// Policies in the style of Istio's docs: allow-nothing, an L4 DENY, a waypoint's L7 policy, ext-authz, a
/// mesh-wide policy (at v1beta1), and PeerAuthentications.
const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: web
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-external
  namespace: web
spec:
  action: DENY
  rules:
  - from:
    - source:
        notIpBlocks: ["10.0.0.0/8", "fd00::/8"]
    to:
    - operation:
        ports: ["8080"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews-get
  namespace: web
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/web/sa/productpage"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/reviews/*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
  namespace: web
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  action: CUSTOM
  provider:
    name: sample-ext-authz-grpc
  rules:
  - to:
    - operation:
        paths: ["/admin/*"]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: mesh-deny-legacy
  namespace: istio-system
  annotations:
    istio.io/dry-run: "true"
spec:
  action: DENY
  rules:
  - from:
    - source:
        namespaces: ["legacy"]
    when:
    - key: destination.port
      values: ["22"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: metrics-plaintext
  namespace: web
spec:
  selector:
    matchLabels:
      app: reviews
  mtls:
    mode: STRICT
  portLevelMtls:
    9090:
      mode: PERMISSIVE
"#;

fn realistic() -> [&'static str; 5] {
    [WAYPOINT, INGRESS, REVIEWS, ECHO, POLICIES]
}

#[test]
fn realistic_objects_apply_and_reapply_unchanged() {
    let mut store = baseline();
    for text in realistic() {
        let outcomes = apply_ok(&mut store, text);
        assert!(
            outcomes.iter().all(|(_, outcome)| *outcome == Outcome::Created),
            "{outcomes:?}"
        );
    }
    let revision = store.revision();
    for text in realistic() {
        let outcomes = apply_ok(&mut store, text);
        assert!(
            outcomes.iter().all(|(_, outcome)| *outcome == Outcome::Unchanged),
            "{outcomes:?}"
        );
    }
    assert_eq!(store.revision(), revision);
    assert_eq!(store.config_objects().len(), 1 + 4 + 7);
}

/// Every realistic object serializes (as the API server returns it) to JSON that parses to the same object.
#[test]
fn objects_round_trip_through_their_json() {
    for object in realistic().into_iter().flat_map(parse_ok) {
        let text = object.to_json().to_string();
        let again = parse_ok(&text);
        assert_eq!(again, vec![object], "{text}");
    }
}

#[test]
fn waypoint_json_is_what_the_api_server_returns() {
    let objects = parse_ok(WAYPOINT);
    let expected = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "waypoint", "namespace": "web", "labels": {"istio.io/waypoint-for": "service"}},
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    });
    assert_eq!(objects[0].to_json(), expected);
    assert_eq!(
        objects[0].labels().get("istio.io/waypoint-for").map(String::as_str),
        Some("service")
    );
}

/// The preferred apiVersion is answered whatever was written; server-owned metadata and status are dropped.
#[test]
fn config_objects_keep_only_their_own_metadata() {
    let text = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata: {name: r, namespace: web, \
                uid: 1234, resourceVersion: '9', generation: 4, creationTimestamp: '2026-01-01T00:00:00Z'}\nspec: {}\n\
                status: {parents: []}\n";
    let json = parse_ok(text)[0].to_json();
    let expected = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "web"},
        "spec": {},
    });
    assert_eq!(json, expected);
}

#[test]
fn namespaces_default_and_cluster_scoped_objects_have_none() {
    let text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\n---\n\
                apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, namespace: web}\n";
    let keys: Vec<ObjectKey> = parse_ok(text).iter().map(Object::key).collect();
    let expected = [
        key(Kind::PeerAuthentication, "default", "a"),
        key(Kind::Namespace, "", "shop"),
    ];
    assert_eq!(keys, expected);
}

#[test]
fn lists_stand_for_their_items() {
    let text = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}---\napiVersion: v1\nkind: List\nitems: []\n",
        ["a", "b"]
            .map(|name| format!(
                "- {{apiVersion: security.istio.io/v1, kind: PeerAuthentication, metadata: {{name: {name}}}}}\n"
            ))
            .concat()
    );
    let names: Vec<String> = parse_ok(&text).iter().map(|object| object.key().name).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn json_texts_hold_an_object_a_list_or_an_array() {
    let policy = |name: &str| {
        let meta = json!({"name": name});
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": meta})
    };
    let texts = [
        (policy("a").to_string(), vec!["a"]),
        (
            json!({"apiVersion": "v1", "kind": "List", "items": [policy("a"), policy("b")]}).to_string(),
            vec!["a", "b"],
        ),
        (format!("  \n[{}, {}]", policy("a"), policy("c")), vec!["a", "c"]),
    ];
    for (text, expected) in texts {
        let names: Vec<String> = parse_ok(&text).iter().map(|object| object.key().name).collect();
        assert_eq!(names, expected, "{text}");
    }
}

/// Documents keep their numbers (empty ones count), a preamble of comments is no document, and `...` ends one.
#[test]
fn documents_are_numbered_as_written() {
    let bad = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: Bad}\n";
    let good = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: good}\n";
    let cases = [
        (format!("# comment\n---\n{good}---\n---\n{bad}"), 3),
        (format!("{good}...\n{bad}"), 2),
        (format!("%YAML 1.2\n---\n{bad}"), 1),
        (format!("---  # first\n{good}--- # second\n{bad}"), 2),
    ];
    for (text, document) in cases {
        let diagnostics = parse("f.yaml", &text).err().unwrap_or_default();
        let numbers: Vec<usize> = diagnostics.iter().map(|d| d.document).collect();
        assert_eq!(numbers, [document], "{text}\n{}", lines(&diagnostics));
    }
}

#[test]
fn a_null_spec_is_no_spec() {
    let objects = parse_ok(&peer_authentication("null"));
    assert_eq!(objects, parse_ok(&peer_authentication("{}")));
}

/// Istio only warns about a selector without labels (it selects like no selector), so it is accepted.
#[test]
fn an_empty_selector_is_accepted() {
    for text in [
        authorization_policy("{selector: {matchLabels: {}}}"),
        peer_authentication("{selector: {}}"),
    ] {
        assert_eq!(parse_ok(&text).len(), 1);
    }
}

#[test]
fn empty_texts_hold_no_objects() {
    for text in ["", "\n", "# nothing\n", "---\n---\n", "[]"] {
        assert_eq!(parse("f.yaml", text), Ok(Vec::new()), "{text:?}");
    }
}

#[test]
fn duplicates_across_sources_are_errors() {
    let text = peer_authentication("{}");
    let result = parse_sources([("a.yaml", text.as_str()), ("b.yaml", text.as_str())]);
    let diagnostics = result.err().unwrap_or_default();
    assert_eq!(diagnostics.len(), 1, "{}", lines(&diagnostics));
    assert_eq!(diagnostics[0].file, "b.yaml");
    assert!(
        diagnostics[0].message.contains("first defined in a.yaml document 1"),
        "{}",
        diagnostics[0]
    );
}

/// The cluster's kinds parse (their unknown fields ignored) so that a source can load them.
#[test]
fn kubernetes_kinds_parse() {
    let text = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: reviews, namespace: web}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-7d4b9c-x2x8p
  namespace: web
  labels: {app: reviews}
spec:
  serviceAccountName: reviews
  futureField: ignored
  containers:
  - name: reviews
    image: reviews:v1
    ports:
    - {name: http, containerPort: 9080}
status:
  podIP: 10.244.1.7
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: web}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: http}
"#;
    let kinds: Vec<Kind> = parse_ok(text).iter().map(Object::kind).collect();
    assert_eq!(kinds, [Kind::ServiceAccount, Kind::Pod, Kind::Service]);
}

#[test]
fn parse_keys_reads_only_the_identity() {
    let text = format!(
        "{}---\n{}---\n{}",
        authorization_policy("{rules: [{from: [{source: {principals: ['spiffe://bad']}}]}]}"),
        gateway("{}"),
        authorization_policy("{}"),
    );
    let keys = parse_keys("f.yaml", &text);
    let expected = vec![
        key(Kind::AuthorizationPolicy, "web", "policy"),
        key(Kind::Gateway, "web", "waypoint"),
    ];
    assert_eq!(keys, Ok(expected));
    let missing = parse_keys("f.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {}\n")
        .err()
        .unwrap_or_default();
    assert_eq!(
        missing.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(),
        ["metadata.name"]
    );
}

#[test]
fn kinds_are_found_by_their_command_line_names() {
    let cases = [
        ("ap", Some(Kind::AuthorizationPolicy)),
        ("AuthorizationPolicies", Some(Kind::AuthorizationPolicy)),
        (
            "authorizationpolicies.security.istio.io",
            Some(Kind::AuthorizationPolicy),
        ),
        ("authorizationpolicy.networking.istio.io", None),
        ("pa", Some(Kind::PeerAuthentication)),
        ("gtw", Some(Kind::Gateway)),
        ("gateways.gateway.networking.k8s.io", Some(Kind::Gateway)),
        ("HTTPRoute", Some(Kind::HttpRoute)),
        ("httproutes", Some(Kind::HttpRoute)),
        ("grpcroute", Some(Kind::GrpcRoute)),
        ("ns", Some(Kind::Namespace)),
        ("sa", Some(Kind::ServiceAccount)),
        ("po", Some(Kind::Pod)),
        ("svc", Some(Kind::Service)),
        ("services", Some(Kind::Service)),
        ("deployments", None),
        ("", None),
    ];
    for (name, expected) in cases {
        assert_eq!(Kind::parse(name), expected, "{name:?}");
    }
    for kind in Kind::ALL {
        assert_eq!(Kind::parse(kind.name()), Some(kind));
        assert_eq!(Kind::parse(kind.plural()), Some(kind));
    }
}

#[test]
fn kinds_describe_themselves() {
    let config: Vec<Kind> = Kind::ALL.into_iter().filter(|kind| kind.is_config()).collect();
    let expected = [
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
    ];
    assert_eq!(config, expected);
    assert_eq!(Kind::HttpRoute.api_versions()[0], "gateway.networking.k8s.io/v1");
    assert_eq!(Kind::AuthorizationPolicy.group(), "security.istio.io");
    assert_eq!(Kind::Pod.group(), "");
    assert!(!Kind::Namespace.namespaced() && Kind::ServiceAccount.namespaced());
    assert_eq!(serde_json::to_value(Kind::GrpcRoute).ok(), Some(json!("GRPCRoute")));
}

#[test]
fn keys_and_diagnostics_display_their_parts() {
    assert_eq!(
        key(Kind::AuthorizationPolicy, "web", "deny").to_string(),
        "AuthorizationPolicy web/deny"
    );
    assert_eq!(key(Kind::Namespace, "web", "web").to_string(), "Namespace web");
    let full = Diagnostic {
        file: "p.yaml".into(),
        document: 2,
        object: Some("AuthorizationPolicy web/deny".into()),
        field: "spec.action".into(),
        message: "bad".into(),
    };
    assert_eq!(
        full.to_string(),
        "p.yaml: document 2: AuthorizationPolicy web/deny: spec.action: bad"
    );
    let bare = Diagnostic::object(key(Kind::Gateway, "web", "w"), "", "not found");
    assert_eq!(bare.to_string(), "Gateway web/w: not found");
    let json = serde_json::to_value(&bare).ok();
    let expected = json!({"file": "", "document": 0, "object": "Gateway web/w", "field": "", "message": "not found"});
    assert_eq!(json, Some(expected));
}

//! One table of invalid inputs. Each is parsed and applied to the baseline store: it must fail with a
//! diagnostic at the expected field whose message has the expected words, and leave the store unchanged.

use super::*;

/// An invalid input, what must be reported, and where.
struct Case {
    name: &'static str,
    text: String,
    /// The field path of the expected diagnostic.
    field: &'static str,
    /// A substring of its message.
    message: &'static str,
}

fn case(name: &'static str, text: impl Into<String>, field: &'static str, message: &'static str) -> Case {
    let text = text.into();
    Case {
        name,
        text,
        field,
        message,
    }
}

/// A rule of an AuthorizationPolicy with one `from.source` (flow style).
fn from_source(source: &str) -> String {
    authorization_policy(&format!("{{rules: [{{from: [{{source: {source}}}]}}]}}"))
}

/// A rule of an AuthorizationPolicy with one `to.operation` (flow style).
fn to_operation(operation: &str) -> String {
    authorization_policy(&format!("{{rules: [{{to: [{{operation: {operation}}}]}}]}}"))
}

/// An HTTPRoute with one rule (flow style) on the Service `web`.
fn http_rule(rule: &str) -> String {
    http_route(&format!(
        "{{parentRefs: [{{group: '', kind: Service, name: web}}], rules: [{rule}]}}"
    ))
}

/// A Gateway with the given listeners (flow style).
fn listeners(listeners: &str) -> String {
    gateway(&format!(
        "{{gatewayClassName: istio-waypoint, listeners: [{listeners}]}}"
    ))
}

/// A YAML document just over the 1 MiB limit: a policy with one long annotation.
fn oversized_document() -> String {
    let padding = "x".repeat(MAX_DOCUMENT_BYTES);
    let meta = format!("{{name: big, namespace: web, annotations: {{note: {padding}}}}}");
    format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {meta}\nspec: {{}}\n")
}

/// A text just over the 8 MiB limit, of valid small documents.
fn oversized_text() -> String {
    let document = authorization_policy("{}") + "---\n";
    document.repeat(MAX_TEXT_BYTES / document.len() + 1)
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "principal with the spiffe:// prefix",
            from_source(r#"{principals: ["spiffe://cluster.local/ns/web/sa/a"]}"#),
            "spec.rules[0].from[0].source.principals[0]",
            "without \"spiffe://\"",
        ),
        case(
            "principal that is not a workload identity",
            from_source(r#"{principals: ["cluster.local/web/a"]}"#),
            "spec.rules[0].from[0].source.principals[0]",
            "is not a principal",
        ),
        case(
            "principal with a wildcard in the middle",
            from_source(r#"{notPrincipals: ["cluster.local/*/sa/a"]}"#),
            "spec.rules[0].from[0].source.notPrincipals[0]",
            "'*' in the middle",
        ),
        case(
            "unknown field in spec",
            authorization_policy("{rulez: []}"),
            "spec.rulez",
            "unknown field `rulez`",
        ),
        case(
            "unknown field in a source",
            from_source("{principles: [x]}"),
            "spec.rules[0].from[0].source.principles",
            "unknown field `principles`",
        ),
        case("spec that is not a mapping", gateway("[]"), "spec", "must be a mapping"),
        case(
            "unknown top-level field",
            authorization_policy("{}") + "specs: {}\n",
            "specs",
            "unknown field `specs`",
        ),
        case(
            "unknown metadata field",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: web, \
             lables: {app: a}}\n",
            "metadata.lables",
            "unknown field `lables`",
        ),
        case(
            "wrong apiVersion",
            object("security.istio.io/v1alpha1", "AuthorizationPolicy", "a", "{}"),
            "apiVersion",
            "AuthorizationPolicy is apiVersion \"security.istio.io/v1\" or \"security.istio.io/v1beta1\"",
        ),
        case(
            "GRPCRoute at v1beta1",
            object("gateway.networking.k8s.io/v1beta1", "GRPCRoute", "a", "{}"),
            "apiVersion",
            "GRPCRoute is apiVersion \"gateway.networking.k8s.io/v1\"",
        ),
        case(
            "unknown kind",
            object("networking.istio.io/v1", "VirtualService", "a", "{}"),
            "kind",
            "unknown kind \"VirtualService\"",
        ),
        case(
            "missing kind",
            "apiVersion: v1\nmetadata: {name: a}\n",
            "kind",
            "required",
        ),
        case(
            "bad CIDR in ipBlocks",
            from_source(r#"{ipBlocks: ["10.0.0.0/8", "10.1.0.0/33"]}"#),
            "spec.rules[0].from[0].source.ipBlocks[1]",
            "not a CIDR",
        ),
        case(
            "port 0 in to.operation.ports",
            to_operation(r#"{ports: ["0"]}"#),
            "spec.rules[0].to[0].operation.ports[0]",
            "not a port",
        ),
        case(
            "port 70000 in to.operation.ports",
            to_operation(r#"{ports: ["8080", "70000"]}"#),
            "spec.rules[0].to[0].operation.ports[1]",
            "not a port",
        ),
        case(
            "unknown action",
            authorization_policy("{action: PERMIT, rules: [{}]}"),
            "spec.action",
            "unknown variant `PERMIT`",
        ),
        case(
            "CUSTOM without provider",
            authorization_policy("{action: CUSTOM, rules: [{}]}"),
            "spec.provider.name",
            "required for the CUSTOM action",
        ),
        case(
            "provider without CUSTOM",
            authorization_policy("{action: DENY, provider: {name: ext}, rules: [{}]}"),
            "spec.provider",
            "only the CUSTOM action takes a provider",
        ),
        case(
            "DENY without rules",
            authorization_policy("{action: DENY}"),
            "spec.rules",
            "never denies anything",
        ),
        case(
            "selector and targetRefs both",
            authorization_policy(
                "{selector: {matchLabels: {app: a}}, targetRefs: [{kind: Service, group: '', name: web}]}",
            ),
            "spec",
            "only one of selector, targetRef and targetRefs",
        ),
        case(
            "targetRefs to a Deployment",
            authorization_policy("{targetRefs: [{kind: Deployment, group: apps, name: web}]}"),
            "spec.targetRefs[0].kind",
            "cannot be targeted",
        ),
        case(
            "wildcard in matchLabels",
            authorization_policy("{selector: {matchLabels: {app: '*'}}}"),
            "spec.selector.matchLabels.app",
            "must consist of letters",
        ),
        case(
            "when without values",
            authorization_policy("{rules: [{when: [{key: 'request.headers[x-user]'}]}]}"),
            "spec.rules[0].when[0]",
            "needs values or notValues",
        ),
        case(
            "dry-run annotation that is not a boolean",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: web, \
             annotations: {istio.io/dry-run: maybe}}\nspec: {}\n",
            r#"metadata.annotations["istio.io/dry-run"]"#,
            "is not a boolean",
        ),
        case(
            "duplicate names in one text",
            authorization_policy("{}") + "---\n" + &authorization_policy("{action: AUDIT, rules: [{}]}"),
            "metadata.name",
            "duplicate AuthorizationPolicy web/policy; first defined in test.yaml document 1",
        ),
        case("oversized document", oversized_document(), "", "the limit is 1 MiB"),
        case("oversized text", oversized_text(), "", "the limit is 8 MiB"),
        case(
            "malformed YAML",
            "apiVersion: v1\nkind: [Namespace\n",
            "",
            "invalid YAML",
        ),
        case("malformed JSON", r#"{"apiVersion": "v1",}"#, "", "invalid JSON"),
        case(
            "missing metadata.name",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {namespace: web}\n",
            "metadata.name",
            "required",
        ),
        case(
            "name that is not a string",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: [a], namespace: web}\n",
            "metadata.name",
            "invalid type: sequence, expected a string",
        ),
        case(
            "invalid name characters",
            object("security.istio.io/v1", "AuthorizationPolicy", "Allow_All", "{}"),
            "metadata.name",
            "must consist of lowercase letters, digits and '-'",
        ),
        case(
            "invalid label key",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: w, namespace: web, \
             labels: {'bad key': x}}\nspec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: \
             15008, protocol: HBONE}]}\n",
            r#"metadata.labels["bad key"]"#,
            "must consist of letters",
        ),
        case(
            "namespace that does not exist",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\n",
            "metadata.namespace",
            "namespace \"shop\" not found",
        ),
        case(
            "applying a Pod",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: web}\nspec: {containers: [{name: app, \
             image: app}]}\n",
            "kind",
            "Pod objects come from the cluster",
        ),
        case(
            "applying a Service",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: web}\nspec: {ports: [{port: 80}]}\n",
            "kind",
            "ambit apply takes AuthorizationPolicy, PeerAuthentication, Gateway, HTTPRoute and GRPCRoute",
        ),
        case(
            "PeerAuthentication bad mode",
            peer_authentication("{mtls: {mode: STRICTER}}"),
            "spec.mtls.mode",
            "unknown variant `STRICTER`",
        ),
        case(
            "portLevelMtls port 0",
            peer_authentication("{selector: {matchLabels: {app: a}}, portLevelMtls: {0: {mode: DISABLE}}}"),
            "spec.portLevelMtls[0]",
            "0 is not a port",
        ),
        case(
            "portLevelMtls without a selector",
            peer_authentication("{mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}}}"),
            "spec.portLevelMtls",
            "needs a selector",
        ),
        case(
            "Gateway listener port 70000",
            listeners("{name: mesh, port: 70000, protocol: HBONE}"),
            "spec.listeners[0].port",
            "70000 is out of range",
        ),
        case(
            "Gateway listener port 0",
            listeners("{name: mesh, port: 0, protocol: HBONE}"),
            "spec.listeners[0].port",
            "0 is out of range",
        ),
        case(
            "duplicate listener names",
            listeners("{name: mesh, port: 15008, protocol: HBONE}, {name: mesh, port: 80, protocol: HTTP}"),
            "spec.listeners[1].name",
            "duplicate listener name \"mesh\"",
        ),
        case(
            "Gateway without listeners",
            gateway("{gatewayClassName: istio-waypoint}"),
            "spec.listeners",
            "at least one listener",
        ),
        case(
            "Gateway without a class",
            gateway("{listeners: [{name: mesh, port: 15008, protocol: HBONE}]}"),
            "spec.gatewayClassName",
            "required",
        ),
        case(
            "unknown listener protocol",
            listeners("{name: mesh, port: 15008, protocol: QUIC}"),
            "spec.listeners[0].protocol",
            "\"QUIC\" is not a protocol",
        ),
        case(
            "listener hostname with a wildcard inside",
            listeners("{name: http, port: 80, protocol: HTTP, hostname: 'api.*.example.com'}"),
            "spec.listeners[0].hostname",
            "wildcard only as its whole leftmost label",
        ),
        case(
            "HTTPS listener without certificates",
            listeners("{name: https, port: 443, protocol: HTTPS, tls: {mode: Terminate}}"),
            "spec.listeners[0].tls.certificateRefs",
            "required to terminate TLS",
        ),
        case(
            "HTTPRoute backendRef port 70000",
            http_rule("{backendRefs: [{name: web, port: 70000}]}"),
            "spec.rules[0].backendRefs[0].port",
            "70000 is out of range",
        ),
        case(
            "HTTPRoute Service backend without a port",
            http_rule("{backendRefs: [{name: web}]}"),
            "spec.rules[0].backendRefs[0].port",
            "required for a Service backend",
        ),
        case(
            "path match not starting with /",
            http_rule("{matches: [{path: {type: PathPrefix, value: api}}], backendRefs: [{name: web, port: 80}]}"),
            "spec.rules[0].matches[0].path.value",
            "must start with '/'",
        ),
        case(
            "path match with //",
            http_rule("{matches: [{path: {type: Exact, value: /a//b}}], backendRefs: [{name: web, port: 80}]}"),
            "spec.rules[0].matches[0].path.value",
            "must not contain \"//\"",
        ),
        case(
            "unknown method",
            http_rule("{matches: [{method: FETCH}], backendRefs: [{name: web, port: 80}]}"),
            "spec.rules[0].matches[0].method",
            "unknown variant `FETCH`",
        ),
        case(
            "bad redirect statusCode",
            http_rule("{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]}"),
            "spec.rules[0].filters[0].requestRedirect.statusCode",
            "304 is not a redirect status code",
        ),
        case(
            "filter without the field its type names",
            http_rule(
                "{filters: [{type: RequestRedirect, requestHeaderModifier: {set: [{name: x-a, value: b}]}}], \
                 backendRefs: [{name: web, port: 80}]}",
            ),
            "spec.rules[0].filters[0].requestRedirect",
            "required for a RequestRedirect filter",
        ),
        case(
            "filter with a field its type does not name",
            http_rule(
                "{filters: [{type: URLRewrite, urlRewrite: {hostname: a.example}, requestMirror: {backendRef: \
                 {name: m, port: 80}}}], backendRefs: [{name: web, port: 80}]}",
            ),
            "spec.rules[0].filters[0].requestMirror",
            "must not be set in a URLRewrite filter",
        ),
        case(
            "weight over 1000000",
            http_rule("{backendRefs: [{name: web, port: 80, weight: 1000001}]}"),
            "spec.rules[0].backendRefs[0].weight",
            "1000001 is out of range",
        ),
        case(
            "bad duration",
            http_rule("{timeouts: {request: 1d}, backendRefs: [{name: web, port: 80}]}"),
            "spec.rules[0].timeouts.request",
            "\"1d\" is not a duration",
        ),
        case(
            "backend timeout longer than the request timeout",
            http_rule("{timeouts: {request: 10s, backendRequest: 1m}, backendRefs: [{name: web, port: 80}]}"),
            "spec.rules[0].timeouts.backendRequest",
            "must not be longer than the request timeout",
        ),
        case(
            "retry code out of range",
            http_rule("{retry: {codes: [503, 302]}, backendRefs: [{name: web, port: 80}]}"),
            "spec.rules[0].retry.codes[1]",
            "302 is out of range",
        ),
        case(
            "bad hostname",
            http_route("{hostnames: [Web.Example.com]}"),
            "spec.hostnames[0]",
            "must consist of lowercase letters",
        ),
        case(
            "IP address as hostname",
            http_route("{hostnames: [10.0.0.1]}"),
            "spec.hostnames[0]",
            "is an IP address",
        ),
        case(
            "too many parentRefs",
            http_route(&format!("{{parentRefs: [{}]}}", vec!["{name: gw}"; 33].join(", "))),
            "spec.parentRefs",
            "has 33 items; at most 32 are allowed",
        ),
        case(
            "GRPCRoute method match naming neither service nor method",
            grpc_route("{rules: [{matches: [{method: {type: Exact}}], backendRefs: [{name: web, port: 9090}]}]}"),
            "spec.rules[0].matches[0].method",
            "must set service, method or both",
        ),
        case(
            "GRPCRoute bad service name",
            grpc_route(
                "{rules: [{matches: [{method: {service: 'grpc/health'}}], backendRefs: [{name: web, port: 1}]}]}",
            ),
            "spec.rules[0].matches[0].method.service",
            "is not a gRPC service name",
        ),
        case(
            "GRPCRoute filter type it does not have",
            grpc_route("{rules: [{filters: [{type: URLRewrite}], backendRefs: [{name: web, port: 9090}]}]}"),
            "spec.rules[0].filters[0].type",
            "unknown variant `URLRewrite`",
        ),
        case(
            "List item without a name",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: security.istio.io/v1\n  kind: PeerAuthentication\n  \
             metadata: {name: ok, namespace: web}\n- apiVersion: security.istio.io/v1\n  kind: PeerAuthentication\n  \
             metadata: {namespace: web}\n",
            "items[1].metadata.name",
            "required",
        ),
        case(
            "a valid object and an invalid one in one batch",
            peer_authentication("{mtls: {mode: STRICT}}")
                + "---\n"
                + &listeners("{name: mesh, port: 0, protocol: HBONE}"),
            "spec.listeners[0].port",
            "0 is out of range",
        ),
        case(
            "a valid object and one in a missing namespace in one batch",
            peer_authentication("{mtls: {mode: STRICT}}")
                + "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: \
                   shop}\n",
            "metadata.namespace",
            "namespace \"shop\" not found",
        ),
    ]
}

/// Why a case did not fail as expected; None if it did.
fn run(case: &Case) -> Option<String> {
    let mut store = baseline();
    let before = store.clone();
    let diagnostics = match apply(&mut store, &case.text) {
        Ok(outcomes) => return Some(format!("accepted: {outcomes:?}")),
        Err(diagnostics) => diagnostics,
    };
    if store != before || store.revision() != before.revision() {
        return Some("the store changed".to_string());
    }
    let expected = |d: &Diagnostic| d.field == case.field && d.message.contains(case.message);
    match diagnostics.iter().any(expected) {
        true => None,
        false => Some(format!("got:\n{}", lines(&diagnostics))),
    }
}

#[test]
fn invalid_inputs_are_rejected_and_change_nothing() {
    let cases = cases();
    assert!(cases.len() >= 30);
    let failures: Vec<String> = (cases.iter())
        .filter_map(|case| {
            run(case).map(|why| format!("{}: expected {:?} at {:?}; {why}", case.name, case.message, case.field))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// A problem two checks see (the metadata and the object's type; this crate's rules and translation's) is
/// reported once.
#[test]
fn one_problem_is_reported_once() {
    let texts = [
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: [a], namespace: web}\n"
            .to_string(),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: []\n".to_string(),
        authorization_policy("{rules: [{when: [{key: source.ip}]}]}"),
        peer_authentication("{selector: {matchLabels: {app: a}}, portLevelMtls: {0: {mode: DISABLE}}}"),
    ];
    for text in texts {
        let diagnostics = parse("test.yaml", &text).err().unwrap_or_default();
        assert_eq!(diagnostics.len(), 1, "{text}\n{}", lines(&diagnostics));
    }
}

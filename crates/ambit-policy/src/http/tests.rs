//! Tests of L7 authorization: attachment to a waypoint, every field and `not` form of a rule against requests, the
//! CUSTOM → DENY → ALLOW order with AUDIT and dry-run marks, the fail-closed handling of what the waypoint cannot
//! check, and one error per invalid value.

use std::net::IpAddr;

use ambit_types::Identity;

use super::*;
use crate::evaluate::Verdict;
use crate::istio::AuthorizationPolicy;

const ROOT: &str = "istio-system";

fn waypoint() -> Waypoint {
    Waypoint {
        namespace: "demo".to_string(),
        name: "waypoint".to_string(),
        root_namespace: ROOT.to_string(),
    }
}

fn parse_named(namespace: &str, name: &str, spec: &str) -> AuthorizationPolicy {
    let text = format!("metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n--- in:\n{text}"))
}

fn parse(namespace: &str, spec: &str) -> AuthorizationPolicy {
    parse_named(namespace, "p", spec)
}

/// A policy named `name` in `demo` targeting the Service `httpbin`, with `action` and the given rules.
fn on_httpbin(name: &str, action: &str, rules: &str) -> HttpPolicy {
    let spec =
        format!("{{targetRefs: [{{kind: Service, group: \"\", name: httpbin}}], action: {action}, rules: {rules}}}");
    compile(&parse_named("demo", name, &spec))
}

fn compile(policy: &AuthorizationPolicy) -> HttpPolicy {
    match compile_http_policy(policy, &waypoint()) {
        Ok(Some(policy)) => policy,
        Ok(None) => panic!("{policy:?} does not attach to the waypoint"),
        Err(e) => panic!("{e}"),
    }
}

fn httpbin() -> ServiceKey {
    ServiceKey::service("demo", "httpbin")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A request with owned parts; [`Req::decide`] borrows them into [`HttpRequestAttrs`].
#[derive(Clone, Debug)]
struct Req {
    identity: Option<Identity>,
    source_ip: IpAddr,
    remote_ip: IpAddr,
    destination_ip: IpAddr,
    port: u16,
    sni: Option<String>,
    service: Option<ServiceKey>,
    method: String,
    authority: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
}

/// `GET /get` to `httpbin.demo:8000` (Service demo/httpbin) from `cluster.local/ns/client/sa/curl` at 10.0.0.1.
fn get() -> Req {
    Req {
        identity: Some(identity("spiffe://cluster.local/ns/client/sa/curl")),
        source_ip: ip("10.0.0.1"),
        remote_ip: ip("10.0.0.1"),
        destination_ip: ip("10.96.0.10"),
        port: 8000,
        sni: None,
        service: Some(httpbin()),
        method: "GET".to_string(),
        authority: "httpbin.demo:8000".to_string(),
        path: "/get".to_string(),
        headers: Vec::new(),
    }
}

fn identity(uri: &str) -> Identity {
    uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"))
}

impl Req {
    fn method(mut self, method: &str) -> Self {
        self.method = method.to_string();
        self
    }

    fn path(mut self, path: &str) -> Self {
        self.path = path.to_string();
        self
    }

    fn authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_string();
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.as_bytes().to_vec()));
        self
    }

    fn peer(mut self, uri: Option<&str>) -> Self {
        self.identity = uri.map(identity);
        self
    }

    fn source(mut self, addr: &str) -> Self {
        self.source_ip = ip(addr);
        self
    }

    fn remote(mut self, addr: &str) -> Self {
        self.remote_ip = ip(addr);
        self
    }

    fn destination(mut self, addr: &str) -> Self {
        self.destination_ip = ip(addr);
        self
    }

    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn sni(mut self, sni: &str) -> Self {
        self.sni = Some(sni.to_string());
        self
    }

    fn service(mut self, service: Option<ServiceKey>) -> Self {
        self.service = service;
        self
    }

    fn decide(&self, policies: &[HttpPolicy]) -> HttpDecision {
        let headers: Vec<(&str, &[u8])> = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let attrs = HttpRequestAttrs {
            source_identity: self.identity.as_ref(),
            source_ip: self.source_ip,
            remote_ip: self.remote_ip,
            destination_ip: self.destination_ip,
            destination_port: self.port,
            sni: self.sni.as_deref(),
            service: self.service.as_ref(),
            method: &self.method,
            authority: &self.authority,
            path: &self.path,
            headers: &headers,
        };
        evaluate_http(policies, &attrs)
    }
}

// === attachment ===

#[test]
fn attachment_to_a_waypoint() {
    let services = |keys: &[ServiceKey]| Some(Attachment::Services(keys.to_vec()));
    // (case, namespace, spec, attachment)
    let cases: Vec<(&str, &str, &str, Option<Attachment>)> = vec![
        (
            "the waypoint's Gateway",
            "demo",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]}",
            Some(Attachment::Waypoint),
        ),
        (
            "the legacy singular targetRef",
            "demo",
            "{targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}",
            Some(Attachment::Waypoint),
        ),
        (
            "the Gateway with its own namespace written out",
            "demo",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint, namespace: demo}]}",
            Some(Attachment::Waypoint),
        ),
        (
            "another Gateway",
            "demo",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: other}]}",
            None,
        ),
        (
            "the Gateway from a policy in another namespace",
            "other",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint, namespace: demo}]}",
            None,
        ),
        (
            "the Gateway in another namespace",
            "demo",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint, namespace: other}]}",
            None,
        ),
        (
            "a Gateway of the wrong group (a classic Istio Gateway)",
            "demo",
            "{targetRefs: [{kind: Gateway, group: networking.istio.io, name: waypoint}]}",
            None,
        ),
        (
            "the waypoint GatewayClass from the root namespace",
            ROOT,
            "{targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}]}",
            Some(Attachment::Waypoint),
        ),
        (
            "the waypoint GatewayClass from another namespace",
            "demo",
            "{targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}]}",
            None,
        ),
        (
            "a Service",
            "demo",
            "{targetRefs: [{kind: Service, group: \"\", name: httpbin}]}",
            services(&[httpbin()]),
        ),
        (
            "a Service, group written as core, twice",
            "demo",
            "{targetRefs: [{kind: Service, group: core, name: httpbin}, {kind: Service, name: httpbin}]}",
            services(&[httpbin()]),
        ),
        (
            "Services of another namespace (the policy's namespace counts)",
            "other",
            "{targetRefs: [{kind: Service, name: httpbin, namespace: demo}, {kind: Service, name: echo}]}",
            services(&[
                ServiceKey::service("other", "httpbin"),
                ServiceKey::service("other", "echo"),
            ]),
        ),
        (
            "a ServiceEntry",
            "demo",
            "{targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: external}]}",
            services(&[ServiceKey::service_entry("demo", "external")]),
        ),
        (
            "a ServiceEntry without its group",
            "demo",
            "{targetRefs: [{kind: ServiceEntry, name: external}]}",
            None,
        ),
        (
            "a Service and the Gateway: the whole waypoint",
            "demo",
            "{targetRefs: [{kind: Service, name: httpbin}, {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]}",
            Some(Attachment::Waypoint),
        ),
        (
            "an HTTPRoute",
            "demo",
            "{targetRefs: [{kind: HTTPRoute, group: gateway.networking.k8s.io, name: httpbin}]}",
            None,
        ),
        ("a namespace-wide policy", "demo", "{rules: [{}]}", None),
        ("a mesh-wide policy", ROOT, "{rules: [{}]}", None),
        (
            "a selector that picks the waypoint's pods",
            "demo",
            "{selector: {matchLabels: {gateway.networking.k8s.io/gateway-name: waypoint}}}",
            None,
        ),
    ];
    for (case, namespace, spec, want) in cases {
        let policy = parse(namespace, spec);
        assert_eq!(attachment(&policy, &waypoint()), want, "{case}");
        let compiled = compile_http_policy(&policy, &waypoint()).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(compiled.map(|p| p.attachment), want, "{case}");
    }
}

#[test]
fn policies_apply_by_service() {
    let gateway = compile(&parse_named(
        "demo",
        "gateway-deny-admin",
        "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}], action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}",
    ));
    let echo = compile(&parse_named(
        "demo",
        "echo-allow-get",
        "{targetRefs: [{kind: Service, name: echo}], rules: [{to: [{operation: {methods: [GET]}}]}]}",
    ));
    let policies = [gateway, echo];
    let echo_key = Some(ServiceKey::service("demo", "echo"));
    // (case, request, verdict, deciding policy)
    let cases = [
        (
            "httpbin: only the Gateway policy applies",
            get().method("POST"),
            Verdict::Allow,
            None,
        ),
        (
            "httpbin: the Gateway DENY applies",
            get().path("/admin"),
            Verdict::Deny,
            Some("gateway-deny-admin"),
        ),
        (
            "echo: its ALLOW applies",
            get().service(echo_key.clone()),
            Verdict::Allow,
            Some("echo-allow-get"),
        ),
        (
            "echo: its ALLOW denies POST",
            get().method("POST").service(echo_key),
            Verdict::Deny,
            None,
        ),
        (
            "a workload-addressed request: only the Gateway policy",
            get().method("POST").service(None),
            Verdict::Allow,
            None,
        ),
        (
            "a ServiceEntry of the same name is another service",
            get()
                .method("POST")
                .service(Some(ServiceKey::service_entry("demo", "echo"))),
            Verdict::Allow,
            None,
        ),
    ];
    for (case, request, verdict, policy) in cases {
        let decision = request.decide(&policies);
        assert_eq!(decision.verdict, verdict, "{case}: {decision}");
        assert_eq!(decision.policy.map(|p| p.name), policy.map(String::from), "{case}");
    }
}

// === fields ===

/// One ALLOW rule, and requests it must and must not allow.
struct FieldCase {
    rule: &'static str,
    allowed: Vec<Req>,
    denied: Vec<Req>,
}

fn field_cases() -> Vec<FieldCase> {
    let plaintext = || get().peer(None);
    let other_peer = || get().peer(Some("spiffe://cluster.local/ns/other/sa/bot"));
    let foreign_peer = || get().peer(Some("spiffe://example.org/ns/client/sa/curl"));
    let case = |rule, allowed, denied| FieldCase { rule, allowed, denied };
    vec![
        // from.source
        case(
            "{from: [{source: {principals: [cluster.local/ns/client/sa/curl]}}]}",
            vec![get()],
            vec![other_peer(), plaintext(), foreign_peer()],
        ),
        case(
            "{from: [{source: {principals: [cluster.local/ns/client/*]}}]}",
            vec![get()],
            vec![other_peer(), plaintext()],
        ),
        case(
            "{from: [{source: {principals: [\"*/sa/curl\"]}}]}",
            vec![get(), foreign_peer()],
            vec![other_peer(), plaintext()],
        ),
        case(
            "{from: [{source: {principals: [\"*\"]}}]}",
            vec![get(), other_peer()],
            vec![plaintext()],
        ),
        case(
            "{from: [{source: {notPrincipals: [\"*\"]}}]}",
            vec![plaintext()],
            vec![get()],
        ),
        case(
            "{from: [{source: {notPrincipals: [cluster.local/ns/other/sa/bot]}}]}",
            vec![get(), plaintext()],
            vec![other_peer()],
        ),
        case(
            "{from: [{source: {namespaces: [client]}}]}",
            vec![get(), foreign_peer()],
            vec![other_peer(), plaintext()],
        ),
        case(
            "{from: [{source: {namespaces: [\"c*t\"]}}]}",
            vec![get()],
            vec![other_peer(), plaintext()],
        ),
        case(
            "{from: [{source: {namespaces: [\"*\"]}}]}",
            vec![get(), other_peer()],
            vec![plaintext()],
        ),
        case(
            "{from: [{source: {notNamespaces: [other]}}]}",
            vec![get(), plaintext()],
            vec![other_peer()],
        ),
        case(
            "{from: [{source: {serviceAccounts: [client/curl]}}]}",
            vec![get(), foreign_peer()],
            vec![other_peer(), plaintext()],
        ),
        case(
            "{from: [{source: {serviceAccounts: [curl]}}]}",
            vec![get().peer(Some("spiffe://cluster.local/ns/demo/sa/curl"))],
            vec![get()],
        ),
        case(
            "{from: [{source: {notServiceAccounts: [other/bot]}}]}",
            vec![get(), plaintext()],
            vec![other_peer()],
        ),
        case(
            "{from: [{source: {trustDomains: [cluster.local]}}]}",
            vec![get(), other_peer()],
            vec![foreign_peer(), plaintext()],
        ),
        case(
            "{from: [{source: {notTrustDomains: [\"*.org\"]}}]}",
            vec![get(), plaintext()],
            vec![foreign_peer()],
        ),
        case(
            "{from: [{source: {ipBlocks: [10.0.0.0/24]}}]}",
            vec![get()],
            vec![get().source("10.0.1.1")],
        ),
        case(
            "{from: [{source: {notIpBlocks: [10.0.0.1]}}]}",
            vec![get().source("10.0.0.2")],
            vec![get()],
        ),
        case(
            "{from: [{source: {remoteIpBlocks: [192.0.2.0/24]}}]}",
            vec![get().remote("192.0.2.7")],
            vec![get()],
        ),
        case(
            "{from: [{source: {notRemoteIpBlocks: [192.0.2.0/24]}}]}",
            vec![get()],
            vec![get().remote("192.0.2.7")],
        ),
        // to.operation
        case(
            "{to: [{operation: {hosts: [\"httpbin.demo:8000\"]}}]}",
            vec![get(), get().authority("HTTPBIN.Demo:8000")],
            vec![get().authority("httpbin.demo"), get().authority("httpbin.demo:9000")],
        ),
        case(
            "{to: [{operation: {hosts: [httpbin.demo]}}]}",
            vec![get().authority("httpbin.demo")],
            vec![get()],
        ),
        case(
            "{to: [{operation: {hosts: [\"httpbin.demo*\"]}}]}",
            vec![get(), get().authority("httpbin.demo")],
            vec![get().authority("echo.demo:8000")],
        ),
        case(
            "{to: [{operation: {hosts: [\"*.demo\"]}}]}",
            vec![get().authority("httpbin.demo")],
            vec![get()],
        ),
        case(
            "{to: [{operation: {hosts: [\"*.DEMO:8000\"]}}]}",
            vec![get()],
            vec![get().authority("httpbin.other:8000")],
        ),
        case(
            "{to: [{operation: {notHosts: [\"echo.*\"]}}]}",
            vec![get()],
            vec![get().authority("echo.demo:8000")],
        ),
        case(
            "{to: [{operation: {ports: [\"8000\"]}}]}",
            vec![get()],
            vec![get().port(9000)],
        ),
        case(
            "{to: [{operation: {notPorts: [\"8000\"]}}]}",
            vec![get().port(9000)],
            vec![get()],
        ),
        case(
            "{to: [{operation: {methods: [GET, HEAD]}}]}",
            vec![get(), get().method("HEAD")],
            vec![get().method("POST"), get().method("get")],
        ),
        case(
            "{to: [{operation: {methods: [get]}}]}",
            vec![get().method("get")],
            vec![get()],
        ),
        case(
            "{to: [{operation: {methods: [\"P*\"]}}]}",
            vec![get().method("POST"), get().method("PUT")],
            vec![get()],
        ),
        case(
            "{to: [{operation: {notMethods: [DELETE]}}]}",
            vec![get()],
            vec![get().method("DELETE")],
        ),
        case(
            "{to: [{operation: {paths: [/get]}}]}",
            vec![get(), get().path("/get?x=1")],
            vec![get().path("/get/"), get().path("/GET")],
        ),
        case(
            "{to: [{operation: {paths: [\"/api/*\"]}}]}",
            vec![get().path("/api/"), get().path("/api/v1/x")],
            vec![get().path("/api")],
        ),
        case(
            "{to: [{operation: {paths: [\"*.html\"]}}]}",
            vec![get().path("/a/index.html")],
            vec![get().path("/index.htm")],
        ),
        case("{to: [{operation: {paths: [\"*\"]}}]}", vec![get()], vec![]),
        case(
            "{to: [{operation: {paths: [\"/a*b\"]}}]}",
            vec![get().path("/a*b")],
            vec![get().path("/axb")],
        ),
        case(
            "{to: [{operation: {paths: [\"/api/{*}/items\"]}}]}",
            vec![get().path("/api/7/items")],
            vec![get().path("/api/7/8/items"), get().path("/api//items")],
        ),
        case(
            "{to: [{operation: {paths: [\"/api/{**}\"]}}]}",
            vec![get().path("/api/"), get().path("/api/7/8")],
            vec![get().path("/api"), get().path("/apis/7")],
        ),
        case(
            "{to: [{operation: {notPaths: [\"/admin*\"]}}]}",
            vec![get()],
            vec![get().path("/admin"), get().path("/admin/x?y")],
        ),
        // when
        case(
            "{when: [{key: \"request.headers[X-User]\", values: [alice]}]}",
            vec![get().header("x-user", "alice"), get().header("X-USER", "alice")],
            vec![get(), get().header("x-user", "Alice")],
        ),
        case(
            "{when: [{key: \"request.headers[x-user]\", values: [\"al*\", \"*ob\"]}]}",
            vec![get().header("x-user", "alex"), get().header("x-user", "bob")],
            vec![get().header("x-user", "carol")],
        ),
        case(
            "{when: [{key: \"request.headers[x-user]\", values: [\"*\"]}]}",
            vec![get().header("x-user", "")],
            vec![get()],
        ),
        case(
            "{when: [{key: \"request.headers[x-user]\", values: [\"a,b\"]}]}",
            vec![get().header("x-user", "a").header("x-user", "b")],
            vec![get().header("x-user", "a")],
        ),
        case(
            "{when: [{key: \"request.headers[x-user]\", notValues: [bob]}]}",
            vec![get(), get().header("x-user", "alice")],
            vec![get().header("x-user", "bob")],
        ),
        case(
            "{when: [{key: \"request.headers[:authority]\", values: [\"httpbin.*\"]}]}",
            vec![get()],
            vec![get().authority("echo.demo")],
        ),
        case(
            "{when: [{key: source.ip, values: [10.0.0.0/8]}]}",
            vec![get()],
            vec![get().source("192.168.0.1")],
        ),
        case(
            "{when: [{key: remote.ip, notValues: [192.0.2.7]}]}",
            vec![get()],
            vec![get().remote("192.0.2.7")],
        ),
        case(
            "{when: [{key: source.namespace, values: [client]}]}",
            vec![get()],
            vec![other_peer(), plaintext()],
        ),
        case(
            "{when: [{key: source.principal, notValues: [\"*\"]}]}",
            vec![plaintext()],
            vec![get()],
        ),
        case(
            "{when: [{key: source.serviceAccount, values: [client/curl]}]}",
            vec![get()],
            vec![other_peer()],
        ),
        case(
            "{when: [{key: destination.ip, values: [10.96.0.0/16]}]}",
            vec![get()],
            vec![get().destination("10.1.0.1")],
        ),
        case(
            "{when: [{key: destination.port, values: [\"8000\", \"8080\"]}]}",
            vec![get(), get().port(8080)],
            vec![get().port(80)],
        ),
        case(
            "{when: [{key: connection.sni, values: [\"*.demo\"]}]}",
            vec![get().sni("httpbin.demo")],
            vec![get(), get().sni("httpbin.other")],
        ),
        case(
            "{when: [{key: connection.sni, notValues: [evil.demo]}]}",
            vec![get(), get().sni("httpbin.demo")],
            vec![get().sni("evil.demo")],
        ),
        // combinations: alternatives are ORed, the rest ANDed
        case(
            "{from: [{source: {namespaces: [other]}}, {source: {ipBlocks: [10.0.0.1/32]}}]}",
            vec![get(), other_peer().source("10.9.9.9")],
            vec![get().source("10.9.9.9")],
        ),
        case(
            "{to: [{operation: {methods: [GET], paths: [/get]}}, {operation: {methods: [POST], paths: [/post]}}]}",
            vec![get(), get().method("POST").path("/post")],
            vec![get().method("POST"), get().path("/post")],
        ),
        case(
            "{from: [{source: {namespaces: [client]}}], to: [{operation: {methods: [GET]}}], when: [{key: \"request.headers[x-a]\", values: [\"1\"]}, {key: \"request.headers[x-b]\", values: [\"2\"]}]}",
            vec![get().header("x-a", "1").header("x-b", "2")],
            vec![
                get().header("x-a", "1"),
                get().header("x-b", "2"),
                other_peer().header("x-a", "1").header("x-b", "2"),
            ],
        ),
        case("{}", vec![get(), plaintext().method("DELETE")], vec![]),
    ]
}

#[test]
fn every_field_and_not_form() {
    for FieldCase { rule, allowed, denied } in field_cases() {
        let policy = on_httpbin("p", "ALLOW", &format!("[{rule}]"));
        for request in &allowed {
            let decision = request.decide(std::slice::from_ref(&policy));
            assert_eq!(
                decision.verdict,
                Verdict::Allow,
                "{rule} should allow {request:?}: {decision}"
            );
            assert_eq!(decision.rule, Some(0), "{rule}");
        }
        for request in &denied {
            let decision = request.decide(std::slice::from_ref(&policy));
            assert_eq!(
                decision.verdict,
                Verdict::Deny,
                "{rule} should deny {request:?}: {decision}"
            );
        }
    }
}

#[test]
fn glob_matches_like_istio_namespace_regex() {
    // (pattern, matching, not matching)
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("demo", &["demo"], &["demo2", "xdemo", ""]),
        ("*", &["", "demo"], &[]),
        ("team-*", &["team-", "team-a"], &["team", "ateam-a"]),
        ("*-prod", &["a-prod", "-prod"], &["a-prod2"]),
        (
            "team-*-prod",
            &["team-a-prod", "team--prod", "team-a-b-prod"],
            &["team-prod", "team-a-pro"],
        ),
        ("*a*", &["a", "banana"], &["bbb"]),
        ("ab*b", &["abb", "abxb"], &["ab"]),
    ];
    for (pattern, matching, not_matching) in cases {
        let glob = Glob::new(pattern);
        for value in *matching {
            assert!(glob.matches(value), "{pattern} should match {value:?}");
        }
        for value in *not_matching {
            assert!(!glob.matches(value), "{pattern} should not match {value:?}");
        }
    }
}

// === decision order ===

#[test]
fn decision_order() {
    let allow_get = || on_httpbin("allow-get", "ALLOW", "[{to: [{operation: {methods: [GET]}}]}]");
    let deny_admin = || {
        on_httpbin(
            "deny-admin",
            "DENY",
            "[{to: [{operation: {paths: [/nothing]}}]}, {to: [{operation: {paths: [\"/admin*\"]}}]}]",
        )
    };
    let audit_all = || on_httpbin("audit-all", "AUDIT", "[{}]");
    let audit_post = || on_httpbin("audit-post", "AUDIT", "[{to: [{operation: {methods: [POST]}}]}]");
    let custom_ext = || on_httpbin("ext", "CUSTOM", "[{to: [{operation: {paths: [\"/ext*\"]}}]}]");
    let dry = |mut p: HttpPolicy| {
        p.dry_run = true;
        p
    };
    let deny_all = || on_httpbin("deny-all", "DENY", "[{}]");
    struct Case {
        name: &'static str,
        policies: Vec<HttpPolicy>,
        request: Req,
        verdict: Verdict,
        /// (policy, rule) that decided.
        matched: Option<(&'static str, usize)>,
        audit: Vec<&'static str>,
        dry_run: Vec<&'static str>,
        body: Option<&'static str>,
    }
    let cases = vec![
        Case {
            name: "no policy: allowed",
            policies: vec![],
            request: get(),
            verdict: Verdict::Allow,
            matched: None,
            audit: vec![],
            dry_run: vec![],
            body: None,
        },
        Case {
            name: "a matching ALLOW allows",
            policies: vec![allow_get()],
            request: get(),
            verdict: Verdict::Allow,
            matched: Some(("allow-get", 0)),
            audit: vec![],
            dry_run: vec![],
            body: None,
        },
        Case {
            name: "ALLOW policies exist and none matches: denied",
            policies: vec![allow_get()],
            request: get().method("POST"),
            verdict: Verdict::Deny,
            matched: None,
            audit: vec![],
            dry_run: vec![],
            body: Some("RBAC: access denied: no rule matched in ALLOW policies demo/allow-get\n"),
        },
        Case {
            name: "an ALLOW policy without rules allows nothing",
            policies: vec![compile(&parse(
                "demo",
                "{targetRefs: [{kind: Service, name: httpbin}]}",
            ))],
            request: get(),
            verdict: Verdict::Deny,
            matched: None,
            audit: vec![],
            dry_run: vec![],
            body: Some("RBAC: access denied: no rule matched in ALLOW policies demo/p\n"),
        },
        Case {
            name: "DENY wins over a matching ALLOW, naming its rule",
            policies: vec![allow_get(), deny_admin()],
            request: get().path("/admin/users"),
            verdict: Verdict::Deny,
            matched: Some(("deny-admin", 1)),
            audit: vec![],
            dry_run: vec![],
            body: Some("RBAC: access denied: denied by DENY policy demo/deny-admin (spec.rules[1] matched)\n"),
        },
        Case {
            name: "a DENY that does not match, and no ALLOW: allowed",
            policies: vec![deny_admin()],
            request: get(),
            verdict: Verdict::Allow,
            matched: None,
            audit: vec![],
            dry_run: vec![],
            body: None,
        },
        Case {
            name: "the first matching DENY in order is reported",
            policies: vec![deny_all(), deny_admin()],
            request: get().path("/admin"),
            verdict: Verdict::Deny,
            matched: Some(("deny-all", 0)),
            audit: vec![],
            dry_run: vec![],
            body: Some("RBAC: access denied: denied by DENY policy demo/deny-all (spec.rules[0] matched)\n"),
        },
        Case {
            name: "AUDIT marks and does not change an allow",
            policies: vec![audit_all(), audit_post(), allow_get()],
            request: get(),
            verdict: Verdict::Allow,
            matched: Some(("allow-get", 0)),
            audit: vec!["audit-all"],
            dry_run: vec![],
            body: None,
        },
        Case {
            name: "AUDIT marks and does not change a deny",
            policies: vec![audit_all(), audit_post(), allow_get()],
            request: get().method("POST"),
            verdict: Verdict::Deny,
            matched: None,
            audit: vec!["audit-all", "audit-post"],
            dry_run: vec![],
            body: Some("RBAC: access denied: no rule matched in ALLOW policies demo/allow-get\n"),
        },
        Case {
            name: "AUDIT alone does not make ALLOW policies exist",
            policies: vec![audit_post()],
            request: get(),
            verdict: Verdict::Allow,
            matched: None,
            audit: vec![],
            dry_run: vec![],
            body: None,
        },
        Case {
            name: "a matching CUSTOM denies before DENY and ALLOW",
            policies: vec![allow_get(), deny_all(), custom_ext()],
            request: get().path("/ext/x"),
            verdict: Verdict::Deny,
            matched: Some(("ext", 0)),
            audit: vec![],
            dry_run: vec![],
            body: Some(
                "RBAC: access denied: denied by CUSTOM policy demo/ext (spec.rules[0] matched): the waypoint has no \
                 external authorizer, so CUSTOM matches are denied\n",
            ),
        },
        Case {
            name: "a CUSTOM that does not match changes nothing",
            policies: vec![allow_get(), custom_ext()],
            request: get(),
            verdict: Verdict::Allow,
            matched: Some(("allow-get", 0)),
            audit: vec![],
            dry_run: vec![],
            body: None,
        },
        Case {
            name: "dry-run DENY and ALLOW are reported, not enforced",
            policies: vec![dry(deny_all()), dry(allow_get())],
            request: get().method("POST"),
            verdict: Verdict::Allow,
            matched: None,
            audit: vec![],
            dry_run: vec!["deny-all"],
            body: None,
        },
    ];
    for case in cases {
        let decision = case.request.decide(&case.policies);
        let name = case.name;
        assert_eq!(decision.verdict, case.verdict, "{name}: {decision}");
        assert_eq!(decision.is_allowed(), case.verdict == Verdict::Allow, "{name}");
        let matched = decision.policy.as_ref().map(|p| p.name.as_str()).zip(decision.rule);
        assert_eq!(matched, case.matched, "{name}: {decision}");
        let audit: Vec<&str> = decision.audit.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(audit, case.audit, "{name}");
        let dry_run: Vec<&str> = decision.dry_run.iter().map(|m| m.policy.name.as_str()).collect();
        assert_eq!(dry_run, case.dry_run, "{name}");
        assert_eq!(decision.forbidden_body().as_deref(), case.body, "{name}");
    }
}

#[test]
fn decision_text_lists_marks() {
    let policies = [
        on_httpbin("audit-all", "AUDIT", "[{}]"),
        {
            let mut p = on_httpbin("dry-deny", "DENY", "[{}]");
            p.dry_run = true;
            p
        },
        on_httpbin("allow-get", "ALLOW", "[{to: [{operation: {methods: [GET]}}]}]"),
    ];
    let decision = get().decide(&policies);
    assert_eq!(
        decision.to_string(),
        "allowed by ALLOW policy demo/allow-get (spec.rules[0] matched); audited by AUDIT policy demo/audit-all; \
         dry-run DENY policy demo/dry-deny (spec.rules[0] matched) (not enforced)"
    );
    assert_eq!(
        get().decide(&[]).reason.to_string(),
        "allowed: no ALLOW policy applies and no DENY policy matched"
    );
}

// === what the waypoint cannot check ===

#[test]
fn unsupported_attributes_fail_closed() {
    struct Case {
        name: &'static str,
        action: &'static str,
        rules: &'static str,
        issues: Vec<Issue>,
        allowed: Vec<Req>,
        denied: Vec<Req>,
    }
    let issue = |path: &str, kind, effect| Issue {
        path: path.to_string(),
        kind,
        effect,
    };
    let jwt = || IssueKind::RequestAuthentication;
    let cases = vec![
        Case {
            name: "ALLOW with requestPrincipals never matches; its other rules still do",
            action: "ALLOW",
            rules: "[{from: [{source: {requestPrincipals: [\"*\"]}}]}, {to: [{operation: {paths: [/public]}}]}]",
            issues: vec![issue(
                "spec.rules[0].from[0].source.requestPrincipals",
                jwt(),
                Effect::RuleNeverMatches { rule: 0 },
            )],
            allowed: vec![get().path("/public")],
            denied: vec![get(), get().header("authorization", "Bearer x")],
        },
        Case {
            name: "ALLOW with notRequestPrincipals never matches either",
            action: "ALLOW",
            rules: "[{from: [{source: {notRequestPrincipals: [\"*\"], namespaces: [client]}}]}]",
            issues: vec![issue(
                "spec.rules[0].from[0].source.notRequestPrincipals",
                jwt(),
                Effect::RuleNeverMatches { rule: 0 },
            )],
            allowed: vec![],
            denied: vec![get()],
        },
        Case {
            name: "DENY with only requestPrincipals denies every request",
            action: "DENY",
            rules: "[{from: [{source: {notRequestPrincipals: [\"*\"]}}]}]",
            issues: vec![issue(
                "spec.rules[0].from[0].source.notRequestPrincipals",
                jwt(),
                Effect::AttributeIgnored { rule: 0 },
            )],
            allowed: vec![],
            denied: vec![get(), get().peer(None)],
        },
        Case {
            name: "DENY on a claim and a path denies the path for everyone",
            action: "DENY",
            rules: "[{to: [{operation: {paths: [/admin]}}], when: [{key: \"request.auth.claims[groups]\", notValues: [admins]}]}]",
            issues: vec![issue(
                "spec.rules[0].when[0].key",
                jwt(),
                Effect::AttributeIgnored { rule: 0 },
            )],
            allowed: vec![get()],
            denied: vec![get().path("/admin")],
        },
        Case {
            name: "ALLOW with an Envoy metadata condition never matches",
            action: "ALLOW",
            rules: "[{when: [{key: \"experimental.envoy.filters.network.mysql_proxy[db.table]\", values: [\"[update]\"]}]}]",
            issues: vec![issue(
                "spec.rules[0].when[0].key",
                IssueKind::Experimental,
                Effect::RuleNeverMatches { rule: 0 },
            )],
            allowed: vec![],
            denied: vec![get()],
        },
        Case {
            name: "CUSTOM denies what it matches",
            action: "CUSTOM",
            rules: "[{to: [{operation: {paths: [\"/ext*\"]}}]}]",
            issues: vec![issue(
                "spec.action",
                IssueKind::CustomAction { provider: None },
                Effect::DeniesMatches,
            )],
            allowed: vec![get()],
            denied: vec![get().path("/ext")],
        },
    ];
    for case in cases {
        let policy = on_httpbin("p", case.action, case.rules);
        let name = case.name;
        assert_eq!(policy.issues, case.issues, "{name}");
        assert_eq!(
            policy.status(),
            HttpStatus::PartiallyApplied { issues: case.issues },
            "{name}"
        );
        for request in &case.allowed {
            assert!(
                request.decide(std::slice::from_ref(&policy)).is_allowed(),
                "{name}: {request:?}"
            );
        }
        for request in &case.denied {
            assert!(
                !request.decide(std::slice::from_ref(&policy)).is_allowed(),
                "{name}: {request:?}"
            );
        }
    }
}

#[test]
fn status_text() {
    let applied = on_httpbin("p", "ALLOW", "[{}]");
    assert_eq!(applied.status(), HttpStatus::Applied);
    assert_eq!(applied.status().to_string(), "applied");
    let jwt = on_httpbin("p", "ALLOW", "[{from: [{source: {requestPrincipals: [\"*\"]}}]}]");
    assert_eq!(
        jwt.status().to_string(),
        "spec.rules[0].from[0].source.requestPrincipals: the waypoint does not validate JWTs (RequestAuthentication), \
         so requests have no request principal or claims; the ALLOW rule spec.rules[0] never matches, which is more \
         restrictive than requested"
    );
    let custom = compile(&parse(
        "demo",
        "{targetRefs: [{kind: Service, name: httpbin}], action: CUSTOM, provider: {name: opa}, rules: [{}]}",
    ));
    assert_eq!(
        custom.status().to_string(),
        "spec.action: the waypoint cannot ask the external authorization provider \"opa\" (CUSTOM action); requests \
         the policy matches are denied"
    );
}

// === invalid policies ===

#[test]
fn invalid_values_name_their_field() {
    // (rules or whole spec, error)
    let cases = [
        (
            "[{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]",
            "spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.0/33\" is not a CIDR: the prefix length 33 is longer than the 32 bits of the address",
        ),
        (
            "[{from: [{source: {notRemoteIpBlocks: [nope]}}]}]",
            "spec.rules[0].from[0].source.notRemoteIpBlocks[0]: \"nope\" is not a CIDR: the address is neither IPv4 nor IPv6",
        ),
        (
            "[{to: [{operation: {ports: [\"0\"]}}]}]",
            "spec.rules[0].to[0].operation.ports[0]: \"0\" is not a port: use a number from 1 to 65535",
        ),
        (
            "[{to: [{operation: {notPorts: [http]}}]}]",
            "spec.rules[0].to[0].operation.notPorts[0]: \"http\" is not a port: use a number from 1 to 65535",
        ),
        (
            "[{from: [{source: {principals: [\"spiffe://cluster.local/ns/a/sa/b\"]}}]}]",
            "spec.rules[0].from[0].source.principals[0]: \"spiffe://cluster.local/ns/a/sa/b\" is not a principal: write it without \"spiffe://\"",
        ),
        (
            "[{from: [{source: {notPrincipals: [alice]}}]}]",
            "spec.rules[0].from[0].source.notPrincipals[0]: \"alice\" is not a principal: use <trust-domain>/ns/<namespace>/sa/<service-account>",
        ),
        (
            "[{from: [{source: {namespaces: [Demo]}}]}]",
            "spec.rules[0].from[0].source.namespaces[0]: \"Demo\" is not a namespace pattern: use lowercase letters, digits, '-', '.' and '*'",
        ),
        (
            "[{from: [{source: {serviceAccounts: [\"a/*\"]}}]}]",
            "spec.rules[0].from[0].source.serviceAccounts[0]: \"a/*\" is not a service account: use <namespace>/<name> or <name>, without wildcards",
        ),
        (
            "[{from: [{source: {serviceAccounts: [a/b], namespaces: [a]}}]}]",
            "spec.rules[0].from[0].source: serviceAccounts cannot be combined with principals or namespaces in one source",
        ),
        (
            "[{from: [{source: {}}]}]",
            "spec.rules[0].from[0].source: must set at least one field",
        ),
        (
            "[{to: [{}]}]",
            "spec.rules[0].to[0].operation: must set at least one field",
        ),
        (
            "[{to: [{operation: {paths: [\"\"]}}]}]",
            "spec.rules[0].to[0].operation.paths[0]: must not be an empty string",
        ),
        (
            "[{from: [{source: {requestPrincipals: [\"\"]}}]}]",
            "spec.rules[0].from[0].source.requestPrincipals[0]: must not be an empty string",
        ),
        (
            "[{when: [{key: source.ip}]}]",
            "spec.rules[0].when[0]: the condition on \"source.ip\" has neither values nor notValues",
        ),
        (
            "[{when: [{key: \"\", values: [x]}]}]",
            "spec.rules[0].when[0].key: must be set",
        ),
        (
            "[{when: [{key: request.method, values: [GET]}]}]",
            "spec.rules[0].when[0]: \"request.method\" is not a condition key Istio knows",
        ),
        (
            "[{when: [{key: \"destination.labels[app]\", values: [x]}]}]",
            "spec.rules[0].when[0]: \"destination.labels[app]\" is not supported: targetRefs (or a selector) replace it",
        ),
        (
            "[{when: [{key: destination.namespace, values: [x]}]}]",
            "spec.rules[0].when[0]: \"destination.namespace\" is not supported: the policy's own namespace replaces it",
        ),
        (
            "[{when: [{key: request.headers, values: [x]}]}]",
            "spec.rules[0].when[0]: \"request.headers\" must name its entry in brackets, like request.headers[x-user]",
        ),
        (
            "[{when: [{key: \"request.headers[]\", values: [x]}]}]",
            "spec.rules[0].when[0]: \"request.headers[]\" must name its entry in brackets, like request.headers[x-user]",
        ),
        (
            "[{when: [{key: experimental.envoy.filters.a, values: [x]}]}]",
            "spec.rules[0].when[0]: \"experimental.envoy.filters.a\" must name its entry in brackets, like request.headers[x-user]",
        ),
        (
            "[{when: [{key: \"request.auth.claims[iss]\", values: [\"\"]}]}]",
            "spec.rules[0].when[0].values[0]: must not be an empty string",
        ),
        (
            "[{when: [{key: destination.port, notValues: [\"99999\"]}]}]",
            "spec.rules[0].when[0].notValues[0]: \"99999\" is not a port: use a number from 1 to 65535",
        ),
        (
            "[{to: [{operation: {paths: [\"/a/{**}/{*}\"]}}]}]",
            "spec.rules[0].to[0].operation.paths[0]: \"/a/{**}/{*}\" has an operator after {**}: {**} must be the last operator",
        ),
        (
            "[{to: [{operation: {paths: [\"/users/{id}\"]}}]}]",
            "spec.rules[0].to[0].operation.paths[0]: \"/users/{id}\" has '{' or '}' outside a {*} or {**} segment",
        ),
        (
            "[{to: [{operation: {notPaths: [\"/a/{*}x\"]}}]}]",
            "spec.rules[0].to[0].operation.notPaths[0]: \"/a/{*}x\" has '{' or '}' outside a {*} or {**} segment",
        ),
    ];
    for (rules, want) in cases {
        let spec = format!("{{targetRefs: [{{kind: Service, name: httpbin}}], rules: {rules}}}");
        let err = compile_http_policy(&parse("demo", &spec), &waypoint()).expect_err(rules);
        assert_eq!(err.to_string(), want, "{rules}");
    }
    let whole = [
        (
            "{targetRefs: [{kind: Service, name: httpbin}], provider: {name: opa}}",
            "spec.provider: provider is only allowed with the CUSTOM action, not ALLOW",
        ),
        (
            "{targetRefs: [{kind: Service, name: httpbin}], rules: [{to: [{operation: {paths: [\"/a/{*}/b*\"]}}]}]}",
            "spec.rules[0].to[0].operation.paths[0]: \"/a/{*}/b*\" has the segment \"b*\", which is not a plain path segment (letters, digits and -._~%!$&'()+,;:@=)",
        ),
    ];
    for (spec, want) in whole {
        let err = compile_http_policy(&parse("demo", spec), &waypoint()).expect_err(spec);
        assert_eq!(err.to_string(), want, "{spec}");
    }
    let annotated: AuthorizationPolicy = serde_saphyr::from_str(
        "metadata: {name: p, namespace: demo, annotations: {istio.io/dry-run: \"yes\"}}\nspec: {targetRefs: [{kind: Service, name: httpbin}]}",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = compile_http_policy(&annotated, &waypoint()).expect_err("dry-run");
    assert_eq!(
        err.to_string(),
        "metadata.annotations[\"istio.io/dry-run\"]: \"yes\" is not a boolean: use true or false"
    );
    let unnamed = parse_named("demo", "\"\"", "{targetRefs: [{kind: Service, name: httpbin}]}");
    let err = compile_http_policy(&unnamed, &waypoint()).expect_err("unnamed");
    assert_eq!(err.to_string(), "metadata.name: must be set");
}

#[test]
fn invalid_policies_fail_closed() {
    let bad = "[{from: [{source: {ipBlocks: [bad]}}]}]";
    let spec =
        |action: &str| format!("{{targetRefs: [{{kind: Service, name: httpbin}}], action: {action}, rules: {bad}}}");
    let all = [
        parse_named("demo", "bad-allow", &spec("ALLOW")),
        parse_named("demo", "bad-deny", &spec("DENY")),
        parse_named(
            "demo",
            "not-mine",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: other}]}",
        ),
        parse_named(
            "demo",
            "good-allow",
            "{targetRefs: [{kind: Service, name: httpbin}], rules: [{}]}",
        ),
    ];
    let policies = waypoint_policies(&all, &waypoint());
    let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bad-allow", "bad-deny", "good-allow"]);
    let error = "spec.rules[0].from[0].source.ipBlocks[0]: \"bad\" is not a CIDR: the address is neither IPv4 nor IPv6";
    for policy in &policies[..2] {
        assert_eq!(policy.invalid.as_ref().map(ToString::to_string).as_deref(), Some(error));
        assert_eq!(
            policy.status().to_string(),
            format!("invalid, so it fails closed: {error}")
        );
    }
    assert_eq!(policies[0].rules, vec![], "an invalid ALLOW allows nothing");
    let decision = get().decide(&policies);
    assert_eq!(
        decision.policy.map(|p| p.name).as_deref(),
        Some("bad-deny"),
        "an invalid DENY denies everything"
    );
    let decision = get().decide(&[policies[0].clone(), policies[2].clone()]);
    assert!(decision.is_allowed(), "an invalid ALLOW adds nothing: {decision}");
    assert!(
        !get().decide(&policies[..1]).is_allowed(),
        "an invalid ALLOW alone denies"
    );
}

#[test]
fn compiled_form() {
    let policy = compile(&parse(
        "demo",
        "{targetRefs: [{kind: Service, name: httpbin}], action: DENY, rules: [{from: [{source: {namespaces: [\"team-*\"], notIpBlocks: [10.0.0.0/8]}}], to: [{operation: {hosts: [Example.COM], paths: [\"/api/{*}\"]}}], when: [{key: \"request.headers[X-Env]\", values: [prod]}]}]}",
    ));
    let json = serde_json::to_value(&policy).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        json,
        serde_json::json!({
            "name": "p",
            "namespace": "demo",
            "action": "DENY",
            "attachment": {"services": [{"kind": "Service", "namespace": "demo", "name": "httpbin"}]},
            "rules": [{
                "from": [{"checks": [
                    {"namespace": {"anyOf": ["team-*"], "noneOf": []}},
                    {"sourceIp": {"anyOf": [], "noneOf": ["10.0.0.0/8"]}},
                ]}],
                "to": [{"checks": [
                    {"host": {"anyOf": [{"exact": "example.com"}], "noneOf": []}},
                    {"path": {"anyOf": [{"template": "/api/{*}"}], "noneOf": []}},
                ]}],
                "when": [{"header": {"name": "x-env", "values": {"anyOf": [{"exact": "prod"}], "noneOf": []}}}],
                "neverMatches": false,
            }],
            "dryRun": false,
            "issues": [],
        })
    );
}

//! Attachment to the Service, the default route, and problems: each names its route and field, and the table does
//! what the Gateway API asks instead.

use http::{Method, StatusCode};

use super::super::{RouteKind, RouteRef, TableKind, Timeouts};
use super::*;

#[test]
fn without_routes_every_request_goes_to_the_service_itself() {
    let (table, problems) = RouteTable::compile(&[], &[], &cart());
    assert_eq!(problems, []);
    assert_eq!((table.kind(), table.service()), (TableKind::Default, &cart()));
    let requests = [
        Request::get("/"),
        Request::get("/a/b?c=d").method(Method::DELETE),
        Request::grpc("/pkg.Cart/Add"),
    ];
    for request in requests {
        let forward = forward(&table, &request);
        assert_eq!((forward.rule, forward.backend), (None, &cart()), "{request:?}");
        assert_eq!(forward.request.headers, []);
        assert_eq!((forward.request.authority, forward.request.path), (None, None));
        assert_eq!((forward.response_headers, forward.mirrors), (&[][..], vec![]));
        assert_eq!((forward.timeouts, forward.retry), (Timeouts::default(), None));
        assert_eq!(forward.fault, Default::default());
    }
}

#[test]
fn routes_attach_through_a_service_parent_ref() {
    let cases = [
        ("{group: '', kind: Service, name: cart}", true),
        ("{group: core, kind: Service, name: cart}", true),
        ("{group: '', kind: Service, name: cart, port: 8080}", true),
        ("{group: '', kind: Service, name: cart, namespace: shop}", true),
        ("{group: '', kind: Service, name: cart, port: 9090}", false),
        ("{kind: Service, name: cart}", false),
        ("{group: '', name: cart}", false),
        ("{group: '', kind: Service, name: orders}", false),
        ("{name: waypoint}", false),
    ];
    for (parent, attached) in cases {
        let yaml = format!(
            "metadata: {{name: r, namespace: shop}}\nspec:\n  parentRefs: [{parent}]\n  rules: [{{backendRefs: [{{name: hit, port: 80}}]}}]"
        );
        let (table, problems) = RouteTable::compile(&[&http(&yaml)], &[], &cart());
        assert_eq!(problems, [], "{parent}");
        let expected = match attached {
            true => "forward shop/hit:80 by r#0",
            false => "forward shop/cart:8080 by default",
        };
        assert_eq!(outcome(&decide(&table, &Request::get("/"), 0)), expected, "{parent}");
    }
}

#[test]
fn consumer_routes_and_section_names_do_not_attach_and_say_why() {
    let consumer = http(
        "metadata: {name: mine, namespace: web}\nspec:\n  parentRefs: [{group: '', kind: Service, name: cart, namespace: shop}]\n  rules: [{backendRefs: [{name: hit, port: 80}]}]",
    );
    let sectioned = http(
        "metadata: {name: sectioned, namespace: shop}\nspec:\n  parentRefs: [{group: '', kind: Service, name: cart, sectionName: http}]",
    );
    let (table, problems) = RouteTable::compile(&[&consumer, &sectioned], &[], &cart());
    assert_eq!(table.kind(), TableKind::Default);
    let routes: Vec<String> = problems.iter().map(|problem| problem.route.to_string()).collect();
    assert_eq!(routes, ["HTTPRoute web/mine", "HTTPRoute shop/sectioned"]);
    assert_eq!(
        fields(&problems),
        ["spec.parentRefs[0].namespace", "spec.parentRefs[0].sectionName"]
    );
    assert!(problems[0].message.contains("consumer route"), "{}", problems[0]);
    assert!(problems[1].message.contains("`port`"), "{}", problems[1]);
}

#[test]
fn a_route_without_namespace_is_in_default() {
    let route =
        http("metadata: {name: r}\nspec:\n  parentRefs: [{group: '', kind: Service, name: cart, namespace: shop}]");
    let (_, problems) = RouteTable::compile(&[&route], &[], &cart());
    let expected = RouteRef {
        kind: RouteKind::Http,
        namespace: "default".to_string(),
        name: "r".to_string(),
    };
    assert_eq!(
        problems.iter().map(|problem| &problem.route).collect::<Vec<_>>(),
        [&expected]
    );
}

#[test]
fn grpc_routes_take_precedence_over_http_routes_on_the_same_port() {
    let http_route = route("web", "- backendRefs: [{name: web, port: 80}]");
    let grpc_route = grpc_route("rpc", "- backendRefs: [{name: rpc, port: 80}]");
    let (table, problems) = RouteTable::compile(&[&http_route], &[&grpc_route], &cart());
    assert_eq!(table.kind(), TableKind::Grpc);
    assert_eq!(fields(&problems), ["spec.parentRefs"]);
    assert_eq!(problems[0].route.to_string(), "HTTPRoute shop/web");
    assert!(problems[0].message.contains("GRPCRoute shop/rpc"), "{}", problems[0]);
    assert_eq!(to(&table, &Request::grpc("/pkg.Cart/Add")), "rpc");
    assert_eq!(to(&table, &Request::get("/")), "404");
}

#[test]
fn a_route_without_rules_forwards_everything_to_the_service() {
    let route =
        http("metadata: {name: r, namespace: shop}\nspec:\n  parentRefs: [{group: '', kind: Service, name: cart}]");
    let table = table(&[route]);
    assert_eq!(table.kind(), TableKind::Http);
    assert_eq!(
        outcome(&decide(&table, &Request::get("/any?x=1"), 0)),
        "forward shop/cart:8080 by r#0"
    );
}

#[test]
fn a_rule_without_backends_forwards_to_the_service_with_its_filters() {
    let table = one("
        - matches: [{path: {value: /a}}]
          filters:
          - type: RequestHeaderModifier
            requestHeaderModifier: {set: [{name: x-tag, value: a}]}
        ");
    let forward = forward(&table, &Request::get("/a"));
    assert_eq!(forward.backend, &cart());
    assert_eq!(forward.request.headers.len(), 1);
}

#[test]
fn requests_matching_no_rule_get_404() {
    let table = one("- {matches: [{path: {value: /a}}], backendRefs: [{name: a, port: 80}]}");
    assert_eq!(to(&table, &Request::get("/a/b")), "a");
    let decision = decide(&table, &Request::get("/b"), 0);
    assert_eq!(
        (&decision, decision.local_status()),
        (&Decision::NoRoute, Some(StatusCode::NOT_FOUND))
    );
}

/// Problems that make a whole rule answer 500, table-driven: (rules, the field named, the rule that answers 500).
#[test]
fn rules_that_cannot_be_honoured_answer_500() {
    let cases = [
        (
            "- filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Limit, name: l}}]",
            "spec.rules[0].filters[0].extensionRef",
        ),
        (
            "- filters: [{type: RequestRedirect, requestRedirect: {hostname: b.example}}]\n  backendRefs: [{name: a, port: 80}]",
            "spec.rules[0].backendRefs",
        ),
        (
            "- matches: [{path: {type: Exact, value: /a}}]\n  filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]",
            "spec.rules[0].matches",
        ),
        (
            "- filters: [{type: RequestHeaderModifier}]",
            "spec.rules[0].filters[0].requestHeaderModifier",
        ),
        (
            "- filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: 'bad name', value: a}]}}]",
            "spec.rules[0].filters[0].requestHeaderModifier.set[0].name",
        ),
        (
            "- filters: [{type: RequestRedirect, requestRedirect: {statusCode: 300}}]",
            "spec.rules[0].filters[0].requestRedirect.statusCode",
        ),
        (
            "- filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]",
            "spec.rules[0].filters[0].requestRedirect.scheme",
        ),
        (
            "- filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]",
            "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath",
        ),
    ];
    for (rules, field) in cases {
        let (table, problems) = compile(&[route("r", rules)]);
        assert_eq!(fields(&problems), [field], "{rules}");
        assert!(problems[0].message.ends_with("the rule answers 500"), "{}", problems[0]);
        let decision = decide(&table, &Request::get("/a"), 0);
        assert_eq!(outcome(&decision), "500 by r#0", "{rules}");
        assert_eq!(decision.local_status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    }
}

/// Problems with one backend: its share of the requests is answered 500, the other backend's is forwarded.
#[test]
fn invalid_backends_get_their_share_answered_500() {
    let cases = [
        (
            "{group: example.com, kind: Bucket, name: b, port: 80}",
            "spec.rules[0].backendRefs[1].kind",
        ),
        (
            "{kind: ServiceImport, name: b, port: 80}",
            "spec.rules[0].backendRefs[1].kind",
        ),
        ("{name: b}", "spec.rules[0].backendRefs[1].port"),
        ("{name: b, port: 70000}", "spec.rules[0].backendRefs[1].port"),
        (
            "{name: b, port: 80, filters: [{type: URLRewrite, urlRewrite: {hostname: x.example}}]}",
            "spec.rules[0].backendRefs[1].filters[0].type",
        ),
        (
            "{name: b, port: 80, filters: [{type: ExtensionRef, extensionRef: {group: x.example, kind: K, name: k}}]}",
            "spec.rules[0].backendRefs[1].filters[0].extensionRef",
        ),
    ];
    for (backend, field) in cases {
        let rules = format!("- backendRefs: [{{name: a, port: 80}}, {backend}]");
        let (table, problems) = compile(&[route("r", &rules)]);
        assert_eq!(fields(&problems), [field], "{backend}");
        assert!(
            problems[0]
                .message
                .ends_with("this backend's share of requests is answered 500")
        );
        let outcomes: Vec<String> = sweep(4)
            .map(|sample| outcome(&decide(&table, &Request::get("/"), sample)))
            .collect();
        let expected = [
            "forward shop/a:80 by r#0",
            "forward shop/a:80 by r#0",
            "500 by r#0",
            "500 by r#0",
        ];
        assert_eq!(outcomes, expected, "{backend}");
    }
}

#[test]
fn a_match_that_cannot_be_compiled_is_left_out() {
    let cases = [
        (
            "{path: {type: RegularExpression, value: '/a('}}",
            "spec.rules[0].matches[0].path.value",
        ),
        (
            "{headers: [{type: RegularExpression, name: x-a, value: '[z-a]'}]}",
            "spec.rules[0].matches[0].headers[0].value",
        ),
        (
            "{queryParams: [{type: RegularExpression, name: q, value: '(?P<'}]}",
            "spec.rules[0].matches[0].queryParams[0].value",
        ),
        (
            "{headers: [{name: 'x a', value: b}]}",
            "spec.rules[0].matches[0].headers[0].name",
        ),
    ];
    for (bad, field) in cases {
        let rules = format!(
            "- matches: [{bad}, {{path: {{value: /ok}}}}]\n  backendRefs: [{{name: a, port: 80}}]\n- backendRefs: [{{name: b, port: 80}}]"
        );
        let (table, problems) = compile(&[route("r", &rules)]);
        assert_eq!(fields(&problems), [field], "{bad}");
        assert!(
            problems[0].message.ends_with("the match is left out"),
            "{}",
            problems[0]
        );
        let request = Request::get("/a(?q=1").header("x-a", "b");
        assert_eq!(to(&table, &request), "b", "{bad}");
        assert_eq!(to(&table, &Request::get("/ok")), "a", "{bad}");
    }
}

#[test]
fn an_unusable_mirror_is_left_out_and_the_rule_still_forwards() {
    let (table, problems) = compile(&[route(
        "r",
        "
        - filters:
          - {type: RequestMirror, requestMirror: {backendRef: {name: m}}}
          - {type: RequestMirror, requestMirror: {backendRef: {name: n, port: 80}, percent: 150}}
          - {type: RequestMirror, requestMirror: {backendRef: {name: o, port: 80}}}
          backendRefs: [{name: a, port: 80}]
        ",
    )]);
    let expected = [
        "spec.rules[0].filters[0].requestMirror.backendRef.port",
        "spec.rules[0].filters[1].requestMirror.percent",
    ];
    assert_eq!(fields(&problems), expected);
    assert!(
        problems
            .iter()
            .all(|problem| problem.message.ends_with("the mirror is left out"))
    );
    let forward = forward(&table, &Request::get("/"));
    assert_eq!(forward.backend.name, "a");
    assert_eq!(forward.mirrors, [&ServiceRef::new("shop", "o", 80)]);
}

#[test]
fn backends_default_to_the_route_namespace_and_may_name_another() {
    let table = one("
        - matches: [{path: {value: /here}}]
          backendRefs: [{name: a, port: 80}]
        - matches: [{path: {value: /there}}]
          backendRefs: [{name: b, namespace: other, port: 9090}]
        ");
    assert_eq!(
        forward(&table, &Request::get("/here")).backend,
        &ServiceRef::new("shop", "a", 80)
    );
    assert_eq!(
        forward(&table, &Request::get("/there")).backend,
        &ServiceRef::new("other", "b", 9090)
    );
}

#[test]
fn problems_read_as_route_field_and_message() {
    let (_, problems) = compile(&[route(
        "r",
        "- backendRefs: [{name: a, port: 80}, {kind: Bucket, group: s3.example, name: b}]",
    )]);
    assert_eq!(
        problems[0].to_string(),
        "HTTPRoute shop/r: spec.rules[0].backendRefs[1].kind: s3.example/Bucket is not a supported backend: ambit \
         forwards to Services only; this backend's share of requests is answered 500"
    );
}

#[test]
fn decisions_name_the_rule_they_come_from() {
    let table = one("
        - name: first
          matches: [{path: {value: /a}}]
          backendRefs: [{name: a, port: 80}]
        ");
    let forward = forward(&table, &Request::get("/a"));
    let rule = forward.rule.expect("a rule");
    assert_eq!(rule.to_string(), "HTTPRoute shop/r spec.rules[0] (first)");
    assert_eq!(forward.backend.to_string(), "shop/a:80");
}

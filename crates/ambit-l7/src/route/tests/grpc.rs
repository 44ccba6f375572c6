//! GRPCRoutes: service and method matches (Exact and RegularExpression), headers, precedence, and rules that
//! forward, filter and split like HTTPRoute rules. gRPC requests are `POST /<service>/<method>`.

use super::super::TableKind;
use super::*;

fn grpc_table(routes: &[GrpcRoute]) -> RouteTable {
    let routes: Vec<&GrpcRoute> = routes.iter().collect();
    let (table, problems) = RouteTable::compile(&[], &routes, &cart());
    assert_eq!(problems, [], "unexpected problems");
    assert_eq!(table.kind(), TableKind::Grpc);
    table
}

/// Whether a request matches a GRPCRoute rule with the single match `route_match` (YAML flow mapping).
fn grpc_matches(route_match: &str, request: &Request) -> bool {
    let table = grpc_table(&[grpc_route(
        "g",
        &format!("- {{matches: [{route_match}], backendRefs: [{{name: hit, port: 80}}]}}"),
    )]);
    match to(&table, request).as_str() {
        "hit" => true,
        "404" => false,
        other => panic!("unexpected decision {other}"),
    }
}

#[test]
fn method_matches() {
    let both = "{method: {service: shop.v1.Cart, method: Add}}";
    let service = "{method: {service: shop.v1.Cart}}";
    let method = "{method: {type: Exact, method: Add}}";
    let regex_service = "{method: {type: RegularExpression, service: 'shop\\.v[0-9]+\\.Cart'}}";
    let regex_both = "{method: {type: RegularExpression, service: 'shop\\..*', method: 'Add|Remove'}}";
    let cases = [
        (both, "/shop.v1.Cart/Add", true),
        (both, "/shop.v1.Cart/Remove", false),
        (both, "/shop.v1.Cart/add", false),
        (both, "/shop.v2.Cart/Add", false),
        (both, "/shop.v1.Cart/Add/extra", false),
        (service, "/shop.v1.Cart/Remove", true),
        (service, "/shop.v1.Carts/Remove", false),
        (service, "/shop.v1.Cart", false),
        (method, "/any.Service/Add", true),
        (method, "/any.Service/Addition", false),
        (method, "//Add", false),
        (regex_service, "/shop.v7.Cart/Add", true),
        (regex_service, "/shopxv7.Cart/Add", false),
        (regex_both, "/shop.v1.Cart/Remove", true),
        (regex_both, "/shop.v1.Cart/List", false),
        ("{}", "/anything/Goes", true),
        ("{}", "/not-even-grpc-shaped", true),
        ("{headers: [{name: x-tenant, value: a}]}", "/shop.v1.Cart/Add", false),
    ];
    for (route_match, path, expected) in cases {
        assert_eq!(
            grpc_matches(route_match, &Request::grpc(path)),
            expected,
            "{route_match} {path}"
        );
    }
}

#[test]
fn headers_and_grpc_only() {
    let route_match = "{method: {service: shop.v1.Cart}, headers: [{name: X-Tenant, value: a}]}";
    let call = Request::grpc("/shop.v1.Cart/Add");
    assert!(grpc_matches(route_match, &call.clone().header("x-tenant", "a")));
    assert!(!grpc_matches(route_match, &call.header("x-tenant", "b")));
    let not_grpc = Request::get("/shop.v1.Cart/Add")
        .method(http::Method::POST)
        .header("x-tenant", "a");
    assert!(!grpc_matches(route_match, &not_grpc));
    assert!(!grpc_matches("{}", &Request::get("/")));
}

#[test]
fn precedence_by_service_then_method_then_headers() {
    let old = grpc(
        "
metadata: {name: old, namespace: shop, creationTimestamp: '2020-01-01T00:00:00Z'}
spec:
  parentRefs: [{group: '', kind: Service, name: cart}]
  rules:
  - backendRefs: [{name: any, port: 80}]
  - matches: [{method: {method: Add}}]
    backendRefs: [{name: add, port: 80}]
",
    );
    let new = grpc(
        "
metadata: {name: new, namespace: shop, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  parentRefs: [{group: '', kind: Service, name: cart}]
  rules:
  - matches: [{method: {service: shop.v1.Cart}}]
    backendRefs: [{name: cart, port: 80}]
  - matches: [{method: {service: shop.v1.Cart, method: Add}}]
    backendRefs: [{name: cart-add, port: 80}]
  - matches: [{method: {service: shop.v1.Cart, method: Add}, headers: [{name: x-canary, value: '1'}]}]
    backendRefs: [{name: canary, port: 80}]
  - matches: [{method: {method: Add}}]
    backendRefs: [{name: add-new, port: 80}]
",
    );
    let table = grpc_table(&[new, old]);
    let cases = [
        (Request::grpc("/shop.v1.Cart/Add").header("x-canary", "1"), "canary"),
        (Request::grpc("/shop.v1.Cart/Add"), "cart-add"),
        (Request::grpc("/shop.v1.Cart/List"), "cart"),
        (Request::grpc("/other.Svc/Add"), "add"),
        (Request::grpc("/other.Svc/List"), "any"),
    ];
    for (request, expected) in cases {
        assert_eq!(to(&table, &request), expected, "{request:?}");
    }
}

#[test]
fn grpc_rules_forward_filter_split_and_fail_like_http_rules() {
    let table = grpc_table(&[grpc_route(
        "g",
        "
        - matches: [{method: {service: shop.v1.Cart}}]
          filters:
          - type: RequestHeaderModifier
            requestHeaderModifier: {add: [{name: x-via, value: waypoint}]}
          - type: RequestMirror
            requestMirror: {backendRef: {name: shadow, port: 9000}}
          backendRefs:
          - {name: v1, port: 9000, weight: 1}
          - name: v2
            port: 9000
            weight: 1
            filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-version, value: v2}]}}]
        - matches: [{method: {service: shop.v1.Orders}}]
        ",
    )]);
    let call = Request::grpc("/shop.v1.Cart/Add");
    let outcomes: Vec<String> = (sweep(2).map(|sample| decide(&table, &call, sample)))
        .map(|decision| match decision {
            Decision::Forward(forward) => format!(
                "{} headers={} response={} mirrors={}",
                forward.backend,
                forward.request.headers.len(),
                forward.response_headers.len(),
                forward.mirrors.len()
            ),
            other => outcome(&other),
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "shop/v1:9000 headers=1 response=0 mirrors=1",
            "shop/v2:9000 headers=1 response=1 mirrors=1"
        ]
    );
    let itself = forward(&table, &Request::grpc("/shop.v1.Orders/Get"));
    assert_eq!(
        (itself.backend, itself.timeouts, itself.retry),
        (&cart(), Default::default(), None)
    );
    assert_eq!(to(&table, &Request::grpc("/shop.v1.Users/Get")), "404");
}

#[test]
fn grpc_problems_name_their_field() {
    let route = grpc_route(
        "g",
        "
        - matches: [{method: {type: RegularExpression, service: '('}}]
        - filters: [{type: ExtensionRef, extensionRef: {group: x.example, kind: K, name: k}}]
          matches: [{method: {service: a.B}}]
        - backendRefs: [{name: ok, port: 80, weight: 1}, {kind: Bucket, name: b, port: 80, weight: 1}]
        ",
    );
    let (table, problems) = RouteTable::compile(&[], &[&route], &cart());
    let expected = [
        "spec.rules[0].matches[0].method.service",
        "spec.rules[1].filters[0].extensionRef",
        "spec.rules[2].backendRefs[1].kind",
    ];
    assert_eq!(fields(&problems), expected);
    assert!(
        problems
            .iter()
            .all(|problem| problem.route.to_string() == "GRPCRoute shop/g")
    );
    assert_eq!(to(&table, &Request::grpc("/a.B/C")), "500 g#1");
    let outcomes: Vec<String> = sweep(2)
        .map(|sample| outcome(&decide(&table, &Request::grpc("/x.Y/Z"), sample)))
        .collect();
    assert_eq!(outcomes, ["forward shop/ok:80 by g#2", "500 by g#2"]);
}

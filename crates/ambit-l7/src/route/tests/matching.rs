//! Every HTTPRoute match type, and precedence across rules and routes.

use http::Method;

use super::*;

/// Whether a request matches a rule with the single match `route_match` (YAML flow mapping).
fn matches(route_match: &str, request: &Request) -> bool {
    let table = one(&format!(
        "- {{matches: [{route_match}], backendRefs: [{{name: hit, port: 80}}]}}"
    ));
    match to(&table, request).as_str() {
        "hit" => true,
        "404" => false,
        other => panic!("unexpected decision {other}"),
    }
}

#[test]
fn paths() {
    let cases = [
        ("{path: {type: Exact, value: /abc}}", "/abc", true),
        ("{path: {type: Exact, value: /abc}}", "/abc/", false),
        ("{path: {type: Exact, value: /abc}}", "/Abc", false),
        ("{path: {type: Exact, value: /abc}}", "/abcd", false),
        ("{path: {type: PathPrefix, value: /foo}}", "/foo", true),
        ("{path: {type: PathPrefix, value: /foo}}", "/foo/", true),
        ("{path: {type: PathPrefix, value: /foo}}", "/foo/bar", true),
        ("{path: {type: PathPrefix, value: /foo}}", "/foobar", false),
        ("{path: {type: PathPrefix, value: /foo}}", "/fo", false),
        ("{path: {type: PathPrefix, value: /foo}}", "/Foo", false),
        ("{path: {type: PathPrefix, value: /foo/}}", "/foo", true),
        ("{path: {type: PathPrefix, value: /foo/}}", "/foo/bar", true),
        ("{path: {type: PathPrefix, value: /foo/}}", "/foobar", false),
        ("{path: {value: /foo}}", "/foo/bar", true),
        ("{path: {type: PathPrefix, value: /}}", "/", true),
        ("{path: {type: PathPrefix, value: /}}", "/anything/at/all", true),
        ("{path: {}}", "/x", true),
        ("{}", "/x", true),
        (
            "{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}",
            "/v12/items",
            true,
        ),
        ("{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}", "/v12", false),
        (
            "{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}",
            "/api/v1/x",
            false,
        ),
        ("{path: {type: RegularExpression, value: '/a|/b'}}", "/b", true),
        ("{path: {type: RegularExpression, value: '/a|/b'}}", "/ab", false),
    ];
    for (route_match, path, expected) in cases {
        assert_eq!(
            matches(route_match, &Request::get(path)),
            expected,
            "{route_match} {path}"
        );
    }
}

#[test]
fn the_query_is_not_part_of_the_path() {
    assert!(matches("{path: {type: Exact, value: /a}}", &Request::get("/a?b=c")));
}

#[test]
fn methods() {
    let cases = [(Method::GET, true), (Method::HEAD, false), (Method::POST, false)];
    for (method, expected) in cases {
        assert_eq!(
            matches("{method: GET}", &Request::get("/").method(method.clone())),
            expected,
            "{method}"
        );
    }
    assert!(matches("{method: PATCH}", &Request::get("/").method(Method::PATCH)));
}

#[test]
fn headers() {
    let exact = "{headers: [{name: X-Env, value: prod}]}";
    let joined = "{headers: [{name: x-env, value: 'a,b'}]}";
    let regex = "{headers: [{type: RegularExpression, name: x-env, value: 'pr.*'}]}";
    let repeated = "{headers: [{name: x-env, value: a}, {name: X-ENV, value: b}]}";
    let both = "{headers: [{name: x-env, value: prod}, {name: x-zone, value: z1}]}";
    let cases = [
        (exact, vec![("x-env", "prod")], true),
        (exact, vec![("X-ENV", "prod")], true),
        (exact, vec![("x-env", "Prod")], false),
        (exact, vec![("x-env", "production")], false),
        (exact, vec![("x-other", "prod")], false),
        (exact, vec![], false),
        (exact, vec![("x-env", "prod"), ("x-env", "prod")], false),
        (joined, vec![("x-env", "a"), ("x-env", "b")], true),
        (joined, vec![("x-env", "b"), ("x-env", "a")], false),
        (regex, vec![("x-env", "prod")], true),
        (regex, vec![("x-env", "a-prod")], false),
        (repeated, vec![("x-env", "a")], true),
        (repeated, vec![("x-env", "b")], false),
        (both, vec![("x-env", "prod"), ("x-zone", "z1")], true),
        (both, vec![("x-env", "prod")], false),
    ];
    for (route_match, headers, expected) in cases {
        let request = (headers.iter()).fold(Request::get("/"), |request, (name, value)| request.header(name, value));
        assert_eq!(matches(route_match, &request), expected, "{route_match} {headers:?}");
    }
}

#[test]
fn the_host_header_is_the_authority() {
    let route_match = "{headers: [{name: Host, value: 'cart.shop:8080'}]}";
    assert!(matches(route_match, &Request::get("/")));
    assert!(!matches(route_match, &Request::get("/").authority("cart:8080")));
    assert!(matches(
        route_match,
        &Request::get("/").authority("").header("host", "cart.shop:8080")
    ));
    let regex = "{headers: [{type: RegularExpression, name: host, value: 'cart(\\.shop)?(:[0-9]+)?'}]}";
    assert!(matches(regex, &Request::get("/").authority("cart")));
}

#[test]
fn query_params() {
    let exact = "{queryParams: [{name: q, value: '1'}]}";
    let regex = "{queryParams: [{type: RegularExpression, name: q, value: '[0-9]+'}]}";
    let spaced = "{queryParams: [{name: 'a b', value: 'c d'}]}";
    let repeated = "{queryParams: [{name: q, value: '1'}, {name: q, value: '2'}]}";
    let cases = [
        (exact, "/?q=1", true),
        (exact, "/?x=0&q=1", true),
        (exact, "/?Q=1", false),
        (exact, "/?q=11", false),
        (exact, "/?q=1&q=2", true),
        (exact, "/?q=2&q=1", false),
        (exact, "/?q=%31", true),
        (exact, "/?q", false),
        (exact, "/", false),
        (regex, "/?q=123", true),
        (regex, "/?q=12a", false),
        (spaced, "/?a%20b=c%20d", true),
        (repeated, "/?q=1", true),
        (repeated, "/?q=2", false),
    ];
    for (route_match, target, expected) in cases {
        assert_eq!(
            matches(route_match, &Request::get(target)),
            expected,
            "{route_match} {target}"
        );
    }
}

#[test]
fn all_conditions_of_a_match_must_hold_and_any_match_of_a_rule_may() {
    let table = one("
        - matches:
          - {path: {value: /a}, method: POST, headers: [{name: x-a, value: '1'}], queryParams: [{name: q, value: '1'}]}
          - {path: {type: Exact, value: /b}}
          backendRefs: [{name: hit, port: 80}]
        ");
    let full = Request::get("/a/x?q=1").method(Method::POST).header("x-a", "1");
    assert_eq!(to(&table, &full), "hit");
    assert_eq!(to(&table, &full.clone().method(Method::GET)), "404");
    assert_eq!(to(&table, &Request::get("/a/x?q=1").method(Method::POST)), "404");
    assert_eq!(
        to(&table, &Request::get("/a/x").method(Method::POST).header("x-a", "1")),
        "404"
    );
    assert_eq!(to(&table, &Request::get("/b")), "hit");
}

/// One table of rules, each forwarding to a backend named after what makes it specific; requests, and the rule
/// that must win.
#[test]
fn precedence_across_rules() {
    let table = one(
        "
        - matches: [{path: {type: PathPrefix, value: /}}]
          backendRefs: [{name: root, port: 80}]
        - matches: [{path: {type: RegularExpression, value: '/api/v[0-9]+/items'}}]
          backendRefs: [{name: regex, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /api}, queryParams: [{name: q, value: '1'}, {name: r, value: '1'}]}]
          backendRefs: [{name: two-params, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-a, value: '1'}]}]
          backendRefs: [{name: one-header, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-a, value: '1'}, {name: x-b, value: '1'}]}]
          backendRefs: [{name: two-headers, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]
          backendRefs: [{name: post, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /api}}]
          backendRefs: [{name: api, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /api/v1}}]
          backendRefs: [{name: v1, port: 80}]
        - matches: [{path: {type: Exact, value: /api}}]
          backendRefs: [{name: exact, port: 80}]
        ",
    );
    let get = Request::get;
    let cases = [
        (get("/api"), "exact"),
        (get("/api").method(Method::POST), "exact"),
        (get("/api/x"), "api"),
        (get("/api/v1/x"), "v1"),
        (
            get("/api/v1/x")
                .method(Method::POST)
                .header("x-a", "1")
                .header("x-b", "1"),
            "v1",
        ),
        (get("/other"), "root"),
        (get("/api/v2/items"), "api"),
        (get("/api/x").method(Method::POST), "post"),
        (
            get("/api/x").method(Method::POST).header("x-a", "1").header("x-b", "1"),
            "post",
        ),
        (get("/api/x").header("x-a", "1"), "one-header"),
        (get("/api/x").header("x-a", "1").header("x-b", "1"), "two-headers"),
        (get("/api/x?q=1&r=1").header("x-a", "1"), "one-header"),
        (get("/api/x?q=1&r=1"), "two-params"),
        (get("/api/x?q=1"), "api"),
    ];
    for (request, expected) in cases {
        assert_eq!(to(&table, &request), expected, "{request:?}");
    }
}

#[test]
fn regular_expressions_rank_below_prefixes_and_longer_patterns_first() {
    let table = one("
        - matches: [{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}]
          backendRefs: [{name: short, port: 80}]
        - matches: [{path: {type: RegularExpression, value: '/v[0-9]+/items/.*'}}]
          backendRefs: [{name: long, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /v1/items/special}}]
          backendRefs: [{name: prefix, port: 80}]
        ");
    let cases = [
        ("/v1/items/3", "long"),
        ("/v1/other", "short"),
        ("/v1/items/special", "prefix"),
        ("/x", "404"),
    ];
    for (path, expected) in cases {
        assert_eq!(to(&table, &Request::get(path)), expected, "{path}");
    }
}

#[test]
fn ties_go_to_the_first_rule_and_match() {
    let table = one("
        - matches: [{path: {value: /b}}, {path: {value: /a}}]
          backendRefs: [{name: first, port: 80}]
        - matches: [{path: {value: /a}}]
          backendRefs: [{name: second, port: 80}]
        ");
    assert_eq!(to(&table, &Request::get("/a")), "first");
}

#[test]
fn ties_across_routes_go_to_the_oldest_then_by_name() {
    let rules = |backend: &str| format!("- backendRefs: [{{name: {backend}, port: 80}}]");
    let old = http(&route_yaml(
        "zeta",
        "creationTimestamp: '2020-01-01T00:00:00Z'",
        &rules("zeta"),
    ));
    let new = http(&route_yaml(
        "alpha",
        "creationTimestamp: '2024-01-01T00:00:00Z'",
        &rules("alpha"),
    ));
    assert_eq!(to(&table(&[new.clone(), old.clone()]), &Request::get("/")), "zeta");
    assert_eq!(to(&table(&[old, new]), &Request::get("/")), "zeta");

    let unaged = [route("zeta", &rules("zeta")), route("alpha", &rules("alpha"))];
    assert_eq!(to(&table(&unaged), &Request::get("/")), "alpha");
}

#[test]
fn a_more_specific_match_wins_whatever_the_route_age() {
    let old = http(&route_yaml(
        "old",
        "creationTimestamp: '2020-01-01T00:00:00Z'",
        "- backendRefs: [{name: old, port: 80}]",
    ));
    let new = http(&route_yaml(
        "new",
        "creationTimestamp: '2024-01-01T00:00:00Z'",
        "- {matches: [{path: {value: /a}}], backendRefs: [{name: new, port: 80}]}",
    ));
    let table = table(&[old, new]);
    assert_eq!(to(&table, &Request::get("/a/b")), "new");
    assert_eq!(to(&table, &Request::get("/b")), "old");
}

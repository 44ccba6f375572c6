//! Filters: header changes in order (the rule's, then the backend's), URL rewrites with the Gateway API's
//! ReplacePrefixMatch table, redirects, and mirrors.

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::super::HeaderOp;
use super::*;

fn name(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

fn value(value: &'static str) -> HeaderValue {
    HeaderValue::from_static(value)
}

#[test]
fn header_operations_apply_in_filter_order() {
    let table = one("
        - filters:
          - type: RequestHeaderModifier
            requestHeaderModifier:
              set: [{name: X-Set, value: rule}]
              add: [{name: x-add, value: rule}]
              remove: [x-remove]
          - type: ResponseHeaderModifier
            responseHeaderModifier:
              add: [{name: x-served-by, value: rule}]
          backendRefs:
          - name: a
            port: 80
            filters:
            - type: RequestHeaderModifier
              requestHeaderModifier:
                set: [{name: x-set, value: backend}]
                remove: [X-Add]
            - type: ResponseHeaderModifier
              responseHeaderModifier:
                set: [{name: x-served-by, value: a}]
        ");
    let forward = forward(&table, &Request::get("/"));
    let request = [
        HeaderOp::Set(name("x-set"), value("rule")),
        HeaderOp::Add(name("x-add"), value("rule")),
        HeaderOp::Remove(name("x-remove")),
        HeaderOp::Set(name("x-set"), value("backend")),
        HeaderOp::Remove(name("x-add")),
    ];
    assert_eq!(forward.request.headers, request);
    let response = [
        HeaderOp::Add(name("x-served-by"), value("rule")),
        HeaderOp::Set(name("x-served-by"), value("a")),
    ];
    assert_eq!(forward.response_headers, response);

    let mut headers = HeaderMap::new();
    for (header, text) in [
        ("x-set", "old"),
        ("x-add", "old"),
        ("x-remove", "old"),
        ("x-keep", "kept"),
    ] {
        headers.insert(name(header), value(text));
    }
    HeaderOp::apply_all(forward.request.headers, &mut headers);
    let mut after: Vec<(&str, &str)> = (headers.iter())
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or_default()))
        .collect();
    after.sort();
    assert_eq!(after, [("x-keep", "kept"), ("x-set", "backend")]);
}

#[test]
fn set_replaces_add_appends_remove_removes() {
    let mut headers = HeaderMap::new();
    headers.append(name("x-a"), value("1"));
    headers.append(name("x-a"), value("2"));
    headers.insert(name("x-b"), value("1"));
    headers.insert(name("x-c"), value("1"));
    let ops = [
        HeaderOp::Set(name("x-a"), value("only")),
        HeaderOp::Add(name("x-b"), value("2")),
        HeaderOp::Remove(name("x-c")),
        HeaderOp::Add(name("x-d"), value("new")),
    ];
    HeaderOp::apply_all(&ops, &mut headers);
    let values = |header: &'static str| -> Vec<&str> {
        (headers.get_all(name(header)).iter())
            .map(|value| value.to_str().unwrap_or_default())
            .collect()
    };
    assert_eq!(values("x-a"), ["only"]);
    assert_eq!(values("x-b"), ["1", "2"]);
    assert_eq!(values("x-c"), Vec::<&str>::new());
    assert_eq!(values("x-d"), ["new"]);
}

/// The Gateway API's ReplacePrefixMatch examples (HTTPPathModifier), through a URLRewrite filter.
#[test]
fn replace_prefix_match_as_the_spec_table() {
    let cases = [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        ("/foo/bar", "/", "/xyz", "/xyz/foo/bar"),
    ];
    for (path, prefix, replacement, expected) in cases {
        let table = one(&format!(
            "- matches: [{{path: {{type: PathPrefix, value: '{prefix}'}}}}]\n  filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: '{replacement}'}}}}}}]"
        ));
        let forward = forward(&table, &Request::get(path));
        assert_eq!(
            forward.request.path.as_deref(),
            Some(expected),
            "{path} {prefix} {replacement}"
        );
    }
}

#[test]
fn url_rewrite_of_the_full_path_and_hostname() {
    let table = one(
        "
        - matches: [{path: {value: /old}}]
          filters: [{type: URLRewrite, urlRewrite: {hostname: api.example, path: {type: ReplaceFullPath, replaceFullPath: /new}}}]
          backendRefs: [{name: a, port: 80}]
        - matches: [{path: {value: /host}}]
          filters: [{type: URLRewrite, urlRewrite: {hostname: host.example}}]
        - matches: [{path: {value: /plain}}]
        ",
    );
    let forward_to = |target| forward(&table, &Request::get(target)).request;
    let rewritten = forward_to("/old/x?y=1");
    assert_eq!(
        (rewritten.authority, rewritten.path.as_deref()),
        (Some("api.example"), Some("/new"))
    );
    let host_only = forward_to("/host/x");
    assert_eq!((host_only.authority, host_only.path), (Some("host.example"), None));
    let plain = forward_to("/plain");
    assert_eq!((plain.authority, plain.path), (None, None));
}

/// RequestRedirect filters: (filter, request, expected status and Location). The Service port 8080 stands for the
/// listener port; the request's scheme is http.
#[test]
fn redirects() {
    let get = Request::get;
    let cases = [
        ("{}", get("/a"), "302 http://cart.shop:8080/a"),
        ("{}", get("/a?x=1&y=2"), "302 http://cart.shop:8080/a?x=1&y=2"),
        ("{scheme: https}", get("/a"), "302 https://cart.shop/a"),
        ("{scheme: http}", get("/a"), "302 http://cart.shop/a"),
        ("{scheme: https, port: 8443}", get("/a"), "302 https://cart.shop:8443/a"),
        ("{scheme: https, port: 443}", get("/a"), "302 https://cart.shop/a"),
        ("{port: 80}", get("/a"), "302 http://cart.shop/a"),
        ("{port: 9000}", get("/a"), "302 http://cart.shop:9000/a"),
        ("{hostname: shop.example}", get("/a"), "302 http://shop.example:8080/a"),
        (
            "{hostname: shop.example, scheme: https}",
            get("/a"),
            "302 https://shop.example/a",
        ),
        ("{statusCode: 301}", get("/a"), "301 http://cart.shop:8080/a"),
        ("{statusCode: 308, scheme: https}", get("/a"), "308 https://cart.shop/a"),
        (
            "{path: {type: ReplaceFullPath, replaceFullPath: /new}}",
            get("/a/b?q=1"),
            "302 http://cart.shop:8080/new?q=1",
        ),
        ("{}", get("/a").authority("cart"), "302 http://cart:8080/a"),
        (
            "{}",
            get("/a").authority("[fd00::1]:8080"),
            "302 http://[fd00::1]:8080/a",
        ),
        (
            "{scheme: https}",
            get("/a").authority("[fd00::1]"),
            "302 https://[fd00::1]/a",
        ),
        ("{}", get("/a?b").authority(""), "302 /a?b"),
        (
            "{hostname: shop.example}",
            get("/a").authority(""),
            "302 http://shop.example:8080/a",
        ),
    ];
    for (filter, request, expected) in cases {
        let table = one(&format!(
            "- filters: [{{type: RequestRedirect, requestRedirect: {filter}}}]"
        ));
        let decision = decide(&table, &request, 0);
        assert_eq!(
            outcome(&decision).strip_prefix("redirect "),
            Some(expected),
            "{filter} {request:?}"
        );
    }
}

#[test]
fn redirect_replacing_the_matched_prefix() {
    let table = one(
        "
        - matches: [{path: {type: PathPrefix, value: /v1}}]
          filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]
        ",
    );
    let decision = decide(&table, &Request::get("/v1/items?page=2"), 0);
    assert_eq!(decision.local_status(), Some(StatusCode::FOUND));
    assert_eq!(outcome(&decision), "redirect 302 http://cart.shop:8080/v2/items?page=2");
    assert_eq!(
        outcome(&decide(&table, &Request::get("/v1"), 0)),
        "redirect 302 http://cart.shop:8080/v2"
    );
}

#[test]
fn mirrors_of_the_rule_then_the_backend() {
    let table = one(
        "
        - filters:
          - {type: RequestMirror, requestMirror: {backendRef: {name: always, port: 80}}}
          - {type: RequestMirror, requestMirror: {backendRef: {name: never, port: 80}, percent: 0}}
          - {type: RequestMirror, requestMirror: {backendRef: {name: nothing, port: 80}, fraction: {numerator: 0, denominator: 5}}}
          - {type: RequestMirror, requestMirror: {backendRef: {name: all, namespace: other, port: 81}, fraction: {numerator: 3, denominator: 3}}}
          backendRefs:
          - name: a
            port: 80
            filters: [{type: RequestMirror, requestMirror: {backendRef: {name: audit, port: 80}, percent: 100}}]
        ",
    );
    for sample in sweep(64) {
        let Decision::Forward(forward) = decide(&table, &Request::get("/"), sample) else {
            panic!("a forward decision");
        };
        let mirrors: Vec<String> = forward.mirrors.iter().map(|mirror| mirror.to_string()).collect();
        assert_eq!(
            mirrors,
            ["shop/always:80", "other/all:81", "shop/audit:80"],
            "sample {sample}"
        );
    }
}

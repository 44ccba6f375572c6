//! Tests of request normalization for each Istio option, the requests refused with 400, and `paths` patterns:
//! Istio's wildcards and `{*}`/`{**}` templates.

use super::*;

#[test]
fn normalizes_per_option() {
    use PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes, None};
    // (option, request target, path, query)
    let cases: &[(PathNormalization, &str, &str, Option<&str>)] = &[
        (Base, "/a/b", "/a/b", Option::None),
        (Base, "/", "/", Option::None),
        (Base, "/a/../b", "/b", Option::None),
        (Base, "/a/./b/", "/a/b/", Option::None),
        (Base, "/a/b/..", "/a/", Option::None),
        (Base, "/a/b/.", "/a/b/", Option::None),
        (Base, "/../../a", "/a", Option::None),
        (Base, "/a/%2e%2E/b", "/b", Option::None),
        (Base, "/a/.%2e/b", "/b", Option::None),
        (Base, "/a..b/c", "/a..b/c", Option::None),
        (Base, "/a//b", "/a//b", Option::None),
        (Base, "/a\\b\\..\\c", "/a/c", Option::None),
        (Base, "/%61%62%63/%7E%2D%5F%2e%30", "/abc/~-_.0", Option::None),
        (Base, "/a%2fb", "/a%2Fb", Option::None),
        (Base, "/a%5cb/%20", "/a%5Cb/%20", Option::None),
        (Base, "/a%zz/%2", "/a%zz/%2", Option::None),
        (Base, "/a?x=1&y=/../z", "/a", Some("x=1&y=/../z")),
        (Base, "/a/../b?", "/b", Some("")),
        (Base, "/a#/../frag", "/a", Option::None),
        (Base, "/é/../ü", "/ü", Option::None),
        (MergeSlashes, "/a//b///c", "/a/b/c", Option::None),
        (MergeSlashes, "//a/../b", "/b", Option::None),
        (MergeSlashes, "/a%2f%2fb", "/a%2F%2Fb", Option::None),
        (DecodeAndMergeSlashes, "/a%2fb", "/a/b", Option::None),
        (DecodeAndMergeSlashes, "/a%5Cb", "/a/b", Option::None),
        (DecodeAndMergeSlashes, "/a%2F%2F..%2Fb", "/a/b", Option::None),
        (DecodeAndMergeSlashes, "/a%2F..%2Fb", "/b", Option::None),
        (DecodeAndMergeSlashes, "/a%2%2F", "/a%2/", Option::None),
        (None, "/a/../b//c", "/a/../b//c", Option::None),
        (None, "*", "*", Option::None),
    ];
    for (mode, target, path, query) in cases {
        let got = normalize_path(target, *mode).unwrap_or_else(|e| panic!("{mode:?} {target}: {e}"));
        assert_eq!(got.path, *path, "{mode:?} {target}");
        assert_eq!(got.query.as_deref(), *query, "{mode:?} {target}");
    }
}

#[test]
fn forwards_normalized_path_with_query() {
    let normalized = normalize_path("/a/../b?x=/../y", PathNormalization::Base).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(normalized.path_and_query(), "/b?x=/../y");
    let normalized = normalize_path("/a/./b", PathNormalization::Base).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(normalized.path_and_query(), "/a/b");
}

#[test]
fn refuses_with_400() {
    let cases = [
        (
            "/a%00b",
            PathNormalization::Base,
            "the path \"/a%00b\" contains an encoded NUL (%00)",
        ),
        (
            "/a%00b",
            PathNormalization::None,
            "the path \"/a%00b\" contains an encoded NUL (%00)",
        ),
        ("*", PathNormalization::Base, "the path \"*\" does not start with '/'"),
        (
            "http://x/a",
            PathNormalization::MergeSlashes,
            "the path \"http://x/a\" does not start with '/'",
        ),
    ];
    for (target, mode, want) in cases {
        let err = normalize_path(target, mode).expect_err(target);
        assert_eq!(err.to_string(), want);
    }
    assert_eq!(check_method("GET"), Ok(()));
    assert_eq!(check_method("M-SEARCH"), Ok(()));
    assert_eq!(
        check_method("get").map_err(|e| e.to_string()),
        Err("the method \"get\" is not in upper case".to_string())
    );
}

#[test]
fn path_patterns() {
    // (pattern, matching paths, other paths)
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("/a", &["/a"], &["/a/", "/A", "/ab"]),
        ("/a*", &["/a", "/ab", "/a/b"], &["/", "/b"]),
        ("*/b", &["/b", "/a/b"], &["/b/"]),
        ("*", &["/", "/a"], &[""]),
        ("/a*b", &["/a*b"], &["/axb"]),
        (
            "/api/{*}/items",
            &["/api/7/items", "/api/a.b~c%20!$&'()+,;:@=/items"],
            &[
                "/api/7/8/items",
                "/api//items",
                "/api/7/items/",
                "/api/*/items",
                "/api/7",
            ],
        ),
        ("/{*}", &["/a"], &["/", "/a/", "/a/b"]),
        ("/{*}/", &["/a/"], &["/a", "/a/b/"]),
        (
            "/api/{**}",
            &["/api/", "/api/a", "/api/a/b/c", "/api/a//b"],
            &["/api", "/apis/a", "/api/a*b"],
        ),
        ("/{**}", &["/", "/a/b"], &[""]),
        (
            "/{**}/index.html",
            &["//index.html", "/a/b/index.html"],
            &["/index.html", "/a/index.htm"],
        ),
        ("/a/{*}/{**}", &["/a/b/", "/a/b/c/d"], &["/a/b", "/a//c"]),
        ("/v{*}", &[], &[]),
    ];
    for (pattern, matching, other) in cases {
        let Ok(path) = path_match(pattern) else {
            assert!(matching.is_empty() && other.is_empty(), "{pattern} should parse");
            continue;
        };
        for value in *matching {
            assert!(path.matches(value), "{pattern} should match {value:?}");
        }
        for value in *other {
            assert!(!path.matches(value), "{pattern} should not match {value:?}");
        }
        assert_eq!(path.to_string(), *pattern);
    }
}

#[test]
fn pattern_kinds_and_errors() {
    let template = |text| PathTemplate::parse(text).map(PathMatch::Template);
    let cases = [
        ("/a", Ok(PathMatch::Exact("/a".to_string()))),
        ("/a/*", Ok(PathMatch::Prefix("/a/".to_string()))),
        ("*.png", Ok(PathMatch::Suffix(".png".to_string()))),
        ("*", Ok(PathMatch::Presence)),
        ("/a/{*}", template("/a/{*}")),
        ("/a/{**}/b", template("/a/{**}/b")),
        ("/v{*}", Err(TemplateError::Brace("/v{*}".to_string()))),
        ("/a/{}", Err(TemplateError::Brace("/a/{}".to_string()))),
        ("/a/{id}", Err(TemplateError::Brace("/a/{id}".to_string()))),
        (
            "/{**}/{**}",
            Err(TemplateError::AfterAnySegments("/{**}/{**}".to_string())),
        ),
        (
            "/a//{*}",
            Err(TemplateError::Literal {
                path: "/a//{*}".to_string(),
                segment: String::new(),
            }),
        ),
        (
            "/a b/{*}",
            Err(TemplateError::Literal {
                path: "/a b/{*}".to_string(),
                segment: "a b".to_string(),
            }),
        ),
        ("{*}/a", Err(TemplateError::Relative("{*}/a".to_string()))),
    ];
    for (pattern, want) in cases {
        assert_eq!(path_match(pattern), want, "{pattern}");
    }
    assert_eq!(
        TemplateError::Relative("{*}".to_string()).to_string(),
        "\"{*}\" must start with '/' to be a path template"
    );
}

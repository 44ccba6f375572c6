//! The patch alone: Kubernetes' key and value rules, merging, and applying to an object.

use serde_json::json;

use super::*;

fn pod_key() -> ObjectKey {
    ObjectKey::new(Kind::Pod, "web", "a")
}

fn patch(labels: &[(&str, Option<&str>)], annotations: &[(&str, Option<&str>)]) -> MetadataPatch {
    let map = |pairs: &[(&str, Option<&str>)]| {
        (pairs.iter())
            .map(|(key, value)| (key.to_string(), value.map(str::to_string)))
            .collect()
    };
    MetadataPatch {
        labels: map(labels),
        annotations: map(annotations),
    }
}

fn pod(labels: serde_json::Value, annotations: serde_json::Value) -> Object {
    let json = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "a", "namespace": "web", "uid": "u-1", "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "c"}]}});
    crate::parse("pod.json", &json.to_string()).unwrap().remove(0)
}

#[test]
fn label_keys_and_values_follow_kubernetes_rules() {
    let long_name = "a".repeat(63);
    let too_long_name = "a".repeat(64);
    let long_prefix = format!("{}/x", vec!["a".repeat(63); 4].join(".")[..253].trim_end_matches('.'));
    let too_long_prefix = format!("{}/x", vec!["a".repeat(63); 5].join("."));
    let long_value = "v".repeat(63);
    let too_long_value = "v".repeat(64);
    // (key, value, the field of the problem if any)
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        ("app", Some("web"), None),
        ("istio.io/dataplane-mode", Some("ambient"), None),
        ("app.kubernetes.io/name", Some("v1.2_3-x"), None),
        ("A_b.C-9", Some("Upper"), None),
        ("app", Some(""), None),
        ("gone", None, None),
        (&long_name, Some(&long_value), None),
        (&long_prefix, Some("v"), None),
        (&too_long_name, Some("v"), Some("metadata.labels")),
        (&too_long_prefix, Some("v"), Some("metadata.labels")),
        ("app", Some(&too_long_value), Some("metadata.labels.app")),
        ("app", Some("-x"), Some("metadata.labels.app")),
        ("app", Some("a b"), Some("metadata.labels.app")),
        ("app", Some("a/b"), Some("metadata.labels.app")),
        ("Bad key", Some("v"), Some("metadata.labels[\"Bad key\"]")),
        ("/name", Some("v"), Some("metadata.labels[\"/name\"]")),
        ("a/b/c", Some("v"), Some("metadata.labels[\"a/b/c\"]")),
        (
            "Example.com/name",
            Some("v"),
            Some("metadata.labels[\"Example.com/name\"]"),
        ),
        ("example.com/", Some("v"), Some("metadata.labels[\"example.com/\"]")),
        ("", Some("v"), Some("metadata.labels")),
        ("-app", None, Some("metadata.labels[\"-app\"]")),
    ];
    for (key, value, field) in cases {
        let result = patch(&[(key, *value)], &[]).check(&pod_key());
        match (field, result) {
            (None, Ok(())) => {}
            (Some(field), Err(diagnostics)) => {
                assert_eq!(diagnostics.len(), 1, "{key:?}={value:?}: {diagnostics:?}");
                let diagnostic = &diagnostics[0];
                assert!(diagnostic.field.starts_with(field), "{key:?}={value:?}: {diagnostic}");
                assert_eq!(diagnostic.object.as_deref(), Some("Pod web/a"));
            }
            (field, result) => panic!("{key:?}={value:?}: expected a problem at {field:?}, got {result:?}"),
        }
    }
}

#[test]
fn annotation_keys_follow_kubernetes_rules_and_values_are_free() {
    let cases: &[(&str, Option<&str>, bool)] = &[
        ("ambient.istio.io/redirection", Some("enabled"), true),
        ("note", Some("any text: with spaces, / and = signs\n"), true),
        ("note", Some(""), true),
        ("gone", None, true),
        ("Bad key", Some("v"), false),
        ("a/b/c", None, false),
        ("x_/y", Some("v"), false),
    ];
    for (key, value, valid) in cases {
        let result = patch(&[], &[(key, *value)]).check(&pod_key());
        assert_eq!(result.is_ok(), *valid, "{key:?}={value:?}: {result:?}");
        if let Err(diagnostics) = result {
            assert_eq!(diagnostics[0].field, format!("metadata.annotations[{key:?}]"));
            assert!(
                diagnostics[0].message.starts_with(&format!("{key:?} ")),
                "{diagnostics:?}"
            );
        }
    }
}

#[test]
fn every_bad_key_is_reported() {
    let bad = patch(&[("Bad 1", Some("v")), ("ok", Some("-v"))], &[("Bad 2", None)]);
    let diagnostics = bad.check(&pod_key()).unwrap_err();
    let fields: Vec<&str> = diagnostics.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "metadata.labels[\"Bad 1\"]",
            "metadata.labels.ok",
            "metadata.annotations[\"Bad 2\"]"
        ]
    );
}

#[test]
fn merging_lets_the_later_patch_win_and_keeps_removals() {
    // (first, later, merged)
    type Pairs<'a> = &'a [(&'a str, Option<&'a str>)];
    let cases: &[(Pairs, Pairs, Pairs)] = &[
        (&[], &[], &[]),
        (&[("a", Some("1"))], &[], &[("a", Some("1"))]),
        (&[("a", Some("1"))], &[("a", Some("2"))], &[("a", Some("2"))]),
        (&[("a", Some("1"))], &[("a", None)], &[("a", None)]),
        (&[("a", None)], &[("a", Some("3"))], &[("a", Some("3"))]),
        (
            &[("a", Some("1")), ("b", None)],
            &[("c", Some("2"))],
            &[("a", Some("1")), ("b", None), ("c", Some("2"))],
        ),
    ];
    for (first, later, merged) in cases {
        let mut labels = patch(first, first);
        labels.merge(&patch(later, later));
        assert_eq!(labels, patch(merged, merged), "{first:?} then {later:?}");
    }
}

#[test]
fn applying_sets_and_removes_keys() {
    // (labels before, patch, labels after)
    let cases = [
        (
            json!({"app": "a"}),
            patch(&[("mode", Some("ambient"))], &[]),
            json!({"app": "a", "mode": "ambient"}),
        ),
        (
            json!({"app": "a"}),
            patch(&[("app", Some("b"))], &[]),
            json!({"app": "b"}),
        ),
        (
            json!({"app": "a", "x": "1"}),
            patch(&[("x", None)], &[]),
            json!({"app": "a"}),
        ),
        (
            json!({"app": "a"}),
            patch(&[("missing", None)], &[]),
            json!({"app": "a"}),
        ),
        // A map left empty is removed, as the API server stores it.
        (
            json!({"app": "a"}),
            patch(&[("app", None)], &[]),
            serde_json::Value::Null,
        ),
        (
            serde_json::Value::Null,
            patch(&[("app", Some("a"))], &[]),
            json!({"app": "a"}),
        ),
        (
            json!({"app": "a"}),
            patch(&[], &[("note", Some("n"))]),
            json!({"app": "a"}),
        ),
    ];
    for (before, patch, after) in cases {
        let mut object = pod(before.clone(), json!({"keep": "me"}));
        patch.apply_to(&mut object);
        let json = object.to_json();
        assert_eq!(json["metadata"]["labels"], after, "{before} patched with {patch:?}");
        let expected_annotations = match patch.annotations.is_empty() {
            true => json!({"keep": "me"}),
            false => json!({"keep": "me", "note": "n"}),
        };
        assert_eq!(json["metadata"]["annotations"], expected_annotations);
        assert_eq!(json["metadata"]["uid"], "u-1", "the rest of the object stays");
    }
}

#[test]
fn the_request_shape_reads_null_as_removal() {
    let text = r#"{"kind":"Pod","namespace":"web","name":"a","uid":"u-1",
        "metadata":{"labels":{"k":"v","gone":null},"annotations":{"ambient.istio.io/redirection":null}}}"#;
    let request: ObjectPatch = serde_json::from_str(text).unwrap();
    assert_eq!(request.key(), pod_key());
    assert_eq!(request.uid.as_deref(), Some("u-1"));
    assert_eq!(
        request.metadata,
        patch(
            &[("gone", None), ("k", Some("v"))],
            &[("ambient.istio.io/redirection", None)]
        )
    );
    // Written back, the record reads the same.
    let again: ObjectPatch = serde_json::from_value(serde_json::to_value(&request).unwrap()).unwrap();
    assert_eq!(again, request);

    let cases = [
        (
            r#"{"kind":"Namespace","name":"web"}"#,
            Some(ObjectKey::new(Kind::Namespace, "", "web")),
        ),
        (
            r#"{"kind":"Pod","name":"a"}"#,
            Some(ObjectKey::new(Kind::Pod, "default", "a")),
        ),
        (r#"{"kind":"Pod","name":"a","metadata":{"finalizers":[]}}"#, None),
        (r#"{"kind":"Pod","name":"a","spec":{}}"#, None),
        (r#"{"kind":"Pod","name":"a","metadata":{"labels":{"k":1}}}"#, None),
        (r#"{"kind":"Deployment","name":"a"}"#, None),
    ];
    for (text, key) in cases {
        let parsed = serde_json::from_str::<ObjectPatch>(text);
        assert_eq!(parsed.as_ref().ok().map(ObjectPatch::key), key, "{text}: {parsed:?}");
    }
}

#[test]
fn annotations_may_total_256_kib() {
    let fits = pod(json!({}), json!({"note": "x".repeat(256 * 1024 - 4)}));
    assert_eq!(check_annotations_size(&fits), Ok(()));
    // The API server's limit counts keys and values: one more byte is too many.
    let mut over = fits.clone();
    patch(&[], &[("y", Some(""))]).apply_to(&mut over);
    let diagnostics = check_annotations_size(&over).unwrap_err();
    assert_eq!(diagnostics[0].field, "metadata.annotations");
    assert!(diagnostics[0].message.contains("256 KiB"), "{diagnostics:?}");
}

//! Splitting at markers, parse messages located in the whole text, and the header fields.

use serde_json::json;

use super::*;

#[test]
fn split_finds_documents_and_lines_before() {
    let cases: [(&str, &[(usize, &str)]); 9] = [
        ("", &[(0, "")]),
        ("a: 1\n", &[(0, "a: 1\n")]),
        ("a: 1\n---\nb: 2\n", &[(0, "a: 1\n"), (1, "---\nb: 2\n")]),
        ("---\na: 1\n", &[(0, "---\na: 1\n")]),
        ("# c\n%YAML 1.2\n---\na: 1\n", &[(2, "---\na: 1\n")]),
        ("a: 1\n---\n", &[(0, "a: 1\n"), (1, "---\n")]),
        (
            "a: 1\n--- # c\n---\tb: 2\n",
            &[(0, "a: 1\n"), (1, "--- # c\n"), (2, "---\tb: 2\n")],
        ),
        ("a: 1\n...\n# c\nb: 2\n", &[(0, "a: 1\n...\n# c\n"), (3, "b: 2\n")]),
        ("a: |\n  ---\n---x\n", &[(0, "a: |\n  ---\n---x\n")]),
    ];
    for (text, expected) in cases {
        assert_eq!(split(text), expected, "{text:?}");
    }
}

#[test]
fn parse_messages_count_lines_in_the_whole_text() {
    assert_eq!(parse_yaml("a: 1\n", 0), Ok(Some(json!({"a": 1}))));
    assert_eq!(parse_yaml("# only a comment\n", 4), Ok(None));
    let unclosed = parse_yaml("a: [1\n", 4);
    assert_eq!(
        unclosed,
        Err("invalid YAML: unclosed bracket '[' at line 5, column 4".to_string())
    );
    assert_eq!(parse_json("[1]"), Ok(json!([1])));
    let missing = parse_json("{\n\"a\": }");
    assert_eq!(
        missing,
        Err("invalid JSON: expected value at line 2 column 6".to_string())
    );
}

#[test]
fn required_strings_are_non_empty_strings() {
    let value = json!({"kind": "Pod", "empty": "", "null": null, "number": 1, "list": []});
    let map = value.as_object().expect("a mapping");
    let cases: [(&str, Result<&str, Problem>); 6] = [
        ("kind", Ok("Pod")),
        ("missing", Err(("missing", "required".to_string()))),
        ("null", Err(("null", "required".to_string()))),
        (
            "empty",
            Err(("empty", "must be a non-empty string, not a string".to_string())),
        ),
        (
            "number",
            Err(("number", "must be a non-empty string, not a number".to_string())),
        ),
        (
            "list",
            Err(("list", "must be a non-empty string, not a list".to_string())),
        ),
    ];
    for (key, expected) in cases {
        assert_eq!(required_string(map, key), expected, "{key}");
    }
}

#[test]
fn list_items_are_a_list_or_nothing() {
    let cases = [
        (json!({"kind": "List"}), Some(vec![])),
        (json!({"items": null}), Some(vec![])),
        (json!({"items": [{"kind": "Pod"}]}), Some(vec![json!({"kind": "Pod"})])),
        (json!({"items": {"kind": "Pod"}}), None),
    ];
    for (value, expected) in cases {
        assert_eq!(list_items(value.clone()), expected, "{value}");
    }
}

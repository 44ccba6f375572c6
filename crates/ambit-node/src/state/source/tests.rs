//! Parsing and loading the state file (each rejection names its field), and following its rewrites.

use std::fs;

use serde_json::{Value, json};
use tempfile::TempDir;

use super::*;
use crate::state::fixtures::{ip, uid};

fn example() -> Value {
    json!({
        "workloads": [
            {
                "uid": "Kubernetes//Pod/demo/a",
                "namespace": "demo",
                "addresses": ["10.0.1.1"],
                "tunnel_protocol": "HBONE",
                "services": {"demo/echo.demo.svc.cluster.local": [{"service_port": 80, "target_port": 8080}]},
                "authorization_policies": ["demo/allow"]
            },
            {"uid": "Kubernetes//Pod/demo/b", "namespace": "demo", "addresses": ["10.0.1.2"]},
            {"uid": "Kubernetes//Pod/demo/c", "namespace": "demo", "addresses": ["10.0.1.3"]},
            {"uid": "Kubernetes//Pod/demo/d", "namespace": "demo", "addresses": ["10.0.1.4"]}
        ],
        "services": [{
            "name": "echo",
            "namespace": "demo",
            "hostname": "echo.demo.svc.cluster.local",
            "addresses": [{"address": "10.96.0.10"}],
            "ports": [{"service_port": 80, "target_port": 8080}]
        }],
        "policies": [{"name": "allow", "namespace": "demo", "scope": "WORKLOAD_SELECTOR", "action": "ALLOW"}]
    })
}

fn path() -> &'static Path {
    Path::new("/etc/ambit/state.json")
}

#[test]
fn parses_the_documented_format() {
    let snapshot = parse(path(), &example().to_string(), 4).unwrap();
    assert_eq!(snapshot.version(), 4);
    assert_eq!(snapshot.workloads().len(), 4);
    assert_eq!(snapshot.workload_by_ip(ip("10.0.1.1")).map(|w| &w.uid), Some(&uid("a")));
    assert_eq!(snapshot.policies()[0].name, "allow");
    assert!(snapshot.unresolved().is_empty());
    let empty = parse(path(), "{}", 1).unwrap();
    assert!(empty.workloads().is_empty() && empty.services().is_empty() && empty.policies().is_empty());
}

/// The example with `pointer` (a JSON pointer) set to `value`, or added to the object it points into.
fn with(pointer: &str, value: Value) -> String {
    let mut file = example();
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    match file.pointer_mut(parent) {
        Some(Value::Array(items)) => items[last.parse::<usize>().unwrap()] = value,
        Some(Value::Object(fields)) => drop(fields.insert(last.to_string(), value)),
        _ => panic!("{parent} is not in the example"),
    }
    file.to_string()
}

#[test]
fn malformed_files_are_refused_with_the_field() {
    let cases = [
        (
            with("/workloads/3/addresses/0", json!("10.0.0.300")),
            "workloads[3].addresses[0]",
            "\"10.0.0.300\" is not an IP address",
        ),
        (
            with("/workloads/1/namespace", json!("Demo")),
            "workloads[1].namespace",
            "\"Demo\" is not a namespace",
        ),
        (
            with("/services/0/ports/0/service_port", json!(70000)),
            "services[0].ports[0].service_port",
            "invalid value: integer `70000`, expected u16",
        ),
        (
            with("/services/0/subject_alt_names", json!(["echo"])),
            "services[0].subject_alt_names[0]",
            "\"echo\" is not a SPIFFE ID",
        ),
        (
            with("/policies/0/action", json!("AUDIT")),
            "policies[0].action",
            "unknown variant `AUDIT`",
        ),
        (
            with("/workloads/0/tunnel", json!("HBONE")),
            "workloads[0].tunnel",
            "unknown field `tunnel`",
        ),
        (with("/version", json!(1)), "version", "unknown field `version`"),
        (
            "{\"workloads\": [}".to_string(),
            "workloads[0]",
            "expected value at line 1 column 16",
        ),
        (
            "{} {}".to_string(),
            "(top level)",
            "trailing characters at line 1 column 4",
        ),
        (String::new(), "(top level)", "EOF while parsing a value"),
    ];
    for (text, field, reason) in cases {
        match parse(path(), &text, 1) {
            Err(StateError::Malformed {
                field: f, reason: r, ..
            }) => {
                assert_eq!(f, field, "{text}");
                assert!(r.starts_with(reason), "{text}: {r:?} should start with {reason:?}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn inconsistent_files_are_refused_with_the_field() {
    let cases = [
        (
            with("/workloads/2/uid", json!("Kubernetes//Pod/demo/a")),
            "/etc/ambit/state.json: workloads[2].uid: \"Kubernetes//Pod/demo/a\" is also the uid of workloads[0]",
        ),
        (
            with("/workloads/2/addresses/0", json!("10.96.0.10")),
            "/etc/ambit/state.json: services[0].addresses[0].address: 10.96.0.10 is also an address of workloads[2]",
        ),
        (
            with("/services/0/ports/0/service_port", json!(0)),
            "/etc/ambit/state.json: services[0].ports[0].service_port: 0 is not a port: use 1 to 65535",
        ),
    ];
    for (text, want) in cases {
        let error = parse(path(), &text, 1).unwrap_err();
        assert!(matches!(error, StateError::Invalid { .. }), "{error:?}");
        assert_eq!(error.to_string(), want);
    }
}

#[test]
fn a_missing_policy_reference_is_only_a_warning() {
    let snapshot = parse(
        path(),
        &with("/workloads/0/authorization_policies/0", json!("demo/later")),
        1,
    )
    .unwrap();
    assert_eq!(snapshot.unresolved().len(), 1);
}

#[test]
fn load_reads_a_whole_file_or_nothing() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("state.json");
    let missing = load(&file).unwrap_err();
    assert!(matches!(missing, StateError::Read { .. }), "{missing:?}");
    assert_eq!(
        missing.to_string(),
        format!("cannot read the state file {}", file.display())
    );
    fs::write(&file, with("/workloads/3/addresses/0", json!("10.0.0.300"))).unwrap();
    let error = load(&file).unwrap_err().to_string();
    assert!(
        error.contains("workloads[3].addresses[0]: \"10.0.0.300\" is not an IP address"),
        "{error}"
    );
    fs::write(&file, example().to_string()).unwrap();
    assert_eq!(load(&file).unwrap().version(), 1);
}

/// Replaces the file as writers should: a temporary file renamed over it.
fn replace(file: &Path, text: &str) {
    let temporary = file.with_extension("tmp");
    fs::write(&temporary, text).unwrap();
    fs::rename(&temporary, file).unwrap();
}

/// Waits for the next published snapshot.
async fn next(rx: &mut watch::Receiver<Arc<Snapshot>>) -> Arc<Snapshot> {
    let changed = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
    changed.expect("a snapshot is published within 1 s").unwrap();
    rx.borrow_and_update().clone()
}

#[tokio::test]
async fn watch_publishes_valid_rewrites_and_keeps_the_last_good_one() {
    const POLL: Duration = Duration::from_millis(10);
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("state.json");
    fs::write(&file, "not json").unwrap();
    assert!(
        watch_file(file.clone(), POLL).await.is_err(),
        "an invalid first file is an error"
    );

    replace(&file, &example().to_string());
    let (mut rx, task) = watch_file(file.clone(), POLL).await.unwrap();
    assert_eq!(rx.borrow_and_update().version(), 1);

    replace(&file, &with("/workloads/3/addresses/0", json!("10.0.1.5")));
    let second = next(&mut rx).await;
    assert_eq!(second.version(), 2);
    assert!(second.workload_by_ip(ip("10.0.1.5")).is_some());

    replace(&file, &with("/workloads/3/addresses/0", json!("10.0.0.300")));
    tokio::time::sleep(POLL * 10).await;
    replace(&file, &with("/workloads/3/addresses/0", json!("10.0.1.5")));
    tokio::time::sleep(POLL * 10).await;
    assert!(
        !rx.has_changed().unwrap(),
        "neither an invalid rewrite nor the same content again is published"
    );
    assert_eq!(rx.borrow().version(), 2);

    fs::remove_file(&file).unwrap();
    tokio::time::sleep(POLL * 5).await;
    replace(&file, &with("/workloads/3/addresses/0", json!("10.0.1.6")));
    let third = next(&mut rx).await;
    assert_eq!(third.version(), 3);
    assert!(third.workload_by_ip(ip("10.0.1.6")).is_some());

    drop(rx);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}

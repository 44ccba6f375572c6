//! Metadata patches in the store: laid over the cluster source's Pods and Namespaces, kept across new versions of
//! the source, dropped with the object (or a re-created pod), refused whole when invalid.

use serde_json::json;

use super::*;
use crate::patch::{MetadataPatch, ObjectPatch, PatchError};

const ENROLLED: &str = "istio.io/dataplane-mode";
const REDIRECTION: &str = "ambient.istio.io/redirection";

/// The source: Namespace `web` and pod `web/a` (uid `uid`, label `app: a`).
fn source(uid: &str) -> Vec<Object> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web", "labels": {"team": "t"}}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "a", "namespace": "web", "uid": uid, "labels": {"app": "a"}},
         "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
         "status": {"phase": "Running", "podIP": "10.0.0.5"}}
    ]});
    crate::parse_source("objects.json", &list.to_string()).unwrap()
}

fn store_with(uid: &str) -> Store {
    let mut store = Store::default();
    assert!(store.replace_source(source(uid)));
    store
}

fn request(kind: Kind, name: &str, uid: Option<&str>, metadata: serde_json::Value) -> ObjectPatch {
    ObjectPatch {
        kind,
        namespace: "web".into(),
        name: name.into(),
        uid: uid.map(Into::into),
        metadata: serde_json::from_value::<MetadataPatch>(metadata).unwrap(),
    }
}

fn pod_patch(metadata: serde_json::Value) -> ObjectPatch {
    request(Kind::Pod, "a", None, metadata)
}

fn metadata(store: &Store, kind: Kind, name: &str) -> serde_json::Value {
    let namespace = if kind == Kind::Pod { "web" } else { "" };
    let stored = store.get(&key(kind, namespace, name)).expect("stored");
    stored.object.to_json()["metadata"].clone()
}

#[test]
fn a_patch_sets_and_removes_labels_and_annotations() {
    let mut store = store_with("u-1");
    let before = store.get(&key(Kind::Pod, "web", "a")).unwrap().clone();
    let patch =
        pod_patch(json!({"labels": {ENROLLED: "ambient", "app": null}, "annotations": {REDIRECTION: "enabled"}}));
    let stored = store.patch(&patch).unwrap().clone();
    let meta = stored.object.to_json()["metadata"].clone();
    assert_eq!(meta["labels"], json!({ENROLLED: "ambient"}));
    assert_eq!(meta["annotations"], json!({REDIRECTION: "enabled"}));
    assert_eq!(meta["uid"], "u-1");
    assert_eq!(stored.generation, before.generation, "metadata is not spec");
    assert!(stored.resource_version > before.resource_version);
    assert_eq!(
        store.patches(),
        [ObjectPatch {
            uid: Some("u-1".into()),
            ..patch.clone()
        }],
        "the layer records the pod's uid"
    );

    // A later patch merges into the layer.
    store
        .patch(&pod_patch(json!({"annotations": {REDIRECTION: null}})))
        .unwrap();
    assert_eq!(metadata(&store, Kind::Pod, "a").get("annotations"), None);
    let layer = &store.patches()[0].metadata;
    assert_eq!(layer.annotations, [(REDIRECTION.to_string(), None)].into());
    assert_eq!(layer.labels.len(), 2);

    // Namespaces too; their layer has no uid.
    store
        .patch(&request(
            Kind::Namespace,
            "web",
            None,
            json!({"labels": {ENROLLED: "ambient"}}),
        ))
        .unwrap();
    assert_eq!(
        metadata(&store, Kind::Namespace, "web")["labels"],
        json!({ENROLLED: "ambient", "team": "t"})
    );
    assert_eq!(store.patches()[0].kind, Kind::Namespace);
    assert_eq!(store.patches()[0].uid, None);
}

#[test]
fn refused_patches_change_nothing() {
    let store = store_with("u-1");
    let not_found = |kind, namespace: &str, name: &str| PatchError::NotFound(key(kind, namespace, name));
    let cases = [
        (
            request(Kind::Pod, "missing", None, json!({"labels": {"a": "b"}})),
            not_found(Kind::Pod, "web", "missing"),
        ),
        (
            ObjectPatch {
                namespace: "other".into(),
                ..pod_patch(json!({"labels": {"a": "b"}}))
            },
            not_found(Kind::Pod, "other", "a"),
        ),
        (
            request(Kind::Namespace, "other", None, json!({"labels": {"a": "b"}})),
            not_found(Kind::Namespace, "", "other"),
        ),
        (
            request(Kind::Pod, "a", Some("u-0"), json!({"labels": {"a": "b"}})),
            PatchError::OtherUid {
                key: key(Kind::Pod, "web", "a"),
                expected: "u-0".into(),
                found: Some("u-1".into()),
            },
        ),
        (
            request(Kind::Service, "a", None, json!({"labels": {"a": "b"}})),
            PatchError::NotPatchable(Kind::Service),
        ),
    ];
    for (patch, expected) in cases {
        let mut changed = store.clone();
        assert_eq!(changed.patch(&patch).err(), Some(expected), "{patch:?}");
        assert_eq!(changed, store, "{patch:?}");
    }

    // One bad key refuses the whole patch, and every bad key is named.
    let mut changed = store.clone();
    let bad = pod_patch(json!({"labels": {"good": "v", "Bad key": "v", "app": "-x"}, "annotations": {"a/b/c": "v"}}));
    let Err(PatchError::Invalid(diagnostics)) = changed.patch(&bad) else {
        panic!("accepted");
    };
    let fields: Vec<&str> = diagnostics.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            r#"metadata.labels["Bad key"]"#,
            "metadata.labels.app",
            r#"metadata.annotations["a/b/c"]"#
        ]
    );
    assert_eq!(changed, store);

    // Annotations over 256 KiB in all, counting those the object has.
    let big = "x".repeat(200 * 1024);
    changed.patch(&pod_patch(json!({"annotations": {"one": big}}))).unwrap();
    let before = changed.clone();
    let Err(PatchError::Invalid(diagnostics)) = changed.patch(&pod_patch(json!({"annotations": {"two": big}}))) else {
        panic!("accepted");
    };
    assert_eq!(diagnostics[0].field, "metadata.annotations");
    assert_eq!(changed, before);
}

#[test]
fn the_source_keeps_its_patches_until_the_pod_is_recreated_or_gone() {
    let mut store = store_with("u-1");
    store
        .patch(&pod_patch(
            json!({"labels": {ENROLLED: "ambient"}, "annotations": {REDIRECTION: "enabled"}}),
        ))
        .unwrap();
    store
        .patch(&request(
            Kind::Namespace,
            "web",
            None,
            json!({"labels": {"team": null}}),
        ))
        .unwrap();
    let patched = store.clone();

    // The same source again: nothing changes.
    assert!(!store.replace_source(source("u-1")));
    assert_eq!(store, patched);

    // A new version of the pod (another IP): the patch is laid over it.
    let moved: Vec<Object> = source("u-1")
        .into_iter()
        .map(|object| {
            let mut json = object.to_json();
            if json["kind"] == "Pod" {
                json["status"]["podIP"] = "10.0.0.6".into();
            }
            crate::parse("pod.json", &json.to_string()).unwrap().remove(0)
        })
        .collect();
    assert!(store.replace_source(moved));
    let meta = metadata(&store, Kind::Pod, "a");
    assert_eq!(meta["labels"], json!({"app": "a", ENROLLED: "ambient"}));
    assert_eq!(meta["annotations"], json!({REDIRECTION: "enabled"}));
    assert_eq!(metadata(&store, Kind::Namespace, "web").get("labels"), None);

    // Re-created under the same name (another uid): the pod's patch is dropped, the namespace's kept.
    assert!(store.replace_source(source("u-2")));
    let meta = metadata(&store, Kind::Pod, "a");
    assert_eq!(meta["labels"], json!({"app": "a"}));
    assert_eq!(meta.get("annotations"), None);
    let kinds: Vec<Kind> = store.patches().iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [Kind::Namespace]);

    // Gone: its patch goes with it.
    assert!(store.replace_source(Vec::new()));
    assert!(store.patches().is_empty());
}

#[test]
fn persisted_patches_are_restored_over_the_live_objects_only() {
    let mut patched = store_with("u-1");
    patched
        .patch(&pod_patch(json!({"annotations": {REDIRECTION: "enabled"}})))
        .unwrap();
    let records = patched.patches();

    // A restart: the source first, then the records.
    let mut restored = store_with("u-1");
    assert_eq!(restored.restore_patches(records.clone()), Ok(Vec::new()));
    assert_eq!(metadata(&restored, Kind::Pod, "a"), metadata(&patched, Kind::Pod, "a"));
    assert_eq!(restored.patches(), records);

    // The pod was re-created while the control plane was down: the record is dropped.
    let mut recreated = store_with("u-2");
    let before = recreated.clone();
    assert_eq!(
        recreated.restore_patches(records.clone()),
        Ok(vec![key(Kind::Pod, "web", "a")])
    );
    assert_eq!(recreated, before);

    // A record that breaks the rules fails the restore whole.
    let mut bad = records;
    bad.push(request(
        Kind::Namespace,
        "web",
        None,
        json!({"labels": {"Bad key": "v"}}),
    ));
    bad.push(request(Kind::Service, "s", None, json!({})));
    let mut store = store_with("u-1");
    let fields: Vec<String> = store
        .restore_patches(bad)
        .unwrap_err()
        .into_iter()
        .map(|d| d.field)
        .collect();
    assert_eq!(fields, [r#"metadata.labels["Bad key"]"#, "kind"]);
    assert_eq!(store, store_with("u-1"));
}

#[test]
fn the_revision_of_pods_and_namespaces_moves_only_with_them() {
    let watched = [Kind::Pod, Kind::Namespace];
    let mut store = store_with("u-1");
    let first = store.revision_of(&watched);
    assert!(first > 0);

    // Config and other kinds do not move it.
    store.replace_source(
        source("u-1")
            .into_iter()
            .chain(parse_ok(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: web}\n",
            ))
            .collect(),
    );
    assert!(store.revision() > first);
    assert_eq!(store.revision_of(&watched), first);
    assert_eq!(store.revision_of(&[Kind::ServiceAccount]), store.revision());

    // A patch that changes a pod does; one that changes nothing does not.
    store.patch(&pod_patch(json!({"labels": {"app": "a"}}))).unwrap();
    assert_eq!(store.revision_of(&watched), first);
    store.patch(&pod_patch(json!({"labels": {"app": "b"}}))).unwrap();
    let patched = store.revision_of(&watched);
    assert!(patched > first);

    // A pod removed does.
    store.replace_source(Vec::new());
    assert!(store.revision_of(&watched) > patched);
}

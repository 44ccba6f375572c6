//! Tests of enrollment, from manifests through the loader.

use super::*;
use crate::manifest::{Source, load};

const CLUSTER: &str = "\
apiVersion: ambit.dev/v1alpha1
kind: Cluster
metadata:
  name: test
spec:
  nodes:
  - name: node-1
";

/// Namespace `web` (enrolled), then pods: `web/a`, `web/b` (opted out), `default/c` (enrolled by its own label),
/// `default/d`; a service `web` selecting `app: web` with a named and a numbered target port; a headless service.
const MESH: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: web
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: web
  labels:
    app: web
    version: v2
spec:
  containers:
  - name: main
    command: [sleep, infinity]
    ports:
    - name: http
      containerPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: web
  labels:
    app: other
    istio.io/dataplane-mode: none
spec:
  containers:
  - name: main
    command: [sleep, infinity]
---
apiVersion: v1
kind: Pod
metadata:
  name: c
  labels:
    app: web
    istio.io/dataplane-mode: ambient
spec:
  containers:
  - name: main
    command: [sleep, infinity]
---
apiVersion: v1
kind: Pod
metadata:
  name: d
spec:
  containers:
  - name: main
    command: [sleep, infinity]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
  - name: metrics
    port: 81
    targetPort: 9090
---
apiVersion: v1
kind: Service
metadata:
  name: headless
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - port: 80
";

fn plan(extra: &str) -> ClusterPlan {
    let text = format!("{CLUSTER}---\n{MESH}{extra}");
    let sources = [Source {
        name: "mesh.yaml".to_string(),
        text,
    }];
    load(&sources).unwrap_or_else(|error| panic!("{error}")).plan
}

fn key(namespace: &str, name: &str) -> PodKey {
    (namespace.to_string(), name.to_string())
}

fn keys(names: &[(&str, &str)]) -> BTreeSet<PodKey> {
    names.iter().map(|(namespace, name)| key(namespace, name)).collect()
}

#[test]
fn enrollment_by_namespace_or_pod_label() {
    let plan = plan("");
    assert_eq!(enrolled(&plan), keys(&[("web", "a"), ("default", "c")]));
}

#[test]
fn workload_uids_follow_istiod() {
    let plan = plan("");
    let pod = plan.pods.iter().find(|p| p.name == "a").expect("web/a");
    assert_eq!(workload_uid(pod).unwrap().to_string(), "Kubernetes//Pod/web/a");
}

//! Loading manifests: Kubernetes YAML plus one `Cluster` document, validated and planned into a `ClusterPlan`.

//! `Object`: one object of any kind the store holds, typed, with its key, labels and JSON form.

use std::collections::BTreeMap;

use ambit_policy::istio::{AuthorizationPolicy, PeerAuthentication};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, PodStatus, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::gateway::{Gateway, GrpcRoute, HttpRoute};
use crate::kind::{Kind, ObjectKey};

/// The namespace of namespaced objects that name none, as the API server (and kubectl) default it.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One object, of one of the nine [`Kind`]s.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    Pod(Box<Pod>),
    Service(Box<Service>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    PeerAuthentication(Box<PeerAuthentication>),
    Gateway(Box<Gateway>),
    HttpRoute(Box<HttpRoute>),
    GrpcRoute(Box<GrpcRoute>),
}

/// The identifying metadata of any object: (namespace, name), as written (possibly empty).
struct Identity<'a> {
    namespace: &'a str,
    name: &'a str,
}

type K8sMeta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

// === impl Object ===

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::ServiceAccount(_) => Kind::ServiceAccount,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
        }
    }

    /// The key: a namespaced object without a namespace is in `default`; a cluster-scoped one has none.
    pub fn key(&self) -> ObjectKey {
        let Identity { namespace, name } = self.identity();
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        ObjectKey::new(self.kind(), namespace, name)
    }

    fn identity(&self) -> Identity<'_> {
        let (k8s, istio) = (Identity::k8s, Identity::istio);
        match self {
            Object::Namespace(o) => k8s(&o.metadata),
            Object::ServiceAccount(o) => k8s(&o.metadata),
            Object::Pod(o) => k8s(&o.metadata),
            Object::Service(o) => k8s(&o.metadata),
            Object::AuthorizationPolicy(o) => istio(&o.metadata),
            Object::PeerAuthentication(o) => istio(&o.metadata),
            Object::Gateway(o) => k8s(&o.metadata),
            Object::HttpRoute(o) => k8s(&o.metadata),
            Object::GrpcRoute(o) => k8s(&o.metadata),
        }
    }

    /// `metadata.labels`; empty if none. Istio's policy types keep no labels, so theirs are always empty.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.k8s_meta().and_then(|meta| meta.labels.clone()).unwrap_or_default()
    }

    /// `metadata.annotations`; empty if none.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        match self {
            Object::AuthorizationPolicy(o) => o.metadata.annotations.clone(),
            Object::PeerAuthentication(o) => o.metadata.annotations.clone(),
            _ => (self.k8s_meta())
                .and_then(|meta| meta.annotations.clone())
                .unwrap_or_default(),
        }
    }

    /// The Kubernetes metadata, for all kinds but Istio's.
    fn k8s_meta(&self) -> Option<&K8sMeta> {
        match self {
            Object::Namespace(o) => Some(&o.metadata),
            Object::ServiceAccount(o) => Some(&o.metadata),
            Object::Pod(o) => Some(&o.metadata),
            Object::Service(o) => Some(&o.metadata),
            Object::Gateway(o) => Some(&o.metadata),
            Object::HttpRoute(o) => Some(&o.metadata),
            Object::GrpcRoute(o) => Some(&o.metadata),
            Object::AuthorizationPolicy(_) | Object::PeerAuthentication(_) => None,
        }
    }

    /// The Kubernetes metadata to change, for all kinds but Istio's.
    pub(crate) fn k8s_meta_mut(&mut self) -> Option<&mut K8sMeta> {
        match self {
            Object::Namespace(o) => Some(&mut o.metadata),
            Object::ServiceAccount(o) => Some(&mut o.metadata),
            Object::Pod(o) => Some(&mut o.metadata),
            Object::Service(o) => Some(&mut o.metadata),
            Object::Gateway(o) => Some(&mut o.metadata),
            Object::HttpRoute(o) => Some(&mut o.metadata),
            Object::GrpcRoute(o) => Some(&mut o.metadata),
            Object::AuthorizationPolicy(_) | Object::PeerAuthentication(_) => None,
        }
    }

    /// `metadata.uid`, for the kinds with Kubernetes metadata.
    pub fn uid(&self) -> Option<&str> {
        self.k8s_meta().and_then(|meta| meta.uid.as_deref())
    }

    /// The object with only what the mesh reads from a cluster's objects: for a Pod, its identifying metadata
    /// (name, namespace, uid, labels, annotations, owner references), node, service account, host networking,
    /// containers' names and ports, and its phase, IPs and Ready condition; the rest (commands, environment, probes,
    /// volumes, managed fields, ...) is dropped. Other kinds are kept whole. A cluster source's pods are trimmed when
    /// they enter the store, which keeps a large cluster's store small.
    pub fn trimmed(self) -> Object {
        let Object::Pod(pod) = self else { return self };
        let Pod { metadata, spec, status } = *pod;
        let metadata = ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            labels: metadata.labels,
            annotations: metadata.annotations,
            owner_references: metadata.owner_references,
            ..ObjectMeta::default()
        };
        let spec = spec.map(|spec| PodSpec {
            node_name: spec.node_name,
            service_account_name: spec.service_account_name,
            host_network: spec.host_network,
            containers: (spec.containers.into_iter())
                .map(|container| Container {
                    name: container.name,
                    ports: container.ports,
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        });
        let status = status.map(|status| PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            host_ip: status.host_ip,
            conditions: (status.conditions)
                .map(|conditions| conditions.into_iter().filter(|c| c.type_ == "Ready").collect()),
            ..PodStatus::default()
        });
        Object::Pod(Box::new(Pod { metadata, spec, status }))
    }

    /// The object as the API server returns it: `apiVersion` (the preferred one), `kind`, `metadata`, `spec`,
    /// and `status` where the type has one (Pods, Services, Namespaces from the cluster).
    pub fn to_json(&self) -> Value {
        let body = match self {
            Object::Namespace(o) => to_value(o),
            Object::ServiceAccount(o) => to_value(o),
            Object::Pod(o) => to_value(o),
            Object::Service(o) => to_value(o),
            Object::AuthorizationPolicy(o) => to_value(o),
            Object::PeerAuthentication(o) => to_value(o),
            Object::Gateway(o) => to_value(o),
            Object::HttpRoute(o) => to_value(o),
            Object::GrpcRoute(o) => to_value(o),
        };
        let kind = self.kind();
        let mut map = Map::new();
        map.insert("apiVersion".into(), kind.api_versions()[0].into());
        map.insert("kind".into(), kind.name().into());
        map.extend(body.into_iter().filter(|(key, _)| key != "apiVersion" && key != "kind"));
        Value::Object(map)
    }

    /// What generation counts: everything but `metadata` and `status` (the spec, or a ServiceAccount's fields).
    pub(crate) fn content(&self) -> Value {
        let mut json = self.to_json();
        if let Value::Object(map) = &mut json {
            map.remove("metadata");
            map.remove("status");
        }
        json
    }

    /// Whether `other` has the same content, labels and annotations: applying it changes nothing.
    pub(crate) fn same_config(&self, other: &Object) -> bool {
        self.content() == other.content()
            && self.labels() == other.labels()
            && self.annotations() == other.annotations()
    }
}

/// The fields of a serialized object; empty for a value that does not serialize to a mapping (none of ours).
fn to_value(object: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(object) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

// === impl Identity ===

impl<'a> Identity<'a> {
    fn k8s(meta: &'a K8sMeta) -> Self {
        Self {
            namespace: meta.namespace.as_deref().unwrap_or_default(),
            name: meta.name.as_deref().unwrap_or_default(),
        }
    }

    fn istio(meta: &'a ambit_policy::istio::ObjectMeta) -> Self {
        Self {
            namespace: meta.namespace.as_str(),
            name: meta.name.as_str(),
        }
    }
}

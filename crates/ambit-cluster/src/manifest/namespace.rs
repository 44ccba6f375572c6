//! Namespaces and ServiceAccounts: `default`, `kube-system` and `istio-system` (the mesh's root namespace) exist
//! implicitly, and so does the ServiceAccount `default` in every namespace. Declaring them explicitly is allowed
//! (e.g. to label a namespace).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};

use crate::model::{NamespacePlan, ROOT_NAMESPACE, ServiceAccountPlan};

use super::Report;
use super::document::{DEFAULT_NAMESPACE, Doc};
use super::meta::{self, Kind, Meta};
use super::plan::Context;

/// The namespaces that always exist.
const IMPLICIT_NAMESPACES: [&str; 3] = [DEFAULT_NAMESPACE, "kube-system", ROOT_NAMESPACE];
/// The ServiceAccount every namespace has.
pub(super) const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The namespaces of the cluster, implicit and declared.
#[derive(Debug)]
pub(super) struct Namespaces {
    plans: BTreeMap<String, NamespacePlan>,
}

/// The ServiceAccounts of the cluster, as (namespace, name), the implicit `default` ones included.
#[derive(Debug, Default)]
pub(super) struct Accounts {
    accounts: BTreeSet<(String, String)>,
}

/// Checks the Namespace documents, adding the namespaces to the context.
pub(super) fn check_namespaces(docs: &[Doc<Namespace>], context: &mut Context<'_>, report: &mut Report) {
    for doc in docs {
        let mut scope = report.scope(&doc.origin);
        let metadata = &doc.value.metadata;
        if let (Some(meta), true) = meta::register(Kind::Namespace, metadata, context, &mut scope) {
            context.namespaces.add(meta);
        }
    }
}

/// Checks the ServiceAccount documents, adding them (and every namespace's `default`) to the context.
pub(super) fn check_service_accounts(docs: &[Doc<ServiceAccount>], context: &mut Context<'_>, report: &mut Report) {
    for namespace in context.namespaces.plans.keys() {
        context
            .accounts
            .add(namespace.clone(), DEFAULT_SERVICE_ACCOUNT.to_string());
    }
    for doc in docs {
        let mut scope = report.scope(&doc.origin);
        let (metadata, kind) = (&doc.value.metadata, Kind::ServiceAccount);
        if let (Some(meta), true) = meta::register(kind, metadata, context, &mut scope) {
            context.accounts.add(meta.namespace, meta.name);
        }
    }
}

/// A namespace without labels or annotations.
fn bare_namespace(name: &str) -> NamespacePlan {
    let (name, labels, annotations) = (name.to_string(), BTreeMap::new(), BTreeMap::new());
    NamespacePlan {
        name,
        labels,
        annotations,
    }
}

// === impl Namespaces ===

impl Default for Namespaces {
    /// The implicit namespaces.
    fn default() -> Self {
        let mut namespaces = Self { plans: BTreeMap::new() };
        for name in IMPLICIT_NAMESPACES {
            namespaces.insert(bare_namespace(name));
        }
        namespaces
    }
}

impl Namespaces {
    fn add(&mut self, meta: Meta) {
        let (name, labels, annotations) = (meta.name, meta.labels, meta.annotations);
        self.insert(NamespacePlan {
            name,
            labels,
            annotations,
        });
    }

    fn insert(&mut self, plan: NamespacePlan) {
        self.plans.insert(plan.name.clone(), plan);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.plans.contains_key(name)
    }

    /// The namespaces sorted by name.
    pub fn plans(&self) -> Vec<NamespacePlan> {
        self.plans.values().cloned().collect()
    }
}

// === impl Accounts ===

impl Accounts {
    pub(super) fn add(&mut self, namespace: String, name: String) {
        self.accounts.insert((namespace, name));
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_string(), name.to_string());
        self.accounts.contains(&key)
    }

    /// The ServiceAccounts sorted by namespace, then name.
    pub fn plans(&self) -> Vec<ServiceAccountPlan> {
        let plan = |(namespace, name): &(String, String)| ServiceAccountPlan {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        self.accounts.iter().map(plan).collect()
    }
}

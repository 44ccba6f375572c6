//! The control plane's config store at run time: the objects of the cluster (fed by a source) and the user's
//! config (applied through the API), persisted, translated into the workload API and published to the xDS
//! [`ResourceStore`] on every change.
//!
//! Changes are serialized by one lock: validate and apply to a copy of the store (all or nothing, see
//! [`ambit_config::Store`]), persist the config objects (write a temporary file, fsync, rename), and only then
//! make the copy current, translate and publish. A change that cannot be persisted is refused and changes nothing,
//! so what node proxies enforce is always what a restart would restore.
//!
//! Metadata patches (label and annotation changes of the cluster's Pods and Namespaces, `ambit label` and the node
//! agents' `ambient.istio.io/redirection`) are changes like the others: persisted with the config objects (the
//! file's `metadataPatches`), then translated and published. Every change of a Pod or Namespace (from the source or
//! a patch) moves the revision node agents long-poll on ([`ConfigStore::pods_changed_since`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ambit_config::{Diagnostic, Kind, Object, ObjectKey, ObjectPatch, Outcome, PatchError, Store};
use ambit_node::state::proto::encode_authorization;
use ambit_node::state::source::StateFile;
use ambit_types::{Identity, TrustDomain};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ca::auth::NodeIndex;
use crate::describe::{PodDescription, describe_pod};
use crate::translate::{Inputs, Settings, WaypointGateway, translate};
use crate::xds::{ResourceStore, Resources};

/// The file name persisted objects are reported under when they fail to load.
const PERSISTED: &str = "config store";

/// The kinds the node-pod watch serves; its revision moves with theirs.
const WATCHED: [Kind; 2] = [Kind::Pod, Kind::Namespace];

/// The runtime store. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct ConfigStore {
    inner: Arc<Mutex<Inner>>,
    /// Which identities run on which node, from the Pods: the CA's node authorization (see [`PodIndex`]).
    pods: PodIndex,
    resources: ResourceStore,
    persist: Option<PathBuf>,
    settings: Arc<Settings>,
    trust_domain: TrustDomain,
    /// The store's revision of Pods and Namespaces ([`Store::revision_of`]), for the long polls waiting on it.
    pods_revision: Arc<watch::Sender<u64>>,
    /// Tells this process's revisions from those of an earlier one, whose counts started over.
    epoch: Arc<str>,
}

struct Inner {
    store: Store,
    /// Whether the persisted config was restored: nothing is published before, so no node proxy ever sees the
    /// cluster's workloads without the policies that guard them.
    restored: bool,
}

/// What a change did, per object.
pub type Results = Vec<(ObjectKey, Outcome)>;

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The objects are invalid (each diagnostic names the object, field and reason).
    #[error("{} invalid object(s)", .0.len())]
    Invalid(Vec<Diagnostic>),
    /// The change could not be persisted; nothing changed.
    #[error("cannot persist the config store: {0}")]
    Persist(String),
}

/// Why a metadata patch was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum PatchFailure {
    /// The store refused it: no such object, another uid, invalid keys or values.
    #[error(transparent)]
    Refused(#[from] PatchError),
    /// The patch could not be persisted.
    #[error("cannot persist the config store: {0}")]
    Persist(String),
}

/// The pods of one node and every namespace, as `GET /v1/nodes/{node}/pods` answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodePods {
    /// Opaque; changes whenever any Pod or Namespace does (from the source or a patch).
    pub revision: String,
    /// The node's pods (`spec.nodeName`), as the store holds them, patches applied.
    pub pods: Vec<serde_json::Value>,
    pub namespaces: Vec<serde_json::Value>,
}

/// The fields of the config store file besides its `items`.
#[derive(Deserialize)]
struct PersistedPatches {
    #[serde(default, rename = "metadataPatches")]
    metadata_patches: Vec<ObjectPatch>,
}

impl ConfigStore {
    /// An empty store publishing to `resources`, persisting its config objects to `persist` (if given).
    pub fn new(
        resources: ResourceStore,
        persist: Option<PathBuf>,
        settings: Settings,
        trust_domain: TrustDomain,
    ) -> Self {
        Self {
            pods: PodIndex::default(),
            inner: Arc::new(Mutex::new(Inner {
                store: Store::default(),
                restored: false,
            })),
            resources,
            persist,
            settings: Arc::new(settings),
            trust_domain,
            pods_revision: Arc::new(watch::Sender::new(0)),
            epoch: process_epoch().into(),
        }
    }

    /// Loads the persisted config objects (if the file exists) into the store. They were valid when applied; a
    /// file that no longer loads is an error rather than an empty config, which would drop every ALLOW policy.
    /// Call it once the cluster source delivered its first objects; publishing starts with it.
    ///
    /// The persisted metadata patches are laid over the source's objects; those of objects gone or re-created
    /// while the control plane was down are dropped.
    pub fn restore(&self) -> anyhow::Result<usize> {
        let (objects, patches) = match &self.persist {
            Some(path) => read_persisted(path)?,
            None => (Vec::new(), Vec::new()),
        };
        let count = objects.len();
        let mut inner = self.lock();
        let path = self.persist.as_deref().unwrap_or(Path::new(""));
        if !objects.is_empty() {
            inner
                .store
                .restore(objects)
                .map_err(|diagnostics| load_error(path, &diagnostics))?;
        }
        let patched = patches.len();
        let dropped = (inner.store)
            .restore_patches(patches)
            .map_err(|diagnostics| load_error(path, &diagnostics))?;
        for key in &dropped {
            tracing::info!(object = %key, "dropped a persisted metadata patch: its object is gone or was re-created");
        }
        if patched > 0 {
            tracing::info!(patches = patched - dropped.len(), "metadata patches restored");
        }
        inner.restored = true;
        self.commit(&mut inner);
        Ok(count)
    }

    /// Applies `objects` whole or not at all. With `dry_run`, validates and reports without changing anything.
    pub fn apply(&self, objects: Vec<Object>, dry_run: bool) -> Result<Results, ChangeError> {
        self.change(dry_run, |store| store.apply(objects))
    }

    /// Deletes the objects named by `keys` whole or not at all.
    pub fn delete(&self, keys: &[ObjectKey], ignore_not_found: bool, dry_run: bool) -> Result<Results, ChangeError> {
        self.change(dry_run, |store| store.delete(keys, ignore_not_found))
    }

    fn change(
        &self,
        dry_run: bool,
        change: impl FnOnce(&mut Store) -> Result<Results, Vec<Diagnostic>>,
    ) -> Result<Results, ChangeError> {
        let mut inner = self.lock();
        let mut next = inner.store.clone();
        let results = change(&mut next).map_err(ChangeError::Invalid)?;
        let changed = next.revision() != inner.store.revision();
        if dry_run || !changed {
            return Ok(results);
        }
        self.persist(&next).map_err(ChangeError::Persist)?;
        inner.store = next;
        self.commit(&mut inner);
        Ok(results)
    }

    /// Patches the labels and annotations of a Pod or Namespace of the cluster source (see
    /// [`Store::patch`]), persists the patch, translates and publishes. The object as it is now, as the API
    /// server returns it.
    pub fn patch(&self, patch: &ObjectPatch) -> Result<serde_json::Value, PatchFailure> {
        let mut inner = self.lock();
        let mut next = inner.store.clone();
        let object = next.patch(patch)?.object.to_json();
        if next.revision() != inner.store.revision() {
            self.persist(&next).map_err(PatchFailure::Persist)?;
            inner.store = next;
            self.commit(&mut inner);
            tracing::info!(object = %patch.key(), "metadata patched");
        }
        Ok(object)
    }

    /// Replaces the cluster source's objects; translates and publishes if anything changed. The patches of
    /// objects gone (or pods re-created) are dropped, and the config store file rewritten without them.
    pub fn replace_source(&self, objects: Vec<Object>) {
        let objects = objects.into_iter().map(Object::trimmed).collect();
        let mut inner = self.lock();
        let patches = inner.store.patch_count();
        if inner.store.replace_source(objects) {
            self.pods.rebuild(&inner.store, &self.trust_domain);
            let dropped = patches - inner.store.patch_count();
            // Before the restore the store holds no patch, and persisting would write an empty config.
            if dropped > 0 && inner.restored {
                tracing::info!(
                    dropped,
                    "dropped the metadata patches of objects gone from the cluster source"
                );
                // Best effort: a restart drops them again, as their objects are gone.
                if let Err(e) = self.persist(&inner.store) {
                    tracing::warn!(error = %e, "cannot persist the config store without the dropped patches");
                }
            }
            self.commit(&mut inner);
        }
    }

    /// The pods of `node` (`spec.nodeName`) and every Namespace, patches applied, with their revision.
    pub fn node_pods(&self, node: &str) -> NodePods {
        let inner = self.lock();
        let on_node = |stored: &&ambit_config::Stored| match &stored.object {
            Object::Pod(pod) => pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref()) == Some(node),
            _ => false,
        };
        let pods = inner.store.list(Kind::Pod, None).into_iter().filter(on_node);
        let namespaces = inner.store.list(Kind::Namespace, None).into_iter();
        NodePods {
            revision: self.revision_text(inner.store.revision_of(&WATCHED)),
            pods: pods.map(|stored| stored.object.to_json()).collect(),
            namespaces: namespaces.map(|stored| stored.object.to_json()).collect(),
        }
    }

    /// Waits until the revision of the Pods and Namespaces is not `seen` (a [`NodePods::revision`]), or `timeout`
    /// passed. At once when `seen` is None or already out of date. Waiters hold no thread, only a watch receiver.
    pub async fn pods_changed_since(&self, seen: Option<&str>, timeout: Duration) {
        let Some(seen) = seen else { return };
        let mut changes = self.pods_revision.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.revision_text(*changes.borrow_and_update()) == seen {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the store is gone.
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }

    /// The identities of the pods on each node, kept current with the cluster source.
    pub fn pod_index(&self) -> PodIndex {
        self.pods.clone()
    }

    /// The objects of `kind` (in `namespace`, or all), as the API server returns them, status included.
    pub fn list(&self, kind: Kind, namespace: Option<&str>, name: Option<&str>) -> Vec<serde_json::Value> {
        let inner = self.lock();
        let stored = inner.store.list(kind, namespace);
        let selected = stored
            .into_iter()
            .filter(|s| name.is_none_or(|name| s.object.key().name == name));
        let json = |s| ambit_config::to_json_with_status(s, &self.settings.root_namespace);
        selected.map(json).collect()
    }

    /// What the mesh does for one pod: see [`describe_pod`].
    pub fn describe_pod(
        &self,
        namespace: &str,
        name: &str,
        peer: Option<&Identity>,
        port: Option<u16>,
    ) -> Option<PodDescription> {
        // Translated again rather than kept from the last publish: describe is rare, and a kept translation would
        // cost as much memory as the encoded resources.
        let state = translate_store(&self.lock().store, &self.settings);
        describe_pod(&state, &self.trust_domain, namespace, name, peer, port)
    }

    /// `<epoch>-<revision>`: a revision of another process (whose count started over) never reads as current.
    fn revision_text(&self, revision: u64) -> String {
        format!("{}-{revision}", self.epoch)
    }

    /// Writes the store's config objects and patches to the config store file, if there is one.
    fn persist(&self, store: &Store) -> Result<(), String> {
        let Some(path) = &self.persist else { return Ok(()) };
        persist(path, store).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Makes the current store seen: translated and published to the xDS streams, and the long polls on Pods and
    /// Namespaces woken if those changed.
    fn commit(&self, inner: &mut MutexGuard<'_, Inner>) {
        self.publish(inner);
        let revision = inner.store.revision_of(&WATCHED);
        self.pods_revision.send_if_modified(|current| {
            let changed = *current != revision;
            *current = revision;
            changed
        });
    }

    /// Translates the current store and publishes the result to the xDS streams.
    fn publish(&self, inner: &mut MutexGuard<'_, Inner>) {
        if !inner.restored {
            return;
        }
        let state = translate_store(&inner.store, &self.settings);
        let workloads = state.workloads.iter().map(Into::into).collect();
        let services = state.services.iter().map(Into::into).collect();
        let policies = state.policies.iter().map(encode_authorization).collect();
        let config = waypoint_config(&inner.store);
        let resources = Resources::from_protos(workloads, services, policies).with_config(config);
        let version = self.resources.publish(resources);
        tracing::debug!(
            version,
            revision = inner.store.revision(),
            workloads = state.workloads.len(),
            services = state.services.len(),
            policies = state.policies.len(),
            "published a new translation"
        );
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a store that was either swapped whole or not at all.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The CA's node authorization from the store's Pods: a node may ask for the identity
/// (`spiffe://<td>/ns/<namespace>/sa/<serviceAccountName or default>`) of any pod scheduled on it (`spec.nodeName`),
/// as istiod's node authorizer. Rebuilt whenever the cluster source changes.
#[derive(Clone, Default)]
pub struct PodIndex {
    by_node: Arc<std::sync::RwLock<HashMap<String, HashSet<Identity>>>>,
}

impl PodIndex {
    fn rebuild(&self, store: &Store, trust_domain: &TrustDomain) {
        let mut by_node: HashMap<String, HashSet<Identity>> = HashMap::new();
        for stored in store.list(Kind::Pod, None) {
            let Object::Pod(pod) = &stored.object else { continue };
            let spec = pod.spec.as_ref();
            let Some(node) = spec.and_then(|spec| spec.node_name.clone()) else {
                continue;
            };
            let account = spec
                .and_then(|spec| spec.service_account_name.as_deref())
                .unwrap_or("default");
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            if let Ok(identity) = Identity::new(trust_domain.clone(), namespace, account) {
                by_node.entry(node).or_default().insert(identity);
            }
        }
        *self.by_node.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = by_node;
    }
}

impl NodeIndex for PodIndex {
    fn allows(&self, node: &str, identity: &Identity) -> bool {
        let by_node = self.by_node.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        by_node
            .get(node)
            .is_some_and(|identities| identities.contains(identity))
    }
}

/// The workload API for everything in `store`.
pub fn translate_store(store: &Store, settings: &Settings) -> StateFile {
    let mut inputs = Inputs::default();
    let mut gateways = Vec::new();
    // Oldest first: PeerAuthentication conflicts are settled by age.
    let mut stored: Vec<_> = store.stored().collect();
    stored.sort_by_key(|s| s.created);
    for s in stored {
        match &s.object {
            Object::Namespace(o) => inputs.namespaces.push(o),
            Object::Pod(o) => inputs.pods.push(o),
            Object::Service(o) => inputs.services.push(o),
            Object::AuthorizationPolicy(o) => inputs.authorization_policies.push(o),
            Object::PeerAuthentication(o) => inputs.peer_authentications.push(o),
            Object::Gateway(o) => gateways.push(WaypointGateway {
                namespace: o.metadata.namespace.clone().unwrap_or_default(),
                name: o.metadata.name.clone().unwrap_or_default(),
                class_name: o.spec.gateway_class_name.clone(),
                labels: o.metadata.labels.clone().unwrap_or_default(),
            }),
            Object::ServiceAccount(_) | Object::HttpRoute(_) | Object::GrpcRoute(_) => {}
        }
    }
    inputs.gateways = &gateways;
    translate(&inputs, settings)
}

/// The config a waypoint interprets itself, as `ambit.config.v1.ConfigObject`s: waypoint Gateways (class
/// `istio-waypoint`), HTTPRoutes, GRPCRoutes, and the AuthorizationPolicies that target a Gateway or Service
/// (`targetRef(s)`: the node proxies do not enforce those). Each as the config API returns it, without status.
pub fn waypoint_config(store: &Store) -> Vec<ambit_api::ambit::config::v1::ConfigObject> {
    let wanted = |object: &Object| match object {
        Object::Gateway(gw) => gw.spec.gateway_class_name == crate::translate::WAYPOINT_CLASS,
        Object::HttpRoute(_) | Object::GrpcRoute(_) => true,
        Object::AuthorizationPolicy(policy) => policy.spec.target_ref.is_some() || !policy.spec.target_refs.is_empty(),
        _ => false,
    };
    let encode = |object: &Object| {
        let key = object.key();
        let mut json = object.to_json();
        if let Some(fields) = json.as_object_mut() {
            fields.remove("status");
        }
        ambit_api::ambit::config::v1::ConfigObject {
            api_version: json["apiVersion"].as_str().unwrap_or_default().to_string(),
            kind: json["kind"].as_str().unwrap_or_default().to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            json: serde_json::to_vec(&json).unwrap_or_default(),
        }
    };
    store.objects().filter(|object| wanted(object)).map(encode).collect()
}

/// Writes the store's config objects as a v1 List, and its metadata patches (if any) as the List's
/// `metadataPatches` (a field other readers of a List ignore): a temporary file beside `path`, fsync'd, then renamed
/// over it.
fn persist(path: &Path, store: &Store) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let items: Vec<_> = store.config_objects().iter().map(Object::to_json).collect();
    let mut list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let patches = store.patches();
    if !patches.is_empty() {
        list["metadataPatches"] = serde_json::to_value(patches).map_err(std::io::Error::other)?;
    }
    let bytes = serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The config objects and metadata patches of the config store file; none when there is no file. A file written
/// before patches existed (no `metadataPatches`) has none.
fn read_persisted(path: &Path) -> anyhow::Result<(Vec<Object>, Vec<ObjectPatch>)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => anyhow::bail!("cannot read the config store {}: {e}", path.display()),
    };
    let objects = ambit_config::parse(PERSISTED, &text).map_err(|diagnostics| load_error(path, &diagnostics))?;
    // The store writes JSON; a YAML List written by hand has no patches.
    let patches = match text.trim_start().starts_with('{') {
        true => {
            serde_json::from_str::<PersistedPatches>(&text)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the config store {} does not load: metadataPatches: {e}",
                        path.display()
                    )
                })?
                .metadata_patches
        }
        false => Vec::new(),
    };
    Ok((objects, patches))
}

/// A name for this process's run of the store: the time it started, in nanoseconds, in hex.
fn process_epoch() -> String {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    format!("{:x}", since.unwrap_or_default().as_nanos())
}

fn load_error(path: &Path, diagnostics: &[Diagnostic]) -> anyhow::Error {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    anyhow::anyhow!(
        "the config store {} does not load:\n{}",
        path.display(),
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}},
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "web"},
       "spec": {"nodeName": "node-1", "serviceAccountName": "api", "containers": [{"name": "c"}]}},
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": "web"},
       "spec": {"nodeName": "node-2", "containers": [{"name": "c"}]}},
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unscheduled", "namespace": "web"},
       "spec": {"serviceAccountName": "batch", "containers": [{"name": "c"}]}}
    ]}"#;

    fn identity(namespace: &str, account: &str) -> Identity {
        Identity::new(TrustDomain::new("cluster.local").unwrap(), namespace, account).unwrap()
    }

    #[test]
    fn the_pod_index_follows_the_cluster_source() {
        let trust_domain = TrustDomain::new("cluster.local").unwrap();
        let store = ConfigStore::new(ResourceStore::new(), None, Settings::default(), trust_domain);
        let index = store.pod_index();
        assert!(
            !index.allows("node-1", &identity("web", "api")),
            "nothing before the source"
        );
        store.replace_source(ambit_config::parse("pods.json", PODS).unwrap());
        let cases = [
            ("node-1", "web", "api", true),
            ("node-2", "web", "api", false),
            ("node-2", "web", "default", true),
            ("node-1", "web", "default", false),
            ("node-1", "web", "batch", false),
            ("node-1", "other", "api", false),
        ];
        for (node, namespace, account, allowed) in cases {
            let id = identity(namespace, account);
            assert_eq!(index.allows(node, &id), allowed, "{node} asking for {id}");
        }
        // A pod gone from the source takes its identity with it.
        let remaining = PODS.replace(r#""serviceAccountName": "api", "#, "");
        store.replace_source(ambit_config::parse("pods.json", &remaining).unwrap());
        assert!(!index.allows("node-1", &identity("web", "api")));
        assert!(index.allows("node-1", &identity("web", "default")));
    }
}

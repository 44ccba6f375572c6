//! `Store`: every object the control plane knows, by key, with Kubernetes-style generations and resource
//! versions. Users apply and delete the config kinds; the cluster source replaces the Kubernetes kinds wholesale,
//! and metadata patches ([`crate::patch`]) lay label and annotation changes over its Pods and Namespaces. Every
//! change is all or nothing: a batch with any problem changes nothing.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::kind::{Kind, ObjectKey};
use crate::object::Object;
use crate::patch::{self, MetadataPatch, ObjectPatch, PATCHABLE_KINDS, PatchError, StoredPatch};
use crate::validate;

/// An object as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub object: Object,
    /// 1 when created; bumped when the content (the spec) changes, not when only labels or annotations do.
    pub generation: i64,
    /// The store's revision after the object's last change (`metadata.resourceVersion`).
    pub resource_version: u64,
    /// The store's revision when the object was created: orders objects by age (PeerAuthentication conflicts go
    /// to the oldest, as Istio settles them by creation time).
    pub created: u64,
}

/// What applying or deleting did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
    Deleted,
}

/// All objects, by key, and a revision that counts the changes. Objects are shared (`Arc`), so a copy of the
/// store (taken to apply a change all or nothing) copies no object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Arc<Stored>>,
    revision: u64,
    /// The metadata patches of source objects, laid over each new version the source gives.
    patches: BTreeMap<ObjectKey, StoredPatch>,
    /// The revision of the last change of an object of each kind (created, changed or removed).
    kind_revisions: BTreeMap<Kind, u64>,
}

// === impl Store ===

impl Store {
    /// Applies config objects (as `kubectl apply`): creates the new ones, updates the changed ones. All or
    /// nothing: every object is validated again, must be of a config kind, must be in an existing Namespace, and
    /// appear once in the batch; otherwise nothing changes and every problem is returned.
    pub fn apply(&mut self, objects: Vec<Object>) -> Result<Vec<(ObjectKey, Outcome)>, Vec<Diagnostic>> {
        let checked = self.check_apply(&objects, true)?;
        Ok(checked.into_iter().map(|object| self.put(object)).collect())
    }

    /// Loads persisted config objects after a restart: [`Store::apply`] without the namespace check, since a
    /// policy whose namespace the cluster source no longer lists must still be kept (leaving out an ALLOW policy
    /// would open what it guards). Everything else is checked as on apply; all or nothing.
    pub fn restore(&mut self, objects: Vec<Object>) -> Result<Vec<(ObjectKey, Outcome)>, Vec<Diagnostic>> {
        let checked = self.check_apply(&objects, false)?;
        Ok(checked.into_iter().map(|object| self.put(object)).collect())
    }

    /// Deletes config objects. All or nothing: a missing object is an error (`not found`) unless
    /// `ignore_not_found`, when it is skipped; only config kinds may be deleted. A key listed twice is deleted once.
    pub fn delete(
        &mut self,
        keys: &[ObjectKey],
        ignore_not_found: bool,
    ) -> Result<Vec<(ObjectKey, Outcome)>, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let mut deleting = Vec::new();
        for key in keys {
            if !key.kind.is_config() {
                problems.push(Diagnostic::object(key, "kind", from_the_cluster(key.kind, "delete")));
            } else if self.objects.contains_key(key) {
                deleting.push(key.clone());
            } else if !ignore_not_found {
                problems.push(Diagnostic::object(key, "", "not found"));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut seen = HashSet::new();
        deleting.retain(|key| seen.insert(key.clone()));
        Ok(deleting.into_iter().map(|key| self.remove(key)).collect())
    }

    /// Replaces every Kubernetes-kind object (Namespace, ServiceAccount, Pod, Service) with the cluster source's
    /// current set; config objects are untouched, and config kinds passed here ignored. Objects without a name
    /// are skipped; of two with the same key the last wins. Returns whether anything changed. The source is
    /// trusted, so nothing is validated.
    ///
    /// The metadata patches are laid over the new objects; the patch of an object the source no longer lists, or
    /// of a Pod whose uid is no longer the one the patch was made for (the pod was re-created), is dropped.
    pub fn replace_source(&mut self, objects: Vec<Object>) -> bool {
        let mut incoming: BTreeMap<ObjectKey, Object> = (objects.into_iter())
            .filter(|object| !object.kind().is_config())
            .map(|object| (object.key(), object))
            .filter(|(key, _)| !key.name.is_empty())
            .collect();
        let dropped = self.drop_stale_patches(&incoming);
        for (key, layer) in &self.patches {
            if let Some(object) = incoming.get_mut(key) {
                layer.metadata.apply_to(object);
            }
        }
        let gone: Vec<ObjectKey> = (self.objects.keys())
            .filter(|key| !key.kind.is_config() && !incoming.contains_key(*key))
            .cloned()
            .collect();
        let mut changed = !gone.is_empty();
        for key in gone {
            self.remove(key);
        }
        for object in incoming.into_values() {
            changed |= self.put_source(object);
        }
        changed || dropped
    }

    /// Patches the labels and annotations of a Pod or Namespace of the cluster source (a JSON merge patch: `None`
    /// removes a key), and keeps the patch to lay over the source's later versions of the object. Refused, with
    /// nothing changed, when the kind is not patchable, the object does not exist or has another uid than
    /// `patch.uid`, or a key or value breaks Kubernetes' rules. The object as it is now stored.
    pub fn patch(&mut self, patch: &ObjectPatch) -> Result<&Stored, PatchError> {
        let key = patch.key();
        if !PATCHABLE_KINDS.contains(&key.kind) {
            return Err(PatchError::NotPatchable(key.kind));
        }
        let Some(stored) = self.objects.get(&key) else {
            return Err(PatchError::NotFound(key));
        };
        if let Some(expected) = &patch.uid
            && stored.object.uid() != Some(expected.as_str())
        {
            let found = stored.object.uid().map(str::to_string);
            let expected = expected.clone();
            return Err(PatchError::OtherUid { key, expected, found });
        }
        patch.metadata.check(&key).map_err(PatchError::Invalid)?;
        let mut object = stored.object.clone();
        patch.metadata.apply_to(&mut object);
        patch::check_annotations_size(&object).map_err(PatchError::Invalid)?;
        self.lay_patch(&key, &patch.metadata);
        // Invariant: the object was found above, and laying a patch never removes one.
        Ok(self.get(&key).expect("the patched object is stored"))
    }

    /// Lays the patches persisted with the config after a restart over the source's objects. All or nothing: every
    /// patch must be of a patchable kind with valid keys and values. A patch whose object is gone, or was
    /// re-created (another uid), is dropped; the dropped ones are returned.
    pub fn restore_patches(&mut self, patches: Vec<ObjectPatch>) -> Result<Vec<ObjectKey>, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        for patch in &patches {
            let key = patch.key();
            if !PATCHABLE_KINDS.contains(&key.kind) {
                problems.push(Diagnostic::object(
                    &key,
                    "kind",
                    PatchError::NotPatchable(key.kind).to_string(),
                ));
            } else if let Err(found) = patch.metadata.check(&key) {
                problems.extend(found);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut dropped = Vec::new();
        for patch in patches {
            let key = patch.key();
            let layer = StoredPatch {
                uid: patch.uid,
                metadata: MetadataPatch::default(),
            };
            if is_live(&layer, self.get(&key).map(|stored| &stored.object)) {
                self.lay_patch(&key, &patch.metadata);
            } else {
                dropped.push(key);
            }
        }
        Ok(dropped)
    }

    /// How many objects carry a metadata patch.
    pub fn patch_count(&self) -> usize {
        self.patches.len()
    }

    /// The metadata patches, in key order, as records (what to persist beside the config objects).
    pub fn patches(&self) -> Vec<ObjectPatch> {
        let record = |(key, layer)| ObjectPatch::from_stored(key, layer);
        self.patches.iter().map(record).collect()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Stored> {
        self.objects.get(key).map(|stored| &**stored)
    }

    /// The objects of `kind`, in `namespace` or in all namespaces, sorted by namespace and name. A cluster-scoped
    /// kind ignores `namespace` (as kubectl does).
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<&Stored> {
        let start = ObjectKey::new(kind, "", "");
        let namespace = namespace.filter(|_| kind.namespaced());
        (self.objects.range(start..))
            .take_while(|(key, _)| key.kind == kind)
            .filter(|(key, _)| namespace.is_none_or(|namespace| key.namespace == namespace))
            .map(|(_, stored)| &**stored)
            .collect()
    }

    /// Every object as stored, in key order.
    pub fn stored(&self) -> impl Iterator<Item = &Stored> {
        self.objects.values().map(|stored| &**stored)
    }

    /// Every object, in key order.
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.objects.values().map(|stored| &stored.object)
    }

    /// The config objects, in key order: what to persist (re-applying them restores the config).
    pub fn config_objects(&self) -> Vec<Object> {
        (self.objects.values())
            .filter(|stored| stored.object.kind().is_config())
            .map(|stored| stored.object.clone())
            .collect()
    }

    /// Bumped by every change of any object or metadata patch.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The revision of the last change (creation, update or removal) of an object of one of `kinds`; 0 if none
    /// ever changed. A watcher of these kinds needs to look again only when it moves.
    pub fn revision_of(&self, kinds: &[Kind]) -> u64 {
        let revisions = kinds.iter().filter_map(|kind| self.kind_revisions.get(kind));
        revisions.copied().max().unwrap_or(0)
    }

    /// Validates a batch to apply: the objects as they will be stored, or every problem.
    fn check_apply(&self, objects: &[Object], namespaces: bool) -> Result<Vec<Object>, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let mut checked = Vec::new();
        let mut seen = HashSet::new();
        for object in objects {
            let key = object.key();
            let before = problems.len();
            self.check_one(&key, namespaces, &mut problems);
            if !seen.insert(key.clone()) {
                problems.push(Diagnostic::object(
                    &key,
                    "metadata.name",
                    format!("{key} appears twice in the batch"),
                ));
            }
            if problems.len() == before {
                checked.extend(self.revalidate(object, &key, &mut problems));
            }
        }
        if problems.is_empty() {
            Ok(checked)
        } else {
            Err(problems)
        }
    }

    /// The checks that need the store: the kind, and the namespace (which must exist, as the API server requires).
    fn check_one(&self, key: &ObjectKey, namespaces: bool, problems: &mut Vec<Diagnostic>) {
        if !key.kind.is_config() {
            problems.push(Diagnostic::object(key, "kind", from_the_cluster(key.kind, "apply")));
            return;
        }
        let namespace = ObjectKey::new(Kind::Namespace, "", &key.namespace);
        if namespaces && key.kind.namespaced() && !self.objects.contains_key(&namespace) {
            let message = format!("namespace {:?} not found", key.namespace);
            problems.push(Diagnostic::object(key, "metadata.namespace", message));
        }
    }

    /// The object validated again (it may not come from [`crate::parse`]), as it will be stored.
    fn revalidate(&self, object: &Object, key: &ObjectKey, problems: &mut Vec<Diagnostic>) -> Option<Object> {
        let findings = match validate::again(object) {
            Ok(object) => return Some(object),
            Err(findings) => findings,
        };
        let diagnostics = findings
            .into_iter()
            .map(|f| Diagnostic::object(key, &f.field, f.message));
        problems.extend(diagnostics);
        None
    }

    /// Creates or updates one object.
    fn put(&mut self, object: Object) -> (ObjectKey, Outcome) {
        let key = object.key();
        let outcome = match self.objects.get(&key) {
            None => Outcome::Created,
            Some(stored) if stored.object.same_config(&object) => Outcome::Unchanged,
            Some(_) => Outcome::Configured,
        };
        if outcome != Outcome::Unchanged {
            self.store(key.clone(), object);
        }
        (key, outcome)
    }

    /// Creates or updates one source object unless it is identical; whether it changed.
    fn put_source(&mut self, object: Object) -> bool {
        let key = object.key();
        let same = self.objects.get(&key).is_some_and(|stored| stored.object == object);
        if !same {
            self.store(key, object);
        }
        !same
    }

    /// Merges `metadata` into the patch layer of the stored object `key` (a Pod's layer records its uid) and
    /// stores the object patched. The caller checked the patch and that the object exists.
    fn lay_patch(&mut self, key: &ObjectKey, metadata: &MetadataPatch) {
        let Some(stored) = self.objects.get(key) else { return };
        let mut object = stored.object.clone();
        metadata.apply_to(&mut object);
        let changed = object != stored.object;
        let uid = (key.kind == Kind::Pod).then(|| stored.object.uid().map(str::to_string));
        let mut layer = self.patches.get(key).cloned().unwrap_or_else(|| StoredPatch {
            uid: uid.flatten(),
            metadata: MetadataPatch::default(),
        });
        layer.metadata.merge(metadata);
        if !layer.metadata.is_empty() && self.patches.get(key) != Some(&layer) {
            self.patches.insert(key.clone(), layer);
            self.revision += 1;
        }
        if changed {
            self.store(key.clone(), object);
        }
    }

    /// Drops the patches that no longer apply to the source's `incoming` objects (see [`is_live`]); whether any was.
    fn drop_stale_patches(&mut self, incoming: &BTreeMap<ObjectKey, Object>) -> bool {
        let before = self.patches.len();
        self.patches.retain(|key, layer| is_live(layer, incoming.get(key)));
        let dropped = self.patches.len() != before;
        if dropped {
            self.revision += 1;
        }
        dropped
    }

    /// Stores a new or changed object at the next revision.
    fn store(&mut self, key: ObjectKey, object: Object) {
        self.revision += 1;
        let revision = self.revision;
        self.kind_revisions.insert(key.kind, revision);
        let (generation, created) = match self.objects.get(&key) {
            None => (1, revision),
            Some(old) if old.object.content() == object.content() => (old.generation, old.created),
            Some(old) => (old.generation + 1, old.created),
        };
        let stored = Stored {
            object,
            generation,
            resource_version: revision,
            created,
        };
        self.objects.insert(key, Arc::new(stored));
    }

    fn remove(&mut self, key: ObjectKey) -> (ObjectKey, Outcome) {
        if self.objects.remove(&key).is_some() {
            self.revision += 1;
            self.kind_revisions.insert(key.kind, self.revision);
        }
        (key, Outcome::Deleted)
    }
}

/// Whether a patch layer still applies to `object`: the object exists and, when the layer records a uid (a Pod's),
/// has that uid.
fn is_live(layer: &StoredPatch, object: Option<&Object>) -> bool {
    match (object, &layer.uid) {
        (None, _) => false,
        (Some(object), Some(uid)) => object.uid() == Some(uid.as_str()),
        (Some(_), None) => true,
    }
}

/// Why a Kubernetes kind cannot be applied or deleted by users.
fn from_the_cluster(kind: Kind, verb: &str) -> String {
    format!(
        "{kind} objects come from the cluster (the local cluster's manifests or the Kubernetes API); ambit {verb} \
         takes {}",
        Kind::config_kind_names()
    )
}

// === impl Outcome ===

impl fmt::Display for Outcome {
    /// "created", "configured", "unchanged", "deleted".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
            Self::Deleted => "deleted",
        })
    }
}

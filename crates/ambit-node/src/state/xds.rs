//! The node proxy's state from the control plane's delta xDS stream: the `istio.workload.Address` and
//! `istio.security.Authorization` resources, decoded and kept by name, and published as a new [`Snapshot`] after
//! every accepted update.
//!
//! An update is applied to a copy of the current resources; if any resource in it does not decode, or the result is
//! not a consistent snapshot, the whole update is rejected (the client NACKs it with the reasons) and the state
//! stays as it was: the proxy keeps serving its last good snapshot, also while the control plane is away.
//!
//! In the node scope the proxy holds only its node's workloads and every service, and looks up the rest
//! ([`Lookups`]): each key is subscribed once, every connection that misses it waits for the same answer (at most
//! [`LOOKUP_WAIT`]), and an answer is any accepted update that names the key: a resource by that name or alias, or
//! a removal of it (the control plane's "no such resource").

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ambit_api::envoy::service::discovery::v3::Resource;
use ambit_api::istio::security as pb_security;
use ambit_api::istio::workload as pb;
use ambit_api::prost::Message;
use ambit_policy::Authorization;
use ambit_xds::delta::{Handler, Rejection, Update};
use tokio::sync::watch;

use super::model::{Service, Workload};
#[cfg(test)]
use super::proto::encode_authorization;
use super::proto::{AddressResource, decode_authorization};
use super::snapshot::Snapshot;

/// The resources of both type URLs, by resource name.
#[derive(Debug, Default)]
struct Resources {
    /// Shared with the published snapshots.
    workloads: BTreeMap<String, Arc<Workload>>,
    services: BTreeMap<String, Service>,
    policies: BTreeMap<String, Authorization>,
}

/// An update's changes to the [`Resources`], each with what it replaced, so that a rejected update can be undone.
struct Edit<'a> {
    resources: &'a mut Resources,
    undo: Vec<Undo>,
}

/// One change's previous value (`None`: the name was absent); services and policies boxed, to keep the variants small.
enum Undo {
    Workload(String, Option<Arc<Workload>>),
    Service(String, Option<Box<Service>>),
    Policy(String, Option<Box<Authorization>>),
}

impl Edit<'_> {
    /// Sets (`Some`) or removes (`None`) the workload `name`.
    fn workload(&mut self, name: &str, value: Option<Workload>) {
        let old = set(&mut self.resources.workloads, name, value.map(Arc::new));
        self.undo.push(Undo::Workload(name.to_string(), old));
    }

    fn service(&mut self, name: &str, value: Option<Service>) {
        let old = set(&mut self.resources.services, name, value);
        self.undo.push(Undo::Service(name.to_string(), old.map(Box::new)));
    }

    fn policy(&mut self, name: &str, value: Option<Authorization>) {
        let old = set(&mut self.resources.policies, name, value);
        self.undo.push(Undo::Policy(name.to_string(), old.map(Box::new)));
    }

    /// Undoes every change, the last first.
    fn roll_back(self) {
        for undo in self.undo.into_iter().rev() {
            match undo {
                Undo::Workload(name, old) => drop(set(&mut self.resources.workloads, &name, old)),
                Undo::Service(name, old) => drop(set(&mut self.resources.services, &name, old.map(|s| *s))),
                Undo::Policy(name, old) => drop(set(&mut self.resources.policies, &name, old.map(|p| *p))),
            }
        }
    }
}

/// Sets or removes `name` in `map`; returns what it held.
fn set<T>(map: &mut BTreeMap<String, T>, name: &str, value: Option<T>) -> Option<T> {
    match value {
        Some(value) => map.insert(name.to_string(), value),
        None => map.remove(name),
    }
}

/// The longest a connection waits for an on-demand lookup before it is planned with what the proxy holds.
pub const LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// What both handlers share: the resources and where snapshots go.
struct Shared {
    resources: Mutex<Resources>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// Keys looked up on demand → answered yet (see [`Lookups`]).
    lookups: Mutex<HashMap<String, watch::Sender<bool>>>,
}

/// On-demand lookups of `istio.workload.Address` keys (resource names or `<network>/<ip>` aliases), shared by every
/// outbound proxy of the node. Cheap to clone.
#[derive(Clone)]
pub struct Lookups {
    shared: Arc<Shared>,
    subscribe: Arc<dyn Fn(String) + Send + Sync>,
}

/// The handler of `istio.workload.Address`.
pub struct AddressHandler(Arc<Shared>);

/// The handler of `istio.security.Authorization`.
pub struct AuthorizationHandler(Arc<Shared>);

/// The two handlers of the node proxy's stream and the snapshots they publish (version 0, empty, until the first
/// update is accepted).
pub fn handlers() -> (AddressHandler, AuthorizationHandler, watch::Receiver<Arc<Snapshot>>) {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let shared = Arc::new(Shared {
        resources: Mutex::new(Resources::default()),
        snapshots: tx,
        lookups: Mutex::new(HashMap::new()),
    });
    (AddressHandler(Arc::clone(&shared)), AuthorizationHandler(shared), rx)
}

impl Shared {
    /// Applies `edit` to the resources and publishes the resulting snapshot, or rejects the update whole: on a
    /// rejection (by `edit` or by the snapshot's checks) the edit's changes are undone, so nothing of it stays. The
    /// resources are changed in place, not copied first: with the whole mesh in the state (`--xds-scope all`) a
    /// copy per update doubled the update's cost in CPU and in memory.
    fn update(&self, edit: impl FnOnce(&mut Edit<'_>) -> Vec<Rejection>) -> Result<(), Vec<Rejection>> {
        let mut resources = self.resources.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changes = Edit {
            resources: &mut resources,
            undo: Vec::new(),
        };
        let rejected = edit(&mut changes);
        if !rejected.is_empty() {
            changes.roll_back();
            return Err(rejected);
        }
        let version = self.snapshots.borrow().version() + 1;
        let next = &changes.resources;
        let snapshot = Snapshot::with_shared(
            version,
            next.workloads.values().cloned().collect(),
            next.services.values().cloned().collect(),
            next.policies.values().cloned().collect(),
        );
        match snapshot {
            Ok(snapshot) => {
                self.snapshots.send_replace(Arc::new(snapshot));
                Ok(())
            }
            Err(error) => {
                changes.roll_back();
                Err(vec![Rejection {
                    name: String::new(),
                    reason: error.to_string(),
                }])
            }
        }
    }

    /// Wakes the lookups of `keys`, once the snapshot holding their answer is published.
    fn answered<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let lookups = self.lookups.lock().unwrap_or_else(PoisonError::into_inner);
        if lookups.is_empty() {
            return;
        }
        for key in keys {
            if let Some(answer) = lookups.get(key) {
                answer.send_replace(true);
            }
        }
    }
}

// === impl Lookups ===

impl Lookups {
    /// Whether `key` was looked up and answered: the snapshot holds whatever the control plane has under it.
    pub fn answered(&self, key: &str) -> bool {
        let lookups = self.shared.lookups.lock().unwrap_or_else(PoisonError::into_inner);
        lookups.get(key).is_some_and(|answer| *answer.borrow())
    }

    /// Looks `key` up: subscribes to it unless an earlier call did, then waits for its answer, at most
    /// [`LOOKUP_WAIT`]. Whether it was answered; either way the caller decides again with the current snapshot.
    pub async fn fetch(&self, key: &str) -> bool {
        let (mut answer, first) = {
            let mut lookups = self.shared.lookups.lock().unwrap_or_else(PoisonError::into_inner);
            match lookups.get(key) {
                Some(answer) => (answer.subscribe(), false),
                None => {
                    let (tx, rx) = watch::channel(false);
                    lookups.insert(key.to_string(), tx);
                    (rx, true)
                }
            }
        };
        // Outside the lock: the answer may come back before `subscribe` returns.
        if first {
            (self.subscribe)(key.to_string());
        }
        let answered = tokio::time::timeout(LOOKUP_WAIT, answer.wait_for(|answered| *answered)).await;
        matches!(answered, Ok(Ok(_)))
    }
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lookups = self.shared.lookups.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Lookups").field("keys", &lookups.len()).finish()
    }
}

/// The resource's body decoded as `M`.
fn body<M: Message + Default>(resource: &Resource) -> Result<M, String> {
    let any = resource.resource.as_ref().ok_or("the resource has no body")?;
    M::decode(any.value.as_slice()).map_err(|e| e.to_string())
}

impl AddressHandler {
    /// The on-demand lookups answered by this handler; `subscribe` sends a key to the control plane (normally
    /// [`XdsHandle::subscribe`](ambit_xds::delta::XdsHandle::subscribe) for this type URL).
    pub fn lookups(&self, subscribe: impl Fn(String) + Send + Sync + 'static) -> Lookups {
        Lookups {
            shared: Arc::clone(&self.0),
            subscribe: Arc::new(subscribe),
        }
    }
}

impl Handler for AddressHandler {
    fn type_url(&self) -> &'static str {
        ambit_api::WORKLOAD_ADDRESS_TYPE_URL
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejection>> {
        let names = (update.added.iter()).flat_map(|r| std::iter::once(&r.name).chain(&r.aliases));
        let keys: Vec<String> = names.chain(&update.removed).cloned().collect();
        self.0.update(|resources| {
            let mut rejected = Vec::new();
            for name in &update.removed {
                resources.workload(name, None);
                resources.service(name, None);
            }
            for resource in update.added {
                let decoded = body::<pb::Address>(&resource)
                    .and_then(|address| AddressResource::try_from(address).map_err(|e| e.to_string()));
                match decoded {
                    Ok(AddressResource::Workload(workload)) => {
                        resources.service(&resource.name, None);
                        resources.workload(&resource.name, Some(workload));
                    }
                    Ok(AddressResource::Service(service)) => {
                        resources.workload(&resource.name, None);
                        resources.service(&resource.name, Some(service));
                    }
                    Err(reason) => rejected.push(Rejection {
                        name: resource.name,
                        reason,
                    }),
                }
            }
            rejected
        })?;
        self.0.answered(keys.iter().map(String::as_str));
        Ok(())
    }
}

impl Handler for AuthorizationHandler {
    fn type_url(&self) -> &'static str {
        ambit_api::AUTHORIZATION_TYPE_URL
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejection>> {
        self.0.update(|resources| {
            let mut rejected = Vec::new();
            for name in &update.removed {
                resources.policy(name, None);
            }
            for resource in update.added {
                let decoded = body::<pb_security::Authorization>(&resource)
                    .and_then(|policy| decode_authorization(policy).map_err(|e| e.to_string()));
                match decoded {
                    Ok(policy) => {
                        resources.policy(&resource.name, Some(policy));
                    }
                    Err(reason) => rejected.push(Rejection {
                        name: resource.name,
                        reason,
                    }),
                }
            }
            rejected
        })
    }
}

#[cfg(test)]
mod tests {
    use ambit_api::prost_types::Any;

    use super::*;
    use crate::state::fixtures::{pod, policy};

    fn resource(name: &str, type_url: &str, value: Vec<u8>) -> Resource {
        Resource {
            name: name.to_string(),
            version: "1".to_string(),
            resource: Some(Any {
                type_url: type_url.to_string(),
                value,
            }),
            aliases: Vec::new(),
        }
    }

    fn workload(name: &str, ip: &str) -> Resource {
        let workload = pod(name, ip);
        let address = pb::Address::from(&workload);
        resource(
            workload.uid.as_str(),
            ambit_api::WORKLOAD_ADDRESS_TYPE_URL,
            address.encode_to_vec(),
        )
    }

    fn update(added: Vec<Resource>, removed: &[&str]) -> Update {
        Update {
            added,
            removed: removed.iter().map(ToString::to_string).collect(),
            initial: false,
        }
    }

    /// A lookup subscribes its key once, however many connections miss it at once; each waits for an accepted
    /// update naming the key (by name, alias or removal) and then sees the new snapshot; a refused update or
    /// silence ends the wait after [`LOOKUP_WAIT`].
    #[tokio::test]
    async fn lookups_subscribe_once_and_wake_on_their_answer() {
        let (mut addresses, _, snapshots) = handlers();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let lookups = addresses.lookups({
            let sent = Arc::clone(&sent);
            move |key| sent.lock().unwrap().push(key)
        });
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let lookups = lookups.clone();
                tokio::spawn(async move { lookups.fetch("/10.0.0.2").await })
            })
            .collect();
        let other = tokio::spawn({
            let lookups = lookups.clone();
            async move { lookups.fetch("/10.0.0.9").await }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            *sent.lock().unwrap(),
            ["/10.0.0.2", "/10.0.0.9"],
            "one subscription per key"
        );
        assert!(!lookups.answered("/10.0.0.2"));

        // A refused update answers nothing.
        let garbage = resource("broken", ambit_api::WORKLOAD_ADDRESS_TYPE_URL, vec![0xff]);
        assert!(addresses.apply(update(vec![garbage], &["/10.0.0.2"])).is_err());
        tokio::task::yield_now().await;
        assert!(!lookups.answered("/10.0.0.2"));

        // The answer names the workload by uid; its alias is the key.
        let mut b = workload("b", "10.0.0.2");
        b.aliases = vec!["/10.0.0.2".to_string()];
        addresses.apply(update(vec![b], &[])).unwrap();
        for waiter in waiting {
            assert!(waiter.await.unwrap(), "every waiter is woken by the one answer");
        }
        assert!(lookups.answered("/10.0.0.2"));
        assert_eq!(snapshots.borrow().workloads().len(), 1, "the answer is in the snapshot");
        assert!(lookups.fetch("/10.0.0.2").await, "answered keys return at once");
        assert_eq!(sent.lock().unwrap().len(), 2, "and are not subscribed again");

        // Nobody answers /10.0.0.9: the wait ends after LOOKUP_WAIT, unanswered.
        assert!(!other.await.unwrap());
        // The control plane's "no such resource" is an answer too.
        let late = tokio::spawn({
            let lookups = lookups.clone();
            async move { lookups.fetch("/10.0.0.9").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        addresses.apply(update(Vec::new(), &["/10.0.0.9"])).unwrap();
        assert!(late.await.unwrap());
        assert_eq!(sent.lock().unwrap().len(), 2, "a pending key is not subscribed twice");
    }

    #[test]
    fn updates_publish_snapshots_and_a_bad_resource_rejects_the_whole_update() {
        let (mut addresses, mut authorizations, snapshots) = handlers();
        assert_eq!(snapshots.borrow().version(), 0);

        addresses
            .apply(update(vec![workload("a", "10.0.0.1"), workload("b", "10.0.0.2")], &[]))
            .unwrap();
        assert_eq!(
            (snapshots.borrow().version(), snapshots.borrow().workloads().len()),
            (1, 2)
        );

        let deny = encode_authorization(&policy("demo", "deny-b", ambit_policy::Scope::Namespace));
        let name = "demo/deny-b";
        authorizations
            .apply(update(
                vec![resource(name, ambit_api::AUTHORIZATION_TYPE_URL, deny.encode_to_vec())],
                &[],
            ))
            .unwrap();
        assert_eq!(snapshots.borrow().policies().len(), 1);

        // One undecodable resource among good ones: nothing of the update is applied.
        let garbage = resource("broken", ambit_api::WORKLOAD_ADDRESS_TYPE_URL, vec![0xff, 0xff, 0xff]);
        let rejected = addresses.apply(update(
            vec![workload("c", "10.0.0.3"), garbage],
            &["Kubernetes//Pod/demo/a"],
        ));
        let rejected = rejected.unwrap_err();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].name, "broken");
        assert_eq!(
            (snapshots.borrow().version(), snapshots.borrow().workloads().len()),
            (2, 2)
        );

        // A workload the model refuses (an address of 5 bytes) is rejected with the field path.
        let mut bad = pb::Workload::from(&pod("d", "10.0.0.4"));
        bad.addresses = vec![vec![1, 2, 3, 4, 5]];
        let bad = pb::Address {
            r#type: Some(pb::address::Type::Workload(bad)),
        };
        let rejected = addresses
            .apply(update(
                vec![resource("d", ambit_api::WORKLOAD_ADDRESS_TYPE_URL, bad.encode_to_vec())],
                &[],
            ))
            .unwrap_err();
        assert!(rejected[0].reason.contains("addresses[0]"), "{}", rejected[0].reason);

        addresses
            .apply(update(Vec::new(), &["Kubernetes//Pod/demo/a"]))
            .unwrap();
        let snapshot = snapshots.borrow();
        assert_eq!((snapshot.version(), snapshot.workloads().len()), (3, 1));
        assert_eq!(snapshot.workloads()[0].name, "b");
    }

    /// An update the snapshot refuses (an IP claimed twice) is undone whole: a removal in it is restored, so the next
    /// update builds on the state before it.
    #[test]
    fn an_update_the_snapshot_refuses_is_undone() {
        let (mut addresses, _authorizations, snapshots) = handlers();
        addresses
            .apply(update(vec![workload("a", "10.0.0.1"), workload("b", "10.0.0.2")], &[]))
            .unwrap();
        let rejected = addresses
            .apply(update(vec![workload("c", "10.0.0.2")], &["Kubernetes//Pod/demo/a"]))
            .unwrap_err();
        assert!(rejected[0].reason.contains("10.0.0.2"), "{}", rejected[0].reason);
        assert_eq!(snapshots.borrow().version(), 1);

        addresses.apply(update(vec![workload("d", "10.0.0.4")], &[])).unwrap();
        let snapshot = snapshots.borrow();
        let names: Vec<&str> = snapshot.workloads().iter().map(|w| w.name.as_str()).collect();
        assert_eq!((snapshot.version(), names), (2, vec!["a", "b", "d"]));
    }
}

//! What the control plane serves over xDS: an immutable [`Resources`] snapshot (per type URL, resource name →
//! encoded resource, version and aliases) and the [`ResourceStore`] that publishes a new snapshot to every stream.
//!
//! Names and aliases follow istiod (ambient §3.1): a workload is named by its `uid`, a service by
//! `<namespace>/<hostname>`, an authorization policy by `<namespace>/<name>`; workloads and services are also known
//! by one alias per address, `<network>/<ip>` (`<network>/<ip>/<len>` for a CIDR), the names on-demand clients ask
//! for. A version is a hash of the encoded resource, so an unchanged resource keeps its version across rebuilds and
//! restarts, and a reconnecting client that still holds it is not sent it again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ambit_api::ambit::config::v1 as pb_config;
use ambit_api::istio::security as pb_security;
use ambit_api::istio::workload as pb;
use ambit_api::prost::Message;
use ambit_api::prost_types::Any;
use ambit_api::{AUTHORIZATION_TYPE_URL, CONFIG_OBJECT_TYPE_URL, WORKLOAD_ADDRESS_TYPE_URL};
use tokio::sync::watch;

/// One resource as it is sent: its version, the encoded message and the other names it answers to.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// A stable hash of `resource.value` (see [`version_of`]).
    pub version: String,
    pub resource: Any,
    /// Other names the resource may be subscribed by (`<network>/<ip>`).
    pub aliases: Vec<String>,
    pub kind: EntryKind,
    /// The node a workload is scheduled on: a node-scoped stream of that node gets it unasked. `None` for services
    /// and policies.
    pub node: Option<String>,
    /// The names of the services a workload is an endpoint of (`<namespace>/<hostname>`, the keys of its
    /// `services`): a node-scoped stream subscribed to one of them gets the workload too. Empty for services and
    /// policies.
    pub services: Vec<String>,
}

/// What a resource is, as node-scoped streams sort them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Workload,
    Service,
    Policy,
    /// An L7 config object for the waypoint (`ambit.config.v1.ConfigObject`).
    Config,
}

/// The resources of one type URL, by name, with an index of their aliases.
#[derive(Clone, Debug, Default)]
struct Table {
    /// Names are shared (`Arc<str>`) with every stream that holds the resource, and entries with the next snapshot
    /// when they did not change (see [`ResourceStore::publish`]).
    by_name: BTreeMap<Arc<str>, Arc<Entry>>,
    by_alias: BTreeMap<String, Arc<str>>,
}

/// An immutable snapshot of every resource the control plane serves.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    generation: u64,
    types: BTreeMap<String, Table>,
}

/// Publishes snapshots to the xDS streams. Cheap to clone; every clone publishes to the same streams.
///
/// A source (today none; the local cluster's next) builds a complete [`Resources`] and calls [`Self::publish`]; each
/// stream then sends its client what changed since what that client holds.
#[derive(Clone, Debug)]
pub struct ResourceStore {
    tx: watch::Sender<Arc<Resources>>,
}

/// A stable, non-cryptographic hash of `bytes` (FNV-1a, 128 bits) in hex: a resource version only has to change when
/// the bytes do, and stay the same across processes and releases (unlike `std`'s hasher).
pub fn version_of(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let hash = bytes
        .iter()
        .fold(OFFSET, |hash, byte| (hash ^ u128::from(*byte)).wrapping_mul(PRIME));
    format!("{hash:032x}")
}

/// `<network>/<ip>`, or `<network>/<ip>/<len>` for a range; `None` unless the address has 4 or 16 bytes.
pub fn address_alias(network: &str, address: &[u8], length: Option<u32>) -> Option<String> {
    let ip = match address.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(address).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(address).ok()?),
        _ => return None,
    };
    Some(match length {
        Some(len) => format!("{network}/{ip}/{len}"),
        None => format!("{network}/{ip}"),
    })
}

// === impl Entry ===

impl Entry {
    /// Encodes `message` as an `Any` of `type_url`, its version the hash of the bytes; no node and no services.
    pub fn new(type_url: &str, message: &impl Message, aliases: Vec<String>, kind: EntryKind) -> Self {
        let value = message.encode_to_vec();
        Self {
            version: version_of(&value),
            resource: Any {
                type_url: type_url.to_string(),
                value,
            },
            aliases,
            kind,
            node: None,
            services: Vec::new(),
        }
    }
}

// === impl Resources ===

impl Resources {
    /// No resources, generation 0.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Workloads and services as `istio.workload.Address` resources, policies as `istio.security.Authorization`.
    /// A name given twice keeps the last resource; an alias shared by two resources resolves to the first.
    pub fn from_protos(
        workloads: Vec<pb::Workload>,
        services: Vec<pb::Service>,
        policies: Vec<pb_security::Authorization>,
    ) -> Self {
        let mut resources = Self::empty();
        for workload in workloads {
            let (name, entry) = workload_entry(workload);
            resources.insert(WORKLOAD_ADDRESS_TYPE_URL, name, entry);
        }
        for service in services {
            let (name, entry) = service_entry(service);
            resources.insert(WORKLOAD_ADDRESS_TYPE_URL, name, entry);
        }
        for policy in policies {
            let name = format!("{}/{}", policy.namespace, policy.name);
            let entry = Entry::new(AUTHORIZATION_TYPE_URL, &policy, Vec::new(), EntryKind::Policy);
            resources.insert(AUTHORIZATION_TYPE_URL, name, entry);
        }
        resources
    }

    /// Adds the waypoint's L7 config objects, each named `<kind>/<namespace>/<name>`.
    pub fn with_config(mut self, objects: Vec<pb_config::ConfigObject>) -> Self {
        for object in objects {
            let name = format!("{}/{}/{}", object.kind, object.namespace, object.name);
            let entry = Entry::new(CONFIG_OBJECT_TYPE_URL, &object, Vec::new(), EntryKind::Config);
            self.insert(CONFIG_OBJECT_TYPE_URL, name, entry);
        }
        self
    }

    /// Adds (or replaces) the resource `name` of `type_url`, for sources that build their own entries.
    pub fn insert(&mut self, type_url: &str, name: String, entry: Entry) {
        let table = self.types.entry(type_url.to_string()).or_default();
        let name: Arc<str> = name.into();
        for alias in &entry.aliases {
            table.by_alias.entry(alias.clone()).or_insert_with(|| name.clone());
        }
        table.by_name.insert(name, Arc::new(entry));
    }

    /// The number of the snapshot in its store: each publication increments it (0 for a snapshot never published).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The resource `name` of `type_url`.
    pub fn entry(&self, type_url: &str, name: &str) -> Option<&Arc<Entry>> {
        self.types.get(type_url)?.by_name.get(name)
    }

    /// The resource `name` of `type_url` with its shared name.
    pub fn named(&self, type_url: &str, name: &str) -> Option<(&Arc<str>, &Arc<Entry>)> {
        self.types.get(type_url)?.by_name.get_key_value(name)
    }

    /// Every resource of `type_url`, in name order.
    pub fn entries(&self, type_url: &str) -> impl Iterator<Item = (&str, &Arc<Entry>)> {
        let table = self.types.get(type_url);
        table
            .into_iter()
            .flat_map(|table| table.by_name.iter().map(|(name, entry)| (&**name, entry)))
    }

    /// The name a subscription key stands for: the key itself when it names a resource, else the resource that has it
    /// as an alias.
    pub fn resolve(&self, type_url: &str, key: &str) -> Option<&str> {
        let table = self.types.get(type_url)?;
        if let Some((name, _)) = table.by_name.get_key_value(key) {
            return Some(name);
        }
        table.by_alias.get(key).map(|name| &**name)
    }

    /// The number of resources of `type_url`.
    pub fn len(&self, type_url: &str) -> usize {
        self.types.get(type_url).map_or(0, |table| table.by_name.len())
    }

    /// Whether no type has any resource.
    pub fn is_empty(&self) -> bool {
        self.types.values().all(|table| table.by_name.is_empty())
    }

    fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Makes every resource that `previous` holds unchanged (same name, same entry) point at `previous`'s copy, so
    /// consecutive snapshots, and the streams that remember what they sent, share one copy of what did not change.
    fn share_unchanged(mut self, previous: &Resources) -> Self {
        for (type_url, table) in &mut self.types {
            let Some(old) = previous.types.get(type_url) else {
                continue;
            };
            let by_name = std::mem::take(&mut table.by_name);
            table.by_name = (by_name.into_iter())
                .map(|(name, entry)| match old.by_name.get_key_value(&*name) {
                    Some((old_name, old_entry)) if **old_entry == *entry => (old_name.clone(), old_entry.clone()),
                    _ => (name, entry),
                })
                .collect();
            for name in table.by_alias.values_mut() {
                if let Some((shared, _)) = table.by_name.get_key_value(&**name) {
                    *name = shared.clone();
                }
            }
        }
        self
    }
}

/// A workload's name (`uid`) and entry; no alias for a host-network workload, whose address is not its own.
fn workload_entry(workload: pb::Workload) -> (String, Entry) {
    let name = workload.uid.clone();
    let aliases = if workload.network_mode == pb::NetworkMode::HostNetwork as i32 {
        Vec::new()
    } else {
        (workload.addresses.iter())
            .filter_map(|address| address_alias(&workload.network, address, None))
            .collect()
    };
    let node = Some(workload.node.clone()).filter(|node| !node.is_empty());
    let services = workload.services.keys().cloned().collect();
    let address = pb::Address {
        r#type: Some(pb::address::Type::Workload(workload)),
    };
    let entry = Entry::new(WORKLOAD_ADDRESS_TYPE_URL, &address, aliases, EntryKind::Workload);
    (
        name,
        Entry {
            node,
            services,
            ..entry
        },
    )
}

/// A service's name (`<namespace>/<hostname>`) and entry, one alias per virtual address.
fn service_entry(service: pb::Service) -> (String, Entry) {
    let name = format!("{}/{}", service.namespace, service.hostname);
    let aliases = (service.addresses.iter())
        .filter_map(|address| address_alias(&address.network, &address.address, address.length))
        .collect();
    let address = pb::Address {
        r#type: Some(pb::address::Type::Service(service)),
    };
    (
        name,
        Entry::new(WORKLOAD_ADDRESS_TYPE_URL, &address, aliases, EntryKind::Service),
    )
}

// === impl ResourceStore ===

impl ResourceStore {
    /// A store holding no resources until the first [`Self::publish`].
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(Resources::empty()));
        Self { tx }
    }

    /// Replaces the snapshot every stream serves; returns the new generation. Resources that did not change keep the
    /// previous snapshot's copy.
    pub fn publish(&self, resources: Resources) -> u64 {
        let mut generation = 0;
        self.tx.send_modify(|current| {
            generation = current.generation + 1;
            *current = Arc::new(resources.share_unchanged(current).with_generation(generation));
        });
        generation
    }

    /// The snapshot served now.
    pub fn current(&self) -> Arc<Resources> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every later snapshot (intermediate ones may be skipped; the latest never is).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Resources>> {
        self.tx.subscribe()
    }
}

impl Default for ResourceStore {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(uid: &str, ip: [u8; 4]) -> pb::Workload {
        pb::Workload {
            uid: uid.to_string(),
            name: "client".to_string(),
            namespace: "demo".to_string(),
            addresses: vec![ip.to_vec()],
            node: "node-1".to_string(),
            services: [("demo/echo.demo.svc.cluster.local".to_string(), pb::PortList::default())].into(),
            ..pb::Workload::default()
        }
    }

    fn service() -> pb::Service {
        let vip = |address: Vec<u8>, length| pb::NetworkAddress {
            network: "net".to_string(),
            address,
            length,
        };
        pb::Service {
            name: "echo".to_string(),
            namespace: "demo".to_string(),
            hostname: "echo.demo.svc.cluster.local".to_string(),
            addresses: vec![vip(vec![10, 96, 0, 20], None), vip(vec![0xfd; 16], Some(120))],
            ..pb::Service::default()
        }
    }

    fn policy() -> pb_security::Authorization {
        pb_security::Authorization {
            name: "allow".to_string(),
            namespace: "demo".to_string(),
            ..pb_security::Authorization::default()
        }
    }

    #[test]
    fn names_aliases_and_nodes_follow_istiod() {
        let uid = "Kubernetes//Pod/demo/client";
        let resources = Resources::from_protos(vec![workload(uid, [10, 244, 1, 2])], vec![service()], vec![policy()]);
        let w = resources.entry(WORKLOAD_ADDRESS_TYPE_URL, uid).unwrap();
        assert_eq!(w.aliases, ["/10.244.1.2"]);
        assert_eq!(w.node.as_deref(), Some("node-1"));
        assert_eq!(w.kind, EntryKind::Workload);
        assert_eq!(
            w.services,
            ["demo/echo.demo.svc.cluster.local"],
            "the names of its services"
        );
        assert_eq!(w.resource.type_url, WORKLOAD_ADDRESS_TYPE_URL);
        let decoded = pb::Address::decode(w.resource.value.as_slice()).unwrap();
        assert!(matches!(decoded.r#type, Some(pb::address::Type::Workload(w)) if w.uid == uid));

        let s = resources
            .entry(WORKLOAD_ADDRESS_TYPE_URL, "demo/echo.demo.svc.cluster.local")
            .unwrap();
        assert_eq!(
            s.aliases,
            ["net/10.96.0.20", "net/fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd/120"]
        );
        assert_eq!(
            (s.node.as_ref(), s.services.len(), s.kind),
            (None, 0, EntryKind::Service)
        );
        let decoded = pb::Address::decode(s.resource.value.as_slice()).unwrap();
        assert!(matches!(decoded.r#type, Some(pb::address::Type::Service(s)) if s.name == "echo"));

        let p = resources.entry(AUTHORIZATION_TYPE_URL, "demo/allow").unwrap();
        assert_eq!(p.resource.type_url, AUTHORIZATION_TYPE_URL);
        assert_eq!(p.kind, EntryKind::Policy);
        assert_eq!(
            pb_security::Authorization::decode(p.resource.value.as_slice()).unwrap(),
            policy()
        );

        assert_eq!(resources.resolve(WORKLOAD_ADDRESS_TYPE_URL, "/10.244.1.2"), Some(uid));
        assert_eq!(resources.resolve(WORKLOAD_ADDRESS_TYPE_URL, uid), Some(uid));
        assert_eq!(
            resources.resolve(WORKLOAD_ADDRESS_TYPE_URL, "net/10.96.0.20"),
            Some("demo/echo.demo.svc.cluster.local")
        );
        assert_eq!(resources.resolve(WORKLOAD_ADDRESS_TYPE_URL, "/10.0.0.1"), None);
        assert_eq!(resources.resolve(AUTHORIZATION_TYPE_URL, "/10.244.1.2"), None);
        assert_eq!(
            (
                resources.len(WORKLOAD_ADDRESS_TYPE_URL),
                resources.len(AUTHORIZATION_TYPE_URL)
            ),
            (2, 1)
        );
    }

    #[test]
    fn host_network_workloads_have_no_alias() {
        let mut w = workload("uid", [172, 31, 0, 2]);
        w.network_mode = pb::NetworkMode::HostNetwork as i32;
        let resources = Resources::from_protos(vec![w], Vec::new(), Vec::new());
        assert!(
            resources
                .entry(WORKLOAD_ADDRESS_TYPE_URL, "uid")
                .unwrap()
                .aliases
                .is_empty()
        );
    }

    #[test]
    fn versions_are_stable_and_follow_the_bytes() {
        // Pinned: a version must not change between releases, or every reconnecting client is sent everything.
        assert_eq!(version_of(b""), "6c62272e07bb014262b821756295c58d");
        assert_eq!(version_of(b"a"), "d228cb696f1a8caf78912b704e4a8964");
        let build = |ip| Resources::from_protos(vec![workload("uid", ip)], Vec::new(), Vec::new());
        let version = |r: &Resources| r.entry(WORKLOAD_ADDRESS_TYPE_URL, "uid").unwrap().version.clone();
        let (first, again, changed) = (build([10, 0, 0, 1]), build([10, 0, 0, 1]), build([10, 0, 0, 2]));
        assert_eq!(version(&first), version(&again));
        assert_ne!(version(&first), version(&changed));
    }

    #[test]
    fn a_new_snapshot_shares_what_did_not_change() {
        let store = ResourceStore::new();
        let build = |ip| {
            let workloads = vec![workload("same", [10, 0, 0, 1]), workload("moves", ip)];
            Resources::from_protos(workloads, vec![service()], Vec::new())
        };
        store.publish(build([10, 0, 0, 2]));
        let first = store.current();
        store.publish(build([10, 0, 0, 3]));
        let second = store.current();
        let named = |r: &Arc<Resources>, name: &str| {
            let (name, entry) = r.named(WORKLOAD_ADDRESS_TYPE_URL, name).unwrap();
            (name.clone(), entry.clone())
        };
        for unchanged in ["same", "demo/echo.demo.svc.cluster.local"] {
            let ((name1, entry1), (name2, entry2)) = (named(&first, unchanged), named(&second, unchanged));
            assert!(
                Arc::ptr_eq(&entry1, &entry2),
                "{unchanged}: one entry for both snapshots"
            );
            assert!(Arc::ptr_eq(&name1, &name2), "{unchanged}: one name for both snapshots");
        }
        let (moved1, moved2) = (named(&first, "moves").1, named(&second, "moves").1);
        assert!(!Arc::ptr_eq(&moved1, &moved2));
        assert_ne!(moved1.version, moved2.version);
        // Aliases resolve to the shared name, and the changed workload's new alias to it.
        assert_eq!(second.resolve(WORKLOAD_ADDRESS_TYPE_URL, "net/10.0.0.3"), None);
        assert_eq!(second.resolve(WORKLOAD_ADDRESS_TYPE_URL, "/10.0.0.3"), Some("moves"));
        assert_eq!(second.resolve(WORKLOAD_ADDRESS_TYPE_URL, "/10.0.0.1"), Some("same"));
    }

    #[test]
    fn the_store_numbers_its_snapshots() {
        let store = ResourceStore::new();
        let mut rx = store.subscribe();
        assert_eq!(store.current().generation(), 0);
        assert!(store.current().is_empty());
        assert_eq!(
            store.publish(Resources::from_protos(Vec::new(), Vec::new(), vec![policy()])),
            1
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().generation(), 1);
        assert_eq!(store.clone().publish(Resources::empty()), 2);
        assert_eq!(store.current().generation(), 2);
    }
}

//! The [`Snapshot`]: every workload, service and policy the proxy knows at one version, checked and indexed once
//! when it is built (by IP, uid, service key, VIP and hostname, and each service's endpoints), then shared
//! read-only as `Arc<Snapshot>`.
//!
//! Building refuses what the indexes could not represent: a duplicate workload uid, service key or policy name, an
//! IP address claimed twice (lookups are by IP alone until networks are modelled), a port 0. References that may
//! simply not have arrived yet (a policy or service a workload names) are kept and reported by
//! [`Snapshot::unresolved`], as Istio skips unknown policies with a warning.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use ambit_policy::{Authorization, PolicyRef};
use serde::{Deserialize, Serialize};

use super::model::{GatewayAddress, Hostname, Service, ServiceKey, Workload, WorkloadUid};

/// The mesh at one version. Built by [`Snapshot::new`]; serialized as its four fields (the indexes are rebuilt on
/// deserialization).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SnapshotData")]
pub struct Snapshot {
    version: u64,
    /// Shared with the source's own copy and with the next snapshot: an update of one workload in a mesh of
    /// thousands copies pointers, not workloads.
    workloads: Vec<Arc<Workload>>,
    services: Vec<Service>,
    policies: Vec<Authorization>,
    #[serde(skip)]
    index: Index,
}

/// A snapshot that cannot be built: the offending field (`workloads[3].addresses[0]`) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SnapshotError {
    pub field: String,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A key or address that must be unique appears again; `first` is the field that holds it first.
    #[error("{value} is also {role} {first}")]
    Duplicate {
        value: String,
        role: &'static str,
        first: String,
    },
    #[error("0 is not a port: use 1 to 65535")]
    ZeroPort,
}

/// A name a workload refers to that the snapshot does not hold (yet): the reference is skipped meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// Where the name is, e.g. `workloads[2].authorization_policies[0]`.
    pub field: String,
    /// `policy` or `service`.
    pub kind: &'static str,
    pub name: String,
}

/// The serialized form of a snapshot.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotData {
    #[serde(default)]
    version: u64,
    #[serde(default)]
    workloads: Vec<Workload>,
    #[serde(default)]
    services: Vec<Service>,
    #[serde(default)]
    policies: Vec<Authorization>,
}

/// Positions in the snapshot's vectors, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Index {
    workload_by_uid: HashMap<WorkloadUid, usize>,
    workload_by_ip: HashMap<IpAddr, usize>,
    service_by_key: HashMap<ServiceKey, usize>,
    service_by_vip: HashMap<IpAddr, usize>,
    services_by_hostname: HashMap<Hostname, Vec<usize>>,
    /// Each service's endpoints, in workload order.
    endpoints: HashMap<ServiceKey, Vec<usize>>,
    policy_by_ref: HashMap<PolicyRef, usize>,
}

/// Builds an [`Index`], refusing duplicates. `owners` remembers which entry claimed each IP first. Field paths are
/// only formatted for an error: a snapshot of the whole mesh (10,000 workloads) is rebuilt on every update.
struct IndexBuilder {
    index: Index,
    owners: HashMap<IpAddr, Owner>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Checks and indexes the three collections; the first problem found rejects the whole snapshot.
    pub fn new(
        version: u64,
        workloads: Vec<Workload>,
        services: Vec<Service>,
        policies: Vec<Authorization>,
    ) -> Result<Self, SnapshotError> {
        Self::with_shared(
            version,
            workloads.into_iter().map(Arc::new).collect(),
            services,
            policies,
        )
    }

    /// [`Snapshot::new`] over workloads the caller shares.
    pub fn with_shared(
        version: u64,
        workloads: Vec<Arc<Workload>>,
        services: Vec<Service>,
        policies: Vec<Authorization>,
    ) -> Result<Self, SnapshotError> {
        let index = IndexBuilder::build(&workloads, &services, &policies)?;
        Ok(Self {
            version,
            workloads,
            services,
            policies,
            index,
        })
    }

    /// Counts published snapshots: each source numbers its snapshots from 1; the empty default is 0.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn workloads(&self) -> &[Arc<Workload>] {
        &self.workloads
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn policies(&self) -> &[Authorization] {
        &self.policies
    }

    pub fn workload(&self, uid: &WorkloadUid) -> Option<&Workload> {
        self.index.workload_by_uid.get(uid).map(|&i| &*self.workloads[i])
    }

    /// The workload with this address (IPv4-mapped IPv6 addresses are looked up as IPv4).
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        let i = self.index.workload_by_ip.get(&ip.to_canonical())?;
        Some(&*self.workloads[*i])
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.index.service_by_key.get(key).map(|&i| &self.services[i])
    }

    /// The service with this virtual IP (IPv4-mapped IPv6 addresses are looked up as IPv4).
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Service> {
        let i = self.index.service_by_vip.get(&ip.to_canonical())?;
        Some(&self.services[*i])
    }

    /// Every service with this hostname (one per namespace that defines it), in snapshot order.
    pub fn services_by_hostname(&self, hostname: &Hostname) -> impl Iterator<Item = &Service> {
        let positions = self.index.services_by_hostname.get(hostname);
        positions.into_iter().flatten().map(|&i| &self.services[i])
    }

    /// The workloads that list `service` in their [`Workload::services`], in snapshot order, whatever their health.
    pub fn endpoints(&self, service: &ServiceKey) -> impl Iterator<Item = &Workload> {
        let positions = self.index.endpoints.get(service);
        positions.into_iter().flatten().map(|&i| &*self.workloads[i])
    }

    pub fn policy(&self, name: &PolicyRef) -> Option<&Authorization> {
        self.index.policy_by_ref.get(name).map(|&i| &self.policies[i])
    }

    /// The policies and services workloads name that this snapshot does not hold.
    pub fn unresolved(&self) -> Vec<Unresolved> {
        let mut out = Vec::new();
        for (i, workload) in self.workloads.iter().enumerate() {
            for (j, name) in workload.authorization_policies.iter().enumerate() {
                if self.policy(name).is_none() {
                    let field = format!("workloads[{i}].authorization_policies[{j}]");
                    out.push(Unresolved::new(field, "policy", name));
                }
            }
            for key in workload.services.keys().filter(|key| self.service(key).is_none()) {
                let field = format!("workloads[{i}].services[{:?}]", key.to_string());
                out.push(Unresolved::new(field, "service", key));
            }
        }
        out
    }
}

impl TryFrom<SnapshotData> for Snapshot {
    type Error = SnapshotError;

    fn try_from(data: SnapshotData) -> Result<Self, Self::Error> {
        Self::new(data.version, data.workloads, data.services, data.policies)
    }
}

// === impl IndexBuilder ===

impl IndexBuilder {
    fn build(
        workloads: &[Arc<Workload>],
        services: &[Service],
        policies: &[Authorization],
    ) -> Result<Index, SnapshotError> {
        let mut builder = Self {
            index: Index {
                workload_by_uid: HashMap::with_capacity(workloads.len()),
                workload_by_ip: HashMap::with_capacity(workloads.len()),
                service_by_key: HashMap::with_capacity(services.len()),
                service_by_vip: HashMap::with_capacity(services.len()),
                services_by_hostname: HashMap::with_capacity(services.len()),
                endpoints: HashMap::with_capacity(services.len()),
                policy_by_ref: HashMap::with_capacity(policies.len()),
            },
            owners: HashMap::with_capacity(workloads.len() + services.len()),
        };
        for (i, workload) in workloads.iter().enumerate() {
            builder.add_workload(i, workload)?;
        }
        for (i, service) in services.iter().enumerate() {
            builder.add_service(i, service)?;
        }
        for (i, policy) in policies.iter().enumerate() {
            builder.add_policy(i, policy)?;
        }
        Ok(builder.index)
    }

    fn add_workload(&mut self, i: usize, workload: &Workload) -> Result<(), SnapshotError> {
        let field = || format!("workloads[{i}]");
        insert_unique(&mut self.index.workload_by_uid, workload.uid.clone(), i).map_err(|first| {
            let uid = format!("{:?}", workload.uid.as_str());
            SnapshotError::duplicate(
                format!("{}.uid", field()),
                uid,
                "the uid of",
                format!("workloads[{first}]"),
            )
        })?;
        for (j, ip) in workload.addresses.iter().enumerate() {
            self.claim_ip(*ip, || format!("{}.addresses[{j}]", field()), Owner::Workload(i))?;
            self.index.workload_by_ip.insert(ip.to_canonical(), i);
        }
        for (key, mappings) in &workload.services {
            let ports = mappings.iter().map(|m| m.service_port);
            check_port_list(|| format!("{}.services[{:?}]", field(), key.to_string()), ports)?;
            self.index.endpoints.entry(key.clone()).or_default().push(i);
        }
        check_gateway(|| format!("{}.waypoint", field()), workload.waypoint.as_ref())
    }

    fn add_service(&mut self, i: usize, service: &Service) -> Result<(), SnapshotError> {
        let field = || format!("services[{i}]");
        insert_unique(&mut self.index.service_by_key, service.key(), i).map_err(|first| {
            let key = service.key().to_string();
            SnapshotError::duplicate(field(), key, "the key of", format!("services[{first}]"))
        })?;
        let by_hostname = self.index.services_by_hostname.entry(service.hostname.clone());
        by_hostname.or_default().push(i);
        for (j, vip) in service.addresses.iter().enumerate() {
            self.claim_ip(
                vip.address,
                || format!("{}.addresses[{j}].address", field()),
                Owner::Service(i),
            )?;
            self.index.service_by_vip.insert(vip.address.to_canonical(), i);
        }
        let ports = service.ports.iter().map(|p| p.service_port);
        check_port_list(|| format!("{}.ports", field()), ports)?;
        check_gateway(|| format!("{}.waypoint", field()), service.waypoint.as_ref())
    }

    fn add_policy(&mut self, i: usize, policy: &Authorization) -> Result<(), SnapshotError> {
        let name = policy.policy_ref();
        insert_unique(&mut self.index.policy_by_ref, name.clone(), i).map_err(|first| {
            let first = format!("policies[{first}]");
            SnapshotError::duplicate(format!("policies[{i}]"), name.to_string(), "the name of", first)
        })
    }

    /// Records that `owner` holds `ip`, or fails naming `field` (the address's path) if another entry already does.
    fn claim_ip(&mut self, ip: IpAddr, field: impl FnOnce() -> String, owner: Owner) -> Result<(), SnapshotError> {
        insert_unique(&mut self.owners, ip.to_canonical(), owner)
            .map_err(|first| SnapshotError::duplicate(field(), ip.to_string(), "an address of", first.to_string()))
    }
}

/// The entry that claimed an address first.
#[derive(Clone, Copy, Debug)]
enum Owner {
    Workload(usize),
    Service(usize),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Workload(i) => write!(f, "workloads[{i}]"),
            Owner::Service(i) => write!(f, "services[{i}]"),
        }
    }
}

/// Inserts `key → value` unless the key is taken; then returns the value already there.
fn insert_unique<K: Hash + Eq, V: Clone>(map: &mut HashMap<K, V>, key: K, value: V) -> Result<(), V> {
    match map.entry(key) {
        Entry::Occupied(taken) => Err(taken.get().clone()),
        Entry::Vacant(free) => {
            free.insert(value);
            Ok(())
        }
    }
}

/// Ports of a service or of a workload's mapping for one service: not 0, each listed once. Target ports may be
/// 0 (named ports). `field` is the list's path, formatted only for an error.
fn check_port_list(field: impl Fn() -> String, ports: impl Iterator<Item = u16>) -> Result<(), SnapshotError> {
    // Lists are short: a linear scan costs less than a map per list.
    let mut seen: Vec<u16> = Vec::new();
    for (k, port) in ports.enumerate() {
        let at = || format!("{}[{k}].service_port", field());
        if port == 0 {
            return Err(SnapshotError::new(at(), Problem::ZeroPort));
        }
        if let Some(first) = seen.iter().position(|&p| p == port) {
            return Err(SnapshotError::duplicate(
                at(),
                format!("port {port}"),
                "in",
                format!("{}[{first}]", field()),
            ));
        }
        seen.push(port);
    }
    Ok(())
}

fn check_gateway(field: impl FnOnce() -> String, gateway: Option<&GatewayAddress>) -> Result<(), SnapshotError> {
    match gateway {
        Some(gateway) if gateway.hbone_mtls_port == 0 => Err(SnapshotError::new(
            format!("{}.hbone_mtls_port", field()),
            Problem::ZeroPort,
        )),
        _ => Ok(()),
    }
}

// === impl SnapshotError ===

impl SnapshotError {
    pub fn new(field: String, problem: Problem) -> Self {
        Self { field, problem }
    }

    fn duplicate(field: String, value: String, role: &'static str, first: String) -> Self {
        Self::new(field, Problem::Duplicate { value, role, first })
    }
}

// === impl Unresolved ===

impl Unresolved {
    fn new(field: String, kind: &'static str, name: impl fmt::Display) -> Self {
        Self {
            field,
            kind,
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: there is no {} {}; it is ignored until it arrives",
            self.field, self.kind, self.name
        )
    }
}

#[cfg(test)]
mod tests;

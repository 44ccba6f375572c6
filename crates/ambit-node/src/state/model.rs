//! Istio's workload API (`istio.workload.Workload`, `Service` and their parts, ambient §3.3–3.4) as domain types.
//! Field names are the proto's (snake_case), so the xDS conversion maps field to field, and absent fields take the
//! proto's defaults. Names that identities and keys are built from are checked when they are made, so
//! [`Workload::identity`] and [`Service::key`] cannot fail.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ambit_policy::PolicyRef;
use ambit_types::{Identity, TrustDomain};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The trust domain of a workload whose `trust_domain` is empty or absent.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The service account of a workload whose `service_account` is empty or absent.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The HBONE port of a `GatewayAddress` that names none: the only one istiod sends.
pub const DEFAULT_HBONE_MTLS_PORT: u16 = 15008;
/// The locality of a workload that has none.
static NO_LOCALITY: Locality = Locality {
    region: String::new(),
    zone: String::new(),
    subzone: String::new(),
};

/// One workload (a pod, or a VM's WorkloadEntry) as the control plane describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The primary key, e.g. `Kubernetes//Pod/<namespace>/<name>`.
    pub uid: WorkloadUid,
    /// The pod name; for debugging only.
    #[serde(default)]
    pub name: String,
    pub namespace: Namespace,
    /// One address per IP family (dual stack); none for a workload reached only through a gateway.
    #[serde(default, deserialize_with = "text_list")]
    pub addresses: Vec<IpAddr>,
    /// Empty for the default network.
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub tunnel_protocol: TunnelProtocol,
    #[serde(default = "default_trust_domain", deserialize_with = "trust_domain_or_default")]
    pub trust_domain: TrustDomain,
    #[serde(default)]
    pub service_account: ServiceAccount,
    /// The waypoint for traffic addressed to this workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<GatewayAddress>,
    /// The node the workload runs on.
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub canonical_name: String,
    #[serde(default)]
    pub canonical_revision: String,
    #[serde(default)]
    pub workload_type: WorkloadType,
    #[serde(default)]
    pub workload_name: String,
    /// The services this workload is an endpoint of, with its port for each service port. This is where service
    /// endpoints come from.
    #[serde(default)]
    pub services: BTreeMap<ServiceKey, Vec<PortMapping>>,
    /// Selector-based policies that select this workload (and those converted from PeerAuthentication), written
    /// `<namespace>/<name>`.
    #[serde(default, deserialize_with = "text_list", serialize_with = "display_list")]
    pub authorization_policies: Vec<PolicyRef>,
    #[serde(default)]
    pub status: WorkloadStatus,
    #[serde(default)]
    pub cluster_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// The load-balancing weight; absent means 1, and 0 means the workload is never chosen.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// The pod's labels (an ambit addition, for telemetry's canonical service and version).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// How a workload receives mesh traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TunnelProtocol {
    /// Plain TCP: the workload is not in the mesh (or is a sidecar that cannot terminate HBONE).
    #[default]
    None,
    /// HBONE on port 15008.
    Hbone,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadStatus {
    #[default]
    Healthy,
    Unhealthy,
}

/// The kind of object that owns the workload, for telemetry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadType {
    #[default]
    Deployment,
    Cronjob,
    Pod,
    Job,
}

/// A workload's port for one service port. A `target_port` of 0 is a named port the control plane could not
/// resolve for this workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    #[serde(default)]
    pub service_port: u16,
    #[serde(default)]
    pub target_port: u16,
}

/// Where a workload runs; compared scope by scope when a service prefers nearby endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub subzone: String,
}

/// A Kubernetes service or ServiceEntry: its virtual IPs and ports. Its endpoints are the workloads that list it in
/// [`Workload::services`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub namespace: Namespace,
    /// The fully qualified name, e.g. `<name>.<namespace>.svc.cluster.local`.
    pub hostname: Hostname,
    /// The virtual IPs; empty for a headless service.
    #[serde(default)]
    pub addresses: Vec<NetworkAddress>,
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Identities an upstream of this service may present besides its workload's own.
    #[serde(default)]
    pub subject_alt_names: Vec<Identity>,
    /// The waypoint all service-addressed traffic must pass through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<GatewayAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancing>,
}

/// One port of a service. A `target_port` of 0 is a named port, which each endpoint resolves through its
/// [`Workload::services`] mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    #[serde(default)]
    pub service_port: u16,
    #[serde(default)]
    pub target_port: u16,
    #[serde(default)]
    pub app_protocol: AppProtocol,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppProtocol {
    #[default]
    Unknown,
    Http11,
    Http2,
    Grpc,
    Tcp,
    Tls,
}

/// An IP address on a network (empty: the default network).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAddress {
    #[serde(default)]
    pub network: String,
    #[serde(deserialize_with = "text")]
    pub address: IpAddr,
}

/// A waypoint or gateway: where to send HBONE instead of the destination itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayAddress {
    pub destination: GatewayDestination,
    #[serde(default = "default_hbone_mtls_port")]
    pub hbone_mtls_port: u16,
}

/// The proto's `destination` oneof: a service by name (`"hostname": "<namespace>/<hostname>"`) or an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayDestination {
    Hostname(ServiceKey),
    Address(NetworkAddress),
}

/// How a service chooses among its endpoints when it does so itself (no waypoint).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancing {
    /// Scopes in order of preference; an endpoint's rank is how many leading scopes it shares with the client.
    #[serde(default)]
    pub routing_preference: Vec<LoadBalancingScope>,
    #[serde(default)]
    pub mode: LoadBalancingMode,
    #[serde(default)]
    pub health_policy: HealthPolicy,
}

/// What an endpoint must share with the client to rank higher. The proto's `UNSPECIFIED_SCOPE` is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoadBalancingScope {
    Region,
    Zone,
    Subzone,
    Node,
    Cluster,
    Network,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoadBalancingMode {
    /// No locality preference: every endpoint is a candidate.
    #[default]
    #[serde(rename = "UNSPECIFIED_MODE")]
    Unspecified,
    /// Only endpoints that match every scope.
    Strict,
    /// Prefer the endpoints that match the longest prefix of the scopes.
    Failover,
    /// No endpoint selection: connect to the original destination.
    Passthrough,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthPolicy {
    #[default]
    OnlyHealthy,
    /// Unhealthy endpoints are candidates too (`publishNotReadyAddresses`).
    AllowAll,
}

/// A workload's primary key: never empty.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkloadUid(String);

/// A Kubernetes namespace name, valid as the namespace of a SPIFFE identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

/// A Kubernetes service account name, valid in a SPIFFE identity. As in the proto, an empty value in the state
/// file means [`DEFAULT_SERVICE_ACCOUNT`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct ServiceAccount(String);

/// A service hostname: not empty, without `/` or whitespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hostname(String);

/// A service's primary key, written `<namespace>/<hostname>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceKey {
    pub namespace: Namespace,
    pub hostname: Hostname,
}

/// A name or address of the model that is not well formed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the uid must not be empty")]
    EmptyUid,
    #[error("{0:?} is not a namespace: use 1 to 253 lowercase letters, digits, '-' or '.'")]
    Namespace(String),
    #[error("{0:?} is not a service account: use 1 to 253 lowercase letters, digits, '-' or '.'")]
    ServiceAccount(String),
    #[error("{0:?} is not a hostname: use a non-empty name without '/' or whitespace")]
    Hostname(String),
    #[error("{0:?} is not a service key: use <namespace>/<hostname>")]
    ServiceKey(String),
    #[error("{0:?} is not a policy name: use <namespace>/<name>")]
    PolicyRef(String),
    #[error("{0:?} is not an IP address")]
    Ip(String),
}

// === impl Workload ===

impl Workload {
    /// A healthy workload with every other field at its default: no address, no tunnel, the default trust domain
    /// and service account, capacity 1.
    pub fn new(uid: WorkloadUid, namespace: Namespace) -> Self {
        Self {
            uid,
            name: String::new(),
            namespace,
            addresses: Vec::new(),
            network: String::new(),
            tunnel_protocol: TunnelProtocol::None,
            trust_domain: default_trust_domain(),
            service_account: ServiceAccount::default(),
            waypoint: None,
            node: String::new(),
            canonical_name: String::new(),
            canonical_revision: String::new(),
            workload_type: WorkloadType::Deployment,
            workload_name: String::new(),
            services: BTreeMap::new(),
            authorization_policies: Vec::new(),
            status: WorkloadStatus::Healthy,
            cluster_id: String::new(),
            locality: None,
            capacity: default_capacity(),
            labels: BTreeMap::new(),
        }
    }

    /// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
    pub fn identity(&self) -> Identity {
        let (namespace, account) = (self.namespace.as_str(), self.service_account.as_str());
        // Invariant: `Namespace` and `ServiceAccount` hold only values that `Identity::new` accepted as segments,
        // and it checks each segment on its own, whatever the trust domain.
        Identity::new(self.trust_domain.clone(), namespace, account)
            .expect("a workload's namespace and service account are valid identity segments")
    }

    /// This workload's port for `service_port` of `service`, as its [`Workload::services`] maps it (0: a named
    /// port left unresolved); `None` when it maps no such port.
    pub fn port_mapping(&self, service: &ServiceKey, service_port: u16) -> Option<u16> {
        let mappings = self.services.get(service)?;
        let mapping = mappings.iter().find(|m| m.service_port == service_port)?;
        Some(mapping.target_port)
    }

    /// Whether `ip` is one of the workload's addresses (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|a| a.to_canonical() == ip.to_canonical())
    }

    /// The locality, or the empty one when the workload has none (which matches only other empty localities, as
    /// in ztunnel).
    pub fn locality_or_empty(&self) -> &Locality {
        self.locality.as_ref().unwrap_or(&NO_LOCALITY)
    }
}

// === impl Service ===

impl Service {
    /// A service without addresses, ports or load-balancing preferences.
    pub fn new(name: &str, namespace: Namespace, hostname: Hostname) -> Self {
        Self {
            name: name.to_string(),
            namespace,
            hostname,
            addresses: Vec::new(),
            ports: Vec::new(),
            subject_alt_names: Vec::new(),
            waypoint: None,
            load_balancing: None,
        }
    }

    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            namespace: self.namespace.clone(),
            hostname: self.hostname.clone(),
        }
    }

    pub fn port(&self, service_port: u16) -> Option<&Port> {
        self.ports.iter().find(|p| p.service_port == service_port)
    }
}

// === impl WorkloadUid ===

impl WorkloadUid {
    pub fn new(uid: &str) -> Result<Self, NameError> {
        if uid.is_empty() {
            return Err(NameError::EmptyUid);
        }
        Ok(Self(uid.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkloadUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for WorkloadUid {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<WorkloadUid> for String {
    fn from(uid: WorkloadUid) -> String {
        uid.0
    }
}

// === impl Namespace ===

impl Namespace {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if !is_identity_segment(name) {
            return Err(NameError::Namespace(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Namespace {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<Namespace> for String {
    fn from(ns: Namespace) -> String {
        ns.0
    }
}

// === impl ServiceAccount ===

impl ServiceAccount {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if !is_identity_segment(name) {
            return Err(NameError::ServiceAccount(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ServiceAccount {
    fn default() -> Self {
        Self(DEFAULT_SERVICE_ACCOUNT.to_string())
    }
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ServiceAccount> for String {
    fn from(sa: ServiceAccount) -> String {
        sa.0
    }
}

impl<'de> Deserialize<'de> for ServiceAccount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if name.is_empty() {
            return Ok(Self::default());
        }
        Self::new(&name).map_err(de::Error::custom)
    }
}

// === impl Hostname ===

impl Hostname {
    pub fn new(name: &str) -> Result<Self, NameError> {
        let valid = !name.is_empty() && !name.contains('/') && !name.contains(char::is_whitespace);
        if !valid {
            return Err(NameError::Hostname(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Hostname {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<Hostname> for String {
    fn from(host: Hostname) -> String {
        host.0
    }
}

// === impl ServiceKey ===

impl ServiceKey {
    pub fn new(namespace: Namespace, hostname: Hostname) -> Self {
        Self { namespace, hostname }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.hostname)
    }
}

impl FromStr for ServiceKey {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || NameError::ServiceKey(s.to_string());
        let (namespace, hostname) = s.split_once('/').ok_or_else(invalid)?;
        let namespace = Namespace::new(namespace).map_err(|_| invalid())?;
        let hostname = Hostname::new(hostname).map_err(|_| invalid())?;
        Ok(Self { namespace, hostname })
    }
}

impl TryFrom<String> for ServiceKey {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ServiceKey> for String {
    fn from(key: ServiceKey) -> String {
        key.to_string()
    }
}

// === impl GatewayAddress ===

impl GatewayAddress {
    /// A waypoint or gateway named by its service, on the default HBONE port.
    pub fn hostname(service: ServiceKey) -> Self {
        Self {
            destination: GatewayDestination::Hostname(service),
            hbone_mtls_port: DEFAULT_HBONE_MTLS_PORT,
        }
    }
}

impl fmt::Display for GatewayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.destination {
            GatewayDestination::Hostname(key) => write!(f, "{key}:{}", self.hbone_mtls_port),
            GatewayDestination::Address(addr) => {
                let socket = SocketAddr::new(addr.address, self.hbone_mtls_port);
                write!(f, "{socket}")
            }
        }
    }
}

// === serde helpers ===

/// `TrustDomain::new(DEFAULT_TRUST_DOMAIN)`.
pub fn default_trust_domain() -> TrustDomain {
    // Invariant: the constant is lowercase letters and a dot, a valid trust domain; a test checks it.
    TrustDomain::new(DEFAULT_TRUST_DOMAIN).expect("the default trust domain is valid")
}

fn default_capacity() -> u32 {
    1
}

fn default_hbone_mtls_port() -> u16 {
    DEFAULT_HBONE_MTLS_PORT
}

/// Whether `Identity::new` accepts `name` as a namespace and as a service account (one rule for both).
fn is_identity_segment(name: &str) -> bool {
    Identity::new(default_trust_domain(), name, name).is_ok()
}

/// As in the proto, an empty trust domain means the default one.
fn trust_domain_or_default<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TrustDomain, D::Error> {
    let domain = String::deserialize(deserializer)?;
    if domain.is_empty() {
        return Ok(default_trust_domain());
    }
    TrustDomain::new(&domain).map_err(de::Error::custom)
}

/// A value the state file writes as a string, parsed with an error that quotes it.
trait ParseText: Sized {
    fn parse_text(text: &str) -> Result<Self, NameError>;
}

impl ParseText for IpAddr {
    fn parse_text(text: &str) -> Result<Self, NameError> {
        text.parse().map_err(|_| NameError::Ip(text.to_string()))
    }
}

impl ParseText for PolicyRef {
    fn parse_text(text: &str) -> Result<Self, NameError> {
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(PolicyRef::new(ns, name))
            }
            _ => Err(NameError::PolicyRef(text.to_string())),
        }
    }
}

/// Deserializes one [`ParseText`] value; a `Vec` of these keeps the element index in error paths.
struct Text<T>(T);

impl<'de, T: ParseText> Deserialize<'de> for Text<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        T::parse_text(&text).map(Text).map_err(de::Error::custom)
    }
}

fn text<'de, D: Deserializer<'de>, T: ParseText>(deserializer: D) -> Result<T, D::Error> {
    Text::deserialize(deserializer).map(|Text(value)| value)
}

fn text_list<'de, D: Deserializer<'de>, T: ParseText>(deserializer: D) -> Result<Vec<T>, D::Error> {
    let texts = Vec::<Text<T>>::deserialize(deserializer)?;
    Ok(texts.into_iter().map(|Text(value)| value).collect())
}

fn display_list<S: Serializer, T: fmt::Display>(values: &[T], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(values.iter().map(ToString::to_string))
}

#[cfg(test)]
mod tests;

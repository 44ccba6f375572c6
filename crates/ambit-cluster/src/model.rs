//! The validated description of a local cluster: what the manifest loader produces and everything else consumes.
//!
//! Every value here has already been checked: names are valid, addresses are allocated and inside their CIDRs,
//! ports are in range, references resolve. The runtime never re-validates.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The mesh's root namespace, as Istio's default: its AuthorizationPolicies and PeerAuthentications apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The whole cluster, as planned before anything is created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterPlan {
    /// The cluster's name, a DNS label. Names every host resource the cluster creates.
    pub name: String,
    /// DNS suffix of services, `cluster.local` by default.
    pub cluster_domain: String,
    /// The range node pod CIDRs are carved from (each node takes the next /24).
    pub pod_cidr: Ipv4Cidr,
    /// The range ClusterIPs come from.
    pub service_cidr: Ipv4Cidr,
    /// The fabric network that connects the nodes.
    pub node_cidr: Ipv4Cidr,
    /// The control plane's address: the first host address of `node_cidr`, held by the fabric bridge, where
    /// `ambit control` listens (port 15012) and every node reaches it directly.
    pub control_address: Ipv4Addr,
    /// The cluster DNS server's address (inside `service_cidr`, the tenth address, as kube-dns).
    pub dns_ip: Ipv4Addr,
    pub nodes: Vec<NodePlan>,
    pub namespaces: Vec<NamespacePlan>,
    pub service_accounts: Vec<ServiceAccountPlan>,
    pub pods: Vec<PodPlan>,
    pub services: Vec<ServicePlan>,
    /// Istio AuthorizationPolicies, each already checked to translate; namespace always set.
    #[serde(default)]
    pub authorization_policies: Vec<ambit_policy::istio::AuthorizationPolicy>,
    /// Istio PeerAuthentications in document order (their age), each already checked; namespace always set.
    #[serde(default)]
    pub peer_authentications: Vec<ambit_policy::istio::PeerAuthentication>,
    /// The Gateway API objects of the manifests, each already validated as the control plane validates them.
    #[serde(default)]
    pub gateway_api: GatewayApiObjects,
}

/// Gateway API objects (`gateway.networking.k8s.io`), each in document order with its namespace set. `cluster up`
/// seeds the control plane's config store with them; every Gateway of class `istio-waypoint` among them also has a
/// ServiceAccount, Pod and Service in the plan (its waypoint, as istiod's gateway controller would deploy it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayApiObjects {
    #[serde(default)]
    pub gateways: Vec<ambit_config::gateway::Gateway>,
    #[serde(default)]
    pub http_routes: Vec<ambit_config::gateway::HttpRoute>,
    #[serde(default)]
    pub grpc_routes: Vec<ambit_config::gateway::GrpcRoute>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub name: String,
    /// The node's address on the fabric bridge.
    pub address: Ipv4Addr,
    /// This node's pod range, a /24; its first host address is the node-side gateway for its pods.
    pub pod_cidr: Ipv4Cidr,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlan {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountPlan {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    /// A stable unique id (derived from cluster, namespace and name).
    pub uid: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub service_account: String,
    pub restart_policy: RestartPolicy,
    /// The Deployment that made this pod, if any.
    pub owner: Option<String>,
    pub containers: Vec<ContainerPlan>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// One container: a host process run inside the pod's network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPlan {
    pub name: String,
    /// `command` followed by `args`, with `$(VAR)` references already expanded from `env`.
    pub argv: Vec<String>,
    /// The container's `env` in order, values resolved (literal values and downward-API `fieldRef`s), followed by
    /// POD_NAME, POD_NAMESPACE, POD_IP, NODE_NAME and POD_SERVICE_ACCOUNT unless the container sets them itself.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub ports: Vec<ContainerPort>,
    pub readiness: Option<Probe>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// A readiness probe, run from the pod's node like the kubelet does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub timeout_seconds: u32,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeAction {
    /// A TCP connect to the pod IP on this port.
    Tcp { port: u16 },
    /// An HTTP/1.1 GET; 200..400 is success.
    Http { port: u16, path: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePlan {
    pub namespace: String,
    pub name: String,
    /// `None` for a headless service (`clusterIP: None`): DNS answers with the ready pod IPs.
    pub cluster_ip: Option<Ipv4Addr>,
    /// Empty selector means the service has no managed endpoints.
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    pub target: TargetPort,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetPort {
    Number(u16),
    /// A container port name, resolved per endpoint pod.
    Name(String),
}

/// An IPv4 network in CIDR form. The address is always the network address (host bits zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

// === impl PodPlan ===

impl PodPlan {
    /// Whether the pod matches a label selector (every selector pair present with the same value).
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        !selector.is_empty() && selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// The port a service's target port means on this pod, if the pod has it.
    pub fn resolve_target(&self, target: &TargetPort, protocol: Protocol) -> Option<u16> {
        match target {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => self
                .containers
                .iter()
                .flat_map(|c| c.ports.iter())
                .find(|p| p.name.as_deref() == Some(name.as_str()) && p.protocol == protocol)
                .map(|p| p.port),
        }
    }
}

// === impl ClusterPlan ===

impl ClusterPlan {
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodPlan> {
        self.pods.iter().find(|p| p.namespace == namespace && p.name == name)
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespacePlan> {
        self.namespaces.iter().find(|n| n.name == name)
    }
}

// === impl Protocol ===

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

// === impl Ipv4Cidr ===

impl Ipv4Cidr {
    /// Builds a CIDR, refusing host bits.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > 32 {
            return Err(CidrError::Prefix(prefix));
        }
        let mask = Self::mask_of(prefix);
        if u32::from(addr) & !mask != 0 {
            return Err(CidrError::HostBits(addr, prefix));
        }
        Ok(Self { network: addr, prefix })
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Number of addresses in the range.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & Self::mask_of(self.prefix) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The n-th address of the range (0 is the network address), if inside it.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.network) + n as u32))
    }

    /// The n-th subnet of the given (longer) prefix inside this range.
    pub fn subnet(&self, prefix: u8, n: u64) -> Option<Ipv4Cidr> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << (prefix - self.prefix);
        if n >= count {
            return None;
        }
        let start = u32::from(self.network) as u64 + n * (1u64 << (32 - prefix));
        Ipv4Cidr::new(Ipv4Addr::from(start as u32), prefix).ok()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| CidrError::Syntax(s.to_string()))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::Syntax(s.to_string()))?;
        let prefix: u8 = prefix.parse().map_err(|_| CidrError::Syntax(s.to_string()))?;
        Ipv4Cidr::new(addr, prefix)
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = CidrError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(c: Ipv4Cidr) -> String {
        c.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 CIDR such as 10.244.0.0/16")]
    Syntax(String),
    #[error("prefix length {0} is over 32")]
    Prefix(u8),
    #[error("{0}/{1} has host bits set; use the network address")]
    HostBits(Ipv4Addr, u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_arith() {
        let c: Ipv4Cidr = "10.244.0.0/16".parse().unwrap();
        assert_eq!(c.subnet(24, 1).unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(c.subnet(24, 256), None);
        assert!(c.contains("10.244.9.9".parse().unwrap()));
        assert!(!c.contains("10.245.0.1".parse().unwrap()));
        assert_eq!(c.nth(10).unwrap(), Ipv4Addr::new(10, 244, 0, 10));
        assert!(c.overlaps(&"10.244.3.0/24".parse().unwrap()));
        assert!(!c.overlaps(&"10.96.0.0/16".parse().unwrap()));
        assert!(matches!(
            "10.244.0.1/16".parse::<Ipv4Cidr>(),
            Err(CidrError::HostBits(..))
        ));
        assert!(matches!("10.244.0.0".parse::<Ipv4Cidr>(), Err(CidrError::Syntax(_))));
        assert!(matches!(
            "10.244.0.0/33".parse::<Ipv4Cidr>(),
            Err(CidrError::Prefix(33))
        ));
    }
}

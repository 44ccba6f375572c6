//! The control plane's configuration (`ambit control` flags).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ambit_identity::ca::CaConfig;
use ambit_types::TrustDomain;

use crate::ca::auth::PodPlacement;
use crate::translate::Settings;

/// Istio's port for the CA (and later xDS) over TLS.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 15012);
pub const DEFAULT_CA_DIR: &str = "/var/lib/ambit/ca";
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

#[derive(Clone, Debug)]
pub struct ControlConfig {
    pub listen: SocketAddr,
    /// The self-signed root (when no plug-in CA is given) and the ledger `issued.jsonl`.
    pub ca_dir: PathBuf,
    /// Istio `cacerts` layout of a plug-in intermediate CA; overrides the root in `ca_dir`.
    pub cacerts: Option<PathBuf>,
    pub trust_domain: TrustDomain,
    /// The longest validity a caller may ask for; `None` keeps the CA's default.
    pub max_ttl: Option<Duration>,
    /// JSON object of node name → bearer token.
    pub node_credentials: PathBuf,
    /// Where every pod runs and as whom (the node authorizer's index), e.g. from a cluster's `plan.json`.
    pub pods: Vec<PodPlacement>,
    /// The cluster source: a v1 `List` of the cluster's Namespaces, ServiceAccounts, Pods and Services (a local
    /// cluster's `objects.json`), followed as it is rewritten.
    pub objects_file: Option<PathBuf>,
    /// Where the applied config objects persist (a v1 `List`, rewritten on every change); none keeps them in memory.
    pub config_store: Option<PathBuf>,
    /// The config API's Unix socket (`ambit apply/delete/get/describe`).
    pub api_socket: Option<PathBuf>,
    /// The DNS suffix of Service hostnames, `cluster.local` by default.
    pub cluster_domain: String,
}

/// The cluster ID istiod uses by default; workload uids start with it.
pub const CLUSTER_ID: &str = "Kubernetes";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

impl ControlConfig {
    /// What translation needs to know about the mesh.
    pub fn translate_settings(&self) -> Settings {
        Settings {
            cluster_domain: self.cluster_domain.clone(),
            root_namespace: ambit_config::ROOT_NAMESPACE.to_string(),
            cluster_id: CLUSTER_ID.to_string(),
            trust_domain: self.trust_domain.clone(),
        }
    }

    /// The signing policy: the trust domain, the CA's default TTL (never above the maximum) and the configured maximum.
    pub fn ca_config(&self) -> CaConfig {
        let mut config = CaConfig::new(self.trust_domain.clone());
        if let Some(max) = self.max_ttl {
            config.max_ttl = max;
            config.default_ttl = config.default_ttl.min(max);
        }
        config
    }
}

//! Where a cluster lives on the host: the names of its network namespaces and the files of its runtime directory.
//! Every host resource a cluster creates is named from here, so `down` can find all of them from the name alone.

use std::path::{Path, PathBuf};

/// The directory holding one sub-directory per running cluster. `AMBIT_RUN_DIR` overrides it.
pub fn run_root() -> PathBuf {
    std::env::var_os("AMBIT_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/ambit"))
}

/// Where `ip netns exec` finds per-namespace files it bind-mounts over `/etc` (resolv.conf, hosts).
const ETC_NETNS: &str = "/etc/netns";

/// The component name of the control plane (`ambit control`), for [`Layout::component_log`].
pub const CONTROL_COMPONENT: &str = "control";

/// The component name of a node's proxy (`ambit node`), for [`Layout::component_log`]: `node.<node>`.
pub fn node_component(node: &str) -> String {
    format!("node.{node}")
}

/// The component name of a node's agent (`ambit agent`), for [`Layout::component_log`]: `agent.<node>`.
pub fn agent_component(node: &str) -> String {
    format!("agent.{node}")
}

/// The names and paths of one cluster's host resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    cluster: String,
    dir: PathBuf,
}

// === impl Layout ===

impl Layout {
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            dir: run_root().join(cluster),
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Prefix of every namespace of this cluster. Cluster names are DNS labels (no dots), so the prefix of one
    /// cluster is never the prefix of another's.
    pub fn prefix(&self) -> String {
        format!("ambit.{}.", self.cluster)
    }

    pub fn fabric_ns(&self) -> String {
        format!("{}fabric", self.prefix())
    }

    pub fn node_ns(&self, node: &str) -> String {
        format!("{}node.{node}", self.prefix())
    }

    pub fn pod_ns(&self, namespace: &str, pod: &str) -> String {
        format!("{}pod.{namespace}.{pod}", self.prefix())
    }

    /// The runtime directory of the cluster.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The validated plan the cluster was made from.
    pub fn plan_file(&self) -> PathBuf {
        self.dir.join("plan.json")
    }

    /// The supervisor's view of pods, containers and endpoints, rewritten on every change.
    pub fn status_file(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    /// The cluster's Kubernetes objects (a v1 `List` of Namespaces, ServiceAccounts, Pods with their status, and
    /// Services), rewritten atomically by the supervisor on every change: the control plane's cluster source.
    pub fn objects_file(&self) -> PathBuf {
        self.dir.join("objects.json")
    }

    /// The control plane's config store (a v1 `List` of the applied AuthorizationPolicies, PeerAuthentications and
    /// Gateway API objects), seeded by `cluster up` from the manifests and rewritten by the control plane on every
    /// `ambit apply` or `ambit delete`.
    pub fn config_store_file(&self) -> PathBuf {
        self.dir.join("config-store.json")
    }

    /// The control plane's API socket (`ambit apply/delete/get/describe`), mode 0600.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn supervisor_pid_file(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }

    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }

    /// Per-node credentials (`<node>.token`, mode 0600) with which a node proves itself to the control plane, and
    /// `node-credentials.json` mapping every node to its token, for the control plane.
    pub fn credentials_dir(&self) -> PathBuf {
        self.dir.join("credentials")
    }

    pub fn node_token_file(&self, node: &str) -> PathBuf {
        self.credentials_dir().join(format!("{node}.token"))
    }

    pub fn node_credentials_file(&self) -> PathBuf {
        self.credentials_dir().join("node-credentials.json")
    }

    /// The mesh CA: `root-cert.pem` (what node proxies trust), `ca-key.pem` (mode 0600) and the issuance ledger.
    /// Created by `cluster up` before anything runs; `ambit control` serves it.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// One sub-directory per node, holding what that node's proxy reads besides the mesh state.
    pub fn nodes_dir(&self) -> PathBuf {
        self.dir.join("nodes")
    }

    /// The node agent's ZDS socket (`nodes/<node>/zds.sock`), on which it hands the node proxy the enrolled pods.
    pub fn zds_socket(&self, node: &str) -> PathBuf {
        self.nodes_dir().join(node).join("zds.sock")
    }

    /// The prefix of the names of this cluster's pod network namespaces, where a node agent looks for its pods.
    pub fn pod_ns_prefix(&self) -> String {
        format!("{}pod.", self.prefix())
    }

    /// A request to upgrade a node's proxy (`nodes/<node>/upgrade.request`), written by `ambit node upgrade` for the
    /// supervisor, which takes it on SIGUSR1.
    pub fn upgrade_request(&self, node: &str) -> PathBuf {
        self.nodes_dir().join(node).join("upgrade.request")
    }

    /// The outcome of the last upgrade of a node's proxy (`nodes/<node>/upgrade.json`), written by the supervisor.
    pub fn upgrade_result(&self, node: &str) -> PathBuf {
        self.nodes_dir().join(node).join("upgrade.json")
    }

    /// Where the node-proxy instance started by the `instance`th upgrade says it is ready (`nodes/<node>/ready.<n>`):
    /// beside the old instance, the readiness port answers for either.
    pub fn node_ready_file(&self, node: &str, instance: u64) -> PathBuf {
        self.nodes_dir().join(node).join(format!("ready.{instance}"))
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Logs of the cluster's own components, apart from the pods' (`<ns>_<pod>_<container>.log`) so no pod's log
    /// name can collide with one.
    pub fn system_logs_dir(&self) -> PathBuf {
        self.logs_dir().join("system")
    }

    /// The log of a system component run by the supervisor: `logs/system/<name>.log`, where `name` is
    /// [`CONTROL_COMPONENT`] or [`node_component`]`(node)`.
    pub fn component_log(&self, name: &str) -> PathBuf {
        self.system_logs_dir().join(format!("{name}.log"))
    }

    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.logs_dir().join(format!("{namespace}_{pod}_{container}.log"))
    }

    /// A pod's scratch directory: its containers' HOME and default working directory.
    pub fn pod_home(&self, namespace: &str, pod: &str) -> PathBuf {
        self.dir.join("pods").join(format!("{namespace}_{pod}"))
    }

    /// The per-namespace `/etc` overrides of a pod (resolv.conf, hosts).
    pub fn etc_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        Path::new(ETC_NETNS).join(self.pod_ns(namespace, pod))
    }

    /// Every `/etc/netns` directory of this cluster, including leftovers of pods no longer in any plan.
    pub fn etc_dirs(&self) -> Vec<PathBuf> {
        let prefix = self.prefix();
        let Ok(entries) = std::fs::read_dir(ETC_NETNS) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }
}

/// The names of clusters that have a runtime directory or a namespace on this host.
pub fn clusters() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run_root())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for ns in ambit_netns::list("ambit.") {
        if let Some(name) = ns.split('.').nth(1) {
            names.push(name.to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_do_not_collide_across_clusters() {
        let a = Layout::new("demo");
        let b = Layout::new("demo-2");
        assert_eq!(a.pod_ns("default", "web"), "ambit.demo.pod.default.web");
        assert!(!b.node_ns("n1").starts_with(&a.prefix()));
        assert_eq!(a.fabric_ns(), "ambit.demo.fabric");
    }

    #[test]
    fn node_files_live_under_the_runtime_dir() {
        let a = Layout::new("demo");
        assert_eq!(a.zds_socket("n1"), a.dir().join("nodes/n1/zds.sock"));
        assert!(a.pod_ns("default", "web").starts_with(&a.pod_ns_prefix()));
        assert!(!a.node_ns("n1").starts_with(&a.pod_ns_prefix()));
        assert_eq!(a.ca_dir().join("root-cert.pem"), a.dir().join("ca/root-cert.pem"));
        assert_eq!(
            a.component_log(&node_component("n1")),
            a.dir().join("logs/system/node.n1.log")
        );
        assert_eq!(
            a.component_log(CONTROL_COMPONENT),
            a.dir().join("logs/system/control.log")
        );
    }
}

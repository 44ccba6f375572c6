//! `/config_dump` of the node proxy: the state it holds (workloads, services, policies), its certificates and its
//! pod proxies with their live inbound connections.

use serde_json::{Value, json};

use super::NodeContext;
use super::pods::PodManager;
use crate::admin::ConfigDump;

/// The sections of the node proxy's config dump.
pub struct NodeDump {
    node: String,
    context: NodeContext,
    pods: PodManager,
}

impl NodeDump {
    pub fn new(node: String, context: NodeContext, pods: PodManager) -> Self {
        Self { node, context, pods }
    }
}

impl ConfigDump for NodeDump {
    fn dump(&self) -> Value {
        let snapshot = std::sync::Arc::clone(&self.context.snapshot.borrow());
        let roots: Vec<String> = self
            .context
            .bundle
            .borrow()
            .to_pem()
            .split_inclusive("-----END CERTIFICATE-----\n")
            .map(str::to_owned)
            .collect();
        json!({
            "node": self.node,
            "stateVersion": snapshot.version(),
            "workloads": snapshot.workloads(),
            "services": snapshot.services(),
            "policies": snapshot.policies(),
            "certificates": self.context.certificates.dump(),
            "trustBundle": roots,
            "pods": self.pods.dump(),
        })
    }
}

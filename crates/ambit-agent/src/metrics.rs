//! The agent's metrics, registered under the `ambit_agent` prefix of the registry it is given: how many pods are
//! enrolled, how many checks ran, what they found and repaired, how many node proxies are connected.

use std::fmt;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::plan::Drift;

pub const PREFIX: &str = "ambit_agent";

/// Every metric family of the agent.
#[derive(Debug, Clone, Default)]
pub struct AgentMetrics {
    /// `ambit_agent_enrolled_pods`: pods with capture, proxy and annotation in place.
    pub enrolled_pods: Gauge,
    /// `ambit_agent_capture_repairs_total{reason}`: drift found and repaired.
    pub capture_repairs: Family<RepairLabels, Counter>,
    /// `ambit_agent_capture_checks_total`: pods checked (rules, and listeners where due).
    pub capture_checks: Counter,
    /// `ambit_agent_zds_connections`: node proxies connected over ZDS.
    pub zds_connections: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    pub reason: RepairReason,
}

/// What was repaired: one per [`Drift`] kind.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RepairReason {
    /// Capture's rules drifted; reinstalled.
    Rules,
    /// The proxy's in-pod listeners were missing; the pod was handed to the proxy again.
    Listeners,
    /// The pod's namespace changed; capture installed in the new one and the pod handed again.
    Netns,
}

// === impl AgentMetrics ===

impl AgentMetrics {
    /// Creates the families and registers them in `registry` under [`PREFIX`].
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = AgentMetrics::default();
        let r = registry.sub_registry_with_prefix(PREFIX);
        r.register(
            "enrolled_pods",
            "Pods with capture, node proxy and redirection annotation in place",
            metrics.enrolled_pods.clone(),
        );
        r.register(
            "capture_repairs",
            "Drift found in an enrolled pod's capture or proxy listeners, and repaired",
            metrics.capture_repairs.clone(),
        );
        r.register(
            "capture_checks",
            "Checks of an enrolled pod's capture rules (and proxy listeners, once acked)",
            metrics.capture_checks.clone(),
        );
        r.register(
            "zds_connections",
            "Node proxies connected over ZDS",
            metrics.zds_connections.clone(),
        );
        // Every reason shows from the start, at 0, so a rate over it is defined before the first repair.
        for reason in [RepairReason::Rules, RepairReason::Listeners, RepairReason::Netns] {
            let _ = metrics.capture_repairs.get_or_create(&RepairLabels { reason });
        }
        metrics
    }

    /// Counts one repair of `drift`.
    pub fn repaired(&self, drift: &Drift) {
        let reason = RepairReason::of(drift);
        self.capture_repairs.get_or_create(&RepairLabels { reason }).inc();
    }
}

// === impl RepairReason ===

impl RepairReason {
    pub fn of(drift: &Drift) -> Self {
        match drift {
            Drift::Rules(_) => RepairReason::Rules,
            Drift::Listeners(_) => RepairReason::Listeners,
            Drift::Netns => RepairReason::Netns,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RepairReason::Rules => "rules",
            RepairReason::Listeners => "listeners",
            RepairReason::Netns => "netns",
        }
    }
}

impl fmt::Display for RepairReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for RepairReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_as_the_contract_says() {
        let mut registry = Registry::default();
        let metrics = AgentMetrics::register(&mut registry);
        metrics.enrolled_pods.set(2);
        metrics.capture_checks.inc();
        metrics.zds_connections.set(1);
        metrics.repaired(&Drift::Listeners(vec![15001]));
        metrics.repaired(&Drift::Rules(vec![]));
        metrics.repaired(&Drift::Rules(vec![]));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "ambit_agent_enrolled_pods 2",
            "ambit_agent_capture_checks_total 1",
            "ambit_agent_zds_connections 1",
            "ambit_agent_capture_repairs_total{reason=\"listeners\"} 1",
            "ambit_agent_capture_repairs_total{reason=\"rules\"} 2",
            "ambit_agent_capture_repairs_total{reason=\"netns\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }
}

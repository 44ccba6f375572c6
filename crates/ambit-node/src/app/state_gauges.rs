//! How much mesh state the node proxy holds: workloads, services and authorization policies, as gauges on
//! `/metrics`, kept in step with the state snapshot. An operator sees from them whether the proxy has the mesh (and
//! how big it is) without a config dump, and the benchmark waits on them before it reads the proxy's memory.

use std::sync::Arc;

use ambit_telemetry::prometheus_client::metrics::gauge::Gauge;
use ambit_telemetry::prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::state::Snapshot;

/// The gauges of the state's size.
#[derive(Clone, Default)]
pub struct StateGauges {
    workloads: Gauge,
    services: Gauge,
    policies: Gauge,
}

impl StateGauges {
    pub fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        registry.register(
            "ambit_state_workloads",
            "Workloads in the node proxy's mesh state",
            gauges.workloads.clone(),
        );
        registry.register(
            "ambit_state_services",
            "Services in the node proxy's mesh state",
            gauges.services.clone(),
        );
        registry.register(
            "ambit_state_policies",
            "Authorization policies in the node proxy's mesh state",
            gauges.policies.clone(),
        );
        gauges
    }

    /// Sets the gauges from `snapshot`.
    pub fn set(&self, snapshot: &Snapshot) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.workloads.set(count(snapshot.workloads().len()));
        self.services.set(count(snapshot.services().len()));
        self.policies.set(count(snapshot.policies().len()));
    }

    /// Keeps the gauges in step with the snapshots `snapshots` sees, until its sender is gone.
    pub async fn follow(self, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
        loop {
            let snapshot = Arc::clone(&snapshots.borrow_and_update());
            self.set(&snapshot);
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ambit_telemetry::prometheus_client::encoding::text::encode;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn gauges_follow_the_snapshot() {
        let mut registry = Registry::default();
        let gauges = StateGauges::register(&mut registry);
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let task = tokio::spawn(gauges.follow(rx));
        tokio::task::yield_now().await;
        let text = scrape(&registry);
        assert!(text.contains("ambit_state_workloads 0\n"), "{text}");

        use crate::state::fixtures::{endpoint, pod, service, snapshot};
        let workloads = vec![
            endpoint(pod("a", "10.0.0.1"), "web", &[(80, 8080)]),
            endpoint(pod("b", "10.0.0.2"), "web", &[(80, 8080)]),
            pod("c", "10.0.0.3"),
        ];
        let state = snapshot(workloads, vec![service("web", "10.96.0.1", &[(80, 8080)])]);
        let (workloads, services) = (3, 1);
        tx.send(Arc::new(state)).unwrap();
        for _ in 0..100 {
            if scrape(&registry).contains(&format!("ambit_state_workloads {workloads}\n")) {
                break;
            }
            tokio::task::yield_now().await;
        }
        let text = scrape(&registry);
        assert!(text.contains(&format!("ambit_state_workloads {workloads}\n")), "{text}");
        assert!(text.contains(&format!("ambit_state_services {services}\n")), "{text}");
        drop(tx);
        task.await.unwrap();
    }
}

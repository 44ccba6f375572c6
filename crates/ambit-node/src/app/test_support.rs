//! A node proxy's shared parts for the app tests: the mesh state as a watch the test can rewrite, certificates
//! issued by a real CA held in a temporary directory, and pod managers that listen on free ports (0) so that pods
//! served in the test's own network namespace never collide with each other or with a real node proxy.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ambit_identity::ca::{CaConfig, CertificateAuthority};
use ambit_identity::manager::{
    CertificateManager, CertificateSource, FetchError, FetchFuture, ManagerConfig, SystemClock,
};
use ambit_telemetry::Metrics;
use ambit_telemetry::prometheus_client::registry::Registry;
use ambit_types::{Identity, TrustDomain};
use tokio::sync::watch;

use super::NodeContext;
use super::pods::{ListenerPorts, ManagerMetrics, PodManager};
use crate::state::{Snapshot, Workload};

/// How long a test waits for something that should happen at once.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Free ports for every listener.
pub(crate) const FREE_PORTS: ListenerPorts = ListenerPorts {
    outbound: 0,
    plaintext: 0,
    hbone: 0,
};

/// The test's own network namespace, which the test may hand to a pod proxy.
pub(crate) const OWN_NETNS: &str = "/proc/self/ns/net";

/// Issues every certificate asked for at once.
struct CaSource(CertificateAuthority);

impl CertificateSource for CaSource {
    fn fetch(&self, identity: Identity) -> FetchFuture<'_> {
        Box::pin(async move {
            self.0
                .issue(&identity, None, SystemTime::now())
                .map_err(|error| FetchError(error.to_string()))
        })
    }
}

/// The shared parts of a node proxy under test.
pub(crate) struct TestNode {
    _dir: tempfile::TempDir,
    pub(crate) context: NodeContext,
    pub(crate) registry: Registry,
    metrics: ManagerMetrics,
    /// Kept open: a pod proxy waiting for its workload stops when the state can no longer change.
    _snapshot: watch::Sender<Arc<Snapshot>>,
}

impl TestNode {
    /// A node whose mesh state holds `workloads`; removed pods drain for 100 ms. Call within a runtime.
    pub(crate) fn new(workloads: Vec<Workload>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let td = TrustDomain::new("cluster.local").unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), CaConfig::new(td), SystemTime::now()).unwrap();
        let bundle = ca.trust_bundle();
        let certificates =
            CertificateManager::new(Arc::new(CaSource(ca)), Arc::new(SystemClock), ManagerConfig::default());
        let snapshot = Snapshot::new(1, workloads, Vec::new(), Vec::new()).unwrap();
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(snapshot));
        let (_, bundle) = watch::channel(bundle);
        let mut registry = Registry::default();
        let context = NodeContext {
            snapshot,
            certificates,
            bundle,
            metrics: Metrics::new(&mut registry),
            root_namespace: "istio-system".into(),
            drain_grace: Duration::from_millis(100),
            lookups: None,
        };
        let metrics = ManagerMetrics::register(&mut registry);
        Self {
            _dir: dir,
            context,
            registry,
            metrics,
            _snapshot: snapshot_tx,
        }
    }

    /// A pod manager on `ports`, counting into this node's registry.
    pub(crate) fn manager(&self, ports: ListenerPorts) -> PodManager {
        PodManager::new(self.context.clone(), self.metrics.clone(), ports)
    }

    /// The value of the counter or gauge `name` (no labels), 0 if absent.
    pub(crate) fn metric(&self, name: &str) -> u64 {
        let text = ambit_telemetry::encode(&self.registry).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }
}

/// Polls `condition` until it holds, failing the test after [`WAIT`].
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! Placing pods on nodes and handing out pod IPs.
//!
//! In document order, a pod goes to its `spec.nodeName` if set; otherwise to the node with the fewest pods of
//! the same owner (its Deployment; bare pods count as one owner), ties broken by the fewest pods overall, then by
//! node order. So the replicas of a Deployment spread evenly. On its node, a pod gets the next address of the
//! node's /24 from `.2` on (`.1` is the node's gateway), at most 250 pods per node.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::model::NodePlan;

use super::Report;
use super::cluster::Cluster;
use super::workload::PodSource;

/// The most pods a node runs: addresses .2 to .251 of its /24.
pub(super) const MAX_PODS_PER_NODE: u64 = 250;

/// Where a pod runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Placement {
    pub node: String,
    pub host_ip: Ipv4Addr,
    pub ip: Ipv4Addr,
}

/// Places pods one after the other.
struct Scheduler<'a> {
    cluster: &'a Cluster,
    /// Pods per node (by node index).
    total: Vec<u64>,
    /// Pods per node of each owner (namespace, Deployment); None for bare pods.
    by_owner: HashMap<Option<(String, String)>, Vec<u64>>,
}

/// Places every pod (None where a node is full, which is reported), in the order of `pods`.
pub(super) fn place(cluster: &Cluster, pods: &[PodSource<'_>], report: &mut Report) -> Vec<Option<Placement>> {
    let mut scheduler = Scheduler::new(cluster);
    let mut place = |pod| scheduler.place(pod, report);
    pods.iter().map(&mut place).collect()
}

/// The owner key of a pod: its Deployment, or None for bare pods.
fn owner(pod: &PodSource<'_>) -> Option<(String, String)> {
    let deployment = pod.owner.clone()?;
    Some((pod.meta.namespace.clone(), deployment))
}

// === impl Scheduler ===

impl<'a> Scheduler<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        let (total, by_owner) = (vec![0; cluster.nodes.len()], HashMap::new());
        Self {
            cluster,
            total,
            by_owner,
        }
    }

    fn place(&mut self, pod: &PodSource<'_>, report: &mut Report) -> Option<Placement> {
        let index = match &pod.spec.node_name {
            Some(name) => self.cluster.node_index(name)?,
            None => self.least_loaded(pod)?,
        };
        let count = self.add(pod, index);
        let node = self.cluster.nodes.get(index)?;
        if count > MAX_PODS_PER_NODE {
            return full(node, count, pod, report);
        }
        Placement::on(node, count)
    }

    /// The node with the fewest pods of the pod's owner, then the fewest pods, then the first.
    fn least_loaded(&self, pod: &PodSource<'_>) -> Option<usize> {
        let owned = self.by_owner.get(&owner(pod));
        // Every count vector has one entry per node, so node indices are in bounds.
        let owned = |index: usize| owned.map_or(0, |counts| counts[index]);
        let load = |&index: &usize| (owned(index), self.total[index], index);
        (0..self.total.len()).min_by_key(load)
    }

    /// Counts the pod on node `index` (a valid node index); returns the node's pod count.
    fn add(&mut self, pod: &PodSource<'_>, index: usize) -> u64 {
        // Every count vector has one entry per node, and `index` is a node's index.
        let nodes = self.total.len();
        let owned = self.by_owner.entry(owner(pod));
        owned.or_insert_with(|| vec![0; nodes])[index] += 1;
        self.total[index] += 1;
        self.total[index]
    }
}

/// A pod that does not fit on its node; reported once, on the first such pod.
fn full(node: &NodePlan, count: u64, pod: &PodSource<'_>, report: &mut Report) -> Option<Placement> {
    if count == MAX_PODS_PER_NODE + 1 {
        let message = format!("node {} is full: at most {MAX_PODS_PER_NODE} pods per node", node.name);
        report.scope(pod.origin).error("", message);
    }
    None
}

// === impl Placement ===

impl Placement {
    /// The `count`-th pod of `node`: the node's /24 from `.2` on.
    fn on(node: &NodePlan, count: u64) -> Option<Self> {
        let ip = node.pod_cidr.nth(1 + count)?;
        let (host_ip, node) = (node.address, node.name.clone());
        Some(Self { node, host_ip, ip })
    }
}

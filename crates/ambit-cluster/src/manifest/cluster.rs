//! The `Cluster` document (`ambit.dev/v1alpha1`): ambit's own, so strict (unknown fields are errors).
//!
//! Node `i` (0-based) gets the `(i+1)`-th /24 of `podCIDR` (the first /24 is never used) and the `(i+2)`-th
//! address of `nodeCIDR` (`.0` is the network, `.1` is the control plane's address on the fabric bridge). The DNS
//! server takes the tenth address of `serviceCIDR`.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::model::{Ipv4Cidr, NodePlan};

use super::document::Doc;
use super::syntax;
use super::{Labels, Report, Scope};

const DEFAULT_DOMAIN: &str = "cluster.local";
/// The longest cluster name: it prefixes the names of host resources (interfaces, namespaces).
const MAX_CLUSTER_NAME: usize = 20;
/// podCIDR: at least a /23, for the unused first /24 and one per node.
const POD_RANGE: Range = Range::new("spec.podCIDR", "10.244.0.0/16", 23);
const SERVICE_RANGE: Range = Range::new("spec.serviceCIDR", "10.96.0.0/16", 28);
const NODE_RANGE: Range = Range::new("spec.nodeCIDR", "172.31.0.0/24", 29);
/// The offset of the DNS server's address in serviceCIDR.
const DNS_OFFSET: u64 = 10;
/// The offset of the control plane's address in nodeCIDR (the fabric bridge holds it).
const CONTROL_OFFSET: u64 = 1;

const ONE_CLUSTER: &str = "there must be exactly one";
pub(super) const NO_CLUSTER: &str =
    "no Cluster document (kind: Cluster, apiVersion: ambit.dev/v1alpha1) among the manifests";

/// The `Cluster` document as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterDoc {
    #[serde(default)]
    metadata: ClusterMeta,
    #[serde(default)]
    spec: ClusterSpecDoc,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterMeta {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClusterSpecDoc {
    nodes: Option<Vec<NodeDoc>>,
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(rename = "serviceCIDR")]
    service_cidr: Option<String>,
    #[serde(rename = "nodeCIDR")]
    node_cidr: Option<String>,
    cluster_domain: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDoc {
    name: Option<String>,
    labels: Option<Labels>,
}

/// A valid cluster, with node addresses allocated.
#[derive(Clone, Debug)]
pub(super) struct Cluster {
    pub name: String,
    pub domain: String,
    pub pod_cidr: Ipv4Cidr,
    pub service_cidr: Ipv4Cidr,
    pub node_cidr: Ipv4Cidr,
    pub control_address: Ipv4Addr,
    pub dns_ip: Ipv4Addr,
    pub nodes: Vec<NodePlan>,
}

/// What other objects are checked against; as much as is known even when the Cluster document has errors.
#[derive(Debug, Default)]
pub(super) struct ClusterFacts {
    /// The valid node names; None without a usable Cluster document (node references are then not checked).
    pub nodes: Option<Vec<String>>,
    /// None when unknown (then ClusterIPs are not checked against it).
    pub service_cidr: Option<Ipv4Cidr>,
    /// Some only when the Cluster document is entirely valid.
    pub cluster: Option<Cluster>,
}

/// One of the three ranges: its field, default and longest prefix.
struct Range {
    field: &'static str,
    default: &'static str,
    max_prefix: u8,
}

/// The three ranges, each None if invalid.
struct Cidrs {
    pod: Option<Ipv4Cidr>,
    service: Option<Ipv4Cidr>,
    node: Option<Ipv4Cidr>,
}

/// A valid node: name and labels.
type Node = (String, Labels);

/// Checks that there is exactly one Cluster document, and checks it.
pub(super) fn check(docs: &[Doc<Option<ClusterDoc>>], report: &mut Report) -> ClusterFacts {
    let Some((first, extra)) = docs.split_first() else {
        report.global(NO_CLUSTER);
        return ClusterFacts::default();
    };
    let location = first.origin.location();
    let message = format!("a second Cluster document (the first is in {location}); {ONE_CLUSTER}");
    for doc in extra {
        report.scope(&doc.origin).error("", message.clone());
    }
    let Some(doc) = &first.value else {
        return ClusterFacts::default();
    };
    check_doc(doc, &mut report.scope(&first.origin))
}

fn check_doc(doc: &ClusterDoc, scope: &mut Scope<'_>) -> ClusterFacts {
    let (spec, before) = (&doc.spec, scope.errors());
    let name = check_name(doc.metadata.name.as_deref(), scope);
    let nodes = check_nodes(spec.nodes.as_deref().unwrap_or_default(), scope);
    let cidrs = check_cidrs(spec, spec.nodes.as_ref().map_or(0, Vec::len), scope);
    let domain = check_domain(spec.cluster_domain.as_deref(), scope);
    let valid = scope.errors() == before;
    let cluster = valid.then(|| Cluster::new(name?, domain?, &cidrs, &nodes));
    let nodes = nodes.into_iter().map(|(name, _)| name).collect();
    ClusterFacts::new(nodes, cidrs.service, cluster.flatten())
}

fn check_name(name: Option<&str>, scope: &mut Scope<'_>) -> Option<String> {
    let Some(name) = name else {
        return scope.fail(
            "metadata.name",
            "required: the cluster's name prefixes its host resources",
        );
    };
    let valid = scope.valid("metadata.name", name, "cluster name", cluster_name);
    valid.then(|| name.to_string())
}

/// A DNS label short enough to prefix host resource names.
fn cluster_name(name: &str) -> Result<(), String> {
    syntax::dns_label(name)?;
    match name.len() <= MAX_CLUSTER_NAME {
        true => Ok(()),
        false => Err(format!(
            "must be at most {MAX_CLUSTER_NAME} characters: it prefixes host resource names"
        )),
    }
}

/// The valid nodes, in order.
fn check_nodes(nodes: &[NodeDoc], scope: &mut Scope<'_>) -> Vec<Node> {
    if nodes.is_empty() {
        scope.error("spec.nodes", "at least one node is required");
    }
    let names = nodes
        .iter()
        .zip(0..)
        .filter_map(|(node, index)| Some((format!("spec.nodes[{index}].name"), node.name.as_deref()?)));
    scope.unique(names, "node name");
    let mut check = |(node, index)| check_node(node, &mut scope.at(format_args!("spec.nodes[{index}]")));
    nodes.iter().zip(0..).filter_map(&mut check).collect()
}

fn check_node(node: &NodeDoc, scope: &mut Scope<'_>) -> Option<Node> {
    let labels = node.labels.clone().unwrap_or_default();
    syntax::check_labels(&labels, "labels", scope);
    let Some(name) = &node.name else {
        return scope.fail("name", "required");
    };
    let valid = scope.valid("name", name, "node name", syntax::dns_label);
    valid.then(|| (name.clone(), labels))
}

fn check_cidrs(spec: &ClusterSpecDoc, nodes: usize, scope: &mut Scope<'_>) -> Cidrs {
    let pod = POD_RANGE.check(spec.pod_cidr.as_deref(), scope);
    let pod = pod.filter(|cidr| check_room(POD_RANGE.field, pod_room(*cidr), nodes, scope));
    let service = SERVICE_RANGE.check(spec.service_cidr.as_deref(), scope);
    let node = NODE_RANGE.check(spec.node_cidr.as_deref(), scope);
    let node = node.filter(|cidr| check_room(NODE_RANGE.field, node_room(*cidr), nodes, scope));
    let cidrs = Cidrs { pod, service, node };
    check_overlaps(&cidrs, scope);
    cidrs
}

/// Node `i` takes /24 number `i + 1`; the first /24 is not used.
fn pod_room(cidr: Ipv4Cidr) -> (u64, String) {
    let room = (1u64 << (24 - cidr.prefix())) - 1;
    (
        room,
        format!("{cidr} has room for {room} nodes (a /24 each, the first /24 unused)"),
    )
}

/// Node `i` takes address `i + 2`; the network address, `.1` (the control plane's) and the broadcast address are
/// not nodes'.
fn node_room(cidr: Ipv4Cidr) -> (u64, String) {
    let room = cidr.size() - 3;
    (
        room,
        format!("{cidr} has room for {room} nodes (from its third address on)"),
    )
}

/// Whether `nodes` fit in the `room` a range has; if not, reports its description and the node count.
fn check_room(field: &str, (room, what): (u64, String), nodes: usize, scope: &mut Scope<'_>) -> bool {
    let fits = u64::try_from(nodes).is_ok_and(|nodes| nodes <= room);
    if !fits {
        scope.error(field, format!("{what}, but there are {nodes} nodes"));
    }
    fits
}

/// The three ranges must be disjoint; the error goes on the later field.
fn check_overlaps(cidrs: &Cidrs, scope: &mut Scope<'_>) {
    let pod = (POD_RANGE.field, cidrs.pod);
    let service = (SERVICE_RANGE.field, cidrs.service);
    let node = (NODE_RANGE.field, cidrs.node);
    for (earlier, later) in [(pod, service), (pod, node), (service, node)] {
        if let ((earlier, Some(a)), (later, Some(b))) = (earlier, later)
            && a.overlaps(&b)
        {
            scope.error(later, format!("CIDR overlap: {earlier} {a} overlaps {later} {b}"));
        }
    }
}

fn check_domain(domain: Option<&str>, scope: &mut Scope<'_>) -> Option<String> {
    let domain = domain.unwrap_or(DEFAULT_DOMAIN);
    let field = "spec.clusterDomain";
    let valid = scope.valid(field, domain, "cluster domain", syntax::dns_name);
    valid.then(|| domain.to_string())
}

// === impl Range ===

impl Range {
    const fn new(field: &'static str, default: &'static str, max_prefix: u8) -> Self {
        Self {
            field,
            default,
            max_prefix,
        }
    }

    /// Parses the range (or the default) and checks its size.
    fn check(&self, value: Option<&str>, scope: &mut Scope<'_>) -> Option<Ipv4Cidr> {
        let cidr: Ipv4Cidr = match value.unwrap_or(self.default).parse() {
            Ok(cidr) => cidr,
            Err(error) => return scope.fail(self.field, error.to_string()),
        };
        if cidr.prefix() > self.max_prefix {
            let message = format!(
                "{cidr} is too small: the prefix length must be at most /{}",
                self.max_prefix
            );
            return scope.fail(self.field, message);
        }
        Some(cidr)
    }
}

// === impl ClusterFacts ===

impl ClusterFacts {
    fn new(nodes: Vec<String>, service_cidr: Option<Ipv4Cidr>, cluster: Option<Cluster>) -> Self {
        let nodes = Some(nodes);
        Self {
            nodes,
            service_cidr,
            cluster,
        }
    }
}

// === impl Cluster ===

impl Cluster {
    /// Allocates node addresses; None if a range is invalid, or does not fit the nodes (which the checks rule out).
    fn new(name: String, domain: String, cidrs: &Cidrs, nodes: &[Node]) -> Option<Self> {
        let (pod_cidr, service_cidr, node_cidr) = (cidrs.pod?, cidrs.service?, cidrs.node?);
        let nodes = node_plans(nodes, pod_cidr, node_cidr)?;
        let dns_ip = service_cidr.nth(DNS_OFFSET)?;
        let control_address = node_cidr.nth(CONTROL_OFFSET)?;
        Some(Self {
            name,
            domain,
            pod_cidr,
            service_cidr,
            node_cidr,
            control_address,
            dns_ip,
            nodes,
        })
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }
}

/// Node `i` gets /24 number `i + 1` of `pod_cidr` and address `i + 2` of `node_cidr`.
fn node_plans(nodes: &[Node], pod_cidr: Ipv4Cidr, node_cidr: Ipv4Cidr) -> Option<Vec<NodePlan>> {
    let plan = |(index, (name, labels)): (u64, &Node)| {
        let address = node_cidr.nth(index + 2)?;
        let pod_cidr = pod_cidr.subnet(24, index + 1)?;
        let (name, labels) = (name.clone(), labels.clone());
        Some(NodePlan {
            name,
            address,
            pod_cidr,
            labels,
        })
    };
    (0..).zip(nodes).map(plan).collect()
}

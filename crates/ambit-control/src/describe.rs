//! `describe pod`: one pod as the mesh sees it (its workload, services, waypoint and every policy that applies to
//! it) and the verdict its node proxy would give one sample connection. The policies are selected and evaluated
//! exactly as the node proxy does (`policies_for`, `ambit_policy::evaluate`), so the description cannot disagree
//! with the proxy.
//!
//! The state is one [`crate::translate::translate`] made: it publishes a root-namespace policy without a selector as
//! GLOBAL, so no namespace needs the node proxy's root-namespace rule here (a NAMESPACE policy of the root namespace,
//! which translation never makes, would apply to that namespace only).
//!
//! The sample peer always connects over mTLS: it has an identity (by default `spiffe://<td>/ns/<namespace>/sa/default`,
//! a neighbour in the pod's namespace). A plaintext peer is not modelled. Its source address is that of a workload
//! with the peer's identity when the state has one, else the unspecified address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ambit_node::state::model::{TunnelProtocol, Workload, WorkloadStatus};
use ambit_node::state::source::StateFile;
use ambit_policy::{Action, Authorization, ConnInfo, Scope, applicable, evaluate};
use ambit_types::{Identity, TrustDomain};
use serde::{Deserialize, Serialize};

/// The sample port when the pod is no endpoint of a service.
pub const DEFAULT_SAMPLE_PORT: u16 = 80;
/// The service account of the default sample peer.
const DEFAULT_PEER_ACCOUNT: &str = "default";
/// The root namespace given to the node proxy's selection: none, as translation already made root-namespace policies
/// GLOBAL (see the module docs). No policy has an empty namespace.
const NO_ROOT_NAMESPACE: &str = "";

/// A pod as the mesh sees it, and the verdict on one sample connection to it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodDescription {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pod's SPIFFE ID.
    pub identity: String,
    pub node: String,
    pub addresses: Vec<IpAddr>,
    /// Whether peers reach the pod over HBONE (its capture is in place) rather than plaintext.
    pub enrolled: bool,
    pub healthy: bool,
    /// The waypoint for traffic addressed to the pod, `<namespace>/<hostname>:<port>`.
    pub waypoint: Option<String>,
    /// Hostnames of the services that select the pod.
    pub services: Vec<String>,
    /// Every policy that applies to the pod, in evaluation order: enforced DENY policies, enforced ALLOW policies,
    /// then dry-run policies (reported only).
    pub policies: Vec<PolicySummary>,
    pub sample: SampleVerdict,
}

/// One policy that applies to a described pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PolicySummary {
    pub name: String,
    pub namespace: String,
    pub scope: Scope,
    pub action: Action,
    /// A dry-run policy never changes the verdict.
    pub dry_run: bool,
    /// Whether the policy matches the sample connection.
    pub matches: bool,
}

/// The decision on the sample connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SampleVerdict {
    /// The peer's SPIFFE ID.
    pub peer: String,
    /// The pod's port the peer connects to.
    pub port: u16,
    pub allowed: bool,
    /// Which policy and rule decided, in words.
    pub reason: String,
}

/// Describes pod `namespace/name` of `state`, with the verdict its node proxy would give `peer` (default: the
/// `default` service account of the pod's namespace) connecting over mTLS to `port` (default: the pod's first
/// service target port, else 80). `None` when the state has no such pod.
pub fn describe_pod(
    state: &StateFile,
    trust_domain: &TrustDomain,
    namespace: &str,
    name: &str,
    peer: Option<&Identity>,
    port: Option<u16>,
) -> Option<PodDescription> {
    let workload = (state.workloads.iter()).find(|w| w.namespace.as_str() == namespace && w.name == name)?;
    let peer = peer.cloned().unwrap_or_else(|| default_peer(trust_domain, workload));
    let port = port.unwrap_or_else(|| sample_port(workload));
    let policies = applicable(
        &state.policies,
        namespace,
        &workload.authorization_policies,
        NO_ROOT_NAMESPACE,
    );
    let conn = sample_connection(state, workload, &peer, port);
    let decision = evaluate(&policies, &conn);
    Some(PodDescription {
        name: workload.name.clone(),
        namespace: namespace.to_string(),
        uid: workload.uid.to_string(),
        identity: identity(trust_domain, workload).to_string(),
        node: workload.node.clone(),
        addresses: workload.addresses.clone(),
        enrolled: workload.tunnel_protocol == TunnelProtocol::Hbone,
        healthy: workload.status == WorkloadStatus::Healthy,
        waypoint: workload.waypoint.as_ref().map(ToString::to_string),
        services: workload.services.keys().map(|key| key.hostname.to_string()).collect(),
        policies: summaries(&policies, &conn),
        sample: SampleVerdict {
            peer: peer.to_string(),
            port,
            allowed: decision.is_allowed(),
            reason: decision.to_string(),
        },
    })
}

/// The workload's identity in `trust_domain`, the one its certificate carries.
fn identity(trust_domain: &TrustDomain, workload: &Workload) -> Identity {
    let (namespace, account) = (workload.namespace.as_str(), workload.service_account.as_str());
    // Invariant: a workload's namespace and service account are valid identity segments (the model checks them
    // when they are made), whatever the trust domain.
    Identity::new(trust_domain.clone(), namespace, account).expect("a workload's names are valid identity segments")
}

/// `spiffe://<td>/ns/<the pod's namespace>/sa/default`.
fn default_peer(trust_domain: &TrustDomain, workload: &Workload) -> Identity {
    // Invariant: the namespace is a valid segment (see `identity`), and so is `default`.
    Identity::new(trust_domain.clone(), workload.namespace.as_str(), DEFAULT_PEER_ACCOUNT)
        .expect("a workload's namespace and `default` are valid identity segments")
}

/// The target port of the workload's first service port (services in key order), else [`DEFAULT_SAMPLE_PORT`].
fn sample_port(workload: &Workload) -> u16 {
    let mappings = workload.services.values().flatten();
    let mut targets = mappings.map(|m| m.target_port).filter(|port| *port != 0);
    targets.next().unwrap_or(DEFAULT_SAMPLE_PORT)
}

/// What the pod's node proxy would know of the sample connection: the peer's identity, the address of a workload
/// with that identity (else unspecified), and the pod's first address and `port`.
fn sample_connection(state: &StateFile, workload: &Workload, peer: &Identity, port: u16) -> ConnInfo {
    let destination_ip = workload
        .addresses
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let unspecified = match destination_ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let same_identity = |w: &&Workload| {
        w.namespace.as_str() == peer.namespace() && w.service_account.as_str() == peer.service_account()
    };
    let source = state
        .workloads
        .iter()
        .filter(same_identity)
        .find_map(|w| w.addresses.first());
    ConnInfo {
        source_identity: Some(peer.clone()),
        source_ip: source.copied().unwrap_or(unspecified),
        destination_ip,
        destination_port: port,
    }
}

/// The policies in evaluation order (DENY, ALLOW, then dry-run), each with whether it matches `conn`.
fn summaries(policies: &[&Authorization], conn: &ConnInfo) -> Vec<PolicySummary> {
    let rank = |p: &&Authorization| match (p.dry_run, p.action) {
        (false, Action::Deny) => 0,
        (false, Action::Allow) => 1,
        (true, _) => 2,
    };
    let mut ordered = policies.to_vec();
    // A stable sort keeps the node proxy's order within each rank.
    ordered.sort_by_key(rank);
    let summary = |p: &Authorization| PolicySummary {
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        scope: p.scope,
        action: p.action,
        dry_run: p.dry_run,
        matches: p.matches(conn),
    };
    ordered.into_iter().map(summary).collect()
}

#[cfg(test)]
mod tests;

//! Decisions over a [`Snapshot`], without IO: where a captured outbound connection goes ([`outbound_plan`]), which
//! application address an inbound HBONE authority names ([`inbound_target`]), and which policies apply to a
//! workload ([`policies_for`]). Randomness comes in through [`Random`], so every decision is reproducible.
//!
//! Outbound follows ztunnel (ambient §5.2): a service VIP is load-balanced over the service's endpoints (§3.4), a
//! pod IP goes to that pod, anything else passes through untouched. A destination bound to a waypoint (a service's
//! `waypoint` for its VIP, a workload's for its pod IP) goes over HBONE to one of the waypoint's pods instead, with
//! the original destination as the authority (§5.2); with no ready waypoint pod the connection is refused rather
//! than sent around the waypoint's L7 policy.
//!
//! A node proxy in the node scope holds only its node's workloads and every service; [`outbound_decision`] says
//! which address resource to look up first (a service or a waypoint's service, for its endpoints; an unknown IP, by
//! its alias) before the plan is made again with what came back.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ambit_hbone::{Authority, Blame, Refusal};
use ambit_policy::Authorization;
use ambit_types::Identity;

use super::model::{
    GatewayAddress, GatewayDestination, HealthPolicy, LoadBalancing, LoadBalancingMode, LoadBalancingScope, Port,
    PortMapping, Service, ServiceKey, TunnelProtocol, Workload, WorkloadStatus, WorkloadUid,
};
use super::snapshot::Snapshot;

/// The HBONE port: the next hop of every tunnel.
pub const HBONE_PORT: u16 = 15008;
/// Ports an inbound authority may not name: the proxy's own listeners (outbound capture, inbound plaintext, HBONE),
/// so a tunnel can never loop back into the proxy.
pub const ILLEGAL_INBOUND_PORTS: [u16; 3] = [15001, 15006, HBONE_PORT];

/// A source of uniformly distributed numbers for load balancing. Closures `FnMut(u64) -> u64` are sources, so tests
/// can script the choices.
pub trait Random {
    /// A number in `0..bound`; `bound` is at least 1. Values out of range are reduced modulo `bound`.
    fn below(&mut self, bound: u64) -> u64;
}

/// The default [`Random`] for the proxy: a fast non-cryptographic generator (load balancing needs no secrecy).
#[derive(Clone, Debug)]
pub struct FastRandom(fastrand::Rng);

/// Where a captured outbound connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboundPlan {
    /// Tunnel over HBONE to the destination pod's node proxy, or to a pod of the destination's waypoint.
    Hbone {
        /// `podIP:15008`, or `waypointPodIP:<the waypoint's HBONE port>`.
        next_hop: SocketAddr,
        /// The `:authority` of the CONNECT: `podIP:targetPort`; through a waypoint, the original destination
        /// (`VIP:port` or `podIP:port`), so that the waypoint applies the destination's L7 policy and routes.
        authority: SocketAddr,
        /// The identities the server may present: the workload's (the waypoint pod's), then its service's SANs.
        expected_identities: Vec<Identity>,
        /// The workload the tunnel ends at: the destination pod, or the waypoint pod.
        destination_workload_uid: WorkloadUid,
        /// The service the client addressed, when it dialled a VIP (also through a waypoint).
        service: Option<ServiceKey>,
        /// The waypoint the connection passes through, when the destination is bound to one.
        waypoint: Option<GatewayAddress>,
    },
    /// Plain TCP to `destination`, without the mesh: the destination is unknown, does not speak HBONE, or its
    /// service asks for passthrough.
    Passthrough {
        destination: SocketAddr,
        /// The destination workload, when the mesh knows it (for telemetry).
        workload: Option<WorkloadUid>,
        /// The service the client addressed, when it dialled a VIP.
        service: Option<ServiceKey>,
    },
}

/// What to do with a captured outbound connection when addresses may be looked up on demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboundDecision {
    /// Subscribe to this `istio.workload.Address` key (a service's `<namespace>/<hostname>`, or a
    /// `<network>/<ip>` alias), wait for the answer, and decide again.
    Lookup(String),
    /// Nothing to look up: the plan (or why there is none) from what the snapshot holds.
    Plan(Result<OutboundPlan, PlanError>),
}

/// Why no outbound plan can be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Every endpoint was filtered out: unhealthy, without the port, on another network, outside a STRICT
    /// locality, or of capacity 0.
    #[error("service {service} has no healthy endpoint for port {port}")]
    NoHealthyEndpoint { service: ServiceKey, port: u16 },
    #[error("service {service} has no port {port}")]
    UnknownServicePort { service: ServiceKey, port: u16 },
    /// The destination is bound to a waypoint that cannot be reached: the connection is refused instead of going
    /// direct, which would skip the waypoint's L7 policy.
    #[error(
        "{destination} is bound to waypoint {waypoint}, which {reason}: refusing instead of bypassing its L7 policy"
    )]
    WaypointUnavailable {
        destination: BoundDestination,
        waypoint: GatewayAddress,
        reason: WaypointProblem,
    },
}

/// What a waypoint is bound to, as the client addressed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoundDestination {
    /// A service, dialled by its VIP.
    Service(ServiceKey),
    /// A workload, dialled by its pod IP.
    Workload(WorkloadUid),
}

/// Why no pod of a waypoint can be chosen; completes "the waypoint, which ...".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaypointProblem {
    /// The waypoint's service is unknown: it does not exist, or the control plane has not sent it.
    #[error("is not a known service")]
    UnknownService,
    /// The waypoint's address is neither a workload nor a service VIP the proxy knows.
    #[error("is not a known workload or service address")]
    UnknownAddress,
    /// No pod of the waypoint is a candidate: none is ready (healthy), on the client's network, with an address
    /// and a capacity above 0.
    #[error("has no ready endpoint")]
    NoReadyEndpoint,
}

/// The application address an inbound tunnel leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundTarget {
    pub app: SocketAddr,
}

/// Why an inbound authority is refused; each is answered 400 (ambient §1.3–1.4).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("the authority's address {ip} is not an address of workload {workload}")]
    IpMismatch { ip: IpAddr, workload: WorkloadUid },
    #[error("the authority's port {port} is one of the proxy's own ports")]
    SelfCall { port: u16 },
    #[error("the hostname authority {authority} is not supported yet")]
    Unsupported { authority: String },
}

/// An endpoint that survived filtering: the workload and the address to reach its target port.
#[derive(Clone, Copy, Debug)]
struct Candidate<'a> {
    workload: &'a Workload,
    target: SocketAddr,
}

/// The waypoint pod chosen for a connection: the workload, its address to dial, and the service it was chosen
/// from (whose SANs it may present too).
struct WaypointHop<'a> {
    workload: &'a Workload,
    ip: IpAddr,
    service: Option<&'a Service>,
}

/// Decides where a connection from `source` to `original_dst` goes.
///
/// A service VIP is looked up first: a service with a waypoint goes to the waypoint (see below), a PASSTHROUGH
/// service passes through, otherwise one endpoint is chosen as ztunnel does. A pod IP goes to that pod on the same
/// port, or to the pod's waypoint unless `source` is a pod of that waypoint. An unknown address passes through.
/// HBONE is used whenever the destination workload speaks it. An IPv4-mapped IPv6 destination is treated as the
/// IPv4 address it carries.
///
/// Through a waypoint: HBONE to one of its pods (a ready endpoint of the waypoint's service, chosen as a service's
/// endpoint is; or the workload or service at its address) on the waypoint's HBONE port, whether or not the pod is
/// enrolled, expecting the pod's identity, with the original destination as the authority. With no such pod the
/// plan is [`PlanError::WaypointUnavailable`].
pub fn outbound_plan(
    snapshot: &Snapshot,
    source: &Workload,
    original_dst: SocketAddr,
    rng: &mut impl Random,
) -> Result<OutboundPlan, PlanError> {
    let original_dst = SocketAddr::new(original_dst.ip().to_canonical(), original_dst.port());
    if let Some(service) = snapshot.service_by_vip(original_dst.ip()) {
        return service_plan(snapshot, source, service, original_dst, rng);
    }
    match snapshot.workload_by_ip(original_dst.ip()) {
        Some(workload) => workload_plan(snapshot, source, workload, original_dst, rng),
        None => Ok(OutboundPlan::passthrough(original_dst, None, None)),
    }
}

/// As [`outbound_plan`], unless the snapshot may be missing what the plan needs and `looked_up` says that key was
/// not looked up yet: then the key to look up.
///
/// A service VIP needs the service's endpoints (the node holds only its own), so the service's name is looked up
/// once, unless its PASSTHROUGH mode leaves the endpoints unused. A destination bound to a waypoint needs the
/// waypoint's pods instead: the waypoint's service name (for its endpoints), or the alias of its address when the
/// snapshot lacks it. An address that is neither a service nor a workload is looked up by the alias
/// `<network>/<ip>`, in the client's network; a workload the snapshot holds needs nothing, unless it has a
/// waypoint. Keys come one at a time: an unknown pod IP's alias first, then, if the answer has a waypoint, the
/// waypoint's. Once looked up, whatever the snapshot still lacks is planned as it is (an unknown address passes
/// through, a waypoint without pods is refused).
pub fn outbound_decision(
    snapshot: &Snapshot,
    source: &Workload,
    original_dst: SocketAddr,
    looked_up: impl Fn(&str) -> bool,
    rng: &mut impl Random,
) -> OutboundDecision {
    match lookup_key(snapshot, source, original_dst.ip().to_canonical()) {
        Some(key) if !looked_up(&key) => OutboundDecision::Lookup(key),
        _ => OutboundDecision::Plan(outbound_plan(snapshot, source, original_dst, rng)),
    }
}

/// The address resource a plan to `ip` depends on, if the node scope may have left it out: see
/// [`outbound_decision`].
fn lookup_key(snapshot: &Snapshot, source: &Workload, ip: IpAddr) -> Option<String> {
    if let Some(service) = snapshot.service_by_vip(ip) {
        if let Some(waypoint) = &service.waypoint {
            return waypoint_lookup_key(snapshot, waypoint);
        }
        let passthrough = service.load_balancing.as_ref().map(|lb| lb.mode) == Some(LoadBalancingMode::Passthrough);
        return (!passthrough).then(|| service.key().to_string());
    }
    if let Some(workload) = snapshot.workload_by_ip(ip) {
        return workload_waypoint(source, workload).and_then(|waypoint| waypoint_lookup_key(snapshot, waypoint));
    }
    Some(format!("{}/{ip}", source.network))
}

/// The address resource that brings a waypoint's pods: its service's name (which brings the endpoints, as for a
/// VIP, even when this node holds some of them); for an address, nothing if a workload has it, the service's name
/// if it is a service VIP, else its alias `<network>/<ip>`.
fn waypoint_lookup_key(snapshot: &Snapshot, waypoint: &GatewayAddress) -> Option<String> {
    match &waypoint.destination {
        GatewayDestination::Hostname(key) => Some(key.to_string()),
        GatewayDestination::Address(address) => {
            let ip = address.address.to_canonical();
            if snapshot.workload_by_ip(ip).is_some() {
                return None;
            }
            match snapshot.service_by_vip(ip) {
                Some(service) => Some(service.key().to_string()),
                None => Some(format!("{}/{ip}", address.network)),
            }
        }
    }
}

/// The address resource to look up so that telemetry can name an inbound connection's source at `ip`: its alias
/// `<network>/<ip>` in the local workload's network, when the snapshot (node-scoped: this node's pods) does not hold
/// it. Policy never needs it: it reads the peer's identity and IP.
pub fn source_lookup_key(snapshot: &Snapshot, local: &Workload, ip: IpAddr) -> Option<String> {
    let ip = ip.to_canonical();
    snapshot
        .workload_by_ip(ip)
        .is_none()
        .then(|| format!("{}/{ip}", local.network))
}

/// Validates an inbound HBONE authority against the local workload (ambient §1.4): a self-call port or an IP
/// that is not the workload's is refused; the authority itself is then the application address.
pub fn inbound_target(local: &Workload, authority: &Authority) -> Result<InboundTarget, InboundError> {
    let Authority::Addr(addr) = authority else {
        let authority = authority.to_string();
        return Err(InboundError::Unsupported { authority });
    };
    if ILLEGAL_INBOUND_PORTS.contains(&addr.port()) {
        return Err(InboundError::SelfCall { port: addr.port() });
    }
    if !local.has_address(addr.ip()) {
        let workload = local.uid.clone();
        return Err(InboundError::IpMismatch {
            ip: addr.ip(),
            workload,
        });
    }
    Ok(InboundTarget { app: *addr })
}

/// The service an inbound connection to `local` on `target_port` was addressed to, for telemetry (ztunnel's
/// guess): the one named by the `forwarded` header's `host=` if `local` is one of its endpoints, else the first of
/// its services that maps a port to `target_port`.
pub fn inbound_service<'a>(
    local: &'a Workload,
    forwarded_host: Option<&str>,
    target_port: u16,
) -> Option<&'a ServiceKey> {
    if let Some(host) = forwarded_host
        && let Some(key) = local.services.keys().find(|key| key.hostname.as_str() == host)
    {
        return Some(key);
    }
    let maps_port = |ports: &Vec<PortMapping>| ports.iter().any(|p| p.target_port == target_port);
    local
        .services
        .iter()
        .find(|(_, ports)| maps_port(ports))
        .map(|(key, _)| key)
}

/// The policies that apply to `workload`, in snapshot order: global ones, its namespace's (and the root
/// namespace's), and those it names. Names the snapshot lacks are skipped ([`Snapshot::unresolved`] lists them).
pub fn policies_for<'a>(snapshot: &'a Snapshot, workload: &Workload, root_namespace: &str) -> Vec<&'a Authorization> {
    let named = &workload.authorization_policies;
    ambit_policy::applicable(snapshot.policies(), workload.namespace.as_str(), named, root_namespace)
}

fn service_plan(
    snapshot: &Snapshot,
    source: &Workload,
    service: &Service,
    original_dst: SocketAddr,
    rng: &mut impl Random,
) -> Result<OutboundPlan, PlanError> {
    if let Some(waypoint) = &service.waypoint {
        let bound = BoundDestination::Service(service.key());
        return waypoint_plan(snapshot, source, waypoint, bound, original_dst, rng);
    }
    let key = Some(service.key());
    if service.load_balancing.as_ref().map(|lb| lb.mode) == Some(LoadBalancingMode::Passthrough) {
        return Ok(OutboundPlan::passthrough(original_dst, None, key));
    }
    let chosen = choose_endpoint(snapshot, source, service, original_dst, rng)?;
    Ok(endpoint_plan(chosen.workload, chosen.target, Some(service)))
}

fn workload_plan(
    snapshot: &Snapshot,
    source: &Workload,
    workload: &Workload,
    original_dst: SocketAddr,
    rng: &mut impl Random,
) -> Result<OutboundPlan, PlanError> {
    if let Some(waypoint) = workload_waypoint(source, workload) {
        let bound = BoundDestination::Workload(workload.uid.clone());
        return waypoint_plan(snapshot, source, waypoint, bound, original_dst, rng);
    }
    Ok(endpoint_plan(workload, original_dst, None))
}

/// The waypoint of a workload addressed by its pod IP, unless `source` is one of that waypoint's pods: the waypoint
/// itself sends its traffic on to the workload (ambient §5.2, the "sandwich" case).
fn workload_waypoint<'a>(source: &Workload, workload: &'a Workload) -> Option<&'a GatewayAddress> {
    let waypoint = workload.waypoint.as_ref()?;
    let source_is_waypoint = match &waypoint.destination {
        GatewayDestination::Hostname(key) => source.services.contains_key(key),
        GatewayDestination::Address(address) => source.has_address(address.address),
    };
    (!source_is_waypoint).then_some(waypoint)
}

/// HBONE to a pod of `waypoint` with `original_dst` as the authority, or why no pod can be chosen.
fn waypoint_plan(
    snapshot: &Snapshot,
    source: &Workload,
    waypoint: &GatewayAddress,
    destination: BoundDestination,
    original_dst: SocketAddr,
    rng: &mut impl Random,
) -> Result<OutboundPlan, PlanError> {
    let hop = match waypoint_hop(snapshot, source, waypoint, original_dst.ip(), rng) {
        Ok(hop) => hop,
        Err(reason) => {
            let waypoint = waypoint.clone();
            return Err(PlanError::WaypointUnavailable {
                destination,
                waypoint,
                reason,
            });
        }
    };
    let service = match destination {
        BoundDestination::Service(key) => Some(key),
        BoundDestination::Workload(_) => None,
    };
    Ok(OutboundPlan::Hbone {
        next_hop: SocketAddr::new(hop.ip, waypoint.hbone_mtls_port),
        authority: original_dst,
        expected_identities: expected_identities(hop.workload, hop.service),
        destination_workload_uid: hop.workload.uid.clone(),
        service,
        waypoint: Some(waypoint.clone()),
    })
}

/// The waypoint pod a connection goes to: for a service name, one of its ready endpoints (as [`choose_endpoint`]
/// picks, without a port: the waypoint takes every port on its HBONE port); for an address, the workload with it
/// if it is ready, else an endpoint of the service with that VIP.
fn waypoint_hop<'a>(
    snapshot: &'a Snapshot,
    source: &Workload,
    waypoint: &GatewayAddress,
    family: IpAddr,
    rng: &mut impl Random,
) -> Result<WaypointHop<'a>, WaypointProblem> {
    let service = match &waypoint.destination {
        GatewayDestination::Hostname(key) => snapshot.service(key).ok_or(WaypointProblem::UnknownService)?,
        GatewayDestination::Address(address) => {
            let ip = address.address.to_canonical();
            if let Some(workload) = snapshot.workload_by_ip(ip) {
                let ready = workload.status == WorkloadStatus::Healthy;
                let hop = WaypointHop {
                    workload,
                    ip,
                    service: None,
                };
                return ready.then_some(hop).ok_or(WaypointProblem::NoReadyEndpoint);
            }
            snapshot.service_by_vip(ip).ok_or(WaypointProblem::UnknownAddress)?
        }
    };
    let key = service.key();
    let health = service
        .load_balancing
        .as_ref()
        .map_or(HealthPolicy::OnlyHealthy, |lb| lb.health_policy);
    let candidates: Vec<_> = snapshot
        .endpoints(&key)
        .filter(|w| health == HealthPolicy::AllowAll || w.status == WorkloadStatus::Healthy)
        .filter(|w| w.network == source.network)
        .filter_map(|workload| {
            let ip = preferred_address(workload, family)?;
            Some(Candidate {
                workload,
                target: SocketAddr::new(ip, waypoint.hbone_mtls_port),
            })
        })
        .collect();
    let best = best_ranked(service.load_balancing.as_ref(), source, candidates);
    let chosen = choose_weighted(&best, |c| u64::from(c.workload.capacity), rng);
    let chosen = chosen.ok_or(WaypointProblem::NoReadyEndpoint)?;
    Ok(WaypointHop {
        workload: chosen.workload,
        ip: chosen.target.ip(),
        service: Some(service),
    })
}

/// Picks one endpoint of `service` for the port the client dialled, as ztunnel does (ambient §3.4): keep the
/// endpoints that are healthy (any, under ALLOW_ALL), on the client's network, with an address and a target port
/// for the port; rank them by locality when the service is STRICT or FAILOVER and keep the best rank; then choose
/// at random, weighted by capacity.
fn choose_endpoint<'a>(
    snapshot: &'a Snapshot,
    source: &Workload,
    service: &Service,
    original_dst: SocketAddr,
    rng: &mut impl Random,
) -> Result<Candidate<'a>, PlanError> {
    let (key, port) = (service.key(), original_dst.port());
    let Some(service_port) = service.port(port) else {
        return Err(PlanError::UnknownServicePort { service: key, port });
    };
    let health = service
        .load_balancing
        .as_ref()
        .map_or(HealthPolicy::OnlyHealthy, |lb| lb.health_policy);
    let candidates: Vec<_> = snapshot
        .endpoints(&key)
        .filter(|w| health == HealthPolicy::AllowAll || w.status == WorkloadStatus::Healthy)
        .filter(|w| w.network == source.network)
        .filter_map(|w| candidate(w, &key, service_port, original_dst.ip()))
        .collect();
    let best = best_ranked(service.load_balancing.as_ref(), source, candidates);
    let chosen = choose_weighted(&best, |c| u64::from(c.workload.capacity), rng);
    chosen
        .copied()
        .ok_or(PlanError::NoHealthyEndpoint { service: key, port })
}

/// The endpoint's address for `service_port`: its own mapping of the port, else the service's target port. A
/// mapping to 0 (a named port left unresolved), or no mapping for a named service port, leaves it out; so does a
/// workload without an address. The address of the dialled VIP's family is preferred.
fn candidate<'a>(workload: &'a Workload, key: &ServiceKey, service_port: &Port, vip: IpAddr) -> Option<Candidate<'a>> {
    let target_port = match workload.port_mapping(key, service_port.service_port) {
        Some(mapped) => mapped,
        None => service_port.target_port,
    };
    if target_port == 0 {
        return None;
    }
    let ip = preferred_address(workload, vip)?;
    let target = SocketAddr::new(ip, target_port);
    Some(Candidate { workload, target })
}

/// The workload's address of `family`'s IP family, else its first; `None` when it has no address.
fn preferred_address(workload: &Workload, family: IpAddr) -> Option<IpAddr> {
    let same_family = workload.addresses.iter().find(|ip| ip.is_ipv6() == family.is_ipv6());
    same_family.or(workload.addresses.first()).copied()
}

/// The candidates of the best locality rank under STRICT or FAILOVER; all of them otherwise.
fn best_ranked<'a>(
    lb: Option<&LoadBalancing>,
    source: &Workload,
    candidates: Vec<Candidate<'a>>,
) -> Vec<Candidate<'a>> {
    let Some(lb) = lb.filter(|lb| matches!(lb.mode, LoadBalancingMode::Strict | LoadBalancingMode::Failover)) else {
        return candidates;
    };
    let prefs = &lb.routing_preference;
    let mut ranked: Vec<_> = candidates
        .into_iter()
        .map(|c| (rank(prefs, source, c.workload), c))
        .collect();
    if lb.mode == LoadBalancingMode::Strict {
        ranked.retain(|(rank, _)| *rank == prefs.len());
    }
    let best = ranked.iter().map(|(rank, _)| *rank).max();
    ranked
        .into_iter()
        .filter(|(rank, _)| Some(*rank) == best)
        .map(|(_, c)| c)
        .collect()
}

/// How many leading scopes of `prefs` the endpoint shares with the client.
fn rank(prefs: &[LoadBalancingScope], source: &Workload, endpoint: &Workload) -> usize {
    prefs
        .iter()
        .take_while(|scope| same_scope(**scope, source, endpoint))
        .count()
}

fn same_scope(scope: LoadBalancingScope, a: &Workload, b: &Workload) -> bool {
    let (la, lb) = (a.locality_or_empty(), b.locality_or_empty());
    match scope {
        LoadBalancingScope::Region => la.region == lb.region,
        LoadBalancingScope::Zone => la.zone == lb.zone,
        LoadBalancingScope::Subzone => la.subzone == lb.subzone,
        LoadBalancingScope::Node => a.node == b.node,
        LoadBalancingScope::Cluster => a.cluster_id == b.cluster_id,
        LoadBalancingScope::Network => a.network == b.network,
    }
}

/// A random item, each as likely as its weight; `None` when the weights add up to 0. The source is not consulted
/// when only one item can be chosen.
fn choose_weighted<'c, T>(items: &'c [T], weight: impl Fn(&T) -> u64, rng: &mut impl Random) -> Option<&'c T> {
    let mut weighted = items.iter().filter(|item| weight(item) > 0);
    let total: u64 = weighted.clone().map(&weight).sum();
    if total == 0 {
        return None;
    }
    if weighted.clone().count() == 1 {
        return weighted.next();
    }
    let mut point = rng.below(total) % total;
    weighted.find(|item| {
        let w = weight(item);
        if point < w {
            return true;
        }
        point -= w;
        false
    })
}

/// HBONE to the workload when it speaks HBONE, plain TCP otherwise.
fn endpoint_plan(workload: &Workload, target: SocketAddr, service: Option<&Service>) -> OutboundPlan {
    let key = service.map(Service::key);
    if workload.tunnel_protocol == TunnelProtocol::None {
        return OutboundPlan::passthrough(target, Some(workload.uid.clone()), key);
    }
    OutboundPlan::Hbone {
        next_hop: SocketAddr::new(target.ip(), HBONE_PORT),
        authority: target,
        expected_identities: expected_identities(workload, service),
        destination_workload_uid: workload.uid.clone(),
        service: key,
        waypoint: None,
    }
}

/// The workload's identity, then the service's SANs, each once.
fn expected_identities(workload: &Workload, service: Option<&Service>) -> Vec<Identity> {
    let mut identities = vec![workload.identity()];
    for san in service.into_iter().flat_map(|s| &s.subject_alt_names) {
        if !identities.contains(san) {
            identities.push(san.clone());
        }
    }
    identities
}

// === impl Random ===

impl<F: FnMut(u64) -> u64> Random for F {
    fn below(&mut self, bound: u64) -> u64 {
        self(bound)
    }
}

// === impl FastRandom ===

impl FastRandom {
    /// Seeded from the operating system.
    pub fn new() -> Self {
        Self(fastrand::Rng::new())
    }

    /// A reproducible sequence.
    pub fn with_seed(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }
}

impl Default for FastRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl Random for FastRandom {
    fn below(&mut self, bound: u64) -> u64 {
        self.0.u64(..bound.max(1))
    }
}

// === impl OutboundPlan ===

impl OutboundPlan {
    fn passthrough(destination: SocketAddr, workload: Option<WorkloadUid>, service: Option<ServiceKey>) -> Self {
        Self::Passthrough {
            destination,
            workload,
            service,
        }
    }
}

// === impl PlanError ===

impl PlanError {
    pub fn blame(&self) -> Blame {
        match self {
            Self::NoHealthyEndpoint { .. } | Self::WaypointUnavailable { .. } => Blame::Upstream,
            Self::UnknownServicePort { .. } => Blame::Downstream,
        }
    }

    /// Whether the client may succeed later: endpoints and waypoint pods come back (a waypoint becomes ready); a
    /// port the service lacks does not appear by retrying.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::NoHealthyEndpoint { .. } | Self::WaypointUnavailable { .. })
    }
}

// === impl BoundDestination ===

impl fmt::Display for BoundDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service(key) => write!(f, "service {key}"),
            Self::Workload(uid) => write!(f, "workload {uid}"),
        }
    }
}

// === impl InboundError ===

impl InboundError {
    pub fn blame(&self) -> Blame {
        match self {
            Self::IpMismatch { .. } | Self::SelfCall { .. } => Blame::Downstream,
            Self::Unsupported { .. } => Blame::Local,
        }
    }

    /// Never: the same authority is refused again.
    pub fn retryable(&self) -> bool {
        false
    }
}

impl From<InboundError> for Refusal {
    /// Every inbound error is a bad request (400), as in ztunnel.
    fn from(error: InboundError) -> Self {
        Refusal::BadRequest(error.to_string().into())
    }
}

#[cfg(test)]
mod tests;

//! Conversions between the workload API's protobuf messages (`ambit_api::istio::workload`, `ambit_api::istio::security`)
//! and the node proxy's model: decoding what the control plane streams (`TryFrom`, which checks every field) and
//! encoding what it sends (`From<&_>`, which cannot fail). Policies go through [`decode_authorization`] and
//! [`encode_authorization`] instead, as neither `Authorization` type belongs to this crate.
//!
//! A rejected resource is a [`ProtoError`] naming the field by its path from the message root, e.g.
//! `workload.addresses[1]: 5 bytes is not an IPv4 or IPv6 address`; the node proxy NACKs it with that text.
//!
//! Decoding follows the proto's defaults: an empty `trust_domain` or `service_account` means `cluster.local` or
//! `default`, an absent `capacity` means 1, a `hbone_mtls_port` of 0 means 15008. Names go through the model's
//! constructors (`WorkloadUid::new`, `Namespace::new`, `Hostname::new`, ...), ports must fit in 16 bits, addresses
//! must be 4 or 16 bytes, enums must hold a known value.
//!
//! Fields the model does not hold:
//!
//! * Refused when set, because the node proxy would otherwise act on the resource differently from what the control
//!   plane meant: `Workload.hostname` (DNS-resolved workloads), `network_gateway`, `native_tunnel`,
//!   `application_tunnel`, `network_mode` HOST_NETWORK, `tunnel_protocol` LEGACY_ISTIO_MTLS (as ztunnel refuses it);
//!   `Service.canonical`, `weighted_waypoints`, `visibility` NAMESPACE, `load_balancing.dns_connect_strategy`
//!   FIRST_HEALTHY_RACE; a `NetworkAddress.length` other than the full width of its address (address ranges).
//!   A message field counts as set when it is present with a non-default value.
//! * Ignored: `extensions` everywhere (an extension a receiver does not know is skipped by design), and what does
//!   not change the node proxy's decisions: `Service.ip_families` (it describes the addresses, which are decoded;
//!   only a DNS proxy would use it), `Service.ingress_use_waypoint` (read by ingress gateways, not node proxies),
//!   and `app_protocol` in a workload's `services` port lists (the service's own ports carry the protocol; ztunnel
//!   reads only the port numbers there). Enum values are still checked in ignored fields.
//! * Not on the wire: [`Workload::labels`], an ambit addition, is dropped when encoding and empty when decoding.

use std::fmt;
use std::net::IpAddr;

use ambit_api::istio::security as pb_security;
use ambit_api::istio::workload as pb;
use ambit_policy::{
    Action, Authorization, Clause, Group, IpNet, Match, PolicyRef, Scope, ServiceAccountMatch, StringMatch,
};
use ambit_types::{Identity, TrustDomain};
use pb::gateway_address::Destination;
use pb_security::string_match::MatchType;

use super::model::{
    AppProtocol, DEFAULT_HBONE_MTLS_PORT, GatewayAddress, GatewayDestination, HealthPolicy, Hostname, LoadBalancing,
    LoadBalancingMode, LoadBalancingScope, Locality, NameError, Namespace, NetworkAddress, Port, PortMapping, Service,
    ServiceAccount, ServiceKey, TunnelProtocol, Workload, WorkloadStatus, WorkloadType, WorkloadUid,
};

/// A resource that cannot be decoded: the field's path from the message root and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ProtoError {
    /// E.g. `service.ports[0].service_port`.
    pub field: String,
    pub reason: String,
}

/// One `istio.workload.Address` resource, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
// Short-lived: each is moved into the node proxy's state as soon as it is decoded, so boxing would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum AddressResource {
    Workload(Workload),
    Service(Service),
}

// === impl ProtoError ===

impl ProtoError {
    /// An error about the value being converted; the callers prefix the path.
    fn new(reason: impl fmt::Display) -> Self {
        Self {
            field: String::new(),
            reason: reason.to_string(),
        }
    }

    /// An error about `field` of the message being converted.
    fn at(field: &str, reason: impl fmt::Display) -> Self {
        Self::new(reason).under(field)
    }

    /// Puts `parent` in front of the path: `parent.field`, or `parent[0]` for an element.
    fn under(mut self, parent: &str) -> Self {
        self.field = match self.field.as_str() {
            "" => parent.to_string(),
            field if field.starts_with('[') => format!("{parent}{field}"),
            field => format!("{parent}.{field}"),
        };
        self
    }
}

/// Prefixes an error's path with the field being converted.
trait Within<T> {
    fn within(self, field: &str) -> Result<T, ProtoError>;
}

impl<T> Within<T> for Result<T, ProtoError> {
    fn within(self, field: &str) -> Result<T, ProtoError> {
        self.map_err(|e| e.under(field))
    }
}

/// Converts each element of the repeated `field`, naming the first that fails by its index.
fn each<T, U>(
    field: &str,
    items: Vec<T>,
    mut convert: impl FnMut(T) -> Result<U, ProtoError>,
) -> Result<Vec<U>, ProtoError> {
    let convert = |(i, item)| convert(item).map_err(|e| e.under(&format!("{field}[{i}]")));
    items.into_iter().enumerate().map(convert).collect()
}

fn invalid(error: impl fmt::Display) -> ProtoError {
    ProtoError::new(error)
}

/// An enum field's value, if the proto defines it.
fn known<E: TryFrom<i32>>(value: i32) -> Result<E, ProtoError> {
    E::try_from(value).map_err(|_| ProtoError::new(format!("unknown value {value}")))
}

fn port(value: u32) -> Result<u16, ProtoError> {
    u16::try_from(value).map_err(|_| ProtoError::new(format!("{value} is out of range")))
}

fn ip(bytes: &[u8]) -> Result<IpAddr, ProtoError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::from(v4));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::from(v6));
    }
    Err(ProtoError::new(format!(
        "{} bytes is not an IPv4 or IPv6 address",
        bytes.len()
    )))
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn bits(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

// === Address ===

impl TryFrom<pb::Address> for AddressResource {
    type Error = ProtoError;

    fn try_from(address: pb::Address) -> Result<Self, Self::Error> {
        match address.r#type {
            Some(pb::address::Type::Workload(workload)) => Workload::try_from(workload).map(Self::Workload),
            Some(pb::address::Type::Service(service)) => Service::try_from(service).map(Self::Service),
            None => Err(ProtoError::at("address", "sets neither workload nor service")),
        }
    }
}

impl From<&AddressResource> for pb::Address {
    fn from(resource: &AddressResource) -> Self {
        match resource {
            AddressResource::Workload(workload) => workload.into(),
            AddressResource::Service(service) => service.into(),
        }
    }
}

impl From<&Workload> for pb::Address {
    fn from(workload: &Workload) -> Self {
        Self {
            r#type: Some(pb::address::Type::Workload(workload.into())),
        }
    }
}

impl From<&Service> for pb::Address {
    fn from(service: &Service) -> Self {
        Self {
            r#type: Some(pb::address::Type::Service(service.into())),
        }
    }
}

// === Workload ===

impl TryFrom<pb::Workload> for Workload {
    type Error = ProtoError;

    fn try_from(workload: pb::Workload) -> Result<Self, Self::Error> {
        decode_workload(workload).within("workload")
    }
}

fn decode_workload(w: pb::Workload) -> Result<Workload, ProtoError> {
    refuse_unsupported_workload_fields(&w)?;
    let uid = WorkloadUid::new(&w.uid).map_err(invalid).within("uid")?;
    let namespace = Namespace::new(&w.namespace).map_err(invalid).within("namespace")?;
    let mut out = Workload::new(uid, namespace);
    out.name = w.name;
    out.addresses = each("addresses", w.addresses, |bytes| ip(&bytes))?;
    out.network = w.network;
    out.tunnel_protocol = decode_tunnel_protocol(w.tunnel_protocol).within("tunnel_protocol")?;
    if !w.trust_domain.is_empty() {
        out.trust_domain = TrustDomain::new(&w.trust_domain)
            .map_err(invalid)
            .within("trust_domain")?;
    }
    if !w.service_account.is_empty() {
        out.service_account = ServiceAccount::new(&w.service_account)
            .map_err(invalid)
            .within("service_account")?;
    }
    out.waypoint = w.waypoint.map(decode_gateway).transpose().within("waypoint")?;
    out.node = w.node;
    out.canonical_name = w.canonical_name;
    out.canonical_revision = w.canonical_revision;
    out.workload_type = decode_workload_type(w.workload_type).within("workload_type")?;
    out.workload_name = w.workload_name;
    for (key, ports) in w.services {
        let field = format!("services[{key:?}]");
        let key: ServiceKey = key.parse().map_err(|e: NameError| ProtoError::at(&field, e))?;
        let mappings = each("ports", ports.ports, decode_port_mapping).within(&field)?;
        out.services.insert(key, mappings);
    }
    out.authorization_policies = each("authorization_policies", w.authorization_policies, |p| {
        decode_policy_ref(&p)
    })?;
    out.status = decode_status(w.status).within("status")?;
    out.cluster_id = w.cluster_id;
    out.locality = w.locality.map(|l| Locality {
        region: l.region,
        zone: l.zone,
        subzone: l.subzone,
    });
    out.capacity = w.capacity.unwrap_or(1);
    Ok(out)
}

/// The workload's fields the model cannot represent (see the module documentation).
fn refuse_unsupported_workload_fields(w: &pb::Workload) -> Result<(), ProtoError> {
    if !w.hostname.is_empty() {
        return Err(ProtoError::at(
            "hostname",
            "workloads resolved by DNS are not supported",
        ));
    }
    if w.network_gateway
        .as_ref()
        .is_some_and(|g| *g != pb::GatewayAddress::default())
    {
        return Err(ProtoError::at("network_gateway", "network gateways are not supported"));
    }
    if w.native_tunnel {
        return Err(ProtoError::at(
            "native_tunnel",
            "workloads that terminate the tunnel themselves are not supported",
        ));
    }
    if w.application_tunnel
        .as_ref()
        .is_some_and(|t| *t != pb::ApplicationTunnel::default())
    {
        return Err(ProtoError::at(
            "application_tunnel",
            "application tunnels are not supported",
        ));
    }
    match known(w.network_mode).within("network_mode")? {
        pb::NetworkMode::Standard => {}
        pb::NetworkMode::HostNetwork => {
            return Err(ProtoError::at("network_mode", "HOST_NETWORK is not supported"));
        }
    }
    Ok(())
}

impl From<&Workload> for pb::Workload {
    fn from(w: &Workload) -> Self {
        let services = w.services.iter().map(|(key, mappings)| {
            let ports = mappings.iter().map(|m| pb::Port {
                service_port: m.service_port.into(),
                target_port: m.target_port.into(),
                app_protocol: pb::AppProtocol::Unknown.into(),
            });
            let ports = pb::PortList { ports: ports.collect() };
            (key.to_string(), ports)
        });
        let locality = w.locality.as_ref().map(|l| pb::Locality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            subzone: l.subzone.clone(),
        });
        Self {
            uid: w.uid.to_string(),
            name: w.name.clone(),
            namespace: w.namespace.to_string(),
            addresses: w.addresses.iter().copied().map(ip_bytes).collect(),
            network: w.network.clone(),
            tunnel_protocol: encode_tunnel_protocol(w.tunnel_protocol).into(),
            trust_domain: w.trust_domain.to_string(),
            service_account: w.service_account.to_string(),
            waypoint: w.waypoint.as_ref().map(Into::into),
            node: w.node.clone(),
            canonical_name: w.canonical_name.clone(),
            canonical_revision: w.canonical_revision.clone(),
            workload_type: encode_workload_type(w.workload_type).into(),
            workload_name: w.workload_name.clone(),
            services: services.collect(),
            authorization_policies: w.authorization_policies.iter().map(ToString::to_string).collect(),
            status: encode_status(w.status).into(),
            cluster_id: w.cluster_id.clone(),
            locality,
            // Absent means 1, as istiod leaves it.
            capacity: (w.capacity != 1).then_some(w.capacity),
            // hostname, network_gateway, native_tunnel, application_tunnel, network_mode and extensions: the model
            // holds none of them, so they take their defaults.
            ..Self::default()
        }
    }
}

fn decode_port_mapping(mapping: pb::Port) -> Result<PortMapping, ProtoError> {
    // The protocol is the service's; here it is only checked.
    known::<pb::AppProtocol>(mapping.app_protocol).within("app_protocol")?;
    Ok(PortMapping {
        service_port: port(mapping.service_port).within("service_port")?,
        target_port: port(mapping.target_port).within("target_port")?,
    })
}

/// `<namespace>/<name>`, as the state file reads it.
fn decode_policy_ref(text: &str) -> Result<PolicyRef, ProtoError> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(PolicyRef::new(ns, name)),
        _ => Err(invalid(NameError::PolicyRef(text.to_string()))),
    }
}

fn decode_tunnel_protocol(value: i32) -> Result<TunnelProtocol, ProtoError> {
    match known(value)? {
        pb::TunnelProtocol::None => Ok(TunnelProtocol::None),
        pb::TunnelProtocol::Hbone => Ok(TunnelProtocol::Hbone),
        pb::TunnelProtocol::LegacyIstioMtls => Err(ProtoError::new("LEGACY_ISTIO_MTLS is not supported")),
    }
}

fn encode_tunnel_protocol(protocol: TunnelProtocol) -> pb::TunnelProtocol {
    match protocol {
        TunnelProtocol::None => pb::TunnelProtocol::None,
        TunnelProtocol::Hbone => pb::TunnelProtocol::Hbone,
    }
}

fn decode_workload_type(value: i32) -> Result<WorkloadType, ProtoError> {
    Ok(match known(value)? {
        pb::WorkloadType::Deployment => WorkloadType::Deployment,
        pb::WorkloadType::Cronjob => WorkloadType::Cronjob,
        pb::WorkloadType::Pod => WorkloadType::Pod,
        pb::WorkloadType::Job => WorkloadType::Job,
    })
}

fn encode_workload_type(kind: WorkloadType) -> pb::WorkloadType {
    match kind {
        WorkloadType::Deployment => pb::WorkloadType::Deployment,
        WorkloadType::Cronjob => pb::WorkloadType::Cronjob,
        WorkloadType::Pod => pb::WorkloadType::Pod,
        WorkloadType::Job => pb::WorkloadType::Job,
    }
}

fn decode_status(value: i32) -> Result<WorkloadStatus, ProtoError> {
    Ok(match known(value)? {
        pb::WorkloadStatus::Healthy => WorkloadStatus::Healthy,
        pb::WorkloadStatus::Unhealthy => WorkloadStatus::Unhealthy,
    })
}

fn encode_status(status: WorkloadStatus) -> pb::WorkloadStatus {
    match status {
        WorkloadStatus::Healthy => pb::WorkloadStatus::Healthy,
        WorkloadStatus::Unhealthy => pb::WorkloadStatus::Unhealthy,
    }
}

// === Service ===

impl TryFrom<pb::Service> for Service {
    type Error = ProtoError;

    fn try_from(service: pb::Service) -> Result<Self, Self::Error> {
        decode_service(service).within("service")
    }
}

fn decode_service(s: pb::Service) -> Result<Service, ProtoError> {
    let namespace = Namespace::new(&s.namespace).map_err(invalid).within("namespace")?;
    let hostname = Hostname::new(&s.hostname).map_err(invalid).within("hostname")?;
    let mut out = Service::new(&s.name, namespace, hostname);
    out.addresses = each("addresses", s.addresses, decode_network_address)?;
    out.ports = each("ports", s.ports, decode_service_port)?;
    out.subject_alt_names = each("subject_alt_names", s.subject_alt_names, |san| {
        san.parse::<Identity>().map_err(invalid)
    })?;
    out.waypoint = s.waypoint.map(decode_gateway).transpose().within("waypoint")?;
    out.load_balancing = s
        .load_balancing
        .map(decode_load_balancing)
        .transpose()
        .within("load_balancing")?;
    // Describes the addresses, decoded above; only checked.
    known::<pb::IpFamilies>(s.ip_families).within("ip_families")?;
    if s.canonical {
        return Err(ProtoError::at("canonical", "canonical services are not supported"));
    }
    if !s.weighted_waypoints.is_empty() {
        return Err(ProtoError::at(
            "weighted_waypoints",
            "weighted waypoints are not supported",
        ));
    }
    match known(s.visibility).within("visibility")? {
        pb::Visibility::Public => {}
        pb::Visibility::Namespace => {
            return Err(ProtoError::at("visibility", "NAMESPACE visibility is not supported"));
        }
    }
    Ok(out)
}

impl From<&Service> for pb::Service {
    fn from(s: &Service) -> Self {
        Self {
            name: s.name.clone(),
            namespace: s.namespace.to_string(),
            hostname: s.hostname.to_string(),
            addresses: s.addresses.iter().map(Into::into).collect(),
            ports: s.ports.iter().map(Into::into).collect(),
            subject_alt_names: s.subject_alt_names.iter().map(ToString::to_string).collect(),
            waypoint: s.waypoint.as_ref().map(Into::into),
            load_balancing: s.load_balancing.as_ref().map(Into::into),
            // ip_families (AUTOMATIC: from the addresses), extensions, canonical, ingress_use_waypoint,
            // weighted_waypoints and visibility (PUBLIC): the model holds none of them.
            ..Self::default()
        }
    }
}

fn decode_service_port(p: pb::Port) -> Result<Port, ProtoError> {
    Ok(Port {
        service_port: port(p.service_port).within("service_port")?,
        target_port: port(p.target_port).within("target_port")?,
        app_protocol: decode_app_protocol(p.app_protocol).within("app_protocol")?,
    })
}

impl From<&Port> for pb::Port {
    fn from(p: &Port) -> Self {
        Self {
            service_port: p.service_port.into(),
            target_port: p.target_port.into(),
            app_protocol: encode_app_protocol(p.app_protocol).into(),
        }
    }
}

fn decode_app_protocol(value: i32) -> Result<AppProtocol, ProtoError> {
    Ok(match known(value)? {
        pb::AppProtocol::Unknown => AppProtocol::Unknown,
        pb::AppProtocol::Http11 => AppProtocol::Http11,
        pb::AppProtocol::Http2 => AppProtocol::Http2,
        pb::AppProtocol::Grpc => AppProtocol::Grpc,
        pb::AppProtocol::Tcp => AppProtocol::Tcp,
        pb::AppProtocol::Tls => AppProtocol::Tls,
    })
}

fn encode_app_protocol(protocol: AppProtocol) -> pb::AppProtocol {
    match protocol {
        AppProtocol::Unknown => pb::AppProtocol::Unknown,
        AppProtocol::Http11 => pb::AppProtocol::Http11,
        AppProtocol::Http2 => pb::AppProtocol::Http2,
        AppProtocol::Grpc => pb::AppProtocol::Grpc,
        AppProtocol::Tcp => pb::AppProtocol::Tcp,
        AppProtocol::Tls => pb::AppProtocol::Tls,
    }
}

fn decode_load_balancing(lb: pb::LoadBalancing) -> Result<LoadBalancing, ProtoError> {
    use pb::load_balancing::{DnsConnectStrategy, HealthPolicy as PbHealth, Mode};

    let routing_preference = each("routing_preference", lb.routing_preference, decode_scope)?;
    let mode = match known(lb.mode).within("mode")? {
        Mode::UnspecifiedMode => LoadBalancingMode::Unspecified,
        Mode::Strict => LoadBalancingMode::Strict,
        Mode::Failover => LoadBalancingMode::Failover,
        Mode::Passthrough => LoadBalancingMode::Passthrough,
    };
    let health_policy = match known(lb.health_policy).within("health_policy")? {
        PbHealth::OnlyHealthy => HealthPolicy::OnlyHealthy,
        PbHealth::AllowAll => HealthPolicy::AllowAll,
    };
    match known(lb.dns_connect_strategy).within("dns_connect_strategy")? {
        DnsConnectStrategy::Default => {}
        DnsConnectStrategy::FirstHealthyRace => {
            return Err(ProtoError::at(
                "dns_connect_strategy",
                "FIRST_HEALTHY_RACE is not supported",
            ));
        }
    }
    Ok(LoadBalancing {
        routing_preference,
        mode,
        health_policy,
    })
}

fn decode_scope(value: i32) -> Result<LoadBalancingScope, ProtoError> {
    use pb::load_balancing::Scope as PbScope;

    Ok(match known(value)? {
        PbScope::UnspecifiedScope => return Err(ProtoError::new("UNSPECIFIED_SCOPE is not a scope")),
        PbScope::Region => LoadBalancingScope::Region,
        PbScope::Zone => LoadBalancingScope::Zone,
        PbScope::Subzone => LoadBalancingScope::Subzone,
        PbScope::Node => LoadBalancingScope::Node,
        PbScope::Cluster => LoadBalancingScope::Cluster,
        PbScope::Network => LoadBalancingScope::Network,
    })
}

impl From<&LoadBalancing> for pb::LoadBalancing {
    fn from(lb: &LoadBalancing) -> Self {
        use pb::load_balancing::{HealthPolicy as PbHealth, Mode, Scope as PbScope};

        let scope = |scope: &LoadBalancingScope| -> i32 {
            match scope {
                LoadBalancingScope::Region => PbScope::Region,
                LoadBalancingScope::Zone => PbScope::Zone,
                LoadBalancingScope::Subzone => PbScope::Subzone,
                LoadBalancingScope::Node => PbScope::Node,
                LoadBalancingScope::Cluster => PbScope::Cluster,
                LoadBalancingScope::Network => PbScope::Network,
            }
            .into()
        };
        let mode = match lb.mode {
            LoadBalancingMode::Unspecified => Mode::UnspecifiedMode,
            LoadBalancingMode::Strict => Mode::Strict,
            LoadBalancingMode::Failover => Mode::Failover,
            LoadBalancingMode::Passthrough => Mode::Passthrough,
        };
        let health_policy = match lb.health_policy {
            HealthPolicy::OnlyHealthy => PbHealth::OnlyHealthy,
            HealthPolicy::AllowAll => PbHealth::AllowAll,
        };
        Self {
            routing_preference: lb.routing_preference.iter().map(scope).collect(),
            mode: mode.into(),
            health_policy: health_policy.into(),
            // DEFAULT: the model has no DNS-resolved endpoints.
            dns_connect_strategy: 0,
        }
    }
}

// === GatewayAddress, NetworkAddress ===

fn decode_gateway(g: pb::GatewayAddress) -> Result<GatewayAddress, ProtoError> {
    let destination = match g.destination {
        Some(Destination::Hostname(name)) => {
            let namespace = Namespace::new(&name.namespace)
                .map_err(invalid)
                .within("hostname.namespace")?;
            let hostname = Hostname::new(&name.hostname)
                .map_err(invalid)
                .within("hostname.hostname")?;
            GatewayDestination::Hostname(ServiceKey::new(namespace, hostname))
        }
        Some(Destination::Address(address)) => {
            GatewayDestination::Address(decode_network_address(address).within("address")?)
        }
        None => return Err(ProtoError::new("names neither a hostname nor an address")),
    };
    let hbone_mtls_port = match port(g.hbone_mtls_port).within("hbone_mtls_port")? {
        0 => DEFAULT_HBONE_MTLS_PORT,
        explicit => explicit,
    };
    Ok(GatewayAddress {
        destination,
        hbone_mtls_port,
    })
}

impl From<&GatewayAddress> for pb::GatewayAddress {
    fn from(g: &GatewayAddress) -> Self {
        let destination = match &g.destination {
            GatewayDestination::Hostname(key) => Destination::Hostname(pb::NamespacedHostname {
                namespace: key.namespace.to_string(),
                hostname: key.hostname.to_string(),
            }),
            GatewayDestination::Address(address) => Destination::Address(address.into()),
        };
        Self {
            destination: Some(destination),
            hbone_mtls_port: g.hbone_mtls_port.into(),
        }
    }
}

fn decode_network_address(a: pb::NetworkAddress) -> Result<NetworkAddress, ProtoError> {
    let address = ip(&a.address).within("address")?;
    if let Some(length) = a.length
        && length != bits(address)
    {
        let reason = format!("/{length} is a range of addresses, which is not supported");
        return Err(ProtoError::at("length", reason));
    }
    Ok(NetworkAddress {
        network: a.network,
        address,
    })
}

impl From<&NetworkAddress> for pb::NetworkAddress {
    fn from(a: &NetworkAddress) -> Self {
        Self {
            network: a.network.clone(),
            address: ip_bytes(a.address),
            length: None,
        }
    }
}

// === Authorization ===

/// Decodes an `istio.security.Authorization`. A function rather than `TryFrom`: neither type is this crate's.
pub fn decode_authorization(policy: pb_security::Authorization) -> Result<Authorization, ProtoError> {
    authorization(policy).within("authorization")
}

fn authorization(a: pb_security::Authorization) -> Result<Authorization, ProtoError> {
    let scope = match known(a.scope).within("scope")? {
        pb_security::Scope::Global => Scope::Global,
        pb_security::Scope::Namespace => Scope::Namespace,
        pb_security::Scope::WorkloadSelector => Scope::WorkloadSelector,
    };
    let action = match known(a.action).within("action")? {
        pb_security::Action::Allow => Action::Allow,
        pb_security::Action::Deny => Action::Deny,
    };
    let groups = each("groups", a.groups, |group| {
        let clauses = each("rules", group.rules, |rules| {
            let matches = each("matches", rules.matches, decode_match)?;
            Ok(Clause { matches })
        })?;
        Ok(Group { clauses })
    })?;
    Ok(Authorization {
        name: a.name,
        namespace: a.namespace,
        scope,
        action,
        groups,
        dry_run: a.dry_run,
    })
}

fn decode_match(m: pb_security::Match) -> Result<Match, ProtoError> {
    let strings = |field, values| each(field, values, decode_string_match);
    let nets = |field, values| each(field, values, decode_ip_net);
    let ports = |field, values| each(field, values, port);
    let accounts = |values: Vec<pb_security::ServiceAccountMatch>| {
        let account = |a: pb_security::ServiceAccountMatch| ServiceAccountMatch::new(&a.namespace, &a.service_account);
        values.into_iter().map(account).collect()
    };
    Ok(Match {
        namespaces: strings("namespaces", m.namespaces)?,
        not_namespaces: strings("not_namespaces", m.not_namespaces)?,
        principals: strings("principals", m.principals)?,
        not_principals: strings("not_principals", m.not_principals)?,
        source_ips: nets("source_ips", m.source_ips)?,
        not_source_ips: nets("not_source_ips", m.not_source_ips)?,
        destination_ips: nets("destination_ips", m.destination_ips)?,
        not_destination_ips: nets("not_destination_ips", m.not_destination_ips)?,
        destination_ports: ports("destination_ports", m.destination_ports)?,
        not_destination_ports: ports("not_destination_ports", m.not_destination_ports)?,
        service_accounts: accounts(m.service_accounts),
        not_service_accounts: accounts(m.not_service_accounts),
    })
}

fn decode_string_match(m: pb_security::StringMatch) -> Result<StringMatch, ProtoError> {
    match m.match_type {
        Some(MatchType::Exact(value)) => Ok(StringMatch::Exact(value)),
        Some(MatchType::Prefix(value)) => Ok(StringMatch::Prefix(value)),
        Some(MatchType::Suffix(value)) => Ok(StringMatch::Suffix(value)),
        Some(MatchType::Presence(())) => Ok(StringMatch::Presence),
        None => Err(ProtoError::new("sets none of exact, prefix, suffix and presence")),
    }
}

fn decode_ip_net(a: pb_security::Address) -> Result<IpNet, ProtoError> {
    let address = ip(&a.address).within("address")?;
    let net = u8::try_from(a.length)
        .ok()
        .and_then(|length| IpNet::new(address, length).ok());
    net.ok_or_else(|| {
        let reason = format!("{} is longer than the {} bits of {address}", a.length, bits(address));
        ProtoError::at("length", reason)
    })
}

/// Encodes an `istio.security.Authorization` (the inverse of [`decode_authorization`]).
pub fn encode_authorization(a: &Authorization) -> pb_security::Authorization {
    let scope = match a.scope {
        Scope::Global => pb_security::Scope::Global,
        Scope::Namespace => pb_security::Scope::Namespace,
        Scope::WorkloadSelector => pb_security::Scope::WorkloadSelector,
    };
    let action = match a.action {
        Action::Allow => pb_security::Action::Allow,
        Action::Deny => pb_security::Action::Deny,
    };
    let group = |group: &Group| pb_security::Group {
        rules: group
            .clauses
            .iter()
            .map(|clause| pb_security::Rules {
                matches: clause.matches.iter().map(encode_match).collect(),
            })
            .collect(),
    };
    pb_security::Authorization {
        name: a.name.clone(),
        namespace: a.namespace.clone(),
        scope: scope.into(),
        action: action.into(),
        groups: a.groups.iter().map(group).collect(),
        dry_run: a.dry_run,
        extensions: Vec::new(),
    }
}

fn encode_match(m: &Match) -> pb_security::Match {
    let strings = |values: &[StringMatch]| values.iter().map(encode_string_match).collect();
    let nets = |values: &[IpNet]| {
        let net = |net: &IpNet| pb_security::Address {
            address: ip_bytes(net.addr()),
            length: net.prefix_len().into(),
        };
        values.iter().map(net).collect()
    };
    let ports = |values: &[u16]| values.iter().copied().map(u32::from).collect();
    let accounts = |values: &[ServiceAccountMatch]| {
        let account = |a: &ServiceAccountMatch| pb_security::ServiceAccountMatch {
            namespace: a.namespace.clone(),
            service_account: a.service_account.clone(),
        };
        values.iter().map(account).collect()
    };
    pb_security::Match {
        namespaces: strings(&m.namespaces),
        not_namespaces: strings(&m.not_namespaces),
        principals: strings(&m.principals),
        not_principals: strings(&m.not_principals),
        source_ips: nets(&m.source_ips),
        not_source_ips: nets(&m.not_source_ips),
        destination_ips: nets(&m.destination_ips),
        not_destination_ips: nets(&m.not_destination_ips),
        destination_ports: ports(&m.destination_ports),
        not_destination_ports: ports(&m.not_destination_ports),
        service_accounts: accounts(&m.service_accounts),
        not_service_accounts: accounts(&m.not_service_accounts),
        extensions: Vec::new(),
    }
}

fn encode_string_match(m: &StringMatch) -> pb_security::StringMatch {
    let match_type = match m {
        StringMatch::Exact(value) => MatchType::Exact(value.clone()),
        StringMatch::Prefix(value) => MatchType::Prefix(value.clone()),
        StringMatch::Suffix(value) => MatchType::Suffix(value.clone()),
        StringMatch::Presence => MatchType::Presence(()),
    };
    pb_security::StringMatch {
        match_type: Some(match_type),
    }
}

#[cfg(test)]
mod tests;

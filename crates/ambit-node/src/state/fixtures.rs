//! Builders for the state tests: workloads, services and policies of namespace `demo` with short names.

use std::net::{IpAddr, SocketAddr};

use ambit_policy::{Action, Authorization, Scope};

use super::model::{
    GatewayAddress, Hostname, Namespace, NetworkAddress, Port, PortMapping, Service, ServiceKey, TunnelProtocol,
    Workload, WorkloadUid,
};
use super::snapshot::Snapshot;

pub(crate) fn ns(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

pub(crate) fn uid(name: &str) -> WorkloadUid {
    WorkloadUid::new(&format!("Kubernetes//Pod/demo/{name}")).unwrap()
}

pub(crate) fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

pub(crate) fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// `demo/<name>.demo.svc.cluster.local`.
pub(crate) fn key(name: &str) -> ServiceKey {
    format!("demo/{name}.demo.svc.cluster.local").parse().unwrap()
}

/// An HBONE pod `name` in `demo` with service account `name` and one address.
pub(crate) fn pod(name: &str, address: &str) -> Workload {
    let mut workload = Workload::new(uid(name), ns("demo"));
    workload.name = name.to_string();
    workload.addresses = vec![ip(address)];
    workload.tunnel_protocol = TunnelProtocol::Hbone;
    workload.service_account = super::model::ServiceAccount::new(name).unwrap();
    workload
}

/// `workload`, as an endpoint of `service` with these (service port, target port) mappings.
pub(crate) fn endpoint(mut workload: Workload, service: &str, mappings: &[(u16, u16)]) -> Workload {
    let mappings = mappings.iter().map(|&(service_port, target_port)| PortMapping {
        service_port,
        target_port,
    });
    workload.services.insert(key(service), mappings.collect());
    workload
}

/// Service `name` in `demo` with one VIP and these (service port, target port) ports.
pub(crate) fn service(name: &str, vip: &str, ports: &[(u16, u16)]) -> Service {
    let hostname = Hostname::new(&format!("{name}.demo.svc.cluster.local")).unwrap();
    let mut service = Service::new(name, ns("demo"), hostname);
    service.addresses = vec![NetworkAddress {
        network: String::new(),
        address: ip(vip),
    }];
    let ports = ports.iter().map(|&(service_port, target_port)| Port {
        service_port,
        target_port,
        ..Port::default()
    });
    service.ports = ports.collect();
    service
}

/// Waypoint `demo/waypoint.demo.svc.cluster.local` on the default HBONE port, as the control plane binds to it.
pub(crate) fn waypoint() -> GatewayAddress {
    GatewayAddress::hostname(key("waypoint"))
}

/// The waypoint's Service `waypoint`: VIP 10.96.0.99, port 15008.
pub(crate) fn waypoint_service() -> Service {
    service("waypoint", "10.96.0.99", &[(15008, 15008)])
}

/// Pod `name` of the waypoint: an endpoint of its Service, and not enrolled (a waypoint terminates HBONE itself, so
/// its workload has no HBONE tunnel protocol).
pub(crate) fn waypoint_pod(name: &str, address: &str) -> Workload {
    let mut workload = endpoint(pod(name, address), "waypoint", &[(15008, 15008)]);
    workload.tunnel_protocol = TunnelProtocol::None;
    workload
}

pub(crate) fn policy(namespace: &str, name: &str, scope: Scope) -> Authorization {
    Authorization {
        name: name.to_string(),
        namespace: namespace.to_string(),
        scope,
        action: Action::Allow,
        groups: Vec::new(),
        dry_run: false,
    }
}

pub(crate) fn snapshot(workloads: Vec<Workload>, services: Vec<Service>) -> Snapshot {
    Snapshot::new(1, workloads, services, Vec::new()).unwrap()
}

//! What a tunnel into the waypoint is for, decided from the CONNECT authority and the workload state (ambient §5.2
//! and §5.3): a Service VIP and port (service-addressed) or a pod IP and port (workload-addressed), accepted only
//! when that Service or workload is bound to this waypoint. Also which endpoints serve a Service port. Pure.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ambit_hbone::Authority;
use ambit_node::state::model::{AppProtocol, GatewayAddress, GatewayDestination, HealthPolicy, WorkloadStatus};
use ambit_node::state::{Service, ServiceKey, Snapshot, Workload};

/// This waypoint: its Gateway, and the pod addresses it serves on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaypointId {
    /// The Gateway's namespace.
    pub namespace: String,
    /// The Gateway's name (also the name of its Service).
    pub name: String,
    /// The waypoint pod's addresses (a `GatewayAddress` may name the waypoint by address).
    pub addresses: Vec<IpAddr>,
}

/// A tunnel's destination, bound to this waypoint.
#[derive(Clone, Copy, Debug)]
pub enum Destination<'s> {
    /// Service-addressed: the VIP and port the client dialed.
    Service {
        service: &'s Service,
        port: u16,
        vip: SocketAddr,
        protocol: AppProtocol,
    },
    /// Workload-addressed: the pod and port the client dialed.
    Workload { workload: &'s Workload, addr: SocketAddr },
}

/// Why a tunnel is refused (answered 400: the source proxy sent it to the wrong place).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the authority {0} is not an address")]
    NotAnAddress(String),
    #[error("{0} is neither a service address nor a workload address this waypoint knows")]
    Unknown(SocketAddr),
    #[error("{what} is not bound to waypoint {waypoint}")]
    NotBound { what: String, waypoint: String },
    #[error("service {service} has no port {port}")]
    NoPort { service: ServiceKey, port: u16 },
}

/// One endpoint of a Service port: the workload and the address of its target port.
#[derive(Clone, Copy, Debug)]
pub struct ServiceEndpoint<'s> {
    pub workload: &'s Workload,
    pub addr: SocketAddr,
}

// === impl WaypointId ===

impl WaypointId {
    /// Whether `gateway` names this waypoint: by its Service (`<namespace>/<name>.<namespace>.svc...`) or by one of
    /// its addresses.
    pub fn is(&self, gateway: &GatewayAddress) -> bool {
        match &gateway.destination {
            GatewayDestination::Hostname(key) => {
                let first_label = key.hostname.as_str().split('.').next().unwrap_or_default();
                key.namespace.as_str() == self.namespace && first_label == self.name
            }
            GatewayDestination::Address(address) => self.addresses.contains(&address.address),
        }
    }
}

impl fmt::Display for WaypointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

// === impl Destination ===

impl Destination<'_> {
    /// The address the client dialed: the authority.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Destination::Service { vip, .. } => *vip,
            Destination::Workload { addr, .. } => *addr,
        }
    }

    /// The service, for service-addressed traffic.
    pub fn service(&self) -> Option<&Service> {
        match self {
            Destination::Service { service, .. } => Some(service),
            Destination::Workload { .. } => None,
        }
    }

    /// What the port's declared protocol says about HTTP: `Some(true)` for HTTP/1.1, HTTP/2 and gRPC, `Some(false)`
    /// for TCP and TLS, `None` when undeclared (the waypoint then looks at the first bytes).
    pub fn declares_http(&self) -> Option<bool> {
        let protocol = match self {
            Destination::Service { protocol, .. } => *protocol,
            Destination::Workload { .. } => AppProtocol::Unknown,
        };
        match protocol {
            AppProtocol::Http11 | AppProtocol::Http2 | AppProtocol::Grpc => Some(true),
            AppProtocol::Tcp | AppProtocol::Tls => Some(false),
            AppProtocol::Unknown => None,
        }
    }
}

/// The destination of a tunnel with `authority`, if it is bound to `me`.
pub fn resolve<'s>(
    snapshot: &'s Snapshot,
    me: &WaypointId,
    authority: &Authority,
) -> Result<Destination<'s>, TargetError> {
    let Authority::Addr(addr) = authority else {
        return Err(TargetError::NotAnAddress(authority.to_string()));
    };
    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
    if let Some(service) = snapshot.service_by_vip(addr.ip()) {
        if !service.waypoint.as_ref().is_some_and(|gw| me.is(gw)) {
            let what = format!("service {}", service.key());
            return Err(TargetError::NotBound {
                what,
                waypoint: me.to_string(),
            });
        }
        let Some(port) = service.port(addr.port()) else {
            return Err(TargetError::NoPort {
                service: service.key(),
                port: addr.port(),
            });
        };
        let protocol = port.app_protocol;
        return Ok(Destination::Service {
            service,
            port: addr.port(),
            vip: addr,
            protocol,
        });
    }
    let Some(workload) = snapshot.workload_by_ip(addr.ip()) else {
        return Err(TargetError::Unknown(addr));
    };
    if !workload.waypoint.as_ref().is_some_and(|gw| me.is(gw)) {
        let what = format!("workload {}", workload.uid);
        return Err(TargetError::NotBound {
            what,
            waypoint: me.to_string(),
        });
    }
    Ok(Destination::Workload { workload, addr })
}

/// The Service `namespace/name`, if the snapshot holds it.
pub fn service_named<'s>(snapshot: &'s Snapshot, namespace: &str, name: &str) -> Option<&'s Service> {
    (snapshot.services().iter()).find(|s| s.name == name && s.namespace.as_str() == namespace)
}

/// The endpoints that may serve `service` on `port`, as a node proxy filters them (ambient §3.4): healthy unless the
/// service allows all, with an address, and a target port (the workload's own mapping, else the service's).
pub fn service_endpoints<'s>(snapshot: &'s Snapshot, service: &Service, port: u16) -> Vec<ServiceEndpoint<'s>> {
    let key = service.key();
    let Some(service_port) = service.port(port) else {
        return Vec::new();
    };
    let health = (service.load_balancing.as_ref()).map_or(HealthPolicy::OnlyHealthy, |lb| lb.health_policy);
    let endpoint = |workload: &'s Workload| {
        if health != HealthPolicy::AllowAll && workload.status != WorkloadStatus::Healthy {
            return None;
        }
        let target = workload.port_mapping(&key, port).unwrap_or(service_port.target_port);
        let ip = workload.addresses.first()?;
        (target != 0).then(|| ServiceEndpoint {
            workload,
            addr: SocketAddr::new(*ip, target),
        })
    };
    snapshot.endpoints(&key).filter_map(endpoint).collect()
}

#[cfg(test)]
mod tests;

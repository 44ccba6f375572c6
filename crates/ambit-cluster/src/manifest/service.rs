//! Services: `type: ClusterIP` only, with ClusterIPs from serviceCIDR.
//!
//! `clusterIP` unset or "" is allocated, "None" makes a headless service, an address is taken as is (inside
//! serviceCIDR; not its network, broadcast or DNS address; not another service's). Allocation is deterministic:
//! services sorted by (namespace, name) take serviceCIDR addresses from offset 16 on (…0.16, …0.17, …), skipping
//! the requested ones. A headless service may have no ports (DNS only), like in Kubernetes.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{self as k8s, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{Ipv4Cidr, PodPlan, ServicePlan, ServicePort, TargetPort};

use super::document::Doc;
use super::meta::{self, Kind, Meta};
use super::plan::Context;
use super::syntax;
use super::{Labels, Origin, Report, Scope};

/// The first offset in serviceCIDR that is allocated (lower ones are left for requested addresses).
pub(super) const FIRST_ALLOCATED: u64 = 16;
/// The DNS server's offset in serviceCIDR.
const DNS_OFFSET: u64 = 10;
const ONE_ADDRESS: &str = "only one address is supported (the local cluster is IPv4 only)";
const NAME_REQUIRED: &str = "required when the service has several ports";
const NODE_PORT: &str = "not supported: services are of type ClusterIP";

/// A checked Service.
#[derive(Clone, Debug)]
pub(super) struct ServiceChecked<'a> {
    pub origin: &'a Origin,
    pub meta: Meta,
    pub address: Address,
    pub selector: Labels,
    pub ports: Vec<ServicePort>,
}

/// What `spec.clusterIP` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Address {
    Allocate,
    Headless,
    Requested(Ipv4Addr),
}

/// The ClusterIP of each service, in the order of the services (None for headless ones).
pub(super) type ClusterIps = Vec<Option<Ipv4Addr>>;

/// A checked spec: its address, ports and selector.
type SpecChecked = (Option<Address>, Vec<ServicePort>, Labels);

/// Hands out ClusterIPs in order.
struct Allocator {
    cidr: Ipv4Cidr,
    used: HashSet<Ipv4Addr>,
    next: u64,
}

/// Checks the Service documents.
pub(super) fn check_all<'a>(
    docs: &'a [Doc<Service>],
    context: &mut Context<'_>,
    report: &mut Report,
) -> Vec<ServiceChecked<'a>> {
    let checked = |doc| check(doc, context, report);
    docs.iter().filter_map(checked).collect()
}

fn check<'a>(doc: &'a Doc<Service>, context: &mut Context<'_>, report: &mut Report) -> Option<ServiceChecked<'a>> {
    let mut scope = report.scope(&doc.origin);
    let metadata = &doc.value.metadata;
    let (meta, fresh) = meta::register(Kind::Service, metadata, context, &mut scope);
    let Some(spec) = &doc.value.spec else {
        return scope.fail("spec", "required");
    };
    let before = scope.errors();
    let cidr = context.service_cidr;
    let (address, ports, selector) = check_spec(spec, cidr, &mut scope.at("spec"));
    let (origin, meta, address) = (&doc.origin, meta?, address?);
    let checked = ServiceChecked {
        origin,
        meta,
        address,
        selector,
        ports,
    };
    (fresh && scope.errors() == before).then_some(checked)
}

/// The spec (`scope` is at it).
fn check_spec(spec: &ServiceSpec, cidr: Option<Ipv4Cidr>, scope: &mut Scope<'_>) -> SpecChecked {
    check_type(spec.type_.as_deref(), scope);
    let address = check_address(spec, cidr, scope);
    let ports = spec.ports.as_deref().unwrap_or_default();
    let ports = check_ports(ports, address, scope);
    let selector = spec.selector.clone().unwrap_or_default();
    syntax::check_labels(&selector, "selector", scope);
    (address, ports, selector)
}

fn check_type(kind: Option<&str>, scope: &mut Scope<'_>) {
    let message = match kind {
        None | Some("ClusterIP") => return,
        Some(other @ ("NodePort" | "LoadBalancer" | "ExternalName")) => {
            format!("{other} is not supported by the local cluster; use ClusterIP")
        }
        Some(other) => format!("unknown type {other:?}; supported: ClusterIP"),
    };
    scope.error("type", message);
}

/// `clusterIP` (or the first of `clusterIPs`): allocate, headless, or a requested address.
fn check_address(spec: &ServiceSpec, cidr: Option<Ipv4Cidr>, scope: &mut Scope<'_>) -> Option<Address> {
    let Some((field, value)) = address_field(spec, scope)? else {
        return Some(Address::Allocate);
    };
    match value {
        "" => Some(Address::Allocate),
        "None" => Some(Address::Headless),
        text => check_requested(text, cidr, field, scope).map(Address::Requested),
    }
}

/// The field that gives the address and its value; Some(None) if none does, None if they disagree.
fn address_field<'s>(spec: &'s ServiceSpec, scope: &mut Scope<'_>) -> Option<Option<(&'static str, &'s str)>> {
    let listed = spec.cluster_ips.as_deref().unwrap_or_default();
    if listed.len() > 1 {
        scope.error("clusterIPs", ONE_ADDRESS);
    }
    let given = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty());
    match (given, listed.first()) {
        (Some(ip), Some(first)) if ip != first => {
            let message = format!("must start with spec.clusterIP {ip:?}");
            scope.fail("clusterIPs", message)
        }
        (Some(ip), _) => Some(Some(("clusterIP", ip))),
        (None, first) => Some(first.map(|first| ("clusterIPs[0]", first.as_str()))),
    }
}

fn check_requested(text: &str, cidr: Option<Ipv4Cidr>, field: &str, scope: &mut Scope<'_>) -> Option<Ipv4Addr> {
    let Ok(ip) = text.parse::<Ipv4Addr>() else {
        let message = format!("{text:?} is not an IPv4 address (nor \"None\" for a headless service)");
        return scope.fail(field, message);
    };
    match cidr.and_then(|cidr| unusable(ip, cidr)) {
        Some(problem) => scope.fail(field, problem),
        None => Some(ip),
    }
}

/// Why a requested address cannot be a ClusterIP, if it cannot.
fn unusable(ip: Ipv4Addr, cidr: Ipv4Cidr) -> Option<String> {
    let broadcast = cidr.nth(cidr.size() - 1);
    let reason = match ip {
        ip if !cidr.contains(ip) => "is outside serviceCIDR",
        ip if ip == cidr.network() => "is the network address of serviceCIDR",
        ip if Some(ip) == broadcast => "is the broadcast address of serviceCIDR",
        ip if Some(ip) == cidr.nth(DNS_OFFSET) => "is reserved for the cluster DNS server in serviceCIDR",
        _ => return None,
    };
    Some(format!("{ip} {reason} {cidr}"))
}

fn check_ports(ports: &[k8s::ServicePort], address: Option<Address>, scope: &mut Scope<'_>) -> Vec<ServicePort> {
    if ports.is_empty() && address != Some(Address::Headless) {
        scope.error("ports", "at least one port is required");
    }
    let several = ports.len() > 1;
    let mut check = |(port, index)| {
        let mut scope = scope.at(format_args!("ports[{index}]"));
        check_port(port, several, &mut scope)
    };
    let checked: Vec<Option<ServicePort>> = ports.iter().zip(0..).map(&mut check).collect();
    scope.unique(port_names(ports), "port name");
    check_unique_numbers(&checked, scope);
    checked.into_iter().flatten().collect()
}

/// The named ports, with their fields.
fn port_names(ports: &[k8s::ServicePort]) -> impl Iterator<Item = (String, &str)> {
    ports.iter().zip(0..).filter_map(port_name)
}

fn port_name((port, index): (&k8s::ServicePort, usize)) -> Option<(String, &str)> {
    let name = port.name.as_deref().filter(|name| !name.is_empty())?;
    Some((format!("ports[{index}].name"), name))
}

/// One port (`scope` is at it); `several` if the service has more than one (then it must be named).
fn check_port(port: &k8s::ServicePort, several: bool, scope: &mut Scope<'_>) -> Option<ServicePort> {
    let name = check_port_name(port.name.as_deref(), several, scope);
    if port.node_port.is_some_and(|node_port| node_port != 0) {
        scope.error("nodePort", NODE_PORT);
    }
    let protocol = syntax::protocol(port.protocol.as_deref(), "protocol", scope);
    let number = syntax::port_number(port.port, "port", scope)?;
    let target = check_target(port.target_port.as_ref(), number, scope)?;
    Some(ServicePort {
        name,
        port: number,
        protocol,
        target,
    })
}

fn check_port_name(name: Option<&str>, several: bool, scope: &mut Scope<'_>) -> Option<String> {
    match name.filter(|name| !name.is_empty()) {
        None if several => scope.fail("name", NAME_REQUIRED),
        None => None,
        Some(name) => {
            scope.valid("name", name, "port name", syntax::dns_label);
            Some(name.to_string())
        }
    }
}

/// `targetPort`: a number, a container port name, or (unset, 0 or "") the same as `port`.
fn check_target(target: Option<&IntOrString>, port: u16, scope: &mut Scope<'_>) -> Option<TargetPort> {
    match target {
        None | Some(IntOrString::Int(0)) => Some(TargetPort::Number(port)),
        Some(IntOrString::Int(number)) => {
            let number = syntax::port_number(*number, "targetPort", scope);
            number.map(TargetPort::Number)
        }
        Some(IntOrString::String(name)) if name.is_empty() => Some(TargetPort::Number(port)),
        Some(IntOrString::String(name)) => {
            let valid = scope.valid("targetPort", name, "port name", syntax::port_name);
            valid.then(|| TargetPort::Name(name.clone()))
        }
    }
}

/// (port, protocol) pairs are unique; indices are those of `ports`.
fn check_unique_numbers(ports: &[Option<ServicePort>], scope: &mut Scope<'_>) {
    let pairs = ports.iter().zip(0..).filter_map(|(port, index)| {
        let port = port.as_ref()?;
        Some((
            format!("ports[{index}].port"),
            format!("{}/{}", port.port, port.protocol),
        ))
    });
    let pairs: Vec<(String, String)> = pairs.collect();
    let pairs = pairs.iter().map(|(field, pair)| (field.clone(), pair.as_str()));
    scope.unique(pairs, "port");
}

/// A requested ClusterIP may belong to one service only; the later one is in error.
pub(super) fn check_requested_unique(services: &[ServiceChecked<'_>], report: &mut Report) {
    let mut owners: HashMap<Ipv4Addr, &ServiceChecked<'_>> = HashMap::new();
    for service in services {
        let Address::Requested(ip) = service.address else {
            continue;
        };
        match owners.get(&ip) {
            Some(first) => service.error(report, "spec.clusterIP", first.owns(ip)),
            None => service.remember(&mut owners, ip),
        }
    }
}

/// The ClusterIP of each service (None for headless ones), in the order of `services`.
pub(super) fn allocate(services: &[ServiceChecked<'_>], cidr: Ipv4Cidr, report: &mut Report) -> ClusterIps {
    let mut ips: ClusterIps = services.iter().map(|service| service.address.requested()).collect();
    let mut allocator = Allocator::new(cidr, &ips);
    // The order holds indices of `services`, which `ips` has as many of.
    for index in allocation_order(services) {
        let ip = allocator.next();
        if ip.is_none() {
            services[index].error(report, "spec.clusterIP", allocator.exhausted());
        }
        ips[index] = ip;
    }
    ips
}

/// The indices of the services to allocate an address for, sorted by (namespace, name).
fn allocation_order(services: &[ServiceChecked<'_>]) -> Vec<usize> {
    // Indices are taken from `0..services.len()`.
    let allocated = |index: &usize| services[*index].address == Address::Allocate;
    let mut order: Vec<usize> = (0..services.len()).filter(allocated).collect();
    order.sort_by_key(|index| services[*index].key());
    order
}

/// The plan of each service, sorted by (namespace, name).
pub(super) fn plans(services: &[ServiceChecked<'_>], ips: &[Option<Ipv4Addr>]) -> Vec<ServicePlan> {
    let plans = services.iter().zip(ips).map(|(service, ip)| service.plan(*ip));
    let mut plans: Vec<ServicePlan> = plans.collect();
    plans.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    plans
}

/// Warns about selectors that match no pod, and named target ports that no selected pod has.
pub(super) fn warn_unmatched(services: &[ServiceChecked<'_>], pods: &[PodPlan], report: &mut Report) {
    for service in services.iter().filter(|service| !service.selector.is_empty()) {
        let selected = service.selected(pods);
        let mut scope = report.scope(service.origin);
        match selected.is_empty() {
            true => scope.warn("spec.selector", service.matches_nothing()),
            false => service.warn_unresolved(&selected, &mut scope),
        }
    }
}

// === impl ServiceChecked ===

impl ServiceChecked<'_> {
    fn error(&self, report: &mut Report, field: &str, message: String) {
        report.scope(self.origin).error(field, message);
    }

    /// Records the service as the owner of `ip`.
    fn remember<'s>(&'s self, owners: &mut HashMap<Ipv4Addr, &'s Self>, ip: Ipv4Addr) {
        owners.insert(ip, self);
    }

    /// The message for another service requesting `ip`, which this one has.
    fn owns(&self, ip: Ipv4Addr) -> String {
        let (service, location) = (self.meta.qualified(), self.origin.location());
        format!("{ip} is already the ClusterIP of Service {service} ({location})")
    }

    fn key(&self) -> (&str, &str) {
        (&self.meta.namespace, &self.meta.name)
    }

    fn plan(&self, cluster_ip: Option<Ipv4Addr>) -> ServicePlan {
        ServicePlan {
            namespace: self.meta.namespace.clone(),
            name: self.meta.name.clone(),
            cluster_ip,
            selector: self.selector.clone(),
            ports: self.ports.clone(),
            labels: self.meta.labels.clone(),
        }
    }

    /// The pods of the service's namespace that its selector matches.
    fn selected<'p>(&self, pods: &'p [PodPlan]) -> Vec<&'p PodPlan> {
        let namespace = &self.meta.namespace;
        let selects = |pod: &&PodPlan| pod.namespace == *namespace && pod.matches(&self.selector);
        pods.iter().filter(selects).collect()
    }

    fn matches_nothing(&self) -> String {
        let (selector, namespace) = (syntax::selector_text(&self.selector), &self.meta.namespace);
        format!("selector {selector} matches no pod in namespace {namespace:?}")
    }

    /// Warns about each named target port that none of the `selected` pods has.
    fn warn_unresolved(&self, selected: &[&PodPlan], scope: &mut Scope<'_>) {
        for (port, index) in self.ports.iter().zip(0..) {
            let resolves = |pod: &&PodPlan| pod.resolve_target(&port.target, port.protocol).is_some();
            if let TargetPort::Name(name) = &port.target
                && !selected.iter().any(resolves)
            {
                let selector = syntax::selector_text(&self.selector);
                let message = format!(
                    "no pod selected by {selector} has a {} port named {name:?}",
                    port.protocol
                );
                scope.warn(&format!("spec.ports[{index}].targetPort"), message);
            }
        }
    }
}

// === impl Address ===

impl Address {
    fn requested(self) -> Option<Ipv4Addr> {
        match self {
            Address::Requested(ip) => Some(ip),
            Address::Allocate | Address::Headless => None,
        }
    }
}

// === impl Allocator ===

impl Allocator {
    fn new(cidr: Ipv4Cidr, requested: &[Option<Ipv4Addr>]) -> Self {
        let used = requested.iter().flatten().copied().collect();
        let next = FIRST_ALLOCATED;
        Self { cidr, used, next }
    }

    /// The next free address from offset 16 on, never the broadcast address (the last one).
    fn next(&mut self) -> Option<Ipv4Addr> {
        while self.next < self.cidr.size() - 1 {
            let candidate = self.cidr.nth(self.next);
            self.next += 1;
            if let Some(ip) = candidate.filter(|ip| self.used.insert(*ip)) {
                return Some(ip);
            }
        }
        None
    }

    fn exhausted(&self) -> String {
        format!(
            "no address left in serviceCIDR {} (allocation starts at its 16th)",
            self.cidr
        )
    }
}

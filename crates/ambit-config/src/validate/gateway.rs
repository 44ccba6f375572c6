//! Checks of a Gateway beyond its type: the Gateway API CRD's limits, patterns and validation rules (listener
//! uniqueness, which protocols take a hostname or TLS, certificates for TLS termination, address syntax).

use std::collections::HashMap;
use std::net::IpAddr;

use super::{Findings, index, join, labels, syntax};
use crate::gateway::{
    AllowedRoutes, FromNamespaces, Gateway, GatewayAddress, GatewayInfrastructure, GatewayTlsConfig, LabelSelector,
    Listener, LocalObjectReference, TlsMode,
};

const MAX_LISTENERS: usize = 64;
const MAX_ADDRESSES: usize = 16;
const MAX_CERTIFICATE_REFS: usize = 64;
const MAX_TLS_OPTIONS: usize = 16;
const MAX_ROUTE_KINDS: usize = 8;
/// The protocols a listener may name without a domain prefix: the Gateway API's and Istio's waypoint protocol.
const PROTOCOLS: [&str; 6] = ["HTTP", "HTTPS", "TLS", "TCP", "UDP", "HBONE"];
/// Protocols whose listeners take no TLS configuration.
const NO_TLS: [&str; 3] = ["HTTP", "TCP", "UDP"];
/// Protocols whose listeners take no hostname.
const NO_HOSTNAME: [&str; 2] = ["TCP", "UDP"];

pub(super) fn gateway(gateway: &Gateway, findings: &mut Findings) {
    let spec = &gateway.spec;
    if findings.required("spec.gatewayClassName", &spec.gateway_class_name) {
        findings.check("spec.gatewayClassName", &spec.gateway_class_name, syntax::object_name);
    }
    listeners(&spec.listeners, findings);
    findings.at_most("spec.addresses", &spec.addresses, MAX_ADDRESSES);
    for (i, address) in spec.addresses.iter().enumerate() {
        self::address(address, &index("spec", "addresses", i), findings);
    }
    if let Some(infrastructure) = &spec.infrastructure {
        self::infrastructure(infrastructure, findings);
    }
}

/// 1 to 64 listeners, each valid, with unique names and unique port/protocol/hostname combinations.
fn listeners(listeners: &[Listener], findings: &mut Findings) {
    if listeners.is_empty() {
        findings.error("spec.listeners", "at least one listener is required");
    }
    findings.at_most("spec.listeners", listeners, MAX_LISTENERS);
    let mut names = HashMap::new();
    let mut combinations = HashMap::new();
    for (i, listener) in listeners.iter().enumerate() {
        let path = index("spec", "listeners", i);
        self::listener(listener, &path, findings);
        if let Some(first) = names.insert(listener.name.as_str(), i) {
            let message = format!(
                "duplicate listener name {:?} (also spec.listeners[{first}])",
                listener.name
            );
            findings.error(&join(&path, "name"), message);
        }
        let combination = (listener.port, listener.protocol.as_str(), listener.hostname.as_deref());
        if let Some(first) = combinations.insert(combination, i) {
            let message = format!("the same port, protocol and hostname as spec.listeners[{first}]");
            findings.error(&path, message);
        }
    }
}

fn listener(listener: &Listener, path: &str, findings: &mut Findings) {
    findings.check(&join(path, "name"), &listener.name, syntax::dns_subdomain);
    findings.port(&join(path, "port"), listener.port);
    let protocol = listener.protocol.as_str();
    self::protocol(protocol, &join(path, "protocol"), findings);
    if let Some(hostname) = &listener.hostname {
        let field = join(path, "hostname");
        if NO_HOSTNAME.contains(&protocol) {
            findings.error(&field, format!("must not be set for protocol {protocol}"));
        } else {
            findings.check(&field, hostname, syntax::hostname);
        }
    }
    if let Some(tls) = &listener.tls {
        self::tls(tls, protocol, &join(path, "tls"), findings);
    }
    if let Some(allowed) = &listener.allowed_routes {
        allowed_routes(allowed, &join(path, "allowedRoutes"), findings);
    }
}

/// One of [`PROTOCOLS`], or a domain-prefixed custom protocol (`example.com/Custom`).
fn protocol(protocol: &str, field: &str, findings: &mut Findings) {
    if PROTOCOLS.contains(&protocol) {
        return;
    }
    let custom = protocol.split_once('/').is_some_and(|(domain, name)| {
        syntax::dns_subdomain(domain).is_ok() && !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric())
    });
    if !custom {
        let known = PROTOCOLS.join(", ");
        let message =
            format!("{protocol:?} is not a protocol: use {known}, or a domain-prefixed one (example.com/Name)");
        findings.error(field, message);
    }
}

/// TLS settings: not for HTTP, TCP or UDP; only Terminate for HTTPS; certificates (or options) to terminate.
fn tls(tls: &GatewayTlsConfig, protocol: &str, path: &str, findings: &mut Findings) {
    if NO_TLS.contains(&protocol) {
        return findings.error(path, format!("must not be set for protocol {protocol}"));
    }
    let mode = tls.mode.unwrap_or(TlsMode::Terminate);
    if protocol == "HTTPS" && mode != TlsMode::Terminate {
        findings.error(&join(path, "mode"), "must be Terminate for protocol HTTPS");
    }
    if mode == TlsMode::Terminate && tls.certificate_refs.is_empty() && tls.options.is_empty() {
        findings.error(
            &join(path, "certificateRefs"),
            "required to terminate TLS (or set options)",
        );
    }
    findings.at_most(
        &join(path, "certificateRefs"),
        &tls.certificate_refs,
        MAX_CERTIFICATE_REFS,
    );
    for (i, certificate) in tls.certificate_refs.iter().enumerate() {
        let path = index(path, "certificateRefs", i);
        findings.check(&join(&path, "name"), &certificate.name, syntax::object_name);
        findings.check_some(
            &join(&path, "namespace"),
            certificate.namespace.as_ref(),
            syntax::dns_label,
        );
    }
    let options = join(path, "options");
    if tls.options.len() > MAX_TLS_OPTIONS {
        findings.error(
            &options,
            format!(
                "has {} entries; at most {MAX_TLS_OPTIONS} are allowed",
                tls.options.len()
            ),
        );
    }
    for key in tls.options.keys() {
        findings.check(&super::map_path(&options, key), key, syntax::qualified_name);
    }
}

fn allowed_routes(allowed: &AllowedRoutes, path: &str, findings: &mut Findings) {
    if let Some(namespaces) = &allowed.namespaces {
        let path = join(path, "namespaces");
        match (&namespaces.from, &namespaces.selector) {
            (Some(FromNamespaces::Selector), None) => {
                findings.error(&join(&path, "selector"), "required when from is Selector");
            }
            (_, Some(selector)) => label_selector(selector, &join(&path, "selector"), findings),
            _ => {}
        }
    }
    findings.at_most(&join(path, "kinds"), &allowed.kinds, MAX_ROUTE_KINDS);
    for (i, kind) in allowed.kinds.iter().enumerate() {
        let path = index(path, "kinds", i);
        findings.check(&join(&path, "kind"), &kind.kind, syntax::kind);
        findings.check_some(&join(&path, "group"), kind.group.as_ref(), syntax::group);
    }
}

/// A label selector: valid labels; values only with In and NotIn.
pub(super) fn label_selector(selector: &LabelSelector, path: &str, findings: &mut Findings) {
    labels(selector.match_labels.iter(), &join(path, "matchLabels"), findings);
    for (i, requirement) in selector.match_expressions.iter().enumerate() {
        let path = index(path, "matchExpressions", i);
        findings.check(&join(&path, "key"), &requirement.key, syntax::qualified_name);
        use crate::gateway::SelectorOperator::{DoesNotExist, Exists, In, NotIn};
        match requirement.operator {
            In | NotIn if requirement.values.is_empty() => {
                findings.error(&join(&path, "values"), "required for the operators In and NotIn");
            }
            Exists | DoesNotExist if !requirement.values.is_empty() => {
                findings.error(
                    &join(&path, "values"),
                    "must be empty for the operators Exists and DoesNotExist",
                );
            }
            _ => {}
        }
    }
}

/// An IP address (the default type), a hostname, or a value of a domain-prefixed custom type.
fn address(address: &GatewayAddress, path: &str, findings: &mut Findings) {
    let field = join(path, "value");
    match address.address_type.as_deref().unwrap_or("IPAddress") {
        "IPAddress" if address.value.parse::<IpAddr>().is_err() => {
            findings.error(&field, format!("{:?} is not an IP address", address.value));
        }
        "Hostname" => _ = findings.check(&field, &address.value, syntax::precise_hostname),
        "IPAddress" => {}
        custom if custom.contains('/') => _ = findings.check(&field, &address.value, syntax::object_name),
        other => {
            let message = format!("{other:?} is not an address type: use IPAddress, Hostname or a domain-prefixed one");
            findings.error(&join(path, "type"), message);
        }
    }
}

fn infrastructure(infrastructure: &GatewayInfrastructure, findings: &mut Findings) {
    let path = "spec.infrastructure";
    labels(infrastructure.labels.iter(), &join(path, "labels"), findings);
    for key in infrastructure.annotations.keys() {
        let field = super::map_path(&join(path, "annotations"), key);
        findings.check(&field, key, syntax::qualified_name);
    }
    if let Some(parameters) = &infrastructure.parameters_ref {
        local_reference(parameters, &join(path, "parametersRef"), findings);
    }
}

/// A reference to an object in the same namespace: group ("" for core), kind and name.
pub(super) fn local_reference(reference: &LocalObjectReference, path: &str, findings: &mut Findings) {
    findings.check(&join(path, "group"), &reference.group, syntax::group);
    findings.check(&join(path, "kind"), &reference.kind, syntax::kind);
    findings.check(&join(path, "name"), &reference.name, syntax::object_name);
}

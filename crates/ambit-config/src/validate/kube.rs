//! Modest checks of the Kubernetes kinds a cluster source feeds (and `parse` accepts so that the CLI can say why
//! they cannot be applied): the port numbers and port names translation reads.

use k8s_openapi::api::core::v1::{Container, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Findings, index, join, syntax};

pub(super) fn pod(pod: &Pod, findings: &mut Findings) {
    let Some(spec) = &pod.spec else { return };
    let init = spec.init_containers.as_deref().unwrap_or_default();
    for (field, containers) in [("containers", spec.containers.as_slice()), ("initContainers", init)] {
        for (i, container) in containers.iter().enumerate() {
            self::container(container, &index("spec", field, i), findings);
        }
    }
}

/// A container's ports: numbers 1 to 65535, names IANA service names.
fn container(container: &Container, path: &str, findings: &mut Findings) {
    for (j, port) in container.ports.iter().flatten().enumerate() {
        let path = index(path, "ports", j);
        findings.port(&join(&path, "containerPort"), port.container_port);
        if let Some(host_port) = port.host_port.filter(|port| *port != 0) {
            findings.port(&join(&path, "hostPort"), host_port);
        }
        findings.check_some(&join(&path, "name"), port.name.as_ref(), syntax::port_name);
    }
}

pub(super) fn service(service: &Service, findings: &mut Findings) {
    let Some(spec) = &service.spec else { return };
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        self::service_port(port, &index("spec", "ports", i), findings);
    }
}

/// A Service port: port (and nodePort) 1 to 65535, targetPort a number or a container port's name.
fn service_port(port: &ServicePort, path: &str, findings: &mut Findings) {
    findings.port(&join(path, "port"), port.port);
    if let Some(node_port) = port.node_port {
        findings.port(&join(path, "nodePort"), node_port);
    }
    findings.check_some(&join(path, "name"), port.name.as_ref(), syntax::dns_label);
    match &port.target_port {
        Some(IntOrString::Int(number)) => findings.port(&join(path, "targetPort"), *number),
        Some(IntOrString::String(name)) => _ = findings.check(&join(path, "targetPort"), name, syntax::port_name),
        None => {}
    }
}

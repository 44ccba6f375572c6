//! Readiness probes: a TCP connect or an HTTP GET to the pod IP, run from the pod's node as the kubelet does.
//!
//! A probe port is a number, or the name of a container port of the pod (the probe's own container first).
//! Timing defaults as in Kubernetes, where 0 also means "the default": initialDelaySeconds 0, periodSeconds 10,
//! timeoutSeconds 1, failureThreshold 3, successThreshold 1. `exec` and `grpc` probes are not supported.

use k8s_openapi::api::core::v1::{self as k8s, HTTPGetAction, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{Probe, ProbeAction};

use super::container::ContainerSpec;
use super::syntax;
use super::{Scope, has_items};

const USE: &str = "use tcpSocket or httpGet";

/// The probe's container and the pod's containers, to resolve named ports.
pub(super) struct PortScope<'a> {
    pub containers: &'a [ContainerSpec],
    pub own: usize,
}

/// Checks a readiness probe (`scope` is at it, e.g. `spec.containers[0].readinessProbe`).
pub(super) fn check(probe: &k8s::Probe, ports: &PortScope<'_>, scope: &mut Scope<'_>) -> Option<Probe> {
    let action = check_action(probe, ports, scope);
    let timing = check_timing(probe, scope)?;
    Some(with_timing(action?, timing))
}

fn with_timing(action: ProbeAction, timing: [u32; 5]) -> Probe {
    let [
        initial_delay_seconds,
        period_seconds,
        timeout_seconds,
        failure_threshold,
        success_threshold,
    ] = timing;
    Probe {
        action,
        initial_delay_seconds,
        period_seconds,
        timeout_seconds,
        failure_threshold,
        success_threshold,
    }
}

/// The five timing fields, in the order of [`Probe`].
fn check_timing(probe: &k8s::Probe, scope: &mut Scope<'_>) -> Option<[u32; 5]> {
    let fields = [
        ("initialDelaySeconds", probe.initial_delay_seconds, 0),
        ("periodSeconds", probe.period_seconds, 10),
        ("timeoutSeconds", probe.timeout_seconds, 1),
        ("failureThreshold", probe.failure_threshold, 3),
        ("successThreshold", probe.success_threshold, 1),
    ];
    let values = fields.map(|(field, value, default)| seconds(value, default, field, scope));
    let [a, b, c, d, e] = values;
    Some([a?, b?, c?, d?, e?])
}

/// A timing field: unset or 0 means `default`; negative is an error.
fn seconds(value: Option<i32>, default: u32, field: &str, scope: &mut Scope<'_>) -> Option<u32> {
    let value = value.unwrap_or(0);
    let seconds = if value == 0 {
        Some(default)
    } else {
        u32::try_from(value).ok()
    };
    seconds.or_else(|| scope.fail(field, format!("{value} must not be negative")))
}

fn check_action(probe: &k8s::Probe, ports: &PortScope<'_>, scope: &mut Scope<'_>) -> Option<ProbeAction> {
    let mut supported = true;
    for name in unsupported_actions(probe) {
        supported = false;
        scope.error(
            name,
            format!("{name} probes are not supported by the local cluster; {USE}"),
        );
    }
    match (&probe.tcp_socket, &probe.http_get) {
        (Some(_), Some(_)) => scope.fail("", "only one of tcpSocket and httpGet may be set"),
        _ if !supported => None,
        (Some(tcp), None) => tcp_action(tcp, ports, &mut scope.at("tcpSocket")),
        (None, Some(http)) => http_action(http, ports, &mut scope.at("httpGet")),
        (None, None) => scope.fail("", "needs tcpSocket or httpGet"),
    }
}

fn unsupported_actions(probe: &k8s::Probe) -> impl Iterator<Item = &'static str> {
    let set = [("exec", probe.exec.is_some()), ("grpc", probe.grpc.is_some())];
    set.into_iter().filter_map(|(name, set)| set.then_some(name))
}

fn tcp_action(tcp: &TCPSocketAction, ports: &PortScope<'_>, scope: &mut Scope<'_>) -> Option<ProbeAction> {
    check_no_host(tcp.host.as_deref(), scope);
    let port = resolve_port(&tcp.port, ports, scope)?;
    Some(ProbeAction::Tcp { port })
}

fn http_action(http: &HTTPGetAction, ports: &PortScope<'_>, scope: &mut Scope<'_>) -> Option<ProbeAction> {
    check_no_host(http.host.as_deref(), scope);
    if has_items(&http.http_headers) {
        scope.error("httpHeaders", "not supported by the local cluster");
    }
    if let Some(scheme) = http.scheme.as_deref().filter(|scheme| *scheme != "HTTP") {
        scope.error("scheme", format!("{scheme:?} is not supported; use HTTP"));
    }
    let port = resolve_port(&http.port, ports, scope)?;
    let path = absolute_path(http.path.as_deref().unwrap_or_default());
    Some(ProbeAction::Http { port, path })
}

fn check_no_host(host: Option<&str>, scope: &mut Scope<'_>) {
    if host.is_some_and(|host| !host.is_empty()) {
        scope.error("host", "not supported: the probe connects to the pod IP");
    }
}

/// The request path, `/` if empty.
fn absolute_path(path: &str) -> String {
    match path.starts_with('/') {
        true => path.to_string(),
        false => format!("/{path}"),
    }
}

fn resolve_port(port: &IntOrString, ports: &PortScope<'_>, scope: &mut Scope<'_>) -> Option<u16> {
    match port {
        IntOrString::Int(number) => syntax::port_number(*number, "port", scope),
        IntOrString::String(name) => {
            let message = || format!("no container port named {name:?} in this pod");
            ports.find(name).or_else(|| scope.fail("port", message()))
        }
    }
}

// === impl PortScope ===

impl<'a> PortScope<'a> {
    pub fn new(containers: &'a [ContainerSpec], own: usize) -> Self {
        Self { containers, own }
    }

    /// The number of the port named `name`, looking in the probe's own container first.
    fn find(&self, name: &str) -> Option<u16> {
        let own = self.containers.get(self.own).into_iter();
        let mut ports = own.chain(self.containers).flat_map(|container| container.ports.iter());
        ports
            .find(|port| port.name.as_deref() == Some(name))
            .map(|port| port.port)
    }
}

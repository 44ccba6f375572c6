//! Syntax rules of names and values, as the Kubernetes API validates them. Each rule returns the reason a value
//! is invalid, phrased to follow the value in a message. The rules shared with the control plane's config store
//! (DNS labels and subdomains, port names, label values) come from [`ambit_config::syntax`]; here are those only
//! the manifests need, and the checks that report to a [`Scope`].

pub(super) use ambit_config::syntax::{Rule, dns_1035_label, dns_label, dns_subdomain, port_name};
use ambit_config::syntax::{ensure, label_value};

use crate::model::Protocol;

use super::{Labels, Scope};

const ENV_CHARS: &str = "must consist of printable ASCII characters other than '=' and space";

/// A lowercase DNS name whose every label is a [`dns_label`] (the cluster domain).
pub(super) fn dns_name(value: &str) -> Result<(), String> {
    dns_subdomain(value)?;
    value.split('.').try_for_each(dns_label)
}

/// An environment variable name: printable ASCII without `=`.
pub(super) fn env_name(value: &str) -> Result<(), String> {
    ensure(!value.is_empty(), "must not be empty")?;
    ensure(value.chars().all(|c| c.is_ascii_graphic() && c != '='), ENV_CHARS)
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
/// Worded as the manifests always were ("prefix P ...", a second `/` is a bad character of the name), unlike the
/// config store's rule.
pub(super) fn qualified_name(value: &str) -> Result<(), String> {
    let (prefix, name) = value.split_once('/').unwrap_or(("", value));
    if !prefix.is_empty() || value.starts_with('/') {
        dns_subdomain(prefix).map_err(|reason| format!("prefix {prefix:?} {reason}"))?;
    }
    ensure(!name.is_empty(), "must have a name")?;
    label_value(name)
}

/// Checks the keys and values of `labels` at `field` (e.g. "metadata.labels").
pub(super) fn check_labels(labels: &Labels, field: &str, scope: &mut Scope<'_>) {
    for (key, value) in labels {
        scope.valid(field, key, "label key", qualified_name);
        scope.valid(field, value, &format!("label {key:?}: value"), label_value);
    }
}

/// Checks the keys of `annotations` at `field` (values are free).
pub(super) fn check_annotations(annotations: &Labels, field: &str, scope: &mut Scope<'_>) {
    for key in annotations.keys() {
        scope.valid(field, key, "annotation key", qualified_name);
    }
}

/// A port number field: 1..=65535.
pub(super) fn port_number(value: i32, field: &str, scope: &mut Scope<'_>) -> Option<u16> {
    let port = u16::try_from(value).ok().filter(|port| *port > 0);
    port.or_else(|| scope.fail(field, format!("{value} is out of range 1-65535")))
}

/// A `protocol` field: TCP (the default) or UDP.
pub(super) fn protocol(value: Option<&str>, field: &str, scope: &mut Scope<'_>) -> Protocol {
    let message = match value {
        None | Some("TCP") => return Protocol::Tcp,
        Some("UDP") => return Protocol::Udp,
        Some("SCTP") => "SCTP is not supported by the local cluster (use TCP or UDP)".to_string(),
        Some(other) => format!("unknown protocol {other:?}; supported: TCP, UDP"),
    };
    scope.error(field, message);
    Protocol::Tcp
}

/// `key=value` pairs joined with commas, as kubectl shows selectors.
pub(super) fn selector_text(selector: &Labels) -> String {
    let pairs: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

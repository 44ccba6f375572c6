//! Syntax rules of names and values, as the Kubernetes API validates them. Each rule returns the reason a value
//! is invalid, phrased to follow the value in a message.

use crate::model::Protocol;

use super::{Labels, Scope};

/// The longest DNS label (RFC 1123).
const MAX_LABEL: usize = 63;
/// The longest DNS subdomain.
const MAX_SUBDOMAIN: usize = 253;
/// The longest IANA service name (a named port).
const MAX_PORT_NAME: usize = 15;

/// A syntax rule: Ok, or why the value breaks it.
pub(super) type Rule = fn(&str) -> Result<(), String>;

const LABEL_CHARS: &str = "must consist of lowercase letters, digits and '-'";
const LABEL_ENDS: &str = "must start and end with a lowercase letter or digit";
const VALUE_CHARS: &str = "must consist of letters, digits, '-', '_' and '.', and start and end with a letter or digit";
const ENV_CHARS: &str = "must consist of printable ASCII characters other than '=' and space";
const PORT_NAME_DASHES: &str = "must not contain '--' nor start or end with '-'";

/// A lowercase RFC 1123 label: at most 63 of `a-z`, `0-9` and `-`, starting and ending with a letter or digit.
pub(super) fn dns_label(value: &str) -> Result<(), String> {
    at_most(value, MAX_LABEL)?;
    label_chars(value)
}

/// An RFC 1035 label (Service names): a [`dns_label`] that starts with a letter.
pub(super) fn dns_1035_label(value: &str) -> Result<(), String> {
    dns_label(value)?;
    let letter = value.starts_with(|c: char| c.is_ascii_lowercase());
    ensure(letter, "must start with a lowercase letter")
}

/// A lowercase RFC 1123 subdomain: dot-separated labels, at most 253 characters in all.
pub(super) fn dns_subdomain(value: &str) -> Result<(), String> {
    at_most(value, MAX_SUBDOMAIN)?;
    value.split('.').try_for_each(label_chars)
}

/// A lowercase DNS name whose every label is a [`dns_label`] (the cluster domain).
pub(super) fn dns_name(value: &str) -> Result<(), String> {
    dns_subdomain(value)?;
    value.split('.').try_for_each(dns_label)
}

/// The characters of one label: non-empty, `a-z0-9-`, alphanumeric at both ends.
fn label_chars(label: &str) -> Result<(), String> {
    ensure(
        !label.is_empty(),
        "must not be empty (nor have empty parts between dots)",
    )?;
    if let Some(bad) = label.chars().find(|c| !is_label_char(*c)) {
        return Err(format!("{LABEL_CHARS} (found {bad:?})"));
    }
    ensure(!label.starts_with('-') && !label.ends_with('-'), LABEL_ENDS)
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// An IANA service name (a named port): at most 15 of `a-z0-9-`, at least one letter, no `--`, no `-` at the ends.
pub(super) fn port_name(value: &str) -> Result<(), String> {
    ensure(!value.is_empty(), "must not be empty")?;
    at_most(value, MAX_PORT_NAME)?;
    ensure(value.chars().all(is_label_char), LABEL_CHARS)?;
    let letter = value.chars().any(|c| c.is_ascii_lowercase());
    ensure(letter, "must contain at least one letter")?;
    let dashes = value.contains("--") || value.starts_with('-') || value.ends_with('-');
    ensure(!dashes, PORT_NAME_DASHES)
}

/// An environment variable name: printable ASCII without `=`.
pub(super) fn env_name(value: &str) -> Result<(), String> {
    ensure(!value.is_empty(), "must not be empty")?;
    ensure(value.chars().all(|c| c.is_ascii_graphic() && c != '='), ENV_CHARS)
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub(super) fn qualified_name(value: &str) -> Result<(), String> {
    let (prefix, name) = value.split_once('/').unwrap_or(("", value));
    if !prefix.is_empty() || value.starts_with('/') {
        dns_subdomain(prefix).map_err(|reason| format!("prefix {prefix:?} {reason}"))?;
    }
    ensure(!name.is_empty(), "must have a name")?;
    label_value(name)
}

/// A label value: empty, or at most 63 of `A-Za-z0-9-_.`, alphanumeric at both ends.
pub(super) fn label_value(value: &str) -> Result<(), String> {
    at_most(value, MAX_LABEL)?;
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let end = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    let ends = end(value.chars().next()) && end(value.chars().last());
    ensure(value.chars().all(inner) && ends, VALUE_CHARS)
}

fn at_most(value: &str, max: usize) -> Result<(), String> {
    let len = value.len();
    ensure(len <= max, &format!("must be at most {max} characters (it has {len})"))
}

fn ensure(condition: bool, reason: &str) -> Result<(), String> {
    if condition { Ok(()) } else { Err(reason.to_string()) }
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

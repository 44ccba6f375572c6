//! Syntax rules of names and values, as the Kubernetes API and the Gateway API CRDs validate them. Each rule
//! returns the reason a value is invalid, phrased to follow the quoted value in a message.
//!
//! The Kubernetes rules (DNS labels and subdomains, named ports, label values) and the helpers that compose them
//! ([`at_most`], [`ensure`]) are public: the local cluster's manifest loader checks its objects with the same
//! rules and the same words.

use std::net::IpAddr;

/// The longest DNS label (RFC 1123).
const MAX_LABEL: usize = 63;
/// The longest DNS subdomain.
const MAX_SUBDOMAIN: usize = 253;
/// The longest IANA service name (a named port).
const MAX_PORT_NAME: usize = 15;
/// The longest header or query parameter name the Gateway API accepts.
const MAX_HEADER_NAME: usize = 256;

/// A syntax rule: Ok, or why the value breaks it.
pub type Rule = fn(&str) -> Result<(), String>;

const LABEL_CHARS: &str = "must consist of lowercase letters, digits and '-'";
const LABEL_ENDS: &str = "must start and end with a lowercase letter or digit";
const VALUE_CHARS: &str = "must consist of letters, digits, '-', '_' and '.', and start and end with a letter or digit";

/// A lowercase RFC 1123 label: at most 63 of `a-z`, `0-9` and `-`, starting and ending with a letter or digit.
pub fn dns_label(value: &str) -> Result<(), String> {
    at_most(value, MAX_LABEL)?;
    label_chars(value)
}

/// An RFC 1035 label (Service names): a [`dns_label`] that starts with a letter.
pub fn dns_1035_label(value: &str) -> Result<(), String> {
    dns_label(value)?;
    let letter = value.starts_with(|c: char| c.is_ascii_lowercase());
    ensure(letter, "must start with a lowercase letter")
}

/// A lowercase RFC 1123 subdomain: dot-separated labels, at most 253 characters in all.
pub fn dns_subdomain(value: &str) -> Result<(), String> {
    at_most(value, MAX_SUBDOMAIN)?;
    value.split('.').try_for_each(label_chars)
}

/// A Gateway API hostname: a [`dns_subdomain`] whose leftmost label may be `*`, and not an IP address.
pub(crate) fn hostname(value: &str) -> Result<(), String> {
    ensure(value.parse::<IpAddr>().is_err(), "is an IP address; use a host name")?;
    let rest = value.strip_prefix("*.").unwrap_or(value);
    ensure(
        !rest.contains('*'),
        "may have a wildcard only as its whole leftmost label (`*.example.com`)",
    )?;
    dns_subdomain(rest)
}

/// A Gateway API precise hostname: a [`hostname`] without a wildcard.
pub(crate) fn precise_hostname(value: &str) -> Result<(), String> {
    ensure(!value.contains('*'), "must not have a wildcard")?;
    hostname(value)
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
pub fn port_name(value: &str) -> Result<(), String> {
    ensure(!value.is_empty(), "must not be empty")?;
    at_most(value, MAX_PORT_NAME)?;
    ensure(value.chars().all(is_label_char), LABEL_CHARS)?;
    let letter = value.chars().any(|c| c.is_ascii_lowercase());
    ensure(letter, "must contain at least one letter")?;
    let dashes = value.contains("--") || value.starts_with('-') || value.ends_with('-');
    ensure(!dashes, "must not contain '--' nor start or end with '-'")
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub(crate) fn qualified_name(value: &str) -> Result<(), String> {
    let (prefix, name) = value.split_once('/').unwrap_or(("", value));
    if !prefix.is_empty() || value.starts_with('/') {
        dns_subdomain(prefix).map_err(|reason| format!("has a prefix {prefix:?} that {reason}"))?;
    }
    ensure(!name.is_empty(), "must have a name")?;
    ensure(!name.contains('/'), "must have at most one '/'")?;
    label_value(name)
}

/// A label value: empty, or at most 63 of `A-Za-z0-9-_.`, alphanumeric at both ends.
pub fn label_value(value: &str) -> Result<(), String> {
    at_most(value, MAX_LABEL)?;
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let end = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    let ends = end(value.chars().next()) && end(value.chars().last());
    ensure(value.chars().all(inner) && ends, VALUE_CHARS)
}

/// An HTTP header (or query parameter) name: RFC 7230 token characters, at most 256.
pub(crate) fn header_name(value: &str) -> Result<(), String> {
    ensure(!value.is_empty(), "must not be empty")?;
    at_most(value, MAX_HEADER_NAME)?;
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    ensure(
        value.chars().all(token),
        "must consist of letters, digits and !#$%&'*+-.^_`|~",
    )
}

/// A Gateway API group: empty (core) or a DNS subdomain.
pub(crate) fn group(value: &str) -> Result<(), String> {
    if value.is_empty() { Ok(()) } else { dns_subdomain(value) }
}

/// A Gateway API kind: 1 to 63 letters, digits and '-', starting with a letter.
pub(crate) fn kind(value: &str) -> Result<(), String> {
    ensure(!value.is_empty(), "must not be empty")?;
    at_most(value, MAX_LABEL)?;
    let chars = value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let letter = value.starts_with(|c: char| c.is_ascii_alphabetic());
    ensure(
        chars && letter && !value.ends_with('-'),
        "must be a kind name like Service",
    )
}

/// A Gateway API object name: 1 to 253 characters.
pub(crate) fn object_name(value: &str) -> Result<(), String> {
    ensure(!value.is_empty(), "must not be empty")?;
    at_most(value, MAX_SUBDOMAIN)
}

/// A Gateway API duration (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`), in milliseconds.
pub fn duration_ms(value: &str) -> Result<u64, String> {
    const FORMAT: &str = "is not a duration: write 1 to 4 parts of up to 5 digits and a unit h, m, s or ms (`1h30m`)";
    let mut rest = value;
    let mut total = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, tail) = rest.split_at(digits);
        let (unit_ms, tail) = duration_unit(tail).ok_or(FORMAT)?;
        let number: u64 = number.parse().map_err(|_| FORMAT)?;
        ensure((1..=5).contains(&digits), FORMAT)?;
        total += number * unit_ms;
        parts += 1;
        rest = tail;
    }
    ensure((1..=4).contains(&parts), FORMAT)?;
    Ok(total)
}

/// The unit at the start of `text` (in milliseconds) and the text after it.
fn duration_unit(text: &str) -> Option<(u64, &str)> {
    let units = [("ms", 1), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)];
    units
        .into_iter()
        .find_map(|(unit, ms)| text.strip_prefix(unit).map(|rest| (ms, rest)))
}

/// `value` is at most `max` long, in bytes (characters, for the ASCII names these rules accept), or why not.
pub fn at_most(value: &str, max: usize) -> Result<(), String> {
    let len = value.len();
    ensure(len <= max, &format!("must be at most {max} characters (it has {len})"))
}

/// Ok if `condition` holds, else `reason`: a rule's single check.
pub fn ensure(condition: bool, reason: &str) -> Result<(), String> {
    if condition { Ok(()) } else { Err(reason.to_string()) }
}

#[cfg(test)]
mod tests;

//! The request changes HTTPRoute filters make: header operations, URL rewrites and redirects, read from the route
//! once, and the new path or `Location` worked out per request.

use ambit_config::gateway::{HttpHeaderFilter, HttpPathModifier, PathModifierType};
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::RequestHead;
use super::policy::Finding;

/// One header change, as a RequestHeaderModifier or ResponseHeaderModifier filter asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderOp {
    /// Replace every value of the header with this one.
    Set(HeaderName, HeaderValue),
    /// Append a value, keeping those the header has.
    Add(HeaderName, HeaderValue),
    /// Remove the header.
    Remove(HeaderName),
}

/// A new path: the whole path, or the part the rule's PathPrefix matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PathModifier {
    Full(String),
    Prefix(String),
}

/// A URLRewrite filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

/// A RequestRedirect filter, with the defaults that do not depend on the request applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Redirect {
    /// `http` or `https`; the request's scheme (`http` inside the mesh) when `None`.
    pub scheme: Option<&'static str>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathModifier>,
    pub status: StatusCode,
}

// === impl HeaderOp ===

impl HeaderOp {
    /// Applies the change to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            HeaderOp::Set(name, value) => _ = headers.insert(name.clone(), value.clone()),
            HeaderOp::Add(name, value) => _ = headers.append(name.clone(), value.clone()),
            HeaderOp::Remove(name) => _ = headers.remove(name),
        }
    }

    /// Applies `ops` to `headers`, in order.
    pub fn apply_all(ops: &[HeaderOp], headers: &mut HeaderMap) {
        ops.iter().for_each(|op| op.apply(headers));
    }
}

/// The operations of a header filter at `path`: its sets, then adds, then removes.
pub(super) fn header_ops(filter: &HttpHeaderFilter, path: &str) -> Result<Vec<HeaderOp>, Finding> {
    let mut ops = Vec::new();
    for (field, headers, set) in [("set", &filter.set, true), ("add", &filter.add, false)] {
        for (k, header) in headers.iter().enumerate() {
            let at = format!("{path}.{field}[{k}]");
            let name = header_name(&header.name, &format!("{at}.name"))?;
            let value = HeaderValue::from_str(&header.value).map_err(|_| {
                let message = format!(
                    "{:?} is not a header value: use visible ASCII, spaces and tabs",
                    header.value
                );
                (format!("{at}.value"), message)
            })?;
            ops.push(if set {
                HeaderOp::Set(name, value)
            } else {
                HeaderOp::Add(name, value)
            });
        }
    }
    for (k, name) in filter.remove.iter().enumerate() {
        ops.push(HeaderOp::Remove(header_name(name, &format!("{path}.remove[{k}]"))?));
    }
    Ok(ops)
}

/// A header name (any case) at `field`.
pub(super) fn header_name(name: &str, field: &str) -> Result<HeaderName, Finding> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| (field.to_string(), format!("{name:?} is not a header name")))
}

/// A path modifier at `path`: the field its type names must be set.
pub(super) fn path_modifier(modifier: &HttpPathModifier, path: &str) -> Result<PathModifier, Finding> {
    let missing = |field: &str, kind: &str| (format!("{path}.{field}"), format!("required when type is {kind}"));
    match modifier.modifier_type {
        PathModifierType::ReplaceFullPath => (modifier.replace_full_path.clone())
            .map(PathModifier::Full)
            .ok_or_else(|| missing("replaceFullPath", "ReplaceFullPath")),
        PathModifierType::ReplacePrefixMatch => (modifier.replace_prefix_match.clone())
            .map(PathModifier::Prefix)
            .ok_or_else(|| missing("replacePrefixMatch", "ReplacePrefixMatch")),
    }
}

/// A PathPrefix value as matched: without its trailing `/` (so `/` is empty).
pub(super) fn normalized_prefix(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

/// Whether `path` starts with the (normalized) `prefix` on a segment boundary.
pub(super) fn has_prefix(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `path` with the matched (normalized) `prefix` replaced by `replacement`, as in the Gateway API's table of
/// ReplacePrefixMatch examples: `/foo/bar` with `/foo` replaced by `/xyz` is `/xyz/bar`, `/foo` with `/foo` replaced
/// by nothing is `/`.
pub(super) fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    let replaced = format!("{}{rest}", replacement.trim_end_matches('/'));
    match replaced.is_empty() {
        true => "/".to_string(),
        false => replaced,
    }
}

/// The path a modifier makes of the request's; `prefix` is the normalized PathPrefix the request matched.
pub(super) fn modified_path(modifier: &PathModifier, path: &str, prefix: Option<&str>) -> String {
    match (modifier, prefix) {
        (PathModifier::Full(full), _) => full.clone(),
        (PathModifier::Prefix(replacement), Some(prefix)) => replace_prefix(path, prefix, replacement),
        // Compilation gives every entry of a rule that replaces a prefix its prefix.
        (PathModifier::Prefix(_), None) => path.to_string(),
    }
}

/// The `Location` of a redirect. `service_port` stands for the listener port: the Service port the client used.
/// The port is left out when it is the scheme's own (80 for http, 443 for https). Without a hostname (neither in
/// the filter nor in the request) the location is relative: the path and query only.
pub(super) fn location(redirect: &Redirect, head: &RequestHead<'_>, prefix: Option<&str>, service_port: u16) -> String {
    let path = match &redirect.path {
        Some(modifier) => modified_path(modifier, head.path, prefix),
        None => head.path.to_string(),
    };
    let query = head.query.filter(|query| !query.is_empty());
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let host = redirect.hostname.as_deref().unwrap_or(host_of(head.authority));
    if host.is_empty() {
        return path_and_query;
    }
    let scheme = redirect.scheme.unwrap_or("http");
    let port = (redirect.port)
        .or_else(|| redirect.scheme.map(well_known_port))
        .unwrap_or(service_port);
    match port == well_known_port(scheme) {
        true => format!("{scheme}://{host}{path_and_query}"),
        false => format!("{scheme}://{host}:{port}{path_and_query}"),
    }
}

fn well_known_port(scheme: &str) -> u16 {
    match scheme {
        "https" => 443,
        _ => 80,
    }
}

/// The host of an authority, without its port (an IPv6 literal keeps its brackets).
pub(super) fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

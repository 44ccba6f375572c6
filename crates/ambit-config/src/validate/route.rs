//! Checks of HTTPRoute and GRPCRoute beyond their types: the Gateway API CRDs' limits, patterns and validation
//! rules (paths, header names, filters configured by the field their `type` names, backends, timeouts).

use std::collections::HashSet;

use super::gateway::local_reference;
use super::{Findings, index, join, syntax};
use crate::gateway::{
    BackendObjectReference, BackendRef, GrpcMethodMatch, GrpcRoute, GrpcRouteFilter, GrpcRouteFilterType,
    GrpcRouteRule, HeaderMatch, HttpHeaderFilter, HttpPathMatch, HttpPathModifier, HttpRequestMirrorFilter,
    HttpRequestRedirectFilter, HttpRoute, HttpRouteFilter, HttpRouteFilterType, HttpRouteMatch, HttpRouteRetry,
    HttpRouteRule, HttpRouteTimeouts, ParentReference, PathMatchType, PathModifierType, ValueMatchType,
};

const MAX_PARENT_REFS: usize = 32;
const MAX_HOSTNAMES: usize = 16;
const MAX_RULES: usize = 16;
const MAX_HTTP_MATCHES: usize = 64;
/// The HTTPRoute CRD's limit on matches across all rules.
const MAX_HTTP_MATCHES_TOTAL: usize = 128;
const MAX_GRPC_MATCHES: usize = 8;
const MAX_HEADERS: usize = 16;
const MAX_FILTERS: usize = 16;
const MAX_BACKEND_REFS: usize = 16;
const MAX_PATH: usize = 1024;
const MAX_HEADER_VALUE: usize = 4096;
const MAX_WEIGHT: i32 = 1_000_000;
/// The redirect status codes the Gateway API defines (301 and 302 standard, the rest extended).
const REDIRECT_CODES: [i32; 5] = [301, 302, 303, 307, 308];
/// Sequences a path match or modifier must not contain (the HTTPRoute CRD's rules).
const BAD_PATH_PARTS: [&str; 5] = ["//", "/./", "/../", "%2f", "#"];

pub(super) fn http_route(route: &HttpRoute, findings: &mut Findings) {
    let spec = &route.spec;
    parent_refs(&spec.parent_refs, findings);
    hostnames(&spec.hostnames, findings);
    findings.at_most("spec.rules", &spec.rules, MAX_RULES);
    let total: usize = spec.rules.iter().map(|rule| rule.matches.len()).sum();
    if total > MAX_HTTP_MATCHES_TOTAL {
        let message = format!("have {total} matches in all; at most {MAX_HTTP_MATCHES_TOTAL} are allowed");
        findings.error("spec.rules", message);
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        http_rule(rule, &index("spec", "rules", i), findings);
    }
}

pub(super) fn grpc_route(route: &GrpcRoute, findings: &mut Findings) {
    let spec = &route.spec;
    parent_refs(&spec.parent_refs, findings);
    hostnames(&spec.hostnames, findings);
    findings.at_most("spec.rules", &spec.rules, MAX_RULES);
    for (i, rule) in spec.rules.iter().enumerate() {
        grpc_rule(rule, &index("spec", "rules", i), findings);
    }
}

fn parent_refs(parents: &[ParentReference], findings: &mut Findings) {
    findings.at_most("spec.parentRefs", parents, MAX_PARENT_REFS);
    for (i, parent) in parents.iter().enumerate() {
        let path = index("spec", "parentRefs", i);
        findings.check(&join(&path, "name"), &parent.name, syntax::object_name);
        findings.check_some(&join(&path, "group"), parent.group.as_ref(), syntax::group);
        findings.check_some(&join(&path, "kind"), parent.kind.as_ref(), syntax::kind);
        findings.check_some(&join(&path, "namespace"), parent.namespace.as_ref(), syntax::dns_label);
        findings.check_some(
            &join(&path, "sectionName"),
            parent.section_name.as_ref(),
            syntax::dns_subdomain,
        );
        if let Some(port) = parent.port {
            findings.port(&join(&path, "port"), port);
        }
    }
}

fn hostnames(hostnames: &[String], findings: &mut Findings) {
    findings.at_most("spec.hostnames", hostnames, MAX_HOSTNAMES);
    for (i, hostname) in hostnames.iter().enumerate() {
        findings.check(&index("spec", "hostnames", i), hostname, syntax::hostname);
    }
}

fn http_rule(rule: &HttpRouteRule, path: &str, findings: &mut Findings) {
    findings.check_some(&join(path, "name"), rule.name.as_ref(), syntax::dns_subdomain);
    findings.at_most(&join(path, "matches"), &rule.matches, MAX_HTTP_MATCHES);
    for (j, route_match) in rule.matches.iter().enumerate() {
        http_match(route_match, &index(path, "matches", j), findings);
    }
    http_filters(&rule.filters, &join(path, "filters"), findings);
    http_filter_combinations(rule, path, findings);
    findings.at_most(&join(path, "backendRefs"), &rule.backend_refs, MAX_BACKEND_REFS);
    for (j, backend) in rule.backend_refs.iter().enumerate() {
        let path = index(path, "backendRefs", j);
        backend_ref(backend, &path, findings);
        http_filters(&backend.filters, &join(&path, "filters"), findings);
    }
    if let Some(timeouts) = &rule.timeouts {
        self::timeouts(timeouts, &join(path, "timeouts"), findings);
    }
    if let Some(retry) = &rule.retry {
        self::retry(retry, &join(path, "retry"), findings);
    }
}

fn http_match(route_match: &HttpRouteMatch, path: &str, findings: &mut Findings) {
    if let Some(path_match) = &route_match.path {
        self::path_match(path_match, &join(path, "path"), findings);
    }
    header_matches(&route_match.headers, &join(path, "headers"), findings);
    header_matches(&route_match.query_params, &join(path, "queryParams"), findings);
}

/// Exact and PathPrefix values are absolute, normalized paths; a regular expression is only limited in length.
fn path_match(path_match: &HttpPathMatch, path: &str, findings: &mut Findings) {
    let field = join(path, "value");
    let value = path_match.effective_value();
    match path_match.effective_type() {
        PathMatchType::RegularExpression => _ = findings.check(&field, value, path_length),
        PathMatchType::Exact | PathMatchType::PathPrefix => _ = findings.check(&field, value, absolute_path),
    }
}

/// An absolute path as the HTTPRoute CRD allows in Exact and PathPrefix matches and in path modifiers.
fn absolute_path(value: &str) -> Result<(), String> {
    path_length(value)?;
    if !value.starts_with('/') {
        return Err("must start with '/'".to_string());
    }
    let lower = value.to_ascii_lowercase();
    if let Some(part) = BAD_PATH_PARTS.iter().find(|part| lower.contains(**part)) {
        return Err(format!("must not contain {part:?}"));
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        return Err("must not end with '/.' or '/..'".to_string());
    }
    Ok(())
}

fn path_length(value: &str) -> Result<(), String> {
    match value.len() {
        len if len > MAX_PATH => Err(format!("must be at most {MAX_PATH} characters (it has {len})")),
        _ => Ok(()),
    }
}

/// Header (or query parameter) matches: at most 16, valid names, values of bounded length.
fn header_matches(matches: &[HeaderMatch], path: &str, findings: &mut Findings) {
    findings.at_most(path, matches, MAX_HEADERS);
    for (k, header) in matches.iter().enumerate() {
        let path = format!("{path}[{k}]");
        findings.check(&join(&path, "name"), &header.name, syntax::header_name);
        let limit = match header.match_type.unwrap_or(ValueMatchType::Exact) {
            ValueMatchType::Exact => MAX_HEADER_VALUE,
            ValueMatchType::RegularExpression => MAX_PATH,
        };
        if header.value.is_empty() || header.value.len() > limit {
            let message = format!("must have 1 to {limit} characters (it has {})", header.value.len());
            findings.error(&join(&path, "value"), message);
        }
    }
}

fn http_filters(filters: &[HttpRouteFilter], path: &str, findings: &mut Findings) {
    findings.at_most(path, filters, MAX_FILTERS);
    let mut seen = HashSet::new();
    for (k, filter) in filters.iter().enumerate() {
        let path = format!("{path}[{k}]");
        let kind = filter.filter_type;
        configured_by_type(kind.name(), kind.field(), &filter.set_fields(), &path, findings);
        let repeatable = matches!(
            kind,
            HttpRouteFilterType::RequestMirror | HttpRouteFilterType::ExtensionRef
        );
        if !seen.insert(kind) && !repeatable {
            findings.error(&join(&path, "type"), format!("{} may appear only once", kind.name()));
        }
        http_filter(filter, &path, findings);
    }
}

/// A filter is configured by exactly the field its type names.
fn configured_by_type(name: &str, field: &str, set: &[&str], path: &str, findings: &mut Findings) {
    if !set.contains(&field) {
        findings.error(&join(path, field), format!("required for a {name} filter"));
    }
    for other in set.iter().filter(|other| **other != field) {
        findings.error(&join(path, other), format!("must not be set in a {name} filter"));
    }
}

fn http_filter(filter: &HttpRouteFilter, path: &str, findings: &mut Findings) {
    let field = |name| join(path, name);
    if let Some(headers) = &filter.request_header_modifier {
        header_filter(headers, &field("requestHeaderModifier"), findings);
    }
    if let Some(headers) = &filter.response_header_modifier {
        header_filter(headers, &field("responseHeaderModifier"), findings);
    }
    if let Some(mirror) = &filter.request_mirror {
        self::mirror(mirror, &field("requestMirror"), findings);
    }
    if let Some(redirect) = &filter.request_redirect {
        self::redirect(redirect, &field("requestRedirect"), findings);
    }
    if let Some(rewrite) = &filter.url_rewrite {
        findings.check_some(
            &field("urlRewrite.hostname"),
            rewrite.hostname.as_ref(),
            syntax::precise_hostname,
        );
        if let Some(modifier) = &rewrite.path {
            path_modifier(modifier, &field("urlRewrite.path"), findings);
        }
    }
    if let Some(reference) = &filter.extension_ref {
        local_reference(reference, &field("extensionRef"), findings);
    }
}

/// Rule-level filter rules: a redirect answers itself, so it excludes a rewrite and backends; replacing a prefix
/// needs exactly one PathPrefix match to know which prefix.
fn http_filter_combinations(rule: &HttpRouteRule, path: &str, findings: &mut Findings) {
    let has = |kind| rule.filters.iter().any(|filter| filter.filter_type == kind);
    let filters = join(path, "filters");
    if has(HttpRouteFilterType::RequestRedirect) && has(HttpRouteFilterType::UrlRewrite) {
        findings.error(&filters, "may not have both a RequestRedirect and a URLRewrite filter");
    }
    if has(HttpRouteFilterType::RequestRedirect) && !rule.backend_refs.is_empty() {
        findings.error(
            &join(path, "backendRefs"),
            "must be empty when a RequestRedirect filter answers",
        );
    }
    let replaces_prefix = rule.filters.iter().any(replaces_prefix);
    let prefix_matches = (rule.matches.iter())
        .filter(|m| {
            m.path
                .as_ref()
                .is_some_and(|p| p.effective_type() == PathMatchType::PathPrefix)
        })
        .count();
    if replaces_prefix && (rule.matches.len() != 1 || prefix_matches != 1) {
        let message = "replacePrefixMatch needs exactly one match, with a PathPrefix path";
        findings.error(&join(path, "matches"), message);
    }
}

/// Whether a filter's path modifier replaces the matched prefix.
fn replaces_prefix(filter: &HttpRouteFilter) -> bool {
    let redirect = filter.request_redirect.as_ref().and_then(|r| r.path.as_ref());
    let rewrite = filter.url_rewrite.as_ref().and_then(|r| r.path.as_ref());
    [redirect, rewrite]
        .into_iter()
        .flatten()
        .any(|modifier| modifier.modifier_type == PathModifierType::ReplacePrefixMatch)
}

/// Headers to set, add and remove: at most 16 each, valid names, each name once per list.
fn header_filter(filter: &HttpHeaderFilter, path: &str, findings: &mut Findings) {
    for (field, headers) in [("set", &filter.set), ("add", &filter.add)] {
        let names: Vec<&str> = headers.iter().map(|header| header.name.as_str()).collect();
        header_names(&names, &join(path, field), findings);
    }
    let names: Vec<&str> = filter.remove.iter().map(String::as_str).collect();
    header_names(&names, &join(path, "remove"), findings);
}

fn header_names(names: &[&str], path: &str, findings: &mut Findings) {
    findings.at_most(path, names, MAX_HEADERS);
    let mut seen = HashSet::new();
    for (k, name) in names.iter().enumerate() {
        let field = format!("{path}[{k}]");
        findings.check(&field, name, syntax::header_name);
        if !seen.insert(name.to_ascii_lowercase()) {
            findings.error(&field, format!("duplicate header {name:?}"));
        }
    }
}

fn mirror(mirror: &HttpRequestMirrorFilter, path: &str, findings: &mut Findings) {
    backend_object(&mirror.backend_ref, &join(path, "backendRef"), findings);
    if let Some(percent) = mirror.percent {
        findings.range(&join(path, "percent"), percent, 0, 100);
    }
    if let Some(fraction) = mirror.fraction {
        let path = join(path, "fraction");
        if mirror.percent.is_some() {
            findings.error(&path, "must not be set together with percent");
        }
        let denominator = fraction.denominator.unwrap_or(100);
        findings.range(&join(&path, "denominator"), denominator, 1, i32::MAX);
        findings.range(&join(&path, "numerator"), fraction.numerator, 0, denominator.max(0));
    }
}

fn redirect(redirect: &HttpRequestRedirectFilter, path: &str, findings: &mut Findings) {
    if let Some(scheme) = redirect
        .scheme
        .as_deref()
        .filter(|scheme| !matches!(*scheme, "http" | "https"))
    {
        findings.error(
            &join(path, "scheme"),
            format!("{scheme:?} is not a scheme: use http or https"),
        );
    }
    findings.check_some(
        &join(path, "hostname"),
        redirect.hostname.as_ref(),
        syntax::precise_hostname,
    );
    if let Some(modifier) = &redirect.path {
        path_modifier(modifier, &join(path, "path"), findings);
    }
    if let Some(port) = redirect.port {
        findings.port(&join(path, "port"), port);
    }
    if let Some(code) = redirect.status_code.filter(|code| !REDIRECT_CODES.contains(code)) {
        let message = format!("{code} is not a redirect status code: use 301, 302, 303, 307 or 308");
        findings.error(&join(path, "statusCode"), message);
    }
}

/// The field the modifier's type names must be set, and only that one.
fn path_modifier(modifier: &HttpPathModifier, path: &str, findings: &mut Findings) {
    let (name, value, other, other_value) = match modifier.modifier_type {
        PathModifierType::ReplaceFullPath => (
            "replaceFullPath",
            &modifier.replace_full_path,
            "replacePrefixMatch",
            &modifier.replace_prefix_match,
        ),
        PathModifierType::ReplacePrefixMatch => (
            "replacePrefixMatch",
            &modifier.replace_prefix_match,
            "replaceFullPath",
            &modifier.replace_full_path,
        ),
    };
    match value {
        None => findings.error(
            &join(path, name),
            format!("required when type is {}", capitalized(name)),
        ),
        Some(value) => _ = findings.check(&join(path, name), value, path_length),
    }
    if other_value.is_some() {
        findings.error(
            &join(path, other),
            format!("must not be set when type is {}", capitalized(name)),
        );
    }
}

/// `replaceFullPath` → `ReplaceFullPath`.
fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// A backend of a rule: its reference, and a weight from 0 to 1000000.
fn backend_ref<F>(backend: &BackendRef<F>, path: &str, findings: &mut Findings) {
    let reference = BackendObjectReference {
        group: backend.group.clone(),
        kind: backend.kind.clone(),
        name: backend.name.clone(),
        namespace: backend.namespace.clone(),
        port: backend.port,
    };
    backend_object(&reference, path, findings);
    if let Some(weight) = backend.weight {
        findings.range(&join(path, "weight"), weight, 0, MAX_WEIGHT);
    }
}

/// A backend reference: named, with a port when it is a Service.
fn backend_object(backend: &BackendObjectReference, path: &str, findings: &mut Findings) {
    findings.check(&join(path, "name"), &backend.name, syntax::object_name);
    findings.check_some(&join(path, "group"), backend.group.as_ref(), syntax::group);
    findings.check_some(&join(path, "kind"), backend.kind.as_ref(), syntax::kind);
    findings.check_some(&join(path, "namespace"), backend.namespace.as_ref(), syntax::dns_label);
    match backend.port {
        Some(port) => findings.port(&join(path, "port"), port),
        None if backend.is_service() => findings.error(&join(path, "port"), "required for a Service backend"),
        None => {}
    }
}

/// Gateway API durations; the backend's timeout within the request's (unless that is `0s`, no timeout).
fn timeouts(timeouts: &HttpRouteTimeouts, path: &str, findings: &mut Findings) {
    let mut duration = |field: &str, value: Option<&String>| {
        let value = value?;
        syntax::duration_ms(value)
            .map_err(|reason| findings.error(&join(path, field), format!("{value:?} {reason}")))
            .ok()
    };
    let request = duration("request", timeouts.request.as_ref());
    let backend = duration("backendRequest", timeouts.backend_request.as_ref());
    if let (Some(request), Some(backend)) = (request, backend)
        && request != 0
        && backend > request
    {
        let message = "must not be longer than the request timeout";
        findings.error(&join(path, "backendRequest"), message);
    }
}

/// Experimental retries: status codes 400 to 599, a non-negative number of attempts, a duration backoff.
fn retry(retry: &HttpRouteRetry, path: &str, findings: &mut Findings) {
    for (k, code) in retry.codes.iter().enumerate() {
        findings.range(&index(path, "codes", k), *code, 400, 599);
    }
    if let Some(attempts) = retry.attempts {
        findings.range(&join(path, "attempts"), attempts, 0, i32::MAX);
    }
    if let Some(backoff) = &retry.backoff
        && let Err(reason) = syntax::duration_ms(backoff)
    {
        findings.error(&join(path, "backoff"), format!("{backoff:?} {reason}"));
    }
}

fn grpc_rule(rule: &GrpcRouteRule, path: &str, findings: &mut Findings) {
    findings.check_some(&join(path, "name"), rule.name.as_ref(), syntax::dns_subdomain);
    findings.at_most(&join(path, "matches"), &rule.matches, MAX_GRPC_MATCHES);
    for (j, route_match) in rule.matches.iter().enumerate() {
        let path = index(path, "matches", j);
        if let Some(method) = &route_match.method {
            grpc_method(method, &join(&path, "method"), findings);
        }
        header_matches(&route_match.headers, &join(&path, "headers"), findings);
    }
    grpc_filters(&rule.filters, &join(path, "filters"), findings);
    findings.at_most(&join(path, "backendRefs"), &rule.backend_refs, MAX_BACKEND_REFS);
    for (j, backend) in rule.backend_refs.iter().enumerate() {
        let path = index(path, "backendRefs", j);
        backend_ref(backend, &path, findings);
        grpc_filters(&backend.filters, &join(&path, "filters"), findings);
    }
}

/// A method match names a service, a method or both; exact names must be valid gRPC names.
fn grpc_method(method: &GrpcMethodMatch, path: &str, findings: &mut Findings) {
    if method.service.is_none() && method.method.is_none() {
        return findings.error(path, "must set service, method or both");
    }
    let exact = method.match_type.unwrap_or(ValueMatchType::Exact) == ValueMatchType::Exact;
    let (service_rule, method_rule): (syntax::Rule, syntax::Rule) = match exact {
        true => (grpc_service_name, grpc_method_name),
        false => (path_length, path_length),
    };
    findings.check_some(&join(path, "service"), method.service.as_ref(), service_rule);
    findings.check_some(&join(path, "method"), method.method.as_ref(), method_rule);
}

/// A fully qualified gRPC service name: dot-separated identifiers (`grpc.health.v1.Health`).
fn grpc_service_name(value: &str) -> Result<(), String> {
    path_length(value)?;
    let name = value.strip_prefix('.').unwrap_or(value);
    match name.split('.').all(is_identifier) {
        true => Ok(()),
        false => Err("is not a gRPC service name: use dot-separated identifiers (package.Service)".to_string()),
    }
}

/// A gRPC method name: one identifier.
fn grpc_method_name(value: &str) -> Result<(), String> {
    path_length(value)?;
    match is_identifier(value) {
        true => Ok(()),
        false => Err("is not a gRPC method name: use letters, digits and '_', not starting with a digit".to_string()),
    }
}

fn is_identifier(value: &str) -> bool {
    value.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn grpc_filters(filters: &[GrpcRouteFilter], path: &str, findings: &mut Findings) {
    findings.at_most(path, filters, MAX_FILTERS);
    let mut seen = HashSet::new();
    for (k, filter) in filters.iter().enumerate() {
        let path = format!("{path}[{k}]");
        let kind = filter.filter_type;
        configured_by_type(kind.name(), kind.field(), &filter.set_fields(), &path, findings);
        let repeatable = matches!(
            kind,
            GrpcRouteFilterType::RequestMirror | GrpcRouteFilterType::ExtensionRef
        );
        if !seen.insert(kind) && !repeatable {
            findings.error(&join(&path, "type"), format!("{} may appear only once", kind.name()));
        }
        let field = |name| join(&path, name);
        if let Some(headers) = &filter.request_header_modifier {
            header_filter(headers, &field("requestHeaderModifier"), findings);
        }
        if let Some(headers) = &filter.response_header_modifier {
            header_filter(headers, &field("responseHeaderModifier"), findings);
        }
        if let Some(mirror) = &filter.request_mirror {
            self::mirror(mirror, &field("requestMirror"), findings);
        }
        if let Some(reference) = &filter.extension_ref {
            local_reference(reference, &field("extensionRef"), findings);
        }
    }
}

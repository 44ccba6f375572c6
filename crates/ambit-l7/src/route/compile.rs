//! Compilation of the attached routes into a table: each rule into what it does (forward to weighted backends with
//! its filters and policies, redirect, or answer 500), each of its matches into an entry, and the entries sorted by
//! precedence. What cannot be honoured becomes a [`Problem`] and the behaviour the Gateway API asks for instead.

use std::borrow::Cow;
use std::cmp::Reverse;

use ambit_config::gateway::{
    BackendRef, GrpcBackendRef, GrpcRoute, GrpcRouteFilter, GrpcRouteFilterType, GrpcRouteMatch, HttpBackendRef,
    HttpRequestMirrorFilter, HttpRequestRedirectFilter, HttpRoute, HttpRouteFilter, HttpRouteFilterType,
    HttpRouteMatch, HttpRouteRetry, HttpRouteRule, HttpRouteTimeouts, HttpUrlRewriteFilter,
};
use http::StatusCode;

use super::attach::{Route, attached};
use super::filter::{HeaderOp, PathModifier, Redirect, UrlRewrite, header_ops, path_modifier};
use super::matcher::{GrpcMatcher, HttpMatcher, Matcher, Specificity};
use super::policy::{self, FaultSpec, Finding, Share};
use super::{Problem, RetryPolicy, RouteRef, RouteTable, RuleRef, ServiceRef, TableKind, Timeouts};

/// The redirect status codes the Gateway API defines.
const REDIRECT_CODES: [u16; 5] = [301, 302, 303, 307, 308];
const RULE_ANSWERS_500: &str = "the rule answers 500";
const BACKEND_ANSWERS_500: &str = "this backend's share of requests is answered 500";

/// One match of one rule, ready to test against requests.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub matcher: Matcher,
    /// The index of its rule in the table.
    pub rule: usize,
    /// The normalized PathPrefix it matches, for ReplacePrefixMatch.
    pub prefix: Option<String>,
}

/// What a rule does with the requests it matches.
#[derive(Clone, Debug)]
pub(super) enum Rule {
    /// Forward; `id` is `None` for the default route.
    Forward {
        id: Option<RuleRef>,
        forward: Box<ForwardRule>,
    },
    Redirect {
        id: RuleRef,
        redirect: Redirect,
    },
    /// Answer 500: the rule cannot be honoured.
    Invalid {
        id: RuleRef,
    },
}

#[derive(Clone, Debug)]
pub(super) struct ForwardRule {
    pub backends: Vec<Weighted>,
    pub total_weight: u64,
    pub rewrite: Option<UrlRewrite>,
    pub timeouts: Timeouts,
    pub retry: Option<RetryPolicy>,
    pub fault: Option<FaultSpec>,
}

/// A backend with its weight; no target when it is invalid (its share is answered 500).
#[derive(Clone, Debug)]
pub(super) struct Weighted {
    pub weight: u32,
    pub target: Option<Target>,
}

/// A valid backend with everything its rule and its own filters ask for.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub service: ServiceRef,
    pub request_headers: Vec<HeaderOp>,
    pub response_headers: Vec<HeaderOp>,
    pub mirrors: Vec<Mirror>,
}

#[derive(Clone, Debug)]
pub(super) struct Mirror {
    pub service: ServiceRef,
    pub share: Share,
}

/// A match compiled for a rule: its index in the rule, and what its entry needs.
struct CompiledMatch {
    index: usize,
    matcher: Matcher,
    specificity: Specificity,
    prefix: Option<String>,
}

/// What a rule does, before it is given its identity.
enum Action {
    Forward(Box<ForwardRule>),
    Redirect(Redirect),
    Invalid,
}

/// The order of entries: more specific first, then the older route, the earlier rule, the earlier match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    specificity: Reverse<Specificity>,
    route: usize,
    rule: usize,
    index: usize,
}

/// The parts of a rule that both route kinds share (a GRPCRoute's filters and backends are read as HTTPRoute's).
struct RuleParts<'a> {
    filters: Cow<'a, [HttpRouteFilter]>,
    backends: Cow<'a, [HttpBackendRef]>,
    timeouts: Option<&'a HttpRouteTimeouts>,
    retry: Option<&'a HttpRouteRetry>,
}

/// The effect of a list of filters (a rule's, or a rule's and then a backend's).
#[derive(Clone, Debug, Default)]
struct Filters {
    request: Vec<HeaderOp>,
    response: Vec<HeaderOp>,
    mirrors: Vec<Mirror>,
    redirect: Option<Redirect>,
    rewrite: Option<UrlRewrite>,
}

/// Where a filter is: on a rule, or on one of its backends (where redirects and rewrites are not supported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Rule,
    Backend,
}

struct Compiler<'s> {
    service: &'s ServiceRef,
    problems: Vec<Problem>,
    rules: Vec<Rule>,
    entries: Vec<(Precedence, Entry)>,
}

/// The table of `service` from the routes attached to it.
pub(super) fn table(routes: &[&HttpRoute], grpc: &[&GrpcRoute], service: &ServiceRef) -> (RouteTable, Vec<Problem>) {
    let mut problems = Vec::new();
    let http = attached(routes, service, &mut problems);
    let grpc = attached(grpc, service, &mut problems);
    let mut compiler = Compiler {
        service,
        problems,
        rules: Vec::new(),
        entries: Vec::new(),
    };
    let kind = match (http.first(), grpc.first()) {
        (None, None) => {
            compiler.default_rule();
            TableKind::Default
        }
        (_, Some((_, winner))) => {
            compiler.conflicts(http.iter().map(|(_, id)| id), winner);
            for (order, (route, id)) in grpc.iter().enumerate() {
                compiler.grpc_route(route, id, order);
            }
            TableKind::Grpc
        }
        (Some(_), None) => {
            for (order, (route, id)) in http.iter().enumerate() {
                compiler.http_route(route, id, order);
            }
            TableKind::Http
        }
    };
    compiler.entries.sort_by_key(|(precedence, _)| *precedence);
    let table = RouteTable {
        service: service.clone(),
        kind,
        entries: compiler.entries.into_iter().map(|(_, entry)| entry).collect(),
        rules: compiler.rules,
    };
    (table, compiler.problems)
}

// === impl Compiler ===

impl Compiler<'_> {
    fn problem(&mut self, route: &RouteRef, (field, message): Finding) {
        let route = route.clone();
        self.problems.push(Problem { route, field, message });
    }

    /// A problem whose consequence is added to its message.
    fn problem_then(&mut self, route: &RouteRef, (field, message): Finding, consequence: &str) {
        self.problem(route, (field, format!("{message}; {consequence}")));
    }

    /// No route attached: everything goes to the Service itself.
    fn default_rule(&mut self) {
        let forward = Box::new(forward_to(
            vec![self.itself(&Filters::default())],
            None,
            Timeouts::default(),
            None,
        ));
        self.rules.push(Rule::Forward { id: None, forward });
        let precedence = Precedence {
            specificity: Reverse([0; 5]),
            route: 0,
            rule: 0,
            index: 0,
        };
        let entry = Entry {
            matcher: Matcher::everything(),
            rule: 0,
            prefix: None,
        };
        self.entries.push((precedence, entry));
    }

    /// HTTPRoutes are left out where a GRPCRoute attaches to the same Service port.
    fn conflicts<'a>(&mut self, http: impl Iterator<Item = &'a RouteRef>, grpc: &RouteRef) {
        for id in http {
            let message = format!(
                "not applied to Service {}: {grpc} attaches to the same port, and GRPCRoutes take precedence over \
                 HTTPRoutes there (GEP-1426)",
                self.service
            );
            self.problem(id, ("spec.parentRefs".to_string(), message));
        }
    }

    fn http_route(&mut self, route: &HttpRoute, id: &RouteRef, order: usize) {
        let fault = self.fault(route, id);
        let default_rule = [HttpRouteRule::default()];
        let rules = match route.spec.rules.is_empty() {
            true => &default_rule[..],
            false => &route.spec.rules[..],
        };
        for (i, rule) in rules.iter().enumerate() {
            let base = format!("spec.rules[{i}]");
            let parts = RuleParts {
                filters: Cow::Borrowed(&rule.filters),
                backends: Cow::Borrowed(&rule.backend_refs),
                timeouts: rule.timeouts.as_ref(),
                retry: rule.retry.as_ref(),
            };
            let mut action = self.action(&parts, id, &base, fault);
            let (compiled, written) = self.http_matches(&rule.matches, &base, id);
            let prefixes_known = written == 1 && compiled.iter().all(|compiled| compiled.prefix.is_some());
            if action.replaces_prefix() && !prefixes_known {
                let message = "replacePrefixMatch needs exactly one match, with a PathPrefix path";
                self.problem_then(id, (format!("{base}.matches"), message.to_string()), RULE_ANSWERS_500);
                action = Action::Invalid;
            }
            self.push_rule(id, i, rule.name.as_ref(), action, compiled, order);
        }
    }

    /// A rule's HTTP matches (one on PathPrefix `/` when it has none) that compile, and how many there are.
    fn http_matches(&mut self, matches: &[HttpRouteMatch], base: &str, id: &RouteRef) -> (Vec<CompiledMatch>, usize) {
        let default_match = [HttpRouteMatch::default()];
        let matches = if matches.is_empty() {
            &default_match[..]
        } else {
            matches
        };
        let mut compiled = Vec::new();
        for (j, route_match) in matches.iter().enumerate() {
            match HttpMatcher::compile(route_match, &format!("{base}.matches[{j}]")) {
                Ok((matcher, specificity, prefix)) => compiled.push(CompiledMatch {
                    index: j,
                    matcher: Matcher::Http(matcher),
                    specificity,
                    prefix,
                }),
                Err(finding) => self.problem_then(id, finding, "the match is left out"),
            }
        }
        (compiled, matches.len())
    }

    fn grpc_route(&mut self, route: &GrpcRoute, id: &RouteRef, order: usize) {
        let fault = self.fault(route, id);
        for (i, rule) in route.spec.rules.iter().enumerate() {
            let base = format!("spec.rules[{i}]");
            let parts = RuleParts {
                filters: Cow::Owned(rule.filters.iter().map(http_filter).collect()),
                backends: Cow::Owned(rule.backend_refs.iter().map(http_backend).collect()),
                timeouts: None,
                retry: None,
            };
            let action = self.action(&parts, id, &base, fault);
            let compiled = self.grpc_matches(&rule.matches, &base, id);
            self.push_rule(id, i, rule.name.as_ref(), action, compiled, order);
        }
    }

    /// A rule's gRPC matches (one matching every gRPC request when it has none) that compile.
    fn grpc_matches(&mut self, matches: &[GrpcRouteMatch], base: &str, id: &RouteRef) -> Vec<CompiledMatch> {
        let default_match = [GrpcRouteMatch::default()];
        let matches = if matches.is_empty() {
            &default_match[..]
        } else {
            matches
        };
        let mut compiled = Vec::new();
        for (j, route_match) in matches.iter().enumerate() {
            let path = format!("{base}.matches[{j}]");
            match GrpcMatcher::compile(route_match.method.as_ref(), &route_match.headers, &path) {
                Ok((matcher, specificity)) => compiled.push(CompiledMatch {
                    index: j,
                    matcher: Matcher::Grpc(matcher),
                    specificity,
                    prefix: None,
                }),
                Err(finding) => self.problem_then(id, finding, "the match is left out"),
            }
        }
        compiled
    }

    /// The route's fault annotations.
    fn fault<R: Route>(&mut self, route: &R, id: &RouteRef) -> Option<FaultSpec> {
        let (fault, findings) = match route.annotations() {
            Some(annotations) => policy::fault(annotations),
            None => (None, Vec::new()),
        };
        findings.into_iter().for_each(|finding| self.problem(id, finding));
        fault
    }

    /// Adds a rule, and an entry for each of its compiled matches.
    fn push_rule(
        &mut self,
        route: &RouteRef,
        index: usize,
        name: Option<&String>,
        action: Action,
        matches: Vec<CompiledMatch>,
        order: usize,
    ) {
        let id = RuleRef {
            route: route.clone(),
            index,
            name: name.cloned(),
        };
        let rule = self.rules.len();
        self.rules.push(match action {
            Action::Forward(forward) => Rule::Forward { id: Some(id), forward },
            Action::Redirect(redirect) => Rule::Redirect { id, redirect },
            Action::Invalid => Rule::Invalid { id },
        });
        for compiled in matches {
            let precedence = Precedence {
                specificity: Reverse(compiled.specificity),
                route: order,
                rule: index,
                index: compiled.index,
            };
            let entry = Entry {
                matcher: compiled.matcher,
                rule,
                prefix: compiled.prefix,
            };
            self.entries.push((precedence, entry));
        }
    }

    /// What a rule does: answer 500 when a filter cannot be applied, redirect, or forward.
    fn action(&mut self, parts: &RuleParts<'_>, id: &RouteRef, base: &str, fault: Option<FaultSpec>) -> Action {
        let mut filters = Filters::default();
        let mut honoured = true;
        for (k, filter) in parts.filters.iter().enumerate() {
            let path = format!("{base}.filters[{k}]");
            if let Err(finding) = self.filter(filter, &path, id, Level::Rule, &mut filters) {
                self.problem_then(id, finding, RULE_ANSWERS_500);
                honoured = false;
            }
        }
        if !honoured {
            return Action::Invalid;
        }
        if let Some(redirect) = filters.redirect.take() {
            if !parts.backends.is_empty() {
                let finding = (
                    format!("{base}.backendRefs"),
                    "must be empty when a RequestRedirect filter answers".to_string(),
                );
                self.problem_then(id, finding, RULE_ANSWERS_500);
                return Action::Invalid;
            }
            return Action::Redirect(redirect);
        }
        let backends = match parts.backends.is_empty() {
            true => vec![self.itself(&filters)],
            false => (parts.backends.iter().enumerate())
                .map(|(j, backend)| self.backend(backend, &format!("{base}.backendRefs[{j}]"), id, &filters))
                .collect(),
        };
        let (timeouts, findings) = policy::timeouts(parts.timeouts, &format!("{base}.timeouts"));
        findings.into_iter().for_each(|finding| self.problem(id, finding));
        let (retry, findings) = policy::retry(parts.retry, &format!("{base}.retry"));
        findings.into_iter().for_each(|finding| self.problem(id, finding));
        let mut forward = forward_to(backends, fault, timeouts, retry);
        forward.rewrite = filters.rewrite;
        Action::Forward(Box::new(forward))
    }

    /// The Service itself as a rule's only backend.
    fn itself(&self, filters: &Filters) -> Weighted {
        let target = Target {
            service: self.service.clone(),
            request_headers: filters.request.clone(),
            response_headers: filters.response.clone(),
            mirrors: filters.mirrors.clone(),
        };
        Weighted {
            weight: 1,
            target: Some(target),
        }
    }

    /// A backend of a rule whose filters are `rule`; invalid (answered 500) when it or its filters cannot be used.
    fn backend(&mut self, backend: &HttpBackendRef, path: &str, id: &RouteRef, rule: &Filters) -> Weighted {
        let weight = match backend.weight.map(u32::try_from) {
            None => 1,
            Some(Ok(weight)) => weight,
            Some(Err(_)) => {
                let finding = (format!("{path}.weight"), "must not be negative".to_string());
                self.problem_then(id, finding, "the backend gets no requests");
                0
            }
        };
        let target = self.target(backend, path, id, rule);
        Weighted { weight, target }
    }

    fn target(&mut self, backend: &HttpBackendRef, path: &str, id: &RouteRef, rule: &Filters) -> Option<Target> {
        let reference = Reference::of_backend(backend);
        let service = match reference.service(path, &id.namespace) {
            Ok(service) => service,
            Err(finding) => {
                self.problem_then(id, finding, BACKEND_ANSWERS_500);
                return None;
            }
        };
        let mut filters = Filters {
            request: rule.request.clone(),
            response: rule.response.clone(),
            mirrors: rule.mirrors.clone(),
            ..Filters::default()
        };
        let mut honoured = true;
        for (k, filter) in backend.filters.iter().enumerate() {
            let path = format!("{path}.filters[{k}]");
            if let Err(finding) = self.filter(filter, &path, id, Level::Backend, &mut filters) {
                self.problem_then(id, finding, BACKEND_ANSWERS_500);
                honoured = false;
            }
        }
        honoured.then_some(Target {
            service,
            request_headers: filters.request,
            response_headers: filters.response,
            mirrors: filters.mirrors,
        })
    }

    /// Adds one filter's effect to `into`; an error when the filter cannot be applied where it is. A mirror that
    /// cannot be used is left out (a problem, not an error), as the Gateway API asks.
    fn filter(
        &mut self,
        filter: &HttpRouteFilter,
        path: &str,
        id: &RouteRef,
        level: Level,
        into: &mut Filters,
    ) -> Result<(), Finding> {
        let kind = filter.filter_type;
        let missing = || {
            let message = format!("required for a {} filter", kind.name());
            (format!("{path}.{}", kind.field()), message)
        };
        let field = |name: &str| format!("{path}.{name}");
        match kind {
            HttpRouteFilterType::RequestHeaderModifier => {
                let headers = filter.request_header_modifier.as_ref().ok_or_else(missing)?;
                into.request
                    .extend(header_ops(headers, &field("requestHeaderModifier"))?);
            }
            HttpRouteFilterType::ResponseHeaderModifier => {
                let headers = filter.response_header_modifier.as_ref().ok_or_else(missing)?;
                into.response
                    .extend(header_ops(headers, &field("responseHeaderModifier"))?);
            }
            HttpRouteFilterType::RequestMirror => {
                let mirror = filter.request_mirror.as_ref().ok_or_else(missing)?;
                match self::mirror(mirror, &field("requestMirror"), &id.namespace) {
                    Ok(mirror) => into.mirrors.push(mirror),
                    Err(finding) => self.problem_then(id, finding, "the mirror is left out"),
                }
            }
            HttpRouteFilterType::RequestRedirect | HttpRouteFilterType::UrlRewrite if level == Level::Backend => {
                let message = format!("{} filters are not supported on a backendRef", kind.name());
                return Err((field("type"), message));
            }
            HttpRouteFilterType::RequestRedirect => {
                let redirect = filter.request_redirect.as_ref().ok_or_else(missing)?;
                into.redirect = Some(self::redirect(redirect, &field("requestRedirect"))?);
            }
            HttpRouteFilterType::UrlRewrite => {
                let rewrite = filter.url_rewrite.as_ref().ok_or_else(missing)?;
                into.rewrite = Some(self::rewrite(rewrite, &field("urlRewrite"))?);
            }
            HttpRouteFilterType::ExtensionRef => {
                let message = match &filter.extension_ref {
                    Some(reference) => format!(
                        "{}/{} {:?} cannot be applied: ambit has no extension filters",
                        reference.group, reference.kind, reference.name
                    ),
                    None => "an ExtensionRef filter cannot be applied: ambit has no extension filters".to_string(),
                };
                return Err((field("extensionRef"), message));
            }
        }
        Ok(())
    }
}

/// A backend reference of either kind: a rule's backend or a mirror's.
struct Reference<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    name: &'a str,
    namespace: Option<&'a str>,
    port: Option<i32>,
}

// === impl Reference ===

impl<'a> Reference<'a> {
    fn of_backend<F>(backend: &'a BackendRef<F>) -> Self {
        Reference {
            group: backend.group.as_deref(),
            kind: backend.kind.as_deref(),
            name: &backend.name,
            namespace: backend.namespace.as_deref(),
            port: backend.port,
        }
    }

    fn of_mirror(mirror: &'a HttpRequestMirrorFilter) -> Self {
        let backend = &mirror.backend_ref;
        Reference {
            group: backend.group.as_deref(),
            kind: backend.kind.as_deref(),
            name: &backend.name,
            namespace: backend.namespace.as_deref(),
            port: backend.port,
        }
    }

    /// The Service port it names (in the route's namespace when it names none); only Services are supported.
    fn service(&self, path: &str, route_namespace: &str) -> Result<ServiceRef, Finding> {
        let (group, kind) = (self.group.unwrap_or_default(), self.kind.unwrap_or("Service"));
        if !matches!(group, "" | "core") || kind != "Service" {
            let what = if group.is_empty() {
                kind.to_string()
            } else {
                format!("{group}/{kind}")
            };
            let message = format!("{what} is not a supported backend: ambit forwards to Services only");
            return Err((format!("{path}.kind"), message));
        }
        let port = self
            .port
            .ok_or_else(|| (format!("{path}.port"), "required for a Service".to_string()))?;
        let port = (u16::try_from(port).ok().filter(|port| *port > 0))
            .ok_or_else(|| (format!("{path}.port"), format!("{port} is not a port from 1 to 65535")))?;
        let namespace = self.namespace.unwrap_or(route_namespace);
        Ok(ServiceRef::new(namespace, self.name, port))
    }
}

// === impl Action ===

impl Action {
    /// Whether the rule replaces the prefix its match matched (and so needs one PathPrefix match).
    fn replaces_prefix(&self) -> bool {
        let modifier = match self {
            Action::Forward(forward) => forward.rewrite.as_ref().and_then(|rewrite| rewrite.path.as_ref()),
            Action::Redirect(redirect) => redirect.path.as_ref(),
            Action::Invalid => None,
        };
        matches!(modifier, Some(PathModifier::Prefix(_)))
    }
}

fn forward_to(
    backends: Vec<Weighted>,
    fault: Option<FaultSpec>,
    timeouts: Timeouts,
    retry: Option<RetryPolicy>,
) -> ForwardRule {
    let total_weight = backends.iter().map(|backend| u64::from(backend.weight)).sum();
    ForwardRule {
        backends,
        total_weight,
        rewrite: None,
        timeouts,
        retry,
        fault,
    }
}

fn mirror(mirror: &HttpRequestMirrorFilter, path: &str, route_namespace: &str) -> Result<Mirror, Finding> {
    let service = Reference::of_mirror(mirror).service(&format!("{path}.backendRef"), route_namespace)?;
    let share = policy::mirror_share(mirror.percent, mirror.fraction, path)?;
    Ok(Mirror { service, share })
}

fn redirect(filter: &HttpRequestRedirectFilter, path: &str) -> Result<Redirect, Finding> {
    let scheme = match filter.scheme.as_deref() {
        None => None,
        Some("http") => Some("http"),
        Some("https") => Some("https"),
        Some(other) => {
            let message = format!("{other:?} is not a scheme: use http or https");
            return Err((format!("{path}.scheme"), message));
        }
    };
    let port = (filter.port)
        .map(|port| {
            (u16::try_from(port).ok().filter(|port| *port > 0))
                .ok_or_else(|| (format!("{path}.port"), format!("{port} is not a port from 1 to 65535")))
        })
        .transpose()?;
    let code = filter.status_code.unwrap_or(302);
    let status = (u16::try_from(code).ok())
        .filter(|code| REDIRECT_CODES.contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| {
            let message = format!("{code} is not a redirect status code: use 301, 302, 303, 307 or 308");
            (format!("{path}.statusCode"), message)
        })?;
    let modifier = (filter.path.as_ref())
        .map(|modifier| path_modifier(modifier, &format!("{path}.path")))
        .transpose()?;
    Ok(Redirect {
        scheme,
        hostname: filter.hostname.clone(),
        port,
        path: modifier,
        status,
    })
}

fn rewrite(filter: &HttpUrlRewriteFilter, path: &str) -> Result<UrlRewrite, Finding> {
    let modifier = (filter.path.as_ref())
        .map(|modifier| path_modifier(modifier, &format!("{path}.path")))
        .transpose()?;
    Ok(UrlRewrite {
        hostname: filter.hostname.clone(),
        path: modifier,
    })
}

/// A GRPCRoute filter as the HTTPRoute filter of the same type.
fn http_filter(filter: &GrpcRouteFilter) -> HttpRouteFilter {
    let filter_type = match filter.filter_type {
        GrpcRouteFilterType::RequestHeaderModifier => HttpRouteFilterType::RequestHeaderModifier,
        GrpcRouteFilterType::ResponseHeaderModifier => HttpRouteFilterType::ResponseHeaderModifier,
        GrpcRouteFilterType::RequestMirror => HttpRouteFilterType::RequestMirror,
        GrpcRouteFilterType::ExtensionRef => HttpRouteFilterType::ExtensionRef,
    };
    HttpRouteFilter {
        filter_type,
        request_header_modifier: filter.request_header_modifier.clone(),
        response_header_modifier: filter.response_header_modifier.clone(),
        request_mirror: filter.request_mirror.clone(),
        request_redirect: None,
        url_rewrite: None,
        extension_ref: filter.extension_ref.clone(),
    }
}

/// A GRPCRoute backend as an HTTPRoute backend, its filters too.
fn http_backend(backend: &GrpcBackendRef) -> HttpBackendRef {
    BackendRef {
        group: backend.group.clone(),
        kind: backend.kind.clone(),
        name: backend.name.clone(),
        namespace: backend.namespace.clone(),
        port: backend.port,
        weight: backend.weight,
        filters: backend.filters.iter().map(http_filter).collect(),
    }
}

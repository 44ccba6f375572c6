//! Route tables for the waypoint: the Gateway API HTTPRoutes and GRPCRoutes attached to one Service port, compiled
//! once into matches ordered by precedence ([`RouteTable::compile`]), and the decision for one request
//! ([`RouteTable::decide`]): forward to a weighted backend with the rule's filters, timeouts, retries and injected
//! faults, answer with a redirect, or answer 404 (no route) or 500 (a rule that cannot be honoured). Pure: the
//! waypoint's driver passes the request head and a random sample, and carries out the decision.
//!
//! Semantics (Gateway API v1 with GAMMA, GEP-1426), and the choices ambit makes where the API leaves them open:
//! - Attachment: a route attaches through a parentRef of group `""` (or `core`) and kind `Service`, naming the
//!   Service in its namespace (the route's when unset), with no port or the table's port. Only producer routes (in
//!   the Service's namespace) apply: a consumer route (in another namespace) is meant for its own namespace's
//!   clients, whom a waypoint at the Service cannot single out, so it is left out with a [`Problem`]. A parentRef
//!   with a `sectionName` is left out too (a Service parent is selected by `port`). `hostnames` are ignored, as
//!   GAMMA asks.
//! - GRPCRoutes take precedence over HTTPRoutes on the same Service port (GEP-1426); the HTTPRoutes are then left
//!   out with a [`Problem`]. GRPCRoute rules match gRPC requests only.
//! - No route attached: the default route forwards every request to the Service itself. Routes attached: a request
//!   that matches none is answered 404. A rule without backendRefs forwards to the Service itself, as meshes do.
//! - Precedence across all rules of all routes (Istio's order): an Exact path, then a PathPrefix with more
//!   characters, then a RegularExpression path with more characters, then a method match, more header matches,
//!   more query parameter matches; ties go to the oldest route (`metadata.creationTimestamp`), then to the first
//!   by `namespace/name`, then to the first rule and match. So a catch-all rule (PathPrefix `/`) shadows regular
//!   expression paths, as it does in Istio. GRPCRoute rules: more characters in the service, then in the method,
//!   then more header matches, then the same ties.
//! - Matching: PathPrefix on whole path segments (`/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`; a
//!   trailing `/` in the prefix is ignored); regular expressions in the `regex` crate's dialect (RE2-like), matched
//!   against the whole value; header names without regard to case, a repeated header as its values joined with
//!   `,`, `Host` as the request's authority (HTTP/2 has no Host header); query parameter names exactly, the first
//!   value of a repeated one, both percent-decoded.
//! - A backend that is not a Service (or has no port) is invalid: its share of the requests is answered 500, all of
//!   them when all weights are 0. A rule with a filter ambit cannot apply (ExtensionRef) answers 500.
//! - Fault injection, an ambit extension, is written as annotations on the route (HTTPRoute or GRPCRoute) and
//!   applies to all its rules: [`FAULT_DELAY`] (a Gateway API duration, `500ms`), [`FAULT_DELAY_PERCENT`] (0 to 100,
//!   up to 4 decimals; 100 when unset), [`FAULT_ABORT_STATUS`] (200 to 599) and [`FAULT_ABORT_PERCENT`].
//!
//! Randomness: [`RouteTable::decide`] takes one uniformly random `u32`. The weighted choice scales it onto the
//! weights (so evenly spread samples split exactly by weight); mirrors and faults use independent values derived
//! from it by a bijective mix, so each stays uniform.

mod attach;
mod compile;
mod decide;
mod filter;
mod matcher;
mod policy;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use ambit_config::gateway::{GrpcRoute, HttpRoute};
use http::{HeaderMap, Method, StatusCode};

pub use filter::HeaderOp;
pub use policy::{DEFAULT_RETRY_ATTEMPTS, FAULT_ABORT_PERCENT, FAULT_ABORT_STATUS, FAULT_DELAY, FAULT_DELAY_PERCENT};

/// A Service port: the parent a route table is compiled for (and its default backend), or a backend to forward to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: u16,
}

/// Which kind of route a table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// No route is attached: every request goes to the Service itself.
    Default,
    /// HTTPRoutes.
    Http,
    /// GRPCRoutes (which take precedence over HTTPRoutes on the same Service port).
    Grpc,
}

/// The compiled routes of one Service port: matches in precedence order and the rules they lead to. Built once per
/// configuration change and shared by every request.
#[derive(Clone, Debug)]
pub struct RouteTable {
    service: ServiceRef,
    kind: TableKind,
    entries: Vec<compile::Entry>,
    rules: Vec<compile::Rule>,
}

/// The kind of a route object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    Http,
    Grpc,
}

/// A route object, for problems, logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteRef {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
}

/// One rule of a route: the one a request matched.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub route: RouteRef,
    /// The rule's index in `spec.rules`.
    pub index: usize,
    /// The rule's `name`, when it has one.
    pub name: Option<String>,
}

/// Something in a route that the table cannot honour as written, and what the table does instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub route: RouteRef,
    /// The field path in the route (`spec.rules[0].backendRefs[1].kind`).
    pub field: String,
    /// What is wrong and its consequence.
    pub message: String,
}

/// What routing reads of a request. `path` excludes the query; `query` excludes the `?`.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// `:authority`, or the Host header (possibly with a port); empty when the request has neither.
    pub authority: &'a str,
    /// A gRPC request (`content-type: application/grpc...`).
    pub grpc: bool,
}

/// What to do with a request. Borrows the table it came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision<'t> {
    /// Forward to a backend.
    Forward(Forward<'t>),
    /// Answer with a redirect: `status` and the `Location` header.
    Redirect {
        rule: &'t RuleRef,
        status: StatusCode,
        location: String,
    },
    /// Routes are attached, but none matches: answer 404.
    NoRoute,
    /// The matched rule, or the backend chosen for this request, cannot be honoured: answer 500 (a gRPC request:
    /// status UNAVAILABLE, as GRPCRoute asks).
    Invalid { rule: &'t RuleRef },
}

/// A request to forward, and everything the matched rule asks for on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward<'t> {
    /// The matched rule; `None` for the default route (no route attached).
    pub rule: Option<&'t RuleRef>,
    /// The backend chosen by weight.
    pub backend: &'t ServiceRef,
    pub request: RequestMutations<'t>,
    /// Response header changes (the rule's, then the backend's), in order.
    pub response_headers: &'t [HeaderOp],
    /// Backends that get a copy of the request (responses ignored): those whose percentage this request fell in.
    pub mirrors: Vec<&'t ServiceRef>,
    pub timeouts: Timeouts,
    /// `None` when the rule configures no retries (the driver may apply its default); a policy with 0 attempts
    /// when it disables them.
    pub retry: Option<&'t RetryPolicy>,
    /// The faults injected into this request (already sampled).
    pub fault: Fault,
}

/// Changes to the request before it is forwarded: headers first, in filter order (the rule's, then the
/// backend's), then the URL rewrite.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestMutations<'t> {
    pub headers: &'t [HeaderOp],
    /// A new `:authority`/Host (URLRewrite hostname).
    pub authority: Option<&'t str>,
    /// A new path, without the query (URLRewrite path); the request keeps its query.
    pub path: Option<String>,
}

/// A rule's timeouts; `None` for no timeout (unset, or `0s`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request, retries included.
    pub request: Option<Duration>,
    /// Each try to a backend.
    pub backend_request: Option<Duration>,
}

/// A rule's retries (HTTPRoute `retry`, experimental).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first one; [`DEFAULT_RETRY_ATTEMPTS`] when unset, 0 disables retries.
    pub attempts: u32,
    /// Response statuses to retry (besides connection failures, which a retry policy always retries).
    pub codes: Vec<StatusCode>,
    /// The base interval between tries; the driver's default when `None`.
    pub backoff: Option<Duration>,
}

/// The faults injected into one request: wait `delay`, then answer `abort` instead of forwarding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    pub delay: Option<Duration>,
    pub abort: Option<StatusCode>,
}

// === impl ServiceRef ===

impl ServiceRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, port: u16) -> Self {
        let (namespace, name) = (namespace.into(), name.into());
        Self { namespace, name, port }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// Compiles the routes attached to `service` (a Service port) into a table. `routes` and `grpc` may hold routes
    /// for other Services: those are skipped. Problems are the parts of attached routes the table cannot honour,
    /// each naming its route and field; the table still routes as the Gateway API asks for such parts.
    pub fn compile(routes: &[&HttpRoute], grpc: &[&GrpcRoute], service: &ServiceRef) -> (RouteTable, Vec<Problem>) {
        compile::table(routes, grpc, service)
    }

    /// The decision for one request. `sample` is a uniformly random number: it picks the backend by weight, and
    /// whether this request is mirrored and has faults injected.
    pub fn decide(&self, request: &RequestHead<'_>, sample: u32) -> Decision<'_> {
        decide::decide(self, request, sample)
    }

    /// The Service port this table routes.
    pub fn service(&self) -> &ServiceRef {
        &self.service
    }

    pub fn kind(&self) -> TableKind {
        self.kind
    }
}

// === impl RouteKind ===

impl RouteKind {
    /// The kind's name, as written in `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "HTTPRoute",
            Self::Grpc => "GRPCRoute",
        }
    }
}

// === impl RouteRef ===

impl fmt::Display for RouteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.name(), self.namespace, self.name)
    }
}

// === impl RuleRef ===

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} spec.rules[{}]", self.route, self.index)?;
        match &self.name {
            Some(name) => write!(f, " ({name})"),
            None => Ok(()),
        }
    }
}

// === impl Problem ===

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.route, self.field, self.message)
    }
}

// === impl RequestHead ===

impl<'a> RequestHead<'a> {
    /// The head of an `http` request: the authority from the URI or else the Host header, gRPC by content type.
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        let host = || {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|value| value.to_str().ok())
        };
        let authority = (parts.uri.authority().map(|authority| authority.as_str()))
            .or_else(host)
            .unwrap_or_default();
        let grpc = (parts.headers.get(http::header::CONTENT_TYPE))
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        Self {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            authority,
            grpc,
        }
    }
}

// === impl Decision ===

impl Decision<'_> {
    /// The status the waypoint answers itself with, for all decisions but [`Decision::Forward`].
    pub fn local_status(&self) -> Option<StatusCode> {
        match self {
            Decision::Forward(_) => None,
            Decision::Redirect { status, .. } => Some(*status),
            Decision::NoRoute => Some(StatusCode::NOT_FOUND),
            Decision::Invalid { .. } => Some(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

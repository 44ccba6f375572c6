//! Table tests of route tables, with routes written in YAML as users write them: attachment, the default route and
//! problems (`compile`), every match type and precedence (`matching`), filters (`filters`), timeouts, retries and
//! faults (`policy`), weights and sampled choices (`sampling`), and GRPCRoutes (`grpc`).

mod compile;
mod filters;
mod grpc;
mod matching;
mod policy;
mod sampling;

use ambit_config::gateway::{GrpcRoute, HttpRoute};
use http::Method;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::{Decision, Forward, Problem, RequestHead, RouteTable, RuleRef, ServiceRef};

/// The Service the tables here route: `shop/cart`, port 8080.
fn cart() -> ServiceRef {
    ServiceRef::new("shop", "cart", 8080)
}

fn http(yaml: &str) -> HttpRoute {
    serde_saphyr::from_str(yaml).unwrap_or_else(|error| panic!("bad test HTTPRoute: {error}\n{yaml}"))
}

fn grpc(yaml: &str) -> GrpcRoute {
    serde_saphyr::from_str(yaml).unwrap_or_else(|error| panic!("bad test GRPCRoute: {error}\n{yaml}"))
}

/// An HTTPRoute `shop/<name>` attached to the cart Service, with `rules` (a YAML list).
fn route(name: &str, rules: &str) -> HttpRoute {
    http(&route_yaml(name, "", rules))
}

/// The YAML of an HTTPRoute `shop/<name>` attached to the cart Service, with extra `metadata` lines and `rules`.
fn route_yaml(name: &str, metadata: &str, rules: &str) -> String {
    format!(
        "metadata:\n  name: {name}\n  namespace: shop\n{}spec:\n  parentRefs: [{{group: '', kind: Service, name: cart}}]\n  rules:\n{}",
        indent(metadata, 2),
        indent(rules, 4)
    )
}

/// A GRPCRoute `shop/<name>` attached to the cart Service, with `rules` (a YAML list).
fn grpc_route(name: &str, rules: &str) -> GrpcRoute {
    grpc(&format!(
        "metadata: {{name: {name}, namespace: shop}}\nspec:\n  parentRefs: [{{group: '', kind: Service, name: cart}}]\n  rules:\n{}",
        indent(rules, 4)
    ))
}

/// `text` without its common indentation (and blank first and last lines), indented by `by` spaces.
fn indent(text: &str, by: usize) -> String {
    let lines: Vec<&str> = text.lines().skip_while(|line| line.trim().is_empty()).collect();
    let common = (lines.iter())
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let pad = " ".repeat(by);
    (lines.iter())
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("{pad}{}\n", &line[common..]))
        .collect()
}

/// Compiles HTTPRoutes for the cart Service.
fn compile(routes: &[HttpRoute]) -> (RouteTable, Vec<Problem>) {
    let routes: Vec<&HttpRoute> = routes.iter().collect();
    RouteTable::compile(&routes, &[], &cart())
}

/// Compiles HTTPRoutes for the cart Service, which must raise no problem.
fn table(routes: &[HttpRoute]) -> RouteTable {
    let (table, problems) = compile(routes);
    assert_eq!(problems, [], "unexpected problems");
    table
}

/// A table of one route `r` with `rules`, without problems.
fn one(rules: &str) -> RouteTable {
    table(&[route("r", rules)])
}

/// A request to build up for a test.
#[derive(Clone, Debug)]
struct Request {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    authority: String,
    grpc: bool,
}

// === impl Request ===

impl Request {
    /// `GET target` (a path with an optional `?query`) to `cart.shop:8080`.
    fn get(target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (target, None),
        };
        Request {
            method: Method::GET,
            path: path.to_string(),
            query,
            headers: HeaderMap::new(),
            authority: "cart.shop:8080".to_string(),
            grpc: false,
        }
    }

    /// A gRPC call to `path` (`/<service>/<method>`).
    fn grpc(path: &str) -> Self {
        let mut request = Request::get(path)
            .method(Method::POST)
            .header("content-type", "application/grpc");
        request.grpc = true;
        request
    }

    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Adds a header value (a repeated name adds a value).
    fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("test header name");
        self.headers
            .append(name, HeaderValue::from_str(value).expect("test header value"));
        self
    }

    fn authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_string();
        self
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            authority: &self.authority,
            grpc: self.grpc,
        }
    }
}

fn decide<'t>(table: &'t RouteTable, request: &Request, sample: u32) -> Decision<'t> {
    table.decide(&request.head(), sample)
}

/// The forward decision for `request` (with sample 0); panics on any other decision.
fn forward<'t>(table: &'t RouteTable, request: &Request) -> Forward<'t> {
    match decide(table, request, 0) {
        Decision::Forward(forward) => forward,
        other => panic!("expected a forward decision for {request:?}, got {other:?}"),
    }
}

/// Where a request goes, in a word: the backend's name, `404`, `500 <rule>` or `redirect`.
fn to(table: &RouteTable, request: &Request) -> String {
    match decide(table, request, 0) {
        Decision::Forward(forward) => forward.backend.name.clone(),
        Decision::NoRoute => "404".to_string(),
        Decision::Invalid { rule } => format!("500 {}", label(Some(rule))),
        Decision::Redirect { .. } => "redirect".to_string(),
    }
}

/// A decision in a few words: `forward shop/a:80 by r#0`, `redirect 302 <location>`, `404`, `500 by r#1`.
fn outcome(decision: &Decision<'_>) -> String {
    match decision {
        Decision::Forward(forward) => format!("forward {} by {}", forward.backend, label(forward.rule)),
        Decision::Redirect { status, location, .. } => format!("redirect {} {location}", status.as_u16()),
        Decision::NoRoute => "404".to_string(),
        Decision::Invalid { rule } => format!("500 by {}", label(Some(rule))),
    }
}

/// `route#rule`, or `default` for the default route.
fn label(rule: Option<&RuleRef>) -> String {
    rule.map_or("default".to_string(), |rule| {
        format!("{}#{}", rule.route.name, rule.index)
    })
}

/// `count` samples spread evenly over the `u32` range (the midpoints of `count` equal slices).
fn sweep(count: u64) -> impl Iterator<Item = u32> {
    (0..count).map(move |i| u32::try_from(((2 * i + 1) << 32) / (2 * count)).expect("a u32 sample"))
}

/// The problems' fields, in order.
fn fields(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|problem| problem.field.as_str()).collect()
}

#[test]
fn request_head_from_http_parts() {
    let request = http::Request::post("http://cart.shop:8080/pkg.Cart/Add?x=1")
        .header(CONTENT_TYPE, "application/grpc+proto")
        .body(())
        .expect("a request");
    let (parts, ()) = request.into_parts();
    let head = RequestHead::from_parts(&parts);
    assert_eq!(
        (head.method, head.path, head.query, head.authority, head.grpc),
        (&Method::POST, "/pkg.Cart/Add", Some("x=1"), "cart.shop:8080", true)
    );

    let request = http::Request::get("/a")
        .header("host", "cart:8080")
        .body(())
        .expect("a request");
    let (parts, ()) = request.into_parts();
    let head = RequestHead::from_parts(&parts);
    assert_eq!(
        (head.path, head.query, head.authority, head.grpc),
        ("/a", None, "cart:8080", false)
    );
}

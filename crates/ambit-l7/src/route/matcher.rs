//! Request matching: the HTTPRoute and GRPCRoute matches compiled once (regular expressions built with a size
//! limit, header names parsed, repeated names dropped as the API asks), how specific each is (for precedence), and
//! whether a request head matches.

use std::borrow::Cow;
use std::collections::HashSet;

use ambit_config::gateway::{
    GrpcMethodMatch, HeaderMatch, HttpMethod, HttpPathMatch, HttpRouteMatch, PathMatchType, ValueMatchType,
};
use http::Method;
use http::header::{HOST, HeaderName};
use percent_encoding::percent_decode_str;
use regex::{Regex, RegexBuilder};

use super::RequestHead;
use super::filter::{has_prefix, header_name, normalized_prefix};
use super::policy::Finding;

/// The most memory one compiled regular expression may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How specific a match is: compared element by element, more is more specific. HTTP: path kind (Exact 3,
/// PathPrefix 2, RegularExpression 1), path characters, method (1 or 0), header matches, query parameter matches.
/// gRPC: service characters, method characters, header matches, then exact (1) over regular expression (0).
pub(super) type Specificity = [usize; 5];

/// A compiled match of either route kind.
#[derive(Clone, Debug)]
pub(super) enum Matcher {
    Http(HttpMatcher),
    Grpc(GrpcMatcher),
}

#[derive(Clone, Debug)]
pub(super) struct HttpMatcher {
    path: PathMatcher,
    method: Option<Method>,
    headers: Vec<HeaderMatcher>,
    query: Vec<QueryMatcher>,
}

#[derive(Clone, Debug)]
pub(super) struct GrpcMatcher {
    service: Option<ValueMatcher>,
    method: Option<ValueMatcher>,
    headers: Vec<HeaderMatcher>,
}

#[derive(Clone, Debug)]
enum PathMatcher {
    Exact(String),
    /// Normalized: without a trailing `/`.
    Prefix(String),
    Regex(Regex),
}

#[derive(Clone, Debug)]
struct HeaderMatcher {
    name: HeaderName,
    value: ValueMatcher,
}

#[derive(Clone, Debug)]
struct QueryMatcher {
    name: String,
    value: ValueMatcher,
}

#[derive(Clone, Debug)]
enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

// === impl Matcher ===

impl Matcher {
    /// A matcher that matches every request: the default route's.
    pub fn everything() -> Matcher {
        Matcher::Http(HttpMatcher {
            path: PathMatcher::Prefix(String::new()),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        })
    }

    pub fn matches(&self, head: &RequestHead<'_>) -> bool {
        match self {
            Matcher::Http(matcher) => matcher.matches(head),
            Matcher::Grpc(matcher) => head.grpc && matcher.matches(head),
        }
    }
}

// === impl HttpMatcher ===

impl HttpMatcher {
    /// Compiles an HTTPRoute match at `path`; also its specificity and, for a PathPrefix, its normalized prefix.
    pub fn compile(route_match: &HttpRouteMatch, path: &str) -> Result<(Self, Specificity, Option<String>), Finding> {
        let default_path = HttpPathMatch::default();
        let path_match = route_match.path.as_ref().unwrap_or(&default_path);
        let value = path_match.effective_value();
        let (matcher, rank, length, prefix) = match path_match.effective_type() {
            PathMatchType::Exact => (PathMatcher::Exact(value.to_string()), 3, value.len(), None),
            PathMatchType::PathPrefix => {
                let prefix = normalized_prefix(value).to_string();
                (PathMatcher::Prefix(prefix.clone()), 2, prefix.len(), Some(prefix))
            }
            PathMatchType::RegularExpression => {
                let regex = regex(value, &format!("{path}.path.value"))?;
                (PathMatcher::Regex(regex), 1, value.len(), None)
            }
        };
        let headers = header_matchers(&route_match.headers, &format!("{path}.headers"))?;
        let query = query_matchers(&route_match.query_params, &format!("{path}.queryParams"))?;
        let method = route_match.method.map(method);
        let specificity = [rank, length, usize::from(method.is_some()), headers.len(), query.len()];
        let matcher = HttpMatcher {
            path: matcher,
            method,
            headers,
            query,
        };
        Ok((matcher, specificity, prefix))
    }

    fn matches(&self, head: &RequestHead<'_>) -> bool {
        self.path.matches(head.path)
            && self.method.as_ref().is_none_or(|method| method == head.method)
            && self.headers.iter().all(|header| header.matches(head))
            && self
                .query
                .iter()
                .all(|param| param.matches(head.query.unwrap_or_default()))
    }
}

// === impl GrpcMatcher ===

impl GrpcMatcher {
    /// Compiles a GRPCRoute match (its method part, if any, and its headers) at `path`, with its specificity.
    pub fn compile(
        method: Option<&GrpcMethodMatch>,
        headers: &[HeaderMatch],
        path: &str,
    ) -> Result<(Self, Specificity), Finding> {
        let regex_type = method.and_then(|method| method.match_type) == Some(ValueMatchType::RegularExpression);
        let part = |value: Option<&String>, field: &str| -> Result<Option<ValueMatcher>, Finding> {
            let Some(value) = value else { return Ok(None) };
            let field = format!("{path}.method.{field}");
            Ok(Some(match regex_type {
                true => ValueMatcher::Regex(regex(value, &field)?),
                false => ValueMatcher::Exact(value.clone()),
            }))
        };
        let service = part(method.and_then(|method| method.service.as_ref()), "service")?;
        let method_name = part(method.and_then(|method| method.method.as_ref()), "method")?;
        let headers = header_matchers(headers, &format!("{path}.headers"))?;
        let length = |value: Option<&String>| value.map_or(0, String::len);
        let specificity = [
            length(method.and_then(|method| method.service.as_ref())),
            length(method.and_then(|method| method.method.as_ref())),
            headers.len(),
            usize::from(!regex_type),
            0,
        ];
        let matcher = GrpcMatcher {
            service,
            method: method_name,
            headers,
        };
        Ok((matcher, specificity))
    }

    /// gRPC requests are `POST /<service>/<method>`: the path's two segments are matched.
    fn matches(&self, head: &RequestHead<'_>) -> bool {
        let names = (head.path.strip_prefix('/'))
            .and_then(|rest| rest.split_once('/'))
            .filter(|(service, method)| !service.is_empty() && !method.is_empty() && !method.contains('/'));
        let method_matches = match (&self.service, &self.method, names) {
            (None, None, _) => true,
            (_, _, None) => false,
            (service, method, Some((service_name, method_name))) => {
                service.as_ref().is_none_or(|service| service.matches(service_name))
                    && method.as_ref().is_none_or(|method| method.matches(method_name))
            }
        };
        method_matches && self.headers.iter().all(|header| header.matches(head))
    }
}

// === impl PathMatcher ===

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(exact) => path == exact,
            PathMatcher::Prefix(prefix) => has_prefix(path, prefix),
            PathMatcher::Regex(regex) => regex.is_match(path),
        }
    }
}

// === impl HeaderMatcher ===

impl HeaderMatcher {
    /// A header repeated in the request is matched as its values joined with `,`; a missing one never matches.
    /// `Host` is the request's authority, so that it matches HTTP/2 requests (which carry `:authority` instead).
    fn matches(&self, head: &RequestHead<'_>) -> bool {
        if self.name == HOST && !head.authority.is_empty() {
            return self.value.matches_bytes(head.authority.as_bytes());
        }
        let mut values = head.headers.get_all(&self.name).iter();
        match (values.next(), values.next()) {
            (None, _) => false,
            (Some(only), None) => self.value.matches_bytes(only.as_bytes()),
            (Some(first), Some(second)) => {
                let mut joined = [first.as_bytes(), b",", second.as_bytes()].concat();
                for value in values {
                    joined.push(b',');
                    joined.extend_from_slice(value.as_bytes());
                }
                self.value.matches_bytes(&joined)
            }
        }
    }
}

// === impl QueryMatcher ===

impl QueryMatcher {
    /// Matches the first value of the parameter in `query`; a missing one never matches.
    fn matches(&self, query: &str) -> bool {
        first_query_value(query, &self.name).is_some_and(|value| self.value.matches(&value))
    }
}

// === impl ValueMatcher ===

impl ValueMatcher {
    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatcher::Exact(exact) => value == exact,
            ValueMatcher::Regex(regex) => regex.is_match(value),
        }
    }

    /// Header values are bytes: exact values compare as bytes; a regular expression needs UTF-8.
    fn matches_bytes(&self, value: &[u8]) -> bool {
        match self {
            ValueMatcher::Exact(exact) => value == exact.as_bytes(),
            ValueMatcher::Regex(regex) => std::str::from_utf8(value).is_ok_and(|value| regex.is_match(value)),
        }
    }
}

/// A regular expression that must match a whole value, compiled with a size limit, at `field`.
fn regex(pattern: &str, field: &str) -> Result<Regex, Finding> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| {
            let reason = error.to_string().lines().last().unwrap_or_default().trim().to_string();
            (
                field.to_string(),
                format!("{pattern:?} is not a usable regular expression: {reason}"),
            )
        })
}

/// Header matches at `path`: a name seen before (in any case) is ignored, as the API asks.
fn header_matchers(matches: &[HeaderMatch], path: &str) -> Result<Vec<HeaderMatcher>, Finding> {
    let mut seen = HashSet::new();
    let mut matchers = Vec::new();
    for (k, header) in matches.iter().enumerate() {
        let name = header_name(&header.name, &format!("{path}[{k}].name"))?;
        if seen.insert(name.clone()) {
            let value = value_matcher(header, &format!("{path}[{k}].value"))?;
            matchers.push(HeaderMatcher { name, value });
        }
    }
    Ok(matchers)
}

/// Query parameter matches at `path`: a name seen before (exactly) is ignored, as the API asks.
fn query_matchers(matches: &[HeaderMatch], path: &str) -> Result<Vec<QueryMatcher>, Finding> {
    let mut seen = HashSet::new();
    let mut matchers = Vec::new();
    for (k, param) in matches.iter().enumerate() {
        if seen.insert(param.name.as_str()) {
            let value = value_matcher(param, &format!("{path}[{k}].value"))?;
            matchers.push(QueryMatcher {
                name: param.name.clone(),
                value,
            });
        }
    }
    Ok(matchers)
}

fn value_matcher(header: &HeaderMatch, field: &str) -> Result<ValueMatcher, Finding> {
    Ok(match header.match_type.unwrap_or(ValueMatchType::Exact) {
        ValueMatchType::Exact => ValueMatcher::Exact(header.value.clone()),
        ValueMatchType::RegularExpression => ValueMatcher::Regex(regex(&header.value, field)?),
    })
}

/// The first value of the query parameter `name`, both percent-decoded (a parameter without `=` has the value
/// ``).
fn first_query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode_str(key).decode_utf8_lossy() == name).then(|| percent_decode_str(value).decode_utf8_lossy())
    })
}

fn method(method: HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Connect => Method::CONNECT,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Trace => Method::TRACE,
        HttpMethod::Patch => Method::PATCH,
    }
}

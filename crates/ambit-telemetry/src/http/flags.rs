//! Why a request ended as it did, in Envoy's vocabulary: the response flags (`UH`, `UF`, `NR`, ... in the
//! `response_flags` label and access-log field), the response code details of the access log, and
//! [`LocalReply`], which maps each reason the proxy answers a request itself to the status, flag and details Envoy
//! reports for it.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use http::StatusCode;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use super::{L7Protocol, grpc_status_for_http};

/// Envoy's response code details for the outcomes ambit produces (`%RESPONSE_CODE_DETAILS%`).
pub mod details {
    /// The response came from the upstream.
    pub const VIA_UPSTREAM: &str = "via_upstream";
    /// No route matched the request.
    pub const ROUTE_NOT_FOUND: &str = "route_not_found";
    /// The route's backend is not a known service.
    pub const CLUSTER_NOT_FOUND: &str = "cluster_not_found";
    /// The backend has no healthy endpoint.
    pub const NO_HEALTHY_UPSTREAM: &str = "no_healthy_upstream";
    /// The upstream connection could not be established.
    pub const CONNECTION_FAILURE: &str = "upstream_reset_before_response_started{connection_failure}";
    /// A connection or request limit towards the upstream was reached.
    pub const OVERFLOW: &str = "upstream_reset_before_response_started{overflow}";
    /// The upstream reset the stream before responding.
    pub const REMOTE_RESET: &str = "upstream_reset_before_response_started{remote_reset}";
    /// The route's timeout expired before the upstream responded.
    pub const UPSTREAM_RESPONSE_TIMEOUT: &str = "upstream_response_timeout";
    /// Fault injection aborted the request.
    pub const FAULT_FILTER_ABORT: &str = "fault_filter_abort";
    /// The client went away before the request completed.
    pub const DOWNSTREAM_REMOTE_DISCONNECT: &str = "downstream_remote_disconnect";
    /// The prefix of an authorization denial; the matched policy follows in brackets.
    pub const RBAC_ACCESS_DENIED: &str = "rbac_access_denied_matched_policy";
}

/// One Envoy response flag. The variants are in Envoy's order, which is the order a set renders in.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResponseFlag {
    /// `UH`: no healthy upstream endpoint.
    NoHealthyUpstream,
    /// `UT`: the upstream did not respond within the route's timeout.
    UpstreamRequestTimeout,
    /// `LR`: the proxy reset the stream itself.
    LocalReset,
    /// `UR`: the upstream reset the stream.
    UpstreamRemoteReset,
    /// `UF`: the upstream connection failed.
    UpstreamConnectionFailure,
    /// `UC`: the upstream connection closed mid-request.
    UpstreamConnectionTermination,
    /// `UO`: upstream overflow (circuit breaking).
    UpstreamOverflow,
    /// `NR`: no route matched.
    NoRouteFound,
    /// `DI`: fault injection delayed the request.
    DelayInjected,
    /// `FI`: fault injection aborted the request.
    FaultInjected,
    /// `RL`: rate limited.
    RateLimited,
    /// `DC`: the downstream connection closed before the request completed.
    DownstreamConnectionTermination,
    /// `URX`: retries exhausted (or the upstream connect attempts).
    UpstreamRetryLimitExceeded,
    /// `SI`: the stream idle timeout expired.
    StreamIdleTimeout,
    /// `DPE`: the downstream request was malformed.
    DownstreamProtocolError,
    /// `DT`: the request exceeded its maximum duration.
    DurationTimeout,
    /// `UPE`: the upstream response was malformed.
    UpstreamProtocolError,
    /// `NC`: the route's backend is not a known cluster (service).
    NoClusterFound,
    /// `DR`: the downstream reset the stream (HTTP/2).
    DownstreamRemoteReset,
}

/// A set of [`ResponseFlag`]s, rendered as Envoy renders `%RESPONSE_FLAGS%`: the short codes in Envoy's order
/// joined by `,`, or `-` when empty.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub struct ResponseFlagSet(u32);

/// The policy an authorization denial matched, named as Envoy's RBAC filter names it:
/// `ns[<namespace>]-policy[<name>]-rule[<index>]`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct MatchedPolicy {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The index of the matching rule within the policy.
    pub rule: usize,
}

/// Why the proxy answered a request itself instead of relaying an upstream response.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum LocalReply {
    /// No route matched: 404, `NR`.
    NoRoute,
    /// The route's backend is not a known service: 503, `NC`.
    NoCluster,
    /// The backend has no healthy endpoint: 503, `UH`.
    NoHealthyUpstream,
    /// The upstream connection failed (after any retries): 503, `UF`.
    UpstreamConnectFailure,
    /// A limit towards the upstream was reached: 503, `UO`.
    UpstreamOverflow,
    /// The upstream reset the stream before responding: 503, `UR`.
    UpstreamReset,
    /// The route's timeout expired: 504, `UT`.
    UpstreamTimeout,
    /// Fault injection aborted the request with this status: `FI`.
    FaultAbort(StatusCode),
    /// Authorization denied the request: 403 and no flag, as Envoy's RBAC filter reports it. `None` when no
    /// policy matched (some ALLOW policy applies but none allowed).
    Denied(Option<MatchedPolicy>),
}

// === impl ResponseFlag ===

impl ResponseFlag {
    /// Every flag, in Envoy's order.
    pub const ALL: [ResponseFlag; 19] = [
        ResponseFlag::NoHealthyUpstream,
        ResponseFlag::UpstreamRequestTimeout,
        ResponseFlag::LocalReset,
        ResponseFlag::UpstreamRemoteReset,
        ResponseFlag::UpstreamConnectionFailure,
        ResponseFlag::UpstreamConnectionTermination,
        ResponseFlag::UpstreamOverflow,
        ResponseFlag::NoRouteFound,
        ResponseFlag::DelayInjected,
        ResponseFlag::FaultInjected,
        ResponseFlag::RateLimited,
        ResponseFlag::DownstreamConnectionTermination,
        ResponseFlag::UpstreamRetryLimitExceeded,
        ResponseFlag::StreamIdleTimeout,
        ResponseFlag::DownstreamProtocolError,
        ResponseFlag::DurationTimeout,
        ResponseFlag::UpstreamProtocolError,
        ResponseFlag::NoClusterFound,
        ResponseFlag::DownstreamRemoteReset,
    ];

    /// Envoy's short code, as `%RESPONSE_FLAGS%` and Istio's `response_flags` label print it.
    pub fn short_code(self) -> &'static str {
        match self {
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::LocalReset => "LR",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::NoRouteFound => "NR",
            ResponseFlag::DelayInjected => "DI",
            ResponseFlag::FaultInjected => "FI",
            ResponseFlag::RateLimited => "RL",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::StreamIdleTimeout => "SI",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::DurationTimeout => "DT",
            ResponseFlag::UpstreamProtocolError => "UPE",
            ResponseFlag::NoClusterFound => "NC",
            ResponseFlag::DownstreamRemoteReset => "DR",
        }
    }

    /// This flag's bit in a [`ResponseFlagSet`]: its position in Envoy's order.
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_code())
    }
}

// === impl ResponseFlagSet ===

impl ResponseFlagSet {
    pub const EMPTY: ResponseFlagSet = ResponseFlagSet(0);

    pub fn insert(&mut self, flag: ResponseFlag) {
        self.0 |= flag.bit();
    }

    /// The set with `flag` added.
    pub fn with(mut self, flag: ResponseFlag) -> Self {
        self.insert(flag);
        self
    }

    pub fn contains(self, flag: ResponseFlag) -> bool {
        self.0 & flag.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags in the set, in Envoy's order.
    pub fn iter(self) -> impl Iterator<Item = ResponseFlag> {
        ResponseFlag::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl From<ResponseFlag> for ResponseFlagSet {
    fn from(flag: ResponseFlag) -> Self {
        Self::EMPTY.with(flag)
    }
}

impl FromIterator<ResponseFlag> for ResponseFlagSet {
    fn from_iter<I: IntoIterator<Item = ResponseFlag>>(flags: I) -> Self {
        flags.into_iter().fold(Self::EMPTY, Self::with)
    }
}

impl fmt::Display for ResponseFlagSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_char('-');
        }
        for (i, flag) in self.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            f.write_str(flag.short_code())?;
        }
        Ok(())
    }
}

impl EncodeLabelValue for ResponseFlagSet {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        write!(encoder, "{self}")
    }
}

// === impl MatchedPolicy ===

impl fmt::Display for MatchedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ns[{}]-policy[{}]-rule[{}]", self.namespace, self.name, self.rule)
    }
}

// === impl LocalReply ===

impl LocalReply {
    /// The status sent downstream.
    pub fn status(&self) -> StatusCode {
        match self {
            LocalReply::NoRoute => StatusCode::NOT_FOUND,
            LocalReply::NoCluster
            | LocalReply::NoHealthyUpstream
            | LocalReply::UpstreamConnectFailure
            | LocalReply::UpstreamOverflow
            | LocalReply::UpstreamReset => StatusCode::SERVICE_UNAVAILABLE,
            LocalReply::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::FaultAbort(status) => *status,
            LocalReply::Denied(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The response flag Envoy sets for it; none for a denial.
    pub fn flag(&self) -> Option<ResponseFlag> {
        match self {
            LocalReply::NoRoute => Some(ResponseFlag::NoRouteFound),
            LocalReply::NoCluster => Some(ResponseFlag::NoClusterFound),
            LocalReply::NoHealthyUpstream => Some(ResponseFlag::NoHealthyUpstream),
            LocalReply::UpstreamConnectFailure => Some(ResponseFlag::UpstreamConnectionFailure),
            LocalReply::UpstreamOverflow => Some(ResponseFlag::UpstreamOverflow),
            LocalReply::UpstreamReset => Some(ResponseFlag::UpstreamRemoteReset),
            LocalReply::UpstreamTimeout => Some(ResponseFlag::UpstreamRequestTimeout),
            LocalReply::FaultAbort(_) => Some(ResponseFlag::FaultInjected),
            LocalReply::Denied(_) => None,
        }
    }

    /// The status to send downstream and the gRPC status it carries: for HTTP, [`LocalReply::status`] and none;
    /// for gRPC, Envoy's trailers-only reply, `200` with the gRPC status mapped from [`LocalReply::status`]
    /// ([`grpc_status_for_http`]).
    pub fn downstream_status(&self, protocol: L7Protocol) -> (StatusCode, Option<u32>) {
        match protocol {
            L7Protocol::Http => (self.status(), None),
            L7Protocol::Grpc => (StatusCode::OK, Some(grpc_status_for_http(self.status()))),
        }
    }

    /// The access log's `response_code_details`.
    pub fn details(&self) -> Cow<'static, str> {
        let fixed = match self {
            LocalReply::NoRoute => details::ROUTE_NOT_FOUND,
            LocalReply::NoCluster => details::CLUSTER_NOT_FOUND,
            LocalReply::NoHealthyUpstream => details::NO_HEALTHY_UPSTREAM,
            LocalReply::UpstreamConnectFailure => details::CONNECTION_FAILURE,
            LocalReply::UpstreamOverflow => details::OVERFLOW,
            LocalReply::UpstreamReset => details::REMOTE_RESET,
            LocalReply::UpstreamTimeout => details::UPSTREAM_RESPONSE_TIMEOUT,
            LocalReply::FaultAbort(_) => details::FAULT_FILTER_ABORT,
            LocalReply::Denied(None) => return Cow::Owned(format!("{}[none]", details::RBAC_ACCESS_DENIED)),
            LocalReply::Denied(Some(policy)) => {
                return Cow::Owned(format!("{}[{policy}]", details::RBAC_ACCESS_DENIED));
            }
        };
        Cow::Borrowed(fixed)
    }
}

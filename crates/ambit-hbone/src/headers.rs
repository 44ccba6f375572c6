//! The metadata headers an outbound CONNECT carries (`forwarded`, `baggage`, `traceparent`, `x-forwarded-network`)
//! and the W3C trace context value.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use http::header::{FORWARDED, HeaderName, HeaderValue, InvalidHeaderValue};

pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Set on the inner CONNECT of double HBONE to the source network's name.
pub const X_FORWARDED_NETWORK: HeaderName = HeaderName::from_static("x-forwarded-network");

/// Headers of an outbound CONNECT, as ztunnel sends them. Every field is optional; an absent one is not sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectHeaders {
    /// The original client's address: `forwarded: for="<ip:port>"`.
    pub forwarded_for: Option<SocketAddr>,
    /// The destination service's hostname, when one is known: appended as `;host=<hostname>`.
    pub forwarded_host: Option<String>,
    /// `baggage`: comma-separated `key=value` pairs describing the source workload.
    pub baggage: Option<String>,
    /// `traceparent`: made once per outbound connection by the caller.
    pub traceparent: Option<TraceParent>,
    /// `x-forwarded-network` (inner CONNECT of double HBONE only).
    pub forwarded_network: Option<String>,
}

/// A header value the caller supplied cannot be sent.
#[derive(Debug, thiserror::Error)]
#[error("the {name} header value is not a valid HTTP header value")]
pub struct HeaderError {
    pub name: HeaderName,
    #[source]
    pub source: InvalidHeaderValue,
}

/// W3C trace context: `00-<trace id, 32 hex>-<parent id, 16 hex>-00` (version 00, flags 00: not sampled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a traceparent: expected 00-<32 hex>-<16 hex>-<2 hex>")]
pub struct TraceParentError(String);

// === impl ConnectHeaders ===

impl ConnectHeaders {
    /// Writes the present fields into `headers`.
    pub(crate) fn write_to(&self, headers: &mut http::HeaderMap) -> Result<(), HeaderError> {
        if let Some(forwarded) = self.forwarded() {
            headers.insert(FORWARDED, value(&FORWARDED, forwarded)?);
        }
        if let Some(baggage) = &self.baggage {
            headers.insert(BAGGAGE, value(&BAGGAGE, baggage.clone())?);
        }
        if let Some(traceparent) = self.traceparent {
            headers.insert(TRACEPARENT, value(&TRACEPARENT, traceparent.to_string())?);
        }
        if let Some(network) = &self.forwarded_network {
            headers.insert(X_FORWARDED_NETWORK, value(&X_FORWARDED_NETWORK, network.clone())?);
        }
        Ok(())
    }

    fn forwarded(&self) -> Option<String> {
        match (&self.forwarded_for, &self.forwarded_host) {
            (Some(addr), Some(host)) => Some(format!("for=\"{addr}\";host={host}")),
            (Some(addr), None) => Some(format!("for=\"{addr}\"")),
            (None, Some(host)) => Some(format!("host={host}")),
            (None, None) => None,
        }
    }
}

/// The `host=` parameter of the first `forwarded` element, unquoted (RFC 7239), if there is one.
pub fn forwarded_host(headers: &http::HeaderMap) -> Option<&str> {
    let forwarded = headers.get(FORWARDED)?.to_str().ok()?;
    let first = forwarded.split(',').next()?;
    first.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.eq_ignore_ascii_case("host")
            .then(|| value.trim_matches('"'))
            .filter(|host| !host.is_empty())
    })
}

fn value(name: &HeaderName, value: String) -> Result<HeaderValue, HeaderError> {
    HeaderValue::try_from(value).map_err(|source| HeaderError {
        name: name.clone(),
        source,
    })
}

// === impl TraceParent ===

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-00", self.trace_id, self.parent_id)
    }
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    /// Accepts any version and flags (the receiver only reuses the ids); ids must be lowercase hex of full width.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || TraceParentError(s.to_owned());
        let mut parts = s.split('-');
        let mut next = |len: usize| {
            parts
                .next()
                .filter(|p| p.len() == len && is_lower_hex(p))
                .ok_or_else(error)
        };
        next(2)?;
        let trace_id = u128::from_str_radix(next(32)?, 16).map_err(|_| error())?;
        let parent_id = u64::from_str_radix(next(16)?, 16).map_err(|_| error())?;
        next(2)?;
        if parts.next().is_some() {
            return Err(error());
        }
        Ok(TraceParent { trace_id, parent_id })
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_host_is_the_host_parameter_of_the_first_element() {
        let mut map = http::HeaderMap::new();
        map.insert(
            FORWARDED,
            HeaderValue::from_static("for=\"10.0.0.1:5\";host=echo.demo.svc.cluster.local"),
        );
        assert_eq!(forwarded_host(&map), Some("echo.demo.svc.cluster.local"));
        map.insert(FORWARDED, HeaderValue::from_static("Host=\"a.b\", host=c.d"));
        assert_eq!(forwarded_host(&map), Some("a.b"));
        map.insert(FORWARDED, HeaderValue::from_static("for=\"10.0.0.1:5\""));
        assert_eq!(forwarded_host(&map), None);
    }

    #[test]
    fn traceparent_round_trips() {
        let tp = TraceParent {
            trace_id: 0xabc,
            parent_id: 0x12,
        };
        let text = tp.to_string();
        assert_eq!(text, "00-00000000000000000000000000000abc-0000000000000012-00");
        assert_eq!(text.parse::<TraceParent>(), Ok(tp));
        for bad in [
            "",
            "00-abc-12-00",
            "00-00000000000000000000000000000ABC-0000000000000012-00",
            "00-00000000000000000000000000000abc-0000000000000012-00-00",
            "00-00000000000000000000000000000abc-0000000000000012",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_forwarded_as_ztunnel_does() {
        let mut headers = ConnectHeaders {
            forwarded_for: Some("10.0.0.1:4711".parse().unwrap()),
            forwarded_host: Some("reviews.default.svc.cluster.local".into()),
            baggage: Some("k8s.namespace.name=default".into()),
            traceparent: Some(TraceParent {
                trace_id: 1,
                parent_id: 2,
            }),
            forwarded_network: None,
        };
        let mut map = http::HeaderMap::new();
        headers.write_to(&mut map).unwrap();
        assert_eq!(
            map[FORWARDED],
            "for=\"10.0.0.1:4711\";host=reviews.default.svc.cluster.local"
        );
        assert_eq!(map[BAGGAGE], "k8s.namespace.name=default");
        assert_eq!(
            map[TRACEPARENT],
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
        assert!(!map.contains_key(X_FORWARDED_NETWORK));

        headers.forwarded_host = None;
        headers.forwarded_for = Some("[fd00::1]:80".parse().unwrap());
        headers.write_to(&mut map).unwrap();
        assert_eq!(map[FORWARDED], "for=\"[fd00::1]:80\"");
        assert_eq!(forwarded_host(&map), None);

        headers.baggage = Some("bad\nvalue".into());
        let err = headers.write_to(&mut map).unwrap_err();
        assert_eq!(err.name, BAGGAGE);
    }
}

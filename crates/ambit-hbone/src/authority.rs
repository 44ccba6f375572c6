//! The CONNECT target (`:authority`): a socket address or a `hostname:port`, parsed once and validated.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Longest DNS name accepted as a hostname authority.
const MAX_HOST_LEN: usize = 253;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// Where a CONNECT tunnel leads: `IP:port` (a pod, or a service VIP through a waypoint) or `hostname:port` (a service
/// by name, as double HBONE sends). IPv6 addresses are bracketed on the wire (`[fd00::1]:80`). Port 0 is refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Authority {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("{0:?} has no port: an authority is IP:port or hostname:port")]
    NoPort(String),
    #[error("{0:?} has an invalid port: use 1 to 65535")]
    Port(String),
    #[error("{0:?} is not an IP address or a DNS hostname")]
    Host(String),
}

// === impl Authority ===

impl Authority {
    pub fn port(&self) -> u16 {
        match self {
            Authority::Addr(addr) => addr.port(),
            Authority::Host { port, .. } => *port,
        }
    }

    /// The socket address, for an `IP:port` authority.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Authority::Addr(addr) => Some(*addr),
            Authority::Host { .. } => None,
        }
    }
}

impl FromStr for Authority {
    type Err = AuthorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(AuthorityError::Port(s.to_owned()));
            }
            return Ok(Authority::Addr(addr));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| AuthorityError::NoPort(s.to_owned()))?;
        let port = match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(AuthorityError::Port(s.to_owned())),
        };
        if !is_hostname(host) {
            return Err(AuthorityError::Host(s.to_owned()));
        }
        Ok(Authority::Host {
            host: host.to_owned(),
            port,
        })
    }
}

impl From<SocketAddr> for Authority {
    fn from(addr: SocketAddr) -> Self {
        Authority::Addr(addr)
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authority::Addr(addr) => write!(f, "{addr}"),
            Authority::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A DNS name: dot-separated labels of ASCII letters, digits and inner hyphens, at most 253 bytes. An all-numeric
/// last label is refused, so that a malformed IPv4 address is not taken for a name.
fn is_hostname(host: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let last_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    host.len() <= MAX_HOST_LEN && host.split('.').all(label_ok) && !last_numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_each_form() {
        let cases = [
            ("10.0.0.1:8080", "10.0.0.1:8080"),
            ("[fd00::1]:80", "[fd00::1]:80"),
            (
                "reviews.default.svc.cluster.local:9080",
                "reviews.default.svc.cluster.local:9080",
            ),
            ("localhost:1", "localhost:1"),
        ];
        for (input, printed) in cases {
            let authority: Authority = input.parse().unwrap();
            assert_eq!(authority.to_string(), printed, "{input}");
        }
        assert_eq!("10.0.0.1:8080".parse::<Authority>().unwrap().port(), 8080);
        assert_eq!("a.b:7".parse::<Authority>().unwrap().addr(), None);
    }

    #[test]
    fn refuses_malformed_authorities() {
        let cases = [
            ("10.0.0.1", AuthorityError::NoPort("10.0.0.1".into())),
            ("svc", AuthorityError::NoPort("svc".into())),
            ("svc:0", AuthorityError::Port("svc:0".into())),
            ("10.0.0.1:0", AuthorityError::Port("10.0.0.1:0".into())),
            ("svc:http", AuthorityError::Port("svc:http".into())),
            ("svc:70000", AuthorityError::Port("svc:70000".into())),
            ("fd00::1:80", AuthorityError::Host("fd00::1:80".into())),
            ("10.0.0.300:80", AuthorityError::Host("10.0.0.300:80".into())),
            ("bad_host:80", AuthorityError::Host("bad_host:80".into())),
            ("-a.b:80", AuthorityError::Host("-a.b:80".into())),
            ("a..b:80", AuthorityError::Host("a..b:80".into())),
            (":80", AuthorityError::Host(":80".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<Authority>(), Err(expected), "{input}");
        }
        let long = format!("{}:80", vec!["a".repeat(63); 4].join("."));
        assert!(matches!(long.parse::<Authority>(), Err(AuthorityError::Host(_))));
    }
}

//! SPIFFE workload identities of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, the only
//! identity shape the mesh issues, presents or accepts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const SCHEME: &str = "spiffe://";

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-` and `_`, at most 255 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

/// A workload identity: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identity {
    trust_domain: TrustDomain,
    namespace: String,
    service_account: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{0:?} is not a SPIFFE ID: it must start with \"spiffe://\"")]
    Scheme(String),
    #[error("{0:?} has an invalid trust domain: use 1 to 255 lowercase letters, digits, '.', '-' or '_'")]
    TrustDomain(String),
    #[error("{0:?} is not a workload identity: the path must be /ns/<namespace>/sa/<service-account>")]
    Path(String),
    #[error("{id:?} has an invalid {part} {value:?}: use 1 to 253 lowercase letters, digits, '-' or '.'")]
    Segment {
        id: String,
        part: &'static str,
        value: String,
    },
}

// === impl TrustDomain ===

impl TrustDomain {
    pub fn new(domain: &str) -> Result<Self, IdentityError> {
        let ok = !domain.is_empty()
            && domain.len() <= 255
            && domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
        if ok {
            Ok(Self(domain.to_string()))
        } else {
            Err(IdentityError::TrustDomain(domain.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = IdentityError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<TrustDomain> for String {
    fn from(t: TrustDomain) -> String {
        t.0
    }
}

// === impl Identity ===

impl Identity {
    pub fn new(trust_domain: TrustDomain, namespace: &str, service_account: &str) -> Result<Self, IdentityError> {
        let id = || format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}");
        for (part, value) in [("namespace", namespace), ("service account", service_account)] {
            if !valid_segment(value) {
                return Err(IdentityError::Segment {
                    id: id(),
                    part,
                    value: value.to_string(),
                });
            }
        }
        Ok(Self {
            trust_domain,
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

/// Kubernetes namespace and service-account names: DNS subdomains.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::Scheme(s.to_string()))?;
        let (domain, path) = rest.split_once('/').ok_or_else(|| IdentityError::Path(s.to_string()))?;
        let trust_domain = TrustDomain::new(domain).map_err(|_| IdentityError::TrustDomain(s.to_string()))?;
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["ns", ns, "sa", sa] => Identity::new(trust_domain, ns, sa),
            _ => Err(IdentityError::Path(s.to_string())),
        }
    }
}

impl TryFrom<String> for Identity {
    type Error = IdentityError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Identity> for String {
    fn from(id: Identity) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let id: Identity = "spiffe://cluster.local/ns/demo/sa/client".parse().unwrap();
        assert_eq!(id.trust_domain().as_str(), "cluster.local");
        assert_eq!(id.namespace(), "demo");
        assert_eq!(id.service_account(), "client");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/demo/sa/client");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<Identity>(&json).unwrap(), id);
    }

    #[test]
    fn rejects_everything_else() {
        type Check = fn(&IdentityError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("https://cluster.local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::Scheme(_))
            }),
            ("spiffe://Cluster.local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::TrustDomain(_))
            }),
            ("spiffe:///ns/a/sa/b", |e| matches!(e, IdentityError::TrustDomain(_))),
            ("spiffe://cluster.local", |e| matches!(e, IdentityError::Path(_))),
            ("spiffe://cluster.local/ns/a", |e| matches!(e, IdentityError::Path(_))),
            ("spiffe://cluster.local/ns/a/sa/b/extra", |e| {
                matches!(e, IdentityError::Path(_))
            }),
            ("spiffe://cluster.local/sa/b/ns/a", |e| {
                matches!(e, IdentityError::Path(_))
            }),
            ("spiffe://cluster.local/ns//sa/b", |e| {
                matches!(e, IdentityError::Segment { .. })
            }),
            ("spiffe://cluster.local/ns/a/sa/B", |e| {
                matches!(e, IdentityError::Segment { .. })
            }),
            ("spiffe://cluster.local/ns/a/sa/b?x=1", |e| {
                matches!(e, IdentityError::Segment { .. })
            }),
            ("", |e| matches!(e, IdentityError::Scheme(_))),
        ];
        for (input, want) in cases {
            let err = input.parse::<Identity>().unwrap_err();
            assert!(want(&err), "{input:?} gave {err:?}");
        }
    }
}

//! `IpNet`: an IPv4 or IPv6 network in CIDR notation, the address ranges that policies match source and
//! destination addresses against.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 or IPv6 network: an address and a prefix length of at most 32 or 128 bits. Host bits may be set
/// (`10.0.0.1/8`); they are ignored when matching, as Istio does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    #[error("{0:?} is not a CIDR: the address is neither IPv4 nor IPv6")]
    Address(String),
    #[error("{0:?} is not a CIDR: the prefix length after '/' must be a number")]
    PrefixLength(String),
    #[error("{value:?} is not a CIDR: the prefix length {len} is longer than the {max} bits of the address")]
    TooLong { value: String, len: u32, max: u8 },
}

// === impl IpNet ===

impl IpNet {
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, IpNetError> {
        let max = bits(addr);
        if prefix_len > max {
            return Err(IpNetError::TooLong {
                value: format!("{addr}/{prefix_len}"),
                len: prefix_len.into(),
                max,
            });
        }
        Ok(Self { addr, prefix_len })
    }

    /// The network holding exactly `addr`: `/32` or `/128`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix_len: bits(addr),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is inside the network. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack socket
    /// reports an IPv4 peer) is compared as the IPv4 address it carries; otherwise families never match.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(net.to_bits().into(), ip.to_bits().into(), 32, self.prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(net.to_bits(), ip.to_bits(), 128, self.prefix_len),
            _ => false,
        }
    }
}

fn bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Whether `a` and `b`, two addresses `width` bits wide held in the low bits, agree on their first `len` bits.
fn same_prefix(a: u128, b: u128, width: u8, len: u8) -> bool {
    let shift = width - len;
    shift >= 128 || (a >> shift) == (b >> shift)
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address meaning that host alone.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpNetError::Address(s.to_string()))?;
        let Some(len) = len else {
            return Ok(Self::host(addr));
        };
        let len = prefix_len(len).ok_or_else(|| IpNetError::PrefixLength(s.to_string()))?;
        match u8::try_from(len) {
            Ok(len) if len <= bits(addr) => Ok(Self { addr, prefix_len: len }),
            _ => Err(IpNetError::TooLong {
                value: s.to_string(),
                len,
                max: bits(addr),
            }),
        }
    }
}

/// A prefix length written as plain decimal digits without leading zeros (`u32::from_str` alone would accept `+8`).
fn prefix_len(text: &str) -> Option<u32> {
    let plain = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    plain.then(|| text.parse().ok()).flatten()
}

impl TryFrom<String> for IpNet {
    type Error = IpNetError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<IpNet> for String {
    fn from(net: IpNet) -> String {
        net.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_contains() {
        // (text, printed, inside, outside)
        let cases: &[(&str, &str, &[&str], &[&str])] = &[
            (
                "10.0.0.0/8",
                "10.0.0.0/8",
                &["10.0.0.0", "10.255.255.255"],
                &["11.0.0.0", "9.255.255.255"],
            ),
            ("10.1.2.3", "10.1.2.3/32", &["10.1.2.3"], &["10.1.2.4"]),
            ("10.1.2.3/16", "10.1.2.3/16", &["10.1.200.1"], &["10.2.0.1"]),
            ("0.0.0.0/0", "0.0.0.0/0", &["1.2.3.4", "::ffff:1.2.3.4"], &["::1"]),
            ("10.0.0.0/8", "10.0.0.0/8", &["::ffff:10.9.9.9"], &["fe80::a00:1"]),
            (
                "2001:db8::/32",
                "2001:db8::/32",
                &["2001:db8:ffff::1"],
                &["2001:db9::1", "10.0.0.1"],
            ),
            ("::/0", "::/0", &["fe80::1"], &["10.0.0.1"]),
            ("fd00::1", "fd00::1/128", &["fd00::1"], &["fd00::2"]),
        ];
        for (text, printed, inside, outside) in cases {
            let net: IpNet = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(net.to_string(), *printed);
            for ip in *inside {
                assert!(net.contains(ip.parse().unwrap()), "{text} should contain {ip}");
            }
            for ip in *outside {
                assert!(!net.contains(ip.parse().unwrap()), "{text} should not contain {ip}");
            }
        }
    }

    #[test]
    fn rejects_bad_text() {
        let cases = [
            (
                "10.0.0.0/33",
                "\"10.0.0.0/33\" is not a CIDR: the prefix length 33 is longer than the 32 bits of the address",
            ),
            (
                "10.0.0.0/300",
                "\"10.0.0.0/300\" is not a CIDR: the prefix length 300 is longer than the 32 bits of the address",
            ),
            (
                "::/129",
                "\"::/129\" is not a CIDR: the prefix length 129 is longer than the 128 bits of the address",
            ),
            (
                "10.0.0/8",
                "\"10.0.0/8\" is not a CIDR: the address is neither IPv4 nor IPv6",
            ),
            ("foo", "\"foo\" is not a CIDR: the address is neither IPv4 nor IPv6"),
            ("", "\"\" is not a CIDR: the address is neither IPv4 nor IPv6"),
            (
                "10.0.0.0/",
                "\"10.0.0.0/\" is not a CIDR: the prefix length after '/' must be a number",
            ),
            (
                "10.0.0.0/+8",
                "\"10.0.0.0/+8\" is not a CIDR: the prefix length after '/' must be a number",
            ),
            (
                "10.0.0.0/08",
                "\"10.0.0.0/08\" is not a CIDR: the prefix length after '/' must be a number",
            ),
            (
                "10.0.0.0/8/8",
                "\"10.0.0.0/8/8\" is not a CIDR: the prefix length after '/' must be a number",
            ),
        ];
        for (text, want) in cases {
            let err = text.parse::<IpNet>().unwrap_err();
            assert_eq!(err.to_string(), want, "{text}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let net: IpNet = "192.168.0.0/16".parse().unwrap();
        let json = serde_json::to_string(&net).unwrap();
        assert_eq!(json, "\"192.168.0.0/16\"");
        assert_eq!(serde_json::from_str::<IpNet>(&json).unwrap(), net);
        assert!(serde_json::from_str::<IpNet>("\"1.2.3.4/40\"").is_err());
    }
}

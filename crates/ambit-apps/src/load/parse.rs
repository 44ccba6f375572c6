//! Parsers for `ambit app load` arguments: humane durations, `Name: value` headers, HTTP URLs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

/// Parse a humane duration such as `10s`, `500ms`, `2m`, `1h`, `1.5s`, `250us`
/// or `1m30s`. A bare number means seconds.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let text = input.trim();
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let invalid = || format!("invalid duration {input:?}: expected e.g. 10s, 500ms, 2m, 1h30m");
    let mut rest = text;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" | "sec" => 1_000_000_000,
            "m" | "min" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(invalid)?;
        if !fraction.is_empty() {
            if fraction.len() > 12 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let digits: u128 = fraction.parse().map_err(|_| invalid())?;
            let scale = 10u128.pow(fraction.len() as u32);
            nanos += digits * unit_nanos / scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(invalid)?;
        rest = after;
    }
    u64::try_from(total_nanos)
        .map(Duration::from_nanos)
        .map_err(|_| invalid())
}

/// An extra HTTP request header given as `Name: value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl FromStr for Header {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = s
            .split_once(':')
            .ok_or_else(|| format!("invalid header {s:?}: expected 'Name: value'"))?;
        let name =
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("invalid header name in {s:?}"))?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| format!("invalid header value in {s:?}"))?;
        Ok(Header { name, value })
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.name)?;
        f.write_str(&String::from_utf8_lossy(self.value.as_bytes()))
    }
}

/// The parts of an `http://HOST[:PORT][/PATH]` URL that the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or address (IPv6 without brackets), for name resolution.
    pub host: String,
    pub port: u16,
    /// Value of the `host` header (`HOST[:PORT]` as written in the URL).
    pub authority: String,
    /// Request target in origin form, e.g. `/hello?x=1`.
    pub path_and_query: String,
}

impl FromStr for HttpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let uri: Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "unsupported URL scheme {other:?} in {s:?}: only http:// is supported"
                ));
            }
            None => return Err(format!("invalid URL {s:?}: expected http://HOST:PORT/PATH")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("invalid URL {s:?}: missing host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("invalid URL {s:?}: user info is not supported"));
        }
        let host = authority.host();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Err(format!("invalid URL {s:?}: missing host"));
        }
        let path_and_query = match uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(pq) if pq.starts_with('/') => pq.to_owned(),
            Some(pq) => format!("/{pq}"),
        };
        Ok(HttpUrl {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query,
        })
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("250µs"), Duration::from_micros(250));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("0.001s"), Duration::from_millis(1));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1h2m3s4ms"), Duration::from_millis(3_723_004));
        assert_eq!(ok("3"), Duration::from_secs(3));
        assert_eq!(ok(" 0s "), Duration::ZERO);
    }

    #[test]
    fn bad_durations() {
        for bad in [
            "",
            "s",
            "10x",
            "ms",
            "1.2.3s",
            "-1s",
            "1 s",
            "10sec5",
            "99999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn headers() {
        let h: Header = "X-Test:  some value ".parse().unwrap();
        assert_eq!(h.name, "x-test");
        assert_eq!(h.value, "some value");
        let h: Header = "authorization: Bearer a:b".parse().unwrap();
        assert_eq!(h.value, "Bearer a:b");
        assert_eq!(h.to_string(), "authorization: Bearer a:b");
        let h: Header = "x-empty:".parse().unwrap();
        assert_eq!(h.value, "");
        assert!("no-colon".parse::<Header>().is_err());
        assert!(": value".parse::<Header>().is_err());
        assert!("bad name: v".parse::<Header>().is_err());
        assert!("x: a\r\nb".parse::<Header>().is_err());
    }

    #[test]
    fn urls() {
        let u: HttpUrl = "http://echo:8080/hello?x=1".parse().unwrap();
        assert_eq!(u.host, "echo");
        assert_eq!(u.port, 8080);
        assert_eq!(u.authority, "echo:8080");
        assert_eq!(u.path_and_query, "/hello?x=1");
        let u: HttpUrl = "http://127.0.0.1".parse().unwrap();
        assert_eq!(u.port, 80);
        assert_eq!(u.path_and_query, "/");
        let u: HttpUrl = "http://[::1]:9000/".parse().unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.authority, "[::1]:9000");
        assert!("https://echo/".parse::<HttpUrl>().is_err());
        assert!("echo:8080".parse::<HttpUrl>().is_err());
        assert!("/path".parse::<HttpUrl>().is_err());
        assert!("http://user@echo/".parse::<HttpUrl>().is_err());
    }
}

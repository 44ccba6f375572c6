//! Who this echo server is: pod identity taken from the environment, rendered once.

use std::fmt::Write as _;

/// Pod identity reported in every response.
///
/// Filled from `POD_NAME`, `POD_NAMESPACE`, `NODE_NAME` and `POD_IP`; the pod
/// name falls back to the host name and the other fields to `""`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub pod: String,
    pub namespace: String,
    pub node: String,
    pub ip: String,
}

impl Identity {
    /// Identity from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Identity from an arbitrary variable lookup (lets tests avoid the real environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        Self {
            pod: get("POD_NAME").unwrap_or_else(hostname),
            namespace: get("POD_NAMESPACE").unwrap_or_default(),
            node: get("NODE_NAME").unwrap_or_default(),
            ip: get("POD_IP").unwrap_or_default(),
        }
    }

    /// The first line of a text response: `pod=.. namespace=.. node=.. ip=..\n`.
    pub(crate) fn text_line(&self) -> String {
        let mut line =
            String::with_capacity(32 + self.pod.len() + self.namespace.len() + self.node.len() + self.ip.len());
        // Writing into a String cannot fail.
        let _ = writeln!(
            line,
            "pod={} namespace={} node={} ip={}",
            self.pod, self.namespace, self.node, self.ip
        );
        line
    }
}

/// The kernel host name, or `""` when it cannot be read.
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_lookup_uses_variables() {
        let id = Identity::from_lookup(|name| {
            Some(
                match name {
                    "POD_NAME" => "echo-1",
                    "POD_NAMESPACE" => "default",
                    "NODE_NAME" => "node-1",
                    "POD_IP" => "10.0.0.2",
                    _ => return None,
                }
                .to_owned(),
            )
        });
        assert_eq!(id.pod, "echo-1");
        assert_eq!(id.text_line(), "pod=echo-1 namespace=default node=node-1 ip=10.0.0.2\n");
    }

    #[test]
    fn from_lookup_falls_back() {
        let id = Identity::from_lookup(|_| None);
        assert_eq!(id.pod, hostname());
        assert_eq!(id.namespace, "");
        assert_eq!(id.node, "");
        assert_eq!(id.ip, "");
    }
}

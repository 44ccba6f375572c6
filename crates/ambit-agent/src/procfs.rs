//! Reading a network namespace's addresses from the kernel's `/proc/thread-self/net` files, which show the namespace
//! of the reading thread (its listening ports come from `ambit_netns::listening_tcp_ports`, which asks sock_diag): the parsers are pure (text in, values out); the reads run on a thread inside the pod's
//! namespace ([`ambit_netns::run_in_path`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IPv4 addresses local to the namespace, from `/proc/net/fib_trie`: each leaf (`|-- ADDR`) followed by a
/// `/32 host LOCAL` entry is an address of one of the namespace's interfaces (as `ip` tells them apart).
pub fn local_ipv4(fib_trie: &str) -> BTreeSet<Ipv4Addr> {
    let mut found = BTreeSet::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in fib_trie.lines().map(str::trim) {
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.parse().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(addr) = leaf
        {
            found.insert(addr);
        }
    }
    found
}

/// The IPv6 addresses of the namespace's interfaces, from `/proc/net/if_inet6` (32 hex digits first on each line).
pub fn local_ipv6(if_inet6: &str) -> BTreeSet<Ipv6Addr> {
    if_inet6
        .lines()
        .filter_map(|line| {
            let hex = line.split_whitespace().next()?;
            let bits = u128::from_str_radix(hex, 16).ok().filter(|_| hex.len() == 32)?;
            Some(Ipv6Addr::from(bits))
        })
        .collect()
}

/// Both families' local addresses.
pub fn local_addresses(fib_trie: &str, if_inet6: &str) -> BTreeSet<IpAddr> {
    let v4 = local_ipv4(fib_trie).into_iter().map(IpAddr::V4);
    let v6 = local_ipv6(if_inet6).into_iter().map(IpAddr::V6);
    v4.chain(v6).collect()
}

/// Reads the local addresses of the calling thread's namespace. A missing file (IPv6 disabled) counts as empty.
pub fn read_local_addresses() -> BTreeSet<IpAddr> {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{name}")).unwrap_or_default();
    local_addresses(&read("fib_trie"), &read("if_inet6"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.244.1.0/24 2 0 2
        |-- 10.244.1.0
           /24 link UNICAST
        |-- 10.244.1.3
           /32 host LOCAL
        |-- 10.244.1.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.244.1.3
           /32 host LOCAL
";

    #[test]
    fn local_ipv4_are_the_host_local_leaves() {
        let want: BTreeSet<Ipv4Addr> = ["10.244.1.3", "127.0.0.1"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(local_ipv4(FIB_TRIE), want);
        assert!(local_ipv4("").is_empty());
    }

    #[test]
    fn local_ipv6_reads_the_hex_addresses() {
        let text = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0
fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
short 01 80 10 80 lo
";
        let want: BTreeSet<Ipv6Addr> = ["fe80::fc:ff:fe00:1", "fd00::2", "::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(local_ipv6(text), want);
    }

    #[test]
    fn own_namespace_has_a_loopback_address() {
        // The test's namespace always has lo; its 127.0.0.1 shows when lo is up, ::1 when IPv6 is on.
        let found = read_local_addresses();
        let loopback: [IpAddr; 2] = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert!(loopback.iter().any(|a| found.contains(a)), "{found:?}");
    }
}

//! Root end-to-end tests of capture: each case builds its own "pod" and "peer" namespaces joined by a veth
//! (`ambit-capt-<pid>-<case>-pod|peer`, 10.250.<pid % 250>.1 and .2), installs capture in the pod namespace and
//! drives real TCP through it with the node-proxy sockets of `ambit-netns`. The pod is addressed as a local-cluster
//! pod: its IP as a /32 on eth0, a link route to the peer, which is its gateway, and a default route through it.
//! Nothing touches the host's namespace. The namespaces are deleted when the case ends, also on failure. Not being
//! root is a failure, never a skip.
//!
//! The fail-closed cases delete the capture's nat table by hand and check that the app's TCP neither connects nor
//! sends a single SYN to the peer (counted by an nftables counter on the peer's ingress), while the proxy's marked
//! sockets, UDP and the node's probes still get through.
//!
//! Run with `cargo test -p ambit-capture --features netns-tests --test capture`.
#![cfg(feature = "netns-tests")]

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use ambit_capture::rules::{
    GUARD_LINK, GUARD_MARK_PREF, GUARD_PREF, GUARD_TABLE, MANGLE_TABLE, NAT_TABLE, PROBE_SOURCE, RULE_PREF,
};
use ambit_capture::{CaptureConfig, Drift, install, installed, remove, verify};
use ambit_netns::{ConnectOptions, ListenOptions, connect_socket_in, listen_in, original_dst};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

const MARK: u32 = 0x539;
const WAIT: Duration = Duration::from_secs(5);
/// How long a connection that must not arrive is waited for.
const QUIET: Duration = Duration::from_millis(300);
/// How long a connection the guard must stop is given: past the first SYN retransmission (one second).
const BLOCKED: Duration = Duration::from_millis(1500);
/// The peer's table counting the SYNs that reach it.
const SEEN: &str = "ambit-test-seen";

/// A pod namespace and a peer namespace joined by a veth; both are deleted on drop.
struct Pair {
    pod: String,
    peer: String,
    pod_ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
}

impl Pair {
    fn new(case: &str) -> Pair {
        assert_root();
        let prefix = format!("ambit-capt-{}-{case}", std::process::id());
        let subnet = (std::process::id() % 250) as u8;
        let pair = Pair {
            pod: format!("{prefix}-pod"),
            peer: format!("{prefix}-peer"),
            pod_ip: Ipv4Addr::new(10, 250, subnet, 1),
            peer_ip: Ipv4Addr::new(10, 250, subnet, 2),
        };
        pair.delete();
        pair.create();
        pair
    }

    /// The pod as the local cluster builds one (ambit-cluster's net.rs), with the peer as its gateway.
    fn create(&self) {
        sh(&["ip", "netns", "add", &self.pod]);
        sh(&["ip", "netns", "add", &self.peer]);
        let link = [
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &self.peer,
        ];
        sh(&[&["ip", "-n", &self.pod][..], &link].concat());
        for (ns, ip, other) in [
            (&self.pod, self.pod_ip, self.peer_ip),
            (&self.peer, self.peer_ip, self.pod_ip),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            let to_other = format!("{other}/32");
            sh(&[
                "ip", "-n", ns, "route", "add", &to_other, "dev", "eth0", "scope", "link",
            ]);
        }
        let gateway = self.peer_ip.to_string();
        sh(&[
            "ip", "-n", &self.pod, "route", "add", "default", "via", &gateway, "dev", "eth0",
        ]);
    }

    fn delete(&self) {
        for ns in [&self.pod, &self.peer] {
            // A namespace that was never created is no error here.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }

    fn pod_path(&self) -> PathBuf {
        ambit_netns::path_of(&self.pod)
    }

    fn peer_path(&self) -> PathBuf {
        ambit_netns::path_of(&self.peer)
    }

    fn pod_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.pod_ip.into(), port)
    }

    fn peer_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.peer_ip.into(), port)
    }

    /// A node-proxy listener in the pod: marked, SO_REUSEPORT, on all addresses.
    fn proxy_listener(&self, port: u16) -> TcpListener {
        let opts = ListenOptions {
            mark: Some(MARK),
            reuse_port: true,
            ..ListenOptions::default()
        };
        let std = listen_in(&self.pod_path(), SocketAddr::from(([0, 0, 0, 0], port)), opts).unwrap();
        TcpListener::from_std(std).unwrap()
    }

    /// A plain listener in the peer, on the peer's address.
    fn peer_listener(&self, port: u16) -> TcpListener {
        let std = listen_in(&self.peer_path(), self.peer_addr(port), ListenOptions::default()).unwrap();
        TcpListener::from_std(std).unwrap()
    }

    /// The app's listener in the pod, on the pod's address.
    fn app_listener(&self, port: u16) -> TcpListener {
        let std = listen_in(&self.pod_path(), self.pod_addr(port), ListenOptions::default()).unwrap();
        TcpListener::from_std(std).unwrap()
    }

    /// Starts counting the TCP SYNs that reach the peer's eth0 for `port`, before anything else sees them.
    fn count_syns(&self, port: u16) {
        let counter = format!(
            "table inet {SEEN} {{\n counter syns {{}}\n chain ingress {{\n type filter hook prerouting priority -400;\n \
             iifname \"eth0\" tcp dport {port} tcp flags & (syn | ack) == syn counter name \"syns\"\n }}\n}}\n"
        );
        sh_in(&["ip", "netns", "exec", &self.peer, "nft", "-f", "-"], &counter);
    }

    /// How many SYNs [`Pair::count_syns`] has counted.
    fn syns_seen(&self) -> u64 {
        let listing = sh(&[
            "ip", "netns", "exec", &self.peer, "nft", "list", "counter", "inet", SEEN, "syns",
        ]);
        let words: Vec<&str> = listing.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "packets").expect("no packet count");
        words[at + 1].parse().unwrap()
    }

    /// Deletes capture's nat table by hand, as an operator or another tool might.
    fn delete_nat_table(&self) {
        sh(&[
            "ip", "netns", "exec", &self.pod, "nft", "delete", "table", "inet", NAT_TABLE,
        ]);
    }

    /// `net.ipv4.tcp_migrate_req` of the pod.
    fn migrate_req(&self) -> String {
        self.sysctl("tcp_migrate_req")
    }

    /// `net.ipv4.tcp_tw_reuse` of the pod.
    fn tw_reuse(&self) -> String {
        self.sysctl("tcp_tw_reuse")
    }

    fn sysctl(&self, name: &str) -> String {
        let path = format!("/proc/sys/net/ipv4/{name}");
        sh(&["ip", "netns", "exec", &self.pod, "cat", &path]).trim().to_string()
    }

    /// A UDP socket bound in the named namespace.
    fn udp_in(netns: &str, addr: SocketAddr) -> UdpSocket {
        let socket = ambit_netns::run_in(netns, move || UdpSocket::bind(addr))
            .unwrap()
            .unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        socket
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.delete();
    }
}

fn assert_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(
        euid, "0",
        "the netns tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN); they never skip"
    );
}

/// Runs a command, failing the test with its stderr if it fails; returns stdout.
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "`{}` failed: {stderr}", args.join(" "));
    String::from_utf8(out.stdout).unwrap()
}

/// As [`sh`], feeding `input` on stdin.
fn sh_in(args: &[&str], input: &str) {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "`{}` failed: {stderr}", args.join(" "));
}

/// Connects from a socket made by `connect_socket_in` in `netns`, through tokio.
async fn dial(netns: &std::path::Path, dst: SocketAddr, opts: ConnectOptions, wait: Duration) -> io::Result<TcpStream> {
    let socket = TcpSocket::from_std_stream(connect_socket_in(netns, dst, opts)?.into());
    timeout(wait, socket.connect(dst))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    timeout(WAIT, listener.accept())
        .await
        .expect("no connection arrived")
        .unwrap()
}

async fn nothing_arrives(listener: &TcpListener) -> bool {
    timeout(QUIET, listener.accept()).await.is_err()
}

/// Sends `bytes` one way and checks they arrive.
async fn carries(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8]) {
    from.write_all(bytes).await.unwrap();
    let mut got = vec![0; bytes.len()];
    timeout(WAIT, to.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, bytes);
}

fn capture_rules(pair: &Pair) -> Vec<String> {
    let listing = sh(&["ip", "-n", &pair.pod, "rule", "show", "pref", &RULE_PREF.to_string()]);
    listing.lines().map(str::to_string).collect()
}

#[tokio::test]
async fn outbound_is_redirected_with_its_original_destination() {
    let pair = Pair::new("out");
    install(&pair.pod, &CaptureConfig::default()).unwrap();
    let outbound = pair.proxy_listener(15001);
    let dst = pair.peer_addr(8080);
    let mut app = dial(&pair.pod_path(), dst, ConnectOptions::default(), WAIT)
        .await
        .unwrap();
    let (mut proxied, from) = accept(&outbound).await;
    assert_eq!(original_dst(&proxied).unwrap(), dst);
    assert_eq!(from, app.local_addr().unwrap());
    carries(&mut app, &mut proxied, b"ping").await;
    carries(&mut proxied, &mut app, b"pong").await;
}

#[tokio::test]
async fn marked_socket_bypasses_outbound_capture() {
    let pair = Pair::new("mark");
    install(&pair.pod, &CaptureConfig::default()).unwrap();
    let outbound = pair.proxy_listener(15001);
    let peer = pair.peer_listener(9000);
    let opts = ConnectOptions {
        mark: Some(MARK),
        ..ConnectOptions::default()
    };
    let mut upstream = dial(&pair.pod_path(), pair.peer_addr(9000), opts, WAIT).await.unwrap();
    let (mut at_peer, from) = accept(&peer).await;
    assert_eq!(from.ip(), pair.pod_ip);
    carries(&mut upstream, &mut at_peer, b"direct").await;
    assert!(nothing_arrives(&outbound).await, "the marked connection was captured");
}

#[tokio::test]
async fn inbound_is_redirected_except_hbone() {
    let pair = Pair::new("in");
    install(&pair.pod, &CaptureConfig::default()).unwrap();
    let inbound = pair.proxy_listener(15006);
    let hbone = pair.proxy_listener(15008);
    let dst = pair.pod_addr(8080);
    let mut client = dial(&pair.peer_path(), dst, ConnectOptions::default(), WAIT)
        .await
        .unwrap();
    let (mut proxied, from) = accept(&inbound).await;
    assert_eq!(original_dst(&proxied).unwrap(), dst);
    assert_eq!(from.ip(), pair.peer_ip);
    carries(&mut client, &mut proxied, b"plain").await;
    carries(&mut proxied, &mut client, b"answer").await;

    let hbone_dst = pair.pod_addr(15008);
    let mut client = dial(&pair.peer_path(), hbone_dst, ConnectOptions::default(), WAIT)
        .await
        .unwrap();
    let (mut tunnel, _) = accept(&hbone).await;
    assert_eq!(tunnel.local_addr().unwrap(), hbone_dst);
    carries(&mut tunnel, &mut client, b"settings").await;
    assert!(nothing_arrives(&inbound).await, "15008 was redirected to 15006");
}

#[tokio::test]
async fn transparent_connect_preserves_the_source_and_gets_replies() {
    let pair = Pair::new("tproxy");
    let cfg = CaptureConfig::default();
    install(&pair.pod, &cfg).unwrap();
    let app = pair.app_listener(8080);
    let opts = ConnectOptions {
        mark: Some(MARK),
        bind: Some(pair.peer_addr(0)),
        transparent: true,
    };
    let mut proxy = dial(&pair.pod_path(), pair.pod_addr(8080), opts, WAIT).await.unwrap();
    assert_eq!(proxy.local_addr().unwrap().ip(), pair.peer_ip);
    let (mut at_app, from) = accept(&app).await;
    assert_eq!(from.ip(), pair.peer_ip, "the app must see the client's address");
    carries(&mut at_app, &mut proxy, b"reply").await;
    carries(&mut proxy, &mut at_app, b"request").await;

    // Control: without the policy routing the app's SYN-ACK leaves for the real peer, so no connection forms.
    remove(&pair.pod, &cfg).unwrap();
    let quick = Duration::from_secs(1);
    assert!(dial(&pair.pod_path(), pair.pod_addr(8080), opts, quick).await.is_err());
}

#[tokio::test]
async fn verify_reports_drift_and_remove_cleans_up() {
    let pair = Pair::new("verify");
    let cfg = CaptureConfig::default();
    install(&pair.pod, &cfg).unwrap();
    install(&pair.pod, &cfg).unwrap();
    assert_eq!(verify(&pair.pod, &cfg).unwrap().drift, []);
    assert_eq!(capture_rules(&pair).len(), 1, "re-install duplicated the ip rule");

    let nft = ["ip", "netns", "exec", &pair.pod, "nft"];
    sh(&[&nft[..], &["delete", "table", "inet", NAT_TABLE]].concat());
    let missing = Drift::MissingTable {
        table: format!("inet {NAT_TABLE}"),
    };
    assert_eq!(verify(&pair.pod, &cfg).unwrap().drift, [missing]);

    install(&pair.pod, &cfg).unwrap();
    sh(&[&nft[..], &["flush", "chain", "inet", NAT_TABLE, "istio-output"]].concat());
    let drift = verify(&pair.pod, &cfg).unwrap().drift;
    assert_eq!(drift.len(), 4, "{drift:?}");
    assert!(
        drift
            .iter()
            .any(|d| matches!(d, Drift::MissingRule { rule, .. } if rule.ends_with("redirect to :15001"))),
        "{drift:?}"
    );

    install(&pair.pod, &cfg).unwrap();
    sh(&["ip", "-n", &pair.pod, "rule", "del", "pref", &RULE_PREF.to_string()]);
    sh(&["ip", "-n", &pair.pod, "route", "flush", "table", "100"]);
    let drift = verify(&pair.pod, &cfg).unwrap().drift;
    assert!(
        matches!(
            drift.as_slice(),
            [Drift::MissingIpRule { .. }, Drift::MissingRoute { .. }]
        ),
        "{drift:?}"
    );

    install(&pair.pod, &cfg).unwrap();
    sh(&["ip", "-n", &pair.pod, "rule", "del", "pref", &GUARD_PREF.to_string()]);
    let tcp_rule = format!("{GUARD_PREF}: from all ipproto tcp lookup {GUARD_TABLE}");
    assert_eq!(
        verify(&pair.pod, &cfg).unwrap().drift,
        [Drift::MissingIpRule { rule: tcp_rule }]
    );
    sh(&["ip", "-n", &pair.pod, "link", "set", GUARD_LINK, "down"]);
    let drift = verify(&pair.pod, &cfg).unwrap().drift;
    assert!(
        drift.contains(&Drift::LinkDown {
            link: GUARD_LINK.to_string()
        }),
        "{drift:?}"
    );

    install(&pair.pod, &cfg).unwrap();
    assert!(verify(&pair.pod, &cfg).unwrap().is_clean());
    remove(&pair.pod, &cfg).unwrap();
    remove(&pair.pod, &cfg).unwrap();
    assert_removed(&pair);
    let drift = verify(&pair.pod, &cfg).unwrap().drift;
    // Both tables, Istio's rule and route, the guard's device, three routes and two rules, and the two sysctls.
    assert_eq!(drift.len(), 12, "{drift:?}");
    assert!(
        drift.contains(&Drift::MissingLink {
            link: GUARD_LINK.to_string()
        }),
        "{drift:?}"
    );
    let sysctl = Drift::Sysctl {
        key: "net.ipv4.tcp_migrate_req".to_string(),
        found: "0".to_string(),
        want: "1".to_string(),
    };
    assert!(drift.contains(&sysctl), "{drift:?}");
}

#[tokio::test]
async fn verify_and_remove_work_on_a_namespace_never_captured() {
    let pair = Pair::new("fresh");
    let cfg = CaptureConfig::default();
    assert_eq!(verify(&pair.pod, &cfg).unwrap().drift.len(), 12);
    remove(&pair.pod, &cfg).unwrap();
    assert_removed(&pair);
}

/// Nothing of capture is left, and the pod's routing is what the cluster built.
fn assert_removed(pair: &Pair) {
    let ruleset = sh(&["ip", "netns", "exec", &pair.pod, "nft", "list", "ruleset"]);
    assert!(!ruleset.contains("istio-ambient"), "{ruleset}");
    let rules = sh(&["ip", "-n", &pair.pod, "rule", "show"]);
    assert_eq!(
        rules,
        "0:\tfrom all lookup local\n32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n"
    );
    let routes = sh(&["ip", "-n", &pair.pod, "-4", "route", "show", "table", "all"]);
    let foreign: Vec<&str> = routes
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.contains("table local"))
        .collect();
    let gateway = pair.peer_ip;
    assert_eq!(
        foreign,
        [
            format!("default via {gateway} dev eth0"),
            format!("{gateway} dev eth0 scope link"),
        ],
        "{routes}"
    );
    let links = sh(&["ip", "-n", &pair.pod, "-o", "link", "show"]);
    assert!(!links.contains(GUARD_LINK), "{links}");
    assert_eq!(pair.migrate_req(), "0");
    assert_eq!(pair.tw_reuse(), "2", "the kernel's default again");
}

/// The app's plain connect to the peer fails and not one SYN reaches the peer: the guard drops what capture did
/// not redirect.
async fn assert_fails_closed(pair: &Pair, port: u16) {
    let before = pair.syns_seen();
    let attempt = dial(
        &pair.pod_path(),
        pair.peer_addr(port),
        ConnectOptions::default(),
        BLOCKED,
    )
    .await;
    assert!(attempt.is_err(), "the app connected to the peer without capture");
    assert_eq!(pair.syns_seen(), before, "a SYN left the pod in plaintext");
}

#[tokio::test]
async fn deleted_nat_table_fails_closed() {
    let pair = Pair::new("closed");
    pair.count_syns(9000);
    let _peer = pair.peer_listener(9000);
    install(&pair.pod, &CaptureConfig::default()).unwrap();
    let _outbound = pair.proxy_listener(15001);
    pair.delete_nat_table();
    assert_fails_closed(&pair, 9000).await;
    // The mangle table alone changes nothing: deleting it too still lets nothing out.
    sh(&[
        "ip",
        "netns",
        "exec",
        &pair.pod,
        "nft",
        "delete",
        "table",
        "inet",
        MANGLE_TABLE,
    ]);
    assert_fails_closed(&pair, 9000).await;
}

#[tokio::test]
async fn proxy_sockets_and_udp_pass_the_guard() {
    let pair = Pair::new("pass");
    pair.count_syns(9000);
    let peer = pair.peer_listener(9000);
    install(&pair.pod, &CaptureConfig::default()).unwrap();
    pair.delete_nat_table();
    assert_fails_closed(&pair, 9000).await;

    let marked = ConnectOptions {
        mark: Some(MARK),
        ..ConnectOptions::default()
    };
    let mut upstream = dial(&pair.pod_path(), pair.peer_addr(9000), marked, WAIT)
        .await
        .unwrap();
    let (mut at_peer, from) = accept(&peer).await;
    assert_eq!(from.ip(), pair.pod_ip);
    carries(&mut upstream, &mut at_peer, b"hbone").await;
    carries(&mut at_peer, &mut upstream, b"back").await;

    let at_peer = Pair::udp_in(&pair.peer, pair.peer_addr(5353));
    let app = Pair::udp_in(&pair.pod, SocketAddr::from(([0, 0, 0, 0], 0)));
    app.send_to(b"query", pair.peer_addr(5353)).unwrap();
    let mut buf = [0; 16];
    let (n, from) = at_peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from.ip()), (&b"query"[..], pair.pod_ip.into()));
    at_peer.send_to(b"answer", from).unwrap();
    let (n, _) = app.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"answer");
}

#[tokio::test]
async fn verify_reports_the_deleted_table_and_reinstall_repairs_it() {
    let pair = Pair::new("repair");
    let cfg = CaptureConfig::default();
    pair.count_syns(9000);
    let _peer = pair.peer_listener(9000);
    install(&pair.pod, &cfg).unwrap();
    let outbound = pair.proxy_listener(15001);
    pair.delete_nat_table();
    let missing = Drift::MissingTable {
        table: format!("inet {NAT_TABLE}"),
    };
    assert_eq!(verify(&pair.pod, &cfg).unwrap().drift, [missing]);
    assert_fails_closed(&pair, 9000).await;

    install(&pair.pod, &cfg).unwrap();
    assert_eq!(verify(&pair.pod, &cfg).unwrap().drift, []);
    let _app = dial(&pair.pod_path(), pair.peer_addr(9000), ConnectOptions::default(), WAIT)
        .await
        .unwrap();
    let (conn, _) = accept(&outbound).await;
    assert_eq!(original_dst(&conn).unwrap(), pair.peer_addr(9000));
    assert_eq!(pair.syns_seen(), 0, "a SYN reached the peer past capture");
}

#[tokio::test]
async fn remove_restores_plain_connectivity() {
    let pair = Pair::new("plain");
    let cfg = CaptureConfig::default();
    pair.count_syns(9000);
    let peer = pair.peer_listener(9000);
    assert!(!installed(&pair.pod, &cfg).unwrap(), "nothing is installed yet");
    install(&pair.pod, &cfg).unwrap();
    assert_eq!(pair.migrate_req(), "1");
    assert_eq!(pair.tw_reuse(), "1");
    pair.delete_nat_table();
    // What is left (the guard, the mangle table) still counts as installed: an agent without a record removes it.
    assert!(
        installed(&pair.pod, &cfg).unwrap(),
        "the rest of capture is still there"
    );
    assert_fails_closed(&pair, 9000).await;

    remove(&pair.pod, &cfg).unwrap();
    assert_removed(&pair);
    assert!(!installed(&pair.pod, &cfg).unwrap(), "remove leaves nothing");
    let mut app = dial(&pair.pod_path(), pair.peer_addr(9000), ConnectOptions::default(), WAIT)
        .await
        .unwrap();
    let (mut at_peer, from) = accept(&peer).await;
    assert_eq!(from, app.local_addr().unwrap());
    carries(&mut app, &mut at_peer, b"plain again").await;
    assert!(pair.syns_seen() >= 1, "the SYN counter saw nothing");
}

#[tokio::test]
async fn deleted_guard_device_still_fails_closed() {
    let pair = Pair::new("device");
    let cfg = CaptureConfig::default();
    pair.count_syns(9000);
    let _peer = pair.peer_listener(9000);
    install(&pair.pod, &cfg).unwrap();
    pair.delete_nat_table();
    sh(&["ip", "-n", &pair.pod, "link", "del", GUARD_LINK]);
    // The fallback route answers at once: no route to host.
    let err = dial(&pair.pod_path(), pair.peer_addr(9000), ConnectOptions::default(), WAIT)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::HostUnreachable, "{err}");
    assert_eq!(pair.syns_seen(), 0, "a SYN left the pod in plaintext");

    let drift = verify(&pair.pod, &cfg).unwrap().drift;
    assert!(
        drift.contains(&Drift::MissingLink {
            link: GUARD_LINK.to_string()
        }),
        "{drift:?}"
    );
    install(&pair.pod, &cfg).unwrap();
    assert_eq!(verify(&pair.pod, &cfg).unwrap().drift, []);
    pair.delete_nat_table();
    assert_fails_closed(&pair, 9000).await;
}

#[tokio::test]
async fn probes_reach_the_app_past_the_guard() {
    let pair = Pair::new("probe");
    sh(&[
        "ip",
        "-n",
        &pair.peer,
        "addr",
        "add",
        &format!("{PROBE_SOURCE}/32"),
        "dev",
        "lo",
    ]);
    install(&pair.pod, &CaptureConfig::default()).unwrap();
    let app = pair.app_listener(8080);
    let inbound = pair.proxy_listener(15006);
    let probe = ConnectOptions {
        bind: Some(SocketAddr::new(PROBE_SOURCE.into(), 0)),
        ..ConnectOptions::default()
    };
    let mut kubelet = dial(&pair.peer_path(), pair.pod_addr(8080), probe, WAIT).await.unwrap();
    let (mut at_app, from) = accept(&app).await;
    assert_eq!(from.ip(), PROBE_SOURCE);
    carries(&mut at_app, &mut kubelet, b"HTTP/1.1 200 OK").await;
    assert!(nothing_arrives(&inbound).await, "the probe was captured");
}

#[tokio::test]
async fn guard_rules_keep_their_order() {
    let pair = Pair::new("order");
    install(&pair.pod, &CaptureConfig::default()).unwrap();
    install(&pair.pod, &CaptureConfig::default()).unwrap();
    let rules = sh(&["ip", "-n", &pair.pod, "rule", "show"]);
    let prefs: Vec<u32> = rules
        .lines()
        .map(|l| l.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        prefs,
        [0, GUARD_MARK_PREF, RULE_PREF, GUARD_PREF, 32766, 32767],
        "{rules}"
    );
}

#[tokio::test]
async fn bypass_inbound_is_verified_and_switchable() {
    let pair = Pair::new("bypass");
    let bypass = CaptureConfig {
        bypass_inbound: true,
        ..CaptureConfig::default()
    };
    install(&pair.pod, &CaptureConfig::default()).unwrap();
    install(&pair.pod, &bypass).unwrap();
    assert!(verify(&pair.pod, &bypass).unwrap().is_clean());
    let drift = verify(&pair.pod, &CaptureConfig::default()).unwrap().drift;
    // Without inbound capture, neither the probe exception nor the inbound redirect is there, and direct inbound
    // is marked so that its replies pass the guard.
    assert!(
        matches!(drift.as_slice(), [
            Drift::UnexpectedRule { rule: mark, .. },
            Drift::UnexpectedRule { rule: restore, .. },
            Drift::MissingRule { rule: probe, .. },
            Drift::MissingRule { rule, .. },
        ] if mark.starts_with("iifname != \"lo\"") && restore.starts_with("ct mark & 0xfff == 0x539")
            && probe.starts_with("ip saddr 169.254.7.127") && rule.ends_with("redirect to :15006")),
        "{drift:?}"
    );
    let app = pair.app_listener(8080);
    let inbound = pair.proxy_listener(15006);
    let mut client = dial(&pair.peer_path(), pair.pod_addr(8080), ConnectOptions::default(), WAIT)
        .await
        .unwrap();
    let (mut at_app, from) = accept(&app).await;
    assert_eq!(from.ip(), pair.peer_ip);
    carries(&mut at_app, &mut client, b"direct reply").await;
    assert!(
        nothing_arrives(&inbound).await,
        "inbound was captured despite bypass_inbound"
    );

    // Outbound is still captured, and guarded.
    pair.count_syns(9000);
    let _peer = pair.peer_listener(9000);
    pair.delete_nat_table();
    assert_fails_closed(&pair, 9000).await;
}

#[tokio::test]
async fn reuse_port_listeners_share_the_port_for_hand_over() {
    let pair = Pair::new("reuse");
    install(&pair.pod, &CaptureConfig::default()).unwrap();
    let old = pair.proxy_listener(15001);
    let new = pair.proxy_listener(15001);
    let exclusive = ListenOptions {
        mark: Some(MARK),
        ..ListenOptions::default()
    };
    let err = listen_in(&pair.pod_path(), SocketAddr::from(([0, 0, 0, 0], 15001)), exclusive).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");

    // Once the old proxy lets go, every new connection reaches the new one.
    drop(old);
    for port in [80, 81, 82] {
        let _app = dial(&pair.pod_path(), pair.peer_addr(port), ConnectOptions::default(), WAIT)
            .await
            .unwrap();
        let (conn, _) = accept(&new).await;
        assert_eq!(original_dst(&conn).unwrap(), pair.peer_addr(port));
    }
}

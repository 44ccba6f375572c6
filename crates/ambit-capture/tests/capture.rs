//! Root end-to-end tests of capture: each case builds its own "pod" and "peer" namespaces joined by a veth
//! (`ambit-capt-<pid>-<case>-pod|peer`, 10.250.<pid % 250>.1 and .2), installs capture in the pod namespace and
//! drives real TCP through it with the node-proxy sockets of `ambit-netns`. Nothing touches the host's namespace.
//! The namespaces are deleted when the case ends, also on failure. Not being root is a failure, never a skip.
//!
//! Run with `cargo test -p ambit-capture --features netns-tests --test capture`.
#![cfg(feature = "netns-tests")]

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ambit_capture::rules::{NAT_TABLE, RULE_PREF};
use ambit_capture::{CaptureConfig, Drift, install, remove, verify};
use ambit_netns::{ConnectOptions, ListenOptions, connect_socket_in, listen_in, original_dst};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

const MARK: u32 = 0x539;
const WAIT: Duration = Duration::from_secs(5);
/// How long a connection that must not arrive is waited for.
const QUIET: Duration = Duration::from_millis(300);

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

    fn create(&self) {
        sh(&["ip", "netns", "add", &self.pod]);
        sh(&["ip", "netns", "add", &self.peer]);
        let link = [
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &self.peer,
        ];
        sh(&[&["ip", "-n", &self.pod][..], &link].concat());
        for (ns, ip) in [(&self.pod, self.pod_ip), (&self.peer, self.peer_ip)] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
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
    let std = listen_in(&pair.peer_path(), pair.peer_addr(9000), ListenOptions::default()).unwrap();
    let peer = TcpListener::from_std(std).unwrap();
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

    let hbone_dst = pair.pod_addr(15008);
    let _client = dial(&pair.peer_path(), hbone_dst, ConnectOptions::default(), WAIT)
        .await
        .unwrap();
    let (tunnel, _) = accept(&hbone).await;
    assert_eq!(tunnel.local_addr().unwrap(), hbone_dst);
    assert!(nothing_arrives(&inbound).await, "15008 was redirected to 15006");
}

#[tokio::test]
async fn transparent_connect_preserves_the_source_and_gets_replies() {
    let pair = Pair::new("tproxy");
    let cfg = CaptureConfig::default();
    install(&pair.pod, &cfg).unwrap();
    let app =
        TcpListener::from_std(listen_in(&pair.pod_path(), pair.pod_addr(8080), ListenOptions::default()).unwrap())
            .unwrap();
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
    assert!(verify(&pair.pod, &cfg).unwrap().is_clean());
    remove(&pair.pod, &cfg).unwrap();
    remove(&pair.pod, &cfg).unwrap();
    assert_removed(&pair);
    assert_eq!(verify(&pair.pod, &cfg).unwrap().drift.len(), 4);
}

fn assert_removed(pair: &Pair) {
    let ruleset = sh(&["ip", "netns", "exec", &pair.pod, "nft", "list", "ruleset"]);
    assert!(!ruleset.contains("istio-ambient"), "{ruleset}");
    assert_eq!(capture_rules(pair), Vec::<String>::new());
    assert_eq!(sh(&["ip", "-n", &pair.pod, "route", "show", "table", "100"]), "");
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
    // Without inbound capture, neither the probe exception nor the inbound redirect is there.
    assert!(
        matches!(drift.as_slice(), [Drift::MissingRule { rule: probe, .. }, Drift::MissingRule { rule, .. }]
            if probe.starts_with("ip saddr 169.254.7.127") && rule.ends_with("redirect to :15006")),
        "{drift:?}"
    );
    let app =
        TcpListener::from_std(listen_in(&pair.pod_path(), pair.pod_addr(8080), ListenOptions::default()).unwrap())
            .unwrap();
    let inbound = pair.proxy_listener(15006);
    let _client = dial(&pair.peer_path(), pair.pod_addr(8080), ConnectOptions::default(), WAIT)
        .await
        .unwrap();
    let (_, from) = accept(&app).await;
    assert_eq!(from.ip(), pair.peer_ip);
    assert!(
        nothing_arrives(&inbound).await,
        "inbound was captured despite bypass_inbound"
    );
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

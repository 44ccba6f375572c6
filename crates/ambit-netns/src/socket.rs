//! Sockets created inside a network namespace for the node proxy: listeners (outbound and inbound capture, HBONE)
//! and unconnected upstream sockets, with the options in-pod redirection relies on (SO_MARK, SO_REUSEPORT,
//! IP_TRANSPARENT, IP_FREEBIND), and reading back where a redirected connection was going (SO_ORIGINAL_DST).
//!
//! Each socket is created on a fresh thread that entered the namespace ([`run_in_path`]). A socket keeps the
//! namespace it was created in, so the caller may drive it from any thread or runtime. Every socket returned is
//! non-blocking and close-on-exec, ready for tokio.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::run_in_path;

/// The backlog of the in-pod listeners (ztunnel's).
pub const DEFAULT_BACKLOG: i32 = 128;

/// How [`listen_in`] sets up a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// SO_MARK on the listener, inherited by the connections it accepts (needs CAP_NET_ADMIN).
    pub mark: Option<u32>,
    /// SO_REUSEPORT, so that an old and a new proxy can hold the port at once while handing over.
    pub reuse_port: bool,
    /// IP_TRANSPARENT (IPV6_TRANSPARENT for IPv6): accept connections to addresses that are not local (needs
    /// CAP_NET_ADMIN).
    pub transparent: bool,
    /// The accept queue length passed to `listen(2)`.
    pub backlog: i32,
}

/// How [`connect_socket_in`] sets up an upstream socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectOptions {
    /// SO_MARK on the socket (needs CAP_NET_ADMIN).
    pub mark: Option<u32>,
    /// The local address to bind before connecting; port 0 lets the kernel pick one.
    pub bind: Option<SocketAddr>,
    /// IP_TRANSPARENT and IP_FREEBIND (their IPv6 forms for IPv6), so that `bind` may be an address that is not
    /// local, such as the downstream client's, to preserve it towards the app (needs CAP_NET_ADMIN).
    pub transparent: bool,
}

/// A socket call that failed, naming the step; carried inside the [`io::Error`] the functions here return, whose
/// kind is the cause's.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step}")]
pub struct SocketError {
    pub step: String,
    #[source]
    pub source: io::Error,
}

// === impl ListenOptions ===

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            mark: None,
            reuse_port: false,
            transparent: false,
            backlog: DEFAULT_BACKLOG,
        }
    }
}

/// A TCP listener on `addr` created inside the namespace at `netns` (e.g. `/run/netns/NAME` or `/proc/PID/ns/net`),
/// with SO_REUSEADDR and the given options; non-blocking, for `tokio::net::TcpListener::from_std`.
pub fn listen_in(netns: &Path, addr: SocketAddr, opts: ListenOptions) -> io::Result<TcpListener> {
    let steps = Steps::new(netns);
    run_in_path(netns, move || listener(&steps, addr, opts))?
}

/// An unconnected TCP socket for `upstream`'s address family, created inside the namespace at `netns` with the
/// given options and bound if asked; non-blocking.
///
/// Connect it from tokio with `tokio::net::TcpSocket::from_std_stream(socket.into())` followed by
/// `.connect(upstream).await`: the socket is already non-blocking, as that function requires, and it stays in
/// `netns` whichever thread connects it.
pub fn connect_socket_in(netns: &Path, upstream: SocketAddr, opts: ConnectOptions) -> io::Result<Socket> {
    if let Some(bind) = opts.bind
        && bind.is_ipv4() != upstream.is_ipv4()
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot bind {bind} to connect to {upstream}: the address families differ"),
        ));
    }
    let steps = Steps::new(netns);
    run_in_path(netns, move || upstream_socket(&steps, upstream, opts))?
}

/// The destination a connection had before a REDIRECT (or DNAT) rewrote it: SO_ORIGINAL_DST, or its IPv6 form for
/// an IPv6 socket. `stream` is any TCP stream type (std, tokio) that was accepted from a redirected connection.
pub fn original_dst<S: AsFd>(stream: &S) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let local = check("read the local address", sock.local_addr())?;
    let original = if local.is_ipv6() {
        check("read SO_ORIGINAL_DST (IPv6)", sock.original_dst_v6())?
    } else {
        check("read SO_ORIGINAL_DST", sock.original_dst_v4())?
    };
    socket_addr(original)
}

/// Sets SO_MARK on a socket of any type (std, tokio, socket2); needs CAP_NET_ADMIN.
pub fn set_mark<S: AsFd>(socket: &S, mark: u32) -> io::Result<()> {
    check(&format!("set SO_MARK {mark:#x}"), SockRef::from(socket).set_mark(mark))
}

fn listener(steps: &Steps, addr: SocketAddr, opts: ListenOptions) -> io::Result<TcpListener> {
    let socket = steps.check("create a TCP socket", tcp_socket(addr))?;
    steps.check("set SO_REUSEADDR", socket.set_reuse_address(true))?;
    if opts.reuse_port {
        steps.check("set SO_REUSEPORT", socket.set_reuse_port(true))?;
    }
    apply_mark(steps, &socket, opts.mark)?;
    if opts.transparent {
        apply_transparent(steps, &socket, addr.is_ipv6())?;
    }
    steps.check(&format!("bind {addr}"), socket.bind(&addr.into()))?;
    steps.check(&format!("listen on {addr}"), socket.listen(opts.backlog))?;
    steps.check("make the listener non-blocking", socket.set_nonblocking(true))?;
    Ok(socket.into())
}

fn upstream_socket(steps: &Steps, upstream: SocketAddr, opts: ConnectOptions) -> io::Result<Socket> {
    let socket = steps.check("create a TCP socket", tcp_socket(upstream))?;
    apply_mark(steps, &socket, opts.mark)?;
    if opts.transparent {
        apply_transparent(steps, &socket, upstream.is_ipv6())?;
        apply_freebind(steps, &socket, upstream.is_ipv6())?;
    }
    if let Some(bind) = opts.bind {
        steps.check(&format!("bind {bind}"), socket.bind(&bind.into()))?;
    }
    steps.check("make the socket non-blocking", socket.set_nonblocking(true))?;
    Ok(socket)
}

/// A close-on-exec TCP socket of `addr`'s family (socket2 sets SOCK_CLOEXEC itself).
fn tcp_socket(addr: SocketAddr) -> io::Result<Socket> {
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
}

fn apply_mark(steps: &Steps, socket: &Socket, mark: Option<u32>) -> io::Result<()> {
    match mark {
        Some(mark) => steps.check(&format!("set SO_MARK {mark:#x}"), socket.set_mark(mark)),
        None => Ok(()),
    }
}

fn apply_transparent(steps: &Steps, socket: &Socket, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        steps.check("set IPV6_TRANSPARENT", socket.set_ip_transparent_v6(true))
    } else {
        steps.check("set IP_TRANSPARENT", socket.set_ip_transparent_v4(true))
    }
}

fn apply_freebind(steps: &Steps, socket: &Socket, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        steps.check("set IPV6_FREEBIND", socket.set_freebind_v6(true))
    } else {
        steps.check("set IP_FREEBIND", socket.set_freebind_v4(true))
    }
}

fn socket_addr(addr: SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_ORIGINAL_DST returned an address that is not IPv4 or IPv6",
        )
    })
}

/// Wraps a failed step's error so that it names the step, keeping the cause's kind.
fn check<T>(step: &str, result: io::Result<T>) -> io::Result<T> {
    result.map_err(|source| {
        io::Error::new(
            source.kind(),
            SocketError {
                step: step.to_string(),
                source,
            },
        )
    })
}

/// Names the namespace in the errors of the steps run inside it.
struct Steps {
    netns: PathBuf,
}

// === impl Steps ===

impl Steps {
    fn new(netns: &Path) -> Self {
        Steps {
            netns: netns.to_path_buf(),
        }
    }

    fn check<T>(&self, step: &str, result: io::Result<T>) -> io::Result<T> {
        check(&format!("{step} in network namespace {}", self.netns.display()), result)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn listen_defaults_match_ztunnel() {
        let opts = ListenOptions::default();
        assert_eq!(opts.backlog, 128);
        assert_eq!((opts.mark, opts.reuse_port, opts.transparent), (None, false, false));
    }

    #[test]
    fn missing_namespace_is_not_found() {
        let netns = Path::new("/run/netns/ambit-no-such-namespace-for-test");
        let err = listen_in(netns, "127.0.0.1:0".parse().unwrap(), ListenOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("ambit-no-such-namespace-for-test"), "{err}");
        let err = connect_socket_in(netns, "10.0.0.1:80".parse().unwrap(), ConnectOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn mixed_families_are_refused_before_entering() {
        let opts = ConnectOptions {
            bind: Some("[::1]:0".parse().unwrap()),
            ..ConnectOptions::default()
        };
        let err = connect_socket_in(Path::new("/nonexistent"), "10.0.0.1:80".parse().unwrap(), opts).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }

    #[test]
    fn failed_steps_are_named_with_their_cause() {
        let err = check::<()>(
            "set SO_MARK 0x539",
            Err(io::Error::from(io::ErrorKind::PermissionDenied)),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(err.to_string(), "cannot set SO_MARK 0x539");
        assert!(err.source().is_some());
    }
}

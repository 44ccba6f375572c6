//! Sockets created inside a network namespace for the node proxy: listeners (outbound and inbound capture, HBONE)
//! and unconnected upstream sockets, with the options in-pod redirection relies on (SO_MARK, SO_REUSEPORT,
//! IP_TRANSPARENT, IP_FREEBIND), and reading back where a redirected connection was going (SO_ORIGINAL_DST).
//!
//! Each socket is created on a fresh thread that entered the namespace ([`run_in_path`]). A socket keeps the
//! namespace it was created in, so the caller may drive it from any thread or runtime. Every socket returned is
//! non-blocking and close-on-exec, ready for tokio. [`listen`] and [`connect_socket`] make the same sockets in the
//! calling thread's namespace: inside [`run_in_fd`](crate::run_in_fd) for a namespace held as a descriptor, or in
//! the process's own (the node proxy's admin listeners).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::{NetnsError, run_in_path};

/// How errors name the calling thread's namespace: they do not, the caller knows which it entered.
const CURRENT: Steps = Steps { netns: None };

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

/// A TCP listener on `addr` in the calling thread's network namespace, set up as [`listen_in`] sets it up.
pub fn listen(addr: SocketAddr, opts: ListenOptions) -> io::Result<TcpListener> {
    listener(&CURRENT, addr, opts)
}

/// An unconnected TCP socket for `upstream`'s address family, created inside the namespace at `netns` with the
/// given options and bound if asked; non-blocking.
///
/// Connect it from tokio with `tokio::net::TcpSocket::from_std_stream(socket.into())` followed by
/// `.connect(upstream).await`: the socket is already non-blocking, as that function requires, and it stays in
/// `netns` whichever thread connects it.
pub fn connect_socket_in(netns: &Path, upstream: SocketAddr, opts: ConnectOptions) -> io::Result<Socket> {
    check_families(upstream, &opts)?;
    let steps = Steps::new(netns);
    run_in_path(netns, move || upstream_socket(&steps, upstream, opts))?
}

/// An unconnected TCP socket for `upstream` in the calling thread's network namespace, set up as
/// [`connect_socket_in`] sets it up (and refusing mixed address families the same way).
pub fn connect_socket(upstream: SocketAddr, opts: ConnectOptions) -> io::Result<Socket> {
    check_families(upstream, &opts)?;
    upstream_socket(&CURRENT, upstream, opts)
}

fn check_families(upstream: SocketAddr, opts: &ConnectOptions) -> io::Result<()> {
    match opts.bind {
        Some(bind) if bind.is_ipv4() != upstream.is_ipv4() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot bind {bind} to connect to {upstream}: the address families differ"),
        )),
        _ => Ok(()),
    }
}

/// Unconnected TCP sockets made ahead of time inside one network namespace, so that opening a connection from it
/// costs no thread: a background thread that entered the namespace keeps up to `depth` fresh IPv4 sockets ready, and
/// [`SocketFactory::take`] takes one and applies the options (options, bind and connect do not depend on the calling
/// thread's namespace, only creation does). The thread refills the shelf only once half of it is gone, so waking it
/// (a cross-CPU wake-up, dearer than making the socket) is paid once per `depth / 2` sockets, not once per socket.
/// The thread exits when the factory is dropped.
#[derive(Debug)]
pub struct SocketFactory {
    steps: Steps,
    shelf: Arc<Shelf>,
}

/// The ready sockets, shared by the factory and its thread.
#[derive(Debug)]
struct Shelf {
    state: Mutex<ShelfState>,
    /// Signalled when the shelf falls to its refill mark, and when the factory is dropped.
    low: Condvar,
    depth: usize,
}

#[derive(Debug, Default)]
struct ShelfState {
    sockets: Vec<Socket>,
    /// The factory was dropped: the thread exits.
    closed: bool,
}

impl SocketFactory {
    /// Starts the thread for the namespace at `netns`; fails if the namespace cannot be opened or entered.
    pub fn new(netns: &Path, depth: usize) -> io::Result<Self> {
        let file = std::fs::File::open(netns).map_err(|source| NetnsError::Open {
            path: netns.to_path_buf(),
            source,
        })?;
        let path = netns.to_path_buf();
        Self::start(file.into(), Steps::new(netns), depth, move |source| NetnsError::Enter {
            path,
            source,
        })
    }

    /// As [`SocketFactory::new`], for the namespace held open as `netns` (e.g. one received over ZDS); the thread
    /// enters a duplicate of it, the caller's descriptor stays open.
    pub fn from_fd(netns: BorrowedFd<'_>, depth: usize) -> io::Result<Self> {
        let fd = netns.as_raw_fd();
        let owned = netns
            .try_clone_to_owned()
            .map_err(|source| NetnsError::DupFd { fd, source })?;
        let steps = Steps {
            netns: Some(format!("the network namespace of descriptor {fd}")),
        };
        Self::start(owned, steps, depth, move |source| NetnsError::EnterFd { fd, source })
    }

    /// Starts the thread that enters `netns` and keeps `depth` sockets ready; fails if it cannot enter.
    fn start(
        netns: OwnedFd,
        steps: Steps,
        depth: usize,
        enter_error: impl FnOnce(nix::Error) -> NetnsError + Send + 'static,
    ) -> io::Result<Self> {
        let file = netns;
        let shelf = Arc::new(Shelf {
            state: Mutex::new(ShelfState::default()),
            low: Condvar::new(),
            depth: depth.max(1),
        });
        let (entered_tx, entered_rx) = sync_channel(1);
        let filling = Arc::clone(&shelf);
        std::thread::Builder::new()
            .name("ambit-sockets".into())
            .spawn(move || {
                let entered = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(enter_error);
                let failed = entered.is_err();
                let _ = entered_tx.send(entered);
                if failed {
                    return;
                }
                drop(file);
                filling.fill();
            })?;
        entered_rx.recv().map_err(io::Error::other)??;
        Ok(Self { steps, shelf })
    }

    /// A ready socket for `upstream` with `opts` applied, as [`connect_socket_in`] makes it (unconnected,
    /// non-blocking), without leaving this thread; `None` when none is ready (or for IPv6): then call
    /// [`connect_socket_in`], off the async runtime.
    pub fn take(&self, upstream: SocketAddr, opts: ConnectOptions) -> Option<io::Result<Socket>> {
        if !upstream.is_ipv4() || opts.bind.is_some_and(|bind| !bind.is_ipv4()) {
            return None;
        }
        let socket = self.shelf.take()?;
        Some(configure_upstream(&self.steps, socket, upstream, opts))
    }

    /// How many sockets are ready now.
    #[cfg(test)]
    fn ready(&self) -> usize {
        self.shelf.lock().sockets.len()
    }

    /// How errors name the namespace the sockets are made in: its path, or the descriptor it was given as.
    pub fn netns(&self) -> &str {
        self.steps.netns.as_deref().unwrap_or_default()
    }
}

impl Drop for SocketFactory {
    fn drop(&mut self) {
        self.shelf.lock().closed = true;
        self.shelf.low.notify_one();
    }
}

// === impl Shelf ===

impl Shelf {
    /// Half the depth, rounded down: the thread refills once the shelf holds no more than this.
    fn refill_mark(&self) -> usize {
        self.depth / 2
    }

    /// A ready socket, if any; wakes the thread when this take brings the shelf down to its refill mark (or empties
    /// it), and only then: a wake-up is a system call even when nobody waits.
    fn take(&self) -> Option<Socket> {
        let mut state = self.lock();
        let socket = state.sockets.pop()?;
        let left = state.sockets.len();
        drop(state);
        if left == self.refill_mark() || left == 0 {
            self.low.notify_one();
        }
        Some(socket)
    }

    /// The thread's loop, in the namespace it entered: fills the shelf to `depth`, sleeps until it is down to the
    /// refill mark, again. Ends once the factory is gone, or when no socket can be made (out of descriptors): callers
    /// then fall back to `connect_socket_in`.
    fn fill(&self) {
        loop {
            let missing = {
                let mut state = self.lock();
                while !state.closed && state.sockets.len() > self.refill_mark() {
                    state = self.low.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
                if state.closed {
                    return;
                }
                self.depth - state.sockets.len()
            };
            // Made outside the lock, so that takes meanwhile do not wait for the system calls.
            let made: Vec<Socket> = (0..missing)
                .map_while(|_| Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).ok())
                .collect();
            let exhausted = made.len() < missing;
            self.lock().sockets.extend(made);
            if exhausted {
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ShelfState> {
        // Every update is one push, pop, extend or flag: a panic cannot leave the shelf half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
    configure_upstream(steps, socket, upstream, opts)
}

/// Applies `opts` to a fresh TCP socket of `upstream`'s family (wherever it was created) and makes it non-blocking.
fn configure_upstream(steps: &Steps, socket: Socket, upstream: SocketAddr, opts: ConnectOptions) -> io::Result<Socket> {
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

/// Names the namespace in the errors of the steps run inside it (`None`: the calling thread's, left unnamed).
#[derive(Debug)]
struct Steps {
    netns: Option<String>,
}

// === impl Steps ===

impl Steps {
    fn new(netns: &Path) -> Self {
        Steps {
            netns: Some(format!("network namespace {}", netns.display())),
        }
    }

    fn check<T>(&self, step: &str, result: io::Result<T>) -> io::Result<T> {
        match &self.netns {
            Some(netns) => check(&format!("{step} in {netns}"), result),
            None => check(step, result),
        }
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

    /// The factory's next socket for `addr`, waiting up to 5 s for its thread to make one.
    fn ready_socket(factory: &SocketFactory, addr: std::net::SocketAddr) -> socket2::Socket {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Some(socket) = factory.take(addr, ConnectOptions::default()) {
                return socket.unwrap();
            }
            assert!(std::time::Instant::now() < deadline, "no socket became ready");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_factory_hands_out_ready_sockets_and_leaves_ipv6_to_the_caller() {
        // The process's own namespace: entering it needs CAP_SYS_ADMIN, as every namespace does.
        let factory = SocketFactory::new(Path::new("/proc/self/ns/net"), 4).expect("enter our own namespace");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The thread fills the queue in the background.
        let socket = ready_socket(&factory, addr);
        socket.set_nonblocking(false).unwrap();
        socket.connect(&addr.into()).unwrap();
        assert!(listener.accept().is_ok());
        assert!(
            factory
                .take("[::1]:80".parse().unwrap(), ConnectOptions::default())
                .is_none()
        );
        let err = SocketFactory::new(Path::new("/run/netns/ambit-no-such-namespace-for-test"), 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn listeners_in_the_current_namespace_share_a_port_with_reuse_port() {
        let opts = ListenOptions {
            reuse_port: true,
            ..ListenOptions::default()
        };
        let first = listen("127.0.0.1:0".parse().unwrap(), opts).unwrap();
        let addr = first.local_addr().unwrap();
        let second = listen(addr, opts).expect("SO_REUSEPORT lets a second listener bind the port");
        assert_eq!(second.local_addr().unwrap(), addr);
        let err = listen(addr, ListenOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert_eq!(
            err.to_string(),
            format!("cannot bind {addr}"),
            "the current namespace is not named"
        );
    }

    /// Polls `cond` every 5 ms for at most 5 s.
    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_factory_refills_only_once_half_its_sockets_are_gone() {
        let factory = SocketFactory::new(Path::new("/proc/self/ns/net"), 4).expect("enter our own namespace");
        eventually("the shelf fills", || factory.ready() == 4);
        let addr = "127.0.0.1:9".parse().unwrap();
        factory.take(addr, ConnectOptions::default()).unwrap().unwrap();
        // Above the refill mark (2): the thread sleeps on.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(factory.ready(), 3);
        factory.take(addr, ConnectOptions::default()).unwrap().unwrap();
        eventually("the shelf is refilled to its depth", || factory.ready() == 4);
    }

    #[test]
    fn a_factory_from_a_descriptor_enters_that_namespace() {
        let own = std::fs::File::open("/proc/self/ns/net").unwrap();
        let factory = SocketFactory::from_fd(own.as_fd(), 2).expect("enter our own namespace");
        drop(own);
        assert!(factory.netns().contains("descriptor"), "{}", factory.netns());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = ready_socket(&factory, addr);
        socket.set_nonblocking(false).unwrap();
        socket.connect(&addr.into()).unwrap();
        assert!(listener.accept().is_ok());
        let not_netns = tempfile::tempfile().unwrap();
        let err = SocketFactory::from_fd(not_netns.as_fd(), 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }

    #[test]
    fn mixed_families_are_refused_before_entering() {
        let opts = ConnectOptions {
            bind: Some("[::1]:0".parse().unwrap()),
            ..ConnectOptions::default()
        };
        let err = connect_socket_in(Path::new("/nonexistent"), "10.0.0.1:80".parse().unwrap(), opts).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let err = connect_socket("10.0.0.1:80".parse().unwrap(), opts).unwrap_err();
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

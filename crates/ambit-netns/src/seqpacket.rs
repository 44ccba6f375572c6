//! Unix SOCK_SEQPACKET sockets that carry file descriptors beside their messages (SCM_RIGHTS): the transport of ZDS,
//! on which the node agent hands the node proxy each pod's network namespace. Also [`is_network_namespace`], the
//! check a receiver makes before trusting such a descriptor.
//!
//! A seqpacket socket keeps message boundaries (one `send` is one `recv`) and is connection-oriented, so a closed
//! peer reads as end of stream. Every descriptor received is returned as an [`OwnedFd`] opened close-on-exec
//! (MSG_CMSG_CLOEXEC), so the ones a caller does not keep are closed when dropped, even on error. A message or its
//! descriptors not fitting the receive buffers (MSG_TRUNC, MSG_CTRUNC) is an error, never a silently shortened
//! message. The sockets are non-blocking and driven by tokio's reactor ([`AsyncFd`]); create them inside a runtime.

use std::fmt::Display;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::libc;
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::sys::statfs;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::SocketError;

/// The most descriptors one message can carry (the kernel's SCM_MAX_FD). The receive buffer has room for all of
/// them, so a peer cannot make the kernel drop descriptors that the receiver would then not know to close.
pub const MAX_FDS: usize = 253;

/// The mode of a listener's socket file: only its owner (the node agent's user) may connect.
pub const SOCKET_MODE: u32 = 0o600;

/// The accept queue length of a listener.
const BACKLOG: i32 = 128;

/// A listening unix SOCK_SEQPACKET socket bound to a path.
#[derive(Debug)]
pub struct SeqpacketListener {
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
}

/// A connected unix SOCK_SEQPACKET socket: one message per `send`/`recv`, with descriptors beside it.
#[derive(Debug)]
pub struct SeqpacketStream {
    fd: AsyncFd<OwnedFd>,
}

// === impl SeqpacketListener ===

impl SeqpacketListener {
    /// Listens on `path`, first removing a socket file left there by an earlier run (a path holding anything else is
    /// an error, not deleted). The socket file gets mode [`SOCKET_MODE`] before anyone can connect.
    pub fn bind(path: &Path) -> io::Result<Self> {
        remove_stale_socket(path)?;
        let fd = new_socket().map_err(failed(format_args!("create a seqpacket socket for {}", path.display())))?;
        let addr = UnixAddr::new(path).map_err(failed(format_args!("use {} as a unix socket path", path.display())))?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(failed(format_args!("bind {}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(failed(format_args!("set mode {SOCKET_MODE:o} on {}", path.display())))?;
        // BACKLOG is a small positive constant, always a valid backlog.
        let backlog = Backlog::new(BACKLOG).map_err(failed("size the accept queue"))?;
        socket::listen(&fd, backlog).map_err(failed(format_args!("listen on {}", path.display())))?;
        Ok(SeqpacketListener {
            fd: register(fd)?,
            path: path.to_path_buf(),
        })
    }

    /// The path the listener is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<SeqpacketStream> {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let fd = self
            .fd
            .async_io(Interest::READABLE, |fd| Ok(socket::accept4(fd, flags)?))
            .await
            .map_err(failed(format_args!("accept on {}", self.path.display())))?;
        SeqpacketStream::from_fd(fd)
    }
}

// === impl SeqpacketStream ===

impl SeqpacketStream {
    /// Connects to the listener at `path`. Fails at once (nothing to retry inside) when nobody listens there or its
    /// accept queue is full.
    pub fn connect(path: &Path) -> io::Result<Self> {
        let fd = new_socket().map_err(failed("create a seqpacket socket"))?;
        let addr = UnixAddr::new(path).map_err(failed(format_args!("use {} as a unix socket path", path.display())))?;
        socket::connect(fd.as_raw_fd(), &addr).map_err(failed(format_args!("connect to {}", path.display())))?;
        Self::from_fd(fd)
    }

    /// Two connected sockets, without a path (for tests and in-process peers).
    pub fn pair() -> io::Result<(Self, Self)> {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let (a, b) = socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags)
            .map_err(failed("create a seqpacket socket pair"))?;
        Ok((Self::from_fd(a)?, Self::from_fd(b)?))
    }

    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(SeqpacketStream { fd: register(fd)? })
    }

    /// Sends `data` as one message, with `fd` beside it if given (the peer receives its own descriptor for the same
    /// open file). A closed peer is an error (EPIPE), never a SIGPIPE.
    pub async fn send(&self, data: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        self.send_fds(data, fd.as_slice()).await
    }

    /// As [`send`](Self::send), with any number of descriptors (up to [`MAX_FDS`]).
    pub async fn send_fds(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let fds: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        self.fd
            .async_io(Interest::WRITABLE, |sock| send_raw(sock.as_fd(), data, &fds))
            .await
    }

    /// Receives one message into `buf`, returning its length and the descriptors that came with it. Length 0 means
    /// the peer closed the connection (an empty message reads the same; protocols over this socket must not send
    /// one). A message longer than `buf` is an error; its descriptors are closed.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        self.fd
            .async_io(Interest::READABLE, |sock| recv_raw(sock.as_fd(), buf, MAX_FDS))
            .await
    }
}

impl AsFd for SeqpacketStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

/// A non-blocking, close-on-exec unix seqpacket socket.
fn new_socket() -> nix::Result<OwnedFd> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    socket::socket(AddressFamily::Unix, SockType::SeqPacket, flags, None)
}

/// Registers a socket with the current tokio runtime's reactor.
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open until dropped and always returns the same descriptor; the AsyncFd owns it from here
    // on and this module never replaces it (no `get_mut`), so it stays the registered descriptor for the AsyncFd's
    // whole life.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// Removes a socket file at `path`, left by an earlier listener; nothing there is fine, anything else an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(format_args!("inspect {}", path.display()))(e)),
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(failed(format_args!("remove the stale socket {}", path.display())))
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("cannot listen on {}: it exists and is not a socket", path.display()),
        )),
    }
}

/// One `sendmsg` of `data` with `fds` as SCM_RIGHTS.
fn send_raw(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(data)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if sent != data.len() {
        // A seqpacket send is atomic: all of it or an error. Anything else is a kernel surprise worth naming.
        return Err(io::Error::other(format!(
            "sent {sent} of {} bytes of a message",
            data.len()
        )));
    }
    Ok(())
}

/// One `recvmsg` into `buf` with room for `max_fds` descriptors. The descriptors are owned before any check, so
/// every error path closes them.
fn recv_raw(sock: BorrowedFd<'_>, buf: &mut [u8], max_fds: usize) -> io::Result<(usize, Vec<OwnedFd>)> {
    let capacity = buf.len();
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg_buf = vec![0u8; cmsg_space_for(max_fds)];
    let flags = MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg_buf), flags)?;
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        // The kernel closed the descriptors that did not fit; the ones that did cannot be read back (nix refuses to
        // parse a truncated control buffer). With room for MAX_FDS this cannot happen for SCM_RIGHTS.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message carried more control data than room for {max_fds} descriptors (MSG_CTRUNC)"),
        ));
    }
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            fds.extend(raw.into_iter().map(own_received_fd));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message was longer than the {capacity}-byte receive buffer (MSG_TRUNC)"),
        ));
    }
    Ok((msg.bytes, fds))
}

/// The control buffer size for `n` descriptors in one SCM_RIGHTS message (CMSG_SPACE).
fn cmsg_space_for(n: usize) -> usize {
    let header = std::mem::size_of::<libc::cmsghdr>();
    let align = std::mem::size_of::<usize>();
    let payload = n * std::mem::size_of::<RawFd>();
    header + payload.div_ceil(align) * align
}

/// Takes ownership of a descriptor the kernel installed in this process for an SCM_RIGHTS message.
#[allow(unsafe_code)]
fn own_received_fd(raw: RawFd) -> OwnedFd {
    // SAFETY: `raw` was just installed in this process's descriptor table by recvmsg for an SCM_RIGHTS message; it
    // is open, and nothing else refers to it, so this OwnedFd is its sole owner.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Whether `fd` refers to a network namespace (nsfs with type CLONE_NEWNET), asked with the NS_GET_NSTYPE ioctl.
/// Kernels without that ioctl (before 4.11) only let us check that it is an nsfs file, which then counts as yes.
#[allow(unsafe_code)]
pub fn is_network_namespace(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: NS_GET_NSTYPE takes no argument and writes no memory; it returns the namespace type of an nsfs file
    // or fails (ENOTTY) for any other. `fd` stays open for the borrow.
    let nstype = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if nstype >= 0 {
        return Ok(nstype == libc::CLONE_NEWNET);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOTTY | libc::EINVAL) => {
            let fs = statfs::fstatfs(fd).map_err(failed("fstatfs a namespace candidate"))?;
            Ok(fs.filesystem_type() == statfs::NSFS_MAGIC)
        }
        _ => Err(failed("ask a descriptor's namespace type")(err)),
    }
}

/// Wraps a failure as an [`io::Error`] of the same kind carrying a [`SocketError`] that names the step.
fn failed<E: Into<io::Error>>(step: impl Display) -> impl FnOnce(E) -> io::Error {
    let step = step.to_string();
    move |e| {
        let source: io::Error = e.into();
        io::Error::new(source.kind(), SocketError { step, source })
    }
}

#[cfg(test)]
mod tests;

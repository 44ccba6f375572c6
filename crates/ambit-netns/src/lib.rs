//! Network-namespace primitives shared by the components: entering a named namespace on a dedicated thread, listing
//! namespaces by prefix and finding the processes inside one.
//!
//! `setns(2)` changes the namespace of the calling thread only. Code that needs a socket inside a namespace runs on a
//! fresh thread that enters it, creates the socket and returns it; the socket keeps its namespace for its whole life,
//! so the caller can use it from any thread or runtime afterwards. Nothing else ever changes namespace. The
//! socket functions ([`listen_in`], [`connect_socket_in`]) create the node proxy's sockets that way. A namespace held
//! as an open descriptor (one received over ZDS) is entered the same way with [`run_in_fd`], where [`listen`] and
//! [`connect_socket`] make the sockets.
//!
//! Namespaces also travel between processes as descriptors: [`SeqpacketListener`] and [`SeqpacketStream`] carry them
//! beside messages (SCM_RIGHTS, the ZDS transport), and [`is_network_namespace`] checks what arrived.
//!
//! This is the one crate allowed `unsafe`, item by item with a SAFETY comment; nix's safe wrappers come first.

mod diag;
mod seqpacket;
mod socket;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

pub use diag::listening_tcp_ports;
pub use seqpacket::{MAX_FDS, SOCKET_MODE, SeqpacketListener, SeqpacketStream, is_network_namespace};
pub use socket::{
    ConnectOptions, DEFAULT_BACKLOG, ListenOptions, SocketError, SocketFactory, connect_socket, connect_socket_in,
    listen, listen_in, original_dst, set_mark,
};

/// Where `ip netns` keeps its named namespaces (bind mounts of `/proc/PID/ns/net`).
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the thread working inside network namespace {0} panicked")]
    Panicked(PathBuf),
    #[error("cannot duplicate network namespace descriptor {fd}")]
    DupFd {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter the network namespace of descriptor {fd}")]
    EnterFd {
        fd: RawFd,
        #[source]
        source: nix::Error,
    },
    #[error("the thread working inside the network namespace of descriptor {0} panicked")]
    PanickedFd(RawFd),
}

// === impl NetnsError ===

/// For the socket functions, which return [`io::Error`]: the kind is the cause's (`NotFound` for a missing
/// namespace, `PermissionDenied` without CAP_SYS_ADMIN) and the message is this error's.
impl From<NetnsError> for io::Error {
    fn from(err: NetnsError) -> Self {
        let kind = match &err {
            NetnsError::Open { source, .. } | NetnsError::DupFd { source, .. } => source.kind(),
            NetnsError::Enter { source, .. } | NetnsError::EnterFd { source, .. } => io::Error::from(*source).kind(),
            NetnsError::Panicked(_) | NetnsError::PanickedFd(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

/// The path of a named namespace.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Runs `f` on a new thread that has entered the named network namespace, and returns its result. The thread exits
/// afterwards, so no other work ever runs in the wrong namespace.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_in_path(&path_of(name), f)
}

/// As [`run_in`], with the namespace given by path (e.g. `/proc/PID/ns/net`).
pub fn run_in_path<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let owned = path.to_path_buf();
    let handle = std::thread::spawn(move || {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetnsError::Enter { path: owned, source })?;
        Ok(f())
    });
    handle.join().map_err(|_| NetnsError::Panicked(path.to_path_buf()))?
}

/// As [`run_in_path`], with the namespace given as an open descriptor (e.g. one the node agent passed over ZDS), so
/// that a namespace with no path (or whose path now names another one) can still be entered. The thread works on
/// its own duplicate of `netns`; the caller's descriptor stays open and unchanged.
pub fn run_in_fd<T, F>(netns: BorrowedFd<'_>, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let fd = netns.as_raw_fd();
    let owned = netns
        .try_clone_to_owned()
        .map_err(|source| NetnsError::DupFd { fd, source })?;
    let handle = std::thread::spawn(move || {
        nix::sched::setns(&owned, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::EnterFd { fd, source })?;
        drop(owned);
        Ok(f())
    });
    handle.join().map_err(|_| NetnsError::PanickedFd(fd))?
}

/// Names of the namespaces under [`NETNS_DIR`] that start with `prefix`, sorted.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// The (device, inode) identity of a namespace file, as `stat` reports it.
fn identity(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Process ids whose network namespace is the named one (what `ip netns pids` prints). Threads that entered the
/// namespace while their process stayed outside are not included.
pub fn pids_in(name: &str) -> Vec<i32> {
    let Some(target) = identity(&path_of(name)) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| identity(&Path::new("/proc").join(pid.to_string()).join("ns/net")) == Some(target))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_an_open_error() {
        let err = run_in("ambit-no-such-namespace-for-test", || ()).unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
        assert!(pids_in("ambit-no-such-namespace-for-test").is_empty());
    }

    #[test]
    fn a_namespace_descriptor_can_be_entered_and_a_bad_one_is_named() {
        use std::os::fd::AsFd;
        // Entering needs CAP_SYS_ADMIN, as for a path; without it the error is EnterFd, not a panic.
        let own = File::open("/proc/self/ns/net").unwrap();
        match run_in_fd(own.as_fd(), || 7) {
            Ok(v) => assert_eq!(v, 7),
            Err(e) => assert!(matches!(e, NetnsError::EnterFd { .. }), "{e}"),
        }
        // Not a namespace: setns refuses it, and the error names the descriptor.
        let file = tempfile::tempfile().unwrap();
        let err = run_in_fd(file.as_fd(), || ()).unwrap_err();
        assert!(matches!(err, NetnsError::EnterFd { .. }), "{err}");
        assert!(err.to_string().contains(&file.as_raw_fd().to_string()), "{err}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn own_namespace_can_be_entered() {
        // Entering the namespace we are already in needs CAP_SYS_ADMIN; without it the error is Enter, not a panic.
        match run_in_path(Path::new("/proc/self/ns/net"), || 7) {
            Ok(v) => assert_eq!(v, 7),
            Err(e) => assert!(matches!(e, NetnsError::Enter { .. }), "{e}"),
        }
    }
}

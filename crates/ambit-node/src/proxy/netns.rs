//! A pod's network namespace as the node proxy holds it: an open descriptor, so the namespace stays reachable (and
//! stays the same namespace) for as long as the pod proxy lives, whatever happens to any path naming it. The node
//! agent hands it over ZDS; the enrollment file names a path, opened once when the pod proxy starts.
//!
//! Sockets are made inside it on a thread that entered it ([`ambit_netns::run_in_fd`]), as for a path.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use ambit_netns::{ConnectOptions, ListenOptions, SocketFactory};
use ambit_zds::Netns;

/// An open network namespace, and the path it was opened from if any. Cheap to clone; clones share the descriptor.
/// Two are the same namespace when their (device, inode) are.
#[derive(Clone, Debug)]
pub struct PodNetns {
    netns: Netns,
    path: Option<PathBuf>,
}

// === impl PodNetns ===

impl PodNetns {
    /// Opens the namespace at `path` (e.g. `/run/netns/NAME`); fails if it is not a network namespace.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            netns: Netns::open(path)?,
            path: Some(path.to_path_buf()),
        })
    }

    /// Holds `fd`, which must be a network namespace (the descriptor of a ZDS Add).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            netns: Netns::new(fd)?,
            path: None,
        })
    }

    /// The path it was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The namespace's inode number (what `ls -L /proc/PID/ns/net` shows).
    pub fn inode(&self) -> u64 {
        self.netns.inode()
    }

    /// Whether both hold the same namespace (however each was obtained).
    pub fn same_namespace(&self, other: &PodNetns) -> bool {
        self.netns == other.netns
    }

    /// Listeners on each of `addrs` inside the namespace, made on one thread that entered it. Blocks for that
    /// thread; the error names the address that could not be bound.
    pub fn listen_all<const N: usize>(
        &self,
        addrs: [SocketAddr; N],
        opts: ListenOptions,
    ) -> io::Result<[TcpListener; N]> {
        let bound = ambit_netns::run_in_fd(self.as_fd(), move || {
            let mut listeners = Vec::with_capacity(N);
            for addr in addrs {
                listeners.push(ambit_netns::listen(addr, opts)?);
            }
            Ok::<_, io::Error>(listeners)
        })
        .map_err(io::Error::from)?
        .map_err(|error| io::Error::new(error.kind(), format!("{error} in {self}")))?;
        bound
            .try_into()
            .map_err(|_| io::Error::other("the namespace thread returned the wrong number of listeners"))
    }

    /// An unconnected upstream socket made inside the namespace with `opts` (see [`ambit_netns::connect_socket`]),
    /// as a std stream for `tokio::net::TcpSocket::from_std_stream`. Blocks for the thread that enters it: call it
    /// off the async runtime.
    pub fn connect_socket(&self, upstream: SocketAddr, opts: ConnectOptions) -> io::Result<TcpStream> {
        ambit_netns::run_in_fd(self.as_fd(), move || ambit_netns::connect_socket(upstream, opts))
            .map_err(io::Error::from)?
            .map(TcpStream::from)
            .map_err(|error| io::Error::new(error.kind(), format!("{error} in {self}")))
    }

    /// A [`SocketFactory`] keeping `depth` sockets ready inside the namespace.
    pub fn socket_factory(&self, depth: usize) -> io::Result<SocketFactory> {
        SocketFactory::from_fd(self.as_fd(), depth)
    }
}

impl AsFd for PodNetns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.netns.as_fd()
    }
}

/// `network namespace /run/netns/NAME` or `network namespace inode N`, for logs and errors.
impl fmt::Display for PodNetns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "network namespace {}", path.display()),
            None => write!(f, "network namespace inode {}", self.inode()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "/proc/self/ns/net";

    #[test]
    fn the_same_namespace_is_recognised_however_it_was_opened() {
        let by_path = PodNetns::open(Path::new(OWN)).unwrap();
        let by_fd = PodNetns::from_fd(std::fs::File::open(OWN).unwrap().into()).unwrap();
        assert!(by_path.same_namespace(&by_fd));
        assert_eq!(by_path.path(), Some(Path::new(OWN)));
        assert_eq!(by_fd.path(), None);
        assert_eq!(by_path.to_string(), format!("network namespace {OWN}"));
        assert_eq!(by_fd.to_string(), format!("network namespace inode {}", by_fd.inode()));
        let not_netns = tempfile::tempfile().unwrap();
        let error = PodNetns::from_fd(not_netns.into()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    }

    #[tokio::test]
    async fn listeners_and_sockets_are_made_inside_it() {
        let netns = PodNetns::from_fd(std::fs::File::open(OWN).unwrap().into()).unwrap();
        let opts = ListenOptions {
            reuse_port: true,
            ..ListenOptions::default()
        };
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let [a, b] = netns.listen_all([any, any], opts).unwrap();
        let addr = a.local_addr().unwrap();
        assert_ne!(addr, b.local_addr().unwrap());
        let socket = netns.connect_socket(addr, ConnectOptions::default()).unwrap();
        let stream = tokio::net::TcpSocket::from_std_stream(socket)
            .connect(addr)
            .await
            .unwrap();
        a.set_nonblocking(false).unwrap();
        let (_, peer) = a.accept().unwrap();
        assert_eq!(peer, stream.local_addr().unwrap());

        // A port taken without SO_REUSEPORT: the error names the address and the namespace.
        let hold = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = hold.local_addr().unwrap();
        let error = netns.listen_all([any, taken], opts).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
        let text = error.to_string();
        assert!(text.contains(&taken.to_string()) && text.contains("inode"), "{text}");
    }
}

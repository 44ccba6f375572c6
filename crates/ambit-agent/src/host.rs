//! What the agent does to the node, behind two small traits so the driver can be tested without root:
//! [`Namespaces`] finds pods' network namespaces and looks inside them, [`Capture`] installs, removes and verifies
//! capture in one. [`HostNamespaces`] and [`NftCapture`] are the real ones. Every call blocks (threads entering
//! namespaces, `ip` and `nft` processes): the driver runs them on the blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ambit_capture::{CaptureConfig, CaptureError};
use ambit_netns::NETNS_DIR;
use ambit_zds::Netns;

use crate::procfs;

/// A pod's network namespace as the agent found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetns {
    /// Where it was found (`DIR/NAME`, or `/proc/PID/ns/net`); where it is looked at again.
    pub path: PathBuf,
    /// Its name under the `ip netns` directory, which capture needs (it runs `ip netns exec NAME`); `None` when it
    /// has none.
    pub name: Option<String>,
    /// The open namespace, handed to the proxy; it also pins the namespace's identity.
    pub handle: Netns,
}

/// Finds pods' network namespaces and reads inside them.
pub trait Namespaces: Send + Sync + 'static {
    /// The namespaces holding any of `ips`, by IP. An IP no namespace holds is left out.
    fn find(&self, ips: &BTreeSet<IpAddr>) -> BTreeMap<IpAddr, PodNetns>;
    /// Whether the namespace at `netns.path` is still the one found (same identity) and still holds one of `ips`:
    /// false once the pod's sandbox is gone or was re-created.
    fn holds(&self, netns: &PodNetns, ips: &[IpAddr]) -> bool;
    /// The TCP ports in LISTEN inside the namespace.
    fn listening(&self, netns: &PodNetns) -> io::Result<BTreeSet<u16>>;
}

/// Installs, removes and verifies capture in a pod's namespace.
pub trait Capture: Send + Sync + 'static {
    fn install(&self, netns: &PodNetns) -> Result<(), CaptureFailure>;
    /// Removes capture; what is already gone is no error.
    fn remove(&self, netns: &PodNetns) -> Result<(), CaptureFailure>;
    /// How capture differs from what install leaves, one difference per entry, in words; empty when intact.
    fn verify(&self, netns: &PodNetns) -> Result<Vec<String>, CaptureFailure>;
    /// Whether any part of capture is there (for a pod the agent keeps no record of: left behind, to remove).
    fn installed(&self, netns: &PodNetns) -> Result<bool, CaptureFailure>;
}

/// Why capture could not be applied or read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureFailure {
    /// The namespace no longer exists (the pod is gone).
    #[error("network namespace {0} is gone")]
    Gone(String),
    /// The namespace was found by process and has no name for `ip netns exec`.
    #[error("network namespace {} has no name under {NETNS_DIR}, which capture needs", .0.display())]
    Unnamed(PathBuf),
    #[error(transparent)]
    Capture(CaptureError),
}

/// The node's namespaces: those under a directory whose names start with a prefix, or (without a directory) every
/// process's.
#[derive(Debug, Clone)]
pub struct HostNamespaces {
    dir: Option<PathBuf>,
    prefix: String,
}

/// Capture with `ambit_capture` and one configuration for every pod.
#[derive(Debug, Clone)]
pub struct NftCapture {
    cfg: CaptureConfig,
}

// === impl HostNamespaces ===

impl HostNamespaces {
    /// Namespaces under `dir` named `prefix…`; with no `dir`, every process's namespace (`/proc/*/ns/net`) but the
    /// agent's own.
    pub fn new(dir: Option<PathBuf>, prefix: impl Into<String>) -> Self {
        HostNamespaces {
            dir,
            prefix: prefix.into(),
        }
    }

    /// The namespace files to look into.
    fn candidates(&self) -> Vec<PathBuf> {
        match &self.dir {
            Some(dir) => named_in(dir, &self.prefix),
            None => process_namespaces(),
        }
    }
}

impl Namespaces for HostNamespaces {
    fn find(&self, ips: &BTreeSet<IpAddr>) -> BTreeMap<IpAddr, PodNetns> {
        let mut found = BTreeMap::new();
        for path in self.candidates() {
            if found.len() == ips.len() {
                break;
            }
            let Ok(addresses) = ambit_netns::run_in_path(&path, procfs::read_local_addresses) else {
                continue;
            };
            let mut matching = addresses.intersection(ips).peekable();
            if matching.peek().is_none() {
                continue;
            }
            let Ok(handle) = Netns::open(&path) else {
                continue;
            };
            let netns = PodNetns {
                name: name_of(&path),
                path: path.clone(),
                handle,
            };
            for ip in matching {
                found.insert(*ip, netns.clone());
            }
        }
        found
    }

    fn holds(&self, netns: &PodNetns, ips: &[IpAddr]) -> bool {
        let same = std::fs::metadata(&netns.path).is_ok_and(|m| m.ino() == netns.handle.inode());
        same && ambit_netns::run_in_path(&netns.path, procfs::read_local_addresses)
            .is_ok_and(|addresses| ips.iter().any(|ip| addresses.contains(ip)))
    }

    fn listening(&self, netns: &PodNetns) -> io::Result<BTreeSet<u16>> {
        ambit_netns::run_in_path(&netns.path, ambit_netns::listening_tcp_ports).map_err(io::Error::from)?
    }
}

/// The entries of `dir` whose names start with `prefix`, sorted.
fn named_in(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(prefix)))
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
}

/// One `/proc/PID/ns/net` per distinct namespace of the node's processes, without the agent's own.
fn process_namespaces() -> Vec<PathBuf> {
    let identity = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let mut seen: BTreeSet<(u64, u64)> = identity(Path::new("/proc/self/ns/net")).into_iter().collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort();
    pids.into_iter()
        .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")))
        .filter(|path| identity(path).is_some_and(|id| seen.insert(id)))
        .collect()
}

/// The namespace's name under [`NETNS_DIR`]: its file name when it lives there, else the name of an entry there
/// with the same identity (a namespace found by process that `ip netns` also knows).
fn name_of(path: &Path) -> Option<String> {
    if path.parent() == Some(Path::new(NETNS_DIR)) {
        return path.file_name()?.to_str().map(str::to_string);
    }
    let target = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))?;
    std::fs::read_dir(NETNS_DIR).ok()?.filter_map(|e| e.ok()).find_map(|e| {
        let meta = std::fs::metadata(e.path()).ok()?;
        ((meta.dev(), meta.ino()) == target).then(|| e.file_name().to_str().map(str::to_string))?
    })
}

// === impl NftCapture ===

impl NftCapture {
    pub fn new(cfg: CaptureConfig) -> Self {
        NftCapture { cfg }
    }

    pub fn config(&self) -> &CaptureConfig {
        &self.cfg
    }
}

impl Capture for NftCapture {
    fn install(&self, netns: &PodNetns) -> Result<(), CaptureFailure> {
        ambit_capture::install(capture_name(netns)?, &self.cfg).map_err(CaptureFailure::from)
    }

    fn remove(&self, netns: &PodNetns) -> Result<(), CaptureFailure> {
        ambit_capture::remove(capture_name(netns)?, &self.cfg).map_err(CaptureFailure::from)
    }

    fn verify(&self, netns: &PodNetns) -> Result<Vec<String>, CaptureFailure> {
        let report = ambit_capture::verify(capture_name(netns)?, &self.cfg)?;
        Ok(report.drift.iter().map(ToString::to_string).collect())
    }

    fn installed(&self, netns: &PodNetns) -> Result<bool, CaptureFailure> {
        Ok(ambit_capture::installed(capture_name(netns)?, &self.cfg)?)
    }
}

fn capture_name(netns: &PodNetns) -> Result<&str, CaptureFailure> {
    netns
        .name
        .as_deref()
        .ok_or_else(|| CaptureFailure::Unnamed(netns.path.clone()))
}

// === impl CaptureFailure ===

impl From<CaptureError> for CaptureFailure {
    fn from(err: CaptureError) -> Self {
        match err {
            CaptureError::NoNamespace(name) => CaptureFailure::Gone(name),
            other => CaptureFailure::Capture(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_the_prefixed_entries_of_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["ambit.c.pod.b", "ambit.c.pod.a", "ambit.c.node.n1", "other"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let got = HostNamespaces::new(Some(dir.path().to_path_buf()), "ambit.c.pod.").candidates();
        let names: Vec<String> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into())
            .collect();
        assert_eq!(names, ["ambit.c.pod.a", "ambit.c.pod.b"]);
        // A missing directory has no namespaces.
        assert!(named_in(&dir.path().join("missing"), "").is_empty());
    }

    #[test]
    fn process_scan_leaves_out_the_agents_own_namespace() {
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        for path in process_namespaces() {
            assert_ne!(
                std::fs::metadata(&path).map(|m| m.ino()).ok(),
                Some(own),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn files_that_are_not_namespaces_yield_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pod-a"), "").unwrap();
        let namespaces = HostNamespaces::new(Some(dir.path().to_path_buf()), "pod-");
        let ips = BTreeSet::from(["127.0.0.1".parse().unwrap()]);
        assert!(namespaces.find(&ips).is_empty());
        assert_eq!(name_of(&dir.path().join("pod-a")), None);
    }

    #[test]
    fn capture_needs_a_name() {
        let netns = PodNetns {
            path: PathBuf::from("/proc/self/ns/net"),
            name: None,
            handle: Netns::open(Path::new("/proc/self/ns/net")).unwrap(),
        };
        let err = NftCapture::new(CaptureConfig::default()).install(&netns).unwrap_err();
        assert!(matches!(err, CaptureFailure::Unnamed(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!("network namespace /proc/self/ns/net has no name under {NETNS_DIR}, which capture needs")
        );
    }
}

//! In-pod traffic capture, the node agent's half of Istio ambient's redirection: inside a pod's network namespace,
//! nftables rules send the pod's TCP to the node proxy's in-pod listeners (outbound 15001, inbound 15006; HBONE
//! 15008 is left alone), and a policy-routing rule brings the app's replies back to the proxy's transparent
//! sockets. A fail-closed guard in policy routing drops the pod's TCP that capture did not redirect, so that it
//! fails rather than leaves in plaintext while the nftables tables are missing; `net.ipv4.tcp_migrate_req` is set
//! so that a node-proxy upgrade loses no queued connection, and `net.ipv4.tcp_tw_reuse` so that short connections
//! through the proxy do not exhaust the pod's ephemeral ports. [`install`] applies all of it (the guard first,
//! replacing any previous tables), [`remove`] takes it away (the guard last), and [`verify`] reads it back and
//! reports drift. The rules themselves are pure values in [`rules`].
//!
//! Everything runs through `nft` (started from a short-lived thread inside the namespace) and `ip -n NS`, and the
//! sysctls are read and written by such a thread, so the caller's thread never changes namespace. The sockets the proxy
//! needs on the other side (SO_MARK, IP_TRANSPARENT, SO_ORIGINAL_DST) are in `ambit-netns`.

mod command;
mod guard;
mod install;
mod routing;
pub mod rules;
mod verify;

pub use install::{install, remove};
pub use rules::{CaptureConfig, PROBE_SOURCE, pod_ruleset};
pub use verify::{Drift, VerifyReport, installed, verify};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("network namespace {0} does not exist")]
    NoNamespace(String),
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}` (are nftables and iproute2 installed?)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read or write sysctl {key} in network namespace {netns}")]
    Sysctl {
        netns: String,
        key: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(ambit_netns::NetnsError),
}

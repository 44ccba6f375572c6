//! Applying and removing capture in a named pod namespace. The fail-closed guard goes in first and comes out last,
//! so that no moment exists with the pod's TCP neither redirected nor guarded; then the policy routing (harmless on
//! its own), then the nftables tables in one transaction.

use crate::command::{ensure_namespace, nft};
use crate::rules::{CaptureConfig, pod_ruleset, removal_ruleset};
use crate::{CaptureError, guard, routing};

/// Installs capture in the named namespace: the guard and the pod sysctls `tcp_migrate_req` and `tcp_tw_reuse` (see [`rules`](crate::rules)), exactly
/// one policy rule at [`RULE_PREF`](crate::rules::RULE_PREF), and the capture tables, replacing whatever capture
/// tables were there. Running it again is harmless, and repairs drift without ever leaving the pod's TCP unguarded.
/// A route left in another table by an earlier configuration is not cleaned up.
pub fn install(netns: &str, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    ensure_namespace(netns)?;
    guard::install(netns, cfg)?;
    routing::install(netns, cfg)?;
    nft(netns, &["-f", "-"], Some(&pod_ruleset(cfg)))?;
    tracing::debug!(netns, ?cfg, "capture installed");
    Ok(())
}

/// Removes capture from the named namespace: both tables, every rule at [`RULE_PREF`](crate::rules::RULE_PREF)
/// and the local route of `cfg`'s table, then the guard (its rules, table and device) and the pod sysctls back to
/// the kernel's default, leaving the pod's plain networking. What is already gone is no error.
pub fn remove(netns: &str, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    ensure_namespace(netns)?;
    nft(netns, &["-f", "-"], Some(&removal_ruleset()))?;
    routing::remove(netns, cfg)?;
    guard::remove(netns, cfg)?;
    tracing::debug!(netns, "capture removed");
    Ok(())
}

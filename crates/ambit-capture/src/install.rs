//! Applying and removing capture in a named pod namespace: the policy routing first (harmless on its own), then the
//! nftables tables in one transaction.

use crate::command::{ensure_namespace, nft};
use crate::rules::{CaptureConfig, pod_ruleset, removal_ruleset};
use crate::{CaptureError, routing};

/// Installs capture in the named namespace, replacing whatever capture tables were there and leaving exactly one
/// policy rule at [`RULE_PREF`](crate::rules::RULE_PREF); running it again is harmless. A route left in another
/// table by an earlier configuration is not cleaned up.
pub fn install(netns: &str, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    ensure_namespace(netns)?;
    routing::install(netns, cfg)?;
    nft(netns, &["-f", "-"], Some(&pod_ruleset(cfg)))?;
    tracing::debug!(netns, ?cfg, "capture installed");
    Ok(())
}

/// Removes capture from the named namespace: both tables, every rule at [`RULE_PREF`](crate::rules::RULE_PREF)
/// and the local route of `cfg`'s table. What is already gone is no error.
pub fn remove(netns: &str, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    ensure_namespace(netns)?;
    nft(netns, &["-f", "-"], Some(&removal_ruleset()))?;
    routing::remove(netns, cfg)?;
    tracing::debug!(netns, "capture removed");
    Ok(())
}

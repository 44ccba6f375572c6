//! The inbound authorization decision: which policies apply to a workload, and Istio's DENY → ALLOW evaluation
//! order over them, producing a [`Decision`] that says why.

use std::fmt;
use std::net::IpAddr;

use ambit_types::Identity;
use serde::Serialize;

use crate::authorization::{Action, Authorization, Hit, PolicyRef, Scope, Subject};

/// What the destination's node proxy knows about an inbound connection when it checks policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnInfo {
    /// The peer's verified identity; `None` for a plaintext peer.
    pub source_identity: Option<Identity>,
    /// The TCP peer address.
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    /// The resolved target port, not the tunnel port 15008.
    pub destination_port: u16,
}

/// Whether the connection may proceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    Allow,
    Deny,
}

/// The verdict on one connection, the policy that decided it, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub verdict: Verdict,
    /// The policy whose match decided the verdict; `None` when no match decided it.
    pub matched: Option<PolicyRef>,
    pub reason: Reason,
    /// Dry-run policies that matched: reported only, they never change the verdict.
    pub dry_run: Vec<PolicyMatch>,
}

/// A policy that matched a connection, and the rule that matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMatch {
    pub policy: PolicyRef,
    pub action: Action,
    pub hit: Hit,
}

/// Why the verdict is what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// A DENY policy matched.
    DeniedBy(PolicyMatch),
    /// No DENY policy matched and an ALLOW policy did.
    AllowedBy(PolicyMatch),
    /// ALLOW policies apply and none matched (the policies checked, in order).
    NoAllowPolicyMatched { allow_policies: Vec<PolicyRef> },
    /// Only DENY policies apply, and none matched.
    NoAllowPolicies { deny_policies: usize },
    /// No enforced policy applies to the workload.
    NoPolicies,
}

/// Decides one inbound connection against the policies that apply to its destination workload (see
/// [`applicable`]), in Istio's order:
///
/// 1. any matching DENY policy denies (the first in `policies` order is reported);
/// 2. with no ALLOW policy, the connection is allowed;
/// 3. any matching ALLOW policy allows;
/// 4. otherwise it is denied: "allow policies exist, but none allowed".
///
/// Dry-run policies are left out of every step; the ones that match are listed in [`Decision::dry_run`].
pub fn evaluate(policies: &[&Authorization], conn: &ConnInfo) -> Decision {
    let subject = Subject::new(conn);
    let dry_run = policies
        .iter()
        .filter(|p| p.dry_run)
        .filter_map(|p| PolicyMatch::find(p, &subject))
        .collect();
    let reason = decide(policies, &subject);
    Decision::new(reason, dry_run)
}

fn decide(policies: &[&Authorization], subject: &Subject<'_>) -> Reason {
    let enforced = || policies.iter().copied().filter(|p| !p.dry_run);
    let with_action = |action| enforced().filter(move |p| p.action == action);
    if let Some(hit) = with_action(Action::Deny).find_map(|p| PolicyMatch::find(p, subject)) {
        return Reason::DeniedBy(hit);
    }
    if with_action(Action::Allow).next().is_none() {
        return match with_action(Action::Deny).count() {
            0 => Reason::NoPolicies,
            deny_policies => Reason::NoAllowPolicies { deny_policies },
        };
    }
    match with_action(Action::Allow).find_map(|p| PolicyMatch::find(p, subject)) {
        Some(hit) => Reason::AllowedBy(hit),
        None => Reason::NoAllowPolicyMatched {
            allow_policies: with_action(Action::Allow).map(Authorization::policy_ref).collect(),
        },
    }
}

/// The policies that apply to one workload, in `all` order, each once:
///
/// * `GLOBAL` policies, and `NAMESPACE` policies of the root namespace (which istiod would have sent as `GLOBAL`);
/// * `NAMESPACE` policies of the workload's namespace;
/// * policies named in `workload_policies` (the workload's `authorization_policies`: selector-based policies,
///   and the policies converted from PeerAuthentication), whatever their scope.
///
/// A name in `workload_policies` that matches no policy in `all` is skipped; the caller should warn about it.
pub fn applicable<'a>(
    all: impl IntoIterator<Item = &'a Authorization>,
    workload_namespace: &str,
    workload_policies: &[PolicyRef],
    root_namespace: &str,
) -> Vec<&'a Authorization> {
    let listed = |p: &Authorization| {
        workload_policies
            .iter()
            .any(|r| r.namespace == p.namespace && r.name == p.name)
    };
    let scoped = |p: &Authorization| match p.scope {
        Scope::Global => true,
        Scope::Namespace => p.namespace == workload_namespace || p.namespace == root_namespace,
        Scope::WorkloadSelector => false,
    };
    all.into_iter().filter(|p| scoped(p) || listed(p)).collect()
}

// === impl Decision ===

impl Decision {
    fn new(reason: Reason, dry_run: Vec<PolicyMatch>) -> Self {
        let (verdict, matched) = match &reason {
            Reason::DeniedBy(m) => (Verdict::Deny, Some(m.policy.clone())),
            Reason::AllowedBy(m) => (Verdict::Allow, Some(m.policy.clone())),
            Reason::NoAllowPolicyMatched { .. } => (Verdict::Deny, None),
            Reason::NoAllowPolicies { .. } | Reason::NoPolicies => (Verdict::Allow, None),
        };
        Self {
            verdict,
            matched,
            reason,
            dry_run,
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

impl fmt::Display for Decision {
    /// The reason, then each dry-run match: `denied by DENY policy demo/x (rule 0 matched: ...); dry-run: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        for m in &self.dry_run {
            write!(f, "; dry-run {m} (not enforced)")?;
        }
        Ok(())
    }
}

// === impl PolicyMatch ===

impl PolicyMatch {
    fn find(policy: &Authorization, subject: &Subject<'_>) -> Option<Self> {
        let hit = policy.hit(subject)?;
        Some(Self {
            policy: policy.policy_ref(),
            action: policy.action,
            hit,
        })
    }
}

impl fmt::Display for PolicyMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} policy {} ({})", self.action, self.policy, self.hit)
    }
}

// === impl Reason ===

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeniedBy(m) => write!(f, "denied by {m}"),
            Self::AllowedBy(m) => write!(f, "allowed by {m}"),
            Self::NoAllowPolicyMatched { allow_policies } => {
                let names: Vec<String> = allow_policies.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "allow policies exist, but none allowed (no rule matched in ALLOW {})",
                    names.join(", ")
                )
            }
            Self::NoAllowPolicies { deny_policies: 1 } => {
                f.write_str("allowed: no ALLOW policy applies and the DENY policy did not match")
            }
            Self::NoAllowPolicies { deny_policies } => write!(
                f,
                "allowed: no ALLOW policy applies and none of the {deny_policies} DENY policies matched"
            ),
            Self::NoPolicies => f.write_str("allowed: no policy applies to the workload"),
        }
    }
}

// === impl Verdict ===

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

#[cfg(test)]
mod tests;

//! PeerAuthentication as the node proxy sees it: the effective mTLS mode of a workload (mesh → namespace →
//! workload, oldest policy first) expressed as DENY [`Authorization`]s, as istiod does for ztunnel.

use std::collections::BTreeMap;
use std::fmt;

use super::{Problem, TranslateError, check_meta, port};
use crate::authorization::{Action, Authorization, Clause, Group, Match, PolicyRef, Scope, StringMatch};
use crate::istio::{MtlsMode, PeerAuthentication, WorkloadSelector};

/// The shared policy, in the root namespace, that denies peers without an identity.
pub const STATIC_STRICT_POLICY_NAME: &str = "istio_converted_static_strict";

/// The prefix of the name of a policy converted from a workload PeerAuthentication with port-level exceptions.
pub const CONVERTED_POLICY_PREFIX: &str = "converted_peer_authentication_";

/// A validated PeerAuthentication, with its age: the input of [`peer_authentication_policies`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtlsPolicy {
    pub policy: PolicyRef,
    /// `None` for a mesh-wide (root namespace) or namespace-wide policy.
    pub selector: Option<WorkloadSelector>,
    pub mode: MtlsMode,
    pub port_modes: BTreeMap<u16, MtlsMode>,
    /// Creation order: lower is older, and the oldest policy wins a conflict (Istio compares
    /// `metadata.creationTimestamp`). Ties go to the smaller `namespace/name`.
    pub creation_index: u64,
}

/// The workload whose mTLS mode is asked for.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadMeta<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// A workload's effective mTLS mode, and the authorizations that enforce it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveMtls {
    /// `Strict`, `Permissive` or `Disable`; never `Unset` (the default is `Permissive`).
    pub mode: MtlsMode,
    /// The PeerAuthentication that set `mode`; `None` when no policy did.
    pub decided_by: Option<PolicyRef>,
    /// Ports whose mode differs from `mode` in strictness, with their own mode.
    pub port_exceptions: BTreeMap<u16, MtlsMode>,
    /// DENY policies to apply to the workload (scope `WORKLOAD_SELECTOR`): the shared
    /// [`static_strict_policy`] when the workload is strict on every port, a policy named
    /// `converted_peer_authentication_<name>` when it has port exceptions, none when it is permissive everywhere.
    pub authorizations: Vec<Authorization>,
}

/// The policies that decide one workload's mode, one per level.
#[derive(Default)]
struct Layers<'a> {
    mesh: Option<&'a MtlsPolicy>,
    namespace: Option<&'a MtlsPolicy>,
    workload: Option<&'a MtlsPolicy>,
}

/// Resolves the mTLS mode of `workload` from all known PeerAuthentications and gives the DENY authorizations
/// that enforce it; evaluate them together with the workload's other policies (list their [`PolicyRef`]s in the
/// workload's `authorization_policies`, as istiod does).
///
/// The policies that count: the oldest selector-less one in `root_namespace` (mesh level), the oldest
/// selector-less one in the workload's namespace, and the oldest one in the workload's namespace whose selector
/// matches its labels. Each level that sets a mode overrides the one above; a port-level mode overrides the
/// workload's mode for that target port. `Disable` counts as not strict: HBONE is always mTLS.
pub fn peer_authentication_policies<'a>(
    policies: impl IntoIterator<Item = &'a MtlsPolicy>,
    workload: &WorkloadMeta<'_>,
    root_namespace: &str,
) -> EffectiveMtls {
    let layers = Layers::select(policies, workload, root_namespace);
    let (mode, decided_by) = layers.mode();
    let port_exceptions = layers.port_exceptions(mode);
    let authorizations = match layers.workload.filter(|_| !port_exceptions.is_empty()) {
        Some(policy) => vec![converted_policy(policy, mode, &port_exceptions)],
        None if mode.is_strict() => vec![static_strict_policy(root_namespace)],
        None => Vec::new(),
    };
    EffectiveMtls {
        mode,
        decided_by,
        port_exceptions,
        authorizations,
    }
}

/// `<root_namespace>/istio_converted_static_strict`: DENY when the peer has no principal.
pub fn static_strict_policy(root_namespace: &str) -> Authorization {
    Authorization {
        name: STATIC_STRICT_POLICY_NAME.to_string(),
        namespace: root_namespace.to_string(),
        scope: Scope::WorkloadSelector,
        action: Action::Deny,
        groups: vec![group(Match {
            not_principals: vec![StringMatch::Presence],
            ..Match::default()
        })],
        dry_run: false,
    }
}

/// The DENY policy of a workload with port exceptions. Strict workload: deny a plaintext peer unless the port is
/// one of the exceptions. Otherwise: one group per strict port, denying a plaintext peer on that port.
fn converted_policy(policy: &MtlsPolicy, mode: MtlsMode, exceptions: &BTreeMap<u16, MtlsMode>) -> Authorization {
    let deny_plaintext = |destination_ports, not_destination_ports| {
        group(Match {
            not_principals: vec![StringMatch::Presence],
            destination_ports,
            not_destination_ports,
            ..Match::default()
        })
    };
    let groups = if mode.is_strict() {
        vec![deny_plaintext(Vec::new(), exceptions.keys().copied().collect())]
    } else {
        exceptions
            .keys()
            .map(|port| deny_plaintext(vec![*port], Vec::new()))
            .collect()
    };
    Authorization {
        name: format!("{CONVERTED_POLICY_PREFIX}{}", policy.policy.name),
        namespace: policy.policy.namespace.clone(),
        scope: Scope::WorkloadSelector,
        action: Action::Deny,
        groups,
        dry_run: false,
    }
}

fn group(m: Match) -> Group {
    Group {
        clauses: vec![Clause { matches: vec![m] }],
    }
}

// === impl MtlsPolicy ===

impl MtlsPolicy {
    /// Validates a PeerAuthentication. `creation_index` orders policies by age (lower is older).
    ///
    /// A selector with no labels counts as no selector. Port-level modes need a selector, and their keys must be
    /// ports from 1 to 65535.
    pub fn from_peer_authentication(pa: &PeerAuthentication, creation_index: u64) -> Result<Self, TranslateError> {
        check_meta(&pa.metadata)?;
        let spec = &pa.spec;
        let selector = (spec.selector.as_ref()).filter(|s| !s.match_labels.is_empty()).cloned();
        if selector.is_none() && !spec.port_level_mtls.is_empty() {
            return Err(TranslateError::new("spec.portLevelMtls", Problem::PortsWithoutSelector));
        }
        let port_modes = (spec.port_level_mtls.iter())
            .map(|(key, mtls)| Ok((port_key(*key)?, mtls.mode)))
            .collect::<Result<_, TranslateError>>()?;
        Ok(Self {
            policy: PolicyRef::new(&pa.metadata.namespace, &pa.metadata.name),
            selector,
            mode: spec.mtls.map(|m| m.mode).unwrap_or_default(),
            port_modes,
            creation_index,
        })
    }

    fn is_older_than(&self, other: &Self) -> bool {
        (self.creation_index, &self.policy) < (other.creation_index, &other.policy)
    }
}

fn port_key(key: u32) -> Result<u16, TranslateError> {
    let text = key.to_string();
    port(&text).map_err(|problem| TranslateError::new(&format!("spec.portLevelMtls[{text}]"), problem))
}

// === impl Layers ===

impl<'a> Layers<'a> {
    fn select(policies: impl IntoIterator<Item = &'a MtlsPolicy>, workload: &WorkloadMeta<'_>, root: &str) -> Self {
        let mut layers = Self::default();
        for policy in policies {
            let Some(slot) = layers.slot(policy, workload, root) else {
                continue;
            };
            if slot.is_none_or(|current| policy.is_older_than(current)) {
                *slot = Some(policy);
            }
        }
        layers
    }

    /// The level `policy` would set for `workload`, if any.
    fn slot(
        &mut self,
        policy: &MtlsPolicy,
        workload: &WorkloadMeta<'_>,
        root: &str,
    ) -> Option<&mut Option<&'a MtlsPolicy>> {
        let namespace = policy.policy.namespace.as_str();
        match &policy.selector {
            None if namespace == root => Some(&mut self.mesh),
            None if namespace == workload.namespace => Some(&mut self.namespace),
            Some(selector) if namespace == workload.namespace && selector.selects(workload.labels) => {
                Some(&mut self.workload)
            }
            _ => None,
        }
    }

    /// The mode of the most specific level that sets one, and that level's policy.
    fn mode(&self) -> (MtlsMode, Option<PolicyRef>) {
        let levels = [self.mesh, self.namespace, self.workload];
        let decisive = levels.into_iter().flatten().rfind(|p| p.mode != MtlsMode::Unset);
        decisive.map_or((MtlsMode::Permissive, None), |p| (p.mode, Some(p.policy.clone())))
    }

    fn port_exceptions(&self, mode: MtlsMode) -> BTreeMap<u16, MtlsMode> {
        let ports = self.workload.map(|p| &p.port_modes).into_iter().flatten();
        ports
            .filter(|(_, port_mode)| **port_mode != MtlsMode::Unset && port_mode.is_strict() != mode.is_strict())
            .map(|(port, port_mode)| (*port, *port_mode))
            .collect()
    }
}

// === impl EffectiveMtls ===

impl EffectiveMtls {
    /// The keys to list in the workload's `authorization_policies`.
    pub fn policy_refs(&self) -> Vec<PolicyRef> {
        self.authorizations.iter().map(Authorization::policy_ref).collect()
    }
}

impl fmt::Display for EffectiveMtls {
    /// `STRICT (set by demo/default), port 8080 PERMISSIVE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.decided_by {
            Some(policy) => write!(f, "{} (set by {policy})", self.mode)?,
            None => write!(f, "{} (default: no PeerAuthentication sets a mode)", self.mode)?,
        }
        for (port, mode) in &self.port_exceptions {
            write!(f, ", port {port} {mode}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

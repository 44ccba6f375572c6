//! Sans-IO L4 authorization for the node proxy, wire-compatible with Istio ambient: the policy the proxy receives
//! ([`Authorization`]), the decision on one inbound connection ([`evaluate`]), and the translation of Istio's
//! AuthorizationPolicy and PeerAuthentication into it ([`translate_authorization_policy`],
//! [`peer_authentication_policies`]). No IO and no async runtime here.

mod authorization;
mod cidr;
mod evaluate;
pub mod http;
pub mod istio;
mod translate;

pub use authorization::{
    Action, Attribute, Authorization, Clause, Evidence, Group, Hit, Match, PolicyRef, Scope, ServiceAccountMatch,
    StringMatch,
};
pub use cidr::{IpNet, IpNetError};
pub use evaluate::{ConnInfo, Decision, PolicyMatch, Reason, Verdict, applicable, evaluate};
pub use translate::{
    CONVERTED_POLICY_PREFIX, DRY_RUN_ANNOTATION, Deviation, EffectiveMtls, MtlsPolicy, PolicyStatus, Problem,
    STATIC_STRICT_POLICY_NAME, SkipReason, TranslateError, Translation, WorkloadMeta, peer_authentication_policies,
    static_strict_policy, translate_authorization_policy,
};

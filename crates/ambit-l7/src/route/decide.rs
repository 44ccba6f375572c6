//! The decision for one request: the first entry (in precedence order) that matches, and what its rule does,
//! with the backend picked by weight and mirrors and faults sampled, all from one random sample.

use super::compile::{Entry, ForwardRule, Rule};
use super::filter::{location, modified_path};
use super::policy::FaultSpec;
use super::{Decision, Fault, Forward, RequestHead, RequestMutations, RouteTable, RuleRef};

/// Salts of the values derived from a request's sample, one per independent choice.
const DELAY_SALT: u32 = 1;
const ABORT_SALT: u32 = 2;
const MIRROR_SALT: u32 = 16;

pub(super) fn decide<'t>(table: &'t RouteTable, head: &RequestHead<'_>, sample: u32) -> Decision<'t> {
    let matched = (table.entries.iter()).find_map(|entry| {
        let rule = table.rules.get(entry.rule)?;
        entry.matcher.matches(head).then_some((entry, rule))
    });
    let Some((entry, rule)) = matched else {
        return Decision::NoRoute;
    };
    match rule {
        Rule::Invalid { id } => Decision::Invalid { rule: id },
        Rule::Redirect { id, redirect } => Decision::Redirect {
            rule: id,
            status: redirect.status,
            location: location(redirect, head, entry.prefix.as_deref(), table.service.port),
        },
        Rule::Forward { id, forward } => self::forward(id.as_ref(), forward, entry, head, sample),
    }
}

fn forward<'t>(
    id: Option<&'t RuleRef>,
    rule: &'t ForwardRule,
    entry: &Entry,
    head: &RequestHead<'_>,
    sample: u32,
) -> Decision<'t> {
    let Some(target) = pick(rule, sample) else {
        // Only a route's rule can have an invalid backend or no weight: the default route has one valid backend.
        return id.map_or(Decision::NoRoute, |rule| Decision::Invalid { rule });
    };
    let mirrors = (target.mirrors.iter().zip(MIRROR_SALT..))
        .filter(|(mirror, salt)| mirror.share.admits(derive(sample, *salt)))
        .map(|(mirror, _)| &mirror.service)
        .collect();
    let rewrite = rule.rewrite.as_ref();
    let request = RequestMutations {
        headers: &target.request_headers,
        authority: rewrite.and_then(|rewrite| rewrite.hostname.as_deref()),
        path: (rewrite.and_then(|rewrite| rewrite.path.as_ref()))
            .map(|modifier| modified_path(modifier, head.path, entry.prefix.as_deref())),
    };
    Decision::Forward(Forward {
        rule: id,
        backend: &target.service,
        request,
        response_headers: &target.response_headers,
        mirrors,
        timeouts: rule.timeouts,
        retry: rule.retry.as_ref(),
        fault: rule.fault.map(|fault| sample_fault(fault, sample)).unwrap_or_default(),
    })
}

/// The backend `sample` falls on, each having a share of the `u32` range proportional to its weight; `None` when
/// it is invalid or all weights are 0.
fn pick(rule: &ForwardRule, sample: u32) -> Option<&super::compile::Target> {
    if rule.total_weight == 0 {
        return None;
    }
    let mut point = (u64::from(sample) * rule.total_weight) >> 32;
    for backend in &rule.backends {
        let weight = u64::from(backend.weight);
        if point < weight {
            return backend.target.as_ref();
        }
        point -= weight;
    }
    None
}

/// The faults this request gets.
fn sample_fault(fault: FaultSpec, sample: u32) -> Fault {
    let delay = (fault.delay).filter(|(_, share)| share.admits(derive(sample, DELAY_SALT)));
    let abort = (fault.abort).filter(|(_, share)| share.admits(derive(sample, ABORT_SALT)));
    Fault {
        delay: delay.map(|(delay, _)| delay),
        abort: abort.map(|(status, _)| status),
    }
}

/// A value derived from `sample` for the choice `salt`: a bijection of `u32` for each salt (so uniform samples
/// give uniform values), with well-mixed bits (MurmurHash3's finalizer) so different salts choose independently.
pub(super) fn derive(sample: u32, salt: u32) -> u32 {
    let mut hash = sample ^ salt.wrapping_mul(0x9e37_79b9);
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^ (hash >> 16)
}

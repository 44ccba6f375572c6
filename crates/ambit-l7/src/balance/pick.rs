//! The two choice rules over the endpoints that may serve: weighted smooth round robin and weighted least request.

use super::{Sample, Slot};

/// nginx's smooth weighted round robin over `candidates` (indexes into `slots`): every candidate gains its weight
/// in credit, the one with the most credit serves (the first on ties) and pays the candidates' total weight. Over
/// any run of picks each candidate serves its weight's share, spread out rather than in bursts. Credit of endpoints
/// outside `candidates` is left alone, so an ejected endpoint resumes where it was.
pub(super) fn smooth_round_robin(slots: &mut [Slot], candidates: &[usize]) -> Option<usize> {
    let total: i64 = candidates.iter().map(|&i| i64::from(slots[i].endpoint.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut best: Option<usize> = None;
    for &i in candidates {
        slots[i].current += i64::from(slots[i].endpoint.weight);
        if best.is_none_or(|b| slots[i].current > slots[b].current) {
            best = Some(i);
        }
    }
    let chosen = best?;
    slots[chosen].current -= total;
    Some(chosen)
}

/// Two distinct candidates drawn in proportion to their weights (one sample each: `sample` and a value derived
/// from it); the one with fewer active requests per unit of weight serves, the first drawn on ties. Idle endpoints
/// thus share requests by weight, and busy ones yield to less busy ones; with equal weights this is the classic
/// power of two choices. (Envoy runs an EDF schedule over `weight / (active + 1)` when weights differ; two weighted
/// draws keep the choice stateless with the same two tendencies.)
pub(super) fn least_request(slots: &[Slot], candidates: &[usize], sample: Sample) -> Option<usize> {
    let weight = |i: usize| u64::from(slots[i].endpoint.weight);
    let first = weighted(candidates, weight, sample)?;
    let rest: Vec<usize> = candidates.iter().copied().filter(|&i| i != first).collect();
    let Some(second) = weighted(&rest, weight, sample.derive()) else {
        return Some(first);
    };
    // active_first / w_first <= active_second / w_second, without division.
    let active = |i: usize| u128::from(slots[i].active);
    let first_wins = active(first) * u128::from(weight(second)) <= active(second) * u128::from(weight(first));
    Some(if first_wins { first } else { second })
}

/// A candidate drawn with probability proportional to its weight; `None` when the weights add up to 0.
fn weighted(candidates: &[usize], weight: impl Fn(usize) -> u64, sample: Sample) -> Option<usize> {
    let total: u64 = candidates.iter().map(|&i| weight(i)).sum();
    let mut point = sample.below(total);
    candidates.iter().copied().find(|&i| {
        let w = weight(i);
        if point < w {
            return true;
        }
        point -= w;
        false
    })
}

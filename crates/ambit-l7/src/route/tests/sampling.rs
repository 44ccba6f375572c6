//! Choices made from the request's sample: backends by weight (exact over an even sweep), zero and invalid
//! weights, and mirror and fault percentages (independent of each other and of the backend).

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;

use super::super::decide::derive;
use super::super::{FAULT_ABORT_PERCENT, FAULT_ABORT_STATUS, FAULT_DELAY, FAULT_DELAY_PERCENT};
use super::*;

/// How many of `samples` requests (`GET /`) get each outcome.
fn tally(table: &RouteTable, samples: impl Iterator<Item = u32>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for sample in samples {
        let key = match decide(table, &Request::get("/"), sample) {
            Decision::Forward(forward) => forward.backend.name.clone(),
            other => outcome(&other),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

fn counts<const N: usize>(pairs: [(&str, usize); N]) -> BTreeMap<String, usize> {
    pairs.into_iter().map(|(key, count)| (key.to_string(), count)).collect()
}

/// Backends by weight over an even sweep of 1000 samples: (backends, the exact counts).
#[test]
fn weights_split_an_even_sweep_exactly() {
    let cases = [
        (
            "[{name: a, port: 80, weight: 90}, {name: b, port: 80, weight: 10}]",
            counts([("a", 900), ("b", 100)]),
        ),
        (
            "[{name: a, port: 80, weight: 1}, {name: b, port: 80, weight: 2}, {name: c, port: 80, weight: 7}]",
            counts([("a", 100), ("b", 200), ("c", 700)]),
        ),
        (
            "[{name: a, port: 80}, {name: b, port: 80}]",
            counts([("a", 500), ("b", 500)]),
        ),
        (
            "[{name: a, port: 80, weight: 0}, {name: b, port: 80, weight: 3}]",
            counts([("b", 1000)]),
        ),
        (
            "[{name: a, port: 80, weight: 1}, {name: z, port: 80, weight: 0}, {name: b, port: 80, weight: 1}]",
            counts([("a", 500), ("b", 500)]),
        ),
        ("[{name: a, port: 80, weight: 1000000}]", counts([("a", 1000)])),
        (
            "[{name: a, port: 80, weight: 0}, {name: b, port: 80, weight: 0}]",
            counts([("500 by r#0", 1000)]),
        ),
        (
            "[{name: a, port: 80, weight: 3}, {kind: Bucket, name: b, weight: 1}]",
            counts([("a", 750), ("500 by r#0", 250)]),
        ),
    ];
    for (backends, expected) in cases {
        let (table, _) = compile(&[route("r", &format!("- backendRefs: {backends}"))]);
        assert_eq!(tally(&table, sweep(1000)), expected, "{backends}");
    }
}

#[test]
fn weights_hold_at_the_ends_of_the_sample_range() {
    let table = one("- backendRefs: [{name: a, port: 80, weight: 90}, {name: b, port: 80, weight: 10}]");
    assert_eq!(tally(&table, [0, u32::MAX].into_iter()), counts([("a", 1), ("b", 1)]));
}

/// The faults over a sweep of 100 000 samples: each at its percentage, independently of the other.
#[test]
fn faults_hit_their_percentage_independently() {
    let metadata = format!(
        "annotations:\n  {FAULT_DELAY}: 1s\n  {FAULT_DELAY_PERCENT}: '50'\n  {FAULT_ABORT_STATUS}: '503'\n  {FAULT_ABORT_PERCENT}: '10'"
    );
    let table = table(&[http(&route_yaml(
        "r",
        &metadata,
        "- backendRefs: [{name: a, port: 80}]",
    ))]);
    let (mut delayed, mut aborted, mut both) = (0, 0, 0);
    for sample in sweep(100_000) {
        let fault = forward_with(&table, sample).fault;
        let (delay, abort) = (fault.delay.is_some(), fault.abort.is_some());
        delayed += usize::from(delay);
        aborted += usize::from(abort);
        both += usize::from(delay && abort);
        assert!(fault.delay.is_none_or(|delay| delay == Duration::from_secs(1)));
        assert!(
            fault
                .abort
                .is_none_or(|status| status == StatusCode::SERVICE_UNAVAILABLE)
        );
    }
    assert!((49_000..=51_000).contains(&delayed), "delayed {delayed}");
    assert!((9_500..=10_500).contains(&aborted), "aborted {aborted}");
    assert!((4_500..=5_500).contains(&both), "both {both}");
}

/// A mirror at 25% over 100 000 samples, and independently of which of two equal backends is chosen.
#[test]
fn mirrors_hit_their_fraction_on_every_backend() {
    let table = one(
        "
        - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, fraction: {numerator: 1, denominator: 4}}}]
          backendRefs: [{name: a, port: 80}, {name: b, port: 80}]
        ",
    );
    let mut mirrored: BTreeMap<String, usize> = BTreeMap::new();
    for sample in sweep(100_000) {
        let forward = forward_with(&table, sample);
        *mirrored.entry(forward.backend.name.clone()).or_default() += forward.mirrors.len();
    }
    for (backend, count) in &mirrored {
        assert!(
            (12_000..=13_000).contains(count),
            "{backend}: {count} of 50000 mirrored"
        );
    }
    assert_eq!(mirrored.len(), 2);
}

#[test]
fn derived_samples_are_distinct_per_salt_and_differ_between_salts() {
    let samples: Vec<u32> = sweep(10_000).collect();
    for salt in [1, 2, 16, 17] {
        let mut derived: Vec<u32> = samples.iter().map(|sample| derive(*sample, salt)).collect();
        derived.sort_unstable();
        derived.dedup();
        assert_eq!(derived.len(), samples.len(), "salt {salt}");
    }
    let same = (samples.iter())
        .filter(|sample| derive(**sample, 1) == derive(**sample, 2))
        .count();
    assert_eq!(same, 0);
}

fn forward_with(table: &RouteTable, sample: u32) -> Forward<'_> {
    match decide(table, &Request::get("/"), sample) {
        Decision::Forward(forward) => forward,
        other => panic!("expected a forward decision, got {other:?}"),
    }
}

//! Tables for endpoint choice (round robin, least request, exclusion, updates), outlier ejection (thresholds, growing
//! ejection time, max ejection percent, panic mode), retry decisions and backoff bounds, and a seeded simulation of
//! retries over a half-failing endpoint.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;

/// A seeded splitmix64 sequence of samples, so every "random" run is the same.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> Sample {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Sample(z ^ (z >> 31))
    }
}

fn id(name: &str) -> EndpointId {
    EndpointId::from(name)
}

/// Endpoint `name` at 10.0.0.<n>:8080, `n` its position among the test's endpoints.
fn endpoint(n: usize, name: &str, weight: u32) -> Endpoint {
    Endpoint {
        id: id(name),
        address: SocketAddr::from((Ipv4Addr::new(10, 0, 0, n as u8 + 1), 8080)),
        weight,
        locality: None,
    }
}

const NAMES: [&str; 10] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];

fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
    weights
        .iter()
        .enumerate()
        .map(|(n, w)| endpoint(n, NAMES[n], *w))
        .collect()
}

/// Outlier detection that may eject every endpoint, so thresholds and times can be tested on small sets.
fn eject_all() -> OutlierConfig {
    OutlierConfig {
        max_ejection_percent: 100,
        ..OutlierConfig::default()
    }
}

fn balancer(algorithm: Algorithm, outlier: OutlierConfig, weights: &[u32]) -> Balancer {
    Balancer::new(algorithm, outlier, endpoints(weights))
}

/// How many of `picks` went to each endpoint, in endpoint order.
fn counts(balancer: &mut Balancer, picks: usize, now: Instant, seeded: &mut Seeded) -> Vec<usize> {
    let mut counts = vec![0; balancer.endpoints().count()];
    for _ in 0..picks {
        let chosen = balancer.pick(now, seeded.next()).expect("an endpoint to be chosen");
        let position = balancer.endpoints().position(|e| e.id == chosen).unwrap();
        counts[position] += 1;
    }
    counts
}

/// Feeds `times` copies of `outcome` for `name` into `balancer`.
fn fail(balancer: &mut Balancer, name: &str, outcome: Outcome, times: usize, now: Instant) -> Option<Ejection> {
    let mut last = None;
    for _ in 0..times {
        balancer.started(&id(name));
        last = balancer.finished(&id(name), outcome, now).or(last);
    }
    last
}

// === Sample ===

#[test]
fn sample_below_maps_the_whole_range_onto_the_bound() {
    let cases: [(u64, u64, u64); 6] = [
        (0, 10, 0),
        (u64::MAX, 10, 9),
        (1 << 63, 10, 5),
        (u64::MAX, 1, 0),
        (12345, 0, 0),
        (u64::MAX, u64::MAX, u64::MAX - 1),
    ];
    for (value, bound, expected) in cases {
        assert_eq!(Sample(value).below(bound), expected, "Sample({value}).below({bound})");
    }
    assert_ne!(
        Sample(7).derive(),
        Sample(7),
        "a derived sample differs from its source"
    );
}

// === Round robin ===

#[test]
fn round_robin_serves_each_endpoint_its_weight_share() {
    let cases: [(&[u32], usize, &[usize]); 6] = [
        (&[1, 1, 1], 9, &[3, 3, 3]),
        (&[5, 1, 1], 7, &[5, 1, 1]),
        (&[9, 1], 100, &[90, 10]),
        (&[2, 3], 50, &[20, 30]),
        (&[3, 0, 1], 8, &[6, 0, 2]),
        (&[100, 1], 303, &[300, 3]),
    ];
    let now = Instant::now();
    for (weights, picks, expected) in cases {
        let mut balancer = balancer(Algorithm::RoundRobin, OutlierConfig::disabled(), weights);
        let got = counts(&mut balancer, picks, now, &mut Seeded(1));
        assert_eq!(got, expected, "weights {weights:?} over {picks} picks");
    }
}

#[test]
fn round_robin_interleaves_rather_than_bursts() {
    let mut balancer = balancer(Algorithm::RoundRobin, OutlierConfig::disabled(), &[5, 1, 1]);
    let now = Instant::now();
    let order: Vec<String> = (0..7)
        .map(|_| balancer.pick(now, Sample(0)).unwrap().to_string())
        .collect();
    assert_eq!(order, ["a", "a", "b", "a", "c", "a", "a"]);
}

#[test]
fn no_endpoint_to_choose() {
    let cases: [(Algorithm, &[u32]); 4] = [
        (Algorithm::RoundRobin, &[]),
        (Algorithm::LeastRequest, &[]),
        (Algorithm::RoundRobin, &[0, 0]),
        (Algorithm::LeastRequest, &[0]),
    ];
    for (algorithm, weights) in cases {
        let mut balancer = balancer(algorithm, OutlierConfig::default(), weights);
        assert_eq!(
            balancer.pick(Instant::now(), Sample(3)),
            None,
            "{algorithm:?} over weights {weights:?}"
        );
    }
}

// === Least request ===

#[test]
fn least_request_prefers_the_less_busy_of_two_choices() {
    // (weights, active requests per endpoint, the endpoint every sample must choose)
    let cases: [(&[u32], &[u32], &str); 4] = [
        (&[1, 1], &[3, 0], "b"),
        (&[1, 1], &[0, 1], "a"),
        // Per unit of weight: a carries 3/3, b 0/1.
        (&[3, 1], &[3, 0], "b"),
        // a carries 2/3, b 1/1.
        (&[3, 1], &[2, 1], "a"),
    ];
    let now = Instant::now();
    for (weights, active, expected) in cases {
        let mut balancer = balancer(Algorithm::LeastRequest, OutlierConfig::default(), weights);
        for (n, count) in active.iter().enumerate() {
            (0..*count).for_each(|_| balancer.started(&id(NAMES[n])));
        }
        let mut seeded = Seeded(7);
        for _ in 0..200 {
            let chosen = balancer.pick(now, seeded.next()).unwrap();
            assert_eq!(chosen.as_str(), expected, "weights {weights:?}, active {active:?}");
        }
    }
}

#[test]
fn least_request_never_chooses_the_busiest_and_favours_the_idle() {
    let mut balancer = balancer(Algorithm::LeastRequest, OutlierConfig::default(), &[1, 1, 1]);
    (0..5).for_each(|_| balancer.started(&id("a")));
    (0..2).for_each(|_| balancer.started(&id("c")));
    let got = counts(&mut balancer, 3000, Instant::now(), &mut Seeded(11));
    assert_eq!(
        got[0], 0,
        "the busiest endpoint loses every pair it is drawn in: {got:?}"
    );
    // b is idle: it wins every pair it is in (2 of 3 pairs); c wins only the pair (a, c).
    assert!(
        (1900..2100).contains(&got[1]),
        "the idle endpoint serves about 2/3: {got:?}"
    );
}

#[test]
fn least_request_shares_idle_endpoints_by_weight() {
    let cases: [(&[u32], &[usize]); 3] = [
        (&[1, 1], &[2000, 2000]),
        (&[3, 1], &[3000, 1000]),
        (&[1, 1, 2], &[1000, 1000, 2000]),
    ];
    for (weights, expected) in cases {
        let mut balancer = balancer(Algorithm::LeastRequest, OutlierConfig::default(), weights);
        let got = counts(&mut balancer, 4000, Instant::now(), &mut Seeded(5));
        for (got, expected) in got.iter().zip(expected) {
            let tolerance = expected / 10;
            assert!(
                got.abs_diff(*expected) <= tolerance,
                "weights {weights:?}: {got} not within 10% of {expected}"
            );
        }
    }
}

#[test]
fn active_counts_follow_started_and_finished() {
    let mut balancer = balancer(Algorithm::LeastRequest, OutlierConfig::default(), &[1, 1]);
    let now = Instant::now();
    balancer.started(&id("a"));
    balancer.started(&id("a"));
    balancer.finished(&id("a"), Outcome::Response(200), now);
    assert_eq!(balancer.active(&id("a")), 1);
    balancer.finished(&id("b"), Outcome::Response(200), now);
    assert_eq!(
        balancer.active(&id("b")),
        0,
        "finishing more than started never goes below 0"
    );
    balancer.started(&id("unknown"));
    assert_eq!(balancer.stats(now).active, 1, "an unknown endpoint is not counted");
}

// === Exclusion and updates ===

#[test]
fn pick_excluding_prefers_endpoints_not_tried() {
    // (algorithm, excluded, the endpoints that may be chosen)
    let cases: [(Algorithm, &[&str], &[&str]); 6] = [
        (Algorithm::RoundRobin, &["a"], &["b", "c"]),
        (Algorithm::LeastRequest, &["a"], &["b", "c"]),
        (Algorithm::RoundRobin, &["a", "b"], &["c"]),
        (Algorithm::LeastRequest, &["a", "c"], &["b"]),
        // Every endpoint was tried: any of them is better than none.
        (Algorithm::RoundRobin, &["a", "b", "c"], &["a", "b", "c"]),
        (Algorithm::LeastRequest, &["a", "b", "c"], &["a", "b", "c"]),
    ];
    let now = Instant::now();
    for (algorithm, excluded, allowed) in cases {
        let mut balancer = balancer(algorithm, OutlierConfig::default(), &[1, 1, 1]);
        let excluded: Vec<EndpointId> = excluded.iter().map(|n| id(n)).collect();
        let mut seeded = Seeded(3);
        for _ in 0..50 {
            let chosen = balancer.pick_excluding(now, seeded.next(), &excluded).unwrap();
            assert!(
                allowed.contains(&chosen.as_str()),
                "{algorithm:?} excluding {excluded:?} chose {chosen}"
            );
        }
    }
}

#[test]
fn update_keeps_the_state_of_endpoints_that_stay() {
    let now = Instant::now();
    let mut balancer = balancer(Algorithm::LeastRequest, eject_all(), &[1, 1]);
    balancer.started(&id("a"));
    assert!(fail(&mut balancer, "b", Outcome::Response(500), 5, now).is_some());

    let mut moved = endpoint(1, "b", 4);
    moved.address = SocketAddr::from((Ipv4Addr::new(10, 0, 9, 9), 8080));
    balancer.update(vec![
        endpoint(0, "a", 1),
        moved.clone(),
        endpoint(2, "c", 1),
        endpoint(3, "a", 7),
    ]);

    assert_eq!(balancer.active(&id("a")), 1, "a keeps its active request");
    assert!(balancer.outliers().is_ejected(&id("b"), now), "b stays ejected");
    assert_eq!(
        balancer.endpoint(&id("b")),
        Some(&moved),
        "b takes the updated address and weight"
    );
    assert_eq!(
        balancer.endpoint(&id("a")).map(|e| e.weight),
        Some(1),
        "the first of duplicate ids is kept"
    );
    assert_eq!(balancer.endpoints().count(), 3);

    balancer.update(vec![endpoint(2, "c", 1)]);
    assert_eq!(
        balancer.finished(&id("a"), Outcome::Response(500), now),
        None,
        "a removed endpoint is ignored"
    );
    assert_eq!(
        balancer.stats(now),
        BalancerStats {
            endpoints: 1,
            ejected: 0,
            active: 0,
            panic: false
        }
    );
    balancer.update(vec![endpoint(1, "b", 1)]);
    assert!(
        !balancer.outliers().is_ejected(&id("b"), now),
        "an endpoint that comes back starts fresh"
    );
}

// === Outlier detection ===

#[test]
fn ejection_after_consecutive_failures() {
    use EjectionReason::*;
    use Outcome::*;
    let gateway3 = OutlierConfig {
        consecutive_gateway_errors: 3,
        ..eject_all()
    };
    // (config, outcomes in order, the ejection the last one causes)
    let cases: Vec<(OutlierConfig, Vec<Outcome>, Option<EjectionReason>)> = vec![
        (eject_all(), vec![Response(500); 4], None),
        (eject_all(), vec![Response(500); 5], Some(Consecutive5xx)),
        (
            eject_all(),
            vec![
                Response(503),
                Response(501),
                Response(500),
                Response(599),
                Response(502),
            ],
            Some(Consecutive5xx),
        ),
        (
            eject_all(),
            vec![
                Response(500),
                Response(500),
                Response(200),
                Response(500),
                Response(500),
                Response(500),
            ],
            None,
        ),
        (
            eject_all(),
            vec![
                Response(500),
                Response(500),
                Response(404),
                Response(500),
                Response(500),
                Response(500),
            ],
            None,
        ),
        (
            eject_all(),
            vec![
                Response(500),
                Response(500),
                Cancelled,
                Response(500),
                Response(500),
                Response(500),
            ],
            Some(Consecutive5xx),
        ),
        (
            eject_all(),
            vec![ConnectFailure, Reset, RefusedStream, Timeout, ConnectFailure],
            Some(Consecutive5xx),
        ),
        (eject_all(), vec![Response(404); 20], None),
        (eject_all(), vec![Response(503); 3], None),
        (
            gateway3.clone(),
            vec![Response(502), Response(503), Response(504)],
            Some(ConsecutiveGatewayErrors),
        ),
        (
            gateway3.clone(),
            vec![Reset, Timeout, RefusedStream],
            Some(ConsecutiveGatewayErrors),
        ),
        (
            gateway3.clone(),
            vec![Response(502), Response(500), Response(503), Response(504)],
            None,
        ),
        (
            gateway3.clone(),
            vec![
                Response(502),
                Response(500),
                Response(503),
                Response(504),
                Response(500),
            ],
            Some(Consecutive5xx),
        ),
        (OutlierConfig::disabled(), vec![Response(500); 50], None),
    ];
    let now = Instant::now();
    for (config, outcomes, expected) in cases {
        let mut detector = OutlierDetector::new(config.clone());
        detector.update([&id("a"), &id("b")]);
        let results: Vec<Option<Ejection>> = outcomes.iter().map(|o| detector.record(&id("a"), *o, now)).collect();
        let (last, earlier) = results.split_last().unwrap();
        assert!(
            earlier.iter().all(Option::is_none),
            "{outcomes:?}: ejected before the last outcome"
        );
        assert_eq!(
            last.as_ref().map(|e| e.reason),
            expected,
            "{outcomes:?} under {config:?}"
        );
        assert_eq!(detector.is_ejected(&id("a"), now), expected.is_some(), "{outcomes:?}");
        assert!(!detector.is_ejected(&id("b"), now), "another endpoint is untouched");
    }
}

#[test]
fn ejection_time_grows_with_each_ejection_and_ends() {
    let t0 = Instant::now();
    let secs = |s: u64| Duration::from_secs(s);
    let mut detector = OutlierDetector::new(eject_all());
    detector.update([&id("a"), &id("b")]);
    let mut eject_at = |now: Instant| {
        (0..5)
            .filter_map(|_| detector.record(&id("a"), Outcome::Response(500), now))
            .last()
            .map(|e| (e.until - now, e.multiplier))
    };
    // Back to back, each ejection lasts 30 s longer, up to max_ejection_time (300 s), where it stays.
    let mut now = t0;
    let mut durations = Vec::new();
    for _ in 0..12 {
        let (duration, _) = eject_at(now).expect("an ejection");
        durations.push(duration.as_secs());
        now += duration;
    }
    assert_eq!(durations, [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]);

    // Each 10 s interval back in service takes one off the multiplier (10 at the cap): 35 s take three.
    now += secs(35);
    assert_eq!(eject_at(now), Some((secs(240), 8)));
    now += secs(240) + secs(1000);
    assert_eq!(
        eject_at(now),
        Some((secs(30), 1)),
        "long good service resets the multiplier"
    );
}

#[test]
fn ejected_endpoint_returns_when_its_time_has_passed() {
    let t0 = Instant::now();
    let mut balancer = balancer(Algorithm::RoundRobin, eject_all(), &[1, 1, 1]);
    let ejection = fail(&mut balancer, "a", Outcome::Response(503), 5, t0).expect("a is ejected");
    assert_eq!(ejection.until, t0 + Duration::from_secs(30));
    // (time after the ejection, whether a may be chosen)
    let cases = [
        (0, false),
        (1_000, false),
        (29_999, false),
        (30_000, true),
        (45_000, true),
    ];
    for (ms, serves) in cases {
        let now = t0 + Duration::from_millis(ms);
        let got = counts(&mut balancer, 30, now, &mut Seeded(2));
        assert_eq!(got[0] > 0, serves, "at +{ms} ms: {got:?}");
        assert_eq!(balancer.outliers().ejected_count(now), usize::from(!serves));
    }
    // Failures while ejected (in-flight requests) are not counted: a returns with clean runs.
    assert_eq!(
        fail(
            &mut balancer,
            "a",
            Outcome::Response(503),
            5,
            t0 + Duration::from_secs(1)
        ),
        None
    );
    assert_eq!(
        fail(
            &mut balancer,
            "a",
            Outcome::Response(503),
            4,
            t0 + Duration::from_secs(31)
        ),
        None
    );
    assert!(
        fail(
            &mut balancer,
            "a",
            Outcome::Response(503),
            1,
            t0 + Duration::from_secs(31)
        )
        .is_some()
    );
}

#[test]
fn max_ejection_percent_bounds_the_ejected_share() {
    // (endpoints, max_ejection_percent, always_eject_one, endpoints failing, how many end up ejected)
    let cases: [(usize, u8, bool, usize, usize); 8] = [
        (10, 30, false, 5, 3),
        (10, 10, false, 3, 1),
        (4, 50, false, 4, 2),
        (3, 100, false, 3, 3),
        (3, 200, false, 3, 3),
        // Istio's defaults on a small backend: nothing is ever ejected.
        (2, 10, false, 2, 0),
        (2, 10, true, 2, 1),
        (5, 0, true, 5, 1),
    ];
    let now = Instant::now();
    for (total, percent, always_eject_one, failing, expected) in cases {
        let config = OutlierConfig {
            max_ejection_percent: percent,
            always_eject_one,
            ..OutlierConfig::default()
        };
        let mut balancer = balancer(Algorithm::RoundRobin, config, &vec![1; total]);
        for name in &NAMES[..failing] {
            fail(&mut balancer, name, Outcome::Response(500), 5, now);
        }
        let ejected = balancer.outliers().ejected_count(now);
        assert_eq!(
            ejected, expected,
            "{failing} of {total} failing, max {percent}%, always one {always_eject_one}"
        );
    }
}

#[test]
fn refused_ejection_happens_at_a_later_failure_once_there_is_room() {
    let t0 = Instant::now();
    let config = OutlierConfig {
        max_ejection_percent: 50,
        ..OutlierConfig::default()
    };
    let mut balancer = balancer(Algorithm::RoundRobin, config, &[1, 1]);
    assert!(fail(&mut balancer, "a", Outcome::Response(500), 5, t0).is_some());
    assert_eq!(
        fail(&mut balancer, "b", Outcome::Response(500), 5, t0),
        None,
        "no room while a is ejected"
    );
    let later = t0 + Duration::from_secs(30);
    let ejection = fail(&mut balancer, "b", Outcome::Response(500), 1, later).expect("b is ejected once a is back");
    assert_eq!(ejection.id, id("b"));
}

#[test]
fn all_ejected_means_all_serve() {
    let t0 = Instant::now();
    for algorithm in [Algorithm::RoundRobin, Algorithm::LeastRequest] {
        let mut balancer = balancer(algorithm, eject_all(), &[1, 1, 0]);
        fail(&mut balancer, "a", Outcome::ConnectFailure, 5, t0);
        assert_eq!(
            counts(&mut balancer, 20, t0, &mut Seeded(4)),
            [0, 20, 0],
            "{algorithm:?}: b serves alone"
        );
        assert!(!balancer.stats(t0).panic);

        fail(&mut balancer, "b", Outcome::ConnectFailure, 5, t0);
        let got = counts(&mut balancer, 20, t0, &mut Seeded(4));
        assert!(
            got[0] > 0 && got[1] > 0 && got[2] == 0,
            "{algorithm:?} in panic mode: {got:?}"
        );
        let stats = balancer.stats(t0);
        assert_eq!((stats.ejected, stats.panic), (2, true), "{algorithm:?}");
        assert!(
            !balancer.stats(t0 + Duration::from_secs(30)).panic,
            "{algorithm:?}: panic ends with the ejections"
        );
    }
}

// === Retries ===

#[test]
fn retriable_outcomes() {
    use Outcome::*;
    let istio = RetryPolicy::default();
    let gateway = RetryPolicy::gateway(&[500, 502], Some(3), None);
    let gateway_default_codes = RetryPolicy::gateway(&[], None, None);
    let cases: [(&RetryPolicy, Outcome, bool); 16] = [
        (&istio, Response(503), true),
        (&istio, Response(500), false),
        (&istio, Response(504), false),
        (&istio, Response(200), false),
        (&istio, Response(429), false),
        (&istio, ConnectFailure, true),
        (&istio, Reset, true),
        (&istio, RefusedStream, true),
        (&istio, Timeout, true),
        (&istio, Cancelled, false),
        (&gateway, Response(500), true),
        (&gateway, Response(502), true),
        (&gateway, Response(503), false),
        (&gateway, ConnectFailure, true),
        (&gateway, Reset, true),
        (&gateway_default_codes, Response(503), true),
    ];
    for (policy, outcome, retriable) in cases {
        assert_eq!(
            policy.is_retriable(outcome),
            retriable,
            "{outcome:?} under {:?}",
            policy.retry_on
        );
        let decision = policy.next(outcome, 1, Sample(0));
        assert_eq!(
            matches!(decision, RetryDecision::RetryAfter(_)),
            retriable,
            "{outcome:?}: {decision:?}"
        );
    }
}

#[test]
fn retries_stop_after_the_allowed_attempts() {
    // (policy, the attempt that just ended, whether it is retried)
    let cases = [
        (RetryPolicy::default(), 1, true),
        (RetryPolicy::default(), 2, true),
        (RetryPolicy::default(), 3, false),
        (RetryPolicy::none(), 1, false),
        (RetryPolicy::gateway(&[503], Some(5), None), 5, true),
        (RetryPolicy::gateway(&[503], Some(5), None), 6, false),
    ];
    for (policy, attempt, retried) in cases {
        let decision = policy.next(Outcome::Response(503), attempt, Sample(1 << 63));
        assert_eq!(
            matches!(decision, RetryDecision::RetryAfter(_)),
            retried,
            "attempt {attempt} of {policy:?}"
        );
    }
}

#[test]
fn backoff_stays_within_its_schedule() {
    let ms = Duration::from_millis;
    // (backoff, retry number, lowest wait, the ceiling no wait reaches)
    let cases = [
        (Backoff::default(), 1, ms(0), ms(25)),
        (Backoff::default(), 2, ms(0), ms(50)),
        (Backoff::default(), 3, ms(0), ms(100)),
        (Backoff::default(), 4, ms(0), ms(200)),
        (Backoff::default(), 5, ms(0), ms(250)),
        (Backoff::default(), 40, ms(0), ms(250)),
        (Backoff::default(), u32::MAX, ms(0), ms(250)),
        (Backoff::at_least(ms(100)), 2, ms(100), ms(200)),
        (Backoff::at_least(ms(100)), 9, ms(100), ms(1000)),
    ];
    for (backoff, retry, lowest, ceiling) in cases {
        assert_eq!(
            backoff.ceiling(retry),
            ceiling,
            "ceiling of retry {retry} under {backoff:?}"
        );
        assert_eq!(
            backoff.delay(retry, Sample(0)),
            lowest,
            "retry {retry}: the smallest sample waits the least"
        );
        let top = backoff.delay(retry, Sample(u64::MAX));
        assert!(
            top < ceiling && ceiling - top <= Duration::from_nanos(1),
            "retry {retry}: {top:?} just below {ceiling:?}"
        );
        let mut seeded = Seeded(9);
        for _ in 0..500 {
            let delay = backoff.delay(retry, seeded.next());
            assert!(
                lowest <= delay && delay < ceiling,
                "retry {retry}: {delay:?} outside {lowest:?}..{ceiling:?}"
            );
        }
    }
    // Gateway API's backoff is a minimum: the first retry waits exactly that long.
    let minimum = Backoff::at_least(ms(100));
    assert_eq!(minimum.delay(1, Sample(u64::MAX)), ms(100));
    let above_max = Backoff {
        min: ms(400),
        ..Backoff::default()
    };
    assert_eq!(
        above_max.delay(3, Sample(u64::MAX)),
        ms(400),
        "the minimum wins over max"
    );
}

#[test]
fn retry_state_counts_attempts_and_remembers_endpoints() {
    let policy = RetryPolicy::default();
    let mut state = RetryState::new();
    let sample = Sample(1 << 62);
    let first = state.finished(&policy, id("a"), Outcome::Response(503), sample);
    assert_eq!(first, RetryDecision::RetryAfter(policy.backoff.delay(1, sample)));
    let second = state.finished(&policy, id("a"), Outcome::Reset, sample);
    assert_eq!(second, RetryDecision::RetryAfter(policy.backoff.delay(2, sample)));
    assert_eq!(
        state.finished(&policy, id("b"), Outcome::Response(503), sample),
        RetryDecision::GiveUp
    );
    assert_eq!((state.attempts(), state.tried()), (3, &[id("a"), id("b")][..]));
}

// === Simulation ===

/// One simulated backend endpoint: answers 503 to `failing_per_mille` of its requests.
struct Simulated {
    weight: u32,
    failing_per_mille: u64,
}

/// Sends `requests` sequential requests (10 ms apart) through a balancer and retries as `policy` says, each
/// endpoint failing at its rate by the seeded samples; returns the share of requests that finally succeeded.
fn success_ratio(algorithm: Algorithm, backends: &[Simulated], policy: &RetryPolicy, requests: usize) -> f64 {
    let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
    let mut balancer = balancer(algorithm, OutlierConfig::default(), &weights);
    let mut seeded = Seeded(42);
    let mut now = Instant::now();
    let mut succeeded = 0;
    for _ in 0..requests {
        let mut state = RetryState::new();
        loop {
            let chosen = balancer.pick_excluding(now, seeded.next(), state.tried()).unwrap();
            let backend = &backends[balancer.endpoints().position(|e| e.id == chosen).unwrap()];
            balancer.started(&chosen);
            let fails = seeded.next().below(1000) < backend.failing_per_mille;
            let outcome = Outcome::Response(if fails { 503 } else { 200 });
            balancer.finished(&chosen, outcome, now);
            match state.finished(policy, chosen, outcome, seeded.next()) {
                RetryDecision::RetryAfter(wait) => now += wait,
                RetryDecision::GiveUp => {
                    succeeded += usize::from(!fails);
                    break;
                }
            }
        }
        now += Duration::from_millis(10);
    }
    succeeded as f64 / requests as f64
}

#[test]
fn retries_turn_a_half_failing_backend_into_near_total_success() {
    let healthy = || Simulated {
        weight: 1,
        failing_per_mille: 0,
    };
    let half = || Simulated {
        weight: 1,
        failing_per_mille: 500,
    };
    let retries = RetryPolicy::default();
    let many = RetryPolicy::gateway(&[503], Some(7), None);
    // (algorithm, endpoints, policy, the range the success ratio must fall in)
    let cases = [
        (Algorithm::LeastRequest, vec![healthy(), half()], &retries, 0.99..=1.0),
        (Algorithm::RoundRobin, vec![healthy(), half()], &retries, 0.99..=1.0),
        // Without retries a quarter of the requests fail: the retries above are what made the difference.
        (
            Algorithm::LeastRequest,
            vec![healthy(), half()],
            &RetryPolicy::none(),
            0.70..=0.80,
        ),
        // Alone, the half-failing endpoint is retried itself: 1 - 1/2^3 with 2 retries, 1 - 1/2^8 with 7.
        (Algorithm::RoundRobin, vec![half()], &retries, 0.85..=0.90),
        (Algorithm::RoundRobin, vec![half()], &many, 0.99..=1.0),
    ];
    for (algorithm, backends, policy, range) in cases {
        let ratio = success_ratio(algorithm, &backends, policy, 2000);
        assert!(
            range.contains(&ratio),
            "{algorithm:?}, {} endpoints, {policy:?}: {ratio}",
            backends.len()
        );
    }
}

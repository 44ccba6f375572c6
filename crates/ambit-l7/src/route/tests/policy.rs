//! Policy values: Gateway API durations and percentages, timeouts, retries, and the fault annotations, with
//! problems naming the field or annotation.

use std::time::Duration;

use http::StatusCode;

use super::super::policy::{Share, duration, percent};
use super::super::{
    DEFAULT_RETRY_ATTEMPTS, FAULT_ABORT_PERCENT, FAULT_ABORT_STATUS, FAULT_DELAY, FAULT_DELAY_PERCENT, Fault,
    RetryPolicy, Timeouts,
};
use super::*;

#[test]
fn durations() {
    let ms = Duration::from_millis;
    let cases = [
        ("1s", Ok(ms(1000))),
        ("500ms", Ok(ms(500))),
        ("0s", Ok(ms(0))),
        ("1h30m", Ok(ms(5_400_000))),
        ("1h2m3s4ms", Ok(ms(3_723_004))),
        ("99999ms", Ok(ms(99_999))),
        ("", Err(())),
        ("1", Err(())),
        ("s", Err(())),
        ("1d", Err(())),
        ("1.5s", Err(())),
        ("-1s", Err(())),
        ("100000s", Err(())),
        ("1s ", Err(())),
        ("1h1m1s1ms1ms", Err(())),
    ];
    for (text, expected) in cases {
        assert_eq!(duration(text).map_err(drop), expected, "{text:?}");
    }
    let error = duration("1d").expect_err("not a duration");
    assert!(error.starts_with("\"1d\" is not a Gateway API duration"), "{error}");
}

#[test]
fn percentages() {
    let share = |numerator| Share::new(numerator, 1_000_000).ok_or(());
    let cases = [
        ("0", share(0)),
        ("5", share(50_000)),
        ("12.5", share(125_000)),
        ("0.0001", share(1)),
        ("100", share(1_000_000)),
        ("100.0", share(1_000_000)),
        ("007", share(70_000)),
        ("", Err(())),
        ("101", Err(())),
        ("100.0001", Err(())),
        ("-1", Err(())),
        ("1.", Err(())),
        (".5", Err(())),
        ("1.23456", Err(())),
        ("5%", Err(())),
        ("1000", Err(())),
        ("abc", Err(())),
    ];
    for (text, expected) in cases {
        assert_eq!(percent(text).map_err(drop), expected, "{text:?}");
    }
}

#[test]
fn shares_admit_exactly_their_part_of_the_samples() {
    let quarter = Share::new(1, 4).expect("a share");
    let boundary = 1u32 << 30;
    let cases = [
        (quarter, 0, true),
        (quarter, boundary - 1, true),
        (quarter, boundary, false),
        (quarter, u32::MAX, false),
        (Share::ALL, u32::MAX, true),
        (Share::new(0, 7).expect("a share"), 0, false),
        (Share::new(7, 7).expect("a share"), u32::MAX, true),
    ];
    for (share, sample, expected) in cases {
        assert_eq!(share.admits(sample), expected, "{share:?} {sample}");
    }
    assert_eq!((Share::new(2, 1), Share::new(0, 0)), (None, None));
}

#[test]
fn timeouts() {
    let secs = |seconds| Some(Duration::from_secs(seconds));
    let cases = [
        ("{request: 10s, backendRequest: 2s}", secs(10), secs(2), vec![]),
        ("{request: 10s}", secs(10), None, vec![]),
        (
            "{backendRequest: 500ms}",
            None,
            Some(Duration::from_millis(500)),
            vec![],
        ),
        ("{request: 0s, backendRequest: 0s}", None, None, vec![]),
        ("{}", None, None, vec![]),
        (
            "{request: '10', backendRequest: 1s}",
            None,
            secs(1),
            vec!["spec.rules[0].timeouts.request"],
        ),
        (
            "{request: 1s, backendRequest: 1x}",
            secs(1),
            None,
            vec!["spec.rules[0].timeouts.backendRequest"],
        ),
    ];
    for (timeouts, request, backend_request, problems) in cases {
        let (table, found) = compile(&[route("r", &format!("- timeouts: {timeouts}"))]);
        assert_eq!(fields(&found), problems, "{timeouts}");
        let expected = Timeouts {
            request,
            backend_request,
        };
        assert_eq!(forward(&table, &Request::get("/")).timeouts, expected, "{timeouts}");
    }
}

#[test]
fn retries() {
    let status = |code| StatusCode::from_u16(code).expect("a status");
    let policy = |attempts, codes: &[u16], backoff| RetryPolicy {
        attempts,
        codes: codes.iter().map(|code| status(*code)).collect(),
        backoff,
    };
    let ms = |millis| Some(Duration::from_millis(millis));
    let cases = [
        ("", None, vec![]),
        ("  retry: {}", Some(policy(DEFAULT_RETRY_ATTEMPTS, &[], None)), vec![]),
        ("  retry: {attempts: 0}", Some(policy(0, &[], None)), vec![]),
        (
            "  retry: {attempts: 3, codes: [503, 502, 503], backoff: 100ms}",
            Some(policy(3, &[503, 502], ms(100))),
            vec![],
        ),
        (
            "  retry: {codes: [500, 600, 399], backoff: soon}",
            Some(policy(DEFAULT_RETRY_ATTEMPTS, &[500], None)),
            vec![
                "spec.rules[0].retry.codes[1]",
                "spec.rules[0].retry.codes[2]",
                "spec.rules[0].retry.backoff",
            ],
        ),
        (
            "  retry: {attempts: -1}",
            Some(policy(0, &[], None)),
            vec!["spec.rules[0].retry.attempts"],
        ),
    ];
    for (retry, expected, problems) in cases {
        let (table, found) = compile(&[route("r", &format!("- backendRefs: [{{name: a, port: 80}}]\n{retry}"))]);
        assert_eq!(fields(&found), problems, "{retry}");
        assert_eq!(forward(&table, &Request::get("/")).retry, expected.as_ref(), "{retry}");
    }
}

/// Annotations as (name, value) pairs.
type Annotations = &'static [(&'static str, &'static str)];

/// Fault annotations: (annotations, the faults every request gets, problems by annotation).
#[test]
fn fault_annotations() {
    let ms = |millis| Some(Duration::from_millis(millis));
    let status = |code| Some(StatusCode::from_u16(code).expect("a status"));
    let fault = |delay, abort| Fault { delay, abort };
    let cases: [(Annotations, Fault, Vec<&str>); 12] = [
        (&[], fault(None, None), vec![]),
        (&[(FAULT_DELAY, "250ms")], fault(ms(250), None), vec![]),
        (
            &[(FAULT_DELAY, "1s"), (FAULT_DELAY_PERCENT, "100")],
            fault(ms(1000), None),
            vec![],
        ),
        (&[(FAULT_ABORT_STATUS, "503")], fault(None, status(503)), vec![]),
        (
            &[
                (FAULT_DELAY, "2s"),
                (FAULT_ABORT_STATUS, "429"),
                (FAULT_ABORT_PERCENT, "100"),
            ],
            fault(ms(2000), status(429)),
            vec![],
        ),
        (
            &[(FAULT_DELAY, "1s"), (FAULT_DELAY_PERCENT, "0")],
            fault(None, None),
            vec![],
        ),
        (&[(FAULT_DELAY, "soon")], fault(None, None), vec![FAULT_DELAY]),
        (
            &[(FAULT_DELAY, "1s"), (FAULT_DELAY_PERCENT, "half")],
            fault(None, None),
            vec![FAULT_DELAY_PERCENT],
        ),
        (
            &[(FAULT_ABORT_STATUS, "600"), (FAULT_DELAY, "1s")],
            fault(ms(1000), None),
            vec![FAULT_ABORT_STATUS],
        ),
        (
            &[(FAULT_ABORT_STATUS, "ok")],
            fault(None, None),
            vec![FAULT_ABORT_STATUS],
        ),
        (
            &[(FAULT_ABORT_PERCENT, "50")],
            fault(None, None),
            vec![FAULT_ABORT_PERCENT],
        ),
        (
            &[("fault.ambit.dev/abort", "503"), ("other.example/abort", "x")],
            fault(None, None),
            vec!["fault.ambit.dev/abort"],
        ),
    ];
    for (annotations, expected, problems) in cases {
        let lines: String = (annotations.iter())
            .map(|(name, value)| format!("  {name}: '{value}'\n"))
            .collect();
        let metadata = if lines.is_empty() {
            String::new()
        } else {
            format!("annotations:\n{lines}")
        };
        let route = http(&route_yaml("r", &metadata, "- backendRefs: [{name: a, port: 80}]"));
        let (table, found) = compile(&[route]);
        let expected_fields: Vec<String> = problems
            .iter()
            .map(|name| format!("metadata.annotations[{name:?}]"))
            .collect();
        assert_eq!(fields(&found), expected_fields, "{annotations:?}");
        assert_eq!(forward(&table, &Request::get("/")).fault, expected, "{annotations:?}");
    }
}

#[test]
fn fault_problems_say_what_is_wrong_and_what_happens() {
    let metadata = format!("annotations:\n  {FAULT_DELAY}: soon\n  {FAULT_ABORT_PERCENT}: '5'");
    let (_, problems) = compile(&[http(&route_yaml(
        "r",
        &metadata,
        "- backendRefs: [{name: a, port: 80}]",
    ))]);
    let messages: Vec<String> = problems.iter().map(|problem| problem.to_string()).collect();
    assert_eq!(
        messages,
        [
            "HTTPRoute shop/r: metadata.annotations[\"fault.ambit.dev/delay\"]: \"soon\" is not a Gateway API \
             duration: write 1 to 4 parts of 1 to 5 digits and a unit h, m, s or ms (`1h30m`, `500ms`); the fault \
             is not injected",
            "HTTPRoute shop/r: metadata.annotations[\"fault.ambit.dev/abort-percent\"]: has no effect without \
             fault.ambit.dev/abort-status",
        ]
    );
}

#[test]
fn faults_apply_to_every_rule_of_the_route_and_not_to_redirects() {
    let metadata = format!("annotations:\n  {FAULT_ABORT_STATUS}: '503'");
    let rules = "
        - matches: [{path: {value: /a}}]
          backendRefs: [{name: a, port: 80}]
        - matches: [{path: {value: /b}}]
        - matches: [{path: {value: /c}}]
          filters: [{type: RequestRedirect, requestRedirect: {hostname: c.example}}]
    ";
    let table = table(&[http(&route_yaml("r", &metadata, rules))]);
    let aborted = Some(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(forward(&table, &Request::get("/a")).fault.abort, aborted);
    assert_eq!(forward(&table, &Request::get("/b")).fault.abort, aborted);
    assert!(matches!(
        decide(&table, &Request::get("/c"), 0),
        Decision::Redirect { .. }
    ));
}

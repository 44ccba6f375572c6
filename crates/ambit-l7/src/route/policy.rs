//! The policy values of a rule, read from the route: Gateway API durations, timeouts and retries, shares of
//! requests (mirror percentages and fractions), and ambit's fault injection annotations. Each reader returns the
//! value it could read and the problems, as (field, message), of what it could not.

use std::collections::BTreeMap;
use std::time::Duration;

use ambit_config::gateway::{Fraction, HttpRouteRetry, HttpRouteTimeouts};
use http::StatusCode;

use super::{RetryPolicy, Timeouts};

/// Annotation: the delay to inject before forwarding, as a Gateway API duration (`500ms`, `1s`).
pub const FAULT_DELAY: &str = "fault.ambit.dev/delay";
/// Annotation: the percentage of requests delayed, 0 to 100 with up to 4 decimals; 100 when unset.
pub const FAULT_DELAY_PERCENT: &str = "fault.ambit.dev/delay-percent";
/// Annotation: the status to answer instead of forwarding, 200 to 599.
pub const FAULT_ABORT_STATUS: &str = "fault.ambit.dev/abort-status";
/// Annotation: the percentage of requests aborted, 0 to 100 with up to 4 decimals; 100 when unset.
pub const FAULT_ABORT_PERCENT: &str = "fault.ambit.dev/abort-percent";
/// Tries after the first when a rule's `retry` sets no `attempts` (Istio's default).
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

const FAULT_PREFIX: &str = "fault.ambit.dev/";
const FAULT_ANNOTATIONS: [&str; 4] = [
    FAULT_DELAY,
    FAULT_DELAY_PERCENT,
    FAULT_ABORT_STATUS,
    FAULT_ABORT_PERCENT,
];
const DURATION_FORMAT: &str =
    "is not a Gateway API duration: write 1 to 4 parts of 1 to 5 digits and a unit h, m, s or ms (`1h30m`, `500ms`)";
const PERCENT_FORMAT: &str = "is not a percentage: write a number from 0 to 100 with up to 4 decimals (`5`, `0.5`)";

/// (field, message): a problem found in one field of a route.
pub(super) type Finding = (String, String);

/// A share of requests: `numerator` out of `denominator` (at least 1, not below the numerator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Share {
    numerator: u32,
    denominator: u32,
}

/// The configured faults of a route; each applies to its share of requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FaultSpec {
    pub delay: Option<(Duration, Share)>,
    pub abort: Option<(StatusCode, Share)>,
}

// === impl Share ===

impl Share {
    /// Every request.
    pub const ALL: Share = Share {
        numerator: 1,
        denominator: 1,
    };

    /// `numerator / denominator`, if it is a share (0 to 1, with a positive denominator).
    pub fn new(numerator: u32, denominator: u32) -> Option<Share> {
        (denominator > 0 && numerator <= denominator).then_some(Share { numerator, denominator })
    }

    /// Whether a uniformly random `sample` falls in the share: exactly the share of all `u32` values does.
    pub fn admits(self, sample: u32) -> bool {
        u64::from(sample) * u64::from(self.denominator) < u64::from(self.numerator) << 32
    }
}

/// A Gateway API duration (GEP-2257): 1 to 4 parts of 1 to 5 digits with a unit `h`, `m`, `s` or `ms`.
pub(super) fn duration(value: &str) -> Result<Duration, String> {
    ambit_config::syntax::duration_ms(value)
        .map(Duration::from_millis)
        .map_err(|_| format!("{value:?} {DURATION_FORMAT}"))
}

/// A percentage with up to 4 decimals (`12.5`), as a share.
pub(super) fn percent(value: &str) -> Result<Share, String> {
    let error = || format!("{value:?} {PERCENT_FORMAT}");
    let (whole, decimals) = value.split_once('.').unwrap_or((value, ""));
    let digits = |text: &str| text.chars().all(|c| c.is_ascii_digit());
    let well_formed = (1..=3).contains(&whole.len())
        && digits(whole)
        && digits(decimals)
        && decimals.len() <= 4
        && (value.len() == whole.len() || !decimals.is_empty());
    if !well_formed {
        return Err(error());
    }
    let scaled = format!("{whole}{decimals:0<4}");
    let numerator: u32 = scaled.parse().map_err(|_| error())?;
    Share::new(numerator, 1_000_000).ok_or_else(error)
}

/// The share of requests a mirror copies: `percent`, or `fraction`, or all.
pub(super) fn mirror_share(percent: Option<i32>, fraction: Option<Fraction>, path: &str) -> Result<Share, Finding> {
    match (percent, fraction) {
        (Some(_), Some(_)) => Err((
            format!("{path}.fraction"),
            "must not be set together with percent".into(),
        )),
        (Some(percent), None) => u32::try_from(percent)
            .ok()
            .and_then(|percent| Share::new(percent, 100))
            .ok_or_else(|| {
                (
                    format!("{path}.percent"),
                    format!("{percent} is not a percentage from 0 to 100"),
                )
            }),
        (None, Some(fraction)) => {
            let denominator = fraction.denominator.unwrap_or(100);
            (u32::try_from(fraction.numerator).ok())
                .zip(u32::try_from(denominator).ok())
                .and_then(|(numerator, denominator)| Share::new(numerator, denominator))
                .ok_or_else(|| {
                    let message = format!(
                        "{}/{denominator} is not a fraction: use a numerator from 0 to a positive denominator",
                        fraction.numerator
                    );
                    (format!("{path}.fraction"), message)
                })
        }
        (None, None) => Ok(Share::ALL),
    }
}

/// A rule's timeouts; `0s` disables one. An unreadable value is left unset.
pub(super) fn timeouts(timeouts: Option<&HttpRouteTimeouts>, path: &str) -> (Timeouts, Vec<Finding>) {
    let Some(timeouts) = timeouts else {
        return (Timeouts::default(), Vec::new());
    };
    let mut findings = Vec::new();
    let mut read = |field: &str, value: Option<&String>| {
        let value = value?;
        duration(value)
            .map_err(|message| findings.push((format!("{path}.{field}"), format!("{message}; no timeout is set"))))
            .ok()
            .filter(|duration| !duration.is_zero())
    };
    let request = read("request", timeouts.request.as_ref());
    let backend_request = read("backendRequest", timeouts.backend_request.as_ref());
    (
        Timeouts {
            request,
            backend_request,
        },
        findings,
    )
}

/// A rule's retry policy. Codes out of 400 to 599 are dropped; unreadable attempts disable retries; an unreadable
/// backoff leaves the driver's default.
pub(super) fn retry(retry: Option<&HttpRouteRetry>, path: &str) -> (Option<RetryPolicy>, Vec<Finding>) {
    let Some(retry) = retry else {
        return (None, Vec::new());
    };
    let mut findings = Vec::new();
    let mut codes = Vec::new();
    for (k, code) in retry.codes.iter().enumerate() {
        let status = (u16::try_from(*code).ok())
            .filter(|code| (400..=599).contains(code))
            .and_then(|code| StatusCode::from_u16(code).ok());
        match status {
            Some(status) if !codes.contains(&status) => codes.push(status),
            Some(_) => {}
            None => findings.push((
                format!("{path}.codes[{k}]"),
                format!("{code} is not a status from 400 to 599; it is not retried"),
            )),
        }
    }
    let attempts = match retry.attempts.map(u32::try_from) {
        None => DEFAULT_RETRY_ATTEMPTS,
        Some(Ok(attempts)) => attempts,
        Some(Err(_)) => {
            let message = format!(
                "{} is negative; retries are disabled",
                retry.attempts.unwrap_or_default()
            );
            findings.push((format!("{path}.attempts"), message));
            0
        }
    };
    let backoff = (retry.backoff.as_ref()).and_then(|backoff| {
        duration(backoff)
            .map_err(|message| findings.push((format!("{path}.backoff"), format!("{message}; the default applies"))))
            .ok()
    });
    let policy = RetryPolicy {
        attempts,
        codes,
        backoff,
    };
    (Some(policy), findings)
}

/// The fault injection a route's annotations ask for. A fault with an unreadable value or percentage is not
/// injected; a percentage without its fault, or an unknown annotation under `fault.ambit.dev/` (likely misspelt),
/// is reported.
pub(super) fn fault(annotations: &BTreeMap<String, String>) -> (Option<FaultSpec>, Vec<Finding>) {
    let mut findings = Vec::new();
    for name in (annotations.keys()).filter(|name| name.starts_with(FAULT_PREFIX)) {
        if !FAULT_ANNOTATIONS.contains(&name.as_str()) {
            let known = FAULT_ANNOTATIONS.join(", ");
            findings.push((
                annotation_field(name),
                format!("is not a fault annotation: use one of {known}"),
            ));
        }
    }
    let delay = annotation(annotations, FAULT_DELAY, duration, &mut findings);
    let delay_share = annotation(annotations, FAULT_DELAY_PERCENT, percent, &mut findings);
    let status = annotation(annotations, FAULT_ABORT_STATUS, abort_status, &mut findings);
    let abort_share = annotation(annotations, FAULT_ABORT_PERCENT, percent, &mut findings);
    for (share, base) in [
        (FAULT_DELAY_PERCENT, FAULT_DELAY),
        (FAULT_ABORT_PERCENT, FAULT_ABORT_STATUS),
    ] {
        if annotations.contains_key(share) && !annotations.contains_key(base) {
            findings.push((annotation_field(share), format!("has no effect without {base}")));
        }
    }
    let spec = FaultSpec {
        delay: with_share(delay, delay_share, annotations.contains_key(FAULT_DELAY_PERCENT)),
        abort: with_share(status, abort_share, annotations.contains_key(FAULT_ABORT_PERCENT)),
    };
    let spec = (spec.delay.is_some() || spec.abort.is_some()).then_some(spec);
    (spec, findings)
}

/// An annotation's value read by `parse`, if it is there; a problem if it does not read.
fn annotation<T>(
    annotations: &BTreeMap<String, String>,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    findings: &mut Vec<Finding>,
) -> Option<T> {
    let value = annotations.get(name)?;
    parse(value)
        .map_err(|message| findings.push((annotation_field(name), format!("{message}; the fault is not injected"))))
        .ok()
}

/// A fault with its share: all requests when no percentage is written, none when the written one does not read.
fn with_share<T>(fault: Option<T>, share: Option<Share>, share_written: bool) -> Option<(T, Share)> {
    match (fault, share, share_written) {
        (Some(fault), Some(share), _) => Some((fault, share)),
        (Some(fault), None, false) => Some((fault, Share::ALL)),
        _ => None,
    }
}

/// `metadata.annotations["name"]`.
fn annotation_field(name: &str) -> String {
    format!("metadata.annotations[{name:?}]")
}

/// An abort status: 200 to 599.
fn abort_status(value: &str) -> Result<StatusCode, String> {
    (value.parse::<u16>().ok())
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("{value:?} is not a status from 200 to 599"))
}

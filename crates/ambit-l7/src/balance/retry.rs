//! Whether a failed attempt is tried again, and after how long: retry conditions from Gateway API's HTTPRouteRetry
//! and Istio's defaults, and Envoy's jittered exponential backoff.

use std::time::Duration;

use super::{EndpointId, Outcome, Sample};

/// How a route retries. The default is Istio's for a route without retry settings: 2 retries on connect failure,
/// refused stream, reset or 503, Envoy's backoff, no per-try timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (Gateway API `attempts`); 0 never retries.
    pub attempts: u32,
    /// How long one attempt may take before it ends as [`Outcome::Timeout`]; the driver runs the timer.
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    pub backoff: Backoff,
}

/// The outcomes worth another attempt (Envoy's `retry_on`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryOn {
    /// Response statuses that are retried (Gateway API `codes`, Envoy's `retriable-status-codes`).
    pub codes: Vec<u16>,
    /// `connect-failure`: no connection could be made.
    pub connect_failure: bool,
    /// `refused-stream`: the endpoint refused the stream without processing the request.
    pub refused_stream: bool,
    /// `reset`: the connection or stream was reset before a response.
    pub reset: bool,
    /// The per-try timeout passed. On by default: a per-try timeout exists to be retried.
    pub timeout: bool,
}

/// Envoy's jittered exponential backoff between attempts: before retry `n` (1 for the first retry) the wait is
/// drawn uniformly from `min..ceiling`, where the ceiling is `base * 2^(n-1)` capped at `max` (full jitter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's ceiling. Envoy's default: 25 ms.
    pub base: Duration,
    /// No ceiling exceeds this. Envoy's default: 10 times `base`, 250 ms.
    pub max: Duration,
    /// No wait is shorter than this, even above `max` (Gateway API's `backoff` is such a minimum). Default: 0.
    pub min: Duration,
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then try again (preferably on an endpoint not tried yet).
    RetryAfter(Duration),
    /// Answer the downstream with this attempt's outcome: it succeeded, is not retriable, or the retries are spent.
    GiveUp,
}

/// The retry bookkeeping of one request: how many attempts ended and on which endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryState {
    attempts: u32,
    tried: Vec<EndpointId>,
}

// === impl RetryPolicy ===

impl RetryPolicy {
    /// One attempt only.
    pub fn none() -> Self {
        Self {
            attempts: 0,
            ..Self::default()
        }
    }

    /// The policy for a Gateway API `HTTPRouteRetry`: its `codes` (503 when empty), connection errors retried as
    /// Istio does, `attempts` retries (Istio's 2 when unset) and, when `backoff` is set, waits of at least that
    /// long that grow up to ten times it.
    pub fn gateway(codes: &[u16], attempts: Option<u32>, backoff: Option<Duration>) -> Self {
        let default = Self::default();
        let mut retry_on = RetryOn::default();
        if !codes.is_empty() {
            retry_on.codes = codes.to_vec();
        }
        Self {
            attempts: attempts.unwrap_or(default.attempts),
            retry_on,
            backoff: backoff.map_or(default.backoff, Backoff::at_least),
            ..default
        }
    }

    /// Whether `outcome` is worth another attempt under this policy, retries left or not.
    pub fn is_retriable(&self, outcome: Outcome) -> bool {
        self.retry_on.matches(outcome)
    }

    /// The decision after attempt number `attempt` (1 for the first) ended with `outcome`: retry when the outcome
    /// is retriable and fewer than `attempts` retries were made, after a backoff drawn with `sample`.
    pub fn next(&self, outcome: Outcome, attempt: u32, sample: Sample) -> RetryDecision {
        if !self.is_retriable(outcome) || attempt > self.attempts {
            return RetryDecision::GiveUp;
        }
        RetryDecision::RetryAfter(self.backoff.delay(attempt, sample))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            retry_on: RetryOn::default(),
            backoff: Backoff::default(),
        }
    }
}

// === impl RetryOn ===

impl RetryOn {
    /// Whether `outcome` is one of these conditions; [`Outcome::Cancelled`] never is.
    pub fn matches(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Response(status) => self.codes.contains(&status),
            Outcome::ConnectFailure => self.connect_failure,
            Outcome::RefusedStream => self.refused_stream,
            Outcome::Reset => self.reset,
            Outcome::Timeout => self.timeout,
            Outcome::Cancelled => false,
        }
    }
}

impl Default for RetryOn {
    /// Istio's default `retry_on`: `connect-failure,refused-stream,reset` and status 503.
    fn default() -> Self {
        Self {
            codes: vec![503],
            connect_failure: true,
            refused_stream: true,
            reset: true,
            timeout: true,
        }
    }
}

// === impl Backoff ===

impl Backoff {
    /// Waits of at least `min`, starting there and growing up to ten times it (Gateway API's `backoff`).
    pub fn at_least(min: Duration) -> Self {
        Self {
            base: min,
            max: min.saturating_mul(10),
            min,
        }
    }

    /// The wait before retry number `retry` (1 for the first; 0 counts as 1): `min` plus a `sample`-drawn share
    /// of `ceiling(retry) - min`.
    pub fn delay(&self, retry: u32, sample: Sample) -> Duration {
        let span = self.ceiling(retry).saturating_sub(self.min).as_nanos();
        let span = u64::try_from(span).unwrap_or(u64::MAX);
        self.min + Duration::from_nanos(sample.below(span))
    }

    /// The bound no wait before retry `retry` reaches (unless `min` is above it): `base * 2^(retry-1)`, at most
    /// `max`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

impl Default for Backoff {
    /// Envoy's: 25 ms base, 250 ms cap, no minimum.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
            min: Duration::ZERO,
        }
    }
}

// === impl RetryState ===

impl RetryState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts that have ended.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The endpoints tried so far, oldest first: pass them to [`super::Balancer::pick_excluding`].
    pub fn tried(&self) -> &[EndpointId] {
        &self.tried
    }

    /// Records that an attempt on `endpoint` ended with `outcome`, and decides what comes next under `policy`.
    pub fn finished(
        &mut self,
        policy: &RetryPolicy,
        endpoint: EndpointId,
        outcome: Outcome,
        sample: Sample,
    ) -> RetryDecision {
        self.attempts = self.attempts.saturating_add(1);
        if !self.tried.contains(&endpoint) {
            self.tried.push(endpoint);
        }
        policy.next(outcome, self.attempts, sample)
    }
}

//! Passive outlier detection: consecutive 5xx and gateway errors eject an endpoint for a while, as Envoy does for
//! Istio's DestinationRule `trafficPolicy.outlierDetection`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{EndpointId, Outcome};

/// When an endpoint is ejected and for how long. The defaults are Istio's for a DestinationRule that sets
/// `outlierDetection` (Istio runs no detection without one: use [`OutlierConfig::disabled`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierConfig {
    /// `consecutive5xxErrors`: 5xx responses in a row (local failures count as 503/504) that eject; 0 disables.
    /// Istio's default: 5.
    pub consecutive_5xx: u32,
    /// `consecutiveGatewayErrors`: 502, 503 or 504 responses (or connect failures, resets, refused streams,
    /// timeouts) in a row that eject; 0 disables. Istio's default: 0. It only matters below `consecutive_5xx`,
    /// since every gateway error is also a 5xx.
    pub consecutive_gateway_errors: u32,
    /// `baseEjectionTime`: an ejection lasts this times the endpoint's ejection multiplier. Istio's default: 30 s.
    pub base_ejection_time: Duration,
    /// Envoy's `max_ejection_time`, which caps an ejection (but never below `base_ejection_time`). Istio does not
    /// set it: Envoy's default, 300 s.
    pub max_ejection_time: Duration,
    /// `interval`: the multiplier of an endpoint drops by one for each interval it spends back in service. Istio's
    /// default: 10 s.
    pub interval: Duration,
    /// `maxEjectionPercent`: no ejection may bring the ejected share of endpoints above this (values above 100
    /// count as 100). Istio's default: 10.
    pub max_ejection_percent: u8,
    /// Envoy's `always_eject_one_host`: one endpoint may be ejected whatever `max_ejection_percent` says. Istio
    /// does not set it: false, so with the default 10% a backend of fewer than 10 endpoints ejects none.
    pub always_eject_one: bool,
}

/// Endpoints ejected for failing in a row, and the counts that lead there.
#[derive(Clone, Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    hosts: HashMap<EndpointId, Record>,
}

/// An ejection that just happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ejection {
    pub id: EndpointId,
    pub reason: EjectionReason,
    /// The endpoint serves again from this moment.
    pub until: Instant,
    /// The multiplier applied to `base_ejection_time` (1 the first time).
    pub multiplier: u32,
}

/// Which threshold an endpoint crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectionReason {
    Consecutive5xx,
    ConsecutiveGatewayErrors,
}

/// The detector's state for one endpoint.
#[derive(Clone, Debug, Default)]
struct Record {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    /// The end of the latest ejection, past or future.
    ejected_until: Option<Instant>,
    multiplier: u32,
}

// === impl OutlierConfig ===

impl OutlierConfig {
    /// No ejection ever: what Istio does for a service without `outlierDetection`.
    pub fn disabled() -> Self {
        Self {
            consecutive_5xx: 0,
            consecutive_gateway_errors: 0,
            ..Self::default()
        }
    }

    /// How long the ejection with this multiplier lasts.
    fn ejection_time(&self, multiplier: u32) -> Duration {
        let cap = self.max_ejection_time.max(self.base_ejection_time);
        self.base_ejection_time.saturating_mul(multiplier).min(cap)
    }

    /// The multiplier at which ejections reach `max_ejection_time`: it grows no further, so that an endpoint that
    /// recovers is trusted again after as many intervals as the cap took to reach (Envoy's rule).
    fn max_multiplier(&self) -> u32 {
        let cap = self.max_ejection_time.max(self.base_ejection_time).as_nanos();
        let steps = cap.div_ceil(self.base_ejection_time.as_nanos().max(1));
        u32::try_from(steps).unwrap_or(u32::MAX).max(1)
    }

    /// Whether one more endpoint may be ejected when `ejected` of `total` already are.
    fn has_room(&self, ejected: usize, total: usize) -> bool {
        let percent = u128::from(self.max_ejection_percent.min(100));
        let within = (ejected as u128 + 1) * 100 <= percent * total as u128;
        within || (self.always_eject_one && ejected == 0)
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 0,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            interval: Duration::from_secs(10),
            max_ejection_percent: 10,
            always_eject_one: false,
        }
    }
}

// === impl OutlierDetector ===

impl OutlierDetector {
    pub fn new(config: OutlierConfig) -> Self {
        Self {
            config,
            hosts: HashMap::new(),
        }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Tracks exactly `ids`: state is kept for those already tracked, new ones start clean, others are dropped.
    pub fn update<'a>(&mut self, ids: impl IntoIterator<Item = &'a EndpointId>) {
        let mut old = std::mem::take(&mut self.hosts);
        for id in ids {
            let record = old.remove(id).unwrap_or_default();
            self.hosts.insert(id.clone(), record);
        }
    }

    /// Counts an attempt's outcome at `id`: a 5xx (or local failure) extends the runs, anything else ends them,
    /// [`Outcome::Cancelled`] leaves them alone. A run that reaches its threshold ejects the endpoint unless
    /// `max_ejection_percent` leaves no room; a refused ejection is tried again at the next failure of the run.
    /// Outcomes at an ejected endpoint (requests in flight when it was ejected, or served in panic mode) are not
    /// counted, so that it returns with clean runs; nor are those at untracked endpoints.
    pub fn record(&mut self, id: &EndpointId, outcome: Outcome, now: Instant) -> Option<Ejection> {
        let status = outcome.upstream_status()?;
        let config = &self.config;
        let record = self.hosts.get_mut(id).filter(|r| !r.is_ejected(now))?;
        let reason = record.count(status, config)?;
        let (ejected, total) = (self.ejected_count(now), self.hosts.len());
        if !self.config.has_room(ejected, total) {
            return None;
        }
        let record = self.hosts.get_mut(id)?;
        let multiplier = record.eject(now, &self.config);
        Some(Ejection {
            id: id.clone(),
            reason,
            until: now + self.config.ejection_time(multiplier),
            multiplier,
        })
    }

    /// Whether `id` is ejected at `now`; an endpoint returns to service once its ejection time has passed.
    pub fn is_ejected(&self, id: &EndpointId, now: Instant) -> bool {
        self.hosts.get(id).is_some_and(|r| r.is_ejected(now))
    }

    /// How many tracked endpoints are ejected at `now`.
    pub fn ejected_count(&self, now: Instant) -> usize {
        self.hosts.values().filter(|r| r.is_ejected(now)).count()
    }
}

// === impl Record ===

impl Record {
    /// Extends or ends the runs with `status`; the threshold reached, if any (gateway errors first, as Envoy).
    fn count(&mut self, status: u16, config: &OutlierConfig) -> Option<EjectionReason> {
        if (500..600).contains(&status) {
            self.consecutive_5xx += 1;
            self.consecutive_gateway = match status {
                502..=504 => self.consecutive_gateway + 1,
                _ => 0,
            };
        } else {
            self.consecutive_5xx = 0;
            self.consecutive_gateway = 0;
        }
        let reached = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
        if reached(self.consecutive_gateway, config.consecutive_gateway_errors) {
            Some(EjectionReason::ConsecutiveGatewayErrors)
        } else if reached(self.consecutive_5xx, config.consecutive_5xx) {
            Some(EjectionReason::Consecutive5xx)
        } else {
            None
        }
    }

    /// Ejects from `now` with the next multiplier, which it returns; the runs start over.
    fn eject(&mut self, now: Instant, config: &OutlierConfig) -> u32 {
        let multiplier = self
            .decayed_multiplier(now, config.interval)
            .saturating_add(1)
            .min(config.max_multiplier());
        *self = Record {
            ejected_until: Some(now + config.ejection_time(multiplier)),
            multiplier,
            ..Record::default()
        };
        multiplier
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// The multiplier less one for each whole `interval` spent in service since the last ejection ended.
    fn decayed_multiplier(&self, now: Instant, interval: Duration) -> u32 {
        let Some(returned) = self.ejected_until else {
            return self.multiplier;
        };
        let served = now.saturating_duration_since(returned).as_nanos();
        let intervals = served.checked_div(interval.as_nanos()).unwrap_or(0);
        let intervals = u32::try_from(intervals).unwrap_or(u32::MAX);
        self.multiplier.saturating_sub(intervals)
    }
}

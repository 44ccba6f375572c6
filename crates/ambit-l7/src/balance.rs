//! Which endpoint serves a request, when a failing endpoint is set aside, and when a failed request is tried again.
//!
//! - [`Balancer`] picks one endpoint of a backend per request, by weighted smooth round robin or by least request
//!   (two random choices compared by active requests per unit of weight), skipping endpoints the
//!   [`OutlierDetector`] has ejected, and using all of them again when every one is ejected (Envoy's panic mode).
//! - [`OutlierDetector`] ejects an endpoint after consecutive 5xx or gateway errors, for a time that grows with each
//!   ejection, never beyond `max_ejection_percent` of the endpoints (Istio's DestinationRule `outlierDetection`).
//! - [`RetryPolicy`] and [`RetryState`] say whether an attempt's [`Outcome`] is tried again and after which jittered
//!   exponential backoff (Envoy's 25 ms base, 250 ms cap); a retry prefers an endpoint not tried yet
//!   ([`Balancer::pick_excluding`]).
//!
//! Everything here is pure: the waypoint's driver passes the time (`now`) and the randomness ([`Sample`]) in, and
//! carries out the decisions (dialling, timers, sleeping the backoff).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

mod outlier;
mod pick;
mod retry;

pub use outlier::{Ejection, EjectionReason, OutlierConfig, OutlierDetector};
pub use retry::{Backoff, RetryDecision, RetryOn, RetryPolicy, RetryState};

/// A uniformly distributed random value drawn by the caller (for instance `fastrand::u64(..)`), so that every
/// choice is reproducible from the samples it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample(pub u64);

/// The name of an endpoint within one backend: stable across updates, cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(Arc<str>);

/// Where an endpoint runs, as Kubernetes topology labels say; carried for the driver (telemetry, locality-aware
/// choice later), not used by the choice itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

/// One endpoint of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub address: SocketAddr,
    /// Relative share of requests; an endpoint of weight 0 is never chosen.
    pub weight: u32,
    pub locality: Option<Locality>,
}

/// How one attempt at a request ended, as far as the endpoint is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this HTTP status.
    Response(u16),
    /// No connection could be made to the endpoint.
    ConnectFailure,
    /// The connection or stream was reset before a response came.
    Reset,
    /// The endpoint refused the HTTP/2 stream (`REFUSED_STREAM`): it did not process the request.
    RefusedStream,
    /// The per-try timeout passed before a response came.
    Timeout,
    /// The attempt was abandoned for a reason that says nothing about the endpoint (the client went away, the
    /// overall request timeout passed).
    Cancelled,
}

/// How [`Balancer`] chooses among the endpoints that may serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// Weighted smooth round robin (nginx's): each endpoint gets its weight's share of every cycle, interleaved.
    RoundRobin,
    /// Two distinct endpoints drawn at random in proportion to their weights; the one with fewer active requests
    /// per unit of weight serves, the first drawn on ties (so idle endpoints share by weight). Istio's default.
    #[default]
    LeastRequest,
}

/// Per-request endpoint choice over one backend's endpoints, with passive outlier detection.
#[derive(Clone, Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    slots: Vec<Slot>,
    index: HashMap<EndpointId, usize>,
    outliers: OutlierDetector,
}

/// What a [`Balancer`] holds at one moment, for the admin page and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalancerStats {
    pub endpoints: usize,
    pub ejected: usize,
    /// Requests started and not finished, over all endpoints.
    pub active: u64,
    /// Every endpoint that may serve is ejected, so all of them are used anyway.
    pub panic: bool,
}

/// An endpoint with the balancer's state for it.
#[derive(Clone, Debug)]
struct Slot {
    endpoint: Endpoint,
    active: u32,
    /// Smooth round robin's running credit.
    current: i64,
}

// === impl Sample ===

impl Sample {
    /// A value in `0..bound` (0 when `bound` is 0), taken from the sample's high bits so that small bounds stay
    /// uniform.
    pub fn below(self, bound: u64) -> u64 {
        ((u128::from(self.0) * u128::from(bound)) >> 64) as u64
    }

    /// A second sample derived from this one (a bijective mix), for choices that need two values.
    pub fn derive(self) -> Sample {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Sample(z ^ (z >> 31))
    }
}

// === impl EndpointId ===

impl EndpointId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for EndpointId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Outcome ===

impl Outcome {
    /// The status this outcome counts as for outlier detection: local failures count as the gateway errors Envoy
    /// maps them to (503 for connect failures, resets and refused streams; 504 for timeouts). `None` for
    /// [`Outcome::Cancelled`], which neither counts nor resets.
    pub fn upstream_status(self) -> Option<u16> {
        match self {
            Self::Response(status) => Some(status),
            Self::ConnectFailure | Self::Reset | Self::RefusedStream => Some(503),
            Self::Timeout => Some(504),
            Self::Cancelled => None,
        }
    }
}

// === impl Balancer ===

impl Balancer {
    /// A balancer over `endpoints` (the first of duplicate ids is kept), ejecting outliers as `outlier` says.
    pub fn new(algorithm: Algorithm, outlier: OutlierConfig, endpoints: Vec<Endpoint>) -> Self {
        let mut balancer = Self {
            algorithm,
            slots: Vec::new(),
            index: HashMap::new(),
            outliers: OutlierDetector::new(outlier),
        };
        balancer.update(endpoints);
        balancer
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Replaces the endpoint set. An endpoint whose id stays keeps its active requests, round-robin credit and
    /// outlier state (its address and weight are taken from the update); a new one starts fresh; a removed one is
    /// forgotten, and its in-flight requests are then ignored when they finish.
    pub fn update(&mut self, endpoints: Vec<Endpoint>) {
        let mut old: HashMap<EndpointId, Slot> = self.slots.drain(..).map(|s| (s.endpoint.id.clone(), s)).collect();
        self.index.clear();
        for endpoint in endpoints {
            if self.index.contains_key(&endpoint.id) {
                continue;
            }
            let slot = match old.remove(&endpoint.id) {
                Some(slot) => Slot { endpoint, ..slot },
                None => Slot::new(endpoint),
            };
            self.index.insert(slot.endpoint.id.clone(), self.slots.len());
            self.slots.push(slot);
        }
        self.outliers.update(self.slots.iter().map(|s| &s.endpoint.id));
    }

    /// The endpoint for a new request, or `None` when no endpoint has a weight above 0.
    pub fn pick(&mut self, now: Instant, sample: Sample) -> Option<EndpointId> {
        self.pick_excluding(now, sample, &[])
    }

    /// As [`Balancer::pick`], avoiding the `excluded` endpoints (those a retried request already tried) when any
    /// other endpoint may serve; otherwise an excluded one is better than none.
    pub fn pick_excluding(&mut self, now: Instant, sample: Sample, excluded: &[EndpointId]) -> Option<EndpointId> {
        let serving = self.serving(now);
        let preferred: Vec<usize> = serving
            .iter()
            .copied()
            .filter(|&i| !excluded.contains(&self.slots[i].endpoint.id))
            .collect();
        let candidates = if preferred.is_empty() { serving } else { preferred };
        let chosen = match self.algorithm {
            Algorithm::RoundRobin => pick::smooth_round_robin(&mut self.slots, &candidates),
            Algorithm::LeastRequest => pick::least_request(&self.slots, &candidates, sample),
        }?;
        Some(self.slots[chosen].endpoint.id.clone())
    }

    /// A request to `id` started: it counts as active until [`Balancer::finished`].
    pub fn started(&mut self, id: &EndpointId) {
        if let Some(slot) = self.slot_mut(id) {
            slot.active = slot.active.saturating_add(1);
        }
    }

    /// A request to `id` ended with `outcome`: it is no longer active, and the outcome feeds outlier detection.
    /// Returns the ejection it caused, if any, for the driver to log.
    pub fn finished(&mut self, id: &EndpointId, outcome: Outcome, now: Instant) -> Option<Ejection> {
        let slot = self.slot_mut(id)?;
        slot.active = slot.active.saturating_sub(1);
        self.outliers.record(id, outcome, now)
    }

    /// The endpoint named `id`, for its address.
    pub fn endpoint(&self, id: &EndpointId) -> Option<&Endpoint> {
        self.index.get(id).map(|&i| &self.slots[i].endpoint)
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.slots.iter().map(|s| &s.endpoint)
    }

    /// Requests to `id` started and not finished.
    pub fn active(&self, id: &EndpointId) -> u32 {
        self.index.get(id).map_or(0, |&i| self.slots[i].active)
    }

    pub fn outliers(&self) -> &OutlierDetector {
        &self.outliers
    }

    pub fn stats(&self, now: Instant) -> BalancerStats {
        let eligible = self.eligible();
        BalancerStats {
            endpoints: self.slots.len(),
            ejected: self.outliers.ejected_count(now),
            active: self.slots.iter().map(|s| u64::from(s.active)).sum(),
            panic: !eligible.is_empty() && eligible.iter().all(|&i| self.is_ejected(i, now)),
        }
    }

    /// Indexes of the endpoints that may serve now: those with weight that are not ejected, or all those with
    /// weight when every one of them is ejected (panic mode).
    fn serving(&self, now: Instant) -> Vec<usize> {
        let eligible = self.eligible();
        let healthy: Vec<usize> = eligible.iter().copied().filter(|&i| !self.is_ejected(i, now)).collect();
        if healthy.is_empty() { eligible } else { healthy }
    }

    fn eligible(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].endpoint.weight > 0)
            .collect()
    }

    fn is_ejected(&self, index: usize, now: Instant) -> bool {
        self.outliers.is_ejected(&self.slots[index].endpoint.id, now)
    }

    fn slot_mut(&mut self, id: &EndpointId) -> Option<&mut Slot> {
        let index = *self.index.get(id)?;
        self.slots.get_mut(index)
    }
}

// === impl Slot ===

impl Slot {
    fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            active: 0,
            current: 0,
        }
    }
}

#[cfg(test)]
mod tests;

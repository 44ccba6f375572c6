//! The certificate manager: fetch, prefetch, rotate at half-life, retry with backoff.
//!
//! The node proxy holds one certificate per workload identity that has pods on the node. Each identity the manager
//! maintains has one task that owns its state: it fetches a certificate, publishes it, sleeps until the certificate's
//! half-life ([`WorkloadCertificate::refresh_at`]) and fetches again. A failed fetch is retried with exponential backoff
//! (capped) while the previous certificate, as long as it is still valid, keeps being served.
//!
//! Fetches have two priorities. Background work — prefetching identities newly scheduled on the node, rotations,
//! retries — shares `prefetch_concurrency` slots. A fetch someone is waiting for (an on-demand [`CertificateManager::fetch`]
//! with no valid certificate to return) skips the queue, so live traffic never waits behind prefetches.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ambit_types::Identity;
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::AbortHandle;

use crate::cert::WorkloadCertificate;

#[cfg(test)]
mod tests;

/// Longest single sleep of a task waiting for a wall-clock time: the monotonic clock tokio sleeps on does not advance
/// while the machine is suspended, so the wall clock is checked again at least this often.
const WALL_CLOCK_RECHECK: Duration = Duration::from_secs(60);

/// What [`CertificateSource::fetch`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<WorkloadCertificate, FetchError>> + Send + 'a>>;

/// Where certificates come from: the CA client in production, a fake in tests.
pub trait CertificateSource: Send + Sync + 'static {
    /// A fresh certificate for `identity`. The source is expected to give up on its own (time out) rather than hang.
    fn fetch(&self, identity: Identity) -> FetchFuture<'_>;
}

/// Why a certificate could not be obtained from the source (or why the one it returned was unusable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// Wall clock, injectable: certificates are valid between two [`SystemTime`]s.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// A wall clock that follows tokio's clock from a base time: when tokio's time is paused and advanced (tests), so is
/// this clock, and with it the validity of certificates.
#[derive(Debug, Clone)]
pub struct TokioClock {
    base: SystemTime,
    start: tokio::time::Instant,
}

/// Tuning of the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Delay before the first retry after a failed fetch; doubled after each further failure.
    pub backoff_initial: Duration,
    /// Longest delay between retries.
    pub backoff_max: Duration,
    /// How many background fetches (prefetches, rotations, retries) may run at once; 0 counts as 1.
    pub prefetch_concurrency: usize,
}

/// Keeps the certificates of the node's workload identities fresh. Cheap to clone; clones share the same state.
///
/// Methods that start maintaining an identity ([`fetch`](Self::fetch), [`prefetch`](Self::prefetch),
/// [`subscribe`](Self::subscribe)) spawn a task, so they must be called within a Tokio runtime. Dropping the last clone
/// stops every task.
#[derive(Clone)]
pub struct CertificateManager {
    inner: Arc<Inner>,
}

/// The state of one identity, for the admin config dump. Times are RFC 3339 (UTC).
#[derive(Clone, Debug, Serialize)]
pub struct CertificateDump {
    pub identity: String,
    pub state: CertState,
    pub serial: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub refresh_at: Option<String>,
    pub chain_pem: Vec<String>,
    pub last_error: Option<String>,
    pub next_attempt: Option<String>,
}

/// Where an identity's certificate stands.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum CertState {
    /// No certificate yet and no failed attempt: the first fetch is queued or in progress.
    Initializing,
    /// A valid certificate that is not yet due for rotation.
    Available,
    /// The rotation is due (half-life passed); the current certificate is still valid and still served.
    Rotating,
    /// No valid certificate (never fetched, or expired) and the last attempt failed; retrying with backoff.
    Failed,
}

/// Why [`CertificateManager::fetch`] returned no certificate. The cause, where there is one, is the error's `source()`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManagerError {
    #[error("no certificate for {identity}: fetching it failed (retrying in the background)")]
    Fetch {
        identity: Identity,
        #[source]
        source: FetchError,
    },
    #[error(
        "the certificate of {identity} (serial {serial}) expired at {} and renewing it failed (retrying in the background)",
        rfc3339(*.not_after)
    )]
    Expired {
        identity: Identity,
        serial: String,
        not_after: SystemTime,
        #[source]
        source: FetchError,
    },
    #[error("{0} was forgotten before a certificate for it was available")]
    Forgotten(Identity),
}

struct Inner {
    source: Arc<dyn CertificateSource>,
    clock: Arc<dyn Clock>,
    config: ManagerConfig,
    /// Background fetches hold one of these while they run.
    slots: Arc<Semaphore>,
    /// Lookup only: each identity's state is owned by its task. Never held across an `.await`.
    entries: Mutex<HashMap<Identity, Entry>>,
}

/// The manager's handles on one identity's task.
struct Entry {
    status: watch::Receiver<Status>,
    certs: watch::Receiver<Option<WorkloadCertificate>>,
    demand: Arc<Demand>,
    task: AbortHandle,
}

/// What an identity's task publishes after each attempt.
#[derive(Clone, Default)]
struct Status {
    cert: Option<WorkloadCertificate>,
    last_error: Option<FetchError>,
    next_attempt: Option<SystemTime>,
}

/// How many on-demand callers are waiting for an identity's certificate; while any is, its fetches are high priority.
#[derive(Default)]
struct Demand {
    waiting: AtomicUsize,
    changed: Notify,
}

/// One waiting on-demand caller, counted in [`Demand`] for as long as it lives (so a cancelled caller stops counting).
struct DemandGuard(Arc<Demand>);

/// The task maintaining one identity.
struct Worker {
    identity: Identity,
    source: Arc<dyn CertificateSource>,
    clock: Arc<dyn Clock>,
    config: ManagerConfig,
    slots: Arc<Semaphore>,
    demand: Arc<Demand>,
    status: watch::Sender<Status>,
    certs: watch::Sender<Option<WorkloadCertificate>>,
}

// === impl Clock ===

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl TokioClock {
    /// A clock reading `base` now and advancing with tokio's clock from here on.
    pub fn new(base: SystemTime) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        // Cannot overflow: the elapsed time is bounded by the process's lifetime, `base` is a real date.
        self.base + self.start.elapsed()
    }
}

// === impl ManagerConfig ===

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(150),
            prefetch_concurrency: 2,
        }
    }
}

impl ManagerConfig {
    /// Delay before the next attempt after `failures` consecutive failures (at least 1): `backoff_initial` doubled
    /// `failures - 1` times, at most `backoff_max`.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.checked_pow(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff_initial.saturating_mul(factor).min(self.backoff_max)
    }
}

// === impl CertificateManager ===

impl CertificateManager {
    pub fn new(source: Arc<dyn CertificateSource>, clock: Arc<dyn Clock>, config: ManagerConfig) -> Self {
        // At least one slot, or rotations (background fetches) would never run.
        let slots = Arc::new(Semaphore::new(
            config.prefetch_concurrency.clamp(1, Semaphore::MAX_PERMITS),
        ));
        let inner = Inner {
            source,
            clock,
            config,
            slots,
            entries: Mutex::new(HashMap::new()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The identity's certificate, fetching it now (high priority) if there is none yet; concurrent callers share one
    /// fetch. From then on the manager keeps it fresh. An expired certificate is never returned.
    ///
    /// If the last attempt failed and no valid certificate is left, returns that failure at once (the background task
    /// keeps retrying with backoff; a later call returns the certificate once a retry succeeds).
    pub async fn fetch(&self, identity: &Identity) -> Result<WorkloadCertificate, ManagerError> {
        let (mut status, demand) = self
            .inner
            .with_entry(identity, |e| (e.status.clone(), Arc::clone(&e.demand)));
        let mut waiting = None;
        loop {
            if let Some(outcome) = status.borrow_and_update().outcome(identity, self.inner.clock.now()) {
                return outcome;
            }
            waiting.get_or_insert_with(|| DemandGuard::new(&demand));
            if status.changed().await.is_err() {
                return Err(ManagerError::Forgotten(identity.clone()));
            }
        }
    }

    /// Starts maintaining the identity in the background at low priority (workloads newly scheduled on the node).
    /// At most `prefetch_concurrency` background fetches run at once; on-demand fetches never wait for them.
    pub fn prefetch(&self, identity: &Identity) {
        self.inner.with_entry(identity, |_| ());
    }

    /// Stops maintaining the identity (no pod of it is left on the node): its task stops, callers waiting in
    /// [`fetch`](Self::fetch) get [`ManagerError::Forgotten`] and subscribers see their channel closed.
    pub fn forget(&self, identity: &Identity) {
        let removed = self.inner.lock().remove(identity);
        drop(removed);
    }

    /// A receiver that sees every new certificate of the identity (initial one and rotations), for rebuilding TLS
    /// configurations. The current value counts as seen. Starts maintaining the identity, as
    /// [`prefetch`](Self::prefetch) does, if the manager did not yet.
    pub fn subscribe(&self, identity: &Identity) -> watch::Receiver<Option<WorkloadCertificate>> {
        let mut certs = self.inner.with_entry(identity, |e| e.certs.clone());
        certs.mark_unchanged();
        certs
    }

    /// The state of every identity, sorted by identity, for the admin config dump.
    pub fn dump(&self) -> Vec<CertificateDump> {
        let now = self.inner.clock.now();
        let statuses: Vec<(Identity, Status)> = {
            let entries = self.inner.lock();
            entries
                .iter()
                .map(|(id, e)| (id.clone(), e.status.borrow().clone()))
                .collect()
        };
        let mut dumps: Vec<_> = statuses.iter().map(|(id, status)| status.dump(id, now)).collect();
        dumps.sort_by(|a, b| a.identity.cmp(&b.identity));
        dumps
    }
}

impl fmt::Debug for CertificateManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateManager")
            .field("config", &self.inner.config)
            .field("identities", &self.inner.lock().len())
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<Identity, Entry>> {
        // Every critical section leaves the map consistent (single insert or remove), so a poisoned lock is usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the identity's entry, starting its task first if the identity is not maintained yet.
    fn with_entry<T>(&self, identity: &Identity, f: impl FnOnce(&Entry) -> T) -> T {
        let mut entries = self.lock();
        let entry = entries.entry(identity.clone()).or_insert_with(|| self.start(identity));
        f(entry)
    }

    fn start(&self, identity: &Identity) -> Entry {
        let (status_tx, status) = watch::channel(Status::default());
        let (certs_tx, certs) = watch::channel(None);
        let demand = Arc::new(Demand::default());
        let worker = Worker {
            identity: identity.clone(),
            source: Arc::clone(&self.source),
            clock: Arc::clone(&self.clock),
            config: self.config.clone(),
            slots: Arc::clone(&self.slots),
            demand: Arc::clone(&demand),
            status: status_tx,
            certs: certs_tx,
        };
        let task = tokio::spawn(worker.run()).abort_handle();
        Entry {
            status,
            certs,
            demand,
            task,
        }
    }
}

// === impl Entry ===

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Status ===

impl Status {
    fn valid_cert(&self, now: SystemTime) -> Option<&WorkloadCertificate> {
        self.cert.as_ref().filter(|cert| cert.is_valid_at(now))
    }

    fn state(&self, now: SystemTime) -> CertState {
        match self.valid_cert(now) {
            Some(cert) if now >= cert.refresh_at() => CertState::Rotating,
            Some(_) => CertState::Available,
            None if self.cert.is_some() || self.last_error.is_some() => CertState::Failed,
            None => CertState::Initializing,
        }
    }

    /// What an on-demand caller gets now, or `None` if it should wait for the next attempt.
    fn outcome(&self, identity: &Identity, now: SystemTime) -> Option<Result<WorkloadCertificate, ManagerError>> {
        if let Some(cert) = self.valid_cert(now) {
            return Some(Ok(cert.clone()));
        }
        let source = self.last_error.clone()?;
        let identity = identity.clone();
        Some(Err(match &self.cert {
            Some(expired) => ManagerError::Expired {
                identity,
                serial: expired.serial().to_string(),
                not_after: expired.not_after(),
                source,
            },
            None => ManagerError::Fetch { identity, source },
        }))
    }

    fn dump(&self, identity: &Identity, now: SystemTime) -> CertificateDump {
        let cert = self.cert.as_ref();
        CertificateDump {
            identity: identity.to_string(),
            state: self.state(now),
            serial: cert.map(|c| c.serial().to_string()),
            not_before: cert.map(|c| rfc3339(c.not_before())),
            not_after: cert.map(|c| rfc3339(c.not_after())),
            refresh_at: cert.map(|c| rfc3339(c.refresh_at())),
            chain_pem: cert.map(WorkloadCertificate::chain_pem).unwrap_or_default(),
            last_error: self.last_error.as_ref().map(ToString::to_string),
            next_attempt: self.next_attempt.map(rfc3339),
        }
    }
}

// === impl Demand ===

impl Demand {
    fn wanted(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Resolves once some on-demand caller is waiting.
    async fn until_wanted(&self) {
        loop {
            let mut changed = pin!(self.changed.notified());
            // Registered before the check, so an arrival between the check and the await still wakes us.
            changed.as_mut().enable();
            if self.wanted() {
                return;
            }
            changed.await;
        }
    }
}

impl DemandGuard {
    fn new(demand: &Arc<Demand>) -> Self {
        demand.waiting.fetch_add(1, Ordering::SeqCst);
        demand.changed.notify_waiters();
        Self(Arc::clone(demand))
    }
}

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

// === impl Worker ===

impl Worker {
    async fn run(self) {
        let mut failures: u32 = 0;
        loop {
            let next = match self.attempt().await {
                Ok(cert) => {
                    failures = 0;
                    self.install(cert)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.record_failure(error, failures)
                }
            };
            sleep_until(self.clock.as_ref(), next).await;
        }
    }

    /// One fetch from the source, in a background slot unless an on-demand caller is waiting (or starts waiting).
    async fn attempt(&self) -> Result<WorkloadCertificate, FetchError> {
        let _slot = self.slot().await;
        let cert = self.source.fetch(self.identity.clone()).await?;
        self.check(cert)
    }

    /// A background slot, or `None` as soon as the fetch is wanted on demand (high priority takes no slot).
    async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            () = self.demand.until_wanted() => None,
            // The semaphore is never closed; if it were, going ahead without a slot is the sane fallback.
            permit = Arc::clone(&self.slots).acquire_owned() => permit.ok(),
        }
    }

    /// Rejects a certificate that is not for this identity or not valid now.
    fn check(&self, cert: WorkloadCertificate) -> Result<WorkloadCertificate, FetchError> {
        if cert.identity() != &self.identity {
            return Err(FetchError(format!(
                "the source returned a certificate for {} instead of {}",
                cert.identity(),
                self.identity
            )));
        }
        let now = self.clock.now();
        if !cert.is_valid_at(now) {
            return Err(FetchError(format!(
                "the source returned certificate {} valid from {} to {}, which is not valid now ({})",
                cert.serial(),
                rfc3339(cert.not_before()),
                rfc3339(cert.not_after()),
                rfc3339(now)
            )));
        }
        Ok(cert)
    }

    /// Publishes a new certificate; returns when to rotate it.
    fn install(&self, cert: WorkloadCertificate) -> Option<SystemTime> {
        let now = self.clock.now();
        // Not sooner than one backoff step: a source handing out certificates already past their half-life would
        // otherwise be asked again in a tight loop.
        let next = now
            .checked_add(self.config.backoff_initial)
            .map(|soonest| soonest.max(cert.refresh_at()));
        tracing::info!(
            identity = %self.identity,
            serial = cert.serial(),
            not_after = %rfc3339(cert.not_after()),
            "new workload certificate"
        );
        self.status.send_replace(Status {
            cert: Some(cert.clone()),
            last_error: None,
            next_attempt: next,
        });
        self.certs.send_replace(Some(cert));
        next
    }

    /// Records a failed attempt (keeping any certificate); returns when to retry.
    fn record_failure(&self, error: FetchError, failures: u32) -> Option<SystemTime> {
        let delay = self.config.backoff(failures);
        let next = self.clock.now().checked_add(delay);
        tracing::warn!(
            identity = %self.identity,
            failures,
            retry_in = ?delay,
            %error,
            "fetching a workload certificate failed"
        );
        self.status.send_modify(|status| {
            status.last_error = Some(error);
            status.next_attempt = next;
        });
        next
    }
}

/// Sleeps until the wall clock reads `deadline` (forever for `None`: a time too far to represent).
async fn sleep_until(clock: &dyn Clock, deadline: Option<SystemTime>) {
    let Some(deadline) = deadline else {
        return std::future::pending().await;
    };
    while let Ok(left) = deadline.duration_since(clock.now()) {
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(WALL_CLOCK_RECHECK)).await;
    }
}

/// `time` as an RFC 3339 UTC timestamp with whole seconds, e.g. `2000-02-29T00:00:00Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            // Truncate towards the past: 0.5 s before the epoch is 1969-12-31T23:59:59Z.
            -whole - i64::from(before.subsec_nanos() > 0)
        }
    };
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let (hour, minute, second) = (second_of_day / 3_600, second_of_day % 3_600 / 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
///
/// Works on years that start on March 1st, so that the leap day is the last day of its year, grouped in 400-year eras
/// of 146 097 days (the Gregorian cycle) starting on 0000-03-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    const DAYS_PER_ERA: i64 = 146_097;
    // 0000-03-01 is 719 468 days before 1970-01-01.
    let since_era_zero = days + 719_468;
    let era = since_era_zero.div_euclid(DAYS_PER_ERA);
    let day_of_era = since_era_zero.rem_euclid(DAYS_PER_ERA);
    // Subtract the leap days (every 4th year, not the 100th, but the 400th) before dividing by 365.
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / (DAYS_PER_ERA - 1)) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March have 31, 30, 31, 30, 31 days twice over (153 days per five months), then February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    (year, month, day)
}

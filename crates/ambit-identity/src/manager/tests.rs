use std::collections::HashMap;
use std::error::Error as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ambit_types::Identity;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType, SerialNumber, date_time_ymd};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use super::*;

/// 2023-11-14T22:13:20Z, where every test's clock starts.
const BASE: Duration = Duration::from_secs(1_700_000_000);
const HOUR: Duration = Duration::from_secs(3_600);
const FAILURE: &str = "CA unavailable";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn base() -> SystemTime {
    UNIX_EPOCH + BASE
}

fn identity(service_account: &str) -> Identity {
    format!("spiffe://cluster.local/ns/demo/sa/{service_account}")
        .parse()
        .unwrap()
}

/// What the fake source does on its next calls.
struct Script {
    ttl: Duration,
    /// How long each fetch takes (tokio time).
    delay: Duration,
    fail_next: usize,
    fail_always: bool,
    /// Issue certificates for this identity instead of the requested one.
    impostor: Option<Identity>,
}

/// A scriptable certificate source: a self-signed root issuing leaves with the requested SPIFFE URI SAN, valid from
/// the clock's now for the scripted TTL.
struct FakeSource {
    clock: Arc<TokioClock>,
    root: Issuer<'static, KeyPair>,
    root_pem: String,
    script: Mutex<Script>,
    calls: Mutex<Vec<(Identity, SystemTime)>>,
    serials: AtomicU64,
}

impl FakeSource {
    fn new(clock: Arc<TokioClock>) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2040, 1, 1);
        let root_pem = params.self_signed(&key).unwrap().pem();
        let script = Script {
            ttl: 24 * HOUR,
            delay: Duration::ZERO,
            fail_next: 0,
            fail_always: false,
            impostor: None,
        };
        Self {
            clock,
            root: Issuer::new(params, key),
            root_pem,
            script: Mutex::new(script),
            calls: Mutex::new(Vec::new()),
            serials: AtomicU64::new(0),
        }
    }

    fn script(&self, edit: impl FnOnce(&mut Script)) {
        edit(&mut self.script.lock().unwrap());
    }

    fn calls(&self) -> Vec<(Identity, SystemTime)> {
        self.calls.lock().unwrap().clone()
    }

    fn calls_for(&self, identity: &Identity) -> Vec<SystemTime> {
        self.calls()
            .into_iter()
            .filter(|(id, _)| id == identity)
            .map(|(_, at)| at)
            .collect()
    }

    fn issue(&self, identity: &Identity, ttl: Duration) -> WorkloadCertificate {
        let now = self.clock.now();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into().unwrap())];
        params.not_before = date_time_ymd(1970, 1, 1) + now.duration_since(UNIX_EPOCH).unwrap();
        params.not_after = date_time_ymd(1970, 1, 1) + (now + ttl).duration_since(UNIX_EPOCH).unwrap();
        let serial = 0x4a00_0000_0000_0000 | self.serials.fetch_add(1, Ordering::SeqCst);
        params.serial_number = Some(SerialNumber::from(serial.to_be_bytes().to_vec()));
        let leaf = params.signed_by(&key, &self.root).unwrap();
        WorkloadCertificate::from_pem(&[leaf.pem(), self.root_pem.clone()], &key.serialize_pem()).unwrap()
    }

    /// Records the call and decides its fate from the script: (delay, outcome as the identity to certify and the TTL).
    fn next_call(&self, identity: Identity) -> (Duration, Option<(Identity, Duration)>) {
        self.calls.lock().unwrap().push((identity.clone(), self.clock.now()));
        let mut script = self.script.lock().unwrap();
        let fail = script.fail_always || script.fail_next > 0;
        script.fail_next = script.fail_next.saturating_sub(1);
        let subject = script.impostor.clone().unwrap_or(identity);
        (script.delay, (!fail).then_some((subject, script.ttl)))
    }
}

impl CertificateSource for FakeSource {
    fn fetch(&self, identity: Identity) -> FetchFuture<'_> {
        Box::pin(async move {
            let (delay, outcome) = self.next_call(identity);
            sleep(delay).await;
            let (subject, ttl) = outcome.ok_or_else(|| FetchError(FAILURE.to_string()))?;
            Ok(self.issue(&subject, ttl))
        })
    }
}

struct Harness {
    manager: CertificateManager,
    fake: Arc<FakeSource>,
}

impl Harness {
    fn new() -> Self {
        let clock = Arc::new(TokioClock::new(base()));
        let fake = Arc::new(FakeSource::new(Arc::clone(&clock)));
        let manager = CertificateManager::new(fake.clone(), clock, ManagerConfig::default());
        Self { manager, fake }
    }

    fn dump_of(&self, identity: &Identity) -> CertificateDump {
        let wanted = identity.to_string();
        self.manager.dump().into_iter().find(|d| d.identity == wanted).unwrap()
    }
}

#[test]
fn rfc3339_formats_utc_whole_seconds() {
    let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(at(0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(at(951_868_800), "2000-03-01T00:00:00Z");
    assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
    assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_millis(1_999)),
        "1970-01-01T00:00:01Z"
    );
    assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_millis(500)), "1969-12-31T23:59:59Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_secs(86_400 * 365)),
        "1969-01-01T00:00:00Z"
    );
}

#[test]
fn civil_from_days_matches_day_by_day_counting() {
    let mut date = (1970, 1, 1);
    for days in 0..(200 * 366) {
        assert_eq!(civil_from_days(days), date, "day {days}");
        date = next_day(date);
    }
}

fn next_day((year, month, day): (i64, i64, i64)) -> (i64, i64, i64) {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let length = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    match (day < length, month < 12) {
        (true, _) => (year, month, day + 1),
        (false, true) => (year, month + 1, 1),
        (false, false) => (year + 1, 1, 1),
    }
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let config = ManagerConfig::default();
    let delays: Vec<u64> = (1..=10).map(|failures| config.backoff(failures).as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 150, 150]);
    assert_eq!(config.backoff(u32::MAX), secs(150));
}

#[tokio::test(start_paused = true)]
async fn rotates_at_half_life_and_publishes_the_new_certificate() {
    let h = Harness::new();
    let id = identity("client");
    let first = h.manager.fetch(&id).await.unwrap();
    assert_eq!((first.not_before(), first.refresh_at()), (base(), base() + 12 * HOUR));
    let mut certs = h.manager.subscribe(&id);
    assert!(!certs.has_changed().unwrap());

    sleep(12 * HOUR - secs(1)).await;
    assert_eq!(h.fake.calls_for(&id).len(), 1);
    assert!(!certs.has_changed().unwrap());
    assert_eq!(h.dump_of(&id).state, CertState::Available);

    sleep(secs(2)).await;
    assert_eq!(h.fake.calls_for(&id), [base(), base() + 12 * HOUR]);
    assert!(certs.has_changed().unwrap());
    let second = certs.borrow_and_update().clone().unwrap();
    assert_ne!(second.serial(), first.serial());
    assert_eq!(second.not_before(), base() + 12 * HOUR);
    assert_eq!(h.manager.fetch(&id).await.unwrap().serial(), second.serial());

    sleep(12 * HOUR - secs(2)).await;
    assert_eq!(h.fake.calls_for(&id).len(), 2);
    sleep(secs(2)).await;
    assert_eq!(h.fake.calls_for(&id).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn failed_rotation_keeps_the_valid_certificate_and_backs_off_to_the_cap() {
    let h = Harness::new();
    let id = identity("client");
    let first = h.manager.fetch(&id).await.unwrap();
    let mut certs = h.manager.subscribe(&id);
    h.fake.script(|s| s.fail_next = 11);

    sleep(12 * HOUR + Duration::from_millis(500)).await;
    assert_eq!(h.manager.fetch(&id).await.unwrap().serial(), first.serial());
    let dump = h.dump_of(&id);
    assert_eq!(dump.state, CertState::Rotating);
    assert_eq!(dump.serial.as_deref(), Some(first.serial()));
    assert_eq!(dump.last_error.as_deref(), Some(FAILURE));
    assert_eq!(dump.next_attempt, Some(rfc3339(base() + 12 * HOUR + secs(1))));

    sleep(HOUR).await;
    let rotation_calls = &h.fake.calls_for(&id)[1..];
    let intervals: Vec<u64> = rotation_calls
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap().as_secs())
        .collect();
    assert_eq!(intervals, [1, 2, 4, 8, 16, 32, 64, 128, 150, 150, 150]);
    let dump = h.dump_of(&id);
    assert_eq!((dump.state, dump.last_error), (CertState::Available, None));
    assert!(certs.has_changed().unwrap());
    let renewed = h.manager.fetch(&id).await.unwrap();
    assert_ne!(renewed.serial(), first.serial());
    assert_eq!(certs.borrow_and_update().as_ref().unwrap().serial(), renewed.serial());
}

#[tokio::test(start_paused = true)]
async fn initial_failure_is_reported_then_retried_in_the_background() {
    let h = Harness::new();
    let id = identity("client");
    h.fake.script(|s| s.fail_next = 1);

    let error = h.manager.fetch(&id).await.unwrap_err();
    assert!(
        matches!(&error, ManagerError::Fetch { identity, .. } if identity == &id),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("spiffe://cluster.local/ns/demo/sa/client"),
        "{error}"
    );
    assert_eq!(error.source().unwrap().to_string(), FAILURE);
    let dump = h.dump_of(&id);
    assert_eq!((dump.state, dump.serial), (CertState::Failed, None));
    assert_eq!(dump.next_attempt, Some(rfc3339(base() + secs(1))));

    sleep(Duration::from_millis(1_500)).await;
    let cert = h.manager.fetch(&id).await.unwrap();
    assert_eq!(cert.identity(), &id);
    assert_eq!(h.fake.calls_for(&id), [base(), base() + secs(1)]);
    assert_eq!(h.dump_of(&id).state, CertState::Available);
}

#[tokio::test(start_paused = true)]
async fn concurrent_on_demand_fetches_share_one_call() {
    let h = Harness::new();
    let id = identity("client");
    h.fake.script(|s| s.delay = secs(10));
    let start = Instant::now();

    let mut fetches = JoinSet::new();
    for _ in 0..8 {
        let (manager, id) = (h.manager.clone(), id.clone());
        fetches.spawn(async move { manager.fetch(&id).await });
    }
    let serials: Vec<String> = fetches
        .join_all()
        .await
        .into_iter()
        .map(|r| r.unwrap().serial().to_string())
        .collect();

    assert_eq!(serials.len(), 8);
    assert!(serials.iter().all(|s| s == &serials[0]));
    assert_eq!(h.fake.calls().len(), 1);
    assert_eq!(start.elapsed(), secs(10));
}

#[tokio::test(start_paused = true)]
async fn prefetches_are_limited_and_never_delay_on_demand_fetches() {
    let h = Harness::new();
    h.fake.script(|s| s.delay = secs(10));
    let [a, b, c, d, e, f] = ["a", "b", "c", "d", "e", "f"].map(identity);
    for id in [&a, &b, &c, &d, &f] {
        h.manager.prefetch(id);
    }

    sleep(secs(1)).await;
    let start = Instant::now();
    // `e` was never prefetched; `d` is queued behind the prefetches of a, b and c.
    let (e_cert, d_cert) = tokio::join!(h.manager.fetch(&e), h.manager.fetch(&d));
    assert_eq!((e_cert.unwrap().identity(), d_cert.unwrap().identity()), (&e, &d));
    assert_eq!(start.elapsed(), secs(10));

    sleep(secs(30)).await;
    let started: HashMap<Identity, Duration> = h
        .fake
        .calls()
        .into_iter()
        .map(|(id, at)| (id, at.duration_since(base()).unwrap()))
        .collect();
    let expected = [(a, 0), (b, 0), (c, 10), (d, 1), (e, 1), (f, 10)].map(|(id, s)| (id, secs(s)));
    assert_eq!(started, HashMap::from(expected));
    assert!(h.manager.dump().iter().all(|dump| dump.state == CertState::Available));
}

#[tokio::test(start_paused = true)]
async fn an_expired_certificate_is_never_returned() {
    let h = Harness::new();
    let id = identity("client");
    h.fake.script(|s| s.ttl = HOUR);
    let first = h.manager.fetch(&id).await.unwrap();
    h.fake.script(|s| s.fail_always = true);

    sleep(59 * 60 * secs(1)).await;
    assert_eq!(h.manager.fetch(&id).await.unwrap().serial(), first.serial());
    assert_eq!(h.dump_of(&id).state, CertState::Rotating);

    sleep(2 * 60 * secs(1)).await;
    let error = h.manager.fetch(&id).await.unwrap_err();
    match &error {
        ManagerError::Expired {
            identity,
            serial,
            not_after,
            source,
        } => {
            assert_eq!(
                (identity, serial.as_str(), *not_after),
                (&id, first.serial(), base() + HOUR)
            );
            assert_eq!(source.0, FAILURE);
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    assert!(error.to_string().contains("expired at 2023-11-14T23:13:20Z"), "{error}");
    let dump = h.dump_of(&id);
    assert_eq!(
        (dump.state, dump.serial.as_deref()),
        (CertState::Failed, Some(first.serial()))
    );
}

#[tokio::test(start_paused = true)]
async fn forget_stops_the_task_and_releases_waiters() {
    let h = Harness::new();
    let (kept, forgotten) = (identity("kept"), identity("forgotten"));
    h.manager.fetch(&forgotten).await.unwrap();
    h.manager.fetch(&kept).await.unwrap();
    let mut certs = h.manager.subscribe(&forgotten);

    h.manager.forget(&forgotten);
    assert!(certs.changed().await.is_err());
    sleep(47 * HOUR).await;
    assert_eq!(h.fake.calls_for(&forgotten).len(), 1);
    assert_eq!(h.fake.calls_for(&kept).len(), 4);
    let identities: Vec<String> = h.manager.dump().into_iter().map(|d| d.identity).collect();
    assert_eq!(identities, [kept.to_string()]);

    h.fake.script(|s| s.delay = secs(10));
    let waiting = tokio::spawn({
        let (manager, id) = (h.manager.clone(), forgotten.clone());
        async move { manager.fetch(&id).await }
    });
    sleep(secs(1)).await;
    h.manager.forget(&forgotten);
    let error = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(&error, ManagerError::Forgotten(id) if id == &forgotten),
        "{error:?}"
    );
    sleep(48 * HOUR).await;
    assert_eq!(h.fake.calls_for(&forgotten).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn dump_shows_each_identity_with_rfc3339_times() {
    let h = Harness::new();
    let (a, b) = (identity("a"), identity("b"));
    let cert = h.manager.fetch(&a).await.unwrap();
    h.fake.script(|s| s.delay = secs(10));
    h.manager.prefetch(&b);
    sleep(secs(1)).await;

    let dumps = h.manager.dump();
    assert_eq!(dumps.len(), 2);
    let (a_dump, b_dump) = (&dumps[0], &dumps[1]);
    assert_eq!(a_dump.identity, "spiffe://cluster.local/ns/demo/sa/a");
    assert_eq!(a_dump.state, CertState::Available);
    assert_eq!(a_dump.serial.as_deref(), Some(cert.serial()));
    assert_eq!(a_dump.not_before.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert_eq!(a_dump.not_after.as_deref(), Some("2023-11-15T22:13:20Z"));
    assert_eq!(a_dump.refresh_at.as_deref(), Some("2023-11-15T10:13:20Z"));
    assert_eq!(a_dump.next_attempt.as_deref(), Some("2023-11-15T10:13:20Z"));
    assert_eq!(a_dump.chain_pem, cert.chain_pem());
    assert_eq!(a_dump.chain_pem.len(), 2);
    assert_eq!(a_dump.last_error, None);
    assert_eq!(b_dump.identity, "spiffe://cluster.local/ns/demo/sa/b");
    assert_eq!(
        (b_dump.state, b_dump.serial.as_deref(), b_dump.not_after.as_deref()),
        (CertState::Initializing, None, None)
    );
}

#[tokio::test(start_paused = true)]
async fn subscribing_starts_maintenance() {
    let h = Harness::new();
    let id = identity("client");
    let mut certs = h.manager.subscribe(&id);
    assert!(certs.borrow().is_none());
    certs.changed().await.unwrap();
    assert_eq!(certs.borrow_and_update().as_ref().unwrap().identity(), &id);
    assert_eq!(h.fake.calls_for(&id).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_certificate_for_another_identity_is_rejected() {
    let h = Harness::new();
    let id = identity("client");
    h.fake.script(|s| s.impostor = Some(identity("impostor")));

    let error = h.manager.fetch(&id).await.unwrap_err();
    let cause = error.source().unwrap().to_string();
    assert_eq!(
        cause,
        "the source returned a certificate for spiffe://cluster.local/ns/demo/sa/impostor \
         instead of spiffe://cluster.local/ns/demo/sa/client"
    );
    assert_eq!(h.dump_of(&id).state, CertState::Failed);
}

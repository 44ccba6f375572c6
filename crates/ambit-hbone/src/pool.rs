//! The outbound connection pool: HTTP/2 connections keyed by source identity, expected destination identities and
//! destination address; many CONNECT streams per connection; one dial per key at a time; release when idle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ambit_types::Identity;
use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use tokio::sync::watch;
use tokio::time::{self, Instant};
use tokio_rustls::client::TlsStream;

use crate::Wire;
use tracing::{Instrument, debug};

use crate::authority::Authority;
use crate::client::{self, ConnectError, DialError, Dialed, Dialer, HboneStream, PlainDialer};
use crate::headers::ConnectHeaders;
use crate::keepalive;
use crate::settings::{H2Settings, PoolSettings};

/// How many times a stream refused unprocessed (GOAWAY, REFUSED_STREAM) is retried on another connection.
const MAX_REFUSED_RETRIES: usize = 2;

/// Which connections may carry a stream: same presented identity, same accepted server identities, same next hop.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The identity this side presents (the source workload's).
    pub source: Identity,
    /// The identities the server may present; the TLS configuration given with the key must expect exactly these.
    pub destination_identities: Vec<Identity>,
    /// The next hop's HBONE address (`podIP:15008`, a waypoint's or a gateway's).
    pub destination: SocketAddr,
}

/// The outbound HBONE pool. Cheap to clone; clones share connections. Dropping the last clone releases the pool's hold
/// on its connections, which then close once their streams end.
pub struct HbonePool<D = PlainDialer> {
    inner: Arc<Inner<D>>,
}

struct Inner<D> {
    dialer: D,
    settings: PoolSettings,
    /// Origin of the `last_used` timestamps.
    epoch: Instant,
    next_id: AtomicU64,
    entries: Mutex<HashMap<PoolKey, Entry>>,
}

/// The connections of one key, and the dial in progress if any.
#[derive(Default)]
struct Entry {
    conns: Vec<Pooled>,
    dialing: Option<watch::Receiver<DialOutcome>>,
}

/// `None` while dialing; the dial's outcome (the connection itself goes into the pool).
type DialOutcome = Option<Result<(), Arc<DialError>>>;

struct Pooled {
    id: u64,
    send_request: SendRequest<Bytes>,
    state: Arc<ConnState>,
}

/// Shared between the pool, the connection's task and its streams.
struct ConnState {
    active: AtomicUsize,
    /// Nanoseconds from `epoch` to when a stream last ended.
    last_used: AtomicU64,
    /// Cleared when the connection failed or was refused: no new streams go to it.
    usable: AtomicBool,
    epoch: Instant,
    /// The SPIFFE identity the server proved in the TLS handshake.
    peer: Option<Identity>,
}

/// A reserved stream slot on a connection.
pub(crate) struct Lease {
    pub(crate) send_request: SendRequest<Bytes>,
    pub(crate) stream: StreamLease,
}

/// Counts one stream against its connection until dropped.
pub(crate) struct StreamLease {
    state: Arc<ConnState>,
}

// === impl HbonePool ===

impl<D> Clone for HbonePool<D> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl HbonePool<PlainDialer> {
    pub fn new(settings: PoolSettings) -> Self {
        Self::with_dialer(settings, PlainDialer)
    }
}

impl<D: Dialer> HbonePool<D> {
    pub fn with_dialer(settings: PoolSettings, dialer: D) -> Self {
        let entries = Mutex::new(HashMap::new());
        let inner = Inner {
            dialer,
            settings,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            entries,
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// Opens a tunnel to `authority` through the connection for `key`: an existing one with a free stream slot, else
    /// a new one dialed with `tls` (which must verify `key.destination_identities`). Resolves once the server answered
    /// 200; any other status is [`ConnectError::Status`]. A stream refused unprocessed is retried on another
    /// connection.
    pub async fn connect(
        &self,
        key: &PoolKey,
        tls: &Arc<rustls::ClientConfig>,
        authority: &Authority,
        headers: &ConnectHeaders,
    ) -> Result<HboneStream, ConnectError> {
        let mut refused = 0;
        loop {
            let request = client::request(authority, headers)?;
            let lease = self.checkout(key, tls).await?;
            match client::open(lease, request).await {
                Err(ConnectError::Refused(error)) if refused < MAX_REFUSED_RETRIES => {
                    debug!(%error, "stream refused unprocessed; retrying on another connection");
                    refused += 1;
                }
                result => return result,
            }
        }
    }

    /// Connections currently in the pool (usable or not yet found unusable), over all keys.
    pub fn connection_count(&self) -> usize {
        self.inner.lock().values().map(|entry| entry.conns.len()).sum()
    }

    /// A stream slot on a pooled connection, waiting for a dial (ours or another caller's) when none is free.
    async fn checkout(&self, key: &PoolKey, tls: &Arc<rustls::ClientConfig>) -> Result<Lease, ConnectError> {
        loop {
            let mut dialing = match self.reserve_or_dial(key, tls) {
                Ok(lease) => return Ok(lease),
                Err(dialing) => dialing,
            };
            let outcome = match dialing.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone(),
                Err(_) => Some(Err(Arc::new(DialError::Aborted))),
            };
            if let Some(Err(error)) = outcome {
                return Err(ConnectError::Dial(error));
            }
        }
    }

    /// Under the lock: a lease on a connection with room, or the receiver of a dial in progress (started if none).
    fn reserve_or_dial(
        &self,
        key: &PoolKey,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Lease, watch::Receiver<DialOutcome>> {
        let max = self.inner.settings.max_streams_per_connection;
        let mut entries = self.inner.lock();
        if let Some(entry) = entries.get_mut(key) {
            if let Some(lease) = entry.reserve(max) {
                return Ok(lease);
            }
            if let Some(dialing) = entry.dial_in_progress() {
                return Err(dialing);
            }
        }
        let (tx, rx) = watch::channel(None);
        entries.entry(key.clone()).or_default().dialing = Some(rx.clone());
        drop(entries);
        let (pool, key, tls) = (Arc::clone(&self.inner), key.clone(), Arc::clone(tls));
        let span = tracing::debug_span!("hbone_outbound", destination = %key.destination);
        tokio::spawn(pool.run_connection(key, tls, tx).instrument(span));
        Err(rx)
    }
}

// === impl Inner ===

impl<D: Dialer> Inner<D> {
    /// The connection's task: dials, publishes the connection, then drives it until it closes.
    async fn run_connection(
        self: Arc<Self>,
        key: PoolKey,
        tls: Arc<rustls::ClientConfig>,
        tx: watch::Sender<DialOutcome>,
    ) {
        let limit = self.settings.connect_timeout;
        let dialed = time::timeout(limit, client::dial(&self.dialer, key.destination, tls, &self.settings)).await;
        let Dialed { send, conn, peer } = match dialed.unwrap_or(Err(DialError::Timeout(limit))) {
            Ok(dialed) => dialed,
            Err(error) => {
                debug!(?error, "dialing failed");
                self.clear_dialing(&key);
                tx.send_replace(Some(Err(Arc::new(error))));
                return;
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(self.epoch, peer));
        self.install(
            &key,
            Pooled {
                id,
                send_request: send,
                state: Arc::clone(&state),
            },
        );
        tx.send_replace(Some(Ok(())));
        let (h2, idle_timeout) = (self.settings.h2.clone(), self.settings.idle_timeout);
        let pool = Arc::downgrade(&self);
        drop((self, tx));
        drive(conn, &h2, || expire(&pool, &key, id, idle_timeout), idle_timeout).await;
        state.retire();
        if let Some(pool) = pool.upgrade() {
            pool.remove(&key, id);
        }
    }
}

impl<D> Inner<D> {
    /// The pool's map is never left half-updated (no code that can panic runs under the lock), so a poisoned lock is
    /// still consistent.
    fn lock(&self) -> MutexGuard<'_, HashMap<PoolKey, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn install(&self, key: &PoolKey, conn: Pooled) {
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_default();
        entry.dialing = None;
        entry.conns.push(conn);
    }

    fn clear_dialing(&self, key: &PoolKey) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key) {
            entry.dialing = None;
            if entry.is_empty() {
                entries.remove(key);
            }
        }
    }

    fn remove(&self, key: &PoolKey, id: u64) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key) {
            entry.conns.retain(|conn| conn.id != id);
            if entry.is_empty() {
                entries.remove(key);
            }
        }
    }

    /// Removes connection `id` if it has been idle for `idle_timeout`; else returns when to check again. `None`: it
    /// was removed now or earlier, and needs no more checks.
    fn expire(&self, key: &PoolKey, id: u64, idle_timeout: Duration) -> Option<Instant> {
        let mut entries = self.lock();
        let entry = entries.get_mut(key)?;
        let index = entry.conns.iter().position(|conn| conn.id == id)?;
        let now = Instant::now();
        match entry.conns[index].state.idle_since() {
            None => return Some(now + idle_timeout),
            Some(since) if since + idle_timeout > now => return Some(since + idle_timeout),
            Some(_) => {}
        }
        debug!(destination = %key.destination, "releasing an idle connection");
        entry.conns.remove(index);
        if entry.is_empty() {
            entries.remove(key);
        }
        None
    }
}

fn expire<D>(pool: &Weak<Inner<D>>, key: &PoolKey, id: u64, idle_timeout: Duration) -> Option<Instant> {
    pool.upgrade()?.expire(key, id, idle_timeout)
}

/// Polls the connection (which moves every stream's bytes), sends keepalive PINGs and checks for idleness until the
/// connection ends. Once the pool has dropped its handle and the last stream is gone, h2 closes it with GOAWAY.
async fn drive(
    mut conn: Connection<TlsStream<Wire>, Bytes>,
    h2: &H2Settings,
    mut expire: impl FnMut() -> Option<Instant>,
    idle_timeout: Duration,
) {
    let mut keepalive = pin!(keepalive::run(conn.ping_pong(), h2));
    let mut idle = pin!(time::sleep(idle_timeout));
    let mut watching = true;
    loop {
        tokio::select! {
            result = &mut conn => {
                debug!(?result, "connection ended");
                return;
            }
            failure = &mut keepalive => {
                debug!(?failure, "keepalive failed; dropping the connection");
                return;
            }
            () = &mut idle, if watching => match expire() {
                Some(next) => idle.as_mut().reset(next),
                None => watching = false,
            },
        }
    }
}

// === impl Entry ===

impl Entry {
    /// A lease on the first usable connection with a free slot; unusable connections are dropped from the pool.
    fn reserve(&mut self, max_streams: usize) -> Option<Lease> {
        self.conns.retain_mut(Pooled::accepts_streams);
        self.conns
            .iter()
            .find(|conn| conn.has_room(max_streams))
            .map(Pooled::lease)
    }

    /// The dial in progress, unless its task died without an outcome.
    fn dial_in_progress(&self) -> Option<watch::Receiver<DialOutcome>> {
        self.dialing.as_ref().filter(|rx| rx.has_changed().is_ok()).cloned()
    }

    fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.dialing.is_none()
    }
}

// === impl Pooled ===

impl Pooled {
    /// Not retired, and no GOAWAY received (h2 refuses new streams after one, so skip it without an attempt).
    fn accepts_streams(&mut self) -> bool {
        // With no stream of its own pending, `poll_ready` only reads the connection's error and never registers the
        // waker.
        let ready = self.send_request.poll_ready(&mut Context::from_waker(Waker::noop()));
        let going_away = matches!(ready, Poll::Ready(Err(_)));
        self.state.usable.load(Ordering::Acquire) && !going_away
    }

    fn has_room(&self, max_streams: usize) -> bool {
        let max = max_streams.min(self.send_request.current_max_send_streams());
        self.state.active.load(Ordering::Acquire) < max
    }

    /// Called under the pool's lock, so that idle expiry (also under it) never races a new lease.
    fn lease(&self) -> Lease {
        self.state.active.fetch_add(1, Ordering::AcqRel);
        let stream = StreamLease {
            state: Arc::clone(&self.state),
        };
        Lease {
            send_request: self.send_request.clone(),
            stream,
        }
    }
}

// === impl ConnState ===

impl ConnState {
    fn new(epoch: Instant, peer: Option<Identity>) -> Self {
        let state = Self {
            active: AtomicUsize::new(0),
            last_used: AtomicU64::new(0),
            usable: AtomicBool::new(true),
            epoch,
            peer,
        };
        state.touch();
        state
    }

    fn touch(&self) {
        let nanos = Instant::now().saturating_duration_since(self.epoch).as_nanos();
        self.last_used
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// When the last stream ended, if none is open.
    fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.epoch + Duration::from_nanos(self.last_used.load(Ordering::Acquire)))
    }

    fn retire(&self) {
        self.usable.store(false, Ordering::Release);
    }
}

// === impl StreamLease ===

impl StreamLease {
    /// The identity the connection's server proved.
    pub(crate) fn peer_identity(&self) -> Option<&Identity> {
        self.state.peer.as_ref()
    }

    /// Takes the connection out of service if `error` shows it cannot carry new streams, and returns the error.
    pub(crate) fn failed(&self, error: ConnectError) -> ConnectError {
        let broken = match &error {
            ConnectError::Refused(_) => true,
            ConnectError::Stream(error) => error.is_io() || error.is_go_away(),
            _ => false,
        };
        if broken {
            self.state.retire();
        }
        error
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        // Stored before the count drops, so that whoever sees the connection idle also sees when it became so.
        self.state.touch();
        self.state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

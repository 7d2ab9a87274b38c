//! The source-answer cache on the adapter path (moka), before any view filter.
//!
//! Keyed by adapter + adapter definition + subject, so one entry serves every view and a
//! changed adapter never serves answers mapped by its old definition. Entries are weighed by an
//! estimate of the memory their mapped records hold; the total is bounded by `cache.max_bytes`.
//! One map holds each answer for `ttl + stale_if_error`: fresh within `ttl`, after that only
//! served (marked stale) when the source fails. (A second map for the stale window had its own
//! budget, so memory could reach twice `max_bytes`.) Errors are never cached.
//!
//! Concurrent misses for one key share one call, its answer and its failure alike: the first
//! miss starts the call as a task of its own, and the others (a `no-cache` read too) join it
//! and move its deadline out to theirs. No caller can cancel it by going away or reaching its
//! deadline, and each waits at most until its own deadline (the caller bounds the wait). Only
//! the call counts as one in the breaker and the metrics; waiting for it is no call. (The call
//! used to run under moka's per-key lock: a failure let each waiter make its own call in turn,
//! so ten reads of a failing source counted ten failures and opened its circuit.) The cache hit
//! path is untouched: one moka lookup, no lock, no allocation.
//!
//! An invalidation ([`SourceCache::invalidate_subject`]) also detaches the subject's calls in
//! flight: later reads start a new call, and an answer asked for before the invalidation is
//! never stored as fresh after it.
//!
//! With `cache.shared`, a second level in Redis ([`shared`]) sits behind this one: the shared
//! call of a miss first looks there (one lookup per call, so coalescing stays as it is, per
//! instance), serves a fresh answer from it as a cache hit and keeps one past its `ttl` as the
//! fallback should the source fail; only then does it call the source, and writes the answer
//! there in the background. The hit path never touches it.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::Op;

use crate::adapter::{SourceAnswer, SourceError};
use crate::bsn::Bsn;
use crate::resilience::Deadline;

pub mod shared;

use shared::Lookup;
pub use shared::SharedCache;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub adapter: Arc<str>,
    /// The adapter definition's fingerprint.
    pub version: Arc<str>,
    pub bsn: Bsn,
}

#[derive(Debug)]
pub struct Entry {
    pub answer: Arc<SourceAnswer>,
    pub stored: Instant,
    ttl: Duration,
    keep: Duration,
}

/// How an answer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Fetched from the source: by a call this request started.
    Fetched,
    /// Fetched from the source by a call already in flight for another request, which this
    /// request waited for.
    Joined,
    /// Served from cache, with its age.
    Cached(Duration),
    /// The source failed; the last good answer is served, with its age.
    Stale(Duration),
}

/// An entry lives for its whole stale window; a refresh restarts it.
struct KeepExpiry;
impl Expiry<CacheKey, Arc<Entry>> for KeepExpiry {
    fn expire_after_create(&self, _: &CacheKey, v: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(v.keep)
    }
    fn expire_after_update(
        &self,
        _: &CacheKey,
        v: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.keep)
    }
}

fn weigh(_: &CacheKey, v: &Arc<Entry>) -> u32 {
    u32::try_from(v.answer.heap_size()).unwrap_or(u32::MAX)
}

/// An entry for an answer from the shared cache, `age` old: fresh and kept here for what is
/// left of its `ttl` and stale window.
fn aged_entry(answer: SourceAnswer, policy: Policy, age: Duration) -> Arc<Entry> {
    let now = Instant::now();
    Arc::new(Entry {
        answer: Arc::new(answer),
        stored: now.checked_sub(age).unwrap_or(now),
        ttl: policy.ttl,
        keep: (policy.ttl + policy.stale_if_error).saturating_sub(age),
    })
}

/// Per-adapter cache policy.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub ttl: Duration,
    pub stale_if_error: Duration,
}

type Hasher = foldhash::fast::RandomState;

/// The outcome of a shared call, as every waiter sees it.
type SharedOutcome = Shared<BoxFuture<'static, Result<Got, SourceError>>>;

/// The answer of a shared call.
#[derive(Clone)]
struct Got {
    answer: Arc<SourceAnswer>,
    /// It came from the shared cache, not the source: when it was stored there (its age is
    /// told from it).
    shared: Option<Instant>,
}

/// A call in flight for one key.
#[derive(Clone)]
struct Flight {
    outcome: SharedOutcome,
    state: Arc<FlightState>,
}

struct FlightState {
    /// The latest deadline of the requests waiting for the call.
    deadline: Deadline,
    /// The subject was invalidated while the call was out: its answer is not cached.
    invalidated: AtomicBool,
}

/// Shards of the finished-call counters.
const SHARDS: usize = 64;

/// The calls in flight, by key. Touched on misses only.
struct Flights {
    running: Mutex<HashMap<CacheKey, Flight, Hasher>>,
    /// Calls finished per shard of keys, counted once their answer is in the cache. A miss that
    /// finds no call in flight looks in the cache again when a call of its shard finished since
    /// it last looked: that call may have been its key's, stored just after its lookup.
    finished: [AtomicU64; SHARDS],
    hasher: Hasher,
}

/// Where a miss stands, decided under the lock of the calls in flight.
enum Slot<'a> {
    /// A call is in flight for the key: wait for it.
    Join(Flight),
    /// A call for a key of the same shard finished meanwhile: look in the cache again.
    LookAgain,
    /// No call in flight: start one (the lock is still held).
    Vacant(MutexGuard<'a, HashMap<CacheKey, Flight, Hasher>>),
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<CacheKey, Flight, Hasher>> {
        // A poisoned lock only means a panic elsewhere mid-update; the map is still usable.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shard(&self, key: &CacheKey) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    /// Joins the call in flight for `key` (moving its deadline out to `deadline`), or says why
    /// not. `seen`: the shard's finished count when the caller looked in the cache (`None`
    /// when it did not look: a `no-cache` read).
    fn slot(&self, key: &CacheKey, deadline: Instant, seen: Option<(usize, u64)>) -> Slot<'_> {
        let running = self.lock();
        if let Some(f) = running.get(key) {
            f.state.deadline.extend(deadline);
            return Slot::Join(f.clone());
        }
        match seen {
            Some((shard, n)) if self.finished[shard].load(Ordering::Acquire) != n => {
                Slot::LookAgain
            }
            _ => Slot::Vacant(running),
        }
    }

    /// The call for `key` is over: it leaves the map (unless an invalidation took it out
    /// already). Returns whether the subject was invalidated while it was out.
    fn finish(&self, key: &CacheKey, state: &Arc<FlightState>) -> bool {
        let mut running = self.lock();
        if running
            .get(key)
            .is_some_and(|f| Arc::ptr_eq(&f.state, state))
        {
            running.remove(key);
        }
        self.finished[self.shard(key)].fetch_add(1, Ordering::Release);
        // Read under the lock, which the invalidation takes to set it.
        state.invalidated.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
pub struct SourceCache {
    /// Keyed by adapter, descriptor version and BSN, hashed with foldhash (seeded per
    /// process): a dossier looks up one key per source, and SipHash was a visible share of it.
    entries: Cache<CacheKey, Arc<Entry>, Hasher>,
    flights: Arc<Flights>,
    enabled: bool,
    /// The shared second level (`cache.shared`), if any; set again on a reload that changes it.
    shared: Arc<ArcSwapOption<SharedCache>>,
}

/// Looks at most this often for a stored answer before a miss starts its own call.
const LOOKS: u32 = 4;

impl SourceCache {
    pub fn new(max_bytes: u64, enabled: bool) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(weigh)
            .expire_after(KeepExpiry)
            .support_invalidation_closures()
            .build_with_hasher(Hasher::default());
        let flights = Arc::new(Flights {
            running: Mutex::new(HashMap::with_hasher(Hasher::default())),
            finished: std::array::from_fn(|_| AtomicU64::new(0)),
            hasher: Hasher::default(),
        });
        SourceCache {
            entries,
            flights,
            enabled,
            shared: Arc::new(ArcSwapOption::empty()),
        }
    }

    /// Puts a shared second level behind this cache (or takes it away): calls that start from
    /// now on use it.
    pub fn set_shared(&self, shared: Option<Arc<SharedCache>>) {
        self.shared.store(shared);
    }

    /// The shared second level, if there is one.
    pub fn shared(&self) -> Option<Arc<SharedCache>> {
        self.shared.load_full()
    }

    /// Gets the answer for `key`. A miss joins the call in flight for `key`, or starts one with
    /// `call` (given the call's deadline, which joiners move out); `bypass` (`no-cache`) skips
    /// the cached answer but still joins a call in flight. `deadline` is the caller's own: the
    /// caller bounds its wait by it (dropping this future never cancels a shared call).
    pub async fn get_or_fetch<C, F>(
        &self,
        key: CacheKey,
        policy: Policy,
        bypass: bool,
        deadline: Instant,
        call: C,
    ) -> Result<(Arc<SourceAnswer>, Freshness), SourceError>
    where
        C: FnOnce(Deadline) -> F,
        F: Future<Output = Result<SourceAnswer, SourceError>> + Send + 'static,
    {
        if !self.enabled || policy.ttl.is_zero() {
            return call(Deadline::at(deadline))
                .await
                .map(|a| (Arc::new(a), Freshness::Fetched));
        }
        if let Some(hit) = self.hit(&key, policy, bypass, Instant::now()).await {
            return Ok(hit);
        }
        // Boxed: the hit path's future stays small (it was a few percent of a cached dossier).
        Box::pin(self.miss(key, policy, bypass, deadline, call)).await
    }

    /// A miss, a stale answer or `no-cache`: join the call in flight for `key`, or start one.
    async fn miss<C, F>(
        &self,
        key: CacheKey,
        policy: Policy,
        bypass: bool,
        deadline: Instant,
        call: C,
    ) -> Result<(Arc<SourceAnswer>, Freshness), SourceError>
    where
        C: FnOnce(Deadline) -> F,
        F: Future<Output = Result<SourceAnswer, SourceError>> + Send + 'static,
    {
        let started = Instant::now();
        let shard = self.flights.shard(&key);
        let mut looks = 0;
        let mut call = Some(call);
        let mut asked_again = false;
        let outcome = loop {
            // Count, then look: a call that stores the answer after this look is still in the
            // map below, or has moved the count.
            let seen = if !bypass && looks < LOOKS {
                let n = self.flights.finished[shard].load(Ordering::Acquire);
                if let Some(hit) = self.fresh(&key, Instant::now()).await {
                    return Ok(hit);
                }
                Some((shard, n))
            } else {
                None
            };
            looks += 1;
            let (flight, joined) = match self.flights.slot(&key, deadline, seen) {
                Slot::Join(f) => (f, true),
                Slot::LookAgain => continue,
                Slot::Vacant(mut running) => {
                    // Always there: a caller that started a call does not come round again.
                    let Some(call) = call.take() else {
                        return Err(SourceError::Transport(
                            "the call to the source was already made".into(),
                        ));
                    };
                    let deadline = Deadline::at(deadline);
                    let f = self.start(
                        key.clone(),
                        policy,
                        bypass,
                        deadline.clone(),
                        call(deadline),
                    );
                    running.insert(key.clone(), f.clone());
                    (f, false)
                }
            };
            match flight.outcome.await {
                // A `no-cache` read that joined a call the shared cache answered asks the
                // source itself (a call of its own reads no cache); once.
                Ok(Got {
                    shared: Some(_), ..
                }) if bypass && call.is_some() && !asked_again => {
                    asked_again = true;
                    continue;
                }
                Ok(got) => {
                    let fresh = match got.shared {
                        Some(stored) => Freshness::Cached(stored.elapsed()),
                        None if joined => Freshness::Joined,
                        None => Freshness::Fetched,
                    };
                    break Ok((got.answer, fresh));
                }
                Err(err) => break Err(err),
            }
        };
        match outcome {
            Ok(hit) => Ok(hit),
            Err(err) => match self.stale_answer(&key, policy).await {
                Some(hit) => Ok(hit),
                // The shared call's timeout, told as this caller's own wait.
                None => Err(match err {
                    SourceError::Timeout(_) => {
                        SourceError::Timeout(started.elapsed().as_millis() as u64)
                    }
                    e => e,
                }),
            },
        }
    }

    /// The fresh answer for `key` at `now`, if any.
    async fn fresh(&self, key: &CacheKey, now: Instant) -> Option<(Arc<SourceAnswer>, Freshness)> {
        let e = self.entries.get(key).await?;
        // One clock reading decides freshness and gives the age.
        let age = now.saturating_duration_since(e.stored);
        (age < e.ttl).then(|| (e.answer.clone(), Freshness::Cached(age)))
    }

    /// Starts the call for `key` as a task of its own: it runs to its end whoever waits. It
    /// looks in the shared cache first (unless `bypass`), and calls the source only when that
    /// has no fresh answer.
    fn start<F>(
        &self,
        key: CacheKey,
        policy: Policy,
        bypass: bool,
        deadline: Deadline,
        call: F,
    ) -> Flight
    where
        F: Future<Output = Result<SourceAnswer, SourceError>> + Send + 'static,
    {
        let state = Arc::new(FlightState {
            deadline,
            invalidated: AtomicBool::new(false),
        });
        let cache = self.clone();
        let own = state.clone();
        // Taken once: a reload that changes `cache.shared` meanwhile does not split this call.
        let shared = self.shared.load_full();
        let task = tokio::spawn(async move {
            // Before anything is read: the answer is not written to the shared cache when
            // the subject is invalidated after this.
            let epoch = shared.as_ref().map(|s| s.epoch(&key.bsn));
            if let Some(s) = shared.as_ref().filter(|_| !bypass) {
                match s.get(&key, policy).await {
                    Lookup::Fresh(answer, age) => {
                        // The source call is dropped unpolled: it was never made.
                        let entry = aged_entry(answer, policy, age);
                        let got = Got {
                            answer: entry.answer.clone(),
                            shared: Some(entry.stored),
                        };
                        cache.store(key, &own, entry).await;
                        return Ok(got);
                    }
                    Lookup::Stale(answer, age) => {
                        cache
                            .keep_stale(&key, &own, aged_entry(answer, policy, age))
                            .await
                    }
                    Lookup::Miss => {}
                }
            }
            let result = call.await;
            cache
                .settle(key, &own, policy, result, shared.zip(epoch))
                .await
        });
        let outcome = async move {
            task.await.unwrap_or_else(|e| {
                Err(SourceError::Transport(format!(
                    "the call to the source ended unexpectedly: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        Flight { outcome, state }
    }

    /// Stores a source's answer here (and, in the background, in the shared cache with the
    /// subject's invalidation count when the call began), unless its subject was invalidated
    /// meanwhile; takes the call out of the map.
    async fn settle(
        &self,
        key: CacheKey,
        state: &Arc<FlightState>,
        policy: Policy,
        result: Result<SourceAnswer, SourceError>,
        shared: Option<(Arc<SharedCache>, u64)>,
    ) -> Result<Got, SourceError> {
        let answer = match result {
            Ok(a) => Arc::new(a),
            Err(e) => {
                self.flights.finish(&key, state);
                return Err(e);
            }
        };
        let entry = Arc::new(Entry {
            answer: answer.clone(),
            stored: Instant::now(),
            ttl: policy.ttl,
            keep: policy.ttl + policy.stale_if_error,
        });
        // The wall-clock time other instances reckon its age from (only with a shared cache).
        let shared = shared.map(|(s, epoch)| (s, epoch, chrono::Utc::now()));
        if self.store(key.clone(), state, entry).await
            && let Some((s, epoch, cached_at)) = shared
        {
            s.spawn_put(key, answer.clone(), policy, cached_at, epoch);
        }
        Ok(Got {
            answer,
            shared: None,
        })
    }

    /// Stores a call's answer (unless its subject was invalidated meanwhile) and takes the call
    /// out of the map, in that order. Whether it stays stored.
    async fn store(&self, key: CacheKey, state: &Arc<FlightState>, entry: Arc<Entry>) -> bool {
        let store = !state.invalidated.load(Ordering::Acquire);
        if store {
            self.entries.insert(key.clone(), entry.clone()).await;
        }
        if self.flights.finish(&key, state) && store {
            // Invalidated while the answer was being stored, maybe before moka registered the
            // invalidation (which spares entries stored after it): take it out again, but not
            // a newer answer stored meanwhile.
            self.remove_if_ours(key, &entry).await;
            return false;
        }
        store
    }

    /// Keeps an answer past its `ttl` from the shared cache as the fallback should the source
    /// fail, unless this cache holds a younger one or the subject was invalidated.
    async fn keep_stale(&self, key: &CacheKey, state: &FlightState, entry: Arc<Entry>) {
        if state.invalidated.load(Ordering::Acquire) {
            return;
        }
        let _ = self
            .entries
            .entry(key.clone())
            .and_compute_with(|current| {
                let younger = current.is_some_and(|c| c.value().stored >= entry.stored);
                std::future::ready(if younger {
                    Op::Nop
                } else {
                    Op::Put(entry.clone())
                })
            })
            .await;
        // Set before moka registers the invalidation, which spares entries stored after it.
        if state.invalidated.load(Ordering::Acquire) {
            self.remove_if_ours(key.clone(), &entry).await;
        }
    }

    /// Takes `entry` out, but not a newer answer stored under its key meanwhile.
    async fn remove_if_ours(&self, key: CacheKey, entry: &Arc<Entry>) {
        let _ = self
            .entries
            .entry(key)
            .and_compute_with(|current| {
                let ours = current.is_some_and(|c| Arc::ptr_eq(c.value(), entry));
                std::future::ready(if ours { Op::Remove } else { Op::Nop })
            })
            .await;
    }

    /// A fresh answer for `key` from this process's cache, if it has one and may use it (the
    /// cache is on, the source's `ttl` is not zero, no `no-cache`): the lookup
    /// [`get_or_fetch`](Self::get_or_fetch) starts with, for a caller that keeps the rest of
    /// the way out of its hit path. Its age is counted at `now` (a fan-out's start: one clock
    /// reading for all of its lookups).
    pub async fn hit(
        &self,
        key: &CacheKey,
        policy: Policy,
        bypass: bool,
        now: Instant,
    ) -> Option<(Arc<SourceAnswer>, Freshness)> {
        if bypass || !self.enabled || policy.ttl.is_zero() {
            return None;
        }
        self.fresh(key, now).await
    }

    /// The last good answer within the stale window, if any.
    pub async fn stale_answer(
        &self,
        key: &CacheKey,
        policy: Policy,
    ) -> Option<(Arc<SourceAnswer>, Freshness)> {
        if !self.enabled || policy.stale_if_error.is_zero() {
            return None;
        }
        let e = self.entries.get(key).await?;
        let age = e.stored.elapsed();
        (age <= policy.ttl + policy.stale_if_error)
            .then(|| (e.answer.clone(), Freshness::Stale(age)))
    }

    /// Drops every entry of one subject (after an application, or on an operator's request),
    /// and detaches its calls in flight: their answers are not cached, and later reads start
    /// new calls.
    pub fn invalidate_subject(&self, bsn: Bsn) {
        drop(self.invalidate(bsn));
    }

    /// [`SourceCache::invalidate_subject`], returning once the shared cache has dropped the
    /// subject too (or after `wait`, when Redis is slow or down: the delete goes on in the
    /// background). Before telling other instances, so that none of them reads the old
    /// answers back from Redis.
    pub async fn purge_subject(&self, bsn: Bsn, wait: Duration) {
        if let Some(shared) = self.invalidate(bsn) {
            let _ = tokio::time::timeout(wait, shared).await;
        }
    }

    fn invalidate(&self, bsn: Bsn) -> Option<tokio::task::JoinHandle<()>> {
        self.flights.lock().retain(|k, f| {
            if k.bsn != bsn {
                return true;
            }
            f.state.invalidated.store(true, Ordering::Release);
            false
        });
        // Registered after the flags are set: a call that found its flag unset stored its
        // answer before this, and this removes it.
        // Only fails when invalidation closures are not enabled, and they are.
        let _ = self.entries.invalidate_entries_if(move |k, _| k.bsn == bsn);
        // And the subject's hash in the shared cache, in the background.
        self.shared.load_full().and_then(|s| s.invalidate(bsn))
    }

    /// Entry count and weighted size (bytes), fresh and stale answers together.
    pub fn stats(&self) -> (u64, u64) {
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    /// Runs pending maintenance (tests and stats).
    pub async fn sync(&self) {
        self.entries.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Semaphore;

    fn key() -> CacheKey {
        CacheKey {
            adapter: Arc::from("a"),
            version: Arc::from("v1"),
            bsn: Bsn::parse("999993653").unwrap(),
        }
    }

    fn answer() -> SourceAnswer {
        SourceAnswer {
            adapter: Arc::from("a"),
            organisation: Arc::from("o"),
            fetched_at: chrono::Utc::now(),
            sections: crate::mapping::Sections::new(),
            bytes: 0,
        }
    }

    const POLICY: Policy = Policy {
        ttl: Duration::from_secs(60),
        stale_if_error: Duration::from_secs(60),
    };

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    /// A source whose calls are counted and answer `result` once the gate lets them.
    #[derive(Clone)]
    struct Source {
        calls: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
        result: Result<(), SourceError>,
    }

    impl Source {
        fn new(result: Result<(), SourceError>) -> Source {
            Source {
                calls: Arc::new(AtomicUsize::new(0)),
                gate: Arc::new(Semaphore::new(0)),
                result,
            }
        }

        fn call(
            &self,
        ) -> impl FnOnce(Deadline) -> BoxFuture<'static, Result<SourceAnswer, SourceError>>
        {
            let me = self.clone();
            move |_| {
                // Counted when the call is made, not when its task first runs.
                me.calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let _ = me.gate.acquire().await.map(|p| p.forget());
                    me.result.clone().map(|()| answer())
                }
                .boxed()
            }
        }

        fn open(&self) {
            self.gate.add_permits(1000);
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    async fn read(
        cache: &SourceCache,
        src: &Source,
        bypass: bool,
    ) -> Result<(Arc<SourceAnswer>, Freshness), SourceError> {
        cache
            .get_or_fetch(key(), POLICY, bypass, later(), src.call())
            .await
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_call_and_its_answer_is_cached() {
        let cache = SourceCache::new(1 << 20, true);
        let src = Source::new(Ok(()));
        let reads = futures::future::join_all((0..10).map(|i| read(&cache, &src, i % 2 == 1)));
        let (all, ()) = tokio::join!(reads, async { src.open() });
        assert_eq!(src.calls(), 1);
        let kinds: Vec<Freshness> = all.into_iter().map(|r| r.unwrap().1).collect();
        assert_eq!(kinds[0], Freshness::Fetched);
        assert!(
            kinds[1..].iter().all(|k| *k == Freshness::Joined),
            "{kinds:?}"
        );
        let r = read(&cache, &src, false).await.unwrap();
        assert!(matches!(r.1, Freshness::Cached(_)), "{r:?}");
        assert_eq!(src.calls(), 1);
    }

    #[tokio::test]
    async fn a_hit_is_a_fresh_answer_the_read_may_use_and_nothing_else() {
        let cache = SourceCache::new(1 << 20, true);
        let now = Instant::now;
        assert!(
            cache.hit(&key(), POLICY, false, now()).await.is_none(),
            "empty"
        );
        let src = Source::new(Ok(()));
        src.open();
        read(&cache, &src, false).await.unwrap();
        let hit = cache.hit(&key(), POLICY, false, now()).await;
        assert!(matches!(hit, Some((_, Freshness::Cached(_)))), "{hit:?}");
        // The age is counted at the `now` given: later, older; past the ttl, no hit.
        let later = cache
            .hit(&key(), POLICY, false, now() + POLICY.ttl / 2)
            .await;
        assert!(
            matches!(later, Some((_, Freshness::Cached(age))) if age >= POLICY.ttl / 2),
            "{later:?}"
        );
        assert!(
            cache
                .hit(&key(), POLICY, false, now() + POLICY.ttl)
                .await
                .is_none()
        );
        // `no-cache`, or a source that is not cached: no hit.
        assert!(cache.hit(&key(), POLICY, true, now()).await.is_none());
        let uncached = Policy {
            ttl: Duration::ZERO,
            ..POLICY
        };
        assert!(cache.hit(&key(), uncached, false, now()).await.is_none());
        assert_eq!(src.calls(), 1, "a lookup never calls the source");
        // A cache that is off has no hits, even for what was read through it.
        let off = SourceCache::new(1 << 20, false);
        read(&off, &src, false).await.unwrap();
        assert!(off.hit(&key(), POLICY, false, now()).await.is_none(), "off");
    }

    #[tokio::test]
    async fn a_failure_is_shared_too_and_each_waiter_falls_back_to_the_stale_answer() {
        let cache = SourceCache::new(1 << 20, true);
        let failing = Source::new(Err(SourceError::Http {
            status: 500,
            detail: None,
        }));
        let reads = futures::future::join_all((0..10).map(|_| read(&cache, &failing, false)));
        let (all, ()) = tokio::join!(reads, async { failing.open() });
        assert_eq!(failing.calls(), 1);
        assert!(
            all.iter()
                .all(|r| matches!(r, Err(SourceError::Http { status: 500, .. })))
        );
        // With a good answer stored, a failed refresh (no-cache) serves it to every waiter,
        // marked stale.
        let good = Source::new(Ok(()));
        good.open();
        read(&cache, &good, false).await.unwrap();
        let failing = Source::new(Err(SourceError::Unavailable));
        let reads = futures::future::join_all((0..3).map(|_| read(&cache, &failing, true)));
        let (all, ()) = tokio::join!(reads, async { failing.open() });
        assert_eq!(failing.calls(), 1);
        assert!(
            all.iter()
                .all(|r| matches!(r, Ok((_, Freshness::Stale(_))))),
            "{all:?}"
        );
    }

    #[tokio::test]
    async fn the_call_goes_on_when_the_request_that_started_it_goes_away() {
        let cache = SourceCache::new(1 << 20, true);
        let src = Source::new(Ok(()));
        {
            let mut first = std::pin::pin!(read(&cache, &src, false));
            assert!(futures::poll!(first.as_mut()).is_pending());
            // Dropped here: the caller hung up.
        }
        let second = read(&cache, &src, false);
        let (r, ()) = tokio::join!(second, async { src.open() });
        assert_eq!(r.unwrap().1, Freshness::Joined);
        assert_eq!(src.calls(), 1);
    }

    #[tokio::test]
    async fn a_subject_invalidated_during_a_call_does_not_get_its_answer_cached() {
        let cache = SourceCache::new(1 << 20, true);
        let old = Source::new(Ok(()));
        let mut first = std::pin::pin!(read(&cache, &old, false));
        assert!(futures::poll!(first.as_mut()).is_pending());
        cache.invalidate_subject(key().bsn);
        // A read after the invalidation does not join the call made before it.
        let new = Source::new(Ok(()));
        let mut second = std::pin::pin!(read(&cache, &new, false));
        assert!(futures::poll!(second.as_mut()).is_pending());
        assert_eq!(new.calls(), 1);
        old.open();
        assert_eq!(first.await.unwrap().1, Freshness::Fetched);
        cache.sync().await;
        assert_eq!(cache.stats().0, 0, "the old answer was not stored");
        new.open();
        assert_eq!(second.await.unwrap().1, Freshness::Fetched);
        let r = read(&cache, &new, false).await.unwrap();
        assert!(
            matches!(r.1, Freshness::Cached(_)),
            "the new answer is cached: {r:?}"
        );
    }

    #[tokio::test]
    async fn a_disabled_cache_calls_every_time() {
        let cache = SourceCache::new(1 << 20, false);
        let src = Source::new(Ok(()));
        src.open();
        for _ in 0..3 {
            assert_eq!(
                read(&cache, &src, false).await.unwrap().1,
                Freshness::Fetched
            );
        }
        assert_eq!(src.calls(), 3);
    }
}

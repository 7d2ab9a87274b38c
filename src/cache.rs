//! The source-answer cache on the adapter path (moka), before any view filter.
//!
//! Keyed by adapter + adapter definition + subject, so one entry serves every view and a
//! changed adapter never serves answers mapped by its old definition. Entries are weighed by an
//! estimate of the memory their mapped records hold; the total is bounded by `cache.max_bytes`.
//! One map holds each answer for `ttl + stale_if_error`: fresh within `ttl`, after that only
//! served (marked stale) when the source fails. (A second map for the stale window had its own
//! budget, so memory could reach twice `max_bytes`.) Concurrent misses for one key make one
//! upstream call: a miss fetches under moka's per-key lock, and the callers waiting on that lock
//! find the fresh answer. Errors are never cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};

use crate::adapter::{SourceAnswer, SourceError};
use crate::bsn::Bsn;

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
    /// Fetched from the source for this request.
    Fetched,
    /// Served from cache (or from a concurrent request's fetch), with its age.
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

impl Entry {
    fn is_fresh(&self) -> bool {
        self.stored.elapsed() < self.ttl
    }
}

fn weigh(_: &CacheKey, v: &Arc<Entry>) -> u32 {
    u32::try_from(v.answer.heap_size()).unwrap_or(u32::MAX)
}

/// Per-adapter cache policy.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub ttl: Duration,
    pub stale_if_error: Duration,
}

#[derive(Clone)]
pub struct SourceCache {
    /// Keyed by adapter, descriptor version and BSN, hashed with foldhash (seeded per
    /// process): a dossier looks up one key per source, and SipHash was a visible share of it.
    entries: Cache<CacheKey, Arc<Entry>, foldhash::fast::RandomState>,
    enabled: bool,
}

impl SourceCache {
    pub fn new(max_bytes: u64, enabled: bool) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(weigh)
            .expire_after(KeepExpiry)
            .support_invalidation_closures()
            .build_with_hasher(foldhash::fast::RandomState::default());
        SourceCache { entries, enabled }
    }

    /// Gets the answer for `key`, calling `fetch` at most once across concurrent callers.
    pub async fn get_or_fetch<F>(
        &self,
        key: CacheKey,
        policy: Policy,
        bypass: bool,
        fetch: F,
    ) -> Result<(Arc<SourceAnswer>, Freshness), SourceError>
    where
        F: Future<Output = Result<SourceAnswer, SourceError>>,
    {
        if !self.enabled || policy.ttl.is_zero() {
            return fetch.await.map(|a| (Arc::new(a), Freshness::Fetched));
        }
        if !bypass && let Some(e) = self.entries.get(&key).await {
            // One clock read decides freshness and gives the age.
            let age = e.stored.elapsed();
            if age < e.ttl {
                return Ok((e.answer.clone(), Freshness::Cached(age)));
            }
        }
        // A miss, or only a stale answer: fetch under the key's lock. Callers that wait on the
        // lock find the answer just fetched and do not call the source again.
        let result = self
            .entries
            .entry(key.clone())
            .and_try_compute_with(|current| async move {
                if !bypass && current.as_ref().is_some_and(|c| c.value().is_fresh()) {
                    return Ok(Op::Nop);
                }
                let answer = fetch.await?;
                Ok::<_, SourceError>(Op::Put(Arc::new(Entry {
                    answer: Arc::new(answer),
                    stored: Instant::now(),
                    ttl: policy.ttl,
                    keep: policy.ttl + policy.stale_if_error,
                })))
            })
            .await;
        match result {
            Ok(CompResult::Inserted(e) | CompResult::ReplacedWith(e)) => {
                Ok((e.into_value().answer.clone(), Freshness::Fetched))
            }
            Ok(CompResult::Unchanged(e)) => {
                let e = e.into_value();
                Ok((e.answer.clone(), Freshness::Cached(e.stored.elapsed())))
            }
            // Not produced by the closure above (it never removes).
            Ok(CompResult::StillNone(_) | CompResult::Removed(_)) => Err(SourceError::Unavailable),
            Err(err) => match self.stale_answer(&key, policy).await {
                Some(hit) => Ok(hit),
                None => Err(err),
            },
        }
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

    /// Drops every entry of one subject (after an application, or on an operator's request).
    pub fn invalidate_subject(&self, bsn: Bsn) {
        // Only fails when invalidation closures are not enabled, and they are.
        let _ = self.entries.invalidate_entries_if(move |k, _| k.bsn == bsn);
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
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    #[tokio::test]
    async fn concurrent_misses_make_one_call_and_a_failed_refresh_serves_the_stale_answer() {
        let cache = SourceCache::new(1 << 20, true);
        let calls = AtomicUsize::new(0);
        let policy = Policy {
            ttl: Duration::from_millis(20),
            stale_if_error: Duration::from_secs(60),
        };
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(answer())
        };
        let all = futures::future::join_all(
            (0..10).map(|_| cache.get_or_fetch(key(), policy, false, fetch())),
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let fetched = all
            .iter()
            .filter(|r| matches!(r, Ok((_, Freshness::Fetched))))
            .count();
        assert_eq!(fetched, 1);
        // After the TTL the source fails: the last good answer comes back, marked stale.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let r = cache
            .get_or_fetch(key(), policy, false, async {
                Err(SourceError::Unavailable)
            })
            .await;
        assert!(matches!(r, Ok((_, Freshness::Stale(_)))), "{r:?}");
        // And a successful refresh replaces it.
        let r = cache.get_or_fetch(key(), policy, false, fetch()).await;
        assert!(matches!(r, Ok((_, Freshness::Fetched))), "{r:?}");
        cache.sync().await;
        assert_eq!(cache.stats().0, 1);
    }
}

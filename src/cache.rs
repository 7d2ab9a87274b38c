//! The source-answer cache on the adapter path (moka), before any view filter.
//!
//! Keyed by adapter + adapter definition + subject, so one entry serves every view and a
//! changed adapter never serves answers mapped by its old definition. Entries are weighed by an
//! estimate of the memory their mapped records hold; the total is bounded by `cache.max_bytes`. Concurrent misses
//! for one key make one upstream call (moka's `try_get_with` coalesces). Errors are never
//! cached. A second, longer-lived map keeps the last good answer for `stale_if_error`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

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

struct FreshExpiry;
impl Expiry<CacheKey, Arc<Entry>> for FreshExpiry {
    fn expire_after_create(&self, _: &CacheKey, v: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}
struct StaleExpiry;
impl Expiry<CacheKey, Arc<Entry>> for StaleExpiry {
    fn expire_after_create(&self, _: &CacheKey, v: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(v.keep)
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
    fresh: Cache<CacheKey, Arc<Entry>>,
    stale: Cache<CacheKey, Arc<Entry>>,
    enabled: bool,
}

impl SourceCache {
    pub fn new(max_bytes: u64, enabled: bool) -> Self {
        let fresh = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(weigh)
            .expire_after(FreshExpiry)
            .support_invalidation_closures()
            .build();
        // The stale map shares the answers (Arc) with the fresh one; it costs its own index.
        let stale = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(weigh)
            .expire_after(StaleExpiry)
            .support_invalidation_closures()
            .build();
        SourceCache {
            fresh,
            stale,
            enabled,
        }
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
        let make = |a: SourceAnswer| {
            Arc::new(Entry {
                answer: Arc::new(a),
                stored: Instant::now(),
                ttl: policy.ttl,
                keep: policy.ttl + policy.stale_if_error,
            })
        };
        let result: Result<(Arc<Entry>, bool), Arc<SourceError>> = if bypass {
            match fetch.await {
                Ok(a) => {
                    let e = make(a);
                    self.fresh.insert(key.clone(), e.clone()).await;
                    Ok((e, true))
                }
                Err(e) => Err(Arc::new(e)),
            }
        } else {
            let ran = AtomicBool::new(false);
            let r = self
                .fresh
                .try_get_with(key.clone(), async {
                    ran.store(true, Ordering::Relaxed);
                    fetch.await.map(make)
                })
                .await;
            r.map(|e| (e, ran.load(Ordering::Relaxed)))
        };
        match result {
            Ok((e, fetched)) => {
                if fetched && !policy.stale_if_error.is_zero() {
                    self.stale.insert(key, e.clone()).await;
                }
                let f = if fetched {
                    Freshness::Fetched
                } else {
                    Freshness::Cached(e.stored.elapsed())
                };
                Ok((e.answer.clone(), f))
            }
            Err(err) => match self.stale_answer(&key, policy).await {
                Some(hit) => Ok(hit),
                None => Err((*err).clone()),
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
        let e = self.stale.get(key).await?;
        let age = e.stored.elapsed();
        (age <= policy.ttl + policy.stale_if_error)
            .then(|| (e.answer.clone(), Freshness::Stale(age)))
    }

    /// Drops every entry of one subject (after an application, or on an operator's request).
    pub fn invalidate_subject(&self, bsn: Bsn) {
        // Only fails when invalidation closures are not enabled, and they are.
        let _ = self.fresh.invalidate_entries_if(move |k, _| k.bsn == bsn);
        let _ = self.stale.invalidate_entries_if(move |k, _| k.bsn == bsn);
    }

    /// Entry count and weighted size (bytes) of the fresh map.
    pub fn stats(&self) -> (u64, u64) {
        (self.fresh.entry_count(), self.fresh.weighted_size())
    }

    /// Runs pending maintenance (tests and stats).
    pub async fn sync(&self) {
        self.fresh.run_pending_tasks().await;
        self.stale.run_pending_tasks().await;
    }
}

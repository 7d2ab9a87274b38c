//! The shared second level of the source cache, in Redis (`cache.shared`).
//!
//! Instances behind one load balancer each keep their own first level (moka, [`super`]); this
//! level lets an answer one instance fetched serve the others. It owns the Redis client,
//! sealing and opening values, naming subjects, and a small breaker. It must not make a request
//! fail, nor let one wait longer than `budget` for Redis, nor put a BSN or any personal data in
//! clear in Redis. Coalescing stays per instance: the caller ([`super::SourceCache`]) makes one
//! lookup per call it shares.
//!
//! **Layout.** One hash per subject, `{prefix}:subject:{hex HMAC-SHA-256(name key, BSN)}`; one
//! field per adapter and descriptor version, `{adapter}:{version}`; the value is a random
//! 96-bit nonce followed by the AES-256-GCM ciphertext and tag of the answer (JSON: decimals
//! stay the text the source sent) with the wall-clock time it was fetched. The additional data
//! is the hash's name and the field, so a value moved to another subject or adapter does not
//! open. Redis 7.0 has no per-field expiry: a write sets the hash's expiry to at least its
//! entry's `ttl + stale_if_error` (`PEXPIRE .. NX`, then `PEXPIRE .. GT`: the hash lives as
//! long as its longest entry), and a reader ignores a field older than its own.
//!
//! **Keys.** `cache.shared.key` is not used as it is: the seal key and the name key are each
//! derived from it (HMAC-SHA-256 over a label), so one key never does two jobs.
//!
//! **Redis slow or down.** Every call is bounded by `budget`. A failure or a timeout skips
//! Redis for a second (then one call probes it), so a Redis that is down costs a request
//! nothing. The connection is made lazily, in the background: the gateway starts without
//! Redis, and the `ConnectionManager` reconnects by itself. Writes and deletes run in tasks of
//! their own: no request waits for them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use super::{CacheKey, Policy};
use crate::bsn::Bsn;
use crate::dossier::SourceAnswer;
use crate::lograte::LogGate;
use crate::mapping::Sections;
use crate::metrics::Metrics;
use crate::model::{SharedCacheConfig, SharedKeyError};

/// How long Redis is skipped after a failure or a timeout.
const SKIP_FOR: Duration = Duration::from_secs(1);
/// Each (re)connection attempt, in the background (no request waits for it past `budget`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a subject's delete is tried while Redis is skipped or failing (once per skip).
const DELETE_TRIES: u32 = 5;
/// Shards of the invalidation counters.
const EPOCH_SHARDS: usize = 64;
/// The results a status page shows, per operation.
const READ_RESULTS: &[&str] = &[
    "hit", "stale", "miss", "invalid", "error", "timeout", "skipped",
];
const WRITE_RESULTS: &[&str] = &["ok", "error", "timeout", "skipped"];

/// Why a shared cache could not be built (the config load checks the same, so a loaded config
/// never gets here).
#[derive(Debug, thiserror::Error)]
pub enum SharedCacheError {
    #[error(transparent)]
    Key(#[from] SharedKeyError),
    #[error("`cache.shared.url` is not a Redis URL: {0}")]
    Url(String),
    #[error("cannot set up AES-256-GCM for `cache.shared`")]
    Crypto,
}

/// What the shared cache holds for one key.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Younger than the adapter's `ttl`: serve it, with its age.
    Fresh(SourceAnswer, Duration),
    /// Past `ttl` but within `stale_if_error`: the fallback if the source fails.
    Stale(SourceAnswer, Duration),
    /// Nothing usable (absent, expired, not opened, or Redis skipped or failing).
    Miss,
}

/// The plaintext of a value, as written.
#[derive(Serialize)]
struct WireOut<'a> {
    adapter: &'a str,
    organisation: &'a str,
    fetched_at: DateTime<Utc>,
    /// Wall-clock milliseconds since the epoch when the answer came from the source: every
    /// instance reckons its age from it.
    cached_at_ms: i64,
    sections: &'a Sections,
    bytes: usize,
}

/// The plaintext of a value, as read.
#[derive(Deserialize)]
struct WireIn {
    adapter: Arc<str>,
    organisation: Arc<str>,
    fetched_at: DateTime<Utc>,
    cached_at_ms: i64,
    sections: Sections,
    bytes: usize,
}

/// After a failure, Redis is skipped until a moment (milliseconds after `origin`, plus one; 0:
/// not skipped). Lock-free: one load on the way in while Redis is healthy.
struct Skip {
    origin: Instant,
    until: AtomicU64,
    /// How long the one call that probes Redis after a skip holds the others off.
    probe_ms: u64,
}

impl Skip {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// Whether to call Redis now. After a skip exactly one caller gets through to probe.
    fn admit(&self) -> bool {
        let until = self.until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now();
        if now < until {
            return false;
        }
        self.until
            .compare_exchange(
                until,
                now + self.probe_ms,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    fn ok(&self) {
        if self.until.load(Ordering::Relaxed) != 0 {
            self.until.store(0, Ordering::Release);
        }
    }

    fn fail(&self) {
        self.until
            .store(self.now() + SKIP_FOR.as_millis() as u64, Ordering::Release);
    }

    fn skipping(&self) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until != 0 && self.now() < until
    }
}

/// The shared L2: one per gateway, kept over reloads that leave `cache.shared` as it is.
pub struct SharedCache {
    client: redis::Client,
    /// Made on first use (it needs the runtime); reconnects by itself from then on.
    conn: OnceLock<ConnectionManager>,
    seal: RandomizedNonceKey,
    names: hmac::Key,
    budget: Duration,
    prefix: String,
    /// `host:port/db`, for the status page (never the password).
    server: String,
    skip: Skip,
    /// The latest call succeeded.
    up: AtomicBool,
    /// Invalidations per shard of subjects: a write that sees its shard's count move since its
    /// call began does not store, or takes its field out again.
    epochs: [AtomicU64; EPOCH_SHARDS],
    metrics: Arc<Metrics>,
    failure_log: LogGate,
    invalid_log: LogGate,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("server", &self.server)
            .field("prefix", &self.prefix)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// The hash field of a key: adapter and descriptor version.
fn field(key: &CacheKey) -> String {
    format!("{}:{}", key.adapter, key.version)
}

/// The additional data of a value: its hash's name and its field.
fn aad(name: &str, field: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(name.len() + 1 + field.len());
    a.extend_from_slice(name.as_bytes());
    a.push(0);
    a.extend_from_slice(field.as_bytes());
    a
}

fn shard(bsn: &Bsn) -> usize {
    // The last digits of a BSN are spread evenly enough for 64 shards.
    bsn.as_str().parse::<u64>().unwrap_or(0) as usize % EPOCH_SHARDS
}

impl SharedCache {
    /// Builds the shared cache; it connects in the background (when called inside a runtime,
    /// else on first use).
    pub fn new(
        cfg: &SharedCacheConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<SharedCache>, SharedCacheError> {
        let master = hmac::Key::new(hmac::HMAC_SHA256, &cfg.key_bytes()?);
        let derive = |label: &[u8]| hmac::sign(&master, label);
        let seal_key = derive(b"ketenportaal cache.shared seal v1");
        let seal = RandomizedNonceKey::new(&AES_256_GCM, seal_key.as_ref())
            .map_err(|_| SharedCacheError::Crypto)?;
        let names = hmac::Key::new(
            hmac::HMAC_SHA256,
            derive(b"ketenportaal cache.shared subject v1").as_ref(),
        );
        let client = redis::Client::open(cfg.url.expose().trim())
            .map_err(|e| SharedCacheError::Url(e.to_string()))?;
        let info = client.get_connection_info();
        let server = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                format!("{host}:{port}/{}", info.redis_settings().db())
            }
            _ => "(not TCP)".to_string(),
        };
        let budget = cfg.budget.0;
        let me = Arc::new(SharedCache {
            client,
            conn: OnceLock::new(),
            seal,
            names,
            budget,
            prefix: cfg.prefix.clone(),
            server,
            skip: Skip {
                origin: Instant::now(),
                until: AtomicU64::new(0),
                probe_ms: budget.as_millis() as u64 + 1,
            },
            up: AtomicBool::new(false),
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
            metrics,
            failure_log: LogGate::default(),
            invalid_log: LogGate::default(),
            last_error: Mutex::new(None),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let m = me.clone();
            tokio::spawn(async move { m.warm_up().await });
        }
        Ok(me)
    }

    /// The Redis key of a subject's hash.
    pub fn subject_key(&self, bsn: &Bsn) -> String {
        let tag = hmac::sign(&self.names, bsn.as_str().as_bytes());
        format!("{}:subject:{}", self.prefix, crate::lower_hex(tag.as_ref()))
    }

    /// The subject's invalidation count (of its shard): taken when a call begins, compared
    /// when its answer is written.
    pub(crate) fn epoch(&self, bsn: &Bsn) -> u64 {
        self.epochs[shard(bsn)].load(Ordering::SeqCst)
    }

    /// Connects once at start, so the first requests find the connection made; says in the
    /// log whether Redis is there. Not on any request's path.
    async fn warm_up(&self) {
        let Some(mut conn) = self.connection("read") else {
            return;
        };
        let ping = redis::cmd("PING");
        match tokio::time::timeout(CONNECT_TIMEOUT, ping.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {
                self.up.store(true, Ordering::Release);
                tracing::info!(server = %self.server, "Shared cache (Redis) connected.");
            }
            Ok(Err(e)) => self.starting_without(e.to_string()),
            Err(_) => self.starting_without(format!(
                "no answer within {} ms",
                CONNECT_TIMEOUT.as_millis()
            )),
        }
    }

    fn starting_without(&self, error: String) {
        self.skip.fail();
        tracing::warn!(
            server = %self.server,
            error = %error,
            "Shared cache (Redis) is not reachable at start-up; the gateway runs without it until it is."
        );
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    fn connection(&self, op: &'static str) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.get() {
            return Some(c.clone());
        }
        // Few tries per reconnection, close together: the breaker spaces the calls out, and
        // each failed reconnection starts another on the next call.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(SKIP_FOR);
        match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(c) => Some(self.conn.get_or_init(|| c).clone()),
            Err(e) => {
                self.failed(op, "error", e.to_string());
                None
            }
        }
    }

    /// Runs one Redis call within the budget, through the breaker. `None`: skipped, failed or
    /// timed out (counted and logged here); the caller counts what a success means.
    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.skip.admit() {
            self.metrics.shared(op, "skipped");
            return None;
        }
        let conn = self.connection(op)?;
        match tokio::time::timeout(self.budget, f(conn)).await {
            Ok(Ok(v)) => {
                self.skip.ok();
                self.up.store(true, Ordering::Release);
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(op, "error", e.to_string());
                None
            }
            Err(_) => {
                self.failed(
                    op,
                    "timeout",
                    format!(
                        "no answer within the budget of {} ms",
                        self.budget.as_millis()
                    ),
                );
                None
            }
        }
    }

    /// A failed or timed-out call: skip Redis for a second, count it, log it (once per
    /// interval).
    fn failed(&self, op: &'static str, result: &'static str, error: String) {
        self.skip.fail();
        self.up.store(false, Ordering::Release);
        self.metrics.shared(op, result);
        if let Some(suppressed) = self.failure_log.admit() {
            tracing::warn!(
                op,
                result,
                error = %error,
                server = %self.server,
                skip_ms = SKIP_FOR.as_millis() as u64,
                suppressed,
                interval_s = crate::lograte::INTERVAL.as_secs(),
                "Shared cache (Redis) failed; requests go on without it, and skip it for a second (`suppressed` more such failures since the last line)."
            );
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// PING within the budget, through the breaker (counted as op `ping`): how long it took,
    /// or `None` when Redis was skipped, failed or did not answer in time.
    pub async fn ping(&self) -> Option<Duration> {
        let started = Instant::now();
        let ping = redis::cmd("PING");
        self.run("ping", |mut c| async move {
            ping.query_async::<()>(&mut c).await
        })
        .await?;
        self.metrics.shared("ping", "ok");
        Some(started.elapsed())
    }

    /// Looks `key` up, within the budget.
    pub(crate) async fn get(&self, key: &CacheKey, policy: Policy) -> Lookup {
        let name = self.subject_key(&key.bsn);
        let field = field(key);
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&name).arg(&field);
        let Some(value) = self
            .run("read", |mut c| async move {
                cmd.query_async::<Option<Vec<u8>>>(&mut c).await
            })
            .await
        else {
            return Lookup::Miss;
        };
        let Some(value) = value else {
            self.metrics.shared("read", "miss");
            return Lookup::Miss;
        };
        let Some(wire) = self
            .open(&name, &field, value)
            .and_then(|plain| serde_json::from_slice::<WireIn>(&plain).ok())
        else {
            self.metrics.shared("read", "invalid");
            if let Some(suppressed) = self.invalid_log.admit() {
                tracing::warn!(
                    adapter = %key.adapter,
                    suppressed,
                    "A shared cache value did not open (sealed under another key, or changed); read as a miss (`suppressed` more since the last line)."
                );
            }
            return Lookup::Miss;
        };
        let age_ms = Utc::now()
            .timestamp_millis()
            .saturating_sub(wire.cached_at_ms)
            .max(0);
        let age = Duration::from_millis(age_ms as u64);
        let answer = SourceAnswer {
            adapter: wire.adapter,
            organisation: wire.organisation,
            fetched_at: wire.fetched_at,
            sections: wire.sections,
            bytes: wire.bytes,
        };
        if age < policy.ttl {
            self.metrics.shared("read", "hit");
            Lookup::Fresh(answer, age)
        } else if !policy.stale_if_error.is_zero() && age <= policy.ttl + policy.stale_if_error {
            self.metrics.shared("read", "stale");
            Lookup::Stale(answer, age)
        } else {
            self.metrics.shared("read", "miss");
            Lookup::Miss
        }
    }

    /// Writes an answer in a task of its own, within the budget; nobody waits for it. `epoch`:
    /// the subject's [`SharedCache::epoch`] when the call for it began.
    pub(crate) fn spawn_put(
        self: &Arc<Self>,
        key: CacheKey,
        answer: Arc<SourceAnswer>,
        policy: Policy,
        cached_at: DateTime<Utc>,
        epoch: u64,
    ) {
        let me = self.clone();
        tokio::spawn(async move { me.put(key, answer, policy, cached_at, epoch).await });
    }

    async fn put(
        &self,
        key: CacheKey,
        answer: Arc<SourceAnswer>,
        policy: Policy,
        cached_at: DateTime<Utc>,
        epoch: u64,
    ) {
        if self.epoch(&key.bsn) != epoch {
            // Invalidated since the call began: nothing of it is stored.
            return;
        }
        let name = self.subject_key(&key.bsn);
        let field = field(&key);
        let wire = WireOut {
            adapter: &answer.adapter,
            organisation: &answer.organisation,
            fetched_at: answer.fetched_at,
            cached_at_ms: cached_at.timestamp_millis(),
            sections: &answer.sections,
            bytes: answer.bytes,
        };
        // Serialising maps of JSON values cannot fail.
        let Ok(plain) = serde_json::to_vec(&wire) else {
            return;
        };
        let Some(value) = self.seal(&name, &field, plain) else {
            return;
        };
        let keep_ms = ((policy.ttl + policy.stale_if_error).as_millis() as u64).max(1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&name)
            .arg(&field)
            .arg(value)
            .ignore()
            // No expiry yet: set it. Then extend it when this entry outlives the others.
            .cmd("PEXPIRE")
            .arg(&name)
            .arg(keep_ms)
            .arg("NX")
            .ignore()
            .cmd("PEXPIRE")
            .arg(&name)
            .arg(keep_ms)
            .arg("GT")
            .ignore();
        if self
            .run("write", |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await
            .is_none()
        {
            return;
        }
        self.metrics.shared("write", "ok");
        if self.epoch(&key.bsn) != epoch {
            // Invalidated while the write was out: its delete may have gone first. Take the
            // field out again.
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(&name).arg(&field);
            if self
                .run("delete", |mut c| async move {
                    cmd.query_async::<()>(&mut c).await
                })
                .await
                .is_some()
            {
                self.metrics.shared("delete", "ok");
            }
        }
    }

    /// Drops every entry of one subject, in a task of its own: within the budget per try, tried
    /// again after a skip while Redis is down (a few times; after that the entries expire with
    /// their `ttl`). Writes of calls that began before it do not store.
    pub(crate) fn invalidate(self: &Arc<Self>, bsn: Bsn) -> Option<tokio::task::JoinHandle<()>> {
        self.epochs[shard(&bsn)].fetch_add(1, Ordering::SeqCst);
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let me = self.clone();
        Some(rt.spawn(async move {
            let name = me.subject_key(&bsn);
            for _ in 0..DELETE_TRIES {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(&name);
                if me
                    .run("delete", |mut c| async move {
                        cmd.query_async::<()>(&mut c).await
                    })
                    .await
                    .is_some()
                {
                    me.metrics.shared("delete", "ok");
                    return;
                }
                tokio::time::sleep(SKIP_FOR).await;
            }
        }))
    }

    /// `nonce || ciphertext+tag`, bound to the hash's name and the field.
    fn seal(&self, name: &str, field: &str, mut plain: Vec<u8>) -> Option<Vec<u8>> {
        let nonce = self
            .seal
            .seal_in_place_append_tag(Aad::from(aad(name, field)), &mut plain)
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&plain);
        Some(out)
    }

    /// The plaintext of a value, if it was sealed under this key for this name and field and
    /// nobody changed it.
    fn open(&self, name: &str, field: &str, mut value: Vec<u8>) -> Option<Vec<u8>> {
        if value.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&value[..NONCE_LEN]).ok()?;
        let len = self
            .seal
            .open_in_place(nonce, Aad::from(aad(name, field)), &mut value[NONCE_LEN..])
            .ok()?
            .len();
        value.drain(..NONCE_LEN);
        value.truncate(len);
        Some(value)
    }

    /// What the status page shows: where, how it is doing, and its counts. Never the key or
    /// the URL's password.
    pub fn status(&self) -> serde_json::Value {
        let counts = |op, results| {
            self.metrics
                .shared_counts(op, results)
                .into_iter()
                .map(|(r, n)| (r.to_string(), serde_json::Value::from(n)))
                .collect::<serde_json::Map<_, _>>()
        };
        let state = if self.skip.skipping() {
            "skipped"
        } else if self.up.load(Ordering::Acquire) {
            "up"
        } else {
            "unknown"
        };
        serde_json::json!({
            "configured": true,
            "server": self.server,
            "prefix": self.prefix,
            "budget_ms": self.budget.as_millis() as u64,
            "state": state,
            "last_error": *self.last_error.lock().unwrap_or_else(|p| p.into_inner()),
            "reads": counts("read", READ_RESULTS),
            "writes": counts("write", WRITE_RESULTS),
            "deletes": counts("delete", WRITE_RESULTS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dur, Secret};

    fn cache(key: &str) -> Arc<SharedCache> {
        // No runtime here: nothing connects.
        SharedCache::new(
            &SharedCacheConfig {
                url: Secret::new("redis://127.0.0.1:1/0"),
                key: Secret::new(key),
                budget: Dur(Duration::from_millis(25)),
                prefix: "kp".into(),
            },
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn bsn() -> Bsn {
        Bsn::parse("999993653").unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_unchanged_and_in_its_place() {
        let c = cache(KEY);
        let name = c.subject_key(&bsn());
        let sealed = c.seal(&name, "brp:v1", b"{\"a\":1}".to_vec()).unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 7 + AES_256_GCM.tag_len());
        assert_eq!(
            c.open(&name, "brp:v1", sealed.clone()).as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        // Each value has a nonce of its own.
        assert_ne!(
            c.seal(&name, "brp:v1", b"{\"a\":1}".to_vec()).unwrap(),
            sealed
        );
        // Any changed byte (nonce, ciphertext, tag) and it does not open.
        for i in [0, NONCE_LEN, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert_eq!(c.open(&name, "brp:v1", t), None, "byte {i}");
        }
        assert_eq!(
            c.open(&name, "brp:v1", sealed[..NONCE_LEN + 3].to_vec()),
            None
        );
        // Another subject, another adapter or version, another key: no.
        let other = c.subject_key(&Bsn::parse("999990019").unwrap());
        assert_eq!(c.open(&other, "brp:v1", sealed.clone()), None);
        assert_eq!(c.open(&name, "uwv:v1", sealed.clone()), None);
        assert_eq!(c.open(&name, "brp:v2", sealed.clone()), None);
        let mut key2 = KEY.to_string();
        key2.replace_range(..2, "ff");
        assert_eq!(cache(&key2).open(&name, "brp:v1", sealed), None);
    }

    #[test]
    fn a_subject_is_named_by_a_keyed_hash_without_the_bsn() {
        let c = cache(KEY);
        let name = c.subject_key(&bsn());
        assert!(name.starts_with("kp:subject:"), "{name}");
        assert_eq!(name.len(), "kp:subject:".len() + 64);
        assert!(!name.contains("999993653"));
        assert_eq!(
            name,
            cache(KEY).subject_key(&bsn()),
            "stable across instances"
        );
        let mut key2 = KEY.to_string();
        key2.replace_range(..2, "ff");
        assert_ne!(name, cache(&key2).subject_key(&bsn()));
    }

    #[test]
    fn an_answer_survives_the_wire_with_its_decimals_exact() {
        let mut sections = Sections::new();
        let rec: crate::mapping::Record = serde_json::from_str(
            r#"{"bedrag":"1520.00","klein":"0.10","groot":"123456789012345678901234567890.123456789","jaar":9007199254740993,"actief":true,"naam":null}"#,
        )
        .unwrap();
        sections.insert("uitkeringen".into(), vec![rec.clone()]);
        let answer = SourceAnswer {
            adapter: Arc::from("uwv"),
            organisation: Arc::from("UWV"),
            fetched_at: Utc::now(),
            sections,
            bytes: 1234,
        };
        let wire = WireOut {
            adapter: &answer.adapter,
            organisation: &answer.organisation,
            fetched_at: answer.fetched_at,
            cached_at_ms: 5,
            sections: &answer.sections,
            bytes: answer.bytes,
        };
        let back: WireIn = serde_json::from_slice(&serde_json::to_vec(&wire).unwrap()).unwrap();
        assert_eq!(back.sections, answer.sections);
        assert_eq!(back.sections["uitkeringen"][0]["bedrag"], "1520.00");
        assert_eq!(back.sections["uitkeringen"][0]["jaar"], 9007199254740993u64);
        assert_eq!(back.fetched_at, answer.fetched_at);
        assert_eq!((back.cached_at_ms, back.bytes), (5, 1234));
    }

    #[test]
    fn the_breaker_skips_for_a_second_then_lets_one_probe() {
        let s = Skip {
            origin: Instant::now(),
            until: AtomicU64::new(0),
            probe_ms: 26,
        };
        assert!(s.admit() && s.admit());
        s.fail();
        assert!(s.skipping());
        assert!(!s.admit());
        // A second later: one probe, the others keep skipping while it is out.
        s.until.store(s.now(), Ordering::Release);
        assert!(s.admit());
        assert!(!s.admit());
        s.ok();
        assert!(!s.skipping());
        assert!(s.admit());
    }
}

//! The durable store: what the gateway keeps, behind one façade, [`AuditStore`], which the rest
//! of the crate uses and which keeps it free of which backend holds the data. The store must
//! not know who calls it: [`crate::audit`] (the sink a record must reach before an answer
//! leaves) depends on the store, never the other way round.
//!
//! # Layout
//! Backend-neutral and without I/O: what every backend must do alike is decided once, here.
//! - `record`: [`AccessRecord`] and [`Completion`], what the audit log keeps.
//! - `audit`: [`AuditLog`], the operations on the hash-chained audit log; the chain's hashes and
//!   pseudonyms, and the check behind [`verify`] ([`Verdict`]).
//! - `applications`: [`Outbox`], the operations on the applications outbox; [`Application`],
//!   what a submit record holds, how the `zaken` list is made.
//! - `registrations`: [`Registrations`], the operations on partner adapter descriptors.
//! - `report`: the security officer's [`Report`], counted; [`dutch_time`].
//! - here: [`Backend`] (the three with the store's health), the façade, [`StoreError`].
//!
//! Backends, each implementing [`Backend`]:
//! - `sqlite`: an append-only journal (group commit) indexed into one SQLite file; its schema, migrations and
//!   SQL.
//! - `postgres`: a PostgreSQL database shared by every instance of a cluster (one chain that
//!   concurrent writers cannot fork, group-committed and pipelined; leases on deliveries;
//!   `LISTEN/NOTIFY` for [`Signal`]s); its versioned migrations and SQL.
//!
//! [`StoreLocation`] says which: a file path or a `postgres://` URL.

mod applications;
mod audit;
mod postgres;
mod record;
mod registrations;
mod report;
mod sqlite;
#[cfg(test)]
mod testing;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::broadcast;

pub use applications::{Application, Outbox};
pub use audit::{AuditLog, Verdict};
pub use record::{AccessRecord, Completion};
pub use registrations::Registrations;
pub use report::{Report, dutch_time};
pub use sqlite::Repaged;
pub use sqlite::journal::JournalError;

use crate::bsn::Bsn;
use crate::config::compile::Registration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store {0}: cannot create its folder: {1}")]
    Folder(PathBuf, std::io::Error),
    #[error("store {path}: not written: {reason}")]
    NotWritten { path: PathBuf, reason: String },
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Another gateway (or store) has the file open.
    #[error("store {0}: in use by another process (its lock is held)")]
    InUse(PathBuf),
    /// A read of the audit waited for the index to hold every acknowledged record in vain
    /// (the records are safe in the journal; the index cannot be written now).
    #[error("store {}: the audit index is {records} records behind the journal after {} s", path.display(), after.as_secs())]
    IndexBehind {
        path: PathBuf,
        records: u64,
        after: Duration,
    },
    /// PostgreSQL refused or failed an operation (nothing of it was stored); `location` is the
    /// URL without its password.
    #[error("store {location}: {reason}")]
    Postgres { location: String, reason: String },
    /// The connection to PostgreSQL was lost or refused (the server stopped, restarted or is
    /// out of reach): an idempotent change may be tried again on a new one.
    #[error("store {location}: connection lost: {reason}")]
    ConnectionLost { location: String, reason: String },
    /// PostgreSQL did not answer within the store's `timeout` (a write may or may not have
    /// been stored: the caller withholds its answer all the same).
    #[error("store {location}: no answer within {} ms", after.as_millis())]
    TimedOut { location: String, after: Duration },
}

/// What the writer has done since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Transactions committed.
    pub committed: u64,
    /// Changes given up on (a record, an outcome, an application write): their callers got an
    /// error, and nothing of them was stored.
    pub failed: u64,
    /// Attempts that found the store locked by another process, rolled back and tried again
    /// (SQLite; PostgreSQL waits for its locks instead).
    pub retried: u64,
    /// Batches that failed as a whole and were tried again change by change.
    pub split: u64,
}

/// The writer's counters as it counts them (see [`StoreStats`]).
#[derive(Default)]
struct Counters {
    committed: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    retried: std::sync::atomic::AtomicU64,
    split: std::sync::atomic::AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        StoreStats {
            committed: self.committed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            split: self.split.load(Relaxed),
        }
    }
}

/// Where the store is: a SQLite file, or a PostgreSQL database (shared by a cluster).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// A `postgres://` URL, password and all (never displayed: see [`fmt::Display`]).
    Postgres(String),
}

impl StoreLocation {
    /// A `postgres://` (or `postgresql://`) URL, or else a file path.
    pub fn parse(s: &str) -> StoreLocation {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            StoreLocation::Postgres(s.to_string())
        } else {
            StoreLocation::Sqlite(PathBuf::from(s))
        }
    }

    /// Is this a store several instances share?
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }
}

/// The URL without its password: neither the one in its user info nor a `password=`
/// parameter.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let mut out = match rest.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            if user_info.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => format!("{scheme}://{rest}"),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StoreLocation::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

/// How a store is run (what the SQLite store does not need, it ignores).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections to a database server.
    pub pool_size: u32,
    /// How long a claimed delivery is this instance's before another may take it over.
    pub lease: Duration,
    /// How long an operation waits for the database server before it fails.
    pub timeout: Duration,
    /// This instance's name in the cluster (the status page, the audit records' writer).
    pub instance: String,
    /// The longest a small batch of audit records waits for more before it is synced (the
    /// embedded store; see `store.commit_delay`).
    pub commit_delay: Duration,
}

/// The default of `store.commit_delay`: at 1 ms, a saturated uncached fan-out served 28 % more
/// with the durable audit on one core (load bench (f)), and a read waits at most that long
/// more, only at rates where it gathers two or more records.
pub const COMMIT_DELAY: Duration = Duration::from_millis(1);

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: 16,
            lease: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
            instance: "local".into(),
            commit_delay: COMMIT_DELAY,
        }
    }
}

/// A change made by another instance of the cluster, which this one must follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Partner registrations changed: read them again and swap.
    Registrations,
    /// An operator reloaded the configuration files: read them again.
    Reload,
    /// What is cached about this subject is out of date.
    Subject(Bsn),
    /// The store's listener was cut off and is back: signals may have been missed, so
    /// everything they could have said must be read again.
    Resync,
}

/// One instance of the cluster, as it last said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub seen_at: DateTime<Utc>,
    pub config_version: String,
}

/// A store backend: the three kinds of data, and how the store is doing.
pub trait Backend: AuditLog + Outbox + Registrations {
    /// Where the store is, for the operator's status page (a file; a server's address).
    fn location(&self) -> String;

    /// The writer's counters.
    fn stats(&self) -> StoreStats;

    /// Can the store take writes? (readiness)
    fn writable(&self) -> BoxFuture<'_, bool>;

    /// Waits until every record acknowledged so far can be queried (the embedded store fills
    /// its index from its journal off the request path); a store whose records are queryable
    /// once written has nothing to wait for.
    fn settle(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// The changes other instances make, as they are made; `None` for a store no other
    /// instance writes.
    fn signals(&self) -> Option<broadcast::Receiver<Signal>> {
        None
    }

    /// Tells every other instance of `signal` (a store of one instance has nobody to tell).
    fn publish(&self, _signal: Signal) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Records that this instance is alive and what it serves.
    fn heartbeat(&self, _me: Instance) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// The instances heard from lately (empty for a store of one instance).
    fn instances(&self) -> BoxFuture<'_, Result<Vec<Instance>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The store the gateway writes to. Cheap to clone. Its operations are its backend's (see the
/// traits for what each promises); the façade only keeps the callers free of which backend it
/// is.
#[derive(Clone)]
pub struct AuditStore {
    backend: Arc<dyn Backend>,
}

impl AuditStore {
    /// Opens (and creates) the SQLite store at `path`, bringing an older file to the current
    /// schema, replays its audit journal, and starts its writer threads.
    pub fn open(path: &Path, pseudonym_key: Vec<u8>) -> Result<AuditStore, StoreError> {
        AuditStore::open_with(path, pseudonym_key, COMMIT_DELAY)
    }

    /// [`AuditStore::open`], a small batch of records waiting up to `commit_delay` for more
    /// (see `store.commit_delay`).
    pub fn open_with(
        path: &Path,
        pseudonym_key: Vec<u8>,
        commit_delay: Duration,
    ) -> Result<AuditStore, StoreError> {
        sqlite::SqliteStore::open(path, pseudonym_key, commit_delay).map(AuditStore::with_backend)
    }

    /// Opens the store at `location`: the SQLite file (see [`AuditStore::open`]), or the
    /// PostgreSQL database, migrated to the current schema (once, under a lock, however many
    /// instances start together).
    pub async fn connect(
        location: &StoreLocation,
        pseudonym_key: Vec<u8>,
        options: StoreOptions,
    ) -> Result<AuditStore, StoreError> {
        match location {
            StoreLocation::Sqlite(path) => {
                let path = path.clone();
                let delay = options.commit_delay;
                tokio::task::spawn_blocking(move || {
                    AuditStore::open_with(&path, pseudonym_key, delay)
                })
                .await
                .map_err(|_| StoreError::WriterGone)?
            }
            StoreLocation::Postgres(url) => {
                postgres::PgStore::connect(url, pseudonym_key, options).await
            }
        }
    }

    /// A store on `backend`.
    pub fn with_backend(backend: impl Backend + 'static) -> AuditStore {
        AuditStore {
            backend: Arc::new(backend),
        }
    }

    /// Where the store is (see [`Backend::location`]).
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The writer's counters.
    pub fn stats(&self) -> StoreStats {
        self.backend.stats()
    }

    /// Can the store take writes? (readiness)
    pub async fn writable(&self) -> bool {
        self.backend.writable().await
    }

    /// Waits until every record acknowledged so far is in the store's index, where SQL (the
    /// `processing_log` view, a tool reading the file) sees it. The store's own reads of the
    /// audit wait for this themselves.
    pub async fn settle(&self) -> Result<(), StoreError> {
        self.backend.settle().await
    }

    /// Appends a record; its sequence number once it is durable (see [`AuditLog::append`]).
    /// The backend's own future, not wrapped in another (on the cached dossier's path).
    pub fn append(&self, record: AccessRecord) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.backend.append(record)
    }

    /// Completes record `seq` with its outcome, not waited for (see
    /// [`AuditLog::append_outcome`]).
    pub fn append_outcome(&self, seq: i64, outcome: &Completion) {
        self.backend.append_outcome(seq, outcome)
    }

    /// Records about one data subject, newest first.
    pub async fn by_subject(
        &self,
        bsn: Bsn,
        limit: u32,
    ) -> Result<Vec<(i64, AccessRecord)>, StoreError> {
        self.backend.by_subject(bsn, limit).await
    }

    /// Is a record with this trace id present?
    pub async fn has_trace(&self, trace_id: String) -> Result<bool, StoreError> {
        self.backend.has_trace(trace_id).await
    }

    /// Number of rows in the audit log and the processing log.
    pub async fn counts(&self) -> Result<(i64, i64), StoreError> {
        self.backend.counts().await
    }

    /// Stores a new application with its submit record, or finds the one stored under the
    /// same actor and key (`false`); see [`Outbox::insert_application`].
    pub async fn insert_application(
        &self,
        a: Application,
        submit: AccessRecord,
    ) -> Result<(Application, bool), StoreError> {
        self.backend.insert_application(a, submit).await
    }

    /// The application with this id.
    pub async fn application(&self, id: String) -> Result<Option<Application>, StoreError> {
        self.backend.application(id).await
    }

    /// A citizen's applications for the `zaken` section (see [`Outbox::applications_of`]).
    pub async fn applications_of(
        &self,
        bsn: Bsn,
        limit: u32,
    ) -> Result<Arc<[Application]>, StoreError> {
        self.backend.applications_of(bsn, limit).await
    }

    /// Applications waiting for (another) delivery attempt now; claimed for the `lease` on a
    /// shared store (see [`Outbox::due_applications`]).
    pub async fn due_applications(&self, limit: u32) -> Result<Vec<Application>, StoreError> {
        self.backend.due_applications(limit).await
    }

    /// Records a delivery outcome; durable on return.
    pub async fn update_application(&self, a: Application) -> Result<(), StoreError> {
        self.backend.update_application(a).await
    }

    /// The changes other instances make (see [`Backend::signals`]).
    pub fn signals(&self) -> Option<broadcast::Receiver<Signal>> {
        self.backend.signals()
    }

    /// Tells every other instance of `signal`.
    pub async fn publish(&self, signal: Signal) -> Result<(), StoreError> {
        self.backend.publish(signal).await
    }

    /// Records that this instance is alive and what it serves.
    pub async fn heartbeat(&self, me: Instance) -> Result<(), StoreError> {
        self.backend.heartbeat(me).await
    }

    /// The instances heard from lately.
    pub async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        self.backend.instances().await
    }

    /// Partner adapter registrations, by id.
    pub async fn registrations(&self) -> Result<Vec<Registration>, StoreError> {
        self.backend.registrations().await
    }

    /// Stores (or replaces) a registration of the same organisation; durable on return; false
    /// when the id is another organisation's (see [`Registrations::put_registration`]).
    pub async fn put_registration(&self, r: Registration) -> Result<bool, StoreError> {
        self.backend.put_registration(r).await
    }

    /// Removes registration `id` of `organisation`; true when there was one.
    pub async fn delete_registration(
        &self,
        id: String,
        organisation: String,
    ) -> Result<bool, StoreError> {
        self.backend.delete_registration(id, organisation).await
    }
}

/// Walks the whole chain of the store at `location` and says whether it is intact: every
/// record of every instance. Reads only; safe next to running gateways.
pub async fn verify(location: &StoreLocation) -> Result<Verdict, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sqlite::verify(&path))
                .await
                .map_err(|_| StoreError::WriterGone)?
        }
        StoreLocation::Postgres(url) => postgres::verify(url).await,
    }
}

/// Rewrites the embedded store at `path`, made by an older version, in the current page size;
/// offline (see `ketenportaal store repage`).
pub fn repage(path: &Path) -> Result<Repaged, StoreError> {
    sqlite::repage(path)
}

/// The security officer's report over `[from, to)` from the store at `location` (the whole
/// cluster's), with the `top` most-viewed subjects and most active users. Reads only.
pub async fn report(
    location: &StoreLocation,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    top: usize,
) -> Result<Report, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sqlite::report(&path, from, to, top))
                .await
                .map_err(|_| StoreError::WriterGone)?
        }
        StoreLocation::Postgres(url) => postgres::report(url, from, to, top).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_a_url_or_a_file_and_never_shows_its_password() {
        let pg = StoreLocation::parse("postgres://kp:s3cret@127.0.0.1:5432/kp");
        assert!(pg.is_shared());
        assert_eq!(pg.to_string(), "postgres://kp:***@127.0.0.1:5432/kp");
        assert!(!format!("{pg:?}").contains("s3cret"));
        let pg = StoreLocation::parse("postgres://kp@db:5432/kp?sslmode=require&password=s3cret");
        assert_eq!(
            pg.to_string(),
            "postgres://kp@db:5432/kp?sslmode=require&password=***"
        );
        let file = StoreLocation::parse("data/audit.sqlite");
        assert_eq!(file, StoreLocation::Sqlite("data/audit.sqlite".into()));
        assert!(!file.is_shared());
    }
}

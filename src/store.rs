//! The durable store: an append-only, hash-chained audit log in SQLite (WAL, `synchronous=FULL`),
//! with the applications outbox and the partner adapter registrations beside it.
//!
//! Every write goes through one writer thread, the only connection that writes: audit records
//! and their outcomes, applications (each with its `application.submit` record, in the same
//! transaction), delivery outcomes and registrations. It commits in groups: every change
//! waiting when a transaction starts is written in it, and all of their requests are released
//! by one fsync. Durability costs one fsync per *batch*, not per request, and is never skipped.
//! Transactions take the write lock when they begin (`BEGIN IMMEDIATE`), so none can fail
//! half-way for want of it; one that finds the file locked by another process is tried again,
//! and a batch that fails for any other reason is tried again change by change, so one change
//! that cannot be written does not take the others with it. A request whose change cannot be
//! committed gets an error and nothing of it is stored: its answer is withheld (fail closed).
//! Reads use a second connection that cannot write (`query_only`).
//!
//! Each row carries `hash = SHA-256(prev_hash || seq || canonical JSON)`; `verify` walks the
//! chain and reports a changed, removed or reordered row. Every record about a data subject is
//! also a processing record in the Logboek Dataverwerkingen shape (the view `processing_log`),
//! with the data subject pseudonymised (HMAC-SHA-256 under a configured key).
//!
//! The SQL is plain and portable so a PostgreSQL backend can implement the same operations (the
//! processing view uses SQLite's `json_extract`, PostgreSQL's `->>` does the same).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Duration as ChronoDuration, TimeZone, Timelike, Utc, Weekday};
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::audit::{AccessRecord, AuditError, AuditSink, Begun, Completion};
use crate::bsn::Bsn;
use crate::config::compile::Registration;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Largest group committed in one transaction.
const MAX_BATCH: usize = 512;
/// How long the writer keeps trying a transaction that finds the file locked (by another
/// process: this one has no other writer) before its callers get an error.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// How long one attempt waits for the write lock (SQLite's busy handler) before the writer
/// logs it and tries again.
const LOCK_WAIT: Duration = Duration::from_secs(1);

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
}

/// An audit record on its way to the writer, already serialised on the caller's thread: the
/// writer thread (the store's bottleneck) only hashes, pseudonymises and inserts.
struct Record {
    /// The canonical JSON of the record (what the chain hashes).
    json: String,
    /// `record.time` as RFC 3339 (the column reports filter on).
    time: String,
    kind: String,
    trace_id: String,
    actor: String,
    actor_type: String,
    bsn: Option<Bsn>,
}

impl Record {
    fn new(record: AccessRecord) -> Record {
        Record {
            // Serialising a struct of strings, numbers and a JSON value cannot fail.
            json: serde_json::to_string(&record).unwrap_or_default(),
            time: record.time.to_rfc3339(),
            kind: record.kind,
            trace_id: record.trace_id,
            actor: record.actor,
            actor_type: record.actor_type,
            bsn: record.bsn,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

/// One change for the writer, with where its result goes once its transaction commits. A change
/// only reads what it is given: the writer may run it again (see `Writer::commit`).
enum Work {
    /// An access record; answered with its sequence number.
    Record(Record, Reply<i64>),
    /// The outcome (JSON) completing the record `of` (see [`AuditSink::complete`]); nobody
    /// waits for it.
    Outcome {
        of: i64,
        json: String,
    },
    /// A new application and its `application.submit` record, committed together; or the
    /// application already stored under the same actor and key, whose record is written now if
    /// it has none (a store written before the two were one transaction). The record is
    /// completed by the writer (subject and details are the stored application's).
    Apply(
        Box<Application>,
        Box<AccessRecord>,
        Reply<(Application, bool)>,
    ),
    /// A delivery outcome: status, reference or reason, next attempt.
    Update(Box<Application>, Reply<()>),
    PutRegistration(Box<Registration>, Reply<()>),
    DeleteRegistration(String, Reply<bool>),
}

/// What a change gave, sent to its caller once its transaction has committed.
enum Done {
    Seq(i64),
    Applied(Box<Application>, bool),
    Unit,
    Removed(bool),
}

impl Work {
    /// Does this change touch the applications table (so cached lists must be dropped)?
    fn touches_applications(&self) -> bool {
        matches!(self, Work::Apply(..) | Work::Update(..))
    }

    fn reply(self, result: Result<Done, String>) {
        // A caller that went away no longer waits: nothing to do.
        match (self, result) {
            (Work::Outcome { .. }, _) => {}
            (Work::Record(_, r), Ok(Done::Seq(seq))) => drop(r.send(Ok(seq))),
            (Work::Apply(.., r), Ok(Done::Applied(a, new))) => drop(r.send(Ok((*a, new)))),
            (Work::Update(_, r) | Work::PutRegistration(_, r), Ok(Done::Unit)) => {
                drop(r.send(Ok(())))
            }
            (Work::DeleteRegistration(_, r), Ok(Done::Removed(b))) => drop(r.send(Ok(b))),
            (w, Err(e)) => w.fail(e),
            // Each change gives its own kind of result (see `write_one`).
            (w, Ok(_)) => w.fail("the store gave an unexpected result".into()),
        }
    }

    fn fail(self, e: String) {
        match self {
            Work::Outcome { of, .. } => {
                tracing::error!(seq = of, error = %e, "Audit outcome not written; the record stays `requested`.");
            }
            Work::Record(_, r) => drop(r.send(Err(e))),
            Work::Apply(.., r) => drop(r.send(Err(e))),
            Work::Update(_, r) | Work::PutRegistration(_, r) => drop(r.send(Err(e))),
            Work::DeleteRegistration(_, r) => drop(r.send(Err(e))),
        }
    }
}

/// The audit store. Cheap to clone.
#[derive(Clone)]
pub struct AuditStore {
    tx: mpsc::Sender<Work>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Each citizen's applications as last read for the `zaken` section (bounded, see
    /// [`AuditStore::applications_of`]), with the bound they were read with: the section asks
    /// on every dossier read, and this process is the only writer of the table (SQLite is
    /// single-instance), so every change passes through [`AuditStore::insert_application`] or
    /// [`AuditStore::update_application`], which drop the subject's entry.
    applications: moka::future::Cache<Bsn, (u32, Arc<[Application]>)>,
    /// Bumped by the writer after every commit that changed applications (before its callers
    /// hear of it), so a read that raced a write is not remembered.
    application_writes: Arc<AtomicU64>,
    stats: Arc<Counters>,
}

/// What the writer has done since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Transactions committed.
    pub committed: u64,
    /// Changes given up on (a record, an outcome, an application write): their callers got an
    /// error, and nothing of them was stored.
    pub failed: u64,
    /// Attempts that found the file locked by another process, rolled back and tried again.
    pub retried: u64,
    /// Batches that failed as a whole and were tried again change by change.
    pub split: u64,
}

#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    split: AtomicU64,
}

/// How many citizens' application lists the store remembers (most are empty: ~150 bytes each
/// with moka's bookkeeping, so ~2.5 MiB, outside `cache.max_bytes`).
const APPLICATION_LISTS: u64 = 16_384;

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let c = Connection::open(path).map_err(err)?;
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA busy_timeout=5000;
         PRAGMA foreign_keys=ON;",
    )
    .map_err(err)?;
    Ok(c)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    seq            INTEGER PRIMARY KEY,
    time           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    trace_id       TEXT NOT NULL,
    actor          TEXT NOT NULL,
    actor_type     TEXT NOT NULL,
    bsn            TEXT,
    record         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL,
    data_subject_id TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_bsn ON audit_log (bsn, time);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (time);
DROP INDEX IF EXISTS audit_log_trace;
CREATE TABLE IF NOT EXISTS audit_outcome (
    seq            INTEGER PRIMARY KEY,
    outcome        TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applications (
    id              TEXT PRIMARY KEY,
    service         TEXT NOT NULL,
    organisation    TEXT NOT NULL,
    bsn             TEXT NOT NULL,
    actor           TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    data            TEXT NOT NULL,
    status          TEXT NOT NULL,
    reference       TEXT,
    reason          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    submit_seq      INTEGER,
    UNIQUE (actor, idempotency_key)
);
CREATE INDEX IF NOT EXISTS applications_due ON applications (status, next_attempt_at);
DROP INDEX IF EXISTS applications_bsn;
CREATE INDEX IF NOT EXISTS applications_subject ON applications (bsn, created_at);
CREATE INDEX IF NOT EXISTS applications_subject_open ON applications (bsn, created_at)
    WHERE status = 'received';
CREATE TABLE IF NOT EXISTS registrations (
    id            TEXT PRIMARY KEY,
    organisation  TEXT NOT NULL,
    descriptor    TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    updated_by    TEXT NOT NULL
);
";

/// The processing log (Logboek Dataverwerkingen) as a view over the access log: one row per
/// record about a data subject. Its fields come from the chained record (so they are as
/// tamper-evident as the record) plus the pseudonymised subject written beside it; it has no
/// column naming the employee. One row per read instead of two halves the store's write work.
const PROCESSING_VIEW: &str = "
SELECT a.seq AS seq, a.trace_id AS trace_id,
    json_extract(a.record, '$.span_id') AS span_id,
    json_extract(a.record, '$.foreign_span_id') AS parent_span_id,
    'ketenportaal.' || a.kind AS name,
    json_extract(a.record, '$.started_at') AS start_time,
    COALESCE(json_extract(o.outcome, '$.time'), json_extract(a.record, '$.time')) AS end_time,
    CASE WHEN COALESCE(json_extract(o.outcome, '$.outcome'), json_extract(a.record, '$.outcome'))
                  GLOB 'failed*'
           OR COALESCE(json_extract(o.outcome, '$.outcome'), json_extract(a.record, '$.outcome'))
                  GLOB 'refused*' THEN 'ERROR' ELSE 'OK' END
        AS status_code,
    CASE WHEN json_extract(a.record, '$.foreign_span_id') IS NULL THEN NULL
         ELSE json_object('trace_id', a.trace_id, 'span_id', json_extract(a.record, '$.foreign_span_id'))
    END AS foreign_operation,
    json_extract(a.record, '$.processing_activity') AS processing_activity_id,
    a.data_subject_id AS data_subject_id,
    'BSN' AS data_subject_id_type
FROM audit_log a LEFT JOIN audit_outcome o ON o.seq = a.seq
WHERE a.data_subject_id IS NOT NULL";

/// Whether `table` has `column` (the schema of an older store may lack it).
fn has_column(c: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Brings a store written by an older version to the current schema: the pseudonym column on
/// `audit_log`, the old `processing_log` table kept as `processing_log_v1` (its rows stay
/// visible through the view), the `processing_log` view, and each application's link to its
/// submit record (`submit_seq`, found once in the log for the applications already there).
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    if !has_column(c, "applications", "submit_seq")? {
        // One transaction: a store left with the column but not its values would have its
        // older applications' records written a second time.
        c.execute_batch(
            "BEGIN IMMEDIATE;
             ALTER TABLE applications ADD COLUMN submit_seq INTEGER;
             UPDATE applications SET submit_seq = (
                 SELECT MIN(a.seq) FROM audit_log a
                 WHERE a.bsn = applications.bsn AND a.kind = 'application.submit'
                   AND json_extract(a.record, '$.details.application') = applications.id);
             COMMIT;",
        )?;
    }
    if !has_column(c, "audit_log", "data_subject_id")? {
        c.execute_batch("ALTER TABLE audit_log ADD COLUMN data_subject_id TEXT;")?;
    }
    let kind: Option<String> = c
        .query_row(
            "SELECT type FROM sqlite_master WHERE name = 'processing_log'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if kind.as_deref() == Some("table") {
        c.execute_batch(
            "ALTER TABLE processing_log RENAME TO processing_log_v1;
             DROP INDEX IF EXISTS processing_log_trace;",
        )?;
    }
    let v1: bool = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'processing_log_v1'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    let old_rows = if v1 {
        " UNION ALL SELECT seq, trace_id, span_id, parent_span_id, name, start_time, end_time,
             status_code, foreign_operation, processing_activity_id, data_subject_id,
             data_subject_id_type FROM processing_log_v1"
    } else {
        ""
    };
    c.execute_batch(&format!(
        "DROP VIEW IF EXISTS processing_log; CREATE VIEW processing_log AS {PROCESSING_VIEW}{old_rows};"
    ))
}

/// A citizen's application for a service, as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Application {
    pub id: String,
    pub service: String,
    pub organisation: String,
    #[serde(skip)]
    pub bsn: String,
    #[serde(skip)]
    pub actor: String,
    #[serde(skip)]
    pub idempotency_key: String,
    pub data: serde_json::Value,
    /// `received`, then `delivered`, `rejected` or `failed`.
    pub status: String,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub attempts: u32,
    #[serde(skip)]
    pub next_attempt_at: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The columns [`app_row`] reads, as a literal (so queries can be `concat!`ed from it).
macro_rules! app_select {
    () => {
        "SELECT id, service, organisation, bsn, actor, idempotency_key, data, status, reference,
        reason, attempts, next_attempt_at, created_at, updated_at FROM applications"
    };
}
const APP_SELECT: &str = app_select!();

/// A citizen's open applications, newest first: a range of the partial index
/// `applications_subject_open`, read no further than the limit.
const ZAKEN_OPEN: &str = concat!(
    app_select!(),
    " WHERE bsn = ?1 AND status = 'received' ORDER BY created_at DESC LIMIT ?2"
);
/// A citizen's latest applications, whatever their status: a range of `applications_subject`,
/// read no further than the limit.
const ZAKEN_LATEST: &str = concat!(
    app_select!(),
    " WHERE bsn = ?1 ORDER BY created_at DESC LIMIT ?2"
);

fn app_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Application> {
    Ok(Application {
        id: r.get(0)?,
        service: r.get(1)?,
        organisation: r.get(2)?,
        bsn: r.get(3)?,
        actor: r.get(4)?,
        idempotency_key: r.get(5)?,
        data: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
        status: r.get(7)?,
        reference: r.get(8)?,
        reason: r.get(9)?,
        attempts: r.get(10)?,
        next_attempt_at: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

/// An outcome's hash: bound to the record it completes, so changing either shows.
fn outcome_hash(record_hash: &str, outcome_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(record_hash.as_bytes());
    h.update(outcome_json.as_bytes());
    crate::lower_hex(&h.finalize())
}

fn chain_hash(prev: &str, seq: i64, record_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(record_json.as_bytes());
    crate::lower_hex(&h.finalize())
}

/// The HMAC keyed once; each pseudonym clones the keyed state.
fn pseudonym_mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| {
        <Hmac<Sha256> as Mac>::new_from_slice(b"ketenportaal").unwrap_or_else(|_| unreachable!())
    })
}

fn pseudonym(keyed: &Hmac<Sha256>, bsn: &Bsn) -> String {
    let mut m = keyed.clone();
    m.update(bsn.as_str().as_bytes());
    crate::lower_hex(&m.finalize().into_bytes())
}

impl AuditStore {
    /// Opens (and creates) the store and starts its writer thread.
    pub fn open(path: &Path, pseudonym_key: Vec<u8>) -> Result<AuditStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Folder(dir.to_path_buf(), e))?;
        }
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let writer = open_conn(path)?;
        writer
            .execute_batch(SCHEMA)
            .and_then(|()| migrate(&writer))
            .and_then(|()| writer.busy_timeout(LOCK_WAIT))
            .map_err(sqlite)?;
        let reader = open_conn(path)?;
        // The writer thread is the only one that writes; this connection cannot.
        reader
            .execute_batch("PRAGMA query_only=ON;")
            .map_err(sqlite)?;
        let (tx, rx) = mpsc::channel::<Work>(8192);
        let stats = Arc::new(Counters::default());
        let application_writes: Arc<AtomicU64> = Arc::default();
        let w = Writer {
            key: pseudonym_mac(&pseudonym_key),
            path: path.to_path_buf(),
            stats: stats.clone(),
            application_writes: application_writes.clone(),
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || w.run(writer, rx))
            .map_err(|e| StoreError::Folder(path.to_path_buf(), e))?;
        Ok(AuditStore {
            tx,
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_path_buf(),
            applications: moka::future::Cache::new(APPLICATION_LISTS),
            application_writes,
            stats,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer's counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            committed: self.stats.committed.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            retried: self.stats.retried.load(Ordering::Relaxed),
            split: self.stats.split.load(Ordering::Relaxed),
        }
    }

    /// Hands `work` to the writer and waits until its transaction has committed (or failed).
    async fn write<T>(
        &self,
        work: Work,
        done: oneshot::Receiver<Result<T, String>>,
    ) -> Result<T, StoreError> {
        self.tx
            .send(work)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match done.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(reason)) => Err(StoreError::NotWritten {
                path: self.path.clone(),
                reason,
            }),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    /// Appends a record; returns its sequence number once it is durable.
    pub async fn append(&self, record: AccessRecord) -> Result<i64, AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Work::Record(Record::new(record), done))
            .await
            .map_err(|_| AuditError("the store's writer has stopped".into()))?;
        match wait.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(AuditError(e)),
            Err(_) => Err(AuditError("the store's writer has stopped".into())),
        }
    }

    /// Runs a read on the reader connection, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let c = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&c).map_err(|source| StoreError::Sqlite { path, source })
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }

    /// Records about one data subject, newest first.
    pub async fn by_subject(
        &self,
        bsn: Bsn,
        limit: u32,
    ) -> Result<Vec<(i64, AccessRecord)>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT a.seq, a.record, o.outcome FROM audit_log a
                 LEFT JOIN audit_outcome o ON o.seq = a.seq
                 WHERE a.bsn = ?1 ORDER BY a.seq DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![bsn.as_str(), limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, json, outcome) = row?;
                if let Ok(mut rec) = serde_json::from_str::<AccessRecord>(&json) {
                    if let Some(done) =
                        outcome.and_then(|o| serde_json::from_str::<Completion>(&o).ok())
                    {
                        done.apply(&mut rec);
                    }
                    out.push((seq, rec));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Is a record with this trace id present? (Used by durability checks.)
    pub async fn has_trace(&self, trace_id: String) -> Result<bool, StoreError> {
        self.read(move |c| {
            c.query_row(
                "SELECT 1 FROM audit_log WHERE trace_id = ?1 LIMIT 1",
                [trace_id],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
        })
        .await
    }

    /// Number of rows in the audit log and the processing log.
    pub async fn counts(&self) -> Result<(i64, i64), StoreError> {
        self.read(|c| {
            let a = c.query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))?;
            let p = c.query_row("SELECT COUNT(*) FROM processing_log", [], |r| r.get(0))?;
            Ok((a, p))
        })
        .await
    }

    /// Partner adapter registrations, by id.
    pub async fn registrations(&self) -> Result<Vec<Registration>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, organisation, descriptor, sha256, updated_at, updated_by FROM registrations ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Registration {
                    id: r.get(0)?,
                    organisation: r.get(1)?,
                    descriptor: r.get(2)?,
                    sha256: r.get(3)?,
                    updated_at: r.get(4)?,
                    updated_by: r.get(5)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Stores (or replaces) a registration; durable on return.
    pub async fn put_registration(&self, r: Registration) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.write(Work::PutRegistration(Box::new(r), done), wait)
            .await
    }

    /// Removes a registration; true when there was one.
    pub async fn delete_registration(&self, id: String) -> Result<bool, StoreError> {
        let (done, wait) = oneshot::channel();
        self.write(Work::DeleteRegistration(id, done), wait).await
    }

    /// Runs an application write to its end, and drops `bsn`'s remembered list after it, in a
    /// task of its own: a caller that goes away (a client hanging up) cannot leave the write
    /// committed and the old list remembered.
    async fn write_application<T: Send + 'static>(
        &self,
        bsn: String,
        work: Work,
        done: oneshot::Receiver<Result<T, String>>,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::spawn(async move {
            let r = this.write(work, done).await;
            if let Ok(bsn) = Bsn::parse(&bsn) {
                this.applications.invalidate(&bsn).await;
            }
            r
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }

    /// Stores a new application together with its `application.submit` record `submit` (one
    /// transaction: both or neither), or returns the one already stored under the same actor and
    /// idempotency key (`false`), writing its record now when it has none. The writer fills in
    /// the record's subject and details from the stored application. Durable on return.
    pub async fn insert_application(
        &self,
        a: Application,
        submit: AccessRecord,
    ) -> Result<(Application, bool), StoreError> {
        let (done, wait) = oneshot::channel();
        let bsn = a.bsn.clone();
        let work = Work::Apply(Box::new(a), Box::new(submit), done);
        self.write_application(bsn, work, wait).await
    }

    pub async fn application(&self, id: String) -> Result<Option<Application>, StoreError> {
        self.read(move |c| {
            c.query_row(&format!("{APP_SELECT} WHERE id = ?1"), [id], app_row)
                .optional()
        })
        .await
    }

    /// A citizen's applications for the dossier's `zaken` section: the open ones (`received`)
    /// first, newest first, then the latest others; at most `limit` in all. Two index ranges,
    /// each read no further than `limit` rows, however many applications the citizen has.
    pub async fn applications_of(
        &self,
        bsn: Bsn,
        limit: u32,
    ) -> Result<Arc<[Application]>, StoreError> {
        if let Some((bound, known)) = self.applications.get(&bsn).await
            && bound == limit
        {
            return Ok(known);
        }
        let writes = self.application_writes.load(Ordering::SeqCst);
        let list: Arc<[Application]> = self
            .read(move |c| {
                let mut list: Vec<Application> = c
                    .prepare_cached(ZAKEN_OPEN)?
                    .query_map(params![bsn.as_str(), limit], app_row)?
                    .collect::<Result<_, _>>()?;
                let latest = c
                    .prepare_cached(ZAKEN_LATEST)?
                    .query_map(params![bsn.as_str(), limit], app_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                // The open ones among the latest are already listed (they are among the newest
                // open ones).
                list.extend(latest.into_iter().filter(|a| a.status != "received"));
                list.truncate(limit as usize);
                Ok(list.into())
            })
            .await?;
        // Remember it only when no write happened meanwhile; a write that lands between the
        // check and the insert bumps the counter first, which the second check sees, and drops
        // the entry after it anyway.
        if self.application_writes.load(Ordering::SeqCst) == writes {
            self.applications.insert(bsn, (limit, list.clone())).await;
            if self.application_writes.load(Ordering::SeqCst) != writes {
                self.applications.invalidate(&bsn).await;
            }
        }
        Ok(list)
    }

    /// Applications waiting for (another) delivery attempt now.
    pub async fn due_applications(&self, limit: u32) -> Result<Vec<Application>, StoreError> {
        let now = Utc::now().to_rfc3339();
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "{APP_SELECT} WHERE status = 'received' AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT ?2"
            ))?;
            let rows = st.query_map(params![now, limit], app_row)?;
            rows.collect()
        })
        .await
    }

    /// Records a delivery outcome (status, reference or reason, next attempt).
    pub async fn update_application(&self, a: Application) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let bsn = a.bsn.clone();
        self.write_application(bsn, Work::Update(Box::new(a), done), wait)
            .await
    }

    /// Can the store take writes? (readiness)
    pub async fn writable(&self) -> bool {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
            .is_ok()
            && !self.tx.is_closed()
    }
}

impl AuditSink for AuditStore {
    fn record(&self, rec: AccessRecord) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move { self.append(rec).await.map(|_| ()) })
    }

    fn begin(&self, rec: AccessRecord) -> BoxFuture<'_, Result<Begun, AuditError>> {
        Box::pin(async move { self.append(rec).await.map(|seq| Begun(Some(seq))) })
    }

    fn complete(&self, begun: Begun, outcome: &Completion) {
        let Begun(Some(seq)) = begun else { return };
        let job = Work::Outcome {
            of: seq,
            json: serde_json::to_string(outcome).unwrap_or_default(),
        };
        if let Err(mpsc::error::TrySendError::Full(job)) = self.tx.try_send(job) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(job).await;
            });
        }
    }
}

/// The head of the hash chain: the last record's sequence number and hash.
#[derive(Clone)]
struct Chain {
    seq: i64,
    prev: String,
}

fn chain_head(c: &Connection) -> rusqlite::Result<Chain> {
    c.query_row(
        "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
        [],
        |r| {
            Ok(Chain {
                seq: r.get(0)?,
                prev: r.get(1)?,
            })
        },
    )
    .optional()
    .map(|o| {
        o.unwrap_or(Chain {
            seq: 0,
            prev: GENESIS.to_string(),
        })
    })
}

/// A failure that passes: the file locked by another process (or, within one, a table).
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The writer thread's state beside its connection.
struct Writer {
    key: Hmac<Sha256>,
    path: PathBuf,
    stats: Arc<Counters>,
    application_writes: Arc<AtomicU64>,
}

impl Writer {
    fn run(&self, mut c: Connection, mut rx: mpsc::Receiver<Work>) {
        let mut chain = match chain_head(&c) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(store = %self.path.display(), error = %e, "Audit store unreadable; refusing all writes.");
                while let Some(work) = rx.blocking_recv() {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    work.fail(format!("store unreadable: {e}"));
                }
                return;
            }
        };
        let mut batch: Vec<Work> = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            let deadline = Instant::now() + RETRY_FOR;
            match self.commit(&mut c, &batch, &chain, deadline) {
                Ok((next, done)) => {
                    chain = next;
                    self.committed(&batch);
                    for (work, d) in batch.drain(..).zip(done) {
                        work.reply(Ok(d));
                    }
                }
                Err(e) if is_busy(&e) => {
                    tracing::error!(store = %self.path.display(), error = %e, changes = batch.len(), "Store locked by another process for too long; changes not written.");
                    self.stats
                        .failed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for work in batch.drain(..) {
                        work.fail(e.to_string());
                    }
                }
                Err(e) => {
                    // Tried again change by change, so that one change that cannot be written
                    // (a full disk fails them all) does not take the others with it.
                    tracing::warn!(store = %self.path.display(), error = %e, changes = batch.len(), "Batch not committed; writing its changes one by one.");
                    self.stats.split.fetch_add(1, Ordering::Relaxed);
                    for work in batch.drain(..) {
                        match self.commit(&mut c, std::slice::from_ref(&work), &chain, deadline) {
                            Ok((next, mut done)) => {
                                chain = next;
                                self.committed(std::slice::from_ref(&work));
                                match done.pop() {
                                    Some(d) => work.reply(Ok(d)),
                                    None => work.fail("the store gave no result".into()),
                                }
                            }
                            Err(e) => {
                                tracing::error!(store = %self.path.display(), error = %e, "Change not committed.");
                                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                                work.fail(e.to_string());
                            }
                        }
                    }
                }
            }
        }
    }

    /// After a commit, before any caller hears of it.
    fn committed(&self, batch: &[Work]) {
        if batch.iter().any(Work::touches_applications) {
            self.application_writes.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Commits `batch` in one transaction after `chain`, trying again while the file is locked
    /// by another process, until `deadline`. Returns the new head and each change's result.
    fn commit(
        &self,
        c: &mut Connection,
        batch: &[Work],
        chain: &Chain,
        deadline: Instant,
    ) -> rusqlite::Result<(Chain, Vec<Done>)> {
        let mut pause = Duration::from_millis(5);
        loop {
            match self.write_batch(c, batch, chain) {
                Ok(r) => {
                    self.stats.committed.fetch_add(1, Ordering::Relaxed);
                    return Ok(r);
                }
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(store = %self.path.display(), error = %e, "Store locked by another process; trying again.");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn write_batch(
        &self,
        c: &mut Connection,
        batch: &[Work],
        chain: &Chain,
    ) -> rusqlite::Result<(Chain, Vec<Done>)> {
        // The write lock is taken at BEGIN: a transaction that started by reading could not
        // take it later once another connection had written (SQLite refuses that upgrade at
        // once, whatever the busy timeout).
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut chain = chain.clone();
        let mut done = Vec::with_capacity(batch.len());
        for work in batch {
            done.push(self.write_one(&tx, &mut chain, work)?);
        }
        // Dropped without commit (an error above, or here), the transaction rolls back.
        tx.commit()?;
        Ok((chain, done))
    }

    fn write_one(
        &self,
        tx: &rusqlite::Transaction<'_>,
        chain: &mut Chain,
        work: &Work,
    ) -> rusqlite::Result<Done> {
        match work {
            Work::Record(r, _) => self.append(tx, chain, r).map(Done::Seq),
            Work::Outcome { of, json } => {
                // The record is durable before its outcome is sent; an outcome without one
                // (impossible) is dropped rather than failing the batch's other changes.
                let parent: Option<String> = tx
                    .prepare_cached("SELECT hash FROM audit_log WHERE seq = ?1")?
                    .query_row([of], |r| r.get(0))
                    .optional()?;
                if let Some(parent) = parent {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO audit_outcome (seq, outcome, hash) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![of, json, outcome_hash(&parent, json)])?;
                }
                Ok(Done::Unit)
            }
            Work::Apply(a, submit, _) => self.apply(tx, chain, a, submit),
            Work::Update(a, _) => {
                tx.prepare_cached(
                    "UPDATE applications SET status = ?2, reference = ?3, reason = ?4, attempts = ?5,
                         next_attempt_at = ?6, updated_at = ?7 WHERE id = ?1",
                )?
                .execute(params![
                    a.id,
                    a.status,
                    a.reference,
                    a.reason,
                    a.attempts,
                    a.next_attempt_at,
                    Utc::now().to_rfc3339()
                ])?;
                Ok(Done::Unit)
            }
            Work::PutRegistration(r, _) => {
                tx.execute(
                    "INSERT INTO registrations (id, organisation, descriptor, sha256, updated_at, updated_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO UPDATE SET organisation = ?2, descriptor = ?3, sha256 = ?4,
                         updated_at = ?5, updated_by = ?6",
                    params![r.id, r.organisation, r.descriptor, r.sha256, r.updated_at, r.updated_by],
                )?;
                Ok(Done::Unit)
            }
            Work::DeleteRegistration(id, _) => tx
                .execute("DELETE FROM registrations WHERE id = ?1", [id])
                .map(|n| Done::Removed(n > 0)),
        }
    }

    /// Appends one record to the chain; its sequence number.
    fn append(
        &self,
        tx: &rusqlite::Transaction<'_>,
        chain: &mut Chain,
        r: &Record,
    ) -> rusqlite::Result<i64> {
        // One row per record: the processing log is a view over these rows (see
        // `PROCESSING_VIEW`), so a dossier read costs one insert, not two.
        let seq = chain.seq + 1;
        let hash = chain_hash(&chain.prev, seq, &r.json);
        tx.prepare_cached(
            "INSERT INTO audit_log (seq, time, kind, trace_id, actor, actor_type, bsn, record,
                 prev_hash, hash, data_subject_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            seq,
            r.time,
            r.kind,
            r.trace_id,
            r.actor,
            r.actor_type,
            r.bsn.as_ref().map(Bsn::as_str),
            r.json,
            chain.prev,
            hash,
            r.bsn.as_ref().map(|b| pseudonym(&self.key, b)),
        ])?;
        *chain = Chain { seq, prev: hash };
        Ok(seq)
    }

    /// A new application with its submit record, or the stored one for the same actor and key
    /// (with its record written now if it has none).
    fn apply(
        &self,
        tx: &rusqlite::Transaction<'_>,
        chain: &mut Chain,
        a: &Application,
        submit: &AccessRecord,
    ) -> rusqlite::Result<Done> {
        let inserted = tx
            .prepare_cached(
                "INSERT INTO applications (id, service, organisation, bsn, actor, idempotency_key, data, status,
                     reference, reason, attempts, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL, 0, ?9, ?9, ?9)
                 ON CONFLICT (actor, idempotency_key) DO NOTHING",
            )?
            .execute(params![
                a.id,
                a.service,
                a.organisation,
                a.bsn,
                a.actor,
                a.idempotency_key,
                a.data.to_string(),
                a.status,
                a.created_at
            ])?
            == 1;
        let (stored, submit_seq) = if inserted {
            (Box::new(a.clone()), None)
        } else {
            let stored = tx.query_row(
                &format!("{APP_SELECT} WHERE actor = ?1 AND idempotency_key = ?2"),
                params![a.actor, a.idempotency_key],
                app_row,
            )?;
            let seq: Option<i64> = tx.query_row(
                "SELECT submit_seq FROM applications WHERE id = ?1",
                [&stored.id],
                |r| r.get(0),
            )?;
            (Box::new(stored), seq)
        };
        if submit_seq.is_none() {
            let mut rec = submit.clone();
            rec.bsn = Bsn::parse(&stored.bsn).ok();
            let mut details =
                serde_json::json!({"application": stored.id, "service": stored.service});
            if !inserted {
                // The first submission left no record (a store from before the two were one
                // transaction): this one is written when the citizen sent it again.
                details["resent"] = serde_json::Value::Bool(true);
            }
            rec.details = Some(details);
            let seq = self.append(tx, chain, &Record::new(rec))?;
            tx.prepare_cached("UPDATE applications SET submit_seq = ?2 WHERE id = ?1")?
                .execute(params![stored.id, seq])?;
        }
        Ok(Done::Applied(stored, inserted))
    }
}

// ----------------------------------------------------------------------------------------------
// Verification and reports (read-only, from the CLI)
// ----------------------------------------------------------------------------------------------

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Intact {
        records: i64,
        head: String,
    },
    /// The row's content does not match its hash: it was changed.
    Modified {
        seq: i64,
    },
    /// A sequence number is missing: a row was removed.
    Missing {
        after: i64,
        next: i64,
    },
    /// The row does not link to its predecessor: rows were reordered or replaced.
    Broken {
        seq: i64,
    },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Intact { records, head } => {
                write!(f, "intact: {records} records, head {head}")
            }
            Verdict::Modified { seq } => write!(
                f,
                "record {seq} was modified (its hash does not match its content)"
            ),
            Verdict::Missing { after, next } => {
                write!(f, "records between {after} and {next} were removed")
            }
            Verdict::Broken { seq } => write!(
                f,
                "record {seq} does not follow its predecessor (reordered or replaced)"
            ),
        }
    }
}

/// Walks the whole chain. Opens the file read-only; safe next to a running gateway.
pub fn verify(path: &Path) -> Result<Verdict, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(err)?;
    let mut st = c
        .prepare("SELECT seq, record, prev_hash, hash FROM audit_log ORDER BY seq")
        .map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    let mut expected_prev = GENESIS.to_string();
    let mut last_seq = 0i64;
    let mut count = 0i64;
    while let Some(row) = rows.next().map_err(err)? {
        let seq: i64 = row.get(0).map_err(err)?;
        let record: String = row.get(1).map_err(err)?;
        let prev: String = row.get(2).map_err(err)?;
        let hash: String = row.get(3).map_err(err)?;
        if chain_hash(&prev, seq, &record) != hash {
            return Ok(Verdict::Modified { seq });
        }
        if seq != last_seq + 1 {
            return Ok(Verdict::Missing {
                after: last_seq,
                next: seq,
            });
        }
        if prev != expected_prev {
            return Ok(Verdict::Broken { seq });
        }
        expected_prev = hash;
        last_seq = seq;
        count += 1;
    }
    // Outcomes completing a record (reads whose record was written during the fan-out).
    let mut st = c
        .prepare(
            "SELECT o.seq, o.outcome, o.hash, a.hash FROM audit_outcome o
             LEFT JOIN audit_log a ON a.seq = o.seq ORDER BY o.seq",
        )
        .map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        let seq: i64 = row.get(0).map_err(err)?;
        let outcome: String = row.get(1).map_err(err)?;
        let hash: String = row.get(2).map_err(err)?;
        let parent: Option<String> = row.get(3).map_err(err)?;
        if parent.is_none_or(|p| outcome_hash(&p, &outcome) != hash) {
            return Ok(Verdict::Modified { seq });
        }
    }
    Ok(Verdict::Intact {
        records: count,
        head: expected_prev,
    })
}

/// Dutch civil time (CET/CEST) for office-hours rules, without a time-zone database:
/// summer time runs from the last Sunday of March to the last Sunday of October, 01:00 UTC.
pub fn dutch_time(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    let last_sunday = |month: u32| -> DateTime<Utc> {
        let first_next = if month == 12 {
            Utc.with_ymd_and_hms(t.year() + 1, 1, 1, 1, 0, 0)
        } else {
            Utc.with_ymd_and_hms(t.year(), month + 1, 1, 1, 0, 0)
        }
        .single()
        .unwrap_or(t);
        let mut d = first_next - ChronoDuration::days(1);
        while d.weekday() != Weekday::Sun {
            d -= ChronoDuration::days(1);
        }
        d
    };
    let summer = t >= last_sunday(3) && t < last_sunday(10);
    (t + ChronoDuration::hours(if summer { 2 } else { 1 })).naive_utc()
}

/// The security officer's report over a period (Suwinet-style protocollering).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub dossier_reads: u64,
    /// Reads between 19:00 and 06:00 Dutch time.
    pub outside_office_hours: u64,
    pub at_weekends: u64,
    /// (masked BSN, reads), most-read first.
    pub most_viewed: Vec<(String, u64)>,
    /// (actor, organisation, reads).
    pub top_users: Vec<(String, String, u64)>,
    pub per_purpose: BTreeMap<String, u64>,
    pub per_view: BTreeMap<String, u64>,
    /// Role -> distinct users.
    pub users_per_role: BTreeMap<String, u64>,
    /// (time, actor, view, purpose) of each read outside office hours or at weekends.
    pub unusual: Vec<(String, String, String, String)>,
}

pub fn report(
    path: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    top: usize,
) -> Result<Report, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(err)?;
    let mut st = c
        .prepare("SELECT record FROM audit_log WHERE kind = 'dossier.read' AND time >= ?1 AND time < ?2 ORDER BY seq")
        .map_err(err)?;
    let rows = st
        .query_map(params![from.to_rfc3339(), to.to_rfc3339()], |r| {
            r.get::<_, String>(0)
        })
        .map_err(err)?;
    let mut rep = Report {
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        ..Report::default()
    };
    let mut subjects: BTreeMap<String, u64> = BTreeMap::new();
    let mut users: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut roles: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        let Ok(rec) = serde_json::from_str::<AccessRecord>(&row.map_err(err)?) else {
            continue;
        };
        rep.dossier_reads += 1;
        let local = dutch_time(rec.time);
        let weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
        let off_hours = local.hour() >= 19 || local.hour() < 6;
        rep.outside_office_hours += u64::from(off_hours);
        rep.at_weekends += u64::from(weekend);
        if (off_hours || weekend) && rec.actor_type == "employee" {
            rep.unusual.push((
                local.format("%Y-%m-%d %H:%M").to_string(),
                rec.actor.clone(),
                rec.view.clone().unwrap_or_default(),
                rec.purpose.clone().unwrap_or_default(),
            ));
        }
        if let Some(b) = rec.bsn {
            *subjects.entry(b.masked()).or_default() += 1;
        }
        if rec.actor_type == "employee" {
            *users
                .entry((
                    rec.actor.clone(),
                    rec.actor_organisation.clone().unwrap_or_default(),
                ))
                .or_default() += 1;
            for r in &rec.actor_roles {
                roles
                    .entry(r.clone())
                    .or_default()
                    .insert(rec.actor.clone());
            }
        }
        *rep.per_purpose
            .entry(
                rec.purpose
                    .clone()
                    .unwrap_or_else(|| "(burger zelf)".into()),
            )
            .or_default() += 1;
        *rep.per_view
            .entry(rec.view.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let mut s: Vec<(String, u64)> = subjects.into_iter().collect();
    s.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    s.truncate(top);
    rep.most_viewed = s;
    let mut u: Vec<(String, String, u64)> =
        users.into_iter().map(|((a, o), n)| (a, o, n)).collect();
    u.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    u.truncate(top);
    rep.top_users = u;
    rep.users_per_role = roles
        .into_iter()
        .map(|(r, s)| (r, s.len() as u64))
        .collect();
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32, bsn: &str, hour: u32) -> AccessRecord {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 2, hour, 5, i % 60)
            .single()
            .unwrap();
        AccessRecord {
            kind: "dossier.read".into(),
            started_at: t,
            time: t,
            trace_id: format!("{i:032x}"),
            span_id: format!("{i:016x}"),
            foreign_span_id: None,
            actor_type: "employee".into(),
            actor: format!("user{}", i % 3),
            actor_organisation: Some("uwv".into()),
            actor_roles: vec!["uwv-werkcoach".into()],
            bsn: Some(Bsn::parse(bsn).unwrap()),
            view: Some("werkcoach".into()),
            purpose: Some("re-integratie".into()),
            processing_activity: Some("https://register.example/x".into()),
            sections: vec!["persoon".into()],
            sources: vec![],
            outcome: "served".into(),
            details: None,
        }
    }

    async fn filled(n: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        let writes = (0..n).map(|i| store.append(rec(i, "999993653", 10)));
        for r in futures::future::join_all(writes).await {
            r.unwrap();
        }
        (dir, path)
    }

    #[tokio::test]
    async fn group_commit_keeps_a_gapless_chain() {
        let (_d, path) = filled(300).await;
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Intact { records: 300, .. }
        ));
        let c = Connection::open(&path).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM processing_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 300);
        let subject: String = c
            .query_row(
                "SELECT data_subject_id FROM processing_log LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(subject.len(), 64);
        assert!(!subject.contains("999993653"));
    }

    #[tokio::test]
    async fn a_store_from_before_the_one_row_schema_keeps_its_processing_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL,
                 trace_id TEXT NOT NULL, actor TEXT NOT NULL, actor_type TEXT NOT NULL, bsn TEXT,
                 record TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
             CREATE INDEX audit_log_trace ON audit_log (trace_id);
             CREATE TABLE processing_log (seq INTEGER PRIMARY KEY, trace_id TEXT NOT NULL,
                 span_id TEXT NOT NULL, parent_span_id TEXT, name TEXT NOT NULL,
                 start_time TEXT NOT NULL, end_time TEXT NOT NULL, status_code TEXT NOT NULL,
                 foreign_operation TEXT, processing_activity_id TEXT, data_subject_id TEXT,
                 data_subject_id_type TEXT);
             INSERT INTO processing_log VALUES (1, 'old', 'span', NULL, 'ketenportaal.dossier.read',
                 't0', 't1', 'OK', NULL, NULL, 'pseudonym', 'BSN');",
        )
        .unwrap();
        drop(c);
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        store.append(rec(1, "999993653", 10)).await.unwrap();
        let c = Connection::open(&path).unwrap();
        let traces: Vec<String> = c
            .prepare("SELECT trace_id FROM processing_log ORDER BY trace_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(traces, vec![format!("{:032x}", 1), "old".to_string()]);
        // Opening it again changes nothing.
        drop(store);
        AuditStore::open(&path, b"key".to_vec()).unwrap();
    }

    #[tokio::test]
    async fn one_row_per_read_gives_the_processing_record_fields() {
        let (_d, path) = filled(1).await;
        let c = Connection::open(&path).unwrap();
        let (name, status, activity, kind, started): (String, String, String, String, String) = c
            .query_row(
                "SELECT name, status_code, processing_activity_id, data_subject_id_type, start_time
                 FROM processing_log",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(name, "ketenportaal.dossier.read");
        assert_eq!(status, "OK");
        assert_eq!(activity, "https://register.example/x");
        assert_eq!(kind, "BSN");
        assert!(started.starts_with("2026-11-02T10:05:"), "{started}");
    }

    #[tokio::test]
    async fn an_outcome_completes_its_record_and_is_covered_by_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        let mut intent = rec(1, "999993653", 10);
        intent.outcome = "requested".into();
        let begun = store.begin(intent).await.unwrap();
        let end = Utc
            .with_ymd_and_hms(2026, 11, 2, 10, 6, 0)
            .single()
            .unwrap();
        store.complete(
            begun,
            &Completion {
                time: end,
                outcome: "partial".into(),
                sources: vec![(Arc::from("uwv"), "timeout".into())],
            },
        );
        // The outcome is not waited for; a later record's commit comes after it.
        store.append(rec(2, "999990019", 10)).await.unwrap();
        let rows = store
            .by_subject(Bsn::parse("999993653").unwrap(), 10)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1.outcome, "partial");
        assert_eq!(rows[0].1.time, end);
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Intact { records: 2, .. }
        ));
        let c = Connection::open(&path).unwrap();
        let (status, end_time): (String, String) = c
            .query_row(
                "SELECT status_code, end_time FROM processing_log WHERE seq = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(status, "OK");
        assert!(end_time.starts_with("2026-11-02T10:06:00"), "{end_time}");
        c.execute(
            "UPDATE audit_outcome SET outcome = replace(outcome, 'partial', 'served')",
            [],
        )
        .unwrap();
        assert_eq!(verify(&path).unwrap(), Verdict::Modified { seq: 1 });
    }

    #[tokio::test]
    async fn verify_catches_modified_removed_and_reordered_records() {
        let (_d, path) = filled(10).await;
        let c = Connection::open(&path).unwrap();
        // Modified.
        c.execute("UPDATE audit_log SET record = replace(record, 're-integratie', 'fraude') WHERE seq = 4", [])
            .unwrap();
        assert_eq!(verify(&path).unwrap(), Verdict::Modified { seq: 4 });

        let (_d, path) = filled(10).await;
        let c = Connection::open(&path).unwrap();
        c.execute("DELETE FROM audit_log WHERE seq = 6", [])
            .unwrap();
        assert_eq!(
            verify(&path).unwrap(),
            Verdict::Missing { after: 5, next: 7 }
        );

        // Reordered: swap the contents (with their hashes) of two rows.
        let (_d, path) = filled(10).await;
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "UPDATE audit_log SET seq = -3 WHERE seq = 3;
             UPDATE audit_log SET seq = 3 WHERE seq = 5;
             UPDATE audit_log SET seq = 5 WHERE seq = -3;",
        )
        .unwrap();
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Modified { .. } | Verdict::Broken { .. }
        ));
    }

    #[tokio::test]
    async fn the_report_counts_odd_hours_and_top_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        // 2026-11-02 is a Monday; CET = UTC+1. 19:05 UTC = 20:05 local.
        for (i, h) in [(1, 9), (2, 19), (3, 4), (4, 12)] {
            store.append(rec(i, "999993653", h)).await.unwrap();
        }
        store.append(rec(5, "999990019", 10)).await.unwrap();
        let from = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().unwrap();
        let to = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).single().unwrap();
        let r = report(&path, from, to, 10).unwrap();
        assert_eq!(r.dossier_reads, 5);
        assert_eq!(r.outside_office_hours, 2, "{r:?}");
        assert_eq!(r.at_weekends, 0);
        assert_eq!(r.most_viewed[0], ("*****3653".to_string(), 4));
        assert_eq!(r.per_purpose["re-integratie"], 5);
        assert_eq!(r.users_per_role["uwv-werkcoach"], 3);
    }

    #[test]
    fn dutch_time_follows_summer_time() {
        let winter = Utc
            .with_ymd_and_hms(2026, 1, 15, 12, 0, 0)
            .single()
            .unwrap();
        assert_eq!(dutch_time(winter).hour(), 13);
        let summer = Utc
            .with_ymd_and_hms(2026, 7, 15, 12, 0, 0)
            .single()
            .unwrap();
        assert_eq!(dutch_time(summer).hour(), 14);
        // 2026-03-29 is the last Sunday of March: 00:59 UTC is winter, 01:00 UTC summer.
        let before = Utc
            .with_ymd_and_hms(2026, 3, 29, 0, 59, 0)
            .single()
            .unwrap();
        assert_eq!(dutch_time(before).hour(), 1);
        let after = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).single().unwrap();
        assert_eq!(dutch_time(after).hour(), 3);
    }

    fn application(n: u32, status: &str) -> Application {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap()
            + ChronoDuration::hours(i64::from(n));
        Application {
            id: format!("app-{n:04}"),
            service: "bijstand-aanvragen".into(),
            organisation: "gemeente-utrecht".into(),
            bsn: "999993653".into(),
            actor: "digid:999993653".into(),
            idempotency_key: format!("key-{n}"),
            data: serde_json::json!({}),
            status: status.into(),
            reference: None,
            reason: None,
            attempts: 0,
            next_attempt_at: t.to_rfc3339(),
            created_at: t.to_rfc3339(),
            updated_at: t.to_rfc3339(),
        }
    }

    fn submit_record() -> AccessRecord {
        let mut r = rec(0, "999993653", 10);
        r.kind = "application.submit".into();
        r.outcome = "accepted".into();
        r
    }

    #[test]
    fn the_zaken_queries_read_an_index_range_no_further_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        drop(AuditStore::open(&path, b"key".to_vec()).unwrap());
        let c = Connection::open(&path).unwrap();
        for (sql, index) in [
            (ZAKEN_OPEN, "applications_subject_open"),
            (ZAKEN_LATEST, "applications_subject"),
        ] {
            let plan: Vec<String> = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params!["999993653", 20], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains(&format!("USING INDEX {index} (bsn=?)")),
                "{sql}: {plan}"
            );
            // Read in index order: no sort of all the citizen's rows before the limit.
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
            assert!(sql.ends_with("LIMIT ?2"));
        }
    }

    #[tokio::test]
    async fn zaken_are_the_open_ones_first_then_the_latest_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.sqlite"), b"key".to_vec()).unwrap();
        // 30 applications; 3, 10 and 25 still open.
        for n in 0..30 {
            let open = [3, 10, 25].contains(&n);
            let a = application(n, if open { "received" } else { "delivered" });
            store.insert_application(a, submit_record()).await.unwrap();
            if !open {
                store
                    .update_application(application(n, "delivered"))
                    .await
                    .unwrap();
            }
        }
        let bsn = Bsn::parse("999993653").unwrap();
        let ids = |l: &[Application]| l.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
        let listed = store.applications_of(bsn, 5).await.unwrap();
        assert_eq!(
            ids(&listed),
            ["app-0025", "app-0010", "app-0003", "app-0029", "app-0028"]
        );
        // Fewer than the open ones: the newest open ones.
        let listed = store.applications_of(bsn, 2).await.unwrap();
        assert_eq!(ids(&listed), ["app-0025", "app-0010"]);
        // More than there are: all of them, none twice.
        let listed = store.applications_of(bsn, 100).await.unwrap();
        assert_eq!(listed.len(), 30);
        // A delivery drops the remembered list.
        store
            .update_application(application(25, "delivered"))
            .await
            .unwrap();
        let listed = store.applications_of(bsn, 5).await.unwrap();
        assert_eq!(
            ids(&listed),
            ["app-0010", "app-0003", "app-0029", "app-0028", "app-0027"]
        );
    }

    #[tokio::test]
    async fn an_application_and_its_submit_record_are_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log
             BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
        // The record cannot be written: neither is the application.
        assert!(
            store
                .insert_application(application(1, "received"), submit_record())
                .await
                .is_err()
        );
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM applications", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        c.execute_batch("DROP TRIGGER refuse;").unwrap();
        let (stored, new) = store
            .insert_application(application(1, "received"), submit_record())
            .await
            .unwrap();
        assert!(new);
        let (seq, details): (i64, String) = c
            .query_row(
                "SELECT a.seq, json_extract(a.record, '$.details') FROM applications p
                 JOIN audit_log a ON a.seq = p.submit_seq WHERE p.id = ?1",
                [&stored.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(seq, 1);
        assert_eq!(
            details,
            r#"{"application":"app-0001","service":"bijstand-aanvragen"}"#
        );
        // Another key is another application; the same key again finds the first one, and
        // writes no second record.
        let (other, new) = store
            .insert_application(application(2, "received"), submit_record())
            .await
            .unwrap();
        assert!(new);
        assert_ne!(other.id, stored.id);
        let mut same_key = application(3, "received");
        same_key.idempotency_key = stored.idempotency_key.clone();
        let (found, new) = store
            .insert_application(same_key, submit_record())
            .await
            .unwrap();
        assert!(!new);
        assert_eq!(found.id, stored.id);
        assert_eq!(store.counts().await.unwrap().0, 2);
        assert_eq!(store.stats().failed, 1);
    }

    #[tokio::test]
    async fn a_store_from_before_submit_seq_links_its_applications_to_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        for n in 1..=2 {
            store
                .insert_application(application(n, "delivered"), submit_record())
                .await
                .unwrap();
        }
        drop(store);
        // As an older version left it: no link, and the second application without a record
        // (it died in between).
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "ALTER TABLE applications DROP COLUMN submit_seq;
             DELETE FROM audit_log WHERE seq = 2;",
        )
        .unwrap();
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        let links: Vec<(String, Option<i64>)> = c
            .prepare("SELECT id, submit_seq FROM applications ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            links,
            [
                ("app-0001".to_string(), Some(1)),
                ("app-0002".to_string(), None)
            ]
        );
        // Sent again: the first keeps its record; the second gets its record now.
        for n in 1..=2 {
            let (_, new) = store
                .insert_application(application(n, "received"), submit_record())
                .await
                .unwrap();
            assert!(!new);
        }
        let resent: Vec<(i64, String)> = c
            .prepare(
                "SELECT seq, json_extract(record, '$.details') FROM audit_log
                 WHERE kind = 'application.submit' ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            resent,
            [
                (
                    1,
                    r#"{"application":"app-0001","service":"bijstand-aanvragen"}"#.to_string()
                ),
                (
                    2,
                    r#"{"application":"app-0002","resent":true,"service":"bijstand-aanvragen"}"#
                        .to_string()
                )
            ]
        );
    }

    #[tokio::test]
    async fn a_transaction_that_finds_the_file_locked_waits_and_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        // Another process holds the write lock longer than one attempt waits for it.
        let holder = std::thread::spawn({
            let path = path.clone();
            move || {
                let c = Connection::open(&path).unwrap();
                c.execute_batch("BEGIN IMMEDIATE;").unwrap();
                std::thread::sleep(LOCK_WAIT + Duration::from_millis(800));
                c.execute_batch("COMMIT;").unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let writes = (0..20).map(|i| store.append(rec(i, "999993653", 10)));
        for r in futures::future::join_all(writes).await {
            r.unwrap();
        }
        holder.join().unwrap();
        let stats = store.stats();
        assert!(stats.retried >= 1, "{stats:?}");
        assert_eq!(stats.failed, 0);
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Intact { records: 20, .. }
        ));
    }

    #[tokio::test]
    async fn a_change_that_cannot_be_written_does_not_take_its_batch_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.actor = 'poison'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        // Held briefly, so that all the records queue up and go in one batch.
        c.execute_batch("BEGIN IMMEDIATE;").unwrap();
        let writes = (0..41).map(|i| {
            let mut r = rec(i, "999993653", 10);
            if i == 20 {
                r.actor = "poison".into();
            }
            store.append(r)
        });
        let release = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.execute_batch("COMMIT;").unwrap();
        };
        let (results, ()) = futures::join!(futures::future::join_all(writes), release);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_ok(), i != 20, "record {i}: {r:?}");
        }
        let stats = store.stats();
        assert_eq!(stats.failed, 1, "{stats:?}");
        assert!(stats.split >= 1, "{stats:?}");
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Intact { records: 40, .. }
        ));
    }
}

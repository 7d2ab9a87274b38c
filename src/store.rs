//! The durable store: an append-only, hash-chained audit log in SQLite (WAL, `synchronous=FULL`).
//!
//! Writes go through one writer thread that commits in groups: every record waiting when a
//! transaction starts is written in it, and all of their requests are released by one fsync.
//! Durability costs one fsync per *batch*, not per request, and is never skipped. A request
//! whose record cannot be committed gets an error and its answer is withheld (fail closed).
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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Duration as ChronoDuration, TimeZone, Timelike, Utc, Weekday};
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::audit::{AccessRecord, AuditError, AuditSink, Begun, Completion};
use crate::bsn::Bsn;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Largest group committed in one transaction.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store {0}: cannot create its folder: {1}")]
    Folder(PathBuf, std::io::Error),
    #[error("the store's writer has stopped")]
    WriterGone,
}

/// One record on its way to the writer, already serialised on the caller's thread: the writer
/// thread (the store's bottleneck) only hashes, pseudonymises and inserts.
struct Job {
    /// The canonical JSON of the record (what the chain hashes).
    json: String,
    /// `record.time` as RFC 3339 (the column reports filter on).
    time: String,
    kind: String,
    trace_id: String,
    actor: String,
    actor_type: String,
    bsn: Option<Bsn>,
    /// For an outcome (see [`AuditSink::complete`]): the access record it completes; `json`
    /// is then the outcome and goes to `audit_outcome`.
    completes: Option<i64>,
    done: oneshot::Sender<Result<i64, String>>,
}

impl Job {
    fn new(record: AccessRecord, done: oneshot::Sender<Result<i64, String>>) -> Job {
        Job {
            // Serialising a struct of strings, numbers and a JSON value cannot fail.
            json: serde_json::to_string(&record).unwrap_or_default(),
            time: record.time.to_rfc3339(),
            kind: record.kind,
            trace_id: record.trace_id,
            actor: record.actor,
            actor_type: record.actor_type,
            bsn: record.bsn,
            completes: None,
            done,
        }
    }

    fn outcome(seq: i64, outcome: &Completion) -> Job {
        Job {
            json: serde_json::to_string(outcome).unwrap_or_default(),
            time: String::new(),
            kind: String::new(),
            trace_id: String::new(),
            actor: String::new(),
            actor_type: String::new(),
            bsn: None,
            completes: Some(seq),
            // Nobody waits for an outcome.
            done: oneshot::channel().0,
        }
    }
}

/// The audit store. Cheap to clone.
#[derive(Clone)]
pub struct AuditStore {
    tx: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Each citizen's applications as last read: the dossier's `zaken` section asks on every
    /// read, and this process is the only writer of the table (SQLite is single-instance), so
    /// every change passes through [`AuditStore::insert_application`] or
    /// [`AuditStore::update_application`], which drop the subject's entry.
    applications: moka::future::Cache<Bsn, Arc<Vec<Application>>>,
    /// Bumped by every application write, so a read that raced a write is not remembered.
    application_writes: Arc<std::sync::atomic::AtomicU64>,
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
    UNIQUE (actor, idempotency_key)
);
CREATE INDEX IF NOT EXISTS applications_due ON applications (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS applications_bsn ON applications (bsn);
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

/// Brings a store written by an older version to the current schema: the pseudonym column on
/// `audit_log`, the old `processing_log` table kept as `processing_log_v1` (its rows stay
/// visible through the view), and the `processing_log` view.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let has_column: bool = c
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('audit_log') WHERE name = 'data_subject_id'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    if !has_column {
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

const APP_SELECT: &str =
    "SELECT id, service, organisation, bsn, actor, idempotency_key, data, status, reference,
    reason, attempts, next_attempt_at, created_at, updated_at FROM applications";

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
        let writer = open_conn(path)?;
        writer
            .execute_batch(SCHEMA)
            .and_then(|()| migrate(&writer))
            .map_err(|source| StoreError::Sqlite {
                path: path.to_path_buf(),
                source,
            })?;
        let reader = open_conn(path)?;
        let (tx, rx) = mpsc::channel::<Job>(8192);
        let p = path.to_path_buf();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer_loop(writer, rx, pseudonym_key, p))
            .map_err(|e| StoreError::Folder(path.to_path_buf(), e))?;
        Ok(AuditStore {
            tx,
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_path_buf(),
            applications: moka::future::Cache::new(APPLICATION_LISTS),
            application_writes: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record; returns its sequence number once it is durable.
    pub async fn append(&self, record: AccessRecord) -> Result<i64, AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::new(record, done))
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
    pub async fn registrations(
        &self,
    ) -> Result<Vec<crate::config::compile::Registration>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, organisation, descriptor, sha256, updated_at, updated_by FROM registrations ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(crate::config::compile::Registration {
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
    pub async fn put_registration(
        &self,
        r: crate::config::compile::Registration,
    ) -> Result<(), StoreError> {
        self.read(move |c| {
            c.execute(
                "INSERT INTO registrations (id, organisation, descriptor, sha256, updated_at, updated_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET organisation = ?2, descriptor = ?3, sha256 = ?4,
                     updated_at = ?5, updated_by = ?6",
                params![r.id, r.organisation, r.descriptor, r.sha256, r.updated_at, r.updated_by],
            )
            .map(|_| ())
        })
        .await
    }

    /// Removes a registration; true when there was one.
    pub async fn delete_registration(&self, id: String) -> Result<bool, StoreError> {
        self.read(move |c| {
            c.execute("DELETE FROM registrations WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
        .await
    }

    /// After a write to `bsn`'s applications: later reads must see it.
    async fn applications_changed(&self, bsn: &str) {
        self.application_writes.fetch_add(1, Ordering::SeqCst);
        if let Ok(bsn) = Bsn::parse(bsn) {
            self.applications.invalidate(&bsn).await;
        }
    }

    /// Stores a new application, or returns the one already stored under the same actor and
    /// idempotency key (`false`). Durable on return.
    pub async fn insert_application(
        &self,
        a: Application,
    ) -> Result<(Application, bool), StoreError> {
        let bsn = a.bsn.clone();
        let r = self.read(move |c| {
            let n = c.execute(
                "INSERT INTO applications (id, service, organisation, bsn, actor, idempotency_key, data, status,
                     reference, reason, attempts, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL, 0, ?9, ?9, ?9)
                 ON CONFLICT (actor, idempotency_key) DO NOTHING",
                params![a.id, a.service, a.organisation, a.bsn, a.actor, a.idempotency_key, a.data.to_string(), a.status, a.created_at],
            )?;
            let stored = c.query_row(
                &format!("{APP_SELECT} WHERE actor = ?1 AND idempotency_key = ?2"),
                params![a.actor, a.idempotency_key],
                app_row,
            )?;
            Ok((stored, n == 1))
        })
        .await;
        self.applications_changed(&bsn).await;
        r
    }

    pub async fn application(&self, id: String) -> Result<Option<Application>, StoreError> {
        self.read(move |c| {
            c.query_row(&format!("{APP_SELECT} WHERE id = ?1"), [id], app_row)
                .optional()
        })
        .await
    }

    /// Applications of one citizen, newest first.
    pub async fn applications_of(&self, bsn: Bsn) -> Result<Vec<Application>, StoreError> {
        if let Some(known) = self.applications.get(&bsn).await {
            return Ok(known.as_ref().clone());
        }
        let writes = self.application_writes.load(Ordering::SeqCst);
        let list: Vec<Application> = self
            .read(move |c| {
                let mut st = c.prepare_cached(&format!(
                    "{APP_SELECT} WHERE bsn = ?1 ORDER BY created_at DESC"
                ))?;
                let rows = st.query_map([bsn.as_str()], app_row)?;
                rows.collect()
            })
            .await?;
        // Remember it only when no write happened meanwhile; a write that lands between the
        // check and the insert bumps the counter first, which the second check sees.
        if self.application_writes.load(Ordering::SeqCst) == writes {
            self.applications.insert(bsn, Arc::new(list.clone())).await;
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
        let bsn = a.bsn.clone();
        let r = self
            .read(move |c| {
                c.execute(
                "UPDATE applications SET status = ?2, reference = ?3, reason = ?4, attempts = ?5,
                     next_attempt_at = ?6, updated_at = ?7 WHERE id = ?1",
                params![
                    a.id,
                    a.status,
                    a.reference,
                    a.reason,
                    a.attempts,
                    a.next_attempt_at,
                    Utc::now().to_rfc3339()
                ],
            )
            .map(|_| ())
            })
            .await;
        self.applications_changed(&bsn).await;
        r
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
        let job = Job::outcome(seq, outcome);
        if let Err(mpsc::error::TrySendError::Full(job)) = self.tx.try_send(job) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(job).await;
            });
        }
    }
}

fn writer_loop(mut c: Connection, mut rx: mpsc::Receiver<Job>, key: Vec<u8>, path: PathBuf) {
    let key = pseudonym_mac(&key);
    let head = |c: &Connection| -> rusqlite::Result<(i64, String)> {
        c.query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map(|o| o.unwrap_or((0, GENESIS.to_string())))
    };
    let (mut seq, mut prev) = match head(&c) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(store = %path.display(), error = %e, "Audit store unreadable; refusing all writes.");
            while let Some(job) = rx.blocking_recv() {
                let _ = job.done.send(Err(format!("store unreadable: {e}")));
            }
            return;
        }
    };
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let result = write_batch(&mut c, &batch, seq, &prev, &key);
        match result {
            Ok((new_seq, new_prev, seqs)) => {
                seq = new_seq;
                prev = new_prev;
                for (job, s) in batch.drain(..).zip(seqs) {
                    let _ = job.done.send(Ok(s));
                }
            }
            Err(e) => {
                tracing::error!(store = %path.display(), error = %e, "Audit batch not committed.");
                for job in batch.drain(..) {
                    let _ = job.done.send(Err(e.to_string()));
                }
                // Re-read the head: the failed transaction was rolled back.
                if let Ok(h) = head(&c) {
                    (seq, prev) = h;
                }
            }
        }
    }
}

type BatchResult = (i64, String, Vec<i64>);

fn write_batch(
    c: &mut Connection,
    batch: &[Job],
    mut seq: i64,
    prev: &str,
    key: &Hmac<Sha256>,
) -> rusqlite::Result<BatchResult> {
    let tx = c.transaction()?;
    let mut prev = prev.to_string();
    let mut seqs = Vec::with_capacity(batch.len());
    {
        // One row per record: the processing log is a view over these rows (see
        // `PROCESSING_VIEW`), so a dossier read costs one insert, not two.
        let mut ins = tx.prepare_cached(
            "INSERT INTO audit_log (seq, time, kind, trace_id, actor, actor_type, bsn, record,
                 prev_hash, hash, data_subject_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut outcome_ins = tx.prepare_cached(
            "INSERT OR REPLACE INTO audit_outcome (seq, outcome, hash) VALUES (?1, ?2, ?3)",
        )?;
        let mut record_hash = tx.prepare_cached("SELECT hash FROM audit_log WHERE seq = ?1")?;
        for job in batch {
            if let Some(of) = job.completes {
                // The record is durable before its outcome is sent; an outcome without one
                // (impossible) is dropped rather than failing the batch's other records.
                let parent: Option<String> =
                    record_hash.query_row([of], |r| r.get(0)).optional()?;
                if let Some(parent) = parent {
                    outcome_ins.execute(params![of, job.json, outcome_hash(&parent, &job.json)])?;
                }
                seqs.push(of);
                continue;
            }
            seq += 1;
            let hash = chain_hash(&prev, seq, &job.json);
            ins.execute(params![
                seq,
                job.time,
                job.kind,
                job.trace_id,
                job.actor,
                job.actor_type,
                job.bsn.as_ref().map(Bsn::as_str),
                job.json,
                prev,
                hash,
                job.bsn.as_ref().map(|b| pseudonym(key, b)),
            ])?;
            seqs.push(seq);
            prev = hash;
        }
    }
    tx.commit()?;
    Ok((seq, prev, seqs))
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
}

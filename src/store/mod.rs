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
//! - `sqlite`: one file (WAL), one writer thread with group commit; its schema, migrations and
//!   SQL.
//!
//! A second backend is a folder beside `sqlite` implementing the same four traits, with its own
//! [`StoreError`] variant and a constructor here; nothing above the façade changes.

mod applications;
mod audit;
mod record;
mod registrations;
mod report;
mod sqlite;
#[cfg(test)]
mod testing;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;

pub use applications::{Application, Outbox};
pub use audit::{AuditLog, Verdict};
pub use record::{AccessRecord, Completion};
pub use registrations::Registrations;
pub use report::{Report, dutch_time};

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
}

/// What the writer has done since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Transactions committed.
    pub committed: u64,
    /// Changes given up on (a record, an outcome, an application write): their callers got an
    /// error, and nothing of them was stored.
    pub failed: u64,
    /// Attempts that found the store locked by another process, rolled back and tried again.
    pub retried: u64,
    /// Batches that failed as a whole and were tried again change by change.
    pub split: u64,
}

/// A store backend: the three kinds of data, and how the store is doing.
pub trait Backend: AuditLog + Outbox + Registrations {
    /// Where the store is, for the operator's status page (a file; a server's address).
    fn location(&self) -> String;

    /// The writer's counters.
    fn stats(&self) -> StoreStats;

    /// Can the store take writes? (readiness)
    fn writable(&self) -> BoxFuture<'_, bool>;
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
    /// schema, and starts its writer thread.
    pub fn open(path: &Path, pseudonym_key: Vec<u8>) -> Result<AuditStore, StoreError> {
        sqlite::SqliteStore::open(path, pseudonym_key).map(AuditStore::with_backend)
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

    /// Appends a record; its sequence number once it is durable (see [`AuditLog::append`]).
    pub async fn append(&self, record: AccessRecord) -> Result<i64, StoreError> {
        self.backend.append(record).await
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

    /// Applications waiting for (another) delivery attempt now.
    pub async fn due_applications(&self, limit: u32) -> Result<Vec<Application>, StoreError> {
        self.backend.due_applications(limit).await
    }

    /// Records a delivery outcome; durable on return.
    pub async fn update_application(&self, a: Application) -> Result<(), StoreError> {
        self.backend.update_application(a).await
    }

    /// Partner adapter registrations, by id.
    pub async fn registrations(&self) -> Result<Vec<Registration>, StoreError> {
        self.backend.registrations().await
    }

    /// Stores (or replaces) a registration; durable on return.
    pub async fn put_registration(&self, r: Registration) -> Result<(), StoreError> {
        self.backend.put_registration(r).await
    }

    /// Removes a registration; true when there was one.
    pub async fn delete_registration(&self, id: String) -> Result<bool, StoreError> {
        self.backend.delete_registration(id).await
    }
}

/// Walks the whole chain of the SQLite store at `path` and says whether it is intact. Opens the
/// file read-only; safe next to a running gateway.
pub fn verify(path: &Path) -> Result<Verdict, StoreError> {
    sqlite::verify(path)
}

/// The security officer's report over `[from, to)` from the SQLite store at `path`, with the
/// `top` most-viewed subjects and most active users. Opens the file read-only.
pub fn report(
    path: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    top: usize,
) -> Result<Report, StoreError> {
    sqlite::report(path, from, to, top)
}

//! The writer thread, the only connection that writes: audit records and their outcomes,
//! applications (each with its `application.submit` record, in the same transaction), delivery
//! outcomes and registrations. It commits in groups: every change waiting when a transaction
//! starts is written in it, and all of their requests are released by one fsync. Durability
//! costs one fsync per *batch*, not per request, and is never skipped.
//!
//! Transactions take the write lock when they begin (`BEGIN IMMEDIATE`), so none can fail
//! half-way for want of it; one that finds the file locked by another process is tried again,
//! and a batch that fails for any other reason is tried again change by change, so one change
//! that cannot be written does not take the others with it. A request whose change cannot be
//! committed gets an error and nothing of it is stored: its answer is withheld (fail closed).
//!
//! This file knows batches, not tables: each change's SQL is in the module of its kind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::Hmac;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};

use super::{applications, audit, registrations};
use crate::config::compile::Registration;
use crate::store::Counters;
use crate::store::applications::Application;
use crate::store::audit::{Entry, Head, pseudonym_mac};
use crate::store::record::AccessRecord;

/// Largest group committed in one transaction.
const MAX_BATCH: usize = 512;
/// How long the writer keeps trying a transaction that finds the file locked (by another
/// process: this one has no other writer) before its callers get an error.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// How long one attempt waits for the write lock (SQLite's busy handler) before the writer
/// logs it and tries again.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(1);

pub(super) type Reply<T> = oneshot::Sender<Result<T, String>>;

/// One change for the writer, with where its result goes once its transaction commits. A change
/// only reads what it is given: the writer may run it again (see `Writer::commit`).
pub(super) enum Work {
    /// An access record; answered with its sequence number.
    Record(Entry, Reply<i64>),
    /// The outcome (JSON) completing the record `of` (see `AuditLog::append_outcome`); nobody
    /// waits for it.
    Outcome { of: i64, json: String },
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
    /// Answered with false when the id is another organisation's (nothing written).
    PutRegistration(Box<Registration>, Reply<bool>),
    /// An id and its organisation; answered with whether there was one.
    DeleteRegistration(String, String, Reply<bool>),
}

/// What a change gave, sent to its caller once its transaction has committed.
enum Done {
    Seq(i64),
    Applied(Box<Application>, bool),
    Unit,
    Flag(bool),
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
            (Work::Update(_, r), Ok(Done::Unit)) => drop(r.send(Ok(()))),
            (
                Work::PutRegistration(_, r) | Work::DeleteRegistration(_, _, r),
                Ok(Done::Flag(b)),
            ) => drop(r.send(Ok(b))),
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
            Work::Update(_, r) => drop(r.send(Err(e))),
            Work::PutRegistration(_, r) | Work::DeleteRegistration(_, _, r) => drop(r.send(Err(e))),
        }
    }
}

/// A failure that passes: the file locked by another process (or, within one, a table).
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The writer thread's state beside its connection.
pub(super) struct Writer {
    key: Hmac<Sha256>,
    path: PathBuf,
    stats: Arc<Counters>,
    application_writes: Arc<AtomicU64>,
}

impl Writer {
    pub(super) fn new(
        pseudonym_key: &[u8],
        path: &Path,
        stats: Arc<Counters>,
        application_writes: Arc<AtomicU64>,
    ) -> Writer {
        Writer {
            key: pseudonym_mac(pseudonym_key),
            path: path.to_path_buf(),
            stats,
            application_writes,
        }
    }

    pub(super) fn run(&self, mut c: Connection, mut rx: mpsc::Receiver<Work>) {
        let mut chain = match audit::chain_head(&c) {
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
        chain: &Head,
        deadline: Instant,
    ) -> rusqlite::Result<(Head, Vec<Done>)> {
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
        chain: &Head,
    ) -> rusqlite::Result<(Head, Vec<Done>)> {
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
        chain: &mut Head,
        work: &Work,
    ) -> rusqlite::Result<Done> {
        match work {
            Work::Record(e, _) => audit::append(tx, chain, &self.key, e).map(Done::Seq),
            Work::Outcome { of, json } => audit::complete(tx, *of, json).map(|()| Done::Unit),
            Work::Apply(a, submit, _) => applications::apply(tx, chain, &self.key, a, submit)
                .map(|(stored, new)| Done::Applied(stored, new)),
            Work::Update(a, _) => applications::update(tx, a).map(|()| Done::Unit),
            Work::PutRegistration(r, _) => registrations::put(tx, r).map(Done::Flag),
            Work::DeleteRegistration(id, org, _) => {
                registrations::delete(tx, id, org).map(Done::Flag)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Verdict;
    use crate::store::testing::{open_temp, rec};

    #[tokio::test]
    async fn a_transaction_that_finds_the_file_locked_waits_and_is_tried_again() {
        let (_dir, path, store) = open_temp();
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
            crate::store::sqlite::verify(&path).unwrap(),
            Verdict::Intact { records: 20, .. }
        ));
    }

    #[tokio::test]
    async fn a_change_that_cannot_be_written_does_not_take_its_batch_with_it() {
        let (_dir, path, store) = open_temp();
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
            crate::store::sqlite::verify(&path).unwrap(),
            Verdict::Intact { records: 40, .. }
        ));
    }
}

//! The writers of the embedded store, two threads in a row:
//!
//! 1. The **appender** is where every change arrives. It chains each access record (sequence
//!    number and hash), frames records and outcomes into the audit journal (`journal`), writes
//!    all that is waiting in one `write` and makes it durable with one `fdatasync` (group
//!    commit: what arrives meanwhile is the next batch), then acknowledges the batch's records.
//!    An answer waits for its record's acknowledgement, never for SQLite.
//! 2. The **indexer** owns the SQLite connection. It fills the index from the synced batches in
//!    large transactions (every [`FLUSH_RECORDS`] records, [`FLUSH_AFTER`], or at once when a
//!    reader of the audit asks), deletes journal segments the durable index holds, and commits
//!    the other changes (applications, each with its `application.submit` record, delivery
//!    outcomes, registrations) itself, with an fsync, after the records before them.
//!
//! An application's submit record is chained in SQLite, not in the journal: the appender
//! hands the change on with its head and waits for the head after it, so the chain has one
//! order. A batch that cannot be written is cut off the journal and its callers get an error
//! (fail closed); a failed `fdatasync` stops the journal for good (what the kernel kept is not
//! known after one), and every write after it fails until the gateway restarts and replays.
//!
//! This file knows batches, not tables: each change's SQL is in the module of its kind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc as chan};
use std::time::{Duration, Instant};

use hmac::Hmac;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};

use super::journal::{self, Tail};
use super::{applications, audit, registrations};
use crate::config::compile::Registration;
use crate::store::Counters;
use crate::store::applications::Application;
use crate::store::audit::{Entry, Head, HexHash, pseudonym_mac};
use crate::store::record::AccessRecord;

/// Largest batch the appender writes at once.
const MAX_BATCH: usize = 512;
/// The indexer commits once this many records wait...
pub(super) const FLUSH_RECORDS: usize = 4096;
/// ... or the oldest has waited this long (or a reader of the audit asks).
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(200);
/// Records acknowledged but not yet in the index past which the appender refuses new ones
/// (the index cannot be written: the journal would grow without bound).
const MAX_LAG: u64 = 1 << 20;
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
        let mut chain = *chain;
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
            Work::Record(e, _) => audit::Rows::new(tx, &self.key)?
                .append(chain, e)
                .map(Done::Seq),
            Work::Outcome { of, json } => audit::Rows::new(tx, &self.key)?
                .complete(*of, json)
                .map(|()| Done::Unit),
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

// ----------------------------------------------------------------------------------------------
// The three threads
// ----------------------------------------------------------------------------------------------

/// What the threads tell the store's readers, counted in frames (records and outcomes) since
/// the store was opened.
pub(super) struct Progress {
    /// Frames acknowledged durable (in the journal).
    pub(super) synced: AtomicU64,
    /// Frames in the index (committed).
    pub(super) indexed: tokio::sync::watch::Sender<u64>,
    /// Why the journal stopped, once it has (a failed `fdatasync`).
    pub(super) stopped: OnceLock<String>,
}

impl Progress {
    pub(super) fn new() -> Progress {
        Progress {
            synced: AtomicU64::new(0),
            indexed: tokio::sync::watch::Sender::new(0),
            stopped: OnceLock::new(),
        }
    }

    fn stop(&self, why: String) {
        tracing::error!(error = %why, "The audit journal stopped: every audited request is refused until the gateway restarts (it replays the journal).");
        let _ = self.stopped.set(why);
    }
}

/// A record or outcome on its way to the index, chained by the appender. A record's hashes
/// are inline (boxing them would be the allocation per record that `HexHash` saves).
#[allow(clippy::large_enum_variant)]
pub(super) enum Indexed {
    Record {
        seq: i64,
        prev: HexHash,
        hash: HexHash,
        entry: Entry,
    },
    Outcome {
        of: i64,
        json: String,
    },
}

/// A change handed on to the indexer with the head of the chain at its turn, and where the
/// head after it goes (an application, whose submit record the indexer chains).
type Handed = (Work, Head, Option<chan::SyncSender<Head>>);

/// From the appender (and the store's readers) to the indexer.
pub(super) enum ToIndex {
    Entries {
        segment: u64,
        upto: u64,
        entries: Vec<Indexed>,
    },
    /// Boxed: rare, and larger than the rest.
    Hand(Box<Handed>),
    /// A reader of the audit waits: commit what is pending now.
    Hurry,
}

/// The appender thread: chains, frames and writes; the journal's only writer.
pub(super) struct Appender {
    pub(super) tail: Tail,
    pub(super) head: Head,
    pub(super) frames: u64,
    pub(super) to_index: chan::Sender<ToIndex>,
    /// The indexer's thread, unparked when it has work to do now.
    pub(super) indexer: std::thread::Thread,
    /// The frame count when the indexer was last unparked for a flush's worth.
    pub(super) nudged: u64,
    pub(super) progress: Arc<Progress>,
    pub(super) stats: Arc<Counters>,
    /// The longest a small batch waits for more records under load (see [`Pace`]); zero:
    /// never.
    pub(super) commit_delay: Duration,
    /// The multi-thread runtime the store was opened on, which acknowledgements are sent
    /// from (see [`Acks`]); `None`: they are sent from this thread.
    pub(super) runtime: Option<tokio::runtime::Handle>,
}

/// A batch's acknowledgements, sent when dropped.
///
/// Sent from the journal's thread, each acknowledgement wakes its request from outside the
/// runtime: a worker that has gone idle while the batch synced is unparked (a write to its
/// event fd), and on a busy core the request runs before the next one is sent, so the
/// journal's thread and the worker switch back and forth through the batch. Sent from a task
/// on the runtime, every wake but the task's own is local to the worker that runs it. So on a
/// multi-thread runtime the batch is dropped in a task; were the runtime gone, the task is
/// dropped unrun and its acknowledgements are sent where that happens.
struct Acks(Vec<(Reply<i64>, i64)>);

impl Drop for Acks {
    fn drop(&mut self) {
        for (reply, seq) in self.0.drain(..) {
            let _ = reply.send(Ok(seq));
        }
    }
}

/// A batch with fewer records than this may wait for more (see [`Pace`]).
const SMALL_BATCH: usize = 8;
/// ... when at least this many more are expected during the wait.
const EXPECTED_MORE: f64 = 2.0;

/// When a small batch waits before its sync (PostgreSQL's `commit_delay`, keyed on the rate).
///
/// A sync costs the same for one record as for a hundred. When records come fast enough for
/// a batch to fill during one sync (the cached path, thousands per second), group commit
/// batches on its own. Between that and an idle gateway, a batch is one or two records and
/// nearly every record pays a whole `fdatasync`, plus the thread switches around it, on the
/// core the requests need. There a short wait gathers the records that are about to come, so
/// the sync is shared: the wait is taken only when the recent rate says at least
/// [`EXPECTED_MORE`] records arrive during it, so a lightly loaded gateway never waits.
struct Pace {
    delay: Duration,
    /// Records acknowledged per second: each batch counts `records / RATE_WINDOW` and fades
    /// with `exp(-age / RATE_WINDOW)`, so a steady rate reads as itself and an idle spell
    /// reads as nothing at once (the first record after one never waits).
    rate: f64,
    last: Instant,
}

/// The time constant of [`Pace`]'s rate.
const RATE_WINDOW: Duration = Duration::from_millis(25);

impl Pace {
    fn new(delay: Duration, now: Instant) -> Pace {
        Pace {
            delay,
            rate: 0.0,
            last: now,
        }
    }

    /// The rate as of `now`.
    fn rate_at(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.last).as_secs_f64();
        self.rate * (-age / RATE_WINDOW.as_secs_f64()).exp()
    }

    /// How long a batch of `records` waits for more at `now`, if at all.
    fn wait(&self, records: usize, now: Instant) -> Option<Duration> {
        let worth = records > 0
            && records < SMALL_BATCH
            && self.rate_at(now) * self.delay.as_secs_f64() >= EXPECTED_MORE;
        worth.then_some(self.delay)
    }

    /// A batch of `records` was written at `now`.
    fn written(&mut self, records: usize, now: Instant) {
        if records == 0 {
            return;
        }
        self.rate = self.rate_at(now) + records as f64 / RATE_WINDOW.as_secs_f64();
        self.last = now;
    }
}

/// `v`'s items, leaving it empty with room for as many: the next batch is about as large, and
/// grows without copying itself up from nothing (the entries were ~4.7 KiB by doublings).
fn take_sized<T>(v: &mut Vec<T>) -> Vec<T> {
    let room = v.len();
    std::mem::replace(v, Vec::with_capacity(room))
}

/// The batch the appender is making.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    acks: Vec<(Reply<i64>, i64)>,
    entries: Vec<Indexed>,
}

impl Appender {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Work>) {
        let mut batch = Batch {
            buf: Vec::with_capacity(256 << 10),
            ..Batch::default()
        };
        // Where the batch started: restored when it cannot be written.
        let mut before = (self.head, self.frames);
        let mut pace = Pace::new(self.commit_delay, Instant::now());
        while let Some(first) = rx.blocking_recv() {
            let mut taken = 0;
            self.drain(Some(first), &mut rx, &mut taken, &mut batch, &mut before);
            // A full batch has no room to gather more.
            if taken < MAX_BATCH
                && let Some(delay) = pace.wait(batch.acks.len(), Instant::now())
            {
                std::thread::sleep(delay);
                let next = rx.try_recv().ok();
                self.drain(next, &mut rx, &mut taken, &mut batch, &mut before);
            }
            let records = batch.acks.len();
            self.write_out(&mut batch, &mut before);
            pace.written(records, Instant::now());
        }
    }

    /// Takes `work` and what else waits, up to [`MAX_BATCH`] changes in all.
    fn drain(
        &mut self,
        mut work: Option<Work>,
        rx: &mut mpsc::Receiver<Work>,
        taken: &mut usize,
        batch: &mut Batch,
        before: &mut (Head, u64),
    ) {
        while let Some(w) = work.take() {
            self.take(w, batch, before);
            *taken += 1;
            if *taken < MAX_BATCH {
                work = rx.try_recv().ok();
            }
        }
    }

    fn take(&mut self, work: Work, batch: &mut Batch, before: &mut (Head, u64)) {
        match work {
            Work::Record(entry, reply) => {
                if let Some(why) = self.refusal() {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(why));
                    return;
                }
                let next = self.head.next(&entry.json);
                journal::put_record(
                    &mut batch.buf,
                    next.seq,
                    &self.head.hash,
                    &next.hash,
                    &entry.json,
                );
                let prev = std::mem::replace(&mut self.head, next);
                batch.acks.push((reply, self.head.seq));
                batch.entries.push(Indexed::Record {
                    seq: self.head.seq,
                    prev: prev.hash,
                    hash: self.head.hash,
                    entry,
                });
                self.frames += 1;
            }
            Work::Outcome { of, json } => {
                if self.progress.stopped.get().is_some() {
                    return;
                }
                journal::put_outcome(&mut batch.buf, of, &json);
                batch.entries.push(Indexed::Outcome { of, json });
                self.frames += 1;
            }
            Work::Apply(..) => {
                // Its record is chained by the indexer, after everything before it.
                self.write_out(batch, before);
                let (back, head) = chan::sync_channel(1);
                if self
                    .to_index
                    .send(ToIndex::Hand(Box::new((work, self.head, Some(back)))))
                    .is_ok()
                {
                    self.indexer.unpark();
                    match head.recv() {
                        Ok(h) => self.head = h,
                        Err(_) => self.progress.stop("the indexer has stopped".into()),
                    }
                }
                *before = (self.head, self.frames);
            }
            other => {
                self.write_out(batch, before);
                let _ = self
                    .to_index
                    .send(ToIndex::Hand(Box::new((other, self.head, None))));
                self.indexer.unpark();
            }
        }
    }

    /// Why a record is refused now, if it is.
    fn refusal(&self) -> Option<String> {
        if let Some(why) = self.progress.stopped.get() {
            return Some(format!("the audit journal has stopped: {why}"));
        }
        let behind = self.frames.saturating_sub(*self.progress.indexed.borrow());
        (behind > MAX_LAG).then(|| {
            format!("the audit index is {behind} records behind the journal and cannot be written")
        })
    }

    /// Writes the batch and syncs it, acknowledges its records, hands it to the indexer, and
    /// starts the next one. While the sync runs, what arrives waits for the next batch: under
    /// load a batch is everything that came during one `fdatasync`.
    fn write_out(&mut self, batch: &mut Batch, before: &mut (Head, u64)) {
        if !batch.buf.is_empty() {
            let failed = match self.tail.append(&batch.buf) {
                Err(e) => Some(format!("the audit journal cannot be written: {e}")),
                // Outcomes alone are not synced: nobody waits for them, and the next batch's
                // sync covers them (a crash in between leaves their records `requested`).
                Ok(()) if batch.acks.is_empty() => None,
                Ok(()) => match self.tail.file.sync_data() {
                    Err(e) => {
                        self.progress.stop(format!("fdatasync failed: {e}"));
                        Some(format!("the audit journal cannot be synced: {e}"))
                    }
                    Ok(()) => None,
                },
            };
            match failed {
                None => {
                    if !batch.acks.is_empty() {
                        self.stats.committed.fetch_add(1, Ordering::Relaxed);
                    }
                    // Counted first: a reader told of its record then waits for it.
                    self.progress.synced.store(self.frames, Ordering::SeqCst);
                    let acks = Acks(take_sized(&mut batch.acks));
                    match &self.runtime {
                        Some(runtime) if !acks.0.is_empty() => {
                            runtime.spawn(async move { drop(acks) });
                        }
                        _ => drop(acks),
                    }
                    let sent = self.to_index.send(ToIndex::Entries {
                        segment: self.tail.number,
                        upto: self.frames,
                        entries: take_sized(&mut batch.entries),
                    });
                    if sent.is_err() {
                        self.progress.stop("the indexer has stopped".into());
                    }
                    if self.frames - self.nudged >= FLUSH_RECORDS as u64 {
                        self.nudged = self.frames;
                        self.indexer.unpark();
                    }
                    if let Err(e) = self.tail.rotate() {
                        self.progress
                            .stop(format!("syncing a full journal segment: {e}"));
                    }
                }
                Some(why) => {
                    tracing::error!(error = %why, records = batch.acks.len(), "Audit journal batch not written; its requests are refused.");
                    self.stats
                        .failed
                        .fetch_add(batch.acks.len() as u64, Ordering::Relaxed);
                    for (reply, _) in batch.acks.drain(..) {
                        let _ = reply.send(Err(why.clone()));
                    }
                    batch.entries.clear();
                    (self.head, self.frames) = *before;
                }
            }
            batch.buf.clear();
        }
        *before = (self.head, self.frames);
    }
}

/// The indexer's state beside the writer's.
pub(super) struct Indexer {
    pub(super) writer: Writer,
    pub(super) progress: Arc<Progress>,
    pub(super) dir: PathBuf,
    /// Segments before this one are removed.
    pub(super) first_segment: u64,
    /// Held while the indexer lives: one store per file (see `SqliteStore::open`).
    pub(super) lock: File,
}

impl Indexer {
    /// Runs until the store is closed. The thread sleeps between flushes rather than in the
    /// channel, so a batch handed to it wakes nobody: the appender unparks it only when a
    /// flush's worth waits or a change is handed on, and a reader when it waits (`Hurry`).
    pub(super) fn run(mut self, mut c: Connection, rx: chan::Receiver<ToIndex>) {
        let mut pending: Vec<Indexed> = Vec::with_capacity(FLUSH_RECORDS);
        let mut upto = (0u64, self.first_segment);
        let mut due: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if let Some(at) = due
                && at <= now
            {
                due = self.flush(&mut c, &mut pending, upto);
            }
            let sleep = due.map_or(FLUSH_AFTER, |at| at.saturating_duration_since(now));
            std::thread::park_timeout(sleep);
            loop {
                let message = match rx.try_recv() {
                    Ok(m) => m,
                    Err(chan::TryRecvError::Empty) => break,
                    Err(chan::TryRecvError::Disconnected) => {
                        // The store is closed: what is pending goes in now (or at the next
                        // open, from the journal).
                        for _ in 0..3 {
                            if self.flush(&mut c, &mut pending, upto).is_none() {
                                break;
                            }
                        }
                        drop(self.lock);
                        return;
                    }
                };
                match message {
                    ToIndex::Entries {
                        segment,
                        upto: u,
                        entries,
                    } => {
                        pending.extend(entries);
                        upto = (u, segment);
                        if pending.len() >= FLUSH_RECORDS {
                            due = self.flush(&mut c, &mut pending, upto);
                        } else if due.is_none() {
                            due = Some(Instant::now() + FLUSH_AFTER);
                        }
                    }
                    ToIndex::Hurry => due = self.flush(&mut c, &mut pending, upto),
                    ToIndex::Hand(handed) => {
                        let (work, head, back) = *handed;
                        due = self.flush(&mut c, &mut pending, upto);
                        let head = if due.is_some() {
                            // The records before it are not in the index: neither is it (a
                            // submit record chained past them would hide them from recovery).
                            work.fail("the audit index cannot be written".into());
                            head
                        } else {
                            self.hand(&mut c, work, head)
                        };
                        if let Some(back) = back {
                            let _ = back.send(head);
                        }
                    }
                }
            }
        }
    }

    /// Commits what is pending in one transaction (with an fsync: segments before the last one
    /// written from are then removed). `None` when done; when not, when to try again.
    fn flush(
        &mut self,
        c: &mut Connection,
        pending: &mut Vec<Indexed>,
        (upto, segment): (u64, u64),
    ) -> Option<Instant> {
        if pending.is_empty() {
            return None;
        }
        let key = &self.writer.key;
        let written = (|| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The records written so far in this transaction, in sequence order: an outcome
            // usually follows its record within a batch, and then needs no lookup of its hash.
            let mut hashes: Vec<(i64, &str)> = Vec::with_capacity(pending.len());
            let mut rows = audit::Rows::new(&tx, key)?;
            for e in pending.iter() {
                match e {
                    Indexed::Record {
                        seq,
                        prev,
                        hash,
                        entry,
                    } => {
                        rows.insert(*seq, prev, hash, entry)?;
                        hashes.push((*seq, hash));
                    }
                    Indexed::Outcome { of, json } => {
                        match hashes.binary_search_by_key(of, |(seq, _)| *seq) {
                            Ok(i) => rows.complete_of(*of, hashes[i].1, json)?,
                            Err(_) => rows.complete(*of, json)?,
                        }
                    }
                }
            }
            drop(rows);
            tx.commit()
        })();
        match written {
            Ok(()) => {
                pending.clear();
                self.progress.indexed.send_replace(upto);
                if segment > self.first_segment {
                    Tail::remove_before(&self.dir, self.first_segment, segment);
                    self.first_segment = segment;
                }
                None
            }
            Err(e) => {
                self.writer.stats.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(store = %self.writer.path.display(), error = %e, records = pending.len(), "Audit index not written; the records are in the journal, tried again in 1 s.");
                Some(Instant::now() + Duration::from_secs(1))
            }
        }
    }

    /// Commits one change handed on by the appender; the head after it.
    fn hand(&self, c: &mut Connection, work: Work, head: Head) -> Head {
        let deadline = Instant::now() + RETRY_FOR;
        match self
            .writer
            .commit(c, std::slice::from_ref(&work), &head, deadline)
        {
            Ok((next, mut done)) => {
                self.writer.committed(std::slice::from_ref(&work));
                match done.pop() {
                    Some(d) => work.reply(Ok(d)),
                    None => work.fail("the store gave no result".into()),
                }
                next
            }
            Err(e) => {
                tracing::error!(store = %self.writer.path.display(), error = %e, "Change not committed.");
                self.writer.stats.failed.fetch_add(1, Ordering::Relaxed);
                work.fail(e.to_string());
                head
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{open_temp, rec};
    use crate::store::{AuditStore, JournalError, StoreError, Verdict};

    /// `pace` after `n` batches of `records`, one every `every` from `start`; the time after.
    fn feed(pace: &mut Pace, start: Instant, records: usize, every: Duration, n: u32) -> Instant {
        let mut t = start;
        for _ in 0..n {
            t += every;
            pace.written(records, t);
        }
        t
    }

    /// The nice value of each of this process's threads named `name` (from `/proc`).
    #[cfg(target_os = "linux")]
    fn nice_of(name: &str) -> Vec<i64> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // After the `(comm)` field: state is field 3, nice field 19.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            if comm.trim_end() == name {
                out.push(rest.split_whitespace().nth(16).unwrap().parse().unwrap());
            }
        }
        out
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_threads_yield_to_the_request_workers() {
        let own = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let _store = open_temp();
        let want = i64::from((own + 10).min(19));
        for name in ["audit-journal", "audit-index"] {
            // A thread names itself and lowers its priority once it runs: wait for that.
            let mut nice = nice_of(name);
            for _ in 0..200 {
                if !nice.is_empty() && nice.iter().all(|n| *n == want) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
                nice = nice_of(name);
            }
            assert!(!nice.is_empty(), "no thread named {name}");
            assert!(
                nice.iter().all(|n| *n == want),
                "{name}: {nice:?}, want {want}"
            );
        }
    }

    #[test]
    fn a_small_batch_waits_only_when_the_rate_fills_the_wait() {
        let ms = Duration::from_millis(1);
        let start = Instant::now();
        let mut pace = Pace::new(ms, start);
        // Nothing known yet: no wait.
        assert_eq!(pace.wait(1, start), None);
        // 2 records every 500 µs (4 000/s): about 4 expected during 1 ms.
        let t = feed(&mut pace, start, 2, Duration::from_micros(500), 400);
        let rate = pace.rate_at(t);
        assert!((3_600.0..4_400.0).contains(&rate), "{rate}");
        assert_eq!(pace.wait(1, t), Some(ms));
        assert_eq!(pace.wait(SMALL_BATCH - 1, t), Some(ms));
        // A batch already large enough, or one without records (outcomes only), never waits.
        assert_eq!(pace.wait(SMALL_BATCH, t), None);
        assert_eq!(pace.wait(0, t), None);
        // After a quiet second the first record does not wait.
        assert_eq!(pace.wait(1, t + Duration::from_secs(1)), None);
        // A rate of 100/s (a quiet gateway): 0.1 expected, no wait.
        let t = feed(&mut pace, t, 1, Duration::from_millis(10), 100);
        assert_eq!(pace.wait(1, t), None);
        // `commit_delay: 0s` never waits, whatever the rate.
        let mut off = Pace::new(Duration::ZERO, start);
        let t = feed(&mut off, start, 2, Duration::from_micros(100), 400);
        assert_eq!(off.wait(1, t), None);
    }

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

    /// Every record of the journal's segments in the store's folder.
    fn journal_records(path: &Path) -> usize {
        let segments = journal::list(&journal::folder(path)).unwrap();
        let (frames, _) = journal::scan(&segments).unwrap();
        frames
            .iter()
            .filter(|f| matches!(f, journal::Frame::Record { .. }))
            .count()
    }

    fn refuse_index(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        c
    }

    #[test]
    fn records_are_acknowledged_from_the_runtime_the_store_was_opened_on_and_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let multi = |workers| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .unwrap()
        };
        let opened_on = multi(1);
        let store = Arc::new(
            opened_on
                .block_on(async { AuditStore::open(&path, b"key".to_vec()) })
                .unwrap(),
        );
        // Appended from another runtime, so that only the acknowledging task runs on the
        // first: each batch is acknowledged there, and every record gets its own number.
        let elsewhere = multi(2);
        let appends = |from: u32, n: u32| {
            let store = store.clone();
            elsewhere.block_on(async move {
                let all = (from..from + n).map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move { store.append(rec(i, "999993653", 10)).await })
                });
                let done =
                    tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(all))
                        .await
                        .expect("every append is acknowledged");
                let mut seqs: Vec<i64> = done.into_iter().map(|r| r.unwrap().unwrap()).collect();
                seqs.sort_unstable();
                seqs
            })
        };
        assert_eq!(appends(0, 64), (1..=64).collect::<Vec<_>>());
        // The runtime is gone: the task acknowledging a batch is dropped unrun, and dropping
        // it acknowledges the batch.
        drop(opened_on);
        assert_eq!(appends(64, 16), (65..=80).collect::<Vec<_>>());
        let counts = elsewhere.block_on(async { store.counts().await.unwrap() });
        assert_eq!(counts, (80, 80));
    }

    #[tokio::test]
    async fn an_index_that_cannot_be_written_loses_nothing_and_readers_say_so() {
        let (_dir, path, store) = open_temp();
        let c = refuse_index(&path);
        // Acknowledged from the journal, whatever the index does.
        for i in 0..41 {
            store.append(rec(i, "999993653", 10)).await.unwrap();
        }
        // A read of the audit waits for the index, in vain, and says why.
        let e = store.counts().await.unwrap_err();
        assert!(
            matches!(e, StoreError::IndexBehind { records: 41, .. }),
            "{e}"
        );
        // The CLI's verify reads index and journal: all 41 are there.
        assert!(matches!(
            crate::store::sqlite::verify(&path).unwrap(),
            Verdict::Intact { records: 41, .. }
        ));
        assert!(store.stats().retried >= 1);
        // Once the index can be written, everything is in it, and the segments go.
        c.execute_batch("DROP TRIGGER refuse;").unwrap();
        assert_eq!(store.counts().await.unwrap(), (41, 41));
        assert_eq!(store.stats().failed, 0);
    }

    #[tokio::test]
    async fn records_only_in_the_journal_are_replayed_at_the_next_open() {
        let (_dir, path, store) = open_temp();
        store.append(rec(0, "999993653", 10)).await.unwrap();
        store.settle().await.unwrap();
        // As after a crash: acknowledged, in the journal, not in the index.
        let c = refuse_index(&path);
        for i in 1..30 {
            store.append(rec(i, "999993653", 10)).await.unwrap();
        }
        drop(store);
        c.execute_batch("DROP TRIGGER refuse;").unwrap();
        // A spare segment whose writing the stop cut short.
        let part = journal::folder(&path).join("spare.kpj.part");
        std::fs::write(&part, [0u8; 100]).unwrap();
        let indexed = |c: &Connection| {
            c.query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        // The closed store's indexer may still be trying; the next open waits for its lock.
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        assert_eq!(indexed(&c), 30);
        assert_eq!(journal_records(&path), 0, "replayed segments are removed");
        assert!(!part.exists(), "a spare cut short is removed");
        // The chain goes on from the replayed head.
        store.append(rec(30, "999993653", 10)).await.unwrap();
        assert!(matches!(
            crate::store::sqlite::verify(&path).unwrap(),
            Verdict::Intact { records: 31, .. }
        ));
    }

    #[tokio::test]
    async fn records_written_over_a_segment_made_ahead_are_replayed_with_no_tear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        // A spare left by an earlier run: the first segment is that file of zeros.
        let journal = journal::folder(&path);
        std::fs::create_dir_all(&journal).unwrap();
        journal::make_spare(&journal, 1 << 20).unwrap();
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        let first = journal::list(&journal).unwrap().remove(0).path;
        assert_eq!(std::fs::metadata(&first).unwrap().len(), 1 << 20);
        assert!(!journal.join("spare.kpj.next").exists());
        // As after a crash: acknowledged, in the zero-filled segment, not in the index.
        let c = refuse_index(&path);
        for i in 0..25 {
            store.append(rec(i, "999993653", 10)).await.unwrap();
        }
        assert_eq!(std::fs::metadata(&first).unwrap().len(), 1 << 20);
        assert!(matches!(
            crate::store::sqlite::verify(&path).unwrap(),
            Verdict::Intact { records: 25, .. }
        ));
        drop(store);
        c.execute_batch("DROP TRIGGER refuse;").unwrap();
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        assert_eq!(store.counts().await.unwrap().0, 25);
        let mut torn = first.into_os_string();
        torn.push(".torn");
        assert!(!PathBuf::from(torn).exists(), "zeros are not a torn tail");
    }

    #[tokio::test]
    async fn a_torn_last_write_is_kept_aside_and_corruption_refuses_to_open() {
        let (_dir, path, store) = open_temp();
        let c = refuse_index(&path);
        for i in 0..10 {
            store.append(rec(i, "999993653", 10)).await.unwrap();
        }
        drop(store);
        // Wait until the closed store has let go (its lock), then tear its last write.
        let dir = journal::folder(&path);
        let lock = File::options().write(true).open(dir.join("lock")).unwrap();
        lock.lock().unwrap();
        drop(lock);
        let segments = journal::list(&dir).unwrap();
        let last = segments.last().unwrap().path.clone();
        // The frames, without the zeros that pad the last page.
        let mut whole = std::fs::read(&last).unwrap();
        whole.truncate(whole.iter().rposition(|b| *b != 0).unwrap() + 1);
        // The next batch is written where the frames end: torn, it ends in bad bytes there.
        let mut torn = whole.clone();
        torn.extend_from_slice(&whole[..40]);
        std::fs::write(&last, &torn).unwrap();

        // Damage in the middle: the store does not open, and nothing is removed.
        let mut damaged = torn.clone();
        damaged[whole.len() / 2] ^= 0x20;
        std::fs::write(&last, &damaged).unwrap();
        let e = AuditStore::open(&path, b"key".to_vec()).err().unwrap();
        assert!(
            matches!(&e, StoreError::Journal(JournalError::Corrupt { reason, .. }) if reason.contains("follows")),
            "{e}"
        );
        assert!(matches!(
            crate::store::sqlite::verify(&path).unwrap(),
            Verdict::JournalDamaged { .. }
        ));
        assert_eq!(std::fs::read(&last).unwrap(), damaged);

        // Only the torn tail: opened, the 10 records replayed, the tail kept aside.
        std::fs::write(&last, &torn).unwrap();
        c.execute_batch("DROP TRIGGER refuse;").unwrap();
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        assert_eq!(store.counts().await.unwrap().0, 10);
        let mut kept = last.as_os_str().to_os_string();
        kept.push(".torn");
        assert_eq!(std::fs::read(kept).unwrap(), &whole[..40]);
    }
}

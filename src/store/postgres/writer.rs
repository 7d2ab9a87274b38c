//! This instance's audit writer: access records and their outcomes, committed in groups on a
//! connection of its own. Each batch (every change queued when it starts, at most
//! [`MAX_BATCH`]) is ONE statement, `SELECT kp_append(...)` in its own transaction: the
//! function locks the chain's head row, links and inserts the records, moves the head and
//! writes the outcomes, and the statement answers once its commit is durable (the driver waits
//! for the server's ready-for-query, which follows the commit). Up to [`IN_FLIGHT`] batches
//! are in flight at once on the connection (tokio-postgres pipelines them), so the server
//! never waits for this instance to send the next one: a batch costs its commit, not a round
//! trip more.
//!
//! The chain is the cluster's, not this instance's: every batch re-reads the head under its
//! lock, so instances writing at once take turns and the chain stays one (and a batch whose
//! fate is unknown leaves it valid either way).
//!
//! Failures fail closed, and the writer lives on:
//! - a batch PostgreSQL refused (an error, the connection fine) was rolled back whole; its
//!   changes are tried again one by one, so that one that cannot be written (a NUL in a field)
//!   does not take the others with it;
//! - a batch that finds PostgreSQL unreachable waits for it, trying to connect again after a
//!   backoff (100 ms doubling to 500 ms), until its callers' timeout: a restart shorter than
//!   the timeout fails no request; past it, the callers get an error (answers withheld);
//! - a batch whose connection broke, or that had no answer, may or may not have committed: it
//!   is sent back to the writer "in doubt", and on the next connection the writer looks for
//!   its first record (one statement is one transaction: all of the batch or none of it is
//!   there). Found, its callers get their sequence numbers; not found, it is sent again; so a
//!   batch is never stored twice. Past the timeout, its callers get an error and it is logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, Statement};

use super::{ConnectError, Shared, connect_one, describe};
use crate::bsn::Bsn;
use crate::store::audit::Entry;

/// Largest group committed in one statement.
const MAX_BATCH: usize = 512;
/// Batches sent before the first of them has answered. Two: one commits while the next is
/// on its way, so the server never waits for a round trip. More only makes the batches
/// smaller (the server runs one connection's statements one after another, each with its
/// own commit, so what waits in a third or fourth batch would have joined the second): in
/// load bench (g), with 64 clients on the cached dossier, PostgreSQL spent 20 µs of its CPU
/// per request at 2, 26-28 at 4 and 40 at 8, and served 0.98-1.04x SQLite's requests per
/// second at 2 against 0.84-0.88x at 4. One in flight pays a round trip per batch (0.83-0.89x).
const IN_FLIGHT: usize = 2;
/// The first pause after a failed connection attempt; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// The batch statement (see `schema`): the writer, the records' columns, the outcomes.
const APPEND: &str = "SELECT kp_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const APPEND_TYPES: &[Type] = &[
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
];

pub(super) type Reply = oneshot::Sender<Result<i64, String>>;

/// One change for the writer.
pub(super) enum Work {
    /// An access record, with its subject's pseudonym (computed by the caller); answered with
    /// its sequence number once durable.
    Record {
        entry: Entry,
        pseudonym: Option<String>,
        reply: Reply,
    },
    /// The outcome (JSON) completing record `of`; nobody waits for it.
    Outcome { of: i64, json: String },
}

impl Work {
    fn fail(self, reason: &str) {
        match self {
            Work::Record { reply, .. } => drop(reply.send(Err(reason.to_string()))),
            Work::Outcome { of, .. } => {
                tracing::error!(seq = of, error = %reason, "Audit outcome not written; the record stays `requested`.");
            }
        }
    }
}

/// The writer's connection, with its prepared statement.
struct Live {
    client: Arc<Client>,
    append: Statement,
    /// Set by a batch that found the connection unusable (broken, or silent past the
    /// timeout): the next batch makes a new one.
    broken: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Live {
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::SeqCst) && !self.client.is_closed()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Batches still in flight on it fail (their fate is logged as unknown).
        self.task.abort();
    }
}

/// When the writer may next try to connect, and why the last attempt failed.
struct Backoff {
    pause: Duration,
    not_before: Instant,
    last: String,
}

pub(super) struct Writer {
    config: Config,
    shared: Arc<Shared>,
}

impl Writer {
    pub(super) fn new(config: Config, shared: Arc<Shared>) -> Writer {
        Writer { config, shared }
    }

    /// Takes the queued changes in batches until the store is dropped.
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Work>) {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let (doubt_tx, mut doubt_rx) = mpsc::unbounded_channel::<InDoubt>();
        let mut live: Option<Live> = None;
        let mut backoff = Backoff {
            pause: FIRST_PAUSE,
            not_before: Instant::now(),
            last: String::new(),
        };
        loop {
            // A slot first, so that what queues while all are busy goes in the next batch.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            // Batches in doubt before new ones.
            let (batch, deadline, in_doubt) = tokio::select! {
                biased;
                Some(d) = doubt_rx.recv() => (d.batch, d.deadline, true),
                first = rx.recv() => {
                    let Some(first) = first else {
                        return;
                    };
                    let mut batch = Vec::with_capacity(MAX_BATCH.min(rx.len() + 1));
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(w) => batch.push(w),
                            Err(_) => break,
                        }
                    }
                    (batch, Instant::now() + self.shared.timeout, false)
                }
            };
            // A connection, waiting for PostgreSQL (a restart) until the callers' timeout.
            loop {
                if live.as_ref().is_some_and(|l| !l.usable()) {
                    tracing::warn!(store = %self.shared.location, "The audit writer's connection to PostgreSQL is gone; making a new one.");
                    live = None;
                }
                if live.is_none() {
                    live = self.reconnect(&mut backoff).await;
                }
                if live.is_some() || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep_until(backoff.not_before.min(deadline)).await;
            }
            let Some(l) = &live else {
                let reason = format!("PostgreSQL unreachable: {}", backoff.last);
                if in_doubt {
                    lost(&self.shared, batch.len(), &reason);
                }
                self.give_up(batch, &reason);
                continue;
            };
            let (shared, client, append, broken, doubt) = (
                self.shared.clone(),
                l.client.clone(),
                l.append.clone(),
                l.broken.clone(),
                doubt_tx.clone(),
            );
            let mut task = Box::pin(async move {
                let sent = Sent {
                    shared: &shared,
                    client: &client,
                    append: &append,
                    broken: &broken,
                    deadline,
                    doubt: &doubt,
                };
                sent.commit(batch, in_doubt).await;
                drop(slot);
            });
            // Polled once here, in queue order: the first poll sends the batch's statement, so
            // batches reach PostgreSQL in the order their changes were queued (an outcome
            // before the record queued after it), whichever task the runtime runs first.
            let mut first = std::task::Context::from_waker(std::task::Waker::noop());
            if task.as_mut().poll(&mut first).is_pending() {
                tokio::spawn(task);
            }
        }
    }

    /// A new connection, unless the last attempt failed less than a backoff ago.
    async fn reconnect(&self, backoff: &mut Backoff) -> Option<Live> {
        if Instant::now() < backoff.not_before {
            return None;
        }
        match self.connect().await {
            Ok(l) => {
                backoff.pause = FIRST_PAUSE;
                Some(l)
            }
            Err(reason) => {
                tracing::warn!(store = %self.shared.location, error = %reason, "The audit writer cannot connect to PostgreSQL; audited requests fail until it can.");
                backoff.not_before = Instant::now() + backoff.pause;
                backoff.pause = (backoff.pause * 2).min(MAX_PAUSE);
                backoff.last = reason;
                None
            }
        }
    }

    async fn connect(&self) -> Result<Live, String> {
        let timeout = self.shared.timeout;
        let (client, task) = connect_one(&self.config, timeout)
            .await
            .map_err(|e| match e {
                ConnectError::TimedOut => {
                    format!("no connection within {} ms", timeout.as_millis())
                }
                ConnectError::Failed(e) => describe(&e),
            })?;
        let append =
            match tokio::time::timeout(timeout, client.prepare_typed(APPEND, APPEND_TYPES)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    task.abort();
                    return Err(describe(&e));
                }
                Err(_) => {
                    task.abort();
                    return Err(format!("no answer within {} ms", timeout.as_millis()));
                }
            };
        Ok(Live {
            client: Arc::new(client),
            append,
            broken: Arc::default(),
            task,
        })
    }

    fn give_up(&self, batch: Vec<Work>, reason: &str) {
        self.shared
            .stats
            .failed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for w in batch {
            w.fail(reason);
        }
    }
}

/// How a batch ended.
enum Failure {
    /// PostgreSQL refused it; it was rolled back.
    Refused(String),
    /// The connection broke or went silent: committed or not, nobody knows.
    Unknown(String),
}

/// A batch sent whose fate is unknown, back to the writer for the next connection.
struct InDoubt {
    batch: Vec<Work>,
    /// Its callers' timeout: past it they get an error.
    deadline: Instant,
}

/// A batch on its way: the connection it goes on, and where it goes back when in doubt.
struct Sent<'a> {
    shared: &'a Shared,
    client: &'a Client,
    append: &'a Statement,
    broken: &'a AtomicBool,
    deadline: Instant,
    doubt: &'a mpsc::UnboundedSender<InDoubt>,
}

impl Sent<'_> {
    /// Commits `batch` and answers its callers; a refused batch is tried again change by
    /// change; one `in_doubt` (sent before, on a connection that broke) is first looked for.
    async fn commit(&self, batch: Vec<Work>, in_doubt: bool) {
        let Sent {
            shared,
            client,
            append,
            ..
        } = *self;
        if in_doubt {
            match stored(shared, client, &batch).await {
                Ok(Some(first)) => {
                    tracing::info!(store = %shared.location, changes = batch.len(), "An audit batch in doubt was stored after all; its requests are answered.");
                    return done(shared, batch, Some(first));
                }
                Ok(None) => {}
                Err(reason) => return self.doubt(batch, reason),
            }
        }
        match send(shared, client, append, &batch).await {
            Ok(first) => done(shared, batch, first),
            Err(Failure::Refused(reason)) if batch.len() > 1 => {
                tracing::warn!(store = %shared.location, error = %reason, changes = batch.len(), "Audit batch refused; writing its changes one by one.");
                shared.stats.split.fetch_add(1, Ordering::Relaxed);
                for w in batch {
                    let one = vec![w];
                    match send(shared, client, append, &one).await {
                        Ok(first) => done(shared, one, first),
                        Err(Failure::Refused(reason)) => {
                            tracing::error!(store = %shared.location, error = %reason, "Audit change not written.");
                            fail(shared, one, &reason);
                        }
                        Err(Failure::Unknown(reason)) => self.doubt(one, reason),
                    }
                }
            }
            Err(Failure::Refused(reason)) => {
                tracing::error!(store = %shared.location, error = %reason, "Audit change not written.");
                fail(shared, batch, &reason);
            }
            Err(Failure::Unknown(reason)) => self.doubt(batch, reason),
        }
    }

    /// A batch whose fate is unknown: back to the writer while its callers still wait, or
    /// failed (and logged) past their timeout. The connection is replaced either way.
    fn doubt(&self, batch: Vec<Work>, reason: String) {
        self.broken.store(true, Ordering::SeqCst);
        if Instant::now() >= self.deadline {
            lost(self.shared, batch.len(), &reason);
            return fail(self.shared, batch, &reason);
        }
        tracing::warn!(store = %self.shared.location, error = %reason, changes = batch.len(), "Audit batch sent but not confirmed; it is looked for on the next connection.");
        if let Err(back) = self.doubt.send(InDoubt {
            batch,
            deadline: self.deadline,
        }) {
            // The writer has stopped.
            fail(self.shared, back.0.batch, &reason);
        }
    }
}

/// Is this batch (sent before, on a connection that broke) stored? Its first record's
/// sequence number when it is (all of the batch is: one statement, one transaction), `None`
/// when it is not or has no record (outcomes alone are written again harmlessly: the last of
/// two for one record is kept).
async fn stored(shared: &Shared, client: &Client, batch: &[Work]) -> Result<Option<i64>, String> {
    let Some(entry) = batch.iter().find_map(|w| match w {
        Work::Record { entry, .. } => Some(entry),
        Work::Outcome { .. } => None,
    }) else {
        return Ok(None);
    };
    let params: [&(dyn ToSql + Sync); 3] = [&entry.time, &entry.trace_id, &entry.json];
    let query = client.query_opt(
        "SELECT seq FROM audit_log WHERE time = $1::text::timestamptz AND trace_id = $2 AND record = $3",
        &params,
    );
    match tokio::time::timeout(shared.timeout, query).await {
        Ok(Ok(row)) => row
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()
            .map_err(|e| describe(&e)),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!(
            "no answer within {} ms",
            shared.timeout.as_millis()
        )),
    }
}

/// Logs a batch whose fate stays unknown: its requests got an error, and it may or may not
/// be stored (the chain is valid either way).
fn lost(shared: &Shared, changes: usize, reason: &str) {
    tracing::error!(store = %shared.location, error = %reason, changes, "Audit batch sent but not confirmed before its requests' timeout: it may or may not be stored; its requests get an error.");
}

fn fail(shared: &Shared, batch: Vec<Work>, reason: &str) {
    shared
        .stats
        .failed
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    for w in batch {
        w.fail(reason);
    }
}

/// Answers each record with its sequence number: the batch's records were numbered from
/// `first` in the order they are in it.
fn done(shared: &Shared, batch: Vec<Work>, first: Option<i64>) {
    shared.stats.committed.fetch_add(1, Ordering::Relaxed);
    let mut seq = first.unwrap_or(0);
    for w in batch {
        if let Work::Record { reply, .. } = w {
            // A caller that went away no longer waits.
            let _ = reply.send(Ok(seq));
            seq += 1;
        }
    }
}

/// Sends `batch` as one statement and waits (within the timeout) for its durable commit: the
/// first record's sequence number (`None` for a batch of outcomes only).
async fn send(
    shared: &Shared,
    client: &Client,
    append: &Statement,
    batch: &[Work],
) -> Result<Option<i64>, Failure> {
    let mut records = Vec::with_capacity(batch.len());
    let mut times = Vec::with_capacity(batch.len());
    let mut kinds = Vec::with_capacity(batch.len());
    let mut traces = Vec::with_capacity(batch.len());
    let mut actors = Vec::with_capacity(batch.len());
    let mut actor_types = Vec::with_capacity(batch.len());
    let mut bsns = Vec::with_capacity(batch.len());
    let mut pseudonyms = Vec::with_capacity(batch.len());
    let mut outcome_seqs = Vec::new();
    let mut outcomes = Vec::new();
    for w in batch {
        match w {
            Work::Record {
                entry, pseudonym, ..
            } => {
                records.push(entry.json.as_str());
                times.push(entry.time.as_str());
                kinds.push(entry.kind.as_str());
                traces.push(entry.trace_id.as_str());
                actors.push(entry.actor.as_str());
                actor_types.push(entry.actor_type.as_str());
                bsns.push(entry.bsn.as_ref().map(Bsn::as_str));
                pseudonyms.push(pseudonym.as_deref());
            }
            Work::Outcome { of, json } => {
                outcome_seqs.push(*of);
                outcomes.push(json.as_str());
            }
        }
    }
    let params: [&(dyn ToSql + Sync); 11] = [
        &shared.instance,
        &records,
        &times,
        &kinds,
        &traces,
        &actors,
        &actor_types,
        &bsns,
        &pseudonyms,
        &outcome_seqs,
        &outcomes,
    ];
    let query = client.query_one(append, &params);
    match tokio::time::timeout(shared.timeout, query).await {
        Ok(Ok(row)) => row
            .try_get::<_, Option<i64>>(0)
            .map_err(|e| Failure::Unknown(describe(&e))),
        // A server shutting down answers with an error of its own (57P01) before it closes
        // the connection: that is a lost connection, not a refusal of the batch.
        Ok(Err(e))
            if e.as_db_error().is_some() && !client.is_closed() && !super::connection_lost(&e) =>
        {
            Err(Failure::Refused(describe(&e)))
        }
        Ok(Err(e)) => Err(Failure::Unknown(describe(&e))),
        Err(_) => Err(Failure::Unknown(format!(
            "no answer within {} ms",
            shared.timeout.as_millis()
        ))),
    }
}

//! The embedded backend: an append-only audit journal (the durability point, [`journal`]), a
//! SQLite file (WAL, `synchronous=FULL`) as its index, two writer threads, one read-only
//! connection. It implements [`Backend`] and must not restate the chain's, the outbox's or the
//! report's rules: those are in [`super::audit`], [`super::applications`] and
//! [`super::report`]; what is here is how SQLite keeps them.
//!
//! - [`journal`]: the journal's format, its segments read back, recovery.
//! - [`writer`]: the appender (journal, group commit) and the indexer (the only connection
//!   that writes).
//! - [`schema`]: the tables, the `processing_log` view, and the migrations of older files.
//! - [`audit`], [`applications`], [`registrations`]: each kind's SQL, read and written, and its
//!   trait implemented.
//!
//! The SQL is plain and portable so a PostgreSQL backend can say the same things (the
//! processing view uses SQLite's `json_extract`, PostgreSQL's `->>` does the same).

mod applications;
mod audit;
pub(super) mod journal;
mod registrations;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as chan};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

pub(super) use audit::{report, verify};

use super::applications::Application;
use super::{Backend, Counters, StoreError, StoreStats};
use crate::bsn::Bsn;
use writer::{Appender, Indexer, Progress, ToIndex, Work, Writer};

/// How long a reader of the audit waits for the index to hold every acknowledged record.
const CATCH_UP: Duration = Duration::from_secs(5);
/// How long `open` waits for another store on the same file (one closing in this process) to
/// let go of it.
const LOCK_FOR: Duration = Duration::from_secs(10);

/// How many citizens' application lists the store remembers (most are empty: ~150 bytes each
/// with moka's bookkeeping, so ~2.5 MiB, outside `cache.max_bytes`).
const APPLICATION_LISTS: u64 = 16_384;

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub(super) struct SqliteStore {
    tx: mpsc::Sender<Work>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Each citizen's applications as last read for the `zaken` section (bounded, see
    /// `applications_of`), with the bound they were read with: the section asks on every
    /// dossier read, and this process is the only writer of the table (SQLite is
    /// single-instance), so every change passes through `insert_application` or
    /// `update_application`, which drop the subject's entry.
    applications: moka::future::Cache<Bsn, (u32, Arc<[Application]>)>,
    /// Bumped by the writer after every commit that changed applications (before its callers
    /// hear of it), so a read that raced a write is not remembered.
    application_writes: Arc<AtomicU64>,
    stats: Arc<Counters>,
    /// How far the journal and the index are.
    progress: Arc<Progress>,
    /// To the indexer, to ask it to commit now (a reader of the audit waits), and its thread.
    hurry: chan::Sender<ToIndex>,
    indexer: std::thread::Thread,
}

/// Turns an SQLite error into the store's, naming the file.
fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// The page size of a new file. Each page the indexer's transactions change costs system calls
/// per page, not per byte: two writes into the WAL (the frame's header, then the page), and at
/// the checkpoint a read of the frame and a write into the file. With ~1 KiB records appended
/// in sequence order, 16 KiB pages make a quarter of the calls of SQLite's default 4 KiB for
/// the same bytes. A WAL file's page size is fixed once it has a table: an older file keeps
/// its own (see `docs/operators.md` for moving one over).
const PAGE_SIZE: u32 = 16 * 1024;

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let err = sqlite_error(path);
    let c = Connection::open(path).map_err(&err)?;
    // First: switching to WAL writes the file's header, and with it the page size.
    c.execute_batch(&format!("PRAGMA page_size={PAGE_SIZE};"))
        .map_err(&err)?;
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA busy_timeout=5000;
         PRAGMA foreign_keys=ON;",
    )
    .map_err(err)?;
    Ok(c)
}

/// Opens the file read-only, for the CLI's walks over it: safe next to a running gateway.
fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite_error(path))
}

impl SqliteStore {
    /// Opens (and creates) the store, brings an older file to the current schema, replays the
    /// audit journal into it, and starts the writer threads.
    pub(super) fn open(
        path: &Path,
        pseudonym_key: Vec<u8>,
        commit_delay: Duration,
    ) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Folder(dir.to_path_buf(), e))?;
        }
        let dir = journal::folder(path);
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Folder(dir.clone(), e))?;
        let lock = lock(&dir, LOCK_FOR)?;
        let sqlite = sqlite_error(path);
        let mut writer = open_conn(path)?;
        schema::create(&writer)
            .and_then(|()| writer.busy_timeout(writer::LOCK_WAIT))
            .map_err(&sqlite)?;
        let key = crate::store::audit::pseudonym_mac(&pseudonym_key);
        let recovered = journal::recover(path, &mut writer, &key)?;
        let tail = journal::Tail::create(&dir, recovered.next_segment)?;
        let reader = open_conn(path)?;
        // The writer threads are the only ones that write; this connection cannot.
        reader
            .execute_batch("PRAGMA query_only=ON;")
            .map_err(&sqlite)?;
        let (tx, rx) = mpsc::channel::<Work>(8192);
        let (to_index, from_appender) = chan::channel();
        let stats = Arc::new(Counters::default());
        let progress = Arc::new(Progress::new());
        let application_writes: Arc<AtomicU64> = Arc::default();
        let w = Writer::new(
            &pseudonym_key,
            path,
            stats.clone(),
            application_writes.clone(),
        );
        let indexer = Indexer {
            writer: w,
            progress: progress.clone(),
            dir: dir.clone(),
            first_segment: tail.number,
            lock,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    yield_to_requests();
                    f()
                })
                .map(|t| t.thread().clone())
                .map_err(|e| StoreError::Folder(path.to_path_buf(), e))
        };
        let indexer = spawn(
            "audit-index",
            Box::new(move || indexer.run(writer, from_appender)),
        )?;
        let appender = Appender {
            tail,
            head: recovered.head,
            frames: 0,
            to_index: to_index.clone(),
            indexer: indexer.clone(),
            nudged: 0,
            progress: progress.clone(),
            stats: stats.clone(),
            commit_delay,
            runtime: tokio::runtime::Handle::try_current()
                .ok()
                .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread),
        };
        spawn("audit-journal", Box::new(move || appender.run(rx)))?;
        Ok(SqliteStore {
            tx,
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_path_buf(),
            applications: moka::future::Cache::new(APPLICATION_LISTS),
            application_writes,
            stats,
            progress,
            hurry: to_index,
            indexer,
        })
    }

    /// Waits until the index holds every record acknowledged so far (and every outcome sent
    /// before them): a read of the audit sees all of it.
    async fn caught_up(&self) -> Result<(), StoreError> {
        let target = self.progress.synced.load(Ordering::SeqCst);
        let mut indexed = self.progress.indexed.subscribe();
        if *indexed.borrow() >= target {
            return Ok(());
        }
        let _ = self.hurry.send(ToIndex::Hurry);
        self.indexer.unpark();
        match tokio::time::timeout(CATCH_UP, indexed.wait_for(|n| *n >= target)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::WriterGone),
            Err(_) => Err(StoreError::IndexBehind {
                path: self.path.clone(),
                records: target.saturating_sub(*self.progress.indexed.borrow()),
                after: CATCH_UP,
            }),
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

    /// A read of the audit, once the index holds every acknowledged record.
    async fn read_audit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.caught_up().await?;
        self.read(f).await
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
            f(&c).map_err(sqlite_error(&path))
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }
}

/// How long [`repage`] waits for the journal's lock: a gateway that has just stopped lets go
/// of it once its indexer has finished; one still running holds it.
const REPAGE_WAIT: Duration = Duration::from_secs(2);

/// What [`repage`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repaged {
    /// The page size the file had, and has now.
    pub from: u32,
    pub to: u32,
    /// The file's bytes (its WAL included) before, and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Rewrites a store made by an older version in [`PAGE_SIZE`] pages: SQLite's `VACUUM`, with
/// the WAL set aside for it and taken up again after. Offline: it takes the journal's lock, so
/// it refuses while a gateway has the store open (and a gateway started meanwhile waits for
/// it). Rows and their sequence numbers, and so the chain, are copied as they are; the journal
/// is not touched. `VACUUM` writes a copy of the file first, so it needs that much free space,
/// and a failure leaves the file as it was. A file in the current page size is left alone.
pub(crate) fn repage(path: &Path) -> Result<Repaged, StoreError> {
    let err = sqlite_error(path);
    // Not created when missing: there is nothing to rewrite.
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(&err)?;
    let dir = journal::folder(path);
    std::fs::create_dir_all(&dir).map_err(|e| StoreError::Folder(dir.clone(), e))?;
    let _lock = lock(&dir, REPAGE_WAIT)?;
    let bytes = || {
        [path.to_path_buf(), wal_of(path)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum::<u64>()
    };
    let bytes_before = bytes();
    let size = |c: &Connection| c.query_row("PRAGMA page_size", [], |r| r.get::<_, u32>(0));
    let from = size(&c).map_err(&err)?;
    if from != PAGE_SIZE {
        // A WAL file's page size changes only outside WAL mode.
        let rewritten = c.execute_batch(&format!(
            "PRAGMA journal_mode=DELETE; PRAGMA page_size={PAGE_SIZE}; VACUUM;"
        ));
        let wal = c.execute_batch("PRAGMA journal_mode=WAL;");
        rewritten.and(wal).map_err(&err)?;
    }
    let to = size(&c).map_err(&err)?;
    drop(c);
    Ok(Repaged {
        from,
        to,
        bytes_before,
        bytes_after: bytes(),
    })
}

/// The WAL file beside the SQLite file at `path`.
fn wal_of(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push("-wal");
    std::path::PathBuf::from(name)
}

/// Takes the journal's lock: one store per file, waiting up to `wait` for it. A store closing
/// in this process lets go of it once its indexer has finished; one in another process holds
/// it while it runs.
fn lock(dir: &Path, wait: Duration) -> Result<std::fs::File, StoreError> {
    let path = dir.join("lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Folder(path.clone(), e))?;
    let until = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::InUse(path)),
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::Folder(path, e)),
        }
    }
}

impl Backend for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn stats(&self) -> StoreStats {
        self.stats.snapshot()
    }

    fn writable(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
                .await
                .is_ok()
                && !self.tx.is_closed()
                && self.progress.stopped.get().is_none()
        })
    }

    fn settle(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.caught_up())
    }
}

/// How much the store's writer threads yield to the request workers: a nice value (see
/// [`yield_to_requests`]).
const WRITER_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority by [`WRITER_NICE`], so that on a busy core
/// a writer that wakes up (a record arrived, a sync returned) does not preempt the worker
/// serving requests at once: it runs a little later, with more gathered, and the core switches
/// threads less often (load bench (f), the server on one core: the worker was preempted 0.6 to
/// 0.9 times per request, 0.23 to 0.36 with this, and served 7 to 12% more). Its share stays
/// guaranteed: at nice 10 a thread gets a tenth of a core against one busy worker, and each
/// writer needs less than that. An idle core runs it at once, so a quiet gateway's latency is
/// unchanged. A no-op off Linux.
pub(super) fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value is per thread; raising it needs no privilege. Relative to
        // the thread's own, so a gateway started with `nice` keeps its writers below it.
        let tid = Some(rustix::thread::gettid());
        let nice = rustix::process::getpriority_process(tid)
            .map(|now| (now + WRITER_NICE).min(19))
            .and_then(|nice| rustix::process::setpriority_process(tid, nice));
        if let Err(e) = nice {
            tracing::debug!(error = %e, "Cannot lower the priority of a store writer thread.");
        }
    }
}

//! The PostgreSQL backend: one database shared by every instance of a cluster, which share
//! everything durable. It implements [`Backend`] and must not restate the chain's, the
//! outbox's or the report's rules (those are in [`super::audit`], [`super::applications`] and
//! [`super::report`]); what is here is how PostgreSQL keeps them for many writers at once.
//!
//! - [`schema`]: versioned migrations (the tables, the `processing_log` view, `kp_append`,
//!   the function that extends the chain), applied once under an advisory lock.
//! - [`writer`]: each instance's audit writer: records and outcomes, group-committed in one
//!   statement per batch, several batches in flight on its own connection.
//! - [`audit`], [`applications`], [`registrations`]: each kind's SQL and its trait implemented;
//!   `verify` and `report`.
//! - [`listener`]: the `LISTEN` connection that turns other instances' changes into
//!   [`Signal`]s, and drops the application lists they made stale.
//!
//! Every wait on the request path (a pooled connection, a query, a write) is bounded by the
//! store's `timeout`: with PostgreSQL down, a request fails closed within it, and the pool, the
//! writer and the listener reconnect by themselves when it is back.

mod applications;
mod audit;
mod listener;
mod registrations;
mod schema;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use futures::future::BoxFuture;
use hmac::Hmac;
use sha2::Sha256;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::{Client, Config, NoTls};

pub(super) use audit::{report, verify};

use super::audit::pseudonym_mac;
use super::{
    AuditStore, Backend, Counters, Instance, Signal, StoreError, StoreLocation, StoreOptions,
    StoreStats,
};
use applications::Lists;

/// The channel every instance listens on.
const CHANNEL: &str = "ketenportaal";
/// How long the migrations may wait for another instance that is migrating.
const MIGRATION_WAIT: Duration = Duration::from_secs(60);
/// How long `verify` and `report` wait to connect.
const CLI_CONNECT: Duration = Duration::from_secs(10);
/// An instance that has not said it is alive for this long is not listed.
const INSTANCE_SEEN: &str = "30 seconds";

/// How long a request waits before it asks a server that refused its connection again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// How connections are secured: not at all, for PostgreSQL on loopback or a private network.
/// TLS is this one function: return a `tokio_postgres_rustls::MakeRustlsConnect` (rustls only,
/// with the system roots or a configured CA) and every connection (pool, writer, listener,
/// `verify`) speaks TLS.
fn tls() -> NoTls {
    NoTls
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub(super) struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The audit writer's queue; the writer stops when the store is dropped.
    writer: mpsc::Sender<writer::Work>,
    shared: Arc<Shared>,
    /// Stopped with the store.
    listener: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// What the store shares with its writer and listener.
struct Shared {
    /// The URL without its password, for errors and the status page.
    location: String,
    /// This instance's name (the audit rows' writer, the heartbeat's id).
    instance: String,
    /// This store's own id in signals, so that its listener skips what it sent itself (unique
    /// even if two instances were given one name).
    origin: String,
    timeout: Duration,
    lease: Duration,
    key: Hmac<Sha256>,
    stats: Counters,
    signals: broadcast::Sender<Signal>,
    /// The application lists remembered for the `zaken` section.
    lists: Lists,
}

impl Shared {
    /// Turns a driver error into the store's (the URL's password never in it).
    fn error(&self, e: &tokio_postgres::Error) -> StoreError {
        let location = self.location.clone();
        let reason = describe(e);
        if connection_lost(e) {
            StoreError::ConnectionLost { location, reason }
        } else {
            StoreError::Postgres { location, reason }
        }
    }

    fn timed_out(&self) -> StoreError {
        StoreError::TimedOut {
            location: self.location.clone(),
            after: self.timeout,
        }
    }

    fn refused(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Postgres {
            location: self.location.clone(),
            reason: reason.into(),
        }
    }
}

/// Did the connection go (closed, refused, or ended by a server shutting down), rather than
/// the server refuse the statement?
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code),
        // No answer from the server at all: an I/O error.
        None => e.as_db_error().is_none(),
    }
}

/// A driver error with its cause (the driver's own text is only its kind: "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The connection settings of `url` for this instance. The session settings make every
/// statement durable on return (`synchronous_commit`, whatever the server's default) and
/// bounded like its caller (`statement_timeout`, `lock_timeout`), and end a session left idle
/// in a transaction (a frozen instance holding the chain's head) after a few timeouts.
fn session_config(url: &str, options: &StoreOptions) -> Result<Config, String> {
    let mut c = base_config(url, options.timeout)?;
    let ms = options.timeout.as_millis().max(1);
    let given = c.get_options().map(|o| format!("{o} ")).unwrap_or_default();
    c.options(format!(
        "{given}-c synchronous_commit=on -c statement_timeout={ms} -c lock_timeout={ms} \
         -c idle_in_transaction_session_timeout={}",
        ms.saturating_mul(5).max(5000)
    ));
    if c.get_application_name().is_none() {
        c.application_name(format!("ketenportaal {}", options.instance));
    }
    Ok(c)
}

/// The connection settings of `url`: connecting bounded by `connect`, and TCP keepalives, so a
/// server that vanished without closing the connection is noticed in seconds.
fn base_config(url: &str, connect: Duration) -> Result<Config, String> {
    let mut c = Config::from_str(url).map_err(|_| {
        "not a valid PostgreSQL URL (postgres://user:password@host:port/database)".to_string()
    })?;
    c.connect_timeout(connect)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    Ok(c)
}

/// Connects once, within `within`, and drives the connection in a task of its own (ended when
/// the client is dropped, or aborted with the handle).
async fn connect_one(
    config: &Config,
    within: Duration,
) -> Result<(Client, JoinHandle<()>), ConnectError> {
    let (client, connection) = tokio::time::timeout(within, config.connect(tls()))
        .await
        .map_err(|_| ConnectError::TimedOut)?
        .map_err(ConnectError::Failed)?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "A PostgreSQL connection ended.");
        }
    });
    Ok((client, task))
}

/// Why a connection could not be made.
enum ConnectError {
    TimedOut,
    Failed(tokio_postgres::Error),
}

impl ConnectError {
    fn into_store(self, location: &str, within: Duration) -> StoreError {
        match self {
            ConnectError::TimedOut => StoreError::TimedOut {
                location: location.to_string(),
                after: within,
            },
            ConnectError::Failed(e) => StoreError::Postgres {
                location: location.to_string(),
                reason: describe(&e),
            },
        }
    }
}

impl PgStore {
    /// Connects to the database at `url`, migrates it (once, under a lock, however many
    /// instances start together), starts listening for the other instances' signals and starts
    /// this instance's audit writer.
    pub(super) async fn connect(
        url: &str,
        pseudonym_key: Vec<u8>,
        options: StoreOptions,
    ) -> Result<AuditStore, StoreError> {
        let location = StoreLocation::Postgres(url.to_string()).to_string();
        let invalid = |reason: String| StoreError::Postgres {
            location: location.clone(),
            reason,
        };
        let session = session_config(url, &options).map_err(invalid)?;
        let base = base_config(url, options.timeout).map_err(invalid)?;
        migrate(&base, &location, options.timeout).await?;

        let manager = Manager::from_config(
            session.clone(),
            tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1) as usize)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let (signals, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            location: location.clone(),
            origin: format!("{}/{}", options.instance, uuid::Uuid::new_v4()),
            instance: options.instance,
            timeout: options.timeout,
            lease: options.lease,
            key: pseudonym_mac(&pseudonym_key),
            stats: Counters::default(),
            signals,
            lists: Lists::new(),
        });
        let listener = listener::start(base, shared.clone()).await?;
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(writer::Writer::new(session, shared.clone()).run(rx));
        Ok(AuditStore::with_backend(PgStore {
            inner: Arc::new(Inner {
                pool,
                writer: tx,
                shared,
                listener,
            }),
        }))
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Runs `f` on a pooled connection, the wait for the connection and `f` together bounded
    /// by the store's timeout. A connection whose operation timed out is closed rather than
    /// given back (it may still be busy, or hold a transaction).
    async fn with_client<T>(
        &self,
        f: impl for<'c> FnOnce(&'c mut Object) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        self.with_client_until(Instant::now() + self.shared().timeout, f)
            .await
    }

    /// An operation that is safe to repeat (a read, or a write whose second run changes
    /// nothing the first did not) on a pooled connection ([`PgStore::with_client`]), asked
    /// again on a new one when the connection it had was lost (a server restarting under it).
    /// All of it within one timeout.
    async fn repeatable<T>(
        &self,
        f: impl for<'c> Fn(&'c mut Object) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.shared().timeout;
        loop {
            match self.with_client_until(deadline, &f).await {
                Err(StoreError::ConnectionLost { .. })
                    if Instant::now() + RECONNECT_PAUSE < deadline =>
                {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                r => return r,
            }
        }
    }

    /// [`PgStore::with_client`], bounded by `deadline` (for a caller that tries again within
    /// one timeout).
    async fn with_client_until<T>(
        &self,
        deadline: Instant,
        f: impl for<'c> FnOnce(&'c mut Object) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let shared = self.shared();
        // A server that refuses connections (restarting) is asked again until the timeout:
        // nothing was sent, so nothing is done twice.
        let mut client = loop {
            match tokio::time::timeout_at(deadline, self.inner.pool.get()).await {
                Err(_) | Ok(Err(PoolError::Timeout(_))) => return Err(shared.timed_out()),
                Ok(Err(PoolError::Backend(e))) => {
                    if Instant::now() + RECONNECT_PAUSE >= deadline {
                        return Err(shared.error(&e));
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                Ok(Err(e)) => return Err(shared.refused(e.to_string())),
                Ok(Ok(c)) => break c,
            }
        };
        match tokio::time::timeout_at(deadline, f(&mut client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(shared.error(&e)),
            Err(_) => {
                drop(Object::take(client));
                Err(shared.timed_out())
            }
        }
    }

    /// A write made outside the writer (an application, a registration: a transaction of its
    /// own), counted as the writer counts its batches: committed, or a change given up on.
    async fn counted<T>(
        &self,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let r = write.await;
        let stats = &self.shared().stats;
        let counter = if r.is_ok() {
            &stats.committed
        } else {
            &stats.failed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        r
    }

    /// Tells every instance (this one's listener skips it) of `kind`, about `bsn`.
    async fn notify(&self, kind: &'static str, bsn: Option<String>) -> Result<(), StoreError> {
        let note = listener::note(self.shared(), kind, bsn);
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    &c.prepare_cached("SELECT pg_notify($1, $2)").await?,
                    &[&CHANNEL, &note],
                )
                .await
                .map(drop)
            })
        })
        .await
    }
}

/// Brings the database to the current schema on a connection of its own.
async fn migrate(config: &Config, location: &str, timeout: Duration) -> Result<(), StoreError> {
    let (mut client, task) = connect_one(config, timeout)
        .await
        .map_err(|e| e.into_store(location, timeout))?;
    let failed = |e: tokio_postgres::Error| StoreError::Postgres {
        location: location.to_string(),
        reason: describe(&e),
    };
    let encoding: String = client
        .query_one("SHOW server_encoding", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(failed)?;
    if encoding != "UTF8" {
        // The chain hashes the records' UTF-8; a database in another encoding could not keep
        // every record as it was hashed.
        return Err(StoreError::Postgres {
            location: location.to_string(),
            reason: format!("the database's encoding is {encoding}; the store needs UTF8"),
        });
    }
    let applied = tokio::time::timeout(MIGRATION_WAIT, schema::migrate(&mut client))
        .await
        .map_err(|_| StoreError::TimedOut {
            location: location.to_string(),
            after: MIGRATION_WAIT,
        })?
        .map_err(failed)?;
    if applied > 0 {
        tracing::info!(store = %location, migrations = applied, "Store schema migrated.");
    }
    // Instances gone for a week are forgotten.
    client
        .execute(
            "DELETE FROM instances WHERE seen_at < now() - interval '7 days'",
            &[],
        )
        .await
        .map_err(failed)?;
    drop(client);
    task.abort();
    Ok(())
}

impl Backend for PgStore {
    fn location(&self) -> String {
        self.shared().location.clone()
    }

    fn stats(&self) -> StoreStats {
        self.shared().stats.snapshot()
    }

    fn writable(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let ping =
                self.with_client(|c| Box::pin(async move { c.batch_execute("SELECT 1").await }));
            ping.await.is_ok() && !self.inner.writer.is_closed()
        })
    }

    fn signals(&self) -> Option<broadcast::Receiver<Signal>> {
        Some(self.shared().signals.subscribe())
    }

    /// A subject's BSN goes in the notification as it is: the database holds the BSNs anyway
    /// (the audit log and the applications are about them), and only the gateway's sessions
    /// can listen.
    fn publish(&self, signal: Signal) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            match signal {
                Signal::Registrations => self.notify(listener::REGISTRATIONS, None).await,
                Signal::Reload => self.notify(listener::RELOAD, None).await,
                Signal::Subject(bsn) => {
                    self.notify(listener::SUBJECT, Some(bsn.as_str().to_string()))
                        .await
                }
                Signal::Resync => self.notify(listener::RESYNC, None).await,
            }
        })
    }

    /// The row of `me.id`, its `seen_at` the database's clock (so that whether an instance is
    /// alive does not depend on the clocks of the instances).
    fn heartbeat(&self, me: Instance) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    &c.prepare_cached(
                        "INSERT INTO instances (id, started_at, seen_at, config_version)
                     VALUES ($1, $2, now(), $3)
                     ON CONFLICT (id) DO UPDATE SET started_at = EXCLUDED.started_at,
                         seen_at = EXCLUDED.seen_at, config_version = EXCLUDED.config_version",
                    )
                    .await?,
                    &[&me.id, &me.started_at, &me.config_version],
                )
                .await
                .map(drop)
            })
        }))
    }

    /// The instances heard from in the last 30 seconds, by id.
    fn instances(&self) -> BoxFuture<'_, Result<Vec<Instance>, StoreError>> {
        Box::pin(self.with_client(|c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT id, started_at, seen_at, config_version FROM instances
                     WHERE seen_at > now() - interval '{INSTANCE_SEEN}' ORDER BY id"
                );
                c.query(&c.prepare_cached(&sql).await?, &[])
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(Instance {
                            id: r.try_get(0)?,
                            started_at: r.try_get(1)?,
                            seen_at: r.try_get(2)?,
                            config_version: r.try_get(3)?,
                        })
                    })
                    .collect()
            })
        }))
    }
}

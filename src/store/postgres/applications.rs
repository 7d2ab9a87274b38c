//! The applications outbox in PostgreSQL: the `applications` table, each row linked to its
//! `application.submit` record (`submit_seq`); deliveries claimed under a lease, so that of
//! the cluster's instances exactly one delivers an application at a time, and another takes
//! over when its holder dies; the `zaken` reads, and the lists remembered for them,
//! forgotten on every instance when any instance changes a citizen's applications.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio_postgres::Row;

use super::{CHANNEL, PgStore, Shared, listener};
use crate::bsn::Bsn;
use crate::store::StoreError;
use crate::store::applications::{Application, Outbox, submit_details, zaken};
use crate::store::audit::{Entry, pseudonym};
use crate::store::record::AccessRecord;

/// How many citizens' application lists an instance remembers (as SQLite's).
const APPLICATION_LISTS: u64 = 16_384;

/// The columns [`app_row`] reads, as a literal (so queries can be `concat!`ed from it).
macro_rules! app_columns {
    () => {
        "id, service, organisation, bsn, actor, idempotency_key, data, status, reference,
        reason, attempts, next_attempt_at, created_at, updated_at"
    };
}

/// A citizen's open applications, newest first: a range of the partial index
/// `applications_subject_open`, read no further than the limit.
const ZAKEN_OPEN: &str = concat!(
    "SELECT ",
    app_columns!(),
    " FROM applications WHERE bsn = $1 AND status = 'received' ORDER BY created_at DESC LIMIT $2"
);
/// A citizen's latest applications, whatever their status: a range of `applications_subject`.
const ZAKEN_LATEST: &str = concat!(
    "SELECT ",
    app_columns!(),
    " FROM applications WHERE bsn = $1 ORDER BY created_at DESC LIMIT $2"
);

/// A new application, or nothing when one is stored under its actor and key (the insert
/// waits for a concurrent one with the same key, on any instance, to commit or roll back).
const INSERT: &str = concat!(
    "INSERT INTO applications (id, service, organisation, bsn, actor, idempotency_key, data,
         status, attempts, next_attempt_at, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $10)
     ON CONFLICT (actor, idempotency_key) DO NOTHING RETURNING ",
    app_columns!()
);

/// The application stored under an actor and key, locked until the transaction ends (so that
/// two instances sending it again at once write its missing record once).
const STORED: &str = concat!(
    "SELECT ",
    app_columns!(),
    ", submit_seq FROM applications WHERE actor = $1 AND idempotency_key = $2 FOR UPDATE"
);

/// Chains the submit record of application `$1` (in the inserting transaction: the head is
/// locked from here to its commit) and links the application to it.
const CHAIN_SUBMIT: &str = "UPDATE applications SET submit_seq = kp_append($2,
     ARRAY[$3::text], ARRAY[$4::text], ARRAY[$5::text], ARRAY[$6::text], ARRAY[$7::text],
     ARRAY[$8::text], ARRAY[$9::text], ARRAY[$10::text], '{}'::bigint[], '{}'::text[])
 WHERE id = $1";

/// Claims up to `$1` due applications for `$2` for `$3` seconds: those no instance holds, or
/// whose holder's lease has run out. `SKIP LOCKED`: two instances claiming at once each take
/// others, never the same ones.
const CLAIM: &str = concat!(
    "WITH claimed AS (
         UPDATE applications SET lease_until = now() + make_interval(secs => $3), leased_by = $2
         WHERE id IN (
             SELECT id FROM applications
             WHERE status = 'received' AND next_attempt_at <= now()
               AND (lease_until IS NULL OR lease_until < now())
             ORDER BY next_attempt_at LIMIT $1
             FOR UPDATE SKIP LOCKED)
         RETURNING ",
    app_columns!(),
    ")
     SELECT * FROM claimed ORDER BY next_attempt_at"
);

/// Records a delivery outcome and gives up the lease, and tells every instance (same
/// transaction: delivered on commit). Only while the application is still `received`: one
/// that another instance has finished (after this one's lease ran out) stays as it is.
const UPDATE: &str = "WITH changed AS (
         UPDATE applications SET status = $2, reference = $3, reason = $4, attempts = $5,
             next_attempt_at = $6, updated_at = now(), lease_until = NULL, leased_by = NULL
         WHERE id = $1 AND status = 'received'
         RETURNING id)
     SELECT pg_notify($7, $8) FROM changed";

fn app_row(r: &Row) -> Result<Application, tokio_postgres::Error> {
    let time = |i: usize| r.try_get::<_, DateTime<Utc>>(i).map(|t| t.to_rfc3339());
    Ok(Application {
        id: r.try_get(0)?,
        service: r.try_get(1)?,
        organisation: r.try_get(2)?,
        bsn: r.try_get(3)?,
        actor: r.try_get(4)?,
        idempotency_key: r.try_get(5)?,
        data: serde_json::from_str(r.try_get(6)?).unwrap_or_default(),
        status: r.try_get(7)?,
        reference: r.try_get(8)?,
        reason: r.try_get(9)?,
        attempts: u32::try_from(r.try_get::<_, i32>(10)?).unwrap_or(0),
        next_attempt_at: time(11)?,
        created_at: time(12)?,
        updated_at: time(13)?,
    })
}

/// Each citizen's applications as last read for the `zaken` section (the section asks on
/// every dossier read), with the bound they were read with. Any instance may change them, so
/// an entry is dropped when any instance's change is heard (each change notifies, in its
/// transaction), and nothing is remembered while the listener is not connected (a change
/// would go unheard); when it connects again, everything is dropped.
pub(super) struct Lists {
    cache: moka::future::Cache<Bsn, (u32, Arc<[Application]>)>,
    /// Bumped on every change heard (and on every loss of the listener), before the entry is
    /// dropped, so that a read that raced a change is not remembered.
    changes: AtomicU64,
    listening: AtomicBool,
}

impl Lists {
    pub(super) fn new() -> Lists {
        Lists {
            cache: moka::future::Cache::new(APPLICATION_LISTS),
            changes: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        }
    }

    /// A change to `bsn`'s applications was made (here) or heard (from any instance).
    pub(super) async fn forget(&self, bsn: &Bsn) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(bsn).await;
    }

    /// A change to applications of citizens unknown was heard: every list is dropped.
    pub(super) fn forget_all(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    /// Whether changes are heard now; either way, what was remembered is dropped (changes may
    /// have been missed).
    pub(super) fn listening(&self, yes: bool) {
        self.listening.store(yes, Ordering::SeqCst);
        self.forget_all();
    }
}

/// An RFC 3339 time of an application, for a `timestamptz` column.
fn timestamp(shared: &Shared, what: &str, t: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(t)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| shared.refused(format!("application {what} `{t}` is not an RFC 3339 time")))
}

impl PgStore {
    /// The write of [`Outbox::insert_application`], in one transaction.
    async fn apply(
        &self,
        a: Application,
        submit: AccessRecord,
        deadline: tokio::time::Instant,
    ) -> Result<(Application, bool), StoreError> {
        let shared = self.inner.shared.clone();
        let created = timestamp(&shared, "created_at", &a.created_at)?;
        let next = timestamp(&shared, "next_attempt_at", &a.next_attempt_at)?;
        self.with_client_until(deadline, move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let data = a.data.to_string();
                let new_row = tx
                    .query_opt(
                        &tx.prepare_cached(INSERT).await?,
                        &[
                            &a.id,
                            &a.service,
                            &a.organisation,
                            &a.bsn,
                            &a.actor,
                            &a.idempotency_key,
                            &data,
                            &a.status,
                            &next,
                            &created,
                        ],
                    )
                    .await?;
                let (stored, inserted, recorded) = match new_row {
                    Some(row) => (app_row(&row)?, true, false),
                    None => {
                        let row = tx
                            .query_one(
                                &tx.prepare_cached(STORED).await?,
                                &[&a.actor, &a.idempotency_key],
                            )
                            .await?;
                        let seq: Option<i64> = row.try_get(14)?;
                        (app_row(&row)?, false, seq.is_some())
                    }
                };
                if inserted {
                    let note = listener::note(&shared, listener::APPLICATIONS, Some(a.bsn));
                    tx.execute(
                        &tx.prepare_cached("SELECT pg_notify($1, $2)").await?,
                        &[&CHANNEL, &note],
                    )
                    .await?;
                }
                if !recorded {
                    // A new application gets its record; a stored one without a record (its
                    // first submission left none) gets it now, marked `resent`.
                    let e = Entry::new(submit_details(submit, &stored, !inserted));
                    let subject = e.bsn.as_ref().map(|b| pseudonym(&shared.key, b));
                    tx.execute(
                        &tx.prepare_cached(CHAIN_SUBMIT).await?,
                        &[
                            &stored.id,
                            &shared.instance,
                            &e.json,
                            &e.time,
                            &e.kind,
                            &e.trace_id,
                            &e.actor,
                            &e.actor_type,
                            &e.bsn.as_ref().map(Bsn::as_str),
                            &subject,
                        ],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok((stored, inserted))
            })
        })
        .await
    }

    /// The write of [`Outbox::update_application`]: whether it changed the application.
    ///
    /// Repeated on a new connection when the one it had was lost (PostgreSQL restarting):
    /// the values it sets are absolute, and a first try that did commit a final status
    /// leaves the application no longer `received`, so the repeat changes nothing. Without
    /// the repeat, a delivery the organisation took would be sent to it again.
    async fn record_delivery(&self, a: Application) -> Result<bool, StoreError> {
        let shared = self.inner.shared.clone();
        let next = timestamp(&shared, "next_attempt_at", &a.next_attempt_at)?;
        let note = listener::note(&shared, listener::APPLICATIONS, Some(a.bsn.clone()));
        let attempts = i32::try_from(a.attempts).unwrap_or(i32::MAX);
        // The statement's values, shared by every try (not the whole application, data and
        // all, copied per try).
        let values = Arc::new((a.id, a.status, a.reference, a.reason, attempts, next, note));
        self.repeatable(move |c| {
            let v = values.clone();
            Box::pin(async move {
                let rows = c
                    .query(
                        &c.prepare_cached(UPDATE).await?,
                        &[&v.0, &v.1, &v.2, &v.3, &v.4, &v.5, &CHANNEL, &v.6],
                    )
                    .await?;
                Ok(!rows.is_empty())
            })
        })
        .await
    }

    /// Runs an application write to its end and then drops `bsn`'s remembered list, in a task
    /// of its own: a caller that goes away (a client hanging up) cannot leave the write
    /// committed and the old list remembered.
    async fn write_application<T: Send + 'static>(
        &self,
        bsn: String,
        write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::spawn(async move {
            let r = this.counted(write).await;
            if let Ok(bsn) = Bsn::parse(&bsn) {
                this.inner.shared.lists.forget(&bsn).await;
            }
            r
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }
}

impl Outbox for PgStore {
    /// One transaction: the application is inserted unless its actor and key are taken (on
    /// any instance: the insert waits for a concurrent one to commit, then finds it); the
    /// stored one is read back (locked); its submit record is chained if it has none; every
    /// instance is told when it is new.
    fn insert_application(
        &self,
        a: Application,
        submit: AccessRecord,
    ) -> BoxFuture<'_, Result<(Application, bool), StoreError>> {
        let this = self.clone();
        let bsn = a.bsn.clone();
        Box::pin(self.write_application(bsn, async move {
            // Stored once per actor and key, so a connection lost mid-way (a restart) is
            // safe to try again while the caller waits: the second try finds the first's
            // application if it committed.
            let deadline = tokio::time::Instant::now() + this.inner.shared.timeout;
            loop {
                match this.apply(a.clone(), submit.clone(), deadline).await {
                    Err(StoreError::ConnectionLost { .. })
                        if tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(super::RECONNECT_PAUSE).await;
                    }
                    r => return r,
                }
            }
        }))
    }

    fn application(&self, id: String) -> BoxFuture<'_, Result<Option<Application>, StoreError>> {
        Box::pin(self.repeatable(move |c| {
            let id = id.clone();
            Box::pin(async move {
                let sql = concat!(
                    "SELECT ",
                    app_columns!(),
                    " FROM applications WHERE id = $1"
                );
                c.query_opt(&c.prepare_cached(sql).await?, &[&id])
                    .await?
                    .map(|r| app_row(&r))
                    .transpose()
            })
        }))
    }

    /// Two index ranges, each read no further than `limit` rows; remembered until any
    /// instance changes the citizen's applications.
    fn applications_of(
        &self,
        bsn: Bsn,
        limit: u32,
    ) -> BoxFuture<'_, Result<Arc<[Application]>, StoreError>> {
        Box::pin(async move {
            let lists = &self.shared().lists;
            if let Some((bound, known)) = lists.cache.get(&bsn).await
                && bound == limit
            {
                return Ok(known);
            }
            let changes = lists.changes.load(Ordering::SeqCst);
            let remember = lists.listening.load(Ordering::SeqCst);
            let list = self
                .repeatable(move |c| {
                    Box::pin(async move {
                        let n = i64::from(limit);
                        let open = c
                            .query(&c.prepare_cached(ZAKEN_OPEN).await?, &[&bsn.as_str(), &n])
                            .await?;
                        let latest = c
                            .query(&c.prepare_cached(ZAKEN_LATEST).await?, &[&bsn.as_str(), &n])
                            .await?;
                        let read =
                            |rows: Vec<Row>| -> Result<Vec<Application>, tokio_postgres::Error> {
                                rows.iter().map(app_row).collect()
                            };
                        Ok(zaken(read(open)?, read(latest)?, limit))
                    })
                })
                .await?;
            // Remembered only when no change was heard meanwhile; a change heard between the
            // check and the insert bumps the counter first, which the second check sees, and
            // drops the entry after it anyway.
            if remember && lists.changes.load(Ordering::SeqCst) == changes {
                lists.cache.insert(bsn, (limit, list.clone())).await;
                if lists.changes.load(Ordering::SeqCst) != changes {
                    lists.cache.invalidate(&bsn).await;
                }
            }
            Ok(list)
        })
    }

    /// Claims them (see [`CLAIM`]): each is this instance's for the store's `lease`, then
    /// any instance's again unless [`Outbox::update_application`] recorded an outcome.
    fn due_applications(&self, limit: u32) -> BoxFuture<'_, Result<Vec<Application>, StoreError>> {
        let shared = self.inner.shared.clone();
        Box::pin(self.with_client(move |c| {
            Box::pin(async move {
                let lease = shared.lease.as_secs_f64();
                c.query(
                    &c.prepare_cached(CLAIM).await?,
                    &[&i64::from(limit), &shared.instance, &lease],
                )
                .await?
                .iter()
                .map(app_row)
                .collect()
            })
        }))
    }

    fn update_application(&self, a: Application) -> BoxFuture<'_, Result<(), StoreError>> {
        let this = self.clone();
        let (id, bsn) = (a.id.clone(), a.bsn.clone());
        Box::pin(self.write_application(bsn, async move {
            if !this.record_delivery(a).await? {
                tracing::info!(application = %id, "Delivery outcome not recorded: the application was already finished (by another instance, or by this write's first try on a connection that was then lost).");
            }
            Ok(())
        }))
    }
}

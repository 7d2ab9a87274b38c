//! The applications outbox in SQLite: the `applications` table, each row linked to its
//! `application.submit` record (`submit_seq`); the `zaken` reads, two index ranges each read no
//! further than the limit; and the lists remembered for the `zaken` section.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use futures::future::BoxFuture;
use hmac::Hmac;
use rusqlite::{OptionalExtension, params};
use sha2::Sha256;
use tokio::sync::oneshot;

use super::SqliteStore;
use super::writer::Work;
use crate::bsn::Bsn;
use crate::store::StoreError;
use crate::store::applications::{Application, Outbox, submit_details, zaken};
use crate::store::audit::{Entry, Head};
use crate::store::record::AccessRecord;

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

/// A new application with its submit record, or the stored one for the same actor and key
/// (with its record written now if it has none); and whether it is new.
pub(super) fn apply(
    tx: &rusqlite::Transaction<'_>,
    chain: &mut Head,
    key: &Hmac<Sha256>,
    a: &Application,
    submit: &AccessRecord,
) -> rusqlite::Result<(Box<Application>, bool)> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO applications (id, service, organisation, bsn, actor, idempotency_key, data, status,
                 reference, reason, attempts, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL, 0, ?10, ?9, ?9)
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
            a.created_at,
            a.next_attempt_at
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
        // A new application gets its record; a stored one without a record (its first
        // submission left none: a store from before the two were one transaction) gets it
        // now that the citizen sent it again, marked `resent`.
        let rec = submit_details(submit.clone(), &stored, !inserted);
        let seq = super::audit::Rows::new(tx, key)?.append(chain, &Entry::new(rec))?;
        tx.prepare_cached("UPDATE applications SET submit_seq = ?2 WHERE id = ?1")?
            .execute(params![stored.id, seq])?;
    }
    Ok((stored, inserted))
}

/// Records a delivery outcome.
pub(super) fn update(tx: &rusqlite::Transaction<'_>, a: &Application) -> rusqlite::Result<()> {
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
    Ok(())
}

impl SqliteStore {
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
}

impl Outbox for SqliteStore {
    fn insert_application(
        &self,
        a: Application,
        submit: AccessRecord,
    ) -> BoxFuture<'_, Result<(Application, bool), StoreError>> {
        let (done, wait) = oneshot::channel();
        let bsn = a.bsn.clone();
        let work = Work::Apply(Box::new(a), Box::new(submit), done);
        Box::pin(self.write_application(bsn, work, wait))
    }

    fn application(&self, id: String) -> BoxFuture<'_, Result<Option<Application>, StoreError>> {
        Box::pin(self.read(move |c| {
            c.query_row(&format!("{APP_SELECT} WHERE id = ?1"), [id], app_row)
                .optional()
        }))
    }

    /// Two index ranges, each read no further than `limit` rows; remembered until the
    /// citizen's next application write.
    fn applications_of(
        &self,
        bsn: Bsn,
        limit: u32,
    ) -> BoxFuture<'_, Result<Arc<[Application]>, StoreError>> {
        Box::pin(async move {
            if let Some((bound, known)) = self.applications.get(&bsn).await
                && bound == limit
            {
                return Ok(known);
            }
            let writes = self.application_writes.load(Ordering::SeqCst);
            let list: Arc<[Application]> = self
                .read(move |c| {
                    let open = c
                        .prepare_cached(ZAKEN_OPEN)?
                        .query_map(params![bsn.as_str(), limit], app_row)?
                        .collect::<Result<_, _>>()?;
                    let latest = c
                        .prepare_cached(ZAKEN_LATEST)?
                        .query_map(params![bsn.as_str(), limit], app_row)?
                        .collect::<Result<_, _>>()?;
                    Ok(zaken(open, latest, limit))
                })
                .await?;
            // Remember it only when no write happened meanwhile; a write that lands between
            // the check and the insert bumps the counter first, which the second check sees,
            // and drops the entry after it anyway.
            if self.application_writes.load(Ordering::SeqCst) == writes {
                self.applications.insert(bsn, (limit, list.clone())).await;
                if self.application_writes.load(Ordering::SeqCst) != writes {
                    self.applications.invalidate(&bsn).await;
                }
            }
            Ok(list)
        })
    }

    fn due_applications(&self, limit: u32) -> BoxFuture<'_, Result<Vec<Application>, StoreError>> {
        let now = Utc::now().to_rfc3339();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare(&format!(
                "{APP_SELECT} WHERE status = 'received' AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT ?2"
            ))?;
            let rows = st.query_map(params![now, limit], app_row)?;
            rows.collect()
        }))
    }

    fn update_application(&self, a: Application) -> BoxFuture<'_, Result<(), StoreError>> {
        let (done, wait) = oneshot::channel();
        let bsn = a.bsn.clone();
        Box::pin(self.write_application(bsn, Work::Update(Box::new(a), done), wait))
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::store::testing::{application, open_temp, rows, submit_record};

    #[test]
    fn the_zaken_queries_read_an_index_range_no_further_than_the_limit() {
        let (_dir, path, store) = open_temp();
        drop(store);
        let c = Connection::open(&path).unwrap();
        for (sql, index) in [
            (ZAKEN_OPEN, "applications_subject_open"),
            (ZAKEN_LATEST, "applications_subject"),
        ] {
            let plan: Vec<String> = rows(
                &c,
                &format!("EXPLAIN QUERY PLAN {sql}"),
                params!["999993653", 20],
                |r| r.get(3),
            );
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
        let (_dir, _path, store) = open_temp();
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
    async fn a_new_application_is_due_when_it_says() {
        let (_dir, _path, store) = open_temp();
        let mut later = application(1, "received");
        later.next_attempt_at = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
        store
            .insert_application(later, submit_record())
            .await
            .unwrap();
        store
            .insert_application(application(2, "received"), submit_record())
            .await
            .unwrap();
        let due = store.due_applications(10).await.unwrap();
        let due: Vec<&str> = due.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(due, ["app-0002"]);
    }

    #[tokio::test]
    async fn an_application_and_its_submit_record_are_one_transaction() {
        let (_dir, path, store) = open_temp();
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
}

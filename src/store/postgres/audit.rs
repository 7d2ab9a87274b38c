//! The audit log in PostgreSQL: each record one row of `audit_log` (naming the instance that
//! wrote it; the processing log is a view over these rows, see `schema`), each outcome one row
//! of `audit_outcome`, the chain's head one row of `audit_head`; the reads the API makes, over
//! every instance's records; and the CLI's read-only walks, `verify` and `report`.

use std::ops::ControlFlow;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row, Transaction};

use super::writer::Work;
use super::{CLI_CONNECT, PgStore, base_config, connect_one, describe};
use crate::bsn::Bsn;
use crate::store::audit::{AuditLog, Check, Entry, Verdict, completed, pseudonym};
use crate::store::record::{AccessRecord, Completion};
use crate::store::report::{Report, Tally};
use crate::store::{StoreError, StoreLocation};

/// Rows read at a time by the walks (a portal, so a long log is never all in memory).
const PAGE: i32 = 2048;

impl AuditLog for PgStore {
    fn append(&self, record: AccessRecord) -> BoxFuture<'_, Result<i64, StoreError>> {
        // As on SQLite: the future holds the entry, not the record as well.
        let entry = Entry::new(record);
        Box::pin(async move {
            let shared = self.shared();
            let deadline = tokio::time::Instant::now() + shared.timeout;
            let pseudonym = entry.bsn.as_ref().map(|b| pseudonym(&shared.key, b));
            let (reply, done) = oneshot::channel();
            let work = Work::Record {
                entry,
                pseudonym,
                reply,
            };
            match tokio::time::timeout_at(deadline, self.inner.writer.send(work)).await {
                Err(_) => return Err(shared.timed_out()),
                Ok(Err(_)) => return Err(StoreError::WriterGone),
                Ok(Ok(())) => {}
            }
            // Bounded here too: a caller never waits longer than the timeout, even behind a
            // batch that is itself waiting for its own (its record may still be stored: the
            // answer is withheld all the same).
            match tokio::time::timeout_at(deadline, done).await {
                Err(_) => Err(shared.timed_out()),
                Ok(Err(_)) => Err(StoreError::WriterGone),
                Ok(Ok(Err(reason))) => Err(shared.refused(format!("not written: {reason}"))),
                Ok(Ok(Ok(seq))) => Ok(seq),
            }
        })
    }

    fn append_outcome(&self, seq: i64, outcome: &Completion) {
        let work = Work::Outcome {
            of: seq,
            json: serde_json::to_string(outcome).unwrap_or_default(),
        };
        if let Err(mpsc::error::TrySendError::Full(work)) = self.inner.writer.try_send(work) {
            let writer = self.inner.writer.clone();
            tokio::spawn(async move {
                let _ = writer.send(work).await;
            });
        }
    }

    fn by_subject(
        &self,
        bsn: Bsn,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(i64, AccessRecord)>, StoreError>> {
        Box::pin(self.repeatable(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &c.prepare_cached(
                            "SELECT a.seq, a.record, o.outcome FROM audit_log a
                         LEFT JOIN audit_outcome o ON o.seq = a.seq
                         WHERE a.bsn = $1 ORDER BY a.seq DESC LIMIT $2",
                        )
                        .await?,
                        &[&bsn.as_str(), &i64::from(limit)],
                    )
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let seq: i64 = r.try_get(0)?;
                    let record: &str = r.try_get(1)?;
                    let outcome: Option<&str> = r.try_get(2)?;
                    if let Some(rec) = completed(record, outcome) {
                        out.push((seq, rec));
                    }
                }
                Ok(out)
            })
        }))
    }

    fn has_trace(&self, trace_id: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.with_client(move |c| {
            Box::pin(async move {
                c.query_opt(
                    &c.prepare_cached("SELECT 1 FROM audit_log WHERE trace_id = $1 LIMIT 1")
                        .await?,
                    &[&trace_id],
                )
                .await
                .map(|r| r.is_some())
            })
        }))
    }

    fn counts(&self) -> BoxFuture<'_, Result<(i64, i64), StoreError>> {
        Box::pin(self.with_client(|c| {
            Box::pin(async move {
                let r = c
                    .query_one(
                        &c.prepare_cached("SELECT (SELECT count(*) FROM audit_log), (SELECT count(*) FROM processing_log)").await?,
                        &[],
                    )
                    .await?;
                Ok((r.try_get(0)?, r.try_get(1)?))
            })
        }))
    }
}

// ----------------------------------------------------------------------------------------------
// Verification and reports (read-only, from the CLI)
// ----------------------------------------------------------------------------------------------

/// Walks the whole chain of the database at `url`, every instance's records: each record in
/// sequence order, then the chain's end against the head row (a removed tail shows), then each
/// outcome. Reads one snapshot (`REPEATABLE READ`, read-only), so it is safe next to running
/// gateways and sees the chain as it was when it started.
pub(crate) async fn verify(url: &str) -> Result<Verdict, StoreError> {
    let location = StoreLocation::Postgres(url.to_string()).to_string();
    read_snapshot(url, &location, |tx| {
        Box::pin(async move {
            let mut check = Check::new();
            let walked = walk(
                tx,
                "SELECT seq, record, prev_hash, hash FROM audit_log ORDER BY seq",
                &[],
                |r| Ok(check.record(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)),
            )
            .await?;
            if let ControlFlow::Break(v) = walked {
                return Ok(v);
            }
            let head = tx
                .query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
                .await?;
            if let ControlFlow::Break(v) = check.ends_at(head.try_get(0)?, head.try_get(1)?) {
                return Ok(v);
            }
            let walked = walk(
                tx,
                "SELECT o.seq, o.outcome, o.hash, a.hash FROM audit_outcome o
                 LEFT JOIN audit_log a ON a.seq = o.seq ORDER BY o.seq",
                &[],
                |r| Ok(check.outcome(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)),
            )
            .await?;
            Ok(match walked {
                ControlFlow::Break(v) => v,
                ControlFlow::Continue(()) => check.intact(),
            })
        })
    })
    .await
}

/// The security officer's report over `[from, to)` from the database at `url` (every
/// instance's reads), with the `top` most-viewed subjects and most active users. Read-only.
pub(crate) async fn report(
    url: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    top: usize,
) -> Result<Report, StoreError> {
    let location = StoreLocation::Postgres(url.to_string()).to_string();
    read_snapshot(url, &location, move |tx| {
        Box::pin(async move {
            let mut tally = Tally::new(from, to);
            // The tally never stops the walk.
            let _ = walk(
                tx,
                "SELECT record FROM audit_log
                 WHERE kind = 'dossier.read' AND time >= $1 AND time < $2 ORDER BY seq",
                &[&from, &to],
                |r| {
                    if let Ok(rec) = serde_json::from_str::<AccessRecord>(r.try_get(0)?) {
                        tally.add(rec);
                    }
                    Ok(ControlFlow::Continue(()))
                },
            )
            .await?;
            Ok(tally.finish(top))
        })
    })
    .await
}

/// Runs `f` in a read-only snapshot of the database at `url`, on a connection of its own.
async fn read_snapshot<T>(
    url: &str,
    location: &str,
    f: impl for<'t> FnOnce(&'t Transaction<'t>) -> BoxFuture<'t, Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    let failed = |e: tokio_postgres::Error| StoreError::Postgres {
        location: location.to_string(),
        reason: describe(&e),
    };
    let config = base_config(url, CLI_CONNECT).map_err(|reason| StoreError::Postgres {
        location: location.to_string(),
        reason,
    })?;
    let (mut client, task) = connect_one(&config, CLI_CONNECT)
        .await
        .map_err(|e| e.into_store(location, CLI_CONNECT))?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(failed)?;
    let out = f(&tx).await.map_err(failed);
    drop(tx);
    drop(client);
    task.abort();
    out
}

/// Hands each row of `sql` (with `params`), a page at a time, to `check`, until one breaks the
/// chain.
async fn walk(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    mut check: impl FnMut(&Row) -> Result<ControlFlow<Verdict>, tokio_postgres::Error>,
) -> Result<ControlFlow<Verdict>, tokio_postgres::Error> {
    let portal = tx.bind(sql, params).await?;
    loop {
        let rows = tx.query_portal(&portal, PAGE).await?;
        if rows.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        for r in &rows {
            if let ControlFlow::Break(v) = check(r)? {
                return Ok(ControlFlow::Break(v));
            }
        }
    }
}

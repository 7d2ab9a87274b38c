//! The audit log in SQLite: each record one row of `audit_log` (the processing log is a view
//! over these rows, see `schema`), each outcome one row of `audit_outcome`; the reads the API
//! makes; and the CLI's read-only walks over the file, `verify` and `report`.

use std::ops::ControlFlow;
use std::path::Path;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use hmac::Hmac;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};

use super::journal::{self, Frame};
use super::writer::Work;
use super::{SqliteStore, open_read_only, sqlite_error};
use crate::bsn::Bsn;
use crate::store::audit::{
    AuditLog, Check, Entry, Head, HexHash, Verdict, completed, outcome_hash, pseudonym,
};
use crate::store::record::{AccessRecord, Completion};
use crate::store::report::{Report, Tally};
use crate::store::{JournalError, StoreError};

/// The head of the chain as the file holds it.
pub(super) fn chain_head(c: &Connection) -> rusqlite::Result<Head> {
    c.query_row(
        "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
        [],
        |r| {
            Ok(Head {
                seq: r.get(0)?,
                hash: HexHash::from_stored(&r.get::<_, String>(1)?),
            })
        },
    )
    .optional()
    .map(|o| o.unwrap_or_else(Head::genesis))
}

/// The audit log's statements in one transaction, prepared once for all its rows (the indexer
/// writes thousands per transaction; looking a statement up per row costs a hash of its text).
pub(super) struct Rows<'t> {
    record: rusqlite::CachedStatement<'t>,
    outcome: rusqlite::CachedStatement<'t>,
    parent: rusqlite::CachedStatement<'t>,
    key: &'t Hmac<Sha256>,
}

impl<'t> Rows<'t> {
    pub(super) fn new(
        tx: &'t rusqlite::Transaction<'_>,
        key: &'t Hmac<Sha256>,
    ) -> rusqlite::Result<Rows<'t>> {
        Ok(Rows {
            // One row per record: the processing log is a view over these rows, so a dossier
            // read costs one insert, not two.
            record: tx.prepare_cached(
                "INSERT INTO audit_log (seq, time, kind, trace_id, actor, actor_type, bsn, record,
                     prev_hash, hash, data_subject_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?,
            outcome: tx.prepare_cached(
                "INSERT OR REPLACE INTO audit_outcome (seq, outcome, hash) VALUES (?1, ?2, ?3)",
            )?,
            parent: tx.prepare_cached("SELECT hash FROM audit_log WHERE seq = ?1")?,
            key,
        })
    }

    /// Appends one record to the chain after `chain`; its sequence number.
    pub(super) fn append(&mut self, chain: &mut Head, r: &Entry) -> rusqlite::Result<i64> {
        let next = chain.next(&r.json);
        self.insert(next.seq, &chain.hash, &next.hash, r)?;
        *chain = next;
        Ok(chain.seq)
    }

    /// Writes record `seq`, already chained (`prev`, `hash`: by the journal's writer, or by
    /// [`Rows::append`]), into the index.
    pub(super) fn insert(
        &mut self,
        seq: i64,
        prev: &str,
        hash: &str,
        r: &Entry,
    ) -> rusqlite::Result<()> {
        self.record.execute(params![
            seq,
            r.time,
            r.kind,
            r.trace_id,
            r.actor,
            r.actor_type,
            r.bsn.as_ref().map(Bsn::as_str),
            r.json,
            prev,
            hash,
            r.bsn.as_ref().map(|b| pseudonym(self.key, b)),
        ])?;
        Ok(())
    }

    /// Writes the outcome (JSON) completing record `of`, bound to the record's hash.
    pub(super) fn complete(&mut self, of: i64, json: &str) -> rusqlite::Result<()> {
        // The record is durable before its outcome is sent; an outcome without one
        // (impossible) is dropped rather than failing the batch's other changes.
        let parent: Option<String> = self.parent.query_row([of], |r| r.get(0)).optional()?;
        match parent {
            Some(parent) => self.complete_of(of, &parent, json),
            None => Ok(()),
        }
    }

    /// [`Rows::complete`] for a record whose hash the caller has (it wrote the record itself).
    pub(super) fn complete_of(
        &mut self,
        of: i64,
        parent: &str,
        json: &str,
    ) -> rusqlite::Result<()> {
        self.outcome
            .execute(params![of, json, outcome_hash(parent, json)])?;
        Ok(())
    }
}

/// A subject's records, newest first, with their outcomes (`?1` the BSN, `?2` how many).
pub(super) const BY_SUBJECT: &str = "SELECT a.seq, a.record, o.outcome FROM audit_log a
     LEFT JOIN audit_outcome o ON o.seq = a.seq
     WHERE a.bsn = ?1 ORDER BY a.seq DESC LIMIT ?2";

impl AuditLog for SqliteStore {
    fn append(&self, record: AccessRecord) -> BoxFuture<'_, Result<i64, StoreError>> {
        // The record becomes its entry before the future is made, so the future holds the
        // entry only, not the record as well.
        let (done, wait) = oneshot::channel();
        Box::pin(self.write(Work::Record(Entry::new(record), done), wait))
    }

    fn append_outcome(&self, seq: i64, outcome: &Completion) {
        let job = Work::Outcome {
            of: seq,
            json: serde_json::to_string(outcome).unwrap_or_default(),
        };
        if let Err(mpsc::error::TrySendError::Full(job)) = self.tx.try_send(job) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(job).await;
            });
        }
    }

    fn by_subject(
        &self,
        bsn: Bsn,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(i64, AccessRecord)>, StoreError>> {
        Box::pin(self.read_audit(move |c| {
            let mut st = c.prepare(BY_SUBJECT)?;
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
                if let Some(rec) = completed(&json, outcome.as_deref()) {
                    out.push((seq, rec));
                }
            }
            Ok(out)
        }))
    }

    fn has_trace(&self, trace_id: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.read_audit(move |c| {
            c.query_row(
                "SELECT 1 FROM audit_log WHERE trace_id = ?1 LIMIT 1",
                [trace_id],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
        }))
    }

    fn counts(&self) -> BoxFuture<'_, Result<(i64, i64), StoreError>> {
        Box::pin(self.read_audit(|c| {
            let a = c.query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get::<_, i64>(0))?;
            let p = c.query_row("SELECT COUNT(*) FROM processing_log", [], |r| r.get(0))?;
            Ok((a, p))
        }))
    }
}

// ----------------------------------------------------------------------------------------------
// Verification and reports (read-only, from the CLI)
// ----------------------------------------------------------------------------------------------

/// Walks the whole chain of the file at `path`: every record in sequence order, then every
/// outcome, then the records in the journal past the index (acknowledged by a running gateway,
/// not yet indexed). Opens everything read-only; safe next to a running gateway.
pub(crate) fn verify(path: &Path) -> Result<Verdict, StoreError> {
    // The journal is listed (its segments opened) before the index is read: a segment the
    // live indexer removes in between is in the index read next.
    let segments = journal::list(&journal::folder(path))?;
    let err = sqlite_error(path);
    let c = open_read_only(path)?;
    // One snapshot for both walks.
    c.execute_batch("BEGIN").map_err(&err)?;
    let mut check = Check::new();
    let walked = walk(
        &c,
        "SELECT seq, record, prev_hash, hash FROM audit_log ORDER BY seq",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        |(seq, record, prev, hash): (i64, String, String, String)| {
            check.record(seq, &record, &prev, &hash)
        },
    )
    .and_then(|()| {
        // Outcomes completing a record (reads whose record was written during the fan-out).
        walk(
            &c,
            "SELECT o.seq, o.outcome, o.hash, a.hash FROM audit_outcome o
             LEFT JOIN audit_log a ON a.seq = o.seq ORDER BY o.seq",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            |(seq, outcome, hash, parent): (i64, String, String, Option<String>)| {
                check.outcome(seq, &outcome, &hash, parent.as_deref())
            },
        )
    });
    let _ = c.execute_batch("COMMIT");
    match walked {
        Ok(()) => {}
        Err(Walk::Broken(verdict)) => return Ok(verdict),
        Err(Walk::Failed(e)) => return Err(err(e)),
    }
    // A torn tail at the end of the last segment is a batch being written as this reads.
    let frames = match journal::scan(&segments) {
        Ok((frames, _)) => frames,
        Err(JournalError::Corrupt {
            segment,
            offset,
            reason,
        }) => {
            return Ok(Verdict::JournalDamaged {
                segment: segment.display().to_string(),
                offset,
                reason,
            });
        }
        Err(e) => return Err(e.into()),
    };
    for f in &frames {
        if let Frame::Record {
            seq,
            prev,
            hash,
            json,
        } = f
            && *seq > check.last()
            && let ControlFlow::Break(verdict) = check.record(*seq, json, prev, hash)
        {
            return Ok(verdict);
        }
    }
    Ok(check.intact())
}

/// Why a walk stopped before its last row.
enum Walk {
    Broken(Verdict),
    Failed(rusqlite::Error),
}

/// Hands each row of `sql`, read by `row`, to `check`, until one breaks the chain.
fn walk<T>(
    c: &Connection,
    sql: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    mut check: impl FnMut(T) -> ControlFlow<Verdict>,
) -> Result<(), Walk> {
    let mut st = c.prepare(sql).map_err(Walk::Failed)?;
    for r in st.query_map([], row).map_err(Walk::Failed)? {
        if let ControlFlow::Break(verdict) = check(r.map_err(Walk::Failed)?) {
            return Err(Walk::Broken(verdict));
        }
    }
    Ok(())
}

/// The security officer's report over `[from, to)` from the file at `path`, with the `top`
/// most-viewed subjects and most active users. Opens the file read-only.
pub(crate) fn report(
    path: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    top: usize,
) -> Result<Report, StoreError> {
    let segments = journal::list(&journal::folder(path))?;
    let err = sqlite_error(path);
    let c = open_read_only(path)?;
    c.execute_batch("BEGIN").map_err(&err)?;
    let mut st = c
        .prepare("SELECT seq, record FROM audit_log WHERE kind = 'dossier.read' AND time >= ?1 AND time < ?2 ORDER BY seq")
        .map_err(&err)?;
    let rows = st
        .query_map(params![from.to_rfc3339(), to.to_rfc3339()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(&err)?;
    let mut tally = Tally::new(from, to);
    let mut last = 0;
    for row in rows {
        let (seq, json) = row.map_err(&err)?;
        last = seq;
        if let Ok(rec) = serde_json::from_str::<AccessRecord>(&json) {
            tally.add(rec);
        }
    }
    drop(st);
    let last = c
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_log", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(&err)?
        .max(last);
    let _ = c.execute_batch("COMMIT");
    // The records a running gateway acknowledged and has not indexed yet.
    for f in journal::scan(&segments)?.0 {
        if let Frame::Record { seq, json, .. } = f
            && seq > last
            && let Ok(rec) = serde_json::from_str::<AccessRecord>(&json)
            && rec.kind == "dossier.read"
            && rec.time >= from
            && rec.time < to
        {
            tally.add(rec);
        }
    }
    Ok(tally.finish(top))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::store::testing::{filled, open_temp, rec};

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
        let (_dir, path, store) = open_temp();
        let mut intent = rec(1, "999993653", 10);
        intent.outcome = "requested".into();
        let seq = store.append(intent).await.unwrap();
        let end = Utc
            .with_ymd_and_hms(2026, 11, 2, 10, 6, 0)
            .single()
            .unwrap();
        store.append_outcome(
            seq,
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
        let (_dir, path, store) = open_temp();
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
}

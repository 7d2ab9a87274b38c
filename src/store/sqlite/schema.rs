//! The SQLite schema: the tables, the `processing_log` view over the audit log, and the
//! migrations that bring a file written by an older version to it. Run once, by `open`, on the
//! writer's connection before the writer threads start.

use rusqlite::{Connection, OptionalExtension};

/// Creates what is missing and brings an older file up to date; opening a current file again
/// changes nothing.
pub(super) fn create(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(SCHEMA)?;
    migrate(c)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    seq            INTEGER PRIMARY KEY,
    time           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    trace_id       TEXT NOT NULL,
    actor          TEXT NOT NULL,
    actor_type     TEXT NOT NULL,
    bsn            TEXT,
    record         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL,
    data_subject_id TEXT
);
DROP INDEX IF EXISTS audit_log_bsn;
CREATE INDEX IF NOT EXISTS audit_log_subject ON audit_log (bsn);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (time);
DROP INDEX IF EXISTS audit_log_trace;
CREATE TABLE IF NOT EXISTS audit_outcome (
    seq            INTEGER PRIMARY KEY,
    outcome        TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applications (
    id              TEXT PRIMARY KEY,
    service         TEXT NOT NULL,
    organisation    TEXT NOT NULL,
    bsn             TEXT NOT NULL,
    actor           TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    data            TEXT NOT NULL,
    status          TEXT NOT NULL,
    reference       TEXT,
    reason          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    submit_seq      INTEGER,
    UNIQUE (actor, idempotency_key)
);
CREATE INDEX IF NOT EXISTS applications_due ON applications (status, next_attempt_at);
DROP INDEX IF EXISTS applications_bsn;
CREATE INDEX IF NOT EXISTS applications_subject ON applications (bsn, created_at);
CREATE INDEX IF NOT EXISTS applications_subject_open ON applications (bsn, created_at)
    WHERE status = 'received';
CREATE TABLE IF NOT EXISTS registrations (
    id            TEXT PRIMARY KEY,
    organisation  TEXT NOT NULL,
    descriptor    TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    updated_by    TEXT NOT NULL
);
";

/// The processing log (Logboek Dataverwerkingen) as a view over the access log: one row per
/// record about a data subject. Its fields come from the chained record (so they are as
/// tamper-evident as the record) plus the pseudonymised subject written beside it; it has no
/// column naming the employee. One row per read instead of two halves the store's write work.
const PROCESSING_VIEW: &str = "
SELECT a.seq AS seq, a.trace_id AS trace_id,
    json_extract(a.record, '$.span_id') AS span_id,
    json_extract(a.record, '$.foreign_span_id') AS parent_span_id,
    'ketenportaal.' || a.kind AS name,
    json_extract(a.record, '$.started_at') AS start_time,
    COALESCE(json_extract(o.outcome, '$.time'), json_extract(a.record, '$.time')) AS end_time,
    CASE WHEN COALESCE(json_extract(o.outcome, '$.outcome'), json_extract(a.record, '$.outcome'))
                  GLOB 'failed*'
           OR COALESCE(json_extract(o.outcome, '$.outcome'), json_extract(a.record, '$.outcome'))
                  GLOB 'refused*' THEN 'ERROR' ELSE 'OK' END
        AS status_code,
    CASE WHEN json_extract(a.record, '$.foreign_span_id') IS NULL THEN NULL
         ELSE json_object('trace_id', a.trace_id, 'span_id', json_extract(a.record, '$.foreign_span_id'))
    END AS foreign_operation,
    json_extract(a.record, '$.processing_activity') AS processing_activity_id,
    a.data_subject_id AS data_subject_id,
    'BSN' AS data_subject_id_type
FROM audit_log a LEFT JOIN audit_outcome o ON o.seq = a.seq
WHERE a.data_subject_id IS NOT NULL";

/// Whether `table` has `column` (the schema of an older store may lack it).
fn has_column(c: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Brings a store written by an older version to the current schema: the pseudonym column on
/// `audit_log`, the old `processing_log` table kept as `processing_log_v1` (its rows stay
/// visible through the view), the `processing_log` view, and each application's link to its
/// submit record (`submit_seq`, found once in the log for the applications already there).
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    if !has_column(c, "applications", "submit_seq")? {
        // One transaction: a store left with the column but not its values would have its
        // older applications' records written a second time.
        c.execute_batch(
            "BEGIN IMMEDIATE;
             ALTER TABLE applications ADD COLUMN submit_seq INTEGER;
             UPDATE applications SET submit_seq = (
                 SELECT MIN(a.seq) FROM audit_log a
                 WHERE a.bsn = applications.bsn AND a.kind = 'application.submit'
                   AND json_extract(a.record, '$.details.application') = applications.id);
             COMMIT;",
        )?;
    }
    if !has_column(c, "audit_log", "data_subject_id")? {
        c.execute_batch("ALTER TABLE audit_log ADD COLUMN data_subject_id TEXT;")?;
    }
    let kind: Option<String> = c
        .query_row(
            "SELECT type FROM sqlite_master WHERE name = 'processing_log'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if kind.as_deref() == Some("table") {
        c.execute_batch(
            "ALTER TABLE processing_log RENAME TO processing_log_v1;
             DROP INDEX IF EXISTS processing_log_trace;",
        )?;
    }
    let v1: bool = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'processing_log_v1'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    let old_rows = if v1 {
        " UNION ALL SELECT seq, trace_id, span_id, parent_span_id, name, start_time, end_time,
             status_code, foreign_operation, processing_activity_id, data_subject_id,
             data_subject_id_type FROM processing_log_v1"
    } else {
        ""
    };
    c.execute_batch(&format!(
        "DROP VIEW IF EXISTS processing_log; CREATE VIEW processing_log AS {PROCESSING_VIEW}{old_rows};"
    ))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use crate::store::AuditStore;
    use crate::store::testing::{application, open_temp, rec, rows, submit_record};

    /// A store file as an older version left it, made by `sql`; the connection stays open.
    fn older_store(sql: &str) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(sql).unwrap();
        (dir, path, c)
    }

    #[tokio::test]
    async fn a_new_store_is_written_in_pages_of_its_own_size() {
        let (_dir, path, store) = open_temp();
        store.append(rec(1, "999993653", 10)).await.unwrap();
        drop(store);
        let c = Connection::open(&path).unwrap();
        let size: u32 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        assert_eq!(size, super::super::PAGE_SIZE);
        assert_ne!(size, 4096, "not SQLite's default");
    }

    /// `store repage`: an older file in 4 KiB pages is rewritten in the current size, offline
    /// only, and keeps its records, their chain and its WAL mode; the store goes on from it.
    #[tokio::test]
    async fn an_older_file_is_rewritten_in_the_current_page_size_offline_and_keeps_its_chain() {
        use super::super::{PAGE_SIZE, repage};
        use crate::store::{StoreError, StoreLocation, Verdict};
        let (_dir, path, c) = older_store("PRAGMA page_size=4096; PRAGMA journal_mode=WAL;");
        drop(c);
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        for i in 0..300 {
            store.append(rec(i, "999993653", 10)).await.unwrap();
        }
        // Not while a gateway has it open.
        assert!(matches!(repage(&path), Err(StoreError::InUse(_))));
        drop(store);
        use rusqlite::types::Value;
        let pragma = |name: &str| {
            let c = Connection::open(&path).unwrap();
            c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, Value>(0))
                .unwrap()
        };
        assert_eq!(pragma("page_size"), Value::Integer(4096));

        let done = repage(&path).unwrap();
        assert_eq!((done.from, done.to), (4096, PAGE_SIZE));
        assert!(done.bytes_before > 0 && done.bytes_after > 0, "{done:?}");
        assert_eq!(pragma("page_size"), Value::Integer(PAGE_SIZE.into()));
        assert_eq!(pragma("journal_mode"), Value::Text("wal".into()));
        let verdict = crate::store::verify(&StoreLocation::Sqlite(path.clone()))
            .await
            .unwrap();
        assert!(
            matches!(verdict, Verdict::Intact { records: 300, .. }),
            "{verdict}"
        );
        // The chain goes on from where it was.
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        assert_eq!(store.append(rec(300, "999993653", 10)).await.unwrap(), 301);
        drop(store);
        let verdict = crate::store::verify(&StoreLocation::Sqlite(path.clone()))
            .await
            .unwrap();
        assert!(
            matches!(verdict, Verdict::Intact { records: 301, .. }),
            "{verdict}"
        );
        // A file in the current size is left as it is.
        let again = repage(&path).unwrap();
        assert_eq!((again.from, again.to), (PAGE_SIZE, PAGE_SIZE));
        // A missing file is not made.
        let missing = path.with_file_name("elders.sqlite");
        assert!(repage(&missing).is_err());
        assert!(!missing.exists());
        assert!(!super::super::journal::folder(&missing).exists());
    }

    #[tokio::test]
    async fn a_store_from_before_the_one_row_schema_keeps_its_processing_records() {
        let (_dir, path, c) = older_store(
            "CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL,
                 trace_id TEXT NOT NULL, actor TEXT NOT NULL, actor_type TEXT NOT NULL, bsn TEXT,
                 record TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
             CREATE INDEX audit_log_trace ON audit_log (trace_id);
             CREATE TABLE processing_log (seq INTEGER PRIMARY KEY, trace_id TEXT NOT NULL,
                 span_id TEXT NOT NULL, parent_span_id TEXT, name TEXT NOT NULL,
                 start_time TEXT NOT NULL, end_time TEXT NOT NULL, status_code TEXT NOT NULL,
                 foreign_operation TEXT, processing_activity_id TEXT, data_subject_id TEXT,
                 data_subject_id_type TEXT);
             INSERT INTO processing_log VALUES (1, 'old', 'span', NULL, 'ketenportaal.dossier.read',
                 't0', 't1', 'OK', NULL, NULL, 'pseudonym', 'BSN');",
        );
        drop(c);
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        store.append(rec(1, "999993653", 10)).await.unwrap();
        store.settle().await.unwrap();
        let c = Connection::open(&path).unwrap();
        let traces: Vec<String> = rows(
            &c,
            "SELECT trace_id FROM processing_log ORDER BY trace_id",
            [],
            |r| r.get(0),
        );
        assert_eq!(traces, vec![format!("{:032x}", 1), "old".to_string()]);
        // Opening it again changes nothing.
        drop(store);
        AuditStore::open(&path, b"key".to_vec()).unwrap();
    }

    #[tokio::test]
    async fn a_subjects_records_are_read_newest_first_from_the_index_without_a_sort() {
        // A store from before: its subject index also held the time, so the newest records
        // of a subject came out of a sort of all of them.
        let (_dir, path, c) = older_store(
            "CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL,
                 trace_id TEXT NOT NULL, actor TEXT NOT NULL, actor_type TEXT NOT NULL, bsn TEXT,
                 record TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
                 data_subject_id TEXT);
             CREATE INDEX audit_log_bsn ON audit_log (bsn, time);",
        );
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        // Its page size is its own (it cannot change once the file has tables).
        let page_size = |c: &Connection| {
            c.query_row("PRAGMA page_size", [], |r| r.get::<_, u32>(0))
                .unwrap()
        };
        assert_eq!(page_size(&c), 4096);
        for (i, bsn) in ["999993653", "111222333", "999993653"].iter().enumerate() {
            store.append(rec(i as u32, bsn, 10)).await.unwrap();
        }
        let plan: Vec<String> = rows(
            &c,
            &format!("EXPLAIN QUERY PLAN {}", super::super::audit::BY_SUBJECT),
            rusqlite::params!["999993653", 10],
            |r| r.get(3),
        );
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX audit_log_subject")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
        let indexes: Vec<String> = rows(
            &c,
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_log'
             ORDER BY name",
            [],
            |r| r.get(0),
        );
        assert_eq!(indexes, ["audit_log_subject", "audit_log_time"]);
        let seqs: Vec<i64> = store
            .by_subject(crate::bsn::Bsn::parse("999993653").unwrap(), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(seqs, [3, 1]);
    }

    #[tokio::test]
    async fn a_store_from_before_submit_seq_links_its_applications_to_their_records() {
        let (_dir, path, store) = open_temp();
        for n in 1..=2 {
            store
                .insert_application(application(n, "delivered"), submit_record())
                .await
                .unwrap();
        }
        drop(store);
        // As an older version left it: no link, and the second application without a record
        // (it died in between).
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "ALTER TABLE applications DROP COLUMN submit_seq;
             DELETE FROM audit_log WHERE seq = 2;",
        )
        .unwrap();
        let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
        let links: Vec<(String, Option<i64>)> = rows(
            &c,
            "SELECT id, submit_seq FROM applications ORDER BY id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        );
        assert_eq!(
            links,
            [
                ("app-0001".to_string(), Some(1)),
                ("app-0002".to_string(), None)
            ]
        );
        // Sent again: the first keeps its record; the second gets its record now.
        for n in 1..=2 {
            let (_, new) = store
                .insert_application(application(n, "received"), submit_record())
                .await
                .unwrap();
            assert!(!new);
        }
        let resent: Vec<(i64, String)> = rows(
            &c,
            "SELECT seq, json_extract(record, '$.details') FROM audit_log
             WHERE kind = 'application.submit' ORDER BY seq",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        );
        assert_eq!(
            resent,
            [
                (
                    1,
                    r#"{"application":"app-0001","service":"bijstand-aanvragen"}"#.to_string()
                ),
                (
                    2,
                    r#"{"application":"app-0002","resent":true,"service":"bijstand-aanvragen"}"#
                        .to_string()
                )
            ]
        );
    }
}

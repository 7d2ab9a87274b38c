//! What the store's unit tests share: records, applications, and stores in a folder of their
//! own.

use std::path::PathBuf;

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use rusqlite::Connection;

use super::AuditStore;
use super::applications::Application;
use super::record::AccessRecord;
use crate::bsn::Bsn;

/// A fresh store in a temporary folder (kept while the folder is).
pub(super) fn open_temp() -> (tempfile::TempDir, PathBuf, AuditStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let store = AuditStore::open(&path, b"key".to_vec()).unwrap();
    (dir, path, store)
}

/// The `i`th employee's read of `bsn`'s dossier, at `hour` UTC on Monday 2026-11-02.
pub(super) fn rec(i: u32, bsn: &str, hour: u32) -> AccessRecord {
    let t = Utc
        .with_ymd_and_hms(2026, 11, 2, hour, 5, i % 60)
        .single()
        .unwrap();
    AccessRecord {
        kind: "dossier.read".into(),
        started_at: t,
        time: t,
        trace_id: format!("{i:032x}"),
        span_id: format!("{i:016x}"),
        foreign_span_id: None,
        actor_type: "employee".into(),
        actor: format!("user{}", i % 3),
        actor_organisation: Some("uwv".into()),
        actor_roles: vec!["uwv-werkcoach".into()],
        bsn: Some(Bsn::parse(bsn).unwrap()),
        view: Some("werkcoach".into()),
        purpose: Some("re-integratie".into()),
        processing_activity: Some("https://register.example/x".into()),
        sections: vec!["persoon".into()],
        sources: vec![],
        outcome: "served".into(),
        details: None,
    }
}

/// A store holding `n` records, all written at once (so in groups).
pub(super) async fn filled(n: u32) -> (tempfile::TempDir, PathBuf) {
    let (dir, path, store) = open_temp();
    let writes = (0..n).map(|i| store.append(rec(i, "999993653", 10)));
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    store.settle().await.unwrap();
    (dir, path)
}

/// Application `n`, created `n` hours into 2026.
pub(super) fn application(n: u32, status: &str) -> Application {
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap()
        + ChronoDuration::hours(i64::from(n));
    Application {
        id: format!("app-{n:04}"),
        service: "bijstand-aanvragen".into(),
        organisation: "gemeente-utrecht".into(),
        bsn: "999993653".into(),
        actor: "digid:999993653".into(),
        idempotency_key: format!("key-{n}"),
        data: serde_json::json!({}),
        status: status.into(),
        reference: None,
        reason: None,
        attempts: 0,
        next_attempt_at: t.to_rfc3339(),
        created_at: t.to_rfc3339(),
        updated_at: t.to_rfc3339(),
    }
}

/// An `application.submit` record, before the store fills in its subject and details.
pub(super) fn submit_record() -> AccessRecord {
    let mut r = rec(0, "999993653", 10);
    r.kind = "application.submit".into();
    r.outcome = "accepted".into();
    r
}

/// Every row `sql` gives with `params`, each read by `f`.
pub(super) fn rows<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    c.prepare(sql)
        .unwrap()
        .query_map(params, f)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

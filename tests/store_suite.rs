//! One store test suite, run against both backends: each behaviour is a generic async fn over
//! a [`Fixture`] (an `AuditStore` and a way to reach its rows with raw SQL), run twice by
//! [`both!`]: `<behaviour>::sqlite` on a file in a temporary folder, `<behaviour>::postgres` on a
//! fresh database of the binary's PostgreSQL (`support/postgres.rs`: a real server, skipped when
//! none is installed unless `KETENPORTAAL_SERVICE_TESTS=required`).
//!
//! Then what only PostgreSQL does: several instances on one database (one chain, migrations
//! once, leases, signals), and PostgreSQL going away and coming back under a running store.

#[path = "support/postgres.rs"]
mod postgres;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use ketenportaal::bsn::Bsn;
use ketenportaal::config::compile::Registration;
use ketenportaal::store::{
    AccessRecord, Application, AuditStore, Completion, Instance, Signal, StoreLocation,
    StoreOptions, Verdict,
};

const PERSON: &str = "999993653";
const OTHER: &str = "999990019";

// ----------------------------------------------------------------------------------------------
// Fixtures
// ----------------------------------------------------------------------------------------------

/// A store under test, with its location and what keeps its folder.
struct Fixture {
    store: AuditStore,
    location: StoreLocation,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let location = StoreLocation::Sqlite(path);
        let store = AuditStore::connect(&location, b"key".to_vec(), StoreOptions::default())
            .await
            .unwrap();
        Fixture {
            store,
            location,
            _dir: Some(dir),
        }
    }

    async fn postgres(name: &str) -> Option<Fixture> {
        let pg = postgres::shared()?;
        let url = pg.fresh_database(name).await;
        let store = open_pg(&url, "suite").await;
        Some(Fixture {
            store,
            location: StoreLocation::Postgres(url),
            _dir: None,
        })
    }

    async fn verify(&self) -> Verdict {
        ketenportaal::store::verify(&self.location).await.unwrap()
    }

    /// Runs `sql` on the store's rows behind its back (a tamperer's view).
    async fn tamper(&self, sql: &str) {
        // What is tampered with is the index (the embedded store fills it off the request path).
        self.store.settle().await.unwrap();
        match &self.location {
            StoreLocation::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.execute_batch(sql).unwrap();
            }
            StoreLocation::Postgres(url) => {
                postgres::client(url)
                    .await
                    .batch_execute(sql)
                    .await
                    .unwrap();
            }
        }
    }

    fn is_postgres(&self) -> bool {
        self.location.is_shared()
    }
}

/// Options for instance `instance` of a test cluster: short waits, a small pool.
fn options(instance: &str) -> StoreOptions {
    StoreOptions {
        pool_size: 4,
        lease: Duration::from_secs(30),
        timeout: Duration::from_secs(2),
        instance: instance.into(),
        ..StoreOptions::default()
    }
}

async fn open_pg(url: &str, instance: &str) -> AuditStore {
    open_pg_with(url, options(instance)).await
}

/// A fresh database on `pg` and instance "a"'s store on it, with `timeout`; and the URL.
async fn fresh_pg_store(
    pg: &postgres::Postgres,
    name: &str,
    timeout: Duration,
) -> (String, AuditStore) {
    let url = pg.fresh_database(name).await;
    let store = open_pg_with(
        &url,
        StoreOptions {
            timeout,
            ..options("a")
        },
    )
    .await;
    (url, store)
}

async fn open_pg_with(url: &str, options: StoreOptions) -> AuditStore {
    AuditStore::connect(
        &StoreLocation::Postgres(url.to_string()),
        b"key".to_vec(),
        options,
    )
    .await
    .unwrap()
}

/// Runs a behaviour against both backends: `$name::sqlite` and `$name::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Fixture::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(f) = super::Fixture::postgres(stringify!($name)).await {
                    super::$name(f).await;
                }
            }
        }
    )*};
}

both!(
    appends_are_numbered_and_verified,
    a_thousand_concurrent_appends_are_all_durable,
    outcomes_are_bound_to_their_records,
    by_subject_is_newest_first_with_outcomes,
    has_trace_finds_a_record,
    an_application_is_stored_once_per_actor_and_key,
    concurrent_inserts_with_one_key_store_one_application,
    zaken_are_the_open_ones_first_then_the_latest,
    due_applications_until_delivered,
    registrations_are_put_replaced_refused_and_deleted,
    verify_detects_tampering,
    the_report_counts_reads,
);

/// The `i`th employee's read of `bsn`'s dossier, at `hour` UTC on Monday 2026-11-02.
fn rec(i: u32, bsn: &str, hour: u32) -> AccessRecord {
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

/// Application `n`, created `n` hours into 2026.
fn application(n: u32, status: &str) -> Application {
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap()
        + ChronoDuration::hours(i64::from(n));
    Application {
        id: format!("app-{n:04}"),
        service: "bijstand-aanvragen".into(),
        organisation: "gemeente-utrecht".into(),
        bsn: PERSON.into(),
        actor: format!("digid:{PERSON}"),
        idempotency_key: format!("key-{n}"),
        data: serde_json::json!({"n": n}),
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
fn submit_record() -> AccessRecord {
    let mut r = rec(0, PERSON, 10);
    r.kind = "application.submit".into();
    r.outcome = "accepted".into();
    r
}

fn registration(id: &str, organisation: &str, descriptor: &str) -> Registration {
    Registration {
        id: id.into(),
        organisation: organisation.into(),
        descriptor: descriptor.into(),
        sha256: format!("sha-of-{descriptor}"),
        updated_at: "2026-11-02T10:00:00+00:00".into(),
        updated_by: format!("{organisation}-admin"),
    }
}

fn ids(list: &[Application]) -> Vec<String> {
    list.iter().map(|a| a.id.clone()).collect()
}

async fn fill(store: &AuditStore, n: u32) {
    let writes = (0..n).map(|i| store.append(rec(i, PERSON, 10)));
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
}

// ----------------------------------------------------------------------------------------------
// Behaviours of every backend
// ----------------------------------------------------------------------------------------------

async fn appends_are_numbered_and_verified(f: Fixture) {
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(f.store.append(rec(i, PERSON, 10)).await.unwrap());
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert!(
        matches!(f.verify().await, Verdict::Intact { records: 5, .. }),
        "{:?}",
        f.verify().await
    );
    assert_eq!(f.store.counts().await.unwrap(), (5, 5));
    assert!(f.store.writable().await);
}

async fn a_thousand_concurrent_appends_are_all_durable(f: Fixture) {
    let started = Instant::now();
    let writes = (0..1000).map(|i| f.store.append(rec(i, PERSON, 10)));
    let seqs: BTreeSet<i64> = futures::future::join_all(writes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let took = started.elapsed();
    eprintln!(
        "{}: 1000 concurrent appends in {took:?} ({:.0}/s), {:?}",
        f.store.location(),
        1000.0 / took.as_secs_f64(),
        f.store.stats()
    );
    assert_eq!(seqs, (1..=1000).collect());
    assert!(matches!(
        f.verify().await,
        Verdict::Intact { records: 1000, .. }
    ));
    assert_eq!(f.store.counts().await.unwrap(), (1000, 1000));
    // Group commit: far fewer transactions than records.
    assert!(f.store.stats().committed < 1000, "{:?}", f.store.stats());
}

async fn outcomes_are_bound_to_their_records(f: Fixture) {
    let mut intent = rec(1, PERSON, 10);
    intent.outcome = "requested".into();
    let seq = f.store.append(intent).await.unwrap();
    let end = Utc
        .with_ymd_and_hms(2026, 11, 2, 10, 6, 0)
        .single()
        .unwrap();
    f.store.append_outcome(
        seq,
        &Completion {
            time: end,
            outcome: "partial".into(),
            sources: vec![(Arc::from("uwv"), "timeout".into())],
        },
    );
    // The outcome is not waited for; a later record's commit comes after it.
    f.store.append(rec(2, OTHER, 10)).await.unwrap();
    let rows = f
        .store
        .by_subject(Bsn::parse(PERSON).unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.outcome, "partial");
    assert_eq!(rows[0].1.time, end);
    assert!(matches!(
        f.verify().await,
        Verdict::Intact { records: 2, .. }
    ));
    f.tamper("UPDATE audit_outcome SET outcome = replace(outcome, 'partial', 'served')")
        .await;
    assert_eq!(f.verify().await, Verdict::Modified { seq });
}

async fn by_subject_is_newest_first_with_outcomes(f: Fixture) {
    for i in 0..6 {
        let bsn = if i % 2 == 0 { PERSON } else { OTHER };
        f.store.append(rec(i, bsn, 10)).await.unwrap();
    }
    let person = Bsn::parse(PERSON).unwrap();
    let rows = f.store.by_subject(person, 10).await.unwrap();
    let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [5, 3, 1]);
    assert!(rows.iter().all(|(_, r)| r.bsn == Some(person)));
    let rows = f.store.by_subject(person, 2).await.unwrap();
    assert_eq!(rows.len(), 2);
    f.store.append_outcome(
        5,
        &Completion {
            time: rows[0].1.time,
            outcome: "failed: timeout".into(),
            sources: vec![],
        },
    );
    f.store.append(rec(9, OTHER, 10)).await.unwrap();
    let rows = f.store.by_subject(person, 1).await.unwrap();
    assert_eq!(rows[0].1.outcome, "failed: timeout");
}

async fn has_trace_finds_a_record(f: Fixture) {
    f.store.append(rec(7, PERSON, 10)).await.unwrap();
    assert!(f.store.has_trace(format!("{:032x}", 7)).await.unwrap());
    assert!(!f.store.has_trace(format!("{:032x}", 8)).await.unwrap());
}

async fn an_application_is_stored_once_per_actor_and_key(f: Fixture) {
    let (stored, new) = f
        .store
        .insert_application(application(1, "received"), submit_record())
        .await
        .unwrap();
    assert!(new);
    assert_eq!(stored.id, "app-0001");
    assert_eq!(stored.data, serde_json::json!({"n": 1}));
    assert!(chrono::DateTime::parse_from_rfc3339(&stored.created_at).is_ok());
    // The same key again: the first one, and no second record.
    let mut again = application(2, "received");
    again.idempotency_key = stored.idempotency_key.clone();
    let (found, new) = f
        .store
        .insert_application(again, submit_record())
        .await
        .unwrap();
    assert!(!new);
    assert_eq!(found, stored);
    assert_eq!(f.store.counts().await.unwrap().0, 1);
    // Another key is another application.
    let (other, new) = f
        .store
        .insert_application(application(3, "received"), submit_record())
        .await
        .unwrap();
    assert!(new);
    assert_ne!(other.id, stored.id);
    assert_eq!(
        f.store.application("app-0001".into()).await.unwrap(),
        Some(stored)
    );
    assert_eq!(f.store.application("nope".into()).await.unwrap(), None);
    // Each submit record names its application.
    let rows = f
        .store
        .by_subject(Bsn::parse(PERSON).unwrap(), 10)
        .await
        .unwrap();
    let details: Vec<String> = rows
        .iter()
        .map(|(_, r)| r.details.as_ref().unwrap()["application"].to_string())
        .collect();
    assert_eq!(details, ["\"app-0003\"", "\"app-0001\""]);
    assert!(matches!(
        f.verify().await,
        Verdict::Intact { records: 2, .. }
    ));
}

async fn concurrent_inserts_with_one_key_store_one_application(f: Fixture) {
    let tries = (0..10).map(|n| {
        let mut a = application(n, "received");
        a.idempotency_key = "the-one-key".into();
        f.store.insert_application(a, submit_record())
    });
    let results: Vec<(Application, bool)> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results.iter().filter(|(_, new)| *new).count(), 1);
    let stored: BTreeSet<String> = results.iter().map(|(a, _)| a.id.clone()).collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(f.store.counts().await.unwrap().0, 1);
}

async fn zaken_are_the_open_ones_first_then_the_latest(f: Fixture) {
    // 30 applications; 3, 10 and 25 still open.
    for n in 0..30 {
        f.store
            .insert_application(application(n, "received"), submit_record())
            .await
            .unwrap();
        if ![3, 10, 25].contains(&n) {
            f.store
                .update_application(application(n, "delivered"))
                .await
                .unwrap();
        }
    }
    let bsn = Bsn::parse(PERSON).unwrap();
    let listed = f.store.applications_of(bsn, 5).await.unwrap();
    assert_eq!(
        ids(&listed),
        ["app-0025", "app-0010", "app-0003", "app-0029", "app-0028"]
    );
    // Fewer than the open ones: the newest open ones.
    let listed = f.store.applications_of(bsn, 2).await.unwrap();
    assert_eq!(ids(&listed), ["app-0025", "app-0010"]);
    // More than there are: all of them, none twice.
    let listed = f.store.applications_of(bsn, 100).await.unwrap();
    assert_eq!(listed.len(), 30);
    // A delivery drops the remembered list.
    let listed = f.store.applications_of(bsn, 5).await.unwrap();
    assert_eq!(listed[0].id, "app-0025");
    f.store
        .update_application(application(25, "delivered"))
        .await
        .unwrap();
    let listed = f.store.applications_of(bsn, 5).await.unwrap();
    assert_eq!(
        ids(&listed),
        ["app-0010", "app-0003", "app-0029", "app-0028", "app-0027"]
    );
}

async fn due_applications_until_delivered(f: Fixture) {
    let mut later = application(1, "received");
    later.next_attempt_at = (Utc::now() + ChronoDuration::days(1)).to_rfc3339();
    f.store
        .insert_application(later, submit_record())
        .await
        .unwrap();
    f.store
        .insert_application(application(2, "received"), submit_record())
        .await
        .unwrap();
    f.store
        .insert_application(application(3, "received"), submit_record())
        .await
        .unwrap();
    let due = f.store.due_applications(10).await.unwrap();
    assert_eq!(ids(&due), ["app-0002", "app-0003"]);
    // Delivered: no longer due.
    let mut done = due[0].clone();
    done.status = "delivered".into();
    done.reference = Some("Z-1".into());
    done.attempts = 1;
    f.store.update_application(done).await.unwrap();
    // Failed for now: due again later.
    let mut retry = due[1].clone();
    retry.attempts = 1;
    retry.reason = Some("503".into());
    retry.next_attempt_at = (Utc::now() + ChronoDuration::hours(1)).to_rfc3339();
    f.store.update_application(retry).await.unwrap();
    assert!(f.store.due_applications(10).await.unwrap().is_empty());
    let stored = f
        .store
        .application("app-0002".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, "delivered");
    assert_eq!(stored.reference.as_deref(), Some("Z-1"));
    assert_eq!(stored.attempts, 1);
    let stored = f
        .store
        .application("app-0003".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.status.as_str(), stored.attempts), ("received", 1));
    assert_eq!(stored.reason.as_deref(), Some("503"));
}

async fn registrations_are_put_replaced_refused_and_deleted(f: Fixture) {
    let s = &f.store;
    assert!(s.registrations().await.unwrap().is_empty());
    assert!(
        s.put_registration(registration("b-svc", "org-a", "one"))
            .await
            .unwrap()
    );
    assert!(
        s.put_registration(registration("a-svc", "org-a", "two"))
            .await
            .unwrap()
    );
    // Replaced by its own organisation.
    assert!(
        s.put_registration(registration("b-svc", "org-a", "three"))
            .await
            .unwrap()
    );
    // Another organisation's id: refused, nothing written.
    assert!(
        !s.put_registration(registration("b-svc", "org-b", "evil"))
            .await
            .unwrap()
    );
    let regs = s.registrations().await.unwrap();
    assert_eq!(
        regs,
        [
            registration("a-svc", "org-a", "two"),
            registration("b-svc", "org-a", "three")
        ]
    );
    // Deleted only by its organisation.
    assert!(
        !s.delete_registration("b-svc".into(), "org-b".into())
            .await
            .unwrap()
    );
    assert!(
        s.delete_registration("b-svc".into(), "org-a".into())
            .await
            .unwrap()
    );
    assert!(
        !s.delete_registration("b-svc".into(), "org-a".into())
            .await
            .unwrap()
    );
    assert_eq!(s.registrations().await.unwrap().len(), 1);
}

async fn verify_detects_tampering(f: Fixture) {
    fill(&f.store, 10).await;
    assert!(matches!(
        f.verify().await,
        Verdict::Intact { records: 10, .. }
    ));
    // A record's JSON changed.
    f.tamper(
        "UPDATE audit_log SET record = replace(record, 're-integratie', 'fraude') WHERE seq = 4",
    )
    .await;
    assert_eq!(f.verify().await, Verdict::Modified { seq: 4 });
    f.tamper(
        "UPDATE audit_log SET record = replace(record, 'fraude', 're-integratie') WHERE seq = 4",
    )
    .await;
    assert!(matches!(
        f.verify().await,
        Verdict::Intact { records: 10, .. }
    ));
    // The tail removed: PostgreSQL's head row says how far the chain went; the embedded
    // store's journal still holds the record (a segment goes once a later one is indexed), so
    // verify walks on through it, and the next open puts it back in the index.
    f.tamper("DELETE FROM audit_log WHERE seq = 10").await;
    if f.is_postgres() {
        assert_eq!(f.verify().await, Verdict::Missing { after: 9, next: 11 });
    } else {
        assert!(matches!(
            f.verify().await,
            Verdict::Intact { records: 10, .. }
        ));
    }
    // A middle row removed.
    f.tamper("DELETE FROM audit_log WHERE seq = 6").await;
    assert_eq!(f.verify().await, Verdict::Missing { after: 5, next: 7 });
}

async fn the_report_counts_reads(f: Fixture) {
    // 2026-11-02 is a Monday; CET = UTC+1. 19:05 UTC = 20:05 local.
    for (i, h) in [(1, 9), (2, 19), (3, 4), (4, 12)] {
        f.store.append(rec(i, PERSON, h)).await.unwrap();
    }
    f.store.append(rec(5, OTHER, 10)).await.unwrap();
    let mut outside = rec(6, OTHER, 10);
    outside.time = Utc
        .with_ymd_and_hms(2026, 12, 2, 10, 0, 0)
        .single()
        .unwrap();
    f.store.append(outside).await.unwrap();
    let from = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().unwrap();
    let to = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).single().unwrap();
    let r = ketenportaal::store::report(&f.location, from, to, 10)
        .await
        .unwrap();
    assert_eq!(r.dossier_reads, 5);
    assert_eq!(r.outside_office_hours, 2, "{r:?}");
    assert_eq!(r.at_weekends, 0);
    assert_eq!(r.most_viewed[0], ("*****3653".to_string(), 4));
    assert_eq!(r.per_purpose["re-integratie"], 5);
    assert_eq!(r.users_per_role["uwv-werkcoach"], 3);
}

// ----------------------------------------------------------------------------------------------
// PostgreSQL: a cluster on one database
// ----------------------------------------------------------------------------------------------

/// A fresh database on the binary's server, or `None` (the test is skipped).
async fn cluster_db(name: &str) -> Option<String> {
    Some(postgres::shared()?.fresh_database(name).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_instances_write_one_chain() {
    let Some(url) = cluster_db("two_instances").await else {
        return;
    };
    let (a, b) = tokio::join!(open_pg(&url, "a"), open_pg(&url, "b"));
    let writes = (0..1000).map(|i| {
        let store = if i % 2 == 0 { &a } else { &b };
        store.append(rec(i, PERSON, 10))
    });
    let started = Instant::now();
    let seqs: BTreeSet<i64> = futures::future::join_all(writes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    eprintln!(
        "two instances: 1000 concurrent appends in {:?}; a {:?}, b {:?}",
        started.elapsed(),
        a.stats(),
        b.stats()
    );
    assert_eq!(seqs, (1..=1000).collect());
    let location = StoreLocation::Postgres(url.clone());
    assert!(matches!(
        ketenportaal::store::verify(&location).await.unwrap(),
        Verdict::Intact { records: 1000, .. }
    ));
    let c = postgres::client(&url).await;
    let writers: Vec<(String, i64)> = c
        .query(
            "SELECT instance, count(*) FROM audit_log GROUP BY instance ORDER BY instance",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(writers, [("a".to_string(), 500), ("b".to_string(), 500)]);
    // Both see all of them.
    assert_eq!(a.counts().await.unwrap(), (1000, 1000));
    assert_eq!(
        b.by_subject(Bsn::parse(PERSON).unwrap(), 5000)
            .await
            .unwrap()
            .len(),
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_instances_starting_together_migrate_once() {
    let Some(url) = cluster_db("migrate_once").await else {
        return;
    };
    let names = ["a", "b", "c", "d", "e"];
    let stores = futures::future::join_all(names.iter().map(|n| open_pg(&url, n))).await;
    let c = postgres::client(&url).await;
    let versions: Vec<i32> = c
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1]);
    for (i, s) in stores.iter().enumerate() {
        s.append(rec(i as u32, PERSON, 10)).await.unwrap();
    }
    assert!(matches!(
        ketenportaal::store::verify(&StoreLocation::Postgres(url.clone()))
            .await
            .unwrap(),
        Verdict::Intact { records: 5, .. }
    ));
    // Opening it again changes nothing.
    drop(open_pg(&url, "f").await);
    let n: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_each_due_application_is_claimed_by_one_instance() {
    let Some(url) = cluster_db("claims").await else {
        return;
    };
    let (a, b) = tokio::join!(open_pg(&url, "a"), open_pg(&url, "b"));
    for n in 0..40 {
        a.insert_application(application(n, "received"), submit_record())
            .await
            .unwrap();
    }
    let mut claimed: Vec<String> = Vec::new();
    for _ in 0..5 {
        let (x, y) = tokio::join!(a.due_applications(5), b.due_applications(5));
        claimed.extend(ids(&x.unwrap()));
        claimed.extend(ids(&y.unwrap()));
    }
    let distinct: BTreeSet<&String> = claimed.iter().collect();
    assert_eq!(claimed.len(), 40, "{claimed:?}");
    assert_eq!(distinct.len(), 40);
    // All held: nothing is due for anyone.
    assert!(a.due_applications(100).await.unwrap().is_empty());
    assert!(b.due_applications(100).await.unwrap().is_empty());
    let c = postgres::client(&url).await;
    let holders: Vec<(String, i64)> = c
        .query(
            "SELECT leased_by, count(*) FROM applications GROUP BY leased_by ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(holders.iter().map(|(_, n)| n).sum::<i64>(), 40);
    assert!(holders.iter().all(|(who, _)| who == "a" || who == "b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_dead_instances_claim_runs_out_and_a_finished_one_stays_finished() {
    let Some(url) = cluster_db("lease").await else {
        return;
    };
    let short = |name: &str| StoreOptions {
        lease: Duration::from_secs(1),
        ..options(name)
    };
    let (a, b) = tokio::join!(
        open_pg_with(&url, short("a")),
        open_pg_with(&url, short("b"))
    );
    a.insert_application(application(1, "received"), submit_record())
        .await
        .unwrap();
    // `a` claims it and dies before it says how the delivery went.
    let held = a.due_applications(10).await.unwrap();
    assert_eq!(ids(&held), ["app-0001"]);
    drop(a);
    assert!(b.due_applications(10).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let taken = b.due_applications(10).await.unwrap();
    assert_eq!(ids(&taken), ["app-0001"]);
    // `b` delivers it; a late outcome of the first holder does not bring it back.
    let mut delivered = taken[0].clone();
    delivered.status = "delivered".into();
    delivered.attempts = 1;
    b.update_application(delivered).await.unwrap();
    let mut late = held[0].clone();
    late.attempts = 1;
    late.reason = Some("timeout".into());
    b.update_application(late).await.unwrap();
    let stored = b.application("app-0001".into()).await.unwrap().unwrap();
    assert_eq!(stored.status, "delivered");
    assert_eq!(stored.reason, None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(b.due_applications(10).await.unwrap().is_empty());
}

/// The next signal on `rx` within `within`.
async fn next_signal(
    rx: &mut tokio::sync::broadcast::Receiver<Signal>,
    within: Duration,
) -> Option<Signal> {
    tokio::time::timeout(within, rx.recv()).await.ok()?.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_signals_reach_the_other_instances_and_not_their_sender() {
    let Some(url) = cluster_db("signals").await else {
        return;
    };
    let (a, b) = tokio::join!(open_pg(&url, "a"), open_pg(&url, "b"));
    let mut on_a = a.signals().unwrap();
    let mut on_b = b.signals().unwrap();
    assert!(
        a.put_registration(registration("svc", "org", "one"))
            .await
            .unwrap()
    );
    assert_eq!(
        next_signal(&mut on_b, Duration::from_secs(1)).await,
        Some(Signal::Registrations)
    );
    // Refused: nothing changed, nobody is told.
    assert!(
        !a.put_registration(registration("svc", "other", "x"))
            .await
            .unwrap()
    );
    assert!(
        b.delete_registration("svc".into(), "org".into())
            .await
            .unwrap()
    );
    assert_eq!(
        next_signal(&mut on_a, Duration::from_secs(1)).await,
        Some(Signal::Registrations)
    );
    let bsn = Bsn::parse(PERSON).unwrap();
    a.publish(Signal::Subject(bsn)).await.unwrap();
    a.publish(Signal::Reload).await.unwrap();
    assert_eq!(
        next_signal(&mut on_b, Duration::from_secs(1)).await,
        Some(Signal::Subject(bsn))
    );
    assert_eq!(
        next_signal(&mut on_b, Duration::from_secs(1)).await,
        Some(Signal::Reload)
    );
    // Nothing of its own came back to `a`, nor more to `b`.
    assert_eq!(
        next_signal(&mut on_a, Duration::from_millis(300)).await,
        None
    );
    assert_eq!(
        next_signal(&mut on_b, Duration::from_millis(100)).await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_list_remembered_on_one_instance_is_dropped_by_a_change_on_another() {
    let Some(url) = cluster_db("lists").await else {
        return;
    };
    let (a, b) = tokio::join!(open_pg(&url, "a"), open_pg(&url, "b"));
    let bsn = Bsn::parse(PERSON).unwrap();
    a.insert_application(application(1, "received"), submit_record())
        .await
        .unwrap();
    assert_eq!(ids(&a.applications_of(bsn, 5).await.unwrap()), ["app-0001"]);
    assert_eq!(ids(&a.applications_of(bsn, 5).await.unwrap()), ["app-0001"]);
    b.insert_application(application(2, "received"), submit_record())
        .await
        .unwrap();
    let heard = async {
        loop {
            if a.applications_of(bsn, 5).await.unwrap().len() == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), heard)
        .await
        .expect("a change on `b` reaches `a`'s remembered list within 1 s");
    b.update_application(application(2, "delivered"))
        .await
        .unwrap();
    let heard = async {
        loop {
            let list = a.applications_of(bsn, 5).await.unwrap();
            if list.iter().any(|x| x.status == "delivered") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), heard)
        .await
        .expect("a delivery on `b` reaches `a`'s remembered list within 1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_heartbeats_list_the_instances() {
    let Some(url) = cluster_db("instances").await else {
        return;
    };
    let (a, b) = tokio::join!(open_pg(&url, "a"), open_pg(&url, "b"));
    let started = Utc::now();
    for (store, id) in [(&a, "a"), (&b, "b")] {
        store
            .heartbeat(Instance {
                id: id.into(),
                started_at: started,
                seen_at: started,
                config_version: format!("v-{id}"),
            })
            .await
            .unwrap();
    }
    let seen = a.instances().await.unwrap();
    let listed: Vec<(&str, &str)> = seen
        .iter()
        .map(|i| (i.id.as_str(), i.config_version.as_str()))
        .collect();
    assert_eq!(listed, [("a", "v-a"), ("b", "v-b")]);
    // An instance silent for long is not listed.
    let c = postgres::client(&url).await;
    c.batch_execute("UPDATE instances SET seen_at = now() - interval '1 minute' WHERE id = 'b'")
        .await
        .unwrap();
    let seen = b.instances().await.unwrap();
    assert_eq!(
        seen.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_the_url_password_is_never_shown() {
    let Some(pg) = postgres::shared() else {
        return;
    };
    // A wrong password on a server that trusts everyone still connects; a wrong port does not.
    let url = "postgres://postgres:s3cret@127.0.0.1:1/postgres".to_string();
    let err = AuditStore::connect(
        &StoreLocation::Postgres(url),
        b"key".to_vec(),
        StoreOptions {
            timeout: Duration::from_millis(500),
            ..options("x")
        },
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(!err.contains("s3cret"), "{err}");
    assert!(err.contains("postgres:***@127.0.0.1:1"), "{err}");
    let url = format!("{}?password=s3cret", pg.url());
    let store = open_pg(&url, "x").await;
    assert!(!store.location().contains("s3cret"), "{}", store.location());
}

// ----------------------------------------------------------------------------------------------
// PostgreSQL going away under a running store
// ----------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_writes_fail_fast_while_postgres_is_down_and_recover_without_reopening() {
    let Some(pg) = postgres::postgres() else {
        return;
    };
    let timeout = Duration::from_secs(1);
    let (url, store) = fresh_pg_store(&pg, "down", timeout).await;
    let mut signals = store.signals().unwrap();
    fill(&store, 20).await;
    pg.kill();
    let slack = Duration::from_millis(500);
    for i in 0..3 {
        let started = Instant::now();
        let r = store.append(rec(100 + i, PERSON, 10)).await;
        assert!(r.is_err(), "{r:?}");
        assert!(
            started.elapsed() < timeout + slack,
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let r = store.by_subject(Bsn::parse(PERSON).unwrap(), 5).await;
        assert!(r.is_err());
        assert!(
            started.elapsed() < timeout + slack,
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert!(!store.writable().await);
        assert!(
            started.elapsed() < timeout + slack,
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert!(
            store
                .insert_application(application(i, "received"), submit_record())
                .await
                .is_err()
        );
        assert!(
            started.elapsed() < timeout + slack,
            "{:?}",
            started.elapsed()
        );
    }
    pg.start();
    // The store comes back by itself: the pool, the writer (after its backoff), the listener.
    let back = async {
        loop {
            if store.append(rec(200, PERSON, 10)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), back)
        .await
        .expect("appends succeed again after PostgreSQL is back");
    assert!(store.writable().await);
    store
        .insert_application(application(9, "received"), submit_record())
        .await
        .unwrap();
    // The listener says signals may have been missed.
    let resync = async {
        loop {
            match signals.recv().await {
                Ok(Signal::Resync) => return,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), resync)
        .await
        .expect("a Resync after the listener connects again");
    // The chain is whole: every record that was acknowledged is there, whatever failed.
    match ketenportaal::store::verify(&StoreLocation::Postgres(url.clone()))
        .await
        .unwrap()
    {
        Verdict::Intact { records, .. } => assert!(records >= 22, "{records}"),
        v => panic!("{v:?}"),
    }
    assert!(store.stats().failed >= 3, "{:?}", store.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_the_listener_resyncs_after_a_restart_and_hears_again() {
    let Some(pg) = postgres::postgres() else {
        return;
    };
    let url = pg.fresh_database("resync").await;
    let (a, b) = tokio::join!(open_pg(&url, "a"), open_pg(&url, "b"));
    let mut on_b = b.signals().unwrap();
    pg.stop();
    pg.start();
    assert_eq!(
        next_signal(&mut on_b, Duration::from_secs(5)).await,
        Some(Signal::Resync)
    );
    // Listening again: a change on `a` reaches `b`.
    let put = async {
        loop {
            match a.put_registration(registration("svc", "org", "one")).await {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), put)
        .await
        .unwrap();
    assert_eq!(
        next_signal(&mut on_b, Duration::from_secs(1)).await,
        Some(Signal::Registrations)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_record_postgres_refuses_does_not_take_its_batch_with_it() {
    let Some(url) = cluster_db("poison").await else {
        return;
    };
    let store = open_pg(&url, "a").await;
    // PostgreSQL's text holds no NUL: that record's batch is refused, and tried again one by
    // one.
    let writes = (0..41).map(|i| {
        let mut r = rec(i, PERSON, 10);
        if i == 20 {
            r.actor = "poi\0son".into();
        }
        store.append(r)
    });
    let results = futures::future::join_all(writes).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_ok(), i != 20, "record {i}: {r:?}");
    }
    let stats = store.stats();
    assert_eq!(stats.failed, 1, "{stats:?}");
    assert!(stats.split >= 1, "{stats:?}");
    assert!(matches!(
        ketenportaal::store::verify(&StoreLocation::Postgres(url))
            .await
            .unwrap(),
        Verdict::Intact { records: 40, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_silent_postgres_fails_requests_within_the_timeout() {
    let Some(pg) = postgres::postgres() else {
        return;
    };
    let timeout = Duration::from_secs(1);
    let (url, store) = fresh_pg_store(&pg, "silent", timeout).await;
    fill(&store, 20).await;
    pg.pause();
    let slack = Duration::from_millis(500);
    let started = Instant::now();
    let writes = (0..50).map(|i| store.append(rec(100 + i, PERSON, 10)));
    let results = futures::future::join_all(writes).await;
    assert!(results.iter().all(Result::is_err));
    assert!(
        started.elapsed() < timeout + slack,
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert!(!store.writable().await);
    assert!(
        store
            .applications_of(Bsn::parse(PERSON).unwrap(), 5)
            .await
            .is_err()
    );
    assert!(
        started.elapsed() < 2 * timeout + slack,
        "{:?}",
        started.elapsed()
    );
    pg.resume();
    let back = async {
        loop {
            if store.append(rec(200, PERSON, 10)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), back)
        .await
        .expect("appends succeed again once PostgreSQL answers");
    // The batches sent while it was silent may have committed after all (their callers got an
    // error): either way the chain is one.
    match ketenportaal::store::verify(&StoreLocation::Postgres(url.clone()))
        .await
        .unwrap()
    {
        Verdict::Intact { records, .. } => assert!((21..=71).contains(&records), "{records}"),
        v => panic!("{v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_instances_given_one_key_at_once_store_one_application() {
    let Some(url) = cluster_db("one_key").await else {
        return;
    };
    let (a, b) = tokio::join!(open_pg(&url, "a"), open_pg(&url, "b"));
    for round in 0..20 {
        let mut on_a = application(2 * round, "received");
        let mut on_b = application(2 * round + 1, "received");
        on_a.idempotency_key = format!("key-{round}");
        on_b.idempotency_key = format!("key-{round}");
        let (x, y) = tokio::join!(
            a.insert_application(on_a, submit_record()),
            b.insert_application(on_b, submit_record())
        );
        let ((x, x_new), (y, y_new)) = (x.unwrap(), y.unwrap());
        assert_eq!(x, y, "round {round}");
        assert!(x_new != y_new, "round {round}: exactly one stored it");
    }
    // One application and one submit record per key.
    assert_eq!(a.counts().await.unwrap().0, 20);
    assert_eq!((a.stats().failed, b.stats().failed), (0, 0));
    assert_eq!(a.stats().committed + b.stats().committed, 40);
    assert!(matches!(
        ketenportaal::store::verify(&StoreLocation::Postgres(url))
            .await
            .unwrap(),
        Verdict::Intact { records: 20, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_writes_ride_through_a_restart_shorter_than_the_timeout() {
    let Some(pg) = postgres::postgres() else {
        return;
    };
    let (url, store) = fresh_pg_store(&pg, "restart", Duration::from_secs(3)).await;
    fill(&store, 10).await;
    pg.stop();
    // Written while the server is down: each waits for it instead of failing.
    let writes = tokio::spawn({
        let store = store.clone();
        async move {
            let appends = (0..20).map(|i| store.append(rec(300 + i, PERSON, 10)));
            let applied = store.insert_application(application(7, "received"), submit_record());
            let (appends, applied) = tokio::join!(futures::future::join_all(appends), applied);
            (appends, applied)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.start();
    let (appends, applied) = writes.await.unwrap();
    for a in &appends {
        assert!(a.is_ok(), "{a:?}");
    }
    let (app, new) = applied.unwrap();
    assert!(new);
    // Each stored once: 10 + 20 records and the application's submit record.
    match ketenportaal::store::verify(&StoreLocation::Postgres(url.clone()))
        .await
        .unwrap()
    {
        Verdict::Intact { records, .. } => assert_eq!(records, 31),
        v => panic!("{v:?}"),
    }
    assert_eq!(
        store.application(app.id).await.unwrap().unwrap().status,
        "received"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_delivery_outcome_whose_connection_is_lost_mid_write_is_written_on_a_new_one() {
    let Some(pg) = postgres::postgres() else {
        return;
    };
    let (url, store) = fresh_pg_store(&pg, "delivery_lost", Duration::from_secs(5)).await;
    let (app, _) = store
        .insert_application(application(3, "received"), submit_record())
        .await
        .unwrap();
    // Another session holds the application's row, so the outcome's UPDATE waits on it...
    let holder = postgres::client(&url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .execute(
            "SELECT 1 FROM applications WHERE id = $1 FOR UPDATE",
            &[&app.id],
        )
        .await
        .unwrap();
    let update = tokio::spawn({
        let store = store.clone();
        let mut done = app.clone();
        done.status = "delivered".into();
        done.reference = Some("ZAAK-1".into());
        async move { store.update_application(done).await }
    });
    // ... and its connection is ended under it, mid-statement (what a restart does).
    end_the_session_waiting_in(&url, "UPDATE applications").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    // Written on a new connection: the caller gets Ok, the application is delivered, and
    // nothing was given up on (a give-up would send the delivery to the organisation again).
    update.await.unwrap().unwrap();
    let stored = store.application(app.id).await.unwrap().unwrap();
    assert_eq!(stored.status, "delivered");
    assert_eq!(stored.reference.as_deref(), Some("ZAAK-1"));
    assert_eq!(store.stats().failed, 0);
}

/// Ends the session whose statement (`query` containing `statement`) waits on a lock, as a
/// server restart would end it mid-statement.
async fn end_the_session_waiting_in(url: &str, statement: &str) {
    let admin = postgres::client(url).await;
    let pattern = format!("%{statement}%");
    for _ in 0..200 {
        let n = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE $1",
                &[&pattern],
            )
            .await
            .unwrap()
            .len();
        if n > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no statement like `{statement}` waited on a lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_registration_change_whose_connection_is_lost_mid_write_is_made_on_a_new_one() {
    let Some(pg) = postgres::postgres() else {
        return;
    };
    let (url, store) = fresh_pg_store(&pg, "registration_lost", Duration::from_secs(5)).await;
    assert!(
        store
            .put_registration(registration("svc", "org", "one"))
            .await
            .unwrap()
    );
    let holder = postgres::client(&url).await;
    let hold = "SELECT 1 FROM registrations WHERE id = 'svc' FOR UPDATE";

    // A replacement waits on the row, loses its connection, and is made on a new one.
    holder.batch_execute("BEGIN").await.unwrap();
    holder.execute(hold, &[]).await.unwrap();
    let put = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .put_registration(registration("svc", "org", "two"))
                .await
        }
    });
    end_the_session_waiting_in(&url, "INSERT INTO registrations").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    assert!(put.await.unwrap().unwrap(), "the replacement was refused");
    assert_eq!(
        store.registrations().await.unwrap(),
        vec![registration("svc", "org", "two")]
    );

    // A removal loses its connection, and the row is gone by the time it asks again (here
    // taken by another session; after a restart, its own first try may have committed with
    // only the answer lost): it was removed, not "not found".
    holder.batch_execute("BEGIN").await.unwrap();
    holder.execute(hold, &[]).await.unwrap();
    let delete = tokio::spawn({
        let store = store.clone();
        async move { store.delete_registration("svc".into(), "org".into()).await }
    });
    end_the_session_waiting_in(&url, "DELETE FROM registrations").await;
    holder
        .execute("DELETE FROM registrations WHERE id = 'svc'", &[])
        .await
        .unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    assert!(delete.await.unwrap().unwrap(), "the removal said not found");
    assert!(store.registrations().await.unwrap().is_empty());
    assert_eq!(store.stats().failed, 0);
}

//! The store under mixed load: dossier reads (an access record, then its outcome) and
//! applications (stored with their submit record) at the same time, from outside over HTTP; and
//! the same load cut by kill -9, then a restart on the same store file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::helpers::{CITIZEN, SECRET, spawn_app};
use ketenportaal::store::{StoreLocation, Verdict};

const PEOPLE: [&str; 5] = [
    "999993653",
    "999990019",
    "999991772",
    "999992958",
    "999993847",
];

/// The chain of the store file at `db`, walked.
async fn verify(db: &Path) -> Verdict {
    ketenportaal::store::verify(&StoreLocation::Sqlite(db.to_path_buf()))
        .await
        .unwrap()
}

fn bijstand() -> Value {
    json!({"service": "bijstand-aanvragen", "data": {"gewenste_ingangsdatum": "2027-01-16", "woonsituatie": "alleenstaand"}})
}

/// What the callers saw.
#[derive(Default, Debug)]
struct Seen {
    reads: u64,
    /// Status -> count, for reads not answered 200.
    read_refusals: BTreeMap<u16, u64>,
    /// Trace ids of the reads answered 200.
    answered_reads: BTreeSet<String>,
    applications: u64,
    /// Status -> count, for applications not answered 202.
    application_refusals: BTreeMap<u16, u64>,
    /// Ids of the applications answered 202.
    accepted: BTreeSet<String>,
    /// (token, key) of each application without a 202 (refused, or no answer at all).
    unanswered: Vec<(String, String)>,
}

struct Load {
    url: String,
    /// Citizen tokens, used in turn.
    tokens: Vec<String>,
    readers: usize,
    applicants: usize,
    run_for: Duration,
}

/// Runs the load until `run_for` has passed or the gateway stops answering (a caller whose
/// request gets no answer stops).
async fn run_load(l: &Load, seen: Arc<Mutex<Seen>>) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..l.readers {
        let (http, url, token, seen, run_for) = (
            http.clone(),
            l.url.clone(),
            l.tokens[i % l.tokens.len()].clone(),
            seen.clone(),
            l.run_for,
        );
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < run_for {
                let Ok(r) = http
                    .get(format!("{url}/v1/me/dossier"))
                    .bearer_auth(&token)
                    .send()
                    .await
                else {
                    break;
                };
                let status = r.status().as_u16();
                let body: Option<Value> = r.json().await.ok();
                let mut s = seen.lock().unwrap();
                s.reads += 1;
                match body.as_ref().and_then(|d| d["trace_id"].as_str()) {
                    Some(t) if status == 200 => {
                        s.answered_reads.insert(t.to_string());
                    }
                    _ => *s.read_refusals.entry(status).or_default() += 1,
                }
            }
        }));
    }
    for j in 0..l.applicants {
        let (http, url, token, seen, run_for) = (
            http.clone(),
            l.url.clone(),
            l.tokens[j % l.tokens.len()].clone(),
            seen.clone(),
            l.run_for,
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while started.elapsed() < run_for {
                n += 1;
                let key = format!("mixed-{j}-{n}");
                let r = http
                    .post(format!("{url}/v1/me/applications"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", &key)
                    .json(&bijstand())
                    .send()
                    .await;
                let answer = match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        Some((status, r.json::<Value>().await.ok()))
                    }
                    Err(_) => None,
                };
                let mut s = seen.lock().unwrap();
                s.applications += 1;
                match answer {
                    Some((202, Some(v))) if v["id"].is_string() => {
                        s.accepted.insert(v["id"].as_str().unwrap().to_string());
                    }
                    Some((status, _)) => {
                        *s.application_refusals.entry(status).or_default() += 1;
                        s.unanswered.push((token.clone(), key));
                    }
                    None => {
                        s.unanswered.push((token.clone(), key));
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// What the store holds, read from its file.
#[derive(Debug)]
struct Held {
    /// Every stored application, by id, with its status.
    applications: BTreeMap<String, String>,
    /// Ids of the applications that have an `application.submit` record.
    submitted: BTreeSet<String>,
    /// Trace ids of all records.
    traces: BTreeSet<String>,
    /// Read records written as `requested` that have no outcome.
    reads_without_outcome: i64,
}

fn held(db: &Path) -> Held {
    let c = Connection::open(db).unwrap();
    let applications = c
        .prepare("SELECT id, status FROM applications")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let submitted = c
        .prepare(
            "SELECT json_extract(record, '$.details.application') FROM audit_log
             WHERE kind = 'application.submit'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let traces = c
        .prepare("SELECT trace_id FROM audit_log")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let reads_without_outcome = c
        .query_row(
            "SELECT COUNT(*) FROM audit_log a LEFT JOIN audit_outcome o ON o.seq = a.seq
             WHERE a.kind = 'dossier.read' AND json_extract(a.record, '$.outcome') = 'requested'
               AND o.seq IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    Held {
        applications,
        submitted,
        traces,
        reads_without_outcome,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_reads_and_applications_lose_no_record_and_refuse_nothing() {
    let app = spawn_app().await;
    let db = app.dir.path().join("audit.sqlite");
    let load = Load {
        url: app.url.clone(),
        tokens: PEOPLE.iter().map(|b| app.citizen_token(b)).collect(),
        readers: 16,
        applicants: 4,
        run_for: Duration::from_secs(8),
    };
    let seen: Arc<Mutex<Seen>> = Arc::default();
    run_load(&load, seen.clone()).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // The file is read directly, beside the store: every acknowledged record is in the journal,
    // and the index (the file) may still be catching up on a busy machine.
    app.store.settle().await.unwrap();
    // Outcomes are not waited for by the answer: give the last ones time to land.
    let started = Instant::now();
    let mut h = held(&db);
    while h.reads_without_outcome > 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h = held(&db);
    }
    let stats = app.store.stats();
    let stored: BTreeSet<String> = h.applications.keys().cloned().collect();
    let refused_but_stored = stored.difference(&seen.accepted).count();
    let accepted_not_stored = seen.accepted.difference(&stored).count();
    let without_submit = stored.difference(&h.submitted).count();
    let answered_without_record = seen.answered_reads.difference(&h.traces).count();
    eprintln!(
        "mixed load, {} readers + {} applicants for {:?}: {} reads ({} answered, refused {:?}), \
         {} applications ({} accepted, refused {:?}); store: {} changes not committed, {} transactions retried, {} split; \
         {} applications refused but stored, {} accepted but not stored, {} without a submit \
         record; {} read records without an outcome, {} answered reads without a record",
        load.readers,
        load.applicants,
        load.run_for,
        seen.reads,
        seen.answered_reads.len(),
        seen.read_refusals,
        seen.applications,
        seen.accepted.len(),
        seen.application_refusals,
        stats.failed,
        stats.retried,
        stats.split,
        refused_but_stored,
        accepted_not_stored,
        without_submit,
        h.reads_without_outcome,
        answered_without_record,
    );
    assert!(seen.answered_reads.len() > 50, "too little load: {seen:?}");
    assert!(seen.accepted.len() > 20, "too little load: {seen:?}");
    assert_eq!(stats.failed, 0, "changes not committed");
    assert!(seen.read_refusals.is_empty(), "reads refused");
    assert!(seen.application_refusals.is_empty(), "applications refused");
    assert_eq!(refused_but_stored, 0, "applications refused yet stored");
    assert_eq!(
        accepted_not_stored, 0,
        "applications accepted but not stored"
    );
    assert_eq!(without_submit, 0, "applications without a submit record");
    assert_eq!(
        h.reads_without_outcome, 0,
        "read records without an outcome"
    );
    assert_eq!(
        answered_without_record, 0,
        "answered reads without a record"
    );
    assert!(matches!(verify(&db).await, Verdict::Intact { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_leaves_no_delivered_application_without_its_submit_record() {
    let agencies = ketenportaal::demo::agencies::AgencyServer::start(
        &crate::helpers::root().join("fixtures/agencies"),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.sqlite");
    let env_vars = [
        ("KETENPORTAAL_AGENCIES", agencies.base_url()),
        ("KETENPORTAAL_DEMO_SECRET", SECRET.to_string()),
    ];
    let env_vars: Vec<(&str, &str)> = env_vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = ketenportaal::demo::demo_env(agencies.base_url(), SECRET.into());
    let config = ketenportaal::config::Config::load_with_env(
        &crate::helpers::root().join("config/demo.yaml"),
        &env,
    )
    .unwrap();
    let tokens: Vec<String> = PEOPLE
        .iter()
        .map(|b| {
            ketenportaal::demo::mint(&config, &ketenportaal::demo::citizen(b).unwrap(), 600)
                .unwrap()
        })
        .collect();

    // Three rounds of load, each cut by kill -9 and followed by a restart on the same store,
    // where every citizen left without an answer tries again with the same key.
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut resent = BTreeMap::<u16, u64>::new();
    let mut cut = 0;
    let http = reqwest::Client::new();
    let mut gw = crate::helpers::start_demo(&db, None, &env_vars);
    for round in 1..=3usize {
        let load = Load {
            url: gw.url.clone(),
            tokens: tokens.clone(),
            readers: 8,
            applicants: 8,
            run_for: Duration::from_secs(30),
        };
        let running = {
            let seen = seen.clone();
            async move { run_load(&load, seen).await }
        };
        let killer = async {
            // Mid-load: once applications are being accepted and delivered.
            let started = Instant::now();
            let delivered = agencies.intake().keys().len();
            while (seen.lock().unwrap().accepted.len() < 40 * round
                || agencies.intake().keys().len() < delivered + 10)
                && started.elapsed() < Duration::from_secs(25)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            gw.kill(); // SIGKILL
        };
        futures::join!(running, killer);
        let unanswered = std::mem::take(&mut seen.lock().unwrap().unanswered);
        cut += unanswered.len();
        gw = crate::helpers::start_demo(&db, None, &env_vars);
        for (token, key) in unanswered {
            let r = http
                .post(format!("{}/v1/me/applications", gw.url))
                .bearer_auth(&token)
                .header("Idempotency-Key", &key)
                .json(&bijstand())
                .send()
                .await
                .unwrap();
            *resent.entry(r.status().as_u16()).or_default() += 1;
            if r.status() == 202 {
                let v: Value = r.json().await.unwrap();
                let id = v["id"].as_str().unwrap().to_string();
                seen.lock().unwrap().accepted.insert(id);
            }
        }
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // Let delivery finish.
    let started = Instant::now();
    loop {
        let h = held(&db);
        if h.applications.values().all(|s| s != "received") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "applications not delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.kill();

    let h = held(&db);
    let delivered: BTreeSet<String> = agencies.intake().keys().into_iter().collect();
    let delivered_without_submit = delivered.difference(&h.submitted).count();
    let stored: BTreeSet<String> = h.applications.keys().cloned().collect();
    let accepted_without_submit = seen.accepted.difference(&h.submitted).count();
    eprintln!(
        "kill -9 mid-load, 3 times: {} applications accepted, {cut} cut without an answer and \
         resent after the restart: {resent:?}; {} stored, {} delivered; \
         {delivered_without_submit} delivered and {accepted_without_submit} accepted without a \
         submit record",
        seen.accepted.len(),
        stored.len(),
        delivered.len(),
    );
    assert!(cut > 0, "the kills cut no application");
    assert_eq!(resent.keys().collect::<Vec<_>>(), vec![&202], "{resent:?}");
    assert_eq!(
        delivered_without_submit, 0,
        "delivered without a submit record"
    );
    assert_eq!(
        accepted_without_submit, 0,
        "accepted without a submit record"
    );
    assert!(seen.accepted.is_subset(&stored));
    assert!(matches!(verify(&db).await, Verdict::Intact { .. }));
}

#[tokio::test]
async fn a_resend_writes_the_submit_record_an_older_version_never_wrote() {
    let app = spawn_app().await;
    let db = app.dir.path().join("audit.sqlite");
    // An application stored by a gateway that died before its record was written.
    let now = chrono::Utc::now().to_rfc3339();
    Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO applications (id, service, organisation, bsn, actor, idempotency_key,
                 data, status, attempts, next_attempt_at, created_at, updated_at)
             VALUES ('app-1', 'bijstand-aanvragen', 'gemeente-utrecht', ?1, ?2, 'retry-me', ?3,
                 'delivered', 1, ?4, ?4, ?4)",
            rusqlite::params![
                CITIZEN,
                format!("digid:{CITIZEN}"),
                bijstand()["data"].to_string(),
                now
            ],
        )
        .unwrap();
    let token = app.citizen_token(CITIZEN);
    let resend = || {
        app.http
            .post(format!("{}/v1/me/applications", app.url))
            .bearer_auth(&token)
            .header("Idempotency-Key", "retry-me")
            .json(&bijstand())
            .send()
    };
    let r = resend().await.unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "app-1");
    assert!(held(&db).submitted.contains("app-1"));
    // Another resend finds the record and writes none.
    assert_eq!(resend().await.unwrap().status(), 202);
    let c = Connection::open(&db).unwrap();
    let n: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE kind = 'application.submit'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    assert!(matches!(
        verify(&db).await,
        Verdict::Intact { records: 1, .. }
    ));
}

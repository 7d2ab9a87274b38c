//! Protocollering: every access recorded before the answer leaves, citizen inzage, auditors,
//! fail closed, Logboek Dataverwerkingen records, and the chain tools.

use std::process::Command;

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::helpers::{CITIZEN, spawn_app};

#[tokio::test]
async fn every_dossier_read_is_recorded_before_the_answer() {
    let app = spawn_app().await;
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    for _ in 0..5 {
        let r = app
            .employee_dossier(
                &coach,
                Some("re-integratie"),
                json!({"bsn": CITIZEN, "view": "werkcoach"}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let d: Value = r.json().await.unwrap();
        let trace = d["trace_id"].as_str().unwrap().to_string();
        assert!(app.store.has_trace(trace).await.unwrap());
    }
    // Refused requests are not dossier reads; failed ones are recorded with their outcome.
    let r = app
        .employee_dossier(&coach, None, json!({"bsn": CITIZEN, "view": "werkcoach"}))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.store.counts().await.unwrap().0, 5);
}

#[tokio::test]
async fn a_citizen_sees_who_looked_at_their_dossier_and_why() {
    let app = spawn_app().await;
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    app.employee_dossier(
        &coach,
        Some("ww-beoordeling"),
        json!({"bsn": CITIZEN, "view": "werkcoach"}),
    )
    .await;
    // Someone else's dossier read does not show up.
    app.employee_dossier(
        &coach,
        Some("ww-beoordeling"),
        json!({"bsn": "999990019", "view": "werkcoach"}),
    )
    .await;
    let citizen = app.citizen_token(CITIZEN);
    app.me_dossier(&citizen).await;
    let r = app
        .http
        .get(format!("{}/v1/me/access-log", app.url))
        .bearer_auth(&citizen)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log: Value = r.json().await.unwrap();
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{log}");
    // Newest first: the citizen's own read, then UWV's.
    assert_eq!(entries[0]["by"], "u zelf");
    let uwv = &entries[1];
    assert_eq!(uwv["organisation"], "uwv");
    assert_eq!(uwv["organisation_name"], "UWV");
    assert_eq!(uwv["roles"], json!(["uwv-werkcoach"]));
    assert_eq!(uwv["purpose"], "ww-beoordeling");
    assert_eq!(uwv["purpose_description"], "Beoordeling recht op WW");
    assert!(
        uwv.get("actor").is_none(),
        "the employee's own identity stays in the access log"
    );
    // Employees cannot use the citizen inzage endpoint.
    let r = app
        .http
        .get(format!("{}/v1/me/access-log", app.url))
        .bearer_auth(&coach)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn auditors_query_by_bsn_in_a_post_body_and_others_cannot() {
    let app = spawn_app().await;
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    app.employee_dossier(
        &coach,
        Some("re-integratie"),
        json!({"bsn": CITIZEN, "view": "werkcoach"}),
    )
    .await;
    let auditor = app.employee_token("uwv", &["auditor"]);
    let ask = |token: String| {
        app.http
            .post(format!("{}/v1/audit/access-log", app.url))
            .bearer_auth(token)
            .json(&json!({"bsn": CITIZEN}))
            .send()
    };
    let r = ask(auditor.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let rec = &v["records"][0]["record"];
    assert_eq!(rec["actor"], "medewerker.test");
    assert_eq!(rec["purpose"], "re-integratie");
    assert_eq!(rec["kind"], "dossier.read");
    assert_eq!(ask(coach).await.unwrap().status(), 403);
    assert_eq!(ask(app.citizen_token(CITIZEN)).await.unwrap().status(), 403);
    // The auditor's own query is recorded too.
    let v: Value = ask(auditor).await.unwrap().json().await.unwrap();
    assert_eq!(v["records"][0]["record"]["kind"], "access-log.read");
    assert_eq!(v["records"][0]["record"]["purpose"], "toezicht");
}

#[tokio::test]
async fn auditors_may_be_limited_to_their_own_organisations() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        tweak: Some(Box::new(|c| {
            c.gateway.audit.auditor_organisations = vec!["gemeente-utrecht".into()];
        })),
        ..Default::default()
    })
    .await;
    let ask = |org: &str| {
        app.http
            .post(format!("{}/v1/audit/access-log", app.url))
            .bearer_auth(app.employee_token(org, &["auditor"]))
            .json(&json!({"bsn": CITIZEN}))
            .send()
    };
    assert_eq!(ask("gemeente-utrecht").await.unwrap().status(), 200);
    let r = ask("uwv").await.unwrap();
    assert_eq!(
        r.status(),
        403,
        "the role from another organisation is not enough"
    );
}

#[tokio::test]
async fn when_the_journal_cannot_be_written_nothing_is_answered_and_nothing_answered_is_lost() {
    // The gateway runs under a file size limit (`ulimit -f`): once the audit journal reaches
    // it, every write of it fails (EFBIG), as on a full disk.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.sqlite");
    let limit = (2u64 << 20).to_string();
    let mut demo = crate::helpers::start_demo_limited(&db, &limit);
    let url = demo
        .citizen_curl
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let token = demo.citizen_token();
    let client = reqwest::Client::new();
    let mut answered = Vec::new();
    let mut refused = 0;
    for _ in 0..20_000 {
        let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if status == 200 {
            answered.push(body["trace_id"].as_str().unwrap().to_string());
            continue;
        }
        // Refused, and nothing of the dossier shown.
        assert_eq!(status, 503, "{body}");
        assert_eq!(
            body["type"],
            "https://ketenportaal.example/problems/audit-unavailable"
        );
        assert!(body.get("sections").is_none(), "{body}");
        refused += 1;
        if refused == 20 {
            break;
        }
    }
    assert_eq!(refused, 20, "the limit was never reached");
    assert!(answered.len() > 100, "{} answered", answered.len());
    demo.kill();
    // Opened again without the limit: every answered read has its record, the chain holds.
    let store = ketenportaal::store::AuditStore::open(&db, b"x".to_vec()).unwrap();
    for t in &answered {
        assert!(store.has_trace(t.clone()).await.unwrap(), "{t} lost");
    }
    let (records, _) = store.counts().await.unwrap();
    assert!(records >= answered.len() as i64);
    drop(store);
    assert!(matches!(
        ketenportaal::store::verify(&ketenportaal::store::StoreLocation::Sqlite(db.clone()))
            .await
            .unwrap(),
        ketenportaal::store::Verdict::Intact { .. }
    ));
    eprintln!(
        "journal at its limit: {} reads answered before, 20 refused (503), 0 answered without a record",
        answered.len()
    );
}

#[tokio::test]
async fn when_the_index_cannot_be_written_reads_go_on_and_the_index_catches_up() {
    let app = spawn_app().await;
    let db = app.dir.path().join("audit.sqlite");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    let citizen = app.citizen_token(CITIZEN);
    // The journal is the durability point: the read is recorded there and answered.
    assert_eq!(app.me_dossier(&citizen).await.status(), 200);
    c.execute_batch("DROP TRIGGER refuse;").unwrap();
    // The index catches up; a read of the audit sees the record.
    assert_eq!(app.store.counts().await.unwrap().0, 1);
    assert!(matches!(
        ketenportaal::store::verify(&ketenportaal::store::StoreLocation::Sqlite(db.clone()))
            .await
            .unwrap(),
        ketenportaal::store::Verdict::Intact { records: 1, .. }
    ));
}

#[tokio::test]
async fn processing_records_follow_logboek_dataverwerkingen() {
    let app = spawn_app().await;
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    app.http
        .post(format!("{}/v1/dossiers", app.url))
        .bearer_auth(&coach)
        .header("X-Purpose", "re-integratie")
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .json(&json!({"bsn": CITIZEN, "view": "werkcoach"}))
        .send()
        .await
        .unwrap();
    // The processing log is a view over the index, which the journal fills off the request
    // path.
    app.store.settle().await.unwrap();
    let c = Connection::open(app.dir.path().join("audit.sqlite")).unwrap();
    let row: (
        String,
        String,
        Option<String>,
        String,
        String,
        String,
        Option<String>,
        String,
        String,
    ) = c
        .query_row(
            "SELECT trace_id, span_id, parent_span_id, name, status_code, processing_activity_id,
                    foreign_operation, data_subject_id, data_subject_id_type FROM processing_log",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(row.0, trace);
    assert_eq!(row.1.len(), 16);
    assert_eq!(row.2.as_deref(), Some("b7ad6b7169203331"));
    assert_eq!(row.3, "ketenportaal.dossier.read");
    assert_eq!(row.4, "OK");
    assert_eq!(
        row.5,
        "https://register.example.nl/uwv/verwerkingsactiviteiten/re-integratie"
    );
    assert!(row.6.unwrap().contains("b7ad6b7169203331"));
    assert_eq!(row.7.len(), 64);
    assert!(!row.7.contains(CITIZEN));
    assert_eq!(row.8, "BSN");
}

#[tokio::test]
async fn audit_verify_and_report_from_the_command_line() {
    let app = spawn_app().await;
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    for bsn in [CITIZEN, CITIZEN, "999990019"] {
        app.employee_dossier(
            &coach,
            Some("re-integratie"),
            json!({"bsn": bsn, "view": "werkcoach"}),
        )
        .await;
    }
    let db = app.dir.path().join("audit.sqlite");
    let bin = env!("CARGO_BIN_EXE_ketenportaal");
    let out = Command::new(bin)
        .args(["audit", "verify", "--store"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact: 3 records"));

    let today = chrono::Utc::now().date_naive();
    let out = Command::new(bin)
        .args(["audit", "report", "--format", "json", "--store"])
        .arg(&db)
        .arg("--from")
        .arg(today.to_string())
        .arg("--to")
        .arg((today + chrono::Duration::days(1)).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["dossier_reads"], 3);
    assert_eq!(r["most_viewed"][0], json!(["*****3653", 2]));
    assert_eq!(r["top_users"][0], json!(["medewerker.test", "uwv", 3]));
    assert_eq!(r["per_purpose"]["re-integratie"], 3);

    // Changed in the index (once the record is in it).
    app.store.settle().await.unwrap();
    let changed = Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE audit_log SET record = replace(record, 'werkcoach', 'klant') WHERE seq = 2",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let out = Command::new(bin)
        .args(["audit", "verify", "--store"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("record 2 was modified"));
}

/// A read that waits on a slow source has its record written while the sources are asked
/// (`requested`) and its outcome after it; one answered at once (every source cached) is one
/// record with its outcome in it.
#[tokio::test]
async fn a_read_waiting_on_a_slow_source_is_recorded_in_two_halves_and_a_cached_one_whole() {
    use crate::helpers::{Behaviour, Options, spawn_app_with};
    let app = spawn_app_with(Options {
        cache: true,
        ..Options::default()
    })
    .await;
    let citizen = app.citizen_token(CITIZEN);
    app.chaos
        .set("/uwv/UitkeringenService", Behaviour::Delay(100));
    assert_eq!(app.me_dossier(&citizen).await.status(), 200);
    app.chaos.clear("/uwv/UitkeringenService");
    // Every source's answer is cached now.
    assert_eq!(app.me_dossier(&citizen).await.status(), 200);
    app.store.settle().await.unwrap();
    let c = Connection::open(app.dir.path().join("audit.sqlite")).unwrap();
    let mut st = c
        .prepare(
            "SELECT json_extract(a.record, '$.outcome'), json_extract(o.outcome, '$.outcome')
             FROM audit_log a LEFT JOIN audit_outcome o ON o.seq = a.seq
             WHERE a.kind = 'dossier.read' ORDER BY a.seq",
        )
        .unwrap();
    let rows: Vec<(String, Option<String>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            ("requested".to_string(), Some("served".to_string())),
            ("served".to_string(), None)
        ]
    );
}

//! kill -9 during a burst of dossier reads loses no audit record for any answer a client got.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test]
async fn kill_9_during_a_burst_loses_no_record_of_an_answered_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.sqlite");
    let mut demo = crate::helpers::start_demo(&db, None, &[]);
    let url = demo
        .citizen_curl
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let token = demo.citizen_token();

    let answered: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url, token, answered) =
            (client.clone(), url.clone(), token.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(20) {
                let r = client.get(&url).bearer_auth(&token).send().await;
                let Ok(r) = r else { break };
                if r.status() != 200 {
                    continue;
                }
                let Ok(d) = r.json::<serde_json::Value>().await else {
                    break;
                };
                if let Some(t) = d["trace_id"].as_str() {
                    answered.lock().unwrap().insert(t.to_string());
                }
            }
        }));
    }
    // Let the burst run, then kill -9 in the middle of it.
    while answered.lock().unwrap().len() < 300 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    demo.kill(); // SIGKILL
    for t in tasks {
        t.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() >= 300,
        "only {} answers before the kill",
        answered.len()
    );

    // What the index held at the kill; then the store opened again, which replays the journal
    // into it.
    let c = rusqlite::Connection::open(&db).unwrap();
    let count = |c: &rusqlite::Connection| {
        c.query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    let indexed_at_kill = count(&c);
    drop(ketenportaal::store::AuditStore::open(&db, b"x".to_vec()).unwrap());
    let replayed = count(&c) - indexed_at_kill;
    let mut st = c.prepare("SELECT trace_id FROM audit_log").unwrap();
    let recorded: BTreeSet<String> = st
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let lost: Vec<&String> = answered.difference(&recorded).collect();
    assert!(
        lost.is_empty(),
        "{} answered reads have no audit record",
        lost.len()
    );
    assert!(matches!(
        ketenportaal::store::verify(&ketenportaal::store::StoreLocation::Sqlite(db.clone()))
            .await
            .unwrap(),
        ketenportaal::store::Verdict::Intact { .. }
    ));
    eprintln!(
        "kill -9 after {} answered reads: {} records after the restart ({replayed} of them replayed from the journal), 0 lost",
        answered.len(),
        recorded.len()
    );
}

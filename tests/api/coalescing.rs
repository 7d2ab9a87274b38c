//! Concurrent reads of one subject share one call to each source: its answer and its failure.
//! Real agencies behind the chaos proxy, the real HTTP API; bounds are generous (these are not
//! timing tests, they tell one shared call from calls made one after another).

use std::time::{Duration, Instant};

use ketenportaal::bsn::Bsn;
use ketenportaal::model::Dur;
use serde_json::{Value, json};

use crate::helpers::{Behaviour, CITIZEN, Options, TestApp, source, spawn_app_with, tweak_adapter};

const UWV: &str = "/uwv/UitkeringenService";
const WERKCOACH: [&str; 4] = [
    "/brp/haalcentraal/api/brp/personen",
    "/gemeente/stuf-bg/BGService",
    UWV,
    "/svb/RegelingenService",
];

const FAULT: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Server</faultcode><faultstring>Interne fout</faultstring></s:Fault></s:Body></s:Envelope>"#;

/// Cache on; the UWV breaker opens after `consecutive` failures in a row.
fn options(consecutive: u32) -> Options {
    Options {
        cache: true,
        copy_config: false,
        tweak: Some(Box::new(move |c| {
            tweak_adapter(c, "uwv-uitkeringen", |d| {
                d.resilience.circuit.consecutive_failures = consecutive;
                d.resilience.circuit.open_for = Dur(Duration::from_secs(30));
            })
        })),
    }
}

/// One werkcoach read of the test citizen with `Cache-Control: no-cache`: status, dossier (or
/// problem), and how long it took.
async fn no_cache_read(app: &TestApp, token: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let r = app
        .http
        .post(format!("{}/v1/dossiers", app.url))
        .bearer_auth(token)
        .header("X-Purpose", "re-integratie")
        .header("Cache-Control", "no-cache")
        .json(&json!({"bsn": CITIZEN, "view": "werkcoach"}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

#[tokio::test]
async fn ten_concurrent_no_cache_reads_of_a_slow_source_share_one_call() {
    let app = spawn_app_with(options(5)).await;
    for p in WERKCOACH {
        app.chaos.set(p, Behaviour::Delay(300));
    }
    let token = app.employee_token("uwv", &["uwv-werkcoach"]);
    let reads = futures::future::join_all((0..10).map(|_| no_cache_read(&app, &token))).await;
    let seen: Vec<(u16, u128)> = reads.iter().map(|(s, _, t)| (*s, t.as_millis())).collect();
    for (status, d, took) in &reads {
        assert_eq!(*status, 200, "{seen:?}: {d}");
        assert_eq!(source(d, "uwv-uitkeringen")["status"], "ok", "{d}");
        assert!(*took < Duration::from_millis(900), "{seen:?}");
    }
    assert_eq!(app.agencies.hits(UWV), 1, "{seen:?}");
    let m = app.metrics().await;
    assert!(
        m.contains(
            r#"ketenportaal_source_call_duration_seconds_count{adapter="uwv-uitkeringen"} 1"#
        ),
        "one call counted: {m}"
    );
}

#[tokio::test]
async fn ten_concurrent_reads_of_a_failing_source_share_one_failure_and_count_it_once() {
    // Two failures in a row open the circuit: ten counted failures would.
    let app = spawn_app_with(options(2)).await;
    app.chaos.set(
        UWV,
        Behaviour::StatusAfter(300, 500, "text/xml", FAULT.into()),
    );
    let token = app.employee_token("uwv", &["uwv-werkcoach"]);
    let reads = futures::future::join_all((0..10).map(|_| no_cache_read(&app, &token))).await;
    let seen: Vec<(u16, u128, Value)> = reads
        .iter()
        .map(|(s, d, t)| (*s, t.as_millis(), d["sources"].clone()))
        .collect();
    for (status, d, took) in &reads {
        assert_eq!(*status, 200, "{seen:?}");
        let s = source(d, "uwv-uitkeringen");
        assert_eq!(s["status"], "error", "{seen:?}");
        assert!(s["error"].as_str().unwrap().contains("Interne fout"), "{s}");
        assert!(*took < Duration::from_millis(900), "{seen:?}");
    }
    assert_eq!(app.chaos.hits(UWV), 1, "{seen:?}");
    let m = app.metrics().await;
    assert!(
        m.contains(
            r#"ketenportaal_source_call_errors_total{adapter="uwv-uitkeringen",status="fault"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"ketenportaal_circuit_state{adapter="uwv-uitkeringen"} 0"#),
        "one failure counted, the circuit stays closed: {m}"
    );
    // The breaker counted exactly one: one more failure makes two in a row and opens it.
    let (_, d, _) = no_cache_read(&app, &token).await;
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "error", "{d}");
    let m = app.metrics().await;
    assert!(
        m.contains(r#"ketenportaal_circuit_state{adapter="uwv-uitkeringen"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_shared_call_goes_on_when_the_request_that_started_it_reaches_its_deadline() {
    // Deadline 600 ms; the UWV answers after 700 ms (within its 800 ms timeout).
    let app = spawn_app_with(Options {
        cache: true,
        copy_config: false,
        tweak: Some(Box::new(|c| {
            c.gateway.deadline = Dur(Duration::from_millis(600));
        })),
    })
    .await;
    app.chaos.set(UWV, Behaviour::Delay(700));
    let token = app.employee_token("uwv", &["uwv-werkcoach"]);
    let first = no_cache_read(&app, &token);
    // Joins 300 ms later: its own deadline (900 ms after the call started) leaves room.
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        no_cache_read(&app, &token).await
    };
    let ((_, a, _), (status, b, took)) = futures::join!(first, second);
    assert_eq!(source(&a, "uwv-uitkeringen")["status"], "timeout", "{a}");
    assert_eq!(status, 200, "{b}");
    assert_eq!(source(&b, "uwv-uitkeringen")["status"], "ok", "{b}");
    assert!(took < Duration::from_millis(900), "{took:?}");
    assert_eq!(
        app.agencies.hits(UWV),
        1,
        "the call outlived its starter's deadline and was shared"
    );
    let m = app.metrics().await;
    assert!(
        !m.contains(r#"ketenportaal_source_call_errors_total{adapter="uwv-uitkeringen""#),
        "the call succeeded; nothing counts against the source: {m}"
    );
}

#[tokio::test]
async fn waiters_on_a_hanging_source_time_out_at_their_own_deadline_and_it_counts_once() {
    let app = spawn_app_with(options(2)).await;
    app.chaos.set(UWV, Behaviour::Hang);
    let token = app.employee_token("uwv", &["uwv-werkcoach"]);
    let deadline = app.config.gateway.deadline.0;
    let staggered = (0..5u64).map(|i| {
        let (app, token) = (&app, &token);
        async move {
            tokio::time::sleep(Duration::from_millis(60 * i)).await;
            no_cache_read(app, token).await
        }
    });
    let reads = futures::future::join_all(staggered).await;
    for (status, d, took) in &reads {
        assert_eq!(*status, 200, "{d}");
        let s = source(d, "uwv-uitkeringen");
        assert_eq!(s["status"], "timeout", "{s}");
        let latency = s["latency_ms"].as_u64().unwrap();
        // Its own wait: never past its deadline, and the message gives that wait.
        assert!(latency <= deadline.as_millis() as u64 + 100, "{s}");
        assert!(latency >= 500, "{s}");
        // The message gives its own wait (not the shared call's, nor "within 0 ms").
        let said: u64 = s["error"]
            .as_str()
            .and_then(|e| e.strip_prefix("no answer within "))
            .and_then(|e| e.strip_suffix(" ms"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{s}"));
        assert!(said.abs_diff(latency) <= 10, "its own wait: {s}");
        assert!(*took < deadline + Duration::from_millis(500), "{took:?}");
    }
    assert_eq!(app.chaos.hits(UWV), 1);
    let m = app.metrics().await;
    assert!(
        m.contains(r#"ketenportaal_circuit_state{adapter="uwv-uitkeringen"} 0"#),
        "one timeout counted: {m}"
    );
}

#[tokio::test]
async fn an_invalidation_during_a_call_keeps_its_answer_out_of_the_cache() {
    let app = spawn_app_with(options(5)).await;
    app.chaos.set(UWV, Behaviour::Delay(400));
    let token = app.employee_token("uwv", &["uwv-werkcoach"]);
    let body = json!({"bsn": CITIZEN, "view": "werkcoach"});
    let read = || app.employee_dossier(&token, Some("re-integratie"), body.clone());
    let first = async { read().await.json::<Value>().await.unwrap() };
    let invalidate = async {
        // Once the call is at the source (not after a fixed time: a loaded machine may not
        // have sent it yet).
        for _ in 0..500 {
            if app.chaos.hits(UWV) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // What a delivered application does for its subject.
        app.state
            .gateway
            .cache
            .invalidate_subject(Bsn::parse(CITIZEN).unwrap());
    };
    let (d, ()) = futures::join!(first, invalidate);
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok", "{d}");
    // The answer was asked for before the invalidation: it is not served as fresh after it.
    app.chaos.clear(UWV);
    let d: Value = read().await.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok", "{d}");
    assert_eq!(app.agencies.hits(UWV), 2);
    // And the new answer is cached as usual.
    let d: Value = read().await.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "cached", "{d}");
}

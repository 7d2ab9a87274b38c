//! The source cache and the per-adapter resilience stack, end to end.

use std::sync::Arc;
use std::time::Duration;

use ketenportaal::adapter::{CallContext, SourceError};
use ketenportaal::bsn::Bsn;
use ketenportaal::model::Dur;
use ketenportaal::resilience::{self, Breaker, Call};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::helpers::{Behaviour, CITIZEN, Options, source, spawn_app_with, tweak_adapter};

const UWV: &str = "/uwv/UitkeringenService";
const BRP: &str = "/brp/haalcentraal/api/brp/personen";
const ALL: [&str; 5] = [
    BRP,
    "/gemeente/stuf-bg/BGService",
    UWV,
    "/svb/RegelingenService",
    "/belastingdienst/toeslagen/api/v1/toeslagen/_zoek",
];

const FAULT: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Server</faultcode><faultstring>Interne fout</faultstring></s:Fault></s:Body></s:Envelope>"#;

fn cached() -> Options {
    Options {
        cache: true,
        copy_config: false,
        tweak: None,
    }
}

#[tokio::test]
async fn fifty_concurrent_requests_for_one_subject_make_one_upstream_call_per_source() {
    let app = spawn_app_with(cached()).await;
    for p in ALL {
        app.chaos.set(p, Behaviour::Delay(150));
    }
    let token = app.citizen_token(CITIZEN);
    let requests = (0..50).map(|_| app.me_dossier(&token));
    let answers = futures::future::join_all(requests).await;
    for r in answers {
        assert_eq!(r.status(), 200);
        let d: Value = r.json().await.unwrap();
        assert_eq!(d["complete"], true);
    }
    for p in ALL {
        assert_eq!(app.chaos.hits(p), 1, "{p}");
    }
    // Counted at the agencies themselves too.
    assert_eq!(app.agencies.hits(UWV), 1);
}

#[tokio::test]
async fn errors_are_never_cached() {
    let app = spawn_app_with(cached()).await;
    let token = app.citizen_token(CITIZEN);
    app.chaos
        .set(UWV, Behaviour::Status(500, "text/xml", FAULT.into()));
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "error");
    assert_eq!(source(&d, "brp-personen")["status"], "ok");
    app.chaos.clear(UWV);
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(
        source(&d, "uwv-uitkeringen")["status"],
        "ok",
        "the error was not cached"
    );
    assert_eq!(source(&d, "brp-personen")["status"], "cached");
    assert!(source(&d, "brp-personen")["age_ms"].as_u64().is_some());
    assert_eq!(app.chaos.hits(UWV), 2);
    assert_eq!(app.chaos.hits(BRP), 1);
}

#[tokio::test]
async fn stale_if_error_serves_the_last_good_answer_marked_stale_with_its_age() {
    let app = spawn_app_with(Options {
        cache: true,
        copy_config: false,
        tweak: Some(Box::new(|c| {
            tweak_adapter(c, "uwv-uitkeringen", |d| {
                d.cache.ttl = Dur(Duration::from_millis(100));
                d.cache.stale_if_error = Dur(Duration::from_secs(3600));
            })
        })),
    })
    .await;
    let token = app.citizen_token(CITIZEN);
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok");
    tokio::time::sleep(Duration::from_millis(250)).await;
    app.chaos.set(
        UWV,
        Behaviour::Status(503, "text/plain", "onderhoud".into()),
    );
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    let s = source(&d, "uwv-uitkeringen");
    assert_eq!(s["status"], "stale", "{s}");
    assert!(s["age_ms"].as_u64().unwrap() >= 250, "{s}");
    assert!(s["fetched_at"].is_string());
    assert!(
        d["sections"]["uitkeringen"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["_source"] == "uwv-uitkeringen")
    );
    // A source with no stale window simply fails.
    app.chaos
        .set(BRP, Behaviour::Status(500, "application/json", "{}".into()));
    app.state
        .gateway
        .cache
        .invalidate_subject(Bsn::parse(CITIZEN).unwrap());
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(source(&d, "brp-personen")["status"], "error");
}

#[tokio::test]
async fn one_cache_entry_serves_two_views_without_leaking_fields() {
    let app = spawn_app_with(cached()).await;
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    let consulent = app.employee_token("gemeente-utrecht", &["gemeente-consulent"]);
    let body = json!({"bsn": CITIZEN, "view": "werkcoach"});
    let a: Value = app
        .employee_dossier(&coach, Some("re-integratie"), body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(source(&a, "uwv-uitkeringen")["status"], "ok");
    let body = json!({"bsn": CITIZEN, "view": "consulent-inkomen"});
    let b: Value = app
        .employee_dossier(&consulent, Some("bijstand-aanvraag"), body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(source(&b, "uwv-uitkeringen")["status"], "cached");
    assert_eq!(source(&b, "brp-personen")["status"], "cached");
    assert_eq!(app.chaos.hits(UWV), 1);
    // werkcoach: dossiernummer yes, leeftijd no; consulent: the other way round.
    assert!(
        a["sections"]["uitkeringen"][0]
            .get("dossiernummer")
            .is_some()
    );
    assert!(a["sections"]["persoon"].get("leeftijd").is_none());
    assert!(
        b["sections"]["uitkeringen"][0]
            .get("dossiernummer")
            .is_none()
    );
    assert_eq!(b["sections"]["persoon"]["leeftijd"], 45);
    // And a later werkcoach read from the cache still does not see leeftijd.
    let body = json!({"bsn": CITIZEN, "view": "werkcoach"});
    let c: Value = app
        .employee_dossier(&coach, Some("re-integratie"), body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(source(&c, "brp-personen")["status"], "cached");
    assert!(c["sections"]["persoon"].get("leeftijd").is_none());
}

#[tokio::test]
async fn no_cache_fetches_fresh_and_subject_invalidation_works() {
    let app = spawn_app_with(cached()).await;
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    let body = json!({"bsn": CITIZEN, "view": "werkcoach"});
    app.employee_dossier(&coach, Some("re-integratie"), body.clone())
        .await;
    let r = app
        .http
        .post(format!("{}/v1/dossiers", app.url))
        .bearer_auth(&coach)
        .header("X-Purpose", "re-integratie")
        .header("Cache-Control", "no-cache")
        .json(&body)
        .send()
        .await
        .unwrap();
    let d: Value = r.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok");
    assert_eq!(app.chaos.hits(UWV), 2);
    // The fresh answer refreshed the cache.
    let d: Value = app
        .employee_dossier(&coach, Some("re-integratie"), body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "cached");
    app.state
        .gateway
        .cache
        .invalidate_subject(Bsn::parse(CITIZEN).unwrap());
    let d: Value = app
        .employee_dossier(&coach, Some("re-integratie"), body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok");
    assert_eq!(app.chaos.hits(UWV), 3);
}

#[tokio::test]
async fn an_open_circuit_makes_no_upstream_calls_then_recovers_through_half_open() {
    let app = spawn_app_with(Options {
        cache: false,
        copy_config: false,
        tweak: Some(Box::new(|c| {
            tweak_adapter(c, "uwv-uitkeringen", |d| {
                d.resilience.circuit.consecutive_failures = 3;
                d.resilience.circuit.open_for = Dur(Duration::from_millis(1500));
            })
        })),
    })
    .await;
    let token = app.citizen_token(CITIZEN);
    app.chaos
        .set(UWV, Behaviour::Status(500, "text/xml", FAULT.into()));
    for _ in 0..3 {
        let d: Value = app.me_dossier(&token).await.json().await.unwrap();
        assert_eq!(source(&d, "uwv-uitkeringen")["status"], "error");
    }
    assert_eq!(app.chaos.hits(UWV), 3);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"ketenportaal_circuit_state{adapter="uwv-uitkeringen"} 2"#),
        "{metrics}"
    );
    for _ in 0..5 {
        let d: Value = app.me_dossier(&token).await.json().await.unwrap();
        let s = source(&d, "uwv-uitkeringen");
        assert_eq!(s["status"], "unavailable");
        assert_eq!(s["error"], "the source is unavailable (circuit open)");
        assert_eq!(d["complete"], false);
    }
    assert_eq!(app.chaos.hits(UWV), 3, "an open circuit makes no calls");
    // After open_for, one probe goes through; the source has recovered, so it closes.
    app.chaos.clear(UWV);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok");
    assert_eq!(app.chaos.hits(UWV), 4);
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"ketenportaal_circuit_state{adapter="uwv-uitkeringen"} 0"#));
}

#[tokio::test]
async fn retries_happen_only_on_reads() {
    let app = spawn_app_with(Options {
        cache: false,
        copy_config: false,
        tweak: Some(Box::new(|c| {
            tweak_adapter(c, "uwv-uitkeringen", |d| {
                d.resilience.retries = 2;
                d.resilience.retry_backoff = Dur(Duration::from_millis(5));
            })
        })),
    })
    .await;
    app.chaos.set(
        UWV,
        Behaviour::Status(503, "text/plain", "even geduld".into()),
    );
    let rt = app.state.gateway.runtime();
    let adapter = rt.adapters.get("uwv-uitkeringen").unwrap();
    let stack = resilience::build(
        adapter.client.clone(),
        Arc::new(Breaker::new(
            adapter.client.spec.def.resilience.circuit.clone(),
        )),
        app.state.gateway.metrics.clone(),
    );
    let call = |read| Call {
        ctx: CallContext {
            bsn: Bsn::parse(CITIZEN).unwrap(),
            traceparent: None,
        },
        deadline: (std::time::Instant::now() + Duration::from_secs(2)).into(),
        read,
    };
    let r = stack.clone().oneshot(call(false)).await;
    assert!(matches!(r, Err(SourceError::Http { status: 503, .. })));
    assert_eq!(app.chaos.hits(UWV), 1, "a write is never retried");
    let r = stack.clone().oneshot(call(true)).await;
    assert!(matches!(r, Err(SourceError::Http { status: 503, .. })));
    assert_eq!(app.chaos.hits(UWV), 4, "a read is tried 1 + 2 times");
    // A non-transient failure (a SOAP Fault) is not retried, read or not.
    app.chaos
        .set(UWV, Behaviour::Status(500, "text/xml", FAULT.into()));
    let r = stack.clone().oneshot(call(true)).await;
    assert!(matches!(r, Err(SourceError::Fault { .. })));
    assert_eq!(app.chaos.hits(UWV), 5);
    // Through the gateway: the dossier read is retried, then succeeds.
    app.chaos.clear(UWV);
    let d: Value = app
        .me_dossier(&app.citizen_token(CITIZEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok");
}

#[tokio::test]
async fn metrics_are_exposed_with_bounded_labels() {
    let app = spawn_app_with(cached()).await;
    let token = app.citizen_token(CITIZEN);
    app.me_dossier(&token).await;
    app.me_dossier(&token).await;
    let r = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = r.text().await.unwrap();
    for needle in [
        "ketenportaal_source_call_duration_seconds_count{adapter=\"uwv-uitkeringen\"} 1",
        "ketenportaal_source_results_total{adapter=\"brp-personen\",status=\"ok\"} 1",
        "ketenportaal_source_results_total{adapter=\"brp-personen\",status=\"cached\"} 1",
        "ketenportaal_cache_lookups_total{adapter=\"toeslagen\",status=\"hit\"} 1",
        "ketenportaal_cache_lookups_total{adapter=\"toeslagen\",status=\"miss\"} 1",
        "ketenportaal_request_duration_seconds_count{route=\"/v1/me/dossier\",code=\"2xx\"} 2",
        "ketenportaal_gateway_overhead_seconds_count{route=\"/v1/me/dossier\",code=\"2xx\"} 2",
        "ketenportaal_circuit_state{adapter=\"svb-regelingen\"} 0",
        "ketenportaal_cache_entries",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    assert!(!m.contains(CITIZEN), "a BSN never appears in metrics");
}

/// Collects what the gateway logs on this test's thread (a current-thread runtime runs the
/// gateway's tasks here too).
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_source_outage_is_logged_once_per_interval_not_once_per_request() {
    let logs = LogBuf::default();
    let w = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app_with(Options::default()).await;
    app.chaos.set(
        "/uwv/UitkeringenService",
        Behaviour::Status(500, "text/plain", "storing".into()),
    );
    let token = app.citizen_token(CITIZEN);
    for _ in 0..200 {
        let d: Value = app.me_dossier(&token).await.json().await.unwrap();
        assert_ne!(source(&d, "uwv-uitkeringen")["status"], "ok");
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Source failed") && l.contains("uwv-uitkeringen"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    // The metrics still count every one.
    let metrics = app.metrics().await;
    let counted: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("ketenportaal_source_results")
                && l.contains("uwv-uitkeringen")
                && !l.contains("status=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, 200.0, "{metrics}");
}

#[tokio::test]
async fn odd_answers_are_named_and_redirects_count_against_the_circuit() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|c| {
            tweak_adapter(c, "uwv-uitkeringen", |d| {
                d.resilience.circuit.consecutive_failures = 3;
                d.resilience.circuit.open_for = Dur(Duration::from_secs(60));
            })
        })),
        ..Options::default()
    })
    .await;
    let token = app.citizen_token(CITIZEN);
    let toeslagen = "/belastingdienst/toeslagen/api/v1/toeslagen/_zoek";
    for (b, want) in [
        (
            Behaviour::Status(204, "application/json", String::new()),
            "the source answered HTTP 204 without a body, where a JSON answer was expected",
        ),
        (
            Behaviour::Status(
                200,
                "text/html; charset=utf-8",
                "<html><body>Onderhoud</body></html>".into(),
            ),
            "the source answered HTTP 200 with `text/html`, not JSON",
        ),
    ] {
        app.chaos.set(toeslagen, b);
        let d: Value = app.me_dossier(&token).await.json().await.unwrap();
        assert_eq!(source(&d, "toeslagen")["error"], want, "{d}");
    }
    app.chaos
        .set(UWV, Behaviour::Status(200, "text/html", "<html/>".into()));
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(
        source(&d, "uwv-uitkeringen")["error"],
        "the source answered HTTP 200 with `text/html`, not a SOAP envelope",
        "{d}"
    );
    // A good answer resets the run of failures; then three redirects in a row open the
    // circuit: a 3xx is a failure like a 5xx.
    app.chaos.clear(UWV);
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok", "{d}");
    app.chaos
        .set(UWV, Behaviour::Redirect("http://elders.example/".into()));
    for _ in 0..3 {
        let d: Value = app.me_dossier(&token).await.json().await.unwrap();
        let e = source(&d, "uwv-uitkeringen")["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("HTTP 302") && e.contains("redirects are not followed"),
            "{e}"
        );
    }
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(
        source(&d, "uwv-uitkeringen")["status"],
        "unavailable",
        "{d}"
    );
}

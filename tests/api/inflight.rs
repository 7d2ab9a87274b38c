//! The gateway-wide budget for source answers in flight (`limits.max_inflight_response_bytes`):
//! a call that would pass it is refused at once, with a status naming the budget, and it is not
//! held against the source. Functional, not timed.

use std::time::Duration;

use ketenportaal::model::{ByteSize, Dur};
use serde_json::Value;

use crate::helpers::{Behaviour, CITIZEN, Options, source, spawn_app_with, tweak_adapter};

const UWV: &str = "/uwv/UitkeringenService";

/// No cache (every read calls the UWV); its breaker opens after two failures in a row.
fn options(budget: u64) -> Options {
    Options {
        cache: false,
        copy_config: false,
        tweak: Some(Box::new(move |c| {
            c.gateway.limits.max_inflight_response_bytes = ByteSize(budget);
            tweak_adapter(c, "uwv-uitkeringen", |d| {
                d.resilience.circuit.consecutive_failures = 2;
                d.resilience.circuit.open_for = Dur(Duration::from_secs(30));
            })
        })),
    }
}

#[tokio::test]
async fn a_call_that_would_pass_the_budget_is_refused_and_not_held_against_the_source() {
    let budget = 8 << 20;
    let app = spawn_app_with(options(budget)).await;
    let token = app.citizen_token(CITIZEN);
    // Other answers in flight hold all but 1 KiB of the budget: the UWV's answer (a few KiB,
    // counted twice while mapped) does not fit.
    let inflight = &app.state.gateway.inflight;
    let mut others = inflight.reservation(None);
    others.hold(budget - 1024).unwrap();
    for _ in 0..3 {
        let d: Value = app.me_dossier(&token).await.json().await.unwrap();
        let s = source(&d, "uwv-uitkeringen");
        assert_eq!(s["status"], "error", "{s}");
        assert_eq!(
            s["error"],
            "not read: answers in flight already fill the gateway's budget of 8388608 bytes (limits.max_inflight_response_bytes)"
        );
        assert_eq!(d["complete"], false);
    }
    let m = app.metrics().await;
    assert!(
        m.contains(r#"ketenportaal_source_call_errors_total{adapter="uwv-uitkeringen",status="over_budget"} 3"#),
        "its own kind: {m}"
    );
    assert!(
        m.contains(r#"ketenportaal_circuit_state{adapter="uwv-uitkeringen"} 0"#),
        "three refusals are not source failures: {m}"
    );
    assert!(
        m.contains(&format!(
            "ketenportaal_inflight_response_bytes {}",
            budget - 1024
        )),
        "refused calls hold nothing: {m}"
    );
    // Room again: the source answers.
    drop(others);
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok", "{d}");
    assert_eq!(inflight.used(), 0, "every call gave its bytes back");
}

#[tokio::test]
async fn an_answer_without_content_length_is_cut_off_when_it_outgrows_the_budget() {
    // 1 MiB of budget; the UWV streams 3 MiB without a Content-Length (under its 4 MiB cap).
    let app = spawn_app_with(options(1 << 20)).await;
    app.chaos.set(UWV, Behaviour::Stream(3 << 20));
    let token = app.citizen_token(CITIZEN);
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    let s = source(&d, "uwv-uitkeringen");
    assert_eq!(s["status"], "error", "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .contains("limits.max_inflight_response_bytes"),
        "{s}"
    );
    assert_eq!(app.state.gateway.inflight.used(), 0, "nothing is left held");
}

#[tokio::test]
async fn one_organisation_whose_answers_fill_its_share_leaves_the_others_room() {
    let budget = 8 << 20;
    let app = spawn_app_with(options(budget)).await;
    let token = app.citizen_token(CITIZEN);
    let inflight = &app.state.gateway.inflight;
    assert_eq!(
        inflight.share_limit(),
        budget / 4,
        "a quarter of the budget by default"
    );
    // UWV's answers in flight hold all but 1 KiB of its share: the whole budget has room.
    let uwv = inflight.share(&std::sync::Arc::from("uwv"));
    let mut held = inflight.reservation(Some(&uwv));
    held.hold(budget / 4 - 1024).unwrap();
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    let s = source(&d, "uwv-uitkeringen");
    assert_eq!(s["status"], "error", "{s}");
    assert_eq!(
        s["error"],
        "not read: answers in flight from `uwv` already fill its share of the gateway's budget, 2097152 bytes (limits.max_inflight_percent_per_organisation of limits.max_inflight_response_bytes)"
    );
    for other in ["svb-regelingen", "brp-personen"] {
        assert_eq!(source(&d, other)["status"], "ok", "{other}: {d}");
    }
    let m = app.metrics().await;
    assert!(
        m.contains(r#"ketenportaal_circuit_state{adapter="uwv-uitkeringen"} 0"#),
        "a refusal is not the source's failure: {m}"
    );
    drop(held);
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok", "{d}");
    assert_eq!(
        (inflight.used(), uwv.used()),
        (0, 0),
        "every call gave its bytes back"
    );
}

#[tokio::test]
async fn a_source_that_announces_a_large_answer_and_drips_it_holds_only_what_it_sent() {
    // The UWV announces 3 MiB, sends 64 KiB and waits: the call holds what has arrived (and
    // its allowance for the records), not twice the announced 3 MiB.
    let app = spawn_app_with(options(64 << 20)).await;
    app.chaos.set(UWV, Behaviour::Drip(3 << 20, 600));
    let token = app.citizen_token(CITIZEN);
    let inflight = app.state.gateway.inflight.clone();
    let read = app.me_dossier(&token);
    tokio::pin!(read);
    let mut most = 0;
    let answer = loop {
        tokio::select! {
            r = &mut read => break r,
            () = tokio::time::sleep(Duration::from_millis(5)) => most = most.max(inflight.used()),
        }
    };
    assert!(answer.status().is_success());
    assert!(most > 0, "the dripping answer was seen in flight");
    assert!(
        most <= 1 << 20,
        "held {most} bytes for 64 KiB received (announced: 3 MiB)"
    );
    assert_eq!(inflight.used(), 0);
}

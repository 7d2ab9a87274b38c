//! Themaportaal: themes and life events evaluated on the caller's view of the dossier.

use serde_json::{Value, json};

use crate::helpers::{CITIZEN, spawn_app};

fn service<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
}

#[tokio::test]
async fn the_catalogue_is_public() {
    let app = spawn_app().await;
    let v: Value = app
        .http
        .get(format!("{}/v1/themes", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["themes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["18-jaar-worden", "aow-leeftijd-bereiken", "werkloos-worden"]
    );
    let t: Value = app
        .http
        .get(format!("{}/v1/themes/aow-leeftijd-bereiken", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        service(&t, "aow-aanvragen")["organisation_name"],
        "Sociale Verzekeringsbank"
    );
    let orgs: std::collections::BTreeSet<String> = v["themes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["organisation"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(orgs.len() >= 3, "{orgs:?}");
    assert_eq!(
        app.http
            .get(format!("{}/v1/themes/bestaat-niet", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn aow_is_relevant_at_66_and_not_at_30_with_the_reasons() {
    let app = spawn_app().await;
    let theme = |bsn: &str| {
        app.http
            .get(format!("{}/v1/me/themes/aow-leeftijd-bereiken", app.url))
            .bearer_auth(app.citizen_token(bsn))
            .send()
    };
    let old: Value = theme("999990019").await.unwrap().json().await.unwrap();
    let aow = service(&old, "aow-aanvragen");
    assert_eq!(aow["relevant"], true, "{old}");
    assert_eq!(
        aow["reason"],
        "U bent 66 jaar; de AOW-leeftijd nadert of is bereikt."
    );
    assert_eq!(old["life_events"][0]["id"], "aow-leeftijd-nadert");
    let young: Value = theme("999991772").await.unwrap().json().await.unwrap();
    let aow = service(&young, "aow-aanvragen");
    assert_eq!(aow["relevant"], false);
    assert_eq!(
        aow["reason"],
        "U bent 30 jaar; de AOW-leeftijd is nog ver weg."
    );
    assert!(young["life_events"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn life_events_are_detected_in_the_dossier() {
    let app = spawn_app().await;
    let events = |bsn: &str| {
        app.http
            .get(format!("{}/v1/me/life-events", app.url))
            .bearer_auth(app.citizen_token(bsn))
            .send()
    };
    let ids = |v: &Value| -> Vec<String> {
        v["life_events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let v: Value = events(CITIZEN).await.unwrap().json().await.unwrap();
    assert_eq!(ids(&v), ["ww-eindigt-binnenkort", "ww-lopend"]);
    let bijstand = v["life_events"][0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "bijstand-aanvragen")
        .unwrap();
    assert_eq!(bijstand["relevant"], true);
    let v: Value = events("999992958").await.unwrap().json().await.unwrap();
    assert_eq!(ids(&v), ["18-jaar-worden"]);
    let v: Value = events("999990019").await.unwrap().json().await.unwrap();
    assert_eq!(ids(&v), ["aow-leeftijd-nadert"]);
}

#[tokio::test]
async fn employees_evaluate_themes_for_a_client_with_a_purpose() {
    let app = spawn_app().await;
    let consulent = app.employee_token("gemeente-utrecht", &["gemeente-consulent"]);
    let ask = |purpose: Option<&'static str>| {
        let mut r = app
            .http
            .post(format!("{}/v1/dossiers/themes/werkloos-worden", app.url))
            .bearer_auth(&consulent)
            .json(&json!({"bsn": CITIZEN, "view": "consulent-inkomen"}));
        if let Some(p) = purpose {
            r = r.header("X-Purpose", p);
        }
        r.send()
    };
    let v: Value = ask(Some("bijstand-aanvraag"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(service(&v, "bijstand-aanvragen")["relevant"], true);
    assert_eq!(service(&v, "ww-aanvragen")["relevant"], false);
    assert_eq!(ask(None).await.unwrap().status(), 403);
    let r = app
        .http
        .post(format!("{}/v1/dossiers/life-events", app.url))
        .bearer_auth(&consulent)
        .header("X-Purpose", "bijstand-aanvraag")
        .json(&json!({"bsn": "999990019", "view": "consulent-inkomen"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The werkcoach view lacks `aow_datum`: the rule cannot see it, so nothing is detected.
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    let as_coach = |path: &str| {
        app.http
            .post(format!("{}{path}", app.url))
            .bearer_auth(&coach)
            .header("X-Purpose", "re-integratie")
            .json(&json!({"bsn": "999990019", "view": "werkcoach"}))
            .send()
    };
    let v: Value = as_coach("/v1/dossiers/life-events")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["life_events"].as_array().unwrap().is_empty(), "{v}");
    // Nor is a service decided on a section the view does not show: `inkomen` is not an
    // empty list to the werkcoach, it is unknown.
    let v: Value = as_coach("/v1/dossiers/themes/aow-leeftijd-bereiken")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let aio = service(&v, "aio-aanvragen");
    assert_eq!(aio["decided"], false, "{v}");
    assert_eq!(aio["relevant"], false, "{v}");
}

#[tokio::test]
async fn a_rule_that_cannot_be_decided_says_so_in_dutch_and_keeps_the_rule_error_out() {
    let app = crate::helpers::spawn_app().await;
    // No source of `persoon` answers, so `persoon.leeftijd >= 66` has nothing to compare.
    for path in [
        "/brp/haalcentraal/api/brp/personen",
        "/gemeente/stuf-bg/BGService",
        "/uwv/UitkeringenService",
        "/svb/RegelingenService",
    ] {
        app.chaos.set(
            path,
            crate::helpers::Behaviour::Status(500, "text/plain", "kapot".into()),
        );
    }
    let v: Value = app
        .http
        .get(format!("{}/v1/me/themes/aow-leeftijd-bereiken", app.url))
        .bearer_auth(app.citizen_token("999990019"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let aow = service(&v, "aow-aanvragen");
    assert_eq!(aow["relevant"], false, "{v}");
    assert_eq!(aow["decided"], false, "{v}");
    let reason = aow["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("Dit kunnen we nu niet beoordelen"),
        "{reason}"
    );
    for cel in ["overload", "null_type", "_>=_"] {
        assert!(!v.to_string().contains(cel), "{cel} in {v}");
    }
}

//! Taking up services: applications stored before 202, validated, idempotent, delivered to the
//! owning organisation over REST and SOAP, retried while it is down, exactly once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{CITIZEN, Options, source, spawn_app, spawn_app_with};
use ketenportaal::demo::intake::{UWV_AANVRAAG_PATH, ZAKEN_PATH};

fn bijstand() -> Value {
    json!({"service": "bijstand-aanvragen", "data": {"gewenste_ingangsdatum": "2027-01-16", "woonsituatie": "alleenstaand", "toelichting": "WW eindigt"}})
}

#[tokio::test]
async fn an_application_is_accepted_then_delivered_over_rest_once_per_key() {
    let app = spawn_app().await;
    let token = app.citizen_token(CITIZEN);
    let r = app.apply(&token, Some("aanvraag-1"), bijstand()).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["status"], "received");
    // The same key again: the same application, not a second one.
    let again: Value = app
        .apply(&token, Some("aanvraag-1"), bijstand())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], first["id"]);
    let v = app.settled(&token, &location).await;
    assert_eq!(v["status"], "delivered", "{v}");
    assert!(v["reference"].as_str().unwrap().starts_with("ZAAK-2026-"));
    assert_eq!(v["title"], "Bijstand (Participatiewet) aanvragen");
    assert_eq!(app.agencies.intake().distinct(ZAKEN_PATH), 1);
    // It is in the audit log.
    // Read from the file: wait until the index holds every acknowledged record.
    app.store.settle().await.unwrap();
    let c = rusqlite::Connection::open(app.dir.path().join("audit.sqlite")).unwrap();
    let n: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE kind = 'application.submit'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    // The dossier's `zaken` section shows it, with its status and reference.
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    let zaak = &d["sections"]["zaken"][0];
    assert_eq!(zaak["id"], first["id"]);
    assert_eq!(zaak["status"], "delivered");
    assert_eq!(zaak["reference"], v["reference"]);
    assert_eq!(source(&d, "ketenportaal")["status"], "ok");
    // Without a key there is no application.
    assert_eq!(app.apply(&token, None, bijstand()).await.status(), 400);
}

#[tokio::test]
async fn a_key_used_again_with_another_body_is_a_422_and_changes_nothing() {
    let app = spawn_app().await;
    let token = app.citizen_token(CITIZEN);
    let r = app.apply(&token, Some("aanvraag-2"), bijstand()).await;
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    let mut other = bijstand();
    other["data"]["toelichting"] = json!("iets anders");
    let r = app.apply(&token, Some("aanvraag-2"), other).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .ends_with("idempotency-key-reused"),
        "{p}"
    );
    assert_eq!(p["invalidParams"][0]["name"], "Idempotency-Key", "{p}");
    // The first application is as it was; the same body still gets it back.
    let location = first["location"].as_str().unwrap();
    let stored = app.get_json(location, Some(&token)).await;
    assert_eq!(stored["data"]["toelichting"], "WW eindigt", "{stored}");
    let again = app.apply(&token, Some("aanvraag-2"), bijstand()).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
}

#[tokio::test]
async fn a_schema_violation_gets_a_422_naming_each_field() {
    let app = spawn_app().await;
    let token = app.citizen_token(CITIZEN);
    let body = json!({"service": "ww-aanvragen", "data": {"laatste_werkdag": "gisteren", "iban": "NL00", "extra": 1}});
    let r = app.apply(&token, Some("k"), body).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    let names: Vec<&str> = p["invalidParams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"data/laatste_werkdag"), "{p}");
    assert!(names.contains(&"data/iban"), "{p}");
    assert!(
        names.contains(&"data"),
        "missing `reden` and the extra property: {p}"
    );
    let reasons = p.to_string();
    assert!(reasons.contains("reden"), "{p}");
    assert_eq!(
        app.store
            .applications_of(ketenportaal::bsn::Bsn::parse(CITIZEN).unwrap(), 20)
            .await
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn soap_delivery_and_rejection() {
    let app = spawn_app().await;
    let token = app.citizen_token("999991772");
    let ww = json!({"service": "ww-aanvragen", "data": {"laatste_werkdag": "2026-11-30", "reden": "einde-contract", "iban": "NL91ABNA0417164300"}});
    let r = app.apply(&token, Some("ww-1"), ww).await;
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let v = app.settled(&token, &loc).await;
    assert_eq!(v["status"], "delivered", "{v}");
    assert!(
        v["reference"]
            .as_str()
            .unwrap()
            .starts_with("UWV-AANV-2026-")
    );
    assert_eq!(app.agencies.intake().distinct(UWV_AANVRAAG_PATH), 1);
    // The organisation refuses: final, with its reason.
    let refused = json!({"service": "ww-aanvragen", "data": {"laatste_werkdag": "2026-11-30", "reden": "ontslag", "iban": "NL91ABNA0417164300", "toelichting": "WEIGER"}});
    let r = app.apply(&token, Some("ww-2"), refused).await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let v = app.settled(&token, &loc).await;
    assert_eq!(v["status"], "rejected");
    assert_eq!(v["reason"], "De aanvraag is niet ontvankelijk.");
    // Only the owner (or the owning organisation's employees) can see it.
    let other = app.citizen_token(CITIZEN);
    assert_eq!(
        app.http
            .get(format!("{}{loc}", app.url))
            .bearer_auth(other)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let uwv = app.employee_token("uwv", &["uwv-werkcoach"]);
    let read = |purpose: Option<&'static str>| {
        let mut r = app.http.get(format!("{}{loc}", app.url)).bearer_auth(&uwv);
        if let Some(p) = purpose {
            r = r.header("X-Purpose", p);
        }
        r.send()
    };
    // An employee reads an application for a stated purpose, and the read is on record.
    let r = read(None).await.unwrap();
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("X-Purpose"), "{p}");
    assert_eq!(read(Some(" ")).await.unwrap().status(), 403);
    // Any words are not a purpose: one of the employee views open to them must allow it.
    assert_eq!(read(Some("nieuwsgierig")).await.unwrap().status(), 403);
    let no_role = app.employee_token("uwv", &[]);
    let r = app
        .http
        .get(format!("{}{loc}", app.url))
        .bearer_auth(&no_role)
        .header("X-Purpose", "re-integratie")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(read(Some("re-integratie")).await.unwrap().status(), 200);
    let id = loc.rsplit('/').next().unwrap();
    let records = app
        .store
        .by_subject(ketenportaal::bsn::Bsn::parse("999991772").unwrap(), 100)
        .await
        .unwrap();
    let reads: Vec<_> = records
        .iter()
        .filter(|(_, r)| r.kind == "application.read" && r.actor_type == "employee")
        .collect();
    assert_eq!(reads.len(), 1, "one employee read on record: {records:?}");
    let (_, r) = reads[0];
    assert_eq!(r.purpose.as_deref(), Some("re-integratie"));
    assert_eq!(r.actor_organisation.as_deref(), Some("uwv"));
    assert_eq!(r.details.as_ref().unwrap()["application"], id);
    // The citizen sees it in their access log.
    let log = app.get_json("/v1/me/access-log", Some(&token)).await;
    let entries = log["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["by"] == "medewerker"
            && e["organisation"] == "uwv"
            && e["purpose"] == "re-integratie"
            && e["sections"] == json!(["zaken"])),
        "{log}"
    );
    let gemeente = app.employee_token("gemeente-utrecht", &["gemeente-consulent"]);
    assert_eq!(
        app.http
            .get(format!("{}{loc}", app.url))
            .bearer_auth(gemeente)
            .header("X-Purpose", "bijstand-aanvraag")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn delivery_retries_while_the_organisation_is_down_and_invalidates_the_cache() {
    let app = spawn_app_with(Options {
        cache: true,
        ..Options::default()
    })
    .await;
    let token = app.citizen_token(CITIZEN);
    app.me_dossier(&token).await;
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "cached");
    app.agencies.intake().set_down(true);
    let r = app.apply(&token, Some("down-1"), bijstand()).await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    // Wait for a few failed attempts.
    let started = Instant::now();
    loop {
        let v: Value = app
            .http
            .get(format!("{}{loc}", app.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["attempts"].as_u64().unwrap() >= 2 {
            assert_eq!(v["status"], "received");
            assert!(v["reason"].as_str().unwrap().contains("503"), "{v}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no retries seen: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.agencies.intake().set_down(false);
    let v = app.settled(&token, &loc).await;
    assert_eq!(v["status"], "delivered", "{v}");
    assert_eq!(app.agencies.intake().distinct(ZAKEN_PATH), 1);
    assert!(app.agencies.intake().requests() >= 3);
    // Delivery dropped the subject's cached answers: the next read goes to the sources.
    let d: Value = app.me_dossier(&token).await.json().await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok");
}

#[tokio::test]
async fn queued_applications_survive_kill_9_and_arrive_exactly_once() {
    let agencies = ketenportaal::demo::agencies::AgencyServer::start(
        &crate::helpers::root().join("fixtures/agencies"),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    agencies.intake().set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.sqlite");
    let env_vars = [
        ("KETENPORTAAL_AGENCIES", agencies.base_url()),
        (
            "KETENPORTAAL_DEMO_SECRET",
            crate::helpers::SECRET.to_string(),
        ),
    ];
    let env_vars: Vec<(&str, &str)> = env_vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut gw = crate::helpers::start_demo(&store, None, &env_vars);
    let url = gw.url.clone();
    let env = ketenportaal::demo::demo_env(agencies.base_url(), crate::helpers::SECRET.into());
    let config = ketenportaal::config::Config::load_with_env(
        &crate::helpers::root().join("config/demo.yaml"),
        &env,
    )
    .unwrap();
    let http = reqwest::Client::new();
    let people = [
        "999993653",
        "999990019",
        "999991772",
        "999992958",
        "999993847",
    ];
    let mut submitted = Vec::new();
    for (i, bsn) in people.iter().cycle().take(10).enumerate() {
        let token =
            ketenportaal::demo::mint(&config, &ketenportaal::demo::citizen(bsn).unwrap(), 600)
                .unwrap();
        let body = if i % 2 == 0 {
            bijstand()
        } else {
            json!({"service": "ww-aanvragen", "data": {"laatste_werkdag": "2026-11-30", "reden": "ontslag", "iban": "NL91ABNA0417164300"}})
        };
        let r = http
            .post(format!("{url}/v1/me/applications"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("kill9-{i}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        submitted.push((token, r.headers()["location"].to_str().unwrap().to_string()));
    }
    // The organisations are down: attempts fail and are queued for retry.
    let started = Instant::now();
    while agencies.intake().requests() < 10 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.kill(); // SIGKILL, mid-retry
    let mut gw = crate::helpers::start_demo(&store, None, &env_vars);
    let url = gw.url.clone();
    agencies.intake().set_down(false);
    for (token, loc) in &submitted {
        let started = Instant::now();
        loop {
            let v: Value = http
                .get(format!("{url}{loc}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["status"] == "delivered" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "not delivered: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    gw.kill();
    let intake = agencies.intake();
    let arrived = intake.distinct(ZAKEN_PATH) + intake.distinct(UWV_AANVRAAG_PATH);
    eprintln!(
        "kill -9 with 10 queued applications: {} delivery requests, {arrived} distinct applications arrived",
        intake.requests()
    );
    assert_eq!(arrived, 10, "every application exactly once");
}

#[tokio::test]
async fn the_zaken_section_lists_open_cases_first_then_the_latest_within_its_limit() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|c| c.gateway.store.zaken_limit = 5)),
        ..Options::default()
    })
    .await;
    let start = chrono::Utc::now() - chrono::Duration::days(100);
    // 40 applications, three of them still open (and not due, so delivery leaves them).
    for n in 0..40 {
        let at = (start + chrono::Duration::days(n)).to_rfc3339();
        let open = [2, 17, 30].contains(&n);
        let a = ketenportaal::store::Application {
            id: format!("zaak-{n:02}"),
            service: "bijstand-aanvragen".into(),
            organisation: "gemeente-utrecht".into(),
            bsn: CITIZEN.into(),
            actor: format!("digid:{CITIZEN}"),
            idempotency_key: format!("k-{n}"),
            data: json!({}),
            status: "received".into(),
            reference: None,
            reason: None,
            attempts: 0,
            next_attempt_at: (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
            created_at: at.clone(),
            updated_at: at,
        };
        let mut submit = ketenportaal::audit::AccessRecord::new(
            "application.submit",
            None,
            &ketenportaal::trace::TraceContext::new_root(),
            None,
        );
        submit.outcome = "accepted".into();
        let (mut stored, _) = app.store.insert_application(a, submit).await.unwrap();
        if !open {
            stored.status = "delivered".into();
            app.store.update_application(stored).await.unwrap();
        }
    }
    let d: Value = app
        .me_dossier(&app.citizen_token(CITIZEN))
        .await
        .json()
        .await
        .unwrap();
    let listed: Vec<(&str, bool)> = d["sections"]["zaken"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| (z["id"].as_str().unwrap(), z["open"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("zaak-30", true),
            ("zaak-17", true),
            ("zaak-02", true),
            ("zaak-39", false),
            ("zaak-38", false)
        ]
    );
}

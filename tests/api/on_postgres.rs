//! The whole gateway on the PostgreSQL store, in process (as `serve --store postgres://...`
//! builds it): with PostgreSQL down, reads and applications are refused with 503 and /readyz
//! says not ready; when it is back, everything works again without a restart. And two
//! gateways on one database: a partner's registration on one is served by the other.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{CITIZEN, Launch, Options, SECRET, spawn_app_launched};
use crate::postgres;
use ketenportaal::store::StoreLocation;

fn bijstand() -> Value {
    json!({"service": "bijstand-aanvragen", "data": {"gewenste_ingangsdatum": "2027-01-16", "woonsituatie": "alleenstaand"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_down_reads_and_applications_get_503_and_all_recovers_without_a_restart() {
    let Some(pg) = postgres::postgres() else {
        return;
    };
    let url = pg.fresh_database("down").await;
    let app = spawn_app_launched(
        Options {
            tweak: Some(Box::new(|c| {
                c.gateway.store.timeout.0 = Duration::from_millis(500)
            })),
            ..Default::default()
        },
        Launch {
            store: Some(StoreLocation::Postgres(url)),
            ..Default::default()
        },
    )
    .await;
    let citizen = app.citizen_token(CITIZEN);
    assert_eq!(app.me_dossier(&citizen).await.status(), 200);
    let apply = |key: &'static str| {
        app.http
            .post(format!("{}/v1/me/applications", app.url))
            .bearer_auth(&citizen)
            .header("Idempotency-Key", key)
            .json(&bijstand())
            .send()
    };
    assert_eq!(apply("before").await.unwrap().status(), 202);

    pg.kill();
    let started = Instant::now();
    let r = app.me_dossier(&citizen).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let p: Value = r.json().await.unwrap();
    assert!(
        p.get("sections").is_none(),
        "no data without its record: {p}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let r = apply("while-down").await.unwrap();
    assert_eq!(r.status(), 503, "refused, not accepted and lost");
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "store-unavailable");

    pg.start();
    let back = Instant::now();
    loop {
        if app.me_dossier(&citizen).await.status() == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(15), "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // The application refused while PostgreSQL was down is accepted when sent again.
    assert_eq!(apply("while-down").await.unwrap().status(), 202);
    // And the one accepted before is still there, once.
    let r = apply("before").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_on_one_gateway_is_served_by_another_on_the_same_database_within_a_second() {
    let Some(pg) = postgres::shared() else {
        return;
    };
    let url = pg.fresh_database("two").await;
    let launch = || Launch {
        store: Some(StoreLocation::Postgres(url.clone())),
        ..Default::default()
    };
    let a = spawn_app_launched(Options::default(), launch()).await;
    let b = spawn_app_launched(Options::default(), launch()).await;
    let body = crate::helpers::uwv_variant("uwv-elders");
    let started = Instant::now();
    let r = a
        .http
        .put(format!("{}/v1/adapters/uwv-elders", a.url))
        .header("X-Api-Key", ketenportaal::demo::demo_key(SECRET, "uwv"))
        .header("content-type", "application/yaml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let version: Value = r.json().await.unwrap();
    let version = version["config_version"].as_str().unwrap().to_string();
    loop {
        let got = b
            .http
            .get(format!("{}/v1/adapters/uwv-elders", b.url))
            .header("X-Api-Key", ketenportaal::demo::demo_key(SECRET, "uwv"))
            .send()
            .await
            .unwrap();
        if got.status() == 200 && b.state.gateway.runtime().config.version == version {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not served by b within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Both instances on the status page, each with the same config version.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let status: Value = a
        .http
        .get(format!("{}/admin/status", a.url))
        .bearer_auth(ketenportaal::demo::demo_key(SECRET, "admin"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cluster = status["cluster"].as_array().unwrap();
    assert!(cluster.len() >= 2, "{status}");
    assert!(
        cluster
            .iter()
            .all(|i| i["config_version"] == version.as_str()),
        "{status}"
    );
    // Another organisation cannot take the id over from either instance.
    let r = b
        .http
        .put(format!("{}/v1/adapters/uwv-elders", b.url))
        .header("X-Api-Key", ketenportaal::demo::demo_key(SECRET, "svb"))
        .header("content-type", "application/yaml")
        .body("id: uwv-elders\norganisation: svb\n")
        .send()
        .await
        .unwrap();
    assert!(r.status() == 403 || r.status() == 422, "{}", r.status());
}

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

/// Loads the demo config with its `store:` section replaced by `store` (YAML lines); the
/// problems, if any.
fn load_with_store(store: &str) -> Result<ketenportaal::config::Config, String> {
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::copy_repo_dirs(dir.path(), &["config", "adapters"]);
    let file = dir.path().join("config/demo.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    // The demo's whole `store:` section, up to the next one.
    let start = text.find("\nstore:\n").unwrap() + 1;
    let end = start + text[start..].find("\naudit:").unwrap() + 1;
    let text = format!("{}store:\n{store}\n{}", &text[..start], &text[end..]);
    std::fs::write(&file, text).unwrap();
    let env = ketenportaal::demo::demo_env("http://127.0.0.1:9".into(), SECRET.into());
    ketenportaal::config::Config::load_with_env(&file, &env).map_err(|e| e.to_string())
}

#[test]
fn the_config_refuses_a_postgres_store_without_a_url_and_a_url_that_is_not_postgres() {
    let c =
        load_with_store("  backend: postgres\n  url: postgres://kp:geheim@db:5432/kp\n  path: x\n")
            .unwrap();
    assert_eq!(
        ketenportaal::app::store_location(&c),
        StoreLocation::Postgres("postgres://kp:geheim@db:5432/kp".into())
    );
    let e = load_with_store("  backend: postgres\n  path: x\n").unwrap_err();
    assert!(
        e.contains("`store.backend: postgres` needs `store.url`"),
        "{e}"
    );
    let e = load_with_store("  backend: postgres\n  url: mysql://kp:geheim@db/kp\n  path: x\n")
        .unwrap_err();
    assert!(e.contains("`store.url` must be a postgres:// URL"), "{e}");
    assert!(!e.contains("geheim"), "no password in the message: {e}");
    let e = load_with_store("  url: postgres://db/kp\n  path: x\n").unwrap_err();
    assert!(e.contains("`store.backend` is `sqlite`"), "{e}");
    let e = load_with_store("  backend: postgres\n  url: postgres://db/kp\n  pool_size: 0\n  lease: 10ms\n  timeout: 1ms\n  commit_delay: 50ms\n  path: x\n")
        .unwrap_err();
    for want in [
        "`store.pool_size` must be between 1 and 256",
        "`store.lease` must be at least 1s",
        "`store.timeout` must be at least 50ms",
        "`store.commit_delay` must be at most 10ms",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
    // No wait at all is allowed (the sync is then shared only by what came during the last).
    let c = load_with_store("  commit_delay: 0s\n  path: x\n").unwrap();
    assert_eq!(c.gateway.store.commit_delay.0, std::time::Duration::ZERO);
    let e = load_with_store("  backend: mongodb\n  path: x\n").unwrap_err();
    assert!(e.contains("mongodb"), "{e}");
}

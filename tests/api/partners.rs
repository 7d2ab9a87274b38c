//! Credentials: partners are scoped to their own organisation; operators need the admin token.

use serde_json::Value;

use crate::helpers::{SECRET, spawn_app, spawn_app_with};
use ketenportaal::demo::demo_key;

#[tokio::test]
async fn a_partner_sees_only_its_own_adapters_and_gets_403_on_another_organisations() {
    let app = spawn_app().await;
    let uwv_key = demo_key(SECRET, "uwv");
    let get = |path: &str, key: Option<&str>| {
        let mut r = app.http.get(format!("{}{path}", app.url));
        if let Some(k) = key {
            r = r.header("X-Api-Key", k);
        }
        r.send()
    };
    let r = get("/v1/adapters", Some(&uwv_key)).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["organisation"], "uwv");
    let ids: Vec<&str> = v["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["uwv-uitkeringen"]);

    let r = get("/v1/adapters/uwv-uitkeringen", Some(&uwv_key))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["descriptor"]["soap"]["version"], "1.1");
    assert_eq!(v["circuit"], "closed");

    let r = get("/v1/adapters/svb-regelingen", Some(&uwv_key))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = get(
        "/v1/adapters/svb-regelingen",
        Some(&demo_key(SECRET, "svb")),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    assert_eq!(get("/v1/adapters", None).await.unwrap().status(), 401);
    assert_eq!(
        get("/v1/adapters", Some("geraden-sleutel"))
            .await
            .unwrap()
            .status(),
        401
    );
    // A citizen token is not a partner credential.
    let r = app
        .http
        .get(format!("{}/v1/adapters", app.url))
        .bearer_auth(app.citizen_token(crate::helpers::CITIZEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn admin_status_needs_the_admin_token() {
    let app = spawn_app().await;
    let url = format!("{}/admin/status", app.url);
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 401);
    let r = app.http.get(&url).bearer_auth("fout").send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A partner key is not an admin token.
    let r = app
        .http
        .get(&url)
        .bearer_auth(demo_key(SECRET, "uwv"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.me_dossier(&app.citizen_token(crate::helpers::CITIZEN))
        .await;
    let r = app
        .http
        .get(&url)
        .bearer_auth(demo_key(SECRET, "admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["adapters"].as_array().unwrap().len(), 5);
    assert_eq!(v["config"]["version"].as_str().unwrap().len(), 12);
    assert_eq!(v["store"]["writable"], true);
    let uwv = v["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "uwv-uitkeringen")
        .unwrap();
    assert_eq!(uwv["last"]["status"], "ok");
    assert_eq!(uwv["circuit"], "closed");
}

#[tokio::test]
async fn an_admin_purge_drops_the_citizens_cached_answers_and_refuses_a_bad_bsn() {
    let app = spawn_app_with(crate::helpers::Options {
        cache: true,
        ..Default::default()
    })
    .await;
    let citizen = app.citizen_token(crate::helpers::CITIZEN);
    let first: Value = app.me_dossier(&citizen).await.json().await.unwrap();
    let cached: Value = app.me_dossier(&citizen).await.json().await.unwrap();
    let freshness = |d: &Value| {
        d["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert!(freshness(&first).iter().all(|f| f != "cached"), "{first}");
    assert!(freshness(&cached).iter().any(|f| f == "cached"), "{cached}");
    let url = format!("{}/admin/cache/purge", app.url);
    let admin = demo_key(SECRET, "admin");
    let purge = |body: Value| app.http.post(&url).bearer_auth(&admin).json(&body).send();
    let r = purge(serde_json::json!({"bsn": crate::helpers::CITIZEN}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "purged");
    assert_eq!(v["cluster_told"], true);
    let after: Value = app.me_dossier(&citizen).await.json().await.unwrap();
    assert!(freshness(&after).iter().all(|f| f != "cached"), "{after}");
    // A BSN that fails the 11-proef, and one that is not digits.
    assert_eq!(
        purge(serde_json::json!({"bsn": "123456789"}))
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        purge(serde_json::json!({"bsn": "abc"}))
            .await
            .unwrap()
            .status(),
        400
    );
    // Without the admin token: refused.
    let r = app
        .http
        .post(&url)
        .json(&serde_json::json!({"bsn": crate::helpers::CITIZEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

//! `/openapi.json` describes exactly the routes the gateway serves.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{CITIZEN, spawn_app};

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["info"]["version"], "1.0.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(!path.contains("bsn"), "no BSN in a URL: {path}");
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/v1/me/dossier"),
        ("POST", "/v1/dossiers"),
        ("GET", "/v1/me/access-log"),
        ("POST", "/v1/audit/access-log"),
        ("GET", "/v1/adapters"),
        ("GET", "/v1/adapters/{id}"),
        ("PUT", "/v1/adapters/{id}"),
        ("DELETE", "/v1/adapters/{id}"),
        ("POST", "/v1/adapters/{id}/test"),
        ("GET", "/admin/status"),
        ("POST", "/admin/reload"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/themes"),
        ("GET", "/v1/themes/{id}"),
        ("GET", "/v1/me/themes/{id}"),
        ("GET", "/v1/me/life-events"),
        ("POST", "/v1/dossiers/themes/{id}"),
        ("POST", "/v1/dossiers/life-events"),
        ("POST", "/v1/me/applications"),
        ("POST", "/v1/dossiers/applications"),
        ("GET", "/v1/applications/{id}"),
        ("GET", "/v1/organisations"),
        ("GET", "/v1/views"),
        ("GET", "/v1/services/{id}"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(documented, expected);
    // Every documented route is served (not the fallback, not 405).
    for (method, path) in &documented {
        let url = format!("{}{}", app.url, path.replace("{id}", "uwv-uitkeringen"));
        let r = app
            .http
            .request(method.parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 405, "{method} {path}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("no such endpoint"),
            "{method} {path} is documented but not routed"
        );
    }
    // Every error response is documented as problem+json.
    let text = doc.to_string();
    assert!(text.contains("application/problem+json"));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// The framework's own refusals are problems too, with their headers.
#[tokio::test]
async fn the_frameworks_refusals_are_problems() {
    let app = spawn_app().await;
    let r = app
        .http
        .patch(format!("{}/v1/dossiers", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["api-version"], "1.0.0");
    let r = app
        .http
        .get(format!("{}/v1/themes/%FF", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], 400);
    // Just over the 64 KiB the demo takes, sent whole before the answer is read.
    let r = app
        .http
        .post(format!("{}/v1/dossiers", app.url))
        .bearer_auth(app.employee_token("uwv", &["uwv-werkcoach"]))
        .body(vec![b' '; 64 * 1024 + 1])
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(
            p["type"],
            "https://ketenportaal.example/problems/payload-too-large"
        );
    }
}

/// What the gateway refuses that the old document allowed, and the integral `limit` it
/// refused though JSON Schema calls it an integer.
#[tokio::test]
async fn the_gateway_holds_requests_to_the_document() {
    let app = spawn_app().await;
    let auditor = app.employee_token("uwv", &["auditor"]);
    let audit = |body: Value| {
        app.http
            .post(format!("{}/v1/audit/access-log", app.url))
            .bearer_auth(&auditor)
            .json(&body)
            .send()
    };
    for limit in [json!(6108.0), json!(1), json!(10000), json!(null)] {
        let r = audit(json!({"bsn": CITIZEN, "limit": limit}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{limit}");
    }
    for limit in [json!(0), json!(10001), json!(1.5), json!(-3), json!("5")] {
        let r = audit(json!({"bsn": CITIZEN, "limit": limit}))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{limit}");
        let p: Value = r.json().await.unwrap();
        let name = &p["invalidParams"][0]["name"];
        assert!(name == "limit" || name == "body", "{p}");
    }
    // A citizen's unknown section is refused as an employee's is.
    let citizen = app.citizen_token(CITIZEN);
    let r = app
        .http
        .get(format!("{}/v1/me/dossier?sections=persoon,geheim", app.url))
        .bearer_auth(&citizen)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["invalidParams"][0]["name"], "sections");
    // `Idempotency-Key`: visible ASCII, spaces only inside, at most 200.
    let apply = |key: &str| {
        app.http
            .post(format!("{}/v1/me/applications", app.url))
            .bearer_auth(&citizen)
            .header("Idempotency-Key", key)
            .json(&json!({"service": "bijstand-aanvragen", "data": {"gewenste_ingangsdatum": "2027-01-16", "woonsituatie": "alleenstaand"}}))
            .send()
    };
    assert_eq!(apply("a key").await.unwrap().status(), 202);
    assert_eq!(apply(&"k".repeat(200)).await.unwrap().status(), 202);
    for bad in ["a\tkey".to_string(), "k".repeat(201)] {
        assert_eq!(apply(&bad).await.unwrap().status(), 400, "{bad:?}");
    }
    // `data` is the form, an object.
    let r = app
        .http
        .post(format!("{}/v1/me/applications", app.url))
        .bearer_auth(&citizen)
        .header("Idempotency-Key", "k")
        .json(&json!({"service": "bijstand-aanvragen", "data": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // An unknown service is a 422 (the document cannot list the configured ones).
    let r = app
        .http
        .post(format!("{}/v1/me/applications", app.url))
        .bearer_auth(&citizen)
        .header("Idempotency-Key", "k2")
        .json(&json!({"service": "geen-dienst", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

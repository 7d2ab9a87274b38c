//! `/openapi.json` describes exactly the routes the gateway serves.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{CITIZEN, TestApp, spawn_app};

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
        ("POST", "/admin/cache/purge"),
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

async fn document(app: &TestApp) -> Value {
    app.get_json("/openapi.json", None).await
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {r}")),
        None => v,
    }
}

/// Every operation: (method, path, operation object).
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.to_uppercase(), path.clone(), op));
        }
    }
    ops
}

/// The statuses every route documents follow the rules the server follows: a secured route
/// answers 401, a body 400 and 413, a path parameter 400; every error is a problem (only
/// `/readyz` answers its own JSON); every answer carries `API-Version` and `Cache-Control`.
#[tokio::test]
async fn every_route_documents_the_statuses_it_gives() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    for (method, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap();
        let has = |s: &str| responses.contains_key(s);
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        assert_eq!(
            secured,
            has("401"),
            "{method} {path}: 401 exactly on secured routes"
        );
        if op.get("requestBody").is_some() {
            assert!(has("400") && has("413"), "{method} {path}: 400 and 413");
        }
        if op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "path"))
        {
            assert!(
                has("400"),
                "{method} {path}: 400 for a path that is not UTF-8"
            );
        }
        for (status, r) in responses {
            let r = resolve(&doc, r);
            assert!(
                !r["description"].as_str().unwrap_or("").is_empty(),
                "{method} {path} {status}: a description"
            );
            assert!(
                r["headers"]["API-Version"].is_object(),
                "{method} {path} {status}: API-Version"
            );
            assert!(
                r["headers"]["Cache-Control"].is_object(),
                "{method} {path} {status}: Cache-Control"
            );
            if status.starts_with('4') || (status.starts_with('5') && path != "/readyz") {
                assert_eq!(
                    r["content"]["application/problem+json"]["schema"], problem,
                    "{method} {path} {status}: a problem"
                );
            }
        }
    }
    // What the fuzzer found undocumented: an employee on a citizen route, 409 and 429 of the
    // partner routes, the 503 of a store or audit failure, the 422 of a failed 11-proef.
    let statuses = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert!(statuses("get", "/v1/me/dossier").contains(&"403".to_string()));
    assert!(statuses("get", "/v1/me/dossier").contains(&"400".to_string()));
    assert!(statuses("get", "/v1/me/life-events").contains(&"403".to_string()));
    assert!(statuses("put", "/v1/adapters/{id}").contains(&"409".to_string()));
    assert!(statuses("post", "/v1/adapters/{id}/test").contains(&"429".to_string()));
    for (m, p) in [
        ("put", "/v1/adapters/{id}"),
        ("post", "/v1/me/applications"),
        ("post", "/v1/audit/access-log"),
    ] {
        assert!(statuses(m, p).contains(&"503".to_string()), "{m} {p}");
    }
    assert!(statuses("post", "/v1/dossiers").contains(&"422".to_string()));
}

/// Problem details: `invalidParams` only when fields are wrong, so not required.
#[tokio::test]
async fn response_schemas_describe_what_is_sent() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Problem"]["required"],
        json!(["type", "title", "status"])
    );
    // List items have no descriptor; one adapter has it; both say where it comes from.
    let adapter = &schemas["AdapterDoc"];
    let required: Vec<&str> = adapter["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(required.contains(&"origin") && !required.contains(&"descriptor"));
    assert!(adapter["properties"]["descriptor"].is_null());
    assert_eq!(
        schemas["OriginDoc"]["enum"],
        json!(["file", "registration"])
    );
    let detail = schemas["AdapterDetailDoc"].to_string();
    assert!(detail.contains(r#""required":["descriptor"]"#), "{detail}");
}

/// Request schemas are at least as strict as the gateway: unknown fields refused, required
/// fields required, the BSN's pattern and the bounds of `limit` and `Idempotency-Key` stated.
#[tokio::test]
async fn request_schemas_are_as_strict_as_the_gateway() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    let bsn = &schemas["Bsn"];
    assert_eq!(bsn["pattern"], "^[0-9]{8,9}$");
    assert!(bsn["description"].as_str().unwrap().contains("11-proef"));
    let examples = bsn["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 6);
    for e in examples {
        ketenportaal::bsn::Bsn::parse(e.as_str().unwrap()).unwrap();
    }
    let mut bodies = 0;
    for (method, path, op) in operations(&doc) {
        let Some(content) = op["requestBody"]["content"].as_object() else {
            continue;
        };
        for (media, c) in content {
            let schema = resolve(&doc, &c["schema"]);
            assert_eq!(schema["type"], "object", "{method} {path} {media}");
            assert_eq!(
                schema["additionalProperties"],
                json!(false),
                "{method} {path} {media}: unknown fields are a 400 (a 422 in a descriptor)"
            );
            assert!(!schema["examples"].as_array().unwrap().is_empty());
            for (name, p) in schema["properties"].as_object().unwrap() {
                if name == "bsn" {
                    assert_eq!(p["$ref"], "#/components/schemas/Bsn", "{method} {path}");
                }
            }
            bodies += 1;
        }
    }
    assert_eq!(bodies, 10);
    let required = |name: &str| schemas[name]["required"].clone();
    assert_eq!(required("DossierRequestDoc"), json!(["bsn", "view"]));
    assert_eq!(
        required("CitizenApplicationDoc"),
        json!(["service", "data"])
    );
    assert_eq!(
        required("EmployeeApplicationDoc"),
        json!(["bsn", "service", "data"])
    );
    let limit = &schemas["AuditQueryDoc"]["properties"]["limit"];
    assert_eq!(limit["type"], json!(["integer", "null"]));
    assert_eq!(
        (limit["minimum"].clone(), limit["maximum"].clone()),
        (json!(1), json!(10000))
    );
    for path in ["/v1/me/applications", "/v1/dossiers/applications"] {
        let key = doc["paths"][path]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap();
        assert_eq!(key["required"], true);
        assert_eq!(key["schema"]["maxLength"], 200);
        assert_eq!(
            key["schema"]["pattern"],
            ketenportaal::server::api_doc::IDEMPOTENCY_KEY_PATTERN
        );
    }
}

/// The document's examples are real requests: the gateway accepts each of them, with the
/// credentials of the caller it is meant for.
#[tokio::test]
async fn the_documents_examples_are_accepted() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let example = |method: &str, path: &str, media: &str| {
        let c = &doc["paths"][path][method]["requestBody"]["content"][media];
        resolve(&doc, &c["schema"])["examples"][0].clone()
    };
    let param = |method: &str, path: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["example"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let coach = app.employee_token("uwv", &["uwv-werkcoach", "auditor"]);
    let citizen = app.citizen_token(CITIZEN);
    let key = ketenportaal::demo::demo_key(crate::helpers::SECRET, "uwv");
    let post = |path: &str, token: &str, body: Value| {
        app.http
            .post(format!("{}{path}", app.url))
            .bearer_auth(token)
            .json(&body)
    };
    for path in ["/v1/dossiers", "/v1/dossiers/life-events"] {
        let r = post(path, &coach, example("post", path, "application/json"))
            .header("X-Purpose", param("post", path, "X-Purpose"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let theme = "/v1/dossiers/themes/{id}";
    let r = post(
        &format!("/v1/dossiers/themes/{}", param("post", theme, "id")),
        &coach,
        example("post", theme, "application/json"),
    )
    .header("X-Purpose", param("post", theme, "X-Purpose"))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let audit = "/v1/audit/access-log";
    let r = post(audit, &coach, example("post", audit, "application/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mine = "/v1/me/applications";
    let r = post(mine, &citizen, example("post", mine, "application/json"))
        .header("Idempotency-Key", param("post", mine, "Idempotency-Key"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let theirs = "/v1/dossiers/applications";
    let r = post(theirs, &coach, example("post", theirs, "application/json"))
        .header("Idempotency-Key", param("post", theirs, "Idempotency-Key"))
        .header("X-Purpose", param("post", theirs, "X-Purpose"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let adapter = "/v1/adapters/{id}";
    let id = param("put", adapter, "id");
    assert_eq!(id, ketenportaal::server::api_doc::DESCRIPTOR_EXAMPLE_ID);
    let descriptor = example("put", adapter, "application/json");
    assert_eq!(descriptor, example("put", adapter, "application/yaml"));
    let r = app
        .http
        .put(format!("{}/v1/adapters/{id}", app.url))
        .header("X-Api-Key", &key)
        .json(&descriptor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let test = "/v1/adapters/{id}/test";
    let r = app
        .http
        .post(format!(
            "{}/v1/adapters/{}/test",
            app.url,
            param("post", test, "id")
        ))
        .header("X-Api-Key", &key)
        .json(&example("post", test, "application/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .delete(format!(
            "{}/v1/adapters/{}",
            app.url,
            param("delete", adapter, "id")
        ))
        .header("X-Api-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
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

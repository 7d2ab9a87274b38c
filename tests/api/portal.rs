//! The portal pages and the demo sign-in over HTTP (the browser tests drive the pages
//! themselves): served only when enabled, sign-in only with its own flag, strict headers, and
//! the catalogue endpoints the pages use.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{Options, spawn_app, spawn_app_with};

async fn get(app: &crate::helpers::TestApp, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .unwrap()
}

async fn sign_in(app: &crate::helpers::TestApp, account: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/portaal/demo/sign-in", app.url))
        .json(&json!({"account": account}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_are_served_with_strict_headers_and_revalidation() {
    let app = spawn_app().await;
    let r = get(&app, "/portaal").await;
    assert_eq!(r.url().path(), "/portaal/", "redirected to the folder");
    assert_eq!(r.status(), 200);
    for page in [
        "/portaal/",
        "/portaal/klant.html",
        "/portaal/medewerker.html",
        "/portaal/thema.html",
        "/portaal/aanmelden.html",
    ] {
        let r = get(&app, page).await;
        assert_eq!(r.status(), 200, "{page}");
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{page}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(r.text().await.unwrap().contains("<html lang=\"nl\">"));
    }
    let r = get(&app, "/portaal/portaal.js").await;
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let again = app
        .http
        .get(format!("{}/portaal/portaal.js", app.url))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(get(&app, "/portaal/geheim.txt").await.status(), 404);
    assert_eq!(get(&app, "/portaal/..%2fCargo.toml").await.status(), 404);
    // The operator page lives under /admin/ only.
    assert_eq!(get(&app, "/portaal/admin.html").await.status(), 404);
    assert_eq!(get(&app, "/admin/").await.status(), 200);
    assert_eq!(get(&app, "/admin/admin.js").await.status(), 200);
    assert_eq!(get(&app, "/admin/shared/portaal.css").await.status(), 200);
    assert_eq!(get(&app, "/admin/shared/klant.js").await.status(), 404);
}

#[tokio::test]
async fn portals_and_sign_in_are_off_unless_configured() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|c| {
            c.gateway.portal.enabled = false;
            c.gateway.portal.demo_sign_in = false;
            c.gateway.admin.token_sha256 = None;
        })),
        ..Options::default()
    })
    .await;
    for page in [
        "/portaal/",
        "/portaal/klant.html",
        "/portaal/demo/accounts",
        "/admin/",
        "/admin/admin.js",
    ] {
        assert_eq!(get(&app, page).await.status(), 404, "{page}");
    }
    assert_eq!(sign_in(&app, "jan").await.status(), 404);

    // Portals on, demo sign-in off: the pages work, the sign-in does not exist.
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|c| c.gateway.portal.demo_sign_in = false)),
        ..Options::default()
    })
    .await;
    assert_eq!(get(&app, "/portaal/klant.html").await.status(), 200);
    assert_eq!(get(&app, "/portaal/aanmelden.html").await.status(), 404);
    assert_eq!(get(&app, "/portaal/demo/accounts").await.status(), 404);
    assert_eq!(sign_in(&app, "jan").await.status(), 404);
}

#[tokio::test]
async fn demo_sign_in_mints_working_tokens_for_the_configured_accounts_only() {
    let app = spawn_app().await;
    let accounts = app.get_json("/portaal/demo/accounts", None).await;
    let ids: Vec<&str> = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"jan") && ids.contains(&"jansen"), "{ids:?}");
    assert!(
        !accounts.to_string().contains("999993653"),
        "no BSNs on the page"
    );

    let r = sign_in(&app, "jan").await;
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["actor"], "citizen");
    let token = s["token"].as_str().unwrap();
    let d: Value = app.me_dossier(token).await.json().await.unwrap();
    assert_eq!(d["subject"]["bsn"], "999993653");

    let s: Value = sign_in(&app, "jansen").await.json().await.unwrap();
    assert_eq!(s["actor"], "employee");
    assert_eq!(s["organisation_name"], "UWV");
    let views = app.get_json("/v1/views", s["token"].as_str()).await;
    let list = views["views"].as_array().unwrap();
    assert_eq!(list.len(), 1, "only the views the roles open: {views}");
    assert_eq!(list[0]["id"], "werkcoach");
    assert_eq!(list[0]["purposes"][0]["id"], "re-integratie");
    assert_eq!(views["caller"]["organisation"], "uwv");

    assert_eq!(sign_in(&app, "niemand").await.status(), 404);
    let r = app
        .http
        .post(format!("{}/portaal/demo/sign-in", app.url))
        .json(&json!({"account": "jan", "bsn": "999990019"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unknown fields are refused");
    // A citizen's views: only the citizen view.
    let citizen = app.citizen_token("999993653");
    let v = app.get_json("/v1/views", Some(&citizen)).await;
    assert_eq!(v["views"].as_array().unwrap().len(), 1);
    assert_eq!(v["views"][0]["id"], "klant");
    let r = app
        .http
        .get(format!("{}/v1/views", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn catalogue_gives_names_and_application_schemas_but_not_delivery() {
    let app = spawn_app().await;
    let orgs = app.get_json("/v1/organisations", None).await;
    assert!(
        orgs["organisations"]
            .as_array()
            .unwrap()
            .contains(&json!({"id": "uwv", "name": "UWV"}))
    );
    let svc = app.get_json("/v1/services/ww-aanvragen", None).await;
    assert_eq!(svc["organisation_name"], "UWV");
    assert_eq!(
        svc["application"]["schema"]["required"][0],
        "laatste_werkdag"
    );
    assert!(
        !svc.to_string().contains("AanvraagService"),
        "delivery stays private: {svc}"
    );
    assert_eq!(get(&app, "/v1/services/bestaat-niet").await.status(), 404);
    let theme = app.get_json("/v1/themes", None).await;
    assert!(theme.to_string().contains("\"can_apply\":true"));

    // A missing field is named after the field (so a form can show it there).
    let citizen = app.citizen_token("999993653");
    let r = app
        .http
        .post(format!("{}/v1/me/applications", app.url))
        .bearer_auth(&citizen)
        .header("Idempotency-Key", "portal-test-1")
        .json(&json!({"service": "ww-aanvragen", "data": {"reden": "ontslag", "iban": "NL00"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    let params = p["invalidParams"].as_array().unwrap();
    assert!(params.contains(&json!({"name": "data/laatste_werkdag", "code": "required", "reason": "\"laatste_werkdag\" is a required property"})), "{p}");
    assert!(
        params
            .iter()
            .any(|x| x["name"] == "data/iban" && x["code"] == "pattern"),
        "{p}"
    );
}

#[test]
fn check_refuses_a_demo_sign_in_without_portals_key_or_valid_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::helpers::root();
    let demo = std::fs::read_to_string(root.join("config/demo.yaml")).unwrap();
    let broken = demo
        .replace(
            "adapters: [../adapters]",
            &format!("adapters: [{}]", root.join("adapters").display()),
        )
        .replace(
            "  enabled: true\n  demo_sign_in: true",
            "  enabled: false\n  demo_sign_in: true",
        )
        .replace("bsn: \"999990019\"", "bsn: \"123456789\"")
        .replace(
            "organisation: gemeente-utrecht, roles",
            "organisation: gemeente-amsterdam, roles",
        );
    assert_ne!(broken, demo);
    let file = dir.path().join("demo.yaml");
    std::fs::write(&file, broken).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ketenportaal"))
        .args(["check", "--config"])
        .arg(&file)
        .env("KETENPORTAAL_DEMO_SECRET", "x".repeat(40))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("`portal.demo_sign_in` needs `portal.enabled: true`"),
        "{text}"
    );
    assert!(text.contains("demo account `hendrik`"), "{text}");
    assert!(
        text.contains("no organisation `gemeente-amsterdam`"),
        "{text}"
    );
    assert!(text.contains("demo.yaml:"), "positions: {text}");
}

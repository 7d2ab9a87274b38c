//! Chain partners maintain their own adapters at run time; operators reload without restarts.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    CITIZEN, Launch, Options, SECRET, root, source, spawn_app, spawn_app_launched, spawn_app_with,
    uwv_variant,
};
use ketenportaal::demo::demo_key;

async fn put(
    app: &crate::helpers::TestApp,
    id: &str,
    key: &str,
    body: String,
    ctype: &str,
) -> reqwest::Response {
    app.http
        .put(format!("{}/v1/adapters/{id}", app.url))
        .header("X-Api-Key", key)
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_partner_registers_an_adapter_that_takes_effect_at_once_and_is_audited() {
    let app = spawn_app().await;
    let key = demo_key(SECRET, "uwv");
    let r = put(
        &app,
        "uwv-wia",
        &key,
        uwv_variant("uwv-wia"),
        "application/yaml",
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(r.headers()["location"], "/v1/adapters/uwv-wia");
    let d: Value = app
        .me_dossier(&app.citizen_token(CITIZEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(source(&d, "uwv-wia")["status"], "ok");
    // Replacing it is a 200; a JSON descriptor works as well as YAML.
    let v: Value = serde_saphyr::from_str::<serde_json::Value>(&uwv_variant("uwv-wia")).unwrap();
    let r = put(&app, "uwv-wia", &key, v.to_string(), "application/json").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let sha = body["descriptor_sha256"].as_str().unwrap().to_string();
    // The change is in the audit log with the descriptor's hash.
    // Read from the file: wait until the index holds every acknowledged record.
    app.store.settle().await.unwrap();
    let c = rusqlite::Connection::open(app.dir.path().join("audit.sqlite")).unwrap();
    let n: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE kind = 'adapter.change' AND record LIKE ?1",
            [format!("%{sha}%")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    // Delete: gone from the dossier.
    let r = app
        .http
        .delete(format!("{}/v1/adapters/uwv-wia", app.url))
        .header("X-Api-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let d: Value = app
        .me_dossier(&app.citizen_token(CITIZEN))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        d["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["adapter"] != "uwv-wia")
    );
    // Its metrics went with it (partners choose ids: kept, they would grow without bound);
    // the file adapters' stay.
    let m = app.metrics().await;
    assert!(!m.contains(r#"adapter="uwv-wia""#), "{m}");
    assert!(m.contains(r#"adapter="uwv-uitkeringen""#), "{m}");
    // A file adapter cannot be deleted over the API.
    let r = app
        .http
        .delete(format!("{}/v1/adapters/uwv-uitkeringen", app.url))
        .header("X-Api-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn partner_a_gets_403_on_partner_bs_adapters() {
    let app = spawn_app().await;
    let uwv = demo_key(SECRET, "uwv");
    let svb = demo_key(SECRET, "svb");
    // Registering for another organisation.
    let foreign = uwv_variant("svb-extra")
        .replace("organisation: uwv", "organisation: svb")
        .replace("endpoint: /uwv/", "endpoint: /svb/");
    assert_eq!(
        put(&app, "svb-extra", &uwv, foreign.clone(), "application/yaml")
            .await
            .status(),
        403
    );
    // Overwriting another organisation's adapter.
    let hijack = std::fs::read_to_string(root().join("adapters/svb-regelingen.yaml")).unwrap();
    assert_eq!(
        put(
            &app,
            "svb-regelingen",
            &uwv,
            hijack.replace("organisation: svb", "organisation: uwv"),
            "application/yaml"
        )
        .await
        .status(),
        403
    );
    // SVB registers its own; UWV can neither delete nor test it.
    assert_eq!(
        put(&app, "svb-extra", &svb, foreign, "application/yaml")
            .await
            .status(),
        201
    );
    let r = app
        .http
        .delete(format!("{}/v1/adapters/svb-extra", app.url))
        .header("X-Api-Key", &uwv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .http
        .post(format!("{}/v1/adapters/svb-extra/test", app.url))
        .header("X-Api-Key", &uwv)
        .json(&json!({"bsn": CITIZEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        app.http
            .get(format!("{}/v1/adapters/svb-extra", app.url))
            .header("X-Api-Key", &uwv)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
}

#[tokio::test]
async fn an_invalid_registration_gets_the_same_messages_as_check() {
    let app = spawn_app().await;
    let key = demo_key(SECRET, "uwv");
    let bad = uwv_variant("uwv-fout")
        .replace("timeout: 800ms", "timeout: 800ms\nendpont: /x")
        .replace("\"u:soort\"", "\"x:soort\"")
        .replace("uitkeringen:\n    each", "uitkering:\n    each");
    let r = put(&app, "uwv-fout", &key, bad.clone(), "application/yaml").await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    // The same file through the config loader, as `check` would read it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    std::fs::copy(
        root().join("config/demo.yaml"),
        dir.path().join("config/demo.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("adapters/uwv-fout.yaml"), &bad).unwrap();
    let env = ketenportaal::demo::demo_env("http://127.0.0.1:9".into(), SECRET.into());
    let e = ketenportaal::config::Config::load_with_env(&dir.path().join("config/demo.yaml"), &env)
        .unwrap_err();
    let from_check: Vec<(u64, u64, String)> =
        e.0.iter()
            .filter(|c| c.file.ends_with("uwv-fout.yaml"))
            .map(|c| (c.line, c.column, c.message.clone()))
            .collect();
    assert_eq!(
        from_check.len(),
        1,
        "typed errors stop at the first pass: {e}"
    );
    let detail = p["detail"].as_str().unwrap();
    for (line, col, msg) in &from_check {
        assert!(
            detail.contains(&format!("registration:uwv-fout:{line}:{col}: {msg}")),
            "{detail}\n---\n{e}"
        );
    }
    // Fix the unknown key: now the cross-reference problems show, as with check.
    let bad2 = bad.replace("\nendpont: /x", "");
    let p: Value = put(&app, "uwv-fout", &key, bad2, "application/yaml")
        .await
        .json()
        .await
        .unwrap();
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("section `uitkering` is not declared in the gateway config\n    hint: did you mean `uitkeringen`?"), "{detail}");
    assert!(
        detail.contains("prefix `x` in step `x:soort` is not declared"),
        "{detail}"
    );
    assert_eq!(p["invalidParams"].as_array().unwrap().len(), 2);
    // The id in the body must match the path.
    let r = put(
        &app,
        "iets-anders",
        &key,
        uwv_variant("uwv-wia"),
        "application/yaml",
    )
    .await;
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn ids_the_gateway_uses_itself_or_that_do_not_start_with_a_letter_are_refused() {
    let app = spawn_app().await;
    let key = demo_key(SECRET, "uwv");
    for (id, why) in [
        (
            "ketenportaal",
            "is reserved: it is the gateway's own source name",
        ),
        (
            "zaken",
            "is reserved: it is the section the gateway fills itself",
        ),
        ("admin", "is reserved: it is the gateway's operator routes"),
        ("-", "is not valid"),
        ("0", "is not valid"),
        ("1-uwv", "is not valid"),
    ] {
        // Quoted, so that `-` and `0` reach the id check as strings.
        let descriptor = uwv_variant("x").replace("id: x", &format!("id: \"{id}\""));
        let r = put(&app, id, &key, descriptor, "application/yaml").await;
        assert_eq!(r.status(), 422, "{id}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("adapter id `{id}` {why}")),
            "{id}: {detail}"
        );
    }
    // The dossier still names the gateway as its only `ketenportaal` source.
    let d: Value = app
        .me_dossier(&app.citizen_token(CITIZEN))
        .await
        .json()
        .await
        .unwrap();
    let own = d["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["adapter"] == "ketenportaal")
        .count();
    assert_eq!(own, 1, "{d}");
}

#[tokio::test]
async fn the_test_endpoint_runs_one_adapter_for_test_persons_only() {
    let app = spawn_app().await;
    let key = demo_key(SECRET, "uwv");
    let test = |bsn: &str, descriptor: Option<String>| {
        let mut body = json!({"bsn": bsn});
        if let Some(d) = descriptor {
            body["descriptor"] = json!(d);
        }
        app.http
            .post(format!("{}/v1/adapters/uwv-uitkeringen/test", app.url))
            .header("X-Api-Key", &key)
            .json(&body)
            .send()
    };
    let r = test(CITIZEN, None).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["sections"]["uitkeringen"][0]["soort"], "WW");
    // A dry run of a changed descriptor maps with the new mapping, and stores nothing.
    let changed = uwv_variant("uwv-uitkeringen").replace(
        "dossiernummer: \"u:dossiernummer\"",
        "dossier: \"u:dossiernummer\"",
    );
    let v: Value = test(CITIZEN, Some(changed))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["sections"]["uitkeringen"][0].get("dossier").is_some(),
        "{v}"
    );
    assert!(app.store.registrations().await.unwrap().is_empty());
    // A real person's BSN (valid, but not a configured test person) is refused.
    assert_eq!(test("123456782", None).await.unwrap().status(), 403);
}

#[tokio::test]
async fn a_dry_run_keeps_the_id_rules_of_put() {
    let app = spawn_app().await;
    let key = demo_key(SECRET, "uwv");
    let test = |id: &str, descriptor: String| {
        app.http
            .post(format!("{}/v1/adapters/{id}/test", app.url))
            .header("X-Api-Key", &key)
            .json(&json!({"bsn": CITIZEN, "descriptor": descriptor}))
            .send()
    };
    // Under another organisation's adapter id: refused as a `PUT` would be.
    let r = test("svb-regelingen", uwv_variant("svb-regelingen"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["detail"], "adapter `svb-regelingen` belongs to another organisation",
        "{p}"
    );
    // A draft whose id is not the path's: a 422 naming both.
    let r = test("uwv-wia", uwv_variant("p-ok")).await.unwrap();
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["detail"], "the descriptor's id `p-ok` differs from `uwv-wia` in the path",
        "{p}"
    );
    assert_eq!(p["invalidParams"][0]["name"], "id", "{p}");
    // The draft under its own, new id runs.
    let r = test("uwv-wia", uwv_variant("uwv-wia")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(app.store.registrations().await.unwrap().is_empty());
}

#[tokio::test]
async fn reload_swaps_valid_configs_and_refuses_invalid_ones() {
    let app = spawn_app_with(Options {
        copy_config: true,
        ..Options::default()
    })
    .await;
    let admin = demo_key(SECRET, "admin");
    let reload = || {
        app.http
            .post(format!("{}/admin/reload", app.url))
            .bearer_auth(&admin)
            .send()
    };
    let v0 = app.state.gateway.runtime().config.version.clone();
    let uwv_file = app.dir.path().join("adapters/uwv-uitkeringen.yaml");
    let original = std::fs::read_to_string(&uwv_file).unwrap();
    std::fs::write(
        &uwv_file,
        original.replace("timeout: 800ms", "timeout: 700ms"),
    )
    .unwrap();
    let r = reload().await.unwrap();
    assert_eq!(r.status(), 200);
    let v1 = r.json::<Value>().await.unwrap()["config_version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v0, v1);
    assert_eq!(
        app.state.gateway.runtime().adapters["uwv-uitkeringen"]
            .client
            .spec
            .def
            .timeout
            .0,
        Duration::from_millis(700)
    );
    // An invalid change is refused with every problem; the running config stays.
    std::fs::write(
        &uwv_file,
        original.replace("timeout: 800ms", "timeout: nooit"),
    )
    .unwrap();
    let r = reload().await.unwrap();
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("invalid duration \"nooit\""),
        "{p}"
    );
    assert_eq!(app.state.gateway.runtime().config.version, v1);
    assert_eq!(
        app.me_dossier(&app.citizen_token(CITIZEN)).await.status(),
        200
    );
    let status: Value = app
        .http
        .get(format!("{}/admin/status", app.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["reload"]["last_error"]
            .as_str()
            .unwrap()
            .contains("nooit")
    );
    // The admin's reload refused it, and so may the file watcher that saw the same edit (the
    // test app arms the triggers, as `serve` does); nothing was swapped in either way.
    let refused = status["reload"]["refused"].as_u64().unwrap();
    assert!((1..=2).contains(&refused), "{status}");
    // Without the admin token: no reload.
    assert_eq!(
        app.http
            .post(format!("{}/admin/reload", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn unchanged_adapters_keep_their_breaker_across_reloads() {
    let app = spawn_app_with(Options {
        copy_config: true,
        ..Options::default()
    })
    .await;
    let before = app.state.gateway.runtime();
    let admin = demo_key(SECRET, "admin");
    let svb_file = app.dir.path().join("adapters/svb-regelingen.yaml");
    let text = std::fs::read_to_string(&svb_file).unwrap();
    std::fs::write(&svb_file, text.replace("timeout: 800ms", "timeout: 900ms")).unwrap();
    let r = app
        .http
        .post(format!("{}/admin/reload", app.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let after = app.state.gateway.runtime();
    assert!(std::sync::Arc::ptr_eq(
        &before.adapters["uwv-uitkeringen"].breaker,
        &after.adapters["uwv-uitkeringen"].breaker
    ));
    assert!(!std::sync::Arc::ptr_eq(
        &before.adapters["svb-regelingen"].breaker,
        &after.adapters["svb-regelingen"].breaker
    ));
}

#[tokio::test]
async fn a_registration_survives_a_restart_and_sighup_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.sqlite");
    // A copy of the config, so the test can change a file and send SIGHUP.
    crate::helpers::copy_repo_dirs(dir.path(), &["config", "adapters"]);
    std::fs::create_dir_all(dir.path().join("fixtures")).unwrap();
    std::os::unix::fs::symlink(
        root().join("fixtures/agencies"),
        dir.path().join("fixtures/agencies"),
    )
    .unwrap();
    let config = dir.path().join("config/demo.yaml");
    let key = demo_key(SECRET, "uwv");
    let admin = demo_key(SECRET, "admin");
    let http = reqwest::Client::new();

    let env = [("KETENPORTAAL_DEMO_SECRET", SECRET)];
    let mut child = crate::helpers::start_demo(&store, Some(&config), &env);
    let url = child.url.clone();
    let r = http
        .put(format!("{url}/v1/adapters/uwv-wia"))
        .header("X-Api-Key", &key)
        .body(uwv_variant("uwv-wia"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    child.kill();

    let env = [("KETENPORTAAL_DEMO_SECRET", SECRET)];
    let mut child = crate::helpers::start_demo(&store, Some(&config), &env);
    let url = child.url.clone();
    let r = http
        .get(format!("{url}/v1/adapters/uwv-wia"))
        .header("X-Api-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the registration survived the restart");

    // SIGHUP after a file change reloads.
    let status = |http: reqwest::Client, url: String, admin: String| async move {
        http.get(format!("{url}/admin/status"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let v0 = status(http.clone(), url.clone(), admin.clone()).await["config"]["version"].clone();
    let svb = dir.path().join("adapters/svb-regelingen.yaml");
    let text = std::fs::read_to_string(&svb).unwrap();
    std::fs::write(&svb, text.replace("timeout: 800ms", "timeout: 750ms")).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &child.child.id().to_string()])
        .status()
        .unwrap();
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = status(http.clone(), url.clone(), admin.clone()).await;
        // The swap happens a moment before the reload is counted: wait for both.
        if s["config"]["version"] != v0 && s["reload"]["reloads"].as_u64().unwrap_or(0) >= 1 {
            assert!(s["reload"]["last_error"].is_null(), "{s}");
            reloaded = true;
            break;
        }
    }
    child.kill();
    assert!(
        reloaded,
        "the config version changed after the file change + SIGHUP"
    );
}

/// Copies `config/` and `adapters/` of the repository into `dir/<name>/`.
fn copy_tree(dir: &std::path::Path, name: &str) {
    crate::helpers::copy_repo_dirs(&dir.join(name), &["config", "adapters"]);
}

async fn wait_for_version_change(app: &crate::helpers::TestApp, from: &str) -> bool {
    for _ in 0..100 {
        if app.state.gateway.runtime().config.version != from {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_kubernetes_configmap_update_reloads() {
    // The layout kubelet writes: `demo.yaml -> ..data/demo.yaml`, `..data -> ..<timestamp>`,
    // updated by writing a new timestamped folder and renaming `..data_tmp` over `..data`.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), "src");
    let cm = dir.path().join("config");
    std::fs::create_dir_all(&cm).unwrap();
    std::fs::rename(dir.path().join("src/adapters"), dir.path().join("adapters")).unwrap();
    std::fs::rename(dir.path().join("src/config"), cm.join("..2026_12_01_v1")).unwrap();
    std::os::unix::fs::symlink("..2026_12_01_v1", cm.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/demo.yaml", cm.join("demo.yaml")).unwrap();
    std::fs::create_dir_all(cm.join("..data/keys")).unwrap();
    let app = spawn_app_launched(
        Options::default(),
        Launch {
            config_file: Some(cm.join("demo.yaml")),
            ..Launch::default()
        },
    )
    .await;
    let v0 = app.state.gateway.runtime().config.version.clone();
    assert_eq!(
        app.state.gateway.runtime().config.gateway.deadline.0,
        Duration::from_millis(1500)
    );
    // kubelet's update.
    let v2 = cm.join("..2026_12_01_v2");
    std::fs::create_dir_all(&v2).unwrap();
    for e in std::fs::read_dir(cm.join("..2026_12_01_v1"))
        .unwrap()
        .flatten()
    {
        if e.path().is_file() {
            std::fs::copy(e.path(), v2.join(e.file_name())).unwrap();
        }
    }
    let text = std::fs::read_to_string(v2.join("demo.yaml")).unwrap();
    std::fs::write(
        v2.join("demo.yaml"),
        text.replace("deadline: 1500ms", "deadline: 1400ms"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_12_01_v2", cm.join("..data_tmp")).unwrap();
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
    std::fs::remove_dir_all(cm.join("..2026_12_01_v1")).unwrap();
    assert!(
        wait_for_version_change(&app, &v0).await,
        "the ConfigMap update was not seen"
    );
    assert_eq!(
        app.state.gateway.runtime().config.gateway.deadline.0,
        Duration::from_millis(1400)
    );
}

#[tokio::test]
async fn a_swapped_symlink_anywhere_on_the_config_path_reloads() {
    // `current -> v1` holds config/ and adapters/; an operator switches it to v2 with
    // `ln -sfn` (a new link renamed over the old one). No watched folder sees an event.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), "v1");
    copy_tree(dir.path(), "v2");
    for v in ["v1", "v2"] {
        std::fs::create_dir_all(dir.path().join(v).join("config/keys")).unwrap();
    }
    let a = dir.path().join("v2/adapters/uwv-uitkeringen.yaml");
    let text = std::fs::read_to_string(&a).unwrap();
    std::fs::write(&a, text.replace("timeout: 800ms", "timeout: 650ms")).unwrap();
    std::os::unix::fs::symlink("v1", dir.path().join("current")).unwrap();
    let app = spawn_app_launched(
        Options::default(),
        Launch {
            config_file: Some(dir.path().join("current/config/demo.yaml")),
            ..Launch::default()
        },
    )
    .await;
    let v0 = app.state.gateway.runtime().config.version.clone();
    std::os::unix::fs::symlink("v2", dir.path().join("current.tmp")).unwrap();
    std::fs::rename(dir.path().join("current.tmp"), dir.path().join("current")).unwrap();
    assert!(
        wait_for_version_change(&app, &v0).await,
        "the symlink swap was not seen: {:?}",
        app.state.reloader.as_ref().unwrap().status()
    );
    assert_eq!(
        app.state.gateway.runtime().adapters["uwv-uitkeringen"]
            .client
            .spec
            .def
            .timeout
            .0,
        Duration::from_millis(650)
    );
}

/// The test app is started by `App::build`, as `serve` is: a registration stored by one run is
/// layered over the files by the next run on the same store, and the reload triggers are armed
/// (a config edit is served with no `POST /admin/reload`).
#[tokio::test]
async fn the_test_app_starts_as_serve_does_registrations_layered_and_reload_armed() {
    let first = spawn_app_with(Options {
        copy_config: true,
        ..Options::default()
    })
    .await;
    let key = demo_key(SECRET, "uwv");
    let r = put(
        &first,
        "uwv-wia",
        &key,
        uwv_variant("uwv-wia"),
        "application/yaml",
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let config_file = first.dir.path().join("config/demo.yaml");
    // The second gateway on a copy of the first's store (a store file has one gateway: the
    // journal's lock), as a new instance restored from it would start.
    let copy = tempfile::tempdir().unwrap();
    let store = copy.path().join("audit.sqlite");
    rusqlite::Connection::open(first.dir.path().join("audit.sqlite"))
        .unwrap()
        .execute("VACUUM INTO ?1", [store.to_str().unwrap()])
        .unwrap();
    let second = spawn_app_launched(
        Options::default(),
        Launch {
            config_file: Some(config_file.clone()),
            store: Some(ketenportaal::store::StoreLocation::Sqlite(store)),
        },
    )
    .await;
    assert!(
        second
            .state
            .gateway
            .runtime()
            .config
            .adapters
            .contains_key("uwv-wia"),
        "the stored registration is layered at start"
    );
    let d: Value = second
        .me_dossier(&second.citizen_token(CITIZEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(source(&d, "uwv-wia")["status"], "ok");
    let v0 = second.state.gateway.runtime().config.version.clone();
    let text = std::fs::read_to_string(&config_file).unwrap();
    std::fs::write(
        &config_file,
        text.replace("deadline: 1500ms", "deadline: 1450ms"),
    )
    .unwrap();
    assert!(
        wait_for_version_change(&second, &v0).await,
        "the edit was not picked up: reload triggers not armed"
    );
    let rt = second.state.gateway.runtime();
    assert_eq!(rt.config.gateway.deadline.0, Duration::from_millis(1450));
    assert!(
        rt.config.adapters.contains_key("uwv-wia"),
        "still layered after the reload"
    );
}

//! The partner surface, tried as an attacker with a partner key would: descriptors sent over the
//! API never reach the gateway's environment, files or network.

use serde_json::{Value, json};

use crate::helpers::{
    Behaviour, Options, SECRET, TestApp, root, spawn_app, spawn_app_with, uwv_variant,
};
use ketenportaal::demo::demo_key;

fn toeslagen_variant(id: &str) -> String {
    std::fs::read_to_string(root().join("adapters/toeslagen.yaml"))
        .unwrap()
        .replace("id: toeslagen", &format!("id: {id}"))
}

async fn put(app: &TestApp, id: &str, org: &str, body: &str) -> (u16, Value) {
    let r = app
        .http
        .put(format!("{}/v1/adapters/{id}", app.url))
        .header("X-Api-Key", demo_key(SECRET, org))
        .header("content-type", "application/yaml")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn dry_run(app: &TestApp, id: &str, org: &str, descriptor: &str) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/v1/adapters/{id}/test", app.url))
        .header("X-Api-Key", demo_key(SECRET, org))
        .json(&json!({"bsn": "999993653", "descriptor": descriptor}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The `invalidParams` messages of a 422, joined.
fn messages(p: &Value) -> String {
    p["invalidParams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("{} {}", x["name"], x["reason"]))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[tokio::test]
async fn a_descriptor_sent_over_the_api_gets_no_environment_expansion() {
    let app = spawn_app().await;
    let path_value = std::env::var("PATH").unwrap();
    for reference in ["${PATH}", "${PATH:-x}", "${env.PATH}", "$${PATH}"] {
        let text = uwv_variant("uwv-env")
            .replace("description: \"", &format!("description: \"{reference} "));
        let line = line_of(&text, "description:");
        for (status, p) in [
            put(&app, "uwv-env", "uwv", &text).await,
            dry_run(&app, "uwv-env", "uwv", &text).await,
        ] {
            assert_eq!(status, 422, "{reference}: {p}");
            let m = messages(&p);
            assert!(m.contains(&format!(":{line}:")), "{reference}: {m}");
            assert!(m.contains("no environment expansion"), "{m}");
            assert!(!p.to_string().contains(&path_value), "{reference} leaked");
        }
    }
    // Nothing was registered.
    let r = app
        .http
        .get(format!("{}/v1/adapters/uwv-env", app.url))
        .header("X-Api-Key", demo_key(SECRET, "uwv"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_registered_endpoint_stays_under_the_organisations_declared_urls() {
    let app = spawn_app().await;
    let chaos = app.chaos_url.clone();
    let port: u16 = chaos.rsplit(':').next().unwrap().parse().unwrap();
    let gateway = app.url.clone();
    let escapes = [
        "http://evil.example.org/uwv/UitkeringenService".to_string(),
        format!("{gateway}/metrics"),
        format!("http://127.0.0.1:{}/uwv/UitkeringenService", port + 1),
        format!("http://[::1]:{port}/uwv/UitkeringenService"),
        format!("http://[::ffff:127.0.0.1]:{port}/uwv/UitkeringenService"),
        format!("http://localhost:{port}/uwv/UitkeringenService"),
        format!("http://user@127.0.0.1:{port}/uwv/UitkeringenService"),
        format!("http://127.0.0.1:{port}@evil.example.org/uwv/UitkeringenService"),
        format!("https://127.0.0.1:{port}/uwv/UitkeringenService"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "/uwv/../svb/RegelingenService".to_string(),
        "/uwv/%2e%2e/svb/RegelingenService".to_string(),
        "/uwv/..%2Fsvb/RegelingenService".to_string(),
        "/uwv\\..\\svb/RegelingenService".to_string(),
        "/uwvx/UitkeringenService".to_string(),
        "/svb/RegelingenService".to_string(),
        "/".to_string(),
        "file:///etc/passwd".to_string(),
    ];
    for e in &escapes {
        let text = uwv_variant("uwv-escape").replace(
            "endpoint: /uwv/UitkeringenService",
            &format!("endpoint: '{e}'"),
        );
        let line = line_of(&text, "endpoint:");
        for (status, p) in [
            put(&app, "uwv-escape", "uwv", &text).await,
            dry_run(&app, "uwv-escape", "uwv", &text).await,
        ] {
            assert_eq!(status, 422, "{e} was not refused: {p}");
            let m = messages(&p);
            assert!(m.contains(&format!(":{line}:")), "{e}: {m}");
            assert!(m.contains("allowed_endpoints"), "{e}: {m}");
        }
    }
    // What lies under the declared URL is accepted, written as a path or in full, and is
    // called in its normal form.
    for ok in [
        "/uwv/UitkeringenService".to_string(),
        format!("{chaos}/uwv/UitkeringenService"),
        format!("{chaos}/uwv/x/../UitkeringenService"),
        // 127.0.0.1 spelled as one number is the declared host itself.
        format!("http://2130706433:{port}/uwv/UitkeringenService"),
    ] {
        let text = uwv_variant("uwv-ok").replace(
            "endpoint: /uwv/UitkeringenService",
            &format!("endpoint: '{ok}'"),
        );
        let (status, p) = put(&app, "uwv-ok", "uwv", &text).await;
        assert!(status == 201 || status == 200, "{ok}: {p}");
        let (status, r) = dry_run(&app, "uwv-ok", "uwv", &text).await;
        assert_eq!(
            (status, r["status"].as_str()),
            (200, Some("ok")),
            "{ok}: {r}"
        );
    }
}

#[tokio::test]
async fn a_registered_source_that_redirects_is_not_followed() {
    let app = spawn_app().await;
    app.chaos.set(
        "/uwv/Omleiding",
        Behaviour::Redirect(format!("{}/metrics", app.url)),
    );
    let text = uwv_variant("uwv-redirect").replace(
        "endpoint: /uwv/UitkeringenService",
        "endpoint: /uwv/Omleiding",
    );
    let (status, r) = dry_run(&app, "uwv-redirect", "uwv", &text).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("302"), "{r}");
    assert!(r.get("sections").is_none(), "{r}");
}

#[tokio::test]
async fn a_registration_cannot_name_files_on_the_gateway() {
    let app = spawn_app().await;
    // A real PEM file the gateway could read: the old code accepted it.
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let ca = app.dir.path().join("ca.pem");
    std::fs::write(&ca, key.cert.pem()).unwrap();
    for tls in [
        format!("tls: {{ca: '{}'}}", ca.display()),
        "tls: {ca: ../config/keys/ca.pem}".to_string(),
        "tls: {client_cert: /etc/ssl/private/gw.pem, client_key: /etc/ssl/private/gw.key}"
            .to_string(),
    ] {
        let text =
            uwv_variant("uwv-files").replace("timeout: 800ms", &format!("timeout: 800ms\n{tls}"));
        let line = line_of(&text, "tls:");
        for (status, p) in [
            put(&app, "uwv-files", "uwv", &text).await,
            dry_run(&app, "uwv-files", "uwv", &text).await,
        ] {
            assert_eq!(status, 422, "{tls}: {p}");
            let m = messages(&p);
            assert!(m.contains(&format!(":{line}:")), "{m}");
            assert!(m.contains("cannot name files"), "{m}");
            assert!(!m.contains("cannot read"), "the file was opened: {m}");
        }
    }
}

#[tokio::test]
async fn headers_methods_and_bounds_of_a_registration_are_held_to_the_policy() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|c| {
            c.gateway.registrations.max_per_organisation = 2;
        })),
        ..Default::default()
    })
    .await;
    let base = toeslagen_variant("toeslagen-extra");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            base.replace("rest:\n", "rest:\n  headers: {Host: intern.example}\n"),
            "Host",
            "may not set header",
        ),
        (
            base.replace(
                "rest:\n",
                "rest:\n  headers: {Transfer-Encoding: chunked}\n",
            ),
            "Transfer-Encoding",
            "may not set header",
        ),
        (
            base.replace("rest:\n", "rest:\n  headers: {traceparent: 00-x}\n"),
            "traceparent",
            "may not set header",
        ),
        (
            base.replace("rest:\n", "rest:\n  headers: {Proxy-Authorization: x}\n"),
            "Proxy-Authorization",
            "may not set header",
        ),
        (
            base.replace(
                "rest:\n",
                "rest:\n  headers: {\"X-A\": \"a\\r\\nHost: b\"}\n",
            ),
            "X-A",
            "not valid",
        ),
        (
            base.replace("method: POST", "method: DELETE"),
            "method:",
            "not allowed",
        ),
        (
            base.replace("timeout: 800ms", "timeout: 10m"),
            "timeout: 10m",
            "above",
        ),
        (
            format!("{base}resilience: {{retries: 10}}\n"),
            "resilience:",
            "retries",
        ),
        (
            format!("{base}resilience: {{max_concurrency: 100000}}\n"),
            "resilience:",
            "max_concurrency",
        ),
        (
            format!("{base}resilience: {{circuit: {{enabled: false}}}}\n"),
            "resilience:",
            "circuit breaker off",
        ),
        (
            format!("{base}max_response_body: 1GiB\n"),
            "max_response_body",
            "above the gateway",
        ),
    ];
    for (text, needle, what) in &cases {
        let (status, p) = put(&app, "toeslagen-extra", "belastingdienst", text).await;
        assert_eq!(status, 422, "{needle}: {p}\n{text}");
        let m = messages(&p);
        assert!(m.contains(what), "{needle}: {m}");
        let line = line_of(text, needle);
        assert!(
            m.contains(&format!(":{line}:")),
            "{needle} (line {line}): {m}"
        );
    }
    // Cache lifetimes: personal data stays no longer than the operator allows.
    let long = format!("{base}cache: {{ttl: 30d, stale_if_error: 365d}}\n");
    let (status, p) = put(&app, "toeslagen-extra", "belastingdienst", &long).await;
    assert_eq!(status, 422, "{p}");
    let m = messages(&p);
    assert!(
        m.contains("cache ttl") && m.contains("stale_if_error"),
        "{m}"
    );
    // Size: a descriptor above `registrations.max_descriptor_bytes` is refused whole.
    let big = format!("{base}\n# {}\n", "x".repeat(40 * 1024));
    let (status, p) = put(&app, "toeslagen-extra", "belastingdienst", &big).await;
    assert_eq!(status, 422, "{p}");
    assert!(messages(&p).contains("at most"), "{p}");
    // Count: two registrations per organisation here; the third is refused, a replacement not.
    for id in ["toeslagen-a", "toeslagen-b"] {
        let (status, p) = put(&app, id, "belastingdienst", &toeslagen_variant(id)).await;
        assert_eq!(status, 201, "{p}");
    }
    let (status, p) = put(
        &app,
        "toeslagen-c",
        "belastingdienst",
        &toeslagen_variant("toeslagen-c"),
    )
    .await;
    assert_eq!(status, 409, "{p}");
    assert_eq!(
        p["type"].as_str().unwrap().rsplit('/').next(),
        Some("registration-quota"),
        "{p}"
    );
    let (status, p) = put(
        &app,
        "toeslagen-a",
        "belastingdienst",
        &toeslagen_variant("toeslagen-a"),
    )
    .await;
    assert_eq!(status, 200, "{p}");
}

#[tokio::test]
async fn no_partner_route_shows_a_value_from_the_gateways_environment() {
    // The real binary, with a canary in its environment that the operator's own adapter file
    // uses (legitimately) and that a partner's descriptor tries to reach.
    let canary = format!("kanarie-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::copy_repo_dirs(dir.path(), &["config", "adapters"]);
    std::os::unix::fs::symlink(root().join("fixtures"), dir.path().join("fixtures")).unwrap();
    let uwv_file = dir.path().join("adapters/uwv-uitkeringen.yaml");
    let text = std::fs::read_to_string(&uwv_file).unwrap().replace(
        "description: \"",
        "description: \"${KETENPORTAAL_TEST_CANARY} ",
    );
    std::fs::write(&uwv_file, text).unwrap();
    let store = dir.path().join("store.sqlite");
    let mut demo = crate::helpers::start_demo(
        &store,
        Some(&dir.path().join("config/demo.yaml")),
        &[
            ("KETENPORTAAL_TEST_CANARY", canary.as_str()),
            ("KETENPORTAAL_DEMO_SECRET", SECRET),
            ("RUST_LOG", "debug"),
        ],
    );
    let http = reqwest::Client::new();
    let key = demo_key(SECRET, "uwv");
    let mut seen = String::new();
    let mut record = |what: &str, status: u16, headers: &reqwest::header::HeaderMap, body: &str| {
        seen.push_str(&format!("{what} {status}\n"));
        for (k, v) in headers {
            seen.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or_default()));
        }
        seen.push_str(body);
        seen.push('\n');
    };
    let hostile = uwv_variant("uwv-canary")
        .replace(
            "description: \"",
            "description: \"${KETENPORTAAL_TEST_CANARY} ",
        )
        .replace(
            "endpoint: /uwv/UitkeringenService",
            "endpoint: /uwv/${KETENPORTAAL_TEST_CANARY}",
        )
        .replace(
            "<u:bsn>{{bsn}}</u:bsn>",
            "<u:bsn>{{bsn}}</u:bsn><u:x>${KETENPORTAAL_TEST_CANARY:-geen}</u:x>",
        );
    let hostile_json: Value = serde_saphyr::from_str(&hostile).unwrap();
    let valid = uwv_variant("uwv-canary");
    let url = &demo.url;
    let requests: Vec<(String, reqwest::RequestBuilder)> = vec![
        (
            "PUT yaml".into(),
            http.put(format!("{url}/v1/adapters/uwv-canary"))
                .header("content-type", "application/yaml")
                .body(hostile.clone()),
        ),
        (
            "PUT json".into(),
            http.put(format!("{url}/v1/adapters/uwv-canary"))
                .header("content-type", "application/json")
                .body(hostile_json.to_string()),
        ),
        (
            "test draft".into(),
            http.post(format!("{url}/v1/adapters/uwv-canary/test"))
                .json(&json!({"bsn": "999993653", "descriptor": hostile})),
        ),
        (
            "PUT valid".into(),
            http.put(format!("{url}/v1/adapters/uwv-canary"))
                .header("content-type", "application/yaml")
                .body(valid),
        ),
        ("list".into(), http.get(format!("{url}/v1/adapters"))),
        (
            "get registration".into(),
            http.get(format!("{url}/v1/adapters/uwv-canary")),
        ),
        (
            "get file adapter".into(),
            http.get(format!("{url}/v1/adapters/uwv-uitkeringen")),
        ),
        (
            "test registration".into(),
            http.post(format!("{url}/v1/adapters/uwv-canary/test"))
                .json(&json!({"bsn": "999993653"})),
        ),
        (
            "test file adapter".into(),
            http.post(format!("{url}/v1/adapters/uwv-uitkeringen/test"))
                .json(&json!({"bsn": "999993653"})),
        ),
        (
            "delete".into(),
            http.delete(format!("{url}/v1/adapters/uwv-canary")),
        ),
        (
            "get deleted".into(),
            http.get(format!("{url}/v1/adapters/uwv-canary")),
        ),
    ];
    let mut statuses = Vec::new();
    for (what, req) in requests {
        let r = req.header("X-Api-Key", &key).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        statuses.push((what.clone(), status));
        record(&what, status, &headers, &body);
    }
    assert_eq!(
        statuses.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        [422, 422, 422, 201, 200, 200, 200, 200, 200, 204, 404],
        "{statuses:?}\n{seen}"
    );
    // The file adapter is shown with the reference, not the value.
    assert!(seen.contains("${KETENPORTAAL_TEST_CANARY}"), "{seen}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    demo.kill();
    let output = demo.output.lock().unwrap().clone();
    assert!(
        !seen.contains(&canary),
        "an answer holds the canary:\n{seen}"
    );
    assert!(
        !output.contains(&canary),
        "the log holds the canary:\n{output}"
    );
    let mut stored = Vec::new();
    // The SQLite file and its WAL, and the audit journal's segments.
    for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if !e.file_name().to_string_lossy().starts_with("store.sqlite") {
            continue;
        }
        if e.path().is_dir() {
            for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                stored.extend(std::fs::read(f.path()).unwrap());
            }
        } else {
            stored.extend(std::fs::read(e.path()).unwrap());
        }
    }
    assert!(!stored.is_empty());
    assert!(
        !String::from_utf8_lossy(&stored).contains(&canary),
        "the store holds the canary"
    );
}

#[tokio::test]
async fn a_hostile_yaml_descriptor_is_an_error_and_the_gateway_stays_up() {
    let app = spawn_app().await;
    let deep = format!(
        "id: uwv-diep\norganisation: uwv\nmap: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
    let long_id = uwv_variant(&"x".repeat(200));
    for (what, text, id) in [
        ("deep", deep.as_str(), "uwv-diep"),
        ("alias bomb", bomb, "uwv-bom"),
        ("long id", long_id.as_str(), &"x".repeat(200)[..]),
    ] {
        let (status, p) = put(&app, id, "uwv", text).await;
        assert_eq!(status, 422, "{what}: {p}");
        let (status, _) = dry_run(&app, id, "uwv", text).await;
        assert_eq!(status, 422, "{what}");
    }
    let r = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_registration_the_operator_no_longer_allows_is_left_out_and_the_rest_keep_serving() {
    let app = spawn_app_with(Options {
        copy_config: true,
        ..Options::default()
    })
    .await;
    let (status, p) = put(&app, "uwv-extra", "uwv", &uwv_variant("uwv-extra")).await;
    assert_eq!(status, 201, "{p}");
    let svb = uwv_variant("svb-extra")
        .replace("organisation: uwv", "organisation: svb")
        .replace("endpoint: /uwv/", "endpoint: /svb/");
    let (status, p) = put(&app, "svb-extra", "svb", &svb).await;
    assert_eq!(status, 201, "{p}");
    // The operator narrows UWV's endpoints; the stored uwv-extra now lies outside them.
    let file = app.dir.path().join("config/demo.yaml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "allowed_endpoints: [\"${KETENPORTAAL_AGENCIES}/uwv/\"]",
        "allowed_endpoints: [\"${KETENPORTAAL_AGENCIES}/uwv/nieuw/\"]",
    );
    std::fs::write(&file, text).unwrap();
    let admin = demo_key(SECRET, "admin");
    let r = app
        .http
        .post(format!("{}/admin/reload", app.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let rt = app.state.gateway.runtime();
    assert!(!rt.adapters.contains_key("uwv-extra"));
    assert!(rt.adapters.contains_key("svb-extra"));
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
    let left_out = status["reload"]["registrations_left_out"].to_string();
    assert!(
        left_out.contains("uwv-extra") && left_out.contains("allowed_endpoints"),
        "{left_out}"
    );
    // SVB can still change its own; UWV can send a fitting one again.
    let (status, p) = put(&app, "svb-extra", "svb", &svb).await;
    assert_eq!(status, 200, "{p}");
    let (status, _) = put(&app, "uwv-extra", "uwv", &uwv_variant("uwv-extra")).await;
    assert_eq!(status, 422);
}

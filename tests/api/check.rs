//! `ketenportaal check`: every problem, with file:line:column and a hint, non-zero exit.

use std::process::Command;

const GATEWAY: &str = r#"listen: 127.0.0.1:8080
adapters:
  - adapters/uwv.yaml
  - adapters/ontbreekt.yaml
deadline: 1500ms
limits:
  max_depth: diep
cache:
  enabled: true
  max_bytez: 10MiB
organisations:
  uwv: {name: UWV, oin: "00000001003214345000", base_url: "http://127.0.0.1:9"}
sections:
  uitkeringen: {kind: list, key: [soort]}
views:
  klant:
    audience: citizen
    sections: {uitkeringen: ["*"]}
audit:
  pseudonym_key: "test-only-pseudonym-key-0123456789abcdef"
"#;

const ADAPTER: &str = r#"id: uwv
organisation: uwv
protocol: soap
endpoint: /uwv
soap:
  version: "1.1"
  namespaces: {u: "urn:u"}
  body: "<u:Vraag><u:bsn>{{bsn}}</u:bsn></u:Vraag>"
map:
  uitkeringen:
    each: "u:Antwoord/u:Uitkering"
    fields: {soort: "u:soort"}
"#;

/// A `services:` block with one UWV service whose applications are delivered to `endpoint`.
fn delivery_service(endpoint: &str) -> String {
    format!(
        "services:\n  ww-aanvragen:\n    title: WW aanvragen\n    organisation: uwv\n    description: WW.\n    relevant_when: \"true\"\n    reason: ja\n    reason_not: nee\n    application:\n      schema: {{type: object}}\n      delivery:\n        protocol: rest\n        endpoint: \"{endpoint}\"\n        rest: {{method: POST}}\n"
    )
}

fn run_check(dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ketenportaal"))
        .args(["check", "--config"])
        .arg(dir.join("gateway.yaml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (
        out.status.success(),
        text.replace(&dir.display().to_string(), "[dir]"),
    )
}

#[test]
fn check_reports_unknown_key_wrong_type_and_missing_adapter_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), GATEWAY).unwrap();
    std::fs::write(dir.path().join("adapters/uwv.yaml"), ADAPTER).unwrap();
    let (ok, text) = run_check(dir.path());
    assert!(!ok, "check must fail:\n{text}");
    assert!(text.contains("[dir]/gateway.yaml:4:5: adapter file or folder `adapters/ontbreekt.yaml` does not exist"), "{text}");
    assert!(
        text.contains(
            "[dir]/gateway.yaml:7:14: `max_depth`: invalid type: string \"diep\", expected u32"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "[dir]/gateway.yaml:10:3: unknown key `max_bytez`\n    hint: did you mean `max_bytes`?"
        ),
        "{text}"
    );
    assert!(text.contains("3 problem(s) found"), "{text}");
    insta::assert_snapshot!("check_three_problems", text);
}

#[test]
fn check_reports_cross_reference_problems_in_adapters() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        GATEWAY
            .replace("  - adapters/ontbreekt.yaml\n", "")
            .replace("diep", "32")
            .replace("max_bytez", "max_bytes"),
    )
    .unwrap();
    let bad = ADAPTER
        .replace("organisation: uwv", "organisation: uvw")
        .replace("uitkeringen:\n", "uitkering:\n")
        .replace("{{bsn}}", "{{bsnn}}")
        .replace("\"u:soort\"", "\"x:soort\"");
    std::fs::write(dir.path().join("adapters/uwv.yaml"), bad).unwrap();
    let (ok, text) = run_check(dir.path());
    assert!(!ok);
    assert!(text.contains("adapters/uwv.yaml:2:15: organisation `uvw` is not declared in the gateway config\n    hint: did you mean `uwv`?"), "{text}");
    assert!(text.contains("unknown placeholder `{{bsnn}}`"), "{text}");
    assert!(
        text.contains("section `uitkering` is not declared"),
        "{text}"
    );
    assert!(
        text.contains("prefix `x` in step `x:soort` is not declared"),
        "{text}"
    );
    insta::assert_snapshot!("check_adapter_cross_references", text);
}

#[test]
fn check_accepts_the_shipped_demo_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_ketenportaal"))
        .args(["check", "--config"])
        .arg(crate::helpers::root().join("config/demo.yaml"))
        .env("KETENPORTAAL_AGENCIES", "http://127.0.0.1:9")
        .env("KETENPORTAAL_DEMO_SECRET", crate::helpers::SECRET)
        .env("KETENPORTAAL_DEMO_PSEUDONYM_KEY", crate::helpers::SECRET)
        .envs(
            [
                "KETENPORTAAL_DEMO_KEY_UWV_SHA256",
                "KETENPORTAAL_DEMO_KEY_SVB_SHA256",
                "KETENPORTAAL_DEMO_KEY_GEMEENTE_UTRECHT_SHA256",
                "KETENPORTAAL_DEMO_KEY_BELASTINGDIENST_SHA256",
                "KETENPORTAAL_DEMO_ADMIN_SHA256",
            ]
            .map(|k| (k, ketenportaal::credentials::sha256_hex(k))),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn secrets_from_the_environment_are_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    let cfg = GATEWAY
        .replace("  - adapters/ontbreekt.yaml\n", "")
        .replace("max_depth: diep", "max_depth: ${GEHEIM}")
        .replace("max_bytez", "max_bytes");
    std::fs::write(dir.path().join("gateway.yaml"), cfg).unwrap();
    std::fs::write(dir.path().join("adapters/uwv.yaml"), ADAPTER).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ketenportaal"))
        .args(["check", "--config"])
        .arg(dir.path().join("gateway.yaml"))
        .env("GEHEIM", "zeer-geheime-waarde")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!text.contains("zeer-geheime-waarde"), "{text}");
    assert!(
        text.contains("the value from ${GEHEIM} is not valid here (value not shown)"),
        "{text}"
    );
}

#[test]
fn check_reports_a_rule_typo_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::copy_repo_dirs(dir.path(), &["config", "adapters"]);
    let cfg = dir.path().join("config/demo.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("relevant_when: \"persoon.leeftijd >= 66\""))
        .unwrap()
        + 1;
    std::fs::write(
        &cfg,
        text.replace(
            "relevant_when: \"persoon.leeftijd >= 66\"",
            "relevant_when: \"persoon.leeftjid >= 66\"",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ketenportaal"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains(&format!("config/demo.yaml:{line}:20: services.aow-aanvragen: no adapter maps field `leeftjid` into section `persoon`")),
        "{text}"
    );
}

#[test]
fn check_refuses_an_adapter_mapping_into_the_gateways_own_zaken_section() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    let gateway = GATEWAY
        .replace("  - adapters/ontbreekt.yaml\n", "")
        .replace("  max_depth: diep\n", "  max_depth: 64\n")
        .replace("  max_bytez: 10MiB\n", "")
        .replace(
            "  uitkeringen: {kind: list, key: [soort]}",
            "  uitkeringen: {kind: list, key: [soort]}\n  zaken: {kind: list, key: [id]}",
        );
    std::fs::write(dir.path().join("gateway.yaml"), gateway).unwrap();
    std::fs::write(
        dir.path().join("adapters/uwv.yaml"),
        ADAPTER.replace("  uitkeringen:\n", "  zaken:\n"),
    )
    .unwrap();
    let (ok, text) = run_check(dir.path());
    assert!(!ok, "{text}");
    assert!(
        text.contains("section `zaken` is filled by the gateway itself"),
        "{text}"
    );
    assert!(text.contains("uwv.yaml:"), "with its position: {text}");
}

#[test]
fn check_refuses_a_file_adapter_under_the_gateways_own_source_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    let gateway = GATEWAY
        .replace("adapters/uwv.yaml", "adapters/ketenportaal.yaml")
        .replace("  - adapters/ontbreekt.yaml\n", "")
        .replace("  max_depth: diep\n", "  max_depth: 64\n")
        .replace("  max_bytez: 10MiB\n", "");
    std::fs::write(dir.path().join("gateway.yaml"), gateway).unwrap();
    std::fs::write(
        dir.path().join("adapters/ketenportaal.yaml"),
        ADAPTER.replace("id: uwv", "id: ketenportaal"),
    )
    .unwrap();
    let (ok, text) = run_check(dir.path());
    assert!(!ok, "{text}");
    assert!(
        text.contains("adapters/ketenportaal.yaml:1:5: adapter id `ketenportaal` is reserved: it is the gateway's own source name"),
        "{text}"
    );
    assert!(text.contains("hint: choose another id"), "{text}");
}

#[tokio::test]
async fn adapter_test_with_an_operators_config_calls_its_sources_and_starts_no_fixtures() {
    // An operator's own config, its agencies somewhere else (here: a loopback agency server),
    // no KETENPORTAAL_AGENCIES and no fixtures/ folder beside it.
    let agencies = ketenportaal::demo::agencies::AgencyServer::start(
        &crate::helpers::root().join("fixtures/agencies"),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    let gateway = format!(
        r#"listen: 127.0.0.1:8080
adapters: [adapters]
organisations:
  uwv: {{name: UWV, oin: "00000001003214345000", base_url: "{}"}}
sections:
  persoon: {{kind: single}}
  uitkeringen: {{kind: list, key: [soort, ingangsdatum]}}
views:
  klant:
    audience: citizen
    sections: {{persoon: ["*"], uitkeringen: ["*"]}}
audit:
  pseudonym_key: "test-only-pseudonym-key-0123456789abcdef"
"#,
        agencies.base_url()
    );
    std::fs::write(dir.path().join("gateway.yaml"), gateway).unwrap();
    std::fs::copy(
        crate::helpers::root().join("adapters/uwv-uitkeringen.yaml"),
        dir.path().join("adapters/uwv-uitkeringen.yaml"),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ketenportaal"))
        .args(["adapter", "test"])
        .arg(dir.path().join("adapters/uwv-uitkeringen.yaml"))
        .args(["--bsn", "999993653", "--config"])
        .arg(dir.path().join("gateway.yaml"))
        .env_remove("KETENPORTAAL_AGENCIES")
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(!stderr.contains("fixture"), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    assert!(
        !v["sections"]["uitkeringen"].as_array().unwrap().is_empty(),
        "{v}"
    );
}

#[test]
fn check_warns_about_a_client_certificate_that_expires_soon_and_still_passes() {
    use chrono::Datelike;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    let ymd = |d: chrono::DateTime<chrono::Utc>| {
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["gw.example".into()]).unwrap();
    p.not_before = ymd(chrono::Utc::now() - chrono::Duration::days(300));
    p.not_after = ymd(chrono::Utc::now() + chrono::Duration::days(12));
    let soon = p.self_signed(&key).unwrap();
    p.not_after = ymd(chrono::Utc::now() - chrono::Duration::days(3));
    let expired = p.self_signed(&key).unwrap();
    std::fs::write(
        dir.path().join("soon.pem"),
        format!("{}{}", soon.pem(), key.serialize_pem()),
    )
    .unwrap();
    std::fs::write(dir.path().join("expired.pem"), expired.pem()).unwrap();
    std::fs::write(dir.path().join("gw.key"), key.serialize_pem()).unwrap();
    let gateway = GATEWAY
        .replace("  - adapters/ontbreekt.yaml\n", "")
        .replace("  max_depth: diep\n", "  max_depth: 64\n")
        .replace("  max_bytez: 10MiB\n", "")
        .replace(
            "base_url: \"http://127.0.0.1:9\"}",
            "base_url: \"http://127.0.0.1:9\", tls: {client_cert: soon.pem}}",
        );
    std::fs::write(dir.path().join("gateway.yaml"), gateway).unwrap();
    std::fs::write(
        dir.path().join("adapters/uwv.yaml"),
        ADAPTER.replace(
            "endpoint: /uwv\n",
            "endpoint: /uwv\ntls: {client_cert: expired.pem, client_key: gw.key}\n",
        ),
    )
    .unwrap();
    let (ok, text) = run_check(dir.path());
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: [dir]/gateway.yaml:")
            && text.contains("expires on")
            && text.contains("soon.pem"),
        "{text}"
    );
    assert!(
        text.contains("warning: [dir]/adapters/uwv.yaml:")
            && text.contains("expired on")
            && text.contains("expired.pem"),
        "{text}"
    );
    // Both certificates would go to a plain-HTTP endpoint, where they are never presented.
    assert!(
        text.contains("warning: [dir]/adapters/uwv.yaml:4:11: `http://127.0.0.1:9/uwv` is plain HTTP, but `tls:` applies to it"),
        "{text}"
    );
}

/// A delivery to an organisation with `tls:` over plain HTTP is valid but warned about: the
/// client certificate is never presented. Over `https://` there is no warning.
#[test]
fn check_warns_about_a_delivery_with_tls_over_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gw.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(
        dir.path().join("gw.pem"),
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("adapters/uwv.yaml"),
        ADAPTER.replace("endpoint: /uwv\n", "endpoint: https://uwv.example/uwv\n"),
    )
    .unwrap();
    for (endpoint, warned) in [
        ("http://zaken.uwv.example/api", true),
        ("https://zaken.uwv.example/api", false),
    ] {
        let gateway = GATEWAY
            .replace("  - adapters/ontbreekt.yaml\n", "")
            .replace("  max_depth: diep\n", "  max_depth: 64\n")
            .replace("  max_bytez: 10MiB\n", "")
            .replace(
                "base_url: \"http://127.0.0.1:9\"}",
                "base_url: \"http://127.0.0.1:9\", tls: {client_cert: gw.pem}}",
            );
        std::fs::write(
            dir.path().join("gateway.yaml"),
            gateway + &delivery_service(endpoint),
        )
        .unwrap();
        let (ok, text) = run_check(dir.path());
        assert!(ok, "{text}");
        assert_eq!(
            text.contains(&format!(
                "`{endpoint}` is plain HTTP, but `tls:` applies to it"
            )),
            warned,
            "{endpoint}: {text}"
        );
    }
}

#[test]
fn check_refuses_a_list_key_that_no_adapter_fills() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    let gateway = GATEWAY
        .replace("  - adapters/ontbreekt.yaml\n", "")
        .replace("  max_depth: diep\n", "  max_depth: 64\n")
        .replace("  max_bytez: 10MiB\n", "")
        .replace("key: [soort]", "key: [sort, ingangsdatum]");
    std::fs::write(dir.path().join("gateway.yaml"), gateway).unwrap();
    std::fs::write(dir.path().join("adapters/uwv.yaml"), ADAPTER).unwrap();
    let (ok, text) = run_check(dir.path());
    assert!(!ok, "{text}");
    assert!(
        text.contains("key field `sort` of section `uitkeringen` is filled by no adapter")
            && text.contains("did you mean `soort`?")
            && text.contains("key field `ingangsdatum`"),
        "{text}"
    );
    assert!(text.contains("[dir]/gateway.yaml:12:35:"), "{text}");
}

#[test]
fn the_production_example_serves_no_plain_http_to_the_network() {
    let env = |k: &str| match k {
        k if k.ends_with("_SHA256") => Some(ketenportaal::credentials::sha256_hex(k)),
        _ => Some(format!("test-value-for-{k}-0123456789abcdef")),
    };
    let root = crate::helpers::root();
    let c = ketenportaal::config::Config::load_with_env(&root.join("config/gateway.yaml"), &env)
        .unwrap();
    assert!(
        c.gateway.tls.is_some() || c.listen.ip().is_loopback(),
        "{}",
        c.listen
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // The same file on 0.0.0.0 without TLS is valid, with a warning that says so.
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::copy_repo_dirs(dir.path(), &["config", "config/keys", "adapters"]);
    let f = dir.path().join("config/gateway.yaml");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("listen: 127.0.0.1:8080", "listen: 0.0.0.0:8080");
    std::fs::write(&f, text).unwrap();
    let c = ketenportaal::config::Config::load_with_env(&f, &env).unwrap();
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter().any(|w| w.contains("plain HTTP on 0.0.0.0:8080")),
        "{w:?}"
    );
}

#[test]
fn check_refuses_an_inflight_budget_that_cannot_hold_the_largest_answer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    let gateway = GATEWAY
        .replace("  - adapters/ontbreekt.yaml\n", "")
        .replace(
            "  max_depth: diep\n",
            "  max_depth: 64\n  max_inflight_response_bytes: 16MiB\n",
        )
        .replace("max_bytez", "max_bytes");
    std::fs::write(dir.path().join("gateway.yaml"), gateway).unwrap();
    std::fs::write(
        dir.path().join("adapters/uwv.yaml"),
        format!("{ADAPTER}max_response_body: 10MiB\n"),
    )
    .unwrap();
    let (ok, text) = run_check(dir.path());
    assert!(!ok, "{text}");
    assert!(
        text.contains("[dir]/gateway.yaml:7:32: `limits.max_inflight_response_bytes` (16 MiB, of which one organisation may hold 25% (4 MiB)) cannot hold one answer of 10 MiB (adapter `uwv`) while it is mapped (20 MiB with its records)\n    hint: make an organisation's share of the budget at least twice the largest `max_response_body`, or lower that cap"),
        "{text}"
    );
    assert!(text.contains("1 problem(s) found"), "{text}");
    // The whole budget would hold it; one organisation's share must too.
    let with = |limits: &str| {
        let g = GATEWAY
            .replace("  - adapters/ontbreekt.yaml\n", "")
            .replace("  max_depth: diep\n", &format!("  max_depth: 64\n{limits}"))
            .replace("max_bytez", "max_bytes");
        std::fs::write(dir.path().join("gateway.yaml"), g).unwrap();
        run_check(dir.path())
    };
    let (ok, text) = with("  max_inflight_response_bytes: 80MiB\n");
    assert!(
        ok,
        "a quarter of 80 MiB holds a 10 MiB answer twice: {text}"
    );
    let (ok, text) =
        with("  max_inflight_response_bytes: 40MiB\n  max_inflight_percent_per_organisation: 25\n");
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "of which one organisation may hold 25% (10 MiB)) cannot hold one answer of 10 MiB"
        ),
        "{text}"
    );
    let (ok, text) = with(
        "  max_inflight_response_bytes: 40MiB\n  max_inflight_percent_per_organisation: 100\n",
    );
    assert!(ok, "{text}");
    let (ok, text) = with("  max_inflight_percent_per_organisation: 0\n");
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "`limits.max_inflight_percent_per_organisation` is 0; it is a percentage from 1 to 100"
        ),
        "{text}"
    );
}

/// What a request sends is settled when the config loads: a method that is not one is refused
/// with its position (it used to be an error at the first call for a source, and a silent POST
/// for a delivery), and WS-Addressing without the mandatory action is refused.
#[test]
fn check_refuses_an_unknown_method_and_addressing_without_an_action() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    let gateway = GATEWAY
        .replace("  - adapters/ontbreekt.yaml\n", "  - adapters/brp.yaml\n")
        .replace("  max_depth: diep\n", "  max_depth: 64\n")
        .replace("  max_bytez: 10MiB\n", "");
    std::fs::write(dir.path().join("gateway.yaml"), gateway).unwrap();
    std::fs::write(
        dir.path().join("adapters/uwv.yaml"),
        ADAPTER.replace(
            "  version: \"1.1\"\n",
            "  version: \"1.1\"\n  addressing: true\n",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("adapters/brp.yaml"),
        "id: brp\norganisation: uwv\nprotocol: rest\nendpoint: /brp\nrest:\n  method: FETCH\nmap:\n  uitkeringen:\n    each: /items\n    fields: {soort: /soort}\n",
    )
    .unwrap();
    let (ok, text) = run_check(dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains("unknown HTTP method \"FETCH\""), "{text}");
    assert!(text.contains("brp.yaml:6:"), "the method's line: {text}");
    assert!(
        text.contains("`addressing: true` needs a `soap.action`"),
        "{text}"
    );
    assert!(text.contains("uwv.yaml:"), "{text}");
}

/// What `check` accepts is compiled once, when the config loads: every rule, every
/// application schema, the token keys and the server TLS are kept in the config, so building
/// the runtime from it cannot fail and no request compiles anything again.
#[tokio::test]
async fn an_accepted_config_carries_everything_compiled() {
    let app = crate::helpers::spawn_app().await;
    let c = &app.config;
    let g = &c.gateway;
    assert_eq!(
        c.compiled.catalogue.services.keys().collect::<Vec<_>>(),
        g.services.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        c.compiled.catalogue.life_events.keys().collect::<Vec<_>>(),
        g.life_events.keys().collect::<Vec<_>>()
    );
    let applicable: Vec<&String> = g
        .services
        .iter()
        .filter(|(_, s)| s.application.is_some())
        .map(|(id, _)| id)
        .collect();
    assert!(!applicable.is_empty());
    assert_eq!(
        c.compiled.schemas.keys().collect::<Vec<_>>(),
        applicable,
        "one validator per service that takes applications"
    );
    // The runtime uses the same compiled pieces (no second compilation).
    let rt = app.state.gateway.runtime();
    assert!(std::sync::Arc::ptr_eq(
        &rt.catalogue,
        &rt.config.compiled.catalogue
    ));
    assert!(std::sync::Arc::ptr_eq(
        &rt.verifier,
        &rt.config.compiled.verifier
    ));
}

/// A delivery endpoint is called as the worker will call it (a path under the organisation's
/// base URL): one that is no URL is refused when the config loads, not retried at every
/// application until it fails.
#[test]
fn check_refuses_a_delivery_endpoint_that_is_not_a_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    let gateway = GATEWAY
        .replace("  - adapters/ontbreekt.yaml\n", "")
        .replace("  max_depth: diep\n", "  max_depth: 64\n")
        .replace("max_bytez", "max_bytes");
    std::fs::write(dir.path().join("adapters/uwv.yaml"), ADAPTER).unwrap();
    for (endpoint, ok) in [
        ("/zaken/api/v1/zaken", true),
        ("https://zaken.uwv.example/api/v1/zaken", true),
        ("https://zaken uwv.example/api", false),
        ("/zaken/api v1", false),
    ] {
        std::fs::write(
            dir.path().join("gateway.yaml"),
            format!("{gateway}{}", delivery_service(endpoint)),
        )
        .unwrap();
        let (passed, text) = run_check(dir.path());
        assert_eq!(passed, ok, "{endpoint}: {text}");
        if !ok {
            assert!(
                text.contains("service `ww-aanvragen`: delivery endpoint")
                    && text.contains("is not a valid URL"),
                "{text}"
            );
        }
    }
}

#[test]
fn views_and_token_keys_name_only_declared_organisations() {
    let env = |k: &str| match k {
        k if k.ends_with("_SHA256") => Some(ketenportaal::credentials::sha256_hex(k)),
        _ => Some(format!("test-value-for-{k}-0123456789abcdef")),
    };
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::copy_repo_dirs(dir.path(), &["config", "config/keys", "adapters"]);
    let f = dir.path().join("config/gateway.yaml");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("organisations: [uwv]", "organisations: [uvw]")
        .replace(
            "      public_key: keys/idp-es256.pub.pem\n",
            "      public_key: keys/idp-es256.pub.pem\n      organisations: [svb, sbv]\n",
        );
    std::fs::write(&f, text).unwrap();
    let e = ketenportaal::config::Config::load_with_env(&f, &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("employee view `werkcoach` names organisation `uvw`, which is not declared"),
        "{e}"
    );
    assert!(
        e.contains("key `idp-2026` vouches for organisation `sbv`, which is not declared"),
        "{e}"
    );
    assert!(!e.contains("`svb`, which"), "{e}");
}

//! Browser tests of the reference portals: the real gateway on loopback (with the fixture
//! agencies behind the chaos proxy), the embedded pages in headless Chromium, an axe-core check
//! of every page, and screenshots in `target/browser-artifacts/`.

mod harness;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::time::Duration;

use helpers::{Behaviour, Options, SECRET, spawn_app_with, tweak_adapter};
use ketenportaal::model::Dur;

/// One browser at a time: two cores do not run five Chromiums well.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const UWV: &str = "/uwv/UitkeringenService";

fn cached() -> Options {
    Options {
        cache: true,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klantportaal_shows_the_own_dossier_with_sources_zaken_and_access_log() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = spawn_app_with(cached()).await;
    let Some(b) = harness::start(&app.url).await else {
        return;
    };
    // A UWV employee looked first: the citizen must see that in the access log.
    let employee = app.employee_token("uwv", &["uwv-werkcoach"]);
    let r = app
        .employee_dossier(
            &employee,
            Some("re-integratie"),
            serde_json::json!({"bsn": "999993653", "view": "werkcoach"}),
        )
        .await;
    assert_eq!(r.status(), 200);

    b.sign_in("jan").await;
    assert!(
        b.js("return location.pathname", vec![])
            .await
            .as_str()
            .unwrap_or_default()
            .ends_with("/portaal/klant.html"),
        "a citizen lands on the klantportaal"
    );
    let persoon = b.wait_text("[data-section=persoon]", "Vries").await;
    assert!(persoon.contains("Persoonsgegevens"), "{persoon}");
    assert!(
        persoon.contains("Bron: Gemeente Utrecht, gegevens van"),
        "each field says where it came from and how fresh it is:\n{persoon}"
    );
    let uitkeringen = b.wait_text("[data-section=uitkeringen]", "WW").await;
    assert!(uitkeringen.contains("Bron: UWV"), "{uitkeringen}");
    assert!(
        uitkeringen.contains("Bron: Sociale Verzekeringsbank"),
        "{uitkeringen}"
    );
    assert!(uitkeringen.contains("€"), "amounts in euros: {uitkeringen}");
    b.wait_text("[data-section=toeslagen]", "Zorgtoeslag").await;
    b.wait_text("[data-section=zaken]", "geen lopende zaken")
        .await;
    let log = b.wait_text("#inzage", "UWV").await;
    assert!(log.contains("Begeleiding naar werk"), "{log}");
    assert!(log.contains("U zelf"), "{log}");
    let notices = b
        .js(
            "return document.getElementById('meldingen').innerText",
            vec![],
        )
        .await;
    assert_eq!(notices, "", "all sources answered: no notice");
    // Keyboard: the first Tab stop is the skip link, and it becomes visible.
    b.goto("/portaal/klant.html").await;
    b.wait_text("[data-section=persoon]", "Vries").await;
    b.tab().await;
    let skip = b
        .js(
            "const a = document.activeElement; return a.matches('a.skip') && a.getBoundingClientRect().left >= 0;",
            vec![],
        )
        .await;
    assert_eq!(
        skip,
        serde_json::json!(true),
        "Tab reaches the visible skip link first"
    );
    b.axe("klantportaal").await;
    b.screenshots("klantportaal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klantportaal_says_when_a_source_is_stale_or_unavailable() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = spawn_app_with(Options {
        cache: true,
        tweak: Some(Box::new(|c| {
            tweak_adapter(c, "uwv-uitkeringen", |d| {
                d.cache.ttl = Dur(Duration::from_millis(500));
                d.cache.stale_if_error = Dur(Duration::from_secs(3600));
                d.resilience.retries = 0;
            })
        })),
        ..Options::default()
    })
    .await;
    let Some(b) = harness::start(&app.url).await else {
        return;
    };
    b.sign_in("jan").await;
    b.wait_text("[data-section=uitkeringen]", "WW-2026-0418273")
        .await;

    // UWV breaks after the answer expired: the last good answer is shown, with a notice.
    tokio::time::sleep(Duration::from_millis(700)).await;
    app.chaos.set(
        UWV,
        Behaviour::Status(503, "text/plain", "onderhoud".into()),
    );
    b.goto("/portaal/klant.html").await;
    let notice = b
        .wait_text("#meldingen [data-status=stale]", "niet bereikbaar")
        .await;
    assert!(
        notice.starts_with("UWV is op dit moment niet bereikbaar; gegevens van "),
        "{notice}"
    );
    let uitkeringen = b
        .wait_text("[data-section=uitkeringen]", "WW-2026-0418273")
        .await;
    assert!(
        uitkeringen.contains("laatst bekend"),
        "the stale items say so: {uitkeringen}"
    );
    b.axe("klantportaal-verouderd").await;
    b.screenshots("klantportaal-verouderd").await;

    // Another citizen, never cached: UWV's part is missing, and the page says why.
    b.js("sessionStorage.clear()", vec![]).await;
    b.sign_in("petra").await;
    let notice = b
        .wait_text("#meldingen .notice.error", "niet bereikbaar")
        .await;
    assert!(
        notice.starts_with("UWV is op dit moment niet bereikbaar."),
        "{notice}"
    );
    let persoon = b.wait_text("[data-section=persoon]", "Smit").await;
    assert!(!persoon.contains("UWV"), "{persoon}");
    b.screenshots("klantportaal-onbereikbaar").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medewerkersportaal_needs_a_purpose_and_shows_only_the_view_with_conflicts() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = spawn_app_with(cached()).await;
    let Some(b) = harness::start(&app.url).await else {
        return;
    };
    b.sign_in("jansen").await;
    b.wait_until(
        "!document.getElementById('zoek').hidden",
        "the consult form",
    )
    .await;
    let views = b
        .js(
            "return [...document.querySelectorAll('#view option')].map(o => o.value)",
            vec![],
        )
        .await;
    assert_eq!(
        views,
        serde_json::json!(["werkcoach"]),
        "only the views the roles open"
    );

    // No purpose: the gateway refuses, and the page says so at the purpose field.
    b.type_into("#bsn", "999993653").await;
    b.click("#zoek button[type=submit]").await;
    let refused = b.wait_text("#resultaat", "Geweigerd").await;
    assert!(
        refused.contains("purpose") || refused.contains("doel"),
        "{refused}"
    );
    b.wait_text("#purpose-error", "Kies het doel").await;
    let audit_rows = app.store.counts().await.unwrap().0;

    // An invalid BSN: the field says so.
    b.select("#purpose", "re-integratie").await;
    b.type_into("#bsn", "123456789").await;
    b.click("#zoek button[type=submit]").await;
    b.wait_text("#bsn-error", "geen geldig BSN").await;

    // With a purpose, by keyboard (Enter in the BSN field).
    b.type_into("#bsn", "999993653\u{E007}").await;
    let d = b.wait_text("#resultaat", "Dossier van BSN 999993653").await;
    assert!(
        d.contains("Persoonsgegevens") && d.contains("Uitkeringen"),
        "{d}"
    );
    assert!(
        !d.contains("Toeslagen") && !d.contains("Inkomen"),
        "sections outside the werkcoach view are absent:\n{d}"
    );
    let absent = b
        .js(
            "return ['aow_datum', 'geslacht', 'leeftijd'].filter(f => document.querySelector(`#resultaat dd[data-field=${f}]`))",
            vec![],
        )
        .await;
    assert_eq!(
        absent,
        serde_json::json!([]),
        "fields outside the view are absent"
    );
    let conflict = b
        .wait_text(
            "#resultaat dd.conflict[data-field=huisnummer]",
            "Bronnen verschillen",
        )
        .await;
    assert!(
        conflict.contains("418") && conflict.contains("412"),
        "{conflict}"
    );
    assert!(
        app.store.counts().await.unwrap().0 > audit_rows,
        "the consult is audited"
    );

    // On request: the client's life events through the same view and purpose.
    b.click("#resultaat section[aria-labelledby=klant-le-kop] button")
        .await;
    let events = b
        .wait_text(
            "#klant-gebeurtenissen",
            "Uw WW-uitkering eindigt binnenkort",
        )
        .await;
    assert!(
        events.contains("Past bij de situatie van de klant"),
        "{events}"
    );
    assert!(
        !events.contains("Aanvragen"),
        "an employee does not apply here: {events}"
    );
    b.axe("medewerkersportaal").await;
    b.screenshots("medewerkersportaal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn themaportaal_application_through_the_generated_form_reaches_delivered() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = spawn_app_with(cached()).await;
    let Some(b) = harness::start(&app.url).await else {
        return;
    };
    b.sign_in("jan").await;
    b.goto("/portaal/thema.html").await;
    let events = b
        .wait_text("#gebeurtenissen", "Uw WW-uitkering eindigt binnenkort")
        .await;
    assert!(
        events.contains("Past bij uw situatie")
            && events.contains("Waarom: Uw WW-uitkering eindigt binnen drie maanden."),
        "{events}"
    );
    b.wait_text("#themas", "18 jaar worden").await;
    b.axe("themaportaal").await;
    b.screenshots("themaportaal").await;

    b.click("#gebeurtenissen li[data-service=bijstand-aanvragen] button")
        .await;
    b.wait_until(
        "document.getElementById('aanvraagformulier')",
        "the application form",
    )
    .await;
    // Sent empty: every required field says what is missing, and a summary links to them.
    b.click("#aanvraagformulier button[type=submit]").await;
    let summary = b
        .wait_text("#aanvraag .notice.error", "probleem met uw aanvraag")
        .await;
    assert!(summary.contains("Vul dit veld in."), "{summary}");
    b.wait_text(
        "[data-name=gewenste_ingangsdatum] .error-text",
        "Vul dit veld in",
    )
    .await;
    b.wait_text("[data-name=woonsituatie] .error-text", "Vul dit veld in")
        .await;
    b.axe("themaportaal-aanvraag").await;
    b.screenshots("themaportaal-aanvraag").await;

    b.js(
        "document.getElementById('veld-gewenste_ingangsdatum').value = '2027-02-01'",
        vec![],
    )
    .await;
    b.click("#veld-woonsituatie-0").await;
    b.type_into("#veld-toelichting", "Mijn WW stopt in januari.")
        .await;
    b.click("#aanvraagformulier button[type=submit]").await;
    let status = b
        .wait_text("#aanvraag-status[data-status=delivered]", "afgeleverd")
        .await;
    assert!(
        status.contains("Afgeleverd bij Gemeente Utrecht; uw kenmerk daar is "),
        "{status}"
    );
    assert_eq!(
        app.agencies
            .intake()
            .distinct(ketenportaal::demo::intake::ZAKEN_PATH),
        1,
        "one zaak at the gemeente"
    );
    b.screenshots("themaportaal-afgeleverd").await;

    // The klantportaal lists it under lopende zaken.
    b.goto("/portaal/klant.html").await;
    let zaken = b.wait_text("[data-section=zaken]", "Bijstand").await;
    assert!(zaken.contains("afgeleverd"), "{zaken}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_status_page_shows_adapters_circuits_cache_and_reload_errors() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = spawn_app_with(Options {
        cache: true,
        copy_config: true,
        ..Options::default()
    })
    .await;
    let Some(b) = harness::start(&app.url).await else {
        return;
    };
    // Traffic first: one miss and one hit per adapter.
    let citizen = app.citizen_token("999993653");
    for _ in 0..2 {
        assert_eq!(app.me_dossier(&citizen).await.status(), 200);
    }
    b.goto("/admin/").await;
    b.type_into("#token", "not-the-token").await;
    b.click("#aanmelden button[type=submit]").await;
    b.wait_text("#meldingen", "niet geaccepteerd").await;

    let token = ketenportaal::demo::demo_key(SECRET, "admin");
    b.type_into("#token", &token).await;
    b.click("#aanmelden button[type=submit]").await;
    let table = b.wait_text("#bronnen", "uwv-uitkeringen").await;
    for id in [
        "brp-personen",
        "stuf-bg-personen",
        "svb-regelingen",
        "toeslagen",
    ] {
        assert!(table.contains(id), "{id} listed:\n{table}");
    }
    assert!(table.contains("gesloten"), "circuit state: {table}");
    assert!(
        table.contains("50%"),
        "cache hit ratio after one miss and one hit: {table}"
    );
    b.wait_text("#config", "5 antwoorden").await;
    let version = b.wait_text("#config-versie", "").await;
    assert_eq!(
        version.trim(),
        app.config.version,
        "the loaded config version"
    );
    b.axe("beheer").await;
    b.screenshots("beheer").await;

    // A broken config change: refused, the old config stays, and the page shows why.
    let file = app.dir.path().join("config/demo.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("deadline: 1500ms", "deadline: 1500ms\nonbekende_sleutel: 1"),
    )
    .unwrap();
    let r = app
        .http
        .post(format!("{}/admin/reload", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    b.click("#vernieuw").await;
    let error = b.wait_text("#reload-fout", "onbekende_sleutel").await;
    assert!(error.contains("demo.yaml:"), "with its position: {error}");
    b.wait_text("#meldingen", "de vorige configuratie blijft actief")
        .await;
    assert_eq!(
        b.wait_text("#config-versie", "").await.trim(),
        app.config.version,
        "still the old version"
    );
    b.axe("beheer-herlaadfout").await;
    b.screenshots("beheer-herlaadfout").await;
}

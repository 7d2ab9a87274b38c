//! Dossier requests end to end: fan-out, partial answers, views, callers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Behaviour, CITIZEN, SECRET, source, spawn_app};

const UWV: &str = "/uwv/UitkeringenService";
const TOESLAGEN: &str = "/belastingdienst/toeslagen/api/v1/toeslagen/_zoek";

fn uwv_answer(envelope_open: &str, body: &str, envelope_close: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{envelope_open}{body}{envelope_close}")
}

/// The same UWV answer under three prefix schemes.
fn prefix_variants() -> Vec<String> {
    vec![
        // Default namespaces everywhere.
        uwv_answer(
            r#"<Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Body>"#,
            r#"<GeefUitkeringenResponse xmlns="urn:nl:uwv:uitkeringen:v1"><uitkeringen>
                 <Uitkering><soort>WW</soort><ingangsdatum>2026-03-01</ingangsdatum><bedragPerMaand>2387.14</bedragPerMaand><status>lopend</status></Uitkering>
                 <Uitkering><soort>ZW</soort><ingangsdatum>2019-02-11</ingangsdatum><einddatum xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"/><bedragPerMaand>2150.60</bedragPerMaand><status>beeindigd</status></Uitkering>
               </uitkeringen></GeefUitkeringenResponse>"#,
            "</Body></Envelope>",
        ),
        // soap11env: and tns: prefixes declared on the root.
        uwv_answer(
            r#"<soap11env:Envelope xmlns:soap11env="http://schemas.xmlsoap.org/soap/envelope/" xmlns:tns="urn:nl:uwv:uitkeringen:v1" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><soap11env:Body>"#,
            r#"<tns:GeefUitkeringenResponse><tns:uitkeringen>
                 <tns:Uitkering><tns:soort>WW</tns:soort><tns:ingangsdatum>2026-03-01</tns:ingangsdatum><tns:bedragPerMaand>2387.14</tns:bedragPerMaand><tns:status>lopend</tns:status></tns:Uitkering>
                 <tns:Uitkering><tns:soort>ZW</tns:soort><tns:ingangsdatum>2019-02-11</tns:ingangsdatum><tns:einddatum i:nil="true"/><tns:bedragPerMaand>2150.60</tns:bedragPerMaand><tns:status>beeindigd</tns:status></tns:Uitkering>
               </tns:uitkeringen></tns:GeefUitkeringenResponse>"#,
            "</soap11env:Body></soap11env:Envelope>",
        ),
        // A prefix redeclared deeper in the tree, bound to another URI higher up.
        uwv_answer(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:a="urn:iets:anders"><s:Body>"#,
            r#"<a:GeefUitkeringenResponse xmlns:a="urn:nl:uwv:uitkeringen:v1"><a:uitkeringen>
                 <b:Uitkering xmlns:b="urn:nl:uwv:uitkeringen:v1"><b:soort>WW</b:soort><a:ingangsdatum>2026-03-01</a:ingangsdatum><b:bedragPerMaand>2387.14</b:bedragPerMaand><b:status>lopend</b:status></b:Uitkering>
                 <a:Uitkering><a:soort>ZW</a:soort><a:ingangsdatum>2019-02-11</a:ingangsdatum><a:einddatum xmlns:x="http://www.w3.org/2001/XMLSchema-instance" x:nil="1"/><a:bedragPerMaand>2150.60</a:bedragPerMaand><a:status>beeindigd</a:status></a:Uitkering>
               </a:uitkeringen></a:GeefUitkeringenResponse>"#,
            "</s:Body></s:Envelope>",
        ),
    ]
}

async fn citizen_dossier(app: &crate::helpers::TestApp) -> Value {
    let r = app.me_dossier(&app.citizen_token(CITIZEN)).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn demo_citizen_gets_a_complete_merged_dossier() {
    let app = spawn_app().await;
    let r = app.me_dossier(&app.citizen_token(CITIZEN)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["api-version"], "1.0.0");
    assert_eq!(r.headers()["content-type"], "application/json");
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["complete"], true);
    assert_eq!(d["view"], "klant");
    assert_eq!(d["subject"]["bsn"], CITIZEN);
    for a in [
        "brp-personen",
        "stuf-bg-personen",
        "uwv-uitkeringen",
        "svb-regelingen",
        "toeslagen",
    ] {
        assert_eq!(source(&d, a)["status"], "ok", "{a}");
    }
    // Provenance: the BRP is leading for persoon; records name their source.
    assert_eq!(d["sections"]["persoon"]["geslachtsnaam"], "Vries");
    assert_eq!(
        d["sections"]["persoon"]["_provenance"]["geslachtsnaam"],
        "brp-personen"
    );
    assert_eq!(
        d["sections"]["persoon"]["_provenance"]["aow_datum"],
        "svb-regelingen"
    );
    let uitkeringen = d["sections"]["uitkeringen"].as_array().unwrap();
    assert!(
        uitkeringen
            .iter()
            .any(|u| u["_source"] == "uwv-uitkeringen" && u["soort"] == "WW")
    );
    assert!(uitkeringen.iter().any(|u| u["_source"] == "svb-regelingen"));
    assert!(
        d["sections"]["toeslagen"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["_source"] == "toeslagen")
    );
    // The planted conflict: UWV keeps an old house number.
    let c = &d["conflicts"][0];
    assert_eq!(c["field"], "huisnummer");
    assert_eq!(c["values"][0], json!(["brp-personen", 418]));
    assert_eq!(c["values"][1], json!(["uwv-uitkeringen", 412]));
}

/// Personal data is never kept by a browser or a proxy: every answer that carries it says
/// `no-store`, errors included; the portal's static pages keep their own `no-cache`.
#[tokio::test]
async fn dossiers_and_other_personal_answers_are_never_stored_by_caches() {
    let app = spawn_app().await;
    let citizen = app.citizen_token(CITIZEN);
    let r = app.me_dossier(&citizen).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    let r = app
        .employee_dossier(
            &coach,
            Some("re-integratie"),
            json!({"bsn": CITIZEN, "view": "werkcoach"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    for path in ["/v1/me/access-log", "/v1/me/life-events"] {
        let r = app
            .http
            .get(format!("{}{path}", app.url))
            .bearer_auth(&citizen)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
    }
    // A refused read too: its problem may name the BSN sent.
    let r = app
        .employee_dossier(&coach, None, json!({"bsn": CITIZEN, "view": "werkcoach"}))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["cache-control"], "no-store");
    // A portal page holds no personal data: it keeps its own header, once.
    let r = app
        .http
        .get(format!("{}/portaal/klant.html", app.url))
        .send()
        .await
        .unwrap();
    let values: Vec<_> = r.headers().get_all("cache-control").iter().collect();
    assert_eq!(values, ["no-cache"]);
}

#[tokio::test]
async fn the_same_soap_answer_under_three_prefix_schemes_maps_identically() {
    let app = spawn_app().await;
    let mut results = Vec::new();
    for body in prefix_variants() {
        app.chaos
            .set(UWV, Behaviour::Status(200, "text/xml; charset=utf-8", body));
        let d = citizen_dossier(&app).await;
        assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok");
        let uwv: Vec<Value> = d["sections"]["uitkeringen"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["_source"] == "uwv-uitkeringen")
            .cloned()
            .collect();
        assert_eq!(uwv.len(), 2);
        results.push(uwv);
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
    assert_eq!(results[0][1]["einddatum"], Value::Null);
    assert_eq!(results[0][0]["bedrag_per_maand"], "2387.14");
}

/// Money keeps the source's digits: `1520.00` from a REST source (as a JSON number) or a SOAP
/// source (as text) reaches the client as `"1520.00"`, never as the float `1520.0`.
#[tokio::test]
async fn decimals_keep_the_sources_digits_end_to_end() {
    let app = spawn_app().await;
    let toeslagen = r#"{"bsn":"999993653","toeslagen":[
        {"soort":"zorgtoeslag","jaar":2026,"bedragPerMaand":1520.00,"status":"toegekend"},
        {"soort":"huurtoeslag","jaar":2026,"bedragPerMaand":12345678901234567.10,"status":"toegekend"}],
      "inkomen":[{"jaar":2025,"soort":"toetsingsinkomen","bedrag":38500.0}]}"#;
    app.chaos.set(
        TOESLAGEN,
        Behaviour::Status(200, "application/json", toeslagen.into()),
    );
    let r = app.me_dossier(&app.citizen_token(CITIZEN)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains(r#""bedrag_per_maand":"1520.00""#), "{text}");
    assert!(
        text.contains(r#""bedrag_per_maand":"12345678901234567.10""#),
        "{text}"
    );
    // The SOAP source's text (the demo UWV answers 2387.14 and 2150.60) keeps its zero.
    assert!(text.contains(r#""bedrag_per_maand":"2150.60""#), "{text}");
    let d: Value = serde_json::from_str(&text).unwrap();
    let t = d["sections"]["toeslagen"].as_array().unwrap();
    let zorg = t.iter().find(|x| x["soort"] == "zorgtoeslag").unwrap();
    assert_eq!(zorg["bedrag_per_maand"], "1520.00", "{t:?}");
    assert_eq!(d["sections"]["inkomen"][0]["bedrag"], "38500.0");
    // The same answer again, from the cache: the same text.
    let again = app.me_dossier(&app.citizen_token(CITIZEN)).await;
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains(r#""bedrag_per_maand":"1520.00""#)
    );
}

#[tokio::test]
async fn a_soap_fault_with_http_500_is_a_fault_not_a_transport_error() {
    let app = spawn_app().await;
    let fault = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault><faultcode>soapenv:Server</faultcode><faultstring>Policy Falsified</faultstring><detail><l7:policyResult xmlns:l7="http://www.layer7tech.com/ws/policy/fault" status="Assertion Falsified"/></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
    app.chaos.set(
        UWV,
        Behaviour::Status(500, "text/xml; charset=utf-8", fault.into()),
    );
    let d = citizen_dossier(&app).await;
    assert_eq!(d["complete"], false);
    let s = source(&d, "uwv-uitkeringen");
    assert_eq!(s["status"], "error");
    assert_eq!(s["error"], "SOAP Fault soapenv:Server: Policy Falsified");
    // Everyone else still answered.
    assert_eq!(source(&d, "brp-personen")["status"], "ok");
    assert_eq!(d["sections"]["persoon"]["geslachtsnaam"], "Vries");
    assert!(
        d["conflicts"].as_array().unwrap().is_empty(),
        "UWV's address is gone, so is the conflict"
    );
}

#[tokio::test]
async fn a_source_s_own_words_are_cut_short_and_a_bsn_in_them_is_masked() {
    let app = spawn_app().await;
    let fault = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>Persoon met BSN {CITIZEN} niet gevonden.
{}</faultstring></s:Fault></s:Body></s:Envelope>"#,
        "Uw DigiD is geblokkeerd. ".repeat(8000)
    );
    app.chaos
        .set(UWV, Behaviour::Status(500, "text/xml", fault));
    let text = app
        .me_dossier(&app.citizen_token(CITIZEN))
        .await
        .text()
        .await
        .unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    let e = source(&d, "uwv-uitkeringen")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with("SOAP Fault s:Client: Persoon met BSN ********* niet gevonden. Uw DigiD"),
        "{e}"
    );
    assert!(e.ends_with('…') && e.chars().count() < 260, "{e}");
    assert!(
        text.len() < 20_000,
        "a 200 KB fault does not make a 200 KB dossier"
    );
    let admin = ketenportaal::demo::demo_key(SECRET, "admin");
    let status = app.get_json("/admin/status", Some(&admin)).await;
    assert!(!status.to_string().contains(CITIZEN), "{status}");
}

#[tokio::test]
async fn an_answer_with_more_records_in_a_section_than_allowed_is_refused() {
    let app = spawn_app().await;
    let many = |n: usize| {
        let list: Vec<Value> = (0..n)
            .map(|i| json!({"soort": "zorgtoeslag", "jaar": 2000 + i % 30, "bedragPerMaand": 1, "status": "toegekend", "beschikkingsnummer": format!("B-{i}")}))
            .collect();
        json!({"toeslagen": list, "inkomen": []}).to_string()
    };
    app.chaos.set(
        TOESLAGEN,
        Behaviour::Status(200, "application/json", many(1001)),
    );
    let d = citizen_dossier(&app).await;
    let s = source(&d, "toeslagen");
    assert_eq!(s["status"], "error", "{s}");
    assert_eq!(
        s["error"],
        "the answer could not be mapped: section `toeslagen`: 1001 records, more than the 1000 an answer may hold (limits.max_records)"
    );
    assert_eq!(source(&d, "brp-personen")["status"], "ok");
    // At the limit it is served.
    app.chaos.set(
        TOESLAGEN,
        Behaviour::Status(200, "application/json", many(1000)),
    );
    let d = citizen_dossier(&app).await;
    assert_eq!(source(&d, "toeslagen")["status"], "ok", "{d}");
}

#[tokio::test]
async fn a_rest_500_becomes_a_source_error() {
    let app = spawn_app().await;
    let problem = r#"{"type":"about:blank","title":"Internal Server Error","status":500,"detail":"Toeslagen database niet beschikbaar"}"#;
    app.chaos.set(
        TOESLAGEN,
        Behaviour::Status(500, "application/problem+json", problem.into()),
    );
    let d = citizen_dossier(&app).await;
    assert_eq!(d["complete"], false);
    let s = source(&d, "toeslagen");
    assert_eq!(s["status"], "error");
    assert_eq!(
        s["error"],
        "HTTP 500 from the source: Toeslagen database niet beschikbaar"
    );
    assert!(d["sections"].get("toeslagen").is_none());
    assert!(d["sections"]["uitkeringen"].as_array().unwrap().len() >= 2);
}

#[tokio::test]
async fn garbage_answers_become_clear_source_errors() {
    let app = spawn_app().await;
    app.chaos.set(
        TOESLAGEN,
        Behaviour::Status(
            200,
            "application/json",
            "<html>Service Unavailable</html>".into(),
        ),
    );
    app.chaos.set(
        UWV,
        Behaviour::Status(200, "text/xml", "\u{0}\u{1}garbage<<<".into()),
    );
    let d = citizen_dossier(&app).await;
    let t = source(&d, "toeslagen");
    assert_eq!(t["status"], "error");
    assert!(
        t["error"].as_str().unwrap().contains("not valid JSON"),
        "{t}"
    );
    let u = source(&d, "uwv-uitkeringen");
    assert_eq!(u["status"], "error");
    assert!(
        u["error"].as_str().unwrap().contains("could not be mapped"),
        "{u}"
    );
    assert_eq!(d["complete"], false);
}

#[tokio::test]
async fn a_hanging_source_times_out_and_the_dossier_still_comes() {
    let app = spawn_app().await;
    app.chaos.set(UWV, Behaviour::Hang);
    let started = Instant::now();
    let d = citizen_dossier(&app).await;
    let took = started.elapsed();
    let s = source(&d, "uwv-uitkeringen");
    assert_eq!(s["status"], "timeout");
    assert_eq!(s["error"], "no answer within 800 ms");
    assert_eq!(d["complete"], false);
    // Not a speed test: only that the hanging source did not hold the answer for its 30 s.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(source(&d, "svb-regelingen")["status"], "ok");
}

#[tokio::test]
async fn all_sources_down_is_an_error() {
    let app = spawn_app().await;
    for org in ["brp", "stuf-bg", "uwv", "svb", "toeslagen"] {
        app.agencies.set_down(org, true);
    }
    let r = app.me_dossier(&app.citizen_token(CITIZEN)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], 502);
    assert!(p["detail"].as_str().unwrap().contains("HTTP 503"), "{p}");
}

#[tokio::test]
async fn all_sources_hanging_is_a_gateway_timeout() {
    let app = spawn_app().await;
    for path in [
        "/brp/haalcentraal/api/brp/personen",
        "/gemeente/stuf-bg/BGService",
        UWV,
        "/svb/RegelingenService",
        TOESLAGEN,
    ] {
        app.chaos.set(path, Behaviour::Hang);
    }
    let r = app.me_dossier(&app.citizen_token(CITIZEN)).await;
    assert_eq!(r.status(), 504);
}

#[tokio::test]
async fn views_filter_fields_and_sections() {
    let app = spawn_app().await;
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    let r = app
        .employee_dossier(
            &coach,
            Some("re-integratie"),
            json!({"bsn": CITIZEN, "view": "werkcoach"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    let s = d["sections"].as_object().unwrap();
    assert!(s.contains_key("persoon") && s.contains_key("uitkeringen"));
    assert!(!s.contains_key("toeslagen") && !s.contains_key("inkomen"));
    let persoon = d["sections"]["persoon"].as_object().unwrap();
    assert!(!persoon.contains_key("leeftijd") && !persoon.contains_key("aow_datum"));
    assert!(
        !persoon["_provenance"]
            .as_object()
            .unwrap()
            .contains_key("leeftijd")
    );
    assert_eq!(persoon["geslachtsnaam"], "Vries");
    // Only the adapters the view needs were called.
    assert_eq!(source(&d, "toeslagen")["status"], "skipped");
    assert_eq!(d["purpose"], "re-integratie");

    let consulent = app.employee_token("gemeente-utrecht", &["gemeente-consulent"]);
    let r = app
        .employee_dossier(
            &consulent,
            Some("bijstand-aanvraag"),
            json!({"bsn": CITIZEN, "view": "consulent-inkomen"}),
        )
        .await;
    let d: Value = r.json().await.unwrap();
    assert!(
        d["sections"]["toeslagen"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );
    let u = &d["sections"]["uitkeringen"][0];
    assert!(
        u.get("dossiernummer").is_none(),
        "consulent does not see dossiernummer: {u}"
    );

    // Narrowing to one section calls only what that section needs.
    let r = app
        .employee_dossier(
            &consulent,
            Some("bijstand-aanvraag"),
            json!({"bsn": CITIZEN, "view": "consulent-inkomen", "sections": ["toeslagen"]}),
        )
        .await;
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["sections"].as_object().unwrap().len(), 1);
    assert_eq!(source(&d, "brp-personen")["status"], "skipped");
}

#[tokio::test]
async fn a_citizen_token_cannot_read_another_bsn() {
    let app = spawn_app().await;
    let token = app.citizen_token(CITIZEN);
    // The employee endpoint refuses citizens, whatever BSN and view they send.
    for view in ["klant", "werkcoach"] {
        let r = app
            .employee_dossier(
                &token,
                Some("re-integratie"),
                json!({"bsn": "999990019", "view": view}),
            )
            .await;
        assert_eq!(r.status(), 403);
    }
    // /v1/me/dossier always answers for the token's own BSN.
    let d = citizen_dossier(&app).await;
    assert_eq!(d["subject"]["bsn"], CITIZEN);
}

#[tokio::test]
async fn employees_need_an_allowed_role_and_purpose() {
    let app = spawn_app().await;
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    let body = json!({"bsn": CITIZEN, "view": "werkcoach"});
    let r = app.employee_dossier(&coach, None, body.clone()).await;
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("X-Purpose"));

    let r = app
        .employee_dossier(&coach, Some("nieuwsgierigheid"), body.clone())
        .await;
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"].as_str().unwrap().contains("re-integratie"),
        "{p}"
    );

    let other = app.employee_token("uwv", &["uwv-jurist"]);
    let r = app
        .employee_dossier(&other, Some("re-integratie"), body.clone())
        .await;
    assert_eq!(r.status(), 403);

    // The role alone is not enough where the view names its organisations: another
    // organisation's employee with UWV's role name does not read UWV's view.
    let svb = app.employee_token("svb", &["uwv-werkcoach"]);
    let r = app
        .employee_dossier(&svb, Some("re-integratie"), body.clone())
        .await;
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["detail"],
        "view `werkcoach` is for employees of uwv, not of `svb`"
    );

    // An employee cannot use the citizen view, nor the citizen endpoint.
    let r = app
        .employee_dossier(
            &coach,
            Some("re-integratie"),
            json!({"bsn": CITIZEN, "view": "klant"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.me_dossier(&coach).await.status(), 403);
}

/// Not 8 or 9 digits (the document's pattern) is a 400; digits that fail the 11-proef, which no
/// pattern can state, a 422. Both name the field and never echo the number.
#[tokio::test]
async fn an_invalid_bsn_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    for (bad, status) in [
        ("999993654", 422),
        ("000000000", 422),
        ("12345", 400),
        ("abcdefghi", 400),
        (" 999993653", 400),
        ("999993653 ", 400),
        ("", 400),
    ] {
        let r = app
            .employee_dossier(
                &coach,
                Some("re-integratie"),
                json!({"bsn": bad, "view": "werkcoach"}),
            )
            .await;
        assert_eq!(r.status(), status, "{bad}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["invalidParams"][0]["name"], "bsn");
        assert!(
            !p.to_string().contains(bad) || bad.is_empty(),
            "the problem must not echo the BSN: {p}"
        );
    }
}

#[tokio::test]
async fn bad_tokens_and_bodies_are_refused_clearly() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!("{}/v1/me/dossier", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(r.headers()["api-version"], "1.0.0");
    assert_eq!(app.me_dossier("not.a.token").await.status(), 401);
    // A credential or purpose sent twice: which one counts is not ours to guess.
    let token = app.citizen_token(CITIZEN);
    let r = app
        .http
        .get(format!("{}/v1/me/dossier", app.url))
        .header("Authorization", format!("Bearer {token}"))
        .header("Authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["detail"],
        "`authorization` is sent more than once; send it once"
    );
    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    let r = app
        .http
        .post(format!("{}/v1/dossiers", app.url))
        .bearer_auth(&coach)
        .header("X-Purpose", "re-integratie")
        .header("X-Purpose", "ww-beoordeling")
        .json(&json!({"bsn": CITIZEN, "view": "werkcoach"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .http
        .get(format!("{}/v1/adapters", app.url))
        .header("X-Api-Key", ketenportaal::demo::demo_key(SECRET, "uwv"))
        .header("X-Api-Key", "other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let mut forged = app.citizen_token(CITIZEN);
    // Another last signature character (the token's own last one may already be 'A', which
    // made this check pass a valid token about once in sixteen runs).
    let last = forged.pop();
    forged.push(if last == Some('A') { 'E' } else { 'A' });
    assert_eq!(app.me_dossier(&forged).await.status(), 401);
    // Signed with the right key, but with a `crit` header (RFC 7515 §4.1.11), or without
    // `exp`: refused with a short reason, not the parser's words and position.
    let sign = |crit: Option<Vec<String>>, drop: Option<&str>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("demo".into());
        header.crit = crit;
        let actor = ketenportaal::demo::citizen(CITIZEN).unwrap();
        let mut claims = serde_json::to_value(ketenportaal::auth::claims_for(
            &app.config.gateway.auth,
            &actor,
            600,
        ))
        .unwrap();
        if let Some(d) = drop {
            claims.as_object_mut().unwrap().remove(d);
        }
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(app.me_dossier(&sign(None, None)).await.status(), 200);
    let r = app.me_dossier(&sign(Some(vec!["exp".into()]), None)).await;
    assert_eq!(r.status(), 401);
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("(`crit`)"), "{p}");
    let r = app.me_dossier(&sign(None, Some("exp"))).await;
    assert_eq!(r.status(), 401);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["detail"], "the token is not valid: the token has no `exp` claim",
        "{p}"
    );

    let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
    let r = app
        .employee_dossier(
            &coach,
            Some("re-integratie"),
            json!({"bsn": CITIZEN, "view": "werkcoach", "extra": 1}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = app
        .http
        .post(format!("{}/v1/dossiers", app.url))
        .bearer_auth(&coach)
        .header("X-Purpose", "re-integratie")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .http
        .post(format!("{}/v1/dossiers", app.url))
        .bearer_auth(&coach)
        .body(vec![b' '; 200 * 1024])
        .send()
        .await;
    // The gateway answers 413 as soon as the body passes the cap; the client may still be
    // sending and then sees the connection close instead of the answer.
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request() || e.is_body() || e.is_connect(), "{e}"),
    }
    let r = app
        .http
        .get(format!("{}/v1/nothing", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn traceparent_is_propagated_to_every_adapter_call() {
    let app = spawn_app().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = app
        .http
        .get(format!("{}/v1/me/dossier", app.url))
        .bearer_auth(app.citizen_token(CITIZEN))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["trace_id"], trace_id);
    let seen = app.chaos.seen_traceparents.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    for tp in seen {
        assert!(tp.starts_with(&format!("00-{trace_id}-")), "{tp}");
        assert!(
            !tp.contains("00f067aa0ba902b7"),
            "each call gets its own span: {tp}"
        );
    }
}

#[tokio::test]
async fn cross_bsn_reads_with_citizen_tokens_have_zero_successes() {
    let app = spawn_app().await;
    let people = ketenportaal::bsn::TEST_BSNS;
    let views = ["klant", "werkcoach", "consulent-inkomen"];
    let mut tried = 0;
    let mut succeeded = 0;
    for own in people {
        let token = app.citizen_token(own);
        for other in people.iter().filter(|p| **p != own) {
            for view in views {
                for purpose in [None, Some("re-integratie"), Some("bijstand-aanvraag")] {
                    let r = app
                        .employee_dossier(&token, purpose, json!({"bsn": other, "view": view}))
                        .await;
                    tried += 1;
                    if r.status().is_success() {
                        succeeded += 1;
                    }
                }
            }
        }
        // The citizen endpoint has no way to name another BSN: it answers for the token's own.
        let d: Value = app.me_dossier(&token).await.json().await.unwrap();
        assert_eq!(d["subject"]["bsn"], own);
    }
    assert_eq!(tried, 270);
    assert_eq!(succeeded, 0, "cross-BSN reads must all fail");
}

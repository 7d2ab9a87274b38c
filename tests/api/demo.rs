//! The README's demo command: the real binary, its printed curl line, a complete dossier.

use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_demo_prints_a_curl_line_that_returns_a_complete_dossier() {
    let dir = tempfile::tempdir().unwrap();
    let demo = crate::helpers::start_demo(&dir.path().join("demo.sqlite"), None, &[]);
    let curl = demo.citizen_curl.clone();
    // curl -s http://127.0.0.1:PORT/v1/me/dossier -H "Authorization: Bearer TOKEN"
    let url = curl
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap();
    let token = curl.split("Bearer ").nth(1).unwrap().trim_end_matches('"');
    let d: serde_json::Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["complete"], true, "{d}");
    let sources = d["sources"].as_array().unwrap();
    let orgs: std::collections::BTreeSet<&str> = sources
        .iter()
        .filter(|s| s["status"] == "ok")
        .map(|s| s["organisation"].as_str().unwrap())
        .collect();
    assert!(orgs.len() >= 3, "{orgs:?}");
    // Both SOAP (UWV, SVB) and REST (BRP, toeslagen) sources contributed records.
    let uitkeringen = d["sections"]["uitkeringen"].as_array().unwrap();
    assert!(
        uitkeringen
            .iter()
            .any(|u| u["_source"] == "uwv-uitkeringen")
    );
    assert!(
        d["sections"]["toeslagen"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["_source"] == "toeslagen")
    );
    assert_eq!(
        d["sections"]["persoon"]["_provenance"]["geslachtsnaam"],
        "brp-personen"
    );
    // The portals the README sends a newcomer to are there, with the demo sign-in.
    let http = reqwest::Client::new();
    for page in [
        "/portaal/",
        "/portaal/aanmelden.html",
        "/portaal/klant.html",
    ] {
        let r = http
            .get(format!("{}{page}", demo.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{page}");
    }
    let s: serde_json::Value = http
        .post(format!("{}/portaal/demo/sign-in", demo.url))
        .json(&serde_json::json!({"account": "jan"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["actor"], "citizen");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_stops_accepting() {
    let app = crate::helpers::spawn_app().await;
    app.chaos.set(
        "/uwv/UitkeringenService",
        crate::helpers::Behaviour::Delay(700),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut demo = crate::helpers::start_demo(
        &dir.path().join("s.sqlite"),
        None,
        &[
            ("KETENPORTAAL_AGENCIES", app.chaos_url.as_str()),
            ("KETENPORTAAL_DEMO_SECRET", crate::helpers::SECRET),
        ],
    );
    let url = demo.url.clone();
    let token = app.citizen_token(crate::helpers::CITIZEN);
    let client = reqwest::Client::new();
    let in_flight = tokio::spawn({
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        async move {
            client
                .get(format!("{url}/v1/me/dossier"))
                .bearer_auth(token)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    let pid = demo.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The request that was in flight still gets its full answer.
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let d: serde_json::Value = r.json().await.unwrap();
    assert_eq!(d["complete"], true);
    // And the process ends by itself, cleanly.
    let started = Instant::now();
    let status = loop {
        if let Some(s) = demo.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
    assert!(
        client.get(format!("{url}/healthz")).send().await.is_err(),
        "no longer accepting"
    );
}

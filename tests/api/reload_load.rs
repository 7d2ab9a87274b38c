//! Under steady load: 50 reloads alternating between two valid configurations, plus 5 invalid
//! ones; no request may fail. Prints the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::helpers::{CITIZEN, Options, SECRET, spawn_app_with};
use ketenportaal::demo::demo_key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_fail_no_request() {
    let app = spawn_app_with(Options {
        copy_config: true,
        cache: true,
        ..Options::default()
    })
    .await;
    let admin = demo_key(SECRET, "admin");
    let uwv_file = app.dir.path().join("adapters/uwv-uitkeringen.yaml");
    let original = std::fs::read_to_string(&uwv_file).unwrap();
    let variant_a = original.replace("timeout: 800ms", "timeout: 790ms");
    let variant_b = original.replace("timeout: 800ms", "timeout: 810ms");
    let invalid = original.replace("timeout: 800ms", "timeout: 800ms\nonbekend: ja");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (http, url, stop, ok, failed) = (
            app.http.clone(),
            app.url.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        let token = app.citizen_token(CITIZEN);
        let coach = app.employee_token("uwv", &["uwv-werkcoach"]);
        clients.push(tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                let r = if i % 2 == 0 {
                    http.get(format!("{url}/v1/me/dossier"))
                        .bearer_auth(&token)
                        .send()
                        .await
                } else {
                    http.post(format!("{url}/v1/dossiers"))
                        .bearer_auth(&coach)
                        .header("X-Purpose", "re-integratie")
                        .header(
                            "Cache-Control",
                            if i % 4 == 1 { "no-cache" } else { "max-age=0" },
                        )
                        .json(&serde_json::json!({"bsn": CITIZEN, "view": "werkcoach"}))
                        .send()
                        .await
                };
                match r {
                    Ok(r) if r.status() == 200 => {
                        let d: serde_json::Value = r.json().await.unwrap_or_default();
                        if d["complete"] == true {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let reload = || {
        app.http
            .post(format!("{}/admin/reload", app.url))
            .bearer_auth(&admin)
            .send()
    };
    let started = Instant::now();
    let (mut accepted, mut refused) = (0, 0);
    for n in 0..55 {
        let text = if n % 11 == 10 {
            &invalid
        } else if n % 2 == 0 {
            &variant_a
        } else {
            &variant_b
        };
        std::fs::write(&uwv_file, text).unwrap();
        match reload().await.unwrap().status().as_u16() {
            200 => accepted += 1,
            422 => refused += 1,
            other => panic!("reload answered {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "reload under load: {accepted} reloads accepted, {refused} refused, in {took:?}; {ok} requests ok, {failed} failed"
    );
    assert_eq!((accepted, refused), (50, 5));
    assert_eq!(failed, 0);
    assert!(ok > 100, "the load was too light to mean anything: {ok}");
}

//! Hostile input: from sources (entity bombs, endless answers, deep nesting) and from clients
//! (oversized heads, slow clients). A clear refusal every time, and the gateway keeps serving.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Behaviour, CITIZEN, Options, source, spawn_app, spawn_app_with};

const UWV: &str = "/uwv/UitkeringenService";
const TOESLAGEN: &str = "/belastingdienst/toeslagen/api/v1/toeslagen/_zoek";

#[tokio::test]
async fn an_entity_bomb_from_a_source_is_refused() {
    let app = spawn_app().await;
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>&lol2;</s:Body></s:Envelope>"#;
    app.chaos
        .set(UWV, Behaviour::Status(200, "text/xml", bomb.into()));
    let d: Value = app
        .me_dossier(&app.citizen_token(CITIZEN))
        .await
        .json()
        .await
        .unwrap();
    let s = source(&d, "uwv-uitkeringen");
    assert_eq!(s["status"], "error");
    assert!(s["error"].as_str().unwrap().contains("DOCTYPE"), "{s}");
    // An XXE attempt without a DOCTYPE of its own is an undeclared entity.
    let xxe = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>&xxe;</s:Body></s:Envelope>"#;
    app.chaos
        .set(UWV, Behaviour::Status(200, "text/xml", xxe.into()));
    let d: Value = app
        .me_dossier(&app.citizen_token(CITIZEN))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        source(&d, "uwv-uitkeringen")["error"]
            .as_str()
            .unwrap()
            .contains("undeclared entity")
    );
}

#[tokio::test]
async fn a_one_gigabyte_answer_is_cut_off_at_the_cap() {
    // Generous time limits, so only the size cap can end this call (even on a slow machine).
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|c| {
            c.gateway.deadline = ketenportaal::model::Dur(Duration::from_secs(30));
            crate::helpers::tweak_adapter(c, "uwv-uitkeringen", |d| {
                d.timeout = ketenportaal::model::Dur(Duration::from_secs(30));
            });
        })),
        ..Options::default()
    })
    .await;
    app.chaos.set(UWV, Behaviour::Stream(1 << 30));
    let started = Instant::now();
    let d: Value = app
        .me_dossier(&app.citizen_token(CITIZEN))
        .await
        .json()
        .await
        .unwrap();
    let s = source(&d, "uwv-uitkeringen");
    assert_eq!(s["status"], "error", "{s}");
    assert_eq!(
        s["error"],
        "the answer is larger than the cap of 4194304 bytes"
    );
    // Cut off after ~4 MiB, not after reading 1 GiB (behaviour, not a speed target).
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(source(&d, "brp-personen")["status"], "ok");
}

#[tokio::test]
async fn deep_json_nesting_is_refused() {
    let app = spawn_app().await;
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    app.chaos
        .set(TOESLAGEN, Behaviour::Status(200, "application/json", deep));
    let d: Value = app
        .me_dossier(&app.citizen_token(CITIZEN))
        .await
        .json()
        .await
        .unwrap();
    let s = source(&d, "toeslagen");
    assert_eq!(s["status"], "error");
    assert!(
        s["error"].as_str().unwrap().contains("deeper than 64"),
        "{s}"
    );
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let app = spawn_app().await;
    let mut r = app.http.get(format!("{}/healthz", app.url));
    for i in 0..100 {
        r = r.header(format!("x-extra-{i}"), "x");
    }
    assert_eq!(r.send().await.unwrap().status(), 431);
    let r = app
        .http
        .get(format!("{}/healthz", app.url))
        .header("x-big", "a".repeat(64 * 1024))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    // Still serving.
    assert_eq!(
        app.http
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let app = spawn_app_with(Options {
        cache: false,
        copy_config: false,
        tweak: Some(Box::new(|c| {
            c.gateway.limits.header_timeout = ketenportaal::model::Dur(Duration::from_millis(300));
            c.gateway.limits.body_timeout = ketenportaal::model::Dur(Duration::from_millis(300));
        })),
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let closed_within = |mut s: tokio::net::TcpStream, secs| async move {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(secs), s.read_to_end(&mut buf))
            .await
            .map(|_| String::from_utf8_lossy(&buf).into_owned())
    };
    // A connection that sends nothing at all (before the HTTP version is even known).
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let text = closed_within(silent, 5)
        .await
        .expect("a connection that sends nothing is closed");
    assert!(text.is_empty(), "{text}");
    // One that sends the first bytes of HTTP/2's preface and stops (the protocol is not
    // known yet, so no HTTP/1 timer runs).
    let mut partial = tokio::net::TcpStream::connect(&addr).await.unwrap();
    partial.write_all(b"PRI * HTTP").await.unwrap();
    let text = closed_within(partial, 5)
        .await
        .expect("a connection that sends part of the preface is closed");
    assert!(text.is_empty(), "{text}");
    // A connection idle after its first request.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = closed_within(idle, 5)
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // A body announced and never sent in full, without a token (the body is read first).
    let mut drip = tokio::net::TcpStream::connect(&addr).await.unwrap();
    drip.write_all(
        b"POST /v1/dossiers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let text = closed_within(drip, 5)
        .await
        .expect("a body that does not arrive in time ends the connection");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(
        text.contains("the request body did not arrive within 300ms (limits.body_timeout)"),
        "{text}"
    );
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // ... and never finish the headers.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the gateway did not close the slow connection"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(
        app.http
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

//! The fan-out as a team would write it in an afternoon, the other peer of part (f): an axum
//! handler that calls the `n` sources at once with one shared reqwest client, parses each JSON
//! answer and merges the cases into one JSON document. No token check, no mapping, no view
//! filter, no audit, no deadline, breaker or concurrency limit: a floor, not a peer in
//! features (like nginx + njs, and answering in the same shape).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use ketenportaal::demo;

use super::{announce_and_wait, bind_loopback};
use crate::{PATH_DOSSIER, ServeOut};

/// What the handler shares: the one client (its connection pool) and each source's id and URL.
#[derive(Clone)]
struct Naive {
    client: reqwest::Client,
    sources: Arc<[(String, String)]>,
}

/// Serves `GET /v1/me/dossier` as the merge of the `n` slow sources at `sources`
/// (`host:port`), on the runtime every server role gets.
pub async fn serve_naive(sources: &str, n: usize, out: &ServeOut) -> Result<(), String> {
    let base = sources.trim_start_matches("http://");
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| format!("reqwest client: {e}"))?;
    let sources: Arc<[(String, String)]> = (1..=n)
        .map(|i| {
            let id = format!("bron-{i:02}");
            let url = format!("http://{base}/{id}/api/v1/zaken/_zoek");
            (id, url)
        })
        .collect();
    let app = axum::Router::new()
        .route(PATH_DOSSIER, get(dossier))
        .with_state(Naive { client, sources });
    let (listener, api) = bind_loopback().await?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("error: naive server stopped: {e}");
            std::process::exit(1);
        }
    });
    announce_and_wait(api, None, out).await
}

/// All sources at once; every case into one list, tagged with its source; 502 unless every
/// source answered (as nginx + njs does).
async fn dossier(State(s): State<Naive>) -> (StatusCode, Json<Value>) {
    let calls = s.sources.iter().map(|(_, url)| {
        let client = &s.client;
        async move {
            client
                .post(url)
                .json(&json!({ "bsn": demo::DEMO_CITIZEN }))
                .send()
                .await?
                .error_for_status()?
                .json::<Value>()
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut zaken = Vec::new();
    let mut reports = Vec::new();
    for ((id, _), answer) in s.sources.iter().zip(answers) {
        let status = match answer {
            Ok(mut doc) => {
                if let Value::Array(list) = doc["zaken"].take() {
                    zaken.extend(list.into_iter().map(|mut z| {
                        if let Some(o) = z.as_object_mut() {
                            o.insert("_source".into(), json!(id));
                        }
                        z
                    }));
                }
                "ok"
            }
            Err(_) => "error",
        };
        reports.push(json!({ "adapter": id, "status": status }));
    }
    let complete = reports.iter().all(|r| r["status"] == "ok");
    let code = if complete {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    let body = json!({
        "complete": complete,
        "sections": { "bronzaken": zaken },
        "sources": reports,
    });
    (code, Json(body))
}

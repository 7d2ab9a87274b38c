//! (e) bursts: rounds of distinct citizens read at once against answers of almost 4 MiB; the
//! gateway's peak RSS per round and its RSS after an idle spell. Its output and summary rows
//! still label this part "(d)", the letter `load.sh` gives to many zaken.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{Value, json};

use super::subjects;
use crate::generator::{Endpoint, citizen_token, dossier_request, once, token_auth};
use crate::report::{Rows, mib};
use crate::serve::sources::huge_body;

pub struct BurstOpts {
    pub at_once: usize,
    pub rounds: usize,
    pub idle: Duration,
    pub label: String,
}

/// Rounds of `at_once` citizens read at once, each on its own connection, against the huge
/// source (a miss each: no citizen comes twice); the gateway's peak RSS per round (VmHWM, reset
/// before each), then its RSS after an idle spell.
pub async fn cmd_burst(
    gw_file: &Path,
    o: &BurstOpts,
    results: Option<&Path>,
) -> Result<(), String> {
    let gw = Endpoint::read(gw_file)?;
    let auth = token_auth();
    let bsns = subjects(o.at_once * o.rounds);
    let rss = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let before = gw.stats("/stats").await?;
    println!(
        "(d) burst{}: {} rounds of {} distinct citizens at once, each source answer {:.1} MiB; RSS before {:.1} MiB",
        o.label,
        o.rounds,
        o.at_once,
        huge_body(&bsns[0]).len() as f64 / 1048576.0,
        mib(rss(&before, "rss_kb"))
    );
    let mut peak = 0;
    let (mut ok, mut refused, mut failed) = (0u64, 0u64, 0u64);
    let mut example = String::new();
    for round in bsns.chunks(o.at_once) {
        gw.stats("/peak/reset").await?;
        let started = Instant::now();
        let reads = round.iter().map(|bsn| {
            let token = citizen_token(&auth, bsn);
            async move {
                let req = dossier_request(gw.api, &token?)?;
                let (status, _, body) = once(gw.api, req).await?;
                let d: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                // The one source's status in a dossier; its error in a 502 problem.
                let s = d["sources"]
                    .as_array()
                    .and_then(|a| a.iter().find(|s| s["adapter"] == "synthetisch"))
                    .cloned()
                    .unwrap_or_else(|| json!({"error": d["detail"]}));
                Ok::<_, String>((status, s))
            }
        });
        let all = futures::future::join_all(reads).await;
        let took = started.elapsed();
        for r in all {
            match r {
                Ok((StatusCode::OK, s)) if s["status"] == "ok" => ok += 1,
                Ok((_, s)) if s["error"].as_str().is_some_and(|e| e.contains("budget")) => {
                    refused += 1;
                    if example.is_empty() {
                        example = s["error"].as_str().unwrap_or_default().to_string();
                    }
                }
                other => {
                    failed += 1;
                    if failed == 1 {
                        println!("    a read failed: {other:?}");
                    }
                }
            }
        }
        let after = gw.stats("/stats").await?;
        peak = peak.max(rss(&after, "peak_rss_kb"));
        println!(
            "    round: {:.2} s, peak RSS {:.1} MiB, RSS after {:.1} MiB",
            took.as_secs_f64(),
            mib(rss(&after, "peak_rss_kb")),
            mib(rss(&after, "rss_kb"))
        );
    }
    let settled = gw.stats("/stats").await?;
    tokio::time::sleep(o.idle).await;
    let idle = gw.stats("/stats").await?;
    println!(
        "    answered {ok}, refused by the in-flight budget {refused}, other failures {failed}{}",
        if example.is_empty() {
            String::new()
        } else {
            format!(" (\"{example}\")")
        }
    );
    println!(
        "    RSS at the end {:.1} MiB, after {} s idle {:.1} MiB; source cache {:.1} MiB weighted",
        mib(rss(&settled, "rss_kb")),
        o.idle.as_secs(),
        mib(rss(&idle, "rss_kb")),
        rss(&idle, "cache_bytes") as f64 / 1048576.0
    );
    let s = format!(
        "(d) burst, {} x {} huge answers{}",
        o.rounds, o.at_once, o.label
    );
    let mut rows = Rows::new(results);
    rows.add(
        &s,
        "RSS before / peak / idle MiB",
        format!(
            "{:.1} / {:.1} / {:.1}",
            mib(rss(&before, "rss_kb")),
            mib(peak),
            mib(rss(&idle, "rss_kb"))
        ),
        "",
        "",
    );
    rows.add(
        &s,
        "answered / refused (budget) / failed",
        format!("{ok} / {refused} / {failed}"),
        "",
        "",
    );
    rows.save()
}

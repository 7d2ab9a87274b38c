//! (f) the uncached 3-way fan-out at saturation: closed loop, sources that answer at once, the
//! gateway's cache off, so every request is three source calls and a merge. The gateway with
//! its durable audit store and with log-only audit, nginx + njs, and a naive axum + reqwest
//! fan-out, side by side in the same rounds; throughput, server CPU per request, latency, and
//! what the sources saw (calls and new connections per request).

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use hyper::header::HeaderValue;
use serde_json::Value;

use ketenportaal::demo;

use crate::generator::{
    Endpoint, Run, citizen_token, closed_loop, dossier_request, dossier_supply, median, once,
    token_auth,
};
use crate::procfs::core_ticks;
use crate::report::{Rows, verdict};

pub struct SaturationOpts {
    pub n: usize,
    pub rounds: usize,
    pub measure: Duration,
    pub conns: usize,
}

/// The bar: the gateway with its durable audit at least this many times the throughput
/// of nginx + njs doing the same fan-out.
const NGINX_BAR: f64 = 2.0;
/// Unmeasured time at the start of every run (connections up, pools filled).
const WARMUP: Duration = Duration::from_secs(1);
/// Below this share of its core a server was not saturated by its own work.
const SATURATED: f64 = 0.9;

/// The sources' counters and CPU at one moment, from their control port.
struct SourceSample {
    calls: u64,
    connections: u64,
    ticks: u64,
    /// `(busy, steal, total)` of the sources' core, which they share with the generator.
    core: Option<(u64, u64, u64)>,
    at: Instant,
}

async fn source_sample(src: Endpoint) -> Option<SourceSample> {
    let v = src.stats("/stats").await.ok()?;
    Some(SourceSample {
        calls: v["source_calls"].as_u64()?,
        connections: v["source_connections"].as_u64()?,
        ticks: v["cpu_ticks"].as_u64()?,
        core: v["cpus"]
            .as_str()
            .and_then(|c| c.parse::<usize>().ok())
            .and_then(core_ticks),
        at: Instant::now(),
    })
}

/// What the sources saw over one measured window.
#[derive(Clone, Copy, Default)]
struct SourceSide {
    /// Source calls and new connections per answered request.
    calls: f64,
    connections: f64,
    /// The sources' CPU, and their core busy with anything (the generator too), as shares.
    cpu: f64,
    client_core: f64,
}

impl SourceSide {
    fn between(a: &SourceSample, b: &SourceSample, run: &Run) -> SourceSide {
        let ok = run.ok.max(1) as f64;
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let client_core = match (a.core, b.core) {
            (Some((b1, _, t1)), Some((b2, _, t2))) => (b2 - b1) as f64 / (t2 - t1).max(1) as f64,
            _ => 0.0,
        };
        SourceSide {
            calls: (b.calls - a.calls) as f64 / ok,
            connections: (b.connections - a.connections) as f64 / ok,
            cpu: (b.ticks - a.ticks) as f64 / 100.0 / secs,
            client_core,
        }
    }
}

/// A gateway's source lookups since it started (`/sources` on its control port): the cache's
/// hit / miss / joined / stale, and the outcomes its dossiers reported.
struct Lookups {
    cache: [u64; 4],
    ok: u64,
    /// Outcomes other than `ok`, by status.
    other: Vec<(String, u64)>,
}

async fn lookups(ep: &Endpoint) -> Result<Lookups, String> {
    let v = ep.stats("/sources").await?;
    let c = &v["cache_lookups"];
    let get = |k: &str| c[k].as_u64().unwrap_or(0);
    let results = v["source_results"].as_object().cloned().unwrap_or_default();
    let ok = results.get("ok").and_then(Value::as_u64).unwrap_or(0);
    let other = results
        .iter()
        .filter(|(k, _)| k.as_str() != "ok")
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
        .collect();
    Ok(Lookups {
        cache: [get("hit"), get("miss"), get("joined"), get("stale")],
        ok,
        other,
    })
}

/// Checks one answer: 200, complete, `n` sources all fetched (`ok`: none from the cache, none
/// stale, none failed), `records` cases. Returns the line to print and the body size.
fn check(name: &str, n: usize, status: StatusCode, body: &[u8]) -> Result<(String, usize), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("{name}: not JSON ({e})"))?;
    // The gateway's own `zaken` source (the store) is no source of this fan-out.
    let statuses: Vec<&str> = v["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["adapter"] != "ketenportaal")
                .filter_map(|s| s["status"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let records = v["sections"]["bronzaken"].as_array().map_or(0, Vec::len);
    if status != StatusCode::OK
        || v["complete"] != true
        || statuses.len() != n
        || statuses.iter().any(|s| *s != "ok")
    {
        return Err(format!(
            "{name}: not a complete, uncached answer ({status}, sources {}): {v}",
            statuses.join("/")
        ));
    }
    Ok((
        format!(
            "{name:19} {status}, complete, sources {}, {records} records, {} bytes",
            statuses.join("/"),
            body.len()
        ),
        body.len(),
    ))
}

pub async fn cmd_saturation(
    gw_file: &Path,
    gw_log_file: &Path,
    nginx_file: Option<&Path>,
    naive_file: &Path,
    src_file: &Path,
    o: &SaturationOpts,
    results: Option<&Path>,
) -> Result<(), String> {
    let src = Endpoint::read(src_file)?;
    // Index 0 and 1 are the gateways; nginx, when there, comes before the naive server.
    let mut targets: Vec<(&str, Endpoint)> = vec![
        ("gateway", Endpoint::read(gw_file)?),
        ("gateway, log audit", Endpoint::read(gw_log_file)?),
    ];
    if let Some(f) = nginx_file {
        targets.push(("nginx + njs", Endpoint::read(f)?));
    }
    targets.push(("naive axum", Endpoint::read(naive_file)?));
    let index = |name: &str| targets.iter().position(|t| t.0 == name);
    let token = citizen_token(&token_auth(), demo::DEMO_CITIZEN)?;

    println!(
        "(f) uncached fan-out to {} sources answering at once, at saturation (closed loop, {} connections)",
        o.n, o.conns
    );
    let before = [lookups(&targets[0].1).await?, lookups(&targets[1].1).await?];
    let mut sizes = Vec::new();
    for (name, ep) in &targets {
        // Twice: the second answer must not come from a cache either.
        let mut size = 0;
        for _ in 0..2 {
            let (status, _, body) = once(ep.api, dossier_request(ep.api, &token)?).await?;
            let (line, len) = check(name, o.n, status, &body)?;
            println!("    check {line}");
            size = len;
        }
        sizes.push(size.to_string());
    }

    let auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
    println!(
        "    closed loop, {} connections, {} s warm-up + {} s measured per run, {} rounds, order rotating",
        o.conns,
        WARMUP.as_secs(),
        o.measure.as_secs(),
        o.rounds
    );
    println!(
        "    {:5} {:19} {:>9} {:>8} {:>8} {:>8} {:>7} {:>10} {:>8} {:>8} {:>8} {:>11} {:>9} {:>9}",
        "round",
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "srv µs/req",
        "srv CPU",
        "gen CPU",
        "src CPU",
        "client core",
        "src calls",
        "src conns"
    );
    let mut runs: Vec<Vec<(Run, SourceSide)>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..o.rounds {
        for k in 0..targets.len() {
            let which = (round + k) % targets.len();
            let (name, ep) = targets[which];
            // The sources' counters over the same window as the server's CPU.
            let from = Instant::now() + WARMUP;
            let first = tokio::spawn(async move {
                tokio::time::sleep_until(from.into()).await;
                source_sample(src).await
            });
            let r = closed_loop(
                ep.api,
                ep.control,
                dossier_supply(ep.api, &auth),
                o.conns,
                WARMUP,
                o.measure,
            )
            .await;
            let side = match (first.await.ok().flatten(), source_sample(src).await) {
                (Some(a), Some(b)) => SourceSide::between(&a, &b, &r),
                _ => SourceSide::default(),
            };
            println!(
                "    {:5} {:19} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>10.1} {:>7.0}% {:>7.0}% {:>7.0}% {:>10.0}% {:>9.2} {:>9.2}",
                round + 1,
                name,
                r.rps(),
                r.ms(0.5),
                r.ms(0.99),
                r.max_ms(),
                r.errors,
                r.cpu_us_per_req(),
                r.server_cpu * 100.0,
                r.gen_cpu * 100.0,
                side.cpu * 100.0,
                side.client_core * 100.0,
                side.calls,
                side.connections
            );
            runs[which].push((r, side));
        }
    }
    let after = [lookups(&targets[0].1).await?, lookups(&targets[1].1).await?];

    let med = |w: usize, f: &dyn Fn(&Run, &SourceSide) -> f64| {
        median(runs[w].iter().map(|(r, s)| f(r, s)).collect())
    };
    let rps: Vec<f64> = (0..targets.len())
        .map(|w| med(w, &|r, _| r.rps()))
        .collect();
    let cpu: Vec<f64> = (0..targets.len())
        .map(|w| med(w, &|r, _| r.cpu_us_per_req()))
        .collect();
    let util: Vec<f64> = (0..targets.len())
        .map(|w| med(w, &|r, _| r.server_cpu))
        .collect();
    let lat = |w: usize| (med(w, &|r, _| r.ms(0.5)), med(w, &|r, _| r.ms(0.99)));
    let calls = |w: usize| (med(w, &|_, s| s.calls), med(w, &|_, s| s.connections));
    let client_core = |w: usize| med(w, &|_, s| s.client_core);
    let errors = |w: usize| runs[w].iter().map(|(r, _)| r.errors).sum::<u64>();

    println!("    medians over {} rounds:", o.rounds);
    for (w, (name, _)) in targets.iter().enumerate() {
        let (p50, p99) = lat(w);
        let (c, n) = calls(w);
        println!(
            "      {name:19} {:>9.0} req/s  p50 {p50:.2} ms  p99 {p99:.2} ms  {:.1} µs CPU/req ({:.0}% of a core)  {c:.2} source calls/req, {n:.2} new source connections/req",
            rps[w],
            cpu[w],
            util[w] * 100.0
        );
    }
    // The gateways' lookups over the whole part (checks and warm-ups too): with the cache off,
    // every one must be a call of its own.
    let mut cache_rows = Vec::new();
    for (g, (b, a)) in before.iter().zip(&after).enumerate() {
        let d: Vec<u64> = (0..4).map(|i| a.cache[i] - b.cache[i]).collect();
        let other: Vec<String> = a
            .other
            .iter()
            .map(|(k, n)| {
                let was = b.other.iter().find(|(kb, _)| kb == k).map_or(0, |x| x.1);
                (k, n - was)
            })
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let uncached = d[0] == 0 && d[2] == 0 && d[3] == 0;
        println!(
            "      {}: source lookups {} miss (a call each), {} hit, {} joined, {} stale; outcomes {} ok{}",
            targets[g].0,
            d[1],
            d[0],
            d[2],
            d[3],
            a.ok - b.ok,
            if other.is_empty() {
                String::new()
            } else {
                format!(", {}", other.join(", "))
            }
        );
        cache_rows.push((targets[g].0, d, a.ok - b.ok, other, uncached));
    }
    let ratio = |a: usize, b: usize| rps[a] / rps[b].max(1e-9);
    let cpu_ratio = |a: usize, b: usize| cpu[b] / cpu[a].max(1e-9);
    for peer in ["nginx + njs", "naive axum"] {
        if let Some(p) = index(peer) {
            let bar = if peer == "nginx + njs" {
                format!(" (bar >= {NGINX_BAR})")
            } else {
                String::new()
            };
            println!(
                "      gateway/{peer}: throughput {:.2}{bar}, CPU per request {:.2}; gateway, log audit/{peer}: throughput {:.2}",
                ratio(0, p),
                cpu_ratio(0, p),
                ratio(1, p)
            );
        }
    }
    println!(
        "      durable/log-only audit: CPU per request {:.2}, throughput {:.2}",
        cpu[0] / cpu[1].max(1e-9),
        ratio(0, 1)
    );
    if index("nginx + njs").is_none() {
        println!("      nginx + njs not measured (not installed): no verdict on the bar");
    }
    for (w, (name, _)) in targets.iter().enumerate() {
        if util[w] < SATURATED {
            println!(
                "      note: {name} got {:.0}% of its core while the client core (load generator and \
                 sources) was {:.0}% busy: it was not saturated by its own work, so its req/s is \
                 bounded by the client side and the CPU-per-request ratio is the fairer one",
                util[w] * 100.0,
                client_core(w) * 100.0
            );
        }
    }

    let s = format!("(f) saturated fan-out {} x 0 ms, {} conns", o.n, o.conns);
    let mut rows = Rows::new(results);
    rows.add(
        &s,
        &format!(
            "body bytes {}",
            targets.iter().map(|t| t.0).collect::<Vec<_>>().join(" / ")
        ),
        sizes.join(" / "),
        "",
        "",
    );
    for (w, (name, _)) in targets.iter().enumerate() {
        let (p50, p99) = lat(w);
        let (c, n) = calls(w);
        rows.add(
            &s,
            &format!("{name}: req/s, p50 / p99 ms"),
            format!("{:.0}, {p50:.2} / {p99:.2}", rps[w]),
            "",
            "",
        );
        rows.add(
            &s,
            &format!("{name}: server CPU µs/req, core use"),
            format!("{:.1}, {:.0}%", cpu[w], util[w] * 100.0),
            "",
            "",
        );
        rows.add(
            &s,
            &format!("{name}: source calls / new connections per req"),
            format!("{c:.2} / {n:.2}"),
            "",
            "",
        );
        let e = errors(w);
        rows.add(
            &s,
            &format!("{name}: errors"),
            e.to_string(),
            "0 errors",
            verdict(e == 0),
        );
    }
    for (name, d, ok, other, uncached) in &cache_rows {
        rows.add(
            &s,
            &format!("{name}: lookups miss / hit / joined / stale"),
            format!("{} / {} / {} / {}", d[1], d[0], d[2], d[3]),
            "0 hit, joined, stale",
            verdict(*uncached),
        );
        rows.add(
            &s,
            &format!("{name}: source outcomes"),
            if other.is_empty() {
                format!("{ok} ok")
            } else {
                format!("{ok} ok, {}", other.join(", "))
            },
            "all ok",
            verdict(other.is_empty()),
        );
    }
    if let Some(p) = index("nginx + njs") {
        rows.add(
            &s,
            "gateway/nginx + njs, throughput (median)",
            format!("{:.2}", ratio(0, p)),
            &format!(">= {NGINX_BAR}"),
            verdict(ratio(0, p) >= NGINX_BAR),
        );
        rows.add(
            &s,
            "gateway/nginx + njs, CPU per request",
            format!("{:.2}", cpu_ratio(0, p)),
            "",
            "",
        );
    } else {
        rows.add(
            &s,
            "gateway/nginx + njs, throughput (median)",
            "not measured".into(),
            &format!(">= {NGINX_BAR}"),
            "",
        );
    }
    if let Some(p) = index("naive axum") {
        rows.add(
            &s,
            "gateway/naive axum, throughput (median)",
            format!("{:.2}", ratio(0, p)),
            "",
            "",
        );
        rows.add(
            &s,
            "gateway/naive axum, CPU per request",
            format!("{:.2}", cpu_ratio(0, p)),
            "",
            "",
        );
    }
    rows.add(
        &s,
        "durable/log-only audit, CPU per request",
        format!("{:.2}", cpu[0] / cpu[1].max(1e-9)),
        "",
        "",
    );
    rows.save()
}

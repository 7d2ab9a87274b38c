//! (a) the cached dossier, the gateway against bare hyper answering the same bytes, closed
//! loop, alternating rounds; and (d), the same for a citizen with many applications in the
//! store beside one with none.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::HeaderValue;
use serde_json::Value;

use ketenportaal::demo;

use crate::PATH_DOSSIER;
use crate::generator::{
    Endpoint, Run, citizen_token, closed_loop, closed_loop_with_peer, dossier_request,
    dossier_supply, median, once, token_auth,
};
use crate::report::{Rows, verdict};

pub struct CachedOpts {
    pub rounds: usize,
    pub measure: Duration,
    pub conns: usize,
}

pub async fn cmd_cached(
    gw_file: &Path,
    bare_file: &Path,
    gw_log_file: Option<&Path>,
    gw_zaken: Option<(&Path, u32)>,
    gw_pg: Option<(&Path, &Path)>,
    o: &CachedOpts,
    results: Option<&Path>,
) -> Result<(), String> {
    // Index 0 is the baseline; the others are gateways.
    let mut targets: Vec<(&str, Endpoint)> = vec![
        ("bare hyper", Endpoint::read(bare_file)?),
        ("gateway", Endpoint::read(gw_file)?),
    ];
    if let Some(f) = gw_log_file {
        targets.push(("gateway, log audit", Endpoint::read(f)?));
    }
    let zaken_name = gw_zaken.map(|(_, n)| format!("gateway, {n} zaken"));
    if let (Some((f, _)), Some(name)) = (gw_zaken, &zaken_name) {
        targets.push((name.as_str(), Endpoint::read(f)?));
    }
    // Part (g): the gateway on PostgreSQL, and that server's CPU over each of its runs.
    let mut peers: Vec<Option<SocketAddr>> = vec![None; targets.len()];
    if let Some((f, pg)) = gw_pg {
        targets.push(("gateway, PostgreSQL", Endpoint::read(f)?));
        peers.push(Some(Endpoint::read(pg)?.control));
    }
    let token = citizen_token(&token_auth(), demo::DEMO_CITIZEN)?;

    // Same answer from each? Status, headers, size; a gateway's sources must all be cached.
    println!("(a) cached GET {PATH_DOSSIER} for {}", demo::DEMO_CITIZEN);
    let mut sizes = Vec::new();
    for (i, (name, ep)) in targets.iter().enumerate() {
        if i > 0 {
            // Warm the cache: this request fetches from the agencies.
            once(ep.api, dossier_request(ep.api, &token)?).await?;
        }
        let (status, headers, body) = once(ep.api, dossier_request(ep.api, &token)?).await?;
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let mut line = format!(
            "    {name:19} {status}, {} bytes, content-type {}, api-version {}",
            body.len(),
            h("content-type"),
            h("api-version")
        );
        if status != StatusCode::OK {
            return Err(format!("{name} answered {status}"));
        }
        if i > 0 {
            let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            // The gateway's own `zaken` source (the store, read on every request) is never a
            // cached source: only the agencies' answers must be.
            let statuses: Vec<&str> = v["sources"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|s| s["adapter"] != "ketenportaal")
                        .filter_map(|s| s["status"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            line.push_str(&format!(", sources {}", statuses.join("/")));
            let zaken = v["sections"]["zaken"].as_array().map_or(0, Vec::len);
            line.push_str(&format!(", {zaken} zaken shown"));
            if statuses.iter().any(|s| *s != "cached") {
                return Err(format!("{name}: the cache is not warm"));
            }
        }
        println!("{line}");
        sizes.push(body.len().to_string());
    }

    let auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
    let make_for = |addr: SocketAddr| dossier_supply(addr, &auth);

    println!(
        "    closed loop, {} connections, 1 s warm-up + {} s measured per run, {} rounds, order rotating",
        o.conns,
        o.measure.as_secs(),
        o.rounds
    );
    println!(
        "    {:5} {:19} {:>9} {:>8} {:>8} {:>8} {:>7} {:>10} {:>8} {:>8} {:>10} {:>6}",
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
        "core busy",
        "steal"
    );
    let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..o.rounds {
        for k in 0..targets.len() {
            let which = (round + k) % targets.len();
            let (name, ep) = targets[which];
            let r = closed_loop_with_peer(
                ep.api,
                ep.control,
                peers[which],
                make_for(ep.api),
                o.conns,
                Duration::from_secs(1),
                o.measure,
            )
            .await;
            println!(
                "    {:5} {:19} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>10.1} {:>7.0}% {:>7.0}% {:>9.0}% {:>5.0}%",
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
                r.core_busy * 100.0,
                r.core_steal * 100.0
            );
            if peers[which].is_some() {
                println!(
                    "          its PostgreSQL: {:.1} µs CPU/req ({:.0}% of a core)",
                    r.peer_us_per_req(),
                    r.peer_cpu * 100.0
                );
            }
            runs[which].push(r);
        }
    }

    // Allocations per request, counted in each server during a short extra run.
    let mut allocs = Vec::new();
    for (_, ep) in &targets {
        let before = ep.stats("/count/on").await?;
        let r = closed_loop(
            ep.api,
            ep.control,
            make_for(ep.api),
            o.conns,
            Duration::ZERO,
            Duration::from_secs(2),
        )
        .await;
        let after = ep.stats("/count/off").await?;
        let d = |k: &str| {
            after[k].as_u64().unwrap_or(0) as f64 - before[k].as_u64().unwrap_or(0) as f64
        };
        let n = (r.ok + r.errors).max(1) as f64;
        allocs.push((d("allocs") / n, d("alloc_bytes") / n));
    }

    let med = |w: usize, f: &dyn Fn(&Run) -> f64| median(runs[w].iter().map(f).collect());
    let rps: Vec<f64> = (0..targets.len()).map(|w| med(w, &Run::rps)).collect();
    let cpu: Vec<f64> = (0..targets.len())
        .map(|w| med(w, &Run::cpu_us_per_req))
        .collect();
    let util: Vec<f64> = (0..targets.len())
        .map(|w| med(w, &|r: &Run| r.server_cpu))
        .collect();
    let gen_util = med(0, &|r: &Run| r.gen_cpu);
    let core_busy = med(0, &|r: &Run| r.core_busy);
    let core_steal = med(0, &|r: &Run| r.core_steal);
    let lat = |w: usize| (med(w, &|r: &Run| r.ms(0.5)), med(w, &|r: &Run| r.ms(0.99)));

    println!("    medians over {} rounds:", o.rounds);
    for (w, (name, _)) in targets.iter().enumerate() {
        let (p50, p99) = lat(w);
        println!(
            "      {name:19} {:>9.0} req/s  p50 {p50:.2} ms  p99 {p99:.2} ms  {:.1} µs CPU/req ({:.0}% of a core)  {:.0} allocs/req ({:.0} B)",
            rps[w],
            cpu[w],
            util[w] * 100.0,
            allocs[w].0,
            allocs[w].1
        );
    }
    // Part (g): PostgreSQL's own CPU per request and core use, and the PostgreSQL gateway's
    // throughput and CPU against the SQLite one's (index 1).
    let pg = peers.iter().position(Option::is_some).map(|w| {
        (
            med(w, &Run::peer_us_per_req),
            med(w, &|r: &Run| r.peer_cpu) * 100.0,
            med(w, &|r: &Run| r.cpu_us_per_req() + r.peer_us_per_req()),
            rps[w] / rps[1].max(1e-9),
            cpu[w] / cpu[1].max(1e-9),
        )
    });
    if let Some((pg_us, pg_core, both_us, pg_rps, pg_cpu)) = pg {
        println!(
            "      its PostgreSQL        {pg_us:.1} µs CPU/req ({pg_core:.0}% of a core); gateway + PostgreSQL {both_us:.1} µs/req"
        );
        println!(
            "      PostgreSQL/SQLite: throughput {pg_rps:.2}, gateway CPU per request {pg_cpu:.2}"
        );
    }
    for (w, (name, _)) in targets.iter().enumerate().skip(1) {
        println!(
            "      {name}/bare: throughput {:.2}, CPU per request {:.2} (target >= 0.5)",
            rps[w] / rps[0].max(1e-9),
            cpu[0] / cpu[w].max(1e-9)
        );
    }
    if util[0] < 0.9 {
        println!(
            "      note: bare hyper got {:.0}% of its core (the core was {:.0}% busy with any \
             process, {:.0}% stolen by the host) and the generator {:.0}% of its own: bare \
             hyper was not saturated by its own work, so its figure is bounded by the generator \
             or by other processes on the machine; the throughput ratio then flatters the \
             gateway, and the CPU-per-request ratio is the fairer capacity ratio",
            util[0] * 100.0,
            core_busy * 100.0,
            core_steal * 100.0,
            gen_util * 100.0
        );
    }

    let s = if gw_zaken.is_some() {
        "(d) cached dossier, many zaken"
    } else if gw_pg.is_some() {
        "(g) cached dossier, PostgreSQL"
    } else {
        "(a) cached dossier"
    };
    let mut rows = Rows::new(results);
    rows.add(
        s,
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
        rows.add(
            s,
            &format!("{name}: req/s, p50 / p99 ms ({} conns)", o.conns),
            format!("{:.0}, {p50:.2} / {p99:.2}", rps[w]),
            "",
            "",
        );
        rows.add(
            s,
            &format!("{name}: server CPU µs/req, core use"),
            format!("{:.1}, {:.0}%", cpu[w], util[w] * 100.0),
            "",
            "",
        );
        rows.add(
            s,
            &format!("{name}: allocations/req"),
            format!("{:.0} ({:.0} B)", allocs[w].0, allocs[w].1),
            "",
            "",
        );
    }
    rows.add(
        s,
        "bare runs: generator CPU, server core busy / stolen",
        format!(
            "{:.0}%, {:.0}% / {:.0}%",
            gen_util * 100.0,
            core_busy * 100.0,
            core_steal * 100.0
        ),
        "",
        "",
    );
    if let Some((pg_us, pg_core, _, pg_rps, pg_cpu)) = pg {
        rows.add(
            s,
            "gateway, PostgreSQL: PostgreSQL's CPU µs/req, core use",
            format!("{pg_us:.1}, {pg_core:.0}%"),
            "",
            "",
        );
        rows.add(
            s,
            "PostgreSQL/SQLite: throughput, gateway CPU per request",
            format!("{pg_rps:.2}, {pg_cpu:.2}"),
            "",
            "",
        );
    }
    for (w, (name, _)) in targets.iter().enumerate().skip(1) {
        if zaken_name.as_deref() == Some(*name) {
            // Part (d) compares the citizen with many applications to the one with none.
            rows.add(
                s,
                &format!("{name}/gateway, throughput (median)"),
                format!("{:.2}", rps[w] / rps[1].max(1e-9)),
                "",
                "",
            );
            continue;
        }
        let ratio = rps[w] / rps[0].max(1e-9);
        let cpu_ratio = cpu[0] / cpu[w].max(1e-9);
        rows.add(
            s,
            &format!("{name}/bare, throughput (median)"),
            format!("{ratio:.2}"),
            ">= 0.5",
            verdict(ratio >= 0.5),
        );
        rows.add(
            s,
            &format!("{name}/bare, CPU per request"),
            format!("{cpu_ratio:.2}"),
            ">= 0.5",
            verdict(cpu_ratio >= 0.5),
        );
    }
    rows.save()
}

//! The cluster scenario at full size (issue 16), and the cached dossier on PostgreSQL against
//! SQLite in one run. `bash benches/cluster.sh` builds it in release and runs it; it needs
//! PostgreSQL, Redis and HAProxy (Debian's `postgresql`, `redis-server`, `haproxy`).
//!
//! Settings (environment): CLUSTER_SECS (60) seconds of scenario load, COMPARE_SECS (10)
//! seconds per store for the comparison, CONNS (32) concurrent requests in it.

#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/redis.rs"]
mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ketenportaal::config::Config;
use ketenportaal::demo;
use ketenportaal::store::StoreLocation;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Cached `GET /v1/me/dossier` in a closed loop against one instance on `store`: req/s, and
/// audit records per second (from the store's own count).
async fn cached_rate(store: &str, secs: u64, conns: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agencies = demo::agencies::AgencyServer::start(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/agencies"),
        "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let env = vec![
        ("KETENPORTAAL_AGENCIES".to_string(), agencies.base_url()),
        (
            "KETENPORTAAL_DEMO_SECRET".to_string(),
            cluster::SECRET.to_string(),
        ),
        ("RUST_LOG".to_string(), "warn".to_string()),
    ];
    let port = cluster::free_port();
    let instance = cluster::Instance::start("bench", port, store, &env, dir.path());
    let http = reqwest::Client::new();
    instance.wait_ready(&http).await;
    let env_fn = demo::demo_env(agencies.base_url(), cluster::SECRET.to_string());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = Config::load_with_env(&root.join("config/demo.yaml"), &env_fn)
        .unwrap_or_else(|e| panic!("{e}"));
    let token = demo::mint(
        &config,
        &demo::citizen(demo::DEMO_CITIZEN).unwrap_or_else(|e| panic!("{e}")),
        3600,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/v1/me/dossier", instance.url());
    // Warm the cache.
    for _ in 0..10 {
        let _ = http.get(&url).bearer_auth(&token).send().await;
    }
    // Counted read-only, beside the instance (a SQLite store has one gateway: its lock; the
    // walk sees the index and the journal's tail).
    let location = StoreLocation::parse(store);
    let records = || async {
        match ketenportaal::store::verify(&location).await {
            Ok(ketenportaal::store::Verdict::Intact { records, .. }) => records,
            other => panic!("the chain: {other:?}"),
        }
    };
    let before = records().await;
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (http, url, token, done) = (http.clone(), url.clone(), token.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    if let Ok(r) = http.get(&url).bearer_auth(&token).send().await
                        && r.status() == 200
                        && r.bytes().await.is_ok()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = records().await;
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        (after - before) as f64 / elapsed,
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let (Some(pg), Some(redis)) = (postgres::postgres(), redis::redis()) else {
            return;
        };
        if !cluster::haproxy_available() {
            return;
        }
        let secs = env_u64("COMPARE_SECS", 10);
        let conns = env_u64("CONNS", 32) as usize;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sqlite = dir.path().join("compare.sqlite");
        let (s_rps, s_aps) = cached_rate(&sqlite.display().to_string(), secs, conns).await;
        let (p_rps, p_aps) = cached_rate(&pg.fresh_database("compare").await, secs, conns).await;
        println!(
            "cached dossier, one instance, {conns} concurrent, {secs} s each (client on the same 2 cores):"
        );
        println!("  SQLite     {s_rps:>8.0} req/s  {s_aps:>8.0} audit records/s");
        println!("  PostgreSQL {p_rps:>8.0} req/s  {p_aps:>8.0} audit records/s  ({:.2}x SQLite)", p_rps / s_rps.max(1.0));
        let mut size = cluster::Size::full();
        size.secs = env_u64("CLUSTER_SECS", size.secs);
        let f = cluster::run(size, pg, redis).await;
        println!("{f}");
    });
}

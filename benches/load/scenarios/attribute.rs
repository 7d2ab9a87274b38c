//! (a') where a cached dossier's CPU goes: the library's steps of one cached read, each timed
//! and its allocations counted, in this one process (no sockets).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::header;
use hyper::{Request, StatusCode};

use ketenportaal::bsn::Bsn;
use ketenportaal::config::Config;
use ketenportaal::demo::{self, agencies::AgencyServer};
use ketenportaal::server;

use crate::generator::{citizen_token, token_auth};
use crate::report::Rows;
use crate::runtime::{ALLOC_BYTES, ALLOCS, COUNT_ON};
use crate::serve::gateway::{build_app, keep_cache_warm};
use crate::{PATH_DOSSIER, SECRET, root};
use ketenportaal::app::AuditMode;

/// Runs `$body` (which may `.await`) `$iters` times after a tenth as warm-up; pushes
/// `(name, ns per call, allocations per call, bytes allocated per call)`.
macro_rules! stage {
    ($out:expr, $name:expr, $iters:expr, $body:expr) => {{
        for _ in 0..($iters / 10) {
            std::hint::black_box($body);
        }
        let (a0, b0) = (ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed));
        COUNT_ON.store(true, Relaxed);
        let t0 = Instant::now();
        for _ in 0..$iters {
            std::hint::black_box($body);
        }
        let elapsed = t0.elapsed();
        COUNT_ON.store(false, Relaxed);
        let n = f64::from($iters);
        $out.push((
            $name.to_string(),
            elapsed.as_nanos() as f64 / n,
            (ALLOCS.load(Relaxed) - a0) as f64 / n,
            (ALLOC_BYTES.load(Relaxed) - b0) as f64 / n,
        ));
    }};
}

pub async fn cmd_attribute(iters: u32, results: Option<&Path>) -> Result<(), String> {
    use ketenportaal::cache::{CacheKey, Policy};
    use ketenportaal::gateway::DossierRequest;
    use ketenportaal::trace::TraceContext;
    use std::collections::BTreeSet;
    use tower::ServiceExt;

    let agencies = AgencyServer::start(
        &root().join("fixtures/agencies"),
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
    )
    .await
    .map_err(|e| format!("fixture agencies: {e}"))?;
    let env = demo::demo_env(agencies.base_url(), SECRET.to_string());
    let mut config = Config::load_with_env(&root().join("config/demo.yaml"), &env)
        .map_err(|e| format!("config/demo.yaml does not load:\n{e}"))?;
    keep_cache_warm(&mut config);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let state = build_app(
        config,
        Arc::new(env),
        ketenportaal::store::StoreLocation::Sqlite(dir.path().join("audit.sqlite")),
        AuditMode::LogOnly,
    )
    .await?;
    let token = citizen_token(&token_auth(), demo::DEMO_CITIZEN)?;
    let bearer = format!("Bearer {token}");
    let router = server::router(state.clone(), 64 * 1024);
    let http_request = || {
        Request::get(PATH_DOSSIER)
            .header(header::AUTHORIZATION, bearer.as_str())
            .body(axum::body::Body::empty())
            .expect("a valid request")
    };
    let warm = router
        .clone()
        .oneshot(http_request())
        .await
        .map_err(|e| format!("{e:?}"))?;
    if warm.status() != StatusCode::OK {
        return Err(format!("warm-up answered {}", warm.status()));
    }

    let rt = state.gateway.runtime();
    let actor = rt.verifier.verify(&token).map_err(|e| e.to_string())?;
    let bsn = Bsn::parse(demo::DEMO_CITIZEN).map_err(|e| e.to_string())?;
    let dossier_request = || DossierRequest {
        actor: actor.clone(),
        bsn,
        view: "klant".into(),
        sections: None,
        purpose: None,
        no_cache: false,
        trace: TraceContext::from_header(None),
        started_at: chrono::Utc::now(),
    };
    let keys: Vec<(CacheKey, Policy)> = rt
        .adapters
        .values()
        .map(|a| {
            let spec = &a.client.spec;
            (
                CacheKey {
                    adapter: a.client.id().clone(),
                    version: Arc::from(&spec.fingerprint[..16]),
                    bsn,
                },
                Policy {
                    ttl: spec.def.cache.ttl.0,
                    stale_if_error: spec.def.cache.stale_if_error.0,
                },
            )
        })
        .collect();
    let cache = &state.gateway.cache;
    // Only a miss would wait for it.
    let far = Instant::now() + Duration::from_secs(3600);
    let lookup_all = || async {
        let mut answers = Vec::with_capacity(keys.len());
        for (key, policy) in &keys {
            let hit = cache
                .get_or_fetch(key.clone(), *policy, false, far, |_| async {
                    Err(ketenportaal::adapter::SourceError::Unavailable)
                })
                .await;
            if let Ok((answer, _)) = hit {
                answers.push(answer);
            }
        }
        answers
    };
    let answers = lookup_all().await;
    if answers.len() != keys.len() {
        return Err("the cache is not warm".into());
    }
    let config = &rt.config;
    let view = config.gateway.views.get("klant").ok_or("no view klant")?;
    let wanted: BTreeSet<&str> = view.sections.keys().map(String::as_str).collect();
    let decimals =
        ketenportaal::config::compile::vocabulary(&config.gateway, &config.adapters).decimals;
    let refs: Vec<&ketenportaal::adapter::SourceAnswer> =
        answers.iter().map(|a| a.as_ref()).collect();
    let response = state
        .gateway
        .dossier(&rt, view, dossier_request())
        .await
        .map_err(|e| e.to_string())?;

    let mut out: Vec<(String, f64, f64, f64)> = Vec::new();
    stage!(out, "whole handler: router.oneshot, no socket", iters, {
        let r = router.clone().oneshot(http_request()).await;
        match r {
            Ok(resp) => resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .ok(),
            Err(_) => None,
        }
    });
    stage!(
        out,
        "  token verify (HS256 JWT)",
        iters,
        rt.verifier.verify(&token).is_ok()
    );
    stage!(
        out,
        "  gateway.dossier (all below + audit, metrics)",
        iters,
        state
            .gateway
            .dossier(&rt, view, dossier_request())
            .await
            .is_ok()
    );
    stage!(out, "    trace ids (root + 5 children)", iters, {
        let t = TraceContext::from_header(None);
        (0..keys.len())
            .map(|_| t.child().header().len())
            .sum::<usize>()
    });
    stage!(
        out,
        "    5 cache hits (moka get_or_fetch)",
        iters,
        lookup_all().await.len()
    );
    stage!(
        out,
        "    merge + view filter, sections serialised (klant)",
        iters,
        {
            ketenportaal::dossier::Rendered::render(
                &config.gateway.sections,
                &decimals,
                &wanted,
                &refs,
                view,
            )
            .conflicts
            .len()
        }
    );
    stage!(
        out,
        "  serialise the response (serde_json)",
        iters,
        response.to_json().len()
    );
    drop(agencies);

    println!("(a') where a cached dossier's CPU goes (one process, {iters} calls per stage)");
    println!(
        "    {:48} {:>10} {:>9} {:>10}",
        "stage", "µs/call", "allocs", "bytes"
    );
    let mut rows = Rows::new(results);
    for (name, ns, allocs, bytes) in &out {
        println!(
            "    {name:48} {:>10.2} {allocs:>9.0} {bytes:>10.0}",
            ns / 1000.0
        );
        rows.add(
            "(a') cached dossier, in-process",
            name.trim(),
            format!("{:.2} µs, {allocs:.0} allocs, {bytes:.0} B", ns / 1000.0),
            "",
            "",
        );
    }
    rows.save()
}

//! Merge benchmarks: the CPU work of one dossier once the answers are in.
//!
//! - `dossier/merge_render/5_sources`: merge + view filter of the five pre-mapped answers of
//!   999993653 (`fixtures/cases/full-999993653-klant`) in the `klant` view;
//! - `dossier/merge_render_to_vec/5_sources`: the same, then the whole response document (subject,
//!   sections, source reports, conflicts, trace id) serialised with `serde_json::to_vec`, as the
//!   API sends it;
//! - `dossier/uncached_cpu/3_sources`: everything an uncached dossier costs besides waiting when
//!   the sources answer instantly: map three raw answers (BRP over REST/JSON, UWV over SOAP with
//!   WS-Addressing, Toeslagen over REST/JSON; between them every section of `klant`), merge,
//!   render and serialise.
//!
//! Throughput is in dossiers. Run with
//! `cargo bench --bench merge -- --warm-up-time 1 --measurement-time 3`.

/// The allocator the `ketenportaal` binary runs on, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use ketenportaal::adapter::SourceAnswer;
use ketenportaal::bsn::Bsn;
use ketenportaal::config::compile::{Config, Mapping};
use ketenportaal::demo::demo_env;
use ketenportaal::dossier::{self, DecimalFields};
use ketenportaal::gateway::{DossierResponse, SourceReport, Subject};
use ketenportaal::model::ViewDef;

const CASE: &str = "fixtures/cases/full-999993653-klant";
const VIEW: &str = "klant";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn demo_config() -> Config {
    // The variables the demo supplies at start (agencies URL, token secret, pseudonym key),
    // given through the lookup closure; the process environment is never set.
    let env = demo_env(
        "http://127.0.0.1:9".to_string(),
        "benchmark-secret-not-used-for-any-token".to_string(),
    );
    Config::load_with_env(&root().join("config/demo.yaml"), &env)
        .unwrap_or_else(|e| panic!("config/demo.yaml does not load:\n{e}"))
}

/// `(adapter id, raw answer)` from the fixture case.
fn raw_answer(adapter: &str, file: &str) -> (String, Vec<u8>) {
    let path = root().join(CASE).join(file);
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (adapter.to_string(), raw)
}

/// Maps one raw answer as the adapter does after fetching it.
fn map(config: &Config, adapter: &str, raw: &[u8], fetched_at: DateTime<Utc>) -> SourceAnswer {
    let spec = &config.adapters[adapter];
    let sections = match &spec.mapping {
        Mapping::Xml(m) => m.map_envelope(raw, &spec.limits),
        Mapping::Json(m) => m.map_bytes(raw, &spec.limits),
    }
    .unwrap_or_else(|e| panic!("the {adapter} answer does not map: {e}"));
    SourceAnswer {
        adapter: Arc::from(spec.id()),
        organisation: Arc::from(spec.def.organisation.as_str()),
        fetched_at,
        sections,
        bytes: raw.len(),
    }
}

fn wanted(view: &ViewDef) -> BTreeSet<&str> {
    view.sections.keys().map(String::as_str).collect()
}

/// Merge, view filter (serialised per section, as the gateway renders) and the response
/// document.
fn respond(
    config: &Config,
    decimals: &DecimalFields,
    view: &ViewDef,
    wanted: &BTreeSet<&str>,
    answers: &[&SourceAnswer],
    bsn: Bsn,
) -> DossierResponse {
    let rendered =
        dossier::Rendered::render(&config.gateway.sections, decimals, wanted, answers, view);
    DossierResponse {
        subject: Subject { bsn },
        view: VIEW.to_string(),
        purpose: None,
        complete: true,
        generated_at: Utc::now(),
        rendered: Arc::new(rendered),
        own_sections: serde_json::Map::new(),
        sources: answers
            .iter()
            .map(|a| SourceReport {
                adapter: a.adapter.clone(),
                organisation: a.organisation.clone(),
                status: "ok",
                latency_ms: 0,
                age_ms: None,
                fetched_at: Some(a.fetched_at),
                error: None,
            })
            .collect(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
        upstream_wait: Duration::ZERO,
    }
}

fn dossier(c: &mut Criterion) {
    let config = demo_config();
    let view = &config.gateway.views[VIEW];
    let wanted = wanted(view);
    let decimals =
        ketenportaal::config::compile::vocabulary(&config.gateway, &config.adapters).decimals;
    let bsn = Bsn::parse("999993653").expect("a valid BSN");
    let fetched_at = Utc.with_ymd_and_hms(2026, 11, 28, 9, 15, 0).unwrap();

    let five: Vec<SourceAnswer> = [
        ("brp-personen", "brp-personen.json"),
        ("stuf-bg-personen", "stuf-bg-personen.xml"),
        ("uwv-uitkeringen", "uwv-uitkeringen.xml"),
        ("svb-regelingen", "svb-regelingen.xml"),
        ("toeslagen", "toeslagen.json"),
    ]
    .iter()
    .map(|(id, file)| {
        let (id, raw) = raw_answer(id, file);
        map(&config, &id, &raw, fetched_at)
    })
    .collect();
    let five: Vec<&SourceAnswer> = five.iter().collect();

    let three: Vec<(String, Vec<u8>)> = vec![
        raw_answer("brp-personen", "brp-personen.json"),
        raw_answer("uwv-uitkeringen", "uwv-uitkeringen.xml"),
        raw_answer("toeslagen", "toeslagen.json"),
    ];

    // Sanity: the dossiers are what the fixture case says, and every section is there.
    let body = respond(&config, &decimals, view, &wanted, &five, bsn).to_json();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        doc["sections"]["uitkeringen"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(doc["conflicts"].as_array().map(Vec::len), Some(1));

    let mut group = c.benchmark_group("dossier");
    group.throughput(Throughput::Elements(1));
    group.bench_function("merge_render/5_sources", |b| {
        b.iter(|| {
            dossier::Rendered::render(
                &config.gateway.sections,
                &decimals,
                &wanted,
                black_box(&five),
                view,
            )
        })
    });
    group.bench_function("merge_render_to_vec/5_sources", |b| {
        b.iter(|| {
            let resp = respond(&config, &decimals, view, &wanted, black_box(&five), bsn);
            resp.to_json()
        })
    });
    // The cache-hit path: five lookups in the moka cache (what a cached dossier does), then
    // merge, view and serialise.
    let cache = ketenportaal::cache::SourceCache::new(64 << 20, true);
    let policy = ketenportaal::cache::Policy {
        ttl: std::time::Duration::from_secs(3600),
        stale_if_error: std::time::Duration::ZERO,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let keys: Vec<ketenportaal::cache::CacheKey> = five
        .iter()
        .map(|a| ketenportaal::cache::CacheKey {
            adapter: a.adapter.clone(),
            version: std::sync::Arc::from("v"),
            bsn,
        })
        .collect();
    // Only a miss would wait for it.
    let far = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    rt.block_on(async {
        for (k, a) in keys.iter().zip(&five) {
            let a = (*a).clone();
            let _ = cache
                .get_or_fetch(k.clone(), policy, false, far, |_| async move { Ok(a) })
                .await;
        }
    });
    group.bench_function("cache_hit_lookup_merge_render_to_vec/5_sources", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut hits = Vec::with_capacity(keys.len());
                for k in &keys {
                    let (a, _) = cache
                        .get_or_fetch(k.clone(), policy, false, far, |_| async {
                            Err(ketenportaal::adapter::SourceError::Unavailable)
                        })
                        .await
                        .expect("a cache hit");
                    hits.push(a);
                }
                let answers: Vec<&SourceAnswer> = hits.iter().map(|a| a.as_ref()).collect();
                let resp = respond(&config, &decimals, view, &wanted, &answers, bsn);
                resp.to_json()
            })
        })
    });
    group.bench_function("uncached_cpu/3_sources", |b| {
        b.iter(|| {
            let answers: Vec<SourceAnswer> = black_box(&three)
                .iter()
                .map(|(id, raw)| map(&config, id, raw, Utc::now()))
                .collect();
            let answers: Vec<&SourceAnswer> = answers.iter().collect();
            let resp = respond(&config, &decimals, view, &wanted, &answers, bsn);
            resp.to_json()
        })
    });
    group.finish();
}

criterion_group!(benches, dossier);
criterion_main!(benches);

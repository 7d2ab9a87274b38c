//! Mapping benchmarks: the SOAP and JSON mappers against the bar in docs/design.md, "Bars" ("SOAP
//! mapping: streaming, within 2x of a raw quick-xml event scan of the same document").
//!
//! - `soap_uwv/map_envelope/<n>`: the compiled `uwv-uitkeringen` mapping of `config/demo.yaml`
//!   over a UWV answer (SOAP 1.1, WS-Addressing header, default namespace in the body) grown to
//!   `n` `Uitkering` records;
//! - `soap_uwv/raw_scan/<n>`: the floor — a bare `quick_xml::reader::NsReader` pass over the
//!   same bytes that resolves every element's namespace and counts the start tags, nothing else;
//! - `json_brp/map_bytes`: the `brp-personen` mapping of the BRP answer of 999993653.
//!
//! Throughput is in bytes of answer. Run with
//! `cargo bench --bench mapping -- --warm-up-time 1 --measurement-time 3`.

/// The allocator the `ketenportaal` binary runs on, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use ketenportaal::config::compile::{AdapterSpec, Config, Mapping};
use ketenportaal::demo::demo_env;

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

fn read_case(file: &str) -> String {
    let path = root()
        .join("fixtures/cases/full-999993653-klant")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The UWV answer of 999993653 with its `uitkeringen` replaced by `n` generated records of the
/// same shape (varied soorten, dates and amounts; every fifth still running, with a nil
/// einddatum).
fn uwv_envelope(n: usize) -> String {
    const SOORTEN: [&str; 5] = ["WW", "ZW", "WIA", "Wajong", "WGA"];
    let base = read_case("uwv-uitkeringen.xml");
    let open = "<uitkeringen>";
    let start = base.find(open).expect("an <uitkeringen> element") + open.len();
    let end = base
        .find("</uitkeringen>")
        .expect("an </uitkeringen> end tag");
    let mut records = String::with_capacity(n * 330);
    for i in 0..n {
        let soort = SOORTEN[i % SOORTEN.len()];
        let year = 2026 - (i % 40);
        let month = 1 + i % 12;
        let day = 1 + i % 28;
        let einddatum = if i % 5 == 0 {
            "<einddatum xsi:nil=\"true\"/>".to_string()
        } else {
            format!("<einddatum>{}-{month:02}-{day:02}</einddatum>", year + 1)
        };
        let status = if i % 5 == 0 { "lopend" } else { "beeindigd" };
        write!(
            records,
            "\n    <Uitkering>\n      <dossiernummer>{soort}-{year}-{:07}</dossiernummer>\n      \
             <soort>{soort}</soort>\n      <ingangsdatum>{year}-{month:02}-{day:02}</ingangsdatum>\n      \
             {einddatum}\n      <bedragPerMaand>{}.{:02}</bedragPerMaand>\n      \
             <status>{status}</status>\n    </Uitkering>",
            4_180_000 + i,
            900 + (i * 37) % 2100,
            i % 100,
        )
        .expect("writing to a String");
    }
    format!("{}{records}\n  {}", &base[..start], &base[end..])
}

/// The floor: every event read, every element's namespace resolved, start tags counted.
fn raw_scan(doc: &[u8]) -> usize {
    let text = std::str::from_utf8(doc).expect("UTF-8");
    let mut reader = NsReader::from_str(text);
    let mut starts = 0;
    loop {
        match reader.read_resolved_event() {
            Ok((ns, Event::Start(_) | Event::Empty(_))) => {
                if matches!(ns, ResolveResult::Bound(_) | ResolveResult::Unbound) {
                    starts += 1;
                }
            }
            Ok((_, Event::Eof)) => break,
            Ok(_) => {}
            Err(e) => panic!("the benchmark document is not well-formed: {e}"),
        }
    }
    starts
}

fn adapter<'c>(config: &'c Config, id: &str) -> &'c AdapterSpec {
    config
        .adapters
        .get(id)
        .unwrap_or_else(|| panic!("adapter {id} is not in config/demo.yaml"))
}

fn soap_uwv(c: &mut Criterion) {
    let config = demo_config();
    let spec = adapter(&config, "uwv-uitkeringen");
    let Mapping::Xml(mapping) = &spec.mapping else {
        panic!("uwv-uitkeringen is a SOAP adapter");
    };
    let mut group = c.benchmark_group("soap_uwv");
    for n in [10usize, 200] {
        let doc = uwv_envelope(n).into_bytes();
        // Check the document before timing it: n records, and the raw scan sees every element.
        let mapped = mapping.map_envelope(&doc, &spec.limits).expect("maps");
        assert_eq!(mapped["uitkeringen"].len(), n);
        assert!(raw_scan(&doc) > n * 7);

        group.throughput(Throughput::Bytes(doc.len() as u64));
        group.bench_with_input(BenchmarkId::new("map_envelope", n), &doc, |b, doc| {
            b.iter(|| mapping.map_envelope(black_box(doc), &spec.limits))
        });
        group.bench_with_input(BenchmarkId::new("raw_scan", n), &doc, |b, doc| {
            b.iter(|| raw_scan(black_box(doc)))
        });
    }
    group.finish();
}

fn json_brp(c: &mut Criterion) {
    let config = demo_config();
    let spec = adapter(&config, "brp-personen");
    let Mapping::Json(mapping) = &spec.mapping else {
        panic!("brp-personen is a REST adapter");
    };
    // The BRP answer as the wire carries it: compact JSON.
    let pretty: serde_json::Value =
        serde_json::from_str(&read_case("brp-personen.json")).expect("JSON");
    let doc = serde_json::to_vec(&pretty).expect("serialises");
    let mapped = mapping.map_bytes(&doc, &spec.limits).expect("maps");
    assert_eq!(mapped["persoon"][0]["bsn"], "999993653");

    let mut group = c.benchmark_group("json_brp");
    group.throughput(Throughput::Bytes(doc.len() as u64));
    group.bench_function("map_bytes", |b| {
        b.iter(|| mapping.map_bytes(black_box(&doc), &spec.limits))
    });
    group.finish();
}

criterion_group!(benches, soap_uwv, json_brp);
criterion_main!(benches);

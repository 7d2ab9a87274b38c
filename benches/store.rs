//! The embedded audit store alone, without HTTP: records appended by 64 concurrent requests on
//! one tokio worker, as the cached dossier appends them, and the CPU each of the store's
//! threads spends per record (from `/proc/self/task`), so that what durability costs is seen
//! apart from the noise of a whole request. Run pinned to one core, as `load.sh` runs servers:
//!
//!   cargo bench --bench store                     # 200 000 records, 1 and 10 000 subjects
//!   taskset -c 0 cargo bench --bench store -- 500000
//!
//! Linux only (it reads `/proc`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ketenportaal::bsn::Bsn;
use ketenportaal::store::{AccessRecord, AuditStore};

/// A citizen's cached dossier read, as the gateway records it (about 600 bytes of JSON).
const RECORD: &str = r#"{"kind":"dossier.read","started_at":"2026-12-06T20:51:35.875356957Z","time":"2026-12-06T20:51:35.875362586Z","trace_id":"d26a93d7e6a9d3df1d1de95851c41c3c","span_id":"76e54ffa9d175ffd","foreign_span_id":null,"actor_type":"citizen","actor":"digid:999993653","actor_organisation":null,"actor_roles":[],"bsn":"999993653","view":"klant","purpose":null,"processing_activity":null,"sections":["inkomen","persoon","toeslagen","uitkeringen","zaken"],"sources":[["brp-personen","cached"],["stuf-bg-personen","cached"],["svb-regelingen","cached"],["toeslagen","cached"],["uwv-uitkeringen","cached"]],"outcome":"served","details":null}"#;

const REQUESTS: usize = 64;

/// The allocator the `ketenportaal` binary runs on: cross-thread frees of what the journal and
/// the indexer are handed cost what they cost there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// User and system ticks per thread (id), with its name.
fn ticks() -> BTreeMap<u64, (String, u64, u64)> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let Some(tid) = path
            .file_name()
            .and_then(|f| f.to_str()?.parse::<u64>().ok())
        else {
            continue;
        };
        by_name.insert(tid, (comm.trim().to_string(), tick(11), tick(12)));
    }
    by_name
}

/// `n` valid BSNs (they pass the 11-test).
fn subjects(n: usize) -> Vec<Bsn> {
    let mut out = Vec::with_capacity(n);
    let mut k = 100_000_000u64;
    while out.len() < n {
        if let Ok(b) = Bsn::parse(&k.to_string()) {
            out.push(b);
        }
        k += 1;
    }
    out
}

async fn run(records: usize, subjects_n: usize) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = Arc::new(
        AuditStore::open(&dir.path().join("audit.sqlite"), b"bench".to_vec())
            .expect("the store opens"),
    );
    let base: AccessRecord = serde_json::from_str(RECORD).expect("the record parses");
    let subjects = Arc::new(subjects(subjects_n));
    let per = records / REQUESTS;
    let before = ticks();
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for r in 0..REQUESTS {
        let (store, base, subjects) = (store.clone(), base.clone(), subjects.clone());
        requests.spawn(async move {
            for i in 0..per {
                let n = r * per + i;
                let mut rec = base.clone();
                rec.trace_id = format!("{n:032x}");
                rec.bsn = Some(subjects[n % subjects.len()]);
                rec.time = chrono::Utc::now();
                store.append(rec).await.expect("the record is appended");
            }
        });
    }
    while requests.join_next().await.is_some() {}
    store.settle().await.expect("the index catches up");
    let wall = started.elapsed();
    let after = ticks();
    let n = (per * REQUESTS) as f64;
    // A tick is 10 ms: µs per record = ticks * 10 000 / records.
    let us = |t: u64| t as f64 * 1e4 / n;
    println!(
        "{} records, {subjects_n} subjects: {:.0} records/s",
        per * REQUESTS,
        n / wall.as_secs_f64()
    );
    // Per name, over the threads alive at the end (those of an earlier run's store that
    // were still closing are left out).
    let mut by_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (tid, (name, u, s)) in &after {
        let (u0, s0) = before.get(tid).map_or((0, 0), |(_, u, s)| (*u, *s));
        let e = by_name.entry(name.as_str()).or_insert((0, 0));
        e.0 += u.saturating_sub(u0);
        e.1 += s.saturating_sub(s0);
    }
    let mut total = 0.0;
    for (name, (du, ds)) in by_name {
        if du + ds > 0 {
            total += us(du + ds);
            println!(
                "    {name:18} user {:5.2}  sys {:5.2}  µs/record",
                us(du),
                us(ds)
            );
        }
    }
    println!("    {:18} {total:5.2} µs/record", "all threads");
}

fn main() {
    // `cargo bench` passes `--bench`; a number is the records per run.
    let records = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    for subjects in [1, 10_000] {
        runtime.block_on(run(records, subjects));
    }
}

//! End-to-end load benchmark (issue "critical-path speed", docs/design.md, "Bars"): the real gateway over
//! HTTP against a bare hyper baseline, uncached fan-out to slow sources, memory under the
//! cache's byte budget, memory through bursts of huge answers, and the uncached fan-out at
//! saturation against nginx + njs and a naive axum server.
//!
//! One binary plays every role, chosen by subcommand, so that the servers and the load generator
//! run in separate processes pinned to different cores. `benches/load.sh` drives it; run that
//! rather than this directly.
//! - `serve-sources --kind fixtures|slow|synthetic|huge`: the organisations upstream (the demo's
//!   fixture agencies; REST sources answering after a delay, or at once; a source answering any
//!   BSN, with a ~2 KB or a ~4 MiB answer);
//! - `serve-gateway --scenario cached|fanout|memory|burst`: the library's `Gateway` behind
//!   `server::serve`, on the demo config or on a config written for the scenario;
//! - `serve-bare --from-gateway FILE`: bare hyper answering the gateway's own dossier bytes;
//! - `serve-nginx`: nginx + njs doing the fan-out of parts (b) and (f), as a child process;
//! - `serve-naive`: the same fan-out as a naive axum + reqwest handler (part f);
//! - `cached`, `fanout`, `memory`, `burst`, `saturation`: the load generator for parts (a) and
//!   (d), (b), (c), (e) and (f) of `load.sh`;
//! - `attribute`: the cached dossier's CPU by stage, in one process (part (a'));
//! - `token`, `report`: helpers for the script.
//!
//! Every server writes `api address`, `control address` and its pid to `--addr-file`. The
//! control port answers `GET /stats` (RSS, CPU ticks, allocations, cache size) and
//! `/count/on|off` (allocation counting), so the generator can measure the server's cost per
//! request without a profiler.
//!
//! # Layout
//! - this file: the command line and what each subcommand runs;
//! - `runtime`: the allocator every role runs on (mimalloc, counting allocations on demand) and
//!   the server runtime `src/main.rs` builds;
//! - `procfs`: readings of `/proc` (RSS, peak RSS, CPU ticks of a process and of a core);
//! - `serve`: the server roles (`serve/sources.rs` the organisations upstream, `serve/gateway.rs`
//!   the gateway on each scenario's config, `serve/bare.rs` the bare hyper baseline,
//!   `serve/nginx.rs` the nginx + njs peer, `serve/naive.rs` the naive axum fan-out), the shared
//!   HTTP/1.1 server and the control port;
//! - `generator`: the load generator (address files, tokens, connections, closed and open
//!   loops, CPU over a measured window);
//! - `scenarios`: one module per part: `cached` (a) and (d), `attribute` (a'), `fanout` (b),
//!   `memory` (c), `burst` (e), `saturation` (f);
//! - `report`: the summary rows each part writes, and the final table.

mod generator;
#[path = "../../tests/support/postgres.rs"]
mod postgres;
mod procfs;
mod report;
mod runtime;
mod scenarios;
mod serve;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use http_body_util::Full;

use ketenportaal::demo;

/// Token secret shared by the gateway processes and the generator (loopback only).
const SECRET: &str = "load-benchmark-secret-0123456789abcdef0123456789";
/// The citizen's own dossier: the request every scenario measures.
const PATH_DOSSIER: &str = "/v1/me/dossier";

/// The body of every request and answer the bench's own servers and generator make.
type Body = Full<Bytes>;

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

#[derive(Parser)]
#[command(about = "ketenportaal end-to-end load benchmark; run it through benches/load.sh")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
pub struct ServeOut {
    /// Where to write `api address`, `control address` and the pid, one a line.
    #[arg(long)]
    pub addr_file: PathBuf,
    /// Exit on our own after this long, whatever happens to the script.
    #[arg(long, default_value_t = 3600)]
    pub max_secs: u64,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SourceKind {
    /// The demo's fixture agencies (`fixtures/agencies`).
    Fixtures,
    /// REST sources answering any POST after `--delay-ms`; the first path segment names the
    /// source.
    Slow,
    /// One REST source answering any BSN at once with a ~2 KB person-and-benefits document.
    Synthetic,
    /// The synthetic answer with a scanned attachment that makes it just under 4 MiB (the
    /// default `max_response_body`); the adapter maps only the person and benefits.
    Huge,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Scenario {
    /// `config/demo.yaml`, cache on, every adapter's TTL raised to 1h.
    Cached,
    /// `--n` REST adapters on slow sources into one list section; cache off; deadline 1s.
    Fanout,
    /// One adapter on the synthetic source; cache on with `--cache-mib`.
    Memory,
    /// The memory scenario's adapter on the huge source, deadline and timeout 10 s.
    Burst,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AuditKind {
    /// The durable, hash-chained SQLite store, as `ketenportaal serve` runs (a fresh file).
    Store,
    /// Log events only (`LogAudit`), to show what durability costs.
    Log,
}

#[derive(Subcommand)]
enum Cmd {
    ServeSources {
        #[arg(long, value_enum)]
        kind: SourceKind,
        #[arg(long, default_value_t = 20)]
        delay_ms: u64,
        #[command(flatten)]
        out: ServeOut,
    },
    ServeGateway {
        #[arg(long, value_enum)]
        scenario: Scenario,
        /// Base URL of the sources, e.g. `http://127.0.0.1:4000`.
        #[arg(long)]
        sources: String,
        /// Number of sources (fan-out).
        #[arg(long, default_value_t = 3)]
        n: usize,
        #[arg(long, default_value_t = 64)]
        cache_mib: u64,
        /// `limits.max_inflight_response_bytes` in MiB (burst; default: the gateway's).
        #[arg(long)]
        inflight_mib: Option<u64>,
        #[arg(long, value_enum, default_value_t = AuditKind::Store)]
        audit: AuditKind,
        /// Applications of the demo citizen written into the fresh store before serving (one in
        /// fifty still open): what the dossier's `zaken` section is made from.
        #[arg(long, default_value_t = 0)]
        applications: u32,
        /// The store on this PostgreSQL instead of a fresh SQLite file (part g).
        #[arg(long)]
        postgres: Option<String>,
        #[command(flatten)]
        out: ServeOut,
    },
    /// A throwaway PostgreSQL (fresh database, fsync on) for part (g): its URL to `--url-file`,
    /// its CPU (postmaster and backends) on the control port.
    ServePostgres {
        #[arg(long)]
        url_file: PathBuf,
        #[command(flatten)]
        out: ServeOut,
    },
    ServeBare {
        /// The gateway's address file: its dossier is fetched once and served as is.
        #[arg(long)]
        from_gateway: PathBuf,
        #[command(flatten)]
        out: ServeOut,
    },
    /// nginx + njs doing the same fan-out (benches/nginx): started as a child, its CPU reported
    /// on this process's control port.
    ServeNginx {
        /// `host:port` of the slow sources.
        #[arg(long)]
        sources: String,
        #[arg(long, default_value_t = 3)]
        n: usize,
        #[command(flatten)]
        out: ServeOut,
    },
    /// The same fan-out as a naive axum handler with one shared reqwest client (part f).
    ServeNaive {
        /// `host:port` of the slow sources.
        #[arg(long)]
        sources: String,
        #[arg(long, default_value_t = 3)]
        n: usize,
        #[command(flatten)]
        out: ServeOut,
    },
    /// (a) cached dossier, gateway vs bare hyper, closed loop, alternating rounds.
    Cached {
        #[arg(long)]
        gateway: PathBuf,
        #[arg(long)]
        bare: PathBuf,
        /// Optionally a second gateway with log-only audit, measured in the same rounds.
        #[arg(long)]
        gateway_log: Option<PathBuf>,
        /// Optionally a gateway whose citizen has `--zaken` applications in its store,
        /// measured in the same rounds (part d).
        #[arg(long)]
        gateway_zaken: Option<PathBuf>,
        #[arg(long, default_value_t = 1000)]
        zaken: u32,
        /// Optionally a gateway whose store is on PostgreSQL, measured in the same rounds
        /// (part g), with `--postgres`, that server's address file (its CPU is measured too).
        #[arg(long, requires = "postgres")]
        gateway_pg: Option<PathBuf>,
        #[arg(long, requires = "gateway_pg")]
        postgres: Option<PathBuf>,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// (b) uncached fan-out, open loop at a fixed rate; the sources alone as the reference.
    Fanout {
        #[arg(long)]
        gateway: PathBuf,
        /// Optionally a second gateway with log-only audit, measured in the same rounds.
        #[arg(long)]
        gateway_log: Option<PathBuf>,
        #[arg(long)]
        sources: PathBuf,
        /// Optionally nginx + njs doing the same fan-out, measured in the same rounds.
        #[arg(long)]
        nginx: Option<PathBuf>,
        #[arg(long)]
        n: usize,
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        #[arg(long, default_value_t = 20)]
        delay_ms: u64,
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// (f) uncached fan-out at saturation, closed loop: the gateway (durable and log-only
    /// audit), nginx + njs and the naive axum server in the same rounds.
    Saturation {
        #[arg(long)]
        gateway: PathBuf,
        #[arg(long)]
        gateway_log: PathBuf,
        /// Optionally nginx + njs doing the same fan-out.
        #[arg(long)]
        nginx: Option<PathBuf>,
        #[arg(long)]
        naive: PathBuf,
        /// The sources, whose control port counts the calls and connections they got.
        #[arg(long)]
        sources: PathBuf,
        #[arg(long, default_value_t = 3)]
        n: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// (c) fill the cache with distinct subjects through the API; RSS and cache size.
    Memory {
        #[arg(long)]
        gateway: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        subjects: usize,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        cache_mib: u64,
        /// Keep requesting random subjects this long, printing RSS every 30 s (0: no soak).
        #[arg(long, default_value_t = 0)]
        soak: u64,
        /// Write the RSS growth of the fill (KiB) to this file.
        #[arg(long)]
        growth_out: Option<PathBuf>,
        /// The RSS growth (KiB) of the same fill with a 1 MiB cache: what the process grows by
        /// whatever the budget (token and application memos, connection buffers, the store's
        /// page cache); the verdict subtracts it.
        #[arg(long)]
        fixed_kb: Option<u64>,
        /// Write the live heap's growth of the fill (KiB) to this file.
        #[arg(long)]
        heap_out: Option<PathBuf>,
        /// The live heap's growth (KiB) of the same fill with a 1 MiB cache, as `fixed_kb`.
        #[arg(long)]
        fixed_heap_kb: Option<u64>,
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// (d) rounds of `--at-once` distinct citizens read at once against huge answers; peak RSS
    /// per round and RSS after an idle spell.
    Burst {
        #[arg(long)]
        gateway: PathBuf,
        #[arg(long, default_value_t = 60)]
        at_once: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 5)]
        idle_secs: u64,
        /// A label for the gateway's settings, shown in the summary.
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// Where a cached dossier's CPU goes, stage by stage, measured in this one process (no
    /// sockets): time and allocations per call of each library step.
    Attribute {
        #[arg(long, default_value_t = 20_000)]
        iters: u32,
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// Prints a citizen token for the gateway processes (for a wrk cross-check).
    Token {
        #[arg(long, default_value = demo::DEMO_CITIZEN)]
        bsn: String,
    },
    /// Prints the summary table from the rows the phases wrote.
    Report {
        #[arg(long)]
        results: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    // `cargo bench` passes `--bench`; nothing else here takes it.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    // A plain `cargo bench` (with or without criterion's own options) runs every bench target:
    // this one only does something when driven by benches/load.sh.
    if args
        .get(1)
        .is_none_or(|a| a.starts_with('-') && a != "-h" && a != "--help")
    {
        println!("load: end-to-end load benchmark; run it with `bash benches/load.sh`");
        return std::process::ExitCode::SUCCESS;
    }
    let cli = Cli::parse_from(args);
    let server = matches!(
        cli.cmd,
        Cmd::ServeSources { .. }
            | Cmd::ServeGateway { .. }
            | Cmd::ServeBare { .. }
            | Cmd::ServeNginx { .. }
            | Cmd::ServeNaive { .. }
            | Cmd::ServePostgres { .. }
    );
    // Servers get the multi-threaded runtime the real binary uses (one worker per core it may
    // run on); the generator is one thread on its own core.
    let rt = if server {
        runtime::server_runtime()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::ServeSources {
            kind,
            delay_ms,
            out,
        } => serve::sources::serve_sources(kind, Duration::from_millis(delay_ms), &out).await,
        Cmd::ServeGateway {
            scenario,
            sources,
            n,
            cache_mib,
            inflight_mib,
            audit,
            applications,
            postgres,
            out,
        } => {
            let knobs = serve::gateway::Knobs {
                cache_mib,
                inflight_mib,
                applications,
                postgres,
            };
            serve::gateway::serve_gateway(scenario, &sources, n, knobs, audit, &out).await
        }
        Cmd::ServePostgres { url_file, out } => {
            serve::postgres::serve_postgres(&url_file, &out).await
        }
        Cmd::ServeBare { from_gateway, out } => serve::bare::serve_bare(&from_gateway, &out).await,
        Cmd::ServeNginx { sources, n, out } => serve::nginx::serve_nginx(&sources, n, &out).await,
        Cmd::ServeNaive { sources, n, out } => serve::naive::serve_naive(&sources, n, &out).await,
        Cmd::Cached {
            gateway,
            bare,
            gateway_log,
            gateway_zaken,
            zaken,
            gateway_pg,
            postgres,
            rounds,
            secs,
            conns,
            results,
        } => {
            let o = scenarios::cached::CachedOpts {
                rounds: rounds.max(1),
                measure: Duration::from_secs(secs),
                conns: conns.max(1),
            };
            let zaken = gateway_zaken.as_deref().map(|f| (f, zaken));
            let pg = gateway_pg.as_deref().zip(postgres.as_deref());
            scenarios::cached::cmd_cached(
                &gateway,
                &bare,
                gateway_log.as_deref(),
                zaken,
                pg,
                &o,
                results.as_deref(),
            )
            .await
        }
        Cmd::Fanout {
            gateway,
            gateway_log,
            sources,
            nginx,
            n,
            rate,
            secs,
            rounds,
            delay_ms,
            results,
        } => {
            let o = scenarios::fanout::FanoutOpts {
                n,
                rate: rate.max(1),
                measure: Duration::from_secs(secs),
                rounds: rounds.max(1),
                delay: Duration::from_millis(delay_ms),
            };
            scenarios::fanout::cmd_fanout(
                &gateway,
                gateway_log.as_deref(),
                nginx.as_deref(),
                &sources,
                &o,
                results.as_deref(),
            )
            .await
        }
        Cmd::Saturation {
            gateway,
            gateway_log,
            nginx,
            naive,
            sources,
            n,
            rounds,
            secs,
            conns,
            results,
        } => {
            let o = scenarios::saturation::SaturationOpts {
                n,
                rounds: rounds.max(1),
                measure: Duration::from_secs(secs),
                conns: conns.max(1),
            };
            scenarios::saturation::cmd_saturation(
                &gateway,
                &gateway_log,
                nginx.as_deref(),
                &naive,
                &sources,
                &o,
                results.as_deref(),
            )
            .await
        }
        Cmd::Memory {
            gateway,
            subjects,
            conns,
            cache_mib,
            soak,
            growth_out,
            fixed_kb,
            heap_out,
            fixed_heap_kb,
            results,
        } => {
            let o = scenarios::memory::MemoryOpts {
                subjects,
                conns: conns.max(1),
                cache_mib,
                soak: Duration::from_secs(soak),
                growth_out,
                fixed_kb,
                heap_out,
                fixed_heap_kb,
            };
            scenarios::memory::cmd_memory(&gateway, &o, results.as_deref()).await
        }
        Cmd::Burst {
            gateway,
            at_once,
            rounds,
            idle_secs,
            label,
            results,
        } => {
            let o = scenarios::burst::BurstOpts {
                at_once: at_once.max(1),
                rounds: rounds.max(1),
                idle: Duration::from_secs(idle_secs),
                label,
            };
            scenarios::burst::cmd_burst(&gateway, &o, results.as_deref()).await
        }
        Cmd::Attribute { iters, results } => {
            scenarios::attribute::cmd_attribute(iters.max(10), results.as_deref()).await
        }
        Cmd::Token { bsn } => {
            println!(
                "{}",
                generator::citizen_token(&generator::token_auth(), &bsn)?
            );
            Ok(())
        }
        Cmd::Report { results } => report::report(&results),
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

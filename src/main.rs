#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
//! The `ketenportaal` command: a thin shell around the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use ketenportaal::app::reload::EnvFn;
use ketenportaal::app::{App, AuditMode, Launch};
use ketenportaal::config::Config;
use ketenportaal::demo::{self, agencies::AgencyServer};
use ketenportaal::gateway::Gateway;
use ketenportaal::server;
use ketenportaal::store::StoreLocation;

/// mimalloc instead of the system allocator: a dossier read allocates for every mapped field and
/// rendered value, and glibc's malloc was a third of that CPU (perf, `benches/merge.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Memory freed after a burst goes back to the system (`benches/load.sh` (e): 60 answers of
/// 4 MiB at once left the process 120 MiB larger once it went quiet). mimalloc keeps freed
/// pages in the heap of the thread that used them, and purges freed memory a second after it
/// was freed, but both only from inside later allocations of that thread: idle tokio workers
/// never got there. So a worker about to park (it has nothing to do) collects its heap: freed
/// pages go back to the arena (about 1.5 µs), and at most once a second it also releases the
/// pages it keeps for reuse and purges at once (about 7 µs). A thread of its own purges what is
/// due every second, whatever the workers do. The load bench's servers do the same.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_on_park)
        .build()
}

thread_local! {
    /// When this worker last collected with force.
    static FORCED: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

fn collect_on_park() {
    let now = std::time::Instant::now();
    let force = FORCED.with(|last| {
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1));
        if due {
            last.set(Some(now));
        }
        due
    });
    // SAFETY: `mi_collect` takes no pointers and works on the calling thread's heap (and the
    // shared arenas); mimalloc is the global allocator, so it is initialised.
    unsafe { libmimalloc_sys::mi_collect(force) };
}

/// The once-a-second purge (see [`runtime`]).
fn purge_every_second() {
    let spawned = std::thread::Builder::new()
        .name("ketenportaal-purge".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                // SAFETY: as in `collect_on_park`; this thread's own heap is nearly empty, so
                // this only purges the arenas' freed memory that is due.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "Cannot start the thread that returns freed memory.");
    }
}

#[derive(Parser)]
#[command(
    name = "ketenportaal",
    version,
    about = "Integration gateway for Dutch government chain portals"
)]
struct Cli {
    /// Log format: `json` (structured, for operations) or `text`.
    #[arg(long, global = true, default_value = "auto")]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the fixture agencies and the gateway on config/demo.yaml, and print demo tokens.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "config/demo.yaml")]
        config: PathBuf,
        /// Overrides `store` from the config: a SQLite file, or a `postgres://` URL (instances
        /// on the same database and keys form one cluster).
        #[arg(long, env = "KETENPORTAAL_STORE")]
        store: Option<String>,
    },
    /// Start only the demo's fixture agencies (for several gateway instances to share, with
    /// `KETENPORTAAL_AGENCIES`); `GET /_intake` tells what their intake received.
    Agencies {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        #[arg(long, default_value = "fixtures/agencies")]
        fixtures: PathBuf,
    },
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "config/gateway.yaml")]
        config: PathBuf,
        /// Overrides `listen` from the config.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Overrides `store` from the config: a SQLite file, or a `postgres://` URL (instances
        /// on the same database and keys form one cluster).
        #[arg(long, env = "KETENPORTAAL_STORE")]
        store: Option<String>,
    },
    /// Validate a config and every adapter it loads; print every problem.
    Check {
        #[arg(long, default_value = "config/gateway.yaml")]
        config: PathBuf,
    },
    /// Mint a token with the config's HS256 key (secret from the environment).
    Token {
        #[arg(long, default_value = "config/demo.yaml")]
        config: PathBuf,
        /// A citizen token for this BSN.
        #[arg(long, conflicts_with = "employee")]
        citizen: Option<String>,
        /// An employee token for this user id.
        #[arg(long)]
        employee: Option<String>,
        /// Employee role (repeat for several).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Employee organisation.
        #[arg(long, default_value = "uwv")]
        org: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Work with one adapter.
    Adapter {
        #[command(subcommand)]
        cmd: AdapterCmd,
    },
    /// Create a partner API key or an admin token: prints the secret (give it to its holder)
    /// and its SHA-256 (put that in the config).
    Credential {
        #[command(subcommand)]
        cmd: CredentialCmd,
    },
    /// The audit log: verify its hash chain, report on it.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Maintenance of the embedded store.
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Rewrite a SQLite store made by an older version in the current page size (16 KiB:
    /// about a third less CPU per audit record). Offline: refuses while a gateway has the
    /// store open; needs free space for a copy of the file; rows and the chain are kept.
    Repage {
        #[arg(long, default_value = "config/gateway.yaml")]
        config: PathBuf,
        /// The SQLite file (default: `store` from the config).
        #[arg(long, env = "KETENPORTAAL_STORE")]
        store: Option<String>,
    },
}

#[derive(Subcommand)]
enum CredentialCmd {
    /// A new random secret and its hash.
    New,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Walk the hash chain; exit 1 when a record was changed, removed or reordered.
    Verify {
        #[arg(long, default_value = "config/gateway.yaml")]
        config: PathBuf,
        /// The store: a SQLite file or a `postgres://` URL (default: `store` from the config).
        #[arg(long, env = "KETENPORTAAL_STORE")]
        store: Option<String>,
    },
    /// The security officer's report over a period (dates are UTC, `--to` exclusive).
    Report {
        #[arg(long, default_value = "config/gateway.yaml")]
        config: PathBuf,
        /// The store: a SQLite file or a `postgres://` URL (default: `store` from the config).
        #[arg(long, env = "KETENPORTAAL_STORE")]
        store: Option<String>,
        #[arg(long)]
        from: chrono::NaiveDate,
        #[arg(long)]
        to: chrono::NaiveDate,
        /// How many most-viewed dossiers and top users to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

#[derive(Subcommand)]
enum AdapterCmd {
    /// Call one adapter for a BSN and print its mapped sections as JSON.
    Test {
        file: PathBuf,
        #[arg(long)]
        bsn: String,
        /// Gateway config that declares the organisations and sections.
        #[arg(long, default_value = "config/demo.yaml")]
        config: PathBuf,
    },
}

fn init_logs(format: &str, default_text: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        "json" => true,
        "text" => false,
        _ => !default_text,
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().flatten_event(true).init();
    } else {
        b.compact().init();
    }
}

fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    Config::load_with_env(path, env)
        .map_err(|e| anyhow::anyhow!("{e}\n\n{} problem(s) in the configuration", e.0.len()))
}

fn main() -> std::process::ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable chain of causes, no backtrace: these are user-facing errors.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => match Config::load_with_env(&config, &demo::tool_env()) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: ok ({} adapters, {} views, {} sections, {} services, {} themes; config version {})",
                    config.display(),
                    c.adapters.len(),
                    c.gateway.views.len(),
                    c.gateway.sections.len(),
                    c.gateway.services.len(),
                    c.gateway.themes.len(),
                    c.version
                );
                Ok(())
            }
            Err(e) => {
                eprintln!(
                    "{e}\n\n{} problem(s) found in {}",
                    e.0.len(),
                    config.display()
                );
                std::process::exit(1);
            }
        },
        Cmd::Token {
            config,
            citizen,
            employee,
            roles,
            org,
            ttl,
        } => {
            let env = demo::tool_env();
            let c = load(&config, &env)?;
            let actor = match (citizen, employee) {
                (Some(bsn), None) => demo::citizen(&bsn).map_err(anyhow::Error::msg)?,
                (None, Some(id)) => {
                    if roles.is_empty() {
                        bail!("an employee token needs at least one --role");
                    }
                    let r: Vec<&str> = roles.iter().map(String::as_str).collect();
                    demo::employee(&id, &org, &r)
                }
                _ => bail!("give --citizen BSN or --employee ID --role ROLE"),
            };
            println!(
                "{}",
                demo::mint(&c, &actor, ttl).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        Cmd::Audit { cmd } => audit_cmd(cmd).await,
        Cmd::Store {
            cmd: StoreCmd::Repage { config, store },
        } => repage(&config, store),
        Cmd::Credential {
            cmd: CredentialCmd::New,
        } => {
            let (key, hash) = ketenportaal::credentials::new_secret();
            println!("secret (give to its holder, store nowhere else): {key}");
            println!("sha256 (for the config):                          {hash}");
            Ok(())
        }
        Cmd::Adapter {
            cmd: AdapterCmd::Test { file, bsn, config },
        } => {
            init_logs(&cli.log_format, true);
            adapter_test(&file, &bsn, &config).await
        }
        Cmd::Agencies { listen, fixtures } => {
            init_logs(&cli.log_format, true);
            let a = AgencyServer::start(&fixtures, listen)
                .await
                .with_context(|| {
                    format!("starting the fixture agencies from {}", fixtures.display())
                })?;
            tracing::info!(address = %a.base_url(), "Fixture agencies listening.");
            println!("{}", a.base_url());
            shutdown_signal().await;
            Ok(())
        }
        Cmd::Serve {
            config,
            listen,
            store,
        } => {
            init_logs(&cli.log_format, false);
            let env: Arc<EnvFn> = Arc::new(|k: &str| std::env::var(k).ok());
            let c = load(&config, &*env)?;
            let addr = listen.unwrap_or(c.listen);
            run(c, env, addr, store, None).await
        }
        Cmd::Demo {
            listen,
            config,
            store,
        } => {
            init_logs(&cli.log_format, true);
            // With KETENPORTAAL_AGENCIES set, the demo uses those agencies instead of starting
            // its own (a test can then stop and start them independently of the gateway).
            let (agencies, url) = match std::env::var("KETENPORTAAL_AGENCIES") {
                Ok(url) => (None, url),
                Err(_) => {
                    let fixtures = demo::fixtures_dir(&config);
                    let a = AgencyServer::start(&fixtures, "127.0.0.1:0".parse()?)
                        .await
                        .with_context(|| {
                            format!("starting the fixture agencies from {}", fixtures.display())
                        })?;
                    let url = a.base_url();
                    (Some(a), url)
                }
            };
            let secret = demo::demo_secret();
            let env: Arc<EnvFn> = Arc::new(demo::demo_env(url.clone(), secret.clone()));
            let c = load(&config, &*env)?;
            run(
                c,
                env,
                listen,
                store,
                Some(Demo {
                    _agencies: agencies,
                    url,
                    secret,
                }),
            )
            .await
        }
    }
}

/// The store: `--store`, or the `store` section read from the config file (no full
/// validation, so the audit tools work without the gateway's other secrets; `${VAR}` in
/// `store.url` comes from the environment).
fn store_of(config: &Path, store: Option<String>) -> Result<StoreLocation> {
    if let Some(s) = store {
        return Ok(StoreLocation::parse(&s));
    }
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let tree = ketenportaal::config::yaml::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let mut section = tree.get("store").cloned();
    let unset = match &mut section {
        Some(s) => s.interpolate(&|k| std::env::var(k).ok()),
        None => Vec::new(),
    };
    let field = |name: &str| {
        section
            .as_ref()
            .and_then(|s| s.get(name))
            .and_then(|p| p.as_str())
    };
    if field("backend") == Some("postgres") {
        if let Some((_, problem)) = unset.first() {
            bail!("{}: {problem}", config.display());
        }
        let url = field("url").with_context(|| {
            format!(
                "{}: `store.backend: postgres` needs `store.url`",
                config.display()
            )
        })?;
        return Ok(StoreLocation::Postgres(url.to_string()));
    }
    let rel = field("path").unwrap_or("ketenportaal.sqlite");
    Ok(StoreLocation::Sqlite(
        config.parent().unwrap_or(Path::new(".")).join(rel),
    ))
}

/// A SQLite store must exist for the audit tools to read it (opening would create an empty
/// one); a database server is asked.
fn must_exist(location: &StoreLocation) -> Result<()> {
    match location {
        StoreLocation::Sqlite(path) if !path.exists() => bail!("no store at {}", path.display()),
        _ => Ok(()),
    }
}

/// `store repage`.
fn repage(config: &Path, store: Option<String>) -> Result<()> {
    let location = store_of(config, store)?;
    let StoreLocation::Sqlite(path) = &location else {
        bail!(
            "{location}: `store repage` is for the embedded SQLite store; PostgreSQL keeps its own pages"
        );
    };
    must_exist(&location)?;
    let started = std::time::Instant::now();
    let done = ketenportaal::store::repage(path).with_context(|| {
        format!(
            "rewriting {} (stop the gateway that has it open first)",
            path.display()
        )
    })?;
    let mib = |b: u64| b as f64 / 1048576.0;
    if done.from == done.to {
        println!(
            "{}: already in {} KiB pages; nothing to do",
            path.display(),
            done.to / 1024
        );
    } else {
        println!(
            "{}: {} KiB pages -> {} KiB, {:.1} -> {:.1} MiB, in {:.1} s; `ketenportaal audit verify` walks the chain",
            path.display(),
            done.from / 1024,
            done.to / 1024,
            mib(done.bytes_before),
            mib(done.bytes_after),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

async fn audit_cmd(cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::Verify { config, store } => {
            let location = store_of(&config, store)?;
            must_exist(&location)?;
            let verdict = ketenportaal::store::verify(&location)
                .await
                .with_context(|| format!("verifying {location}"))?;
            println!("{location}: {verdict}");
            if !matches!(verdict, ketenportaal::store::Verdict::Intact { .. }) {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCmd::Report {
            config,
            store,
            from,
            to,
            top,
            format,
        } => {
            let location = store_of(&config, store)?;
            must_exist(&location)?;
            let day = |d: chrono::NaiveDate| {
                d.and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc())
                    .context("invalid date")
            };
            let r = ketenportaal::store::report(&location, day(from)?, day(to)?, top)
                .await
                .with_context(|| format!("reporting on {location}"))?;
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{r}");
            }
            Ok(())
        }
    }
}

/// What `demo` runs besides the gateway.
struct Demo {
    /// The fixture agencies, when the demo started them (kept alive while serving).
    _agencies: Option<AgencyServer>,
    url: String,
    secret: String,
}

/// An `${ENV}` lookup for config loading.
type EnvLookup = dyn Fn(&str) -> Option<String>;

async fn adapter_test(file: &Path, bsn: &str, config: &Path) -> Result<()> {
    let bsn = ketenportaal::bsn::Bsn::parse(bsn).map_err(|e| anyhow::anyhow!("--bsn: {e}"))?;
    // A config that points at `${KETENPORTAAL_AGENCIES}` (the demo's) without that variable
    // set gets the fixture agencies started here; any other config is used as it is.
    let mut _agencies = None;
    let wants_fixtures = std::env::var("KETENPORTAAL_AGENCIES").is_err()
        && std::fs::read_to_string(config).is_ok_and(|t| t.contains("${KETENPORTAAL_AGENCIES}"))
        && demo::fixtures_dir(config).is_dir();
    let env: Box<EnvLookup> = if wants_fixtures {
        let a = AgencyServer::start(&demo::fixtures_dir(config), "127.0.0.1:0".parse()?).await?;
        eprintln!(
            "(KETENPORTAAL_AGENCIES not set: using the built-in fixture agencies at {})",
            a.base_url()
        );
        let e = demo::demo_env(a.base_url(), demo::demo_secret());
        _agencies = Some(a);
        Box::new(e)
    } else {
        Box::new(|k: &str| std::env::var(k).ok())
    };
    let c = load(config, &*env)?;
    let spec = c
        .parse_adapter_file(file, &*env)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = ketenportaal::adapter::AdapterClient::new(
        Arc::new(spec),
        &ketenportaal::protocol::client::Outbound::shared().map_err(anyhow::Error::msg)?,
    );
    let (result, took) = Gateway::run_adapter(&client, bsn).await;
    let out = match result {
        Ok(a) => serde_json::json!({
            "adapter": a.adapter.as_ref(),
            "organisation": a.organisation.as_ref(),
            "status": "ok",
            "latency_ms": took.as_millis() as u64,
            "bytes": a.bytes,
            "sections": a.sections,
        }),
        Err(e) => serde_json::json!({
            "adapter": client.id().as_ref(),
            "status": e.status(),
            "latency_ms": took.as_millis() as u64,
            "error": e.to_string(),
        }),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    if out["status"] != "ok" {
        std::process::exit(2);
    }
    Ok(())
}

async fn run(
    config: Config,
    env: Arc<EnvFn>,
    addr: SocketAddr,
    store: Option<String>,
    demo: Option<Demo>,
) -> Result<()> {
    let listener =
        server::listen(addr, server::BACKLOG).with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    purge_every_second();
    let summary = format!(
        "{} adapters, config version {}",
        config.adapters.len(),
        config.version
    );
    // Minted before the config moves into the app (the demo prints them once it listens).
    let banner = match &demo {
        Some(d) => Some(
            demo::banner(&config, &format!("http://{local}"), &d.url, &d.secret)
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    for w in &config.warnings {
        tracing::warn!(warning = %w, "Configuration warning.");
    }
    if demo.is_none() && config.gateway.portal.demo_sign_in {
        tracing::warn!(
            "portal.demo_sign_in is on: anyone who reaches this gateway can sign in as the demo accounts. Never in production."
        );
    }
    keep_running_past_file_limits();
    let app = App::build(Launch {
        config,
        env,
        store: store.as_deref().map(StoreLocation::parse),
        watch: true,
        audit: AuditMode::Durable,
    })
    .await?;
    tracing::info!(address = %local, "Gateway listening ({summary}).");
    if let Some(b) = banner {
        println!("{b}");
    }
    server::serve(listener, app, shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("Gateway stopped.");
    Ok(())
}

/// A write past the file size limit (`ulimit -f`) kills the process by default (`SIGXFSZ`);
/// handled, the write fails with `EFBIG` instead, so the store refuses that request (fail
/// closed, a 503) and the gateway goes on answering what needs no write.
fn keep_running_past_file_limits() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Once registered, tokio's handler stays for the life of the process.
        if let Err(e) = signal(SignalKind::from_raw(libc::SIGXFSZ)) {
            tracing::warn!(error = %e, "SIGXFSZ not handled; a file size limit would stop the gateway.");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("Shutting down: no new connections, draining in-flight requests.");
}

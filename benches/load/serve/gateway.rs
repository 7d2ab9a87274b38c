//! The gateway under load: the library's `Gateway` behind `server::serve`, on `config/demo.yaml`
//! or on a config written for the scenario, with a fresh durable store or log-only audit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ketenportaal::app::{App, AuditMode, Launch};
use ketenportaal::config::Config;
use ketenportaal::demo;
use ketenportaal::model::Dur;
use ketenportaal::server;
use ketenportaal::store::{AuditStore, StoreLocation};

use super::{announce_and_wait, bind_loopback};
use crate::runtime::purge_every_second;
use crate::{AuditKind, SECRET, Scenario, ServeOut, root};

/// The `auth:` and `audit:` blocks every scenario config shares with `config/demo.yaml`, so one
/// minting config serves them all.
const AUTH_YAML: &str = r#"auth:
  issuer: ketenportaal-demo
  audience: ketenportaal
  leeway: 30s
  keys:
    - kid: demo
      alg: HS256
      secret: ${KETENPORTAAL_DEMO_SECRET}
audit:
  pseudonym_key: ${KETENPORTAAL_PSEUDONYM_KEY}
"#;

/// Writes the fan-out scenario: `n` REST sources, each filling the shared `bronzaken` list (not
/// `zaken`: that name is the gateway's own section from the store, which would replace it).
fn write_fanout_config(dir: &Path, n: usize) -> Result<PathBuf, String> {
    let adapters = dir.join("adapters");
    std::fs::create_dir_all(&adapters).map_err(|e| e.to_string())?;
    let mut orgs = String::new();
    for i in 1..=n {
        let id = format!("bron-{i:02}");
        orgs.push_str(&format!(
            "  {id}:\n    name: Bron {i:02}\n    oin: \"000000010000000{i:05}\"\n    base_url: ${{KETENPORTAAL_AGENCIES}}\n"
        ));
        let adapter = format!(
            r#"id: {id}
organisation: {id}
description: Lopende zaken bij bron {i:02} (benchmark)
protocol: rest
endpoint: /{id}/api/v1/zaken/_zoek
timeout: 1s
rest:
  method: POST
  body: {{bsn: "{{{{bsn}}}}"}}
map:
  bronzaken:
    each: /zaken
    fields:
      zaaknummer: {{path: /identificatie, required: true}}
      bron: /bron
      omschrijving: /omschrijving
      status: /status
      registratiedatum: {{path: /registratiedatum, type: date}}
"#
        );
        std::fs::write(adapters.join(format!("{id}.yaml")), adapter).map_err(|e| e.to_string())?;
    }
    let gateway = format!(
        r#"listen: 127.0.0.1:0
adapters: [adapters]
deadline: 1s
organisations:
{orgs}sections:
  bronzaken:
    kind: list
    description: Lopende en afgehandelde zaken bij alle bronnen.
    key: [bron, zaaknummer]
    sort: {{field: registratiedatum, order: desc}}
views:
  klant:
    audience: citizen
    sections:
      bronzaken: ["*"]
{AUTH_YAML}cache:
  enabled: false
"#
    );
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, gateway).map_err(|e| e.to_string())?;
    Ok(file)
}

/// Writes the memory scenario: one source, cache bounded at `cache_mib`.
fn write_memory_config(dir: &Path, cache_mib: u64) -> Result<PathBuf, String> {
    let adapters = dir.join("adapters");
    std::fs::create_dir_all(&adapters).map_err(|e| e.to_string())?;
    let adapter = r#"id: synthetisch
organisation: uwv
description: Persoon en uitkeringen voor elk BSN (benchmark)
protocol: rest
endpoint: /api/v2/klanten/_zoek
timeout: 1s
cache: {ttl: 1h}
rest:
  method: POST
  body: {bsn: "{{bsn}}"}
map:
  persoon:
    fields:
      bsn: /persoon/burgerservicenummer
      voornamen: /persoon/naam/voornamen
      geslachtsnaam: /persoon/naam/geslachtsnaam
      geboortedatum: {path: /persoon/geboorte/datum, type: date}
      straat: /persoon/verblijfplaats/straat
      huisnummer: {path: /persoon/verblijfplaats/huisnummer, type: integer}
      postcode: /persoon/verblijfplaats/postcode
      woonplaats: /persoon/verblijfplaats/woonplaats
      telefoon: /persoon/telefoon
  uitkeringen:
    each: /uitkeringen
    fields:
      soort: {path: /soort, required: true}
      ingangsdatum: {path: /ingangsdatum, type: date}
      einddatum: {path: /einddatum, type: date}
      bedrag_per_maand: {path: /bedragPerMaand, type: decimal}
      status: /status
      beschikkingsnummer: /beschikkingsnummer
"#;
    std::fs::write(adapters.join("synthetisch.yaml"), adapter).map_err(|e| e.to_string())?;
    let gateway = format!(
        r#"listen: 127.0.0.1:0
adapters: [adapters]
deadline: 1s
organisations:
  uwv:
    name: UWV
    oin: "00000001003214345000"
    base_url: ${{KETENPORTAAL_AGENCIES}}
sections:
  persoon:
    kind: single
  uitkeringen:
    kind: list
    key: [soort, ingangsdatum]
    sort: {{field: ingangsdatum, order: desc}}
views:
  klant:
    audience: citizen
    sections:
      persoon: ["*"]
      uitkeringen: ["*"]
{AUTH_YAML}cache:
  enabled: true
  max_bytes: {cache_mib}MiB
"#
    );
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, gateway).map_err(|e| e.to_string())?;
    Ok(file)
}

/// Writes the burst scenario: the memory scenario's adapter and views, with a deadline and
/// timeout that let 60 answers of 4 MiB through one core, and the in-flight budget.
fn write_burst_config(
    dir: &Path,
    cache_mib: u64,
    inflight_mib: Option<u64>,
) -> Result<PathBuf, String> {
    let file = write_memory_config(dir, cache_mib)?;
    if let Some(n) = inflight_mib {
        let mut text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        text.push_str(&format!("limits:\n  max_inflight_response_bytes: {n}MiB\n"));
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
    }
    for f in [file.clone(), dir.join("adapters/synthetisch.yaml")] {
        let text = std::fs::read_to_string(&f).map_err(|e| e.to_string())?;
        let text = text
            .replace("deadline: 1s", "deadline: 10s")
            .replace("timeout: 1s", "timeout: 10s");
        std::fs::write(&f, text).map_err(|e| e.to_string())?;
    }
    Ok(file)
}

/// The gateway as `serve` builds it ([`App::build`]), on a fresh store at `store`, with the
/// audit the scenario measures. The config is fixed for a run, so nothing watches its files.
pub async fn build_app(
    config: Config,
    env: Arc<ketenportaal::app::reload::EnvFn>,
    store: StoreLocation,
    audit: AuditMode,
) -> Result<Arc<App>, String> {
    App::build(Launch {
        config,
        env,
        store: Some(store),
        watch: false,
        audit,
    })
    .await
    .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
}

/// Cache on, and every adapter's TTL raised to 1h so no entry expires during a run.
pub fn keep_cache_warm(config: &mut Config) {
    config.gateway.cache.enabled = true;
    for spec in config.adapters.values_mut() {
        let mut s = (**spec).clone();
        s.def.cache.ttl = Dur(Duration::from_secs(3600));
        *spec = Arc::new(s);
    }
}

/// The gateway's sizes for one scenario.
pub struct Knobs {
    pub cache_mib: u64,
    pub inflight_mib: Option<u64>,
    /// Applications seeded into the store for the demo citizen.
    pub applications: u32,
    /// The store on this PostgreSQL instead of a fresh SQLite file.
    pub postgres: Option<String>,
}

pub async fn serve_gateway(
    scenario: Scenario,
    sources: &str,
    n: usize,
    knobs: Knobs,
    audit: AuditKind,
    out: &ServeOut,
) -> Result<(), String> {
    let Knobs {
        cache_mib,
        inflight_mib,
        applications,
        postgres,
    } = knobs;
    if matches!(scenario, Scenario::Memory) {
        crate::runtime::LIVE_ON.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let env = demo::demo_env(sources.to_string(), SECRET.to_string());
    // Under `$TMPDIR`, which load.sh points into its own folder, so nothing outlives the run.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = match scenario {
        Scenario::Cached => root().join("config/demo.yaml"),
        Scenario::Fanout => write_fanout_config(dir.path(), n)?,
        Scenario::Memory => write_memory_config(dir.path(), cache_mib)?,
        Scenario::Burst => write_burst_config(dir.path(), cache_mib, inflight_mib)?,
    };
    let mut config = Config::load_with_env(&file, &env)
        .map_err(|e| format!("{} does not load:\n{e}", file.display()))?;
    if matches!(scenario, Scenario::Cached) {
        keep_cache_warm(&mut config);
    }
    let store = match postgres {
        Some(url) if applications == 0 => StoreLocation::Postgres(url),
        Some(_) => return Err("--applications seeds a SQLite store only".into()),
        None => {
            // A fresh store beside the scenario's files (the same ext4 disk as the repo here),
            // seeded before the gateway opens it.
            let path = dir.path().join("audit.sqlite");
            drop(
                AuditStore::open(&path, config.pseudonym_key())
                    .map_err(|e| format!("store {}: {e}", path.display()))?,
            );
            seed_applications(&path, applications)?;
            StoreLocation::Sqlite(path)
        }
    };
    let mode = match audit {
        AuditKind::Store => AuditMode::Durable,
        AuditKind::Log => AuditMode::LogOnly,
    };
    let state = build_app(config, Arc::new(env), store, mode).await?;
    purge_every_second();
    let (listener, api) = bind_loopback().await?;
    let serving = state.clone();
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, serving, std::future::pending()).await {
            eprintln!("error: gateway stopped: {e}");
            std::process::exit(1);
        }
    });
    announce_and_wait(api, Some(state), out).await
}

/// Writes `n` applications of the demo citizen into the store at `path`, in one transaction,
/// the way the gateway stores them (one in fifty still `received`, the others delivered).
fn seed_applications(path: &Path, n: u32) -> Result<(), String> {
    if n == 0 {
        return Ok(());
    }
    let mut c = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    let tx = c.transaction().map_err(|e| e.to_string())?;
    let start = chrono::Utc::now() - chrono::Duration::days(i64::from(n));
    for i in 0..n {
        let at = (start + chrono::Duration::days(i64::from(i))).to_rfc3339();
        let status = if i % 50 == 0 { "received" } else { "delivered" };
        tx.execute(
            "INSERT INTO applications (id, service, organisation, bsn, actor, idempotency_key,
                 data, status, reference, attempts, next_attempt_at, created_at, updated_at)
             VALUES (?1, 'bijstand-aanvragen', 'gemeente-utrecht', ?2, ?3, ?1,
                 '{\"woonsituatie\":\"alleenstaand\"}', ?4, ?5, 1, ?6, ?6, ?6)",
            rusqlite::params![
                format!("seed-{i:05}"),
                demo::DEMO_CITIZEN,
                format!("digid:{}", demo::DEMO_CITIZEN),
                status,
                format!("ZAAK-2026-{i:06}"),
                at
            ],
        )
        .map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

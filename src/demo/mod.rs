//! Built-in demo: fixture agencies on loopback and the gateway on `config/demo.yaml`.
//!
//! The demo config reads the agencies' address from `${KETENPORTAAL_AGENCIES}`, the token
//! secret from `${KETENPORTAAL_DEMO_SECRET}`, the pseudonymisation key from
//! `${KETENPORTAAL_DEMO_PSEUDONYM_KEY}` and the credential hashes from `${KETENPORTAAL_DEMO_*}`; [`demo_env`] supplies them without touching the process
//! environment (a fresh random secret per run unless one is exported).

pub mod agencies;
pub mod intake;

use std::path::Path;

use rand_core::RngCore;

use crate::auth::{Actor, claims_for, mint_hs256};
use crate::bsn::Bsn;
use crate::config::Config;
use crate::model::KeyAlg;

/// The demo citizen: has data at every organisation.
pub const DEMO_CITIZEN: &str = "999993653";

/// Environment lookup for the demo config: the agencies' URL and the token secret, falling
/// back to the real environment for anything else.
pub fn demo_env(agencies: String, secret: String) -> impl Fn(&str) -> Option<String> {
    move |k: &str| match k {
        "KETENPORTAAL_AGENCIES" => Some(agencies.clone()),
        "KETENPORTAAL_DEMO_SECRET" => Some(secret.clone()),
        // Derived from the token secret: stable within a run, never printed.
        "KETENPORTAAL_DEMO_PSEUDONYM_KEY" | "KETENPORTAAL_PSEUDONYM_KEY" => {
            Some(std::env::var(k).unwrap_or_else(|_| format!("pseudoniem-{secret}")))
        }
        // The shared cache's AEAD key (64 hex digits): the same on every instance of a demo
        // cluster, since they share the secret.
        "KETENPORTAAL_DEMO_CACHE_KEY" => Some(
            std::env::var(k)
                .unwrap_or_else(|_| crate::credentials::sha256_hex(&format!("cache-{secret}"))),
        ),
        "KETENPORTAAL_DEMO_ADMIN_SHA256" => {
            Some(crate::credentials::sha256_hex(&demo_key(&secret, "admin")))
        }
        _ => match k
            .strip_prefix("KETENPORTAAL_DEMO_KEY_")
            .and_then(|r| r.strip_suffix("_SHA256"))
        {
            Some(org) => Some(crate::credentials::sha256_hex(&demo_key(
                &secret,
                &org.to_ascii_lowercase().replace('_', "-"),
            ))),
            None => std::env::var(k).ok(),
        },
    }
}

/// The lookup the CLI tools (`check`, `token`) use: the process environment, and for the demo
/// config's own variables (`KETENPORTAAL_AGENCIES`, `KETENPORTAAL_DEMO_*`) what the demo would
/// supply, derived from an exported `KETENPORTAAL_DEMO_SECRET` (or a placeholder, which is
/// enough to validate). Production variables get no fallback.
pub fn tool_env() -> impl Fn(&str) -> Option<String> {
    let secret = std::env::var("KETENPORTAAL_DEMO_SECRET")
        .unwrap_or_else(|_| "placeholder-secret-for-checking-the-demo-config".into());
    let agencies =
        std::env::var("KETENPORTAAL_AGENCIES").unwrap_or_else(|_| "http://127.0.0.1:9".into());
    let demo = demo_env(agencies, secret);
    move |k: &str| match std::env::var(k) {
        Ok(v) => Some(v),
        Err(_) if k == "KETENPORTAAL_AGENCIES" || k.starts_with("KETENPORTAAL_DEMO_") => demo(k),
        Err(_) => None,
    }
}

/// A demo credential (partner API key or admin token), derived from the run's secret so the
/// demo can print it and the config holds only its hash.
pub fn demo_key(secret: &str, name: &str) -> String {
    crate::credentials::sha256_hex(&format!("{secret}:{name}"))
}

/// The secret for demo tokens: `KETENPORTAAL_DEMO_SECRET` if exported, else a fresh one.
pub fn demo_secret() -> String {
    std::env::var("KETENPORTAAL_DEMO_SECRET").unwrap_or_else(|_| {
        let mut b = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut b);
        hex::encode(b)
    })
}

/// Mints a token with the config's first HS256 key and that key's configured secret (the demo,
/// the `token` tool and the demo sign-in all mint this way).
pub fn mint(config: &Config, actor: &Actor, ttl_secs: i64) -> Result<String, String> {
    let auth = &config.gateway.auth;
    let (key, secret) = auth
        .keys
        .iter()
        .filter(|k| k.alg == KeyAlg::HS256)
        .find_map(|k| k.secret.as_ref().map(|s| (k, s)))
        .ok_or("the config has no HS256 key with a secret to mint tokens with")?;
    mint_hs256(
        auth,
        &key.kid,
        secret.expose(),
        &claims_for(auth, actor, ttl_secs),
    )
}

/// The demo citizen as an actor.
pub fn citizen(bsn: &str) -> Result<Actor, String> {
    Ok(Actor::Citizen {
        sub: format!("digid:{bsn}"),
        bsn: Bsn::parse(bsn).map_err(|e| e.to_string())?,
    })
}

/// A demo employee.
pub fn employee(id: &str, organisation: &str, roles: &[&str]) -> Actor {
    Actor::Employee {
        sub: id.to_string(),
        organisation: organisation.to_string(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

/// Where the fixtures are: `fixtures/agencies` next to the config's folder.
pub fn fixtures_dir(config_file: &Path) -> std::path::PathBuf {
    config_file
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("fixtures/agencies")
}

/// What `ketenportaal demo` prints once it listens at `url`: where everything is, and ready
/// tokens (valid for 8 hours) and `curl` lines for a citizen, an employee, a partner and the
/// operator.
pub fn banner(config: &Config, url: &str, agencies: &str, secret: &str) -> Result<String, String> {
    let ttl = 8 * 3600;
    let citizen = mint(config, &self::citizen(DEMO_CITIZEN)?, ttl)?;
    let employee = mint(
        config,
        &self::employee("werkcoach.jansen", "uwv", &["uwv-werkcoach"]),
        ttl,
    )?;
    let uwv_key = demo_key(secret, "uwv");
    let admin = demo_key(secret, "admin");
    Ok(format!(
        r#"
ketenportaal demo is running.

  portals   {url}/portaal/   (open in a browser; sign in as a demo citizen or employee)
  gateway   {url}
  agencies  {agencies} (UWV and SVB over SOAP, BRP and Belastingdienst over REST)
  status    {url}/admin/     (operator page; admin token below)

Citizen {DEMO_CITIZEN} (klantportaal, view `klant`):
  curl -s {url}/v1/me/dossier -H "Authorization: Bearer {citizen}"

Employee werkcoach.jansen of UWV (view `werkcoach`, purpose `re-integratie`):
  curl -s -X POST {url}/v1/dossiers -H "Authorization: Bearer {employee}" \
    -H "X-Purpose: re-integratie" -H "Content-Type: application/json" \
    -d '{{"bsn":"{DEMO_CITIZEN}","view":"werkcoach"}}'

Who looked at my dossier (inzage):
  curl -s {url}/v1/me/access-log -H "Authorization: Bearer {citizen}"

Partner UWV (its own adapters only), operator status, metrics:
  curl -s {url}/v1/adapters -H "X-Api-Key: {uwv_key}"
  curl -s {url}/admin/status -H "Authorization: Bearer {admin}"
  curl -s {url}/metrics

More tokens:  KETENPORTAAL_DEMO_SECRET={secret} cargo run --release -- token --citizen 999990019
Audit log:    cargo run --release -- audit verify --config config/demo.yaml
Stop with Ctrl-C.
"#
    ))
}

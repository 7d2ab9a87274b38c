//! The shared L2 cache (`cache.shared`) on a real Redis: two instances share answers, Redis
//! holds nothing in clear and a value moved to another subject does not open, a stopped or
//! paused Redis fails no read (and is used again once it is back), an invalidation reaches it,
//! and the config refuses what cannot work. Bounds are loose: these are not timing tests.
//!
//! Without `redis-server` on PATH each test says it is skipped and passes (unless
//! `KETENPORTAAL_SERVICE_TESTS=required`).

use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use ::redis::aio::MultiplexedConnection;
use ketenportaal::bsn::Bsn;
use ketenportaal::config::Config;
use ketenportaal::demo::demo_key;
use ketenportaal::model::{Dur, Secret, SharedCacheConfig};
use serde_json::Value;

use crate::helpers::{
    Behaviour, CITIZEN, Options, SECRET, TestApp, copy_repo_dirs, spawn_app_with, tweak_adapter,
};
use crate::redis::{Redis, redis};

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff";
const PREFIX: &str = "kp-test";
/// Citizens with data at several sources, besides the demo citizen.
const MULDER: &str = "999990019";
const YILMAZ: &str = "999990421";
const BAKKER: &str = "999991772";
/// A budget that a debug build on a busy machine keeps: for the tests where Redis is up.
const ROOMY: Duration = Duration::from_millis(500);
/// The bound each read must stay within while Redis is down or hangs.
const LOOSE: Duration = Duration::from_secs(2);

/// Cache on, with a shared cache at `url` under `key`.
fn options(url: String, key: &'static str, budget: Duration) -> Options {
    Options {
        cache: true,
        tweak: Some(Box::new(move |c| {
            c.gateway.cache.shared = Some(SharedCacheConfig {
                url: Secret::new(url.clone()),
                key: Secret::new(key),
                budget: Dur(budget),
                prefix: PREFIX.into(),
            })
        })),
        ..Default::default()
    }
}

async fn spawn(r: &Redis, budget: Duration) -> TestApp {
    spawn_app_with(options(r.url(), KEY, budget)).await
}

/// Polls `f` every 50 ms until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the instance reaches Redis (a PING through its breaker).
async fn shared_up(app: &TestApp) {
    let shared = app.state.gateway.cache.shared().expect("a shared cache");
    eventually(
        Duration::from_secs(15),
        "the instance reaches Redis",
        || {
            let s = shared.clone();
            async move { s.ping().await.is_some() }
        },
    )
    .await;
}

/// The citizen's own dossier, which must be a 200: the dossier and how long it took.
async fn read(app: &TestApp, bsn: &str) -> (Value, Duration) {
    let started = Instant::now();
    let r = app.me_dossier(&app.citizen_token(bsn)).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 200, "{bsn}");
    (r.json().await.unwrap(), took)
}

/// Each source's status in a dossier (not the gateway's own `zaken`, which is never cached).
fn statuses(d: &Value) -> Vec<(String, String)> {
    d["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["adapter"] != "ketenportaal")
        .map(|s| {
            (
                s["adapter"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count(d: &Value, status: &str) -> usize {
    statuses(d).iter().filter(|(_, s)| s == status).count()
}

async fn raw(r: &Redis) -> MultiplexedConnection {
    r.client().get_multiplexed_async_connection().await.unwrap()
}

fn subject_key(app: &TestApp, bsn: &str) -> String {
    app.state
        .gateway
        .cache
        .shared()
        .unwrap()
        .subject_key(&Bsn::parse(bsn).unwrap())
}

/// Waits until the subject's hash holds `n` fields (the writes run in the background).
async fn written(r: &Redis, key: &str, n: usize) {
    let mut con = raw(r).await;
    eventually(Duration::from_secs(10), "the answers are in Redis", || {
        let mut con = con.clone();
        let key = key.to_string();
        async move { con.hlen::<_, usize>(&key).await.unwrap() >= n }
    })
    .await;
    let ttl: i64 = con.pttl(key).await.unwrap();
    assert!(ttl > 0, "the hash expires: {ttl}");
}

async fn admin_status(app: &TestApp) -> Value {
    app.http
        .get(format!("{}/admin/status", app.url))
        .bearer_auth(demo_key(SECRET, "admin"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_second_instance_serves_what_the_first_fetched_without_calling_the_sources() {
    let Some(r) = redis() else { return };
    let a = spawn(&r, ROOMY).await;
    let b = spawn(&r, ROOMY).await;
    shared_up(&a).await;
    shared_up(&b).await;

    let (first, _) = read(&a, CITIZEN).await;
    let fetched = count(&first, "ok");
    assert!(fetched >= 3, "{first}");
    assert_eq!(fetched, statuses(&first).len(), "{first}");
    assert!(a.chaos.total_hits() >= fetched as u64);
    written(&r, &subject_key(&a, CITIZEN), fetched).await;

    let started = Instant::now();
    let (second, _) = read(&b, CITIZEN).await;
    let l2_read = started.elapsed();
    assert_eq!(b.chaos.total_hits(), 0, "instance B called no source");
    assert_eq!(count(&second, "cached"), fetched, "{second}");
    for (adapter, _) in statuses(&second) {
        let (sa, sb) = (source(&first, &adapter), source(&second, &adapter));
        // The same answer: fetched once, by A.
        assert_eq!(sa["fetched_at"], sb["fetched_at"], "{adapter}");
        assert!(sb["age_ms"].is_u64(), "{sb}");
    }
    assert_eq!(first["sections"], second["sections"]);
    // B's own cache has it now: the next read does not ask Redis again.
    let (third, _) = read(&b, CITIZEN).await;
    assert_eq!(count(&third, "cached"), fetched);

    let status = admin_status(&b).await;
    let shared = &status["cache"]["shared"];
    assert_eq!(shared["configured"], true, "{status}");
    assert_eq!(shared["state"], "up", "{shared}");
    assert_eq!(shared["reads"]["hit"], fetched as u64, "{shared}");
    assert_eq!(
        shared["server"],
        r.url().trim_start_matches("redis://"),
        "{shared}"
    );
    assert!(!status.to_string().contains(KEY));
    let metrics = b.metrics().await;
    assert!(
        metrics.contains(&format!(
            "ketenportaal_cache_shared_total{{op=\"read\",result=\"hit\"}} {fetched}"
        )),
        "{metrics}"
    );
    eprintln!(
        "a dossier of {fetched} sources from Redis on instance B: {} ms (the sources' own latency is loopback fixtures)",
        l2_read.as_millis()
    );
}

fn source<'a>(d: &'a Value, adapter: &str) -> &'a Value {
    crate::helpers::source(d, adapter)
}

#[tokio::test]
async fn redis_holds_no_bsn_or_name_in_clear_and_a_moved_value_does_not_open() {
    let Some(r) = redis() else { return };
    let a = spawn(&r, ROOMY).await;
    shared_up(&a).await;
    let (first, _) = read(&a, CITIZEN).await;
    let key = subject_key(&a, CITIZEN);
    written(&r, &key, count(&first, "ok")).await;

    let mut con = raw(&r).await;
    let keys: Vec<String> = con.keys("*").await.unwrap();
    assert_eq!(keys, vec![key.clone()]);
    let hex = key.strip_prefix(&format!("{PREFIX}:subject:")).unwrap();
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    let entries: Vec<(Vec<u8>, Vec<u8>)> = con.hgetall(&key).await.unwrap();
    assert!(!entries.is_empty());
    // The BSN, the A-number and the names from the BRP fixture (999993653.json).
    let needles: [&[u8]; 6] = [
        CITIZEN.as_bytes(),
        b"5038219746",
        b"Vries",
        b"Jan Pieter",
        b"voornamen",
        b"burgerservicenummer",
    ];
    let holds = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for n in needles {
        assert!(!holds(key.as_bytes(), n), "key");
    }
    for (field, value) in &entries {
        for n in needles {
            assert!(
                !holds(field, n),
                "field {:?}",
                String::from_utf8_lossy(field)
            );
            assert!(
                !holds(value, n),
                "value of {:?}",
                String::from_utf8_lossy(field)
            );
        }
    }

    // The demo citizen's values copied into another subject's hash: they do not open there.
    let other = subject_key(&a, MULDER);
    for (field, value) in &entries {
        let () = con.hset(&other, field, value).await.unwrap();
    }
    let b = spawn(&r, ROOMY).await;
    shared_up(&b).await;
    let (d, _) = read(&b, MULDER).await;
    assert_eq!(count(&d, "cached"), 0, "{d}");
    assert!(b.chaos.total_hits() > 0, "the sources were called");
    let text = d["sections"].to_string();
    assert!(text.contains("Mulder") && !text.contains("Vries"), "{text}");
    let status = admin_status(&b).await;
    assert!(
        status["cache"]["shared"]["reads"]["invalid"]
            .as_u64()
            .unwrap()
            >= 1,
        "{status}"
    );
}

#[tokio::test]
async fn a_stopped_redis_fails_no_read_and_is_used_again_once_it_is_back() {
    let Some(mut r) = redis() else { return };
    let a = spawn(&r, Duration::from_millis(50)).await;
    let b = spawn(&r, Duration::from_millis(50)).await;
    shared_up(&a).await;
    shared_up(&b).await;
    let (d, _) = read(&a, CITIZEN).await;
    written(&r, &subject_key(&a, CITIZEN), count(&d, "ok")).await;

    r.stop();
    for bsn in [MULDER, YILMAZ] {
        let (d, took) = read(&a, bsn).await;
        assert!(took < LOOSE, "{bsn}: {took:?}");
        assert_eq!(count(&d, "ok"), statuses(&d).len(), "{d}");
    }
    // B never read the demo citizen; with Redis gone it asks the sources.
    let (d, took) = read(&b, CITIZEN).await;
    assert!(took < LOOSE, "{took:?}");
    assert_eq!(count(&d, "ok"), statuses(&d).len(), "{d}");
    let reads = &admin_status(&a).await["cache"]["shared"]["reads"];
    let failed: u64 = ["error", "timeout", "skipped"]
        .iter()
        .map(|k| reads[k].as_u64().unwrap())
        .sum();
    assert!(failed >= 1, "{reads}");

    r.start();
    shared_up(&a).await;
    shared_up(&b).await;
    let (d, _) = read(&a, BAKKER).await;
    let fetched = count(&d, "ok");
    written(&r, &subject_key(&a, BAKKER), fetched).await;
    let before = b.chaos.total_hits();
    let (d, _) = read(&b, BAKKER).await;
    assert_eq!(count(&d, "cached"), fetched, "{d}");
    assert_eq!(b.chaos.total_hits(), before, "B called no source");
}

#[tokio::test]
async fn the_gateway_starts_without_redis_and_uses_it_once_it_is_there() {
    let Some(mut r) = redis() else { return };
    r.stop();
    let a = spawn(&r, Duration::from_millis(50)).await;
    for bsn in [CITIZEN, MULDER] {
        let (d, took) = read(&a, bsn).await;
        assert!(took < LOOSE, "{took:?}");
        assert_eq!(count(&d, "ok"), statuses(&d).len(), "{d}");
    }
    let shared = &admin_status(&a).await["cache"]["shared"];
    assert_ne!(shared["state"], "up", "{shared}");
    assert!(shared["last_error"].is_string(), "{shared}");

    r.start();
    shared_up(&a).await;
    let (d, _) = read(&a, YILMAZ).await;
    written(&r, &subject_key(&a, YILMAZ), count(&d, "ok")).await;
}

#[tokio::test]
async fn a_paused_redis_delays_reads_by_the_budget_at_most_and_fails_none() {
    let Some(r) = redis() else { return };
    let a = spawn(&r, Duration::from_millis(50)).await;
    shared_up(&a).await;
    read(&a, CITIZEN).await;

    r.pause();
    for bsn in [MULDER, YILMAZ, BAKKER] {
        let (d, took) = read(&a, bsn).await;
        assert!(took < LOOSE, "{bsn}: {took:?}");
        assert_eq!(count(&d, "ok"), statuses(&d).len(), "{d}");
    }
    let reads = &admin_status(&a).await["cache"]["shared"]["reads"];
    let timeouts = reads["timeout"].as_u64().unwrap();
    assert!(timeouts >= 1, "{reads}");
    r.resume();
    shared_up(&a).await;
}

#[tokio::test]
async fn an_invalidation_removes_the_subjects_hash_from_redis() {
    let Some(r) = redis() else { return };
    let a = spawn(&r, ROOMY).await;
    shared_up(&a).await;
    let (d, _) = read(&a, CITIZEN).await;
    let key = subject_key(&a, CITIZEN);
    written(&r, &key, count(&d, "ok")).await;

    a.state
        .gateway
        .cache
        .invalidate_subject(Bsn::parse(CITIZEN).unwrap());
    let con = raw(&r).await;
    eventually(Duration::from_secs(5), "the hash is gone", || {
        let mut con = con.clone();
        let key = key.clone();
        async move { !con.exists::<_, bool>(&key).await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn an_answer_asked_for_before_an_invalidation_is_not_written_after_it() {
    let Some(r) = redis() else { return };
    let a = spawn(&r, ROOMY).await;
    shared_up(&a).await;
    const UWV: &str = "/uwv/UitkeringenService";
    a.chaos.set(UWV, Behaviour::Delay(700));
    let reading = {
        let url = a.url.clone();
        let http = a.http.clone();
        let token = a.citizen_token(CITIZEN);
        tokio::spawn(async move {
            http.get(format!("{url}/v1/me/dossier"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The other sources answered and were written; UWV's call is out.
    eventually(Duration::from_secs(5), "UWV is being called", || async {
        a.chaos.hits(UWV) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.state
        .gateway
        .cache
        .invalidate_subject(Bsn::parse(CITIZEN).unwrap());
    let d = reading.await.unwrap();
    assert_eq!(source(&d, "uwv-uitkeringen")["status"], "ok", "{d}");
    // Time for a write that should not happen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut con = raw(&r).await;
    let key = subject_key(&a, CITIZEN);
    let fields: Vec<String> = con.hkeys(&key).await.unwrap();
    assert!(
        fields.iter().all(|f| !f.starts_with("uwv-uitkeringen:")),
        "{fields:?}"
    );
}

#[tokio::test]
async fn an_answer_past_its_ttl_in_redis_is_the_fallback_when_the_source_fails() {
    let Some(r) = redis() else { return };
    let short = || {
        let mut o = options(r.url(), KEY, ROOMY);
        let shared = o.tweak.take().unwrap();
        o.tweak = Some(Box::new(move |c| {
            shared(c);
            tweak_adapter(c, "uwv-uitkeringen", |d| {
                d.cache.ttl = Dur(Duration::from_millis(300));
                d.cache.stale_if_error = Dur(Duration::from_secs(60));
            })
        }));
        o
    };
    let a = spawn_app_with(short()).await;
    let b = spawn_app_with(short()).await;
    shared_up(&a).await;
    shared_up(&b).await;
    let (first, _) = read(&a, CITIZEN).await;
    written(&r, &subject_key(&a, CITIZEN), count(&first, "ok")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.chaos.set(
        "/uwv/UitkeringenService",
        Behaviour::Status(500, "text/plain", "stuk".into()),
    );
    let (d, _) = read(&b, CITIZEN).await;
    let uwv = source(&d, "uwv-uitkeringen");
    assert_eq!(uwv["status"], "stale", "{d}");
    assert!(uwv["age_ms"].as_u64().unwrap() >= 300, "{uwv}");
    assert_eq!(
        uwv["fetched_at"],
        source(&first, "uwv-uitkeringen")["fetched_at"],
        "A's answer"
    );
    // The sources that are still fresh in Redis came from there.
    assert_eq!(count(&d, "cached"), statuses(&d).len() - 1, "{d}");
}

#[tokio::test]
async fn a_no_cache_read_asks_the_sources_not_redis() {
    let Some(r) = redis() else { return };
    let a = spawn(&r, ROOMY).await;
    let b = spawn(&r, ROOMY).await;
    shared_up(&a).await;
    shared_up(&b).await;
    let (d, _) = read(&a, CITIZEN).await;
    written(&r, &subject_key(&a, CITIZEN), count(&d, "ok")).await;
    let token = b.employee_token("uwv", &["uwv-werkcoach"]);
    let d: Value = b
        .http
        .post(format!("{}/v1/dossiers", b.url))
        .bearer_auth(&token)
        .header("X-Purpose", "re-integratie")
        .header("Cache-Control", "no-cache")
        .json(&serde_json::json!({"bsn": CITIZEN, "view": "werkcoach"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The view needs four of the five sources (`skipped`: not asked).
    let asked = statuses(&d).len() - count(&d, "skipped");
    assert_eq!(count(&d, "cached"), 0, "{d}");
    assert_eq!(count(&d, "ok"), asked, "{d}");
    assert!(b.chaos.total_hits() >= asked as u64);
    let reads = &admin_status(&b).await["cache"]["shared"]["reads"];
    assert_eq!(reads["hit"], 0, "{reads}");
}

#[tokio::test]
async fn a_reload_keeps_the_shared_cache_unless_its_settings_change() {
    let Some(r) = redis() else { return };
    let a = spawn(&r, ROOMY).await;
    let g = &a.state.gateway;
    let first = g.cache.shared().unwrap();
    g.swap((*a.config).clone());
    assert!(std::sync::Arc::ptr_eq(&first, &g.cache.shared().unwrap()));
    let mut c = (*a.config).clone();
    c.gateway.cache.shared.as_mut().unwrap().prefix = "anders".into();
    g.swap(c.clone());
    let second = g.cache.shared().unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &second));
    let key = second.subject_key(&Bsn::parse(CITIZEN).unwrap());
    assert!(key.starts_with("anders:subject:"), "{key}");
    c.gateway.cache.shared = None;
    g.swap(c);
    assert!(g.cache.shared().is_none());
    read(&a, CITIZEN).await;
}

/// Loads the demo config with `shared` (indented YAML lines) under `cache:`, with the key
/// `key` in `${KETENPORTAAL_CACHE_KEY}`. The error text has the temp dir as `[dir]`.
fn load_with_shared(shared: &str, key: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    copy_repo_dirs(dir.path(), &["config", "adapters"]);
    let file = dir.path().join("config/demo.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    // The demo's own block (on when KETENPORTAAL_REDIS_URL is set) makes way for this one.
    let demo_block = "  shared:\n    url: ${KETENPORTAAL_REDIS_URL:-}\n    key: ${KETENPORTAAL_DEMO_CACHE_KEY}\n";
    assert!(text.contains(demo_block));
    let text = text.replacen(demo_block, &format!("  shared:\n{shared}"), 1);
    std::fs::write(&file, text).unwrap();
    let demo = ketenportaal::demo::demo_env("http://127.0.0.1:9".into(), SECRET.into());
    let key = key.to_string();
    let env = move |k: &str| match k {
        "KETENPORTAAL_CACHE_KEY" => Some(key.clone()),
        "KETENPORTAAL_REDIS_URL" => Some("redis://:hemmelijk@127.0.0.1:6379/2".into()),
        _ => demo(k),
    };
    Config::load_with_env(&file, &env).map_err(|e| {
        e.to_string()
            .replace(&dir.path().display().to_string(), "[dir]")
    })
}

#[test]
fn the_config_refuses_a_key_that_is_not_64_hex_characters_and_unknown_keys() {
    let shared = "    url: ${KETENPORTAAL_REDIS_URL}\n    key: ${KETENPORTAAL_CACHE_KEY}\n";
    let c = load_with_shared(shared, KEY).unwrap();
    let sh = c.gateway.cache.shared.as_ref().unwrap();
    assert_eq!(sh.budget, Dur(Duration::from_millis(25)), "the default");
    assert_eq!(sh.prefix, "ketenportaal", "the default");
    assert_eq!(sh.key_bytes().unwrap()[0], 0x0f);

    // An empty URL (an unset `${KETENPORTAAL_REDIS_URL:-}`) means no shared cache.
    let off = load_with_shared("    url: \"\"\n    key: ${KETENPORTAAL_CACHE_KEY}\n", KEY).unwrap();
    assert!(off.gateway.cache.shared.is_none());

    let short = load_with_shared(shared, "0123abcd").unwrap_err();
    assert!(
        short.contains(
            "`cache.shared.key` must be 64 hex characters (32 bytes); it has 8 characters"
        ),
        "{short}"
    );
    let not_hex = "zz".repeat(32);
    let e = load_with_shared(shared, &not_hex).unwrap_err();
    assert!(e.contains("it holds other characters"), "{e}");
    assert!(!e.contains(&not_hex), "the key is not repeated: {e}");

    let unknown = format!("{shared}    ttl: 5m\n");
    let e = load_with_shared(&unknown, KEY).unwrap_err();
    assert!(e.contains("unknown key `ttl`"), "{e}");

    // Every problem at once, none repeating a secret.
    let all = "    url: http://:hemmelijk@127.0.0.1:6379\n    key: ${KETENPORTAAL_CACHE_KEY}\n    budget: 0ms\n    prefix: \"\"\n";
    let e = load_with_shared(all, "0123abcd").unwrap_err();
    assert!(!e.contains("hemmelijk") && !e.contains("0123abcd"), "{e}");
    insta::assert_snapshot!(e);
}

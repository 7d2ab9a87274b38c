//! The cluster scenario (issue 16): three `ketenportaal demo` instances behind HAProxy (health
//! checks on `/readyz`, retries on connection failures and empty responses), on one PostgreSQL
//! and one Redis, sharing one set of fixture agencies, under a bounded mixed load of citizen
//! and employee dossier reads and applications. One instance is killed with `kill -9` mid-run
//! and started again; then PostgreSQL is restarted mid-run. Afterwards it counts what a client
//! and an auditor care about: requests that failed as the client saw them, 2xx reads without
//! an audit record, applications accepted (202) but lost or delivered twice, whether the
//! cluster's one chain verifies; and it times how fast a registration and an invalidation
//! reach the other instances, and what a read costs with Redis stopped.
//!
//! `tests/cluster.rs` runs it small; `benches/cluster.rs` (`bash benches/cluster.sh`) runs it
//! full size and also compares cached-dossier req/s and audit records/s on PostgreSQL and
//! SQLite. Include with `#[path = "support/cluster.rs"] mod cluster;` beside `postgres` and
//! `redis` (tests/support).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ketenportaal::config::Config;
use ketenportaal::demo::{self, agencies::AgencyServer};
use ketenportaal::store::{AuditStore, StoreLocation, StoreOptions, Verdict};
use serde_json::{Value, json};

use super::postgres::Postgres;
use super::redis::Redis;

/// The shared secret of the demo cluster (every instance mints and checks tokens with it).
pub const SECRET: &str = "cluster-secret-cluster-secret-0123456789";
/// How long a dead instance's delivery lease lasts in the scenario.
const LEASE: &str = "2s";

/// How big a run is.
#[derive(Debug, Clone)]
pub struct Size {
    /// Seconds of load in all.
    pub secs: u64,
    /// Reader tasks (closed loop, each one request at a time).
    pub readers: usize,
    /// Applicant tasks (closed loop).
    pub applicants: usize,
    /// Pause between two requests of one task (bounds the load).
    pub think: Duration,
    /// When instance 2 is killed, started again, and when PostgreSQL is restarted (seconds
    /// into the load).
    pub kill_at: u64,
    pub restart_at: u64,
    pub pg_restart_at: u64,
}

impl Size {
    /// The size `tests/cluster.rs` runs.
    pub fn small() -> Size {
        Size {
            secs: 14,
            readers: 6,
            applicants: 2,
            think: Duration::from_millis(10),
            kill_at: 3,
            restart_at: 6,
            pg_restart_at: 9,
        }
    }

    /// The size `benches/cluster.sh` runs.
    pub fn full() -> Size {
        Size {
            secs: 60,
            readers: 48,
            applicants: 8,
            think: Duration::from_millis(2),
            kill_at: 15,
            restart_at: 25,
            pg_restart_at: 40,
        }
    }
}

/// What a run found.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub reads: u64,
    pub reads_ok: u64,
    pub applications_sent: u64,
    pub applications_accepted: u64,
    /// Requests the client saw fail (no answer, 5xx), reads and applications alike.
    pub client_failures: u64,
    pub failures_by_kind: BTreeMap<String, u64>,
    /// Applications whose first attempt failed and that the client then sent again, with
    /// the same `Idempotency-Key`, until they were accepted.
    pub applications_resent: u64,
    pub reads_without_audit: u64,
    pub accepted_lost: u64,
    /// Accepted applications the organisation made more than one case for.
    pub delivered_twice: u64,
    /// Delivery requests the organisation received in all (repeats that its idempotency
    /// absorbed included) and distinct applications.
    pub intake_requests: u64,
    pub intake_distinct: u64,
    /// One `Idempotency-Key` answered with two application ids (never allowed).
    pub keys_with_two_ids: u64,
    pub chain: String,
    pub chain_intact: bool,
    pub audit_records: i64,
    /// How long PostgreSQL was down while it restarted.
    pub pg_down: Duration,
    pub registration_propagation: Vec<Duration>,
    pub invalidation_propagation: Vec<Duration>,
    pub redis_stopped_reads: u64,
    pub redis_stopped_failures: u64,
    pub redis_stopped_p99: Duration,
    pub redis_up_p99: Duration,
    pub versions_after: BTreeSet<String>,
    /// Store changes the running instances gave up on (goal 0: every batch committed).
    pub changes_not_written: u64,
    pub latency_p99: Duration,
    pub latency_max: Duration,
    pub elapsed: Duration,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: &Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        let list = |v: &[Duration]| v.iter().map(ms).collect::<Vec<_>>().join(", ");
        writeln!(
            f,
            "cluster scenario: 3 instances behind HAProxy, one PostgreSQL, one Redis"
        )?;
        writeln!(
            f,
            "  load: {:.0} s, {} reads ({} 2xx), {} applications sent, {} accepted",
            self.elapsed.as_secs_f64(),
            self.reads,
            self.reads_ok,
            self.applications_sent,
            self.applications_accepted
        )?;
        writeln!(
            f,
            "  client-side latency through HAProxy: p99 {}, max {}",
            ms(&self.latency_p99),
            ms(&self.latency_max)
        )?;
        writeln!(
            f,
            "  requests failed as the client saw them: {} {:?} (goal 0)",
            self.client_failures, self.failures_by_kind
        )?;
        writeln!(
            f,
            "  applications the client sent again with the same key: {}",
            self.applications_resent
        )?;
        writeln!(
            f,
            "  2xx reads without an audit record: {} (goal 0)",
            self.reads_without_audit
        )?;
        writeln!(
            f,
            "  202 applications lost: {}, delivered twice: {}, keys answered with two ids: {} (goal 0); organisation received {} delivery requests for {} distinct applications",
            self.accepted_lost,
            self.delivered_twice,
            self.keys_with_two_ids,
            self.intake_requests,
            self.intake_distinct
        )?;
        writeln!(
            f,
            "  audit chain across the cluster: {} ({} records)",
            self.chain, self.audit_records
        )?;
        writeln!(
            f,
            "  PostgreSQL down during its restart: {}",
            ms(&self.pg_down)
        )?;
        writeln!(
            f,
            "  registration propagation (PUT on one, served by the others at the same config version): {}",
            list(&self.registration_propagation)
        )?;
        writeln!(
            f,
            "  invalidation propagation (purge on one, no cached answer on the others): {}",
            list(&self.invalidation_propagation)
        )?;
        writeln!(
            f,
            "  Redis stopped: {} reads, {} failed, p99 {} (Redis up: p99 {})",
            self.redis_stopped_reads,
            self.redis_stopped_failures,
            ms(&self.redis_stopped_p99),
            ms(&self.redis_up_p99)
        )?;
        writeln!(
            f,
            "  store changes given up on by the running instances: {} (goal 0)",
            self.changes_not_written
        )?;
        write!(
            f,
            "  config versions after the run: {:?}",
            self.versions_after
        )
    }
}

/// A free TCP port on loopback (bound and released; the caller binds it again soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Is `haproxy` installed? When it is not, the scenario is skipped (it says so) unless
/// `KETENPORTAAL_SERVICE_TESTS=required`.
pub fn haproxy_available() -> bool {
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("KETENPORTAAL_SERVICE_TESTS").as_deref() == Ok("required") {
            panic!("haproxy is required (KETENPORTAAL_SERVICE_TESTS=required) but not installed");
        }
        eprintln!("skipped: haproxy is not installed (apt-get install haproxy)");
    }
    found
}

/// One gateway instance: `ketenportaal demo` on a fixed port, its output in a file.
pub struct Instance {
    pub name: String,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    env: Vec<(String, String)>,
    store: String,
}

impl Instance {
    pub fn start(
        name: &str,
        port: u16,
        store: &str,
        env: &[(String, String)],
        dir: &Path,
    ) -> Instance {
        let mut i = Instance {
            name: name.to_string(),
            port,
            child: None,
            log: dir.join(format!("{name}.log")),
            env: env.to_vec(),
            store: store.to_string(),
        };
        i.spawn();
        i
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let child = Command::new(env!("CARGO_BIN_EXE_ketenportaal"))
            .args(["--log-format", "json", "demo", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--store")
            .arg(&self.store)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KETENPORTAAL_INSTANCE", &self.name)
            .current_dir(root())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `kill -9`, and wait until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the instance again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The instance's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` says ready.
    pub async fn wait_ready(&self, http: &reqwest::Client) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(90) {
            if let Ok(r) = http.get(format!("{}/readyz", self.url())).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} did not become ready:\n{}", self.name, self.log());
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// HAProxy in front of the instances, in the foreground (`-db`), killed on drop.
pub struct HaProxy {
    child: Child,
    pub port: u16,
}

impl HaProxy {
    fn start(dir: &Path, backends: &[u16]) -> HaProxy {
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, p)| format!("    server gw{} 127.0.0.1:{p} check\n", i + 1))
            .collect();
        let cfg = haproxy_config(port, &servers);
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, cfg).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(out.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting haproxy: {e}"));
        HaProxy { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HAProxy configuration of the scenario: `config/cluster/haproxy.cfg`, as
/// `scripts/cluster.sh` fills it in.
pub fn haproxy_config(port: u16, servers: &str) -> String {
    let file = root().join("config/cluster/haproxy.cfg");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .replace("@FRONT@", &format!("127.0.0.1:{port}"))
        .replace("@SERVERS@", servers)
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    reads: u64,
    reads_ok: u64,
    /// Trace ids of the 2xx reads.
    traces: Vec<String>,
    applications_sent: u64,
    /// Idempotency-Key -> application ids it was answered with.
    accepted: BTreeMap<String, BTreeSet<String>>,
    resent: u64,
    failures: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
}

impl Seen {
    fn fail(&mut self, what: String) {
        *self.failures.entry(what).or_insert(0) += 1;
    }
}

fn p99(v: &mut [u64]) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    Duration::from_micros(v[(v.len() * 99 / 100).min(v.len() - 1)])
}

/// The whole scenario, on a server of its own (it is restarted) and a Redis of its own.
pub async fn run(size: Size, pg: Postgres, mut redis: Redis) -> Figures {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let database = pg.fresh_database("cluster").await;
    let agencies = AgencyServer::start(
        &root().join("fixtures/agencies"),
        "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
    )
    .await
    .unwrap_or_else(|e| panic!("agencies: {e}"));
    let env: Vec<(String, String)> = vec![
        ("KETENPORTAAL_AGENCIES".into(), agencies.base_url()),
        ("KETENPORTAAL_DEMO_SECRET".into(), SECRET.into()),
        ("KETENPORTAAL_REDIS_URL".into(), redis.url()),
        ("KETENPORTAAL_STORE_LEASE".into(), LEASE.into()),
        ("RUST_LOG".into(), "info".into()),
    ];
    let ports = [free_port(), free_port(), free_port()];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut instances: Vec<Instance> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| Instance::start(&format!("gw{}", i + 1), *p, &database, &env, dir.path()))
        .collect();
    for i in &instances {
        i.wait_ready(&http).await;
    }
    let haproxy = HaProxy::start(dir.path(), &ports);
    let front = haproxy.url();
    wait_front(&http, &front, &dir.path().join("haproxy.log")).await;

    let env_fn = demo::demo_env(agencies.base_url(), SECRET.to_string());
    let config = Config::load_with_env(&root().join("config/demo.yaml"), &env_fn)
        .unwrap_or_else(|e| panic!("demo config: {e}"));
    let citizens: Vec<String> = ketenportaal::bsn::TEST_BSNS
        .iter()
        .map(|b| {
            demo::mint(
                &config,
                &demo::citizen(b).unwrap_or_else(|e| panic!("{e}")),
                3600,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let coach = demo::mint(
        &config,
        &demo::employee("coach.cluster", "uwv", &["uwv-werkcoach"]),
        3600,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let applicant = demo::mint(
        &config,
        &demo::citizen("999993653").unwrap_or_else(|e| panic!("{e}")),
        3600,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let mut figures = Figures::default();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let started = Instant::now();
    let until = started + Duration::from_secs(size.secs);
    let mut tasks = Vec::new();
    for n in 0..size.readers {
        let (http, front, seen, citizens, coach) = (
            http.clone(),
            front.clone(),
            seen.clone(),
            citizens.clone(),
            coach.clone(),
        );
        let think = size.think;
        tasks.push(tokio::spawn(async move {
            let mut k = n;
            while Instant::now() < until {
                k += 1;
                let bsn = ketenportaal::bsn::TEST_BSNS[k % ketenportaal::bsn::TEST_BSNS.len()];
                let (kind, req) = if k % 3 == 0 {
                    (
                        "employee read",
                        http.post(format!("{front}/v1/dossiers"))
                            .bearer_auth(&coach)
                            .header("X-Purpose", "re-integratie")
                            .json(&json!({"bsn": bsn, "view": "werkcoach"})),
                    )
                } else {
                    (
                        "citizen read",
                        http.get(format!("{front}/v1/me/dossier"))
                            .bearer_auth(&citizens[k % citizens.len()]),
                    )
                };
                let t = Instant::now();
                // What happened, found without the lock (no guard lives across an await).
                let outcome: Result<String, String> = match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        body["trace_id"]
                            .as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("{kind}: 2xx without a trace id"))
                    }
                    Ok(r) if r.status().is_server_error() => {
                        // When and why, for the figures: the problem's type, or who answered.
                        let status = r.status().as_u16();
                        let at = started.elapsed().as_secs();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        let why = body["type"]
                            .as_str()
                            .unwrap_or("not problem+json (HAProxy?)");
                        Err(format!("{kind}: {status} at {at} s ({why})"))
                    }
                    Ok(r) => Err(format!("{kind}: unexpected {}", r.status().as_u16())),
                    Err(e) => Err(format!("{kind}: {}", error_kind(&e))),
                };
                let us = t.elapsed().as_micros() as u64;
                {
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    s.reads += 1;
                    s.latencies_us.push(us);
                    match outcome {
                        Ok(trace) => {
                            s.reads_ok += 1;
                            s.traces.push(trace);
                        }
                        Err(what) => s.fail(what),
                    }
                }
                tokio::time::sleep(think).await;
            }
        }));
    }
    for n in 0..size.applicants {
        let (http, front, seen, token) =
            (http.clone(), front.clone(), seen.clone(), applicant.clone());
        let think = size.think * 5;
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while Instant::now() < until {
                k += 1;
                let key = format!("cluster-{n}-{k}-{}", uuid::Uuid::new_v4());
                let body = json!({"service": "bijstand-aanvragen", "data": {"gewenste_ingangsdatum": "2027-01-16", "woonsituatie": "alleenstaand", "toelichting": format!("cluster {n}/{k}")}});
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let t = Instant::now();
                    let r = http
                        .post(format!("{front}/v1/me/applications"))
                        .bearer_auth(&token)
                        .header("Idempotency-Key", &key)
                        .json(&body)
                        .send()
                        .await;
                    let us = t.elapsed().as_micros() as u64;
                    let outcome = match r {
                        Ok(r) if r.status() == 202 || r.status() == 200 => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            Ok(v["id"].as_str().unwrap_or_default().to_string())
                        }
                        Ok(r) => Err(format!("application: {}", r.status().as_u16())),
                        Err(e) => Err(format!("application: {}", error_kind(&e))),
                    };
                    let done = {
                        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                        s.latencies_us.push(us);
                        if attempt == 1 {
                            s.applications_sent += 1;
                        }
                        match outcome {
                            Ok(id) => {
                                if attempt > 1 {
                                    s.resent += 1;
                                }
                                s.accepted.entry(key.clone()).or_default().insert(id);
                                true
                            }
                            Err(what) => {
                                if attempt == 1 {
                                    s.fail(what);
                                }
                                attempt >= 20
                            }
                        }
                    };
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                tokio::time::sleep(think).await;
            }
        }));
    }

    // The faults, on schedule.
    let at = |s: u64| started + Duration::from_secs(s);
    tokio::time::sleep_until(at(size.kill_at).into()).await;
    instances[1].kill();
    tokio::time::sleep_until(at(size.restart_at).into()).await;
    instances[1].restart();
    tokio::time::sleep_until(at(size.pg_restart_at).into()).await;
    let down = Instant::now();
    pg.stop();
    pg.start();
    figures.pg_down = down.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    figures.elapsed = started.elapsed();
    instances[1].wait_ready(&http).await;

    // Every application accepted reaches the organisation once (the dead instance's leases
    // run out first).
    let seen = Arc::try_unwrap(seen)
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_else(|a| std::mem::take(&mut *a.lock().unwrap_or_else(|p| p.into_inner())));
    let ids: BTreeSet<String> = seen.accepted.values().flatten().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys: BTreeSet<String> = agencies.intake().keys().into_iter().collect();
        if ids.is_subset(&keys) || Instant::now() > deadline {
            figures.accepted_lost = ids.difference(&keys).count() as u64;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    figures.intake_requests = agencies.intake().requests();
    figures.intake_distinct = agencies.intake().keys().len() as u64;
    // The intake makes one case per key; a second case for one application would need a
    // second key, i.e. a second application id for one client key.
    figures.keys_with_two_ids = seen.accepted.values().filter(|ids| ids.len() > 1).count() as u64;
    figures.delivered_twice = figures.keys_with_two_ids;

    // Every 2xx read has its record in the cluster's one chain, and the chain verifies.
    let location = StoreLocation::Postgres(database.clone());
    let store = AuditStore::connect(&location, config.pseudonym_key(), StoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("the store: {e}"));
    for t in &seen.traces {
        if !store.has_trace(t.clone()).await.unwrap_or(false) {
            figures.reads_without_audit += 1;
        }
    }
    figures.audit_records = store.counts().await.map(|(n, _)| n).unwrap_or(-1);
    let verdict = ketenportaal::store::verify(&location).await;
    figures.chain_intact = matches!(verdict, Ok(Verdict::Intact { .. }));
    figures.chain = match verdict {
        Ok(v) => v.to_string(),
        Err(e) => e.to_string(),
    };

    figures.reads = seen.reads;
    figures.reads_ok = seen.reads_ok;
    figures.applications_sent = seen.applications_sent;
    figures.applications_accepted = seen.accepted.len() as u64;
    figures.applications_resent = seen.resent;
    figures.client_failures = seen.failures.values().sum();
    figures.failures_by_kind = seen.failures.clone();
    let mut lat = seen.latencies_us.clone();
    figures.latency_p99 = p99(&mut lat);
    figures.latency_max = Duration::from_micros(lat.last().copied().unwrap_or(0));

    println!("(the load and its faults)\n{figures}");
    // Propagation, measured on the settled cluster.
    for round in 0..3 {
        figures
            .registration_propagation
            .push(registration_propagation(&http, &instances, round).await);
        figures
            .invalidation_propagation
            .push(invalidation_propagation(&http, &instances, &citizens[0]).await);
    }
    figures.versions_after = config_versions(&http, &instances).await;
    figures.changes_not_written = changes_not_written(&http, &instances).await;

    // Redis stopped: reads go on, from L1 and the sources, within the budget.
    let (_, up) = timed_reads(&http, &front, &citizens, 200).await;
    figures.redis_up_p99 = up;
    redis.stop();
    let (failed, stopped) = timed_reads(&http, &front, &citizens, 200).await;
    figures.redis_stopped_reads = 200;
    figures.redis_stopped_failures = failed;
    figures.redis_stopped_p99 = stopped;
    redis.start();
    drop(haproxy);
    drop(instances);
    figures
}

/// What kind of client error: refused, reset, timeout, other.
fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        format!("no answer ({e})")
    }
}

async fn wait_front(http: &reqwest::Client, front: &str, log: &Path) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = http.get(format!("{front}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "HAProxy did not come up on {front}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn admin_token() -> String {
    demo::demo_key(SECRET, "admin")
}

/// Changes the instances' store writers gave up on (their callers got an error), summed over
/// the instances running now (a killed instance's counts died with it).
async fn changes_not_written(http: &reqwest::Client, instances: &[Instance]) -> u64 {
    let mut failed = 0;
    for i in instances {
        if let Ok(r) = http
            .get(format!("{}/admin/status", i.url()))
            .bearer_auth(admin_token())
            .send()
            .await
            && let Ok(v) = r.json::<Value>().await
        {
            failed += v["store"]["writer"]["failed"]
                .as_u64()
                .unwrap_or(u64::MAX / 4);
        }
    }
    failed
}

/// The config version each instance reports.
async fn config_versions(http: &reqwest::Client, instances: &[Instance]) -> BTreeSet<String> {
    let mut versions = BTreeSet::new();
    for i in instances {
        if let Ok(r) = http
            .get(format!("{}/admin/status", i.url()))
            .bearer_auth(admin_token())
            .send()
            .await
            && let Ok(v) = r.json::<Value>().await
            && let Some(s) = v["config"]["version"].as_str()
        {
            versions.insert(s.to_string());
        }
    }
    versions
}

/// PUT a registration on instance 1; time until instances 2 and 3 serve it at instance 1's
/// config version.
async fn registration_propagation(
    http: &reqwest::Client,
    instances: &[Instance],
    round: usize,
) -> Duration {
    let id = format!("uwv-cluster-{round}");
    let body = std::fs::read_to_string(root().join("adapters/uwv-uitkeringen.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("id: uwv-uitkeringen", &format!("id: {id}"));
    let started = Instant::now();
    let r = http
        .put(format!("{}/v1/adapters/{id}", instances[0].url()))
        .header("X-Api-Key", demo::demo_key(SECRET, "uwv"))
        .header("content-type", "application/yaml")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT: {e}"));
    assert!(r.status().is_success(), "PUT {id}: {}", r.status());
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let version = v["config_version"].as_str().unwrap_or_default().to_string();
    loop {
        let versions = config_versions(http, instances).await;
        if versions.len() == 1 && versions.contains(&version) {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(10) {
            panic!("registration {id} did not reach every instance: {versions:?}, want {version}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Warm instance 2's and 3's caches for a citizen, purge on instance 1, time until both
/// answer with nothing fetched before the purge (an answer fetched after it may come from
/// Redis or L1: that is the cache working).
async fn invalidation_propagation(
    http: &reqwest::Client,
    instances: &[Instance],
    citizen: &str,
) -> Duration {
    let read = |i: &Instance| {
        http.get(format!("{}/v1/me/dossier", i.url()))
            .bearer_auth(citizen)
            .send()
    };
    for i in &instances[1..] {
        let _ = read(i).await;
    }
    let bsn = ketenportaal::bsn::TEST_BSNS[0];
    // Answers fetched in the same millisecond as the purge would count as after it.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let purged_at = chrono::Utc::now();
    // Any source answer fetched before the purge.
    let cached = |d: &Value| {
        d["sources"]
            .as_array()
            .map(|s| {
                s.iter().any(|s| {
                    s["fetched_at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t < purged_at)
                })
            })
            .unwrap_or(true)
    };
    let started = Instant::now();
    let r = http
        .post(format!("{}/admin/cache/purge", instances[0].url()))
        .bearer_auth(admin_token())
        .json(&json!({"bsn": bsn}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("purge: {e}"));
    assert_eq!(r.status(), 200, "purge");
    let mut pending: Vec<&Instance> = instances[1..].iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for i in pending {
            let d: Value = match read(i).await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            if d.is_null() || cached(&d) {
                still.push(i);
            }
        }
        pending = still;
        if started.elapsed() > Duration::from_secs(10) {
            panic!("the purge did not reach every instance");
        }
    }
    started.elapsed()
}

/// `n` citizen reads through the front, one at a time: failures and p99.
async fn timed_reads(
    http: &reqwest::Client,
    front: &str,
    citizens: &[String],
    n: usize,
) -> (u64, Duration) {
    let mut failed = 0;
    let mut lat = Vec::with_capacity(n);
    for k in 0..n {
        let t = Instant::now();
        let ok = matches!(
            http.get(format!("{front}/v1/me/dossier"))
                .bearer_auth(&citizens[k % citizens.len()])
                .send()
                .await,
            Ok(r) if r.status() == 200
        );
        lat.push(t.elapsed().as_micros() as u64);
        if !ok {
            failed += 1;
        }
    }
    (failed, p99(&mut lat))
}

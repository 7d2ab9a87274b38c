//! Test harness: `spawn_app()` starts the fixture agencies, a "chaos" proxy in front of them
//! (per path: pass through, hang, fail, answer garbage), and the gateway on port 0.

use futures::StreamExt as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ketenportaal::app::App;
use ketenportaal::config::Config;
use ketenportaal::demo::{self, agencies::AgencyServer};
use ketenportaal::server;
use ketenportaal::store::{AuditStore, StoreLocation};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const CITIZEN: &str = "999993653";

/// Copies the files of the repository folders `subs` (e.g. `config`, `adapters`) into the
/// same folders under `to`.
pub fn copy_repo_dirs(to: &std::path::Path, subs: &[&str]) {
    for sub in subs {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(root().join(sub)).unwrap().flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the chaos proxy does on one path.
#[derive(Clone, Debug)]
pub enum Behaviour {
    Hang,
    /// Pass through after a delay.
    Delay(u64),
    /// Stream this many bytes of `<a>` elements (no Content-Length), as fast as read.
    Stream(u64),
    Status(u16, &'static str, String),
    /// `302 Found` with this `Location`.
    Redirect(String),
    /// Answer with this status and body after a delay (a slow failure).
    StatusAfter(u64, u16, &'static str, String),
    /// Announce a `Content-Length` of this many bytes of `<a>` elements, send 64 KiB of them,
    /// wait this many ms, then send the rest (a source that drips a large answer).
    Drip(u64, u64),
}

#[derive(Clone, Default)]
pub struct Chaos {
    behaviours: Arc<Mutex<HashMap<String, Behaviour>>>,
    pub seen_traceparents: Arc<Mutex<Vec<String>>>,
    hits: Arc<Mutex<HashMap<String, u64>>>,
    upstream: Arc<Mutex<String>>,
    client: reqwest::Client,
}

impl Chaos {
    pub fn set(&self, path: &str, b: Behaviour) {
        self.behaviours.lock().unwrap().insert(path.to_string(), b);
    }

    pub fn clear(&self, path: &str) {
        self.behaviours.lock().unwrap().remove(path);
    }

    /// Requests that reached this path (whatever the behaviour).
    pub fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Requests that reached the proxy, on any path.
    pub fn total_hits(&self) -> u64 {
        self.hits.lock().unwrap().values().sum()
    }
}

async fn chaos_handler(
    State(c): State<Chaos>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        c.seen_traceparents.lock().unwrap().push(tp.to_string());
    }
    *c.hits
        .lock()
        .unwrap()
        .entry(uri.path().to_string())
        .or_default() += 1;
    let b = c.behaviours.lock().unwrap().get(uri.path()).cloned();
    if let Some(Behaviour::Delay(ms) | Behaviour::StatusAfter(ms, ..)) = b {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match b {
        Some(Behaviour::Hang) => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        Some(Behaviour::Stream(total)) => {
            let chunk = bytes::Bytes::from("<a>".repeat(64 * 1024 / 3));
            let n = total / chunk.len() as u64;
            let stream =
                futures::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            (
                StatusCode::OK,
                [("content-type", "text/xml")],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Some(Behaviour::Drip(total, pause)) => {
            let unit = bytes::Bytes::from("<a>".repeat(64 * 1024 / 3));
            let n = total / unit.len() as u64;
            let stream = futures::stream::iter(0..n).then(move |i| {
                let unit = unit.clone();
                async move {
                    if i == 1 {
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                    Ok::<_, std::io::Error>(unit)
                }
            });
            let length = (n * (64 * 1024 / 3 * 3)).to_string();
            (
                StatusCode::OK,
                [
                    ("content-type", "text/xml"),
                    ("content-length", length.as_str()),
                ],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Some(Behaviour::Redirect(to)) => {
            (StatusCode::FOUND, [("location", to)], "").into_response()
        }
        Some(
            Behaviour::Status(code, ctype, body) | Behaviour::StatusAfter(_, code, ctype, body),
        ) => (
            StatusCode::from_u16(code).unwrap(),
            [("content-type", ctype)],
            body,
        )
            .into_response(),
        None | Some(Behaviour::Delay(_)) => {
            let upstream = c.upstream.lock().unwrap().clone();
            let mut req = c
                .client
                .post(format!("{upstream}{}", uri.path()))
                .body(body);
            for (k, v) in &headers {
                if k != "host" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            match req.send().await {
                Ok(r) => {
                    let status = r.status();
                    let ct = r
                        .headers()
                        .get("content-type")
                        .cloned()
                        .unwrap_or_else(|| "text/plain".parse().unwrap());
                    let bytes = r.bytes().await.unwrap_or_default();
                    let mut resp = (status, bytes).into_response();
                    resp.headers_mut().insert("content-type", ct);
                    resp
                }
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    }
}

pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    pub config: Arc<Config>,
    pub agencies: AgencyServer,
    pub chaos: Chaos,
    pub state: Arc<App>,
    pub store: AuditStore,
    /// The chaos proxy in front of the agencies: point another gateway here to share them.
    pub chaos_url: String,
    pub dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub type Tweak = Box<dyn Fn(&mut Config) + Send>;

#[derive(Default)]
pub struct Options {
    pub cache: bool,
    /// Load the config from a copy of `config/` and `adapters/` in the app's temp dir, so a
    /// test may change files and reload.
    pub copy_config: bool,
    /// Changes to the loaded demo config (timeouts, cache policy, breaker settings).
    pub tweak: Option<Tweak>,
}

/// How the app is started, beyond [`Options`].
#[derive(Default)]
pub struct Launch {
    /// Load this config file instead of the demo's (it must use the same `${ENV}` names).
    pub config_file: Option<PathBuf>,
    /// Open this store (a file or a `postgres://` URL) instead of a fresh file (a restart on
    /// the same store; several instances on one database).
    pub store: Option<StoreLocation>,
}

/// The UWV adapter of `adapters/` under another id: a descriptor a partner can register.
pub fn uwv_variant(id: &str) -> String {
    std::fs::read_to_string(root().join("adapters/uwv-uitkeringen.yaml"))
        .unwrap()
        .replace("id: uwv-uitkeringen", &format!("id: {id}"))
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// Changes one adapter of a loaded config.
pub fn tweak_adapter(c: &mut Config, id: &str, f: impl Fn(&mut ketenportaal::model::AdapterDef)) {
    let spec = c.adapters.get_mut(id).unwrap();
    let mut s = (**spec).clone();
    f(&mut s.def);
    *spec = Arc::new(s);
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    spawn_app_launched(opts, Launch::default()).await
}

pub async fn spawn_app_launched(opts: Options, launch: Launch) -> TestApp {
    let agencies = AgencyServer::start(
        &root().join("fixtures/agencies"),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("agencies start");
    let chaos = Chaos::default();
    *chaos.upstream.lock().unwrap() = agencies.base_url();
    let chaos_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let chaos_url = format!("http://{}", chaos_listener.local_addr().unwrap());
    let app = Router::new()
        .fallback(chaos_handler)
        .with_state(chaos.clone());
    tokio::spawn(async move {
        axum::serve(chaos_listener, app).await.ok();
    });

    let env: Arc<ketenportaal::app::reload::EnvFn> =
        Arc::new(demo::demo_env(chaos_url.clone(), SECRET.to_string()));
    let dir = tempfile::tempdir().unwrap();
    let config_file = if let Some(f) = &launch.config_file {
        f.clone()
    } else if opts.copy_config {
        copy_repo_dirs(dir.path(), &["config", "adapters"]);
        std::fs::create_dir_all(dir.path().join("config/keys")).unwrap();
        dir.path().join("config/demo.yaml")
    } else {
        root().join("config/demo.yaml")
    };
    let mut config = Config::load_with_env(&config_file, &*env).expect("demo config loads");
    config.gateway.cache.enabled = opts.cache;
    if let Some(t) = &opts.tweak {
        t(&mut config);
    }
    let config_arc = Arc::new(config.clone());
    // The one wiring `serve` uses: registrations layered, reload triggers armed, delivery on.
    let state = App::build(ketenportaal::app::Launch {
        config,
        env,
        store: Some(
            launch
                .store
                .clone()
                .unwrap_or_else(|| StoreLocation::Sqlite(dir.path().join("audit.sqlite"))),
        ),
        watch: true,
        audit: ketenportaal::app::AuditMode::Durable,
    })
    .await
    .expect("the app builds");
    let store = state.store.clone().expect("the app has a store");
    let server_state = state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server::serve(listener, server_state, async {
            rx.await.ok();
        })
        .await
        .ok();
    });
    TestApp {
        url: format!("http://{addr}"),
        http: reqwest::Client::new(),
        config: config_arc,
        agencies,
        chaos,
        state,
        store,
        chaos_url,
        dir,
        _stop: tx,
    }
}

impl TestApp {
    pub fn token(&self, actor: &ketenportaal::auth::Actor) -> String {
        demo::mint(&self.config, actor, 600).unwrap()
    }

    pub fn citizen_token(&self, bsn: &str) -> String {
        self.token(&demo::citizen(bsn).unwrap())
    }

    pub fn employee_token(&self, org: &str, roles: &[&str]) -> String {
        self.token(&demo::employee("medewerker.test", org, roles))
    }

    /// `GET path` (with a bearer token when given), answered as JSON.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> serde_json::Value {
        let mut r = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap().json().await.unwrap()
    }

    /// `POST /v1/me/applications` with `body`, as the citizen of `token`, with `key` as its
    /// `Idempotency-Key` when given.
    pub async fn apply(
        &self,
        token: &str,
        key: Option<&str>,
        body: serde_json::Value,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .post(format!("{}/v1/me/applications", self.url))
            .bearer_auth(token)
            .json(&body);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        r.send().await.unwrap()
    }

    /// Polls the application at `location` until it leaves `received` (or 10 s pass).
    pub async fn settled(&self, token: &str, location: &str) -> serde_json::Value {
        let started = std::time::Instant::now();
        loop {
            let v = self.get_json(location, Some(token)).await;
            if v["status"] != "received" || started.elapsed() > Duration::from_secs(10) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn me_dossier(&self, token: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/v1/me/dossier", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn employee_dossier(
        &self,
        token: &str,
        purpose: Option<&str>,
        body: serde_json::Value,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .post(format!("{}/v1/dossiers", self.url))
            .bearer_auth(token)
            .json(&body);
        if let Some(p) = purpose {
            r = r.header("X-Purpose", p);
        }
        r.send().await.unwrap()
    }
}

/// The source entry for `adapter` in a dossier.
pub fn source<'a>(d: &'a serde_json::Value, adapter: &str) -> &'a serde_json::Value {
    d["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["adapter"] == adapter)
        .unwrap_or_else(|| panic!("no source {adapter} in {d}"))
}

/// The real `ketenportaal demo` binary, started on a free port.
pub struct DemoProcess {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT` of the gateway.
    pub url: String,
    /// The printed curl line for the demo citizen (with its token).
    pub citizen_curl: String,
    /// Everything the process printed so far, stdout and stderr (logs).
    pub output: Arc<Mutex<String>>,
}

impl DemoProcess {
    /// The citizen token from the printed curl line.
    pub fn citizen_token(&self) -> String {
        self.citizen_curl
            .split("Bearer ")
            .nth(1)
            .unwrap_or_default()
            .trim_end_matches('"')
            .to_string()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `ketenportaal demo --listen 127.0.0.1:0 --store STORE [--config CONFIG]` with `env`,
/// and waits until it prints its gateway URL and citizen curl line.
pub fn start_demo(
    store: &std::path::Path,
    config: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> DemoProcess {
    let cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ketenportaal"));
    demo_process(cmd, store, config, env)
}

/// `demo` under a file size limit of `bytes` (util-linux `prlimit`, which execs it).
pub fn start_demo_limited(store: &std::path::Path, bytes: &str) -> DemoProcess {
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg(format!("--fsize={bytes}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_ketenportaal"));
    demo_process(cmd, store, None, &[])
}

fn demo_process(
    mut cmd: std::process::Command,
    store: &std::path::Path,
    config: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> DemoProcess {
    use std::io::{BufRead, BufReader};
    cmd.args(["demo", "--listen", "127.0.0.1:0", "--store"])
        .arg(store);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .envs(env.iter().copied())
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let out = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut o = out.lock().unwrap();
            o.push_str(&line);
            o.push('\n');
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let out = output.clone();
    std::thread::spawn(move || {
        let mut url = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            {
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
            if line.trim_start().starts_with("gateway") {
                url = line.split_whitespace().nth(1).map(str::to_string);
            }
            if line.contains("/v1/me/dossier") && !line.contains("access-log") {
                let _ = tx.send((url.clone().unwrap_or_default(), line));
            }
        }
    });
    let (url, citizen_curl) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo started and printed its curl lines");
    DemoProcess {
        child,
        url,
        citizen_curl,
        output,
    }
}

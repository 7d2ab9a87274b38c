//! The load generator: the servers' address files, tokens and requests, connections, the
//! closed and open loops, and the CPU the server and the generator used over a measured window.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use ketenportaal::auth::{claims_for, mint_hs256};
use ketenportaal::demo;
use ketenportaal::model::AuthConfig;

use crate::procfs::{core_ticks, cpu_ticks};
use crate::{Body, PATH_DOSSIER, SECRET};

/// A server as announced in its address file.
#[derive(Clone, Copy)]
pub struct Endpoint {
    pub api: SocketAddr,
    pub control: SocketAddr,
}

impl Endpoint {
    pub fn read(file: &Path) -> Result<Endpoint, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut lines = text.lines();
        let mut next = || -> Result<SocketAddr, String> {
            lines
                .next()
                .and_then(|l| l.trim().parse().ok())
                .ok_or_else(|| format!("{}: no address", file.display()))
        };
        Ok(Endpoint {
            api: next()?,
            control: next()?,
        })
    }

    pub async fn stats(&self, path: &str) -> Result<Value, String> {
        let req = Request::get(path)
            .header(header::HOST, self.control.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (_, _, b) = once(self.control, req).await?;
        serde_json::from_slice(&b).map_err(|e| format!("control stats: {e}"))
    }
}

/// Issuer and audience of every scenario's config (`config/demo.yaml` and the written ones).
/// Tokens are minted from these alone, so the generator never reads a config file that may
/// change while a run is under way.
pub fn token_auth() -> AuthConfig {
    AuthConfig {
        issuer: "ketenportaal-demo".into(),
        audience: "ketenportaal".into(),
        ..AuthConfig::default()
    }
}

pub fn citizen_token(auth: &AuthConfig, bsn: &str) -> Result<String, String> {
    let actor = demo::citizen(bsn)?;
    mint_hs256(auth, "demo", SECRET, &claims_for(auth, &actor, 24 * 3600))
}

pub fn dossier_request(addr: SocketAddr, token: &str) -> Result<Request<Body>, String> {
    Request::get(PATH_DOSSIER)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())
}

/// An endless supply of dossier requests to `addr`, all with the bearer header `auth`.
pub fn dossier_supply(addr: SocketAddr, auth: &HeaderValue) -> MakeReq {
    let auth = auth.clone();
    let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a header value");
    Arc::new(move || {
        Request::get(PATH_DOSSIER)
            .header(header::HOST, host.clone())
            .header(header::AUTHORIZATION, auth.clone())
            .body(Full::new(Bytes::new()))
            .ok()
    })
}

pub async fn connect(addr: SocketAddr) -> Result<SendRequest<Body>, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// One request on a fresh connection, body collected.
pub async fn once(
    addr: SocketAddr,
    req: Request<Body>,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let mut tx = connect(addr).await?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let b = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers, b))
}

/// Sends one request on an open connection; the status and the body length.
async fn send(tx: &mut SendRequest<Body>, req: Request<Body>) -> Result<(StatusCode, u64), String> {
    tx.ready().await.map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok((status, n))
}

/// Makes the next request; `None` when the supply is used up.
pub type MakeReq = Arc<dyn Fn() -> Option<Request<Body>> + Send + Sync>;

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What one measured run saw.
pub struct Run {
    pub ok: u64,
    pub errors: u64,
    pub bytes: u64,
    pub hist: Histogram<u64>,
    pub secs: f64,
    /// Server CPU over the window, as a share of one core.
    pub server_cpu: f64,
    /// Generator CPU over the window, as a share of one core.
    pub gen_cpu: f64,
    pub server_ticks: u64,
    /// CPU of the server's peer (its PostgreSQL) over the window, as a share of one core, and
    /// its ticks; 0 without one.
    pub peer_cpu: f64,
    pub peer_ticks: u64,
    /// The server's core over the window: busy with any process, and stolen by the host.
    pub core_busy: f64,
    pub core_steal: f64,
}

impl Run {
    fn empty() -> Run {
        Run {
            ok: 0,
            errors: 0,
            bytes: 0,
            hist: histogram(),
            secs: 0.0,
            server_cpu: 0.0,
            gen_cpu: 0.0,
            server_ticks: 0,
            peer_cpu: 0.0,
            peer_ticks: 0,
            core_busy: 0.0,
            core_steal: 0.0,
        }
    }
    fn add(&mut self, o: &Run) {
        self.ok += o.ok;
        self.errors += o.errors;
        self.bytes += o.bytes;
        let _ = self.hist.add(&o.hist);
    }
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
    pub fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }
    /// The peer's CPU per answered request, in µs.
    pub fn peer_us_per_req(&self) -> f64 {
        self.peer_ticks as f64 * 10_000.0 / self.ok.max(1) as f64
    }
    /// Server CPU per answered request, in µs (clock ticks are 10 ms on Linux).
    pub fn cpu_us_per_req(&self) -> f64 {
        self.server_ticks as f64 * 10_000.0 / self.ok.max(1) as f64
    }
}

/// CPU counters at one moment: the server's and the generator's own ticks, and the server's
/// core as a whole (all processes), from `/proc/stat`.
struct CpuSample {
    server: u64,
    /// The peer's ticks, when there is one.
    peer: Option<u64>,
    generator: u64,
    at: Instant,
    /// `(busy, steal, total)` ticks of the server's core, when it runs on exactly one.
    core: Option<(u64, u64, u64)>,
}

async fn cpu_now(control: SocketAddr, peer: Option<SocketAddr>) -> Option<CpuSample> {
    let ticks_of = |control: SocketAddr| async move {
        let ep = Endpoint {
            api: control,
            control,
        };
        ep.stats("/stats").await.ok()
    };
    let stats = ticks_of(control).await?;
    let peer = match peer {
        Some(p) => Some(ticks_of(p).await?["cpu_ticks"].as_u64()?),
        None => None,
    };
    let core = stats["cpus"]
        .as_str()
        .and_then(|c| c.parse::<usize>().ok())
        .and_then(core_ticks);
    Some(CpuSample {
        server: stats["cpu_ticks"].as_u64()?,
        peer,
        generator: cpu_ticks("/proc/self/stat"),
        at: Instant::now(),
        core,
    })
}

/// Reads the CPU counters at `from`, the start of the measured window.
fn cpu_at(
    control: SocketAddr,
    peer: Option<SocketAddr>,
    from: Instant,
) -> tokio::task::JoinHandle<Option<CpuSample>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        cpu_now(control, peer).await
    })
}

/// Fills in the CPU use over the window that `first` opened and that ends now.
async fn cpu_until_now(
    run: &mut Run,
    control: SocketAddr,
    peer: Option<SocketAddr>,
    first: tokio::task::JoinHandle<Option<CpuSample>>,
) {
    if !first.is_finished() {
        // The run ended before its window opened: nothing to report.
        first.abort();
        return;
    }
    if let (Ok(Some(a)), Some(b)) = (first.await, cpu_now(control, peer).await) {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        run.server_ticks = b.server - a.server;
        run.server_cpu = run.server_ticks as f64 / 100.0 / secs;
        if let (Some(p1), Some(p2)) = (a.peer, b.peer) {
            run.peer_ticks = p2.saturating_sub(p1);
            run.peer_cpu = run.peer_ticks as f64 / 100.0 / secs;
        }
        run.gen_cpu = (b.generator - a.generator) as f64 / 100.0 / secs;
        if let (Some((b1, s1, t1)), Some((b2, s2, t2))) = (a.core, b.core) {
            let total = (t2 - t1).max(1) as f64;
            run.core_busy = (b2 - b1) as f64 / total;
            run.core_steal = (s2 - s1) as f64 / total;
        }
    }
}

/// Closed loop: `conns` connections, each sending its next request as soon as the previous
/// answer is in. Only requests started in `[from, until)` count.
pub async fn closed_loop(
    target: SocketAddr,
    control: SocketAddr,
    make: MakeReq,
    conns: usize,
    warmup: Duration,
    measure: Duration,
) -> Run {
    closed_loop_with_peer(target, control, None, make, conns, warmup, measure).await
}

/// [`closed_loop`], also measuring the CPU of the server's `peer` (the control port of its
/// PostgreSQL) over the same window.
pub async fn closed_loop_with_peer(
    target: SocketAddr,
    control: SocketAddr,
    peer: Option<SocketAddr>,
    make: MakeReq,
    conns: usize,
    warmup: Duration,
    measure: Duration,
) -> Run {
    let from = Instant::now() + warmup;
    let until = from + measure;
    let cpu = cpu_at(control, peer, from);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let make = make.clone();
            tokio::spawn(async move {
                let mut r = Run::empty();
                'connection: while Instant::now() < until {
                    let mut tx = match connect(target).await {
                        Ok(tx) => tx,
                        Err(_) => {
                            r.errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    while Instant::now() < until {
                        let Some(req) = make() else {
                            break 'connection;
                        };
                        let t0 = Instant::now();
                        let res = send(&mut tx, req).await;
                        let counted = t0 >= from;
                        match res {
                            Ok((StatusCode::OK, n)) if counted => {
                                r.ok += 1;
                                r.bytes += n;
                                r.hist.saturating_record(t0.elapsed().as_micros() as u64);
                            }
                            Ok(_) if counted => r.errors += 1,
                            Ok(_) => {}
                            Err(_) => {
                                r.errors += u64::from(counted);
                                continue 'connection;
                            }
                        }
                    }
                }
                r
            })
        })
        .collect();
    let mut total = Run::empty();
    for t in tasks {
        if let Ok(r) = t.await {
            total.add(&r);
        }
    }
    total.secs = until
        .min(Instant::now())
        .saturating_duration_since(from)
        .as_secs_f64();
    cpu_until_now(&mut total, control, peer, cpu).await;
    total
}

/// Open loop: request `i` is due at `start + i/rate`, whatever happened to earlier ones.
/// Latency counts from the due time when the request had to wait for a free connection
/// (queueing is the server's fault); when a connection was idle and waiting for the due time,
/// it counts from the actual send, so the generator's own timer slack (tokio's 1 ms wheel) is
/// not charged to the server. Each tick sends `width` requests together, one per connection,
/// and its latency is that of the slowest answer (a client-side fan-out: the reference for the
/// slowest of `width` sources).
pub async fn open_loop(
    target: SocketAddr,
    control: SocketAddr,
    make: MakeReq,
    width: usize,
    rate: u64,
    warmup: Duration,
    measure: Duration,
) -> Run {
    let workers = 64usize;
    let width = width.max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let from = start + warmup;
    let total_reqs = ((warmup + measure).as_secs_f64() * rate as f64) as u64;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let next = Arc::new(AtomicU64::new(0));
    let cpu = cpu_at(control, None, from);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let make = make.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut r = Run::empty();
                // One connection per request of a tick, kept across ticks.
                let mut conns: Vec<Option<SendRequest<Body>>> = (0..width).map(|_| None).collect();
                'ticks: loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= total_reqs {
                        break;
                    }
                    let due = start + period * i as u32;
                    let taken = Instant::now();
                    tokio::time::sleep_until(due.into()).await;
                    let sent = Instant::now();
                    let reference = if taken > due { due } else { sent };
                    let counted = due >= from;
                    let mut reqs = Vec::with_capacity(width);
                    for _ in 0..width {
                        let Some(req) = make() else { break 'ticks };
                        reqs.push(req);
                    }
                    for c in conns.iter_mut().filter(|c| c.is_none()) {
                        *c = connect(target).await.ok();
                    }
                    // The tick's requests go out together; it is done when the last answers.
                    let results = futures::future::join_all(conns.iter_mut().zip(reqs).map(
                        |(c, req)| async move {
                            match c.as_mut() {
                                Some(tx) => send(tx, req).await,
                                None => Err("no connection".into()),
                            }
                        },
                    ))
                    .await;
                    let elapsed = reference.elapsed();
                    let mut ok = true;
                    let mut bytes = 0;
                    for (c, res) in conns.iter_mut().zip(results) {
                        match res {
                            Ok((StatusCode::OK, n)) => bytes += n,
                            Ok(_) => ok = false,
                            Err(_) => {
                                ok = false;
                                *c = None;
                            }
                        }
                    }
                    if !counted {
                        continue;
                    }
                    if ok {
                        r.ok += 1;
                        r.bytes += bytes;
                        r.hist.saturating_record(elapsed.as_micros() as u64);
                    } else {
                        r.errors += 1;
                    }
                }
                r
            })
        })
        .collect();
    let mut total = Run::empty();
    for t in tasks {
        if let Ok(r) = t.await {
            total.add(&r);
        }
    }
    total.secs = measure.as_secs_f64();
    cpu_until_now(&mut total, control, None, cpu).await;
    total
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

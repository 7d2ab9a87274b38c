//! The server roles, and what they share: an HTTP/1.1 server, the control port (`/stats`,
//! allocation counting, peak reset, a gateway's source lookups) and the address file that
//! announces both ports.

pub mod bare;
pub mod gateway;
pub mod naive;
pub mod nginx;
pub mod postgres;
pub mod sources;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use ketenportaal::app::App as AppState;

use crate::procfs::{proc_self, status_kb, tree_ticks};
use crate::runtime::{ALLOC_BYTES, ALLOCS, COUNT_ON, LIVE_BYTES, LIVE_ON};
use crate::{Body, ServeOut};

/// The process whose CPU, with its children's, the control port reports (0: this one; nginx's
/// pid for serve-nginx, which runs as one process; the postmaster for serve-postgres).
pub static STATS_PID: AtomicU32 = AtomicU32::new(0);

/// Serves HTTP/1.1 with keep-alive on `listener`, one task per connection, `handler` per
/// request. Like `axum::serve`, it leaves Nagle on (no `TCP_NODELAY`).
pub fn serve_http1<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_http1_counting(listener, None, handler);
}

/// [`serve_http1`], counting the connections it accepts in `accepted` (the sources do, so the
/// generator sees whether a fan-out keeps its connections or opens new ones).
pub fn serve_http1_counting<F, Fut>(
    listener: TcpListener,
    accepted: Option<&'static AtomicU64>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            if let Some(n) = accepted {
                n.fetch_add(1, Relaxed);
            }
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let f = h(req);
                    async move { Ok::<_, Infallible>(f.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

pub fn json_response(body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The control port: stats and allocation counting; `/sources`, a gateway's source lookups.
async fn control(req: Request<Incoming>, gw: Option<Arc<AppState>>) -> Response<Body> {
    match req.uri().path() {
        "/count/on" => COUNT_ON.store(true, Relaxed),
        "/count/off" => COUNT_ON.store(false, Relaxed),
        // Resets VmHWM (the peak RSS) to the current RSS (Linux 4.0+).
        "/peak/reset" => {
            let _ = std::fs::write("/proc/self/clear_refs", "5");
        }
        // Its own path, so `/stats` (read at both ends of every measured window) stays as cheap
        // as it was.
        "/sources" => return json_response(Bytes::from(source_lookups(gw.as_deref()).to_string())),
        _ => {}
    }
    let (rss_kb, mut cpu) = proc_self();
    let other = STATS_PID.load(Relaxed);
    if other != 0 {
        cpu = tree_ticks(other);
    }
    let cpus = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let mut v = json!({
        "pid": std::process::id(),
        "cpus": cpus,
        "rss_kb": rss_kb,
        "peak_rss_kb": status_kb("VmHWM:"),
        "cpu_ticks": cpu,
        "allocs": ALLOCS.load(Relaxed),
        "alloc_bytes": ALLOC_BYTES.load(Relaxed),
        "live_heap_bytes": LIVE_ON.load(Relaxed).then(|| LIVE_BYTES.load(Relaxed)),
        // Non-zero in the sources' process only.
        "source_calls": sources::CALLS.load(Relaxed),
        "source_connections": sources::CONNECTIONS.load(Relaxed),
    });
    if let Some(s) = gw {
        s.gateway.cache.sync().await;
        let (entries, bytes) = s.gateway.cache.stats();
        v["cache_entries"] = json!(entries);
        v["cache_bytes"] = json!(bytes);
        let (entries, bytes) = s.gateway.runtime().renders.stats();
        v["render_entries"] = json!(entries);
        v["render_bytes"] = json!(bytes);
    }
    json_response(Bytes::from(v.to_string()))
}

/// A gateway's source lookups since it started, summed over its adapters: the cache's (`hit`,
/// `miss`: a call made, `joined`: another request's call waited for, `stale`) and the outcomes
/// the dossiers reported (`ok`, `cached`, `stale`, `timeout`, `error`, `unavailable`, from
/// `/metrics`). Empty for the other roles.
fn source_lookups(gw: Option<&AppState>) -> serde_json::Value {
    let Some(s) = gw else { return json!({}) };
    let (mut hit, mut miss, mut joined, mut stale) = (0, 0, 0, 0);
    for id in s.gateway.runtime().adapters.keys() {
        let (h, m, j, st) = s.gateway.metrics.cache_counts(&Arc::from(id.as_str()));
        (hit, miss, joined, stale) = (hit + h, miss + m, joined + j, stale + st);
    }
    // `ketenportaal_source_results_total{adapter="…",status="…"} N`, one line a series.
    let mut results = serde_json::Map::new();
    for line in s.gateway.metrics.encode().lines() {
        let Some(rest) = line.strip_prefix("ketenportaal_source_results_total{") else {
            continue;
        };
        let status = rest
            .split_once("status=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(st, _)| st);
        let count = rest
            .rsplit_once(' ')
            .and_then(|(_, n)| n.parse::<u64>().ok());
        if let (Some(status), Some(count)) = (status, count) {
            let sum = results.get(status).and_then(|v| v.as_u64()).unwrap_or(0);
            results.insert(status.to_string(), json!(sum + count));
        }
    }
    json!({
        "cache_lookups": {"hit": hit, "miss": miss, "joined": joined, "stale": stale},
        "source_results": results,
    })
}

/// Binds the control port, announces both addresses, and keeps the process up until
/// `max_secs` (or until killed).
pub async fn announce_and_wait(
    api: SocketAddr,
    gw: Option<Arc<AppState>>,
    out: &ServeOut,
) -> Result<(), String> {
    let control_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("control port: {e}"))?;
    let control_addr = control_listener.local_addr().map_err(|e| e.to_string())?;
    serve_http1(control_listener, move |req| control(req, gw.clone()));
    let tmp = out.addr_file.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("{api}\n{control_addr}\n{}\n", std::process::id()),
    )
    .and_then(|()| std::fs::rename(&tmp, &out.addr_file))
    .map_err(|e| format!("{}: {e}", out.addr_file.display()))?;
    // Until the time is up or the bench stops it (SIGTERM, or Ctrl-C): returning lets a
    // server that has a child (nginx) stop it, instead of leaving it running.
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(out.max_secs)) => {}
        () = stop => {}
    }
    Ok(())
}

pub async fn bind_loopback() -> Result<(TcpListener, SocketAddr), String> {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let a = l.local_addr().map_err(|e| e.to_string())?;
    Ok((l, a))
}

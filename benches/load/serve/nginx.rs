//! The peer an operator might otherwise pick: nginx + njs doing the fan-out of part (b)
//! (`benches/nginx`), started as a child whose CPU the control port reports.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{STATS_PID, announce_and_wait};
use crate::{ServeOut, root};

/// nginx with njs, configured from `benches/nginx/nginx.conf.in` to fan out to `n` slow sources
/// and merge their answers; runs as a child (it inherits this process's core pinning), and the
/// control port reports its CPU.
pub async fn serve_nginx(sources: &str, n: usize, out: &ServeOut) -> Result<(), String> {
    let here = root().join("benches/nginx");
    let template = std::fs::read_to_string(here.join("nginx.conf.in"))
        .map_err(|e| format!("nginx.conf.in: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let conf = template
        .replace("@DIR@", &dir.path().display().to_string())
        .replace("@JS_DIR@", &here.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@SOURCES@", sources.trim_start_matches("http://"))
        .replace("@N@", &n.to_string());
    let conf_file = dir.path().join("nginx.conf");
    std::fs::write(&conf_file, conf).map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new("nginx")
        .arg("-c")
        .arg(&conf_file)
        .arg("-p")
        .arg(dir.path())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting nginx (apt-get install nginx libnginx-mod-http-js): {e}"))?;
    let api: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(api).await.is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            return Err(format!("nginx exited ({status}): {log}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    STATS_PID.store(child.id().unwrap_or(0), Relaxed);
    let r = announce_and_wait(api, None, out).await;
    let _ = child.kill().await;
    r
}

//! A throwaway PostgreSQL for the cached dossier on the PostgreSQL backend (part g): the test
//! harness's server (`tests/support/postgres.rs`: `initdb` in a temporary folder, `fsync` on,
//! stopped and removed when this process ends), a fresh database in it, its URL written to
//! `url_file`, and its CPU (the postmaster and every backend) on the control port.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use super::{STATS_PID, announce_and_wait};
use crate::ServeOut;
use crate::postgres;

pub async fn serve_postgres(url_file: &Path, out: &ServeOut) -> Result<(), String> {
    let pg = postgres::postgres()
        .ok_or("no PostgreSQL (why is said above; Debian: apt-get install postgresql)")?;
    let url = pg.fresh_database("load").await;
    let root = pg
        .postmaster_pid()
        .ok_or("PostgreSQL runs, but its postmaster.pid cannot be read")?;
    STATS_PID.store(root, Relaxed);
    std::fs::write(url_file, format!("{url}\n"))
        .map_err(|e| format!("{}: {e}", url_file.display()))?;
    let api: SocketAddr = ([127, 0, 0, 1], pg.port()).into();
    // Returns when the bench stops this process; `pg` is dropped then, and the server with it.
    announce_and_wait(api, None, out).await
}

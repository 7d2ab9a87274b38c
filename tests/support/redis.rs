//! A real Redis for tests: `redis-server` on a free loopback port in a temp dir, without
//! persistence, killed on drop. It can be stopped and started again on the same port, and
//! paused (SIGSTOP) to make it hang. Include it with
//! `#[path = "../support/redis.rs"] mod redis;`.
//!
//! [`redis()`] gives `None` (and says why) when `redis-server` is not installed, so the suite
//! runs on a machine without it; with `KETENPORTAAL_SERVICE_TESTS=required` it panics instead,
//! so CI cannot skip these tests unnoticed.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "redis-server";

pub struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A started Redis, or `None` when `redis-server` is not on PATH (unless
/// `KETENPORTAAL_SERVICE_TESTS=required`: then this panics).
pub fn redis() -> Option<Redis> {
    if find_binary().is_none() {
        let why = format!("`{BINARY}` is not on PATH");
        if std::env::var("KETENPORTAAL_SERVICE_TESTS").as_deref() == Ok("required") {
            panic!("{why}, and KETENPORTAAL_SERVICE_TESTS=required: install redis-server");
        }
        eprintln!(
            "skipped: {why} (install redis-server to run this test; KETENPORTAAL_SERVICE_TESTS=required makes this a failure)"
        );
        return None;
    }
    Some(Redis::start_new())
}

fn find_binary() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(BINARY))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    fn start_new() -> Redis {
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..5 {
            let mut r = Redis {
                port: free_port(),
                dir: tempfile::tempdir().unwrap(),
                child: None,
            };
            if r.try_start() {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A client for reading what the gateway stored.
    pub fn client(&self) -> ::redis::Client {
        ::redis::Client::open(self.url()).unwrap()
    }

    /// Starts the server again on the same port (after [`Redis::stop`]).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The port may still be held for a moment by the stopped server.
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start again on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_start(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let mut child = Command::new(BINARY)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.pings() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Whether the server answers PING now.
    pub fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (paused) process too.
        self.stop();
    }
}

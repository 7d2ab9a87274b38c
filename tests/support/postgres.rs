//! A real PostgreSQL for tests, no mocks: `initdb` in a temporary folder, the server started
//! with `pg_ctl` on 127.0.0.1 and a free port (its socket in that folder, `fsync` on: durability
//! is what the store tests are about), stopped and removed on drop, and by a watchdog when the
//! test process dies without dropping it (a `static` is never dropped).
//!
//! Include it from a test binary with `#[path = "support/postgres.rs"] mod postgres;` (or
//! `"../support/postgres.rs"` from a folder). [`postgres`] gives a server of the test's own
//! (to stop and start again); [`shared`] the binary's one server, with a
//! [`Postgres::fresh_database`] per test. Both return `None`, saying why, when PostgreSQL is not
//! installed, unless `KETENPORTAAL_SERVICE_TESTS=required`, when they panic instead.
//!
//! PostgreSQL refuses to run as root: as root, `initdb` and the server run as the `postgres`
//! user (`runuser`), in a folder it owns.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A PostgreSQL server of the tests' own.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run as the `postgres` user (the tests run as root).
    runuser: bool,
}

/// A server of the test's own, or `None` (said why) when PostgreSQL is not installed.
pub fn postgres() -> Option<Postgres> {
    match Postgres::init() {
        Ok(pg) => Some(pg),
        Err(why) => skip(&why),
    }
}

/// The test binary's one server (fresh databases per test keep the tests apart).
pub fn shared() -> Option<&'static Postgres> {
    static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
    match SHARED.get_or_init(Postgres::init) {
        Ok(pg) => Some(pg),
        Err(why) => skip(why),
    }
}

fn skip<T>(why: &str) -> Option<T> {
    if std::env::var("KETENPORTAAL_SERVICE_TESTS").as_deref() == Ok("required") {
        panic!("PostgreSQL is required (KETENPORTAAL_SERVICE_TESTS=required): {why}");
    }
    eprintln!("skipped: no PostgreSQL for this test: {why}");
    None
}

/// The folder holding `initdb`, `pg_ctl` and `postgres`.
fn binaries() -> Result<PathBuf, String> {
    let mut candidates = vec![PathBuf::from("/usr/local/bin")];
    if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = dirs.flatten().map(|d| d.path().join("bin")).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|d| ["initdb", "pg_ctl", "postgres"].iter().all(|b| d.join(b).exists()))
        .ok_or_else(|| "initdb, pg_ctl and postgres not found (/usr/local/bin, /usr/lib/postgresql/*/bin, PATH)".into())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl Postgres {
    fn init() -> Result<Postgres, String> {
        let bin = binaries()?;
        let runuser = is_root();
        let dir = tempfile::Builder::new()
            .prefix("kp-postgres-")
            .tempdir()
            .map_err(|e| format!("no temporary folder: {e}"))?;
        if runuser {
            let owned = Command::new("chown")
                .args(["postgres:", &dir.path().display().to_string()])
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !owned.success() {
                return Err("cannot give the folder to the `postgres` user".into());
            }
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            runuser,
        };
        let data = pg.data().display().to_string();
        // `--no-sync`: initdb's own final sync only; the server runs with fsync on.
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        pg.watchdog();
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = free_port()?;
            match pg.try_start() {
                Ok(()) => return Ok(pg),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// Runs one of the binaries (as `postgres` when the tests run as root).
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(program);
        let mut cmd = if self.runuser {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                tail(&self.log())
            ))
        }
    }

    /// Stops the server (immediately, as a crash would) and removes its folder once this test
    /// process has gone, however it went.
    fn watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let stop = if self.runuser {
            format!("runuser -u postgres -- {pg_ctl}")
        } else {
            pg_ctl
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            data = self.data().display(),
            dir = self.dir.path().display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=on -c synchronous_commit=on -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.log().display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        )
    }

    /// Starts the server again (after [`Postgres::stop`] or [`Postgres::kill`]): same data,
    /// same port.
    pub fn start(&self) {
        if let Err(e) = self.try_start() {
            panic!("PostgreSQL did not start again: {e}");
        }
    }

    /// Stops the server the polite way (`pg_ctl stop -m fast`: sessions are ended, a
    /// checkpoint written).
    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
    }

    /// Stops the server as a crash would (`-m immediate`: no checkpoint; it recovers from its
    /// log when started again).
    pub fn kill(&self) {
        self.pg_ctl_stop("immediate");
    }

    fn pg_ctl_stop(&self, mode: &str) {
        let data = self.data().display().to_string();
        if let Err(e) = self.run("pg_ctl", &["-D", &data, "-m", mode, "-w", "stop"]) {
            panic!("PostgreSQL did not stop: {e}");
        }
    }

    /// Freezes the server and its sessions (SIGSTOP): connections stay open and nothing
    /// answers, as with a server that hangs or a network that drops everything.
    pub fn pause(&self) {
        let pids = self.pids();
        signal("STOP", &pids);
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        let pids = self.pids();
        signal("CONT", &pids);
    }

    /// The postmaster first (so that it starts no session meanwhile), then its children.
    fn pids(&self) -> Vec<String> {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let postmaster = pid_file.lines().next().unwrap().trim().to_string();
        let children = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        std::iter::once(postmaster)
            .chain(children.split_whitespace().map(str::to_string))
            .collect()
    }

    /// The postmaster's pid (the first line of `postmaster.pid`), while the server runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// A new, empty database (its name made unique from `name`); its URL.
    pub async fn fresh_database(&self, name: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let db = format!(
            "{clean}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let c = client(&self.url()).await;
        c.batch_execute(&format!("CREATE DATABASE \"{db}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {db}: {e:?}"));
        self.url_of(&db)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

/// A plain connection to `url`, for a test's own SQL (its connection driven in a task).
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e:?}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn signal(name: &str, pids: &[String]) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{name} {pids:?}");
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(10);
    if lines.is_empty() {
        String::new()
    } else {
        format!("\nserver log:\n{}", lines[from..].join("\n"))
    }
}

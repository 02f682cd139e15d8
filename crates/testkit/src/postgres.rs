//! A throw-away PostgreSQL server for the PostgreSQL store's tests.
//!
//! [`TempPostgres`] runs Debian's `initdb` and `postgres` (as the
//! `postgres` user when the tests run as root: both refuse root) in a
//! temporary directory, on a free loopback port, without fsync, and stops
//! it (fast shutdown) and deletes the directory when dropped. It can be
//! stopped and started again on the same port and data, which is how the
//! outage tests take the database away.
//!
//! Tests SKIP, saying why, when the PostgreSQL binaries are absent, unless
//! [`REQUIRE_ENV`] is set (as `cargo xtask test` does), where absence is a
//! failure: CI never passes by skipping.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Set (non-empty, not `0`) to make a missing PostgreSQL a failure.
pub const REQUIRE_ENV: &str = "AUDIN_REQUIRE_POSTGRES";

/// Set to a directory holding `initdb`, `postgres`, `pg_isready` and
/// `psql` to use those instead of Debian's.
pub const BIN_ENV: &str = "AUDIN_POSTGRES_BIN";

/// How long a start may take (initdb + start + ready) before it fails.
const START_WAIT: Duration = Duration::from_secs(60);

/// Where PostgreSQL's server binaries are: [`BIN_ENV`], else the newest
/// `/usr/lib/postgresql/N/bin` (Debian keeps them off PATH), else the
/// directory of an `initdb` on PATH.
pub fn bin_dir() -> Option<PathBuf> {
    let usable = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(d) = std::env::var_os(BIN_ENV).map(PathBuf::from) {
        return usable(&d).then_some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            usable(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).find(|d| usable(d)))
}

/// Whether a test needing PostgreSQL should run: `false` (after printing
/// why) when its binaries are absent — unless [`REQUIRE_ENV`] is set,
/// where it panics.
pub fn available_or_skip(test: &str) -> bool {
    bin_dir().is_some()
        || crate::skip::missing(
            test,
            "PostgreSQL (initdb, postgres)",
            REQUIRE_ENV,
            &format!("run `cargo xtask setup` (Debian package postgresql) or set {BIN_ENV}"),
        )
}

/// The uid and gid to run the server as: `postgres`'s when we are root
/// (initdb and postgres refuse root), else our own (`None`).
fn run_as() -> Result<Option<(u32, u32)>> {
    // Our real uid, from /proc (no libc dependency for one number).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u32>().ok());
    if uid != Some(0) {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .context("running as root and there is no `postgres` user to run PostgreSQL as")?;
    let fields: Vec<&str> = entry.split(':').collect();
    let uid = fields.get(2).and_then(|v| v.parse().ok());
    let gid = fields.get(3).and_then(|v| v.parse().ok());
    match (uid, gid) {
        (Some(u), Some(g)) => Ok(Some((u, g))),
        _ => bail!("unreadable /etc/passwd entry for postgres"),
    }
}

/// A PostgreSQL server of its own, on `127.0.0.1:port`, superuser
/// `postgres` without a password (trust).
#[derive(Debug)]
pub struct TempPostgres {
    dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    /// The loopback port (the same across [`Self::start`]s).
    pub port: u16,
    child: Option<Child>,
    databases: AtomicU32,
}

impl TempPostgres {
    /// `initdb` and start; ready when this returns.
    pub fn start_new() -> Result<Self> {
        let bin = bin_dir().context("PostgreSQL binaries not found")?;
        let user = run_as()?;
        let dir = crate::temp_dir("postgres")?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", dir.display()))?;
        }
        let mut me = Self {
            dir,
            bin,
            user,
            port: free_port()?,
            child: None,
            databases: AtomicU32::new(0),
        };
        let out = me
            .command("initdb")
            .arg("-D")
            .arg(me.dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            // Byte order, as SQLite compares text: both stores list alike.
            .arg("--locale=C")
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        me.start()?;
        Ok(me)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.stdin(Stdio::null()).env_remove("PGPASSWORD");
        cmd
    }

    /// Starts the server (again) on the same port and data; waits until it
    /// takes connections.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .context("opening the PostgreSQL log")?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let ready = self
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!("postgres exited ({status}): {}", self.log());
            }
            if started.elapsed() > START_WAIT {
                bail!("postgres not ready after {START_WAIT:?}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT: sessions are cut, nothing waits for
    /// clients) and wait for the process to exit.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::process::stop_child(child, "INT", Duration::from_secs(15));
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh database (`audin_test_N`) and returns its URL.
    pub fn create_database(&self) -> Result<String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("audin_test_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs `sql` with `psql` on `database` and returns its unaligned
    /// output, one row a line, columns split by `|`.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let out = self
            .command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database, "-c", sql])
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

//! The real `audin-server` binary as a child process: spawn, wait for the
//! ready line, capture stdout and stderr, SIGKILL, restart on the same port
//! and database file, read its RSS.
//!
//! The binary is `AUDIN_SERVER_BIN` when set; otherwise
//! [`server_binary`] asks cargo to build it (`cargo build -p audin-server
//! --bin audin-server`, a no-op when it is fresh) and takes the path cargo
//! reports, so `CARGO_TARGET_DIR` and profiles are honoured.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels deep")
        .to_path_buf()
}

static BINARIES: OnceLock<Mutex<Vec<(bool, PathBuf)>>> = OnceLock::new();

/// The `audin-server` executable: `AUDIN_SERVER_BIN`, or built by cargo
/// (debug, or `--release` when `release`). Built at most once per process.
pub fn server_binary(release: bool) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AUDIN_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let cache = BINARIES.get_or_init(|| Mutex::new(Vec::new()));
    let mut cache = cache.lock().expect("binary cache lock");
    if let Some((_, p)) = cache.iter().find(|(r, _)| *r == release) {
        return Ok(p.clone());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "-p",
        "audin-server",
        "--bin",
        "audin-server",
        "--message-format",
        "json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build for audin-server")?;
    if !out.status.success() {
        bail!("cargo build -p audin-server failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exe = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "audin-server")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo reported no audin-server executable")?;
    cache.push((release, exe.clone()));
    Ok(exe)
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("audin-testkit-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--dev` (dev account, dev endpoints, localhost origins).
    pub dev: bool,
    /// Database file; a fresh temp file when `None`.
    pub database: Option<PathBuf>,
    /// Extra flags, e.g. `--silence-timeout-ms 750`.
    pub args: Vec<String>,
    /// Extra environment, e.g. `RUST_LOG=trace`.
    pub env: Vec<(String, String)>,
    /// Build and run the release binary (default: the profile this code
    /// was built with, so a `--release` test run needs no debug build).
    pub release: bool,
    /// The address to listen on (default: a free loopback port).
    pub listen: Option<SocketAddr>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            dev: true,
            database: None,
            args: Vec::new(),
            env: Vec::new(),
            release: !cfg!(debug_assertions),
            listen: None,
        }
    }
}

impl ServerOptions {
    /// Adds `--flag value`.
    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(flag.to_owned());
        self.args.push(value.to_string());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A running `audin-server` process. Killed when dropped (and the temp
/// directory it was given, if any, removed).
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    bin: PathBuf,
    opts: ServerOptions,
    /// The bound address (the same across restarts).
    pub addr: SocketAddr,
    /// The `--database` value: a SQLite file, or a `postgres://` URL (the
    /// same across restarts).
    pub database: PathBuf,
    /// The dev API key of the current run (kept in the database: the same
    /// across restarts on one database).
    pub dev_api_key: Option<String>,
    /// Its pid.
    pub pid: u32,
    /// `http`, or `https` when started with `--tls-cert` (from the ready
    /// line).
    pub scheme: String,
    log: Arc<Mutex<String>>,
    /// How many times it was started.
    pub starts: u32,
    /// The temp directory made for the database (removed on drop).
    own_dir: Option<PathBuf>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if let Some(dir) = self.own_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// How long a start may take before it counts as failed.
const READY_WAIT: Duration = Duration::from_secs(30);

impl ServerProcess {
    /// Starts the server on `127.0.0.1:0` and waits for its ready line.
    pub async fn spawn(opts: ServerOptions) -> Result<ServerProcess> {
        let release = opts.release;
        let bin = tokio::task::spawn_blocking(move || server_binary(release)).await??;
        let (database, own_dir) = match &opts.database {
            Some(p) => (p.clone(), None),
            None => {
                let dir = temp_dir("server")?;
                (dir.join("audin.sqlite3"), Some(dir))
            }
        };
        let addr = opts
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut me = ServerProcess {
            child: None,
            bin,
            opts,
            addr,
            database,
            dev_api_key: None,
            pid: 0,
            scheme: "http".to_owned(),
            log: Arc::new(Mutex::new(String::new())),
            starts: 0,
            own_dir,
        };
        me.start().await?;
        Ok(me)
    }

    async fn start(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        if self.opts.dev {
            cmd.arg("--dev");
        }
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--database")
            .arg(&self.database)
            .args(&self.opts.args)
            .env_remove("RUST_LOG")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .env_remove("AUDIN_DEV")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.pid = child.id().unwrap_or(0);
        self.starts += 1;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        for (stream, name) in [
            (
                Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                "out",
            ),
            (Box::new(stderr), "err"),
        ] {
            let log = self.log.clone();
            let tx = tx.clone();
            let run = self.starts;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    {
                        let mut log = log.lock().expect("log lock");
                        log.push_str(&format!("[run {run} {name}] {line}\n"));
                    }
                    if name == "out" {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        drop(tx);
        self.child = Some(child);
        let ready = tokio::time::timeout(READY_WAIT, async {
            let mut key = None;
            while let Some(line) = rx.recv().await {
                if let Some(k) = line.strip_prefix("AUDIN_DEV_API_KEY=") {
                    key = Some(k.trim().to_owned());
                }
                if let Some(url) = line.strip_prefix("audin-server listening on ") {
                    if let Some((scheme, addr)) = url.trim().split_once("://") {
                        return Some((scheme.to_owned(), addr.to_owned(), key));
                    }
                }
            }
            None
        })
        .await;
        match ready {
            Ok(Some((scheme, addr, key))) => {
                self.scheme = scheme;
                self.addr = addr.parse().context("ready line address")?;
                self.dev_api_key = key;
                Ok(())
            }
            _ => bail!(
                "audin-server printed no ready line; its output:\n{}",
                self.logs()
            ),
        }
    }

    /// `http://ADDR` (`https://` with TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The dev API key (panics without `--dev`).
    pub fn key(&self) -> String {
        self.dev_api_key.clone().expect("started with --dev")
    }

    /// Everything the process printed so far (stdout and stderr, all runs).
    pub fn logs(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// SIGKILL: no shutdown path runs (records stay as they were).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    /// SIGTERM and wait (graceful shutdown).
    pub async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
    }

    /// Starts it again on the same address and database (kills it first if
    /// it is running).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await;
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        loop {
            match self.start().await {
                Ok(()) => return Ok(()),
                // The port may take a moment to be free again.
                Err(_) if tokio::time::Instant::now() < deadline => {
                    self.kill().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Resident set size in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_field(self.pid, "VmRSS:")
    }

    /// OS threads of the process (Linux `/proc`).
    pub fn threads(&self) -> Option<u64> {
        proc_status_field(self.pid, "Threads:")
    }

    /// Open file descriptors of the process (Linux `/proc`).
    pub fn open_fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .ok()
            .map(|d| d.count())
    }

    /// Runs `audin-server admin …` against this server's database and
    /// returns its stdout.
    pub async fn admin(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--database")
            .arg(&self.database)
            .arg("admin")
            .args(args)
            .env_remove("AUDIN_DEV")
            .output()
            .await
            .context("running audin-server admin")?;
        if !out.status.success() {
            bail!(
                "admin {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates an account with one number via the admin CLI; returns
    /// `(account id, api key, number id)`.
    pub async fn create_account(
        &self,
        name: &str,
        number: &str,
    ) -> Result<(String, String, String)> {
        let out = self.admin(&["create-account", "--name", name]).await?;
        let account = field(&out, "account ").context("account id")?;
        let key = field(&out, "api key ").context("api key")?;
        let out = self
            .admin(&[
                "add-number",
                "--account",
                &account,
                "--number",
                number,
                "--name",
                name,
            ])
            .await?;
        let number_id = field(&out, "number ").context("number id")?;
        Ok((account, key, number_id))
    }
}

fn field(out: &str, prefix: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

fn proc_status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

//! A throw-away NATS server (with JetStream) for the cluster seam's tests.
//!
//! [`TempNats`] runs Debian's `nats-server` in a temporary directory on
//! loopback, on ports it picks itself (`-p -1 -m -1`, read back from the
//! ports file), with JetStream on file storage in the same directory. It is
//! ready when the monitoring port's `/healthz` says ok. It can be stopped
//! (gracefully or with SIGKILL) and started again on the same client port
//! and storage, which is how the failure tests take NATS away; it is killed
//! and its directory deleted when dropped.
//!
//! Tests SKIP, saying why, when `nats-server` is absent, unless
//! [`REQUIRE_ENV`] is set (as `cargo xtask test` does), where absence is a
//! failure: CI never passes by skipping.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Set (non-empty, not `0`) to make a missing `nats-server` a failure.
pub const REQUIRE_ENV: &str = "AUDIN_REQUIRE_NATS";

/// Set to a `nats-server` binary to use instead of the one on PATH.
pub const BIN_ENV: &str = "AUDIN_NATS_SERVER";

/// How long a start may take before it fails.
const START_WAIT: Duration = Duration::from_secs(30);

/// The `nats-server` binary: [`BIN_ENV`], else the one on PATH, else
/// Debian's `/usr/sbin/nats-server` (not on a non-root PATH).
pub fn binary() -> Option<PathBuf> {
    crate::skip::find_program("nats-server", BIN_ENV)
}

/// Whether a test needing NATS should run: `false` (after printing why)
/// when `nats-server` is absent — unless [`REQUIRE_ENV`] is set, where it
/// panics.
pub fn available_or_skip(test: &str) -> bool {
    binary().is_some()
        || crate::skip::missing(
            test,
            "nats-server",
            REQUIRE_ENV,
            &format!("run `cargo xtask setup` (Debian package nats-server) or set {BIN_ENV}"),
        )
}

/// A NATS server of its own on `127.0.0.1`, JetStream enabled.
#[derive(Debug)]
pub struct TempNats {
    dir: PathBuf,
    bin: PathBuf,
    /// The client port (the same across [`Self::start`]s).
    pub port: u16,
    /// The monitoring port of the current run.
    pub monitor_port: u16,
    child: Option<Child>,
}

impl TempNats {
    /// Starts a server on ports it picks; ready when this returns.
    pub fn start_new() -> Result<Self> {
        let bin = binary().context("nats-server not found")?;
        let dir = crate::temp_dir("nats")?;
        let mut me = Self {
            dir,
            bin,
            port: 0,
            monitor_port: 0,
            child: None,
        };
        me.start()?;
        Ok(me)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again): a first start picks the client port, a
    /// restart reuses it and the JetStream storage. Waits for `/healthz`.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let ports_dir = self.dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).context("creating the ports directory")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))
            .context("opening the NATS log")?;
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &port, "-m", "-1", "-js", "-sd"])
            .arg(self.dir.join("js"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nats-server")?;
        let pid = child.id();
        self.child = Some(child);
        let started = Instant::now();
        let ports_file = ports_dir.join(format!("nats-server_{pid}.ports"));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!("nats-server exited ({status}): {}", self.log());
            }
            if let Some((client, monitor)) = read_ports(&ports_file)
                && healthz(monitor)
            {
                self.port = client;
                self.monitor_port = monitor;
                return Ok(());
            }
            if started.elapsed() > START_WAIT {
                self.kill();
                bail!("nats-server not ready after {START_WAIT:?}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful stop (SIGTERM) and wait for the process to exit (SIGKILL
    /// after 10 s).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::process::stop_child(child, "TERM", Duration::from_secs(10));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's pid while it runs (for `/proc` readings).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server runs (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }
}

impl Drop for TempNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The client and monitoring ports from nats-server's ports file
/// (`{"nats":["nats://127.0.0.1:P"],"monitoring":["http://127.0.0.1:M"]}`).
fn read_ports(path: &Path) -> Option<(u16, u16)> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port = |field: &str| -> Option<u16> {
        let url = v.get(field)?.get(0)?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    };
    Some((port("nats")?, port("monitoring")?))
}

/// `GET /healthz` on the monitoring port says ok (plain HTTP/1.0: no client
/// needed for one line).
fn healthz(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.starts_with("HTTP/1.") && body.contains(" 200 ") && body.contains("ok")
}

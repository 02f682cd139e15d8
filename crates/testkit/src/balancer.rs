//! A throw-away HTTP/WebSocket load balancer for the cluster tests.
//!
//! [`TempBalancer`] runs Debian's `haproxy` in the foreground on a loopback
//! port of its own, in front of the given backends: plain round robin, no
//! stickiness (no cookie, no `balance source`), so consecutive requests and
//! WebSocket connections land on different nodes, as behind a real
//! balancer. Each backend is health-checked with `GET /healthz` every
//! 500 ms; two failures (a killed node, or a draining one answering 503)
//! take it out of rotation within about a second, one success brings it
//! back. It is killed and its directory deleted when dropped.
//!
//! Tests SKIP, saying why, when `haproxy` is absent, unless [`REQUIRE_ENV`]
//! is set, where absence is a failure.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Set (non-empty, not `0`) to make a missing `haproxy` a failure.
pub const REQUIRE_ENV: &str = "AUDIN_REQUIRE_HAPROXY";

/// Set to a `haproxy` binary to use instead of the one on PATH.
pub const BIN_ENV: &str = "AUDIN_HAPROXY";

/// How long a start may take before it fails.
const START_WAIT: Duration = Duration::from_secs(10);

/// The `haproxy` binary: [`BIN_ENV`], else the one on PATH, else Debian's
/// `/usr/sbin/haproxy` (not on a non-root PATH).
pub fn binary() -> Option<PathBuf> {
    crate::skip::find_program("haproxy", BIN_ENV)
}

/// Whether a test needing the balancer should run: `false` (after printing
/// why) when `haproxy` is absent — unless [`REQUIRE_ENV`] is set, where it
/// panics.
pub fn available_or_skip(test: &str) -> bool {
    binary().is_some()
        || crate::skip::missing(
            test,
            "haproxy",
            REQUIRE_ENV,
            &format!("run `cargo xtask setup` (Debian package haproxy) or set {BIN_ENV}"),
        )
}

/// An haproxy of its own on `127.0.0.1`, round robin over fixed backends.
#[derive(Debug)]
pub struct TempBalancer {
    dir: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl TempBalancer {
    /// Starts haproxy in front of `backends`; it accepts connections when
    /// this returns (the backends need not be up yet: failing checks just
    /// keep them out of rotation).
    pub fn start(backends: &[SocketAddr]) -> Result<Self> {
        let bin = binary().context("haproxy not found")?;
        let dir = crate::temp_dir("haproxy")?;
        // A port the kernel picked, released for haproxy to bind: racy only
        // against another process grabbing it in between, which then shows
        // as haproxy exiting with "cannot bind".
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("picking a loopback port")?;
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config(addr, backends)).context("writing haproxy.cfg")?;
        let log = std::fs::File::create(dir.join("haproxy.log")).context("creating the log")?;
        // `-db`: foreground, no daemon, so the child is haproxy itself.
        let child = Command::new(&bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting haproxy")?;
        let mut me = Self {
            dir,
            addr,
            child: Some(child),
        };
        let started = Instant::now();
        loop {
            if let Some(child) = me.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                me.child = None;
                bail!("haproxy exited ({status}): {}", me.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(me);
            }
            if started.elapsed() > START_WAIT {
                bail!("haproxy not listening after {START_WAIT:?}: {}", me.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT` (use `ws://` for WebSockets).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// haproxy's output so far: startup warnings, one line per request,
    /// and backends going DOWN/UP.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    /// Stops haproxy (SIGTERM: immediate, open tunnels are cut) and waits.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::process::stop_child(child, "TERM", Duration::from_secs(5));
        }
    }
}

impl Drop for TempBalancer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The haproxy configuration: HTTP mode (WebSocket upgrades are handled
/// natively and become tunnels), round robin, no stickiness.
fn config(bind: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut cfg = format!(
        "\
global
    log stderr format raw local0 info

defaults
    mode http
    log global
    option httplog
    # No log line for connections that send nothing (the readiness probe).
    option dontlognull
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # An upgraded WebSocket is a tunnel: idle for up to this long.
    timeout tunnel 1h

frontend fe
    bind {bind}
    default_backend nodes

backend nodes
    balance roundrobin
    # A connection refused by a node that just died (before its checks
    # fail) is tried again on another: what production setups do.
    retries 3
    option redispatch 1
    option httpchk GET /healthz
    http-check expect status 200
"
    );
    for (i, b) in backends.iter().enumerate() {
        // 500 ms checks, down after 2 failures, up after 1 success.
        cfg.push_str(&format!(
            "    server node{i} {b} check inter 500ms fall 2 rise 1\n"
        ));
    }
    cfg
}

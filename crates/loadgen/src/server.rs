//! A release `audin-server --dev` run as a separate process for the
//! duration of a load step, with its own temp database; and provisioning of
//! one phone number per operator in the dev account (so an inbound call
//! rings exactly one operator instead of every free operator of a shared
//! number).

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A spawned server.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its process id (for `/proc`).
    pub pid: u32,
    /// Its SQLite database.
    pub database: PathBuf,
    /// The dev API key it printed.
    pub dev_api_key: Option<String>,
    /// Its SIP address (UDP and TCP), when started with `--sip-listen`.
    pub sip_addr: Option<std::net::SocketAddr>,
    /// Its stderr (log) file.
    pub log: PathBuf,
    dir: PathBuf,
    keep_dir: bool,
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> Result<PathBuf> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("audin-loadgen-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

impl ServerProcess {
    /// Starts `bin --dev --listen 127.0.0.1:0 --database <tmp>/audin.db
    /// --sim-record-secs 0`
    /// with `RUST_LOG=log_filter` and waits (30 s at most) for its ready line.
    pub fn spawn(bin: &Path, log_filter: &str, extra: &[String]) -> Result<Self> {
        let dir = temp_dir("server")?;
        let database = dir.join("audin.db");
        let log = dir.join("server.log");
        let mut child = Command::new(bin)
            .args(["--dev", "--listen", "127.0.0.1:0", "--database"])
            .arg(&database)
            // The relay is measured, not the dev sim's recorder (8 KB per
            // second of call).
            .args(["--sim-record-secs", "0"])
            .args(extra)
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut me = ServerProcess {
            child: Some(child),
            url: String::new(),
            pid,
            database,
            dev_api_key: None,
            sip_addr: None,
            log,
            dir,
            keep_dir: false,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    me.keep_dir = true;
                    bail!(
                        "audin-server exited before its ready line (log: {})",
                        me.log.display()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    me.keep_dir = true;
                    bail!(
                        "audin-server printed no ready line within 30 s (log: {})",
                        me.log.display()
                    );
                }
            };
            if let Some(key) = line.strip_prefix("AUDIN_DEV_API_KEY=") {
                me.dev_api_key = Some(key.trim().to_owned());
            }
            // "audin-server SIP on udp+tcp 127.0.0.1:PORT", before the ready line.
            if let Some(addr) = line.strip_prefix("audin-server SIP on udp+tcp ") {
                me.sip_addr = addr.trim().parse().ok();
            }
            if let Some(url) = line
                .split_whitespace()
                .find(|w| w.starts_with("http://127.0.0.1:"))
                .filter(|_| line.contains("listening on"))
            {
                me.url = url.trim_end_matches('/').to_owned();
                return Ok(me);
            }
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        Ok(())
    }

    /// Its temp directory (database, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the temp directory (database and log) after the stop.
    pub fn keep_files(&mut self) {
        self.keep_dir = true;
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// One operator's phone number.
#[derive(Debug, Clone)]
pub struct Number {
    /// `pn_…`.
    pub id: String,
    /// E.164.
    pub e164: String,
}

/// The E.164 number of operator `i` (`+1555300xxxx`, clear of the sim's
/// `+155501000xx` behaviour numbers).
pub fn operator_e164(i: usize) -> String {
    format!("+1555{:07}", 3_000_000 + i)
}

/// Adds (or finds) `count` numbers of the dev account in the server's
/// database, in one transaction. The server reads numbers from the
/// database on every token, `goOnline` and inbound call, so this works
/// while it runs.
pub fn provision_numbers(database: &Path, count: usize) -> Result<Vec<Number>> {
    use audin_server::db;
    let mut conn = db::open_sync(database)
        .with_context(|| format!("opening the server database {}", database.display()))?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut out = Vec::with_capacity(count);
    let result = (|| -> Result<()> {
        for i in 0..count {
            let e164 = operator_e164(i);
            let id = match db::number_by_e164(&mut conn, &e164)? {
                Some(row) if row.account_id == db::DEV_ACCOUNT_ID => row.id,
                Some(row) => bail!("{e164} belongs to account {}", row.account_id),
                None => db::add_number(&mut conn, db::DEV_ACCOUNT_ID, &e164, "loadgen")?,
            };
            out.push(Number { id, e164 });
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(out)
}

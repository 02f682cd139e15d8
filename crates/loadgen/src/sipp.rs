//! SIPp (Debian `sip-tester`, 3.6.1) as the far end of SIP load steps.
//!
//! It runs SIPp's own built-in `uas` scenario: 180 Ringing, then 200 OK
//! with a PCMU-only SDP answer, the BYE answered 200. With `-rtp_echo` it
//! returns every datagram reaching its media port to the sender unchanged,
//! RTP header included. Every call's answer names that one port, and each
//! echo goes back to the RTP socket it came from, so every call gets its
//! own frames back. A far end nobody here wrote, doing nothing but answer
//! and echo: what is measured is our server.
//!
//! Spawned with `std::process`, one per load step, on loopback ports picked
//! here. SIPp's control socket (by default `0.0.0.0:8888`, and it obeys
//! commands such as "quit" from anyone) is put on loopback as well.

use anyhow::{Context, Result, anyhow, bail};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`SippUas::stop`] lets SIPp finish on its own: after the last
/// BYE its `uas` scenario keeps each call 4 s (timewait), then it exits
/// because it has taken its `-m` calls.
pub const EXIT_GRACE: Duration = Duration::from_secs(10);
const READY_TIMEOUT: Duration = Duration::from_secs(5);
const START_ATTEMPTS: usize = 3;
/// SIPp's exit code when it cannot bind a socket (-2 as the parent sees it).
const EXIT_BIND_FAILED: i32 = 254;

/// A running SIPp UAS. Killed when dropped.
#[derive(Debug)]
pub struct SippUas {
    child: Option<Child>,
    /// Its process id (for `/proc`).
    pub pid: u32,
    /// Where it takes SIP (UDP).
    pub sip_addr: SocketAddr,
    /// Its RTP echo port (and the port + 2, which it echoes too).
    pub media_port: u16,
    /// Its output (the statistics screen at exit).
    pub log: PathBuf,
    dir: PathBuf,
    keep_dir: bool,
}

/// How a SIPp run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SippOutcome {
    /// Its exit code; `None`: it had to be killed. SIPp exits 0 when no
    /// call failed, even when it got none: count the calls too.
    pub exit_code: Option<i32>,
    /// Calls that went through its scenario (its final statistics).
    pub successful_calls: Option<u64>,
    /// Calls that did not.
    pub failed_calls: Option<u64>,
}

enum StartError {
    /// A port picked here was taken before SIPp bound it: try others.
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl SippUas {
    /// Starts `sipp -sn uas … -rtp_echo -m CALLS` on loopback and waits (5 s
    /// at most) until its SIP and media ports are bound. It exits by itself
    /// once `calls` calls have ended.
    pub fn spawn(calls: usize) -> Result<Self> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_spawn(calls.max(1)) {
                Ok(s) => return Ok(s),
                Err(StartError::PortTaken(e)) => last = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("sipp did not start")))
    }

    fn try_spawn(calls: usize) -> Result<Self, StartError> {
        let other = StartError::Other;
        let dir = crate::server::temp_dir("sipp").map_err(other)?;
        let sip_port = free_udp_port().map_err(other)?;
        let media_port = free_media_port().map_err(other)?;
        let control_port = free_udp_port().map_err(other)?;
        let log = dir.join("sipp.out");
        let out = std::fs::File::create(&log)
            .with_context(|| format!("creating {}", log.display()))
            .map_err(other)?;
        let err = out.try_clone().map_err(|e| other(e.into()))?;
        let loopback = Ipv4Addr::LOCALHOST.to_string();
        let mut child = Command::new("sipp")
            .args([
                "-sn", "uas", "-i", &loopback, "-mi", &loopback, "-ci", &loopback,
            ])
            .args(["-p", &sip_port.to_string(), "-mp", &media_port.to_string()])
            .args(["-cp", &control_port.to_string()])
            .args(["-rtp_echo", "-m", &calls.to_string(), "-nostdin"])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.join("errors.log"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                other(anyhow!(
                    "cannot start `sipp` ({e}): install the Debian package sip-tester \
                     (`cargo xtask setup` does)"
                ))
            })?;
        let pid = child.id();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let e = anyhow!(
                    "sipp exited while starting ({status}); output:\n{}",
                    tail(&log, 20)
                );
                let _ = std::fs::remove_dir_all(&dir);
                return Err(if status.code() == Some(EXIT_BIND_FAILED) {
                    StartError::PortTaken(e)
                } else {
                    StartError::Other(e)
                });
            }
            if udp_bound(sip_port) && udp_bound(media_port) {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(other(anyhow!(
                    "sipp did not bind UDP 127.0.0.1:{sip_port} and :{media_port} within \
                     {READY_TIMEOUT:?}; output in {}",
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(SippUas {
            child: Some(child),
            pid,
            sip_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, sip_port)),
            media_port,
            log,
            dir,
            keep_dir: false,
        })
    }

    /// `sip:127.0.0.1:PORT`: the server's `--dev-trunk`.
    pub fn trunk_uri(&self) -> String {
        format!("sip:{}", self.sip_addr)
    }

    /// Waits up to `grace` for SIPp to exit by itself, then SIGTERM (it
    /// prints its statistics and exits), then SIGKILL; returns its exit
    /// code and call counts.
    pub fn stop(mut self, grace: Duration) -> Result<SippOutcome> {
        self.stop_inner(grace)
    }

    fn stop_inner(&mut self, grace: Duration) -> Result<SippOutcome> {
        let Some(mut child) = self.child.take() else {
            return Ok(SippOutcome::default());
        };
        let wait = |child: &mut Child, d: Duration| -> Result<Option<std::process::ExitStatus>> {
            let deadline = Instant::now() + d;
            loop {
                if let Some(status) = child.try_wait()? {
                    return Ok(Some(status));
                }
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let mut status = wait(&mut child, grace)?;
        if status.is_none() {
            // SAFETY: kill(2) on our own child's pid, which has not been
            // reaped yet (try_wait returned None), so it is still ours.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            status = wait(&mut child, Duration::from_secs(3))?;
        }
        let exit_code = match status {
            Some(s) => s.code(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        };
        let screen = std::fs::read_to_string(&self.log).unwrap_or_default();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        Ok(SippOutcome {
            exit_code,
            successful_calls: cumulative_count(&screen, "Successful call"),
            failed_calls: cumulative_count(&screen, "Failed call"),
        })
    }

    /// Its temp directory (output, error log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps its directory (output, error log) after the stop.
    pub fn keep_files(&mut self) {
        self.keep_dir = true;
    }
}

impl Drop for SippUas {
    fn drop(&mut self) {
        let _ = self.stop_inner(Duration::ZERO);
    }
}

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding a loopback UDP port")?
        .local_addr()?
        .port())
}

/// An even loopback UDP port N with N + 2 free too: `-rtp_echo` binds
/// both (audio and video echo).
fn free_media_port() -> Result<u16> {
    for _ in 0..64 {
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback UDP port")?;
        let port = a.local_addr()?.port();
        if port % 2 != 0 || port > u16::MAX - 2 {
            continue;
        }
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port + 2)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no free loopback UDP ports N and N + 2 for SIPp's RTP echo")
}

/// Whether a UDP socket is bound on 127.0.0.1:`port`, from `/proc/net/udp`
/// (probing by binding it could take the port from SIPp).
fn udp_bound(port: u16) -> bool {
    // /proc/net/udp prints the address as the in-memory u32, in hex.
    let addr = u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets());
    let needle = format!("{addr:08X}:{port:04X}");
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&needle))
    })
}

/// The cumulative column of the last `label` line of SIPp's statistics
/// screen: `  Successful call        |        0                  |        5`.
fn cumulative_count(screen: &str, label: &str) -> Option<u64> {
    screen
        .lines()
        .filter(|l| l.trim_start().starts_with(label))
        .filter_map(|l| l.split('|').nth(2)?.trim().parse().ok())
        .next_back()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::cumulative_count;

    #[test]
    fn call_counts_come_from_the_last_statistics_screen() {
        let screen = "\
  Successful call        |        0                  |        0
  Failed call            |        0                  |        0
------------------------------ Test Terminated --------------------------------
  Successful call        |        2                  |        5
  Failed call            |        0                  |        1
";
        assert_eq!(cumulative_count(screen, "Successful call"), Some(5));
        assert_eq!(cumulative_count(screen, "Failed call"), Some(1));
        assert_eq!(cumulative_count("no screen", "Successful call"), None);
    }
}

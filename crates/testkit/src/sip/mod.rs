//! Real SIP far ends for the SIP trunk tests, on loopback:
//!
//! - [`Baresip`]: a headless baresip 1.0.0 softphone driven over its
//!   `ctrl_tcp` interface (dial, accept, hang up, DTMF, hold) with a WAV,
//!   sine, echo or silent audio source and optional recording;
//! - [`Sipp`]: SIPp 3.6.1 running a scenario ([`Scenario`] builds the UAS
//!   flows the tests need: early media then a final code, a 407 digest
//!   challenge, an echoing answer) and reporting its exit status and logs.
//!
//! Both come from Debian (`baresip-core`, `sip-tester`), installed by
//! `cargo xtask setup`. A test calls [`tools_or_skip`] first: it skips when
//! the binaries are absent, unless `AUDIN_REQUIRE_SIP_TOOLS` is set (as
//! `cargo xtask test` does), where absence is a failure.
//!
//! [`harness`] holds what the SIP test files share (bounds, event waits, a
//! loopback trunk, log capture, SIPp caller pieces).
//!
//! Every instance gets its own directory and ports chosen at run time, so
//! tests run in parallel; processes are killed when their handle drops.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context as _, Result, bail};

mod baresip;
pub mod digest;
pub mod harness;
mod sipp;

pub use baresip::{
    AnswerMode, AudioSource, Baresip, BaresipError, BaresipOptions, BaresipTls, Credentials, Event,
    EventKind, MODULE_DIR, Recording, SILENCE_SECONDS,
};
pub use digest::{DigestAlgorithm, DigestError};
pub use sipp::{
    AfterAnswer, DigestChallenge, KILL_GRACE, Scenario, Sipp, SippError, SippOptions, SippOutcome,
    SippScenario,
};

/// Set (to anything but `0` or empty) to make absent SIP tools a test
/// failure instead of a skip.
pub const REQUIRE_ENV: &str = "AUDIN_REQUIRE_SIP_TOOLS";

/// The loopback address every far end binds to.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A far-end program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Baresip,
    Sipp,
}

impl Tool {
    pub fn binary(self) -> &'static str {
        match self {
            Self::Baresip => "baresip",
            Self::Sipp => "sipp",
        }
    }

    pub fn debian_package(self) -> &'static str {
        match self {
            Self::Baresip => "baresip-core",
            Self::Sipp => "sip-tester",
        }
    }
}

/// A G.711 codec, as offered in SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    /// The static RTP payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
        }
    }

    /// The SDP encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }

    /// baresip's name in `audio_codecs=`.
    fn baresip_name(self) -> &'static str {
        match self {
            Self::Pcmu => "pcmu",
            Self::Pcma => "pcma",
        }
    }
}

/// The executable named `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether a test needing `tools` should run. When one is missing it prints
/// why and returns `false` (the test then returns early) — unless
/// [`REQUIRE_ENV`] is set, where it panics, so CI never passes by skipping.
pub fn tools_or_skip(test: &str, tools: &[Tool]) -> bool {
    let missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| find_on_path(t.binary()).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let what = missing
        .iter()
        .map(|t| format!("`{}` (Debian package {})", t.binary(), t.debian_package()))
        .collect::<Vec<_>>()
        .join(" and ");
    crate::skip::missing(
        test,
        &format!("{what} on PATH"),
        REQUIRE_ENV,
        "run `cargo xtask setup` to install the SIP far ends",
    )
}

/// Ports handed out by this process: two far ends started at the same
/// moment must not both probe the same free port.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// What a reserved port range must be free for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortNeeds {
    /// Consecutive ports.
    pub count: u16,
    pub tcp: bool,
    pub udp: bool,
}

/// A base port `P` such that `P..P+count` are free on loopback right now
/// (bind-probed for the protocols in `needs`) and not handed out before in
/// this process. Another process can still take them before the far end
/// binds: callers retry start-up on a bind failure.
pub(crate) fn reserve_ports(needs: PortNeeds) -> Result<u16> {
    let mut taken = handed_out().lock().expect("port set lock");
    for _ in 0..200 {
        // The kernel picks a free port; the rest of the range is probed.
        let base = TcpListener::bind((LOOPBACK, 0))
            .context("binding a probe socket on 127.0.0.1")?
            .local_addr()?
            .port();
        let Some(last) = base.checked_add(needs.count - 1) else {
            continue;
        };
        let range = base..=last;
        if range.clone().any(|p| taken.contains(&p)) {
            continue;
        }
        // Keep every probe socket open until all are bound, so the range is
        // checked as a whole.
        let mut held_tcp = Vec::new();
        let mut held_udp = Vec::new();
        let free = range.clone().all(|p| {
            let tcp_ok = !needs.tcp
                || TcpListener::bind((LOOPBACK, p))
                    .map(|l| held_tcp.push(l))
                    .is_ok();
            let udp_ok = !needs.udp
                || UdpSocket::bind((LOOPBACK, p))
                    .map(|s| held_udp.push(s))
                    .is_ok();
            tcp_ok && udp_ok
        });
        if free {
            taken.extend(range);
            return Ok(base);
        }
    }
    bail!(
        "found no {} free consecutive loopback ports in 200 tries",
        needs.count
    )
}

/// `true` when something is bound to UDP `port` on loopback (a far end
/// has opened its socket).
pub(crate) fn udp_port_in_use(port: u16) -> bool {
    UdpSocket::bind(SocketAddr::from((LOOPBACK, port))).is_err()
}

/// A fresh directory for one far-end instance.
pub(crate) fn instance_dir(tag: &str) -> Result<PathBuf> {
    crate::server::temp_dir(tag)
}

/// Removes an instance directory unless the test is failing (then it is
/// kept for inspection and its path is in the panic output).
pub(crate) fn cleanup_dir(dir: &Path) {
    if std::thread::panicking() || std::env::var_os("AUDIN_KEEP_SIP_DIRS").is_some() {
        eprintln!("far-end files kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The last `lines` lines of a log file, for error messages. Status lines
/// rewritten in place with `\r` count as lines, and runs of them are
/// squeezed out.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let kept: Vec<&str> = text
        .split(['\n', '\r'])
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !is_status_line(l))
        .collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// baresip's once-per-100-ms call status (`[0:00:03] audio=64000/64000
/// (bit/s)`), which drowns everything else in its log.
fn is_status_line(line: &str) -> bool {
    line.trim_start().starts_with('[') && line.contains("audio=") && line.contains("(bit/s)")
}

/// Rejects text that would break out of a line of a config or scenario
/// file (`what` names it in the error).
pub(crate) fn check_token(what: &str, value: &str, extra_forbidden: &[char]) -> Result<()> {
    if value.is_empty() {
        bail!("{what} is empty");
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || extra_forbidden.contains(c))
    {
        bail!(
            "{what} {} contains {c:?}, which would break the generated file",
            audin_protocol::Untrusted(value)
        );
    }
    Ok(())
}

//! A headless baresip 1.0.0 far end: generated `config` and `accounts` in
//! its own directory, SIP on a loopback port chosen at run time, driven
//! through `ctrl_tcp` (netstring-framed JSON).
//!
//! baresip 1.0.0's `ctrl_tcp` serves one connection at a time (a second one
//! replaces the first), so each [`Baresip`] keeps exactly one connection
//! for commands and events: a reader task routes responses to the waiting
//! command by token and appends events to a log that [`Baresip::wait_event`]
//! searches.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use super::{
    Codec, LOOPBACK, PortNeeds, check_token, cleanup_dir, instance_dir, log_tail, reserve_ports,
};
use crate::audio::{TELEPHONY_RATE, Wav, WavError, silence, write_tone_wav};

/// Where Debian's baresip-core puts its modules.
pub const MODULE_DIR: &str = "/usr/lib/baresip/modules";

/// How long a generated silent source lasts. baresip 1.0.0's `aufile`
/// hangs the call up at the end of its file (`CALL_CLOSED` "end of file"),
/// so this bounds a call with [`AudioSource::Silence`].
pub const SILENCE_SECONDS: u64 = 120;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const QUIT_GRACE: Duration = Duration::from_secs(3);
/// Largest netstring accepted from ctrl_tcp (its events are < 1 KB).
const MAX_NETSTRING: usize = 1 << 20;
const START_ATTEMPTS: usize = 3;

/// Everything that can go wrong with a baresip far end.
#[derive(Debug, thiserror::Error)]
pub enum BaresipError {
    #[error("invalid baresip option: {0}")]
    InvalidOption(String),
    #[error("baresip source WAV {path}: {source}")]
    SourceWav {
        path: PathBuf,
        #[source]
        source: WavError,
    },
    #[error("preparing baresip files in {dir}: {message}")]
    Setup { dir: PathBuf, message: String },
    #[error("cannot start `baresip` (install baresip-core with `cargo xtask setup`): {0}")]
    Spawn(#[source] std::io::Error),
    #[error(
        "baresip {user}: its ports stayed taken by other processes in {START_ATTEMPTS} attempts; \
         last log tail:\n{log}"
    )]
    PortsBusy { user: String, log: String },
    #[error("baresip {user} exited during start-up ({status}); log tail:\n{log}")]
    ExitedAtStart {
        user: String,
        status: ExitStatus,
        log: String,
    },
    #[error("baresip {user}: ctrl_tcp on {ctrl} not ready within {timeout:?}; log tail:\n{log}")]
    NotReady {
        user: String,
        ctrl: SocketAddr,
        timeout: Duration,
        log: String,
    },
    #[error("baresip {user}: control connection closed ({reason}); log tail:\n{log}")]
    Closed {
        user: String,
        reason: String,
        log: String,
    },
    #[error("baresip {user}: `{command}` failed: {data}")]
    CommandFailed {
        user: String,
        command: String,
        data: String,
    },
    #[error("baresip {user}: no response to `{command}` within {timeout:?}")]
    CommandTimeout {
        user: String,
        command: String,
        timeout: Duration,
    },
    #[error(
        "baresip {user}: no {what} event within {timeout:?}; events so far: [{seen}]; \
         log tail:\n{log}"
    )]
    EventTimeout {
        user: String,
        what: String,
        timeout: Duration,
        seen: String,
        log: String,
    },
    #[error("baresip {user}: {context}: {source}")]
    Io {
        user: String,
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Whether incoming calls are answered at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerMode {
    /// Answered with 200 right after 180 (no `CALL_INCOMING` event in 1.0.0).
    Auto,
    /// Rings (`CALL_INCOMING`) until [`Baresip::accept`] or
    /// [`Baresip::hangup`] (which answers 486).
    #[default]
    Manual,
}

impl AnswerMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Manual => "manual",
        }
    }
}

/// What baresip sends into a call.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AudioSource {
    /// A 16-bit PCM WAV via `aufile`, played once: **the call ends when the
    /// file does** (baresip 1.0.0 hangs up with "end of file"), so make it
    /// longer than the call.
    Wav(PathBuf),
    /// An 8 kHz sine at a set level (a WAV the instance generates for
    /// `aufile`), lasting `seconds`: the call ends after that.
    Tone {
        hz: f64,
        rms_dbfs: f64,
        seconds: u32,
    },
    /// A sine via `ausine` (10..=20000 Hz, 48 kHz stereo resampled by
    /// baresip, level fixed at about -6 dBFS), endless.
    Sine { hz: u32 },
    /// Sends back what it hears (`aubridge` player → source).
    Echo,
    /// Digital silence for [`SILENCE_SECONDS`].
    #[default]
    Silence,
}

/// Digest credentials baresip answers 401/407 challenges with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// SIP over TLS for a [`Baresip`] (1.0.0 always opens a TLS listener on
/// its SIP port + 1; these give it something to present and trust). As a
/// client it does not verify the server's certificate: libre 1.1.0 accepts
/// any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaresipTls {
    /// `sip_certificate`: one PEM file holding the certificate and its
    /// private key, presented by its TLS listener.
    pub certificate: Option<PathBuf>,
    /// `sip_cafile`: CA certificates (PEM) it trusts.
    pub cafile: Option<PathBuf>,
}

/// How to start a [`Baresip`].
#[derive(Debug, Clone)]
pub struct BaresipOptions {
    /// The SIP user part of its address (`sip:USER@127.0.0.1:PORT`).
    pub user: String,
    pub answer_mode: AnswerMode,
    pub source: AudioSource,
    /// Record each call's sent and received audio (8 kHz mono WAVs, see
    /// [`Baresip::recordings`]).
    pub record: bool,
    /// Offered/accepted codecs, in preference order.
    pub codecs: Vec<Codec>,
    pub credentials: Option<Credentials>,
    /// Extra `;key=value` account parameters, e.g. `"ptime=20"`.
    pub account_params: Vec<String>,
    /// Extra config lines `(key, value)`, appended (a later key wins).
    pub config: Vec<(String, String)>,
    /// Start-up bound (spawn to a working control connection).
    pub start_timeout: Duration,
    /// Its TLS certificate and trusted CAs.
    pub tls: BaresipTls,
    /// Log every SIP message it sends and receives (`baresip -s`), with
    /// the transport (`TLS 127.0.0.1:A -> 127.0.0.1:B`), in [`Baresip::log`].
    pub sip_trace: bool,
}

impl Default for BaresipOptions {
    fn default() -> Self {
        Self::new("baresip")
    }
}

impl BaresipOptions {
    /// Manual answer, silent, not recording, PCMU then PCMA.
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            answer_mode: AnswerMode::Manual,
            source: AudioSource::Silence,
            record: false,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            credentials: None,
            account_params: Vec::new(),
            config: Vec::new(),
            start_timeout: Duration::from_secs(10),
            tls: BaresipTls::default(),
            sip_trace: false,
        }
    }

    pub fn tls(mut self, tls: BaresipTls) -> Self {
        self.tls = tls;
        self
    }

    pub fn sip_trace(mut self) -> Self {
        self.sip_trace = true;
        self
    }

    pub fn auto_answer(mut self) -> Self {
        self.answer_mode = AnswerMode::Auto;
        self
    }

    pub fn source(mut self, source: AudioSource) -> Self {
        self.source = source;
        self
    }

    pub fn record(mut self) -> Self {
        self.record = true;
        self
    }

    pub fn codecs(mut self, codecs: impl IntoIterator<Item = Codec>) -> Self {
        self.codecs = codecs.into_iter().collect();
        self
    }

    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    fn validate(&self) -> Result<(), BaresipError> {
        let invalid = |e: anyhow::Error| BaresipError::InvalidOption(format!("{e:#}"));
        // Characters that would end the user part, the account line or a
        // parameter.
        check_token("user", &self.user, &['<', '>', ';', '@', ':', '"']).map_err(invalid)?;
        if self.codecs.is_empty() {
            return Err(BaresipError::InvalidOption(
                "codecs is empty: offer at least one of PCMU, PCMA".into(),
            ));
        }
        if let Some(c) = &self.credentials {
            check_token("username", &c.username, &[';', '>', '"']).map_err(invalid)?;
            // The password is never echoed.
            if c.password.is_empty()
                || c.password
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control() || ";>\"".contains(ch))
            {
                return Err(BaresipError::InvalidOption(
                    "password is empty or has whitespace, control characters, `;`, `>` or `\"`"
                        .into(),
                ));
            }
        }
        for p in &self.account_params {
            check_token("account parameter", p, &[';', '>']).map_err(invalid)?;
        }
        for (what, path) in [
            ("sip_certificate path", &self.tls.certificate),
            ("sip_cafile path", &self.tls.cafile),
        ] {
            if let Some(path) = path {
                check_token(what, &path.to_string_lossy(), &[]).map_err(invalid)?;
            }
        }
        for (k, v) in &self.config {
            check_token("config key", k, &[]).map_err(invalid)?;
            if v.chars().any(|c| c == '\n' || c == '\r') {
                return Err(BaresipError::InvalidOption(format!(
                    "config value for {k} has a line break"
                )));
            }
        }
        match &self.source {
            AudioSource::Wav(path) => {
                let shown = path.to_string_lossy();
                // `audio_source aufile,PATH`: a comma or space would split it.
                check_token("source WAV path", &shown, &[',']).map_err(invalid)?;
            }
            AudioSource::Tone {
                hz,
                rms_dbfs,
                seconds,
            } => {
                if !(*hz > 0.0 && *hz < f64::from(TELEPHONY_RATE) / 2.0) {
                    return Err(BaresipError::InvalidOption(format!(
                        "tone frequency {hz} Hz is not between 0 and 4000 Hz"
                    )));
                }
                if !(rms_dbfs.is_finite() && *rms_dbfs <= -3.0) {
                    return Err(BaresipError::InvalidOption(format!(
                        "tone level {rms_dbfs} dBFS is not a finite level at or below -3 dBFS"
                    )));
                }
                if !(1..=600).contains(seconds) {
                    return Err(BaresipError::InvalidOption(format!(
                        "tone length {seconds} s is not within 1..=600 s"
                    )));
                }
            }
            AudioSource::Sine { hz } if !(10..=20_000).contains(hz) => {
                return Err(BaresipError::InvalidOption(format!(
                    "sine frequency {hz} Hz is outside ausine's 10..=20000 Hz"
                )));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A baresip event type (`"type"` of a ctrl_tcp event).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    CallIncoming,
    CallRinging,
    /// 18x with SDP (early media).
    CallProgress,
    CallEstablished,
    /// `param` is the reason: a SIP status ("486 Busy Here") or a
    /// description ("Connection reset by peer" after a BYE).
    CallClosed,
    /// `param` is the digit.
    CallDtmfStart,
    CallDtmfEnd,
    CallRtpEstab,
    CallRtcp,
    CallLocalSdp,
    CallRemoteSdp,
    RegisterOk,
    RegisterFail,
    Shutdown,
    Exit,
    Other(String),
}

impl EventKind {
    pub fn parse(s: &str) -> Self {
        match s {
            "CALL_INCOMING" => Self::CallIncoming,
            "CALL_RINGING" => Self::CallRinging,
            "CALL_PROGRESS" => Self::CallProgress,
            "CALL_ESTABLISHED" => Self::CallEstablished,
            "CALL_CLOSED" => Self::CallClosed,
            "CALL_DTMF_START" => Self::CallDtmfStart,
            "CALL_DTMF_END" => Self::CallDtmfEnd,
            "CALL_RTPESTAB" => Self::CallRtpEstab,
            "CALL_RTCP" => Self::CallRtcp,
            "CALL_LOCAL_SDP" => Self::CallLocalSdp,
            "CALL_REMOTE_SDP" => Self::CallRemoteSdp,
            "REGISTER_OK" => Self::RegisterOk,
            "REGISTER_FAIL" => Self::RegisterFail,
            "SHUTDOWN" => Self::Shutdown,
            "EXIT" => Self::Exit,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::CallIncoming => "CALL_INCOMING",
            Self::CallRinging => "CALL_RINGING",
            Self::CallProgress => "CALL_PROGRESS",
            Self::CallEstablished => "CALL_ESTABLISHED",
            Self::CallClosed => "CALL_CLOSED",
            Self::CallDtmfStart => "CALL_DTMF_START",
            Self::CallDtmfEnd => "CALL_DTMF_END",
            Self::CallRtpEstab => "CALL_RTPESTAB",
            Self::CallRtcp => "CALL_RTCP",
            Self::CallLocalSdp => "CALL_LOCAL_SDP",
            Self::CallRemoteSdp => "CALL_REMOTE_SDP",
            Self::RegisterOk => "REGISTER_OK",
            Self::RegisterFail => "REGISTER_FAIL",
            Self::Shutdown => "SHUTDOWN",
            Self::Exit => "EXIT",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ctrl_tcp event.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    /// Reason, digit, peer URI… depending on `kind`.
    pub param: Option<String>,
    /// baresip's call id (not the SIP Call-ID).
    pub call_id: Option<String>,
    pub peer_uri: Option<String>,
    /// `"incoming"` or `"outgoing"`.
    pub direction: Option<String>,
    /// When it arrived, from the start of the instance.
    pub at: Duration,
    pub raw: serde_json::Value,
}

impl Event {
    fn from_json(raw: serde_json::Value, at: Duration) -> Self {
        let text = |k: &str| raw.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        Self {
            kind: EventKind::parse(&text("type").unwrap_or_default()),
            param: text("param"),
            call_id: text("id"),
            peer_uri: text("peeruri"),
            direction: text("direction"),
            at,
            raw,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(p) = &self.param {
            write!(f, "({})", audin_protocol::Untrusted(p))?;
        }
        Ok(())
    }
}

/// One call's recording: what baresip sent and what it heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// `…-enc.wav`: the audio source, before encoding.
    pub sent: PathBuf,
    /// `…-dec.wav`: the decoded far-end audio.
    pub received: PathBuf,
}

impl Recording {
    pub fn read_sent(&self) -> Result<Wav, WavError> {
        Wav::read(&self.sent)
    }

    pub fn read_received(&self) -> Result<Wav, WavError> {
        Wav::read(&self.received)
    }
}

struct Response {
    ok: bool,
    data: String,
}

#[derive(Default)]
struct State {
    events: Vec<Event>,
    /// Parallel to `events`: already returned by a wait.
    taken: Vec<bool>,
    pending: HashMap<String, oneshot::Sender<Response>>,
    /// Why the control connection ended, once it has.
    closed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
}

impl Shared {
    fn close(&self, reason: String) {
        let mut st = self.state.lock().expect("baresip state lock");
        st.closed.get_or_insert(reason);
        // Dropping the senders fails every waiting command.
        st.pending.clear();
        drop(st);
        self.changed.notify_waiters();
    }
}

/// A running baresip. Killed when dropped; its directory is removed then
/// unless the test is panicking.
pub struct Baresip {
    user: String,
    dir: PathBuf,
    sip_addr: SocketAddr,
    ctrl_addr: SocketAddr,
    child: Child,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    next_token: AtomicU64,
}

impl fmt::Debug for Baresip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Baresip")
            .field("user", &self.user)
            .field("sip_addr", &self.sip_addr)
            .field("ctrl_addr", &self.ctrl_addr)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The outcome of one start-up attempt.
enum Attempt {
    Started(Box<Baresip>),
    /// A port was taken between the probe and baresip's bind.
    PortsBusy(String),
}

impl Baresip {
    /// Writes the config, starts `baresip -f DIR` and opens the control
    /// connection. Retries with new ports if another process took one.
    pub async fn start(opts: BaresipOptions) -> Result<Self, BaresipError> {
        opts.validate()?;
        if !Path::new(MODULE_DIR).is_dir() {
            return Err(BaresipError::Spawn(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{MODULE_DIR} does not exist"),
            )));
        }
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&opts).await? {
                Attempt::Started(b) => return Ok(*b),
                Attempt::PortsBusy(log) => last_log = log,
            }
        }
        Err(BaresipError::PortsBusy {
            user: opts.user.clone(),
            log: last_log,
        })
    }

    async fn try_start(opts: &BaresipOptions) -> Result<Attempt, BaresipError> {
        let user = opts.user.clone();
        let dir = instance_dir(&format!("baresip-{user}")).map_err(|e| BaresipError::Setup {
            dir: std::env::temp_dir(),
            message: format!("{e:#}"),
        })?;
        let setup_err = |message: String| BaresipError::Setup {
            dir: dir.clone(),
            message,
        };
        // SIP on P (UDP and TCP) and, unasked, TLS on P+1; ctrl_tcp on Q.
        let sip_port = reserve_ports(PortNeeds {
            count: 2,
            tcp: true,
            udp: true,
        })
        .map_err(|e| setup_err(format!("{e:#}")))?;
        let ctrl_port = reserve_ports(PortNeeds {
            count: 1,
            tcp: true,
            udp: false,
        })
        .map_err(|e| setup_err(format!("{e:#}")))?;
        let sip_addr = SocketAddr::from((LOOPBACK, sip_port));
        let ctrl_addr = SocketAddr::from((LOOPBACK, ctrl_port));

        let (config, accounts) = render_files(opts, &dir, sip_addr, ctrl_addr)?;
        for (name, text) in [("config", &config), ("accounts", &accounts)] {
            std::fs::write(dir.join(name), text)
                .map_err(|e| setup_err(format!("writing {name}: {e}")))?;
        }
        let log_path = dir.join("baresip.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| setup_err(format!("creating baresip.log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| setup_err(format!("cloning the log handle: {e}")))?;
        let mut command = Command::new("baresip");
        if opts.sip_trace {
            command.arg("-s");
        }
        let mut child = command
            .arg("-f")
            .arg(&dir)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(BaresipError::Spawn)?;

        let deadline = Instant::now() + opts.start_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = log_tail(&log_path, 30);
                cleanup_dir(&dir);
                if log.contains("Address already in use") {
                    return Ok(Attempt::PortsBusy(log));
                }
                return Err(BaresipError::ExitedAtStart { user, status, log });
            }
            if let Ok(stream) = TcpStream::connect(ctrl_addr).await {
                let b = Self::attach(
                    user.clone(),
                    dir.clone(),
                    sip_addr,
                    ctrl_addr,
                    child,
                    stream,
                );
                // ctrl_tcp 1.0.0 keeps running without its listener when
                // the port is taken: make sure this is our baresip.
                return match b.command("reginfo", None).await {
                    Ok(data) if data.contains(&format!("@{sip_addr}")) => {
                        Ok(Attempt::Started(Box::new(b)))
                    }
                    _ => Ok(Attempt::PortsBusy(b.log_tail(30))),
                };
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                let log = log_tail(&log_path, 30);
                return Err(BaresipError::NotReady {
                    user,
                    ctrl: ctrl_addr,
                    timeout: opts.start_timeout,
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn attach(
        user: String,
        dir: PathBuf,
        sip_addr: SocketAddr,
        ctrl_addr: SocketAddr,
        child: Child,
        stream: TcpStream,
    ) -> Self {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        });
        let reader = tokio::spawn(read_loop(read, Arc::clone(&shared), Instant::now()));
        Self {
            user,
            dir,
            sip_addr,
            ctrl_addr,
            child,
            writer: tokio::sync::Mutex::new(write),
            shared,
            reader,
            next_token: AtomicU64::new(1),
        }
    }

    /// Its SIP address (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// `sip:USER@127.0.0.1:PORT`: where to send it calls.
    pub fn uri(&self) -> String {
        format!("sip:{}@{}", self.user, self.sip_addr)
    }

    /// Its SIP over TLS address: 1.0.0 listens on the SIP port + 1
    /// (presenting [`BaresipTls::certificate`]).
    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::new(self.sip_addr.ip(), self.sip_addr.port() + 1)
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Its directory: `config`, `accounts`, `baresip.log`, `recordings/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(self.dir.join("baresip.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of its log, without the status-line noise.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir.join("baresip.log"), lines)
    }

    /// Sends a ctrl_tcp command and waits for its response; `Ok(data)` when
    /// baresip reports `ok`.
    pub async fn command(
        &self,
        command: &str,
        params: Option<&str>,
    ) -> Result<String, BaresipError> {
        let token = format!("t{}", self.next_token.fetch_add(1, Ordering::Relaxed));
        let mut msg = serde_json::json!({ "command": command, "token": token });
        if let Some(p) = params {
            msg["params"] = p.into();
        }
        let body = msg.to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.state.lock().expect("baresip state lock");
            if let Some(reason) = &st.closed {
                return Err(self.closed_error(reason.clone()));
            }
            st.pending.insert(token.clone(), tx);
        }
        let frame = format!("{}:{body},", body.len());
        let written = self.writer.lock().await.write_all(frame.as_bytes()).await;
        if let Err(source) = written {
            self.shared
                .state
                .lock()
                .expect("lock")
                .pending
                .remove(&token);
            return Err(BaresipError::Io {
                user: self.user.clone(),
                context: format!("sending `{command}`"),
                source,
            });
        }
        let shown = match params {
            Some(p) => format!("{command} {p}"),
            None => command.to_owned(),
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(Response { ok: true, data })) => Ok(data),
            Ok(Ok(Response { ok: false, data })) => Err(BaresipError::CommandFailed {
                user: self.user.clone(),
                command: shown,
                data: data.trim().to_owned(),
            }),
            Ok(Err(_)) => {
                let reason = self.shared.state.lock().expect("lock").closed.clone();
                Err(self.closed_error(reason.unwrap_or_else(|| "no response".into())))
            }
            Err(_) => {
                self.shared
                    .state
                    .lock()
                    .expect("lock")
                    .pending
                    .remove(&token);
                Err(BaresipError::CommandTimeout {
                    user: self.user.clone(),
                    command: shown,
                    timeout: COMMAND_TIMEOUT,
                })
            }
        }
    }

    fn closed_error(&self, reason: String) -> BaresipError {
        BaresipError::Closed {
            user: self.user.clone(),
            reason,
            log: self.log_tail(30),
        }
    }

    /// Calls `uri` (e.g. `sip:+390299999999@127.0.0.1:5060`).
    pub async fn dial(&self, uri: &str) -> Result<(), BaresipError> {
        check_token("dial URI", uri, &[])
            .map_err(|e| BaresipError::InvalidOption(format!("{e:#}")))?;
        if !uri.starts_with("sip:") {
            return Err(BaresipError::InvalidOption(format!(
                "dial URI {} does not start with `sip:`",
                audin_protocol::Untrusted(uri)
            )));
        }
        self.command("dial", Some(uri)).await.map(drop)
    }

    /// Answers the ringing incoming call.
    pub async fn accept(&self) -> Result<(), BaresipError> {
        self.command("accept", None).await.map(drop)
    }

    /// Ends the current call: BYE when established, CANCEL while calling
    /// out, and 486 for a ringing incoming call.
    pub async fn hangup(&self) -> Result<(), BaresipError> {
        self.command("hangup", None).await.map(drop)
    }

    /// Sends DTMF as RFC 4733 events (`sndcode`). Digits: `0-9 * # A-D`.
    pub async fn send_dtmf(&self, digits: &str) -> Result<(), BaresipError> {
        if digits.is_empty()
            || !digits
                .chars()
                .all(|c| c.is_ascii_digit() || "*#ABCD".contains(c))
        {
            return Err(BaresipError::InvalidOption(format!(
                "DTMF digits {} are not all of 0-9 * # A-D",
                audin_protocol::Untrusted(digits)
            )));
        }
        self.command("sndcode", Some(digits)).await.map(drop)
    }

    /// Puts the call on hold (re-INVITE with `a=sendonly`).
    pub async fn hold(&self) -> Result<(), BaresipError> {
        self.command("hold", None).await.map(drop)
    }

    /// Takes the call off hold (re-INVITE with `a=sendrecv`).
    pub async fn resume(&self) -> Result<(), BaresipError> {
        self.command("resume", None).await.map(drop)
    }

    /// Sends a re-INVITE with the current SDP (session refresh).
    pub async fn reinvite(&self) -> Result<(), BaresipError> {
        self.command("reinvite", None).await.map(drop)
    }

    /// Switches between auto and manual answer for later calls.
    pub async fn set_answer_mode(&self, mode: AnswerMode) -> Result<(), BaresipError> {
        self.command("answermode", Some(mode.as_str()))
            .await
            .map(drop)
    }

    /// Every event received so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.shared
            .state
            .lock()
            .expect("baresip state lock")
            .events
            .clone()
    }

    /// The earliest event of `kind` not yet returned by a wait, waiting up
    /// to `timeout` for one. Each event is returned once, so waits for
    /// different kinds may come in any order and two `CALL_CLOSED` waits
    /// see two calls' closes.
    pub async fn wait_event(
        &self,
        kind: EventKind,
        timeout: Duration,
    ) -> Result<Event, BaresipError> {
        let what = kind.to_string();
        self.wait_for(&what, timeout, |e| e.kind == kind).await
    }

    /// Like [`Self::wait_event`] for the first untaken event matching
    /// `pred`; `what` names it in the timeout error.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event, BaresipError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            // Register before looking, so an event arriving in between
            // still wakes us.
            changed.as_mut().enable();
            let closed = {
                let mut st = self.shared.state.lock().expect("baresip state lock");
                let State { events, taken, .. } = &mut *st;
                if let Some(i) = (0..events.len()).find(|&i| !taken[i] && pred(&events[i])) {
                    taken[i] = true;
                    return Ok(events[i].clone());
                }
                st.closed.clone()
            };
            if let Some(reason) = closed {
                return Err(self.closed_error(reason));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let seen = self
                    .events()
                    .iter()
                    .filter(|e| !matches!(e.kind, EventKind::CallRtcp))
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(BaresipError::EventTimeout {
                    user: self.user.clone(),
                    what: what.to_owned(),
                    timeout,
                    seen,
                    log: self.log_tail(20),
                });
            }
        }
    }

    /// The recordings so far (needs [`BaresipOptions::record`]), oldest
    /// first. baresip names them by the second the call's audio started, so
    /// two calls starting in the same second share (overwrite) one pair.
    /// Read them after `CALL_CLOSED` or [`Self::stop`]: the WAV header is
    /// completed when the call's audio closes.
    pub fn recordings(&self) -> Result<Vec<Recording>, BaresipError> {
        let rec_dir = self.dir.join("recordings");
        let entries = std::fs::read_dir(&rec_dir).map_err(|source| BaresipError::Io {
            user: self.user.clone(),
            context: format!(
                "listing {} (was the instance started with record?)",
                rec_dir.display()
            ),
            source,
        })?;
        let mut stems: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix("-enc.wav"))
                    .map(str::to_owned)
            })
            .collect();
        stems.sort();
        Ok(stems
            .into_iter()
            .map(|stem| Recording {
                sent: rec_dir.join(format!("{stem}-enc.wav")),
                received: rec_dir.join(format!("{stem}-dec.wav")),
            })
            .filter(|r| r.received.is_file())
            .collect())
    }

    /// The newest recording.
    pub fn last_recording(&self) -> Result<Recording, BaresipError> {
        self.recordings()?.pop().ok_or_else(|| BaresipError::Io {
            user: self.user.clone(),
            context: "no recording yet".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no *-enc.wav/*-dec.wav"),
        })
    }

    /// `quit`, then SIGKILL if it has not exited after a grace period.
    /// Its directory stays until the handle is dropped.
    pub async fn stop(&mut self) -> Result<ExitStatus, BaresipError> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        // The response may never come: quit closes the connection.
        let _ = tokio::time::timeout(QUIT_GRACE, self.command("quit", None)).await;
        let io_err = |source| BaresipError::Io {
            user: self.user.clone(),
            context: "waiting for exit".into(),
            source,
        };
        match tokio::time::timeout(QUIT_GRACE, self.child.wait()).await {
            Ok(status) => status.map_err(io_err),
            Err(_) => {
                let _ = self.child.start_kill();
                self.child.wait().await.map_err(io_err)
            }
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        self.reader.abort();
        cleanup_dir(&self.dir);
    }
}

/// Reads netstrings (`<len>:<json>,`) until the connection ends: responses
/// complete their command, events are appended.
async fn read_loop(read: OwnedReadHalf, shared: Arc<Shared>, started: Instant) {
    let mut read = BufReader::new(read);
    let reason = loop {
        let body = match read_netstring(&mut read).await {
            Ok(Some(b)) => b,
            Ok(None) => break "baresip closed it".to_owned(),
            Err(e) => break format!("unreadable ctrl_tcp stream: {e}"),
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
            break format!(
                "non-JSON ctrl_tcp message {}",
                audin_protocol::Untrusted(&String::from_utf8_lossy(&body))
            );
        };
        let mut st = shared.state.lock().expect("baresip state lock");
        if value.get("response").and_then(|v| v.as_bool()) == Some(true) {
            let token = value.get("token").and_then(|v| v.as_str()).unwrap_or("");
            if let Some(tx) = st.pending.remove(token) {
                let _ = tx.send(Response {
                    ok: value.get("ok").and_then(|v| v.as_bool()) == Some(true),
                    data: value
                        .get("data")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_owned(),
                });
            }
        } else if value.get("event").and_then(|v| v.as_bool()) == Some(true) {
            st.events.push(Event::from_json(value, started.elapsed()));
            st.taken.push(false);
            drop(st);
            shared.changed.notify_waiters();
        }
    };
    shared.close(reason);
}

/// One netstring body, `None` at a clean end of stream.
async fn read_netstring(read: &mut BufReader<OwnedReadHalf>) -> std::io::Result<Option<Vec<u8>>> {
    let bad = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
    let mut len: usize = 0;
    let mut digits = 0;
    loop {
        let byte = match read.read_u8().await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && digits == 0 => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match byte {
            b'0'..=b'9' if digits < 8 => {
                len = len * 10 + usize::from(byte - b'0');
                digits += 1;
            }
            b':' if digits > 0 => break,
            other => {
                return Err(bad(format!(
                    "netstring length has byte {other:#04x} after {digits} digits"
                )));
            }
        }
    }
    if len > MAX_NETSTRING {
        return Err(bad(format!(
            "netstring of {len} bytes is over {MAX_NETSTRING}"
        )));
    }
    let mut body = vec![0; len];
    read.read_exact(&mut body).await?;
    match read.read_u8().await? {
        b',' => Ok(Some(body)),
        other => Err(bad(format!("netstring ends with {other:#04x}, not `,`"))),
    }
}

/// The `config` and `accounts` texts.
fn render_files(
    opts: &BaresipOptions,
    dir: &Path,
    sip_addr: SocketAddr,
    ctrl_addr: SocketAddr,
) -> Result<(String, String), BaresipError> {
    let setup_err = |message: String| BaresipError::Setup {
        dir: dir.to_path_buf(),
        message,
    };
    // `ausine` only runs at 48 kHz stereo; `aufile` needs the file's own
    // format; the rest is telephony audio.
    let (source, player, srate, channels) = match &opts.source {
        AudioSource::Wav(path) => {
            let wav = Wav::read(path).map_err(|source| BaresipError::SourceWav {
                path: path.clone(),
                source,
            })?;
            (
                format!("aufile,{}", path.display()),
                "alsa,null",
                wav.sample_rate,
                wav.channels,
            )
        }
        AudioSource::Tone {
            hz,
            rms_dbfs,
            seconds,
        } => {
            let path = dir.join("tone.wav");
            write_tone_wav(
                &path,
                *hz,
                *rms_dbfs,
                Duration::from_secs(u64::from(*seconds)),
            )
            .map_err(|e| setup_err(format!("{e}")))?;
            (
                format!("aufile,{}", path.display()),
                "alsa,null",
                TELEPHONY_RATE,
                1,
            )
        }
        AudioSource::Sine { hz } => (format!("ausine,{hz}"), "alsa,null", 48_000, 2),
        AudioSource::Echo => (
            "aubridge,echo0".to_owned(),
            "aubridge,echo0",
            TELEPHONY_RATE,
            1,
        ),
        AudioSource::Silence => {
            let path = dir.join("silence.wav");
            Wav::mono(
                TELEPHONY_RATE,
                silence(Duration::from_secs(SILENCE_SECONDS), TELEPHONY_RATE),
            )
            .write(&path)
            .map_err(|e| setup_err(format!("{e}")))?;
            (
                format!("aufile,{}", path.display()),
                "alsa,null",
                TELEPHONY_RATE,
                1,
            )
        }
    };
    // With no ring/ringback WAVs on `audio_path`, nothing plays on
    // `audio_alert`: `alsa,null` is not paced and would spin a core for as
    // long as a call rings.
    let no_sounds = dir.join("no-sounds");
    std::fs::create_dir_all(&no_sounds).map_err(|e| setup_err(format!("{e}")))?;
    let mut config = vec![
        ("poll_method", "epoll".to_owned()),
        ("sip_listen", sip_addr.to_string()),
        // 1.0.0 takes an address here; `lo` fails ("No such device").
        ("net_interface", LOOPBACK.to_string()),
        ("call_local_timeout", "120".into()),
        ("call_max_calls", "4".into()),
        ("audio_path", no_sounds.display().to_string()),
        // `alsa,null` is fine as a player (decoding is paced by RTP) but not
        // as a source (it never blocks: megabytes of RTP per second).
        ("audio_player", player.into()),
        ("audio_source", source),
        ("audio_alert", "alsa,null".into()),
        ("ausrc_srate", srate.to_string()),
        ("ausrc_channels", channels.to_string()),
        ("audio_level", "no".into()),
        ("module_path", MODULE_DIR.into()),
        ("module", "g711.so".into()),
        ("module", "aufile.so".into()),
        ("module", "ausine.so".into()),
        ("module", "aubridge.so".into()),
        ("module", "alsa.so".into()),
        ("module_tmp", "account.so".into()),
        ("module_app", "menu.so".into()),
        ("module_app", "ctrl_tcp.so".into()),
        ("ctrl_tcp_listen", ctrl_addr.to_string()),
    ];
    if let Some(path) = &opts.tls.certificate {
        config.push(("sip_certificate", path.display().to_string()));
    }
    if let Some(path) = &opts.tls.cafile {
        config.push(("sip_cafile", path.display().to_string()));
    }
    if opts.record {
        let rec = dir.join("recordings");
        std::fs::create_dir_all(&rec).map_err(|e| setup_err(format!("{e}")))?;
        config.push(("module", "sndfile.so".into()));
        config.push(("snd_path", rec.display().to_string()));
    }
    let mut text = String::new();
    for (k, v) in &config {
        text.push_str(&format!("{k}\t{v}\n"));
    }
    for (k, v) in &opts.config {
        text.push_str(&format!("{k}\t{v}\n"));
    }

    let codecs = opts
        .codecs
        .iter()
        .map(|c| c.baresip_name())
        .collect::<Vec<_>>()
        .join(",");
    let mut account = format!(
        "<sip:{}@{sip_addr}>;regint=0;answermode={};audio_codecs={codecs}",
        opts.user,
        opts.answer_mode.as_str()
    );
    if let Some(c) = &opts.credentials {
        account.push_str(&format!(
            ";auth_user={};auth_pass={}",
            c.username, c.password
        ));
    }
    for p in &opts.account_params {
        account.push(';');
        account.push_str(p);
    }
    account.push('\n');
    Ok((text, account))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_would_break_the_files_are_rejected() {
        let bad = [
            BaresipOptions::new("bob\nmodule_app evil.so"),
            BaresipOptions::new("bob>;x"),
            BaresipOptions::new(""),
            BaresipOptions::new("bob").codecs([]),
            BaresipOptions::new("bob").credentials("u", "pa ss"),
            BaresipOptions::new("bob").credentials("u", ""),
            BaresipOptions::new("bob").source(AudioSource::Sine { hz: 5 }),
            BaresipOptions::new("bob").source(AudioSource::Tone {
                hz: 5000.0,
                rms_dbfs: -20.0,
                seconds: 10,
            }),
            BaresipOptions::new("bob").source(AudioSource::Tone {
                hz: 440.0,
                rms_dbfs: f64::NAN,
                seconds: 10,
            }),
            BaresipOptions::new("bob").source(AudioSource::Tone {
                hz: 440.0,
                rms_dbfs: -20.0,
                seconds: 0,
            }),
            BaresipOptions::new("bob").source(AudioSource::Wav("/tmp/a b.wav".into())),
            BaresipOptions::new("bob").source(AudioSource::Wav("/tmp/a,b.wav".into())),
        ];
        for opts in bad {
            let err = opts.validate().unwrap_err();
            assert!(matches!(err, BaresipError::InvalidOption(_)), "{err}");
        }
        assert!(BaresipOptions::new("+390299999999").validate().is_ok());
    }

    #[test]
    fn password_is_neither_in_debug_nor_in_errors() {
        let opts = BaresipOptions::new("bob").credentials("alice", "s3cret;x");
        assert!(!format!("{opts:?}").contains("s3cret"));
        let err = opts.validate().unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn account_line_has_mode_codecs_and_credentials() {
        let dir = crate::server::temp_dir("baresip-render").unwrap();
        let opts = BaresipOptions::new("bob")
            .auto_answer()
            .codecs([Codec::Pcma])
            .credentials("bob", "pw")
            .record();
        let sip: SocketAddr = "127.0.0.1:5080".parse().unwrap();
        let ctrl: SocketAddr = "127.0.0.1:4444".parse().unwrap();
        let (config, account) = render_files(&opts, &dir, sip, ctrl).unwrap();
        assert_eq!(
            account,
            "<sip:bob@127.0.0.1:5080>;regint=0;answermode=auto;audio_codecs=pcma;\
             auth_user=bob;auth_pass=pw\n"
        );
        assert!(config.contains("sip_listen\t127.0.0.1:5080\n"));
        assert!(config.contains("ctrl_tcp_listen\t127.0.0.1:4444\n"));
        assert!(config.contains("module\tsndfile.so\n"));
        assert!(dir.join("silence.wav").is_file());
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! Preflight: a check of the path to the service and of the microphone
//! before taking calls, sans-IO, and its verdict.
//!
//! The driver performs three steps and feeds what it observes, with its
//! monotonic time `now` in milliseconds:
//!
//! 1. **Token**: it calls the application's `getToken` and reports how long
//!    that took ([`Preflight::token_fetched`]) or that it failed
//!    ([`Preflight::fail`] with [`Step::Token`]).
//! 2. **Presence round trip**: it opens the presence socket
//!    ([`Preflight::presence_url`]) and sends [`Preflight::presence_probe`],
//!    a `ping` *before* `hello`, which the service answers at once with
//!    `error` `NOT_AUTHENTICATED` (protocol v1): one round trip through the
//!    presence endpoint that never authenticates, so it can neither replace
//!    a live session of the same operator nor put anyone online. The answer
//!    goes to [`Preflight::presence_text`].
//! 3. **Echo**: it opens an audio socket ([`Preflight::audio_url`]), sends
//!    [`Preflight::preflight_message`] and hands every text to
//!    [`Preflight::audio_text`]. Once the service said `preflightStarted`
//!    it sends the microphone's frames (the call audio graph's), feeds each
//!    echoed frame to [`Preflight::frame_received`], level readings to
//!    [`Preflight::levels`], sends the pings of [`Preflight::poll_ping`],
//!    calls [`Preflight::sample`] about once a second, and stops after
//!    [`Preflight::duration_ms`].
//!
//! Then [`Preflight::report`] gives the figures and the [`Verdict`]. The
//! echo's statistics (loss, jitter, round trip, MOS) are those of the call
//! quality monitor ([`super::quality`]), fed the echoed frames as a call's
//! monitor is fed the far end's: one implementation of the maths.
//!
//! # Verdict
//!
//! Each figure gets a grade; the verdict is the worst grade, or `failed`
//! when a step could not be done (the reasons say which). A figure worse
//! than excellent adds a [`Reason`] naming it, its value and the bound it
//! missed. The `poor` bounds of jitter, round trip and MOS are the raise
//! thresholds of the call quality warnings ([`Warning::rule`]): a path
//! graded poor would raise that warning during a call.
//!
//! | Figure | Excellent | Good | Fair | Poor |
//! |---|---|---|---|---|
//! | MOS (echo) | ≥ 4.2 | ≥ 4.0 | ≥ 3.5 | < 3.5 (`low-mos`) |
//! | packet loss (echo, last 5 s), % | ≤ 0.5 | ≤ 1 | ≤ 3 | > 3 |
//! | jitter (echo), ms | ≤ 10 | ≤ 20 | ≤ 30 | > 30 (`high-jitter`) |
//! | round trip (audio socket), ms | ≤ 150 | ≤ 300 | ≤ 400 | > 400 (`high-rtt`) |
//! | presence round trip, ms | ≤ 150 | ≤ 300 | ≤ 400 | > 400 |
//! | token fetch, ms | ≤ 1000 | ≤ 2000 | ≤ 5000 | > 5000 |
//! | microphone signal | yes | — | — | no |
//!
//! The microphone delivers signal when its level moved during the test by
//! at least the clear threshold of `constant-audio-input-level` (a dead or
//! OS-muted microphone reads a constant level).

use super::config::Urls;
use super::json::{self, Obj, write_str};
use super::quality::{LEVEL_STEPS, QualityMonitor, Sample, Warning, write_decimal};
use super::types::OperatorError;
use super::wire::{decode_audio, encode_audio, encode_presence};
use audin_protocol::{AudioClientMessage, AudioServerMessage, ClientMessage, ErrorCode};

/// Default length of the echo test, ms.
pub const DEFAULT_DURATION_MS: u64 = 10_000;
/// Shortest echo test, ms: the statistics need a few 1 s samples.
pub const MIN_DURATION_MS: u64 = 2_000;
/// Longest echo test, ms (the service bounds a session at 30 s too).
pub const MAX_DURATION_MS: u64 = 30_000;

/// The overall judgement, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Every figure is excellent.
    Excellent,
    /// Calls will sound good.
    Good,
    /// Calls work; some figure is mediocre.
    Fair,
    /// Calls will sound bad, or the microphone delivers no signal.
    Poor,
    /// A step could not be done (no token, service unreachable, no echo
    /// capability, no microphone, no echo received).
    Failed,
}

impl Verdict {
    /// `"excellent"`, `"good"`, `"fair"`, `"poor"` or `"failed"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Excellent => "excellent",
            Self::Good => "good",
            Self::Fair => "fair",
            Self::Poor => "poor",
            Self::Failed => "failed",
        }
    }
}

/// Why the verdict is not `excellent`: a failed step or a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonCode {
    /// `getToken` threw, timed out or returned no token.
    TokenFetchFailed,
    /// The service refused the token (invalid or expired).
    TokenRejected,
    /// The presence socket could not connect or did not answer.
    PresenceUnreachable,
    /// The audio socket could not connect, or closed before the echo
    /// started.
    AudioUnreachable,
    /// The service has no preflight echo (it answered `UNKNOWN_MESSAGE`).
    EchoUnsupported,
    /// The microphone could not be opened, or the audio graph sent nothing.
    MicrophoneUnavailable,
    /// Frames were sent but none came back.
    NoEchoReceived,
    /// `getToken` took long.
    SlowTokenFetch,
    /// The presence round trip is long.
    HighPresenceRtt,
    /// The audio socket's round trip is long.
    HighRtt,
    /// The echo arrived irregularly.
    HighJitter,
    /// Echoed frames went missing.
    HighPacketLoss,
    /// The estimated call quality is low.
    LowMos,
    /// The microphone's level never moved (dead or muted by the OS).
    NoMicrophoneSignal,
}

impl ReasonCode {
    /// The code as the SDK spells it, e.g. `"high-jitter"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TokenFetchFailed => "token-fetch-failed",
            Self::TokenRejected => "token-rejected",
            Self::PresenceUnreachable => "presence-unreachable",
            Self::AudioUnreachable => "audio-unreachable",
            Self::EchoUnsupported => "echo-unsupported",
            Self::MicrophoneUnavailable => "microphone-unavailable",
            Self::NoEchoReceived => "no-echo-received",
            Self::SlowTokenFetch => "slow-token-fetch",
            Self::HighPresenceRtt => "high-presence-rtt",
            Self::HighRtt => "high-rtt",
            Self::HighJitter => "high-jitter",
            Self::HighPacketLoss => "high-packet-loss",
            Self::LowMos => "low-mos",
            Self::NoMicrophoneSignal => "no-microphone-signal",
        }
    }

    /// What a failed step means, for people (graded figures have no
    /// text: their code, value and threshold say it).
    const fn text(self) -> &'static str {
        match self {
            Self::TokenFetchFailed => "getToken failed",
            Self::TokenRejected => "the service refused the session token",
            Self::PresenceUnreachable => "the presence socket could not be reached",
            Self::AudioUnreachable => "the audio socket could not be reached",
            Self::EchoUnsupported => "the service has no preflight echo",
            Self::MicrophoneUnavailable => "the microphone could not be used",
            Self::NoEchoReceived => "no echoed audio came back",
            _ => "",
        }
    }
}

/// One reason of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    /// Which.
    pub code: ReasonCode,
    /// The grade this reason alone gives (`Failed` for a failed step).
    pub verdict: Verdict,
    /// For a failed step, what went wrong (for people); empty for a
    /// graded figure.
    pub message: String,
    /// The figure, for a graded figure (ms, %, or MOS).
    pub value: Option<f64>,
    /// The bound of the next better grade, which the value missed.
    pub threshold: Option<f64>,
}

impl Reason {
    fn failed(code: ReasonCode, detail: &str) -> Reason {
        let mut message = String::from(code.text());
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        Reason {
            code,
            verdict: Verdict::Failed,
            message,
            value: None,
            threshold: None,
        }
    }
}

/// Bounds of the excellent, good and fair grades of one figure.
#[derive(Debug, Clone, Copy)]
struct Grade {
    code: ReasonCode,
    bounds: [f64; 3],
    /// True when a low value is bad (MOS).
    low_is_bad: bool,
}

impl Grade {
    fn high(code: ReasonCode, excellent: f64, good: f64, fair: f64) -> Grade {
        Grade {
            code,
            bounds: [excellent, good, fair],
            low_is_bad: false,
        }
    }

    /// The grade of `value`, and the reason when it is not excellent.
    fn judge(self, value: f64) -> Option<Reason> {
        let grades = [Verdict::Excellent, Verdict::Good, Verdict::Fair];
        let mut missed = None;
        for (grade, bound) in grades.into_iter().zip(self.bounds) {
            let within = if self.low_is_bad {
                value >= bound
            } else {
                value <= bound
            };
            if within {
                if grade == Verdict::Excellent {
                    return None;
                }
                return Some(self.reason(grade, value, missed));
            }
            missed = Some(bound);
        }
        Some(self.reason(Verdict::Poor, value, missed))
    }

    fn reason(self, verdict: Verdict, value: f64, threshold: Option<f64>) -> Reason {
        Reason {
            code: self.code,
            verdict,
            message: String::new(),
            value: Some(value),
            threshold,
        }
    }
}

/// What a preflight measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// `getToken`'s time, ms.
    pub token_fetch_ms: Option<f64>,
    /// The presence round trip, ms.
    pub presence_rtt_ms: Option<f64>,
    /// The audio socket's round trip, ms.
    pub rtt_ms: Option<f64>,
    /// Jitter of the echo, ms.
    pub jitter_ms: Option<f64>,
    /// Echoed frames lost over the last 5 s, percent.
    pub packet_loss_percent: Option<f64>,
    /// E-model MOS of the echo path.
    pub mos: Option<f64>,
    /// Whether the microphone's level moved (`None`: not judged, the echo
    /// test did not run).
    pub microphone_signal: Option<bool>,
}

/// The verdict of `figures` given the failed steps' reasons: `Failed` if
/// there is any, otherwise the worst grade of the figures. Returns every
/// reason, failures first.
///
/// ```
/// use audin_operator::core::preflight::{Figures, Verdict, assess};
/// let clean = Figures {
///     token_fetch_ms: Some(40.0),
///     presence_rtt_ms: Some(20.0),
///     rtt_ms: Some(30.0),
///     jitter_ms: Some(2.0),
///     packet_loss_percent: Some(0.0),
///     mos: Some(4.4),
///     microphone_signal: Some(true),
/// };
/// assert_eq!(assess(&clean, Vec::new()).0, Verdict::Excellent);
/// let lossy = Figures { packet_loss_percent: Some(5.0), mos: Some(3.9), ..clean };
/// let (verdict, reasons) = assess(&lossy, Vec::new());
/// assert_eq!(verdict, Verdict::Poor);
/// assert_eq!(reasons.len(), 2);
/// ```
pub fn assess(figures: &Figures, failures: Vec<Reason>) -> (Verdict, Vec<Reason>) {
    let rtt = Warning::HighRtt.rule().raise;
    let grades = [
        (
            figures.token_fetch_ms,
            Grade::high(ReasonCode::SlowTokenFetch, 1_000.0, 2_000.0, 5_000.0),
        ),
        (
            figures.presence_rtt_ms,
            Grade::high(ReasonCode::HighPresenceRtt, 150.0, 300.0, rtt),
        ),
        (
            figures.rtt_ms,
            Grade::high(ReasonCode::HighRtt, 150.0, 300.0, rtt),
        ),
        (
            figures.jitter_ms,
            Grade::high(
                ReasonCode::HighJitter,
                10.0,
                20.0,
                Warning::HighJitter.rule().raise,
            ),
        ),
        (
            figures.packet_loss_percent,
            Grade::high(
                ReasonCode::HighPacketLoss,
                0.5,
                Warning::HighPacketLoss.rule().raise,
                3.0,
            ),
        ),
        (
            figures.mos,
            Grade {
                code: ReasonCode::LowMos,
                bounds: [4.2, 4.0, Warning::LowMos.rule().raise],
                low_is_bad: true,
            },
        ),
    ];
    let mut reasons = failures;
    for (value, grade) in grades {
        if let Some(reason) = value.and_then(|v| grade.judge(v)) {
            reasons.push(reason);
        }
    }
    if figures.microphone_signal == Some(false) {
        reasons.push(Reason {
            code: ReasonCode::NoMicrophoneSignal,
            verdict: Verdict::Poor,
            message: String::new(),
            value: None,
            threshold: None,
        });
    }
    let verdict = reasons
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Excellent);
    (verdict, reasons)
}

/// A preflight step that can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `getToken`.
    Token,
    /// The presence socket.
    Presence,
    /// The audio socket.
    Audio,
    /// The microphone and the audio graph.
    Microphone,
}

/// What [`Preflight::audio_text`] made of an audio-socket text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioText {
    /// Nothing for the driver to do (a pong, or a message that changes
    /// nothing).
    Nothing,
    /// `preflightStarted`: send frames from now on, for
    /// [`Preflight::duration_ms`].
    Started,
    /// The echo cannot be done (a failure is recorded): close the socket.
    Stop,
}

/// One preflight's state. See the module docs for how to drive it.
#[derive(Debug, Clone)]
pub struct Preflight {
    urls: Urls,
    duration_ms: u64,
    quality: QualityMonitor,
    token_fetch_ms: Option<f64>,
    probe_sent: Option<f64>,
    presence_rtt_ms: Option<f64>,
    started: bool,
    /// The audio step ended with a failure of its own (an `error` reply).
    audio_failed: bool,
    frames_sent: u64,
    input_min: f64,
    input_max: f64,
    failures: Vec<Reason>,
}

impl Preflight {
    /// A preflight of the service at `core_url` (as in the operator's
    /// configuration) with an echo test of `duration_ms` (default
    /// [`DEFAULT_DURATION_MS`]).
    ///
    /// # Errors
    /// `INVALID_CONFIG` for a `core_url` that is not an absolute http(s)
    /// or ws(s) URL, or a `duration_ms` outside
    /// [`MIN_DURATION_MS`]`..=`[`MAX_DURATION_MS`].
    pub fn new(core_url: &str, duration_ms: Option<f64>) -> Result<Preflight, OperatorError> {
        let urls = Urls::from_core_url(core_url)?;
        let duration = duration_ms.unwrap_or(DEFAULT_DURATION_MS as f64);
        // NaN fails both comparisons, so it is refused too.
        if !(duration >= MIN_DURATION_MS as f64 && duration <= MAX_DURATION_MS as f64) {
            return Err(OperatorError::new(
                ErrorCode::InvalidConfig,
                "durationMs must be a number from 2000 to 30000",
            ));
        }
        Ok(Preflight {
            urls,
            duration_ms: duration as u64,
            quality: QualityMonitor::new(),
            token_fetch_ms: None,
            probe_sent: None,
            presence_rtt_ms: None,
            started: false,
            audio_failed: false,
            frames_sent: 0,
            input_min: f64::INFINITY,
            input_max: f64::NEG_INFINITY,
            failures: Vec::new(),
        })
    }

    /// The presence socket's URL.
    pub fn presence_url(&self) -> &str {
        &self.urls.presence
    }

    /// The audio socket's URL.
    pub fn audio_url(&self) -> &str {
        &self.urls.audio
    }

    /// How long to send frames after `preflightStarted`, ms (at most the
    /// service's `maxMs`).
    pub fn duration_ms(&self) -> u64 {
        self.duration_ms
    }

    /// `getToken` answered with a token after `ms`.
    pub fn token_fetched(&mut self, ms: f64) {
        self.token_fetch_ms = Some(ms.max(0.0));
    }

    /// A step failed, or its socket closed (or could not connect);
    /// `detail` says how (shown in the reason's message). A socket that
    /// closes after its step is done is no failure: the presence socket
    /// once the round trip was measured, the audio socket once the echo
    /// started or after a failure that already says why.
    pub fn fail(&mut self, step: Step, detail: &str) {
        let code = match step {
            Step::Token => ReasonCode::TokenFetchFailed,
            Step::Presence if self.presence_rtt_ms.is_some() => return,
            Step::Presence => ReasonCode::PresenceUnreachable,
            Step::Audio if self.started || self.audio_failed => return,
            Step::Audio => ReasonCode::AudioUnreachable,
            Step::Microphone => ReasonCode::MicrophoneUnavailable,
        };
        self.push_failure(code, detail);
    }

    /// One reason per code: a socket's error and its close say the same
    /// thing twice.
    fn push_failure(&mut self, code: ReasonCode, detail: &str) {
        if !self.failures.iter().any(|r| r.code == code) {
            self.failures.push(Reason::failed(code, detail));
        }
    }

    /// The text to send on the presence socket once it is open (records
    /// when it was sent).
    pub fn presence_probe(&mut self, now: f64) -> String {
        self.probe_sent = Some(now);
        encode_presence(&ClientMessage::Ping { id: 1 })
    }

    /// A presence-socket text: true when it completed the round trip (any
    /// JSON text answers the probe, whatever the service says; close the
    /// socket then).
    pub fn presence_text(&mut self, now: f64, text: &str) -> bool {
        // Parsed, not decoded: the answer's content does not matter, and
        // a second use of the presence decoder costs the wasm build 4 KB.
        match self.probe_sent {
            Some(sent) if self.presence_rtt_ms.is_none() && json::parse(text).is_ok() => {
                self.presence_rtt_ms = Some((now - sent).max(0.0));
                true
            }
            _ => false,
        }
    }

    /// The audio socket's first message: `preflight` with `token`.
    pub fn preflight_message(&self, token: &str) -> String {
        encode_audio(&AudioClientMessage::Preflight {
            token: token.into(),
        })
    }

    /// An audio-socket text.
    pub fn audio_text(&mut self, now: f64, text: &str) -> AudioText {
        match decode_audio(text) {
            Ok(AudioServerMessage::Pong { id }) => {
                self.quality.pong(now, id);
                AudioText::Nothing
            }
            Ok(AudioServerMessage::PreflightStarted { max_ms }) if !self.started => {
                self.started = true;
                self.duration_ms = self.duration_ms.min(max_ms);
                AudioText::Started
            }
            // Errors during the echo (a rate limit, say) change nothing.
            Ok(AudioServerMessage::Error { code, message }) if !self.started => {
                let (reason, detail) = match code {
                    ErrorCode::UnknownMessage => (ReasonCode::EchoUnsupported, ""),
                    ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::Forbidden => {
                        (ReasonCode::TokenRejected, code.as_str())
                    }
                    _ => (ReasonCode::AudioUnreachable, message.as_str()),
                };
                self.push_failure(reason, detail);
                self.audio_failed = true;
                AudioText::Stop
            }
            _ => AudioText::Nothing,
        }
    }

    /// An echoed frame came back at `now`.
    pub fn frame_received(&mut self, now: f64) {
        self.quality.frame_received(now);
    }

    /// A level reading of the audio graph (RMS in `[0, 1]`).
    pub fn levels(&mut self, now: f64, input: f64, output: f64) {
        self.quality.levels(now, input, output);
        if input.is_finite() {
            self.input_min = self.input_min.min(input);
            self.input_max = self.input_max.max(input);
        }
    }

    /// The `ping` to send on the audio socket now, if one is due (only
    /// once the echo started).
    pub fn poll_ping(&mut self, now: f64) -> Option<String> {
        if self.started {
            self.quality.poll_ping(now)
        } else {
            None
        }
    }

    /// About once a second during the echo: frames sent so far.
    pub fn sample(&mut self, now: f64, frames_sent: u64) {
        self.frames_sent = frames_sent;
        self.quality.sample(
            now,
            Sample {
                frames_sent,
                ..Sample::default()
            },
        );
    }

    /// The figures measured so far.
    pub fn figures(&self) -> Figures {
        let stats = self.quality.stats();
        let echo = self.started && stats.mos.is_some();
        let spread = self.input_max - self.input_min;
        Figures {
            token_fetch_ms: self.token_fetch_ms,
            presence_rtt_ms: self.presence_rtt_ms,
            rtt_ms: stats.rtt_ms,
            jitter_ms: echo.then_some(stats.jitter_ms),
            packet_loss_percent: echo.then_some(stats.packet_loss_percent),
            mos: stats.mos.filter(|_| echo),
            // Judged only when the echo ran and levels were read.
            // In the warning's unit (16-bit steps), against its clear bound.
            microphone_signal: (self.started && spread.is_finite())
                .then(|| spread * LEVEL_STEPS >= Warning::ConstantAudioInputLevel.rule().clear),
        }
    }

    /// The verdict and its reasons (see [`assess`]).
    pub fn verdict(&self) -> (Verdict, Vec<Reason>) {
        let mut failures = self.failures.clone();
        let received = self.quality.stats().frames_received;
        if self.started && failures.is_empty() {
            if self.frames_sent == 0 {
                failures.push(Reason::failed(
                    ReasonCode::MicrophoneUnavailable,
                    "the audio graph sent no frames",
                ));
            } else if received == 0 {
                failures.push(Reason::failed(ReasonCode::NoEchoReceived, ""));
            }
        }
        assess(&self.figures(), failures)
    }

    /// The report as camelCase JSON: `verdict`, `reasons` (`code`,
    /// `verdict`, `message?`, `value?`, `threshold?`), `tokenFetchMs`,
    /// `presenceRttMs`, `rttMs`, `jitterMs`, `packetLossPercent`, `mos`
    /// (`null` when not measured), `microphoneSignal`, `framesSent`,
    /// `framesReceived`.
    pub fn report(&self) -> String {
        let (verdict, reasons) = self.verdict();
        let f = self.figures();
        let stats = self.quality.stats();
        let opt = |v: Option<f64>| {
            move |o: &mut String| match v {
                Some(v) => write_decimal(o, v),
                None => o.push_str("null"),
            }
        };
        let mut out = String::new();
        Obj::new(&mut out)
            .str("verdict", verdict.as_str())
            .with("reasons", |o| {
                o.push('[');
                for (i, r) in reasons.iter().enumerate() {
                    if i > 0 {
                        o.push(',');
                    }
                    let mut obj = Obj::new(o);
                    obj.str("code", r.code.as_str())
                        .str("verdict", r.verdict.as_str());
                    if !r.message.is_empty() {
                        obj.with("message", |o| write_str(o, &r.message));
                    }
                    if let Some(v) = r.value {
                        obj.with("value", |o| write_decimal(o, v));
                    }
                    if let Some(t) = r.threshold {
                        obj.with("threshold", |o| write_decimal(o, t));
                    }
                    obj.end();
                }
                o.push(']');
            })
            .with("tokenFetchMs", opt(f.token_fetch_ms))
            .with("presenceRttMs", opt(f.presence_rtt_ms))
            .with("rttMs", opt(f.rtt_ms))
            .with("jitterMs", opt(f.jitter_ms))
            .with("packetLossPercent", opt(f.packet_loss_percent))
            .with("mos", opt(f.mos))
            .bool("microphoneSignal", f.microphone_signal == Some(true))
            .num("framesSent", self.frames_sent)
            .num("framesReceived", stats.frames_received)
            .end();
        out
    }
}

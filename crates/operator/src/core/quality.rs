//! Call quality: the statistics of one call's audio and its quality
//! warnings, sans-IO.
//!
//! The driver feeds what it observes, with its monotonic time `now` in
//! milliseconds (fractional: `performance.now()`):
//! [`QualityMonitor::frame_received`] for every far-end frame as it comes
//! off the audio socket, [`QualityMonitor::levels`] for every level reading
//! of the audio graph (about every 50 ms), [`QualityMonitor::sample`] about
//! once a second with the jitter buffer's counters, and the `pong` answers
//! to the pings the monitor asks for ([`QualityMonitor::poll_ping`],
//! [`QualityMonitor::audio_text`]). It then reads
//! [`QualityMonitor::stats`] and drains [`QualityMonitor::poll_event`].
//! Audio samples never come here: only counts, times and levels.
//!
//! # What is measured
//!
//! - **Frames lost**: the audio socket carries one frame per 20 ms and no
//!   sequence numbers, and TCP loses nothing, so a frame lost upstream (on
//!   the far end's RTP leg, or by the dev sim's impairment) is one that
//!   never arrives. Lost = frames expected − frames received, never below
//!   0, where a frame is expected once it is due (one per 20 ms since the
//!   first far-end frame) and the stream's current lag has passed too: a
//!   frame merely in flight behind a delayed one is not lost. The lag is
//!   read from the frames' transit `arrival − 20 ms × index`, which a
//!   delay and a loss both raise (later frames take a lost one's index):
//!   only time tells them apart, a delayed stream catches up and a lost
//!   frame's step stays. So the lag is the last frame's transit above the
//!   lowest transit since the previous sample (about a second), plus the
//!   silence since the last frame as far as it is no longer than the
//!   longest gap between frames of the last two seconds, at most
//!   [`MAX_LAG_ALLOWANCE_MS`]: a loss is counted at the latest one sample
//!   after it happened, a stall as it goes on. Without the allowance,
//!   in-order jitter of up to 200 ms read as 8–16 % loss.
//! - **Jitter**: RFC 3550 §6.4.1 interarrival jitter of the frames' arrival
//!   times against their nominal 20 ms spacing (`J += (|D| − J) / 16`).
//! - **Round-trip time**: audio-socket `ping` → `pong` (protocol v1,
//!   added within v1), one ping every [`PING_INTERVAL_MS`]. A ping
//!   unanswered for longer than the last measured RTT raises the figure to
//!   its age, so a stalled path shows up before its pong does.
//! - **MOS**: the E-model (ITU-T G.107) simplified for G.711, see [`mos`].
//!
//! # Warnings
//!
//! Evaluated at every [`QualityMonitor::sample`] (1 Hz). A warning is
//! raised when its condition holds in `raise_k` of the last `raise_n`
//! samples and cleared after `clear_n` consecutive samples past a clear
//! threshold on the good side of the raise threshold (hysteresis: no
//! flapping around one value). See [`Warning`] for each one's figures.

use std::collections::VecDeque;

use super::json::{Obj, write_u64};
use super::wire::{decode_audio, encode_audio};
use audin_protocol::{AudioClientMessage, AudioServerMessage};

/// Nominal spacing of far-end frames, ms.
pub const FRAME_MS: f64 = 20.0;
/// How often the monitor asks for a `ping`, ms.
pub const PING_INTERVAL_MS: f64 = 2_000.0;
/// Samples (seconds) the windowed figures cover: loss and concealment.
pub const WINDOW_SAMPLES: usize = 5;
/// The most a stream's lag may excuse a missing frame, ms: a frame later
/// than this is as good as lost to a conversation.
pub const MAX_LAG_ALLOWANCE_MS: f64 = 1_000.0;
/// Pings remembered while unanswered; older ones are forgotten (their pong
/// is then ignored).
const PINGS_IN_FLIGHT: usize = 4;
/// The unit of `constant-audio-input-level`'s value: levels are in `[0, 1]`
/// of full scale, its spread is reported in steps of a 16-bit sample (as
/// WebRTC's and Twilio's audio levels count), so the tiny figures of a
/// dead microphone stay readable with three decimals.
pub const LEVEL_STEPS: f64 = 32_768.0;

/// A quality warning. Thresholds (`raise` / `clear`, units of the value):
///
/// | Warning | Value | Raised | Cleared |
/// |---|---|---|---|
/// | `high-rtt` | RTT, ms | > 400 in 3 of the last 5 samples | < 300 for 5 samples |
/// | `high-jitter` | jitter, ms | > 30 in 3 of 5 | < 25 for 5 |
/// | `high-packet-loss` | loss over the last 5 s, % | > 1 in 3 of 5 | < 0.5 for 5 |
/// | `low-mos` | MOS | < 3.5 in 3 of 5 | > 3.6 for 5 |
/// | `constant-audio-input-level` | spread (max − min) of the microphone's RMS level within the second, in 16-bit steps ([`LEVEL_STEPS`]) | < 0.01 for 10 samples in a row while not muted | ≥ 0.1 for 3 (or muted) |
///
/// `constant-audio-input-level` is for a dead or OS-muted microphone, which
/// delivers digital silence or a stuck value: its level does not move at
/// all. A live microphone's level always moves, by far more than 0.01 of a
/// 16-bit step (a noise floor at −90 dBFS, about one step, moves by a few
/// percent of itself from one 50 ms reading to the next), even while the
/// operator listens in a quiet room; so does a steady test tone's (its
/// readings cover a fraction of a cycle more or less).
/// | `no-audio-received` | ms since the last far-end frame (or since the first sample) | > 1000 in 2 samples in a row | < 200 for 2 |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warning {
    /// The audio socket's round-trip time is high.
    HighRtt,
    /// The far end's frames arrive irregularly.
    HighJitter,
    /// Far-end frames are missing.
    HighPacketLoss,
    /// The estimated listening quality is poor.
    LowMos,
    /// The microphone delivers a constant (dead, OS-muted) signal.
    ConstantAudioInputLevel,
    /// No far-end audio arrives.
    NoAudioReceived,
}

/// Every warning, in a fixed order.
pub const WARNINGS: [Warning; 6] = [
    Warning::HighRtt,
    Warning::HighJitter,
    Warning::HighPacketLoss,
    Warning::LowMos,
    Warning::ConstantAudioInputLevel,
    Warning::NoAudioReceived,
];

/// How a warning is raised and cleared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Raised when the value is past this (above, or below for `low-mos`).
    pub raise: f64,
    /// Cleared when the value is past this on the good side.
    pub clear: f64,
    /// Bad samples needed…
    pub raise_k: u32,
    /// …among the last this many.
    pub raise_n: u32,
    /// Good samples in a row needed to clear.
    pub clear_n: u32,
    /// True when a low value is bad (MOS).
    pub low_is_bad: bool,
}

impl Warning {
    /// The event name, e.g. `"high-rtt"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HighRtt => "high-rtt",
            Self::HighJitter => "high-jitter",
            Self::HighPacketLoss => "high-packet-loss",
            Self::LowMos => "low-mos",
            Self::ConstantAudioInputLevel => "constant-audio-input-level",
            Self::NoAudioReceived => "no-audio-received",
        }
    }

    /// The thresholds (see the table on [`Warning`]).
    pub fn rule(self) -> Rule {
        let r = |raise, clear, raise_k, raise_n, clear_n| Rule {
            raise,
            clear,
            raise_k,
            raise_n,
            clear_n,
            low_is_bad: false,
        };
        match self {
            Self::HighRtt => r(400.0, 300.0, 3, 5, 5),
            Self::HighJitter => r(30.0, 25.0, 3, 5, 5),
            Self::HighPacketLoss => r(1.0, 0.5, 3, 5, 5),
            Self::LowMos => Rule {
                low_is_bad: true,
                ..r(3.5, 3.6, 3, 5, 5)
            },
            Self::ConstantAudioInputLevel => Rule {
                low_is_bad: true,
                ..r(0.01, 0.1, 10, 10, 3)
            },
            Self::NoAudioReceived => r(1_000.0, 200.0, 2, 2, 2),
        }
    }
}

/// A warning raised or cleared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityEvent {
    /// Which.
    pub warning: Warning,
    /// True: raised (`qualityWarning`); false: cleared
    /// (`qualityWarningCleared`).
    pub raised: bool,
    /// The value at that sample (units: see [`Warning`]).
    pub value: f64,
    /// The raise threshold.
    pub threshold: f64,
}

impl QualityEvent {
    /// `{"name","raised","value","threshold"}`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        Obj::new(&mut out)
            .str("name", self.warning.as_str())
            .bool("raised", self.raised)
            .with("value", |o| write_decimal(o, self.value))
            .with("threshold", |o| write_decimal(o, self.threshold))
            .end();
        out
    }
}

/// What the driver reads off the audio graph about once a second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Microphone frames sent on the audio socket so far.
    pub frames_sent: u64,
    /// Jitter buffer: 20 ms playout slots filled by concealment so far.
    pub concealed: u64,
    /// Jitter buffer: received frames played so far.
    pub played: u64,
    /// Jitter buffer: current playout delay, ms.
    pub playout_delay_ms: f64,
    /// Whether the call is muted in the SDK.
    pub muted: bool,
}

/// A snapshot of the call's audio quality.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    /// Microphone frames sent (20 ms each).
    pub frames_sent: u64,
    /// Far-end frames received.
    pub frames_received: u64,
    /// Far-end frames that never arrived (see the module docs).
    pub frames_lost: u64,
    /// Playout slots filled by concealment.
    pub frames_concealed: u64,
    /// Frames lost over the last [`WINDOW_SAMPLES`] seconds, percent.
    pub packet_loss_percent: f64,
    /// Playout slots concealed over the last [`WINDOW_SAMPLES`] seconds,
    /// percent.
    pub concealed_percent: f64,
    /// RFC 3550 interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Jitter-buffer playout delay, ms.
    pub playout_delay_ms: f64,
    /// Audio-socket round-trip time, ms (`None` before the first pong).
    pub rtt_ms: Option<f64>,
    /// E-model MOS estimate, 1–4.5 (`None` before the first sample).
    pub mos: Option<f64>,
    /// Microphone RMS level, `[0, 1]`.
    pub input_level: f64,
    /// Playback RMS level, `[0, 1]`.
    pub output_level: f64,
}

impl CallStats {
    /// camelCase JSON, numbers with at most 3 decimals, absent figures
    /// `null`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let opt = |v: Option<f64>| {
            move |o: &mut String| match v {
                Some(v) => write_decimal(o, v),
                None => o.push_str("null"),
            }
        };
        Obj::new(&mut out)
            .num("framesSent", self.frames_sent)
            .num("framesReceived", self.frames_received)
            .num("framesLost", self.frames_lost)
            .num("framesConcealed", self.frames_concealed)
            .with("packetLossPercent", |o| {
                write_decimal(o, self.packet_loss_percent)
            })
            .with("concealedPercent", |o| {
                write_decimal(o, self.concealed_percent)
            })
            .with("jitterMs", |o| write_decimal(o, self.jitter_ms))
            .with("playoutDelayMs", |o| {
                write_decimal(o, self.playout_delay_ms)
            })
            .with("rttMs", opt(self.rtt_ms))
            .with("mos", opt(self.mos))
            .with("inputLevel", |o| write_decimal(o, self.input_level))
            .with("outputLevel", |o| write_decimal(o, self.output_level))
            .end();
        out
    }
}

/// Writes `v` with at most 3 decimals (no `core::fmt`: see
/// [`super::json`]). Not finite writes `0`.
pub(crate) fn write_decimal(out: &mut String, v: f64) {
    if !v.is_finite() {
        out.push('0');
        return;
    }
    if v < 0.0 {
        out.push('-');
    }
    let milli = (v.abs() * 1_000.0).round() as u64;
    write_u64(out, milli / 1_000);
    let frac = milli % 1_000;
    if frac != 0 {
        out.push('.');
        // Trailing zeros dropped. No slicing or indexing: a bounds check
        // would link `core::fmt` into the wasm build for its panic message.
        let mut rest = frac;
        let mut div = 100;
        while rest != 0 {
            out.push(char::from(b'0' + (rest / div) as u8));
            rest %= div;
            div /= 10;
        }
    }
}

/// E-model MOS for G.711 with packet-loss concealment (ITU-T G.107,
/// simplified): `R = 93.2 − Id − Ie_eff`, with
/// - `Id = 0.024 d + 0.11 (d − 177.3) H(d − 177.3)`, `d` the one-way delay
///   in ms (the delay impairment as approximated by Cole and Rosenbluth);
/// - `Ie_eff = Ie + (95 − Ie) Ppl / (Ppl + Bpl)`, `Ie = 0`, `Bpl = 25.1`
///   (G.711 with PLC, G.113 Appendix I), random loss (`BurstR = 1`);
/// - `MOS = 1 + 0.035 R + R (R − 60)(100 − R) 7·10⁻⁶` for `0 < R < 100`.
///
/// ```
/// use audin_operator::core::quality::mos;
/// assert!((mos(0.0, 0.0) - 4.41).abs() < 0.01); // the best G.711 can do
/// assert!(mos(0.0, 10.0) < 3.5);
/// assert!(mos(400.0, 0.0) < mos(100.0, 0.0));
/// ```
pub fn mos(one_way_delay_ms: f64, loss_percent: f64) -> f64 {
    let d = one_way_delay_ms.max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ppl = loss_percent.clamp(0.0, 100.0);
    let ie_eff = 95.0 * ppl / (ppl + 25.1);
    let r = 93.2 - id - ie_eff;
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Detector {
    raised: bool,
    /// Last samples, newest in bit 0: 1 = bad.
    history: u32,
    good_run: u32,
}

impl Detector {
    /// One sample's value (`None`: not measurable now, counts as neither
    /// bad nor good). Returns `Some(raised)` on a change.
    fn step(&mut self, rule: Rule, value: Option<f64>) -> Option<bool> {
        let (bad, good) = match value {
            None => (false, false),
            Some(v) if rule.low_is_bad => (v < rule.raise, v >= rule.clear),
            Some(v) => (v > rule.raise, v < rule.clear),
        };
        let mask = (1u32 << rule.raise_n) - 1;
        self.history = ((self.history << 1) | u32::from(bad)) & mask;
        if self.raised {
            self.good_run = if good { self.good_run + 1 } else { 0 };
            if self.good_run >= rule.clear_n {
                self.raised = false;
                self.history = 0;
                self.good_run = 0;
                return Some(false);
            }
        } else if self.history.count_ones() >= rule.raise_k {
            self.raised = true;
            self.good_run = 0;
            return Some(true);
        }
        None
    }
}

#[derive(Debug, Clone, Copy)]
struct Point {
    expected: u64,
    received: u64,
    slots: u64,
    concealed: u64,
}

/// One call's quality monitor. See the module docs for how to drive it.
///
/// ```
/// use audin_operator::core::quality::{QualityMonitor, Sample};
/// let mut q = QualityMonitor::new();
/// let mut t = 0.0;
/// for s in 0..10u64 {
///     for _ in 0..50 {
///         q.frame_received(t);
///         q.levels(t, 0.2 + (t % 100.0) / 1000.0, 0.1);
///         t += 20.0;
///     }
///     let played = (s + 1) * 50;
///     q.sample(t, Sample { frames_sent: played, played, ..Sample::default() });
/// }
/// let stats = q.stats();
/// assert_eq!(stats.frames_received, 500);
/// assert_eq!(stats.frames_lost, 0);
/// assert!(stats.mos.unwrap() > 4.3);
/// assert!(q.poll_event().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct QualityMonitor {
    frames_received: u64,
    first_rx: Option<f64>,
    last_rx: Option<f64>,
    /// The last frame's transit (arrival − 20 ms × index, from the first).
    transit_last: f64,
    /// The lowest transit since the last sample.
    transit_min: f64,
    /// The longest gap between two frames since the last sample, and in
    /// the period before.
    gap_max: f64,
    gap_max_before: f64,
    jitter: f64,
    /// When samples started (the no-audio clock before any frame).
    started: Option<f64>,
    next_ping_at: Option<f64>,
    next_ping_id: u32,
    in_flight: [Option<(u32, f64)>; PINGS_IN_FLIGHT],
    rtt: Option<f64>,
    input_level: f64,
    output_level: f64,
    second_min_in: f64,
    second_max_in: f64,
    window: VecDeque<Point>,
    detectors: [Detector; 6],
    events: VecDeque<QualityEvent>,
    stats: CallStats,
}

impl Default for QualityMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl QualityMonitor {
    /// A monitor for a call whose media starts now.
    pub fn new() -> Self {
        Self {
            frames_received: 0,
            first_rx: None,
            last_rx: None,
            transit_last: 0.0,
            transit_min: f64::INFINITY,
            gap_max: 0.0,
            gap_max_before: 0.0,
            jitter: 0.0,
            started: None,
            next_ping_at: None,
            next_ping_id: 1,
            in_flight: [None; PINGS_IN_FLIGHT],
            rtt: None,
            input_level: 0.0,
            output_level: 0.0,
            second_min_in: f64::INFINITY,
            second_max_in: f64::NEG_INFINITY,
            window: VecDeque::with_capacity(WINDOW_SAMPLES + 1),
            detectors: [Detector::default(); 6],
            events: VecDeque::new(),
            stats: CallStats::default(),
        }
    }

    /// A far-end frame came off the audio socket at `now`.
    pub fn frame_received(&mut self, now: f64) {
        self.frames_received += 1;
        if let Some(prev) = self.last_rx {
            let d = ((now - prev) - FRAME_MS).abs();
            self.jitter += (d - self.jitter) / 16.0;
            self.gap_max = self.gap_max.max(now - prev);
        }
        let first = *self.first_rx.get_or_insert(now);
        self.last_rx = Some(now);
        self.transit_last = now - first - (self.frames_received - 1) as f64 * FRAME_MS;
        self.transit_min = self.transit_min.min(self.transit_last);
    }

    /// A level reading of the audio graph: RMS in `[0, 1]` of the
    /// microphone (even while muted) and of the playback.
    pub fn levels(&mut self, _now: f64, input: f64, output: f64) {
        let (input, output) = (input.clamp(0.0, 1.0), output.clamp(0.0, 1.0));
        self.input_level = input;
        self.output_level = output;
        self.second_min_in = self.second_min_in.min(input);
        self.second_max_in = self.second_max_in.max(input);
    }

    /// The `ping` text to send on the call's audio socket now, if one is due
    /// (the first at the first call, then every [`PING_INTERVAL_MS`]).
    pub fn poll_ping(&mut self, now: f64) -> Option<String> {
        if self.next_ping_at.is_some_and(|t| now < t) {
            return None;
        }
        self.next_ping_at = Some(now + PING_INTERVAL_MS);
        let id = self.next_ping_id;
        self.next_ping_id = self.next_ping_id.wrapping_add(1);
        // Replace the oldest slot (or a free one).
        let t = |s: &Option<(u32, f64)>| s.map_or(f64::NEG_INFINITY, |p| p.1);
        if let Some(slot) = self
            .in_flight
            .iter_mut()
            .min_by(|a, b| t(a).total_cmp(&t(b)))
        {
            *slot = Some((id, now));
        }
        Some(encode_audio(&AudioClientMessage::Ping { id }))
    }

    /// A `pong` with `id` arrived at `now`. False if no such ping is
    /// waiting (a stale or foreign id: ignored).
    ///
    /// Pings sent before the answered one and still waiting are forgotten:
    /// one socket answers in order, so they went down with an earlier
    /// socket (the call's audio was reattached) and will never be answered;
    /// kept, their growing age would read as the round trip for the rest of
    /// the call.
    pub fn pong(&mut self, now: f64, id: u32) -> bool {
        let Some(sent) = self
            .in_flight
            .iter()
            .flatten()
            .find(|p| p.0 == id)
            .map(|p| p.1)
        else {
            return false;
        };
        for slot in &mut self.in_flight {
            if slot.is_some_and(|p| p.1 <= sent) {
                *slot = None;
            }
        }
        self.rtt = Some((now - sent).max(0.0));
        true
    }

    /// A text message of the call's audio socket: true if it was a `pong`
    /// (consumed here), false for anything else (the driver hands those to
    /// the operator core).
    pub fn audio_text(&mut self, now: f64, text: &str) -> bool {
        // Decoded whole (audio-socket texts are rare): a substring
        // pre-check would link a string searcher into the wasm build.
        match decode_audio(text) {
            Ok(AudioServerMessage::Pong { id }) => {
                self.pong(now, id);
                true
            }
            _ => false,
        }
    }

    /// The RTT figure at `now`: the last measured one, or the age of the
    /// oldest unanswered ping if that is larger.
    fn rtt_at(&self, now: f64) -> Option<f64> {
        let waiting = self
            .in_flight
            .iter()
            .flatten()
            .map(|&(_, sent)| now - sent)
            .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
        match (self.rtt, waiting) {
            (Some(r), Some(w)) if w > r => Some(w),
            (Some(r), _) => Some(r),
            // Nothing measured yet: a ping unanswered for a whole interval
            // is a figure too.
            (None, Some(w)) if w >= PING_INTERVAL_MS => Some(w),
            (None, _) => None,
        }
    }

    /// About once a second: the audio graph's counters at `now`. Updates the
    /// stats and evaluates the warnings.
    pub fn sample(&mut self, now: f64, s: Sample) {
        let started = *self.started.get_or_insert(now);
        // No frame since the last sample: no lag to excuse (min is ∞).
        let behind = (self.transit_last - self.transit_min).max(0.0);
        let usual_gap = self.gap_max.max(self.gap_max_before) - FRAME_MS;
        let silent = self.last_rx.map_or(0.0, |last| now - last);
        let lag = (behind + silent.min(usual_gap).max(0.0)).min(MAX_LAG_ALLOWANCE_MS);
        self.gap_max_before = std::mem::take(&mut self.gap_max);
        let expected = self.first_rx.map_or(0, |first| {
            // A frame counts once it is a whole frame past its due time
            // and the stream's lag has passed as well.
            ((now - first - lag).max(0.0) / FRAME_MS).floor() as u64
        });
        let point = Point {
            expected,
            received: self.frames_received,
            slots: s.played + s.concealed,
            concealed: s.concealed,
        };
        self.transit_min = f64::INFINITY;
        let oldest = *self.window.front().unwrap_or(&Point {
            expected: 0,
            received: 0,
            slots: 0,
            concealed: 0,
        });
        self.window.push_back(point);
        if self.window.len() > WINDOW_SAMPLES {
            self.window.pop_front();
        }
        let percent = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                (part as f64 * 100.0 / whole as f64).min(100.0)
            }
        };
        let exp_d = point.expected.saturating_sub(oldest.expected);
        let rx_d = point.received.saturating_sub(oldest.received);
        let loss = percent(exp_d.saturating_sub(rx_d), exp_d);
        let concealed = percent(
            point.concealed.saturating_sub(oldest.concealed),
            point.slots.saturating_sub(oldest.slots),
        );
        let rtt = self.rtt_at(now);
        let one_way = rtt.unwrap_or(0.0) / 2.0 + s.playout_delay_ms.max(0.0) + FRAME_MS;
        let mos = mos(one_way, loss.max(concealed));
        self.stats = CallStats {
            frames_sent: s.frames_sent,
            frames_received: self.frames_received,
            frames_lost: expected.saturating_sub(self.frames_received),
            frames_concealed: s.concealed,
            packet_loss_percent: loss,
            concealed_percent: concealed,
            jitter_ms: self.jitter,
            playout_delay_ms: s.playout_delay_ms.max(0.0),
            rtt_ms: rtt,
            mos: Some(mos),
            input_level: self.input_level,
            output_level: self.output_level,
        };
        let spread = (self.second_max_in >= self.second_min_in)
            .then_some((self.second_max_in - self.second_min_in) * LEVEL_STEPS);
        self.second_min_in = f64::INFINITY;
        self.second_max_in = f64::NEG_INFINITY;
        let since_audio = now - self.last_rx.unwrap_or(started);
        // No frames yet: neither loss nor jitter can be measured.
        let have_rx = self.first_rx.is_some();
        for (w, detector) in WARNINGS.into_iter().zip(self.detectors.iter_mut()) {
            let value = match w {
                Warning::HighRtt => rtt,
                Warning::HighJitter => have_rx.then_some(self.jitter),
                Warning::HighPacketLoss => have_rx.then_some(loss),
                Warning::LowMos => Some(mos),
                // Muted: the operator knows the far end hears nothing; a
                // level that does not move is no news then.
                Warning::ConstantAudioInputLevel if s.muted => Some(f64::INFINITY),
                Warning::ConstantAudioInputLevel => spread,
                Warning::NoAudioReceived => Some(since_audio.max(0.0)),
            };
            if let Some(raised) = detector.step(w.rule(), value) {
                self.events.push_back(QualityEvent {
                    warning: w,
                    raised,
                    value: value.filter(|v| v.is_finite()).unwrap_or(0.0),
                    threshold: w.rule().raise,
                });
            }
        }
    }

    /// The latest snapshot (as of the last [`QualityMonitor::sample`]; the
    /// levels are the latest readings).
    pub fn stats(&self) -> CallStats {
        CallStats {
            input_level: self.input_level,
            output_level: self.output_level,
            ..self.stats
        }
    }

    /// Whether `warning` is raised now.
    pub fn is_raised(&self, warning: Warning) -> bool {
        WARNINGS
            .iter()
            .zip(self.detectors.iter())
            .any(|(&w, d)| w == warning && d.raised)
    }

    /// The next warning raised or cleared, oldest first.
    pub fn poll_event(&mut self) -> Option<QualityEvent> {
        self.events.pop_front()
    }
}

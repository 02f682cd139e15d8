//! The simulated phone network (carrier `sim`).
//!
//! Outbound numbers behave as in the table of `docs/protocol-v1.md`; inbound
//! calls are started by the dev endpoints. A tone, silence, click or play far end
//! paces its audio at 20 ms; an echo far end returns each frame the moment
//! it arrives (the sender paces them), so it adds no delay of its own. Every
//! far end records what it hears (decoded to PCM, at most five minutes) and
//! the DTMF digits it receives. A dev endpoint can impair what a far end
//! sends toward the operator ([`Impairment`]: random delay that keeps the
//! order, random loss) to exercise the clients' jitter buffers, and hold the
//! call's audio-socket `pong`s back to exercise their round-trip figures.
//!
//! Ended calls stay inspectable: the final status of the [`KEEP_ENDED`] most
//! recent (a few hundred bytes each), the recording of the
//! [`KEEP_RECORDINGS`] most recent.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use audin_protocol::{DEFAULT_CLIENT_AUDIO_SILENCE_MS, EndReason, FRAME_BYTES};
use axum::body::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::carrier::{
    BoxFuture, CallMedia, Carrier, CarrierEvent, CarrierLeg, EVENT_QUEUE, EndCause, EventReceiver,
    EventSender, InboundCall, OutboundRequest, Via,
};
use crate::tone;
use crate::ws::FrameQueue;

/// Default of `--sim-record-secs`: how much of each call the sim records
/// (five minutes, 2.4 MB of μ-law).
pub const DEFAULT_RECORD_SECS: u32 = 300;
/// Ended sim calls whose final status `GET /dev/sim/calls/{sid}` still
/// answers: more than a 10,000-call soak ends. Once its recording is dropped
/// an ended call costs about 300 bytes (plus its DTMF digits; measured by
/// `tests/sim_retention.rs`), so at most about 3 MB.
pub const KEEP_ENDED: usize = 10_000;
/// Ended sim calls (of the [`KEEP_ENDED`]) whose recording is kept too: a
/// recording is up to 8 KB per second recorded (`--sim-record-secs`).
pub const KEEP_RECORDINGS: usize = 32;
/// Frames a far end's inbound queue holds. Above the audio socket's burst
/// allowance (50 frames at once after a stall), so a catch-up burst the
/// service let through reaches the far end whole; beyond it the oldest is
/// dropped.
const HEARD_QUEUE_FRAMES: usize = 64;
/// An echo far end that has sent nothing for this long sends one frame of
/// silence: a client that only listens (sends no audio, only pings) still
/// receives a frame well within the silence after which it treats its audio
/// socket as dead (`DEFAULT_CLIENT_AUDIO_SILENCE_MS`, 2 s). A sender that
/// pauses for less never sees one.
const ECHO_KEEPALIVE: Duration = Duration::from_millis(DEFAULT_CLIENT_AUDIO_SILENCE_MS / 4);
/// Largest jitter an impairment may add, ms.
pub const MAX_JITTER_MS: u32 = 1_000;
/// Largest extra round-trip time an impairment may add to the call's audio
/// socket, ms: more than the clients' `high-rtt` thresholds need, less than
/// their silence timeouts, so a test can hold pongs back without the
/// service queueing much (a held pong is a sleeping task).
pub const MAX_RTT_MS: u32 = 5_000;
/// Frames a far end holds back at most while impaired (1 s of audio plus
/// slack); beyond that the oldest is dropped, as a bounded queue would.
pub(crate) const MAX_DELAYED: usize = 64;
/// The `click` behaviour clicks once every this many frames (500 ms).
pub const CLICK_EVERY_FRAMES: u64 = 25;
/// Longest clip the `play` behaviour accepts: 60 s of 8 kHz G.711 μ-law, so
/// a dev request cannot make the sim hold more than 480 kB per call.
pub const MAX_CLIP_BYTES: usize = 8_000 * 60;

/// What a far end plays once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Plays a steady 440 Hz tone.
    Tone,
    /// Sends back what it hears.
    Echo,
    /// Sends silence.
    Silence,
    /// Sends silence whose every 25th frame (500 ms) starts with one
    /// full-scale sample: a click to time playback latency by.
    Click,
    /// Plays a caller-supplied clip (G.711 μ-law, 8 kHz) in a loop: real
    /// speech for the browser SDK's echo rig, which a tone cannot stand for.
    Play,
}

impl Behaviour {
    /// Parses `tone`, `echo`, `silence`, `click` or `play`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tone" => Some(Self::Tone),
            "echo" => Some(Self::Echo),
            "silence" => Some(Self::Silence),
            "click" => Some(Self::Click),
            "play" => Some(Self::Play),
            _ => None,
        }
    }
}

/// The script of a far end.
#[derive(Debug, Clone)]
struct Script {
    behaviour: Behaviour,
    /// Outbound: answer after this long (`None`: never, or see below).
    answer_after: Option<Duration>,
    /// Busy at once.
    busy: bool,
    /// Decline after this long.
    decline_after: Option<Duration>,
    /// Carrier error at once.
    fail: bool,
    /// Hang up this long after answering.
    hangup_after_answer: Option<Duration>,
    /// The `play` behaviour's clip, whole frames of μ-law (never empty).
    clip: Option<Arc<[u8]>>,
}

impl Script {
    fn plain(behaviour: Behaviour, answer_after: Option<Duration>) -> Self {
        Self {
            behaviour,
            answer_after,
            busy: false,
            decline_after: None,
            fail: false,
            hangup_after_answer: None,
            clip: None,
        }
    }

    /// The behaviour of an outbound number, per the doc's table.
    fn for_number(to: &str) -> Self {
        Self::scripted(to)
            .unwrap_or_else(|| Self::plain(Behaviour::Echo, Some(Duration::from_millis(1_000))))
    }

    /// The doc's table of scripted numbers (`None`: not in it).
    fn scripted(to: &str) -> Option<Self> {
        let ms = Duration::from_millis;
        Some(match to {
            "+15550100001" => Self::plain(Behaviour::Echo, Some(ms(300))),
            "+15550100002" => Self::plain(Behaviour::Tone, Some(ms(300))),
            "+15550100003" => Self {
                busy: true,
                ..Self::plain(Behaviour::Silence, None)
            },
            "+15550100004" => Self::plain(Behaviour::Silence, None),
            "+15550100005" => Self {
                decline_after: Some(ms(1_000)),
                ..Self::plain(Behaviour::Silence, None)
            },
            "+15550100006" => Self {
                fail: true,
                ..Self::plain(Behaviour::Silence, None)
            },
            "+15550100007" => Self {
                hangup_after_answer: Some(ms(3_000)),
                ..Self::plain(Behaviour::Tone, Some(ms(300)))
            },
            _ => return None,
        })
    }
}

/// Whether `to` is one of the sim's scripted outbound numbers (the
/// protocol doc's table); any other number gets the default script. With
/// `--dev-trunk` only these stay on the sim (see
/// [`crate::engine::Engine::outbound_carrier`]).
pub fn is_scripted(to: &str) -> bool {
    Script::scripted(to).is_some()
}

/// How the extra delay of an impaired frame is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JitterDistribution {
    /// Uniform in `[0, jitter]`.
    #[default]
    Uniform,
    /// Heavy-tailed: Lomax (Pareto II) with shape 2 and scale `jitter / 4`,
    /// capped at `jitter`: median 0.1 x jitter, 4 % of frames at the cap.
    Pareto,
}

impl JitterDistribution {
    /// Parses `uniform` or `pareto`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "uniform" => Some(Self::Uniform),
            "pareto" => Some(Self::Pareto),
            _ => None,
        }
    }
}

/// Network impairment of the frames a far end sends toward the operator.
///
/// Each frame gets a random extra delay in `[0, jitter_ms]` but keeps its
/// order, like audio over TCP (a WebSocket): a frame is never handed on
/// before the one in front of it, so frames behind a delayed one wait.
/// Independently, each frame is lost with probability `loss_percent / 100`
/// (a lost RTP packet upstream of the service). The draws come from a PRNG
/// seeded with `seed`, so a run is repeatable frame for frame.
///
/// `rtt_ms` impairs the other direction of the path, the round trip the
/// clients measure with `ping` / `pong` on the call's audio socket: the
/// service holds each `pong` that long (see [`SimCarrier::pong_delay`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Impairment {
    /// Largest extra delay, ms (`0..=MAX_JITTER_MS`).
    pub jitter_ms: u32,
    /// Chance of losing a frame, percent (`0..=100`).
    pub loss_percent: f64,
    /// PRNG seed.
    pub seed: u64,
    /// How the delay is drawn.
    pub distribution: JitterDistribution,
    /// Extra round-trip time of the call's audio socket, ms
    /// (`0..=MAX_RTT_MS`): every `pong` is sent this much later.
    pub rtt_ms: u32,
}

impl Impairment {
    /// No delay, no loss, no extra round trip.
    pub fn is_none(&self) -> bool {
        self.jitter_ms == 0 && self.loss_percent <= 0.0 && self.rtt_ms == 0
    }
}

/// SplitMix64: tiny, seedable and stable across crate versions.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Decides the fate of each frame under an [`Impairment`] (also used by
/// the audio socket's dev-only preflight impairment).
#[derive(Debug, Clone)]
pub(crate) struct Impairer {
    cfg: Impairment,
    rng: SplitMix64,
}

impl Impairer {
    pub(crate) fn new(cfg: Impairment) -> Self {
        Self {
            cfg,
            rng: SplitMix64(cfg.seed),
        }
    }

    /// The extra delay of the next frame, or `None` if it is lost. Both
    /// draws are always made, so the sequence depends only on the seed.
    pub(crate) fn next(&mut self) -> Option<Duration> {
        let lost = self.rng.unit() * 100.0 < self.cfg.loss_percent;
        let u = self.rng.unit();
        let max = f64::from(self.cfg.jitter_ms.min(MAX_JITTER_MS));
        let ms = match self.cfg.distribution {
            JitterDistribution::Uniform => u * max,
            // Inverse CDF of Lomax(shape 2, scale max/4); 1 - u is in (0, 1].
            JitterDistribution::Pareto => ((max / 4.0) * ((1.0 - u).powf(-0.5) - 1.0)).min(max),
        };
        (!lost).then(|| Duration::from_secs_f64(ms / 1_000.0))
    }
}

#[derive(Debug, Default)]
struct Observed {
    state: &'static str,
    end_reason: Option<EndReason>,
    dtmf: String,
    frames_heard: u64,
    frames_sent: u64,
    frames_lost: u64,
    impairment: Impairment,
    /// What the far end heard, as it came (μ-law, decoded when served).
    mulaw: Vec<u8>,
    /// How much of it is kept, samples.
    record_cap: usize,
    /// When an inline echo last sent a frame (see [`SimCall::echo_inline`]).
    echoed_at: Option<Instant>,
}

#[derive(Debug)]
enum FarCmd {
    Answer,
    Dtmf(char),
    HangUp(EndReason),
    CallerHangsUp,
    Impair(Impairment),
}

/// One far end.
#[derive(Debug)]
struct SimCall {
    observed: Mutex<Observed>,
    heard: FrameQueue,
    cmd: mpsc::Sender<FarCmd>,
    /// The answered, unimpaired echo: frames go straight back from the
    /// audio socket's task ([`SimCall::echo`]) instead of waking the far
    /// end's task for each one (one task hand-off per frame less on the
    /// path the load benchmark measures). Set and cleared by that task.
    echo_inline: AtomicBool,
    /// Weak: an ended call stays in the registry for its status, its audio
    /// path (and the socket behind it) must not.
    media: Weak<CallMedia>,
}

impl SimCall {
    /// Records `frame` as heard and sends it straight back (the inline
    /// echo); nothing once the call has ended.
    fn echo(&self, frame: Bytes) {
        {
            let mut o = self.observed.lock().expect("sim lock");
            if o.end_reason.is_some() {
                return;
            }
            o.record(&frame);
            o.frames_sent += 1;
            o.echoed_at = Some(Instant::now());
        }
        if let Some(media) = self.media.upgrade() {
            media.to_operator(frame);
        }
    }
}

impl Observed {
    /// A frame the far end heard: counted, and kept while the recording
    /// has room.
    fn record(&mut self, frame: &[u8]) {
        self.frames_heard += 1;
        let room = self.record_cap.saturating_sub(self.mulaw.len());
        self.mulaw
            .extend_from_slice(&frame[..room.min(frame.len())]);
    }
}

/// The leg the engine holds.
#[derive(Debug)]
struct SimLeg {
    call: Arc<SimCall>,
}

impl CarrierLeg for SimLeg {
    fn answer(&self) {
        let _ = self.call.cmd.try_send(FarCmd::Answer);
    }

    fn send_audio(&self, frame: Bytes) {
        if self.call.echo_inline.load(Ordering::Acquire) {
            self.call.echo(frame);
        } else {
            self.call.heard.push(frame);
        }
    }

    fn send_dtmf(&self, digit: char) {
        let _ = self.call.cmd.try_send(FarCmd::Dtmf(digit));
    }

    fn hang_up(&self, reason: EndReason) {
        {
            let mut o = self.call.observed.lock().expect("sim lock");
            if o.end_reason.is_none() {
                o.end_reason = Some(reason);
                o.state = "ended";
            }
        }
        let _ = self.call.cmd.try_send(FarCmd::HangUp(reason));
    }
}

/// What `GET /dev/sim/calls/{sid}` reports.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimCallStatus {
    /// The call.
    pub call_sid: String,
    /// `ringing`, `answered` or `ended`.
    pub state: String,
    /// Why it ended, once it has.
    pub end_reason: Option<EndReason>,
    /// Digits received, in order.
    pub dtmf: String,
    /// Audio frames heard.
    pub frames_heard: u64,
    /// Audio frames handed toward the operator (after impairment).
    pub frames_sent: u64,
    /// Audio frames the impairment dropped.
    pub frames_lost: u64,
    /// The impairment in force (all zero: none).
    pub impairment: Impairment,
}

/// Why the sim has no status or recording for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimLookupError {
    /// Never seen, or ended so long ago that it was forgotten; `forgotten`
    /// says how many ended calls the sim has forgotten so far (it does not
    /// remember which).
    Unknown {
        /// Ended calls forgotten so far.
        forgotten: u64,
    },
    /// The call ended and its status is kept, but not its recording.
    RecordingDropped,
}

impl fmt::Display for SimLookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown { forgotten: 0 } => f.write_str("no such sim call"),
            Self::Unknown { forgotten } => write!(
                f,
                "no such sim call: unknown, or one of the {forgotten} ended calls forgotten \
                 (the sim keeps the {KEEP_ENDED} most recent ended calls)"
            ),
            Self::RecordingDropped => write!(
                f,
                "recording no longer kept (the sim keeps the recordings of the \
                 {KEEP_RECORDINGS} most recent ended calls; the status is still available)"
            ),
        }
    }
}

impl std::error::Error for SimLookupError {}

/// The final status of an ended call whose recording was dropped: what
/// [`SimCallStatus`] reports, without the PCM and in as few bytes as cheap.
#[derive(Debug)]
struct Archived {
    state: &'static str,
    end_reason: Option<EndReason>,
    dtmf: Box<str>,
    frames_heard: u64,
    frames_sent: u64,
    frames_lost: u64,
    impairment: Impairment,
}

impl Archived {
    fn status(&self, call_sid: &str) -> SimCallStatus {
        SimCallStatus {
            call_sid: call_sid.to_owned(),
            state: self.state.to_owned(),
            end_reason: self.end_reason,
            dtmf: self.dtmf.to_string(),
            frames_heard: self.frames_heard,
            frames_sent: self.frames_sent,
            frames_lost: self.frames_lost,
            impairment: self.impairment,
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    /// Live far ends, and the [`KEEP_RECORDINGS`] most recently ended ones
    /// (with their recordings).
    calls: HashMap<String, Arc<SimCall>>,
    /// The ended calls in `calls`, oldest first.
    recorded: VecDeque<String>,
    /// Older ended calls, final status only, up to [`KEEP_ENDED`] in all
    /// with `recorded`. The sid is shared by the map and the order.
    archived: HashMap<Arc<str>, Archived>,
    /// The keys of `archived`, oldest first.
    archived_order: VecDeque<Arc<str>>,
    /// Ended calls forgotten altogether so far.
    forgotten: u64,
}

impl Registry {
    /// `call_sid` ended: keep its recording for a while, then only its final
    /// status, then forget it.
    fn ended(&mut self, call_sid: String) {
        self.recorded.push_back(call_sid);
        while self.recorded.len() > KEEP_RECORDINGS {
            let Some(old) = self.recorded.pop_front() else {
                break;
            };
            let Some(call) = self.calls.remove(&old) else {
                continue;
            };
            let o = call.observed.lock().expect("sim lock");
            let sid: Arc<str> = old.into();
            self.archived.insert(
                sid.clone(),
                Archived {
                    state: o.state,
                    end_reason: o.end_reason,
                    dtmf: o.dtmf.as_str().into(),
                    frames_heard: o.frames_heard,
                    frames_sent: o.frames_sent,
                    frames_lost: o.frames_lost,
                    impairment: o.impairment,
                },
            );
            self.archived_order.push_back(sid);
        }
        while self.archived_order.len() > KEEP_ENDED.saturating_sub(KEEP_RECORDINGS) {
            if let Some(old) = self.archived_order.pop_front() {
                self.archived.remove(&old);
                self.forgotten += 1;
            }
        }
    }

    fn unknown(&self) -> SimLookupError {
        SimLookupError::Unknown {
            forgotten: self.forgotten,
        }
    }
}

/// The simulated carrier.
#[derive(Debug)]
pub struct SimCarrier {
    registry: Arc<Mutex<Registry>>,
    /// What preflight echo sessions started from now on suffer (dev only,
    /// `POST /dev/sim/preflight/impair`).
    preflight: Mutex<Impairment>,
    /// Samples of each call's audio the far end records.
    record_cap: usize,
}

impl Default for SimCarrier {
    fn default() -> Self {
        Self::recording(DEFAULT_RECORD_SECS)
    }
}

impl SimCarrier {
    /// A sim network with no calls, recording the first
    /// [`DEFAULT_RECORD_SECS`] of each.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sim network recording the first `secs` seconds of each call (0:
    /// none, as in load runs: a recording costs 8 KiB a second of call).
    pub fn recording(secs: u32) -> Self {
        Self {
            registry: Arc::default(),
            preflight: Mutex::default(),
            record_cap: 8_000 * secs as usize,
        }
    }

    fn spawn(
        &self,
        call_sid: &str,
        script: Script,
        inbound: bool,
        events: EventSender,
        media: Arc<CallMedia>,
    ) -> Arc<SimCall> {
        let (cmd_tx, cmd_rx) = mpsc::channel(32);
        let call = Arc::new(SimCall {
            observed: Mutex::new(Observed {
                state: "ringing",
                record_cap: self.record_cap,
                ..Observed::default()
            }),
            heard: FrameQueue::new(HEARD_QUEUE_FRAMES),
            cmd: cmd_tx,
            echo_inline: AtomicBool::new(false),
            media: Arc::downgrade(&media),
        });
        self.registry
            .lock()
            .expect("sim lock")
            .calls
            .insert(call_sid.to_owned(), call.clone());
        let far = FarEnd {
            call: call.clone(),
            script,
            inbound,
            events,
            media,
            cmd: cmd_rx,
            registry: self.registry.clone(),
            call_sid: call_sid.to_owned(),
        };
        tokio::spawn(far.run());
        call
    }

    /// Starts an inbound call from `from` to `to`; hand the result to the
    /// engine.
    pub fn start_inbound(
        &self,
        call_sid: &str,
        from: &str,
        to: &str,
        behaviour: Behaviour,
    ) -> InboundCall {
        self.start_inbound_script(call_sid, from, to, Script::plain(behaviour, None))
    }

    /// Starts an inbound call whose far end loops `clip` (8 kHz G.711
    /// μ-law, 1..=[`MAX_CLIP_BYTES`] bytes; the caller checks the bounds, a
    /// trailing part frame is padded with silence).
    pub fn start_inbound_playing(
        &self,
        call_sid: &str,
        from: &str,
        to: &str,
        clip: &[u8],
    ) -> InboundCall {
        let mut frames = clip.to_vec();
        frames.resize(
            clip.len().div_ceil(FRAME_BYTES).max(1) * FRAME_BYTES,
            tone::SILENCE,
        );
        let script = Script {
            clip: Some(frames.into()),
            ..Script::plain(Behaviour::Play, None)
        };
        self.start_inbound_script(call_sid, from, to, script)
    }

    fn start_inbound_script(
        &self,
        call_sid: &str,
        from: &str,
        to: &str,
        script: Script,
    ) -> InboundCall {
        let (tx, events): (EventSender, EventReceiver) = mpsc::channel(EVENT_QUEUE);
        let media = CallMedia::new();
        let call = self.spawn(call_sid, script, true, tx, media.clone());
        InboundCall {
            call_sid: call_sid.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            leg: Arc::new(SimLeg { call }),
            events,
            media,
            via: Via::Sim,
        }
    }

    /// The far end of `call_sid`, if the sim still knows it.
    fn call(&self, call_sid: &str) -> Option<Arc<SimCall>> {
        let registry = self.registry.lock().expect("sim lock");
        registry.calls.get(call_sid).cloned()
    }

    /// The caller of an inbound call hangs up.
    pub fn caller_hangs_up(&self, call_sid: &str) -> bool {
        match self.call(call_sid) {
            Some(c) => {
                let _ = c.cmd.try_send(FarCmd::CallerHangsUp);
                true
            }
            None => false,
        }
    }

    /// Impairs what the far end of `call_sid` sends from now on (replacing
    /// any earlier impairment; all zero turns it off). False if the call is
    /// unknown or over.
    pub fn impair(&self, call_sid: &str, impairment: Impairment) -> bool {
        match self.call(call_sid) {
            Some(c) if c.cmd.try_send(FarCmd::Impair(impairment)).is_ok() => {
                // In force at once for the audio socket's pongs (the far
                // end's task records it too, but a ping may come first).
                c.observed.lock().expect("sim lock").impairment = impairment;
                true
            }
            _ => false,
        }
    }

    /// How long the service holds a `pong` on `call_sid`'s audio socket:
    /// the `rtt_ms` of the call's impairment, `None` when there is none (or
    /// the call is not the sim's). Dev only: nothing but the impairment
    /// endpoint sets it.
    pub fn pong_delay(&self, call_sid: &str) -> Option<Duration> {
        let call = self.call(call_sid)?;
        let rtt = call.observed.lock().expect("sim lock").impairment.rtt_ms;
        (rtt > 0).then(|| Duration::from_millis(u64::from(rtt.min(MAX_RTT_MS))))
    }

    /// Impairs the echo of every preflight session started from now on
    /// (replacing any earlier impairment; all zero turns it off). Sessions
    /// already running keep theirs.
    pub fn impair_preflight(&self, impairment: Impairment) {
        *self.preflight.lock().expect("sim lock") = impairment;
    }

    /// The impairment a preflight session starting now gets.
    pub fn preflight_impairment(&self) -> Impairment {
        *self.preflight.lock().expect("sim lock")
    }

    /// The far end's view of a call: live, or one of the [`KEEP_ENDED`]
    /// most recently ended.
    pub fn status(&self, call_sid: &str) -> Result<SimCallStatus, SimLookupError> {
        let call = {
            let registry = self.registry.lock().expect("sim lock");
            match registry.calls.get(call_sid) {
                Some(c) => c.clone(),
                None => {
                    return match registry.archived.get(call_sid) {
                        Some(a) => Ok(a.status(call_sid)),
                        None => Err(registry.unknown()),
                    };
                }
            }
        };
        let o = call.observed.lock().expect("sim lock");
        Ok(SimCallStatus {
            call_sid: call_sid.to_owned(),
            state: o.state.to_owned(),
            end_reason: o.end_reason,
            dtmf: o.dtmf.clone(),
            frames_heard: o.frames_heard,
            frames_sent: o.frames_sent,
            frames_lost: o.frames_lost,
            impairment: o.impairment,
        })
    }

    /// What the far end heard, as an 8 kHz 16-bit mono WAV file: live calls
    /// and the [`KEEP_RECORDINGS`] most recently ended.
    pub fn recording_wav(&self, call_sid: &str) -> Result<Vec<u8>, SimLookupError> {
        let call = {
            let registry = self.registry.lock().expect("sim lock");
            match registry.calls.get(call_sid) {
                Some(c) => c.clone(),
                None if registry.archived.contains_key(call_sid) => {
                    return Err(SimLookupError::RecordingDropped);
                }
                None => return Err(registry.unknown()),
            }
        };
        let o = call.observed.lock().expect("sim lock");
        Ok(wav(&o.mulaw))
    }
}

impl Carrier for SimCarrier {
    fn name(&self) -> &str {
        "sim"
    }

    /// Never fails at once: the sim's failing numbers fail like a real
    /// network does, a moment after the call was placed.
    fn place_call(
        &self,
        req: OutboundRequest,
        events: EventSender,
        media: Arc<CallMedia>,
    ) -> BoxFuture<'_, Result<Arc<dyn CarrierLeg>, EndCause>> {
        let script = Script::for_number(&req.to);
        let call = self.spawn(&req.call_sid, script, false, events, media);
        let leg: Arc<dyn CarrierLeg> = Arc::new(SimLeg { call });
        Box::pin(std::future::ready(Ok(leg)))
    }
}

struct FarEnd {
    call: Arc<SimCall>,
    script: Script,
    inbound: bool,
    events: EventSender,
    media: Arc<CallMedia>,
    cmd: mpsc::Receiver<FarCmd>,
    registry: Arc<Mutex<Registry>>,
    call_sid: String,
}

fn at(d: Option<Duration>) -> Option<Instant> {
    d.map(|d| Instant::now() + d)
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl FarEnd {
    fn set_state(&self, state: &'static str) {
        let mut o = self.call.observed.lock().expect("sim lock");
        if o.end_reason.is_none() {
            o.state = state;
        }
    }

    fn end(&self, reason: EndReason) {
        let mut o = self.call.observed.lock().expect("sim lock");
        if o.end_reason.is_none() {
            o.end_reason = Some(reason);
        }
        o.state = "ended";
    }

    async fn emit(&self, ev: CarrierEvent) -> bool {
        self.events.send(ev).await.is_ok()
    }

    /// Hands one audio frame toward the operator, on the call's audio
    /// path (not the event channel). False, after ending the call, if the
    /// engine is gone.
    fn send_frame(&self, frame: Bytes) -> bool {
        if self.events.is_closed() {
            self.end(EndReason::Failed);
            return false;
        }
        self.media.to_operator(frame);
        self.call.observed.lock().expect("sim lock").frames_sent += 1;
        true
    }

    /// Hands `frame` toward the operator through the impairment, if any:
    /// now, or queued in `delayed` behind the frames in front of it. False,
    /// after ending the call, if the engine is gone.
    fn hand_on(
        &self,
        frame: Bytes,
        impairer: &mut Option<Impairer>,
        delayed: &mut VecDeque<(Instant, Bytes)>,
    ) -> bool {
        let now = Instant::now();
        let release = match impairer.as_mut().map(Impairer::next) {
            // Lost on the way.
            Some(None) => {
                self.call.observed.lock().expect("sim lock").frames_lost += 1;
                return true;
            }
            Some(Some(extra)) => now + extra,
            None => now,
        };
        // In order: never before the frame in front of it.
        let release = delayed.back().map_or(release, |d| release.max(d.0));
        if release <= now && delayed.is_empty() {
            return self.send_frame(frame);
        }
        if delayed.len() >= MAX_DELAYED {
            delayed.pop_front();
        }
        delayed.push_back((release, frame));
        true
    }

    async fn run(mut self) {
        self.script_loop().await;
        self.call.echo_inline.store(false, Ordering::Release);
        self.call.heard.clear();
        self.registry
            .lock()
            .expect("sim lock")
            .ended(std::mem::take(&mut self.call_sid));
    }

    async fn script_loop(&mut self) {
        if !self.inbound {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.script.fail {
                self.end(EndReason::Failed);
                self.emit(CarrierEvent::Ended(EndCause::failed(
                    None,
                    "sim: carrier error",
                )))
                .await;
                return;
            }
            if self.script.busy {
                self.end(EndReason::Rejected);
                self.emit(CarrierEvent::Ended(EndCause::Busy)).await;
                return;
            }
        }
        let mut answer_at = at(self.script.answer_after);
        let decline_at = at(self.script.decline_after);
        let mut hangup_at: Option<Instant> = None;
        let mut answered = false;
        let mut tone = tone::Tone::new(440.0);
        let mut clicks: u64 = 0;
        // Where the `play` behaviour is in its clip (bytes, frame aligned).
        let mut clip_at: usize = 0;
        // An echo sends what it hears when it hears it; the others play at
        // their own 20 ms pace.
        let echo = self.script.behaviour == Behaviour::Echo;
        // When an answered echo sends a frame of silence unless it has
        // echoed something first (see ECHO_KEEPALIVE).
        let mut keepalive_at: Option<Instant> = None;
        let mut impairer: Option<Impairer> = None;
        // Impaired frames waiting for their release time, in order.
        let mut delayed: VecDeque<(Instant, Bytes)> = VecDeque::new();
        // A phone's audio clock does not stop while this process is busy:
        // ticks missed under load are made up at once (a burst, as a real
        // RTP sender catches up), so the far end makes 50 frames a second
        // on average and a client never counts frames that were never made
        // as lost. (`Delay` would shift the grid and drop them for good.)
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        loop {
            // Inline only with nothing queued or held back here, so frames
            // stay in order (but for one racing the switch itself).
            let inline = echo
                && answered
                && impairer.is_none()
                && delayed.is_empty()
                && self.call.heard.is_empty();
            self.call.echo_inline.store(inline, Ordering::Release);
            tokio::select! {
                cmd = self.cmd.recv() => match cmd {
                    Some(FarCmd::Answer) if self.inbound && !answered => {
                        answered = true;
                        self.set_state("answered");
                        hangup_at = at(self.script.hangup_after_answer);
                        keepalive_at = at(echo.then_some(ECHO_KEEPALIVE));
                    }
                    Some(FarCmd::Answer) => {}
                    Some(FarCmd::Dtmf(d)) => {
                        self.call.observed.lock().expect("sim lock").dtmf.push(d);
                    }
                    Some(FarCmd::HangUp(reason)) => {
                        self.end(reason);
                        return;
                    }
                    Some(FarCmd::CallerHangsUp) => {
                        self.end(EndReason::RemoteHangup);
                        self.emit(CarrierEvent::Ended(EndCause::RemoteHangup)).await;
                        return;
                    }
                    Some(FarCmd::Impair(cfg)) => {
                        self.call.observed.lock().expect("sim lock").impairment = cfg;
                        impairer = (!cfg.is_none()).then(|| Impairer::new(cfg));
                    }
                    None => {
                        self.end(EndReason::Failed);
                        return;
                    }
                },
                _ = sleep_opt(answer_at) => {
                    answer_at = None;
                    answered = true;
                    self.set_state("answered");
                    hangup_at = at(self.script.hangup_after_answer);
                    keepalive_at = at(echo.then_some(ECHO_KEEPALIVE));
                    if !self.emit(CarrierEvent::Answered).await {
                        return;
                    }
                }
                _ = sleep_opt(decline_at) => {
                    self.end(EndReason::Rejected);
                    self.emit(CarrierEvent::Ended(EndCause::Declined)).await;
                    return;
                }
                _ = sleep_opt(hangup_at) => {
                    self.end(EndReason::RemoteHangup);
                    self.emit(CarrierEvent::Ended(EndCause::RemoteHangup)).await;
                    return;
                }
                _ = self.call.heard.ready() => {
                    while let Some(frame) = self.call.heard.pop() {
                        if !answered {
                            continue;
                        }
                        self.call.observed.lock().expect("sim lock").record(&frame);
                        // Straight back, no queue and no clock of its own:
                        // a burst (a sender or the service catching up after
                        // a stall) returns as a burst and leaves no delay.
                        if echo {
                            keepalive_at = at(Some(ECHO_KEEPALIVE));
                            if !self.hand_on(frame, &mut impairer, &mut delayed) {
                                return;
                            }
                        }
                    }
                }
                _ = sleep_opt(keepalive_at) => {
                    // Echoed inline since: due a keepalive after that echo.
                    let echoed = self.call.observed.lock().expect("sim lock").echoed_at;
                    if let Some(due) = echoed.map(|t| t + ECHO_KEEPALIVE).filter(|&due| due > Instant::now()) {
                        keepalive_at = Some(due);
                        continue;
                    }
                    keepalive_at = at(Some(ECHO_KEEPALIVE));
                    let silence = Bytes::from_static(&[tone::SILENCE; FRAME_BYTES]);
                    if !self.hand_on(silence, &mut impairer, &mut delayed) {
                        return;
                    }
                }
                _ = sleep_opt(delayed.front().map(|d| d.0)) => {
                    let now = Instant::now();
                    while delayed.front().is_some_and(|d| d.0 <= now) {
                        let Some((_, frame)) = delayed.pop_front() else { break };
                        if !self.send_frame(frame) {
                            return;
                        }
                    }
                }
                _ = tick.tick(), if answered && !echo => {
                    let frame = match self.script.behaviour {
                        // Not paced: handled as frames arrive.
                        Behaviour::Echo => continue,
                        Behaviour::Tone => {
                            let mut buf = vec![0u8; FRAME_BYTES];
                            tone.fill(&mut buf);
                            Bytes::from(buf)
                        }
                        Behaviour::Silence => Bytes::from_static(&[tone::SILENCE; FRAME_BYTES]),
                        Behaviour::Click => {
                            let mut buf = vec![tone::SILENCE; FRAME_BYTES];
                            if clicks % CLICK_EVERY_FRAMES == 0 {
                                buf[0] = audin_codec::mulaw::encode(i16::MAX);
                            }
                            clicks += 1;
                            Bytes::from(buf)
                        }
                        Behaviour::Play => match &self.script.clip {
                            Some(clip) if clip.len() >= FRAME_BYTES => {
                                if clip_at + FRAME_BYTES > clip.len() {
                                    clip_at = 0;
                                }
                                let frame = Bytes::copy_from_slice(&clip[clip_at..clip_at + FRAME_BYTES]);
                                clip_at += FRAME_BYTES;
                                frame
                            }
                            // Only reachable through a script built without
                            // a clip: play silence rather than panic.
                            _ => Bytes::from_static(&[tone::SILENCE; FRAME_BYTES]),
                        },
                    };
                    if !self.hand_on(frame, &mut impairer, &mut delayed) {
                        return;
                    }
                }
            }
        }
    }
}

/// 16-bit mono 8 kHz WAV of μ-law samples.
fn wav(mulaw: &[u8]) -> Vec<u8> {
    let data_len = (mulaw.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + mulaw.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8_000u32.to_le_bytes());
    out.extend_from_slice(&16_000u32.to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &b in mulaw {
        out.extend_from_slice(&audin_codec::mulaw::decode(b).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answered inbound echo call of `sim` that heard `frames` frames of
    /// a 1 kHz-ish pattern: its recording.
    async fn recorded(sim: &SimCarrier, frames: usize) -> Vec<u8> {
        let call = sim.start_inbound("CArec", "+14155550100", "+390299999999", Behaviour::Echo);
        call.leg.answer();
        // The far end's task takes the answer, then echoes inline.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let frame: Vec<u8> = (0..FRAME_BYTES).map(|i| [0x00, 0x80][i % 2]).collect();
        for _ in 0..frames {
            call.leg.send_audio(Bytes::from(frame.clone()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        sim.recording_wav("CArec").unwrap()
    }

    #[tokio::test]
    async fn the_recording_keeps_what_was_heard_up_to_its_cap() {
        // 44-byte header, then 16-bit samples decoded from the μ-law heard.
        let wav = recorded(&SimCarrier::new(), 3).await;
        assert_eq!(wav.len(), 44 + 3 * FRAME_BYTES * 2);
        let first = i16::from_le_bytes([wav[44], wav[45]]);
        let second = i16::from_le_bytes([wav[46], wav[47]]);
        assert_eq!(first, audin_codec::mulaw::decode(0x00));
        assert_eq!(second, audin_codec::mulaw::decode(0x80));
        // `--sim-record-secs 0` (load runs): nothing is kept.
        assert_eq!(recorded(&SimCarrier::recording(0), 3).await.len(), 44);
        // A cap of one second keeps 8,000 samples.
        let wav = recorded(&SimCarrier::recording(1), 60).await;
        assert_eq!(wav.len(), 44 + 8_000 * 2);
    }

    fn draws(cfg: Impairment, n: usize) -> Vec<Option<Duration>> {
        let mut imp = Impairer::new(cfg);
        (0..n).map(|_| imp.next()).collect()
    }

    #[test]
    fn impairer_is_bounded_repeatable_and_loses_the_configured_share() {
        let cfg = Impairment {
            jitter_ms: 30,
            loss_percent: 5.0,
            seed: 7,
            distribution: JitterDistribution::Uniform,
            rtt_ms: 0,
        };
        let a = draws(cfg, 10_000);
        assert_eq!(a, draws(cfg, 10_000), "same seed, same fates");
        assert_ne!(a, draws(Impairment { seed: 8, ..cfg }, 10_000));
        let lost = a.iter().filter(|d| d.is_none()).count();
        assert!((400..=600).contains(&lost), "lost {lost} of 10000 at 5 %");
        let ms: Vec<f64> = a.iter().flatten().map(|d| d.as_secs_f64() * 1e3).collect();
        assert!(ms.iter().all(|&d| (0.0..=30.0).contains(&d)));
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        assert!((14.0..=16.0).contains(&mean), "uniform mean {mean}");
    }

    #[test]
    fn pareto_is_heavy_tailed_and_capped() {
        let cfg = Impairment {
            jitter_ms: 100,
            loss_percent: 0.0,
            seed: 1,
            distribution: JitterDistribution::Pareto,
            rtt_ms: 0,
        };
        let mut ms: Vec<f64> = draws(cfg, 10_000)
            .into_iter()
            .map(|d| d.expect("no loss").as_secs_f64() * 1e3)
            .collect();
        ms.sort_by(f64::total_cmp);
        let median = ms[5_000];
        let capped = ms.iter().filter(|&&d| d >= 100.0).count();
        assert!((8.0..=12.0).contains(&median), "median {median}");
        assert!((300..=500).contains(&capped), "{capped} at the cap");
        assert!(ms[9_999] <= 100.0);
    }

    #[test]
    fn no_impairment_means_no_delay_and_no_loss() {
        let cfg = Impairment {
            seed: 3,
            ..Impairment::default()
        };
        assert!(cfg.is_none());
        assert!(draws(cfg, 100).iter().all(|d| *d == Some(Duration::ZERO)));
    }
}

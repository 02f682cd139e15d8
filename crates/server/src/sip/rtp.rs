//! RTP for one G.711 call leg: the 20 ms sender, the ingress reorder/jitter
//! buffer, and µ-law ↔ A-law conversion.
//!
//! - [`RtpSender`]: one stream (fixed SSRC, sequence, 8 kHz timestamp
//!   advancing 160 per 20 ms tick, marker bit on the first packet and on the
//!   first audio after a pause or a DTMF event). It packetises a 160-byte
//!   µ-law frame (converted to A-law if that was negotiated) into one
//!   reusable buffer, and sends RFC 4733 events in the same SSRC and
//!   sequence space with audio paused ([`super::dtmf::DtmfSender`]).
//! - [`JitterBuffer`]: takes packets in any order, with duplicates, gaps,
//!   sequence and timestamp wrap-around, SSRC changes and comfort noise,
//!   and on every 20 ms tick ([`JitterBuffer::pop`]) yields exactly one
//!   frame of µ-law or says why there is none ([`Playout`]).
//! - [`RtpIngress`]: parses datagrams and routes them to the jitter buffer
//!   or the DTMF receiver; knows when the last packet came (media timeout).
//! - [`pcmu_to_pcma`], [`pcma_to_pcmu`]: table conversion built at compile
//!   time from `audin-codec`'s G.191 reference coders.
//!
//! No I/O and no clock: times are `u64` milliseconds on the caller's clock,
//! passed in. The carrier task owns the UDP socket and the 20 ms tick.

use std::fmt;
use std::ops::RangeInclusive;

use audin_codec::{alaw, mulaw};
use rtp_types::{RtpPacket, RtpPacketBuilder, RtpParseError};

use super::dtmf::{DtmfDigit, DtmfError, DtmfReceiver, DtmfReceiverStats, DtmfSender};
use super::sdp::Negotiated;
use super::{Codec, FRAME_MS, FRAME_SAMPLES, FRAME_TS, PT_CN};

// ---------------------------------------------------------------------------
// G.711 conversion

const fn mu_to_a_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw::encode_reference(mulaw::decode_reference(i as u8));
        i += 1;
    }
    t
}

const fn a_to_mu_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = mulaw::encode_reference(alaw::decode_reference(i as u8));
        i += 1;
    }
    t
}

/// µ-law code → the A-law code nearest to the same linear value.
static MU_TO_A: [u8; 256] = mu_to_a_table();
/// A-law code → the µ-law code nearest to the same linear value.
static A_TO_MU: [u8; 256] = a_to_mu_table();

/// Converts µ-law bytes to A-law; returns how many were converted (the
/// shorter of the two lengths).
pub fn pcmu_to_pcma(input: &[u8], output: &mut [u8]) -> usize {
    let n = input.len().min(output.len());
    for (o, &i) in output[..n].iter_mut().zip(&input[..n]) {
        *o = MU_TO_A[usize::from(i)];
    }
    n
}

/// Converts A-law bytes to µ-law; returns how many were converted (the
/// shorter of the two lengths).
pub fn pcma_to_pcmu(input: &[u8], output: &mut [u8]) -> usize {
    let n = input.len().min(output.len());
    for (o, &i) in output[..n].iter_mut().zip(&input[..n]) {
        *o = A_TO_MU[usize::from(i)];
    }
    n
}

/// Writes `input` in `codec` as µ-law into `output` (copy or conversion).
fn to_mulaw(codec: Codec, input: &[u8], output: &mut [u8]) {
    match codec {
        Codec::Pcmu => output.copy_from_slice(input),
        Codec::Pcma => {
            pcma_to_pcmu(input, output);
        }
    }
}

// ---------------------------------------------------------------------------
// Sender

/// Length of the RTP header we write (no CSRC, no extension).
pub const RTP_HEADER_LEN: usize = 12;
/// Largest packet the sender writes: a header and one 20 ms frame.
pub const MAX_PACKET_LEN: usize = RTP_HEADER_LEN + FRAME_SAMPLES;

/// How a [`RtpSender`] is set up for one call leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// Our SSRC: random, drawn by the caller (RFC 3550 §8).
    pub ssrc: u32,
    /// The first sequence number: random (RFC 3550 §5.1).
    pub first_sequence: u16,
    /// The first timestamp: random (RFC 3550 §5.1).
    pub first_timestamp: u32,
    /// The codec we send.
    pub codec: Codec,
    /// Its payload type in the far end's description.
    pub payload_type: u8,
    /// The far end's telephone-event payload type, if negotiated.
    pub telephone_event: Option<u8>,
    /// Length of each DTMF event's tone (ms).
    pub dtmf_event_ms: u32,
}

impl SenderConfig {
    /// The sender for what was negotiated; `ssrc`, `first_sequence` and
    /// `first_timestamp` are the caller's random draws.
    pub fn for_negotiated(
        negotiated: &Negotiated,
        ssrc: u32,
        first_sequence: u16,
        first_timestamp: u32,
    ) -> Self {
        SenderConfig {
            ssrc,
            first_sequence,
            first_timestamp,
            codec: negotiated.codec,
            payload_type: negotiated.payload_type,
            telephone_event: negotiated.telephone_event,
            dtmf_event_ms: super::dtmf::DEFAULT_EVENT_MS,
        }
    }
}

/// What a [`RtpSender::tick`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// The operator's audio.
    Audio,
    /// Silence: the operator sent nothing this tick (muted, or a gap). RTP
    /// never stops, so NATs and the carrier's media timeout stay happy.
    Silence,
    /// A telephone-event packet (the tick's audio was discarded).
    Dtmf,
}

/// One packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// What it carries.
    pub kind: PacketKind,
    /// The datagram (borrowed from the sender's buffer until the next
    /// call).
    pub bytes: &'a [u8],
}

/// Counters of a [`RtpSender`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Packets produced (RTCP's sender packet count).
    pub packets: u64,
    /// Payload octets produced (RTCP's sender octet count).
    pub octets: u64,
    /// Of the packets, telephone-event ones.
    pub dtmf_packets: u64,
    /// Ticks skipped with [`RtpSender::skip`].
    pub skipped: u64,
}

/// The RTP sender of one stream, driven by the caller's 20 ms tick.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    codec: Codec,
    payload_type: u8,
    telephone_event: Option<u8>,
    /// The next audio packet starts a talkspurt.
    marker: bool,
    dtmf: DtmfSender,
    buf: [u8; MAX_PACKET_LEN],
    stats: SenderStats,
}

impl RtpSender {
    /// A sender whose first packet carries the marker bit.
    pub fn new(config: SenderConfig) -> Self {
        RtpSender {
            ssrc: config.ssrc,
            sequence: config.first_sequence,
            timestamp: config.first_timestamp,
            codec: config.codec,
            payload_type: config.payload_type & 0x7f,
            telephone_event: config.telephone_event.map(|pt| pt & 0x7f),
            marker: true,
            dtmf: DtmfSender::new(config.dtmf_event_ms),
            buf: [0; MAX_PACKET_LEN],
            stats: SenderStats::default(),
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sequence number of the next packet.
    pub fn next_sequence(&self) -> u16 {
        self.sequence
    }

    /// The timestamp of the next tick.
    pub fn next_timestamp(&self) -> u32 {
        self.timestamp
    }

    /// The codec we send.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Counters.
    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    /// Switches codec or payload types after a re-INVITE; the stream
    /// (SSRC, sequence, timestamp) goes on.
    pub fn set_format(&mut self, codec: Codec, payload_type: u8, telephone_event: Option<u8>) {
        self.codec = codec;
        self.payload_type = payload_type & 0x7f;
        self.telephone_event = telephone_event.map(|pt| pt & 0x7f);
    }

    /// Queues a DTMF digit: it goes out as RFC 4733 events from the next
    /// tick on, in place of audio.
    pub fn send_dtmf(&mut self, digit: char) -> Result<(), DtmfError> {
        if self.telephone_event.is_none() {
            return Err(DtmfError::NotNegotiated);
        }
        self.dtmf.queue(digit)
    }

    /// Whether DTMF is being sent or waiting (audio is paused meanwhile).
    pub fn dtmf_busy(&self) -> bool {
        self.dtmf.is_busy()
    }

    /// One 20 ms tick: the packet to send now. `frame` is the operator's
    /// µ-law (`None` → silence). During a DTMF event the frame is dropped
    /// and the event packet is returned instead. Never allocates.
    pub fn tick(&mut self, frame: Option<&[u8; FRAME_SAMPLES]>) -> Outgoing<'_> {
        let tick_ts = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(FRAME_TS);
        let event = match self.telephone_event {
            Some(event_pt) => self.dtmf.poll(tick_ts).map(|e| (event_pt, e)),
            None => None,
        };
        if let Some((event_pt, event)) = event {
            let payload = event.payload.to_bytes();
            let len = self.write(event_pt, event.marker, event.timestamp, &payload);
            // Audio after the event starts a new talkspurt (RFC 4733 §2.6).
            self.marker = true;
            self.stats.dtmf_packets += 1;
            return Outgoing {
                kind: PacketKind::Dtmf,
                bytes: &self.buf[..len],
            };
        }
        let mut payload = [self.codec.silence(); FRAME_SAMPLES];
        let kind = match frame {
            Some(frame) => {
                match self.codec {
                    Codec::Pcmu => payload = *frame,
                    Codec::Pcma => {
                        pcmu_to_pcma(frame, &mut payload);
                    }
                }
                PacketKind::Audio
            }
            None => PacketKind::Silence,
        };
        let marker = std::mem::take(&mut self.marker);
        let len = self.write(self.payload_type, marker, tick_ts, &payload);
        Outgoing {
            kind,
            bytes: &self.buf[..len],
        }
    }

    /// A 20 ms tick in which nothing may be sent (the far end put the call
    /// on hold with `recvonly`/`inactive`/`c=0.0.0.0`). The timestamp keeps
    /// running with real time; the next packet gets the marker bit.
    pub fn skip(&mut self) {
        self.timestamp = self.timestamp.wrapping_add(FRAME_TS);
        self.marker = true;
        self.stats.skipped += 1;
    }

    fn write(&mut self, payload_type: u8, marker: bool, timestamp: u32, payload: &[u8]) -> usize {
        let builder = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(payload_type)
            .marker_bit(marker)
            .sequence_number(self.sequence)
            .timestamp(timestamp)
            .ssrc(self.ssrc)
            .payload(payload);
        // The payload type is masked to 7 bits and the buffer fits a header
        // and a frame: the builder's checks cannot fail.
        let len = builder
            .write_into(&mut self.buf)
            .expect("an RTP header and at most one frame fit the buffer");
        self.sequence = self.sequence.wrapping_add(1);
        self.stats.packets += 1;
        self.stats.octets += payload.len() as u64;
        len
    }
}

// ---------------------------------------------------------------------------
// Jitter buffer

/// Frames the jitter buffer holds (320 ms): far more than the target, so
/// bursts after a network stall are kept rather than dropped.
pub const JITTER_SLOTS: usize = 16;
/// Default target playout delay.
///
/// Small on purpose: the operator's SDK (browser worklet or native) already
/// runs an adaptive jitter buffer (20-60 ms, `audin_codec::JitterBuffer`)
/// after the WebSocket hop, and every ms here adds to mouth-to-ear delay.
/// This stage only has to put trunk packets back in order and absorb the
/// trunk's own jitter, which on carrier backbones is well under 20 ms. 40 ms
/// (two frames) absorbs one reordered packet plus 20 ms of jitter. It is the
/// starting point, not a hard limit: a frame that is not there in time while
/// nothing is buffered stretches playout by one frame (`stalls`), and one
/// frame is dropped again once the buffer has held two frames more than the
/// target for a whole second (`dropped`), so spikes and clock drift cost
/// delay for a while instead of audio. `late` is the number to watch if a
/// trunk needs more ([`JitterConfig::target_ms`]).
pub const DEFAULT_TARGET_MS: u32 = 40;
/// Target delays [`JitterConfig`] accepts.
pub const TARGET_MS_RANGE: RangeInclusive<u32> = 20..=200;
/// Late packets in a row that mean the sender's timeline moved (a clock
/// jump, a new media source without a marker): the buffer restarts on the
/// next one instead of dropping everything.
pub const RESYNC_AFTER_LATE: u32 = 3;
/// With nothing buffered and no packet for this long, the stream is idle
/// (hold, silence suppression without CN): playout stops reporting frames
/// as missing and re-primes on the next packet.
pub const IDLE_AFTER_MS: u64 = 200;
/// Largest audio payload accepted: 160 ms (a `maxptime` of 150 is the most
/// seen in trunk offers).
pub const MAX_AUDIO_PAYLOAD: usize = 8 * FRAME_SAMPLES;
/// A forward sequence jump bigger than this restarts the loss counting
/// (RFC 3550 A.1 `MAX_DROPOUT`).
const MAX_DROPOUT: i32 = 3000;
/// Sequence numbers remembered for duplicate detection.
const SEQ_WINDOW: i32 = 64;
/// Pops (1 s) over which the buffer must stay too full before one frame is
/// dropped to reduce the delay.
const COMPRESS_WINDOW: u32 = 50;
const EMPTY: i64 = i64::MIN;
const FRAME: i64 = FRAME_SAMPLES as i64;

/// How a [`JitterBuffer`] reads its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The negotiated codec.
    pub codec: Codec,
    /// Its payload type (the static 0 and 8 are always understood too).
    pub payload_type: u8,
    /// A dynamic comfort-noise payload type besides the static 13.
    pub comfort_noise: Option<u8>,
    /// Playout delay after the first packet of a talkspurt (clamped to
    /// [`TARGET_MS_RANGE`], rounded up to whole frames).
    pub target_ms: u32,
}

impl JitterConfig {
    /// The buffer for what was negotiated, with [`DEFAULT_TARGET_MS`].
    pub fn for_negotiated(negotiated: &Negotiated) -> Self {
        JitterConfig {
            codec: negotiated.codec,
            payload_type: negotiated.payload_type,
            comfort_noise: negotiated.comfort_noise,
            target_ms: DEFAULT_TARGET_MS,
        }
    }
}

/// The fields of an RTP packet the jitter buffer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// SSRC.
    pub ssrc: u32,
    /// Sequence number.
    pub sequence: u16,
    /// Timestamp (8 kHz).
    pub timestamp: u32,
    /// Marker bit (start of a talkspurt).
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Payload, without padding.
    pub payload: &'a [u8],
}

impl<'a> Incoming<'a> {
    /// The fields of a parsed packet.
    pub fn from_packet(packet: &'a RtpPacket<'a>) -> Self {
        Incoming {
            ssrc: packet.ssrc(),
            sequence: packet.sequence_number(),
            timestamp: packet.timestamp(),
            marker: packet.marker_bit(),
            payload_type: packet.payload_type(),
            payload: packet.payload(),
        }
    }
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Audio buffered for playout.
    Stored,
    /// Comfort noise: missing frames from here on are silence, not loss.
    ComfortNoise,
    /// Already received (same sequence number): dropped.
    Duplicate,
    /// Its playout time has passed (or it belongs to the previous SSRC):
    /// dropped.
    Late,
    /// A payload type that is neither our codec nor CN, or an empty or
    /// oversized payload: dropped.
    Ignored {
        /// Its payload type.
        payload_type: u8,
    },
}

/// What [`JitterBuffer::pop`] put in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout {
    /// No stream yet, or priming to the target delay, or idle: silence.
    Waiting,
    /// A received frame (µ-law).
    Audio,
    /// The frame is missing (lost or too late): silence was written; the
    /// caller may conceal it instead (repeat/fade the previous frame).
    Missing,
    /// The far end is in a comfort-noise (or DTMF) period: silence.
    ComfortNoise,
}

/// Counters of a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Audio packets buffered.
    pub received: u64,
    /// Comfort-noise packets.
    pub comfort_noise_packets: u64,
    /// Frames played from received audio.
    pub played: u64,
    /// Frames reported [`Playout::Missing`].
    pub missing: u64,
    /// Frames reported [`Playout::ComfortNoise`].
    pub comfort_noise: u64,
    /// Packets never received, from the sequence numbers (RFC 3550 A.3).
    pub lost: u64,
    /// Packets dropped as late.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicate: u64,
    /// Buffered frames discarded to bound the delay (overflow, drift).
    pub dropped: u64,
    /// Packets with a payload we do not play.
    pub ignored: u64,
    /// Missing frames that were waited for (playout stretched by one
    /// frame) rather than skipped.
    pub stalls: u64,
    /// Playout restarts after the first start: marker bit after silence,
    /// late runs, timestamp jumps, SSRC changes, idle periods.
    pub restarts: u64,
    /// SSRC changes.
    pub ssrc_changes: u64,
    /// Frames buffered ahead of the playout point.
    pub buffered: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Priming { until_ms: u64 },
    Playing,
}

/// Sequence-number bookkeeping: duplicates and loss (RFC 3550 A.1/A.3).
#[derive(Debug, Clone, Copy, Default)]
struct SeqTracker {
    started: bool,
    max: u16,
    ext_max: i64,
    base: i64,
    /// Bit `i`: `ext_max - i` was received.
    seen: u64,
    received: u64,
    lost_before: u64,
}

impl SeqTracker {
    /// Forgets the numbering (new source), keeping the loss counted so far.
    fn reset(&mut self) {
        self.lost_before = self.lost();
        self.started = false;
    }

    fn start(&mut self, seq: u16) {
        self.started = true;
        self.max = seq;
        self.ext_max = i64::from(seq);
        self.base = self.ext_max;
        self.seen = 1;
        self.received = 1;
    }

    /// `true` if `seq` is a duplicate.
    fn check(&mut self, seq: u16) -> bool {
        if !self.started {
            self.start(seq);
            return false;
        }
        // Serial-number arithmetic: correct across the 65535 → 0 wrap.
        let d = i32::from(seq.wrapping_sub(self.max) as i16);
        if d > 0 {
            if d > MAX_DROPOUT {
                self.reset();
                self.start(seq);
                return false;
            }
            self.seen = if d >= SEQ_WINDOW { 0 } else { self.seen << d };
            self.seen |= 1;
            self.ext_max += i64::from(d);
            self.max = seq;
            self.received += 1;
            return false;
        }
        let back = -d;
        if back >= SEQ_WINDOW {
            // Too old to tell; playout will find it late anyway.
            return false;
        }
        let bit = 1u64 << back;
        if self.seen & bit != 0 {
            return true;
        }
        self.seen |= bit;
        self.received += 1;
        false
    }

    fn lost(&self) -> u64 {
        if !self.started {
            return self.lost_before;
        }
        let expected = u64::try_from(self.ext_max - self.base + 1).unwrap_or(0);
        self.lost_before + expected.saturating_sub(self.received)
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Extended frame number held, or [`EMPTY`].
    frame: i64,
    data: [u8; FRAME_SAMPLES],
}

/// Reorders one incoming RTP stream and plays it out one 20 ms frame per
/// [`JitterBuffer::pop`].
///
/// Playout is keyed by RTP timestamp, not sequence number: timestamps are
/// the media clock, so silence suppression (sequence contiguous, timestamp
/// jumps), 10 or 30 ms packets, and packets straddling two frames all land
/// in the right place. Timestamps are extended to 64 bits from the newest
/// one (serial-number arithmetic), so the 2^32 wrap is invisible.
///
/// Playout starts [`JitterConfig::target_ms`] after the first packet of a
/// talkspurt arrived; from then on every pop plays the next frame. A frame
/// not there in time is [`Playout::Missing`] (or
/// [`Playout::ComfortNoise`] after a CN packet or during a DTMF event):
/// with later frames already buffered it is lost and skipped (a packet
/// arriving for it afterwards is late); with nothing buffered the stream is
/// running late, and playout waits one frame for it (see
/// [`DEFAULT_TARGET_MS`]). A new timeline starts on an SSRC change, on a
/// marker bit when nothing is buffered (a new talkspurt: it primes to the
/// target again), after [`RESYNC_AFTER_LATE`] late packets in a row, on a
/// timestamp jump beyond twice its capacity, and after [`IDLE_AFTER_MS`]
/// without packets; frames of the old timeline still buffered are played
/// first (the new one is spliced after them).
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    target_frames: i64,
    slots: [Slot; JITTER_SLOTS],
    phase: Phase,
    started_once: bool,
    ssrc: Option<u32>,
    previous_ssrc: Option<u32>,
    /// Newest raw timestamp and its extended value.
    ts_ref: u32,
    ext_ref: i64,
    /// Extended frame number of the next frame to play.
    play_frame: i64,
    /// Newest audio frame buffered.
    newest_frame: Option<i64>,
    late_run: u32,
    /// The last pop waited for a late frame instead of skipping it.
    stalled: bool,
    /// Pops in the current compression window and the fewest frames
    /// buffered during it.
    window_pops: u32,
    window_min: i64,
    /// Comfort-noise period: frames from `cn_since` up to (not including)
    /// `cn_until` are silence, not loss.
    cn_since: Option<i64>,
    cn_until: Option<i64>,
    last_arrival_ms: Option<u64>,
    seq: SeqTracker,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        let target_ms = config
            .target_ms
            .clamp(*TARGET_MS_RANGE.start(), *TARGET_MS_RANGE.end());
        JitterBuffer {
            config,
            target_frames: i64::from(target_ms.div_ceil(FRAME_MS)),
            slots: [Slot {
                frame: EMPTY,
                data: [mulaw::SILENCE; FRAME_SAMPLES],
            }; JITTER_SLOTS],
            phase: Phase::Idle,
            started_once: false,
            ssrc: None,
            previous_ssrc: None,
            ts_ref: 0,
            ext_ref: 0,
            play_frame: 0,
            newest_frame: None,
            late_run: 0,
            stalled: false,
            window_pops: 0,
            window_min: i64::MAX,
            cn_since: None,
            cn_until: None,
            last_arrival_ms: None,
            seq: SeqTracker::default(),
            stats: JitterStats::default(),
        }
    }

    /// The target delay in ms (after clamping and rounding).
    pub fn target_ms(&self) -> u32 {
        // At most 200 ms: fits.
        u32::try_from(self.target_frames).unwrap_or(u32::MAX) * FRAME_MS
    }

    /// Counters and the current fill.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            lost: self.seq.lost(),
            buffered: u32::try_from(self.buffered_frames()).unwrap_or(u32::MAX),
            ..self.stats
        }
    }

    /// When the last packet (any, even late or duplicate) arrived.
    pub fn last_arrival_ms(&self) -> Option<u64> {
        self.last_arrival_ms
    }

    /// The SSRC being played.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Changes codec or payload types after a re-INVITE (the stream goes
    /// on).
    pub fn set_format(&mut self, codec: Codec, payload_type: u8, comfort_noise: Option<u8>) {
        self.config.codec = codec;
        self.config.payload_type = payload_type;
        self.config.comfort_noise = comfort_noise;
    }

    fn slot_index(frame: i64) -> usize {
        // rem_euclid of a positive modulus is in 0..JITTER_SLOTS.
        frame.rem_euclid(JITTER_SLOTS as i64) as usize
    }

    fn buffered_frames(&self) -> usize {
        if self.phase == Phase::Idle {
            return 0;
        }
        self.slots
            .iter()
            .filter(|s| s.frame != EMPTY && s.frame >= self.play_frame)
            .count()
    }

    fn extend(&mut self, ts: u32) -> i64 {
        let ext = self.ext_ref + i64::from(ts.wrapping_sub(self.ts_ref) as i32);
        if ext > self.ext_ref {
            self.ext_ref = ext;
            self.ts_ref = ts;
        }
        ext
    }

    /// Starts a new playout timeline at `ts` (frame 0), priming to the
    /// target.
    /// Starts a new timeline at timestamp `ts`. With frames still buffered
    /// (a new talkspurt or source while the old one plays out) the new
    /// timeline is spliced right after them, so nothing already received
    /// is thrown away and the depth carries over; with nothing buffered it
    /// starts afresh, priming to the target.
    fn restart(&mut self, now_ms: u64, ts: u32) {
        let splice_after = self
            .newest_frame
            .filter(|_| self.phase != Phase::Idle && self.buffered_frames() > 0);
        self.ts_ref = ts;
        self.late_run = 0;
        self.cn_since = None;
        self.cn_until = None;
        self.stalled = false;
        self.window_pops = 0;
        self.window_min = i64::MAX;
        if self.started_once {
            self.stats.restarts += 1;
        }
        self.started_once = true;
        if let Some(newest) = splice_after {
            self.ext_ref = (newest + 1) * FRAME;
            return;
        }
        for slot in &mut self.slots {
            slot.frame = EMPTY;
        }
        self.ext_ref = 0;
        self.play_frame = 0;
        self.newest_frame = None;
        self.phase = Phase::Priming {
            until_ms: now_ms.saturating_add(self.target_frames as u64 * u64::from(FRAME_MS)),
        };
    }

    fn codec_of(&self, payload_type: u8) -> Option<Codec> {
        if payload_type == self.config.payload_type {
            Some(self.config.codec)
        } else {
            Codec::from_static_payload_type(payload_type)
        }
    }

    fn is_comfort_noise(&self, payload_type: u8) -> bool {
        payload_type == PT_CN || Some(payload_type) == self.config.comfort_noise
    }

    /// Takes one packet that arrived at `now_ms`.
    pub fn push(&mut self, now_ms: u64, packet: &Incoming<'_>) -> Pushed {
        self.last_arrival_ms = Some(now_ms);
        let pt = packet.payload_type;
        let codec = self.codec_of(pt);
        let cn = codec.is_none() && self.is_comfort_noise(pt);
        let bad_len = packet.payload.is_empty() || packet.payload.len() > MAX_AUDIO_PAYLOAD;
        if !cn && (codec.is_none() || bad_len) {
            self.stats.ignored += 1;
            return Pushed::Ignored { payload_type: pt };
        }

        let mut new_source = false;
        match self.ssrc {
            None => self.ssrc = Some(packet.ssrc),
            Some(current) if current == packet.ssrc => {}
            Some(current) => {
                if self.previous_ssrc == Some(packet.ssrc) {
                    // A straggler of the stream we left: do not flip back.
                    self.stats.late += 1;
                    return Pushed::Late;
                }
                self.previous_ssrc = Some(current);
                self.ssrc = Some(packet.ssrc);
                self.stats.ssrc_changes += 1;
                self.seq.reset();
                new_source = true;
            }
        }
        if self.seq.check(packet.sequence) {
            self.stats.duplicate += 1;
            return Pushed::Duplicate;
        }
        if self.phase == Phase::Idle || new_source {
            self.restart(now_ms, packet.timestamp);
        }
        if cn {
            self.stats.comfort_noise_packets += 1;
            self.note_silence_at(packet.timestamp);
            return Pushed::ComfortNoise;
        }
        match codec {
            Some(codec) => self.store(now_ms, packet, codec),
            None => Pushed::Ignored { payload_type: pt },
        }
    }

    /// A telephone-event packet on the played SSRC: the far end pauses its
    /// audio during the event, so the frames it covers are silence, not
    /// loss.
    pub fn note_silence(&mut self, ssrc: u32, timestamp: u32) {
        if self.ssrc == Some(ssrc) && self.phase != Phase::Idle {
            self.note_silence_at(timestamp);
        }
    }

    fn note_silence_at(&mut self, timestamp: u32) {
        let frame = self.extend(timestamp).div_euclid(FRAME);
        if self.newest_frame.is_some_and(|n| frame <= n) {
            return; // Older than audio we already have.
        }
        if self.cn_since.is_none() || self.cn_until.is_some() {
            self.cn_since = Some(frame);
            self.cn_until = None;
        }
    }

    fn store(&mut self, now_ms: u64, packet: &Incoming<'_>, codec: Codec) -> Pushed {
        let len = packet.payload.len() as i64;
        let mut start = self.extend(packet.timestamp);
        let frames_of = |start: i64| (start.div_euclid(FRAME), (start + len - 1).div_euclid(FRAME));
        let (mut first, mut last) = frames_of(start);

        let mut restart = false;
        if packet.marker && self.phase == Phase::Playing && self.buffered_frames() == 0 {
            // A talkspurt after silence: give it the full target depth.
            restart = true;
        } else if last < self.play_frame {
            if matches!(self.phase, Phase::Priming { .. })
                && self
                    .newest_frame
                    .is_none_or(|n| n - first < JITTER_SLOTS as i64)
            {
                // Reordered ahead of the first packet while priming: start
                // playout earlier instead of dropping it.
                self.play_frame = first;
            } else {
                self.late_run += 1;
                if packet.marker || self.late_run >= RESYNC_AFTER_LATE {
                    restart = true;
                } else {
                    self.stats.late += 1;
                    return Pushed::Late;
                }
            }
        } else if last >= self.play_frame + JITTER_SLOTS as i64 {
            if packet.marker || last >= self.play_frame + 2 * JITTER_SLOTS as i64 {
                restart = true;
            } else {
                // The sender is ahead (a burst, or a faster clock): drop the
                // oldest frames to make room, bounding the delay.
                while last >= self.play_frame + JITTER_SLOTS as i64 {
                    let s = Self::slot_index(self.play_frame);
                    if self.slots[s].frame == self.play_frame {
                        self.slots[s].frame = EMPTY;
                        self.stats.dropped += 1;
                    }
                    self.play_frame += 1;
                }
            }
        }
        if restart {
            self.restart(now_ms, packet.timestamp);
            start = self.extend(packet.timestamp);
            (first, last) = frames_of(start);
        }
        self.late_run = 0;

        // Write the samples frame by frame (a packet may straddle frames or
        // start before the playout point when partly late).
        let mut offset = start;
        let mut src = packet.payload;
        let play_start = self.play_frame * FRAME;
        if offset < play_start {
            let skip = usize::try_from(play_start - offset).unwrap_or(usize::MAX);
            src = src.get(skip..).unwrap_or_default();
            offset = play_start;
        }
        while !src.is_empty() {
            let frame = offset.div_euclid(FRAME);
            let pos = offset.rem_euclid(FRAME) as usize;
            let n = (FRAME_SAMPLES - pos).min(src.len());
            let slot = &mut self.slots[Self::slot_index(frame)];
            if slot.frame != frame {
                slot.frame = frame;
                slot.data = [mulaw::SILENCE; FRAME_SAMPLES];
            }
            to_mulaw(codec, &src[..n], &mut slot.data[pos..pos + n]);
            src = &src[n..];
            offset += n as i64;
        }
        self.newest_frame = Some(self.newest_frame.map_or(last, |n| n.max(last)));
        if self.cn_until.is_none() && self.cn_since.is_some_and(|since| first >= since) {
            self.cn_until = Some(first);
        }
        self.stats.received += 1;
        Pushed::Stored
    }

    fn in_comfort_noise(&self, frame: i64) -> bool {
        self.cn_since.is_some_and(|since| frame >= since)
            && self.cn_until.is_none_or(|until| frame < until)
    }

    /// The next 20 ms at `now_ms`: writes one frame of µ-law into `out`
    /// (silence unless [`Playout::Audio`]) and says what it is. Call it
    /// exactly once per 20 ms tick.
    pub fn pop(&mut self, now_ms: u64, out: &mut [u8; FRAME_SAMPLES]) -> Playout {
        match self.phase {
            Phase::Idle => {
                out.fill(mulaw::SILENCE);
                return Playout::Waiting;
            }
            Phase::Priming { until_ms } if now_ms < until_ms => {
                out.fill(mulaw::SILENCE);
                return Playout::Waiting;
            }
            Phase::Priming { .. } => self.phase = Phase::Playing,
            Phase::Playing => {}
        }
        let buffered = self.buffered_frames() as i64;
        if buffered == 0
            && self
                .last_arrival_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= IDLE_AFTER_MS)
        {
            // Hold or silence suppression: stop counting frames as missing;
            // the next packet starts a new timeline.
            self.phase = Phase::Idle;
            out.fill(mulaw::SILENCE);
            return Playout::Waiting;
        }
        // The delay only shrinks when the buffer held two frames more than
        // the target for a whole second (sender clock faster than ours, or
        // delay added by stalls after a jitter spike). A momentary burst
        // must not trigger it: those frames are needed for the next gap.
        self.window_min = self.window_min.min(buffered);
        self.window_pops += 1;
        if self.window_pops >= COMPRESS_WINDOW {
            if self.window_min >= self.target_frames + 3 {
                let s = Self::slot_index(self.play_frame);
                if self.slots[s].frame == self.play_frame {
                    self.slots[s].frame = EMPTY;
                    self.stats.dropped += 1;
                }
                self.play_frame += 1;
            }
            self.window_pops = 0;
            self.window_min = i64::MAX;
        }
        let frame = self.play_frame;
        let s = Self::slot_index(frame);
        if self.slots[s].frame == frame {
            *out = self.slots[s].data;
            self.slots[s].frame = EMPTY;
            self.play_frame += 1;
            self.stalled = false;
            self.stats.played += 1;
            return Playout::Audio;
        }
        out.fill(mulaw::SILENCE);
        if self.in_comfort_noise(frame) {
            self.play_frame += 1;
            self.stats.comfort_noise += 1;
            return Playout::ComfortNoise;
        }
        self.stats.missing += 1;
        if buffered == 0 && !self.stalled {
            // Nothing after it either: the stream is running late (a
            // jitter spike, a slower sender clock), not losing packets.
            // Wait one frame for it instead of declaring it lost; the
            // delay grows by 20 ms and the compression above takes it
            // back once it is no longer needed.
            self.stalled = true;
            self.stats.stalls += 1;
        } else {
            self.stalled = false;
            self.play_frame += 1;
        }
        Playout::Missing
    }
}

// ---------------------------------------------------------------------------
// Ingress

/// Why a datagram is not an RTP packet we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than its header says.
    Truncated {
        /// Bytes needed.
        expected: usize,
        /// Bytes there.
        actual: usize,
    },
    /// Not RTP version 2.
    UnsupportedVersion(u8),
    /// A padding length of 0 or longer than the packet.
    InvalidPadding,
}

impl From<RtpParseError> for RtpError {
    fn from(e: RtpParseError) -> Self {
        match e {
            RtpParseError::Truncated { expected, actual } => {
                RtpError::Truncated { expected, actual }
            }
            RtpParseError::UnsupportedVersion(v) => RtpError::UnsupportedVersion(v),
            RtpParseError::PaddingInvalid(_) => RtpError::InvalidPadding,
        }
    }
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtpError::Truncated { expected, actual } => {
                write!(f, "truncated RTP packet: {actual} bytes, need {expected}")
            }
            RtpError::UnsupportedVersion(v) => write!(f, "RTP version {v}, expected 2"),
            RtpError::InvalidPadding => f.write_str("invalid RTP padding"),
        }
    }
}

impl std::error::Error for RtpError {}

/// How an [`RtpIngress`] is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressConfig {
    /// The audio side.
    pub jitter: JitterConfig,
    /// Telephone-event payload types to accept: the far end's and ours (they
    /// differ when we offered 101 and the answer said something else; RFC
    /// 3264 has each side send with the other's numbers, not every
    /// implementation does).
    pub telephone_events: [Option<u8>; 2],
}

impl IngressConfig {
    /// The ingress for what was negotiated; `local_telephone_event` is the
    /// payload type our own description listed (if any).
    pub fn for_negotiated(negotiated: &Negotiated, local_telephone_event: Option<u8>) -> Self {
        IngressConfig {
            jitter: JitterConfig::for_negotiated(negotiated),
            telephone_events: [negotiated.telephone_event, local_telephone_event],
        }
    }
}

/// What [`RtpIngress::receive`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// An audio or comfort-noise packet, and what the buffer did with it.
    Audio(Pushed),
    /// A telephone-event packet: `Some` the first time a digit is seen.
    Dtmf(Option<DtmfDigit>),
    /// An RTCP packet on the RTP port (RFC 5761 range): ignored.
    Rtcp,
}

/// The receive side of one call leg's RTP: parses datagrams, plays audio
/// through the [`JitterBuffer`], reports digits through the
/// [`DtmfReceiver`], and remembers when media last arrived.
#[derive(Debug, Clone)]
pub struct RtpIngress {
    jitter: JitterBuffer,
    dtmf: DtmfReceiver,
    telephone_events: [Option<u8>; 2],
    last_packet_ms: Option<u64>,
    malformed: u64,
}

impl RtpIngress {
    /// A receiver that has seen nothing.
    pub fn new(config: IngressConfig) -> Self {
        RtpIngress {
            jitter: JitterBuffer::new(config.jitter),
            dtmf: DtmfReceiver::new(),
            telephone_events: config.telephone_events,
            last_packet_ms: None,
            malformed: 0,
        }
    }

    /// One datagram from the far end's media address, arrived at `now_ms`.
    pub fn receive(&mut self, now_ms: u64, datagram: &[u8]) -> Result<Received, RtpError> {
        // RTCP shares the first byte's version bits; its packet types
        // 192-223 sit where RTP has marker + payload type 64-95 (RFC 5761).
        if datagram.len() >= 2 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1]) {
            self.last_packet_ms = Some(now_ms);
            return Ok(Received::Rtcp);
        }
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.malformed += 1;
                return Err(e.into());
            }
        };
        self.last_packet_ms = Some(now_ms);
        let pt = packet.payload_type();
        if self.telephone_events.contains(&Some(pt)) {
            self.jitter.note_silence(packet.ssrc(), packet.timestamp());
            return match self
                .dtmf
                .receive(packet.ssrc(), packet.timestamp(), packet.payload())
            {
                Ok(digit) => Ok(Received::Dtmf(digit)),
                Err(_) => {
                    self.malformed += 1;
                    Err(RtpError::Truncated {
                        expected: RTP_HEADER_LEN + super::dtmf::EventPayload::LEN,
                        actual: datagram.len(),
                    })
                }
            };
        }
        Ok(Received::Audio(
            self.jitter.push(now_ms, &Incoming::from_packet(&packet)),
        ))
    }

    /// The next 20 ms frame for the operator (see [`JitterBuffer::pop`]).
    pub fn pop(&mut self, now_ms: u64, out: &mut [u8; FRAME_SAMPLES]) -> Playout {
        self.jitter.pop(now_ms, out)
    }

    /// When the last datagram we could read (RTP or RTCP) arrived: the
    /// media timeout runs from here.
    pub fn last_packet_ms(&self) -> Option<u64> {
        self.last_packet_ms
    }

    /// The jitter buffer (for its stats or format changes).
    pub fn jitter(&self) -> &JitterBuffer {
        &self.jitter
    }

    /// The jitter buffer, mutable (format changes after a re-INVITE).
    pub fn jitter_mut(&mut self) -> &mut JitterBuffer {
        &mut self.jitter
    }

    /// DTMF receiver counters.
    pub fn dtmf_stats(&self) -> DtmfReceiverStats {
        self.dtmf.stats()
    }

    /// Datagrams that could not be read.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::dtmf::EventPayload;
    use crate::sip::sdp::{Direction, Negotiated};

    // ----- helpers -------------------------------------------------------

    /// An owned packet for the simulations.
    #[derive(Debug, Clone)]
    struct P {
        ssrc: u32,
        seq: u16,
        ts: u32,
        marker: bool,
        pt: u8,
        payload: Vec<u8>,
    }

    impl P {
        fn incoming(&self) -> Incoming<'_> {
            Incoming {
                ssrc: self.ssrc,
                sequence: self.seq,
                timestamp: self.ts,
                marker: self.marker,
                payload_type: self.pt,
                payload: &self.payload,
            }
        }

        fn datagram(&self) -> Vec<u8> {
            RtpPacketBuilder::<&[u8], &[u8]>::new()
                .payload_type(self.pt)
                .marker_bit(self.marker)
                .sequence_number(self.seq)
                .timestamp(self.ts)
                .ssrc(self.ssrc)
                .payload(&self.payload)
                .write_vec()
                .unwrap()
        }
    }

    /// A 160-byte PCMU frame tagged with `k` in its first two bytes.
    fn tagged(k: u16) -> Vec<u8> {
        let mut f = vec![0x55; FRAME_SAMPLES];
        f[..2].copy_from_slice(&k.to_be_bytes());
        f
    }

    fn tag(frame: &[u8; FRAME_SAMPLES]) -> u16 {
        u16::from_be_bytes([frame[0], frame[1]])
    }

    /// Frame `k` of a PCMU stream starting at `seq0`/`ts0`.
    fn frame(ssrc: u32, seq0: u16, ts0: u32, k: u16) -> P {
        P {
            ssrc,
            seq: seq0.wrapping_add(k),
            ts: ts0.wrapping_add(u32::from(k) * FRAME_TS),
            marker: k == 0,
            pt: 0,
            payload: tagged(k),
        }
    }

    fn jb() -> JitterBuffer {
        JitterBuffer::new(JitterConfig {
            codec: Codec::Pcmu,
            payload_type: 0,
            comfort_noise: None,
            target_ms: DEFAULT_TARGET_MS,
        })
    }

    /// One pop's result: the outcome and the tag of an audio frame.
    type Out = (Playout, Option<u16>);

    /// Runs `arrivals` (time ms, packet) through `jb` with a pop every
    /// 20 ms at 5 + 20 j ms until `until_ms` (arrivals at the same ms as a
    /// pop come first).
    fn simulate(jb: &mut JitterBuffer, arrivals: Vec<(u64, P)>, until_ms: u64) -> Vec<Out> {
        simulate_from(jb, arrivals, 5, until_ms)
    }

    /// [`simulate`] with the first pop at `from_ms`.
    fn simulate_from(
        jb: &mut JitterBuffer,
        mut arrivals: Vec<(u64, P)>,
        from_ms: u64,
        until_ms: u64,
    ) -> Vec<Out> {
        arrivals.sort_by_key(|(t, _)| *t); // stable: equal times keep order
        let mut it = arrivals.into_iter().peekable();
        let mut out = Vec::new();
        let mut buf = [0u8; FRAME_SAMPLES];
        let mut now = from_ms;
        while now <= until_ms {
            while let Some((_, p)) = it.next_if(|(t, _)| *t <= now) {
                jb.push(now, &p.incoming());
            }
            let r = jb.pop(now, &mut buf);
            out.push((r, (r == Playout::Audio).then(|| tag(&buf))));
            now += 20;
        }
        out
    }

    /// The tags played, in order.
    fn tags(out: &[Out]) -> Vec<u16> {
        out.iter().filter_map(|(_, t)| *t).collect()
    }

    fn count(out: &[Out], what: Playout) -> usize {
        out.iter().filter(|(p, _)| *p == what).count()
    }

    /// A steady stream of `n` frames, frame k arriving at 20 k ms.
    fn steady(ssrc: u32, seq0: u16, ts0: u32, n: u16) -> Vec<(u64, P)> {
        (0..n)
            .map(|k| (u64::from(k) * 20, frame(ssrc, seq0, ts0, k)))
            .collect()
    }

    /// Deterministic pseudo-random numbers (no dependency, same every run).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    // ----- G.711 conversion ---------------------------------------------

    #[test]
    fn silence_converts_to_silence() {
        let mut a = [0u8; 4];
        pcmu_to_pcma(&[mulaw::SILENCE; 4], &mut a);
        assert_eq!(a, [alaw::SILENCE; 4]);
        // A-law has no zero code: its silence is +8 (of 32768), which
        // µ-law keeps as its own smallest step.
        let mut u = [0u8; 4];
        pcma_to_pcmu(&[alaw::SILENCE; 4], &mut u);
        assert!(
            u.iter().all(|&c| mulaw::decode_reference(c).abs() <= 8),
            "{u:?}"
        );
    }

    #[test]
    fn conversion_keeps_every_level_within_one_quantisation_step() {
        for code in 0..=255u8 {
            let mut a = [0u8];
            pcmu_to_pcma(&[code], &mut a);
            let want = i32::from(mulaw::decode_reference(code));
            let got = i32::from(alaw::decode_reference(a[0]));
            // A-law steps are 1/16 of the segment's magnitude at worst.
            assert!(
                (want - got).abs() <= (want.abs() / 16).max(16),
                "mu {code:#04x}: {want} -> alaw {:#04x} {got}",
                a[0]
            );
            let mut u = [0u8];
            pcma_to_pcmu(&[code], &mut u);
            let want = i32::from(alaw::decode_reference(code));
            let got = i32::from(mulaw::decode_reference(u[0]));
            assert!(
                (want - got).abs() <= (want.abs() / 16).max(16),
                "alaw {code:#04x}: {want} -> mu {:#04x} {got}",
                u[0]
            );
            // Sign is always kept.
            assert!(want.signum() * got.signum() >= 0);
        }
    }

    #[test]
    fn conversion_stops_at_the_shorter_slice() {
        let mut out = [0u8; 2];
        assert_eq!(pcmu_to_pcma(&[0xff; 5], &mut out), 2);
        assert_eq!(pcma_to_pcmu(&[0xd5; 1], &mut out), 1);
    }

    // ----- sender --------------------------------------------------------

    fn sender(codec: Codec, event: Option<u8>) -> RtpSender {
        RtpSender::new(SenderConfig {
            ssrc: 0xdead_beef,
            first_sequence: 65534,
            first_timestamp: u32::MAX - 159,
            codec,
            payload_type: codec.static_payload_type(),
            telephone_event: event,
            dtmf_event_ms: 100,
        })
    }

    #[test]
    fn sender_numbers_packets_across_both_wraps() {
        let mut s = sender(Codec::Pcmu, None);
        let frame = [0x42u8; FRAME_SAMPLES];
        let mut seen = Vec::new();
        for _ in 0..4 {
            let out = s.tick(Some(&frame));
            assert_eq!(out.kind, PacketKind::Audio);
            assert_eq!(out.bytes.len(), RTP_HEADER_LEN + FRAME_SAMPLES);
            let p = RtpPacket::parse(out.bytes).unwrap();
            assert_eq!(p.version(), 2);
            assert_eq!(p.ssrc(), 0xdead_beef);
            assert_eq!(p.payload_type(), 0);
            assert_eq!(p.payload(), &frame[..]);
            seen.push((p.sequence_number(), p.timestamp(), p.marker_bit()));
        }
        assert_eq!(
            seen,
            [
                (65534, u32::MAX - 159, true),
                (65535, 0, false),
                (0, 160, false),
                (1, 320, false)
            ]
        );
        assert_eq!(s.stats().packets, 4);
        assert_eq!(s.stats().octets, 4 * 160);
    }

    #[test]
    fn sender_sends_silence_when_the_operator_is_quiet() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut s = sender(codec, None);
            let out = s.tick(None);
            assert_eq!(out.kind, PacketKind::Silence);
            let p = RtpPacket::parse(out.bytes).unwrap();
            assert!(p.payload().iter().all(|&b| b == codec.silence()), "{codec}");
        }
    }

    #[test]
    fn sender_converts_to_pcma_when_negotiated() {
        let mut s = sender(Codec::Pcma, None);
        let mut frame = [0u8; FRAME_SAMPLES];
        for (i, b) in frame.iter_mut().enumerate() {
            *b = i as u8;
        }
        let out = s.tick(Some(&frame));
        let p = RtpPacket::parse(out.bytes).unwrap();
        assert_eq!(p.payload_type(), 8);
        let mut want = [0u8; FRAME_SAMPLES];
        pcmu_to_pcma(&frame, &mut want);
        assert_eq!(p.payload(), &want[..]);
    }

    #[test]
    fn sender_reuses_one_buffer() {
        let mut s = sender(Codec::Pcma, Some(101));
        let first = s.tick(None).bytes.as_ptr();
        s.send_dtmf('1').unwrap();
        for _ in 0..20 {
            assert_eq!(s.tick(Some(&[0; FRAME_SAMPLES])).bytes.as_ptr(), first);
        }
    }

    #[test]
    fn skipped_ticks_keep_the_clock_and_mark_the_next_packet() {
        let mut s = sender(Codec::Pcmu, None);
        let _ = s.tick(None);
        let _ = s.tick(None);
        s.skip();
        s.skip();
        let p = RtpPacket::parse(s.tick(None).bytes).unwrap();
        assert!(p.marker_bit());
        assert_eq!(p.timestamp(), (u32::MAX - 159).wrapping_add(4 * 160));
        assert_eq!(p.sequence_number(), 0, "no sequence number used by skips");
        assert!(!RtpPacket::parse(s.tick(None).bytes).unwrap().marker_bit());
        assert_eq!(s.stats().skipped, 2);
    }

    #[test]
    fn dtmf_goes_out_in_the_audio_stream_with_audio_paused() {
        let mut s = sender(Codec::Pcmu, Some(101));
        let _ = s.tick(None);
        s.send_dtmf('5').unwrap();
        assert!(s.dtmf_busy());
        let event_ts = s.next_timestamp();
        let mut packets = Vec::new();
        for _ in 0..12 {
            let out = s.tick(Some(&[0x11; FRAME_SAMPLES]));
            let p = RtpPacket::parse(out.bytes).unwrap();
            packets.push((
                out.kind,
                p.sequence_number(),
                p.timestamp(),
                p.marker_bit(),
                p.payload_type(),
                p.ssrc(),
                p.payload().to_vec(),
            ));
        }
        let kinds: Vec<PacketKind> = packets.iter().map(|p| p.0).collect();
        use PacketKind::{Audio, Dtmf};
        // 5 updates + 3 end packets, then audio (the gap).
        assert_eq!(
            kinds,
            [
                Dtmf, Dtmf, Dtmf, Dtmf, Dtmf, Dtmf, Dtmf, Dtmf, Audio, Audio, Audio, Audio
            ]
        );
        // One sequence space, no gaps, one SSRC.
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(p.1, (65535u16).wrapping_add(i as u16));
            assert_eq!(p.5, 0xdead_beef);
        }
        for p in &packets[..8] {
            assert_eq!(p.2, event_ts, "event packets carry the event start");
            assert_eq!(p.4, 101);
        }
        let ends: Vec<EventPayload> = packets[5..8]
            .iter()
            .map(|p| EventPayload::parse(&p.6).unwrap())
            .collect();
        assert!(
            ends.iter()
                .all(|e| e.end && e.duration == 800 && e.event == 5)
        );
        assert!(packets[0].3, "marker on the event's first packet");
        assert!(!packets[1].3);
        // Audio resumes where the clock is, with the marker.
        assert_eq!(packets[8].2, event_ts.wrapping_add(8 * FRAME_TS));
        assert!(packets[8].3);
        assert!(!packets[9].3);
        assert_eq!(packets[8].6, vec![0x11; FRAME_SAMPLES]);
        assert_eq!(s.stats().dtmf_packets, 8);
    }

    #[test]
    fn dtmf_without_telephone_event_is_refused() {
        let mut s = sender(Codec::Pcmu, None);
        assert_eq!(s.send_dtmf('1'), Err(DtmfError::NotNegotiated));
        let mut s = sender(Codec::Pcmu, Some(101));
        assert_eq!(
            s.send_dtmf('x'),
            Err(DtmfError::InvalidDigit { digit: 'x' })
        );
    }

    // ----- jitter buffer --------------------------------------------------

    #[test]
    fn steady_stream_plays_every_frame_after_the_target_delay() {
        let mut jb = jb();
        let out = simulate(&mut jb, steady(1, 100, 5000, 50), 1100);
        // First packet at 0 ms, target 40 ms: pops at 5, 25 wait; 45 plays.
        assert_eq!(out[0].0, Playout::Waiting);
        assert_eq!(out[1].0, Playout::Waiting);
        assert_eq!(out[2], (Playout::Audio, Some(0)));
        assert_eq!(tags(&out), (0..50).collect::<Vec<_>>());
        assert_eq!(count(&out[..52], Playout::Missing), 0);
        let st = jb.stats();
        assert_eq!((st.late, st.duplicate, st.lost, st.dropped), (0, 0, 0, 0));
        assert_eq!(st.played, 50);
        assert_eq!(jb.target_ms(), 40);
    }

    #[test]
    fn reordered_packets_play_in_order() {
        let mut jb = jb();
        let mut arrivals = steady(1, 0, 0, 40);
        // Swap every pair: packet 2i+1 arrives before 2i, both at its time.
        for pair in arrivals.chunks_mut(2) {
            let t = pair[1].0;
            pair.swap(0, 1);
            pair[0].0 = t;
            pair[1].0 = t;
        }
        let out = simulate(&mut jb, arrivals, 900);
        assert_eq!(tags(&out), (0..40).collect::<Vec<_>>());
        assert_eq!(jb.stats().late, 0);
        assert_eq!(count(&out[3..42], Playout::Missing), 0);
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut jb = jb();
        let mut arrivals = steady(1, 0, 0, 30);
        arrivals.extend(steady(1, 0, 0, 30).into_iter().map(|(t, p)| (t + 3, p)));
        let out = simulate(&mut jb, arrivals, 700);
        assert_eq!(tags(&out), (0..30).collect::<Vec<_>>());
        assert_eq!(jb.stats().duplicate, 30);
    }

    #[test]
    fn a_lost_packet_is_one_missing_frame_in_its_place() {
        let mut jb = jb();
        let arrivals: Vec<_> = steady(1, 0, 0, 30)
            .into_iter()
            .filter(|(_, p)| p.seq != 10)
            .collect();
        let out = simulate(&mut jb, arrivals, 700);
        let played: Vec<Out> = out[2..32].to_vec();
        assert_eq!(played[10], (Playout::Missing, None));
        assert_eq!(played[9].1, Some(9));
        assert_eq!(played[11].1, Some(11));
        assert_eq!(count(&played, Playout::Missing), 1);
        assert_eq!(jb.stats().lost, 1);
    }

    #[test]
    fn a_packet_after_its_playout_time_is_late() {
        let mut jb = jb();
        let mut arrivals = steady(1, 0, 0, 30);
        arrivals[10].0 += 100; // 100 ms late, target is 40
        let out = simulate(&mut jb, arrivals, 700);
        assert_eq!(out[12], (Playout::Missing, None));
        assert_eq!(count(&out[..32], Playout::Missing), 1);
        let st = jb.stats();
        assert_eq!((st.late, st.lost), (1, 0));
        assert_eq!(tags(&out).len(), 29);
    }

    #[test]
    fn sequence_and_timestamp_wrap_around_is_seamless() {
        let mut jb = jb();
        // Both counters wrap within the first 10 packets; pairs swapped
        // across the wrap too.
        let mut arrivals = steady(7, 65530, u32::MAX - 4 * FRAME_TS + 1, 40);
        for pair in arrivals.chunks_mut(2).skip(1) {
            let t = pair[1].0;
            pair.swap(0, 1);
            pair[0].0 = t;
            pair[1].0 = t;
        }
        let out = simulate(&mut jb, arrivals, 830);
        assert_eq!(tags(&out), (0..40).collect::<Vec<_>>());
        let st = jb.stats();
        assert_eq!(
            (st.missing, st.late, st.duplicate, st.lost, st.restarts),
            (0, 0, 0, 0, 0)
        );
    }

    #[test]
    fn loss_and_duplicates_are_counted_across_the_sequence_wrap() {
        let mut jb = jb();
        let mut arrivals: Vec<_> = steady(7, 65530, 0, 40)
            .into_iter()
            .filter(|(_, p)| p.seq != 20) // lost after the wrap
            .collect();
        // A duplicate of a packet after the wrap, and of one before it.
        arrivals.push((300, frame(7, 65530, 0, 14)));
        arrivals.push((301, frame(7, 65530, 0, 3)));
        let out = simulate(&mut jb, arrivals, 830);
        let st = jb.stats();
        assert_eq!((st.lost, st.duplicate), (1, 2), "{st:?}");
        assert_eq!(count(&out[..42], Playout::Missing), 1);
        assert_eq!(tags(&out).len(), 39);
    }

    #[test]
    fn a_new_ssrc_restarts_playout_and_stragglers_of_the_old_one_are_dropped() {
        let mut jb = jb();
        let mut arrivals = steady(1, 0, 0, 20);
        // At 400 ms a new source (a transfer, a media server) with its own
        // numbering takes over.
        for (t, p) in steady(2, 9000, 777_777, 20) {
            arrivals.push((
                t + 400,
                P {
                    payload: tagged(p.seq - 9000 + 100),
                    ..p
                },
            ));
        }
        // A straggler of the first stream after the switch.
        arrivals.push((430, frame(1, 0, 0, 19)));
        let out = simulate(&mut jb, arrivals, 900);
        // The new source is spliced after the old one's last frames:
        // nothing received is thrown away, no gap.
        assert_eq!(tags(&out), (0..20).chain(100..120).collect::<Vec<_>>());
        assert_eq!(count(&out[2..42], Playout::Missing), 0);
        let st = jb.stats();
        assert_eq!(st.ssrc_changes, 1);
        assert_eq!(st.restarts, 1);
        assert_eq!(st.late, 1);
        assert_eq!(st.dropped, 0);
        assert_eq!(jb.ssrc(), Some(2));
    }

    #[test]
    fn comfort_noise_is_silence_not_loss_and_speech_resumes_after_it() {
        let mut jb = JitterBuffer::new(JitterConfig {
            comfort_noise: Some(13),
            ..jb_config()
        });
        let mut arrivals = steady(1, 0, 0, 10);
        // Silence period: one CN packet (noise level 40 dBov), then nothing
        // for 1 s (the timestamp runs on), then speech with the marker.
        arrivals.push((
            200,
            P {
                ssrc: 1,
                seq: 10,
                ts: 10 * FRAME_TS,
                marker: false,
                pt: PT_CN,
                payload: vec![40],
            },
        ));
        for k in 0..10u16 {
            let mut p = frame(1, 11, 60 * FRAME_TS, k);
            p.payload = tagged(500 + k);
            arrivals.push((1200 + u64::from(k) * 20, p));
        }
        let out = simulate(&mut jb, arrivals, 1600);
        assert_eq!(tags(&out), (0..10).chain(500..510).collect::<Vec<_>>());
        let st = jb.stats();
        assert_eq!(st.comfort_noise_packets, 1);
        let last_audio = out.iter().rposition(|o| o.0 == Playout::Audio).unwrap();
        assert_eq!(
            count(&out[..last_audio], Playout::Missing),
            0,
            "a silence period is not loss"
        );
        // CN from the CN packet's frame until IDLE_AFTER_MS without packets.
        assert_eq!(st.comfort_noise, 8, "{st:?}");
        assert_eq!(st.lost, 0);
        // Speech after the silence got the full target delay again.
        let first_resumed = out.iter().position(|o| o.1 == Some(500)).unwrap();
        assert_eq!(out[first_resumed - 1].0, Playout::Waiting);
    }

    fn jb_config() -> JitterConfig {
        JitterConfig {
            codec: Codec::Pcmu,
            payload_type: 0,
            comfort_noise: None,
            target_ms: DEFAULT_TARGET_MS,
        }
    }

    #[test]
    fn a_stream_that_stops_goes_idle_instead_of_counting_loss() {
        let mut jb = jb();
        let out = simulate(&mut jb, steady(1, 0, 0, 10), 2000);
        assert_eq!(tags(&out).len(), 10);
        // ~200 ms of missing frames, then waiting.
        // Missing frames until IDLE_AFTER_MS after the last packet.
        let missing = count(&out, Playout::Missing);
        assert!((5..=10).contains(&missing), "{missing}");
        assert_eq!(out.last().unwrap().0, Playout::Waiting);
    }

    #[test]
    fn marker_bit_resyncs_at_once_when_the_sender_clock_jumps_back() {
        let mut jb = jb();
        let mut arrivals = steady(1, 0, 80_000, 20);
        // A new talkspurt whose timestamps went back 5 s (a media server
        // switching prompts), marker set: no late drops.
        for (t, p) in steady(1, 20, 40_000, 20) {
            arrivals.push((
                t + 400,
                P {
                    payload: tagged(p.seq + 100),
                    ..p
                },
            ));
        }
        let out = simulate(&mut jb, arrivals, 900);
        assert_eq!(tags(&out), (0..20).chain(120..140).collect::<Vec<_>>());
        assert_eq!(jb.stats().late, 0);
        assert_eq!(jb.stats().restarts, 1);
    }

    #[test]
    fn without_a_marker_a_run_of_late_packets_resyncs() {
        let mut jb = jb();
        let mut arrivals = steady(1, 0, 80_000, 20);
        for (t, mut p) in steady(1, 20, 40_000, 20) {
            p.marker = false;
            p.payload = tagged(p.seq + 100);
            arrivals.push((t + 400, p));
        }
        let out = simulate(&mut jb, arrivals, 900);
        let played = tags(&out);
        // Two packets are dropped as late before the third restarts.
        assert_eq!(jb.stats().late, u64::from(RESYNC_AFTER_LATE - 1));
        assert_eq!(played[20..], (122..140).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn a_far_timestamp_jump_forward_restarts_instead_of_waiting() {
        let mut jb = jb();
        let mut arrivals = steady(1, 0, 0, 10);
        for (t, mut p) in steady(1, 10, 10_000_000, 10) {
            p.marker = false;
            p.payload = tagged(p.seq + 100);
            arrivals.push((t + 200, p));
        }
        let out = simulate(&mut jb, arrivals, 600);
        assert_eq!(tags(&out), (0..10).chain(110..120).collect::<Vec<_>>());
    }

    #[test]
    fn pcma_payload_is_played_as_mulaw() {
        let mut jb = JitterBuffer::new(JitterConfig {
            codec: Codec::Pcma,
            payload_type: 8,
            ..jb_config()
        });
        let mut alaw_frame = [0u8; FRAME_SAMPLES];
        for (i, b) in alaw_frame.iter_mut().enumerate() {
            *b = i as u8;
        }
        let p = P {
            ssrc: 1,
            seq: 1,
            ts: 0,
            marker: true,
            pt: 8,
            payload: alaw_frame.to_vec(),
        };
        jb.push(0, &p.incoming());
        let mut out = [0u8; FRAME_SAMPLES];
        assert_eq!(jb.pop(40, &mut out), Playout::Audio);
        let mut want = [0u8; FRAME_SAMPLES];
        pcma_to_pcmu(&alaw_frame, &mut want);
        assert_eq!(out, want);
    }

    #[test]
    fn ten_and_thirty_ms_packets_fill_twenty_ms_frames() {
        for samples in [80usize, 240] {
            let mut jb = jb();
            // A ramp of bytes 0,1,2,... across the whole stream.
            let total = 24 * FRAME_SAMPLES;
            let mut arrivals = Vec::new();
            for (k, start) in (0..total).step_by(samples).enumerate() {
                let payload: Vec<u8> = (start..start + samples).map(|i| (i % 251) as u8).collect();
                arrivals.push((
                    (start / 8) as u64,
                    P {
                        ssrc: 3,
                        seq: k as u16,
                        ts: start as u32,
                        marker: k == 0,
                        pt: 0,
                        payload,
                    },
                ));
            }
            let mut out = [0u8; FRAME_SAMPLES];
            let mut got = Vec::new();
            let mut arrivals = arrivals.into_iter().peekable();
            for j in 0..40u64 {
                let now = 5 + j * 20;
                while let Some((_, p)) = arrivals.next_if(|(t, _)| *t <= now) {
                    assert_eq!(jb.push(now, &p.incoming()), Pushed::Stored);
                }
                if jb.pop(now, &mut out) == Playout::Audio {
                    got.extend_from_slice(&out);
                }
            }
            let want: Vec<u8> = (0..got.len()).map(|i| (i % 251) as u8).collect();
            assert_eq!(got.len(), total, "{samples}");
            assert_eq!(got, want, "{samples}-sample packets");
            assert_eq!(jb.stats().late, 0, "{samples}");
        }
    }

    #[test]
    fn other_codecs_and_empty_payloads_are_ignored() {
        let mut jb = jb();
        let mut p = frame(1, 0, 0, 0);
        p.pt = 18;
        assert_eq!(
            jb.push(0, &p.incoming()),
            Pushed::Ignored { payload_type: 18 }
        );
        p.pt = 0;
        p.payload.clear();
        assert_eq!(
            jb.push(0, &p.incoming()),
            Pushed::Ignored { payload_type: 0 }
        );
        p.payload = vec![0; MAX_AUDIO_PAYLOAD + 1];
        assert_eq!(
            jb.push(0, &p.incoming()),
            Pushed::Ignored { payload_type: 0 }
        );
        assert_eq!(jb.stats().ignored, 3);
        let mut out = [0u8; FRAME_SAMPLES];
        assert_eq!(jb.pop(100, &mut out), Playout::Waiting);
    }

    #[test]
    fn a_burst_after_a_stall_is_bounded_by_the_capacity() {
        let mut jb = jb();
        let mut arrivals = steady(1, 0, 0, 5);
        // The network stalls for 1 s, then delivers 50 packets at once.
        arrivals.extend((5..55).map(|k| (1100u64, frame(1, 0, 0, k))));
        let out = simulate(&mut jb, arrivals, 2400);
        assert!(jb.stats().buffered <= JITTER_SLOTS as u32);
        let played = tags(&out);
        // Played in order, the newest frames kept, then caught up.
        assert!(played.windows(2).all(|w| w[0] < w[1]), "{played:?}");
        assert_eq!(*played.last().unwrap(), 54);
    }

    /// Sender clock 0.5 % fast or slow against our tick (far worse than
    /// real trunks): delay stays bounded and almost everything is played.
    #[test]
    fn clock_drift_keeps_the_delay_bounded() {
        for period_us in [19_900u64, 20_100] {
            let mut jb = jb();
            let n = 3000u16; // 60 s
            let arrivals: Vec<_> = (0..n)
                .map(|k| (u64::from(k) * period_us / 1000, frame(1, 0, 0, k)))
                .collect();
            // Run in two halves to look at the depth in between too.
            let (first, second): (Vec<_>, Vec<_>) =
                arrivals.into_iter().partition(|(t, _)| *t < 30_000);
            let mut out = simulate(&mut jb, first, 30_000 - 15);
            let depth_mid = jb.stats().buffered;
            out.extend(simulate_from(
                &mut jb,
                second,
                30_005,
                u64::from(n) * 20 + 200,
            ));
            let st = jb.stats();
            let played = tags(&out).len();
            assert!(played >= usize::from(n) * 99 / 100, "{period_us}: {st:?}");
            assert!(depth_mid <= 6, "{period_us}: {depth_mid} frames buffered");
            assert_eq!(st.late, 0, "{period_us}: {st:?}");
        }
    }

    #[test]
    fn jitter_within_the_target_loses_nothing() {
        let mut rng = Lcg(42);
        let mut jb = jb();
        // Up to 30 ms of jitter (plus the up-to-20 ms tick alignment) on
        // 40 ms of target: nothing late.
        let arrivals: Vec<_> = (0..1000u16)
            .map(|k| (u64::from(k) * 20 + rng.next() % 31, frame(1, 0, 0, k)))
            .collect();
        let out = simulate(&mut jb, arrivals, 20_200);
        assert_eq!(tags(&out), (0..1000).collect::<Vec<_>>());
        assert_eq!(jb.stats().late, 0);
    }

    /// Jitter of up to 100 ms on a 40 ms target: instead of dropping the
    /// late frames, playout waits for them (a few stalls) and keeps the
    /// larger delay while the jitter lasts.
    #[test]
    fn jitter_beyond_the_target_stretches_playout_instead_of_dropping() {
        let arrivals = |seed| {
            let mut rng = Lcg(seed);
            (0..500u16)
                .map(|k| (u64::from(k) * 20 + rng.next() % 100, frame(1, 0, 0, k)))
                .collect::<Vec<_>>()
        };
        let mut small = jb();
        let out = simulate(&mut small, arrivals(7), 10_400);
        assert_eq!(tags(&out), (0..500).collect::<Vec<_>>());
        let st = small.stats();
        assert_eq!(st.late, 0, "{st:?}");
        assert!(st.stalls >= 1, "{st:?}");
        let mut big = JitterBuffer::new(JitterConfig {
            target_ms: 120,
            ..jb_config()
        });
        let out = simulate(&mut big, arrivals(7), 10_400);
        assert_eq!(tags(&out), (0..500).collect::<Vec<_>>());
        assert_eq!(big.target_ms(), 120);
        // Out-of-range targets are clamped.
        assert_eq!(
            JitterBuffer::new(JitterConfig {
                target_ms: 5,
                ..jb_config()
            })
            .target_ms(),
            20
        );
    }

    // ----- ingress ---------------------------------------------------------

    fn negotiated(codec: Codec, event: Option<u8>) -> Negotiated {
        Negotiated {
            media_index: 0,
            codec,
            payload_type: codec.static_payload_type(),
            telephone_event: event,
            comfort_noise: None,
            remote_direction: Direction::SendRecv,
            remote_rtp: Some("192.0.2.9:4000".parse().unwrap()),
            ptime_ms: 20,
        }
    }

    #[test]
    fn ingress_routes_rtcp_and_rejects_garbage_without_panicking() {
        let mut ing = RtpIngress::new(IngressConfig::for_negotiated(
            &negotiated(Codec::Pcmu, Some(101)),
            Some(101),
        ));
        // An RTCP receiver report (PT 201).
        let rr = [0x81, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0];
        assert_eq!(ing.receive(10, &rr), Ok(Received::Rtcp));
        assert_eq!(ing.last_packet_ms(), Some(10));
        assert_eq!(
            ing.receive(20, &[0x80, 0]),
            Err(RtpError::Truncated {
                expected: 12,
                actual: 2
            })
        );
        assert_eq!(
            ing.receive(20, &[0x40; 20]),
            Err(RtpError::UnsupportedVersion(1))
        );
        // Padding bit with a zero padding length.
        let mut padded = frame(1, 0, 0, 0).datagram();
        padded[0] |= 0x20;
        *padded.last_mut().unwrap() = 0;
        assert_eq!(ing.receive(20, &padded), Err(RtpError::InvalidPadding));
        // A truncated telephone-event.
        let short = P {
            ssrc: 1,
            seq: 1,
            ts: 0,
            marker: false,
            pt: 101,
            payload: vec![1, 2],
        };
        assert!(ing.receive(20, &short.datagram()).is_err());
        assert_eq!(ing.malformed(), 4);
        assert_eq!(ing.last_packet_ms(), Some(20));

        let mut rng = Lcg(1);
        for _ in 0..20_000 {
            let len = (rng.next() % 200) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if d.len() > 1 && rng.next() % 2 == 0 {
                d[0] = 0x80 | (d[0] & 0x3f); // mostly valid version
            }
            let _ = ing.receive(30, &d);
            let mut out = [0u8; FRAME_SAMPLES];
            let _ = ing.pop(30 + rng.next() % 1000, &mut out);
        }
    }

    #[test]
    fn far_end_dtmf_is_one_digit_and_silence_not_loss() {
        let mut ing = RtpIngress::new(IngressConfig::for_negotiated(
            &negotiated(Codec::Pcmu, Some(101)),
            Some(101),
        ));
        let mut digits = Vec::new();
        let mut outcomes = Vec::new();
        let mut out = [0u8; FRAME_SAMPLES];
        let event_ts = 20 * FRAME_TS;
        for j in 0..60u32 {
            let now = u64::from(j) * 20;
            let datagram = match j {
                // Audio, 8 ticks of telephone-event (as baresip sends:
                // 5 updates, 3 ends), audio again with the marker.
                0..20 => frame(5, 0, 0, j as u16).datagram(),
                20..28 => {
                    let i = j - 20;
                    let payload = EventPayload {
                        event: 9,
                        end: i >= 5,
                        volume: 10,
                        duration: ((i.min(4) + 1) * 160) as u16,
                    };
                    P {
                        ssrc: 5,
                        seq: j as u16,
                        ts: event_ts,
                        marker: i == 0,
                        pt: 101,
                        payload: payload.to_bytes().to_vec(),
                    }
                    .datagram()
                }
                _ => {
                    let mut p = frame(5, 0, 0, j as u16);
                    p.marker = j == 28;
                    p.datagram()
                }
            };
            if let Received::Dtmf(Some(d)) = ing.receive(now, &datagram).unwrap() {
                digits.push(d.digit);
            }
            outcomes.push(ing.pop(now + 5, &mut out));
        }
        assert_eq!(digits, ['9']);
        let st = ing.jitter().stats();
        assert_eq!(st.missing, 0, "{st:?} {outcomes:?}");
        assert!(st.comfort_noise >= 6, "{st:?}");
        assert_eq!(ing.dtmf_stats().repeats, 7);
    }

    /// Our sender into our receiver through a simulated 20 ms link, in
    /// PCMA: the operator's audio comes back and the digit is seen once.
    #[test]
    fn sender_to_ingress_round_trip_in_pcma() {
        let mut tx = sender(Codec::Pcma, Some(101));
        let mut rx = RtpIngress::new(IngressConfig::for_negotiated(
            &negotiated(Codec::Pcma, Some(101)),
            Some(101),
        ));
        let mut sent = Vec::new();
        let mut heard = Vec::new();
        let mut digits = Vec::new();
        let mut out = [0u8; FRAME_SAMPLES];
        for j in 0..100u32 {
            let now = u64::from(j) * 20;
            if j == 30 {
                tx.send_dtmf('#').unwrap();
            }
            let mut frame = [0u8; FRAME_SAMPLES];
            frame.iter_mut().for_each(|b| *b = (j % 100) as u8 + 0x20);
            let pkt = tx.tick(Some(&frame));
            if pkt.kind == PacketKind::Audio {
                sent.push(frame[0]);
            }
            let datagram = pkt.bytes.to_vec();
            if let Received::Dtmf(Some(d)) = rx.receive(now + 7, &datagram).unwrap() {
                digits.push(d.digit);
            }
            if rx.pop(now + 10, &mut out) == Playout::Audio {
                heard.push(out[0]);
            }
        }
        assert_eq!(digits, ['#']);
        // µ-law → A-law → µ-law: the same level within one step.
        let n = heard.len();
        assert!(n >= 85, "{n}");
        for (s, h) in sent.iter().zip(&heard) {
            let (s, h) = (
                i32::from(mulaw::decode_reference(*s)),
                i32::from(mulaw::decode_reference(*h)),
            );
            assert!((s - h).abs() <= (s.abs() / 16).max(16), "{s} vs {h}");
        }
        assert_eq!(rx.jitter().stats().missing, 0);
    }
}

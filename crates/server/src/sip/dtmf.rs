//! RFC 4733 telephone-events (DTMF in the RTP stream).
//!
//! - [`EventPayload`]: the 4-byte payload, parsed and written.
//! - [`DtmfSender`]: turns queued digits into one event packet per 20 ms
//!   tick. It does not build RTP headers: [`super::rtp::RtpSender`] drives
//!   it on its own tick so events go out in the audio stream's SSRC and
//!   sequence space with audio paused during the event (baresip misses
//!   digits sent on a separate SSRC). Each event: updates every 20 ms with a
//!   growing duration (the first one with the marker bit), then the end
//!   packet three times with the same timestamp and duration (§2.5.1.4),
//!   then a short audio gap before the next queued digit.
//! - [`DtmfReceiver`]: reports each far-end digit exactly once, keyed by
//!   the event's RTP timestamp, whatever mix of updates, retransmitted end
//!   packets (same or new sequence numbers) and reordering arrives.
//!
//! No I/O, no clock: the sender advances one step per call to
//! [`DtmfSender::poll`] (the caller's 20 ms tick), the receiver only sees
//! the packets it is given.

use std::collections::VecDeque;
use std::fmt;

use super::FRAME_TS;

/// Default event length: 100 ms of tone, the common carrier value and well
/// above the 40 ms a PSTN receiver needs to detect a digit.
pub const DEFAULT_EVENT_MS: u32 = 100;
/// Shortest and longest event lengths [`DtmfSender::new`] accepts.
pub const EVENT_MS_RANGE: std::ops::RangeInclusive<u32> = 40..=1000;
/// How many times the end packet is sent (RFC 4733 §2.5.1.4).
pub const END_REPEATS: u32 = 3;
/// 20 ms ticks of audio between two queued digits, after the end packets
/// (which already take 40 ms beyond the tone): gateways that regenerate
/// the tones in-band need a gap to see two digits.
pub const GAP_FRAMES: u32 = 2;
/// Most digits waiting to be sent; more is a runaway client.
pub const MAX_QUEUED: usize = 32;
/// How far back (RTP timestamp units, 10 s) a timestamp older than the
/// last event's is taken as a reordered packet of an earlier event rather
/// than as a sender that restarted its timeline.
pub const STALE_WINDOW: i32 = 10 * 8_000;
/// Volume field: -10 dBm0, the usual value (RFC 4733 §2.3.4).
pub const VOLUME: u8 = 10;

/// The event code of a DTMF digit (RFC 4733 §3.2): `0-9`, `*` = 10,
/// `#` = 11, `A-D` = 12-15.
pub const fn event_code(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// The digit of an event code 0-15 (`None` for other events, e.g. flash).
pub const fn digit_of(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// Why a DTMF operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtmfError {
    /// A telephone-event payload shorter than 4 bytes.
    Truncated {
        /// Its length.
        len: usize,
    },
    /// Not a digit we can send (`0-9 * # A-D`).
    InvalidDigit {
        /// The character (escaped when displayed).
        digit: char,
    },
    /// [`MAX_QUEUED`] digits are already waiting.
    QueueFull,
    /// The far end did not accept telephone-event: RFC 4733 cannot be used.
    NotNegotiated,
}

impl fmt::Display for DtmfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtmfError::Truncated { len } => {
                write!(f, "telephone-event payload of {len} bytes, need 4")
            }
            DtmfError::InvalidDigit { digit } => {
                let mut buf = [0u8; 4];
                write!(
                    f,
                    "invalid DTMF digit {}: expected 0-9, *, # or A-D",
                    audin_protocol::Untrusted(digit.encode_utf8(&mut buf))
                )
            }
            DtmfError::QueueFull => write!(f, "more than {MAX_QUEUED} DTMF digits queued"),
            DtmfError::NotNegotiated => f.write_str("the far end did not accept telephone-event"),
        }
    }
}

impl std::error::Error for DtmfError {}

/// The telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// Event code (0-15 for DTMF).
    pub event: u8,
    /// The E bit: this is (a retransmission of) the event's last packet.
    pub end: bool,
    /// Volume in -dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units (8 kHz).
    pub duration: u16,
}

impl EventPayload {
    /// Length of the payload.
    pub const LEN: usize = 4;

    /// Reads the first 4 bytes of `payload` (more may follow: redundant
    /// events of RFC 2198 are not used by trunks, extra bytes are ignored).
    pub fn parse(payload: &[u8]) -> Result<EventPayload, DtmfError> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(DtmfError::Truncated { len: payload.len() });
        };
        Ok(EventPayload {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4 bytes on the wire.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// One telephone-event packet to send: the RTP sender adds the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// The payload.
    pub payload: EventPayload,
    /// The event's RTP timestamp (its start: the same for every packet of
    /// the event).
    pub timestamp: u32,
    /// The marker bit (first packet of the event).
    pub marker: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    Idle,
    Tone { event: u8, start: u32, frames: u32 },
    End { event: u8, start: u32, sent: u32 },
    Gap { left: u32 },
}

/// Queues digits and yields their RFC 4733 packets, one per 20 ms tick.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    event_frames: u32,
    queue: VecDeque<u8>,
    state: SendState,
}

impl Default for DtmfSender {
    fn default() -> Self {
        DtmfSender::new(DEFAULT_EVENT_MS)
    }
}

impl DtmfSender {
    /// A sender whose events last `event_ms` (clamped to
    /// [`EVENT_MS_RANGE`], rounded up to whole 20 ms frames).
    pub fn new(event_ms: u32) -> Self {
        let ms = event_ms.clamp(*EVENT_MS_RANGE.start(), *EVENT_MS_RANGE.end());
        DtmfSender {
            event_frames: ms.div_ceil(super::FRAME_MS),
            queue: VecDeque::with_capacity(MAX_QUEUED),
            state: SendState::Idle,
        }
    }

    /// Queues one digit (`0-9 * # A-D`).
    pub fn queue(&mut self, digit: char) -> Result<(), DtmfError> {
        let event = event_code(digit).ok_or(DtmfError::InvalidDigit { digit })?;
        if self.queue.len() >= MAX_QUEUED {
            return Err(DtmfError::QueueFull);
        }
        self.queue.push_back(event);
        Ok(())
    }

    /// Whether an event (or the gap after one, or a queued digit) is
    /// pending: the RTP sender must keep calling [`DtmfSender::poll`].
    pub fn is_busy(&self) -> bool {
        self.state != SendState::Idle || !self.queue.is_empty()
    }

    /// One 20 ms tick whose audio would carry RTP timestamp `tick_ts`:
    /// `Some` packet to send instead of audio, or `None` when this tick is
    /// audio.
    pub fn poll(&mut self, tick_ts: u32) -> Option<EventPacket> {
        if self.state == SendState::Idle {
            let event = self.queue.pop_front()?;
            self.state = SendState::Tone {
                event,
                start: tick_ts,
                frames: 0,
            };
        }
        match self.state {
            SendState::Idle => None,
            SendState::Tone {
                event,
                start,
                frames,
            } => {
                let frames = frames + 1;
                self.state = if frames >= self.event_frames {
                    SendState::End {
                        event,
                        start,
                        sent: 0,
                    }
                } else {
                    SendState::Tone {
                        event,
                        start,
                        frames,
                    }
                };
                Some(self.packet(event, start, frames, false, frames == 1))
            }
            SendState::End { event, start, sent } => {
                let sent = sent + 1;
                self.state = if sent >= END_REPEATS {
                    SendState::Gap { left: GAP_FRAMES }
                } else {
                    SendState::End { event, start, sent }
                };
                Some(self.packet(event, start, self.event_frames, true, false))
            }
            SendState::Gap { left } => {
                self.state = if left <= 1 {
                    SendState::Idle
                } else {
                    SendState::Gap { left: left - 1 }
                };
                None
            }
        }
    }

    fn packet(&self, event: u8, start: u32, frames: u32, end: bool, marker: bool) -> EventPacket {
        // At most 1000 ms = 8000 units: always fits the 16-bit field.
        let duration = u16::try_from(frames * FRAME_TS).unwrap_or(u16::MAX);
        EventPacket {
            payload: EventPayload {
                event,
                end,
                volume: VOLUME,
                duration,
            },
            timestamp: start,
            marker,
        }
    }
}

/// A far-end digit, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// The digit (`0-9 * # A-D`).
    pub digit: char,
    /// The event's RTP timestamp (its identity).
    pub timestamp: u32,
    /// The SSRC it came on.
    pub ssrc: u32,
}

/// Counters of a [`DtmfReceiver`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtmfReceiverStats {
    /// Telephone-event packets given to the receiver.
    pub packets: u64,
    /// Digits reported.
    pub digits: u64,
    /// Packets of an event already reported (updates, end retransmissions).
    pub repeats: u64,
    /// Packets of an event older than the last one reported (reordered).
    pub stale: u64,
    /// New events that are not DTMF digits (e.g. flash, 16): not reported.
    pub other_events: u64,
    /// Payloads too short to read.
    pub malformed: u64,
}

/// Reports each far-end digit exactly once.
///
/// An event is identified by its RTP timestamp, which every packet of the
/// event carries (RFC 4733 §2.5.1): the first packet seen with a new
/// timestamp reports the digit, every other packet of that event (updates,
/// the three end packets, duplicates) is ignored, and so is any packet of
/// an older event arriving late. Reporting on the first packet rather than
/// the end packet means a lost end packet never loses the digit.
#[derive(Debug, Clone, Default)]
pub struct DtmfReceiver {
    /// SSRC and timestamp of the newest event seen.
    last: Option<(u32, u32)>,
    stats: DtmfReceiverStats,
}

impl DtmfReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters.
    pub fn stats(&self) -> DtmfReceiverStats {
        self.stats
    }

    /// One telephone-event packet: its SSRC, RTP timestamp and payload.
    /// `Ok(Some(digit))` the first time an event is seen.
    pub fn receive(
        &mut self,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<DtmfDigit>, DtmfError> {
        self.stats.packets += 1;
        let event = match EventPayload::parse(payload) {
            Ok(e) => e,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        if let Some((_, last_ts)) = self.last.filter(|&(last_ssrc, _)| last_ssrc == ssrc) {
            // Serial-number comparison: correct across the 2^32 wrap.
            let age = last_ts.wrapping_sub(timestamp) as i32;
            if age == 0 {
                self.stats.repeats += 1;
                return Ok(None);
            }
            // A packet of an earlier event (reordered): ignore it. A much
            // older timestamp is not reordering but a sender that restarted
            // its clock on the same SSRC: its events are new.
            if age > 0 && age < STALE_WINDOW {
                self.stats.stale += 1;
                return Ok(None);
            }
        }
        self.last = Some((ssrc, timestamp));
        match digit_of(event.event) {
            Some(digit) => {
                self.stats.digits += 1;
                Ok(Some(DtmfDigit {
                    digit,
                    timestamp,
                    ssrc,
                }))
            }
            None => {
                self.stats.other_events += 1;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RTP packets of digit 5 in SIPp's `dtmf_2833_5.pcap`
    /// (/usr/share/sip-tester): 7 updates (marker on the first) and the
    /// end packet three times with the same sequence number.
    const SIPP_DIGIT_5: [&str; 10] = [
        "80e51fdb0000a8c00e05384e050a0000",
        "80651fdc0000a8c00e05384e050a0140",
        "80651fdd0000a8c00e05384e050a0280",
        "80651fde0000a8c00e05384e050a03c0",
        "80651fdf0000a8c00e05384e050a0500",
        "80651fe00000a8c00e05384e050a0640",
        "80651fe10000a8c00e05384e050a0780",
        "80651fe20000a8c00e05384e058a08c0",
        "80651fe20000a8c00e05384e058a08c0",
        "80651fe20000a8c00e05384e058a08c0",
    ];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Feeds an RTP datagram's telephone-event to `rx`.
    fn feed(rx: &mut DtmfReceiver, datagram: &[u8]) -> Option<DtmfDigit> {
        let p = rtp_types::RtpPacket::parse(datagram).unwrap();
        rx.receive(p.ssrc(), p.timestamp(), p.payload()).unwrap()
    }

    #[test]
    fn event_codes_round_trip() {
        for (digit, code) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('D', 15),
        ] {
            assert_eq!(event_code(digit), Some(code));
            assert_eq!(digit_of(code), Some(digit));
        }
        assert_eq!(event_code('d'), Some(15));
        assert_eq!(event_code('E'), None);
        assert_eq!(event_code(' '), None);
        assert_eq!(digit_of(16), None);
    }

    #[test]
    fn payload_round_trips_and_reads_the_wire_format() {
        let p = EventPayload {
            event: 5,
            end: true,
            volume: 10,
            duration: 2240,
        };
        assert_eq!(p.to_bytes(), [0x05, 0x8a, 0x08, 0xc0]);
        assert_eq!(EventPayload::parse(&p.to_bytes()), Ok(p));
        assert_eq!(
            EventPayload::parse(&[5, 0x0a, 0]),
            Err(DtmfError::Truncated { len: 3 })
        );
    }

    #[test]
    fn sipp_digit_is_reported_exactly_once() {
        let mut rx = DtmfReceiver::new();
        let digits: Vec<DtmfDigit> = SIPP_DIGIT_5
            .iter()
            .filter_map(|h| feed(&mut rx, &hex(h)))
            .collect();
        assert_eq!(
            digits,
            [DtmfDigit {
                digit: '5',
                timestamp: 0xa8c0,
                ssrc: 0x0e05_384e
            }]
        );
        assert_eq!(rx.stats().repeats, 9);
    }

    #[test]
    fn digit_is_reported_when_only_the_end_packets_arrive() {
        let mut rx = DtmfReceiver::new();
        let got: Vec<_> = SIPP_DIGIT_5[7..]
            .iter()
            .filter_map(|h| feed(&mut rx, &hex(h)))
            .collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].digit, '5');
    }

    #[test]
    fn reordered_packets_of_an_earlier_event_are_not_reported_again() {
        let mut rx = DtmfReceiver::new();
        let ev = |event: u8, end: bool| {
            EventPayload {
                event,
                end,
                volume: 10,
                duration: 800,
            }
            .to_bytes()
        };
        assert_eq!(
            rx.receive(1, 1000, &ev(1, false)).unwrap().unwrap().digit,
            '1'
        );
        assert_eq!(
            rx.receive(1, 3000, &ev(2, false)).unwrap().unwrap().digit,
            '2'
        );
        // The end packet of '1' overtaken by '2'.
        assert_eq!(rx.receive(1, 1000, &ev(1, true)).unwrap(), None);
        assert_eq!(rx.stats().stale, 1);
        // The same digit again is a new event (new timestamp).
        assert_eq!(
            rx.receive(1, 5000, &ev(2, false)).unwrap().unwrap().digit,
            '2'
        );
        assert_eq!(rx.stats().digits, 3);
    }

    #[test]
    fn timestamp_wrap_between_events_keeps_reporting() {
        let mut rx = DtmfReceiver::new();
        let p = EventPayload {
            event: 11,
            end: false,
            volume: 10,
            duration: 160,
        }
        .to_bytes();
        assert!(rx.receive(7, u32::MAX - 100, &p).unwrap().is_some());
        // 2000 units later, past the 2^32 wrap: a newer event, not stale.
        assert_eq!(rx.receive(7, 1899, &p).unwrap().map(|d| d.digit), Some('#'));
        // And the wrapped-back old one is stale.
        assert_eq!(rx.receive(7, u32::MAX - 100, &p).unwrap(), None);
    }

    #[test]
    fn a_sender_restarting_its_clock_is_not_taken_for_reordering() {
        let mut rx = DtmfReceiver::new();
        let p = [3, 10, 0, 160];
        assert!(rx.receive(7, 9_000_000, &p).unwrap().is_some());
        assert!(rx.receive(7, 1_000, &p).unwrap().is_some());
    }

    #[test]
    fn new_ssrc_starts_a_new_event_space() {
        let mut rx = DtmfReceiver::new();
        let p = [4, 10, 0, 160];
        assert!(rx.receive(1, 500, &p).unwrap().is_some());
        assert!(rx.receive(2, 500, &p).unwrap().is_some());
    }

    #[test]
    fn non_dtmf_events_and_short_payloads_are_not_digits() {
        let mut rx = DtmfReceiver::new();
        assert_eq!(rx.receive(1, 100, &[16, 10, 0, 160]).unwrap(), None);
        assert_eq!(rx.stats().other_events, 1);
        assert_eq!(
            rx.receive(1, 200, &[1, 2]),
            Err(DtmfError::Truncated { len: 2 })
        );
        assert_eq!(rx.stats().malformed, 1);
    }

    /// The whole event as the sender emits it, one poll per 20 ms tick.
    fn run(sender: &mut DtmfSender, start_ts: u32, ticks: u32) -> Vec<Option<EventPacket>> {
        (0..ticks)
            .map(|i| sender.poll(start_ts.wrapping_add(i * FRAME_TS)))
            .collect()
    }

    #[test]
    fn sender_emits_updates_then_three_identical_end_packets() {
        let mut s = DtmfSender::new(100);
        s.queue('7').unwrap();
        let out = run(&mut s, 8000, 12);
        let packets: Vec<EventPacket> = out.iter().map_while(|p| *p).collect();
        // 100 ms = 5 updates every 20 ms, then 3 end packets.
        assert_eq!(packets.len(), 5 + 3);
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(p.timestamp, 8000, "every packet carries the event start");
            assert_eq!(p.payload.event, 7);
            assert_eq!(p.payload.volume, VOLUME);
            assert_eq!(p.marker, i == 0, "marker on the first packet only");
        }
        let durations: Vec<u16> = packets.iter().map(|p| p.payload.duration).collect();
        assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800, 800]);
        let ends: Vec<bool> = packets.iter().map(|p| p.payload.end).collect();
        assert_eq!(ends, [false, false, false, false, false, true, true, true]);
        // Then audio again.
        assert!(out[8..].iter().all(Option::is_none));
        assert!(!s.is_busy());
    }

    #[test]
    fn queued_digits_are_separated_by_an_audio_gap() {
        let mut s = DtmfSender::new(40);
        s.queue('1').unwrap();
        s.queue('2').unwrap();
        let out = run(&mut s, 0, 20);
        let kinds: String = out
            .iter()
            .map(|p| match p {
                Some(p) if p.payload.end => 'E',
                Some(_) => 'T',
                None => '.',
            })
            .collect();
        assert_eq!(kinds, "TTEEE..TTEEE........");
        assert_eq!(out[7].unwrap().timestamp, 7 * FRAME_TS);
        assert_eq!(out[7].unwrap().payload.event, 2);
    }

    #[test]
    fn sender_rejects_bad_digits_and_bounds_its_queue() {
        let mut s = DtmfSender::default();
        assert_eq!(s.queue('x'), Err(DtmfError::InvalidDigit { digit: 'x' }));
        assert!(
            DtmfError::InvalidDigit { digit: '\u{1b}' }
                .to_string()
                .contains("\\u{1b}")
        );
        for _ in 0..MAX_QUEUED {
            s.queue('1').unwrap();
        }
        assert_eq!(s.queue('1'), Err(DtmfError::QueueFull));
    }

    #[test]
    fn event_length_is_clamped() {
        let mut s = DtmfSender::new(5);
        s.queue('1').unwrap();
        let tones = run(&mut s, 0, 10)
            .iter()
            .flatten()
            .filter(|p| !p.payload.end)
            .count();
        assert_eq!(tones, 2, "clamped to 40 ms");
    }

    #[test]
    fn sender_and_receiver_agree_on_one_digit_per_event() {
        let mut s = DtmfSender::default();
        let mut rx = DtmfReceiver::new();
        for d in ['1', '#', '1'] {
            s.queue(d).unwrap();
        }
        let mut got = Vec::new();
        for i in 0..60u32 {
            if let Some(p) = s.poll((u32::MAX - 1000).wrapping_add(i * FRAME_TS)) {
                if let Some(d) = rx.receive(9, p.timestamp, &p.payload.to_bytes()).unwrap() {
                    got.push(d.digit);
                }
            }
        }
        assert_eq!(got, ['1', '#', '1']);
    }
}

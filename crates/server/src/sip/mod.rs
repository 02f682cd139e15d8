//! The media and session-description half of the SIP trunk carrier.
//!
//! Everything here is sans-IO: no socket, no task, no timer, no clock read.
//! Bytes go in (an SDP body, an RTP datagram) with the time they arrived as a
//! `u64` of milliseconds on the caller's clock, and bytes or decisions come
//! out (an SDP body to put in a SIP message, an RTP packet to send, one
//! 20 ms frame for the operator). The carrier task owns the sockets and the
//! 20 ms tick and drives these types, so every timing rule (jitter, loss,
//! wrap-around, DTMF durations) is tested step by step in simulated time.
//!
//! - [`sdp`]: RFC 3264 offer/answer for one audio stream (PCMU/PCMA,
//!   telephone-event, hold directions) on top of `sdp-types`;
//! - [`rtp`]: the 20 ms RTP sender, the ingress reorder/jitter buffer and
//!   the µ-law ↔ A-law helpers, on top of `rtp-types`;
//! - [`dtmf`]: RFC 4733 telephone-event sending and receiving;
//! - [`digest`]: digest authentication, the checking side (challenges,
//!   stateless nonces, credentials verified; also what the test kit uses
//!   to check what SIPp received);
//! - [`session_timer`]: RFC 4028 session timers (the header values, who
//!   refreshes, when a refresh is due and when a session has expired);
//! - [`media`]: the one exception, the tokio task that owns a call's RTP
//!   socket and 20 ms tick and drives the types above.
//!
//! The signalling half does I/O:
//!
//! - [`signalling`]: SIP behind our own small boundary (the
//!   [`signalling::Signalling`] and [`signalling::IncomingHandler`] traits);
//!   its one implementation wraps `rsipstack`, whose types stay inside it;
//! - [`tls`]: SIP over TLS: the listener's certificate and key and the
//!   roots trunks are verified against, read and checked at start;
//! - [`trunk`]: the SIP trunk carrier itself: trunk and endpoint
//!   configuration, the source allow-list, and the call logic that turns
//!   INVITEs, responses and in-dialog requests into carrier calls and
//!   events;
//! - [`register`]: REGISTER with refresh for trunks that want it (the
//!   refresh and retry schedule is sans-IO; one task per trunk drives it).
//!
//! The operator side of the service speaks 8 kHz µ-law in 20 ms frames, so
//! PCMU is a pass-through and PCMA is one table lookup per byte.

pub mod digest;
pub mod dtmf;
pub mod media;
pub mod register;
pub mod rtp;
pub mod sdp;
pub mod session_timer;
pub mod signalling;
pub mod tls;
pub mod trunk;

/// RTP clock rate of G.711 and of telephone-event as we negotiate it (Hz).
pub const CLOCK_RATE: u32 = 8_000;
/// Milliseconds of audio in one frame (the only packetisation we send).
pub const FRAME_MS: u32 = 20;
/// Samples (= G.711 bytes = RTP timestamp units) in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 160;
/// RTP timestamp increment of one frame.
pub const FRAME_TS: u32 = FRAME_SAMPLES as u32;

/// Static payload type of PCMU (RFC 3551).
pub const PT_PCMU: u8 = 0;
/// Static payload type of PCMA (RFC 3551).
pub const PT_PCMA: u8 = 8;
/// Static payload type of comfort noise (RFC 3389).
pub const PT_CN: u8 = 13;
/// The dynamic payload type we offer for telephone-event (the usual one).
pub const PT_TELEPHONE_EVENT: u8 = 101;

/// The audio codecs the trunk carrier speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law: our wire format, passed through untouched.
    Pcmu,
    /// G.711 A-law: converted byte by byte to and from µ-law.
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551).
    pub const fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => PT_PCMU,
            Codec::Pcma => PT_PCMA,
        }
    }

    /// The SDP encoding name.
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec of a static payload type, if it is one of ours.
    pub const fn from_static_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            PT_PCMU => Some(Codec::Pcmu),
            PT_PCMA => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The byte that encodes silence in this codec.
    pub const fn silence(self) -> u8 {
        match self {
            Codec::Pcmu => audin_codec::mulaw::SILENCE,
            Codec::Pcma => audin_codec::alaw::SILENCE,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.encoding_name())
    }
}

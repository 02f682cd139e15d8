//! `audin-protocol`: the Audin operator wire protocol v1, as Rust types.
//!
//! This crate is the one contract between the SDKs (browser and native) and
//! the operator service. It holds the serde types of every HTTP body and
//! WebSocket message, the validation of phone numbers (E.164) and DTMF
//! digits, the stable error codes and the WebSocket close codes. The prose
//! version is `docs/protocol-v1.md`; the golden fixtures in
//! `tests/fixtures/` keep the two (and the TypeScript side) from drifting.
//!
//! It deliberately knows nothing about I/O: no sockets, no async runtime, no
//! clock, no database. Anything that needs those belongs in `audin-server`
//! or `audin-operator`.
//!
//! ```
//! use audin_protocol::{decode_client_message, ClientMessage};
//! let msg = decode_client_message(r#"{"type":"ping","id":7}"#).unwrap();
//! assert_eq!(msg, ClientMessage::Ping { id: 7 });
//! ```

mod error;
mod http;
mod messages;
mod text;
mod validate;

pub use error::{CloseCode, ErrorCode};
pub use http::{
    CallRecord, ErrorBody, ErrorDetail, MAX_RECORDED_DTMF, PhoneNumberInfo, TokenRequest,
    TokenResponse,
};
pub use messages::{
    ActiveCall, AttachHint, AudioClientMessage, AudioServerMessage, ClientMessage, DecodeError,
    HangupReason, RejectReason, ServerMessage, decode_audio_client_message,
    decode_audio_server_message, decode_client_message, decode_server_message, readable_request_id,
};
pub use text::{MAX_ECHO_CHARS, Untrusted, escape_unsafe, is_printable_text, is_unsafe_char};
pub use validate::{DtmfError, E164Error, is_valid_dtmf_digit, validate_dtmf_digit, validate_e164};

use serde::{Deserialize, Serialize};

/// The WebSocket subprotocol both sockets negotiate (`Sec-WebSocket-Protocol`).
pub const SUBPROTOCOL: &str = "audin.operator.v1";
/// The major protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Path of the presence WebSocket.
pub const PRESENCE_PATH: &str = "/v1/operator/presence";
/// Path of the per-call audio WebSocket.
pub const AUDIO_PATH: &str = "/v1/operator/audio";
/// Path of the token endpoint (account API key in `X-API-Key`).
pub const TOKEN_PATH: &str = "/operator-sessions/token";
/// Path of the phone-number listing (session token as bearer).
pub const PHONE_NUMBERS_PATH: &str = "/v1/phone-numbers";
/// Path of the call-record listing (account API key in `X-API-Key`).
pub const CALLS_PATH: &str = "/v1/calls";

/// Sample rate of the wire audio, in Hz.
pub const AUDIO_SAMPLE_RATE: u32 = 8_000;
/// Duration of one audio frame, in milliseconds.
pub const FRAME_MS: u32 = 20;
/// Size of one binary audio frame: 20 ms of 8 kHz G.711 mu-law.
pub const FRAME_BYTES: usize = 160;
/// Largest text message either side accepts, in bytes.
pub const MAX_TEXT_MESSAGE_BYTES: usize = 16 * 1024;

/// Default presence heartbeat interval of the SDKs, in milliseconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 25_000;
/// Default reconnect backoff schedule of the SDKs; the last value repeats.
pub const DEFAULT_RECONNECT_BACKOFF_MS: [u64; 5] = [1_000, 2_000, 5_000, 10_000, 30_000];
/// Default silence after which the server drops a presence socket (2.5 × 25 s).
pub const DEFAULT_SILENCE_TIMEOUT_MS: u64 = 62_500;
/// Default time a call waits for its audio socket to (re)attach.
pub const DEFAULT_AUDIO_GRACE_MS: u64 = 15_000;

/// How long an attach ticket (`callAccepted.attachTicket`) is valid.
pub const ATTACH_TICKET_TTL_SECS: u64 = 30;
/// Default silence (no frame, no message, no ping) after which the server
/// drops a call's audio socket; the call then waits in its grace window.
pub const DEFAULT_AUDIO_SILENCE_TIMEOUT_MS: u64 = 5_000;
/// Default silence after which a client treats its audio socket as dead and
/// reattaches (the server sends a frame every 20 ms while a call is active).
pub const DEFAULT_CLIENT_AUDIO_SILENCE_MS: u64 = 2_000;
/// Default ring timeout of an inbound offer.
pub const DEFAULT_RING_TIMEOUT_MS: u64 = 30_000;
/// Default session token lifetime.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 3_600;
/// Time a socket has to send its first (authenticating) message.
pub const AUTH_TIMEOUT_MS: u64 = 10_000;

/// Why a call ended. The set is fixed by the public SDK contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The operator hung up.
    Hangup,
    /// The far end hung up (or the caller gave up while ringing).
    RemoteHangup,
    /// Another operator accepted the inbound offer first.
    TakenByOther,
    /// The offer was declined (by every operator, or by the far end / busy).
    Rejected,
    /// Nobody answered before the ring timeout.
    NoAnswer,
    /// A technical failure: carrier error, lost audio past the grace window,
    /// server restart.
    Failed,
    /// The operator went offline during the call.
    Offline,
}

impl EndReason {
    /// The wire (and SDK) spelling, e.g. `"remote_hangup"`.
    ///
    /// ```
    /// assert_eq!(audin_protocol::EndReason::TakenByOther.as_str(), "taken_by_other");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hangup => "hangup",
            Self::RemoteHangup => "remote_hangup",
            Self::TakenByOther => "taken_by_other",
            Self::Rejected => "rejected",
            Self::NoAnswer => "no_answer",
            Self::Failed => "failed",
            Self::Offline => "offline",
        }
    }

    /// Every end reason, in documentation order.
    pub const ALL: [EndReason; 7] = [
        Self::Hangup,
        Self::RemoteHangup,
        Self::TakenByOther,
        Self::Rejected,
        Self::NoAnswer,
        Self::Failed,
        Self::Offline,
    ];

    /// Parses the wire spelling.
    ///
    /// ```
    /// use audin_protocol::EndReason;
    /// assert_eq!(EndReason::parse("no_answer"), Some(EndReason::NoAnswer));
    /// assert_eq!(EndReason::parse("bogus"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Direction of a call, seen from the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The phone network called one of the account's numbers.
    Inbound,
    /// The operator dialled out.
    Outbound,
}

impl Direction {
    /// The wire spelling.
    ///
    /// ```
    /// assert_eq!(audin_protocol::Direction::Inbound.as_str(), "inbound");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

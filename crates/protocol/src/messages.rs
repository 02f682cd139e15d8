//! WebSocket messages of both sockets, both directions.
//!
//! Every text message is a JSON object with a `type` field. Unknown fields
//! are ignored (so minor versions can add fields); an unknown `type` gets an
//! `error` reply with `UNKNOWN_MESSAGE` and the connection stays up.

use crate::{EndReason, ErrorCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Client → server on the presence socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClientMessage {
    /// First message of the socket: authenticates it with a session token.
    Hello {
        /// The session token.
        token: String,
        /// Free-form client identification, e.g. `"operator-sdk/0.1.0"`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// Announces (or replaces) the set of numbers the operator takes calls on.
    GoOnline {
        /// Phone number ids; an empty list means "online on nothing".
        phone_number_ids: Vec<String>,
        /// Echoed in the `availability` reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// App-level heartbeat; answered by `pong` with the same id.
    Ping {
        /// Any number; echoed back.
        id: u64,
    },
    /// Swaps the socket's token for a fresh one before it expires.
    RefreshToken {
        /// The new session token (same account and operator).
        token: String,
        /// Echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// Answers a ringing offer.
    Accept {
        /// The offered call.
        call_sid: String,
    },
    /// Declines a ringing offer.
    Reject {
        /// The offered call.
        call_sid: String,
        /// `declined` (the operator said no) or `busy` (auto-decline).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<RejectReason>,
    },
    /// Places an outbound call.
    Dial {
        /// Correlates the `dialAccepted` or `error` reply.
        request_id: String,
        /// Callee, E.164.
        to: String,
        /// One of the account's numbers, E.164.
        caller_id: String,
    },
    /// Ends the operator's call when its audio socket is not attached.
    Hangup {
        /// The call.
        call_sid: String,
        /// `hangup` (default), `offline` or `failed`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<HangupReason>,
    },
}

/// Why an operator declined an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The operator chose to decline.
    Declined,
    /// The SDK declined because the operator is on another call.
    Busy,
}

/// Why the operator side ends a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupReason {
    /// `call.hangup()`.
    Hangup,
    /// `goOffline()` during the call.
    Offline,
    /// The client gave up on the call's audio (it could not reattach within
    /// its window), so the record says `failed`, not `hangup`.
    Failed,
}

impl From<HangupReason> for EndReason {
    fn from(r: HangupReason) -> Self {
        match r {
            HangupReason::Hangup => EndReason::Hangup,
            HangupReason::Offline => EndReason::Offline,
            HangupReason::Failed => EndReason::Failed,
        }
    }
}

/// The call an operator holds, as told in `welcome` after a reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveCall {
    /// The call.
    pub call_sid: String,
    /// Whether the far end has answered.
    pub answered: bool,
}

/// Where and how the audio socket of an accepted or dialled call attaches
/// (fields of `callAccepted` / `dialAccepted`, both optional and additive
/// within v1). A client that ignores them opens the audio socket on its
/// own service URL with a session token, as before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachHint {
    /// `https://…` (or `http://…`) URL of the service node that owns the
    /// call: the audio socket goes to its `/v1/operator/audio`, so its
    /// frames are not relayed between nodes. Only used when its scheme
    /// matches the client's own service URL's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_url: Option<String>,
    /// A single-use ticket, valid for this call, this operator and
    /// [`crate::ATTACH_TICKET_TTL_SECS`] seconds, that the first `attach`
    /// may carry in place of a session token (sparing a `getToken`
    /// request). A reattach uses a session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_ticket: Option<String>,
}

/// Server → client on the presence socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage {
    /// The socket is authenticated.
    Welcome {
        /// This connection's id (for logs and support).
        session_id: String,
        /// The operator the token names.
        operator_ref: String,
        /// The token's expiry, RFC 3339.
        expires_at: String,
        /// Silence after which the server drops the socket, in ms.
        silence_timeout_ms: u64,
        /// The call this operator still holds on the server, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        active_call: Option<ActiveCall>,
    },
    /// Which numbers the operator is now online on.
    Availability {
        /// Numbers the operator now takes calls on.
        accepted: Vec<String>,
        /// Numbers refused (not owned by the account, or not in the token).
        rejected: Vec<String>,
        /// Echo of the `goOnline` request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// The socket now runs on the refreshed token.
    TokenRefreshed {
        /// The new expiry, RFC 3339.
        expires_at: String,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// An inbound call is ringing for this operator.
    CallOffer {
        /// The call.
        call_sid: String,
        /// Caller, E.164.
        from: String,
        /// The account's number that was called, E.164.
        to: String,
        /// Id of that number.
        phone_number_id: String,
    },
    /// This operator's `accept` won; open the audio socket now.
    CallAccepted {
        /// The call.
        call_sid: String,
        /// Where and how to attach the audio socket, when the service says
        /// (additive within v1).
        #[serde(flatten)]
        attach: AttachHint,
    },
    /// The `dial` was accepted; open the audio socket now.
    DialAccepted {
        /// Echo of the dial's request id.
        request_id: String,
        /// The new call.
        call_sid: String,
        /// Caller id used, E.164.
        from: String,
        /// Callee, E.164.
        to: String,
        /// Where and how to attach the audio socket, when the service says
        /// (additive within v1).
        #[serde(flatten)]
        attach: AttachHint,
    },
    /// A call this operator was offered or holds has ended.
    CallEnded {
        /// The call.
        call_sid: String,
        /// Why.
        reason: EndReason,
    },
    /// A request failed, or a message could not be understood.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Explanation; never contains a secret.
        message: String,
        /// Echo of the failing request's id, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// The call concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_sid: Option<String>,
    },
}

/// Client → server text messages on a call's audio socket. Audio itself is
/// binary: frames of exactly [`crate::FRAME_BYTES`] bytes of mu-law.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum AudioClientMessage {
    /// First message: attaches the socket to the operator's call (also used
    /// to reattach after a drop, within the grace window).
    Attach {
        /// A session token of the operator holding the call.
        token: String,
        /// The call.
        call_sid: String,
    },
    /// Tells the service the operator muted or unmuted (the SDK sends
    /// silence while muted either way).
    Mute {
        /// Muted or not.
        muted: bool,
    },
    /// Sends one DTMF digit to the far end.
    Dtmf {
        /// `0-9`, `*` or `#`.
        digit: String,
    },
    /// Ends the call.
    Hangup {
        /// `hangup` (default), `offline` or `failed`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<HangupReason>,
    },
    /// Round-trip probe (added within v1): answered at once by `pong` with
    /// the same id, so the client can measure the audio path's round-trip
    /// time. Counts toward the socket's text-message rate limit.
    Ping {
        /// Chosen by the client; echoed back.
        id: u32,
    },
    /// First message instead of `attach` (added within v1): starts a
    /// preflight echo session, which needs a valid session token and no
    /// call. The server answers `preflightStarted`, returns every audio
    /// frame at once, answers `ping`, and closes with 1000 after
    /// `preflightStarted.maxMs`. A server without the capability answers
    /// `error` `UNKNOWN_MESSAGE`.
    Preflight {
        /// A session token (any operator of any account).
        token: String,
    },
}

/// Server → client text messages on a call's audio socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum AudioServerMessage {
    /// The socket is attached; audio flows from now on.
    Attached {
        /// The call.
        call_sid: String,
        /// Whether the far end has answered (always true for inbound).
        answered: bool,
        /// Whether this was a reattach inside the grace window.
        resumed: bool,
    },
    /// The far end of an outbound call answered.
    Answered {
        /// The call.
        call_sid: String,
    },
    /// The call ended; the server closes the socket with 1000 next.
    Ended {
        /// The call.
        call_sid: String,
        /// Why.
        reason: EndReason,
    },
    /// A control message or frame was refused.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Explanation; never contains a secret.
        message: String,
    },
    /// Answer to an audio-socket `ping` (added within v1).
    Pong {
        /// The ping's id.
        id: u32,
    },
    /// A preflight echo session started (added within v1): frames sent from
    /// now on come straight back.
    PreflightStarted {
        /// The session's bound: the server closes with 1000 this many ms
        /// after this message.
        max_ms: u64,
    },
}

/// Why a text message could not be decoded. Each maps to an [`ErrorCode`].
///
/// The texts are made safe where the error is built (in one place, the
/// decoders' shared classification): a peer's input quoted in them (serde's "unknown variant
/// `…`", "invalid type: string …") has every control and format character
/// escaped and is bounded, so the `Display` of any `DecodeError` can go
/// into an `error` message or a log line as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON at all (the parser's explanation, made safe).
    InvalidJson(String),
    /// A JSON object whose `type` this side does not know (the type,
    /// quoted and escaped as by [`crate::Untrusted`]).
    UnknownType(String),
    /// A known `type` with missing or ill-typed fields, or no `type` (the
    /// explanation, made safe).
    InvalidMessage(String),
    /// Over [`crate::MAX_TEXT_MESSAGE_BYTES`].
    TooLarge(usize),
}

impl DecodeError {
    /// The error code to reply with.
    ///
    /// ```
    /// use audin_protocol::{decode_client_message, ErrorCode};
    /// let err = decode_client_message(r#"{"type":"teleport"}"#).unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::UnknownMessage);
    /// ```
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidJson(_) => ErrorCode::InvalidJson,
            Self::UnknownType(_) => ErrorCode::UnknownMessage,
            Self::InvalidMessage(_) => ErrorCode::InvalidMessage,
            Self::TooLarge(_) => ErrorCode::MessageTooLarge,
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidJson(e) => write!(f, "message is not valid JSON: {e}"),
            Self::UnknownType(t) => write!(f, "unknown message type {t}"),
            Self::InvalidMessage(e) => write!(f, "invalid message: {e}"),
            Self::TooLarge(n) => write!(
                f,
                "message of {n} bytes exceeds the {} byte limit",
                crate::MAX_TEXT_MESSAGE_BYTES
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

const CLIENT_TYPES: &[&str] = &[
    "hello",
    "goOnline",
    "ping",
    "refreshToken",
    "accept",
    "reject",
    "dial",
    "hangup",
];
const SERVER_TYPES: &[&str] = &[
    "welcome",
    "availability",
    "pong",
    "tokenRefreshed",
    "callOffer",
    "callAccepted",
    "dialAccepted",
    "callEnded",
    "error",
];
const AUDIO_CLIENT_TYPES: &[&str] = &["attach", "mute", "dtmf", "hangup", "ping", "preflight"];
const AUDIO_SERVER_TYPES: &[&str] = &[
    "attached",
    "answered",
    "ended",
    "error",
    "pong",
    "preflightStarted",
];

/// Decodes a text message, classifying failures so the reply can say
/// exactly what was wrong.
fn decode<T: DeserializeOwned>(text: &str, known: &[&str]) -> Result<T, DecodeError> {
    if text.len() > crate::MAX_TEXT_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(text.len()));
    }
    match serde_json::from_str::<T>(text) {
        Ok(msg) => Ok(msg),
        Err(err) => Err(classify(text, known, err)),
    }
}

/// Most characters of a parser's explanation kept in a [`DecodeError`]:
/// serde quotes the offending value whole ("unknown variant `<16 KiB>`"),
/// and an `error` reply carrying all of it would itself exceed the 16 KiB
/// a peer accepts.
const MAX_EXPLANATION_CHARS: usize = 200;

/// The one place where a decoder's explanation, which may quote the peer's
/// input, becomes [`DecodeError`] text: unsafe characters escaped, length
/// bounded.
fn explanation(err: &serde_json::Error) -> String {
    let text = crate::escape_unsafe(&err.to_string());
    match text.char_indices().nth(MAX_EXPLANATION_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn classify(text: &str, known: &[&str], err: serde_json::Error) -> DecodeError {
    #[derive(Deserialize)]
    struct Tagged {
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Tagged>(text) {
        Err(_) if serde_json::from_str::<serde_json::Value>(text).is_err() => {
            DecodeError::InvalidJson(explanation(&err))
        }
        Err(_) => DecodeError::InvalidMessage("a message must be a JSON object".into()),
        Ok(Tagged { kind: None }) => DecodeError::InvalidMessage("missing \"type\"".into()),
        Ok(Tagged {
            kind: Some(serde_json::Value::String(t)),
        }) if !known.contains(&t.as_str()) => {
            DecodeError::UnknownType(crate::Untrusted(&t).to_string())
        }
        Ok(_) => DecodeError::InvalidMessage(explanation(&err)),
    }
}

/// The `requestId` of a message that could not be decoded, when it can be
/// read: a JSON object whose `requestId` is a string of at most
/// [`crate::MAX_ECHO_CHARS`] printable characters ([`crate::is_printable_text`]).
///
/// The `error` for such a message echoes it, as the reply to a valid one
/// would, so the client can tell which request failed. Anything else is not
/// echoed: the echo must be the exact id to be of use, so it cannot be
/// escaped or cut, and a long one would push the reply past the 16 KiB a
/// peer accepts.
///
/// ```
/// use audin_protocol::{decode_client_message, readable_request_id};
/// let text = r#"{"type":"dial","requestId":"r1","to":12}"#;
/// assert!(decode_client_message(text).is_err());
/// assert_eq!(readable_request_id(text).as_deref(), Some("r1"));
/// assert_eq!(readable_request_id(r#"{"type":"dial","requestId":7}"#), None);
/// assert_eq!(readable_request_id("{oops"), None);
/// ```
pub fn readable_request_id(text: &str) -> Option<String> {
    if text.len() > crate::MAX_TEXT_MESSAGE_BYTES {
        return None;
    }
    let value = serde_json::from_str::<serde_json::Value>(text).ok()?;
    let id = value.get("requestId")?.as_str()?;
    (id.chars().count() <= crate::MAX_ECHO_CHARS && crate::is_printable_text(id))
        .then(|| id.to_owned())
}

/// Decodes a client → server presence message.
///
/// ```
/// use audin_protocol::{decode_client_message, ErrorCode};
/// assert_eq!(decode_client_message("{oops").unwrap_err().code(), ErrorCode::InvalidJson);
/// assert_eq!(
///     decode_client_message(r#"{"type":"dial","to":"+1"}"#).unwrap_err().code(),
///     ErrorCode::InvalidMessage
/// );
/// ```
pub fn decode_client_message(text: &str) -> Result<ClientMessage, DecodeError> {
    decode(text, CLIENT_TYPES)
}

/// Decodes a server → client presence message.
///
/// ```
/// use audin_protocol::{decode_server_message, ServerMessage};
/// let m = decode_server_message(r#"{"type":"pong","id":1,"future":true}"#).unwrap();
/// assert_eq!(m, ServerMessage::Pong { id: 1 });
/// ```
pub fn decode_server_message(text: &str) -> Result<ServerMessage, DecodeError> {
    decode(text, SERVER_TYPES)
}

/// Decodes a client → server audio-socket control message.
///
/// ```
/// use audin_protocol::{decode_audio_client_message, AudioClientMessage};
/// let m = decode_audio_client_message(r#"{"type":"mute","muted":true}"#).unwrap();
/// assert_eq!(m, AudioClientMessage::Mute { muted: true });
/// ```
pub fn decode_audio_client_message(text: &str) -> Result<AudioClientMessage, DecodeError> {
    decode(text, AUDIO_CLIENT_TYPES)
}

/// Decodes a server → client audio-socket control message.
///
/// ```
/// use audin_protocol::{decode_audio_server_message, AudioServerMessage, EndReason};
/// let m = decode_audio_server_message(
///     r#"{"type":"ended","callSid":"CA1","reason":"remote_hangup"}"#,
/// ).unwrap();
/// assert_eq!(m, AudioServerMessage::Ended { call_sid: "CA1".into(), reason: EndReason::RemoteHangup });
/// ```
pub fn decode_audio_server_message(text: &str) -> Result<AudioServerMessage, DecodeError> {
    decode(text, AUDIO_SERVER_TYPES)
}

macro_rules! impl_encode {
    ($($t:ty),*) => {$(
        impl $t {
            /// Encodes the message as its JSON text.
            pub fn to_json(&self) -> String {
                serde_json::to_string(self).expect("protocol messages always serialise")
            }
        }
    )*};
}
impl_encode!(
    ClientMessage,
    ServerMessage,
    AudioClientMessage,
    AudioServerMessage
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_lists_match_the_enums() {
        let samples = [
            ClientMessage::Hello {
                token: "t".into(),
                client: None,
            }
            .to_json(),
            ClientMessage::GoOnline {
                phone_number_ids: vec![],
                request_id: None,
            }
            .to_json(),
            ClientMessage::Ping { id: 1 }.to_json(),
            ClientMessage::RefreshToken {
                token: "t".into(),
                request_id: None,
            }
            .to_json(),
            ClientMessage::Accept {
                call_sid: "c".into(),
            }
            .to_json(),
            ClientMessage::Reject {
                call_sid: "c".into(),
                reason: None,
            }
            .to_json(),
            ClientMessage::Dial {
                request_id: "r".into(),
                to: "+1".into(),
                caller_id: "+2".into(),
            }
            .to_json(),
            ClientMessage::Hangup {
                call_sid: "c".into(),
                reason: None,
            }
            .to_json(),
        ];
        for (json, ty) in samples.iter().zip(CLIENT_TYPES) {
            assert!(
                json.contains(&format!("\"type\":\"{ty}\"")),
                "{json} vs {ty}"
            );
        }
        assert_eq!(samples.len(), CLIENT_TYPES.len());
    }

    #[test]
    fn classification() {
        let code = |s: &str| decode_client_message(s).unwrap_err().code();
        assert_eq!(code(""), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code("42"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"token":"x"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"nope"}"#), ErrorCode::UnknownMessage);
        assert_eq!(
            code(r#"{"type":"ping","id":"x"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"attach","token":"t","callSid":"c"}"#),
            ErrorCode::UnknownMessage
        );
        let big = format!(r#"{{"type":"hello","token":"{}"}}"#, "a".repeat(20_000));
        assert_eq!(code(&big), ErrorCode::MessageTooLarge);
    }

    /// Every decoder, every input: `(code, Display)` of the error, if any.
    fn all_errors(text: &str) -> Vec<(ErrorCode, String)> {
        [
            decode_client_message(text).err(),
            decode_server_message(text).err(),
            decode_audio_client_message(text).err(),
            decode_audio_server_message(text).err(),
        ]
        .into_iter()
        .flatten()
        .map(|e| (e.code(), e.to_string()))
        .collect()
    }

    const HOSTILE: &str = "CA\u{0}\u{1b}[31mX\r\nFAKE \u{202e}\u{2028}\u{feff}\u{85}";

    /// The probe's case (issue 12, point 2): serde's "unknown variant" text
    /// quoted the `reason` raw, NUL, ESC, CR/LF and U+202E included.
    #[test]
    fn unknown_variant_texts_are_escaped() {
        for ty in ["reject", "hangup"] {
            let text =
                serde_json::json!({"type": ty, "callSid": "CAx", "reason": HOSTILE}).to_string();
            let err = decode_client_message(&text).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidMessage);
            let shown = err.to_string();
            assert!(crate::is_printable_text(&shown), "{shown:?}");
            // Still says what was wrong, with the input visible but inert.
            assert!(shown.contains("unknown variant"), "{shown}");
            assert!(shown.contains("\\u{1b}[31mX"), "{shown}");
        }
        let err = decode_audio_client_message(
            &serde_json::json!({"type": "hangup", "reason": HOSTILE}).to_string(),
        )
        .unwrap_err();
        assert!(crate::is_printable_text(&err.to_string()), "{err}");
        let err =
            decode_client_message(&serde_json::json!({"type": HOSTILE}).to_string()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnknownMessage);
        assert!(crate::is_printable_text(&err.to_string()), "{err}");
    }

    /// A quoted value of 16 KiB would make the `error` reply itself too big
    /// for the peer to accept.
    #[test]
    fn explanations_are_bounded() {
        let long = "x".repeat(16_000);
        let text =
            serde_json::json!({"type": "reject", "callSid": "c", "reason": long}).to_string();
        let shown = decode_client_message(&text).unwrap_err().to_string();
        assert!(shown.chars().count() < 300, "{} chars", shown.len());
        let shown = decode_client_message(&serde_json::json!({"type": long}).to_string())
            .unwrap_err()
            .to_string();
        assert!(shown.chars().count() < 100, "{} chars", shown.len());
    }

    #[test]
    fn request_id_is_read_from_ill_typed_messages_only_when_safe() {
        let rid = |s: &str| readable_request_id(s);
        assert_eq!(
            rid(r#"{"type":"dial","requestId":"r1","to":12}"#).as_deref(),
            Some("r1")
        );
        assert_eq!(
            rid(r#"{"type":"goOnline","requestId":"on-1","phoneNumberIds":"pn"}"#).as_deref(),
            Some("on-1")
        );
        assert_eq!(rid(r#"{"type":"dial","requestId":12,"to":12}"#), None);
        assert_eq!(rid(r#"{"type":"dial","to":12}"#), None);
        assert_eq!(rid(r#"["r1"]"#), None);
        assert_eq!(rid(r#"{"requestId":"r1""#), None);
        assert_eq!(
            rid(&serde_json::json!({"requestId": HOSTILE}).to_string()),
            None
        );
        let long = "r".repeat(crate::MAX_ECHO_CHARS + 1);
        assert_eq!(
            rid(&serde_json::json!({"requestId": long}).to_string()),
            None
        );
        let longest = "r".repeat(crate::MAX_ECHO_CHARS);
        assert_eq!(
            rid(&serde_json::json!({"requestId": longest}).to_string()),
            Some(longest)
        );
    }

    /// Characters that break a log line or a terminal, mixed with JSON
    /// syntax so the input reaches every decoding stage.
    fn hostile_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let pieces = prop::sample::select(vec![
            "\u{0}",
            "\u{7}",
            "\u{1b}[2J",
            "\r\n",
            "\u{85}",
            "\u{200b}",
            "\u{202e}",
            "\u{2066}",
            "\u{2028}",
            "\u{feff}",
            "\u{e0041}",
            "\u{ad}",
            "\"",
            "\\",
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "type",
            "reason",
            "busy",
            "é",
            "😀",
            "a",
            "1",
        ]);
        prop_oneof![
            any::<String>(),
            prop::collection::vec(pieces, 0..40).prop_map(|p| p.concat()),
        ]
    }

    proptest::proptest! {
        /// No `DecodeError` of any decoder ever displays an unsafe
        /// character, whatever the input: raw, as a `type`, or as the
        /// value of a field with a closed set of values or a fixed type.
        #[test]
        fn decode_errors_never_display_unsafe_chars(s in hostile_text()) {
            let quoted = serde_json::Value::String(s.clone()).to_string();
            let inputs = [
                s.clone(),
                format!(r#"{{"type":{quoted}}}"#),
                format!(r#"{{"type":"reject","callSid":"CAx","reason":{quoted}}}"#),
                format!(r#"{{"type":"hangup","callSid":"CAx","reason":{quoted}}}"#),
                format!(r#"{{"type":"hangup","reason":{quoted}}}"#),
                format!(r#"{{"type":"ended","callSid":"c","reason":{quoted}}}"#),
                format!(r#"{{"type":"error","code":{quoted},"message":"m"}}"#),
                format!(r#"{{"type":"ping","id":{quoted}}}"#),
                format!(r#"{{"type":"dial","requestId":{quoted},"to":1}}"#),
                format!(r#"{{"type":"mute","muted":{s}}}"#),
                format!(r#"{{"type":"ping","id":1,{quoted}}}"#),
            ];
            for text in &inputs {
                for (code, shown) in all_errors(text) {
                    proptest::prop_assert!(
                        crate::is_printable_text(&shown),
                        "{code}: {shown:?} for {text:?}"
                    );
                }
            }
        }
    }
}

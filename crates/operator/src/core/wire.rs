//! The wire protocol v1 as the core speaks it, small enough for the browser:
//! decoding of server → client text messages and encoding of client →
//! server ones, both with the core's tiny [`json`](super::json) reader and
//! writer instead of `serde_json`.
//!
//! `audin-protocol` stays the contract: `tests/core_wire.rs` checks that
//! these decoders agree with `audin_protocol::decode_*` on the golden
//! fixtures and that these encoders are byte-identical to the protocol
//! crate's `to_json` (serde) for every client message fixture.
//!
//! One deliberate difference when decoding: an error `code` or end `reason`
//! this client does not know (the server may add codes in a minor release)
//! does not make the message undecodable: the code becomes `INTERNAL` with
//! the unknown code kept in the message, the reason becomes `failed`.

use super::json::{self, Obj, Value, cat};
use audin_protocol::{
    ActiveCall, AttachHint, AudioClientMessage, AudioServerMessage, ClientMessage, EndReason,
    ErrorCode, HangupReason, RejectReason, ServerMessage,
};

/// Why a text message was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Not a JSON object of the expected shape.
    Invalid(String),
    /// A `type` this client does not know (ignored: the server may add types).
    UnknownType(String),
}

impl WireError {
    /// A one-line description (what `Display` prints), without `core::fmt`.
    pub fn describe(&self) -> String {
        match self {
            Self::Invalid(why) => cat(&["invalid message: ", why]),
            Self::UnknownType(t) => cat(&["unknown message type ", t]),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl From<json::Error> for WireError {
    fn from(e: json::Error) -> Self {
        WireError::Invalid(e.message)
    }
}

/// Parses a message: a JSON object with a string `type`.
fn parse(text: &str) -> Result<(String, Value), WireError> {
    if text.len() > audin_protocol::MAX_TEXT_MESSAGE_BYTES {
        return Err(WireError::Invalid(cat(&[
            &json::u64_string(text.len() as u64),
            " bytes is too large",
        ])));
    }
    let v = json::parse(text)?;
    let kind = v.req_str("type")?;
    Ok((kind, v))
}

/// An error code, tolerating codes newer than this client.
pub(crate) fn error_code(code: &str, message: String) -> (ErrorCode, String) {
    match ErrorCode::parse(code) {
        Some(code) => (code, message),
        None => (ErrorCode::Internal, cat(&["[", code, "] ", &message])),
    }
}

fn end_reason(v: &Value) -> Result<EndReason, WireError> {
    let reason = v.req_str("reason")?;
    Ok(EndReason::parse(&reason).unwrap_or(EndReason::Failed))
}

fn error_fields(v: &Value) -> Result<(ErrorCode, String), WireError> {
    Ok(error_code(&v.req_str("code")?, v.req_str("message")?))
}

fn unknown(kind: &str) -> WireError {
    WireError::UnknownType(kind.chars().take(64).collect())
}

fn u64_of(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn strings_of(v: &Value) -> Option<Vec<String>> {
    v.as_strings()
}

fn active_call(v: &Value) -> Option<ActiveCall> {
    Some(ActiveCall {
        call_sid: v.req_str("callSid").ok()?,
        answered: v.req("answered", Value::as_bool).ok()?,
    })
}

/// The optional `audioUrl` / `attachTicket` of `callAccepted` / `dialAccepted`.
fn attach_hint(v: &Value) -> Result<AttachHint, WireError> {
    Ok(AttachHint {
        audio_url: v.opt_str("audioUrl")?,
        attach_ticket: v.opt_str("attachTicket")?,
    })
}

/// Decodes a presence (server → client) message.
pub fn decode_presence(text: &str) -> Result<ServerMessage, WireError> {
    let (kind, v) = parse(text)?;
    Ok(match kind.as_str() {
        "welcome" => ServerMessage::Welcome {
            session_id: v.req_str("sessionId")?,
            operator_ref: v.req_str("operatorRef")?,
            expires_at: v.req_str("expiresAt")?,
            silence_timeout_ms: v.req("silenceTimeoutMs", u64_of)?,
            active_call: v.opt_with("activeCall", active_call)?,
        },
        "availability" => ServerMessage::Availability {
            accepted: v.req("accepted", strings_of)?,
            rejected: v.req("rejected", strings_of)?,
            request_id: v.opt_str("requestId")?,
        },
        "pong" => ServerMessage::Pong {
            id: v.req("id", u64_of)?,
        },
        "tokenRefreshed" => ServerMessage::TokenRefreshed {
            expires_at: v.req_str("expiresAt")?,
            request_id: v.opt_str("requestId")?,
        },
        "callOffer" => ServerMessage::CallOffer {
            call_sid: v.req_str("callSid")?,
            from: v.req_str("from")?,
            to: v.req_str("to")?,
            phone_number_id: v.req_str("phoneNumberId")?,
        },
        "callAccepted" => ServerMessage::CallAccepted {
            call_sid: v.req_str("callSid")?,
            attach: attach_hint(&v)?,
        },
        "dialAccepted" => ServerMessage::DialAccepted {
            request_id: v.req_str("requestId")?,
            call_sid: v.req_str("callSid")?,
            from: v.req_str("from")?,
            to: v.req_str("to")?,
            attach: attach_hint(&v)?,
        },
        "callEnded" => ServerMessage::CallEnded {
            call_sid: v.req_str("callSid")?,
            reason: end_reason(&v)?,
        },
        "error" => {
            let (code, message) = error_fields(&v)?;
            ServerMessage::Error {
                code,
                message,
                request_id: v.opt_str("requestId")?,
                call_sid: v.opt_str("callSid")?,
            }
        }
        _ => return Err(unknown(&kind)),
    })
}

/// Decodes an audio-socket (server → client) control message.
pub fn decode_audio(text: &str) -> Result<AudioServerMessage, WireError> {
    let (kind, v) = parse(text)?;
    Ok(match kind.as_str() {
        "attached" => AudioServerMessage::Attached {
            call_sid: v.req_str("callSid")?,
            answered: v.req("answered", Value::as_bool)?,
            resumed: v.req("resumed", Value::as_bool)?,
        },
        "answered" => AudioServerMessage::Answered {
            call_sid: v.req_str("callSid")?,
        },
        "ended" => AudioServerMessage::Ended {
            call_sid: v.req_str("callSid")?,
            reason: end_reason(&v)?,
        },
        "error" => {
            let (code, message) = error_fields(&v)?;
            AudioServerMessage::Error { code, message }
        }
        "pong" => AudioServerMessage::Pong {
            id: v.req("id", |n| n.as_u64().and_then(|n| u32::try_from(n).ok()))?,
        },
        "preflightStarted" => AudioServerMessage::PreflightStarted {
            max_ms: v.req("maxMs", u64_of)?,
        },
        _ => return Err(unknown(&kind)),
    })
}

/// `{"error":{"code","message"}}` of an HTTP error body, if it is one.
pub(crate) fn http_error(body: &str) -> Option<(ErrorCode, String)> {
    let v = json::parse(body).ok()?;
    let detail = v.field("error").ok()??;
    error_fields(detail).ok()
}

/// The body of a `GET /v1/phone-numbers` answer:
/// `[{"id","phoneNumber","displayName"}]` (other keys ignored).
pub(crate) fn decode_phone_numbers(
    body: &str,
) -> Result<Vec<audin_protocol::PhoneNumberInfo>, WireError> {
    let v = json::parse(body)?;
    let items = v
        .as_array()
        .ok_or_else(|| WireError::Invalid("expected a JSON array".into()))?;
    // A loop, not `collect::<Result<Vec<_>, _>>()`: smaller wasm.
    let mut numbers = Vec::with_capacity(items.len());
    for n in items {
        numbers.push(audin_protocol::PhoneNumberInfo {
            id: n.req_str("id")?,
            phone_number: n.req_str("phoneNumber")?,
            display_name: n.req_str("displayName")?,
        });
    }
    Ok(numbers)
}

const fn reject_reason(r: RejectReason) -> &'static str {
    match r {
        RejectReason::Declined => "declined",
        RejectReason::Busy => "busy",
    }
}

const fn hangup_reason(r: HangupReason) -> &'static str {
    match r {
        HangupReason::Hangup => "hangup",
        HangupReason::Offline => "offline",
        HangupReason::Failed => "failed",
    }
}

/// Encodes a presence (client → server) message, byte-identical to
/// `audin_protocol::ClientMessage::to_json`.
pub fn encode_presence(msg: &ClientMessage) -> String {
    let mut out = String::new();
    let mut o = Obj::new(&mut out);
    match msg {
        ClientMessage::Hello { token, client } => o
            .str("type", "hello")
            .str("token", token)
            .opt_str("client", client.as_deref()),
        ClientMessage::GoOnline {
            phone_number_ids,
            request_id,
        } => o
            .str("type", "goOnline")
            .strs("phoneNumberIds", phone_number_ids)
            .opt_str("requestId", request_id.as_deref()),
        ClientMessage::Ping { id } => o.str("type", "ping").num("id", *id),
        ClientMessage::RefreshToken { token, request_id } => o
            .str("type", "refreshToken")
            .str("token", token)
            .opt_str("requestId", request_id.as_deref()),
        ClientMessage::Accept { call_sid } => o.str("type", "accept").str("callSid", call_sid),
        ClientMessage::Reject { call_sid, reason } => o
            .str("type", "reject")
            .str("callSid", call_sid)
            .opt_str("reason", reason.map(reject_reason)),
        ClientMessage::Dial {
            request_id,
            to,
            caller_id,
        } => o
            .str("type", "dial")
            .str("requestId", request_id)
            .str("to", to)
            .str("callerId", caller_id),
        ClientMessage::Hangup { call_sid, reason } => o
            .str("type", "hangup")
            .str("callSid", call_sid)
            .opt_str("reason", reason.map(hangup_reason)),
    }
    .end();
    out
}

/// Encodes an audio-socket (client → server) control message,
/// byte-identical to `audin_protocol::AudioClientMessage::to_json`.
pub fn encode_audio(msg: &AudioClientMessage) -> String {
    let mut out = String::new();
    let mut o = Obj::new(&mut out);
    match msg {
        AudioClientMessage::Attach { token, call_sid } => o
            .str("type", "attach")
            .str("token", token)
            .str("callSid", call_sid),
        AudioClientMessage::Mute { muted } => o.str("type", "mute").bool("muted", *muted),
        AudioClientMessage::Dtmf { digit } => o.str("type", "dtmf").str("digit", digit),
        AudioClientMessage::Hangup { reason } => o
            .str("type", "hangup")
            .opt_str("reason", reason.map(hangup_reason)),
        AudioClientMessage::Ping { id } => o.str("type", "ping").num("id", u64::from(*id)),
        AudioClientMessage::Preflight { token } => o.str("type", "preflight").str("token", token),
    }
    .end();
    out
}

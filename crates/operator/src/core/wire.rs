//! Decoding of server → client text messages, small enough for the browser.
//!
//! `audin_protocol::decode_server_message` derives `Deserialize` for two
//! internally tagged enums and re-parses failures as `serde_json::Value`;
//! in wasm that alone is ~50 KB of code. Here every message is read into one
//! flat struct of optional fields and then checked by hand into the same
//! protocol types. `tests/core_wire.rs` checks that both decoders agree on
//! the golden fixtures, so the two cannot drift.
//!
//! One deliberate difference: an error `code` or end `reason` this client
//! does not know (the server may add codes in a minor release) does not make
//! the message undecodable: the code becomes `INTERNAL` with the unknown code
//! kept in the message, the reason becomes `failed`.

use audin_protocol::{ActiveCall, AudioServerMessage, EndReason, ErrorCode, ServerMessage};
use serde::Deserialize;

/// Why a text message was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Not a JSON object of the expected shape.
    Invalid(String),
    /// A `type` this client does not know (ignored: the server may add types).
    UnknownType(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(why) => write!(f, "invalid message: {why}"),
            Self::UnknownType(t) => write!(f, "unknown message type {t}"),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Flat {
    #[serde(rename = "type")]
    kind: Option<String>,
    session_id: Option<String>,
    operator_ref: Option<String>,
    expires_at: Option<String>,
    silence_timeout_ms: Option<u64>,
    active_call: Option<FlatActiveCall>,
    accepted: Option<Vec<String>>,
    rejected: Option<Vec<String>>,
    request_id: Option<String>,
    id: Option<u64>,
    call_sid: Option<String>,
    from: Option<String>,
    to: Option<String>,
    phone_number_id: Option<String>,
    reason: Option<String>,
    code: Option<String>,
    message: Option<String>,
    answered: Option<bool>,
    resumed: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlatActiveCall {
    call_sid: String,
    answered: bool,
}

fn parse(text: &str) -> Result<(String, Flat), WireError> {
    if text.len() > audin_protocol::MAX_TEXT_MESSAGE_BYTES {
        return Err(WireError::Invalid(format!(
            "{} bytes is too large",
            text.len()
        )));
    }
    let mut flat: Flat =
        serde_json::from_str(text).map_err(|e| WireError::Invalid(e.to_string()))?;
    let kind = flat
        .kind
        .take()
        .ok_or_else(|| WireError::Invalid("missing \"type\"".into()))?;
    Ok((kind, flat))
}

/// Takes a required field or says which one is missing.
fn req<T>(field: Option<T>, name: &str) -> Result<T, WireError> {
    field.ok_or_else(|| WireError::Invalid(format!("missing field {name}")))
}

/// An error code, tolerating codes newer than this client.
pub(crate) fn error_code(code: &str, message: String) -> (ErrorCode, String) {
    match ErrorCode::parse(code) {
        Some(code) => (code, message),
        None => (ErrorCode::Internal, format!("[{code}] {message}")),
    }
}

fn end_reason(reason: &str) -> EndReason {
    EndReason::parse(reason).unwrap_or(EndReason::Failed)
}

/// Decodes a presence (server → client) message.
pub fn decode_presence(text: &str) -> Result<ServerMessage, WireError> {
    let (kind, f) = parse(text)?;
    Ok(match kind.as_str() {
        "welcome" => ServerMessage::Welcome {
            session_id: req(f.session_id, "sessionId")?,
            operator_ref: req(f.operator_ref, "operatorRef")?,
            expires_at: req(f.expires_at, "expiresAt")?,
            silence_timeout_ms: req(f.silence_timeout_ms, "silenceTimeoutMs")?,
            active_call: f.active_call.map(|c| ActiveCall {
                call_sid: c.call_sid,
                answered: c.answered,
            }),
        },
        "availability" => ServerMessage::Availability {
            accepted: req(f.accepted, "accepted")?,
            rejected: req(f.rejected, "rejected")?,
            request_id: f.request_id,
        },
        "pong" => ServerMessage::Pong {
            id: req(f.id, "id")?,
        },
        "tokenRefreshed" => ServerMessage::TokenRefreshed {
            expires_at: req(f.expires_at, "expiresAt")?,
            request_id: f.request_id,
        },
        "callOffer" => ServerMessage::CallOffer {
            call_sid: req(f.call_sid, "callSid")?,
            from: req(f.from, "from")?,
            to: req(f.to, "to")?,
            phone_number_id: req(f.phone_number_id, "phoneNumberId")?,
        },
        "callAccepted" => ServerMessage::CallAccepted {
            call_sid: req(f.call_sid, "callSid")?,
        },
        "dialAccepted" => ServerMessage::DialAccepted {
            request_id: req(f.request_id, "requestId")?,
            call_sid: req(f.call_sid, "callSid")?,
            from: req(f.from, "from")?,
            to: req(f.to, "to")?,
        },
        "callEnded" => ServerMessage::CallEnded {
            call_sid: req(f.call_sid, "callSid")?,
            reason: end_reason(&req(f.reason, "reason")?),
        },
        "error" => {
            let (code, message) = error_code(&req(f.code, "code")?, req(f.message, "message")?);
            ServerMessage::Error {
                code,
                message,
                request_id: f.request_id,
                call_sid: f.call_sid,
            }
        }
        _ => return Err(WireError::UnknownType(kind.chars().take(64).collect())),
    })
}

/// Decodes an audio-socket (server → client) control message.
pub fn decode_audio(text: &str) -> Result<AudioServerMessage, WireError> {
    let (kind, f) = parse(text)?;
    Ok(match kind.as_str() {
        "attached" => AudioServerMessage::Attached {
            call_sid: req(f.call_sid, "callSid")?,
            answered: req(f.answered, "answered")?,
            resumed: req(f.resumed, "resumed")?,
        },
        "answered" => AudioServerMessage::Answered {
            call_sid: req(f.call_sid, "callSid")?,
        },
        "ended" => AudioServerMessage::Ended {
            call_sid: req(f.call_sid, "callSid")?,
            reason: end_reason(&req(f.reason, "reason")?),
        },
        "error" => {
            let (code, message) = error_code(&req(f.code, "code")?, req(f.message, "message")?);
            AudioServerMessage::Error { code, message }
        }
        _ => return Err(WireError::UnknownType(kind.chars().take(64).collect())),
    })
}

/// `{"error":{"code","message"}}` of an HTTP error body, if it is one.
pub(crate) fn http_error(body: &str) -> Option<(ErrorCode, String)> {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    let body: Body = serde_json::from_str(body).ok()?;
    Some(error_code(&body.error.code, body.error.message))
}

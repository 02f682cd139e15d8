//! The values that cross the core's boundary: ids, time, outputs, events,
//! call snapshots and errors. Everything a driver receives serialises to JSON
//! (camelCase, tagged with `"type"`) so the wasm binding can hand it to
//! TypeScript unchanged.

use super::json::Obj;
use audin_protocol::{Direction, EndReason, ErrorCode, PhoneNumberInfo};
use serde::{Deserialize, Serialize};

/// A point on the driver's monotonic clock, in milliseconds.
///
/// The driver picks the origin (tokio: when the driver started; browser:
/// `performance.now()`); the core only compares and adds. JSON: a number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    pub const fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (0 if `earlier` is later).
    pub const fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

macro_rules! id_type {
    ($($(#[doc = $doc:literal])* $name:ident;)*) => {$(
        $(#[doc = $doc])*
        ///
        /// JSON: a number. Ids are unique across all kinds within one
        /// [`crate::core::Operator`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u32);
    )*};
}

id_type! {
    /// One API operation that completes later ([`Output::Completed`]).
    OpId;
    /// One WebSocket the core asked the driver to open.
    SocketId;
    /// One `getToken` call the core asked the driver to make.
    TokenRequestId;
    /// One HTTP request the core asked the driver to make.
    RequestId;
}

/// What `getToken` returned: `{ token, expiresAt? }`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenGrant {
    /// The session token (a JWT; a secret: never logged).
    pub token: String,
    /// Its expiry, RFC 3339. When absent the core reads the JWT's `exp`.
    #[serde(default)]
    pub expires_at: Option<String>,
}

impl TokenGrant {
    /// A grant without an explicit expiry.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            expires_at: None,
        }
    }

    /// Reads `{"token":"…","expiresAt":"…"}` (`expiresAt` optional or
    /// `null`; other keys ignored), as `getToken`'s value arrives from
    /// JavaScript. `None` for anything else.
    pub fn from_json(text: &str) -> Option<TokenGrant> {
        let v = super::json::parse(text).ok()?;
        Some(TokenGrant {
            token: v.req_str("token").ok()?,
            expires_at: v.opt_str("expiresAt").ok()?,
        })
    }
}

impl std::fmt::Debug for TokenGrant {
    // The token is a secret: keep it out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The presence channel's state, as the SDK exposes it.
///
/// JSON: `"offline" | "connecting" | "online" | "reconnecting"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PresenceState {
    /// Not connected and not trying to be.
    Offline,
    /// `go_online` was called; the first connection is being made.
    Connecting,
    /// The presence socket is up and authenticated (`welcome` received).
    Online,
    /// The presence socket was lost; retrying on the backoff schedule.
    Reconnecting,
}

impl PresenceState {
    /// The SDK spelling, e.g. `"reconnecting"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Connecting => "connecting",
            Self::Online => "online",
            Self::Reconnecting => "reconnecting",
        }
    }
}

/// A call's state: `ringing → connecting → active → ended`.
///
/// JSON: `"ringing" | "connecting" | "active" | "ended"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallState {
    /// An inbound offer waiting for accept or reject.
    Ringing,
    /// Accepted or dialled; the audio leg is being set up (outbound: until
    /// the far end answers; early media may already play).
    Connecting,
    /// Audio is established and the far end answered.
    Active,
    /// Over; see [`CallInfo::end_reason`].
    Ended,
}

impl CallState {
    /// The SDK spelling, e.g. `"connecting"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Connecting => "connecting",
            Self::Active => "active",
            Self::Ended => "ended",
        }
    }
}

/// A snapshot of a call (the SDK's `OperatorCall` without its methods).
///
/// JSON: `{"callSid":"CA…","direction":"inbound","from":"+1…","to":"+39…",
/// "state":"ringing","endReason":"hangup","muted":false}` (`endReason` is
/// omitted until the call ended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallInfo {
    /// The call's id.
    pub call_sid: String,
    /// Seen from the operator.
    pub direction: Direction,
    /// Caller, E.164.
    pub from: String,
    /// Callee, E.164.
    pub to: String,
    /// Where the call is in its life.
    pub state: CallState,
    /// Why it ended, once `state` is `ended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// Whether the operator's microphone is muted.
    pub muted: bool,
}

/// Which socket [`Output::OpenSocket`] asks for.
///
/// JSON: `{"type":"presence"}` or `{"type":"audio","callSid":"CA…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum SocketKind {
    /// The operator's presence (signalling) socket.
    Presence,
    /// A call's audio socket. Binary frames on it go straight between the
    /// socket and the driver's audio path, never through the core.
    Audio {
        /// The call it carries.
        call_sid: String,
    },
}

/// Severity of an [`Output::Log`]. JSON: `"debug" | "info" | "warn" | "error"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal life-cycle information.
    Info,
    /// Something unexpected that the core handled.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The JSON spelling, e.g. `"warn"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// What a completed operation yields.
///
/// JSON: `{"type":"none"}`, `{"type":"availability","accepted":[…],"rejected":[…]}`,
/// `{"type":"call","call":{CallInfo}}` or
/// `{"type":"phoneNumbers","phoneNumbers":[{"id","phoneNumber","displayName"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum OpValue {
    /// Nothing (`go_offline`).
    None,
    /// `go_online`: the numbers the server accepted and rejected.
    Availability {
        /// Numbers the operator now takes calls on.
        accepted: Vec<String>,
        /// Numbers refused.
        rejected: Vec<String>,
    },
    /// `dial`: the new call, state `connecting`.
    Call {
        /// The call snapshot.
        call: CallInfo,
    },
    /// `list_phone_numbers`: the account's numbers.
    PhoneNumbers {
        /// The numbers.
        phone_numbers: Vec<PhoneNumberInfo>,
    },
}

/// An error of an API call: a stable [`ErrorCode`] and a human message
/// (never a secret). JSON: `{"code":"TIMEOUT","message":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorError {
    /// Stable code (see the table in [`crate::core`]).
    pub code: ErrorCode,
    /// Explanation for humans.
    pub message: String,
}

impl OperatorError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for OperatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for OperatorError {}

/// Something for the application: the SDK's events plus a few additive ones.
///
/// JSON (tag `"type"`):
///
/// | Variant | JSON |
/// |---|---|
/// | `PresenceStateChanged` | `{"type":"presenceStateChanged","state":"online"}` |
/// | `AvailabilityChanged` | `{"type":"availabilityChanged","accepted":["pn_1"],"rejected":[]}` |
/// | `IncomingCall` | `{"type":"incomingCall","call":{CallInfo}}` |
/// | `CallStarted` | `{"type":"callStarted","call":{CallInfo}}` |
/// | `CallEnded` | `{"type":"callEnded","call":{CallInfo}}` |
/// | `CallUpdated` | `{"type":"callUpdated","call":{CallInfo}}` |
/// | `CallReconnecting` | `{"type":"callReconnecting","call":{CallInfo}}` |
/// | `CallReconnected` | `{"type":"callReconnected","call":{CallInfo}}` |
/// | `Error` | `{"type":"error","code":"HEARTBEAT_TIMEOUT","message":"…","cause":"…"}` (`cause` omitted when absent) |
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Event {
    /// The presence channel changed state.
    PresenceStateChanged {
        /// The new state.
        state: PresenceState,
    },
    /// The server confirmed which numbers the operator is online on.
    AvailabilityChanged {
        /// Numbers the operator now takes calls on.
        accepted: Vec<String>,
        /// Numbers refused.
        rejected: Vec<String>,
    },
    /// An inbound call is ringing (never while another call exists).
    IncomingCall {
        /// The offer, state `ringing`.
        call: CallInfo,
    },
    /// Audio is established and the call is answered (once per call).
    CallStarted {
        /// The call, state `active`.
        call: CallInfo,
    },
    /// The call is over (exactly once per call).
    CallEnded {
        /// The call, state `ended`, with its `endReason`.
        call: CallInfo,
    },
    /// The call's state or mute flag changed without another event saying so.
    CallUpdated {
        /// The call's new snapshot.
        call: CallInfo,
    },
    /// The call's audio socket dropped; the core is reattaching.
    CallReconnecting {
        /// The call.
        call: CallInfo,
    },
    /// The call's audio socket was reattached within the grace window.
    CallReconnected {
        /// The call.
        call: CallInfo,
    },
    /// A non-fatal error (the failing thing is retried or reported elsewhere).
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Explanation for humans.
        message: String,
        /// The underlying cause, if any (e.g. the driver's error text).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
}

/// Something the core asks its driver to do, or tells it.
///
/// JSON (tag `"type"`):
///
/// | Variant | JSON |
/// |---|---|
/// | `FetchToken` | `{"type":"fetchToken","id":1}` → call `getToken`, answer with `handle_token` |
/// | `OpenSocket` | `{"type":"openSocket","id":2,"url":"wss://…/v1/operator/presence","kind":{"type":"presence"}}` (audio: `"kind":{"type":"audio","callSid":"CA…"}`); request subprotocol `audin.operator.v1` |
/// | `SendText` | `{"type":"sendText","socket":2,"text":"{…}"}` (may contain a token: never log it) |
/// | `CloseSocket` | `{"type":"closeSocket","socket":2,"code":1000,"reason":"offline"}`; the core has forgotten the socket, later reports about it are ignored |
/// | `HttpRequest` | `{"type":"httpRequest","id":3,"method":"GET","url":"https://…/v1/phone-numbers","bearerToken":"…"}` |
/// | `StartMedia` | `{"type":"startMedia","callSid":"CA…","socket":4}`: start (or move) capture and playback onto that audio socket |
/// | `StopMedia` | `{"type":"stopMedia","callSid":"CA…"}`: stop capture and playback, release the microphone |
/// | `SetMuted` | `{"type":"setMuted","callSid":"CA…","muted":true}`: send silence (`0xFF`) while muted |
/// | `Event` | `{"type":"event","event":{Event}}` |
/// | `Completed` | `{"type":"completed","op":5,"result":{"ok":true,"value":{OpValue}}}` or `{"type":"completed","op":5,"result":{"ok":false,"error":{"code":"TIMEOUT","message":"…"}}}` |
/// | `Log` | `{"type":"log","level":"warn","message":"…"}` (never holds a token) |
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Output {
    /// Call `getToken` and report with [`crate::core::Operator::handle_token`].
    FetchToken {
        /// Echo this id.
        id: TokenRequestId,
    },
    /// Open a WebSocket to `url` with the subprotocol
    /// [`audin_protocol::SUBPROTOCOL`]; report open, text and close.
    OpenSocket {
        /// The socket's id in later inputs and outputs.
        id: SocketId,
        /// `ws(s)://…` URL.
        url: String,
        /// Presence or a call's audio.
        kind: SocketKind,
    },
    /// Send a text message on a socket.
    SendText {
        /// The socket.
        socket: SocketId,
        /// JSON text.
        text: String,
    },
    /// Close a socket. No further report about it is expected.
    CloseSocket {
        /// The socket.
        socket: SocketId,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Make an HTTP request; report with `handle_http_response` or `handle_http_error`.
    HttpRequest {
        /// Echo this id.
        id: RequestId,
        /// HTTP method, e.g. `GET`.
        method: String,
        /// Absolute `http(s)://` URL.
        url: String,
        /// Send as `Authorization: Bearer <token>` (a secret).
        bearer_token: String,
    },
    /// Start (or move) the call's capture and playback onto this audio socket.
    StartMedia {
        /// The call.
        call_sid: String,
        /// Its audio socket.
        socket: SocketId,
    },
    /// Stop the call's capture and playback.
    StopMedia {
        /// The call.
        call_sid: String,
    },
    /// Mute or unmute: while muted the driver sends silence frames.
    SetMuted {
        /// The call.
        call_sid: String,
        /// Muted or not.
        muted: bool,
    },
    /// An event for the application.
    Event {
        /// The event.
        event: Event,
    },
    /// An operation finished.
    Completed {
        /// The operation.
        op: OpId,
        /// Its outcome. JSON: `{"ok":true,"value":…}` / `{"ok":false,"error":…}`.
        #[serde(serialize_with = "serialize_result")]
        result: Result<OpValue, OperatorError>,
    },
    /// A diagnostic line for the driver's logger.
    Log {
        /// Severity.
        level: LogLevel,
        /// The line.
        message: String,
    },
}

fn serialize_result<S: serde::Serializer>(
    result: &Result<OpValue, OperatorError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut s = serializer.serialize_struct("Result", 2)?;
    match result {
        Ok(value) => {
            s.serialize_field("ok", &true)?;
            s.serialize_field("value", value)?;
        }
        Err(error) => {
            s.serialize_field("ok", &false)?;
            s.serialize_field("error", error)?;
        }
    }
    s.end()
}

impl Output {
    /// This output as JSON text (the wasm binding's format; see the table
    /// above). Written by [`crate::core::json`], byte-identical to the
    /// `serde` serialisation of this type.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        let mut o = Obj::new(out);
        match self {
            Output::FetchToken { id } => o.str("type", "fetchToken").num("id", id.0.into()),
            Output::OpenSocket { id, url, kind } => o
                .str("type", "openSocket")
                .num("id", id.0.into())
                .str("url", url)
                .with("kind", |out| kind.write_json(out)),
            Output::SendText { socket, text } => o
                .str("type", "sendText")
                .num("socket", socket.0.into())
                .str("text", text),
            Output::CloseSocket {
                socket,
                code,
                reason,
            } => o
                .str("type", "closeSocket")
                .num("socket", socket.0.into())
                .num("code", (*code).into())
                .str("reason", reason),
            Output::HttpRequest {
                id,
                method,
                url,
                bearer_token,
            } => o
                .str("type", "httpRequest")
                .num("id", id.0.into())
                .str("method", method)
                .str("url", url)
                .str("bearerToken", bearer_token),
            Output::StartMedia { call_sid, socket } => o
                .str("type", "startMedia")
                .str("callSid", call_sid)
                .num("socket", socket.0.into()),
            Output::StopMedia { call_sid } => o.str("type", "stopMedia").str("callSid", call_sid),
            Output::SetMuted { call_sid, muted } => o
                .str("type", "setMuted")
                .str("callSid", call_sid)
                .bool("muted", *muted),
            Output::Event { event } => o
                .str("type", "event")
                .with("event", |out| event.write_json(out)),
            Output::Completed { op, result } => o
                .str("type", "completed")
                .num("op", op.0.into())
                .with("result", |out| {
                    let mut r = Obj::new(out);
                    match result {
                        Ok(value) => r
                            .bool("ok", true)
                            .with("value", |out| value.write_json(out)),
                        Err(error) => r
                            .bool("ok", false)
                            .with("error", |out| error.write_json(out)),
                    }
                    .end()
                }),
            Output::Log { level, message } => o
                .str("type", "log")
                .str("level", level.as_str())
                .str("message", message),
        }
        .end();
    }
}

impl Event {
    /// This event as JSON text (see the table above).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        let mut o = Obj::new(out);
        let (ty, call) = match self {
            Event::PresenceStateChanged { state } => {
                o.str("type", "presenceStateChanged")
                    .str("state", state.as_str())
                    .end();
                return;
            }
            Event::AvailabilityChanged { accepted, rejected } => {
                o.str("type", "availabilityChanged")
                    .strs("accepted", accepted)
                    .strs("rejected", rejected)
                    .end();
                return;
            }
            Event::Error {
                code,
                message,
                cause,
            } => {
                o.str("type", "error")
                    .str("code", code.as_str())
                    .str("message", message)
                    .opt_str("cause", cause.as_deref())
                    .end();
                return;
            }
            Event::IncomingCall { call } => ("incomingCall", call),
            Event::CallStarted { call } => ("callStarted", call),
            Event::CallEnded { call } => ("callEnded", call),
            Event::CallUpdated { call } => ("callUpdated", call),
            Event::CallReconnecting { call } => ("callReconnecting", call),
            Event::CallReconnected { call } => ("callReconnected", call),
        };
        o.str("type", ty)
            .with("call", |out| call.write_json(out))
            .end();
    }
}

impl CallInfo {
    /// This snapshot as JSON text (see the type's docs).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        Obj::new(out)
            .str("callSid", &self.call_sid)
            .str("direction", self.direction.as_str())
            .str("from", &self.from)
            .str("to", &self.to)
            .str("state", self.state.as_str())
            .opt_str("endReason", self.end_reason.map(EndReason::as_str))
            .bool("muted", self.muted)
            .end();
    }
}

impl SocketKind {
    fn write_json(&self, out: &mut String) {
        let mut o = Obj::new(out);
        match self {
            SocketKind::Presence => o.str("type", "presence"),
            SocketKind::Audio { call_sid } => o.str("type", "audio").str("callSid", call_sid),
        }
        .end();
    }
}

impl OpValue {
    fn write_json(&self, out: &mut String) {
        let mut o = Obj::new(out);
        match self {
            OpValue::None => o.str("type", "none"),
            OpValue::Availability { accepted, rejected } => o
                .str("type", "availability")
                .strs("accepted", accepted)
                .strs("rejected", rejected),
            OpValue::Call { call } => o
                .str("type", "call")
                .with("call", |out| call.write_json(out)),
            OpValue::PhoneNumbers { phone_numbers } => {
                o.str("type", "phoneNumbers").with("phoneNumbers", |out| {
                    out.push('[');
                    for (i, n) in phone_numbers.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        Obj::new(out)
                            .str("id", &n.id)
                            .str("phoneNumber", &n.phone_number)
                            .str("displayName", &n.display_name)
                            .end();
                    }
                    out.push(']');
                })
            }
        }
        .end();
    }
}

impl OperatorError {
    /// This error as JSON text: `{"code":"TIMEOUT","message":"…"}`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        Obj::new(out)
            .str("code", self.code.as_str())
            .str("message", &self.message)
            .end();
    }
}

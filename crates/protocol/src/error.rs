//! Stable error codes and WebSocket close codes.
//!
//! One list serves the wire (`error` messages, HTTP error bodies, close
//! reasons) and the SDKs (`error` events, `OperatorRequestError.code`), so an
//! integrator learns one vocabulary. Codes are never renamed or reused; new
//! ones may be added in a minor release.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $wire:literal, $status:literal;)*) => {
        /// Every error the protocol or an SDK can report, by stable code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[serde(rename = $wire)] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in documentation order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable wire spelling, e.g. `"TOKEN_EXPIRED"`.
            ///
            /// ```
            /// assert_eq!(audin_protocol::ErrorCode::InvalidDtmf.as_str(), "INVALID_DTMF");
            /// ```
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $wire,)* }
            }

            /// The HTTP status an HTTP endpoint answers this code with.
            ///
            /// ```
            /// assert_eq!(audin_protocol::ErrorCode::Unauthorized.http_status(), 401);
            /// ```
            pub const fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// Parses the wire spelling.
            ///
            /// ```
            /// use audin_protocol::ErrorCode;
            /// assert_eq!(ErrorCode::parse("RATE_LIMITED"), Some(ErrorCode::RateLimited));
            /// ```
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|c| c.as_str() == s)
            }
        }
    };
}

error_codes! {
    // ── input ──────────────────────────────────────────────────────────
    /// A text message or HTTP body is not valid JSON.
    InvalidJson = "INVALID_JSON", 400;
    /// A message `type` this side does not know. The connection stays up.
    UnknownMessage = "UNKNOWN_MESSAGE", 400;
    /// A known message with missing or ill-typed fields.
    InvalidMessage = "INVALID_MESSAGE", 400;
    /// A binary frame where only text is allowed (the presence socket).
    BinaryNotAllowed = "BINARY_NOT_ALLOWED", 400;
    /// An audio frame that is not exactly 160 bytes.
    InvalidFrame = "INVALID_FRAME", 400;
    /// A message over the size limit; the socket is closed with 1009.
    MessageTooLarge = "MESSAGE_TOO_LARGE", 413;
    /// A phone number that is not E.164 (`+` then 2 to 15 digits, no leading 0).
    InvalidNumber = "INVALID_NUMBER", 400;
    /// A DTMF digit outside `0-9 * #`.
    InvalidDtmf = "INVALID_DTMF", 400;
    /// The WebSocket did not offer the `audin.operator.v1` subprotocol.
    UnsupportedProtocol = "UNSUPPORTED_PROTOCOL", 400;
    // ── authentication and authorisation ──────────────────────────────
    /// A message other than the authenticating one arrived first.
    NotAuthenticated = "NOT_AUTHENTICATED", 401;
    /// Bad API key, or a token that is malformed, forged or for another service.
    Unauthorized = "UNAUTHORIZED", 401;
    /// The session token has expired; fetch a new one.
    TokenExpired = "TOKEN_EXPIRED", 401;
    /// The request names a resource of another account or operator, or the
    /// `Origin` is not allowed.
    Forbidden = "FORBIDDEN", 403;
    /// A phone number id or caller id the account does not own or the token
    /// does not grant.
    NumberNotOwned = "NUMBER_NOT_OWNED", 403;
    /// Too many requests or messages; slow down.
    RateLimited = "RATE_LIMITED", 429;
    // ── calls ──────────────────────────────────────────────────────────
    /// No such call, it has ended, or it is not this operator's.
    CallNotFound = "CALL_NOT_FOUND", 404;
    /// The operator already has a call (one call at a time).
    OperatorBusy = "OPERATOR_BUSY", 409;
    /// The operator is not online, so it cannot dial or be offered calls.
    NotOnline = "NOT_ONLINE", 409;
    // ── session lifecycle ─────────────────────────────────────────────
    /// Another connection of the same operator took over this session.
    Replaced = "REPLACED", 409;
    /// No heartbeat (server side) or no pong (client side) in time.
    HeartbeatTimeout = "HEARTBEAT_TIMEOUT", 408;
    /// The service is shutting down.
    ServerShutdown = "SERVER_SHUTDOWN", 503;
    /// An unexpected server fault; nothing about the request was wrong.
    Internal = "INTERNAL", 500;
    // ── SDK-side (never sent by the server) ───────────────────────────
    /// `getToken` threw, timed out or returned no usable `{ token }`.
    TokenFetchFailed = "TOKEN_FETCH_FAILED", 502;
    /// An HTTP request of the SDK failed for another reason than a 401.
    RequestFailed = "REQUEST_FAILED", 502;
    /// The presence socket could not connect or was lost.
    ConnectionLost = "CONNECTION_LOST", 503;
    /// The call's audio socket dropped and could not be reattached in time.
    AudioConnectionLost = "AUDIO_CONNECTION_LOST", 503;
    /// The service did not answer a request in time.
    Timeout = "TIMEOUT", 504;
    /// The operation was abandoned because the operator went offline.
    Cancelled = "CANCELLED", 499;
    /// Microphone access was denied or no input device exists.
    MediaAccessDenied = "MEDIA_ACCESS_DENIED", 403;
    /// The audio graph (AudioContext / worklet) failed.
    AudioFailed = "AUDIO_FAILED", 500;
    /// A configuration value is invalid (e.g. an empty backoff schedule).
    InvalidConfig = "INVALID_CONFIG", 400;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes used by the service (RFC 6455 plus the private
/// 4000–4999 range). A client must not reconnect on `REPLACED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: orderly close (call ended, operator went offline).
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1007: a text message that is not valid UTF-8 (RFC 6455 §7.4.1).
    InvalidPayload,
    /// 1008: policy violation (e.g. a disallowed `Origin`).
    PolicyViolation,
    /// 1009: a message over the size limit.
    MessageTooBig,
    /// 1011: unexpected server fault.
    InternalError,
    /// 4001: no authenticating message within the auth timeout.
    AuthTimeout,
    /// 4002: the token is invalid or forged.
    Unauthorized,
    /// 4003: the token expired (on connect, or on a live socket not refreshed).
    TokenExpired,
    /// 4004: the socket asked for something that is not its own.
    Forbidden,
    /// 4005: another connection of the same operator replaced this one.
    Replaced,
    /// 4006: no heartbeat within the silence timeout.
    HeartbeatTimeout,
    /// 4007: the per-socket rate limit was exceeded repeatedly.
    RateLimited,
    /// 4008: the call to attach to does not exist or has ended.
    CallNotFound,
    /// 4009: repeated protocol violations.
    ProtocolError,
}

impl CloseCode {
    /// Every close code, in documentation order.
    pub const ALL: [CloseCode; 15] = [
        Self::Normal,
        Self::GoingAway,
        Self::InvalidPayload,
        Self::PolicyViolation,
        Self::MessageTooBig,
        Self::InternalError,
        Self::AuthTimeout,
        Self::Unauthorized,
        Self::TokenExpired,
        Self::Forbidden,
        Self::Replaced,
        Self::HeartbeatTimeout,
        Self::RateLimited,
        Self::CallNotFound,
        Self::ProtocolError,
    ];

    /// The numeric close code.
    ///
    /// ```
    /// assert_eq!(audin_protocol::CloseCode::Replaced.code(), 4005);
    /// ```
    pub const fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::InvalidPayload => 1007,
            Self::PolicyViolation => 1008,
            Self::MessageTooBig => 1009,
            Self::InternalError => 1011,
            Self::AuthTimeout => 4001,
            Self::Unauthorized => 4002,
            Self::TokenExpired => 4003,
            Self::Forbidden => 4004,
            Self::Replaced => 4005,
            Self::HeartbeatTimeout => 4006,
            Self::RateLimited => 4007,
            Self::CallNotFound => 4008,
            Self::ProtocolError => 4009,
        }
    }

    /// Looks a numeric code up.
    ///
    /// ```
    /// use audin_protocol::CloseCode;
    /// assert_eq!(CloseCode::from_code(4006), Some(CloseCode::HeartbeatTimeout));
    /// assert_eq!(CloseCode::from_code(1234), None);
    /// ```
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The error code a client reports when its socket is closed with this code.
    ///
    /// ```
    /// use audin_protocol::{CloseCode, ErrorCode};
    /// assert_eq!(CloseCode::Replaced.error_code(), ErrorCode::Replaced);
    /// ```
    pub const fn error_code(self) -> ErrorCode {
        match self {
            Self::Normal | Self::InternalError => ErrorCode::ConnectionLost,
            Self::GoingAway => ErrorCode::ServerShutdown,
            Self::PolicyViolation | Self::Forbidden => ErrorCode::Forbidden,
            Self::MessageTooBig => ErrorCode::MessageTooLarge,
            Self::InvalidPayload => ErrorCode::InvalidJson,
            Self::AuthTimeout => ErrorCode::NotAuthenticated,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::TokenExpired => ErrorCode::TokenExpired,
            Self::Replaced => ErrorCode::Replaced,
            Self::HeartbeatTimeout => ErrorCode::HeartbeatTimeout,
            Self::RateLimited => ErrorCode::RateLimited,
            Self::CallNotFound => ErrorCode::CallNotFound,
            Self::ProtocolError => ErrorCode::InvalidMessage,
        }
    }

    /// Whether a client should reconnect after this close. Only a replaced
    /// session must not: it would fight the session that replaced it.
    ///
    /// ```
    /// assert!(!audin_protocol::CloseCode::Replaced.should_reconnect());
    /// assert!(audin_protocol::CloseCode::GoingAway.should_reconnect());
    /// ```
    pub const fn should_reconnect(self) -> bool {
        !matches!(self, Self::Replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn close_codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in CloseCode::ALL {
            assert!(seen.insert(c.code()));
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
    }
}

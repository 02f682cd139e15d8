//! HTTP request and response bodies.

use crate::{Direction, EndReason, ErrorCode};
use serde::{Deserialize, Serialize};

/// `POST /operator-sessions/token` body, sent by the integrator's backend
/// with its account API key in `X-API-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// The integrator's stable operator identifier (1–128 printable characters).
    pub operator_ref: String,
    /// Human-readable operator name (at most 128 characters).
    #[serde(default)]
    pub display_name: String,
    /// Ids of the account's phone numbers this operator may use.
    pub phone_number_ids: Vec<String>,
}

/// Answer of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// The signed session token (a JWT). Treat as a secret.
    pub token: String,
    /// Expiry, ISO 8601 / RFC 3339 in UTC, e.g. `2026-11-23T20:00:00Z`.
    pub expires_at: String,
}

/// One phone number of the account (`GET /v1/phone-numbers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneNumberInfo {
    /// Stable id, used with `goOnline`.
    pub id: String,
    /// The number in E.164, used as `callerId` with `dial`.
    pub phone_number: String,
    /// Label chosen by the account.
    pub display_name: String,
}

/// One call record (`GET /v1/calls`). Times are RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// The call's id.
    pub call_sid: String,
    /// Seen from the operator.
    pub direction: Direction,
    /// Caller (E.164).
    pub from: String,
    /// Callee (E.164).
    pub to: String,
    /// The operator who took or placed the call, if any.
    pub operator_ref: Option<String>,
    /// When the call was offered (inbound) or dialled (outbound).
    pub offered_at: String,
    /// When it was answered, if it was.
    pub answered_at: Option<String>,
    /// When it ended; `None` while it is live.
    pub ended_at: Option<String>,
    /// Why it ended; `None` while it is live.
    pub end_reason: Option<EndReason>,
    /// DTMF digits the far end sent during the call, in order (a SIP trunk's
    /// RFC 4733 events; the sim sends none), at most
    /// [`MAX_RECORDED_DTMF`]. Added within v1: absent from older servers.
    #[serde(default)]
    pub dtmf_received: String,
}

/// Far-end digits kept on one call record; later ones are not recorded.
pub const MAX_RECORDED_DTMF: usize = 128;

/// Error body of every HTTP endpoint: `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation; never contains a secret.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    ///
    /// ```
    /// use audin_protocol::{ErrorBody, ErrorCode};
    /// let body = ErrorBody::new(ErrorCode::Unauthorized, "bad key");
    /// assert_eq!(
    ///     serde_json::to_string(&body).unwrap(),
    ///     r#"{"error":{"code":"UNAUTHORIZED","message":"bad key"}}"#
    /// );
    /// ```
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

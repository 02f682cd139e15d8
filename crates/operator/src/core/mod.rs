//! The sans-IO operator core: every client behaviour, and nothing else.
//!
//! The core is a state machine in the style of `quinn-proto` / `str0m`. It
//! never touches a socket, a clock, a thread or an async runtime: the driver
//! (the tokio driver in this crate, or the TypeScript facade through the wasm
//! binding) performs the I/O the core asks for and feeds back what happened.
//! It depends only on `audin-protocol` and `serde` (derives, for native
//! users), because it ships in a browser bundle with a 60 KB gzip budget:
//! its JSON is read and written by the tiny [`json`] module, not
//! `serde_json`, and it avoids `core::fmt` (`format!`) on its paths.
//!
//! # Driving it
//!
//! 1. Call API methods ([`Operator::go_online`], [`Operator::dial`], …) and
//!    feed inputs (`handle_*`) with the driver's monotonic time `now`.
//! 2. After every call, drain [`Operator::poll_output`] and perform each
//!    [`Output`].
//! 3. Arm one timer for [`Operator::poll_timeout`]; when it fires call
//!    [`Operator::handle_timeout`]. Then go back to 2.
//!
//! Audio frames never pass through the core: [`Output::StartMedia`] tells the
//! driver which socket carries a call's audio.
//!
//! ```
//! use audin_operator::core::{Config, Millis, Operator, Output};
//! let mut op = Operator::new(Config::new("https://core.audin.ai")).unwrap();
//! let _pending = op.go_online(Millis(0), vec!["pn_1".into()]);
//! // The first thing the core needs is a session token.
//! let outputs: Vec<Output> = std::iter::from_fn(|| op.poll_output()).collect();
//! assert!(outputs.iter().any(|o| matches!(o, Output::FetchToken { .. })));
//! ```
//!
//! # Error codes the client emits
//!
//! Server codes (`INVALID_NUMBER`, `NUMBER_NOT_OWNED`, `OPERATOR_BUSY`,
//! `RATE_LIMITED`, …) are passed through unchanged from `error` replies and
//! close codes. The client itself produces:
//!
//! | Code | Where | When |
//! |---|---|---|
//! | `INVALID_CONFIG` | [`Operator::new`] | empty/zero backoff, zero interval or timeout, bad `coreUrl` |
//! | `INVALID_NUMBER` | [`Operator::dial`] (sync) | `to` or `callerId` is not E.164 |
//! | `INVALID_DTMF` | [`Operator::send_dtmf`] (sync) | not exactly one of `0-9 * #` |
//! | `OPERATOR_BUSY` | [`Operator::dial`] (sync) | a call (or a dial) already exists |
//! | `NOT_ONLINE` | [`Operator::dial`] (sync) | presence is not `online` |
//! | `CALL_NOT_FOUND` | [`Operator::send_dtmf`] (sync) | no such call, or it is still ringing or over (digits sent while the audio leg attaches are held and sent on attach) |
//! | `RATE_LIMITED` | [`Operator::send_dtmf`] (sync) | more than 32 digits waiting for the audio leg |
//! | `TIMEOUT` | `dial` completion | no `dialAccepted` within `requestTimeoutMs` |
//! | `CANCELLED` | `dial` / `goOnline` completion | `go_offline` was called first |
//! | `CONNECTION_LOST` | `dial` completion; `error` event | presence lost before the answer; presence could not connect or was lost |
//! | `REPLACED` | `goOnline` / `dial` completion; `error` event | closed with 4005: another session took over (no reconnect) |
//! | `HEARTBEAT_TIMEOUT` | `error` event | no `pong` before the next ping was due |
//! | `TOKEN_FETCH_FAILED` | `error` event | `getToken` failed, timed out or returned no token (retried on the schedule) |
//! | `AUDIO_CONNECTION_LOST` | `error` event | the audio socket could not be (re)attached within `audioReattachWindowMs`; the call ends `failed` |
//! | `UNAUTHORIZED` | `listPhoneNumbers` completion | a 401 again after one retry with a fresh token |
//! | `REQUEST_FAILED` | `listPhoneNumbers` completion | any other HTTP failure (status, network, timeout, bad body, getToken failure) |
//! | `MEDIA_ACCESS_DENIED`, `AUDIO_FAILED` | `error` event | reported by the driver through [`Operator::handle_media_failed`]; the call ends `failed` |
//! | close-code codes (`SERVER_SHUTDOWN`, `TOKEN_EXPIRED`, `FORBIDDEN`, `CALL_NOT_FOUND`, …) | `error` event | a socket was closed with that code ([`audin_protocol::CloseCode::error_code`]) |

mod config;
mod engine;
pub mod json;
pub mod preflight;
pub mod quality;
mod time;
mod types;
mod wire;

pub use config::{Config, ConfigError, DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_TOKEN_TIMEOUT_MS};
pub use time::{
    MIN_REFRESH_DELAY_MS, REFRESH_BEFORE_EXPIRY_MS, jwt_exp_ms, parse_rfc3339_ms, refresh_delay_ms,
    token_expiry_ms,
};
pub use types::{
    CallInfo, CallState, Event, LogLevel, Millis, OpId, OpValue, OperatorError, Output,
    PresenceState, RequestId, SocketId, SocketKind, TokenGrant, TokenRequestId,
};

pub use audin_protocol::{Direction, EndReason, ErrorCode, PhoneNumberInfo};

pub use engine::Operator;
pub use wire::{WireError, decode_audio, decode_presence, encode_audio, encode_presence};

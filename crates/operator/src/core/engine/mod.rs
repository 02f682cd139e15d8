//! The operator state machine.

use super::config::{Config, ConfigError};
use super::types::*;
use audin_protocol::ErrorCode;

/// The operator client's state machine. See the [module docs](crate::core).
#[derive(Debug)]
pub struct Operator {
    _config: Config,
}

#[allow(unused_variables, clippy::unimplemented)]
impl Operator {
    /// Validates `config` (`INVALID_CONFIG` on a bad value) and builds an
    /// offline operator.
    pub fn new(config: Config) -> Result<Operator, ConfigError> {
        super::config::validate(&config)?;
        Ok(Operator { _config: config })
    }

    /// The presence state.
    pub fn state(&self) -> PresenceState {
        unimplemented!("skeleton")
    }

    /// The current (not yet ended) call, if any.
    pub fn current_call(&self) -> Option<&CallInfo> {
        unimplemented!("skeleton")
    }

    /// Connects presence (if needed) and announces `phone_number_ids`.
    /// Completes with [`OpValue::Availability`] when the server answers;
    /// while (re)connecting it stays pending. Fails only with `CANCELLED`
    /// (`go_offline`), `REPLACED`, or a server `error` reply to the request.
    /// Call again to change the set.
    pub fn go_online(&mut self, now: Millis, phone_number_ids: Vec<String>) -> OpId {
        unimplemented!("skeleton")
    }

    /// Ends a call with `offline`, closes presence with 1000, stops
    /// reconnecting, fails pending `go_online`/`dial` with `CANCELLED`.
    /// Completes at once with [`OpValue::None`].
    pub fn go_offline(&mut self, now: Millis) -> OpId {
        unimplemented!("skeleton")
    }

    /// Places an outbound call. Fails at once with `INVALID_NUMBER`,
    /// `OPERATOR_BUSY` or `NOT_ONLINE`; otherwise completes with
    /// [`OpValue::Call`] on `dialAccepted`, or fails with the server's code,
    /// `TIMEOUT`, `CONNECTION_LOST`, `REPLACED` or `CANCELLED`.
    pub fn dial(&mut self, now: Millis, to: &str, caller_id: &str) -> Result<OpId, OperatorError> {
        unimplemented!("skeleton")
    }

    /// `GET {coreUrl}/v1/phone-numbers` with a session token. Completes with
    /// [`OpValue::PhoneNumbers`], or `UNAUTHORIZED` / `REQUEST_FAILED`.
    pub fn list_phone_numbers(&mut self, now: Millis) -> OpId {
        unimplemented!("skeleton")
    }

    /// Answers the ringing call `call_sid` (no-op unless it is ringing).
    pub fn accept(&mut self, now: Millis, call_sid: &str) {
        unimplemented!("skeleton")
    }

    /// Declines the ringing call `call_sid`; it ends `rejected` at once
    /// (no-op unless it is ringing).
    pub fn reject(&mut self, now: Millis, call_sid: &str) {
        unimplemented!("skeleton")
    }

    /// Mutes or unmutes the call (the driver sends silence while muted).
    pub fn mute(&mut self, now: Millis, call_sid: &str, muted: bool) {
        unimplemented!("skeleton")
    }

    /// Sends one DTMF digit on the call's audio socket. `INVALID_DTMF` for
    /// anything but one of `0-9 * #`; `CALL_NOT_FOUND` when the call is not
    /// this one or its audio is not attached.
    pub fn send_dtmf(
        &mut self,
        now: Millis,
        call_sid: &str,
        digit: &str,
    ) -> Result<(), OperatorError> {
        unimplemented!("skeleton")
    }

    /// Hangs the call up; it ends `hangup` at once.
    pub fn hangup(&mut self, now: Millis, call_sid: &str) {
        unimplemented!("skeleton")
    }

    /// The outcome of a [`Output::FetchToken`]. `wall_clock_unix_ms` is the
    /// wall clock now (only used to turn the token's expiry into a delay).
    pub fn handle_token(
        &mut self,
        now: Millis,
        wall_clock_unix_ms: u64,
        id: TokenRequestId,
        result: Result<TokenGrant, String>,
    ) {
        unimplemented!("skeleton")
    }

    /// A socket of [`Output::OpenSocket`] is open.
    pub fn handle_socket_open(&mut self, now: Millis, socket: SocketId) {
        unimplemented!("skeleton")
    }

    /// A text message arrived on a socket.
    pub fn handle_socket_text(&mut self, now: Millis, socket: SocketId, text: &str) {
        unimplemented!("skeleton")
    }

    /// A socket closed (or failed: `code` None) without the core asking.
    pub fn handle_socket_closed(
        &mut self,
        now: Millis,
        socket: SocketId,
        code: Option<u16>,
        reason: &str,
    ) {
        unimplemented!("skeleton")
    }

    /// The answer to an [`Output::HttpRequest`].
    pub fn handle_http_response(&mut self, now: Millis, id: RequestId, status: u16, body: &str) {
        unimplemented!("skeleton")
    }

    /// An [`Output::HttpRequest`] failed without an answer.
    pub fn handle_http_error(&mut self, now: Millis, id: RequestId, message: &str) {
        unimplemented!("skeleton")
    }

    /// The driver could not run the call's media (e.g. microphone denied:
    /// `MEDIA_ACCESS_DENIED`; `AUDIO_FAILED`). The call ends `failed`.
    pub fn handle_media_failed(
        &mut self,
        now: Millis,
        call_sid: &str,
        code: ErrorCode,
        message: &str,
    ) {
        unimplemented!("skeleton")
    }

    /// The time of [`Operator::poll_timeout`] was reached.
    pub fn handle_timeout(&mut self, now: Millis) {
        unimplemented!("skeleton")
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        unimplemented!("skeleton")
    }

    /// When [`Operator::handle_timeout`] must be called next (None: no timer).
    pub fn poll_timeout(&self) -> Option<Millis> {
        unimplemented!("skeleton")
    }
}

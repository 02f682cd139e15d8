//! The call: offers, accept/reject, dial, the audio leg (attach, reattach
//! within the grace window), mute, DTMF, hangup, and the one place a call
//! ends.

use super::{CachedToken, Operator, TokenPurpose};
use crate::core::json::{cat, u64_string};
use crate::core::types::*;
use crate::core::wire::{decode_audio, encode_audio};
use audin_protocol::{
    AttachHint, AudioClientMessage, AudioServerMessage, ClientMessage, CloseCode, Direction,
    E164Error, EndReason, ErrorCode, HangupReason, RejectReason, validate_dtmf_digit,
    validate_e164,
};

/// Delays between audio (re)attach attempts; the last repeats until the
/// reattach window is over. Short, because the far end hears silence
/// meanwhile.
pub const REATTACH_DELAYS_MS: [u64; 4] = [250, 500, 1_000, 2_000];

#[derive(Debug)]
pub(super) struct Call {
    pub(super) info: CallInfo,
    leg: Leg,
    /// `CallStarted` was emitted.
    started: bool,
    /// The socket media was last started on (`StartMedia`).
    media: Option<SocketId>,
    /// End of the current (re)attach window; None while attached.
    window_end: Option<Millis>,
    /// Index into [`REATTACH_DELAYS_MS`].
    retry: usize,
    /// When the attached audio socket last delivered a frame (or attached).
    last_audio_rx: Millis,
    /// DTMF digits sent before the audio leg attached, flushed on `attached`
    /// (the seed's Quick start calls `sendDtmf` right after `dial` resolves).
    pending_dtmf: String,
    /// `callAccepted`/`dialAccepted`'s hint, each part used once: the
    /// first attempt sends the ticket in place of a session token (no
    /// `getToken`), the first socket goes to `audioUrl`.
    pub(super) hint: AttachHint,
}

/// Most DTMF digits held while the audio leg is attaching.
pub const MAX_PENDING_DTMF: usize = 32;

/// The call's audio socket.
#[derive(Debug)]
enum Leg {
    /// Not started (ringing, or waiting for `callAccepted`).
    Idle,
    FetchingToken {
        request: TokenRequestId,
    },
    /// Opening; `attach` is sent on open; `attached` is due by `deadline`.
    Connecting {
        socket: SocketId,
        token: Option<String>,
        deadline: Millis,
    },
    Attached {
        socket: SocketId,
    },
    /// Between attempts.
    RetryWait {
        until: Millis,
    },
}

impl Leg {
    fn socket(&self) -> Option<SocketId> {
        match self {
            Leg::Connecting { socket, .. } | Leg::Attached { socket } => Some(*socket),
            _ => None,
        }
    }
}

/// A `dial` waiting for `dialAccepted`.
#[derive(Debug)]
pub(super) struct PendingDial {
    op: OpId,
    request_id: String,
    deadline: Millis,
}

impl Operator {
    pub(super) fn call_owns(&self, socket: SocketId) -> bool {
        self.call.as_ref().and_then(|c| c.leg.socket()) == Some(socket)
    }

    /// The current call if it is `call_sid`.
    fn call_mut(&mut self, call_sid: &str) -> Option<&mut Call> {
        self.call.as_mut().filter(|c| c.info.call_sid == call_sid)
    }

    fn call_state(&self, call_sid: &str) -> Option<CallState> {
        self.call
            .as_ref()
            .filter(|c| c.info.call_sid == call_sid)
            .map(|c| c.info.state)
    }

    fn attached_socket(&self) -> Option<SocketId> {
        match self.call.as_ref()?.leg {
            Leg::Attached { socket } => Some(socket),
            _ => None,
        }
    }

    fn send_audio(&mut self, msg: &AudioClientMessage) -> bool {
        let Some(socket) = self.attached_socket() else {
            return false;
        };
        self.send_text(socket, encode_audio(msg));
        true
    }

    fn emit_call(&mut self, make: fn(CallInfo) -> Event) {
        if let Some(call) = &self.call {
            let event = make(call.info.clone());
            self.emit(event);
        }
    }

    fn set_call_state(&mut self, state: CallState) {
        if let Some(call) = &mut self.call {
            call.info.state = state;
        }
    }

    fn new_call(
        &mut self,
        direction: Direction,
        sid: String,
        from: String,
        to: String,
        state: CallState,
    ) {
        self.call = Some(Call {
            info: CallInfo {
                call_sid: sid,
                direction,
                from,
                to,
                state,
                end_reason: None,
                muted: false,
            },
            leg: Leg::Idle,
            started: false,
            media: None,
            window_end: None,
            retry: 0,
            pending_dtmf: String::new(),
            last_audio_rx: Millis(0),
            hint: AttachHint::default(),
        });
    }

    // ── inbound ────────────────────────────────────────────────────────

    pub(super) fn on_call_offer(&mut self, _now: Millis, sid: String, from: String, to: String) {
        if self.call.is_some() || self.dial.is_some() {
            // One call at a time: decline silently (no incomingCall event).
            self.log(
                LogLevel::Info,
                cat(&["offer ", &sid, " auto-declined: busy"]),
            );
            let reject = ClientMessage::Reject {
                call_sid: sid,
                reason: Some(RejectReason::Busy),
            };
            self.send_presence(&reject);
            return;
        }
        self.new_call(Direction::Inbound, sid, from, to, CallState::Ringing);
        self.emit_call(|call| Event::IncomingCall { call });
    }

    pub(super) fn call_accept(&mut self, _now: Millis, sid: &str) {
        if self.call_state(sid) != Some(CallState::Ringing) {
            return;
        }
        let accept = ClientMessage::Accept {
            call_sid: sid.to_string(),
        };
        if !self.send_presence(&accept) {
            return self.log(LogLevel::Warn, "accept ignored: presence is not connected");
        }
        self.set_call_state(CallState::Connecting);
        self.emit_call(|call| Event::CallUpdated { call });
    }

    pub(super) fn on_call_accepted(&mut self, now: Millis, sid: &str, hint: AttachHint) {
        let waiting = self
            .call_mut(sid)
            .is_some_and(|c| c.info.state == CallState::Connecting && matches!(c.leg, Leg::Idle));
        if waiting {
            self.set_hint(hint);
            self.start_audio(now);
        }
    }

    pub(super) fn call_reject(&mut self, now: Millis, sid: &str) {
        if self.call_state(sid) != Some(CallState::Ringing) {
            return;
        }
        let reject = ClientMessage::Reject {
            call_sid: sid.to_string(),
            reason: Some(RejectReason::Declined),
        };
        self.send_presence(&reject);
        self.end_call(now, EndReason::Rejected, None);
    }

    // ── outbound ───────────────────────────────────────────────────────

    pub(super) fn call_dial(
        &mut self,
        now: Millis,
        to: &str,
        caller_id: &str,
    ) -> Result<OpId, OperatorError> {
        for (name, number) in [("to", to), ("callerId", caller_id)] {
            if let Err(e) = validate_e164(number) {
                let message = cat(&[name, " \"", number, "\" is not E.164: ", &e164_problem(&e)]);
                return Err(OperatorError::new(ErrorCode::InvalidNumber, message));
            }
        }
        if self.call.is_some() || self.dial.is_some() {
            let message = "the operator already has a call (one call at a time)";
            return Err(OperatorError::new(ErrorCode::OperatorBusy, message));
        }
        if self.state() != PresenceState::Online {
            let message = cat(&["cannot dial while presence is ", self.state().as_str()]);
            return Err(OperatorError::new(ErrorCode::NotOnline, message));
        }
        let op = OpId(self.new_id());
        let request_id = cat(&["dial-", &u64_string(op.0.into())]);
        self.send_presence(&ClientMessage::Dial {
            request_id: request_id.clone(),
            to: to.to_string(),
            caller_id: caller_id.to_string(),
        });
        self.dial = Some(PendingDial {
            op,
            request_id,
            deadline: now.plus(self.config.request_timeout_ms),
        });
        Ok(op)
    }

    pub(super) fn dial_request_is(&self, rid: &str) -> bool {
        self.dial.as_ref().is_some_and(|d| d.request_id == rid)
    }

    /// Fails the pending dial, if any.
    pub(super) fn fail_dial(&mut self, code: ErrorCode, message: &str) {
        if let Some(dial) = self.dial.take() {
            self.complete(dial.op, Err(OperatorError::new(code, message)));
        }
    }

    pub(super) fn on_dial_accepted(
        &mut self,
        now: Millis,
        rid: &str,
        sid: String,
        from: String,
        to: String,
        hint: AttachHint,
    ) {
        if !self.dial_request_is(rid) {
            // A dial we gave up on (timeout, offline): do not let it linger.
            self.log(
                LogLevel::Warn,
                cat(&["stale dialAccepted for ", &sid, ": hanging up"]),
            );
            self.send_presence_hangup(sid, HangupReason::Hangup);
            return;
        }
        let Some(dial) = self.dial.take() else { return };
        self.new_call(Direction::Outbound, sid, from, to, CallState::Connecting);
        let call = self.call.as_ref().map(|c| c.info.clone());
        if let Some(call) = call {
            self.complete(dial.op, Ok(OpValue::Call { call }));
        }
        self.set_hint(hint);
        self.start_audio(now);
    }

    // ── ending ─────────────────────────────────────────────────────────

    pub(super) fn on_call_ended(&mut self, now: Millis, sid: &str, reason: EndReason) {
        if self.call_state(sid).is_some() {
            self.end_call(now, reason, None);
        }
    }

    /// Ends the current call: the one place `CallEnded` is emitted, so it
    /// is emitted exactly once (later reports of the same end find no call).
    fn end_call(&mut self, _now: Millis, reason: EndReason, error: Option<(ErrorCode, String)>) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        call.info.state = CallState::Ended;
        call.info.end_reason = Some(reason);
        if call.media.is_some() {
            let call_sid = call.info.call_sid.clone();
            self.push(Output::StopMedia { call_sid });
        }
        if let Some(socket) = call.leg.socket() {
            self.close_socket(socket, CloseCode::Normal.code(), "call ended");
        }
        if let Some((code, message)) = error {
            self.emit_error(code, message, None);
        }
        self.log(
            LogLevel::Info,
            cat(&["call ", &call.info.call_sid, " ended: ", reason.as_str()]),
        );
        self.emit(Event::CallEnded { call: call.info });
    }

    /// Tells the server the operator ends the call (audio socket if
    /// attached, else presence, else once presence is back).
    fn send_hangup(&mut self, sid: &str, reason: HangupReason) {
        let sent = self.send_audio(&AudioClientMessage::Hangup {
            reason: Some(reason),
        }) || self.send_presence_hangup(sid.to_string(), reason);
        if !sent {
            self.undelivered_hangup = Some((sid.to_string(), reason));
        }
    }

    /// After a (re)connect: the hangup neither socket could carry goes out
    /// now if the service still holds that call for us (else it ended on
    /// its own meanwhile, and nothing is owed).
    pub(super) fn deliver_hangup(&mut self, server_call: Option<&str>) {
        let Some((sid, reason)) = self.undelivered_hangup.take() else {
            return;
        };
        if server_call == Some(sid.as_str()) {
            self.send_presence_hangup(sid, reason);
        }
    }

    /// The presence socket's hangup of call `sid` (false: not connected).
    fn send_presence_hangup(&mut self, sid: String, reason: HangupReason) -> bool {
        self.send_presence(&ClientMessage::Hangup {
            call_sid: sid,
            reason: Some(reason),
        })
    }

    pub(super) fn call_hangup(&mut self, now: Millis, sid: &str) {
        match self.call_state(sid) {
            Some(CallState::Ringing) => self.call_reject(now, sid),
            Some(_) => {
                self.send_hangup(sid, HangupReason::Hangup);
                self.end_call(now, EndReason::Hangup, None);
            }
            None => {}
        }
    }

    /// `go_offline` during a call: the call ends `offline`.
    pub(super) fn end_call_for_offline(&mut self, now: Millis) {
        let Some(call) = &self.call else { return };
        let sid = call.info.call_sid.clone();
        if call.info.state == CallState::Ringing {
            self.send_presence(&ClientMessage::Reject {
                call_sid: sid,
                reason: Some(RejectReason::Declined),
            });
        } else {
            self.send_hangup(&sid, HangupReason::Offline);
        }
        self.end_call(now, EndReason::Offline, None);
    }

    pub(super) fn call_media_failed(
        &mut self,
        now: Millis,
        sid: &str,
        code: ErrorCode,
        message: &str,
    ) {
        if self.call_state(sid).is_none() {
            return;
        }
        self.send_hangup(sid, HangupReason::Hangup);
        self.end_call(now, EndReason::Failed, Some((code, message.to_string())));
    }

    /// A presence `error` about a call; true if it was handled here.
    pub(super) fn call_error(
        &mut self,
        now: Millis,
        sid: &str,
        code: ErrorCode,
        message: &str,
    ) -> bool {
        if self.call_state(sid).is_none() || code != ErrorCode::CallNotFound {
            return false;
        }
        self.end_call(now, EndReason::Failed, Some((code, message.to_string())));
        true
    }

    /// After a (re)connect: a call the server no longer holds is over.
    pub(super) fn reconcile_call(&mut self, now: Millis, server_call: Option<String>) {
        let Some(call) = &self.call else { return };
        if server_call.as_deref() == Some(call.info.call_sid.as_str()) {
            // Our accept won but its `callAccepted` was lost with the socket:
            // the server holds the call for us, so open its audio now.
            if call.info.state == CallState::Connecting && matches!(call.leg, Leg::Idle) {
                self.start_audio(now);
            }
            return;
        }
        let message = cat(&["the service no longer holds call ", &call.info.call_sid]);
        self.end_call(
            now,
            EndReason::Failed,
            Some((ErrorCode::ConnectionLost, message)),
        );
    }

    // ── controls ───────────────────────────────────────────────────────

    pub(super) fn call_mute(&mut self, _now: Millis, sid: &str, muted: bool) {
        let Some(call) = self.call_mut(sid) else {
            return;
        };
        if call.info.muted == muted {
            return;
        }
        call.info.muted = muted;
        let call_sid = call.info.call_sid.clone();
        self.push(Output::SetMuted { call_sid, muted });
        self.send_audio(&AudioClientMessage::Mute { muted });
        self.emit_call(|call| Event::CallUpdated { call });
    }

    pub(super) fn call_send_dtmf(
        &mut self,
        _now: Millis,
        sid: &str,
        digit: &str,
    ) -> Result<(), OperatorError> {
        let digit = validate_dtmf_digit(digit).map_err(|_| {
            // Not DtmfError's Display: it pulls `str: Debug` into the wasm.
            let shown: String = digit.chars().take(16).collect();
            let message = cat(&[
                "invalid DTMF digit \"",
                &shown,
                "\": expected one of 0-9, * or #",
            ]);
            OperatorError::new(ErrorCode::InvalidDtmf, message)
        })?;
        let live = matches!(
            self.call_state(sid),
            Some(CallState::Connecting | CallState::Active)
        );
        if !live {
            let message = cat(&["no connected call \"", sid, "\""]);
            return Err(OperatorError::new(ErrorCode::CallNotFound, message));
        }
        let msg = AudioClientMessage::Dtmf {
            digit: digit.to_string(),
        };
        if self.send_audio(&msg) {
            return Ok(());
        }
        // Audio not attached yet (or reattaching): hold the digit until it is.
        let Some(call) = self.call.as_mut() else {
            return Ok(()); // unreachable: `live` checked the call above
        };
        if call.pending_dtmf.len() >= MAX_PENDING_DTMF {
            let message = cat(&[
                "more than ",
                &u64_string(MAX_PENDING_DTMF as u64),
                " DTMF digits waiting for audio",
            ]);
            return Err(OperatorError::new(ErrorCode::RateLimited, message));
        }
        call.pending_dtmf.push(digit);
        Ok(())
    }

    // ── the audio leg ──────────────────────────────────────────────────

    /// Starts attaching the audio socket, within a fresh window.
    fn start_audio(&mut self, now: Millis) {
        let window = self.config.audio_reattach_window_ms;
        if let Some(call) = &mut self.call {
            call.window_end = Some(now.plus(window));
            call.retry = 0;
        }
        self.begin_attach(now);
    }

    fn begin_attach(&mut self, now: Millis) {
        let Some(call) = &mut self.call else { return };
        let call_sid = call.info.call_sid.clone();
        // The ticket serves one attempt; every retry fetches a token.
        if let Some(ticket) = call.hint.attach_ticket.take() {
            return self.connect_audio(now, call_sid, ticket);
        }
        let request = self.fetch_token(now, TokenPurpose::Audio { call_sid });
        self.set_leg(Leg::FetchingToken { request });
    }

    /// Opens the audio socket; `attach` with `token` is sent on open.
    fn connect_audio(&mut self, now: Millis, call_sid: String, token: String) {
        let socket = self.open_socket(SocketKind::Audio { call_sid });
        let deadline = self.attempt_deadline(now);
        self.set_leg(Leg::Connecting {
            socket,
            token: Some(token),
            deadline,
        });
    }

    fn set_hint(&mut self, hint: AttachHint) {
        if let Some(call) = &mut self.call {
            call.hint = hint;
        }
    }

    fn set_leg(&mut self, leg: Leg) {
        if let Some(call) = &mut self.call {
            call.leg = leg;
        }
    }

    pub(super) fn audio_token(
        &mut self,
        now: Millis,
        id: TokenRequestId,
        sid: &str,
        result: Result<CachedToken, String>,
    ) {
        let expected = self
            .call_mut(sid)
            .is_some_and(|c| matches!(c.leg, Leg::FetchingToken { request } if request == id));
        if !expected {
            return;
        }
        match result {
            Ok(token) => self.connect_audio(now, sid.to_string(), token.token),
            Err(cause) => {
                let message = "getToken failed for the call's audio leg; retrying";
                self.emit_error(ErrorCode::TokenFetchFailed, message, Some(cause));
                self.retry_attach(now);
            }
        }
    }

    /// One attempt may take the request timeout, but not past the window.
    fn attempt_deadline(&self, now: Millis) -> Millis {
        let limit = now.plus(self.config.request_timeout_ms);
        match self.call.as_ref().and_then(|c| c.window_end) {
            Some(end) => end.min(limit),
            None => limit,
        }
    }

    pub(super) fn audio_socket_open(&mut self, _now: Millis, socket: SocketId) {
        let Some(call) = &mut self.call else { return };
        let Leg::Connecting { token, .. } = &mut call.leg else {
            return;
        };
        let Some(token) = token.take() else { return };
        let attach = AudioClientMessage::Attach {
            token,
            call_sid: call.info.call_sid.clone(),
        };
        self.send_text(socket, encode_audio(&attach));
    }

    pub(super) fn audio_text(&mut self, now: Millis, text: &str) {
        let msg = match decode_audio(text) {
            Ok(msg) => msg,
            Err(err) => return self.log_undecodable("audio", &err),
        };
        match msg {
            AudioServerMessage::Attached {
                answered, resumed, ..
            } => self.on_attached(now, answered, resumed),
            AudioServerMessage::Answered { .. } => self.on_answered(now),
            AudioServerMessage::Ended { reason, .. } => self.end_call(now, reason, None),
            AudioServerMessage::Error { code, message } => self.emit_error(code, message, None),
            // Round trips are the quality monitor's (`core::quality`); the
            // driver normally hands pongs there and never here.
            AudioServerMessage::Pong { .. } => {}
            // Only a preflight session (`core::preflight`) is told this; a
            // call's socket never is.
            AudioServerMessage::PreflightStarted { .. } => {}
        }
    }

    fn on_attached(&mut self, now: Millis, answered: bool, resumed: bool) {
        let Some(call) = &mut self.call else { return };
        let Leg::Connecting { socket, .. } = call.leg else {
            return;
        };
        call.last_audio_rx = now;
        let reattached = resumed || call.media.is_some();
        call.leg = Leg::Attached { socket };
        call.window_end = None;
        call.retry = 0;
        call.media = Some(socket);
        let (call_sid, muted) = (call.info.call_sid.clone(), call.info.muted);
        self.push(Output::StartMedia { call_sid, socket });
        if muted {
            // The server does not keep the flag across sockets.
            self.send_audio(&AudioClientMessage::Mute { muted });
        }
        self.flush_pending_dtmf();
        if reattached {
            self.emit_call(|call| Event::CallReconnected { call });
        }
        if answered {
            self.on_answered(now);
        }
    }

    fn flush_pending_dtmf(&mut self) {
        let Some(call) = &mut self.call else { return };
        let digits = std::mem::take(&mut call.pending_dtmf);
        for digit in digits.chars() {
            self.send_audio(&AudioClientMessage::Dtmf {
                digit: digit.to_string(),
            });
        }
    }

    fn on_answered(&mut self, now: Millis) {
        let Some(call) = &mut self.call else { return };
        if call.started || call.info.state == CallState::Ended {
            return;
        }
        call.started = true;
        call.info.state = CallState::Active;
        // The service relays audio once the call is answered, not while it
        // rings: the silence clock starts now, not at the attach.
        call.last_audio_rx = call.last_audio_rx.max(now);
        self.emit_call(|call| Event::CallStarted { call });
    }

    pub(super) fn audio_lost(&mut self, now: Millis, code: Option<u16>, reason: &str) {
        let close = code.and_then(CloseCode::from_code);
        if matches!(close, Some(CloseCode::Forbidden | CloseCode::CallNotFound)) {
            let code = close.map_or(ErrorCode::CallNotFound, CloseCode::error_code);
            let message = cat(&["the audio socket was refused (", reason, ")"]);
            return self.end_call(now, EndReason::Failed, Some((code, message)));
        }
        let window = self.config.audio_reattach_window_ms;
        let Some(call) = &mut self.call else { return };
        let was_attached = matches!(call.leg, Leg::Attached { .. });
        call.leg = Leg::Idle;
        if was_attached {
            call.window_end = Some(now.plus(window));
            call.retry = 0;
            self.log(
                LogLevel::Warn,
                cat(&[
                    "audio socket lost (",
                    &u64_string(code.unwrap_or(0).into()),
                    " ",
                    reason,
                    "); reattaching",
                ]),
            );
            self.emit_call(|call| Event::CallReconnecting { call });
        }
        self.retry_attach(now);
    }

    /// Waits the next short delay, or gives up when the window is over.
    fn retry_attach(&mut self, now: Millis) {
        let Some(call) = &mut self.call else { return };
        let window_end = call.window_end.unwrap_or(now);
        if now >= window_end {
            return self.audio_gave_up(now);
        }
        let delay = REATTACH_DELAYS_MS[call.retry.min(REATTACH_DELAYS_MS.len() - 1)];
        call.retry += 1;
        call.leg = Leg::RetryWait {
            until: now.plus(delay).min(window_end),
        };
    }

    fn audio_gave_up(&mut self, now: Millis) {
        let window = self.config.audio_reattach_window_ms;
        let message = cat(&[
            "the call's audio could not be (re)attached within ",
            &u64_string(window),
            " ms",
        ]);
        if let Some(sid) = self.call.as_ref().map(|c| c.info.call_sid.clone()) {
            self.send_hangup(&sid, HangupReason::Failed);
        }
        self.end_call(
            now,
            EndReason::Failed,
            Some((ErrorCode::AudioConnectionLost, message)),
        );
    }

    /// A binary frame arrived on `socket` (drivers may report only some).
    pub(super) fn audio_received(&mut self, now: Millis, socket: SocketId) {
        if let Some(call) = &mut self.call
            && matches!(call.leg, Leg::Attached { socket: s } if s == socket)
        {
            call.last_audio_rx = now;
        }
    }

    /// When an active call's silent audio socket counts as dead.
    fn audio_silence_deadline(&self, call: &Call) -> Option<Millis> {
        let active = call.info.state == CallState::Active;
        (active && matches!(call.leg, Leg::Attached { .. }))
            .then(|| call.last_audio_rx.plus(self.config.audio_silence_ms))
    }

    // ── timers ─────────────────────────────────────────────────────────

    pub(super) fn call_deadline(&self) -> Option<Millis> {
        let dial = self.dial.as_ref().map(|d| d.deadline);
        let leg = self.call.as_ref().and_then(|c| match c.leg {
            Leg::Connecting { deadline, .. } => Some(deadline),
            Leg::RetryWait { until } => Some(until),
            Leg::FetchingToken { .. } => c.window_end,
            Leg::Attached { .. } => self.audio_silence_deadline(c),
            Leg::Idle => None,
        });
        super::earliest(dial, leg)
    }

    pub(super) fn call_timeout(&mut self, now: Millis) {
        if self.dial.as_ref().is_some_and(|d| d.deadline <= now) {
            let message = cat(&[
                "no answer to dial within ",
                &u64_string(self.config.request_timeout_ms),
                " ms",
            ]);
            self.fail_dial(ErrorCode::Timeout, &message);
        }
        let Some(call) = &self.call else { return };
        let window_over = call.window_end.is_some_and(|end| end <= now);
        if let Leg::Attached { socket } = call.leg
            && self.audio_silence_deadline(call).is_some_and(|d| d <= now)
        {
            // The service relays a frame every 20 ms: this path is dead or
            // half-open even though no close arrived. Reattach.
            self.close_socket(
                socket,
                CloseCode::HeartbeatTimeout.code(),
                "no audio received",
            );
            return self.audio_lost(now, None, "no audio received");
        }
        match call.leg {
            Leg::RetryWait { until } if until <= now && !window_over => self.begin_attach(now),
            Leg::Connecting {
                socket, deadline, ..
            } if deadline <= now => {
                self.close_socket(socket, CloseCode::Normal.code(), "attach timeout");
                self.set_leg(Leg::Idle);
                self.retry_attach(now);
            }
            Leg::RetryWait { .. } | Leg::FetchingToken { .. } if window_over => {
                self.audio_gave_up(now)
            }
            _ => {}
        }
    }
}

/// What is wrong with a number, without `E164Error`'s `Display` (which
/// pulls integer formatting into the wasm build).
fn e164_problem(e: &E164Error) -> String {
    match e {
        E164Error::Empty => "phone number is empty".into(),
        E164Error::MissingPlus => "phone number must start with '+' (E.164)".into(),
        E164Error::LeadingZero => "E.164 country code cannot start with 0".into(),
        E164Error::NotADigit => "phone number may only hold digits after '+'".into(),
        E164Error::BadLength(n) => cat(&[
            "E.164 numbers have 2 to 15 digits, got ",
            &u64_string(*n as u64),
        ]),
    }
}

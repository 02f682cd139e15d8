//! The presence socket: connect, `hello`/`welcome`, availability, heartbeat,
//! reconnect on the backoff schedule, token refresh, replacement.

use super::{CachedToken, Operator, TokenPurpose};
use crate::core::json::{cat, u64_string};
use crate::core::time::refresh_delay_ms;
use crate::core::types::*;
use crate::core::wire::{WireError, decode_presence, encode_presence};
use audin_protocol::{ClientMessage, CloseCode, ErrorCode, ServerMessage};

#[derive(Debug)]
pub(super) struct Presence {
    pub(super) state: PresenceState,
    /// The last `go_online` set; re-announced after every (re)connect.
    numbers: Vec<String>,
    /// Whether a welcome was received since `go_online` (decides between
    /// `connecting` and `reconnecting`).
    was_online: bool,
    /// Index of the next backoff delay; reset by a welcome.
    attempt: usize,
    phase: Phase,
    go_online_ops: Vec<PendingGoOnline>,
    /// Request id of the newest `goOnline` sent.
    latest_request: Option<String>,
    next_request: u32,
    next_ping: u64,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            state: PresenceState::Offline,
            numbers: Vec::new(),
            was_online: false,
            attempt: 0,
            phase: Phase::Idle,
            go_online_ops: Vec::new(),
            latest_request: None,
            next_request: 0,
            next_ping: 0,
        }
    }
}

#[derive(Debug)]
struct PendingGoOnline {
    op: OpId,
    /// The `goOnline` request this op waits for; None until one is sent on
    /// the current connection.
    request_id: Option<String>,
}

#[derive(Debug)]
enum Phase {
    /// Offline: nothing to do.
    Idle,
    /// Waiting out a backoff delay before the next attempt.
    Waiting { until: Millis },
    /// A `getToken` for the next attempt is in flight.
    FetchingToken { request: TokenRequestId },
    /// The socket is opening or `hello` is sent; `welcome` is due by `deadline`.
    Connecting {
        socket: SocketId,
        /// Taken when `hello` is sent.
        token: Option<String>,
        expires: Option<Millis>,
        deadline: Millis,
    },
    /// Authenticated.
    Live(Live),
}

#[derive(Debug)]
struct Live {
    socket: SocketId,
    next_ping: Millis,
    /// A ping still waiting for its pong.
    unanswered_ping: Option<u64>,
    refresh: Refresh,
    /// Index into the backoff schedule for refresh retries.
    refresh_attempt: usize,
}

#[derive(Debug)]
enum Refresh {
    /// The token's expiry is unknown: no refresh (the server's 4003 close
    /// will make the core reconnect with a fresh token).
    Never,
    Scheduled {
        at: Millis,
    },
    Fetching {
        request: TokenRequestId,
    },
    AwaitingReply {
        request_id: String,
        expires: Option<Millis>,
        deadline: Millis,
    },
}

impl Operator {
    pub(super) fn presence_owns(&self, socket: SocketId) -> bool {
        self.presence_socket() == Some(socket)
    }

    fn presence_socket(&self) -> Option<SocketId> {
        match &self.presence.phase {
            Phase::Connecting { socket, .. } => Some(*socket),
            Phase::Live(live) => Some(live.socket),
            _ => None,
        }
    }

    /// Whether presence is authenticated (messages other than `hello` may be sent).
    pub(super) fn presence_live(&self) -> bool {
        matches!(self.presence.phase, Phase::Live(_))
    }

    /// Sends `msg` on the live presence socket; false if there is none.
    pub(super) fn send_presence(&mut self, msg: &ClientMessage) -> bool {
        let Phase::Live(live) = &self.presence.phase else {
            return false;
        };
        let socket = live.socket;
        self.send_text(socket, encode_presence(msg));
        true
    }

    fn set_state(&mut self, state: PresenceState) {
        if self.presence.state != state {
            self.presence.state = state;
            self.log(LogLevel::Info, cat(&["presence ", state.as_str()]));
            self.emit(Event::PresenceStateChanged { state });
        }
    }

    fn new_request_id(&mut self, prefix: &str) -> String {
        self.presence.next_request += 1;
        cat(&[prefix, &u64_string(self.presence.next_request.into())])
    }

    // ── go online / offline ────────────────────────────────────────────

    pub(super) fn presence_go_online(&mut self, now: Millis, op: OpId, numbers: Vec<String>) {
        self.presence.numbers = numbers;
        self.presence.go_online_ops.push(PendingGoOnline {
            op,
            request_id: None,
        });
        match self.presence.phase {
            Phase::Live(_) => self.announce_availability(),
            Phase::Idle => {
                self.presence.was_online = false;
                self.presence.attempt = 0;
                self.set_state(PresenceState::Connecting);
                self.start_attempt(now);
            }
            // Already (re)connecting: the new set goes out after `welcome`.
            _ => {}
        }
    }

    pub(super) fn presence_go_offline(&mut self, _now: Millis) {
        self.fail_go_online(ErrorCode::Cancelled, "goOffline() was called");
        if let Some(socket) = self.presence_socket() {
            self.close_socket(socket, CloseCode::Normal.code(), "offline");
        }
        self.stop_presence();
    }

    /// Forgets the connection and every timer; state `offline`.
    fn stop_presence(&mut self) {
        self.presence.phase = Phase::Idle;
        self.presence.was_online = false;
        self.presence.attempt = 0;
        self.presence.latest_request = None;
        self.set_state(PresenceState::Offline);
    }

    fn fail_go_online(&mut self, code: ErrorCode, message: &str) {
        for pending in std::mem::take(&mut self.presence.go_online_ops) {
            self.complete(pending.op, Err(OperatorError::new(code, message)));
        }
    }

    fn announce_availability(&mut self) {
        let request_id = self.new_request_id("online-");
        let msg = ClientMessage::GoOnline {
            phone_number_ids: self.presence.numbers.clone(),
            request_id: Some(request_id.clone()),
        };
        if self.send_presence(&msg) {
            for pending in &mut self.presence.go_online_ops {
                pending.request_id.get_or_insert_with(|| request_id.clone());
            }
            self.presence.latest_request = Some(request_id);
        }
    }

    fn on_availability(
        &mut self,
        accepted: Vec<String>,
        rejected: Vec<String>,
        rid: Option<String>,
    ) {
        let newest = rid.is_none() || rid == self.presence.latest_request;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.presence.go_online_ops)
            .into_iter()
            .partition(|p| newest || p.request_id == rid);
        self.presence.go_online_ops = waiting;
        for pending in done {
            let value = OpValue::Availability {
                accepted: accepted.clone(),
                rejected: rejected.clone(),
            };
            self.complete(pending.op, Ok(value));
        }
        self.emit(Event::AvailabilityChanged { accepted, rejected });
    }

    // ── connecting ─────────────────────────────────────────────────────

    fn start_attempt(&mut self, now: Millis) {
        let request = self.fetch_token(now, TokenPurpose::Presence);
        self.presence.phase = Phase::FetchingToken { request };
    }

    pub(super) fn presence_token(
        &mut self,
        now: Millis,
        id: TokenRequestId,
        result: Result<CachedToken, String>,
    ) {
        if !matches!(self.presence.phase, Phase::FetchingToken { request } if request == id) {
            return;
        }
        match result {
            Ok(token) => {
                let socket = self.open_socket(SocketKind::Presence);
                self.presence.phase = Phase::Connecting {
                    socket,
                    token: Some(token.token),
                    expires: token.expires,
                    deadline: now.plus(self.config.request_timeout_ms),
                };
            }
            Err(cause) => {
                let message = "getToken failed; retrying on the backoff schedule";
                self.emit_error(ErrorCode::TokenFetchFailed, message, Some(cause));
                self.schedule_retry(now);
            }
        }
    }

    /// Waits out the next backoff delay, then tries again.
    fn schedule_retry(&mut self, now: Millis) {
        let delay = self.backoff_delay(self.presence.attempt);
        self.presence.attempt += 1;
        self.log(
            LogLevel::Info,
            cat(&["presence retry in ", &u64_string(delay), " ms"]),
        );
        self.presence.phase = Phase::Waiting {
            until: now.plus(delay),
        };
        let state = if self.presence.was_online {
            PresenceState::Reconnecting
        } else {
            PresenceState::Connecting
        };
        self.set_state(state);
    }

    pub(super) fn presence_socket_open(&mut self, _now: Millis, socket: SocketId) {
        let Phase::Connecting { token, .. } = &mut self.presence.phase else {
            return;
        };
        let Some(token) = token.take() else { return };
        let hello = ClientMessage::Hello {
            token,
            client: Some(self.config.client_name.clone()),
        };
        self.send_text(socket, encode_presence(&hello));
    }

    fn on_welcome(&mut self, now: Millis, active_call: Option<audin_protocol::ActiveCall>) {
        let Phase::Connecting {
            socket, expires, ..
        } = self.presence.phase
        else {
            return;
        };
        self.presence.phase = Phase::Live(Live {
            socket,
            next_ping: now.plus(self.config.heartbeat_interval_ms),
            unanswered_ping: None,
            refresh: refresh_schedule(now, expires),
            refresh_attempt: 0,
        });
        self.presence.attempt = 0;
        self.presence.was_online = true;
        self.set_state(PresenceState::Online);
        let server_call = active_call.map(|c| c.call_sid);
        self.deliver_hangup(server_call.as_deref());
        self.reconcile_call(now, server_call);
        self.announce_availability();
    }

    // ── losing the connection ──────────────────────────────────────────

    pub(super) fn presence_lost(&mut self, now: Millis, code: Option<u16>, reason: &str) {
        let close = code.and_then(CloseCode::from_code);
        if close == Some(CloseCode::Replaced) {
            return self.replaced();
        }
        let error = close.map_or(ErrorCode::ConnectionLost, CloseCode::error_code);
        let message = match code {
            Some(c) => cat(&[
                "presence socket closed (",
                &u64_string(c.into()),
                " ",
                reason,
                ")",
            ]),
            None => cat(&["presence socket failed: ", reason]),
        };
        self.emit_error(error, message, None);
        self.fail_dial(
            ErrorCode::ConnectionLost,
            "the presence connection was lost before the server answered",
        );
        // Pending goOnline calls wait for the re-announcement after reconnect.
        for pending in &mut self.presence.go_online_ops {
            pending.request_id = None;
        }
        self.presence.latest_request = None;
        self.schedule_retry(now);
    }

    /// Closed with 4005: another session of this operator took over. Going
    /// back would fight it, so go offline for good.
    fn replaced(&mut self) {
        let message = "another connection of this operator took over (4005); not reconnecting";
        self.fail_go_online(ErrorCode::Replaced, message);
        self.fail_dial(ErrorCode::Replaced, message);
        self.stop_presence();
        self.emit_error(ErrorCode::Replaced, message, None);
    }

    /// Closes a socket that stopped answering and reconnects.
    fn drop_dead_socket(&mut self, now: Millis, code: CloseCode, reason: &str) {
        if let Some(socket) = self.presence_socket() {
            self.close_socket(socket, code.code(), reason);
        }
        self.presence_lost(now, Some(code.code()), reason);
    }

    // ── timers ─────────────────────────────────────────────────────────

    pub(super) fn presence_deadline(&self) -> Option<Millis> {
        match &self.presence.phase {
            Phase::Idle | Phase::FetchingToken { .. } => None,
            Phase::Waiting { until } => Some(*until),
            Phase::Connecting { deadline, .. } => Some(*deadline),
            Phase::Live(live) => {
                let refresh = match &live.refresh {
                    Refresh::Scheduled { at } => Some(*at),
                    Refresh::AwaitingReply { deadline, .. } => Some(*deadline),
                    Refresh::Never | Refresh::Fetching { .. } => None,
                };
                Some(refresh.map_or(live.next_ping, |r| r.min(live.next_ping)))
            }
        }
    }

    pub(super) fn presence_timeout(&mut self, now: Millis) {
        match &self.presence.phase {
            Phase::Waiting { until } if *until <= now => self.start_attempt(now),
            Phase::Connecting { deadline, .. } if *deadline <= now => {
                // Code 1000 to the server; reported to the app as a lost connection.
                if let Some(socket) = self.presence_socket() {
                    self.close_socket(socket, CloseCode::Normal.code(), "connect timeout");
                }
                self.presence_lost(now, None, "no welcome within the request timeout");
            }
            Phase::Live(_) => {
                self.heartbeat_tick(now);
                self.refresh_tick(now);
            }
            _ => {}
        }
    }

    fn heartbeat_tick(&mut self, now: Millis) {
        let interval = self.config.heartbeat_interval_ms;
        let Phase::Live(live) = &mut self.presence.phase else {
            return;
        };
        if live.next_ping > now {
            return;
        }
        if live.unanswered_ping.is_some() {
            let reason = "no pong before the next ping was due";
            return self.drop_dead_socket(now, CloseCode::HeartbeatTimeout, reason);
        }
        self.presence.next_ping += 1;
        let id = self.presence.next_ping;
        live.unanswered_ping = Some(id);
        live.next_ping = now.plus(interval);
        self.send_presence(&ClientMessage::Ping { id });
    }

    // ── token refresh ──────────────────────────────────────────────────

    fn refresh_tick(&mut self, now: Millis) {
        let Phase::Live(live) = &self.presence.phase else {
            return;
        };
        match live.refresh {
            Refresh::Scheduled { at } if at <= now => {
                let request = self.fetch_token(now, TokenPurpose::Refresh);
                self.set_refresh(Refresh::Fetching { request });
            }
            Refresh::AwaitingReply { deadline, .. } if deadline <= now => {
                self.refresh_failed(now, ErrorCode::Timeout, "no tokenRefreshed in time", None);
            }
            _ => {}
        }
    }

    fn set_refresh(&mut self, refresh: Refresh) {
        if let Phase::Live(live) = &mut self.presence.phase {
            live.refresh = refresh;
        }
    }

    pub(super) fn refresh_token(
        &mut self,
        now: Millis,
        id: TokenRequestId,
        result: Result<CachedToken, String>,
    ) {
        let Phase::Live(live) = &self.presence.phase else {
            return;
        };
        if !matches!(live.refresh, Refresh::Fetching { request } if request == id) {
            return;
        }
        match result {
            Ok(token) => {
                let request_id = self.new_request_id("refresh-");
                let msg = ClientMessage::RefreshToken {
                    token: token.token,
                    request_id: Some(request_id.clone()),
                };
                self.send_presence(&msg);
                self.set_refresh(Refresh::AwaitingReply {
                    request_id,
                    expires: token.expires,
                    deadline: now.plus(self.config.request_timeout_ms),
                });
            }
            Err(cause) => {
                let message = "getToken failed while refreshing the session token";
                self.refresh_failed(now, ErrorCode::TokenFetchFailed, message, Some(cause));
            }
        }
    }

    fn on_token_refreshed(&mut self, now: Millis, rid: Option<String>) {
        let Phase::Live(live) = &mut self.presence.phase else {
            return;
        };
        let Refresh::AwaitingReply {
            request_id,
            expires,
            ..
        } = &live.refresh
        else {
            return;
        };
        if rid.is_some_and(|r| &r != request_id) {
            return;
        }
        live.refresh = refresh_schedule(now, *expires);
        live.refresh_attempt = 0;
        self.log(LogLevel::Info, "session token refreshed");
    }

    /// Reports the failure and retries on the backoff schedule.
    fn refresh_failed(
        &mut self,
        now: Millis,
        code: ErrorCode,
        message: &str,
        cause: Option<String>,
    ) {
        let Phase::Live(live) = &mut self.presence.phase else {
            return;
        };
        let attempt = live.refresh_attempt;
        live.refresh_attempt += 1;
        let at = now.plus(self.backoff_delay(attempt));
        self.set_refresh(Refresh::Scheduled { at });
        self.emit_error(code, message, cause);
    }

    fn refresh_request_is(&self, rid: &str) -> bool {
        matches!(&self.presence.phase, Phase::Live(Live {
            refresh: Refresh::AwaitingReply { request_id, .. }, ..
        }) if request_id == rid)
    }

    // ── server messages ────────────────────────────────────────────────

    pub(super) fn presence_text(&mut self, now: Millis, text: &str) {
        let msg = match decode_presence(text) {
            Ok(msg) => msg,
            Err(err) => return self.log_undecodable("presence", &err),
        };
        if !self.presence_live()
            && !matches!(
                msg,
                ServerMessage::Welcome { .. } | ServerMessage::Error { .. }
            )
        {
            return self.log(LogLevel::Warn, "presence message before welcome ignored");
        }
        match msg {
            ServerMessage::Welcome { active_call, .. } => self.on_welcome(now, active_call),
            ServerMessage::Availability {
                accepted,
                rejected,
                request_id,
            } => self.on_availability(accepted, rejected, request_id),
            ServerMessage::Pong { id } => self.on_pong(id),
            ServerMessage::TokenRefreshed { request_id, .. } => {
                self.on_token_refreshed(now, request_id)
            }
            ServerMessage::CallOffer {
                call_sid, from, to, ..
            } => self.on_call_offer(now, call_sid, from, to),
            ServerMessage::CallAccepted { call_sid, attach } => {
                self.on_call_accepted(now, &call_sid, attach)
            }
            ServerMessage::DialAccepted {
                request_id,
                call_sid,
                from,
                to,
                attach,
            } => self.on_dial_accepted(now, &request_id, call_sid, from, to, attach),
            ServerMessage::CallEnded { call_sid, reason } => {
                self.on_call_ended(now, &call_sid, reason)
            }
            ServerMessage::Error {
                code,
                message,
                request_id,
                call_sid,
            } => self.on_presence_error(now, code, message, request_id, call_sid),
        }
    }

    pub(super) fn log_undecodable(&mut self, socket: &str, err: &WireError) {
        let level = match err {
            WireError::UnknownType(_) => LogLevel::Debug,
            WireError::Invalid(_) => LogLevel::Warn,
        };
        self.log(level, cat(&[socket, " message ignored: ", &err.describe()]));
    }

    fn on_pong(&mut self, id: u64) {
        if let Phase::Live(live) = &mut self.presence.phase {
            if live.unanswered_ping == Some(id) {
                live.unanswered_ping = None;
            }
        }
    }

    fn on_presence_error(
        &mut self,
        now: Millis,
        code: ErrorCode,
        message: String,
        request_id: Option<String>,
        call_sid: Option<String>,
    ) {
        if let Some(rid) = request_id.as_deref() {
            if self.dial_request_is(rid) {
                return self.fail_dial(code, &message);
            }
            if self.refresh_request_is(rid) {
                return self.refresh_failed(now, code, &message, None);
            }
            if self.fail_go_online_request(rid, code, &message) {
                return;
            }
        }
        if let Some(sid) = call_sid.as_deref() {
            if self.call_error(now, sid, code, &message) {
                return;
            }
        }
        self.emit_error(code, message, None);
    }

    /// Fails the `go_online` ops waiting for `rid`; true if there were any.
    fn fail_go_online_request(&mut self, rid: &str, code: ErrorCode, message: &str) -> bool {
        let (failed, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.presence.go_online_ops)
            .into_iter()
            .partition(|p| p.request_id.as_deref() == Some(rid));
        self.presence.go_online_ops = waiting;
        let any = !failed.is_empty();
        for pending in failed {
            self.complete(pending.op, Err(OperatorError::new(code, message)));
        }
        any
    }
}

/// When to refresh a token expiring at `expires` (None: never).
fn refresh_schedule(now: Millis, expires: Option<Millis>) -> Refresh {
    match expires {
        Some(expires) => Refresh::Scheduled {
            at: now.plus(refresh_delay_ms(expires.since(now))),
        },
        None => Refresh::Never,
    }
}

//! The operator state machine. Split by concern: [`presence`] (connection,
//! heartbeat, reconnect, token refresh, availability), [`call`] (the call and
//! its audio leg), [`http`] (`listPhoneNumbers`). This file holds the shared
//! plumbing and the public API, which only dispatches.

mod call;
mod http;
mod presence;

use super::config::{Config, ConfigError, Urls};
use super::json::cat;
use super::time::token_expiry_ms;
use super::types::*;
use audin_protocol::{ErrorCode, HangupReason};
use std::collections::VecDeque;

/// The operator client's state machine. See the [module docs](crate::core).
#[derive(Debug)]
pub struct Operator {
    config: Config,
    urls: Urls,
    out: VecDeque<Output>,
    next_id: u32,
    /// `getToken` calls in flight and what each is for.
    tokens: Pending<TokenRequestId, TokenFetch>,
    /// The most recent token, reused for HTTP requests while it is fresh.
    last_token: Option<CachedToken>,
    presence: presence::Presence,
    call: Option<call::Call>,
    /// A hangup that neither socket could carry (the call's audio socket
    /// was reattaching and presence reconnecting): sent once presence is
    /// back if the service still holds that call for us.
    undelivered_hangup: Option<(String, HangupReason)>,
    dial: Option<call::PendingDial>,
    http: Pending<RequestId, http::HttpFetch>,
}

/// The earlier of two optional deadlines (`None`: no deadline).
fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => a.or(b),
    }
}

/// A few in-flight requests keyed by id. A `Vec` costs far less wasm than
/// a `BTreeMap`, and there are never more than a handful.
#[derive(Debug)]
struct Pending<K, V>(Vec<(K, V)>);

impl<K, V> Default for Pending<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: PartialEq + Copy, V> Pending<K, V> {
    fn insert(&mut self, key: K, value: V) {
        self.0.push((key, value));
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let index = self.0.iter().position(|(k, _)| k == key)?;
        // `Vec::remove` without its formatting panic path: bubble the entry
        // to the end (order of the others kept) and pop it. Swaps, not
        // `rotate_left`: its generic algorithm costs ~0.7 KB of wasm per
        // type, for lists that never hold more than a handful.
        for i in index + 1..self.0.len() {
            self.0.swap(i - 1, i);
        }
        self.0.pop().map(|(_, v)| v)
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    fn keys_where(&self, pick: impl Fn(&V) -> bool) -> Vec<K> {
        self.0
            .iter()
            .filter(|(_, v)| pick(v))
            .map(|(k, _)| *k)
            .collect()
    }
}

/// Why a `getToken` call was made; a late answer whose purpose is gone is
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenPurpose {
    Presence,
    Refresh,
    Audio { call_sid: String },
    Http { op: OpId, retried: bool },
}

#[derive(Debug)]
struct TokenFetch {
    purpose: TokenPurpose,
    deadline: Millis,
}

/// A token the core obtained, with its expiry on the monotonic clock.
#[derive(Clone)]
struct CachedToken {
    token: String,
    expires: Option<Millis>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CachedToken(<redacted>, expires {:?})", self.expires)
    }
}

impl Operator {
    /// Validates `config` (`INVALID_CONFIG` on a bad value) and builds an
    /// offline operator.
    pub fn new(config: Config) -> Result<Operator, ConfigError> {
        let urls = super::config::validate(&config)?;
        Ok(Operator {
            config,
            urls,
            out: VecDeque::new(),
            next_id: 0,
            tokens: Pending::default(),
            last_token: None,
            presence: presence::Presence::default(),
            call: None,
            undelivered_hangup: None,
            dial: None,
            http: Pending::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The presence state.
    pub fn state(&self) -> PresenceState {
        self.presence.state
    }

    /// The current (not yet ended) call, if any. After `CallEnded` it is
    /// `None`.
    pub fn current_call(&self) -> Option<&CallInfo> {
        self.call.as_ref().map(|c| &c.info)
    }

    /// Connects presence (if needed) and announces `phone_number_ids`.
    /// Completes with [`OpValue::Availability`] when the server answers;
    /// while (re)connecting it stays pending. Fails only with `CANCELLED`
    /// (`go_offline`), `REPLACED`, or a server `error` reply to the request.
    /// Call again to change the set.
    pub fn go_online(&mut self, now: Millis, phone_number_ids: Vec<String>) -> OpId {
        let op = OpId(self.new_id());
        self.presence_go_online(now, op, phone_number_ids);
        op
    }

    /// Ends a call with `offline`, closes presence with 1000, stops
    /// reconnecting, fails pending `go_online`/`dial` with `CANCELLED`.
    /// Completes at once with [`OpValue::None`]. A `list_phone_numbers` in
    /// flight is not affected (it does not need presence).
    pub fn go_offline(&mut self, now: Millis) -> OpId {
        let op = OpId(self.new_id());
        self.end_call_for_offline(now);
        self.fail_dial(ErrorCode::Cancelled, "goOffline() was called");
        self.presence_go_offline(now);
        self.complete(op, Ok(OpValue::None));
        op
    }

    /// Places an outbound call. Fails at once with `INVALID_NUMBER`,
    /// `OPERATOR_BUSY` or `NOT_ONLINE`; otherwise completes with
    /// [`OpValue::Call`] on `dialAccepted`, or fails with the server's code,
    /// `TIMEOUT`, `CONNECTION_LOST`, `REPLACED` or `CANCELLED`.
    pub fn dial(&mut self, now: Millis, to: &str, caller_id: &str) -> Result<OpId, OperatorError> {
        self.call_dial(now, to, caller_id)
    }

    /// `GET {coreUrl}/v1/phone-numbers` with a session token. Completes with
    /// [`OpValue::PhoneNumbers`], or `UNAUTHORIZED` (a 401 after one retry
    /// with a fresh token) / `REQUEST_FAILED`.
    pub fn list_phone_numbers(&mut self, now: Millis) -> OpId {
        let op = OpId(self.new_id());
        self.http_list_phone_numbers(now, op);
        op
    }

    /// Answers the ringing call `call_sid` (no-op unless it is ringing).
    pub fn accept(&mut self, now: Millis, call_sid: &str) {
        self.call_accept(now, call_sid);
    }

    /// Declines the ringing call `call_sid`; it ends `rejected` at once
    /// (no-op unless it is ringing).
    pub fn reject(&mut self, now: Millis, call_sid: &str) {
        self.call_reject(now, call_sid);
    }

    /// Mutes or unmutes the call (the driver sends silence while muted).
    pub fn mute(&mut self, now: Millis, call_sid: &str, muted: bool) {
        self.call_mute(now, call_sid, muted);
    }

    /// Sends one DTMF digit on the call's audio socket. `INVALID_DTMF` for
    /// anything but one of `0-9 * #`; `CALL_NOT_FOUND` when `call_sid` is not
    /// the current call or its audio is not attached.
    pub fn send_dtmf(
        &mut self,
        now: Millis,
        call_sid: &str,
        digit: &str,
    ) -> Result<(), OperatorError> {
        self.call_send_dtmf(now, call_sid, digit)
    }

    /// Hangs the call up; it ends `hangup` at once (a ringing offer is
    /// rejected instead and ends `rejected`).
    pub fn hangup(&mut self, now: Millis, call_sid: &str) {
        self.call_hangup(now, call_sid);
    }

    /// The outcome of a [`Output::FetchToken`]. `wall_clock_unix_ms` is the
    /// wall clock now; it only turns the token's expiry into a delay. An
    /// empty token counts as a failure.
    pub fn handle_token(
        &mut self,
        now: Millis,
        wall_clock_unix_ms: u64,
        id: TokenRequestId,
        result: Result<TokenGrant, String>,
    ) {
        let Some(fetch) = self.tokens.remove(&id) else {
            return self.log(LogLevel::Debug, "late getToken answer ignored");
        };
        let result = result.and_then(|grant| {
            if grant.token.trim().is_empty() {
                return Err("getToken returned no token".to_string());
            }
            let expires = token_expiry_ms(&grant.token, grant.expires_at.as_deref())
                .map(|exp| now.plus(exp.saturating_sub(wall_clock_unix_ms)));
            Ok(CachedToken {
                token: grant.token,
                expires,
            })
        });
        if let Ok(token) = &result {
            self.last_token = Some(token.clone());
        }
        self.route_token(now, id, fetch.purpose, result);
    }

    /// A socket of [`Output::OpenSocket`] is open.
    pub fn handle_socket_open(&mut self, now: Millis, socket: SocketId) {
        if self.presence_owns(socket) {
            self.presence_socket_open(now, socket);
        } else if self.call_owns(socket) {
            self.audio_socket_open(now, socket);
        }
    }

    /// A text message arrived on a socket.
    pub fn handle_socket_text(&mut self, now: Millis, socket: SocketId, text: &str) {
        if self.presence_owns(socket) {
            self.presence_text(now, text);
        } else if self.call_owns(socket) {
            self.audio_text(now, text);
        }
    }

    /// A socket closed (or failed: `code` None) without the core asking.
    /// Reports about sockets the core closed itself are ignored.
    pub fn handle_socket_closed(
        &mut self,
        now: Millis,
        socket: SocketId,
        code: Option<u16>,
        reason: &str,
    ) {
        if self.presence_owns(socket) {
            self.presence_lost(now, code, reason);
        } else if self.call_owns(socket) {
            self.audio_lost(now, code, reason);
        }
    }

    /// A binary audio frame arrived on `socket`. Drivers call this for
    /// received frames (every frame, or at least every 250 ms while frames
    /// arrive): an active call whose audio socket stays silent for
    /// `audio_silence_ms` is reattached. The frame itself stays with the
    /// driver: audio never passes through the core.
    pub fn handle_audio_received(&mut self, now: Millis, socket: SocketId) {
        self.audio_received(now, socket);
    }

    /// The answer to an [`Output::HttpRequest`].
    pub fn handle_http_response(&mut self, now: Millis, id: RequestId, status: u16, body: &str) {
        self.http_response(now, id, status, body);
    }

    /// An [`Output::HttpRequest`] failed without an answer.
    pub fn handle_http_error(&mut self, now: Millis, id: RequestId, message: &str) {
        self.http_failed(now, id, message);
    }

    /// The driver could not run the call's media (microphone denied:
    /// `MEDIA_ACCESS_DENIED`; audio graph broken: `AUDIO_FAILED`). The call
    /// is hung up and ends `failed` with an `error` event.
    pub fn handle_media_failed(
        &mut self,
        now: Millis,
        call_sid: &str,
        code: ErrorCode,
        message: &str,
    ) {
        self.call_media_failed(now, call_sid, code, message);
    }

    /// The time of [`Operator::poll_timeout`] was reached (calling it early
    /// or late is harmless).
    pub fn handle_timeout(&mut self, now: Millis) {
        for id in self.tokens.keys_where(|f| f.deadline <= now) {
            if let Some(fetch) = self.tokens.remove(&id) {
                let err = Err("getToken timed out".to_string());
                self.route_token(now, id, fetch.purpose, err);
            }
        }
        self.presence_timeout(now);
        self.call_timeout(now);
        self.http_timeout(now);
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Operator::handle_timeout`] must be called next (None: no timer).
    pub fn poll_timeout(&self) -> Option<Millis> {
        // Plain loops, not a chain of four iterators and `min`: 0.3 KB
        // less of the compressed wasm.
        let mut next = earliest(self.presence_deadline(), self.call_deadline());
        for f in self.tokens.values() {
            next = earliest(next, Some(f.deadline));
        }
        for f in self.http.values() {
            next = earliest(next, Some(f.deadline));
        }
        next
    }

    // ── shared plumbing ────────────────────────────────────────────────

    fn new_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn push(&mut self, output: Output) {
        self.out.push_back(output);
    }

    fn emit(&mut self, event: Event) {
        self.push(Output::Event { event });
    }

    fn emit_error(&mut self, code: ErrorCode, message: impl Into<String>, cause: Option<String>) {
        self.emit_error_string(code, message.into(), cause);
    }

    /// [`Operator::emit_error`] without its generic parameter, so its
    /// body exists once in the wasm build.
    fn emit_error_string(&mut self, code: ErrorCode, message: String, cause: Option<String>) {
        self.log(LogLevel::Warn, cat(&[code.as_str(), ": ", &message]));
        self.emit(Event::Error {
            code,
            message,
            cause,
        });
    }

    fn log(&mut self, level: LogLevel, message: impl Into<String>) {
        self.log_string(level, message.into());
    }

    /// [`Operator::log`] without its generic parameter (its body once in
    /// the wasm build).
    fn log_string(&mut self, level: LogLevel, message: String) {
        self.push(Output::Log { level, message });
    }

    fn complete(&mut self, op: OpId, result: Result<OpValue, OperatorError>) {
        self.push(Output::Completed { op, result });
    }

    fn fetch_token(&mut self, now: Millis, purpose: TokenPurpose) -> TokenRequestId {
        let id = TokenRequestId(self.new_id());
        let deadline = now.plus(self.config.token_timeout_ms);
        self.tokens.insert(id, TokenFetch { purpose, deadline });
        self.push(Output::FetchToken { id });
        id
    }

    fn open_socket(&mut self, kind: SocketKind) -> SocketId {
        let id = SocketId(self.new_id());
        let url = match kind {
            SocketKind::Presence => self.urls.presence.clone(),
            SocketKind::Audio { .. } => self.steered_audio_url(),
        };
        self.push(Output::OpenSocket { id, url, kind });
        id
    }

    /// The call's first audio socket goes to `audioUrl` (the node that
    /// owns the call) if it is as secure as `coreUrl`: never from wss to
    /// ws. Every other one, to ours.
    fn steered_audio_url(&mut self) -> String {
        let secure = |url: &str| url.starts_with("wss:");
        let ours = &self.urls.audio;
        let hint = self.call.as_mut().and_then(|c| c.hint.audio_url.take());
        hint.and_then(|url| Urls::from_core_url(&url).ok())
            .map(|urls| urls.audio)
            .filter(|url| secure(url) == secure(ours))
            .unwrap_or_else(|| ours.clone())
    }

    fn send_text(&mut self, socket: SocketId, text: String) {
        self.push(Output::SendText { socket, text });
    }

    fn close_socket(&mut self, socket: SocketId, code: u16, reason: &str) {
        self.push(Output::CloseSocket {
            socket,
            code,
            reason: reason.to_string(),
        });
    }

    fn route_token(
        &mut self,
        now: Millis,
        id: TokenRequestId,
        purpose: TokenPurpose,
        result: Result<CachedToken, String>,
    ) {
        match purpose {
            TokenPurpose::Presence => self.presence_token(now, id, result),
            TokenPurpose::Refresh => self.refresh_token(now, id, result),
            TokenPurpose::Audio { call_sid } => self.audio_token(now, id, &call_sid, result),
            TokenPurpose::Http { op, retried } => self.http_token(now, op, retried, result),
        }
    }

    /// The `i`-th delay of the presence backoff schedule (the last repeats).
    fn backoff_delay(&self, attempt: usize) -> u64 {
        let schedule = &self.config.reconnect_backoff_ms;
        // Never empty (validated); `get` keeps a formatting panic path out of
        // the wasm build.
        let delay = schedule.get(attempt).or(schedule.last());
        delay
            .copied()
            .unwrap_or(audin_protocol::DEFAULT_RECONNECT_BACKOFF_MS[0])
    }
}

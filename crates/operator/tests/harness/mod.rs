//! A simulated I/O side for the sans-IO core: records outputs, feeds inputs
//! and moves simulated time to `poll_timeout` step by step (no sleeps).
#![allow(dead_code, unreachable_pub)]

use audin_operator::core::*;
use serde_json::{Value, json};

/// Wall clock at simulated `now == 0`: 2026-11-23T19:00:00Z.
pub const WALL0: u64 = 1_795_460_400_000;

pub struct Sim {
    pub op: Operator,
    pub now: Millis,
    /// Outputs not yet looked at by the test.
    pub outbox: Vec<Output>,
    /// Every output ever produced, in order.
    pub history: Vec<(Millis, Output)>,
}

impl Sim {
    pub fn new() -> Sim {
        Sim::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut Config)) -> Sim {
        let mut config = Config::new("https://core.test");
        tweak(&mut config);
        Sim {
            op: Operator::new(config).expect("valid config"),
            now: Millis(0),
            outbox: Vec::new(),
            history: Vec::new(),
        }
    }

    /// `path` on the configured service, as a socket URL
    /// (`wss://core.test…` by default).
    pub fn socket_url(&self, path: &str) -> String {
        let core = &self.op.config().core_url;
        let (scheme, host) = core.split_once("://").expect("a scheme");
        let ws = if scheme == "https" { "wss" } else { "ws" };
        format!("{ws}://{host}{path}")
    }

    pub fn wall(&self) -> u64 {
        WALL0 + self.now.0
    }

    /// Moves every pending output into the outbox.
    pub fn drain(&mut self) {
        while let Some(out) = self.op.poll_output() {
            self.history.push((self.now, out.clone()));
            // Every output must serialise (the wasm binding sends JSON).
            let json = out.to_json();
            assert!(json.contains("\"type\""), "{json}");
            self.outbox.push(out);
        }
    }

    /// Advances simulated time to `t`, firing every timer on the way.
    pub fn advance_to(&mut self, t: u64) {
        let t = Millis(t);
        while let Some(due) = self.op.poll_timeout() {
            if due > t {
                break;
            }
            self.now = due.max(self.now);
            self.op.handle_timeout(self.now);
            self.drain();
        }
        self.now = t.max(self.now);
    }

    pub fn advance(&mut self, ms: u64) {
        self.advance_to(self.now.0 + ms);
    }

    /// Advances `ms` while the service relays a frame every 20 ms on `audio`.
    pub fn advance_with_audio(&mut self, ms: u64, audio: SocketId) {
        let end = self.now.0 + ms;
        while self.now.0 < end {
            self.advance(20.min(end - self.now.0));
            self.op.handle_audio_received(self.now, audio);
            self.drain();
        }
    }

    /// Jumps to the next timer and fires it; returns its time.
    pub fn fire_next_timer(&mut self) -> u64 {
        let due = self.op.poll_timeout().expect("a timer is armed");
        self.advance_to(due.0);
        due.0
    }

    // ── looking at outputs ─────────────────────────────────────────────

    fn take_first<T>(&mut self, mut pick: impl FnMut(&Output) -> Option<T>) -> Option<T> {
        let index = self.outbox.iter().position(|o| pick(o).is_some())?;
        let out = self.outbox.remove(index);
        pick(&out)
    }

    pub fn take_token_request(&mut self) -> TokenRequestId {
        self.drain();
        self.take_first(|o| match o {
            Output::FetchToken { id } => Some(*id),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no FetchToken in {:?}", self.outbox))
    }

    pub fn has_token_request(&mut self) -> bool {
        self.drain();
        self.outbox
            .iter()
            .any(|o| matches!(o, Output::FetchToken { .. }))
    }

    pub fn take_open(&mut self) -> (SocketId, String, SocketKind) {
        self.drain();
        self.take_first(|o| match o {
            Output::OpenSocket { id, url, kind } => Some((*id, url.clone(), kind.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no OpenSocket in {:?}", self.outbox))
    }

    /// Takes every message sent on `socket`, parsed.
    pub fn sent(&mut self, socket: SocketId) -> Vec<Value> {
        self.drain();
        let mut found = Vec::new();
        self.outbox.retain(|o| match o {
            Output::SendText { socket: s, text } if *s == socket => {
                found.push(serde_json::from_str(text).unwrap());
                false
            }
            _ => true,
        });
        found
    }

    /// Takes the one message of type `ty` sent on `socket`.
    pub fn sent_one(&mut self, socket: SocketId, ty: &str) -> Value {
        let msgs = self.sent(socket);
        let matching: Vec<_> = msgs.iter().filter(|m| m["type"] == ty).cloned().collect();
        assert_eq!(
            matching.len(),
            1,
            "expected one {ty} on {socket:?}, sent: {msgs:?}"
        );
        matching[0].clone()
    }

    pub fn events(&mut self) -> Vec<Event> {
        self.drain();
        let mut found = Vec::new();
        self.outbox.retain(|o| match o {
            Output::Event { event } => {
                found.push(event.clone());
                false
            }
            _ => true,
        });
        found
    }

    pub fn error_codes(&mut self) -> Vec<ErrorCode> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Error { code, .. } => Some(code),
                _ => None,
            })
            .collect()
    }

    pub fn completed(&mut self, op: OpId) -> Option<Result<OpValue, OperatorError>> {
        self.drain();
        self.take_first(|o| match o {
            Output::Completed { op: done, result } if *done == op => Some(result.clone()),
            _ => None,
        })
    }

    pub fn closes(&mut self) -> Vec<(SocketId, u16)> {
        self.drain();
        let mut found = Vec::new();
        self.outbox.retain(|o| match o {
            Output::CloseSocket { socket, code, .. } => {
                found.push((*socket, *code));
                false
            }
            _ => true,
        });
        found
    }

    pub fn media(&mut self) -> Vec<Output> {
        self.drain();
        let mut found = Vec::new();
        self.outbox.retain(|o| match o {
            Output::StartMedia { .. } | Output::StopMedia { .. } | Output::SetMuted { .. } => {
                found.push(o.clone());
                false
            }
            _ => true,
        });
        found
    }

    /// Times (ms) at which `FetchToken` was output.
    pub fn token_request_times(&self) -> Vec<u64> {
        self.history
            .iter()
            .filter(|(_, o)| matches!(o, Output::FetchToken { .. }))
            .map(|(t, _)| t.0)
            .collect()
    }

    // ── feeding inputs ─────────────────────────────────────────────────

    pub fn give_token(&mut self, id: TokenRequestId, token: &str, expires_at: Option<&str>) {
        let grant = TokenGrant {
            token: token.to_string(),
            expires_at: expires_at.map(str::to_string),
        };
        self.op.handle_token(self.now, self.wall(), id, Ok(grant));
        self.drain();
    }

    pub fn fail_token(&mut self, id: TokenRequestId) {
        self.op
            .handle_token(self.now, self.wall(), id, Err("backend down".into()));
        self.drain();
    }

    pub fn open(&mut self, socket: SocketId) {
        self.op.handle_socket_open(self.now, socket);
        self.drain();
    }

    pub fn server(&mut self, socket: SocketId, msg: Value) {
        self.op
            .handle_socket_text(self.now, socket, &msg.to_string());
        self.drain();
    }

    pub fn close(&mut self, socket: SocketId, code: Option<u16>) {
        self.op
            .handle_socket_closed(self.now, socket, code, "test close");
        self.drain();
    }

    // ── scripted flows ─────────────────────────────────────────────────

    /// Answers the pending presence token request and handshake; returns the
    /// presence socket (after `welcome`, before `availability`).
    pub fn connect_presence(&mut self, active_call: Value) -> SocketId {
        let id = self.take_token_request();
        self.give_token(id, "tok-presence", Some(&expires_in(self.wall(), 3_600)));
        let (socket, url, kind) = self.take_open();
        assert_eq!(kind, SocketKind::Presence);
        assert_eq!(url, self.socket_url("/v1/operator/presence"));
        self.open(socket);
        let hello = self.sent_one(socket, "hello");
        assert_eq!(hello["token"], "tok-presence");
        self.server(socket, welcome(active_call));
        socket
    }

    /// Answers the newest `goOnline` on `socket` with every number accepted.
    pub fn answer_go_online(&mut self, socket: SocketId) {
        let msg = self.sent_one(socket, "goOnline");
        self.server(
            socket,
            json!({"type":"availability","accepted":msg["phoneNumberIds"],"rejected":[],
                   "requestId":msg["requestId"]}),
        );
    }

    /// go_online(["pn_1"]) through to `availability`; returns the presence socket.
    pub fn online(&mut self) -> SocketId {
        let op = self.op.go_online(self.now, vec!["pn_1".into()]);
        let socket = self.connect_presence(Value::Null);
        self.answer_go_online(socket);
        assert!(matches!(
            self.completed(op),
            Some(Ok(OpValue::Availability { .. }))
        ));
        assert_eq!(self.op.state(), PresenceState::Online);
        self.events();
        self.outbox.clear();
        socket
    }

    /// Rings an inbound call on `presence`.
    pub fn offer(&mut self, presence: SocketId, sid: &str) {
        self.server(
            presence,
            json!({"type":"callOffer","callSid":sid,"from":"+14155550100",
                   "to":"+390299999999","phoneNumberId":"pn_1"}),
        );
    }

    /// Serves the audio leg's token, socket and `attached`; returns the socket.
    pub fn attach_audio(&mut self, sid: &str, answered: bool, resumed: bool) -> SocketId {
        let id = self.take_token_request();
        self.give_token(id, "tok-audio", None);
        let (socket, url, kind) = self.take_open();
        assert_eq!(url, self.socket_url("/v1/operator/audio"));
        assert_eq!(
            kind,
            SocketKind::Audio {
                call_sid: sid.into()
            }
        );
        self.open(socket);
        let attach = self.sent_one(socket, "attach");
        assert_eq!(attach["callSid"], sid);
        assert_eq!(attach["token"], "tok-audio");
        self.server(
            socket,
            json!({"type":"attached","callSid":sid,"answered":answered,"resumed":resumed}),
        );
        socket
    }

    /// After an audio loss: waits for the first reattach attempt and attaches.
    pub fn attach_audio_after_retry(&mut self, sid: &str) -> SocketId {
        self.fire_next_timer();
        self.attach_audio(sid, true, true)
    }

    /// An answered inbound call, audio attached; returns (presence, audio).
    pub fn active_inbound(&mut self, sid: &str) -> (SocketId, SocketId) {
        let presence = self.online();
        self.offer(presence, sid);
        self.op.accept(self.now, sid);
        self.server(presence, json!({"type":"callAccepted","callSid":sid}));
        let audio = self.attach_audio(sid, true, false);
        self.events();
        self.outbox.clear();
        (presence, audio)
    }
}

pub fn welcome(active_call: Value) -> Value {
    json!({"type":"welcome","sessionId":"ps_1","operatorRef":"op-1",
           "expiresAt":"2026-11-23T20:00:00Z","silenceTimeoutMs":62500,"activeCall":active_call})
}

/// RFC 3339 for `wall + secs` (UTC, whole seconds).
pub fn expires_in(wall_ms: u64, secs: u64) -> String {
    rfc3339(wall_ms / 1000 + secs)
}

pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// An unsigned JWT-shaped token whose payload is `{"exp": exp_secs}`.
pub fn jwt_with_exp(exp_secs: u64) -> String {
    let payload = format!("{{\"sub\":\"op-1\",\"exp\":{exp_secs}}}");
    format!(
        "eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
        base64url(payload.as_bytes())
    )
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

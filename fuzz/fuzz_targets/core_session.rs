//! Fuzz target `core_session`: scripts of inputs and time through the client
//! core's state machine (`audin_operator::core::Operator`), driven the way
//! the wasm bindings and the tokio driver drive it: after every input the
//! outputs are drained and performed, one timer is kept for `poll_timeout`
//! and `handle_timeout` is called when it is due.
//!
//! An input is a script, one step per line (unknown lines are skipped;
//! `SID` defaults to `$SID`):
//!
//! | line | step |
//! | --- | --- |
//! | `config JSON` | (first line only) `Config::from_json`; a config that is refused, or has a time under 20 ms, falls back to the defaults |
//! | `online [ID…]` / `offline` | `go_online` (default `pn_1`) / `go_offline` |
//! | `dial [TO [FROM]]` | `dial` (default `+15550100001` from `+390288888888`) |
//! | `accept` `reject` `hangup` `mediafail` `[SID]` | `accept` / `reject` / `hangup` / `handle_media_failed` |
//! | `mute 0\|1 [SID]`, `dtmf D [SID]` | `mute`, `send_dtmf` |
//! | `list` | `list_phone_numbers` |
//! | `token ok\|exp S\|jwt S\|at TEXT\|empty\|blank\|err` | answers the oldest `getToken` (`token+`: the newest; none pending: a stale id): an opaque token, one expiring in S seconds (`expiresAt` / JWT `exp`; S may be negative), an `expiresAt` of TEXT, an empty or blank token, a failure |
//! | `open p\|a` | the newest presence / audio socket reports open |
//! | `close p\|a [CODE\|- [REASON]]` | it closes with CODE (default 1006; `-`: failed, no code) |
//! | `p TEXT` / `a TEXT` | raw text on the newest presence / audio socket (opened first if it is still opening) |
//! | `welcome [SID\|- [0\|1]]`, `avail [RID]`, `pong [ID]`, `refreshed [RID]`, `offer [SID]`, `accepted [SID]`, `dialok [SID [RID]]`, `ended [SID [REASON]]`, `error CODE [RID\|- [SID]]` | well-formed presence messages (`welcome SID 1`: `activeCall` answered) |
//! | `attached [SID [0\|1 [0\|1]]]`, `answered [SID]`, `aended [SID [REASON]]`, `aerror CODE` | well-formed audio messages (`answered`, `resumed`) |
//! | `frame` | `handle_audio_received` on the newest audio socket |
//! | `http [STATUS [BODY]]` / `httperr` | answers the oldest HTTP request (default 200 with one number) / fails it |
//! | `t MS` | time moves on MS ms (≤ 600000); each timer fires at its deadline |
//! | `late MS` | time jumps MS ms without firing (a throttled background tab); the next step comes first, then the late timers fire |
//! | `r N` | the previous step again, N times |
//!
//! Placeholders in texts and arguments: `$SID` the current call (else the
//! last sid the script offered or dial-accepted), `$DIAL` / `$ONLINE` /
//! `$REFRESH` the request id of the core's latest `dial` / `goOnline` /
//! `refreshToken`, `$PING` its latest ping id.
//!
//! `AUDIN_FUZZ_TRACE=1` prints every step and output.
//!
//! Invariants checked (any violation aborts the run):
//! - no panic;
//! - calls: at most one live call at a time (a call starts with
//!   `incomingCall` or a `dial` completing with the call); every call ends
//!   exactly once with one `callEnded` (none for a call never started, none
//!   twice) in state `ended` with a reason; call events, `startMedia`,
//!   `setMuted`, `stopMedia` and audio sockets name the live call;
//!   `callStarted` at most once per call; `current_call()` is the live call,
//!   with the state and mute flag of the last snapshot an event or
//!   completion gave (the SDK's call objects are built from those);
//! - time: after `handle_timeout(now)`, `poll_timeout()` is `None` or later
//!   than `now` (otherwise a driver, which arms its timer for that deadline,
//!   would spin); an input at `now` never arms a timer before `now` (the
//!   core's contract: "calling `handle_timeout` early or late is harmless",
//!   so the check allows a deadline a late timer already left behind);
//! - sockets: text is sent only on a socket that is open and not closed
//!   (the browser would drop it); its first text is `hello` / `attach` (for
//!   its own call), sent once, and nothing else before `welcome` / media
//!   started on it; every text decodes with the protocol crate's client
//!   decoder of its socket; `closeSocket` names a socket the core opened,
//!   with a code and reason `WebSocket.close()` accepts (1000 or
//!   3000–4999, reason ≤ 123 bytes); ids are never reused;
//! - operations: each `OpId` completes exactly once, with the value of its
//!   kind; `presenceStateChanged` only on a change, and the last one is
//!   `state()`;
//! - secrets: no token reaches a `log` output, an `error` event or an
//!   operation error;
//! - teardown: after `go_offline`, no call is live, the state is
//!   `offline`, every `goOnline` and `dial` has completed; firing the
//!   remaining timers opens nothing, sends nothing, fetches nothing, and
//!   ends with no timer and every operation completed.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use audin_operator::core::{
    CallInfo, CallState, Config, Event, Millis, OpValue, Operator, Output, PresenceState,
    RequestId, SocketId, SocketKind, TokenGrant, TokenRequestId,
};
use audin_protocol::{
    AudioClientMessage, ClientMessage, ErrorCode, decode_audio_client_message,
    decode_client_message,
};
use libfuzzer_sys::fuzz_target;

/// Steps run per input (a repeat counts each time).
const MAX_STEPS: usize = 400;
/// Longest single time step.
const MAX_ADVANCE_MS: u64 = 600_000;
/// Timers fired per input before the script is cut short (a small config
/// and long time steps would otherwise make one input slow).
const MAX_FIRINGS: usize = 5_000;
/// Every token the harness hands out contains this; scripts cannot (it is
/// replaced in them), so seeing it anywhere but in `sendText` is a leak.
const SECRET: &str = "s3cr3t";
/// The driver's monotonic clock at the start.
const START: Millis = Millis(1_000);
/// The wall clock (Unix ms) at `START`.
const WALL_AT_START: u64 = 1_800_000_000_000;
/// Smallest time of a fuzzed config (smaller ones only slow the run down).
const MIN_CONFIG_MS: u64 = 20;

fuzz_target!(|data: &[u8]| {
    let Ok(script) = std::str::from_utf8(data) else {
        return;
    };
    let script = script.replace(SECRET, "s3cr3x");
    let mut lines = script.lines().peekable();
    let config = lines
        .next_if(|l| l.starts_with("config "))
        .and_then(|l| fuzzed_config(&l["config ".len()..]))
        .unwrap_or_else(|| Config::new("https://core.audin.test"));
    let op = Operator::new(config).expect("a validated config");
    let mut h = Harness::new(op);
    h.play(lines);
    h.teardown();
});

/// A config from the script, if `Operator::new` takes it and its times
/// are not tiny.
fn fuzzed_config(text: &str) -> Option<Config> {
    let c = Config::from_json(text).ok()?;
    let times = [
        c.heartbeat_interval_ms,
        c.request_timeout_ms,
        c.token_timeout_ms,
        c.audio_reattach_window_ms,
        c.audio_silence_ms,
    ];
    let small = times
        .iter()
        .chain(&c.reconnect_backoff_ms)
        .any(|&ms| ms < MIN_CONFIG_MS);
    if small {
        return None;
    }
    Operator::new(c.clone()).ok().map(|_| c)
}

// ── steps ──────────────────────────────────────────────────────────────

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sk {
    Presence,
    Audio,
}

#[derive(Clone, Debug)]
enum Grant {
    Ok,
    Exp(i64),
    Jwt(i64),
    At(String),
    Empty,
    Blank,
    Err,
}

#[derive(Clone, Debug)]
enum Step {
    Online(Vec<String>),
    Offline,
    Dial(String, String),
    Accept(String),
    Reject(String),
    Hangup(String),
    MediaFailed(String),
    Mute(bool, String),
    Dtmf(String, String),
    List,
    Token {
        newest: bool,
        grant: Grant,
    },
    Open(Sk),
    Close(Sk, Option<u16>, String),
    /// A text; `Msg` texts are built at run time, with placeholders resolved.
    Text(Sk, String),
    Msg(Msg),
    Frame,
    Http(u16, String),
    HttpErr,
    Advance(u64),
    Late(u64),
}

/// A well-formed server message, its fields still unresolved.
#[derive(Clone, Debug)]
enum Msg {
    Welcome(Option<(String, bool)>),
    Avail(String),
    Pong(String),
    Refreshed(String),
    Offer(String),
    Accepted(String),
    DialOk(String, String),
    Ended(String, String),
    Error(String, Option<String>, Option<String>),
    Attached(String, bool, bool),
    Answered(String),
    AudioEnded(String, String),
    AudioError(String),
}

enum Parsed {
    Step(Step),
    Repeat(usize),
}

fn parse(line: &str) -> Option<Parsed> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let mut args = rest.split(' ').filter(|a| !a.is_empty());
    let mut arg = |default: &str| args.next().unwrap_or(default).to_owned();
    let sk = |s: &str| match s {
        "p" => Some(Sk::Presence),
        "a" => Some(Sk::Audio),
        _ => None,
    };
    let flag = |s: String| s == "1";
    let sid = "$SID";
    let step = match word {
        "online" => Step::Online(if rest.is_empty() {
            vec!["pn_1".into()]
        } else {
            rest.split(' ').map(str::to_owned).collect()
        }),
        "offline" => Step::Offline,
        "dial" => Step::Dial(arg("+15550100001"), arg("+390288888888")),
        "accept" => Step::Accept(arg(sid)),
        "reject" => Step::Reject(arg(sid)),
        "hangup" => Step::Hangup(arg(sid)),
        "mediafail" => Step::MediaFailed(arg(sid)),
        "mute" => Step::Mute(flag(arg("1")), arg(sid)),
        "dtmf" => Step::Dtmf(arg("5"), arg(sid)),
        "list" => Step::List,
        "token" | "token+" => {
            let kind = arg("ok");
            let secs = |s: String| s.parse::<i64>().unwrap_or(3_600).clamp(-1 << 40, 1 << 40);
            let grant = match kind.as_str() {
                "exp" => Grant::Exp(secs(arg("3600"))),
                "jwt" => Grant::Jwt(secs(arg("3600"))),
                "at" => Grant::At(rest.strip_prefix("at ").unwrap_or("").to_owned()),
                "empty" => Grant::Empty,
                "blank" => Grant::Blank,
                "err" => Grant::Err,
                _ => Grant::Ok,
            };
            Step::Token {
                newest: word == "token+",
                grant,
            }
        }
        "open" => Step::Open(sk(&arg("p"))?),
        "close" => {
            let kind = sk(&arg("p"))?;
            let code = arg("1006");
            let reason = rest.splitn(3, ' ').nth(2).unwrap_or("").to_owned();
            Step::Close(kind, code.parse().ok(), reason)
        }
        "p" => Step::Text(Sk::Presence, rest.to_owned()),
        "a" => Step::Text(Sk::Audio, rest.to_owned()),
        "welcome" => {
            let call = arg("-");
            let answered = flag(arg("0"));
            Step::Msg(Msg::Welcome((call != "-").then_some((call, answered))))
        }
        "avail" => Step::Msg(Msg::Avail(arg("$ONLINE"))),
        "pong" => Step::Msg(Msg::Pong(arg("$PING"))),
        "refreshed" => Step::Msg(Msg::Refreshed(arg("$REFRESH"))),
        "offer" => Step::Msg(Msg::Offer(arg("CA1"))),
        "accepted" => Step::Msg(Msg::Accepted(arg(sid))),
        "dialok" => Step::Msg(Msg::DialOk(arg("CA2"), arg("$DIAL"))),
        "ended" => Step::Msg(Msg::Ended(arg(sid), arg("remote_hangup"))),
        "error" => {
            let code = arg("CALL_NOT_FOUND");
            let rid = Some(arg("-")).filter(|r| r != "-");
            let call = Some(arg("")).filter(|s| !s.is_empty());
            Step::Msg(Msg::Error(code, rid, call))
        }
        "attached" => {
            let s = arg(sid);
            let answered = flag(arg("1"));
            Step::Msg(Msg::Attached(s, answered, flag(arg("0"))))
        }
        "answered" => Step::Msg(Msg::Answered(arg(sid))),
        "aended" => Step::Msg(Msg::AudioEnded(arg(sid), arg("remote_hangup"))),
        "aerror" => Step::Msg(Msg::AudioError(arg("INVALID_DTMF"))),
        "frame" => Step::Frame,
        "http" => {
            let status = arg("200").parse().unwrap_or(200);
            let body = rest.split_once(' ').map_or(
                r#"[{"id":"pn_1","phoneNumber":"+390288888888","displayName":"Roma"}]"#,
                |(_, b)| b,
            );
            Step::Http(status, body.to_owned())
        }
        "httperr" => Step::HttpErr,
        "t" => Step::Advance(arg("0").parse::<u64>().ok()?.min(MAX_ADVANCE_MS)),
        "late" => Step::Late(arg("0").parse::<u64>().ok()?.min(MAX_ADVANCE_MS)),
        "r" => return Some(Parsed::Repeat(arg("1").parse().ok()?)),
        _ => return None,
    };
    Some(Parsed::Step(step))
}

// ── the driver model ───────────────────────────────────────────────────

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SockState {
    /// `openSocket` seen, no open reported yet.
    Opening,
    Open,
    /// Closed by the core (`closeSocket`) or reported closed.
    Closed,
}

#[derive(Debug)]
struct Sock {
    id: SocketId,
    kind: Sk,
    /// The call of an audio socket.
    call: Option<String>,
    state: SockState,
    /// `hello` / `attach` was sent on it.
    authenticated: bool,
    /// Presence: `online` was announced while it was the socket; audio:
    /// media was started on it.
    ready: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    GoOnline,
    GoOffline,
    Dial,
    List,
}

/// The live call as the events told it.
#[derive(Debug)]
struct Live {
    sid: String,
    snapshot: CallInfo,
    started: bool,
    media: bool,
}

struct Harness {
    op: Operator,
    now: Millis,
    firings: usize,
    sockets: Vec<Sock>,
    tokens: Vec<TokenRequestId>,
    answered_tokens: Vec<TokenRequestId>,
    http: Vec<RequestId>,
    ops: HashMap<u32, OpKind>,
    ids: HashSet<u32>,
    live: Option<Live>,
    presence: PresenceState,
    /// Placeholders.
    last_sid: String,
    dial_rid: String,
    online_rid: String,
    refresh_rid: String,
    ping: u64,
    tokens_issued: u64,
    /// After the final `go_offline`: nothing may be opened or sent.
    offline_for_good: bool,
    trace: bool,
    step_no: usize,
}

impl Harness {
    fn new(op: Operator) -> Self {
        Self {
            op,
            now: START,
            firings: 0,
            sockets: Vec::new(),
            tokens: Vec::new(),
            answered_tokens: Vec::new(),
            http: Vec::new(),
            ops: HashMap::new(),
            ids: HashSet::new(),
            live: None,
            presence: PresenceState::Offline,
            last_sid: "CA1".into(),
            dial_rid: "dial-0".into(),
            online_rid: "online-0".into(),
            refresh_rid: "refresh-0".into(),
            ping: 0,
            tokens_issued: 0,
            offline_for_good: false,
            trace: std::env::var_os("AUDIN_FUZZ_TRACE").is_some_and(|v| v == "1"),
            step_no: 0,
        }
    }

    fn play<'a>(&mut self, lines: impl Iterator<Item = &'a str>) {
        let mut previous: Option<Step> = None;
        let mut done = 0;
        for line in lines {
            let (step, times) = match parse(line) {
                Some(Parsed::Step(s)) => (s, 1),
                Some(Parsed::Repeat(n)) => match &previous {
                    Some(s) => (s.clone(), n),
                    None => continue,
                },
                None => continue,
            };
            for _ in 0..times.min(MAX_STEPS - done) {
                self.step_no += 1;
                if self.trace {
                    eprintln!("[{} ms] step {}: {step:?}", self.now.0, self.step_no);
                }
                if !self.step(&step) {
                    return;
                }
                done += 1;
            }
            if done >= MAX_STEPS {
                return;
            }
            previous = Some(step);
        }
    }

    /// Runs one step; false when the timer budget is spent.
    fn step(&mut self, step: &Step) -> bool {
        let now = self.now;
        match step {
            Step::Advance(ms) => return self.advance_to(now.plus(*ms)),
            Step::Late(ms) => {
                // The timer is late: the next input comes first.
                self.now = now.plus(*ms);
                return true;
            }
            _ => {}
        }
        let before = self.op.poll_timeout();
        self.input(step);
        self.drain();
        if let Some(after) = self.op.poll_timeout() {
            // A deadline before `now` may only be one a late timer left.
            assert!(
                after >= now || before.is_some_and(|b| b <= after),
                "{step:?} at {now:?} armed a timer in the past: {after:?}"
            );
        }
        // The driver's timer fires for anything due (late ones too).
        self.advance_to(now)
    }

    fn input(&mut self, step: &Step) {
        let now = self.now;
        match step {
            Step::Online(ids) => {
                let id = self.op.go_online(now, ids.clone());
                self.new_op(id.0, OpKind::GoOnline);
            }
            Step::Offline => {
                let id = self.op.go_offline(now);
                self.new_op(id.0, OpKind::GoOffline);
            }
            Step::Dial(to, from) => {
                if let Ok(id) = self.op.dial(now, to, from) {
                    self.new_op(id.0, OpKind::Dial);
                }
            }
            Step::Accept(s) => self.op.accept(now, &self.resolve(s)),
            Step::Reject(s) => self.op.reject(now, &self.resolve(s)),
            Step::Hangup(s) => self.op.hangup(now, &self.resolve(s)),
            Step::MediaFailed(s) => self.op.handle_media_failed(
                now,
                &self.resolve(s),
                ErrorCode::MediaAccessDenied,
                "the user denied the microphone",
            ),
            Step::Mute(m, s) => self.op.mute(now, &self.resolve(s), *m),
            Step::Dtmf(d, s) => {
                let _ = self.op.send_dtmf(now, &self.resolve(s), d);
            }
            Step::List => {
                let id = self.op.list_phone_numbers(now);
                self.new_op(id.0, OpKind::List);
            }
            Step::Token { newest, grant } => self.answer_token(*newest, grant),
            Step::Open(kind) => {
                if let Some(i) = self.newest(*kind) {
                    match self.sockets[i].state {
                        SockState::Opening => {
                            self.sockets[i].state = SockState::Open;
                            self.op.handle_socket_open(now, self.sockets[i].id);
                        }
                        // A late open of a socket the core gave up on.
                        SockState::Closed => self.op.handle_socket_open(now, self.sockets[i].id),
                        SockState::Open => {}
                    }
                }
            }
            Step::Close(kind, code, reason) => {
                if let Some(i) = self.newest(*kind) {
                    // A report about a socket the core closed is stale; the
                    // core must ignore it.
                    self.sockets[i].state = SockState::Closed;
                    self.op
                        .handle_socket_closed(now, self.sockets[i].id, *code, reason);
                }
            }
            Step::Text(kind, text) => {
                let text = self.substitute(text);
                self.deliver(*kind, &text);
            }
            Step::Msg(msg) => {
                let (kind, text) = self.build(msg);
                self.deliver(kind, &text);
            }
            Step::Frame => {
                if let Some(i) = self.newest(Sk::Audio) {
                    self.op.handle_audio_received(now, self.sockets[i].id);
                }
            }
            Step::Http(status, body) => {
                let id = self.take_oldest_http();
                self.op.handle_http_response(now, id, *status, body);
            }
            Step::HttpErr => {
                let id = self.take_oldest_http();
                self.op.handle_http_error(now, id, "network down");
            }
            Step::Advance(_) | Step::Late(_) => {}
        }
    }

    fn new_op(&mut self, id: u32, kind: OpKind) {
        self.fresh_id(id);
        self.ops.insert(id, kind);
    }

    /// Ids of every kind come from one counter and are never reused.
    fn fresh_id(&mut self, id: u32) {
        assert!(self.ids.insert(id), "id {id} reused");
    }

    fn newest(&self, kind: Sk) -> Option<usize> {
        self.sockets.iter().rposition(|s| s.kind == kind)
    }

    fn take_oldest_http(&mut self) -> RequestId {
        if self.http.is_empty() {
            RequestId(u32::MAX) // a stale id: ignored
        } else {
            self.http.remove(0)
        }
    }

    /// Text on the newest socket of `kind`, as a driver would deliver it:
    /// an opening socket reports open first; a closed one still delivers
    /// (a message that raced the close; the core ignores it).
    fn deliver(&mut self, kind: Sk, text: &str) {
        let Some(i) = self.newest(kind) else { return };
        let id = self.sockets[i].id;
        if self.sockets[i].state == SockState::Opening {
            self.sockets[i].state = SockState::Open;
            self.op.handle_socket_open(self.now, id);
            self.drain();
        }
        self.op.handle_socket_text(self.now, id, text);
    }

    fn answer_token(&mut self, newest: bool, grant: &Grant) {
        let id = match (self.tokens.is_empty(), newest) {
            (true, _) => {
                // Nothing pending: a late or repeated answer (ignored).
                self.answered_tokens
                    .last()
                    .copied()
                    .unwrap_or(TokenRequestId(u32::MAX))
            }
            (false, false) => self.tokens.remove(0),
            (false, true) => self.tokens.pop().expect("not empty"),
        };
        self.answered_tokens.push(id);
        self.tokens_issued += 1;
        let n = self.tokens_issued;
        let opaque = format!("tok.{SECRET}.{n}");
        let wall = WALL_AT_START + self.now.since(START);
        let at = |secs: i64| rfc3339((wall as i64 / 1000).saturating_add(secs));
        let result = match grant {
            Grant::Ok => Ok(TokenGrant::new(opaque)),
            Grant::Exp(secs) => Ok(TokenGrant {
                token: opaque,
                expires_at: Some(at(*secs)),
            }),
            Grant::Jwt(secs) => {
                let exp = (wall as i64 / 1000).saturating_add(*secs);
                let claims = format!(r#"{{"sub":"op","exp":{exp}}}"#);
                Ok(TokenGrant::new(format!(
                    "eyJhbGciOiJIUzI1NiJ9.{}.{SECRET}{n}",
                    base64url(claims.as_bytes())
                )))
            }
            Grant::At(text) => Ok(TokenGrant {
                token: opaque,
                expires_at: Some(text.clone()),
            }),
            Grant::Empty => Ok(TokenGrant::new("")),
            Grant::Blank => Ok(TokenGrant::new(" \t")),
            Grant::Err => Err("getToken rejected: backend said 503".to_owned()),
        };
        self.op.handle_token(self.now, wall, id, result);
    }

    // ── placeholders and messages ──────────────────────────────────────

    fn sid(&self) -> String {
        self.live
            .as_ref()
            .map_or_else(|| self.last_sid.clone(), |l| l.sid.clone())
    }

    fn resolve(&self, arg: &str) -> String {
        match arg {
            "$SID" => self.sid(),
            "$DIAL" => self.dial_rid.clone(),
            "$ONLINE" => self.online_rid.clone(),
            "$REFRESH" => self.refresh_rid.clone(),
            "$PING" => self.ping.to_string(),
            other => other.to_owned(),
        }
    }

    fn substitute(&self, text: &str) -> String {
        if !text.contains('$') {
            return text.to_owned();
        }
        text.replace("$SID", &self.sid())
            .replace("$DIAL", &self.dial_rid)
            .replace("$ONLINE", &self.online_rid)
            .replace("$REFRESH", &self.refresh_rid)
            .replace("$PING", &self.ping.to_string())
    }

    fn build(&mut self, msg: &Msg) -> (Sk, String) {
        use serde_json::json;
        // Offers and dial acceptances make their sid the new `$SID`.
        if let Msg::Offer(sid) | Msg::DialOk(sid, _) = msg {
            self.last_sid = self.resolve(sid);
        }
        let r = |s: &String| self.resolve(s);
        let (kind, value) = match msg {
            Msg::Welcome(call) => {
                let mut v = json!({"type":"welcome","sessionId":"ps_1","operatorRef":"op-1",
                    "expiresAt":"2027-01-15T08:00:00Z","silenceTimeoutMs":62500});
                if let Some((sid, answered)) = call {
                    v["activeCall"] = json!({"callSid": r(sid), "answered": answered});
                }
                (Sk::Presence, v)
            }
            Msg::Avail(rid) => (
                Sk::Presence,
                json!({"type":"availability","accepted":["pn_1"],"rejected":[],"requestId":r(rid)}),
            ),
            Msg::Pong(id) => {
                let id = r(id);
                let id = id.parse::<u64>().map_or(json!(id), |n| json!(n));
                (Sk::Presence, json!({"type":"pong","id":id}))
            }
            Msg::Refreshed(rid) => (
                Sk::Presence,
                json!({"type":"tokenRefreshed","expiresAt":"2027-01-15T09:00:00Z","requestId":r(rid)}),
            ),
            Msg::Offer(_) => (
                Sk::Presence,
                json!({"type":"callOffer","callSid":self.last_sid,"from":"+14155550100",
                    "to":"+390288888888","phoneNumberId":"pn_1"}),
            ),
            Msg::Accepted(sid) => (
                Sk::Presence,
                json!({"type":"callAccepted","callSid":r(sid)}),
            ),
            Msg::DialOk(_, rid) => (
                Sk::Presence,
                json!({"type":"dialAccepted","requestId":r(rid),"callSid":self.last_sid,
                    "from":"+390288888888","to":"+15550100001"}),
            ),
            Msg::Ended(sid, reason) => (
                Sk::Presence,
                json!({"type":"callEnded","callSid":r(sid),"reason":reason}),
            ),
            Msg::Error(code, rid, sid) => {
                let mut v = json!({"type":"error","code":code,"message":"refused"});
                if let Some(rid) = rid {
                    v["requestId"] = json!(r(rid));
                }
                if let Some(sid) = sid {
                    v["callSid"] = json!(r(sid));
                }
                (Sk::Presence, v)
            }
            Msg::Attached(sid, answered, resumed) => (
                Sk::Audio,
                json!({"type":"attached","callSid":r(sid),"answered":answered,"resumed":resumed}),
            ),
            Msg::Answered(sid) => (Sk::Audio, json!({"type":"answered","callSid":r(sid)})),
            Msg::AudioEnded(sid, reason) => (
                Sk::Audio,
                json!({"type":"ended","callSid":r(sid),"reason":reason}),
            ),
            Msg::AudioError(code) => (
                Sk::Audio,
                json!({"type":"error","code":code,"message":"refused"}),
            ),
        };
        (kind, value.to_string())
    }

    // ── time ───────────────────────────────────────────────────────────

    /// Moves time to `to`, firing each timer at its deadline (or now, if it
    /// is late); false when the timer budget is spent.
    fn advance_to(&mut self, to: Millis) -> bool {
        while let Some(deadline) = self.op.poll_timeout() {
            if deadline > to {
                break;
            }
            if self.firings >= MAX_FIRINGS {
                return false;
            }
            self.firings += 1;
            self.now = deadline.max(self.now);
            let now = self.now;
            if self.trace {
                eprintln!("[{} ms] timer", now.0);
            }
            self.op.handle_timeout(now);
            self.drain();
            if let Some(next) = self.op.poll_timeout() {
                assert!(
                    next > now,
                    "after handle_timeout({now:?}) the next deadline is {next:?}: a driver \
                     would spin"
                );
            }
        }
        self.now = to.max(self.now);
        true
    }

    // ── outputs ────────────────────────────────────────────────────────

    fn drain(&mut self) {
        while let Some(out) = self.op.poll_output() {
            if self.trace {
                eprintln!("    {}", out.to_json());
            }
            self.observe(out);
        }
        assert_eq!(
            self.presence,
            self.op.state(),
            "the last presenceStateChanged is not state()"
        );
        let current = self.op.current_call();
        match (&self.live, current) {
            (None, None) => {}
            (Some(live), Some(call)) => {
                assert_eq!(live.sid, call.call_sid, "current_call() is another call");
                assert_eq!(
                    (live.snapshot.state, live.snapshot.muted),
                    (call.state, call.muted),
                    "current_call() changed without an event saying so\n events: {:?}\n core: \
                     {call:?}",
                    live.snapshot
                );
            }
            (live, current) => panic!(
                "current_call() is {current:?} but the events say {:?}",
                live.as_ref().map(|l| &l.sid)
            ),
        }
    }

    fn sock(&mut self, id: SocketId, what: &Output) -> &mut Sock {
        self.sockets
            .iter_mut()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("{what:?} names a socket the core never opened"))
    }

    fn no_secret(&self, what: &str, text: &str) {
        assert!(
            !text.contains(SECRET),
            "a token reached {what}: {:?}",
            text.replace(SECRET, "<TOKEN>")
        );
    }

    fn observe(&mut self, out: Output) {
        if self.offline_for_good {
            let allowed = match &out {
                Output::Completed { .. } | Output::Log { .. } => true,
                Output::Event { event } => matches!(event, Event::Error { .. }),
                _ => false,
            };
            assert!(allowed, "after the final goOffline: {out:?}");
        }
        match &out {
            Output::FetchToken { id } => {
                self.fresh_id(id.0);
                self.tokens.push(*id);
            }
            Output::OpenSocket { id, url, kind } => {
                self.fresh_id(id.0);
                assert!(
                    url.starts_with("wss://") || url.starts_with("ws://"),
                    "socket URL {url}"
                );
                let (sk, call) = match kind {
                    SocketKind::Presence => (Sk::Presence, None),
                    SocketKind::Audio { call_sid } => {
                        let live = self.live.as_ref().map(|l| l.sid.as_str());
                        assert_eq!(
                            live,
                            Some(call_sid.as_str()),
                            "audio socket for a call that is not live"
                        );
                        (Sk::Audio, Some(call_sid.clone()))
                    }
                };
                self.sockets.push(Sock {
                    id: *id,
                    kind: sk,
                    call,
                    state: SockState::Opening,
                    authenticated: false,
                    ready: false,
                });
            }
            Output::SendText { socket, text } => {
                let online = self.presence == PresenceState::Online;
                let s = self.sock(*socket, &out);
                assert_eq!(
                    s.state,
                    SockState::Open,
                    "text on a socket that is not open: {}",
                    text.replace(SECRET, "<TOKEN>")
                );
                let first = !s.authenticated;
                s.authenticated = true;
                match s.kind {
                    Sk::Presence => {
                        let msg = decode_client_message(text)
                            .unwrap_or_else(|e| panic!("presence text does not decode: {e}"));
                        let hello = matches!(msg, ClientMessage::Hello { .. });
                        assert_eq!(first, hello, "hello must be the first text, once: {msg:?}");
                        if !hello {
                            s.ready |= online;
                            assert!(s.ready, "{msg:?} before welcome");
                        }
                        self.note_request(&msg);
                    }
                    Sk::Audio => {
                        let msg = decode_audio_client_message(text)
                            .unwrap_or_else(|e| panic!("audio text does not decode: {e}"));
                        match &msg {
                            AudioClientMessage::Attach { call_sid, .. } => {
                                assert!(first, "attach sent twice");
                                assert_eq!(
                                    s.call.as_ref(),
                                    Some(call_sid),
                                    "attach to another call"
                                );
                            }
                            other => {
                                assert!(!first, "{other:?} before attach");
                                assert!(s.ready, "{other:?} before the socket was attached");
                            }
                        }
                    }
                }
            }
            Output::CloseSocket {
                socket,
                code,
                reason,
            } => {
                assert!(
                    *code == 1000 || (3000..=4999).contains(code),
                    "WebSocket.close() throws on code {code}"
                );
                assert!(
                    reason.len() <= 123,
                    "WebSocket.close() throws on a long reason"
                );
                self.sock(*socket, &out).state = SockState::Closed;
            }
            Output::HttpRequest {
                id, bearer_token, ..
            } => {
                self.fresh_id(id.0);
                assert!(
                    !bearer_token.trim().is_empty(),
                    "HTTP request without a token"
                );
                self.http.push(*id);
            }
            Output::StartMedia { call_sid, socket } => {
                self.expect_live(call_sid, &out);
                let s = self.sock(*socket, &out);
                assert_eq!(
                    s.state,
                    SockState::Open,
                    "media on a socket that is not open"
                );
                assert_eq!(
                    s.call.as_ref(),
                    Some(call_sid),
                    "media on another call's socket"
                );
                s.ready = true;
                if let Some(live) = &mut self.live {
                    live.media = true;
                }
            }
            Output::StopMedia { call_sid } => {
                self.expect_live(call_sid, &out);
                let live = self.live.as_mut().expect("checked");
                assert!(live.media, "stopMedia without startMedia");
                live.media = false;
            }
            Output::SetMuted { call_sid, .. } => self.expect_live(call_sid, &out),
            Output::Event { event } => self.on_event(event),
            Output::Completed { op, result } => {
                let kind = self
                    .ops
                    .remove(&op.0)
                    .unwrap_or_else(|| panic!("op {} completed twice or never started", op.0));
                match result {
                    Ok(value) => {
                        let fits = matches!(
                            (kind, value),
                            (OpKind::GoOnline, OpValue::Availability { .. })
                                | (OpKind::GoOffline, OpValue::None)
                                | (OpKind::Dial, OpValue::Call { .. })
                                | (OpKind::List, OpValue::PhoneNumbers { .. })
                        );
                        assert!(fits, "{kind:?} completed with {value:?}");
                        if let OpValue::Call { call } = value {
                            assert_eq!(call.state, CallState::Connecting, "dialled call state");
                            self.begin(call);
                        }
                    }
                    Err(e) => self.no_secret("an operation error", &e.message),
                }
            }
            Output::Log { message, .. } => self.no_secret("a log line", message),
        }
    }

    /// Remembers the request ids and ping ids the core sent.
    fn note_request(&mut self, msg: &ClientMessage) {
        match msg {
            ClientMessage::Dial { request_id, .. } => self.dial_rid.clone_from(request_id),
            ClientMessage::GoOnline {
                request_id: Some(r),
                ..
            } => self.online_rid.clone_from(r),
            ClientMessage::RefreshToken {
                request_id: Some(r),
                ..
            } => self.refresh_rid.clone_from(r),
            ClientMessage::Ping { id } => self.ping = *id,
            _ => {}
        }
    }

    fn expect_live(&self, sid: &str, what: &impl std::fmt::Debug) {
        let live = self.live.as_ref().map(|l| l.sid.as_str());
        assert_eq!(live, Some(sid), "{what:?} is not about the live call");
    }

    fn begin(&mut self, call: &CallInfo) {
        if let Some(live) = &self.live {
            panic!(
                "call {} started while call {} is live",
                call.call_sid, live.sid
            );
        }
        assert!(call.end_reason.is_none(), "a new call with an end reason");
        self.last_sid.clone_from(&call.call_sid);
        self.live = Some(Live {
            sid: call.call_sid.clone(),
            snapshot: call.clone(),
            started: false,
            media: false,
        });
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::PresenceStateChanged { state } => {
                assert_ne!(
                    *state, self.presence,
                    "presenceStateChanged without a change"
                );
                self.presence = *state;
            }
            Event::AvailabilityChanged { .. } => {}
            Event::IncomingCall { call } => {
                assert_eq!(call.state, CallState::Ringing, "incomingCall state");
                self.begin(call);
            }
            Event::CallEnded { call } => {
                let Some(live) = self.live.take() else {
                    panic!(
                        "callEnded for {}, which is not live (never started, or ended)",
                        call.call_sid
                    );
                };
                assert_eq!(live.sid, call.call_sid, "callEnded for another call");
                assert_eq!(call.state, CallState::Ended, "callEnded state");
                assert!(call.end_reason.is_some(), "callEnded without a reason");
                assert!(!live.media, "callEnded before stopMedia");
            }
            Event::CallStarted { call }
            | Event::CallUpdated { call }
            | Event::CallReconnecting { call }
            | Event::CallReconnected { call } => {
                let Some(live) = self.live.as_mut() else {
                    panic!("{event:?} with no live call");
                };
                assert_eq!(live.sid, call.call_sid, "{event:?} names another call");
                assert_ne!(call.state, CallState::Ended, "{event:?} of an ended call");
                assert!(call.end_reason.is_none(), "{event:?} with an end reason");
                if matches!(event, Event::CallStarted { .. }) {
                    assert!(!live.started, "callStarted twice");
                    assert_eq!(call.state, CallState::Active, "callStarted state");
                    live.started = true;
                }
                live.snapshot = call.clone();
            }
            Event::Error { message, cause, .. } => {
                self.no_secret("an error event", message);
                if let Some(cause) = cause {
                    self.no_secret("an error event", cause);
                }
            }
        }
    }

    // ── the end ────────────────────────────────────────────────────────

    fn teardown(&mut self) {
        let id = self.op.go_offline(self.now);
        self.new_op(id.0, OpKind::GoOffline);
        self.drain();
        assert!(self.live.is_none(), "a call is still live after goOffline");
        assert_eq!(self.op.state(), PresenceState::Offline);
        let waiting: Vec<_> = self.ops.values().filter(|k| **k != OpKind::List).collect();
        assert!(
            waiting.is_empty(),
            "after goOffline still pending: {waiting:?}"
        );
        // What is left (getToken and HTTP deadlines) runs out without
        // opening or sending anything.
        self.offline_for_good = true;
        self.firings = 0;
        let mut fired = 0;
        while let Some(deadline) = self.op.poll_timeout() {
            fired += 1;
            assert!(fired < 100, "offline, yet timers keep coming");
            self.now = deadline.max(self.now);
            self.op.handle_timeout(self.now);
            self.drain();
        }
        assert!(self.ops.is_empty(), "never completed: {:?}", self.ops);
    }
}

// ── small encoders (the harness's own, so it does not test the core with itself)

/// Unix seconds as RFC 3339 (UTC), e.g. `2027-01-15T08:00:00Z`.
fn rfc3339(secs: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = String::new();
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    );
    out
}

/// Base64url without padding.
fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

//! Fuzz target `server_messages`: scripts of client traffic through the
//! server's real presence and audio sessions (`audin_server::presence::run`,
//! `audin_server::audio::run`) over in-memory connections, against one
//! engine (in-memory SQLite, simulated carrier) on a paused tokio clock.
//!
//! An input is a script, one step per line (unknown lines are skipped):
//!
//! | line | step |
//! | --- | --- |
//! | `p0 TEXT` / `p1 TEXT` | text on presence socket 0 / 1 (opened on first use, reopened after a close) |
//! | `a0 TEXT` / `a1 TEXT` | text on audio socket 0 / 1 |
//! | `b0 N` / `b1 N` | an N-byte binary message on audio socket 0 / 1 (N ≤ 20000) |
//! | `B0 N` / `B1 N` | an N-byte binary message on presence socket 0 / 1 |
//! | `P0 N` / `A0 N` (and `1`) | an N-byte JSON text (a `ping` padded out) on presence / audio (N ≤ 20000: past the 16 KiB limit, which libFuzzer's 4 KiB inputs cannot reach) |
//! | `q0` `q1` / `Q0` `Q1` | the client closes presence / audio socket 0 / 1 |
//! | `t MS` | virtual time moves on MS milliseconds (≤ 120000) |
//! | `i K` | the simulated network calls dev number `K % 2` (caller behaviour `K / 2 % 4`) |
//! | `h` | the caller of `$SID` hangs up |
//! | `r N` | the previous step again, N times (≤ 300) |
//!
//! In texts, `$TOKEN` / `$TOKEN_B` are valid tokens of two operators of the
//! dev account, `$TOKEN_X` one of another account, `$EXPIRED` an expired
//! one; `$SID` is the last `callSid` the server sent; `$PN` / `$PN2` are the
//! dev numbers' ids, `$NUM` the first one's E.164.
//!
//! `AUDIN_FUZZ_TRACE=1` prints every message the server sends (to check
//! what a seed reaches).
//!
//! Invariants checked (any violation aborts the run):
//! - no task panics (libFuzzer's panic hook aborts on a panic in any thread);
//! - every text the server sends decodes with the decoder of its socket
//!   (`decode_server_message` / `decode_audio_server_message`), within the
//!   16 KiB limit; the presence socket never gets a binary message, the
//!   audio socket only 160-byte frames;
//! - `welcome` names an operator whose valid token the socket sent;
//!   `attached` comes only for a call the server gave (`callAccepted`,
//!   `dialAccepted`, `welcome.activeCall`) to an operator whose token that
//!   audio socket sent; call audio reaches only a socket that was
//!   `attached` (no one hears a call that is not theirs);
//! - every close carries a documented close code (`CloseCode::from_code`)
//!   and nothing follows it;
//! - once the client has closed every socket and virtual time has run past
//!   every grace window: every session task has returned, no call is live,
//!   no operator is online or holds a call, the socket gauges are 0 and no
//!   call record is left open. The engine is shared by all runs, so a leak
//!   also shows up in the runs after.
#![no_main]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use audin_protocol::{
    AudioServerMessage, CloseCode, FRAME_BYTES, MAX_TEXT_MESSAGE_BYTES, ServerMessage,
    decode_audio_server_message, decode_server_message,
};
use audin_server::auth::{Claims, TokenSigner};
use audin_server::routing::OperatorKey;
use audin_server::sim::Behaviour;
use audin_server::ws::{Kind, MemoryPeer, WsConn};
use audin_server::{Engine, ServerConfig, db};
use axum::extract::ws::{CloseFrame, Message};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Steps run per input (a repeat counts each time).
const MAX_STEPS: usize = 400;
/// Largest binary or padded text message a step sends (above the 16 KiB
/// limit).
const MAX_BINARY: usize = 20_000;
/// Longest single time step.
const MAX_ADVANCE_MS: u64 = 120_000;
/// Virtual time the teardown may take: past the ring timeout (30 s), the
/// audio grace (15 s) and the presence silence limit (62.5 s).
const TEARDOWN_ROUNDS: u32 = 300;
/// Real time the teardown may take (the database thread runs in real time).
const TEARDOWN_REAL: Duration = Duration::from_secs(20);
/// Scheduler turns between steps.
const SETTLE_TURNS: usize = 64;
/// Scheduler turns between the slices of a time step.
const SLICE_TURNS: usize = 16;

const ACCOUNT: &str = db::DEV_ACCOUNT_ID;
const OTHER_ACCOUNT: &str = "acc_fuzz_other";
const OPERATOR_A: &str = "op_fuzz_a";
const OPERATOR_B: &str = "op_fuzz_b";
const OPERATOR_X: &str = "op_fuzz_x";

struct World {
    rt: Runtime,
    engine: Arc<Engine>,
    token_a: String,
    token_b: String,
    token_x: String,
    expired: String,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        // A paused clock moves only when a step says so (or while the
        // teardown waits), so timers fire at the script's times; the
        // harness never lets the runtime idle (it yields instead of
        // awaiting), which would let the clock jump ahead on its own.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let engine = rt.block_on(async {
            let db = db::Db::open(std::path::Path::new(":memory:")).expect("database");
            db.call(db::seed_dev).await.expect("dev account");
            Engine::new(
                ServerConfig::for_tests(),
                db,
                TokenSigner::new(b"fuzz signing secret, 32 bytes ok"),
            )
        });
        let numbers: Vec<String> = db::DEV_NUMBERS
            .iter()
            .map(|(id, _, _)| (*id).to_owned())
            .collect();
        let ttl = 24 * 3600;
        let signer = &engine.signer;
        let (token_a, claims_a) = signer.issue(ACCOUNT, OPERATOR_A, "A", numbers.clone(), ttl);
        let (token_b, _) = signer.issue(ACCOUNT, OPERATOR_B, "B", numbers.clone(), ttl);
        let (token_x, _) = signer.issue(OTHER_ACCOUNT, OPERATOR_X, "X", numbers, ttl);
        let expired = signer.sign(&Claims {
            iat: claims_a.iat - 7200,
            exp: claims_a.iat - 3600,
            ..claims_a
        });
        World {
            rt,
            engine,
            token_a,
            token_b,
            token_x,
            expired,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(script) = std::str::from_utf8(data) else {
        return;
    };
    let w = world();
    w.rt.block_on(Run::new(w).play(script));
});

/// One client connection of the script.
struct Conn {
    kind: Kind,
    peer: MemoryPeer,
    session: JoinHandle<()>,
    /// The client sent its close (or dropped its side).
    closed_by_client: bool,
    /// The server's close frame arrived.
    server_closed: bool,
    /// Operators whose valid tokens were sent on this connection.
    operators: Vec<&'static str>,
    /// The server said `attached` (audio).
    attached: bool,
    /// The operator the server's `welcome` named (presence).
    welcomed_as: Option<String>,
}

impl Conn {
    fn open(engine: &Arc<Engine>, kind: Kind) -> Self {
        let (conn, peer) = WsConn::in_memory(kind, engine.metrics.clone());
        let session = match kind {
            Kind::Presence => tokio::spawn(audin_server::presence::run(engine.clone(), conn)),
            Kind::Audio => tokio::spawn(audin_server::audio::run(engine.clone(), conn)),
        };
        Self {
            kind,
            peer,
            session,
            closed_by_client: false,
            server_closed: false,
            operators: Vec::new(),
            attached: false,
            welcomed_as: None,
        }
    }

    /// Whether a new step on this slot needs a new connection.
    fn is_over(&self) -> bool {
        self.closed_by_client || self.server_closed || self.session.is_finished()
    }

    fn send(&mut self, msg: Message) {
        // A session that has returned dropped its reader: like writing to
        // a socket the server has closed, the message is lost.
        let _ = self.peer.to_server.send(msg);
    }

    fn close(&mut self) {
        if !self.closed_by_client {
            self.send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })));
            self.closed_by_client = true;
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Text(Kind, usize, String),
    Binary(Kind, usize, usize),
    LongText(Kind, usize, usize),
    Close(Kind, usize),
    Advance(u64),
    Inbound(usize),
    CallerHangsUp,
}

struct Run<'w> {
    w: &'w World,
    presence: [Option<Conn>; 2],
    audio: [Option<Conn>; 2],
    retired: Vec<Conn>,
    last_sid: String,
    /// Which operator the server gave each call to (`callAccepted`,
    /// `dialAccepted`, `welcome.activeCall` on that operator's socket).
    holders: HashMap<String, String>,
}

impl<'w> Run<'w> {
    fn new(w: &'w World) -> Self {
        Self {
            w,
            presence: [None, None],
            audio: [None, None],
            retired: Vec::new(),
            last_sid: "CA00000000000000000000000000000000".into(),
            holders: HashMap::new(),
        }
    }

    async fn play(mut self, script: &str) {
        let mut done = 0;
        let mut previous: Option<Step> = None;
        for line in script.lines() {
            if done >= MAX_STEPS {
                break;
            }
            let (step, times) = match parse(line) {
                Some(Parsed::Step(s)) => (s, 1),
                Some(Parsed::Repeat(n)) => match &previous {
                    Some(s) => (s.clone(), n),
                    None => continue,
                },
                None => continue,
            };
            for _ in 0..times.min(MAX_STEPS - done) {
                self.step(&step).await;
                // Repeats (floods, frame bursts) only let the tasks run;
                // the database catches up after the last one.
                yield_turns(SETTLE_TURNS).await;
                self.drain_all();
                done += 1;
            }
            settle(&self.w.engine).await;
            self.drain_all();
            previous = Some(step);
        }
        self.teardown().await;
    }

    /// The two connection slots of a kind.
    fn slots(&mut self, kind: Kind) -> &mut [Option<Conn>; 2] {
        match kind {
            Kind::Presence => &mut self.presence,
            Kind::Audio => &mut self.audio,
        }
    }

    /// Slot `i` of `kind`, opening a new connection if it has none or its
    /// connection is over (the old one is kept for its remaining output).
    fn slot(&mut self, kind: Kind, i: usize) -> &mut Conn {
        if self.slots(kind)[i].as_ref().is_none_or(Conn::is_over) {
            let engine = self.w.engine.clone();
            let old = self.slots(kind)[i].replace(Conn::open(&engine, kind));
            self.retired.extend(old);
        }
        self.slots(kind)[i].as_mut().expect("slot just filled")
    }

    async fn step(&mut self, step: &Step) {
        match step {
            Step::Text(kind, i, text) => {
                let text = self.substitute(text);
                let named = self.operators_named(&text);
                let conn = self.slot(*kind, *i);
                conn.operators.extend(named);
                conn.send(Message::Text(text.into()));
            }
            Step::Binary(kind, i, n) => {
                let frame = vec![0xFF_u8; *n];
                self.slot(*kind, *i).send(Message::Binary(frame.into()));
            }
            Step::LongText(kind, i, n) => {
                let head = r#"{"type":"ping","id":1,"pad":""#;
                let pad = n.saturating_sub(head.len() + 2);
                let text = format!("{head}{}\"}}", "x".repeat(pad));
                self.slot(*kind, *i).send(Message::Text(text.into()));
            }
            Step::Close(kind, i) => {
                if let Some(c) = self.slots(*kind)[*i].as_mut() {
                    c.close();
                }
            }
            Step::Advance(ms) => {
                // In slices, so that a timer armed when an earlier one fires
                // (e.g. the sim answering 300 ms after its 50 ms set-up)
                // falls inside the step rather than after it.
                let slices = ms.div_ceil(20).clamp(1, 20);
                for n in 1..=slices {
                    // Cumulative, so the slices add up to exactly `ms`.
                    let step = ms * n / slices - ms * (n - 1) / slices;
                    tokio::time::advance(Duration::from_millis(step)).await;
                    yield_turns(SLICE_TURNS).await;
                }
            }
            Step::Inbound(k) => {
                let (_, number, _) = db::DEV_NUMBERS[k % db::DEV_NUMBERS.len()];
                let behaviour = [
                    Behaviour::Tone,
                    Behaviour::Echo,
                    Behaviour::Silence,
                    Behaviour::Click,
                ][k / 2 % 4];
                let sid = audin_server::util::new_call_sid();
                let engine = &self.w.engine;
                let call = engine
                    .sim
                    .start_inbound(&sid, "+15550199999", number, behaviour);
                // Refused (nobody free) is a valid outcome; the record and
                // the sim call must still be settled by the teardown.
                let engine = engine.clone();
                let _ = without_idling("engine.inbound", async move { engine.inbound(call).await })
                    .await;
                self.last_sid = sid;
            }
            Step::CallerHangsUp => {
                self.w.engine.sim.caller_hangs_up(&self.last_sid);
            }
        }
    }

    fn substitute(&self, text: &str) -> String {
        if !text.contains('$') {
            return text.to_owned();
        }
        let (_, number, _) = db::DEV_NUMBERS[0];
        // Longest names first: `$TOKEN` is a prefix of the others.
        text.replace("$TOKEN_B", &self.w.token_b)
            .replace("$TOKEN_X", &self.w.token_x)
            .replace("$TOKEN", &self.w.token_a)
            .replace("$EXPIRED", &self.w.expired)
            .replace("$SID", &self.last_sid)
            .replace("$PN2", db::DEV_NUMBERS[1].0)
            .replace("$PN", db::DEV_NUMBERS[0].0)
            .replace("$NUM", number)
    }

    /// The operators whose valid tokens `text` carries.
    fn operators_named(&self, text: &str) -> Vec<&'static str> {
        [
            (&self.w.token_a, OPERATOR_A),
            (&self.w.token_b, OPERATOR_B),
            (&self.w.token_x, OPERATOR_X),
        ]
        .into_iter()
        .filter(|(token, _)| text.contains(token.as_str()))
        .map(|(_, operator)| operator)
        .collect()
    }

    fn drain_all(&mut self) {
        let mut seen = Seen {
            sids: Vec::new(),
            holders: &mut self.holders,
        };
        // Presence first: an `attached` is checked against the holders the
        // presence sockets announced.
        for kind in [Kind::Presence, Kind::Audio] {
            let conns = self
                .presence
                .iter_mut()
                .chain(self.audio.iter_mut())
                .flatten()
                .chain(self.retired.iter_mut())
                .filter(|c| c.kind == kind);
            for c in conns {
                drain(c, &mut seen);
            }
        }
        if let Some(sid) = seen.sids.pop() {
            self.last_sid = sid;
        }
    }

    fn all_conns(&self) -> impl Iterator<Item = &Conn> {
        self.presence
            .iter()
            .chain(self.audio.iter())
            .flatten()
            .chain(self.retired.iter())
    }

    /// Closes every socket, runs virtual time past every grace window and
    /// checks that nothing is left behind.
    async fn teardown(mut self) {
        for c in self
            .presence
            .iter_mut()
            .chain(self.audio.iter_mut())
            .flatten()
        {
            c.close();
        }
        let real_start = std::time::Instant::now();
        for _ in 0..TEARDOWN_ROUNDS {
            if self.leftovers().is_none() && self.open_records().await == Some(0) {
                return;
            }
            assert!(
                real_start.elapsed() < TEARDOWN_REAL,
                "teardown took over {TEARDOWN_REAL:?} of real time: {:?}",
                self.leftovers()
            );
            tokio::time::advance(Duration::from_secs(1)).await;
            settle(&self.w.engine).await;
            self.drain_all();
        }
        panic!(
            "after {TEARDOWN_ROUNDS} s with every socket closed: {:?}, open records {:?}",
            self.leftovers(),
            self.open_records().await
        );
    }

    /// How many call records are open (`None`: the query failed).
    async fn open_records(&self) -> Option<usize> {
        let engine = self.w.engine.clone();
        without_idling("open_call_count", async move {
            engine.db.call(db::open_call_count).await
        })
        .await
        .ok()
    }

    /// What is still alive once every client has gone, if anything.
    fn leftovers(&self) -> Option<String> {
        let engine = &self.w.engine;
        let mut left = Vec::new();
        let running = self
            .all_conns()
            .filter(|c| !c.session.is_finished())
            .count();
        if running > 0 {
            left.push(format!("{running} session task(s) running"));
        }
        let (online, by_state) = ready_now(engine.gauges());
        let online = online.unwrap_or(0);
        if online > 0 {
            left.push(format!("{online} operator(s) online"));
        }
        for (state, n) in by_state {
            if n > 0 {
                left.push(format!("{n} call(s) {state}"));
            }
        }
        for (account, operator) in [
            (ACCOUNT, OPERATOR_A),
            (ACCOUNT, OPERATOR_B),
            (OTHER_ACCOUNT, OPERATOR_X),
        ] {
            let key = OperatorKey {
                account: account.into(),
                operator_ref: operator.into(),
            };
            if let Ok(Some(sid)) = ready_now(engine.routing.held_call(&key)) {
                left.push(format!("{operator} still holds {sid}"));
            }
        }
        let presence = engine.metrics.presence_sockets.load(Ordering::Relaxed);
        let audio = engine.metrics.audio_sockets.load(Ordering::Relaxed);
        if presence != 0 || audio != 0 {
            left.push(format!("socket gauges presence {presence} audio {audio}"));
        }
        (!left.is_empty()).then(|| left.join(", "))
    }
}

/// What the harness learns from the server's messages.
struct Seen<'a> {
    /// Call sids, in order.
    sids: Vec<String>,
    /// Call sid → holding operator.
    holders: &'a mut HashMap<String, String>,
}

/// Checks what the server wrote on `c` since the last drain; notes the call
/// sids it mentions and who holds which call.
fn drain(c: &mut Conn, seen: &mut Seen<'_>) {
    static TRACE: OnceLock<bool> = OnceLock::new();
    let trace = *TRACE.get_or_init(|| std::env::var_os("AUDIN_FUZZ_TRACE").is_some());
    while let Ok(msg) = c.peer.from_server.try_recv() {
        if trace {
            let shown = match &msg {
                Message::Text(t) => t.chars().take(200).collect(),
                Message::Binary(b) => format!("binary {} bytes", b.len()),
                other => format!("{other:?}"),
            };
            eprintln!("<- {:?}: {shown}", c.kind);
        }
        assert!(
            !c.server_closed,
            "{:?} socket: {msg:?} after the close frame",
            c.kind
        );
        match msg {
            Message::Text(t) => {
                assert!(
                    t.len() <= MAX_TEXT_MESSAGE_BYTES,
                    "{:?} socket: a {}-byte text message",
                    c.kind,
                    t.len()
                );
                match c.kind {
                    Kind::Presence => match decode_server_message(t.as_str()) {
                        Err(e) => panic!("presence: server text does not decode ({e}): {t}"),
                        Ok(ServerMessage::Welcome {
                            operator_ref,
                            active_call,
                            ..
                        }) => {
                            assert!(
                                c.operators.contains(&operator_ref.as_str()),
                                "welcome as {operator_ref} on a socket that sent tokens of {:?}",
                                c.operators
                            );
                            if let Some(a) = active_call {
                                seen.holders.insert(a.call_sid, operator_ref.clone());
                            }
                            c.welcomed_as = Some(operator_ref);
                        }
                        Ok(
                            ServerMessage::CallAccepted { call_sid, .. }
                            | ServerMessage::DialAccepted { call_sid, .. },
                        ) => {
                            let holder =
                                c.welcomed_as.clone().expect("a call given before welcome");
                            seen.holders.insert(call_sid, holder);
                        }
                        Ok(_) => {}
                    },
                    Kind::Audio => match decode_audio_server_message(t.as_str()) {
                        Err(e) => panic!("audio: server text does not decode ({e}): {t}"),
                        Ok(AudioServerMessage::Attached { call_sid, .. }) => {
                            let holder = seen.holders.get(&call_sid).unwrap_or_else(|| {
                                panic!("attached to {call_sid}, which no operator was given")
                            });
                            assert!(
                                c.operators.contains(&holder.as_str()),
                                "attached to {holder}'s call {call_sid} with tokens of {:?}",
                                c.operators
                            );
                            c.attached = true;
                        }
                        Ok(_) => {}
                    },
                }
                collect_sids(t.as_str(), &mut seen.sids);
            }
            Message::Binary(b) => {
                assert_eq!(c.kind, Kind::Audio, "binary message on the presence socket");
                assert!(c.attached, "call audio on an audio socket never attached");
                assert_eq!(b.len(), FRAME_BYTES, "audio frame of {} bytes", b.len());
            }
            Message::Close(frame) => {
                let frame = frame.expect("the server's close frames carry a code");
                assert!(
                    CloseCode::from_code(frame.code).is_some(),
                    "{:?} socket closed with undocumented code {} ({})",
                    c.kind,
                    frame.code,
                    frame.reason
                );
                c.server_closed = true;
            }
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
}

fn collect_sids(text: &str, sids: &mut Vec<String>) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let found = v
        .get("callSid")
        .or_else(|| v.get("activeCall").and_then(|a| a.get("callSid")))
        .and_then(|s| s.as_str());
    if let Some(s) = found {
        sids.push(s.to_owned());
    }
}

enum Parsed {
    Step(Step),
    Repeat(usize),
}

fn parse(line: &str) -> Option<Parsed> {
    let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
    let slot = |c: char| match c {
        '0' => Some(0),
        '1' => Some(1),
        _ => None,
    };
    let mut chars = head.chars();
    let op = chars.next()?;
    let index = chars.next().and_then(slot);
    let number = || rest.trim().parse::<u64>().ok();
    let step = match (op, index) {
        ('p', Some(i)) => Step::Text(Kind::Presence, i, rest.to_owned()),
        ('a', Some(i)) => Step::Text(Kind::Audio, i, rest.to_owned()),
        ('b', Some(i)) => Step::Binary(Kind::Audio, i, (number()? as usize).min(MAX_BINARY)),
        ('B', Some(i)) => Step::Binary(Kind::Presence, i, (number()? as usize).min(MAX_BINARY)),
        ('P', Some(i)) => Step::LongText(Kind::Presence, i, (number()? as usize).min(MAX_BINARY)),
        ('A', Some(i)) => Step::LongText(Kind::Audio, i, (number()? as usize).min(MAX_BINARY)),
        ('q', Some(i)) => Step::Close(Kind::Presence, i),
        ('Q', Some(i)) => Step::Close(Kind::Audio, i),
        ('t', None) => Step::Advance(number()?.min(MAX_ADVANCE_MS)),
        ('i', None) => Step::Inbound(number()? as usize),
        ('h', None) => Step::CallerHangsUp,
        ('r', None) => return Some(Parsed::Repeat((number()? as usize).min(300))),
        _ => return None,
    };
    Some(Parsed::Step(step))
}

/// Lets every ready task run, and the database thread finish what they
/// queued, twice over (an answer may queue more). The clock stays put: a
/// yielding harness keeps the paused runtime from auto-advancing.
async fn settle(engine: &Arc<Engine>) {
    for _ in 0..2 {
        yield_turns(SETTLE_TURNS).await;
        let engine = engine.clone();
        let _ = without_idling("database barrier", async move {
            engine.db.call(|_| Ok(())).await
        })
        .await;
    }
    yield_turns(SETTLE_TURNS).await;
}

/// Gives the scheduler `n` turns.
async fn yield_turns(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// Runs `work` to its end while yielding, never idling: work on the
/// database thread finishes in real time, and an idle paused runtime would
/// meanwhile jump its clock to the next timer.
async fn without_idling<T: Send + 'static>(
    what: &str,
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    let task = tokio::spawn(work);
    let start = std::time::Instant::now();
    while !task.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not finish in 10 s"
        );
        tokio::task::yield_now().await;
    }
    task.await.expect("the task panicked")
}

/// The answer of a future that is ready at once, as the in-process
/// routing's always are.
fn ready_now<T>(fut: impl std::future::Future<Output = T>) -> T {
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    match fut.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the in-process engine answers at once"),
    }
}

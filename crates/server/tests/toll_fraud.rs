//! Toll fraud (issue 13): an account's dialling policy. A stolen operator
//! token must not reach destinations outside the account's allow-list nor
//! hold more outbound calls at once than the account's limit; a refused
//! dial leaves nothing behind, and every way a call ends gives its slot
//! back. Also `admin set-dialing` through the real binary.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use audin_protocol::EndReason;
use audin_server::carrier::{
    BoxFuture, CallMedia, Carrier, CarrierLeg, EndCause, EventSender, OutboundRequest,
};
use audin_server::db::{self, DialingChange};
use serde_json::{Value, json};
use support::*;
use tokio::sync::{Semaphore, mpsc};

/// The caller id of the test accounts (on the sim unless moved).
const CALLER: &str = "+390233330001";
/// A second number of the test accounts.
const CALLER_2: &str = "+390233330002";
/// Sim numbers (docs/protocol-v1.md's table).
const SIM_ECHO: &str = "+15550100001";
const SIM_TONE: &str = "+15550100002";
const SIM_BUSY: &str = "+15550100003";
const SIM_SILENT: &str = "+15550100004";
const SIM_FAILS: &str = "+15550100006";
/// Where a fraudster calls: an international premium-rate range.
const PREMIUM: &str = "+88213000000";

// ── log capture (one subscriber for the whole test binary) ────────────────

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let writer = capture.clone();
            tracing_subscriber::fmt()
                .with_env_filter(audin_server::log_filter(Some("info")))
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            capture
        })
        .clone()
}

/// The WARN lines that name `account` and say `what`.
fn warn_lines(logs: &Capture, account: &str, what: &str) -> Vec<String> {
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter(|l| l.contains(" WARN ") && l.contains(what))
        .filter(|l| l.contains(&format!("account={account}")))
        .map(str::to_owned)
        .collect()
}

// ── accounts, operators, dials ─────────────────────────────────────────────

/// A test account: id, API key and its numbers' ids (in the order given).
struct Account {
    id: String,
    key: String,
    pns: Vec<String>,
}

async fn account(s: &TestServer, numbers: &[&str], change: DialingChange) -> Account {
    let numbers: Vec<String> = numbers.iter().map(|n| (*n).to_owned()).collect();
    s.handle
        .engine
        .db
        .call(move |c| {
            let id = db::create_account(c, "Toll")?;
            let key = db::create_api_key(c, &id, "")?;
            let mut pns = Vec::new();
            for n in &numbers {
                pns.push(db::add_number(c, &id, n, "")?);
            }
            db::set_dialing(c, &id, &change)?;
            Ok(Account { id, key, pns })
        })
        .await
        .unwrap()
}

fn limit(n: u32) -> DialingChange {
    DialingChange {
        allowed_prefixes: None,
        max_outbound_calls: Some(Some(n)),
    }
}

async fn set_dialing(s: &TestServer, account: &str, change: DialingChange) {
    let account = account.to_owned();
    s.handle
        .engine
        .db
        .call(move |c| db::set_dialing(c, &account, &change))
        .await
        .unwrap();
}

/// Moves a number onto the carrier named `carrier`.
async fn move_number(s: &TestServer, pn: &str, carrier: &str) {
    let (pn, carrier) = (pn.to_owned(), carrier.to_owned());
    s.handle
        .engine
        .db
        .call(move |c| {
            c.execute(
                "UPDATE phone_numbers SET carrier = ?2 WHERE id = ?1",
                rusqlite::params![pn, carrier],
            )?;
            Ok(())
        })
        .await
        .unwrap();
}

async fn token(s: &TestServer, key: &str, op: &str, pns: &[String]) -> String {
    let r = s
        .http
        .post(s.url("/operator-sessions/token"))
        .header("X-API-Key", key)
        .json(&json!({"operatorRef": op, "displayName": "Test", "phoneNumberIds": pns}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// A presence socket of `op` after `hello`, granted every number of `a`.
async fn presence(s: &TestServer, a: &Account, op: &str) -> Ws {
    let token = token(s, &a.key, op, &a.pns).await;
    let mut ws = Ws::connect(&s.ws_url("/v1/operator/presence")).await;
    ws.send_json(json!({"type": "hello", "token": token, "client": "test/0"}))
        .await;
    ws.expect("welcome").await;
    ws
}

async fn send_dial(p: &mut Ws, rid: &str, to: &str, caller_id: &str) {
    p.send_json(json!({"type": "dial", "requestId": rid, "to": to, "callerId": caller_id}))
        .await;
}

/// Dials and returns the answer: `dialAccepted` or `error`.
async fn dial(p: &mut Ws, rid: &str, to: &str, caller_id: &str) -> Value {
    send_dial(p, rid, to, caller_id).await;
    p.text().await
}

/// The sid of a `dialAccepted`.
fn accepted(v: &Value) -> String {
    assert_eq!(v["type"], "dialAccepted", "{v}");
    v["callSid"].as_str().unwrap().to_owned()
}

/// Checks an `error` answer to the dial `rid`; returns its message.
fn refused<'a>(v: &'a Value, rid: &str, code: &str) -> &'a str {
    assert_eq!(
        (
            v["type"].as_str(),
            v["code"].as_str(),
            v["requestId"].as_str()
        ),
        (Some("error"), Some(code), Some(rid)),
        "{v}"
    );
    v["message"].as_str().unwrap()
}

async fn attach(s: &TestServer, a: &Account, op: &str, sid: &str) -> Ws {
    let token = token(s, &a.key, op, &a.pns).await;
    let mut ws = Ws::connect(&s.ws_url("/v1/operator/audio")).await;
    ws.send_json(json!({"type": "attach", "token": token, "callSid": sid}))
        .await;
    ws.expect("attached").await;
    ws
}

async fn hangup(p: &mut Ws, sid: &str) {
    p.send_json(json!({"type": "hangup", "callSid": sid})).await;
}

/// Waits for `callEnded` of `sid` on presence; returns its reason.
async fn call_ended(p: &mut Ws, sid: &str) -> String {
    let v = p.expect("callEnded").await;
    assert_eq!(v["callSid"], sid, "{v}");
    v["reason"].as_str().unwrap().to_owned()
}

/// Waits for `callEnded` of `sid` and for its record to close: the
/// operator is released from the call only after `callEnded` is sent, so
/// the same operator's next dial waits for the record (a dial of another
/// operator of the account need not: the slot is free before `callEnded`).
async fn call_over(s: &TestServer, a: &Account, p: &mut Ws, sid: &str) -> String {
    let reason = call_ended(p, sid).await;
    for _ in 0..250 {
        let recs = records(s, &a.key).await;
        if recs
            .iter()
            .any(|r| r["callSid"] == sid && !r["endedAt"].is_null())
        {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the record of {sid} never closed");
}

async fn records(s: &TestServer, key: &str) -> Vec<Value> {
    let r = s
        .http
        .get(s.url("/v1/calls"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

// ── the allow-list ─────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_outside_the_allowed_destinations_is_forbidden_and_leaves_nothing_behind() {
    let logs = capture_logs();
    let s = TestServer::start().await;
    let allow = DialingChange {
        allowed_prefixes: Some(vec!["+1555".into(), "+39".into()]),
        max_outbound_calls: None,
    };
    let a = account(&s, &[CALLER], allow).await;
    let op = r#"mallory "the intern""#;
    let mut p = presence(&s, &a, op).await;
    // Premium, and a number under +1 that is not under +1555.
    for (rid, to) in [("premium", PREMIUM), ("nanp", "+14155550100")] {
        let v = dial(&mut p, rid, to, CALLER).await;
        let m = refused(&v, rid, "FORBIDDEN");
        assert!(
            m.contains(&format!("\"{to}\"")) && m.contains("outside the account's allowed"),
            "{m}"
        );
    }
    // Nothing half-done: no record, the operator free to dial at once.
    assert_eq!(records(&s, &a.key).await, Vec::<Value>::new());
    let sid = accepted(&dial(&mut p, "ok", SIM_ECHO, CALLER).await);
    let mut audio = attach(&s, &a, op, &sid).await;
    audio.expect("answered").await;
    audio.send_json(json!({"type": "hangup"})).await;
    assert_eq!(audio.expect("ended").await["reason"], "hangup");
    assert_eq!(call_over(&s, &a, &mut p, &sid).await, "hangup");
    let recs = records(&s, &a.key).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["to"], SIM_ECHO);

    // A change applies from the next dial, without a restart.
    let any = DialingChange {
        allowed_prefixes: Some(Vec::new()),
        max_outbound_calls: None,
    };
    set_dialing(&s, &a.id, any).await;
    let sid = accepted(&dial(&mut p, "now-allowed", PREMIUM, CALLER).await);
    hangup(&mut p, &sid).await;
    assert_eq!(call_ended(&mut p, &sid).await, "hangup");

    // One WARN line per refused dial, client text quoted and escaped.
    let lines = warn_lines(&logs, &a.id, "outside the account's allowed destinations");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for (line, to) in lines.iter().zip([PREMIUM, "+14155550100"]) {
        assert!(
            line.contains(r#"operator="mallory \"the intern\"""#)
                && line.contains(&format!("to=\"{to}\"")),
            "{line}"
        );
    }
}

// ── the concurrent-call limit ──────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_over_the_concurrent_call_limit_is_rate_limited_until_a_call_ends() {
    let logs = capture_logs();
    let s = TestServer::start().await;
    let a = account(&s, &[CALLER], limit(1)).await;
    let mut pa = presence(&s, &a, "op-a").await;
    let mut pb = presence(&s, &a, "op-b").await;
    let first = accepted(&dial(&mut pa, "a1", SIM_ECHO, CALLER).await);
    let mut audio = attach(&s, &a, "op-a", &first).await;
    audio.expect("answered").await;

    // Twice: the first refusal left op-b neither busy nor holding a slot.
    for rid in ["b1", "b2"] {
        let v = dial(&mut pb, rid, SIM_TONE, CALLER).await;
        let m = refused(&v, rid, "RATE_LIMITED");
        assert_eq!(
            m,
            "the account's limit of 1 concurrent outbound calls is reached"
        );
    }
    assert_eq!(records(&s, &a.key).await.len(), 1, "no record of a refusal");
    // Another account (the dev one: no limits) is not affected.
    let mut dev = s.online("dev-op", &[MILANO]).await;
    let dev_sid = s.dial(&mut dev, SIM_ECHO).await;
    hangup(&mut dev, &dev_sid).await;
    call_ended(&mut dev, &dev_sid).await;

    // op-a hangs up: op-b may dial at once.
    hangup(&mut pa, &first).await;
    assert_eq!(call_ended(&mut pa, &first).await, "hangup");
    let second = accepted(&dial(&mut pb, "b3", SIM_TONE, CALLER).await);
    let mut audio = attach(&s, &a, "op-b", &second).await;
    audio.expect("answered").await;
    hangup(&mut pb, &second).await;
    call_ended(&mut pb, &second).await;
    assert_eq!(records(&s, &a.key).await.len(), 2);

    let lines = warn_lines(&logs, &a.id, "concurrent outbound call limit is reached");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(r#"operator="op-b""#) && l.contains(r#"to="+15550100002""#)),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_racing_for_the_last_slot_let_exactly_one_through() {
    let s = TestServer::start().await;
    let a = account(&s, &[CALLER], limit(2)).await;
    let mut holder = presence(&s, &a, "op-0").await;
    let live = accepted(&dial(&mut holder, "h", SIM_ECHO, CALLER).await);
    // Attached and answered: it stays up for the whole test.
    let mut audio = attach(&s, &a, "op-0", &live).await;
    audio.expect("answered").await;
    let mut racers = Vec::new();
    for i in 1..=4 {
        racers.push(presence(&s, &a, &format!("op-{i}")).await);
    }
    for round in 0..4 {
        // Every dial is on the wire before any answer is read.
        for (i, p) in racers.iter_mut().enumerate() {
            send_dial(p, &format!("r{round}-{i}"), SIM_ECHO, CALLER).await;
        }
        let mut winners = Vec::new();
        for (i, p) in racers.iter_mut().enumerate() {
            let v = p.text().await;
            let rid = format!("r{round}-{i}");
            if v["type"] == "dialAccepted" {
                winners.push((i, accepted(&v)));
            } else {
                refused(&v, &rid, "RATE_LIMITED");
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (i, sid) = winners.pop().unwrap();
        hangup(&mut racers[i], &sid).await;
        call_over(&s, &a, &mut racers[i], &sid).await;
    }
    assert_eq!(records(&s, &a.key).await.len(), 1 + 4);
    hangup(&mut holder, &live).await;
    call_ended(&mut holder, &live).await;
}

// ── every end path gives the slot back ─────────────────────────────────────

/// A carrier that cannot place any call (`place_call` fails at once).
#[derive(Debug)]
struct Refusing;

impl Carrier for Refusing {
    fn name(&self) -> &str {
        "refusing"
    }

    fn place_call(
        &self,
        _req: OutboundRequest,
        events: EventSender,
        _media: Arc<CallMedia>,
    ) -> BoxFuture<'_, Result<Arc<dyn CarrierLeg>, EndCause>> {
        Box::pin(async move {
            drop(events);
            Err(EndCause::failed(
                Some(503),
                "the test carrier places nothing",
            ))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_an_outbound_call_ends_gives_its_slot_back() {
    let s = TestServer::start().await;
    let a = account(&s, &[CALLER, CALLER_2], limit(1)).await;
    s.handle.engine.carriers.insert(Arc::new(Refusing));
    move_number(&s, &a.pns[1], "refusing").await;
    let mut p = presence(&s, &a, "op-1").await;

    // Each call must end and free the one slot for the next dial.
    let sid = accepted(&dial(&mut p, "busy", SIM_BUSY, CALLER).await);
    let _audio = attach(&s, &a, "op-1", &sid).await;
    assert_eq!(call_over(&s, &a, &mut p, &sid).await, "rejected");

    let sid = accepted(&dial(&mut p, "fails", SIM_FAILS, CALLER).await);
    let _audio = attach(&s, &a, "op-1", &sid).await;
    assert_eq!(call_over(&s, &a, &mut p, &sid).await, "failed");

    let sid = accepted(&dial(&mut p, "not-placed", SIM_ECHO, CALLER_2).await);
    let _audio = attach(&s, &a, "op-1", &sid).await;
    assert_eq!(call_over(&s, &a, &mut p, &sid).await, "failed");

    let sid = accepted(&dial(&mut p, "ring-timeout", SIM_SILENT, CALLER).await);
    let _audio = attach(&s, &a, "op-1", &sid).await;
    assert_eq!(call_over(&s, &a, &mut p, &sid).await, "no_answer");

    // No audio socket within the grace window.
    let sid = accepted(&dial(&mut p, "no-audio", SIM_ECHO, CALLER).await);
    assert_eq!(call_over(&s, &a, &mut p, &sid).await, "failed");

    // Hung up before the audio socket attached.
    let sid = accepted(&dial(&mut p, "early-hangup", SIM_ECHO, CALLER).await);
    hangup(&mut p, &sid).await;
    assert_eq!(call_over(&s, &a, &mut p, &sid).await, "hangup");

    // Answered, hung up on the audio socket.
    let sid = accepted(&dial(&mut p, "answered", SIM_TONE, CALLER).await);
    let mut audio = attach(&s, &a, "op-1", &sid).await;
    audio.expect("answered").await;
    audio.send_json(json!({"type": "hangup"})).await;
    assert_eq!(call_over(&s, &a, &mut p, &sid).await, "hangup");

    let sid = accepted(&dial(&mut p, "last", SIM_ECHO, CALLER).await);
    hangup(&mut p, &sid).await;
    call_over(&s, &a, &mut p, &sid).await;
    assert_eq!(records(&s, &a.key).await.len(), 8);
}

/// A carrier whose `place_call` waits until the test opens `gate`: a far
/// end still being asked when the operator gives up. Its legs report
/// their hang-up on `hung_up`.
#[derive(Debug)]
struct Gated {
    gate: Arc<Semaphore>,
    hung_up: mpsc::UnboundedSender<EndReason>,
}

#[derive(Debug)]
struct TestLeg(mpsc::UnboundedSender<EndReason>);

impl CarrierLeg for TestLeg {
    fn answer(&self) {}
    fn send_audio(&self, _frame: axum::body::Bytes) {}
    fn send_dtmf(&self, _digit: char) {}
    fn hang_up(&self, reason: EndReason) {
        let _ = self.0.send(reason);
    }
}

impl Carrier for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    fn place_call(
        &self,
        _req: OutboundRequest,
        events: EventSender,
        _media: Arc<CallMedia>,
    ) -> BoxFuture<'_, Result<Arc<dyn CarrierLeg>, EndCause>> {
        Box::pin(async move {
            let _events = events;
            let _open = self.gate.acquire().await.expect("gate");
            Ok(Arc::new(TestLeg(self.hung_up.clone())) as Arc<dyn CarrierLeg>)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ended_while_being_placed_keeps_its_slot_until_its_leg_is_hung_up() {
    let s = TestServer::start().await;
    let a = account(&s, &[CALLER, CALLER_2], limit(1)).await;
    let gate = Arc::new(Semaphore::new(0));
    let (hung_up, mut legs_hung_up) = mpsc::unbounded_channel();
    s.handle.engine.carriers.insert(Arc::new(Gated {
        gate: gate.clone(),
        hung_up,
    }));
    move_number(&s, &a.pns[0], "gated").await;
    let mut pa = presence(&s, &a, "op-a").await;
    let mut pb = presence(&s, &a, "op-b").await;
    let sid = accepted(&dial(&mut pa, "a", SIM_ECHO, CALLER).await);
    // Attaching starts placing the call; the far end is still being asked.
    let _audio = attach(&s, &a, "op-a", &sid).await;
    hangup(&mut pa, &sid).await;
    assert_eq!(call_ended(&mut pa, &sid).await, "hangup");
    // The far end may still answer: the slot is still taken.
    let v = dial(&mut pb, "b1", SIM_ECHO, CALLER_2).await;
    refused(&v, "b1", "RATE_LIMITED");
    // The leg comes into being and is hung up at once: the slot is free.
    gate.add_permits(1);
    let reason = tokio::time::timeout(WAIT, legs_hung_up.recv())
        .await
        .expect("the late leg is hung up");
    assert_eq!(reason, Some(EndReason::Hangup));
    let sid = accepted(&dial(&mut pb, "b2", SIM_ECHO, CALLER_2).await);
    hangup(&mut pb, &sid).await;
    call_ended(&mut pb, &sid).await;
}

// ── the admin CLI ──────────────────────────────────────────────────────────

/// A scratch directory for one database file, removed on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "audin-toll-fraud-{}-{tag}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// `audin-server --database DB admin ARGS`: (success, stdout + stderr).
    fn admin(&self, args: &[&str]) -> (bool, String) {
        let db = self.0.join("audin.sqlite3");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_audin-server"));
        cmd.arg("--database").arg(&db).arg("admin").args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AUDIN_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let Output {
            status,
            stdout,
            stderr,
        } = cmd.output().unwrap();
        let text =
            String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&stderr);
        (status.success(), text)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn admin_set_dialing_refuses_bad_input_and_admin_list_shows_the_policy() {
    let db = TempDb::new("cli");
    let (ok, text) = db.admin(&["create-account", "--name", "Acme"]);
    assert!(ok, "{text}");
    let account = text
        .lines()
        .find_map(|l| l.strip_prefix("account "))
        .unwrap()
        .to_owned();
    let acc = account.as_str();
    for (args, says) in [
        (
            vec!["--allow-prefix", "39"],
            r#"prefix "39" is not an E.164 prefix"#,
        ),
        (vec!["--allow-prefix", "+0039"], r#""+0039""#),
        (
            vec!["--allow-prefix", "+39", "--allow-prefix", "+44 20"],
            r#""+44 20""#,
        ),
        (vec!["--allow-prefix", "+39\u{1b}[2J"], r#""+39\u{1b}[2J""#),
        (vec!["--max-outbound-calls", "-1"], "--max-outbound-calls"),
        (vec!["--max-outbound-calls", "lots"], "invalid digit"),
        (
            vec!["--allow-prefix", "+39", "--any-destination"],
            "cannot be used with",
        ),
        (
            vec!["--max-outbound-calls", "2", "--no-call-limit"],
            "cannot be used with",
        ),
        (vec![], "required"),
    ] {
        let mut full = vec!["set-dialing", "--account", acc];
        full.extend_from_slice(&args);
        let (ok, text) = db.admin(&full);
        assert!(!ok, "{args:?} accepted: {text}");
        assert!(text.contains(says), "{args:?}: unclear error: {text}");
        assert!(!text.contains('\u{1b}'), "{args:?}: echoed raw: {text}");
    }
    let (ok, text) = db.admin(&["set-dialing", "--account", "acc_nobody", "--no-call-limit"]);
    assert!(!ok && text.contains(r#"no account "acc_nobody""#), "{text}");
    let (ok, text) = db.admin(&["list"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("  dialling  destinations any  outbound calls unlimited\n"),
        "bad input changed the policy: {text}"
    );

    let (ok, text) = db.admin(&[
        "set-dialing",
        "--account",
        acc,
        "--allow-prefix",
        "+39",
        "--allow-prefix",
        "+4420",
        "--max-outbound-calls",
        "2",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("from the next dial"), "{text}");
    let (_, text) = db.admin(&["list"]);
    assert!(
        text.contains("  dialling  destinations +39,+4420  outbound calls at most 2 at once\n"),
        "{text}"
    );
    let (ok, text) = db.admin(&["set-dialing", "--account", acc, "--no-call-limit"]);
    assert!(ok, "{text}");
    let (_, text) = db.admin(&["list"]);
    assert!(
        text.contains("  dialling  destinations +39,+4420  outbound calls unlimited\n"),
        "{text}"
    );
    let (ok, text) = db.admin(&["set-dialing", "--help"]);
    assert!(
        ok && text.contains("next dial") && text.contains("--allow-prefix"),
        "{text}"
    );
}

//! Presence under faults: a half-open (black-holed) presence socket is
//! detected by the heartbeat and recovered once the path passes again; a
//! failing, hanging or garbage-returning `getToken` gives clear `error`
//! events and retries on the backoff schedule, never in a tight loop.
//!
//! Real server in-process with short timeouts (silence 750 ms); the SDK
//! (heartbeat 300 ms, backoff 200/400/800 ms) goes through the fault proxy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use audin_operator::AudinOperator;
use audin_operator::core::{ErrorCode, Event, PresenceState, TokenGrant};
use audin_server::{Server, ServerConfig, ServerHandle};
use audin_testkit::support::*;
use audin_testkit::{Fault, FaultProxy, Scope};
use tokio::time::Instant;

const PRESENCE: &str = "/v1/operator/presence";
/// Scheduling slack on a loaded 2-core CI machine.
const SLACK: Duration = Duration::from_millis(250);

async fn server() -> ServerHandle {
    let mut c = ServerConfig::for_tests();
    c.silence_timeout = Duration::from_millis(750);
    c.audio_grace = Duration::from_millis(1_000);
    c.ring_timeout = Duration::from_millis(3_000);
    Server::start(c).await.expect("server starts")
}

fn state_of(e: &Event) -> Option<PresenceState> {
    match e {
        Event::PresenceStateChanged { state } => Some(*state),
        _ => None,
    }
}

fn error_of(e: &Event) -> Option<(ErrorCode, String, Option<String>)> {
    match e {
        Event::Error {
            code,
            message,
            cause,
        } => Some((*code, message.clone(), cause.clone())),
        _ => None,
    }
}

async fn online(op: &AudinOperator, numbers: &[&str]) {
    let numbers: Vec<String> = numbers.iter().map(|s| (*s).to_owned()).collect();
    let r = tokio::time::timeout(Duration::from_secs(5), op.go_online(numbers)).await;
    r.expect("goOnline in time").expect("goOnline ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_presence_is_detected_within_a_heartbeat_and_recovered() {
    let s = server().await;
    let key = s.dev_api_key.clone().unwrap();
    let proxy = FaultProxy::start(s.local_addr).await.unwrap();
    let tokens = TokenSource::new(&s.url(), &key);
    let t = Timings::default();
    let op = operator(&proxy.url(), &tokens, "op-half-open", &[MILANO], &t);
    let log = EventLog::record(&op);
    online(&op, &[MILANO]).await;
    // A few heartbeats pass normally.
    tokio::time::sleep(t.heartbeat * 3).await;
    assert_eq!(op.state(), PresenceState::Online);
    let before = metrics(&s.url()).await.unwrap();
    assert_eq!(before["audin_operators_online"], 1.0);

    // The path goes half-open: nothing passes, nothing is refused, and new
    // connections vanish the same way.
    let fault_at = Instant::now();
    proxy.set_for(PRESENCE, Fault::BlackHole, Scope::All);
    let (detected_at, _) = log
        .wait(fault_at, Duration::from_secs(5), |e| {
            (state_of(e) == Some(PresenceState::Reconnecting)).then_some(())
        })
        .await
        .expect("the half-open socket is detected");
    let dead = proxy
        .connections()
        .into_iter()
        .find(|c| {
            c.path.as_deref() == Some(PRESENCE)
                && (c.first_swallowed_at.is_some() || c.first_swallowed_to_client_at.is_some())
        })
        .expect("the old presence connection swallowed a ping or a pong");
    // The first heartbeat lost: a ping on its way up or a pong on its way
    // down, whichever the black hole ate first.
    let first_lost = [dead.first_swallowed_at, dead.first_swallowed_to_client_at]
        .into_iter()
        .flatten()
        .min()
        .unwrap();
    let since_fault = detected_at - fault_at;
    let since_lost = detected_at - first_lost;
    println!(
        "half-open detected {since_fault:?} after the fault, {since_lost:?} after the first lost heartbeat"
    );
    // The rule: no pong before the next ping is due => dead. So within one
    // interval of the first lost heartbeat, two of the fault at worst.
    assert!(since_lost <= t.heartbeat + SLACK, "{since_lost:?}");
    assert!(since_fault <= t.heartbeat * 2 + SLACK, "{since_fault:?}");
    let errors = log.since(fault_at, error_of);
    assert!(
        errors
            .iter()
            .any(|(_, (c, _, _))| *c == ErrorCode::HeartbeatTimeout),
        "a HEARTBEAT_TIMEOUT error event: {errors:?}"
    );

    // The server side of the half-open socket: silence timeout (750 ms)
    // takes the operator offline.
    let server_saw = eventually(Duration::from_secs(3), async || {
        metrics(&s.url()).await.unwrap()["audin_operators_online"] == 0.0
    })
    .await;
    assert!(server_saw, "the server drops the silent presence socket");
    let server_detect = fault_at.elapsed();
    println!("server dropped the silent operator within {server_detect:?}");
    // Its last message was the last ping before the fault.
    assert!(
        server_detect >= Duration::from_millis(750) - t.heartbeat,
        "{server_detect:?}"
    );
    // Silence timeout, then the close handshake, which waits (at most 1 s)
    // for a close frame that the black hole never delivers.
    assert!(
        server_detect <= Duration::from_millis(750 + 1_000) + SLACK * 2,
        "{server_detect:?}"
    );

    // Still black-holed: the SDK keeps trying on its schedule, stays
    // `reconnecting`, never claims to be online.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(op.state(), PresenceState::Reconnecting);
    assert!(
        log.since(detected_at, state_of)
            .iter()
            .all(|(_, s)| *s != PresenceState::Online)
    );

    // The path heals: back online (a black-holed attempt in flight must hit
    // its handshake timeout first, then one backoff step).
    let pass_at = Instant::now();
    proxy.set(Fault::Drop, Scope::Existing);
    proxy.set(Fault::Pass, Scope::New);
    let (online_at, _) = log
        .wait(pass_at, Duration::from_secs(6), |e| {
            (state_of(e) == Some(PresenceState::Online)).then_some(())
        })
        .await
        .expect("back online after the path heals");
    let recovery = online_at - pass_at;
    println!("recovered {recovery:?} after the path healed");
    assert!(
        recovery <= t.request_timeout + t.backoff[2] + SLACK * 2,
        "{recovery:?}"
    );
    let ok = eventually(Duration::from_secs(3), async || {
        metrics(&s.url()).await.unwrap()["audin_operators_online"] == 1.0
    })
    .await;
    assert!(ok, "the server sees the operator online again");
    op.go_offline().await.unwrap();
    s.shutdown().await;
}

/// A `getToken` whose every call is recorded; what it answers is set by the
/// test.
#[derive(Clone)]
struct ScriptedToken {
    calls: Arc<Mutex<Vec<Instant>>>,
    answer: Arc<Mutex<Answer>>,
}

#[derive(Clone)]
enum Answer {
    Error,
    Hang,
    Empty,
    Garbage,
    Real(TokenSource),
}

impl ScriptedToken {
    fn new(answer: Answer) -> Self {
        Self {
            calls: Arc::default(),
            answer: Arc::new(Mutex::new(answer)),
        }
    }

    fn operator(&self, url: &str, t: &Timings) -> AudinOperator {
        let me = self.clone();
        AudinOperator::builder(url)
            .get_token(move || {
                let me = me.clone();
                async move {
                    me.calls.lock().unwrap().push(Instant::now());
                    let answer = me.answer.lock().unwrap().clone();
                    match answer {
                        Answer::Error => Err("backend answered 503 Service Unavailable".to_owned()),
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            Err("unreachable".to_owned())
                        }
                        Answer::Empty => Ok(TokenGrant::new("  ")),
                        Answer::Garbage => {
                            Ok(TokenGrant::new("not-a-jwt\u{0}'; DROP TABLE calls;--"))
                        }
                        Answer::Real(src) => src.token("op-token", &[MILANO]).await,
                    }
                }
            })
            .heartbeat_interval(t.heartbeat)
            .reconnect_backoff(t.backoff.clone())
            .request_timeout(t.request_timeout)
            .token_timeout(t.token_timeout)
            .build()
            .unwrap()
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
}

/// Checks that the gaps between attempts follow `expected(i)`.
fn assert_schedule(what: &str, calls: &[Instant], expected: impl Fn(usize) -> Duration) {
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    println!("{what}: {} attempts, gaps {gaps:?}", calls.len());
    assert!(calls.len() >= 3, "{what}: retried at least twice");
    for (i, gap) in gaps.iter().enumerate() {
        let want = expected(i);
        assert!(
            *gap + Duration::from_millis(5) >= want && *gap <= want + SLACK,
            "{what}: gap {i} is {gap:?}, schedule says {want:?}"
        );
    }
}

async fn token_failure_case(
    answer: Answer,
    run_for: Duration,
) -> (ScriptedToken, EventLog, ServerHandle) {
    let s = server().await;
    let t = Timings::default();
    let script = ScriptedToken::new(answer);
    let op = script.operator(&s.url(), &t);
    let log = EventLog::record(&op);
    let go = op.clone();
    let pending = tokio::spawn(async move { go.go_online([MILANO]).await });
    tokio::time::sleep(run_for).await;
    assert_ne!(op.state(), PresenceState::Online);
    // Heal the backend: the next scheduled attempt gets online.
    *script.answer.lock().unwrap() =
        Answer::Real(TokenSource::new(&s.url(), &s.dev_api_key.clone().unwrap()));
    let avail = tokio::time::timeout(Duration::from_secs(6), pending)
        .await
        .expect("online once getToken works")
        .unwrap()
        .expect("goOnline ok");
    assert_eq!(avail.accepted, vec![MILANO.to_owned()]);
    op.go_offline().await.unwrap();
    (script, log, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_error_retries_on_the_backoff_schedule() {
    let t = Timings::default();
    let (script, log, s) = token_failure_case(Answer::Error, Duration::from_millis(2_500)).await;
    let calls = script.calls();
    // The last call is the healed one.
    let failed = &calls[..calls.len() - 1];
    assert_schedule("getToken error", failed, |i| t.backoff[i.min(2)]);
    // 0, 200, 600, 1400, 2200 ms: five failing calls in 2.5 s, not a loop.
    assert!(failed.len() <= 6, "{} attempts in 2.5 s", failed.len());
    let errors: Vec<_> = log
        .since(calls[0], error_of)
        .into_iter()
        .filter(|(_, (c, _, _))| *c == ErrorCode::TokenFetchFailed)
        .collect();
    assert_eq!(
        errors.len(),
        failed.len(),
        "one error event per failed attempt"
    );
    for (_, (_, message, cause)) in &errors {
        assert!(message.contains("getToken"), "{message}");
        assert_eq!(
            cause.as_deref(),
            Some("backend answered 503 Service Unavailable")
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_timeout_retries_after_timeout_plus_backoff() {
    let t = Timings::default();
    let (script, log, s) = token_failure_case(Answer::Hang, Duration::from_millis(3_300)).await;
    let calls = script.calls();
    let failed = &calls[..calls.len() - 1];
    // Each hanging call is given up after the token timeout (1 s), then the
    // schedule's delay: gaps of 1.2 s, 1.4 s …
    assert_schedule("getToken timeout", failed, |i| {
        t.token_timeout + t.backoff[i.min(2)]
    });
    assert!(failed.len() <= 4);
    let timeouts = log
        .since(calls[0], error_of)
        .into_iter()
        .filter(|(_, (c, _, cause))| {
            *c == ErrorCode::TokenFetchFailed
                && cause.as_deref().is_some_and(|c| c.contains("timed out"))
        })
        .count();
    assert!(
        timeouts >= failed.len() - 1,
        "TOKEN_FETCH_FAILED (timed out) events: {timeouts}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_empty_token_is_a_fetch_failure() {
    let t = Timings::default();
    let (script, log, s) = token_failure_case(Answer::Empty, Duration::from_millis(1_500)).await;
    let calls = script.calls();
    let failed = &calls[..calls.len() - 1];
    assert_schedule("getToken empty", failed, |i| t.backoff[i.min(2)]);
    let errors = log.since(calls[0], error_of);
    assert!(
        errors
            .iter()
            .any(|(_, (c, _, cause))| *c == ErrorCode::TokenFetchFailed
                && cause.as_deref().is_some_and(|c| c.contains("no token"))),
        "{errors:?}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_garbage_is_refused_by_the_server_and_retried_on_schedule() {
    let t = Timings::default();
    let (script, log, s) = token_failure_case(Answer::Garbage, Duration::from_millis(2_000)).await;
    let calls = script.calls();
    let failed = &calls[..calls.len() - 1];
    // Each attempt: connect, hello with garbage, 4002 from the server, then
    // the schedule's delay. Allow the round trip in the tolerance.
    assert_schedule("getToken garbage", failed, |i| t.backoff[i.min(2)]);
    assert!(failed.len() <= 6);
    let errors = log.since(calls[0], error_of);
    let unauthorized = errors
        .iter()
        .filter(|(_, (c, m, _))| *c == ErrorCode::Unauthorized && m.contains("4002"))
        .count();
    assert!(
        unauthorized >= failed.len() - 1,
        "UNAUTHORIZED (4002) per attempt: {errors:?}"
    );
    // The garbage never comes back in an error message.
    assert!(errors.iter().all(|(_, (_, m, c))| !m.contains("DROP TABLE")
        && !c.as_deref().unwrap_or("").contains("DROP TABLE")));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_path_is_slow_not_dead() {
    let s = server().await;
    let key = s.dev_api_key.clone().unwrap();
    let proxy = FaultProxy::start(s.local_addr).await.unwrap();
    // 100 ms each way from the first byte: RTT 200 ms under a 300 ms heartbeat.
    proxy.set(Fault::delay_ms(100), Scope::All);
    let tokens = TokenSource::new(&s.url(), &key);
    let op = operator(
        &proxy.url(),
        &tokens,
        "op-slow",
        &[MILANO],
        &Timings::default(),
    );
    let log = EventLog::record(&op);
    let t0 = Instant::now();
    online(&op, &[MILANO]).await;
    let call = op.dial(SIM_ECHO, MILANO_E164).await.unwrap();
    let info = tokio::time::timeout(
        Duration::from_secs(5),
        call.wait_for(audin_operator::core::CallState::Active),
    )
    .await
    .unwrap();
    assert_eq!(info.state, audin_operator::core::CallState::Active);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    call.hangup();
    call.ended().await;
    let states: Vec<PresenceState> = log
        .since(t0, state_of)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        states,
        [PresenceState::Connecting, PresenceState::Online],
        "no false reconnect"
    );
    assert!(
        log.since(t0, error_of).is_empty(),
        "{:?}",
        log.since(t0, error_of)
    );
    op.go_offline().await.unwrap();
    s.shutdown().await;
}

/// Field note "two tabs fighting": a second session of the same operator
/// replaces the first (4005); the first goes offline with `REPLACED` and
/// does not reconnect, so the two never take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tab_replaces_the_first_without_a_fight() {
    let s = server().await;
    let key = s.dev_api_key.clone().unwrap();
    let proxy = FaultProxy::start(s.local_addr).await.unwrap();
    let tokens = TokenSource::new(&s.url(), &key);
    let t = Timings::default();
    let first = operator(&proxy.url(), &tokens, "op-tabs", &[MILANO], &t);
    let first_log = EventLog::record(&first);
    online(&first, &[MILANO]).await;
    let second = operator(&proxy.url(), &tokens, "op-tabs", &[MILANO], &t);
    let second_log = EventLog::record(&second);
    let t0 = Instant::now();
    online(&second, &[MILANO]).await;
    let replaced = first_log
        .wait(t0, Duration::from_secs(3), |e| match e {
            Event::Error {
                code: ErrorCode::Replaced,
                ..
            } => Some(()),
            _ => None,
        })
        .await;
    assert!(replaced.is_some(), "the first tab is told REPLACED");
    // Several backoff steps later: still offline, the second still online,
    // and only the two original presence connections were ever made.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(first.state(), PresenceState::Offline);
    assert_eq!(second.state(), PresenceState::Online);
    let second_states: Vec<_> = second_log
        .since(t0, state_of)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        second_states,
        [PresenceState::Connecting, PresenceState::Online]
    );
    let presence_conns = proxy
        .connections()
        .iter()
        .filter(|c| c.path.as_deref() == Some(PRESENCE))
        .count();
    assert_eq!(presence_conns, 2, "no reconnect fight");
    assert_eq!(
        metrics(&s.url()).await.unwrap()["audin_operators_online"],
        1.0
    );
    // The survivor takes calls.
    let sid = sim_call(&s.url(), CALLER, MILANO_E164, "tone")
        .await
        .unwrap();
    let offered = second_log
        .wait(t0, Duration::from_secs(3), |e| match e {
            Event::IncomingCall { call } if call.call_sid == sid => Some(()),
            _ => None,
        })
        .await;
    assert!(offered.is_some());
    assert!(
        first_log
            .since(t0, |e| matches!(e, Event::IncomingCall { .. })
                .then_some(()))
            .is_empty()
    );
    second.go_offline().await.unwrap();
    s.shutdown().await;
}

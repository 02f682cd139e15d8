//! The server process is SIGKILLed mid-call and restarted on the same port
//! and database: the SDK reconnects at its first backoff step after the
//! server is back, the interrupted call ends `failed` on the client, its
//! record is closed `failed` at start-up (no record left open), and the
//! records of the calls that finished before the crash are intact.

use std::time::Duration;

use audin_operator::core::{CallState, EndReason, Event, PresenceState};
use audin_testkit::support::*;
use audin_testkit::{Fault, FaultProxy, Scope, ServerOptions, ServerProcess};
use tokio::time::Instant;

const PRESENCE: &str = "/v1/operator/presence";

fn state_of(e: &Event) -> Option<PresenceState> {
    match e {
        Event::PresenceStateChanged { state } => Some(*state),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_call_then_restart_on_the_same_port_and_database() {
    let mut server = ServerProcess::spawn(
        ServerOptions::default()
            .arg("--silence-timeout-ms", 750)
            .arg("--audio-grace-ms", 1_000)
            .arg("--ring-timeout-ms", 3_000),
    )
    .await
    .expect("server starts");
    // A key of the dev account made with the admin CLI: the test does not
    // rely on the dev key (kept across starts since the store seam).
    let out = server
        .admin(&["create-key", "--account", "acc_dev"])
        .await
        .unwrap();
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("api key "))
        .unwrap()
        .trim()
        .to_owned();
    let proxy = FaultProxy::start(server.addr).await.unwrap();
    let tokens = TokenSource::new(&server.url(), &key);
    let t = Timings::default();
    let op = operator(&proxy.url(), &tokens, "op-crash", &[MILANO], &t);
    let log = EventLog::record(&op);
    tokio::time::timeout(Duration::from_secs(5), op.go_online([MILANO]))
        .await
        .unwrap()
        .unwrap();

    // Two calls that finish before the crash: one outbound hung up by the
    // operator, one inbound hung up by the caller.
    let call = op.dial(SIM_ECHO, MILANO_E164).await.unwrap();
    let done_out = call.call_sid();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), call.wait_for(CallState::Active))
            .await
            .unwrap()
            .state,
        CallState::Active
    );
    call.hangup();
    call.ended().await;
    // The server has released the operator before the next offer.
    let released = eventually(Duration::from_secs(3), async || {
        live_calls(&metrics(&server.url()).await.unwrap()) == 0.0
    })
    .await;
    assert!(released);
    let done_in = sim_call(&server.url(), CALLER, MILANO_E164, "tone")
        .await
        .unwrap();
    let offered = log
        .wait(
            Instant::now() - Duration::from_secs(1),
            Duration::from_secs(5),
            |e| match e {
                Event::IncomingCall { call } if call.call_sid == done_in => Some(()),
                _ => None,
            },
        )
        .await;
    assert!(offered.is_some(), "inbound offer");
    let inbound = op.call(&done_in).expect("current call");
    inbound.accept();
    tokio::time::timeout(Duration::from_secs(5), inbound.wait_for(CallState::Active))
        .await
        .unwrap();
    sim_hangup(&server.url(), &done_in).await.unwrap();
    assert_eq!(
        inbound.ended().await.end_reason,
        Some(EndReason::RemoteHangup)
    );

    // The call the crash interrupts.
    let live = op.dial(SIM_TONE, MILANO_E164).await.unwrap();
    let live_sid = live.call_sid();
    tokio::time::timeout(Duration::from_secs(5), live.wait_for(CallState::Active))
        .await
        .unwrap();
    let open = call_record(&server.url(), &key, &live_sid)
        .await
        .unwrap()
        .unwrap();
    assert!(
        open["endedAt"].is_null(),
        "live call's record is open: {open}"
    );

    let killed_at = Instant::now();
    server.kill().await;
    // The client notices (sockets closed) and the call cannot be kept.
    let ended = tokio::time::timeout(Duration::from_secs(5), live.ended())
        .await
        .expect("the interrupted call ends on the client");
    assert_eq!(ended.end_reason, Some(EndReason::Failed));
    let ended_after = killed_at.elapsed();
    println!("interrupted call ended failed {ended_after:?} after SIGKILL");
    assert_eq!(op.state(), PresenceState::Reconnecting);

    // Down for a while. The token backend here is the same server, so each
    // reconnect attempt starts with a getToken that fails; the SDK keeps to
    // its schedule (200, 400, 800, 800 ms …), no tight loop.
    let call_gone_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let all_down = tokens.attempts_since(killed_at).len();
    println!("{all_down} getToken calls while down (presence and audio reattach)");
    assert!(all_down <= 12, "no tight loop: {all_down} in 3.5 s");
    // Once the call is over only presence retries remain: by then the
    // schedule is at its last step (800 ms).
    let down: Vec<Instant> = tokens
        .attempts_since(call_gone_at)
        .into_iter()
        .map(|(at, ok)| {
            assert!(!ok, "no token while the server is down");
            at
        })
        .collect();
    let gaps: Vec<Duration> = down.windows(2).map(|w| w[1] - w[0]).collect();
    println!(
        "{} presence attempts in the last 2.5 s down, gaps {gaps:?}",
        down.len()
    );
    assert!(
        (2..=4).contains(&down.len()),
        "{} attempts in 2.5 s",
        down.len()
    );
    for (i, gap) in gaps.iter().enumerate() {
        let want = t.backoff[2];
        assert!(
            *gap + Duration::from_millis(5) >= want && *gap <= want + Duration::from_millis(250),
            "gap {i} {gap:?}, schedule {want:?}"
        );
    }

    server.restart().await.expect("restarts on the same port");
    let ready_at = Instant::now();
    let (online_at, _) = log
        .wait(ready_at, Duration::from_secs(5), |e| {
            (state_of(e) == Some(PresenceState::Online)).then_some(())
        })
        .await
        .expect("back online");
    let back = online_at - ready_at;
    println!("online again {back:?} after the server printed its ready line");
    // Within one step of the schedule (the longest, 800 ms) plus the
    // handshake.
    assert!(
        back <= t.backoff[2] + Duration::from_millis(400),
        "{back:?}"
    );
    // The first attempt made once the server was back succeeded (it may
    // have started a moment before the ready line was read): no failed
    // attempt after the restart.
    let since_kill = tokens.attempts_since(killed_at);
    let first_ok = since_kill
        .iter()
        .position(|(_, ok)| *ok)
        .expect("a token after the restart");
    assert!(
        since_kill[..first_ok].iter().all(|(at, _)| *at < ready_at),
        "a failed attempt after the restart: {since_kill:?}"
    );
    let presence_after: Vec<_> = proxy
        .connections()
        .into_iter()
        .filter(|c| c.accepted_at >= ready_at && c.path.as_deref() == Some(PRESENCE))
        .collect();
    assert!(!presence_after.is_empty());

    // Records: the interrupted call closed `failed` at start-up, nothing
    // left open, the finished calls intact.
    let records = call_records(&server.url(), &key, 100).await.unwrap();
    let find = |sid: &str| records.iter().find(|r| r["callSid"] == sid).cloned();
    let crashed = find(&live_sid).expect("interrupted call's record kept");
    assert_eq!(crashed["endReason"], "failed", "{crashed}");
    assert!(crashed["endedAt"].is_string());
    assert!(
        crashed["answeredAt"].is_string(),
        "answer time kept: {crashed}"
    );
    assert!(
        records.iter().all(|r| !r["endedAt"].is_null()),
        "no record left open: {records:?}"
    );
    assert_eq!(
        find(&done_out).expect("outbound kept")["endReason"],
        "hangup"
    );
    assert_eq!(
        find(&done_in).expect("inbound kept")["endReason"],
        "remote_hangup"
    );
    assert!(
        server
            .logs()
            .contains("closed call records left open by a crash")
    );

    // And the service works again end to end.
    let again = op.dial(SIM_ECHO, MILANO_E164).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), again.wait_for(CallState::Active))
        .await
        .unwrap();
    again.hangup();
    again.ended().await;
    proxy.set(Fault::Pass, Scope::All);
    op.go_offline().await.unwrap();
    server.kill().await;
}

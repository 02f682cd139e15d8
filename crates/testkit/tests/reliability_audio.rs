//! The call's audio socket under faults: reset mid-call → reattached inside
//! the grace window with no `callEnded` (`callReconnecting` /
//! `callReconnected` seen) and audio flowing again; black-holed (or stalled)
//! past the window → the call ends `failed` on both sides.
//!
//! Server in-process (audio grace 1 s), SDK reattach window 1 s, through the
//! fault proxy. The application sends a frame every 20 ms, like a
//! microphone.

use std::time::Duration;

use audin_operator::core::{CallState, EndReason, Event};
use audin_operator::{AudinOperator, Call};
use audin_server::{Server, ServerConfig, ServerHandle};
use audin_testkit::support::*;
use audin_testkit::{Fault, FaultProxy, Scope};
use tokio::time::Instant;

const AUDIO: &str = "/v1/operator/audio";

async fn server(grace_ms: u64) -> ServerHandle {
    let mut c = ServerConfig::for_tests();
    c.silence_timeout = Duration::from_millis(750);
    c.audio_grace = Duration::from_millis(grace_ms);
    c.audio_silence_timeout = Duration::from_millis(750);
    c.ring_timeout = Duration::from_millis(3_000);
    Server::start(c).await.expect("server starts")
}

struct Setup {
    s: ServerHandle,
    key: String,
    proxy: FaultProxy,
    op: AudinOperator,
    log: EventLog,
    call: Call,
}

/// An answered outbound call to the echo number, with a 50 fps "microphone".
async fn live_call(name: &str) -> Setup {
    live_call_with(name, 1_000, 1_000).await
}

/// The same with the server's grace and the SDK's reattach window given.
async fn live_call_with(name: &str, grace_ms: u64, window_ms: u64) -> Setup {
    let s = server(grace_ms).await;
    let key = s.dev_api_key.clone().unwrap();
    let proxy = FaultProxy::start(s.local_addr).await.unwrap();
    let tokens = TokenSource::new(&s.url(), &key);
    let t = Timings {
        reattach_window: Duration::from_millis(window_ms),
        ..Timings::default()
    };
    let op = operator(&proxy.url(), &tokens, name, &[MILANO], &t);
    let log = EventLog::record(&op);
    tokio::time::timeout(Duration::from_secs(5), op.go_online([MILANO]))
        .await
        .unwrap()
        .unwrap();
    let call = op.dial(SIM_ECHO, MILANO_E164).await.unwrap();
    let info = tokio::time::timeout(Duration::from_secs(5), call.wait_for(CallState::Active))
        .await
        .unwrap();
    assert_eq!(info.state, CallState::Active);
    let audio = call.audio();
    let mic = call.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut n = 0u8;
        while mic.info().state != CallState::Ended {
            tick.tick().await;
            n = n.wrapping_add(1);
            audio.send_frame([n | 1; 160]);
        }
    });
    Setup {
        s,
        key,
        proxy,
        op,
        log,
        call,
    }
}

/// Waits for `n` frames from the far end.
async fn hears(call: &Call, n: usize, limit: Duration) -> bool {
    let audio = call.audio();
    tokio::time::timeout(limit, async {
        for _ in 0..n {
            if audio.recv_frame().await.is_none() {
                return false;
            }
        }
        true
    })
    .await
    .unwrap_or(false)
}

fn call_event(e: &Event) -> Option<&'static str> {
    match e {
        Event::CallReconnecting { .. } => Some("reconnecting"),
        Event::CallReconnected { .. } => Some("reconnected"),
        Event::CallEnded { .. } => Some("ended"),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_reset_mid_call_is_reattached_inside_the_grace_window() {
    let Setup {
        s,
        key,
        proxy,
        op,
        log,
        call,
    } = live_call("op-audio-reset").await;
    assert!(
        hears(&call, 10, Duration::from_secs(3)).await,
        "echo before the fault"
    );
    let sid = call.call_sid();

    let fault_at = Instant::now();
    proxy.set_for(AUDIO, Fault::Reset, Scope::Existing);
    let (reconnected_at, _) = log
        .wait(fault_at, Duration::from_secs(3), |e| {
            matches!(e, Event::CallReconnected { .. }).then_some(())
        })
        .await
        .expect("callReconnected");
    let gap = reconnected_at - fault_at;
    println!("audio reattached {gap:?} after the reset");
    assert!(
        gap < Duration::from_millis(1_000),
        "inside the grace window: {gap:?}"
    );
    let seen: Vec<&str> = log
        .since(fault_at, call_event)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(seen, ["reconnecting", "reconnected"], "no callEnded");
    // Two audio sockets were used: the reset one and the new one.
    assert_eq!(
        proxy
            .connections()
            .iter()
            .filter(|c| c.path.as_deref() == Some(AUDIO))
            .count(),
        2
    );
    // Audio flows again, the call stays up past the grace window.
    assert!(
        hears(&call, 25, Duration::from_secs(3)).await,
        "echo after reattach"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(call.info().state, CallState::Active);
    let rec = call_record(&s.url(), &key, &sid).await.unwrap().unwrap();
    assert!(rec["endedAt"].is_null(), "still live on the server: {rec}");

    call.hangup();
    assert_eq!(call.ended().await.end_reason, Some(EndReason::Hangup));
    let closed = eventually(Duration::from_secs(3), async || {
        call_record(&s.url(), &key, &sid).await.unwrap().unwrap()["endReason"] == "hangup"
    })
    .await;
    assert!(closed);
    op.go_offline().await.unwrap();
    s.shutdown().await;
}

/// A silent audio path (black hole or stall, new audio connections too)
/// fails the call on both sides.
async fn silent_audio_path_fails_the_call_on_both_sides(fault: Fault) {
    let Setup {
        s,
        key,
        proxy,
        op,
        log,
        call,
    } = live_call("op-audio-void").await;
    assert!(hears(&call, 10, Duration::from_secs(3)).await);
    let sid = call.call_sid();
    let fault_at = Instant::now();
    // The audio path goes silent for good, new audio connections too;
    // presence is untouched.
    proxy.set_for(AUDIO, fault, Scope::All);
    // The server's audio silence timeout (750 ms), its close handshake
    // (at most 1 s, never answered through a black hole), then the grace
    // window (1 s): about 2.75 s.
    let ended = tokio::time::timeout(Duration::from_secs(5), call.ended()).await;
    let info = ended.expect("the call ends once audio is gone past the window");
    let took = fault_at.elapsed();
    println!("call ended {took:?} after the audio path went silent");
    assert_eq!(info.end_reason, Some(EndReason::Failed));
    assert!(
        took <= Duration::from_millis(750 + 1_000 + 1_000 + 500),
        "{took:?}"
    );
    let (_, reason) = log
        .wait(fault_at, Duration::from_secs(1), |e| match e {
            Event::CallEnded { call } => Some(call.end_reason),
            _ => None,
        })
        .await
        .expect("callEnded event");
    assert_eq!(reason, Some(EndReason::Failed));
    let closed = eventually(Duration::from_secs(3), async || {
        call_record(&s.url(), &key, &sid).await.unwrap().unwrap()["endReason"] == "failed"
    })
    .await;
    assert!(closed, "the server record ends failed");
    op.go_offline().await.unwrap();
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_black_holed_past_the_window_fails_on_both_sides() {
    silent_audio_path_fails_the_call_on_both_sides(Fault::BlackHole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_stalled_past_the_window_fails_on_both_sides() {
    silent_audio_path_fails_the_call_on_both_sides(Fault::Stall).await;
}

/// What does work today: the audio path is refused outright (reset of the
/// live socket, every reattach refused) → `failed` on both sides. The SDK's
/// reattach window (1.5 s) outlasts the server's grace (1 s), so the server
/// ends the call and tells the client (see the next test for the other
/// order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_refused_past_the_window_fails_on_both_sides() {
    let Setup {
        s,
        key,
        proxy,
        op,
        log,
        call,
    } = live_call_with("op-audio-refused", 1_000, 1_500).await;
    assert!(hears(&call, 10, Duration::from_secs(3)).await);
    let sid = call.call_sid();
    let fault_at = Instant::now();
    proxy.set_for(AUDIO, Fault::Reset, Scope::All);
    let info = tokio::time::timeout(Duration::from_secs(4), call.ended())
        .await
        .expect("the call ends after the reattach window");
    let took = fault_at.elapsed();
    println!("call ended failed {took:?} after the audio path was cut");
    assert_eq!(info.end_reason, Some(EndReason::Failed));
    assert!(
        took >= Duration::from_millis(900),
        "not before the window: {took:?}"
    );
    // The event log may trail the call handle's state by a moment.
    log.wait(fault_at, Duration::from_secs(1), |e| {
        matches!(e, Event::CallEnded { .. }).then_some(())
    })
    .await
    .expect("callEnded event");
    let events: Vec<&str> = log
        .since(fault_at, call_event)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    // One reconnecting (more if a reattach got as far as a socket before
    // the reset), never reconnected, then exactly one ended.
    assert_eq!(events.first(), Some(&"reconnecting"), "{events:?}");
    assert_eq!(events.last(), Some(&"ended"), "{events:?}");
    assert!(!events.contains(&"reconnected"), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| **e == "ended").count(),
        1,
        "{events:?}"
    );
    let closed = eventually(Duration::from_secs(3), async || {
        call_record(&s.url(), &key, &sid).await.unwrap().unwrap()["endReason"] == "failed"
    })
    .await;
    assert!(closed, "the server record ends failed");
    // Presence was never touched: still online and free for the next call.
    assert_eq!(op.state(), audin_operator::core::PresenceState::Online);
    proxy.set(Fault::Pass, Scope::All);
    let next = op.dial(SIM_ECHO, MILANO_E164).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), next.wait_for(CallState::Active))
        .await
        .unwrap();
    next.hangup();
    op.go_offline().await.unwrap();
    s.shutdown().await;
}

/// The SDK gives up first (its reattach window, 1 s, is shorter than the
/// server's grace, 3 s; with equal windows, as in the defaults, it is a
/// race): the client reports `failed`, and the record must say `failed`
/// too (finding R2: the SDK used to send `hangup`, the only reason a client
/// could send then, so the record said the operator hung up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_given_up_by_the_sdk_is_recorded_failed() {
    let Setup {
        s,
        key,
        proxy,
        op,
        log: _,
        call,
    } = live_call_with("op-audio-giveup", 3_000, 1_000).await;
    assert!(hears(&call, 10, Duration::from_secs(3)).await);
    let sid = call.call_sid();
    proxy.set_for(AUDIO, Fault::Reset, Scope::All);
    let info = tokio::time::timeout(Duration::from_secs(4), call.ended())
        .await
        .expect("the SDK gives up after its window");
    assert_eq!(info.end_reason, Some(EndReason::Failed));
    let mut reason = serde_json::Value::Null;
    let _ = eventually(Duration::from_secs(4), async || {
        reason = call_record(&s.url(), &key, &sid).await.unwrap().unwrap()["endReason"].clone();
        !reason.is_null()
    })
    .await;
    assert_eq!(reason, "failed", "client and record disagree");
    op.go_offline().await.unwrap();
    s.shutdown().await;
}

/// The client's half of the audio liveness rule (protocol: "a client that
/// receives no frame for 2 s treats its audio socket as dead and
/// reattaches"): the live audio socket is black-holed while new ones pass,
/// and the server's own silence timeout is long (10 s), so only the SDK can
/// notice. It must reattach inside the window, with no callEnded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_notices_a_silent_audio_path_and_reattaches() {
    let s = {
        let mut c = ServerConfig::for_tests();
        c.audio_grace = Duration::from_millis(5_000);
        c.audio_silence_timeout = Duration::from_millis(10_000);
        c.ring_timeout = Duration::from_millis(3_000);
        Server::start(c).await.unwrap()
    };
    let key = s.dev_api_key.clone().unwrap();
    let proxy = FaultProxy::start(s.local_addr).await.unwrap();
    let tokens = TokenSource::new(&s.url(), &key);
    let t = Timings {
        reattach_window: Duration::from_millis(5_000),
        ..Timings::default()
    };
    let op = operator(&proxy.url(), &tokens, "op-audio-deaf", &[MILANO], &t);
    let log = EventLog::record(&op);
    tokio::time::timeout(Duration::from_secs(5), op.go_online([MILANO]))
        .await
        .unwrap()
        .unwrap();
    let call = op.dial(SIM_TONE, MILANO_E164).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), call.wait_for(CallState::Active))
        .await
        .unwrap();
    assert!(hears(&call, 10, Duration::from_secs(3)).await);
    let fault_at = Instant::now();
    proxy.set_for(AUDIO, Fault::BlackHole, Scope::Existing);
    let reconnecting = log
        .wait(fault_at, Duration::from_millis(3_000), |e| {
            matches!(e, Event::CallReconnecting { .. }).then_some(())
        })
        .await;
    let (at, _) = reconnecting.expect("the SDK notices the silent audio socket");
    println!(
        "SDK noticed the silent audio path after {:?}",
        at - fault_at
    );
    // No frame for 2 s (counted from the last frame, just before the fault).
    assert!(
        at - fault_at <= Duration::from_millis(2_500),
        "{:?}",
        at - fault_at
    );
    let reconnected = log
        .wait(fault_at, Duration::from_secs(3), |e| {
            matches!(e, Event::CallReconnected { .. }).then_some(())
        })
        .await;
    assert!(reconnected.is_some());
    assert!(
        hears(&call, 10, Duration::from_secs(2)).await,
        "audio again"
    );
    assert_eq!(call.info().state, CallState::Active);
    call.hangup();
    op.go_offline().await.unwrap();
    s.shutdown().await;
}

/// An answered echo call whose application sends nothing (no microphone
/// yet, or a bot that only listens): the protocol says the server relays
/// the far end every 20 ms while a call is answered, so the SDK's
/// receive-side liveness must not fire (the sim's echo sends silence while
/// it has heard nothing), and the driver's pings keep the server's side of
/// the check quiet too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_echo_call_is_not_reattached_in_a_loop() {
    let s = server(1_000).await;
    let key = s.dev_api_key.clone().unwrap();
    let tokens = TokenSource::new(&s.url(), &key);
    let op = operator(&s.url(), &tokens, "op-idle", &[MILANO], &Timings::default());
    let log = EventLog::record(&op);
    tokio::time::timeout(Duration::from_secs(5), op.go_online([MILANO]))
        .await
        .unwrap()
        .unwrap();
    let call = op.dial(SIM_ECHO, MILANO_E164).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), call.wait_for(CallState::Active))
        .await
        .unwrap();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let events: Vec<&str> = log
        .since(t0, call_event)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert!(events.is_empty(), "an idle call is left alone: {events:?}");
    assert_eq!(call.info().state, CallState::Active);
    call.hangup();
    op.go_offline().await.unwrap();
    s.shutdown().await;
}

/// The server's end of the TCP connection from `client`, found among this
/// process's file descriptors (the server runs in-process): whether it has
/// TCP_NODELAY set.
fn server_end_nodelay(client: std::net::SocketAddr) -> Option<bool> {
    use std::os::fd::BorrowedFd;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        {
            continue;
        }
        // SAFETY: the descriptor is only borrowed for the calls below, while
        // the server still holds the connection open (the client is alive).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        if peer == Some(client) {
            return sock.tcp_nodelay().ok();
        }
    }
    None
}

/// Every connection the server accepts writes at once (TCP_NODELAY): with
/// Nagle's algorithm a 160-byte audio frame can wait for the ACK of the
/// previous write, which the client piggybacks on its own next frame 20 ms
/// later. The load bench saw that as a constant extra 20 ms of round trip
/// on 8-13 of 40 calls (see docs/performance-load.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_writes_audio_frames_at_once_without_nagle() {
    let s = server(1_000).await;
    let client = tokio::net::TcpStream::connect(s.local_addr).await.unwrap();
    let ours = client.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let nodelay = loop {
        if let Some(v) = server_end_nodelay(ours) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the server never accepted {ours}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        nodelay,
        "the server's socket for {ours} has Nagle's algorithm on"
    );
    drop(client);
    s.shutdown().await;
}

//! The tokio driver against a real in-process `audin-server`: inbound and
//! outbound calls through the sim network, with audio checked both ways.

mod native_support;

use audin_operator::core::{CallInfo, CallState, EndReason, ErrorCode, Event};
use audin_operator::{AudinOperator, Call};
use native_support::*;
use std::time::Duration;
use tokio::sync::broadcast;

async fn incoming(op: &AudinOperator, events: &mut broadcast::Receiver<Event>) -> Call {
    let info = wait_event(events, |e| match e {
        Event::IncomingCall { call } => Some(call.clone()),
        _ => None,
    })
    .await;
    assert_eq!(info.state, CallState::Ringing);
    assert_eq!(info.from, CALLER);
    let call = op
        .call(&info.call_sid)
        .expect("the offer is the current call");
    assert_eq!(op.current_call().unwrap().call_sid(), info.call_sid);
    call
}

async fn ended_with(events: &mut broadcast::Receiver<Event>, sid: &str) -> CallInfo {
    wait_event(events, |e| match e {
        Event::CallEnded { call } if call.call_sid == sid => Some(call.clone()),
        _ => None,
    })
    .await
}

async fn started(events: &mut broadcast::Receiver<Event>, sid: &str) -> CallInfo {
    wait_event(events, |e| match e {
        Event::CallStarted { call } if call.call_sid == sid => Some(call.clone()),
        _ => None,
    })
    .await
}

/// Asserts the far end's audio is a 440 Hz tone.
async fn hears_440(call: &Call) {
    let audio = call.audio();
    // Skip the first frames (start-up), then measure half a second.
    hear(&audio, 10).await;
    let heard = hear(&audio, 25).await;
    assert!(rms(&heard) > 1_000.0, "tone level {}", rms(&heard));
    let hz = zero_crossing_hz(&heard);
    assert!((400.0..480.0).contains(&hz), "tone at {hz} Hz");
}

#[tokio::test]
async fn inbound_accept_audio_both_ways_then_hangup() {
    let server = start_server(server_config()).await;
    let url = server.url();
    let op = operator(&url, "op-in");
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    let sid = sim_call(&url, MILANO_E164, "tone").await;
    let call = incoming(&op, &mut events).await;
    assert_eq!(call.call_sid(), sid);
    call.accept();
    let info = started(&mut events, &sid).await;
    assert_eq!(info.state, CallState::Active);
    hears_440(&call).await;
    // The far end hears us.
    play_tone(call.audio(), 1_000.0, 25).await.unwrap();
    eventually("the sim to hear our frames", async || {
        sim_status(&url, &sid).await["framesHeard"]
            .as_u64()
            .unwrap()
            >= 20
    })
    .await;
    call.hangup();
    let info = ended_with(&mut events, &sid).await;
    assert_eq!(info.end_reason, Some(EndReason::Hangup));
    assert_eq!(call.ended().await.end_reason, Some(EndReason::Hangup));
    assert!(op.current_call().is_none());
    // The audio queue closes with the call (after what was already buffered).
    let drained = tokio::time::timeout(WAIT, async {
        while call.audio().recv_frame().await.is_some() {}
    });
    drained.await.expect("audio closes with the call");
    eventually("the sim to see the hangup", async || {
        sim_status(&url, &sid).await["state"] == "ended"
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn inbound_reject() {
    let server = start_server(server_config()).await;
    let url = server.url();
    let op = operator(&url, "op-reject");
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    let sid = sim_call(&url, MILANO_E164, "tone").await;
    incoming(&op, &mut events).await.reject();
    let info = ended_with(&mut events, &sid).await;
    assert_eq!(info.end_reason, Some(EndReason::Rejected));
    eventually("the sim to see the rejection", async || {
        sim_status(&url, &sid).await["endReason"] == "rejected"
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn taken_by_other_between_two_operators() {
    let server = start_server(server_config()).await;
    let url = server.url();
    let (a, b) = (operator(&url, "op-a"), operator(&url, "op-b"));
    let (mut events_a, mut events_b) = (a.events(), b.events());
    a.go_online([MILANO]).await.unwrap();
    b.go_online([MILANO]).await.unwrap();
    let sid = sim_call(&url, MILANO_E164, "tone").await;
    let call_a = incoming(&a, &mut events_a).await;
    incoming(&b, &mut events_b).await;
    call_a.accept();
    started(&mut events_a, &sid).await;
    let lost = ended_with(&mut events_b, &sid).await;
    assert_eq!(lost.end_reason, Some(EndReason::TakenByOther));
    assert!(b.current_call().is_none());
    call_a.hangup();
    server.shutdown().await;
}

#[tokio::test]
async fn unanswered_offer_ends_no_answer() {
    let server = start_server(server_config()).await;
    let url = server.url();
    let op = operator(&url, "op-noanswer");
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    let sid = sim_call(&url, MILANO_E164, "tone").await;
    incoming(&op, &mut events).await;
    let info = ended_with(&mut events, &sid).await;
    assert_eq!(info.end_reason, Some(EndReason::NoAnswer));
    server.shutdown().await;
}

#[tokio::test]
async fn caller_hangs_up_remote_hangup() {
    let server = start_server(server_config()).await;
    let url = server.url();
    let op = operator(&url, "op-remote");
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    let sid = sim_call(&url, MILANO_E164, "silence").await;
    incoming(&op, &mut events).await.accept();
    started(&mut events, &sid).await;
    sim_hangup(&url, &sid).await;
    let info = ended_with(&mut events, &sid).await;
    assert_eq!(info.end_reason, Some(EndReason::RemoteHangup));
    // Exactly once, though both sockets report the end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, Event::CallEnded { .. }),
            "second callEnded"
        );
    }
    server.shutdown().await;
}

async fn dial(op: &AudinOperator, to: &str) -> (Call, String) {
    let call = op.dial(to, MILANO_E164).await.expect("dial accepted");
    let info = call.info();
    assert_eq!(info.state, CallState::Connecting);
    assert_eq!(info.to, to);
    let sid = info.call_sid;
    (call, sid)
}

#[tokio::test]
async fn outbound_to_every_sim_number() {
    let server = start_server(server_config()).await;
    let url = server.url();
    let op = operator(&url, "op-out");
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();

    // 0001: answers and echoes; DTMF reaches the sim.
    let (call, sid) = dial(&op, "+15550100001").await;
    started(&mut events, &sid).await;
    let player = play_tone(call.audio(), 1_000.0, 50);
    let heard = hear(&call.audio(), 35).await;
    assert!(rms(&heard[160 * 15..]) > 1_000.0, "echo of our tone");
    player.await.unwrap();
    for digit in ["5", "#", "0"] {
        call.send_dtmf(digit).await.unwrap();
    }
    let err = call.send_dtmf("x").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidDtmf);
    eventually("the sim to receive the DTMF", async || {
        sim_status(&url, &sid).await["dtmf"] == "5#0"
    })
    .await;
    call.hangup();
    assert_eq!(
        ended_with(&mut events, &sid).await.end_reason,
        Some(EndReason::Hangup)
    );

    // 0002: answers with a 440 Hz tone.
    let (call, sid) = dial(&op, "+15550100002").await;
    started(&mut events, &sid).await;
    hears_440(&call).await;
    call.hangup();
    ended_with(&mut events, &sid).await;

    // 0003 busy, 0005 declines, 0006 carrier error, 0004 no answer,
    // 0007 hangs up after 3 s.
    for (number, reason) in [
        ("+15550100003", EndReason::Rejected),
        ("+15550100005", EndReason::Rejected),
        ("+15550100006", EndReason::Failed),
        ("+15550100004", EndReason::NoAnswer),
        ("+15550100007", EndReason::RemoteHangup),
    ] {
        let (call, sid) = dial(&op, number).await;
        let info = ended_with(&mut events, &sid).await;
        assert_eq!(info.end_reason, Some(reason), "{number}");
        assert_eq!(call.info().state, CallState::Ended);
    }

    // Any other number answers after 1 s and echoes.
    let (call, sid) = dial(&op, "+442079460000").await;
    started(&mut events, &sid).await;
    call.hangup();
    ended_with(&mut events, &sid).await;
    server.shutdown().await;
}

#[tokio::test]
async fn dial_while_busy_and_while_offline_fail_at_once() {
    let server = start_server(server_config()).await;
    let url = server.url();
    let op = operator(&url, "op-busy");
    let err = op.dial("+15550100001", MILANO_E164).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotOnline);
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    let err = op.dial("+15550100001", "+15550000000").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NumberNotOwned, "server-side refusal");
    let (call, sid) = dial(&op, "+15550100001").await;
    let err = op.dial("+15550100002", MILANO_E164).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::OperatorBusy);
    call.hangup();
    ended_with(&mut events, &sid).await;
    server.shutdown().await;
}

#[tokio::test]
async fn go_offline_during_a_call_ends_it_offline() {
    let server = start_server(server_config()).await;
    let url = server.url();
    let op = operator(&url, "op-offline");
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    let (_call, sid) = dial(&op, "+15550100001").await;
    started(&mut events, &sid).await;
    op.go_offline().await.unwrap();
    assert_eq!(
        ended_with(&mut events, &sid).await.end_reason,
        Some(EndReason::Offline)
    );
    eventually("the sim to see the end", async || {
        sim_status(&url, &sid).await["state"] == "ended"
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn audio_leg_cut_is_reattached_and_the_call_goes_on() {
    let server = start_server(server_config()).await;
    let proxy = Proxy::start(server.local_addr).await;
    let op = operator(&proxy.url(), "op-reattach");
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    let sid = sim_call(&server.url(), MILANO_E164, "tone").await;
    let call = incoming(&op, &mut events).await;
    call.accept();
    started(&mut events, &sid).await;
    hears_440(&call).await;

    assert_eq!(proxy.cut("/v1/operator/audio"), 1);
    wait_event(&mut events, |e| {
        matches!(e, Event::CallReconnecting { call } if call.call_sid == sid).then_some(())
    })
    .await;
    wait_event(&mut events, |e| {
        matches!(e, Event::CallReconnected { call } if call.call_sid == sid).then_some(())
    })
    .await;
    assert_eq!(call.info().state, CallState::Active);
    // Audio flows again on the new socket.
    while call.audio().try_recv_frame().is_some() {}
    hears_440(&call).await;
    call.hangup();
    assert_eq!(
        ended_with(&mut events, &sid).await.end_reason,
        Some(EndReason::Hangup)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn audio_that_cannot_reattach_ends_the_call_failed() {
    // The server would wait 5 s; the client gives up after its own 1 s window.
    let mut config = server_config();
    config.audio_grace = Duration::from_millis(5_000);
    let server = start_server(config).await;
    let proxy = Proxy::start(server.local_addr).await;
    let op = operator_with(&proxy.url(), "op-lost", |b| {
        b.audio_reattach_window(Duration::from_millis(1_000))
    });
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    let sid = sim_call(&server.url(), MILANO_E164, "tone").await;
    let call = incoming(&op, &mut events).await;
    call.accept();
    started(&mut events, &sid).await;
    assert_eq!(proxy.block("/v1/operator/audio"), 1);
    wait_event(&mut events, |e| {
        matches!(
            e,
            Event::Error {
                code: ErrorCode::AudioConnectionLost,
                ..
            }
        )
        .then_some(())
    })
    .await;
    let info = ended_with(&mut events, &sid).await;
    assert_eq!(info.end_reason, Some(EndReason::Failed));
    server.shutdown().await;
}

#[tokio::test]
async fn listen_only_call_is_kept_alive_by_pings() {
    // The service drops an audio socket on which nothing arrives; a bot that
    // only listens sends no frames, so the driver pings instead.
    let mut config = server_config();
    config.audio_silence_timeout = Duration::from_millis(1_200);
    let server = start_server(config).await;
    let op = operator(&server.url(), "op-listen");
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    let sid = sim_call(&server.url(), MILANO_E164, "tone").await;
    let call = incoming(&op, &mut events).await;
    call.accept();
    started(&mut events, &sid).await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event,
                Event::CallReconnecting { .. } | Event::CallEnded { .. }
            ),
            "a silent sender must not lose its audio socket: {event:?}"
        );
    }
    assert_eq!(call.info().state, CallState::Active);
    hears_440(&call).await;
    call.hangup();
    server.shutdown().await;
}

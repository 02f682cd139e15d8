//! Inbound calls: offers, first accept wins, reject, ring timeout, caller
//! hangup, nobody online, late accepts.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn accept_then_audio_then_operator_hangup() {
    let s = TestServer::start().await;
    let mut op = s.online("op-1", &[MILANO]).await;
    let sid = s.sim_call(MILANO_E164, "tone").await;
    let offer = op.expect("callOffer").await;
    assert_eq!(offer["callSid"], sid.as_str());
    assert_eq!(offer["from"], "+14155550100");
    assert_eq!(offer["to"], MILANO_E164);
    assert_eq!(offer["phoneNumberId"], MILANO);
    op.send_json(json!({"type": "accept", "callSid": sid}))
        .await;
    op.expect("callAccepted").await;
    let (mut audio, attached) = s.attach("op-1", &sid).await;
    assert_eq!(attached["answered"], true);
    assert_eq!(attached["resumed"], false);
    // The caller's tone arrives as 160-byte frames.
    for _ in 0..3 {
        let f = audio.frame().await;
        assert_eq!(f.len(), 160);
        assert!(f.iter().any(|&b| b != 0xFF), "tone, not silence");
    }
    // What the operator sends reaches the caller.
    for _ in 0..5 {
        audio.send_binary(vec![0x55; 160]).await;
    }
    s.sim_until(&sid, |v| v["framesHeard"].as_u64() >= Some(5))
        .await;
    // A reconnecting presence sees the active call.
    let (mut again, welcome) = s.presence("op-1", &[MILANO]).await;
    assert_eq!(welcome["activeCall"]["callSid"], sid.as_str());
    assert_eq!(welcome["activeCall"]["answered"], true);
    op.expect_error("REPLACED").await;
    // Hang up from the audio socket.
    audio.send_json(json!({"type": "hangup"})).await;
    let ended = audio.expect("ended").await;
    assert_eq!(ended["reason"], "hangup");
    assert_eq!(audio.closed().await, Some(1000));
    let ce = again.expect("callEnded").await;
    assert_eq!(
        (ce["callSid"].as_str(), ce["reason"].as_str()),
        (Some(sid.as_str()), Some("hangup"))
    );
    let rec = s.ended_record(&sid).await;
    assert_eq!(rec["endReason"], "hangup");
    assert_eq!(rec["direction"], "inbound");
    assert_eq!(rec["operatorRef"], "op-1");
    assert!(rec["answeredAt"].is_string());
    let st = s.sim_until(&sid, |v| v["state"] == "ended").await;
    assert_eq!(st["endReason"], "hangup");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn first_accept_wins_and_others_get_taken_by_other() {
    let s = TestServer::start().await;
    let mut a = s.online("op-a", &[MILANO]).await;
    let mut b = s.online("op-b", &[MILANO]).await;
    let mut roma_only = s.online("op-c", &[ROMA]).await;
    let sid = s.sim_call(MILANO_E164, "tone").await;
    a.expect("callOffer").await;
    b.expect("callOffer").await;
    b.send_json(json!({"type": "accept", "callSid": sid})).await;
    b.expect("callAccepted").await;
    let ce = a.expect("callEnded").await;
    assert_eq!(ce["reason"], "taken_by_other");
    // A late accept is told the same.
    a.send_json(json!({"type": "accept", "callSid": sid})).await;
    assert_eq!(a.expect("callEnded").await["reason"], "taken_by_other");
    // The busy operator is not offered the next call; the free one is.
    let sid2 = s.sim_call(MILANO_E164, "silence").await;
    let offer = a.expect("callOffer").await;
    assert_eq!(offer["callSid"], sid2.as_str());
    // op-c (Roma only) heard nothing.
    roma_only.send_json(json!({"type": "ping", "id": 1})).await;
    roma_only.expect("pong").await;
    // b can hang up from presence (no audio attached).
    b.send_json(json!({"type": "hangup", "callSid": sid, "reason": "offline"}))
        .await;
    assert_eq!(b.expect("callEnded").await["reason"], "offline");
    assert_eq!(s.ended_record(&sid).await["endReason"], "offline");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn single_reject_and_all_reject_end_rejected() {
    let s = TestServer::start().await;
    let mut a = s.online("op-a", &[MILANO]).await;
    let mut b = s.online("op-b", &[MILANO]).await;
    let sid = s.sim_call(MILANO_E164, "tone").await;
    a.expect("callOffer").await;
    b.expect("callOffer").await;
    a.send_json(json!({"type": "reject", "callSid": sid, "reason": "declined"}))
        .await;
    // Still ringing b; then b rejects too.
    b.send_json(json!({"type": "ping", "id": 1})).await;
    b.expect("pong").await;
    b.send_json(json!({"type": "reject", "callSid": sid, "reason": "busy"}))
        .await;
    let rec = s.ended_record(&sid).await;
    assert_eq!(rec["endReason"], "rejected");
    assert!(rec["operatorRef"].is_null());
    assert_eq!(
        s.sim_until(&sid, |v| v["state"] == "ended").await["endReason"],
        "rejected"
    );
    // A late accept learns the real reason.
    a.send_json(json!({"type": "accept", "callSid": sid})).await;
    assert_eq!(a.expect("callEnded").await["reason"], "rejected");
    // One operator alone.
    drop(b);
    let sid = s.sim_call(MILANO_E164, "tone").await;
    a.expect("callOffer").await;
    a.send_json(json!({"type": "reject", "callSid": sid})).await;
    assert_eq!(s.ended_record(&sid).await["endReason"], "rejected");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn ring_timeout_ends_no_answer() {
    let s = TestServer::start().await;
    let mut a = s.online("op-a", &[MILANO]).await;
    let mut b = s.online("op-b", &[MILANO]).await;
    let sid = s.sim_call(MILANO_E164, "tone").await;
    a.expect("callOffer").await;
    b.expect("callOffer").await;
    // Ring timeout is 500 ms in tests.
    assert_eq!(a.expect("callEnded").await["reason"], "no_answer");
    assert_eq!(b.expect("callEnded").await["reason"], "no_answer");
    assert_eq!(s.ended_record(&sid).await["endReason"], "no_answer");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn caller_hangup_while_ringing_ends_remote_hangup() {
    let s = TestServer::start().await;
    let mut a = s.online("op-a", &[MILANO]).await;
    let mut b = s.online("op-b", &[MILANO]).await;
    let sid = s.sim_call(MILANO_E164, "tone").await;
    a.expect("callOffer").await;
    b.expect("callOffer").await;
    // b declines; only a is still ringing when the caller gives up.
    b.send_json(json!({"type": "reject", "callSid": sid})).await;
    b.send_json(json!({"type": "ping", "id": 1})).await;
    b.expect("pong").await;
    let r = s
        .http
        .post(s.url(&format!("/dev/sim/calls/{sid}/hangup")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.expect("callEnded").await["reason"], "remote_hangup");
    assert_eq!(s.ended_record(&sid).await["endReason"], "remote_hangup");
    // b got nothing more.
    b.send_json(json!({"type": "ping", "id": 2})).await;
    assert_eq!(b.expect("pong").await["id"], 2);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn caller_hangup_during_the_call() {
    let s = TestServer::start().await;
    let mut op = s.online("op-1", &[ROMA]).await;
    let sid = s.sim_call(ROMA_E164, "echo").await;
    op.expect("callOffer").await;
    op.send_json(json!({"type": "accept", "callSid": sid}))
        .await;
    op.expect("callAccepted").await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    s.http
        .post(s.url(&format!("/dev/sim/calls/{sid}/hangup")))
        .send()
        .await
        .unwrap();
    assert_eq!(audio.expect("ended").await["reason"], "remote_hangup");
    assert_eq!(audio.closed().await, Some(1000));
    assert_eq!(op.expect("callEnded").await["reason"], "remote_hangup");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn nobody_online_ends_rejected_at_once() {
    let s = TestServer::start().await;
    // Online on nothing counts as not online.
    let mut op = s.online("op-1", &[]).await;
    let sid = s.sim_call(MILANO_E164, "tone").await;
    let rec = s.ended_record(&sid).await;
    assert_eq!(rec["endReason"], "rejected");
    assert!(rec["operatorRef"].is_null());
    assert_eq!(
        s.sim_until(&sid, |v| v["state"] == "ended").await["endReason"],
        "rejected"
    );
    op.send_json(json!({"type": "ping", "id": 3})).await;
    assert_eq!(op.expect("pong").await["id"], 3);
    // A number nobody owns is refused.
    let r = s
        .http
        .post(s.url("/dev/sim/calls"))
        .json(&json!({"from": "+14155550100", "to": "+4930123456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn accepted_call_without_audio_fails_after_grace() {
    let s = TestServer::start().await;
    let mut op = s.online("op-1", &[MILANO]).await;
    let sid = s.sim_call(MILANO_E164, "tone").await;
    op.expect("callOffer").await;
    op.send_json(json!({"type": "accept", "callSid": sid}))
        .await;
    op.expect("callAccepted").await;
    assert_eq!(op.expect("callEnded").await["reason"], "failed");
    assert_eq!(s.ended_record(&sid).await["endReason"], "failed");
    s.handle.shutdown().await;
}

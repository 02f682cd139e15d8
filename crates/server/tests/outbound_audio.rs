//! Outbound calls against the sim numbers, the audio socket (round trip,
//! DTMF, bad frames, ownership) and the audio grace window.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// Dials `to`, attaches audio; returns (presence, audio, sid).
async fn dial_attached(s: &TestServer, to: &str) -> (Ws, Ws, String) {
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, to).await;
    let (audio, attached) = s.attach("op-1", &sid).await;
    assert_eq!(attached["answered"], false);
    assert_eq!(attached["resumed"], false);
    (p, audio, sid)
}

async fn expect_end(s: &TestServer, p: &mut Ws, audio: &mut Ws, sid: &str, reason: &str) {
    let ended = audio.expect("ended").await;
    assert_eq!(
        (ended["callSid"].as_str(), ended["reason"].as_str()),
        (Some(sid), Some(reason))
    );
    assert_eq!(audio.closed().await, Some(1000));
    let ce = p.expect("callEnded").await;
    assert_eq!(ce["reason"], reason);
    let rec = s.ended_record(sid).await;
    assert_eq!(rec["endReason"], reason);
    assert_eq!(rec["direction"], "outbound");
    assert_eq!(rec["operatorRef"], "op-1");
}

#[tokio::test]
async fn echo_round_trip_returns_the_samples() {
    let s = TestServer::start().await;
    let (mut p, mut audio, sid) = dial_attached(&s, "+15550100001").await;
    assert_eq!(audio.expect("answered").await["callSid"], sid.as_str());
    let frames: Vec<Vec<u8>> = (0..5u8)
        .map(|k| {
            (0..160u8)
                .map(|i| i.wrapping_mul(7).wrapping_add(k * 31))
                .collect()
        })
        .collect();
    for f in &frames {
        audio.send_binary(f.clone()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for f in &frames {
        assert_eq!(&audio.sound_frame().await, f);
    }
    let m = s.metrics().await;
    assert!(
        m.contains("audin_frames_relayed_total{direction=\"to_carrier\"} 5"),
        "{m}"
    );
    // Toward the operator: the 5 echoes, plus any silence the echo sends
    // to keep an idle socket alive.
    let to_operator: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("audin_frames_relayed_total{direction=\"to_operator\"} "))
        .and_then(|n| n.trim().parse().ok())
        .expect("to_operator counter");
    assert!(to_operator >= 5, "{m}");
    assert!(m.contains("audin_calls{state=\"active\"} 1"), "{m}");
    assert!(m.contains("audin_sockets_open{kind=\"audio\"} 1"), "{m}");
    // The far end recorded it: 5 frames = 800 samples of 16-bit PCM.
    let wav = s
        .http
        .get(s.url(&format!("/dev/sim/calls/{sid}/recording.wav")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(wav.len(), 44 + 800 * 2);
    audio.send_json(json!({"type": "hangup"})).await;
    expect_end(&s, &mut p, &mut audio, &sid, "hangup").await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn finished_calls_leave_no_task_behind() {
    let s = TestServer::start().await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let idle = s.metric("audin_runtime_tasks_alive").await;
    for _ in 0..3 {
        let sid = s.dial(&mut p, "+15550100001").await;
        let (mut audio, _) = s.attach("op-1", &sid).await;
        audio.expect("answered").await;
        assert!(s.metric("audin_runtime_tasks_alive").await > idle);
        audio.send_json(json!({"type": "hangup"})).await;
        expect_end(&s, &mut p, &mut audio, &sid, "hangup").await;
    }
    let mut settled = 0;
    for _ in 0..50 {
        settled = s.metric("audin_runtime_tasks_alive").await;
        if settled <= idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(settled, idle, "tasks alive after 3 calls vs before");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn tone_number_plays_440_hz() {
    let s = TestServer::start().await;
    let (_p, mut audio, _sid) = dial_attached(&s, "+15550100002").await;
    audio.expect("answered").await;
    let mut pcm = Vec::new();
    for _ in 0..5 {
        let f = audio.frame().await;
        pcm.extend(f.iter().map(|&b| audin_codec::mulaw::decode(b)));
    }
    // 440 Hz at 8 kHz: 880 zero crossings per second, 88 in 100 ms.
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    assert!((84..=92).contains(&crossings), "{crossings} zero crossings");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn busy_and_failed_numbers() {
    let s = TestServer::start().await;
    let (mut p, mut audio, sid) = dial_attached(&s, "+15550100003").await;
    expect_end(&s, &mut p, &mut audio, &sid, "rejected").await;
    // The operator is free again.
    let sid = s.dial(&mut p, "+15550100006").await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    expect_end(&s, &mut p, &mut audio, &sid, "failed").await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn never_answering_number_ends_no_answer() {
    let s = TestServer::start().await;
    let (mut p, mut audio, sid) = dial_attached(&s, "+15550100004").await;
    expect_end(&s, &mut p, &mut audio, &sid, "no_answer").await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn declining_number_ends_rejected() {
    let mut cfg = config();
    cfg.ring_timeout = Duration::from_secs(5);
    let s = TestServer::with(cfg).await;
    let (mut p, mut audio, sid) = dial_attached(&s, "+15550100005").await;
    expect_end(&s, &mut p, &mut audio, &sid, "rejected").await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn hanging_up_number_ends_remote_hangup() {
    let s = TestServer::start().await;
    let (mut p, mut audio, sid) = dial_attached(&s, "+15550100007").await;
    audio.expect("answered").await;
    expect_end(&s, &mut p, &mut audio, &sid, "remote_hangup").await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn any_other_number_answers_and_echoes() {
    let mut cfg = config();
    cfg.ring_timeout = Duration::from_secs(5);
    let s = TestServer::with(cfg).await;
    let (_p, mut audio, _sid) = dial_attached(&s, "+390212345678").await;
    audio.expect("answered").await;
    audio.send_binary(vec![0x42; 160]).await;
    assert_eq!(audio.sound_frame().await, vec![0x42; 160]);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn dtmf_reaches_the_sim_and_bad_input_is_refused() {
    let s = TestServer::start().await;
    let (_p, mut audio, sid) = dial_attached(&s, "+15550100001").await;
    audio.expect("answered").await;
    for d in ["1", "2", "#", "*"] {
        audio.send_json(json!({"type": "dtmf", "digit": d})).await;
    }
    audio.send_json(json!({"type": "dtmf", "digit": "x"})).await;
    audio.expect_error("INVALID_DTMF").await;
    audio
        .send_json(json!({"type": "mute", "muted": true}))
        .await;
    audio.send_binary(vec![0xFF; 100]).await;
    audio.expect_error("INVALID_FRAME").await;
    audio.send_json(json!({"type": "warp"})).await;
    audio.expect_error("UNKNOWN_MESSAGE").await;
    audio.send_text("nope{".into()).await;
    audio.expect_error("INVALID_JSON").await;
    let st = s.sim_until(&sid, |v| v["dtmf"] == "12#*").await;
    assert_eq!(st["state"], "answered");
    // Still up: a frame comes back.
    audio.send_binary(vec![0x11; 160]).await;
    assert_eq!(audio.frame().await, vec![0x11; 160]);
    // Oversized binary closes with 1009.
    audio.send_binary(vec![0u8; 20 * 1024]).await;
    assert_eq!(audio.closed().await, Some(1009));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn dial_while_holding_a_call_is_operator_busy() {
    let s = TestServer::start().await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let _sid = s.dial(&mut p, "+15550100001").await;
    p.send_json(
        json!({"type": "dial", "requestId": "d2", "to": "+15550100002", "callerId": MILANO_E164}),
    )
    .await;
    let e = p.expect_error("OPERATOR_BUSY").await;
    assert_eq!(e["requestId"], "d2");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn attach_ownership_and_unknown_calls() {
    let s = TestServer::start().await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, "+15550100001").await;
    let url = s.ws_url("/v1/operator/audio");
    // Another operator of the same account → 4004.
    let mut ws = Ws::connect(&url).await;
    let t = s.token("op-2", &[MILANO]).await;
    ws.send_json(json!({"type": "attach", "token": t, "callSid": sid}))
        .await;
    ws.expect_error("FORBIDDEN").await;
    assert_eq!(ws.closed().await, Some(4004));
    // Another account → 4004.
    let (_, other_key, other_pn) = s.other_account().await;
    let r = s
        .http
        .post(s.url("/operator-sessions/token"))
        .header("X-API-Key", other_key)
        .json(&json!({"operatorRef": "op-1", "phoneNumberIds": [other_pn]}))
        .send()
        .await
        .unwrap();
    let t: serde_json::Value = r.json().await.unwrap();
    let mut ws = Ws::connect(&url).await;
    ws.send_json(json!({"type": "attach", "token": t["token"], "callSid": sid}))
        .await;
    ws.expect_error("FORBIDDEN").await;
    assert_eq!(ws.closed().await, Some(4004));
    // Unknown call → 4008.
    let mut ws = Ws::connect(&url).await;
    let t = s.token("op-1", &[MILANO]).await;
    ws.send_json(json!({"type": "attach", "token": t, "callSid": "CAdoesnotexist"}))
        .await;
    ws.expect_error("CALL_NOT_FOUND").await;
    assert_eq!(ws.closed().await, Some(4008));
    // Bad token → 4002; message before attach → NOT_AUTHENTICATED.
    let mut ws = Ws::connect(&url).await;
    ws.send_json(json!({"type": "mute", "muted": true})).await;
    ws.expect_error("NOT_AUTHENTICATED").await;
    ws.send_json(json!({"type": "attach", "token": "x.y.z", "callSid": sid}))
        .await;
    ws.expect_error("UNAUTHORIZED").await;
    assert_eq!(ws.closed().await, Some(4002));
    // The owner still can.
    let (_audio, attached) = s.attach("op-1", &sid).await;
    assert_eq!(attached["callSid"], sid.as_str());
    s.handle.shutdown().await;
}

#[tokio::test]
async fn reattach_within_grace_resumes() {
    let mut cfg = config();
    cfg.audio_grace = Duration::from_millis(800);
    let s = TestServer::with(cfg).await;
    let (mut p, mut audio, sid) = dial_attached(&s, "+15550100001").await;
    audio.expect("answered").await;
    audio.close().await;
    drop(audio);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut audio, attached) = s.attach("op-1", &sid).await;
    assert_eq!(attached["resumed"], true);
    assert_eq!(attached["answered"], true);
    // Past the original window the call is still up.
    tokio::time::sleep(Duration::from_millis(900)).await;
    audio.send_binary(vec![0x33; 160]).await;
    assert_eq!(audio.sound_frame().await, vec![0x33; 160]);
    // welcome.activeCall names it.
    let (_p2, welcome) = s.presence("op-1", &[MILANO]).await;
    assert_eq!(welcome["activeCall"]["callSid"], sid.as_str());
    p.expect_error("REPLACED").await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn no_reattach_within_grace_fails_the_call() {
    let s = TestServer::start().await;
    let (mut p, mut audio, sid) = dial_attached(&s, "+15550100002").await;
    audio.expect("answered").await;
    drop(audio);
    assert_eq!(p.expect("callEnded").await["reason"], "failed");
    assert_eq!(s.ended_record(&sid).await["endReason"], "failed");
    assert_eq!(
        s.sim_until(&sid, |v| v["state"] == "ended").await["endReason"],
        "failed"
    );
    // Reattaching now is too late.
    let mut ws = Ws::connect(&s.ws_url("/v1/operator/audio")).await;
    let t = s.token("op-1", &[MILANO]).await;
    ws.send_json(json!({"type": "attach", "token": t, "callSid": sid}))
        .await;
    ws.expect_error("CALL_NOT_FOUND").await;
    assert_eq!(ws.closed().await, Some(4008));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn dialled_call_without_audio_fails_after_grace() {
    let s = TestServer::start().await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, "+15550100001").await;
    assert_eq!(p.expect("callEnded").await["reason"], "failed");
    assert_eq!(s.ended_record(&sid).await["endReason"], "failed");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn silent_audio_socket_is_dropped_and_the_call_fails_after_grace() {
    let mut cfg = config();
    cfg.audio_silence_timeout = Duration::from_millis(800);
    cfg.audio_grace = Duration::from_millis(300);
    let s = TestServer::with(cfg).await;
    let (mut p, mut audio, sid) = dial_attached(&s, "+15550100002").await;
    audio.expect("answered").await;
    // The client stops sending anything (a half-open path looks like this
    // from the server): no frame, no message, no ping.
    audio.expect_error("HEARTBEAT_TIMEOUT").await;
    assert_eq!(audio.closed().await, Some(4006));
    assert_eq!(p.expect("callEnded").await["reason"], "failed");
    assert_eq!(s.ended_record(&sid).await["endReason"], "failed");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn echo_keeps_a_listen_only_audio_socket_alive() {
    // A client that sends no audio (a listen-only bot pings instead) gets
    // nothing to echo; clients treat an audio socket with no frame for 2 s
    // as dead. So an idle echo sends a frame of silence every 500 ms: well
    // within 2 s, and never a 20 ms fill that would pad the audio it echoes.
    let mut cfg = config();
    cfg.ring_timeout = Duration::from_secs(5); // a loaded machine answers late
    let s = TestServer::with(cfg).await;
    let (_p, mut audio, _sid) = dial_attached(&s, "+15550100001").await;
    audio.expect("answered").await;
    let mut at = vec![tokio::time::Instant::now()];
    for _ in 0..3 {
        match audio.next_within(Duration::from_millis(1_500)).await {
            Some(Got::Binary(f)) => assert_eq!(f, vec![0xFF; 160]),
            other => panic!("expected a silence frame within 1.5 s, got {other:?}"),
        }
        at.push(tokio::time::Instant::now());
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[1..].iter().all(|&g| g >= Duration::from_millis(250)),
        "a keepalive, not a fill: {gaps:?}"
    );
    s.handle.shutdown().await;
}

//! Findings of the outside probe (issue 12) against an in-process server:
//! who may learn that a call exists (point 1), `requestId` on errors of
//! ill-typed messages (point 4), and the audio frame-rate limit (point 5).

mod support;

use std::time::Duration;

use audin_protocol::is_printable_text;
use serde_json::{Value, json};
use support::*;

/// Long ring and grace windows: the checks below run while a call rings
/// and while it waits for nothing else.
fn patient() -> audin_server::ServerConfig {
    let mut cfg = config();
    cfg.ring_timeout = Duration::from_secs(10);
    cfg.audio_grace = Duration::from_secs(10);
    cfg
}

/// A presence socket of another account's operator, online on its number.
async fn foreign_operator(s: &TestServer, key: &str, number: &str, operator_ref: &str) -> Ws {
    let r = s
        .http
        .post(s.url("/operator-sessions/token"))
        .header("X-API-Key", key)
        .json(&json!({"operatorRef": operator_ref, "phoneNumberIds": [number]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = Ws::connect(&s.ws_url("/v1/operator/presence")).await;
    ws.send_json(json!({"type": "hello", "token": token})).await;
    ws.expect("welcome").await;
    ws
}

/// The answer to `{"type": ty, "callSid": sid}`, or `None` when there is
/// none: a `ping` follows, so the next message is either the answer or the
/// `pong`.
async fn answer(ws: &mut Ws, ty: &str, sid: &str) -> Option<Value> {
    ws.send_json(json!({"type": ty, "callSid": sid})).await;
    ws.send_json(json!({"type": "ping", "id": 77})).await;
    let v = ws.text().await;
    if v["type"] == "pong" {
        return None;
    }
    assert_eq!(ws.expect("pong").await["id"], 77);
    Some(v)
}

/// What an unknown sid gets, with the sid written as `<sid>`, to compare
/// answers about different sids.
fn shape(v: &Option<Value>, sid: &str) -> String {
    v.as_ref()
        .map_or_else(|| "no answer".into(), Value::to_string)
        .replace(sid, "<sid>")
}

/// Point 1: an operator that was never offered a call (a colleague online
/// on another number, another account, another account's operator with
/// the same operatorRef) gets for `accept`, `hangup` and `reject` exactly
/// what an unknown sid gets, while the call rings, once it is taken and
/// after it ended. Only an operator that was offered the call and lost
/// hears `taken_by_other`, and later the real end.
#[tokio::test]
async fn a_call_not_offered_to_an_operator_is_answered_like_an_unknown_sid() {
    let s = TestServer::with(patient()).await;
    let (_, other_key, other_number) = s.other_account().await;
    let mut winner = s.online("op-1", &[MILANO]).await;
    let mut loser = s.online("op-2", &[MILANO]).await;
    let mut colleague = s.online("op-3", &[ROMA]).await;
    let mut foreign = foreign_operator(&s, &other_key, &other_number, "op-x").await;
    // Same operatorRef as the winner, other account.
    let mut namesake = foreign_operator(&s, &other_key, &other_number, "op-1").await;

    let unknown = "CA00000000000000ff";
    let mut expected = Vec::new();
    for ty in ["accept", "hangup", "reject"] {
        let v = answer(&mut colleague, ty, unknown).await;
        if ty != "reject" {
            let v = v.as_ref().expect("an answer");
            assert_eq!(v["code"], "CALL_NOT_FOUND", "{v}");
            assert!(is_printable_text(v["message"].as_str().unwrap()));
        }
        expected.push((ty, shape(&v, unknown)));
    }
    let check = async |who: &mut Ws, name: &str, phase: &str, sid: &str| {
        for (ty, unknown_answer) in &expected {
            let got = shape(&answer(who, ty, sid).await, sid);
            assert_eq!(
                &got, unknown_answer,
                "{name} {ty} of a call never offered to it, {phase}"
            );
        }
    };

    // Ringing.
    let sid = s.sim_call(MILANO_E164, "tone").await;
    winner.expect("callOffer").await;
    loser.expect("callOffer").await;
    for (who, name) in [
        (&mut colleague, "a colleague"),
        (&mut foreign, "another account"),
        (&mut namesake, "another account's op-1"),
    ] {
        // `reject` last: it must not end the call (it was never theirs).
        check(who, name, "while ringing", &sid).await;
    }

    // Taken: the probe's case. Before the fix these got `callEnded`
    // `taken_by_other`, which confirmed that the call existed.
    winner
        .send_json(json!({"type": "accept", "callSid": sid}))
        .await;
    winner.expect("callAccepted").await;
    let taken = loser.expect("callEnded").await;
    assert_eq!(taken["reason"], "taken_by_other");
    let (mut audio, _) = s.attach("op-1", &sid).await;
    for (who, name) in [
        (&mut colleague, "a colleague"),
        (&mut foreign, "another account"),
        (&mut namesake, "another account's op-1"),
    ] {
        check(who, name, "once taken", &sid).await;
    }
    // The operator that was offered it and lost: still `taken_by_other`.
    let late = answer(&mut loser, "accept", &sid).await.expect("answer");
    assert_eq!(
        (late["type"].as_str(), late["reason"].as_str()),
        (Some("callEnded"), Some("taken_by_other")),
        "{late}"
    );
    // Nothing above touched the call.
    audio.send_binary(vec![0x55; 160]).await;
    s.sim_until(&sid, |v| v["framesHeard"].as_u64() >= Some(1))
        .await;

    // Ended.
    audio.send_json(json!({"type": "hangup"})).await;
    audio.expect("ended").await;
    let ended = winner.expect("callEnded").await;
    assert_eq!(ended["reason"], "hangup");
    for (who, name) in [
        (&mut colleague, "a colleague"),
        (&mut foreign, "another account"),
        (&mut namesake, "another account's op-1"),
    ] {
        check(who, name, "after it ended", &sid).await;
    }
    // Those who took part learn the real end.
    for (who, ty) in [(&mut loser, "accept"), (&mut winner, "hangup")] {
        let v = answer(who, ty, &sid).await.expect("answer");
        assert_eq!(
            (v["type"].as_str(), v["reason"].as_str()),
            (Some("callEnded"), Some("hangup")),
            "{v}"
        );
    }

    // An outbound call has a holder from the start: the same holds.
    let mut dialler = s.online("op-4", &[MILANO]).await;
    let out_sid = s.dial(&mut dialler, "+15550100001").await;
    for (who, name) in [
        (&mut colleague, "a colleague"),
        (&mut namesake, "another account's op-1"),
    ] {
        check(who, name, "outbound, dialled", &out_sid).await;
    }
    s.handle.shutdown().await;
}

/// Point 4: an ill-typed message that carries a readable `requestId` gets
/// its error with the `requestId`, so the client fails the right request;
/// one that cannot be echoed exactly and safely is left out, and the error
/// still comes.
#[tokio::test]
async fn errors_of_ill_typed_messages_echo_a_readable_request_id() {
    let s = TestServer::start().await;
    let url = s.ws_url("/v1/operator/presence");
    // Before `hello`, too.
    let mut ws = Ws::connect(&url).await;
    ws.send_json(json!({"type": "hello", "token": 5, "requestId": "h1"}))
        .await;
    let e = ws.expect_error("INVALID_MESSAGE").await;
    assert_eq!(e["requestId"], "h1", "{e}");

    let (mut ws, _) = s.presence("op-1", &[MILANO]).await;
    for (msg, rid) in [
        (
            json!({"type": "dial", "requestId": "r1", "to": 12, "callerId": MILANO_E164}),
            "r1",
        ),
        (json!({"type": "dial", "requestId": "r2"}), "r2"),
        (
            json!({"type": "goOnline", "requestId": "on-7", "phoneNumberIds": MILANO}),
            "on-7",
        ),
        (
            json!({"type": "refreshToken", "requestId": "rf-1", "token": ["x"]}),
            "rf-1",
        ),
    ] {
        ws.send_json(msg.clone()).await;
        let e = ws.expect_error("INVALID_MESSAGE").await;
        assert_eq!(e["requestId"], rid, "{msg} → {e}");
    }
    // Not a string, unsafe, or longer than an echo may be: no requestId.
    let long = "r".repeat(65);
    for rid in [json!(12), json!("r\u{1b}[2J\r\n"), json!(long)] {
        ws.send_json(json!({"type": "dial", "requestId": rid, "to": 12}))
            .await;
        let e = ws.expect_error("INVALID_MESSAGE").await;
        assert!(e.get("requestId").is_none(), "{e}");
    }
    s.handle.shutdown().await;
}

/// Sends `per_tick` frames every 20 ms for `secs`, reading what comes
/// back; returns the `RATE_LIMITED` errors' arrival times. Panics if the
/// call ends or the socket closes.
async fn send_frames(audio: &mut Ws, per_tick: usize, secs: u64) -> Vec<Duration> {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    // A stalled test client must not burst to catch up: only the rate the
    // test means is sent.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut limited = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        for _ in 0..per_tick {
            audio.send_binary(vec![0x55; 160]).await;
        }
        while let Some(got) = audio.next_within(Duration::ZERO).await {
            match got {
                Got::Binary(_) => {}
                Got::Text(v) if v["type"] == "error" && v["code"] == "RATE_LIMITED" => {
                    assert!(is_printable_text(v["message"].as_str().unwrap()));
                    limited.push(start.elapsed());
                }
                Got::Text(v) => panic!("unexpected {v}"),
                Got::Close(c) => panic!("audio socket closed ({c:?})"),
            }
        }
    }
    limited
}

/// Point 5: audio at 50 frames/s gets no error; at ~400 frames/s for 2 s
/// the excess is dropped and the sender told `RATE_LIMITED`, at most once
/// a second; the call and its socket stay up and carry audio afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_above_the_frame_rate_gets_rate_limited_and_the_call_stays_up() {
    let s = TestServer::with(patient()).await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, "+15550100001").await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    audio.expect("answered").await;

    let normal = send_frames(&mut audio, 1, 2).await;
    assert!(normal.is_empty(), "RATE_LIMITED at 50 frames/s: {normal:?}");

    let limited = send_frames(&mut audio, 8, 2).await;
    println!("RATE_LIMITED at {limited:?}");
    assert!(!limited.is_empty(), "no RATE_LIMITED at 400 frames/s");
    assert!(limited.len() <= 3, "more than one a second: {limited:?}");
    for w in limited.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(900),
            "two RATE_LIMITED within a second: {limited:?}"
        );
    }

    // Still up: no `ended`, and audio still reaches the far end.
    let heard = s.sim_status(&sid).await["framesHeard"].as_u64().unwrap();
    let after = send_frames(&mut audio, 1, 1).await;
    assert!(after.is_empty(), "{after:?}");
    s.sim_until(&sid, |v| v["framesHeard"].as_u64() > Some(heard + 10))
        .await;
    assert_eq!(s.sim_status(&sid).await["state"], "answered");
    s.handle.shutdown().await;
}

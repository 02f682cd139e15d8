//! The audio socket's `ping` / `pong` (added within v1): answered at once
//! with the same id, refused before `attach`, validated, and counted toward
//! the socket's text-message rate limit like every control message.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::time::Instant;

#[tokio::test]
async fn ping_is_answered_at_once_with_the_same_id() {
    let s = TestServer::start().await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, "+15550100001").await; // echo
    let (mut audio, _) = s.attach("op-1", &sid).await;
    for id in [7u64, 0, u64::from(u32::MAX)] {
        let sent = Instant::now();
        audio.send_json(json!({"type": "ping", "id": id})).await;
        let pong = audio.expect("pong").await;
        assert_eq!(pong, json!({"type": "pong", "id": id}));
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "{:?}",
            sent.elapsed()
        );
    }
    // Not a u32: refused, and the socket stays up.
    audio
        .send_json(json!({"type": "ping", "id": u64::from(u32::MAX) + 1}))
        .await;
    audio.expect_error("INVALID_MESSAGE").await;
    audio.send_json(json!({"type": "ping", "id": "x"})).await;
    audio.expect_error("INVALID_MESSAGE").await;
    audio.send_json(json!({"type": "ping", "id": 8})).await;
    assert_eq!(audio.expect("pong").await["id"], 8);
}

#[tokio::test]
async fn ping_before_attach_is_not_answered() {
    let s = TestServer::start().await;
    let mut audio = Ws::connect(&s.ws_url(audin_protocol::AUDIO_PATH)).await;
    audio.send_json(json!({"type": "ping", "id": 1})).await;
    audio.expect_error("NOT_AUTHENTICATED").await;
}

#[tokio::test]
async fn pings_count_toward_the_text_rate_limit() {
    let s = TestServer::start().await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, "+15550100001").await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    for id in 0..100u32 {
        audio.send_json(json!({"type": "ping", "id": id})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    let deadline = Instant::now() + Duration::from_millis(800);
    while let Some(got) = audio
        .next_within(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        match got {
            Got::Text(v) if v["type"] == "pong" => pongs += 1,
            Got::Text(v) if v["code"] == "RATE_LIMITED" => limited += 1,
            Got::Close(c) => panic!("closed {c:?}"),
            _ => {}
        }
    }
    // A burst of 40, refilled at 20 a second: far fewer than 100 answered.
    assert!((40..=60).contains(&pongs), "{pongs} pongs");
    assert!(limited >= 1, "no RATE_LIMITED reply");
}

/// Round trip of one `ping` on `audio`, skipping the frames in between.
async fn round_trip(audio: &mut Ws, id: u32) -> Duration {
    let sent = Instant::now();
    audio.send_json(json!({"type": "ping", "id": id})).await;
    let pong = audio.expect("pong").await;
    assert_eq!(pong["id"], id);
    sent.elapsed()
}

/// The dev sim's `rttMs` impairment holds the pongs of that call's audio
/// socket (and only that call's) for that long, until it is turned off; out
/// of range is refused.
#[tokio::test]
async fn an_rtt_impairment_holds_that_calls_pongs() {
    let s = TestServer::start().await;
    let mut p1 = s.online("op-1", &[MILANO]).await;
    let mut p2 = s.online("op-2", &[MILANO]).await;
    let slow = s.dial(&mut p1, "+15550100001").await; // echo
    let fast = s.dial(&mut p2, "+15550100001").await;
    let (mut slow_audio, _) = s.attach("op-1", &slow).await;
    let (mut fast_audio, _) = s.attach("op-2", &fast).await;
    // Answered first, so no `answered` comes between a ping and its pong.
    slow_audio.expect("answered").await;
    fast_audio.expect("answered").await;
    let impair = |sid: &str, body: serde_json::Value| {
        s.http
            .post(s.url(&format!("/dev/sim/calls/{sid}/impair")))
            .json(&body)
            .send()
    };

    let r = impair(&slow, json!({"rttMs": 300})).await.unwrap();
    assert_eq!(r.status(), 200);
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["rttMs"], 300);
    assert_eq!(s.sim_status(&slow).await["impairment"]["rttMs"], 300);
    for id in 1..=2 {
        let rtt = round_trip(&mut slow_audio, id).await;
        assert!(
            (Duration::from_millis(300)..Duration::from_millis(800)).contains(&rtt),
            "impaired call: {rtt:?}"
        );
        let rtt = round_trip(&mut fast_audio, id).await;
        assert!(rtt < Duration::from_millis(200), "other call: {rtt:?}");
    }

    assert_eq!(impair(&slow, json!({})).await.unwrap().status(), 200);
    let rtt = round_trip(&mut slow_audio, 3).await;
    assert!(rtt < Duration::from_millis(200), "impairment off: {rtt:?}");

    let bad = impair(&slow, json!({"rttMs": 5001})).await.unwrap();
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(bad["error"]["code"], "INVALID_MESSAGE");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rttMs must be at most 5000"),
        "{bad}"
    );
}

//! The dev-only network impairment of a sim call (`POST
//! /dev/sim/calls/{sid}/impair`): frames toward the operator are delayed by
//! at most `jitterMs`, keep their order, and are lost at about
//! `lossPercent`.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Bytes, Message};

const FRAMES: u8 = 80;

async fn impair(s: &TestServer, sid: &str, body: Value) -> reqwest::Response {
    s.http
        .post(s.url(&format!("/dev/sim/calls/{sid}/impair")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Sends numbered frames (`[k; 160]`, k = 1..=FRAMES) every 20 ms to the echo
/// number and returns, per frame that came back, `(k, lateness)` where
/// lateness is receive time minus send time.
async fn echo_run(audio: Ws) -> Vec<(u8, Duration)> {
    let (mut tx, mut rx) = audio.stream.split();
    let sender = tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for k in 1..=FRAMES {
            tick.tick().await;
            sent.push(Instant::now());
            tx.send(Message::Binary(Bytes::from(vec![k; 160])))
                .await
                .unwrap();
        }
        (sent, tx)
    });
    let mut got = Vec::new();
    // The last frame can be the jitter (plus scheduling) behind the send.
    let deadline = Instant::now() + Duration::from_millis(20 * u64::from(FRAMES) + 1_500);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, rx.next()).await {
        if let Message::Binary(b) = msg {
            assert_eq!(b.len(), 160);
            assert!(b.iter().all(|&x| x == b[0]), "an echoed frame is intact");
            if b[0] == 0xFF {
                continue; // the echo's keepalive silence while it hears nothing
            }
            got.push((b[0], Instant::now()));
            if b[0] == FRAMES {
                break;
            }
        }
    }
    let (sent, _tx) = sender.await.unwrap();
    got.into_iter()
        .map(|(k, at)| (k, at - sent[usize::from(k) - 1]))
        .collect()
}

#[tokio::test]
async fn impaired_frames_are_delayed_in_order_and_lost_as_configured() {
    let s = TestServer::start().await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, "+15550100001").await; // echo, answers after 300 ms
    let (mut audio, _) = s.attach("op-1", &sid).await;
    audio.expect("answered").await;

    let r = impair(
        &s,
        &sid,
        json!({"jitterMs": 60, "lossPercent": 20.0, "seed": 42}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(
        echoed,
        json!({"jitterMs": 60, "lossPercent": 20.0, "seed": 42, "distribution": "uniform", "rttMs": 0})
    );

    let got = echo_run(audio).await;
    let ks: Vec<u8> = got.iter().map(|g| g.0).collect();
    assert!(
        ks.windows(2).all(|w| w[0] < w[1]),
        "order kept, no duplicates: {ks:?}"
    );
    let lost = usize::from(FRAMES) - got.len();
    assert!(
        (5..=32).contains(&lost),
        "about 20 % of {FRAMES} lost, got {lost}"
    );
    let status = s.sim_status(&sid).await;
    assert_eq!(status["impairment"]["jitterMs"], 60);
    // The echo's keepalive silence frames (sent while it hears nothing) are
    // impaired too, so the sim may count more losses than our frames show.
    assert!(
        status["framesLost"].as_u64().unwrap() as usize >= lost,
        "{status}"
    );

    // Lateness = the relay (the echo returns a frame as it arrives) + the
    // impairment (0-60 ms; frames behind a delayed one wait, but never past
    // the delayed one's release). So the spread over the fastest frame is
    // bounded by the jitter (plus slack for a loaded machine), and with
    // 60 ms it is wide.
    let late: Vec<f64> = got.iter().map(|g| g.1.as_secs_f64() * 1e3).collect();
    let max = late.iter().copied().fold(0.0, f64::max);
    let min = late.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(
        max - min <= 60.0 + 60.0,
        "bounded: lateness {min:.1}..{max:.1} ms"
    );
    assert!(max - min >= 25.0, "delays vary: {late:?}");
    let delayed = late.iter().filter(|&&l| l > min + 20.0).count();
    assert!(
        delayed >= got.len() / 4,
        "many frames held back over 20 ms: {late:?}"
    );

    // All zero turns it off; bad bodies and unknown calls are refused.
    assert_eq!(impair(&s, &sid, json!({})).await.status(), 200);
    assert_eq!(s.sim_status(&sid).await["impairment"]["jitterMs"], 0);
    let bad = impair(&s, &sid, json!({"jitterMs": 5000})).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["code"],
        "INVALID_MESSAGE"
    );
    let bad = impair(&s, &sid, json!({"lossPercent": 101})).await;
    assert_eq!(bad.status(), 400);
    let bad = impair(&s, &sid, json!({"distribution": "gauss"})).await;
    assert_eq!(bad.status(), 400);
    let unknown = impair(&s, "CA00000000000000000000000000000000", json!({})).await;
    assert_eq!(unknown.status(), 404);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn click_behaviour_clicks_every_500_ms() {
    let s = TestServer::start().await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.sim_call(MILANO_E164, "click").await;
    p.expect("callOffer").await;
    p.send_json(json!({"type": "accept", "callSid": sid})).await;
    p.expect("callAccepted").await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    let click = audin_codec::mulaw::encode(i16::MAX);
    let mut clicks = Vec::new();
    for i in 0..60 {
        let f = audio.frame().await;
        assert!(f[1..].iter().all(|&b| b == 0xFF), "silence but sample 0");
        if f[0] == click {
            clicks.push(i);
        } else {
            assert_eq!(f[0], 0xFF);
        }
    }
    assert!(clicks.len() >= 2, "{clicks:?}");
    assert!(clicks.windows(2).all(|w| w[1] - w[0] == 25), "{clicks:?}");
    s.handle.shutdown().await;
}

//! The dev sim's `play` behaviour (`POST /dev/sim/calls` with `behaviour:
//! "play"` and `audio`): the far end loops the caller's μ-law clip toward the
//! operator, frame for frame; a missing, misplaced, non-base64, empty or
//! oversized clip is a 400 that says which.

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use support::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn start(s: &TestServer, body: Value) -> reqwest::Response {
    s.http
        .post(s.url("/dev/sim/calls"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn play_loops_the_clip_frame_for_frame() {
    let s = TestServer::start().await;
    let mut op = s.online("op-1", &[MILANO]).await;
    // Three frames, each a distinct byte, the last one only half long (the
    // sim pads it with silence).
    let mut clip = vec![0x11; 160];
    clip.extend([0x22; 160]);
    clip.extend([0x33; 80]);
    let r = start(
        &s,
        json!({"from": "+14155550100", "to": MILANO_E164, "behaviour": "play", "audio": b64(&clip)}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let sid = r.json::<Value>().await.unwrap()["callSid"]
        .as_str()
        .unwrap()
        .to_owned();
    op.expect("callOffer").await;
    op.send_json(json!({"type": "accept", "callSid": sid}))
        .await;
    op.expect("callAccepted").await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    let first = audio.frame().await;
    // Wherever the loop is when the socket attaches, what follows is the
    // clip in order, wrapping around.
    let mut padded = vec![0x33; 80];
    padded.extend([0xFF; 80]);
    let cycle = [vec![0x11; 160], vec![0x22; 160], padded];
    let at = cycle
        .iter()
        .position(|f| *f == first)
        .unwrap_or_else(|| panic!("a frame of the clip, got {:?}", &first[..4]));
    for k in 1..=7 {
        assert_eq!(
            audio.frame().await,
            cycle[(at + k) % 3],
            "frame {k} after the first"
        );
    }
    s.handle.shutdown().await;
}

#[tokio::test]
async fn a_bad_clip_is_refused_with_the_reason() {
    let s = TestServer::start().await;
    let call = |extra: Value| {
        let mut body = json!({"from": "+14155550100", "to": MILANO_E164});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({"behaviour": "play"}), "needs audio"),
        (
            json!({"behaviour": "tone", "audio": b64(&[0xFF; 160])}),
            "only for behaviour play",
        ),
        (
            json!({"behaviour": "play", "audio": "not base64!"}),
            "not base64",
        ),
        (
            json!({"behaviour": "play", "audio": ""}),
            "1 to 480000 bytes",
        ),
        (
            json!({"behaviour": "play", "audio": b64(&vec![0xFF; 480_001])}),
            "got 480001",
        ),
        (json!({"behaviour": "sing"}), "or play"),
    ];
    for (extra, why) in cases {
        let r = start(&s, call(extra.clone())).await;
        assert_eq!(r.status(), 400, "{extra}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "INVALID_MESSAGE", "{extra}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{extra}: {msg:?} should say {why:?}");
    }
    s.handle.shutdown().await;
}

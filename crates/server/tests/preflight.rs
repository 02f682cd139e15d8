//! The audio socket's preflight echo session (added within v1): a valid
//! session token and no call; every frame comes straight back, pings are
//! answered, the session ends with 1000 after `maxMs`; a bad or expired
//! token is refused exactly as for `attach`; the dev-only impairment makes
//! the echo lossy.

mod support;

use std::sync::Arc;
use std::time::Duration;

use audin_server::auth::TokenSigner;
use audin_server::engine::Engine;
use audin_server::preflight::PREFLIGHT_MAX_MS;
use audin_server::ws::{Kind, WsConn};
use audin_server::{ServerConfig, db};
use axum::extract::ws::Message;
use serde_json::json;
use support::*;
use tokio::time::Instant;

/// A frame whose bytes say which one it is.
fn frame(n: u8) -> Vec<u8> {
    vec![n; 160]
}

async fn preflight(s: &TestServer, token: &str) -> Ws {
    let mut audio = Ws::connect(&s.ws_url(audin_protocol::AUDIO_PATH)).await;
    audio
        .send_json(json!({"type": "preflight", "token": token}))
        .await;
    audio
}

#[tokio::test]
async fn frames_come_straight_back_and_pings_are_answered_without_a_call() {
    let s = TestServer::start().await;
    let token = s.token("op-1", &[MILANO]).await;
    let mut audio = preflight(&s, &token).await;
    let started = audio.expect("preflightStarted").await;
    assert_eq!(
        started,
        json!({"type": "preflightStarted", "maxMs": PREFLIGHT_MAX_MS})
    );
    for n in 1..=20u8 {
        audio.send_binary(frame(n)).await;
        let sent = Instant::now();
        assert_eq!(audio.frame().await, frame(n), "frame {n}");
        assert!(sent.elapsed() < Duration::from_millis(200));
    }
    audio.send_json(json!({"type": "ping", "id": 9})).await;
    assert_eq!(audio.expect("pong").await, json!({"type": "pong", "id": 9}));
    // A wrong-size frame is refused as on a call's socket, and not echoed.
    audio.send_binary(vec![0; 10]).await;
    audio.expect_error("INVALID_FRAME").await;
    // Call messages have no call here.
    audio
        .send_json(json!({"type": "mute", "muted": true}))
        .await;
    audio.expect_error("INVALID_MESSAGE").await;

    // Meanwhile the operator is not busy and no call exists: a dial from
    // the same operator goes through, and it is the only call recorded.
    let mut p = s.online("op-1", &[MILANO]).await;
    s.dial(&mut p, "+15550100002").await;
    assert_eq!(s.calls().await.len(), 1);
    audio.send_binary(frame(42)).await;
    assert_eq!(audio.frame().await, frame(42), "still echoing");
}

#[tokio::test]
async fn a_bad_or_expired_token_is_refused_like_attach() {
    let s = TestServer::start().await;
    let mut audio = preflight(&s, "not-a-token").await;
    audio.expect_error("UNAUTHORIZED").await;
    assert_eq!(audio.closed().await, Some(4002));

    // Frames before it are refused and never echoed.
    let mut audio = Ws::connect(&s.ws_url(audin_protocol::AUDIO_PATH)).await;
    audio.send_binary(frame(1)).await;
    audio.expect_error("NOT_AUTHENTICATED").await;

    let mut cfg = config();
    cfg.token_ttl = Duration::from_secs(1);
    let s = TestServer::with(cfg).await;
    let token = s.token("op-1", &[MILANO]).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let mut audio = preflight(&s, &token).await;
    audio.expect_error("TOKEN_EXPIRED").await;
    assert_eq!(audio.closed().await, Some(4003));
}

/// The session is bounded: closed with 1000 at `maxMs` (30 s), however
/// busy the client keeps it. Runs the audio session over an in-memory
/// connection on a paused clock, so it takes milliseconds.
#[tokio::test(start_paused = true)]
async fn the_session_ends_with_1000_at_max_ms() {
    let db = db::Db::open(std::path::Path::new(":memory:")).expect("database");
    let signer = TokenSigner::new(b"preflight test secret, 32 bytes!");
    let engine: Arc<Engine> = Engine::new(ServerConfig::for_tests(), db, signer);
    let (token, _) = engine.signer.issue("acc", "op-1", "Op", vec![], 3600);
    let (conn, mut peer) = WsConn::in_memory(Kind::Audio, engine.metrics.clone());
    tokio::spawn(audin_server::audio::run(engine.clone(), conn));
    let start = Instant::now();
    let text = json!({"type": "preflight", "token": token}).to_string();
    peer.to_server.send(Message::Text(text.into())).unwrap();
    let mut echoed = 0u32;
    let closed = loop {
        // One frame every 20 ms, as a client sends them.
        let _ = peer.to_server.send(Message::Binary(frame(7).into()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut closed = None;
        while let Ok(msg) = peer.from_server.try_recv() {
            match msg {
                Message::Binary(_) => echoed += 1,
                Message::Close(c) => closed = Some(c.map(|c| c.code)),
                _ => {}
            }
        }
        if let Some(c) = closed {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_millis(PREFLIGHT_MAX_MS + 1_000),
            "not closed"
        );
    };
    let at = start.elapsed();
    assert_eq!(closed, Some(1000));
    assert!(
        at >= Duration::from_millis(PREFLIGHT_MAX_MS)
            && at < Duration::from_millis(PREFLIGHT_MAX_MS + 100),
        "closed after {at:?}"
    );
    // Echoing all along (a frame may be in flight at the close).
    let sent = (PREFLIGHT_MAX_MS / 20) as u32;
    assert!(echoed + 2 >= sent, "{echoed} of {sent} echoed");
}

/// Dev only: `POST /dev/sim/preflight/impair` makes sessions started
/// afterwards lose (and delay, and answer pings late) as asked; `{}` turns
/// it off. Out-of-range values are refused like the sim call impairment.
#[tokio::test]
async fn the_dev_impairment_applies_to_sessions_started_after_it() {
    let s = TestServer::start().await;
    let token = s.token("op-1", &[MILANO]).await;
    let impair = |body: serde_json::Value| {
        s.http
            .post(s.url("/dev/sim/preflight/impair"))
            .json(&body)
            .send()
    };
    let bad = impair(json!({"lossPercent": 101})).await.unwrap();
    assert_eq!(bad.status(), 400);
    let r = impair(json!({"lossPercent": 50, "rttMs": 300, "seed": 3}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut audio = preflight(&s, &token).await;
    audio.expect("preflightStarted").await;
    let sent = Instant::now();
    audio.send_json(json!({"type": "ping", "id": 1})).await;
    audio.expect("pong").await;
    let rtt = sent.elapsed();
    assert!(rtt >= Duration::from_millis(300), "pong after {rtt:?}");
    let echoed = echo_count(&mut audio, 100).await;
    assert!((30..=70).contains(&echoed), "{echoed} of 100 echoed");

    impair(json!({})).await.unwrap();
    let mut audio = preflight(&s, &token).await;
    audio.expect("preflightStarted").await;
    assert_eq!(echo_count(&mut audio, 100).await, 100);
}

/// Sends `n` frames paced at 20 ms and counts the echoes that come back.
async fn echo_count(audio: &mut Ws, n: u8) -> u32 {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut echoed = 0;
    for k in 0..n {
        tick.tick().await;
        audio.send_binary(frame(k)).await;
        while let Some(Got::Binary(_)) = audio.next_within(Duration::from_millis(1)).await {
            echoed += 1;
        }
    }
    while let Some(got) = audio.next_within(Duration::from_millis(300)).await {
        if let Got::Binary(_) = got {
            echoed += 1;
        }
    }
    echoed
}

#[tokio::test]
async fn an_operator_holds_two_preflight_sessions_at_most_and_the_slot_comes_back() {
    let s = TestServer::start().await;
    let token = s.token("op-1", &[MILANO]).await;
    let mut first = preflight(&s, &token).await;
    first.expect("preflightStarted").await;
    let mut second = preflight(&s, &token).await;
    second.expect("preflightStarted").await;

    // A third of the same operator is refused with a clear code.
    let mut third = preflight(&s, &token).await;
    let refused = third.expect_error("RATE_LIMITED").await;
    assert_eq!(
        refused["message"],
        "at most 2 preflight sessions per operator at once"
    );
    assert_eq!(third.closed().await, Some(4007));

    // Another operator of the account is not held back by it.
    let other = s.token("op-2", &[MILANO]).await;
    let mut theirs = preflight(&s, &other).await;
    theirs.expect("preflightStarted").await;

    // Once a session ends its slot is free again.
    first.close().await;
    let mut again = None;
    for _ in 0..50 {
        let mut audio = preflight(&s, &token).await;
        match audio.next().await {
            Got::Text(m) if m["type"] == "preflightStarted" => {
                again = Some(audio);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let mut again = again.expect("a slot comes back after a session ends");
    again.send_binary(frame(7)).await;
    assert_eq!(again.frame().await, frame(7));
    second.send_binary(frame(8)).await;
    assert_eq!(second.frame().await, frame(8), "the others go on");
}

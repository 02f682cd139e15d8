//! The presence socket: authentication, availability, heartbeats,
//! replacement, token refresh and bad input.

mod support;

use std::time::Duration;

use audin_server::util::unix_now;
use serde_json::json;
use support::*;

#[tokio::test]
async fn hello_welcome_and_availability() {
    let s = TestServer::start().await;
    let (mut ws, welcome) = s.presence("op-1", &[MILANO]).await;
    assert_eq!(welcome["operatorRef"], "op-1");
    assert!(welcome["sessionId"].as_str().unwrap().starts_with("ps_"));
    assert_eq!(welcome["silenceTimeoutMs"], 10_000);
    assert!(welcome["activeCall"].is_null());
    // Granted and owned → accepted; not granted, or unknown → rejected.
    ws.send_json(
        json!({"type": "goOnline", "phoneNumberIds": [MILANO, ROMA, "pn_nope"], "requestId": "r1"}),
    )
    .await;
    let av = ws.expect("availability").await;
    assert_eq!(av["accepted"], json!([MILANO]));
    assert_eq!(av["rejected"], json!([ROMA, "pn_nope"]));
    assert_eq!(av["requestId"], "r1");
    assert!(s.metrics().await.contains("audin_operators_online 1"));
    // Another account's number is rejected too.
    let (_, _, other_pn) = s.other_account().await;
    ws.send_json(json!({"type": "goOnline", "phoneNumberIds": [other_pn]}))
        .await;
    let av = ws.expect("availability").await;
    assert_eq!(av["accepted"], json!([]));
    assert_eq!(av["rejected"], json!([other_pn]));
    // ping / pong
    ws.send_json(json!({"type": "ping", "id": 42})).await;
    assert_eq!(ws.expect("pong").await["id"], 42);
    // Closing takes the operator offline.
    ws.close().await;
    for _ in 0..50 {
        if s.metrics().await.contains("audin_operators_online 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(s.metrics().await.contains("audin_operators_online 0"));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn auth_failures_close_with_the_right_codes() {
    let s = TestServer::start().await;
    let url = s.ws_url("/v1/operator/presence");
    // Anything before hello.
    let mut ws = Ws::connect(&url).await;
    ws.send_json(json!({"type": "ping", "id": 1})).await;
    ws.expect_error("NOT_AUTHENTICATED").await;
    // Invalid token → 4002.
    ws.send_json(json!({"type": "hello", "token": "not-a-token"}))
        .await;
    ws.expect_error("UNAUTHORIZED").await;
    assert_eq!(ws.closed().await, Some(4002));
    // Expired token → error then 4003.
    let token = s.token("op-1", &[MILANO]).await;
    let mut claims = s.handle.engine.signer.verify(&token).unwrap();
    claims.exp = unix_now() - 1;
    let expired = s.handle.engine.signer.sign(&claims);
    let mut ws = Ws::connect(&url).await;
    ws.send_json(json!({"type": "hello", "token": expired}))
        .await;
    ws.expect_error("TOKEN_EXPIRED").await;
    assert_eq!(ws.closed().await, Some(4003));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn no_hello_in_time_closes_4001() {
    let mut cfg = config();
    cfg.auth_timeout = Duration::from_millis(200);
    let s = TestServer::with(cfg).await;
    let mut ws = Ws::connect(&s.ws_url("/v1/operator/presence")).await;
    assert_eq!(ws.closed().await, Some(4001));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn silence_closes_4006_and_pings_keep_it_alive() {
    let mut cfg = config();
    cfg.silence_timeout = Duration::from_millis(300);
    let s = TestServer::with(cfg).await;
    let (mut ws, welcome) = s.presence("op-1", &[MILANO]).await;
    assert_eq!(welcome["silenceTimeoutMs"], 300);
    for id in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        ws.send_json(json!({"type": "ping", "id": id})).await;
        assert_eq!(ws.expect("pong").await["id"], id);
    }
    ws.expect_error("HEARTBEAT_TIMEOUT").await;
    assert_eq!(ws.closed().await, Some(4006));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn second_hello_replaces_the_first_with_4005() {
    let s = TestServer::start().await;
    let mut first = s.online("op-1", &[MILANO]).await;
    let (mut second, _) = s.presence("op-1", &[MILANO]).await;
    first.expect_error("REPLACED").await;
    assert_eq!(first.closed().await, Some(4005));
    second.send_json(json!({"type": "ping", "id": 7})).await;
    assert_eq!(second.expect("pong").await["id"], 7);
    // Another operator is not affected.
    let (mut other, _) = s.presence("op-2", &[MILANO]).await;
    other.send_json(json!({"type": "ping", "id": 8})).await;
    other.expect("pong").await;
    second.send_json(json!({"type": "ping", "id": 9})).await;
    second.expect("pong").await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn refresh_token_extends_and_expiry_closes_4003() {
    let s = TestServer::start().await;
    let signer = &s.handle.engine.signer;
    // A token that expires in 1-2 s.
    let token = s.token("op-1", &[MILANO]).await;
    let mut claims = signer.verify(&token).unwrap();
    claims.exp = unix_now() + 1;
    let short = signer.sign(&claims);
    let mut ws = Ws::connect(&s.ws_url("/v1/operator/presence")).await;
    ws.send_json(json!({"type": "hello", "token": short})).await;
    ws.expect("welcome").await;
    // Another operator's token is refused and changes nothing.
    let other = s.token("op-2", &[MILANO]).await;
    ws.send_json(json!({"type": "refreshToken", "token": other, "requestId": "x"}))
        .await;
    let e = ws.expect_error("FORBIDDEN").await;
    assert_eq!(e["requestId"], "x");
    ws.expect_error("TOKEN_EXPIRED").await;
    assert_eq!(ws.closed().await, Some(4003));

    // With a refresh the socket outlives the first token.
    let mut ws = Ws::connect(&s.ws_url("/v1/operator/presence")).await;
    let mut claims = signer.verify(&token).unwrap();
    claims.exp = unix_now() + 1;
    ws.send_json(json!({"type": "hello", "token": signer.sign(&claims)}))
        .await;
    ws.expect("welcome").await;
    let fresh = s.token("op-1", &[MILANO]).await;
    ws.send_json(json!({"type": "refreshToken", "token": fresh, "requestId": "r2"}))
        .await;
    let r = ws.expect("tokenRefreshed").await;
    assert_eq!(r["requestId"], "r2");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    ws.send_json(json!({"type": "ping", "id": 1})).await;
    ws.expect("pong").await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_answered_and_the_socket_stays_up() {
    let s = TestServer::start().await;
    let (mut ws, _) = s.presence("op-1", &[MILANO]).await;
    ws.send_text("{not json".into()).await;
    ws.expect_error("INVALID_JSON").await;
    ws.send_json(json!({"type": "teleport", "to": "mars"}))
        .await;
    ws.expect_error("UNKNOWN_MESSAGE").await;
    ws.send_json(json!({"type": "ping"})).await;
    ws.expect_error("INVALID_MESSAGE").await;
    ws.send_binary(vec![0u8; 160]).await;
    ws.expect_error("BINARY_NOT_ALLOWED").await;
    // Dial validation.
    ws.send_json(
        json!({"type": "dial", "requestId": "d1", "to": "0039021234", "callerId": MILANO_E164}),
    )
    .await;
    let e = ws.expect_error("INVALID_NUMBER").await;
    assert_eq!(e["requestId"], "d1");
    ws.send_json(
        json!({"type": "dial", "requestId": "d2", "to": "+15550100001", "callerId": ROMA_E164}),
    )
    .await;
    ws.expect_error("NUMBER_NOT_OWNED").await;
    ws.send_json(json!({"type": "dial", "requestId": "d3", "to": "+15550100001", "callerId": "+15557770000"}))
        .await;
    ws.expect_error("NUMBER_NOT_OWNED").await;
    // Accept / hangup of an unknown call.
    ws.send_json(json!({"type": "accept", "callSid": "CAunknown"}))
        .await;
    ws.expect_error("CALL_NOT_FOUND").await;
    // Still alive.
    ws.send_json(json!({"type": "ping", "id": 5})).await;
    ws.expect("pong").await;
    // Oversized text → MESSAGE_TOO_LARGE and 1009.
    let big = json!({"type": "ping", "id": 1, "pad": "x".repeat(17 * 1024)});
    ws.send_json(big).await;
    ws.expect_error("MESSAGE_TOO_LARGE").await;
    assert_eq!(ws.closed().await, Some(1009));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn handshake_needs_subprotocol_and_allowed_origin() {
    let mut cfg = config();
    cfg.allowed_origins = vec!["http://localhost:*".into()];
    let s = TestServer::with(cfg).await;
    let url = s.ws_url("/v1/operator/presence");
    assert_eq!(Ws::try_connect(&url, None, None).await.err(), Some(400));
    assert_eq!(
        Ws::try_connect(&url, Some("other.v9"), None).await.err(),
        Some(400)
    );
    let audio = s.ws_url("/v1/operator/audio");
    assert_eq!(Ws::try_connect(&audio, None, None).await.err(), Some(400));
    let r = s
        .http
        .get(s.url("/v1/operator/presence"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    // Disallowed Origin → FORBIDDEN and 1008.
    let mut ws = Ws::try_connect(
        &url,
        Some("audin.operator.v1"),
        Some("https://evil.example"),
    )
    .await
    .unwrap();
    ws.expect_error("FORBIDDEN").await;
    assert_eq!(ws.closed().await, Some(1008));
    let mut ws = Ws::try_connect(
        &audio,
        Some("audin.operator.v1"),
        Some("https://evil.example"),
    )
    .await
    .unwrap();
    assert_eq!(ws.closed().await, Some(1008));
    // Allowed origin works.
    let mut ws = Ws::try_connect(
        &url,
        Some("audin.operator.v1"),
        Some("http://localhost:3000"),
    )
    .await
    .unwrap();
    let token = s.token("op-1", &[MILANO]).await;
    ws.send_json(json!({"type": "hello", "token": token})).await;
    ws.expect("welcome").await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn message_flood_is_rate_limited() {
    let s = TestServer::start().await;
    let (mut ws, _) = s.presence("op-1", &[MILANO]).await;
    for id in 0..60 {
        ws.send_json(json!({"type": "ping", "id": id})).await;
    }
    let mut pongs = 0;
    let mut limited = false;
    while let Some(Got::Text(v)) = ws.next_within(Duration::from_millis(300)).await {
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") if v["code"] == "RATE_LIMITED" => limited = true,
            _ => panic!("unexpected {v}"),
        }
    }
    assert!(limited);
    assert!((40..60).contains(&pongs), "{pongs} pongs");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn huge_message_closes_1009() {
    let s = TestServer::start().await;
    let (mut ws, _) = s.presence("op-1", &[MILANO]).await;
    // Beyond the WebSocket layer's own cap (64 KiB), not only the 16 KiB rule.
    ws.send_text("x".repeat(100 * 1024)).await;
    assert_eq!(ws.closed().await, Some(1009));
    // The server is fine.
    let (mut ws, _) = s.presence("op-2", &[MILANO]).await;
    ws.send_json(json!({"type": "ping", "id": 1})).await;
    ws.expect("pong").await;
    s.handle.shutdown().await;
}

//! Attach tickets (`callAccepted.attachTicket`, `dialAccepted.attachTicket`):
//! the audio socket's `attach` may carry one instead of a session token,
//! once, for its call and operator only; `audioUrl` names the node with
//! `--advertise-url`, and is absent without it.

mod support;

use serde_json::json;
use support::*;

/// Attaches with `token` (a session token or a ticket) to `sid`: the
/// `attached` message, or the close code.
async fn attach_with(s: &TestServer, token: &str, sid: &str) -> Result<serde_json::Value, u16> {
    let mut ws = Ws::connect(&s.ws_url("/v1/operator/audio")).await;
    ws.send_json(json!({"type": "attach", "token": token, "callSid": sid}))
        .await;
    loop {
        match ws.next().await {
            Got::Text(v) if v["type"] == "attached" => return Ok(v),
            Got::Text(_) | Got::Binary(_) => {}
            Got::Close(code) => return Err(code.unwrap_or(0)),
        }
    }
}

#[tokio::test]
async fn a_ticket_attaches_once_for_its_call_and_operator_only() {
    let s = TestServer::start().await;
    let (_op, sid, accepted) = s.accepted("op-1", MILANO, MILANO_E164, "tone").await;
    let ticket = accepted["attachTicket"]
        .as_str()
        .expect("callAccepted carries a ticket")
        .to_owned();
    assert!(
        accepted.get("audioUrl").is_none(),
        "no --advertise-url: {accepted}"
    );
    // Another call's sid: refused as an invalid token (4002).
    let other = s.sim_call(ROMA_E164, "tone").await;
    assert_eq!(attach_with(&s, &ticket, &other).await, Err(4002));
    // Not a presence token either.
    let mut presence = Ws::connect(&s.ws_url("/v1/operator/presence")).await;
    presence
        .send_json(json!({"type": "hello", "token": ticket, "client": "test/0"}))
        .await;
    assert_eq!(presence.closed().await, Some(4002));
    // Its call: attached, and the audio flows.
    let attached = attach_with(&s, &ticket, &sid).await.expect("attached");
    assert_eq!(attached["answered"], true);
    // Used once: a second attach with it is refused.
    assert_eq!(attach_with(&s, &ticket, &sid).await, Err(4002));
    // A session token still attaches (a reattach).
    let (_, again) = s.attach("op-1", &sid).await;
    assert_eq!(again["resumed"], true);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn a_dialled_call_gets_a_ticket_and_the_advertised_url() {
    let mut cfg = config();
    cfg.advertise_url = Some("http://node-7.example:8080".into());
    let s = TestServer::with(cfg).await;
    let mut op = s.online("op-1", &[MILANO]).await;
    op.send_json(
        json!({"type": "dial", "requestId": "d1", "to": "+15550100001", "callerId": MILANO_E164}),
    )
    .await;
    let acc = op.expect("dialAccepted").await;
    assert_eq!(acc["audioUrl"], "http://node-7.example:8080", "{acc}");
    let sid = acc["callSid"].as_str().unwrap();
    let ticket = acc["attachTicket"].as_str().expect("a ticket");
    attach_with(&s, ticket, sid).await.expect("attached");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn an_expired_session_token_is_still_token_expired() {
    let s = TestServer::start().await;
    let (_op, sid, _) = s.accepted("op-1", MILANO, MILANO_E164, "tone").await;
    let (_, mut claims) = s
        .handle
        .engine
        .signer
        .issue("acc_dev", "op-1", "", vec![], 60);
    claims.exp = 1;
    let expired = s.handle.engine.signer.sign(&claims);
    assert_eq!(attach_with(&s, &expired, &sid).await, Err(4003));
    s.handle.shutdown().await;
}

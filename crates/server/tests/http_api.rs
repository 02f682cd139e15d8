//! HTTP endpoints: token issuance and its failures, phone numbers, call
//! records, health, metrics, CORS, dev-only routes.

mod support;

use audin_server::auth::Claims;
use audin_server::util::unix_now;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use support::*;

async fn post_token(s: &TestServer, key: &str, body: Value) -> (u16, Value) {
    let r = s
        .http
        .post(s.url("/operator-sessions/token"))
        .header("X-API-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn numbers_with(s: &TestServer, token: &str) -> (u16, Value) {
    let r = s
        .http
        .get(s.url("/v1/phone-numbers"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn token_is_issued_and_lists_numbers() {
    let s = TestServer::start().await;
    let (status, v) = post_token(
        &s,
        &s.key,
        json!({"operatorRef": "op-1", "displayName": "Ada", "phoneNumberIds": [MILANO]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["expiresAt"].as_str().unwrap().ends_with('Z'));
    let token = v["token"].as_str().unwrap();
    let claims: Claims = s.handle.engine.signer.verify(token).unwrap();
    assert_eq!(claims.sub, "op-1");
    assert_eq!(claims.aud, "audin.operator.v1");
    assert_eq!(claims.iss, "audin-server");
    assert_eq!(claims.pns, vec![MILANO.to_owned()]);
    assert_eq!(claims.exp - claims.iat, 3600);

    let (status, list) = numbers_with(&s, token).await;
    assert_eq!(status, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().any(|n| n["id"] == MILANO
        && n["phoneNumber"] == MILANO_E164
        && n["displayName"] == "Milano"));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn token_failures() {
    let s = TestServer::start().await;
    let body = json!({"operatorRef": "op-1", "phoneNumberIds": [MILANO]});
    // Bad key, malformed key, no key.
    let (status, v) = post_token(&s, "ak_0000000000000000_nope", body.clone()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    let (status, _) = post_token(&s, "garbage", body.clone()).await;
    assert_eq!(status, 401);
    // Another account's number.
    let (_, _, other_pn) = s.other_account().await;
    let (status, v) = post_token(
        &s,
        &s.key,
        json!({"operatorRef": "op-1", "phoneNumberIds": [other_pn]}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("NUMBER_NOT_OWNED"))
    );
    // Bad operatorRef and body.
    let (status, v) =
        post_token(&s, &s.key, json!({"operatorRef": "", "phoneNumberIds": []})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("INVALID_MESSAGE"))
    );
    let r = s
        .http
        .post(s.url("/operator-sessions/token"))
        .header("X-API-Key", &s.key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "INVALID_JSON");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn repeated_bad_keys_are_rate_limited() {
    let s = TestServer::start().await;
    let body = json!({"operatorRef": "op-1", "phoneNumberIds": []});
    for _ in 0..10 {
        let (status, _) = post_token(&s, "ak_0000000000000000_bad", body.clone()).await;
        assert_eq!(status, 401);
    }
    let (status, v) = post_token(&s, "ak_0000000000000000_bad", body.clone()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (429, Some("RATE_LIMITED"))
    );
    // Even a good key is refused from that address for now.
    let (status, _) = post_token(&s, &s.key, body).await;
    assert_eq!(status, 429);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_on_phone_numbers() {
    let s = TestServer::start().await;
    let token = s.token("op-1", &[MILANO]).await;
    // Forged signature: flip the last signature character.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (status, v) = numbers_with(&s, &forged).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    // Signed with another secret.
    let other = audin_server::auth::TokenSigner::new(b"not the secret");
    let (t2, _) = other.issue("acc_dev", "op-1", "", vec![], 60);
    assert_eq!(numbers_with(&s, &t2).await.0, 401);
    // alg none with the real claims.
    let payload = token.split('.').nth(1).unwrap();
    let none = format!(
        "{}.{payload}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    assert_eq!(numbers_with(&s, &none).await.0, 401);
    let hs512 = format!(
        "{}.{payload}.{}",
        B64.encode(br#"{"alg":"HS512","typ":"JWT"}"#),
        token.split('.').nth(2).unwrap()
    );
    assert_eq!(numbers_with(&s, &hs512).await.0, 401);
    // Expired.
    let mut claims = s.handle.engine.signer.verify(&token).unwrap();
    claims.exp = unix_now() - 5;
    let expired = s.handle.engine.signer.sign(&claims);
    let (status, v) = numbers_with(&s, &expired).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("TOKEN_EXPIRED"))
    );
    // Wrong audience.
    let mut claims = s.handle.engine.signer.verify(&token).unwrap();
    claims.aud = "someone.else".into();
    assert_eq!(
        numbers_with(&s, &s.handle.engine.signer.sign(&claims))
            .await
            .0,
        401
    );
    // Garbage and missing header.
    assert_eq!(numbers_with(&s, "garbage").await.0, 401);
    let r = s.http.get(s.url("/v1/phone-numbers")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn health_metrics_calls_and_dev_token() {
    let s = TestServer::start().await;
    assert_eq!(
        s.get_json("/healthz").await,
        json!({
            "status": "ok",
            "calls": 0,
            "operatorsOnline": 0,
            "store": {"kind": "sqlite", "queuedWrites": 0, "writeRetries": 0, "droppedWrites": 0},
            "routing": {"kind": "in-process", "reachable": true, "node": null},
        })
    );
    let m = s.metrics().await;
    assert!(m.contains("audin_operators_online 0"), "{m}");
    assert!(m.contains("audin_sockets_open{kind=\"presence\"}"));
    // Call records need the API key.
    let r = s.http.get(s.url("/v1/calls")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(s.calls().await, Vec::<Value>::new());
    // The dev backend endpoint: no body, defaults.
    let r = s
        .http
        .post(s.url("/api/operator/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let c = s
        .handle
        .engine
        .signer
        .verify(v["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(c.sub, "dev-operator");
    assert_eq!(c.pns.len(), 2);
    let r = s
        .http
        .post(s.url("/api/operator/token"))
        .json(&json!({"operatorRef": "alice", "phoneNumberIds": [ROMA]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let c = s
        .handle
        .engine
        .signer
        .verify(v["token"].as_str().unwrap())
        .unwrap();
    assert_eq!((c.sub.as_str(), c.pns), ("alice", vec![ROMA.to_owned()]));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn cors_for_allowed_origins_only() {
    let mut cfg = config();
    cfg.allowed_origins = vec!["http://localhost:*".into(), "https://app.example".into()];
    let s = TestServer::with(cfg).await;
    let pre = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/v1/phone-numbers"))
        .header("Origin", "http://localhost:3000")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success());
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert!(
        pre.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization")
    );
    let r = s
        .http
        .get(s.url("/healthz"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let r = s
        .http
        .get(s.url("/healthz"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    s.handle.shutdown().await;
}

#[tokio::test]
async fn dev_routes_do_not_exist_without_dev() {
    let mut cfg = config();
    cfg.dev = false;
    let s = TestServer::with(cfg).await;
    assert!(s.handle.dev_api_key.is_none());
    let r = s
        .http
        .post(s.url("/dev/sim/calls"))
        .json(&json!({"from": "+14155550100", "to": MILANO_E164}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .http
        .post(s.url("/api/operator/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn sim_call_validation() {
    let s = TestServer::start().await;
    let r = s
        .http
        .post(s.url("/dev/sim/calls"))
        .json(&json!({"from": "12345", "to": MILANO_E164}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "INVALID_NUMBER");
    let r = s
        .http
        .get(s.url("/dev/sim/calls/CAnope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn static_dir_is_served_under_sdk() {
    let dir = std::env::temp_dir().join(format!("audin-static-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("examples")).unwrap();
    std::fs::write(dir.join("examples/demo.html"), "<h1>demo</h1>").unwrap();
    let mut cfg = config();
    cfg.static_dir = Some(dir.clone());
    let s = TestServer::with(cfg).await;
    let r = s
        .http
        .get(s.url("/sdk/examples/demo.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(r.text().await.unwrap(), "<h1>demo</h1>");
    let r = s.http.get(s.url("/sdk/missing.js")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .http
        .get(s.url("/sdk/..%2F..%2Fetc%2Fpasswd"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    s.handle.shutdown().await;
}

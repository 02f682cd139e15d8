//! Logs never contain a token or an API key, even at trace level, across a
//! run that issues tokens, uses them on both sockets and fails auth.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_contain_no_secrets() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(audin_server::log_filter(Some("trace")))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let s = TestServer::start().await;
    let mut secrets = vec![s.key.clone()];
    // Tokens from both endpoints, used on presence, audio and HTTP.
    let token = s.token("op-1", &[MILANO]).await;
    secrets.push(token.clone());
    let r = s
        .http
        .post(s.url("/api/operator/token"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    secrets.push(v["token"].as_str().unwrap().to_owned());
    let r = s
        .http
        .get(s.url("/v1/phone-numbers"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut p = s.online("op-1", &[MILANO]).await;
    let fresh = s.token("op-1", &[MILANO]).await;
    secrets.push(fresh.clone());
    p.send_json(json!({"type": "refreshToken", "token": fresh}))
        .await;
    p.expect("tokenRefreshed").await;
    let sid = s.dial(&mut p, "+15550100001").await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    audio.expect("answered").await;
    audio.send_json(json!({"type": "hangup"})).await;
    audio.expect("ended").await;
    // Failures: a wrong key and a forged token carrying a real payload.
    let wrong_key = format!("{}x", s.key);
    secrets.push(wrong_key.clone());
    let r = s
        .http
        .post(s.url("/operator-sessions/token"))
        .header("X-API-Key", &wrong_key)
        .json(&json!({"operatorRef": "op-1", "phoneNumberIds": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let forged = format!("{token}x");
    let mut ws = Ws::connect(&s.ws_url("/v1/operator/presence")).await;
    ws.send_json(json!({"type": "hello", "token": forged}))
        .await;
    assert_eq!(ws.closed().await, Some(4002));
    s.ended_record(&sid).await;
    s.handle.shutdown().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("session token issued"),
        "logging was captured"
    );
    assert!(logs.contains("call ended"));
    for secret in &secrets {
        // Check the distinctive parts: the key secret and each token's
        // payload and signature.
        let parts: Vec<&str> = if secret.starts_with("ak_") {
            // `ak_` + 16 hex digits + `_` + the secret part.
            vec![&secret[20..], secret]
        } else {
            secret.split('.').skip(1).collect()
        };
        for part in parts {
            assert!(part.len() >= 16);
            if let Some(i) = logs.find(part) {
                let line_start = logs[..i].rfind('\n').map_or(0, |x| x + 1);
                panic!(
                    "a secret leaked into the logs: {}",
                    &logs[line_start..(i + 200).min(logs.len())]
                );
            }
        }
    }
}

//! Client text with control and format characters (issue 12, point 3):
//! refused where it would be stored as a name, and escaped wherever it is
//! accepted and reaches a log line (Trojan-Source-style log spoofing).

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use audin_protocol::is_unsafe_char;
use serde_json::{Value, json};
use support::*;

/// Everything the process logs (one global subscriber per test binary).
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

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_env_filter(audin_server::log_filter(Some("trace")))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        capture
    })
}

async fn token_request(s: &TestServer, operator_ref: &str, display_name: &str) -> (u16, Value) {
    let r = s
        .http
        .post(s.url("/operator-sessions/token"))
        .header("X-API-Key", &s.key)
        .json(&json!({"operatorRef": operator_ref, "displayName": display_name, "phoneNumberIds": [MILANO]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn token_refuses_control_and_format_characters_in_names() {
    let s = TestServer::start().await;
    for (operator_ref, display_name, field) in [
        ("op\u{202e}1", "Ada", "operatorRef"),
        ("op-\u{200b}1", "Ada", "operatorRef"),
        ("op\u{2028}INFO forged", "Ada", "operatorRef"),
        ("op\u{1b}[31m", "Ada", "operatorRef"),
        ("op-1", "Ada\u{202e}", "displayName"),
        ("op-1", "Ada\u{2029}", "displayName"),
        ("op-1", "Ada\u{feff}", "displayName"),
    ] {
        let (status, body) = token_request(&s, operator_ref, display_name).await;
        let case = format!("{operator_ref:?} / {display_name:?}: {body}");
        assert_eq!(status, 400, "{case}");
        assert_eq!(body["error"]["code"], "INVALID_MESSAGE", "{case}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{case}");
        assert!(message.contains("printable"), "{case}");
        assert!(
            !message.chars().any(is_unsafe_char),
            "the error echoes input raw: {case}"
        );
    }
    // Printable text beyond ASCII stays welcome.
    let (status, body) = token_request(&s, "opérateur-1 ☎", "Zoë Ñúñez 😀").await;
    assert_eq!(status, 200, "{body}");
    s.handle.shutdown().await;
}

/// A hostile string accepted somewhere (an operatorRef in a token minted
/// before names were checked, a `callSid` in accept/reject/hangup) is
/// logged, but escaped: the log never holds an unsafe character.
#[tokio::test]
async fn hostile_strings_never_reach_the_log_raw() {
    let logs = capture();
    let mut cfg = config();
    cfg.signing_secret = Some("hostile-text-test-secret".into());
    let s = TestServer::with(cfg).await;
    let hostile_ref = "op\u{202e}1\r\n2026-01-01T00:00:00Z  INFO forged\u{1b}[2J";
    // A token the endpoint would refuse now, as an older server signed it.
    let (token, _) = audin_server::auth::TokenSigner::new(b"hostile-text-test-secret").issue(
        audin_server::db::DEV_ACCOUNT_ID,
        hostile_ref,
        "Name\u{2028}",
        vec![MILANO.to_owned()],
        600,
    );
    let mut p = Ws::connect(&s.ws_url("/v1/operator/presence")).await;
    p.send_json(json!({"type": "hello", "token": token})).await;
    let welcome = p.expect("welcome").await;
    assert_eq!(welcome["operatorRef"], hostile_ref);
    p.send_json(json!({"type": "goOnline", "phoneNumberIds": [MILANO]}))
        .await;
    p.expect("availability").await;
    let hostile_sid = "CA\u{0}\u{1b}[31mX\r\nFAKE \u{202e}\u{2066}";
    for ty in ["accept", "reject", "hangup"] {
        p.send_json(json!({"type": ty, "callSid": hostile_sid}))
            .await;
    }
    // Whatever the replies, they come before the pong; then a real call,
    // so the operator lands in the call's log lines too.
    p.send_json(json!({"type": "ping", "id": 7})).await;
    while p.text().await["type"] != "pong" {}
    let sid = s.dial(&mut p, "+15550100001").await;
    p.send_json(json!({"type": "hangup", "callSid": sid})).await;
    p.expect("callEnded").await;
    s.ended_record(&sid).await;
    p.close().await;
    s.handle.shutdown().await;

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "operator connected",
        "outbound call dialled",
        "presence message received",
        r#"kind="accept""#,
    ] {
        assert!(logs.contains(expected), "no {expected:?} in:\n{logs}");
    }
    // Split on '\n' only: `lines()` would hide a raw CR at a line's end.
    let raw: Vec<&str> = logs
        .split('\n')
        .filter(|l| l.chars().any(is_unsafe_char))
        .collect();
    assert!(
        raw.is_empty(),
        "log lines with raw unsafe characters: {raw:#?}"
    );
    // Both hostile strings were logged, escaped.
    assert!(logs.contains(r#"op\u{202e}1\r\n2026"#), "{logs}");
    assert!(logs.contains(r#"CA\u{0}\u{1b}[31mX\r\nFAKE \u{202e}\u{2066}"#));
}

//! Golden fixtures: every message in `tests/fixtures/*.json` decodes into the
//! Rust types and encodes back to the same JSON. The TypeScript tests read
//! the same files, so the two sides cannot drift.

use audin_protocol::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeSet;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Null optional fields may be omitted on re-encoding; compare without them.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn round_trip_all<T: Serialize>(
    name: &str,
    decode: impl Fn(&str) -> Result<T, DecodeError>,
) -> BTreeSet<String> {
    let mut types = BTreeSet::new();
    for fixture in load(name).as_array().unwrap() {
        let text = fixture.to_string();
        let msg = decode(&text).unwrap_or_else(|e| panic!("{name}: {text}: {e}"));
        let back = serde_json::to_value(&msg).unwrap();
        assert_eq!(without_nulls(&back), without_nulls(fixture), "{name}");
        types.insert(fixture["type"].as_str().unwrap().to_owned());
    }
    types
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn presence_client_fixtures_cover_every_message() {
    let types = round_trip_all("presence-client.json", decode_client_message);
    let expected = [
        "hello",
        "goOnline",
        "ping",
        "refreshToken",
        "accept",
        "reject",
        "dial",
        "hangup",
    ];
    assert_eq!(types, set(&expected));
}

#[test]
fn presence_server_fixtures_cover_every_message() {
    let types = round_trip_all("presence-server.json", decode_server_message);
    let expected = [
        "welcome",
        "availability",
        "pong",
        "tokenRefreshed",
        "callOffer",
        "callAccepted",
        "dialAccepted",
        "callEnded",
        "error",
    ];
    assert_eq!(types, set(&expected));
}

#[test]
fn audio_fixtures_cover_every_message() {
    let client = round_trip_all("audio-client.json", decode_audio_client_message);
    assert_eq!(
        client,
        set(&["attach", "mute", "dtmf", "hangup", "ping", "preflight"])
    );
    let server = round_trip_all("audio-server.json", decode_audio_server_message);
    assert_eq!(
        server,
        set(&[
            "attached",
            "answered",
            "ended",
            "error",
            "pong",
            "preflightStarted"
        ])
    );
}

fn http_round_trip<T: Serialize + DeserializeOwned>(v: &Value) {
    let typed: T = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        without_nulls(&serde_json::to_value(typed).unwrap()),
        without_nulls(v)
    );
}

#[test]
fn http_fixtures_round_trip() {
    let http = load("http.json");
    http_round_trip::<TokenRequest>(&http["tokenRequest"]);
    http_round_trip::<TokenResponse>(&http["tokenResponse"]);
    http_round_trip::<Vec<PhoneNumberInfo>>(&http["phoneNumbers"]);
    http_round_trip::<Vec<CallRecord>>(&http["callRecords"]);
    http_round_trip::<ErrorBody>(&http["errorBody"]);
}

/// Every JSON example of the protocol doc is exactly what the encoder
/// writes for it, nulls included: the doc once showed `"activeCall": null`
/// in `welcome` while the server omits an absent call (issue 12), so an
/// integrator reading the doc could not tell which to expect. An example
/// that no decoder re-encodes to itself fails here.
#[test]
fn protocol_doc_examples_are_exactly_what_is_encoded() {
    let doc_path = format!("{}/../../docs/protocol-v1.md", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(doc_path).unwrap();
    let encoders: [fn(&str) -> Option<String>; 4] = [
        |t| decode_client_message(t).ok().map(|m| m.to_json()),
        |t| decode_server_message(t).ok().map(|m| m.to_json()),
        |t| decode_audio_client_message(t).ok().map(|m| m.to_json()),
        |t| decode_audio_server_message(t).ok().map(|m| m.to_json()),
    ];
    let mut checked = BTreeSet::new();
    for block in doc.split("```json").skip(1) {
        let block = block.split("```").next().unwrap();
        for line in block.lines().filter(|l| l.starts_with(r#"{"type":"#)) {
            let example: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let exact = encoders
                .iter()
                .filter_map(|enc| enc(line))
                .any(|json| serde_json::from_str::<Value>(&json).unwrap() == example);
            assert!(exact, "the doc's example is not what is encoded: {line}");
            checked.insert(example["type"].as_str().unwrap().to_owned());
        }
    }
    for ty in ["welcome", "error", "attach", "ended", "dial"] {
        assert!(
            checked.contains(ty),
            "no doc example of {ty} checked: {checked:?}"
        );
    }
}

/// The server writes `welcome` without `activeCall` when there is none;
/// `null` (older servers, other implementations) must read the same.
#[test]
fn welcome_without_an_active_call_omits_it_and_null_reads_the_same() {
    let msg = ServerMessage::Welcome {
        session_id: "ps_1".into(),
        operator_ref: "op-1".into(),
        expires_at: "2026-11-23T20:00:00Z".into(),
        silence_timeout_ms: 62_500,
        active_call: None,
    };
    let json = msg.to_json();
    assert!(!json.contains("activeCall"), "{json}");
    let with_null = json.replace('}', r#","activeCall":null}"#);
    assert_eq!(decode_server_message(&with_null).unwrap(), msg);
    assert_eq!(decode_server_message(&json).unwrap(), msg);
}

#[test]
fn unknown_fields_are_ignored() {
    let msg = decode_client_message(r#"{"type":"ping","id":1,"addedInV1_3":{"x":1}}"#).unwrap();
    assert_eq!(msg, ClientMessage::Ping { id: 1 });
}

#[test]
fn protocol_doc_lists_every_error_code_close_code_and_end_reason() {
    let doc_path = format!("{}/../../docs/protocol-v1.md", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(doc_path).unwrap();
    for code in ErrorCode::ALL {
        assert!(
            doc.contains(&format!("`{}`", code.as_str())),
            "doc lacks {code}"
        );
    }
    for close in CloseCode::ALL {
        assert!(
            doc.contains(&format!("| {} |", close.code())),
            "doc lacks close {close:?}"
        );
    }
    for reason in EndReason::ALL {
        assert!(
            doc.contains(&format!("`{}`", reason.as_str())),
            "doc lacks {reason}"
        );
    }
    for fixture in [
        "presence-client.json",
        "presence-server.json",
        "audio-client.json",
        "audio-server.json",
    ] {
        for msg in load(fixture).as_array().unwrap() {
            let ty = msg["type"].as_str().unwrap();
            assert!(doc.contains(&format!("`{ty}`")), "doc lacks message {ty}");
        }
    }
}

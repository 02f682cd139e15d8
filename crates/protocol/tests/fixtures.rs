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
    assert_eq!(client, set(&["attach", "mute", "dtmf", "hangup"]));
    let server = round_trip_all("audio-server.json", decode_audio_server_message);
    assert_eq!(server, set(&["attached", "answered", "ended", "error"]));
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

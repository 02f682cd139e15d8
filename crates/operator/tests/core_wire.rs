//! The core's small decoder must agree with `audin-protocol`'s decoder on
//! every golden fixture, and reject what it rejects.

use audin_operator::core::{WireError, decode_audio, decode_presence};
use audin_protocol::{ErrorCode, decode_audio_server_message, decode_server_message};
use serde_json::Value;

fn fixtures(json: &str) -> Vec<String> {
    let all: Vec<Value> = serde_json::from_str(json).unwrap();
    all.iter().map(Value::to_string).collect()
}

#[test]
fn presence_fixtures_decode_exactly_like_the_protocol_crate() {
    let texts = fixtures(include_str!(
        "../../protocol/tests/fixtures/presence-server.json"
    ));
    assert!(texts.len() >= 9);
    for text in texts {
        assert_eq!(
            decode_presence(&text).unwrap(),
            decode_server_message(&text).unwrap(),
            "{text}"
        );
    }
}

#[test]
fn audio_fixtures_decode_exactly_like_the_protocol_crate() {
    let texts = fixtures(include_str!(
        "../../protocol/tests/fixtures/audio-server.json"
    ));
    assert!(texts.len() >= 4);
    for text in texts {
        assert_eq!(
            decode_audio(&text).unwrap(),
            decode_audio_server_message(&text).unwrap(),
            "{text}"
        );
    }
}

#[test]
fn malformed_messages_are_rejected_like_the_protocol_crate() {
    for text in [
        "",
        "{oops",
        "[1,2]",
        r#"{"id":1}"#,
        r#"{"type":7}"#,
        r#"{"type":"pong"}"#,
        r#"{"type":"pong","id":"x"}"#,
        r#"{"type":"callOffer","callSid":"CA1","from":"+1","to":"+2"}"#,
        r#"{"type":"welcome","sessionId":"s","operatorRef":"o","expiresAt":"t"}"#,
        r#"{"type":"availability","accepted":["a"]}"#,
    ] {
        assert!(
            decode_server_message(text).is_err(),
            "protocol accepts {text}"
        );
        assert!(
            matches!(decode_presence(text), Err(WireError::Invalid(_))),
            "{text}"
        );
    }
    assert!(matches!(
        decode_audio(r#"{"type":"attached","callSid":"CA1","answered":true}"#),
        Err(WireError::Invalid(_))
    ));
}

#[test]
fn unknown_types_are_reported_as_such_and_unknown_fields_ignored() {
    assert_eq!(
        decode_presence(r#"{"type":"teleport"}"#),
        Err(WireError::UnknownType("teleport".into()))
    );
    assert_eq!(
        decode_audio(r#"{"type":"teleport","id":1}"#),
        Err(WireError::UnknownType("teleport".into()))
    );
    let text = r#"{"type":"pong","id":3,"later":{"nested":[1,2]}}"#;
    assert_eq!(
        decode_presence(text).unwrap(),
        decode_server_message(text).unwrap()
    );
}

#[test]
fn newer_error_codes_and_end_reasons_stay_usable() {
    let msg = decode_presence(
        r#"{"type":"error","code":"SOMETHING_NEW","message":"m","requestId":"r1"}"#,
    )
    .unwrap();
    let audin_protocol::ServerMessage::Error {
        code,
        message,
        request_id,
        ..
    } = msg
    else {
        panic!()
    };
    assert_eq!(code, ErrorCode::Internal);
    assert_eq!(message, "[SOMETHING_NEW] m");
    assert_eq!(request_id.as_deref(), Some("r1"));
    let ended = decode_audio(r#"{"type":"ended","callSid":"CA1","reason":"teleported"}"#).unwrap();
    assert_eq!(
        ended,
        audin_protocol::AudioServerMessage::Ended {
            call_sid: "CA1".into(),
            reason: audin_protocol::EndReason::Failed
        }
    );
}

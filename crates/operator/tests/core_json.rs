//! The core's tiny JSON reader and writer (`core::json`) against `serde_json`
//! and `audin-protocol`'s serde types, which stay the contract:
//!
//! - parsing agrees with `serde_json` on every golden fixture and on a set of
//!   tricky valid and invalid texts;
//! - string escaping is byte-identical to `serde_json`;
//! - every `Output` / `Event` shape serialises byte-identically to the serde
//!   derive of the same type (what the TypeScript side was written against);
//! - client messages are byte-identical to `audin_protocol`'s `to_json` for
//!   every client message fixture (and their optional-field variants);
//! - `Config` and `TokenGrant` read from JSON like their serde derives.

use audin_operator::core::json::{self, Value};
use audin_operator::core::*;
use audin_protocol::{
    AudioClientMessage, ClientMessage, HangupReason, RejectReason, decode_audio_client_message,
    decode_client_message,
};

const FIXTURES: [&str; 5] = [
    include_str!("../../protocol/tests/fixtures/presence-client.json"),
    include_str!("../../protocol/tests/fixtures/presence-server.json"),
    include_str!("../../protocol/tests/fixtures/audio-client.json"),
    include_str!("../../protocol/tests/fixtures/audio-server.json"),
    include_str!("../../protocol/tests/fixtures/http.json"),
];

/// Our value as a `serde_json::Value` (numbers re-read by serde_json).
fn to_serde(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => serde_json::from_str(n).expect("a number serde_json reads"),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_serde).collect()),
        Value::Object(members) => serde_json::Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), to_serde(v)))
                .collect(),
        ),
    }
}

fn agree(text: &str) {
    let ours = json::parse(text);
    let theirs = serde_json::from_str::<serde_json::Value>(text);
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => assert_eq!(to_serde(&ours), theirs, "{text:?}"),
        (Err(_), Err(_)) => {}
        // Deliberate: numbers stay text in the core, so `1e999` is a valid
        // number there (and never an exact u64), where serde_json's f64
        // overflows.
        (Ok(_), Err(e)) if e.to_string().contains("number out of range") => {}
        (ours, theirs) => panic!("disagree on {text:?}: ours {ours:?}, serde_json {theirs:?}"),
    }
}

/// A small deterministic PRNG (no dependency).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn random_json(rng: &mut Rng, depth: usize, out: &mut String) {
    let ws = ["", "", " ", "\n", "\t ", "\r\n"];
    out.push_str(rng.pick(&ws));
    match rng.below(if depth > 3 { 4 } else { 6 }) {
        0 => out.push_str(rng.pick(&["null", "true", "false"])),
        1 => out.push_str(rng.pick(&[
            "0",
            "-0",
            "7",
            "42",
            "-13",
            "1.5",
            "2e10",
            "-3.25E-2",
            "18446744073709551615",
            "1e308",
        ])),
        2 | 3 => out.push_str(rng.pick(&[
            r#""""#,
            r#""callSid""#,
            r#""a\"b""#,
            r#""\u00e9\n""#,
            r#""😀""#,
            r#""\ud83d\ude00""#,
            r#""\/\\""#,
        ])),
        4 => {
            out.push('[');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                random_json(rng, depth + 1, out);
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(rng.pick(&[r#""type""#, r#""id""#, r#""a""#, r#""é""#]));
                out.push_str(rng.pick(&[":", " : "]));
                random_json(rng, depth + 1, out);
            }
            out.push('}');
        }
    }
    out.push_str(rng.pick(&ws));
}

#[test]
fn agrees_with_serde_json_on_random_and_mutated_texts() {
    let mut rng = Rng(0x5eed);
    let alphabet = [
        "{", "}", "[", "]", ",", ":", "\"", "\\", " ", "0", "1", "-", "+", ".", "e", "E", "t", "n",
        "u", "l", "x", "\u{1}", "é",
    ];
    for _ in 0..20_000 {
        let mut text = String::new();
        random_json(&mut rng, 0, &mut text);
        agree(&text);
        // One to three random edits: most make it invalid, some keep it valid.
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(chars.len() + 1);
            match rng.below(3) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 if at < chars.len() => {
                    let c = rng.pick(&alphabet).chars().next().unwrap();
                    chars[at] = c;
                }
                _ => {
                    let c = rng.pick(&alphabet).chars().next().unwrap();
                    chars.insert(at, c);
                }
            }
        }
        agree(&chars.into_iter().collect::<String>());
    }
}

#[test]
fn parses_every_fixture_like_serde_json() {
    for fixture in FIXTURES {
        let ours = json::parse(fixture).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(fixture).unwrap();
        assert_eq!(to_serde(&ours), theirs);
        // And each message on its own, compact, as it travels.
        if let serde_json::Value::Array(items) = &theirs {
            for item in items {
                agree(&item.to_string());
            }
        }
    }
}

#[test]
fn agrees_with_serde_json_on_tricky_texts() {
    let texts = [
        // valid
        "null",
        " true ",
        "\t\r\n[false]\n",
        "0",
        "-0",
        "-12.5e-3",
        "1E+2",
        "123456789012345678901234567890",
        r#""""#,
        r#""\"\\\/\b\f\n\r\t""#,
        r#""\u0000\u001f\u00e9\u20AC""#,
        r#""\ud83d\ude00 = 😀""#,
        r#""é ü 中文 🎉""#,
        "[]",
        "{}",
        r#"{"a":{"b":[1,{"c":null}]},"d":"e"}"#,
        r#"{ "a" : 1 , "b" : [ 1 , 2 ] }"#,
        r#"{"a":1,"a":2}"#,
        // invalid
        "",
        " ",
        "nul",
        "True",
        "[1,]",
        "[,1]",
        "{,}",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        "{a:1}",
        "{'a':1}",
        "[1 2]",
        "01",
        "1.",
        ".1",
        "+1",
        "1e",
        "-",
        "0x1",
        "NaN",
        "Infinity",
        r#""abc"#,
        r#""\x""#,
        r#""\u12""#,
        r#""\u12g4""#,
        r#""\ud800""#,
        r#""\ud800\u0041""#,
        r#""\udc00""#,
        "\"tab\there\"",
        "\"new\nline\"",
        "[1] [2]",
        "{} x",
        "[",
        "{",
        r#"{"a":"#,
    ];
    for text in texts {
        agree(text);
    }
    // Nesting: both accept 127 levels and refuse 128 (serde_json's limit).
    for depth in [127, 128, 129, 200] {
        agree(&("[".repeat(depth) + &"]".repeat(depth)));
        agree(&(r#"{"a":"#.repeat(depth) + "1" + &"}".repeat(depth)));
    }
}

#[test]
fn escapes_strings_exactly_like_serde_json() {
    let mut samples: Vec<String> = (0u32..0x300)
        .filter_map(char::from_u32)
        .map(String::from)
        .collect();
    samples.extend(
        [
            "",
            "plain",
            "quote \" backslash \\ slash / del \u{7f}",
            "\u{2028}\u{2029} 😀 中文",
            "mixed\u{1}\u{8}\u{c}\n\r\t\u{1f} end",
        ]
        .map(String::from),
    );
    for s in samples {
        let mut ours = String::new();
        json::write_str(&mut ours, &s);
        assert_eq!(ours, serde_json::to_string(&s).unwrap(), "{s:?}");
        assert_eq!(json::parse(&ours), Ok(Value::String(s)));
    }
}

fn call(end_reason: Option<EndReason>, odd: &str) -> CallInfo {
    CallInfo {
        call_sid: format!("CA{odd}"),
        direction: Direction::Outbound,
        from: "+14155550100".into(),
        to: "+390299999999".into(),
        state: if end_reason.is_some() {
            CallState::Ended
        } else {
            CallState::Connecting
        },
        end_reason,
        muted: true,
    }
}

fn every_event() -> Vec<Event> {
    let mut events = vec![
        Event::PresenceStateChanged {
            state: PresenceState::Online,
        },
        Event::AvailabilityChanged {
            accepted: vec!["pn_1".into(), "pn_\"2\"".into()],
            rejected: vec![],
        },
        Event::Error {
            code: ErrorCode::HeartbeatTimeout,
            message: "no pong\nat all".into(),
            cause: None,
        },
        Event::Error {
            code: ErrorCode::TokenFetchFailed,
            message: "m".into(),
            cause: Some("backend \\ down".into()),
        },
    ];
    for state in [
        PresenceState::Offline,
        PresenceState::Connecting,
        PresenceState::Reconnecting,
    ] {
        events.push(Event::PresenceStateChanged { state });
    }
    for (i, reason) in [None]
        .into_iter()
        .chain(EndReason::ALL.map(Some))
        .enumerate()
    {
        let c = call(reason, &"\u{1}é".repeat(i));
        events.extend([
            Event::IncomingCall { call: c.clone() },
            Event::CallStarted { call: c.clone() },
            Event::CallEnded { call: c.clone() },
            Event::CallUpdated { call: c.clone() },
            Event::CallReconnecting { call: c.clone() },
            Event::CallReconnected { call: c },
        ]);
    }
    for state in [CallState::Ringing, CallState::Active] {
        let mut c = call(None, "x");
        c.state = state;
        c.direction = Direction::Inbound;
        c.muted = false;
        events.push(Event::CallUpdated { call: c });
    }
    events
}

fn every_output() -> Vec<Output> {
    let mut outputs = vec![
        Output::FetchToken {
            id: TokenRequestId(u32::MAX),
        },
        Output::OpenSocket {
            id: SocketId(2),
            url: "wss://core.test/v1/operator/presence".into(),
            kind: SocketKind::Presence,
        },
        Output::OpenSocket {
            id: SocketId(3),
            url: "wss://core.test/v1/operator/audio".into(),
            kind: SocketKind::Audio {
                call_sid: "CA1".into(),
            },
        },
        Output::SendText {
            socket: SocketId(2),
            text: r#"{"type":"ping","id":1}"#.into(),
        },
        Output::CloseSocket {
            socket: SocketId(2),
            code: 4006,
            reason: "no pong".into(),
        },
        Output::HttpRequest {
            id: RequestId(0),
            method: "GET".into(),
            url: "https://core.test/v1/phone-numbers".into(),
            bearer_token: "eyJ.a-b_c.d".into(),
        },
        Output::StartMedia {
            call_sid: "CA1".into(),
            socket: SocketId(3),
        },
        Output::StopMedia {
            call_sid: "CA1".into(),
        },
        Output::SetMuted {
            call_sid: "CA1".into(),
            muted: false,
        },
        Output::Completed {
            op: OpId(1),
            result: Ok(OpValue::None),
        },
        Output::Completed {
            op: OpId(2),
            result: Ok(OpValue::Availability {
                accepted: vec!["pn_1".into()],
                rejected: vec!["pn_2".into(), "pn_3".into()],
            }),
        },
        Output::Completed {
            op: OpId(3),
            result: Ok(OpValue::Call {
                call: call(None, "1"),
            }),
        },
        Output::Completed {
            op: OpId(4),
            result: Ok(OpValue::PhoneNumbers {
                phone_numbers: vec![],
            }),
        },
        Output::Completed {
            op: OpId(5),
            result: Ok(OpValue::PhoneNumbers {
                phone_numbers: vec![
                    PhoneNumberInfo {
                        id: "pn_1".into(),
                        phone_number: "+390299999999".into(),
                        display_name: "Milano \"centro\"".into(),
                    },
                    PhoneNumberInfo {
                        id: "pn_2".into(),
                        phone_number: "+14155550100".into(),
                        display_name: String::new(),
                    },
                ],
            }),
        },
        Output::Completed {
            op: OpId(6),
            result: Err(OperatorError::new(
                ErrorCode::Timeout,
                "no answer\t(10000 ms)",
            )),
        },
    ];
    for level in [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ] {
        outputs.push(Output::Log {
            level,
            message: "a \u{0} b".into(),
        });
    }
    for code in ErrorCode::ALL {
        outputs.push(Output::Completed {
            op: OpId(7),
            result: Err(OperatorError::new(*code, code.as_str())),
        });
    }
    outputs.extend(
        every_event()
            .into_iter()
            .map(|event| Output::Event { event }),
    );
    outputs
}

#[test]
fn every_output_and_event_serialises_like_the_serde_derive() {
    let outputs = every_output();
    assert!(outputs.len() > 90);
    for output in &outputs {
        assert_eq!(
            output.to_json(),
            serde_json::to_string(output).unwrap(),
            "{output:?}"
        );
    }
    for event in every_event() {
        assert_eq!(event.to_json(), serde_json::to_string(&event).unwrap());
        if let Event::CallEnded { call } = &event {
            assert_eq!(call.to_json(), serde_json::to_string(call).unwrap());
        }
    }
}

fn fixture_items(text: &str) -> Vec<String> {
    let all: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
    all.iter().map(serde_json::Value::to_string).collect()
}

#[test]
fn client_messages_are_byte_identical_to_the_protocol_crate() {
    let mut presence: Vec<ClientMessage> = fixture_items(FIXTURES[0])
        .iter()
        .map(|t| decode_client_message(t).unwrap())
        .collect();
    assert!(presence.len() >= 8);
    let odd = "tok \"é\" \\ \u{1}\n😀";
    presence.extend([
        ClientMessage::Hello {
            token: odd.into(),
            client: None,
        },
        ClientMessage::GoOnline {
            phone_number_ids: vec![],
            request_id: None,
        },
        ClientMessage::Ping { id: u64::MAX },
        ClientMessage::RefreshToken {
            token: odd.into(),
            request_id: None,
        },
        ClientMessage::Reject {
            call_sid: "CA1".into(),
            reason: None,
        },
        ClientMessage::Reject {
            call_sid: "CA1".into(),
            reason: Some(RejectReason::Declined),
        },
        ClientMessage::Hangup {
            call_sid: "CA1".into(),
            reason: None,
        },
        ClientMessage::Hangup {
            call_sid: "CA1".into(),
            reason: Some(HangupReason::Hangup),
        },
    ]);
    for msg in &presence {
        assert_eq!(encode_presence(msg), msg.to_json(), "{msg:?}");
    }
    let mut audio: Vec<AudioClientMessage> = fixture_items(FIXTURES[2])
        .iter()
        .map(|t| decode_audio_client_message(t).unwrap())
        .collect();
    assert!(audio.len() >= 4);
    audio.extend([
        AudioClientMessage::Attach {
            token: odd.into(),
            call_sid: odd.into(),
        },
        AudioClientMessage::Mute { muted: false },
        AudioClientMessage::Dtmf { digit: "#".into() },
        AudioClientMessage::Hangup { reason: None },
        AudioClientMessage::Hangup {
            reason: Some(HangupReason::Offline),
        },
    ]);
    for msg in &audio {
        assert_eq!(encode_audio(msg), msg.to_json(), "{msg:?}");
    }
}

#[test]
fn config_reads_like_the_serde_derive() {
    let texts = [
        r#"{"coreUrl":"http://x"}"#,
        r#"{"coreUrl":"https://core.audin.ai","heartbeatIntervalMs":1000,
            "reconnectBackoffMs":[1,2,3],"clientName":"operator-sdk/0.1.0",
            "requestTimeoutMs":5,"tokenTimeoutMs":6,"audioReattachWindowMs":7,"other":[{}]}"#,
        r#"{}"#,
        r#"{"reconnectBackoffMs":[]}"#,
        r#"{"heartbeatIntervalMs":0}"#,
        // refused by both
        r#"{"coreUrl":"http://x","heartbeatIntervalMs":-5}"#,
        r#"{"coreUrl":"http://x","heartbeatIntervalMs":1.5}"#,
        r#"{"coreUrl":"http://x","heartbeatIntervalMs":"5"}"#,
        r#"{"coreUrl":"http://x","heartbeatIntervalMs":null}"#,
        r#"{"coreUrl":"http://x","reconnectBackoffMs":null}"#,
        r#"{"coreUrl":"http://x","reconnectBackoffMs":[1,"2"]}"#,
        r#"{"coreUrl":"http://x","reconnectBackoffMs":5}"#,
        r#"{"coreUrl":5}"#,
        r#"{"coreUrl":"http://x","coreUrl":"http://y"}"#,
        "null",
        "{",
    ];
    for text in texts {
        let ours = Config::from_json(text).ok();
        let theirs = serde_json::from_str::<Config>(text).ok();
        assert_eq!(ours, theirs, "{text}");
    }
    // serde's derive also reads a struct from an array, positionally; the
    // JSON form is an object only.
    assert!(Config::from_json(r#"["http://x"]"#).is_err());
    let err = Config::from_json(r#"{"heartbeatIntervalMs":-5}"#).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidConfig);
    assert!(
        err.message.contains("heartbeatIntervalMs"),
        "{}",
        err.message
    );
}

#[test]
fn token_grants_read_like_the_serde_derive() {
    let texts = [
        r#"{"token":"t"}"#,
        r#"{"token":"t","expiresAt":"2026-11-23T20:00:00Z","extra":1}"#,
        r#"{"token":"t","expiresAt":null}"#,
        r#"{"token":""}"#,
        r#"{"token":5}"#,
        r#"{"token":null}"#,
        r#"{"expiresAt":"2026-11-23T20:00:00Z"}"#,
        r#"{"token":"t","expiresAt":12}"#,
        r#""t""#,
        "null",
        "[]",
    ];
    for text in texts {
        let ours = TokenGrant::from_json(text);
        let theirs = serde_json::from_str::<TokenGrant>(text).ok();
        assert_eq!(ours, theirs, "{text}");
    }
}

#[test]
fn numbers_and_strings_round_trip_through_the_writer() {
    for n in [0u64, 1, 9, 10, 99, 100, 65_535, u32::MAX.into(), u64::MAX] {
        let mut out = String::new();
        json::write_u64(&mut out, n);
        assert_eq!(out, n.to_string());
        assert_eq!(json::parse(&out).unwrap().as_u64(), Some(n));
    }
}

//! Presence: connect, availability, heartbeat, reconnect schedule, token
//! refresh, replacement, go offline. Simulated time, no sleeps.

mod harness;

use audin_operator::core::*;
use harness::*;
use serde_json::{Value, json};

fn states(events: &[Event]) -> Vec<PresenceState> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PresenceStateChanged { state } => Some(*state),
            _ => None,
        })
        .collect()
}

#[test]
fn go_online_connects_announces_and_resolves_on_availability() {
    let mut sim = Sim::new();
    assert_eq!(sim.op.state(), PresenceState::Offline);
    let op = sim
        .op
        .go_online(sim.now, vec!["pn_1".into(), "pn_x".into()]);
    assert_eq!(sim.op.state(), PresenceState::Connecting);
    let id = sim.take_token_request();
    sim.give_token(id, "tok-1", None);
    let (socket, url, _) = sim.take_open();
    assert_eq!(url, "wss://core.test/v1/operator/presence");
    sim.open(socket);
    let hello = sim.sent_one(socket, "hello");
    assert_eq!(hello["token"], "tok-1");
    assert!(
        hello["client"]
            .as_str()
            .unwrap()
            .starts_with("audin-operator/")
    );
    // Nothing but hello before welcome.
    assert!(sim.sent(socket).is_empty());
    sim.server(socket, welcome(Value::Null));
    assert_eq!(sim.op.state(), PresenceState::Online);
    let go = sim.sent_one(socket, "goOnline");
    assert_eq!(go["phoneNumberIds"], json!(["pn_1", "pn_x"]));
    assert!(
        sim.completed(op).is_none(),
        "resolves on availability, not welcome"
    );
    sim.server(
        socket,
        json!({"type":"availability","accepted":["pn_1"],"rejected":["pn_x"],"requestId":go["requestId"]}),
    );
    let expected = OpValue::Availability {
        accepted: vec!["pn_1".into()],
        rejected: vec!["pn_x".into()],
    };
    assert_eq!(sim.completed(op), Some(Ok(expected)));
    let events = sim.events();
    assert_eq!(
        states(&events),
        [PresenceState::Connecting, PresenceState::Online]
    );
    assert!(events.contains(&Event::AvailabilityChanged {
        accepted: vec!["pn_1".into()],
        rejected: vec!["pn_x".into()]
    }));
}

#[test]
fn go_online_again_changes_the_set_on_the_live_socket() {
    let mut sim = Sim::new();
    let socket = sim.online();
    let op = sim.op.go_online(sim.now, vec!["pn_2".into()]);
    assert!(!sim.has_token_request(), "no new connection");
    let go = sim.sent_one(socket, "goOnline");
    assert_eq!(go["phoneNumberIds"], json!(["pn_2"]));
    sim.server(
        socket,
        json!({"type":"availability","accepted":["pn_2"],"rejected":[],"requestId":go["requestId"]}),
    );
    assert!(matches!(sim.completed(op), Some(Ok(_))));
}

#[test]
fn server_error_reply_rejects_go_online() {
    let mut sim = Sim::new();
    let socket = sim.online();
    let op = sim.op.go_online(sim.now, vec!["pn_2".into()]);
    let go = sim.sent_one(socket, "goOnline");
    sim.server(
        socket,
        json!({"type":"error","code":"RATE_LIMITED","message":"slow down","requestId":go["requestId"]}),
    );
    let err = sim.completed(op).unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::RateLimited);
}

#[test]
fn reconnect_backoff_schedule_is_exact_and_resets_after_success() {
    let mut sim = Sim::new();
    let socket = sim.online();
    let lost_at = sim.now.0;
    sim.close(socket, Some(1006));
    assert_eq!(sim.op.state(), PresenceState::Reconnecting);
    let mut attempts = Vec::new();
    for _ in 0..6 {
        let at = sim.fire_next_timer();
        attempts.push(at);
        // The attempt connects to nothing: the socket fails to open.
        let id = sim.take_token_request();
        sim.give_token(id, "tok", None);
        let (s, _, _) = sim.take_open();
        sim.close(s, None);
        assert_eq!(sim.op.state(), PresenceState::Reconnecting);
    }
    let gaps: Vec<u64> = attempts
        .iter()
        .scan(lost_at, |prev, &t| {
            let gap = t - *prev;
            *prev = t;
            Some(gap)
        })
        .collect();
    assert_eq!(gaps, [1_000, 2_000, 5_000, 10_000, 30_000, 30_000]);
    // The 7th attempt succeeds, then a new loss starts from 1000 again.
    sim.fire_next_timer();
    let socket = sim.connect_presence(Value::Null);
    assert_eq!(sim.op.state(), PresenceState::Online);
    let lost_again = sim.now.0;
    sim.close(socket, Some(1011));
    assert_eq!(sim.fire_next_timer() - lost_again, 1_000);
}

#[test]
fn reconnect_uses_a_fresh_token_and_reannounces_the_last_set() {
    let mut sim = Sim::new();
    let socket = sim.online();
    sim.op.go_online(sim.now, vec!["pn_7".into()]);
    sim.sent(socket);
    sim.close(socket, Some(1001));
    let events = sim.events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Error {
            code: ErrorCode::ServerShutdown,
            ..
        }
    )));
    assert_eq!(states(&events), [PresenceState::Reconnecting]);
    sim.fire_next_timer();
    let id = sim.take_token_request();
    sim.give_token(id, "tok-fresh", None);
    let (socket, _, _) = sim.take_open();
    sim.open(socket);
    assert_eq!(sim.sent_one(socket, "hello")["token"], "tok-fresh");
    sim.server(socket, welcome(Value::Null));
    assert_eq!(
        sim.sent_one(socket, "goOnline")["phoneNumberIds"],
        json!(["pn_7"])
    );
    assert_eq!(states(&sim.events()), [PresenceState::Online]);
}

#[test]
fn go_online_while_reconnecting_stays_pending_until_availability() {
    let mut sim = Sim::new();
    let socket = sim.online();
    sim.close(socket, None);
    let op = sim.op.go_online(sim.now, vec!["pn_9".into()]);
    sim.advance(60_000 * 5);
    assert!(sim.completed(op).is_none());
    // Let the next attempt through.
    sim.outbox.clear();
    while !sim.has_token_request() {
        sim.fire_next_timer();
    }
    let socket = sim.connect_presence(Value::Null);
    sim.answer_go_online(socket);
    assert!(matches!(sim.completed(op), Some(Ok(_))));
}

#[test]
fn get_token_failures_are_reported_and_retried_on_the_schedule() {
    let mut sim = Sim::new();
    sim.op.go_online(sim.now, vec!["pn_1".into()]);
    // Error, timeout (no answer), and an empty token all count as failures.
    let id = sim.take_token_request();
    sim.fail_token(id);
    assert_eq!(sim.error_codes(), [ErrorCode::TokenFetchFailed]);
    assert_eq!(sim.op.state(), PresenceState::Connecting);
    sim.fire_next_timer();
    let _unanswered = sim.take_token_request();
    sim.advance(10_000); // token_timeout_ms
    assert_eq!(sim.error_codes(), [ErrorCode::TokenFetchFailed]);
    sim.fire_next_timer();
    let id = sim.take_token_request();
    sim.give_token(id, "  ", None);
    assert_eq!(sim.error_codes(), [ErrorCode::TokenFetchFailed]);
    sim.fire_next_timer();
    let times = sim.token_request_times();
    assert_eq!(times, [0, 1_000, 13_000, 18_000]);
}

#[test]
fn late_token_after_timeout_is_ignored() {
    let mut sim = Sim::new();
    sim.op.go_online(sim.now, vec![]);
    let id = sim.take_token_request();
    sim.advance(10_000);
    sim.give_token(id, "late", None);
    sim.drain();
    assert!(
        !sim.outbox
            .iter()
            .any(|o| matches!(o, Output::OpenSocket { .. }))
    );
}

#[test]
fn heartbeat_pings_every_interval_and_detects_a_missing_pong_within_one_interval() {
    let mut sim = Sim::new();
    let socket = sim.online();
    let t0 = sim.now.0;
    assert_eq!(sim.op.poll_timeout(), Some(Millis(t0 + 25_000)));
    for round in 1..=3 {
        sim.advance(25_000);
        let ping = sim.sent_one(socket, "ping");
        sim.server(socket, json!({"type":"pong","id":ping["id"]}));
        assert_eq!(sim.op.state(), PresenceState::Online, "round {round}");
    }
    // Half-open: the next ping goes unanswered.
    sim.advance(25_000);
    sim.sent_one(socket, "ping");
    sim.advance(24_999);
    assert_eq!(sim.op.state(), PresenceState::Online);
    sim.advance(1);
    assert_eq!(sim.op.state(), PresenceState::Reconnecting);
    assert_eq!(sim.closes(), [(socket, 4006)]);
    assert!(sim.error_codes().contains(&ErrorCode::HeartbeatTimeout));
    // Reconnects on the schedule.
    let lost = sim.now.0;
    assert_eq!(sim.fire_next_timer() - lost, 1_000);
    assert!(sim.has_token_request());
}

#[test]
fn custom_heartbeat_interval() {
    let mut sim = Sim::with(|c| c.heartbeat_interval_ms = 5_000);
    let socket = sim.online();
    sim.advance(5_000);
    sim.sent_one(socket, "ping");
    sim.advance(5_000);
    assert_eq!(sim.op.state(), PresenceState::Reconnecting);
}

/// Runs a presence connection whose token expires after `lifetime_s`
/// (given through `expires_at` or the JWT); returns the delay from welcome
/// to the refresh's getToken.
fn refresh_delay(lifetime_s: u64, via_jwt: bool) -> u64 {
    let mut sim = Sim::new();
    sim.op.go_online(sim.now, vec![]);
    let id = sim.take_token_request();
    let exp = sim.wall() / 1000 + lifetime_s;
    if via_jwt {
        sim.give_token(id, &jwt_with_exp(exp), None);
    } else {
        sim.give_token(id, "opaque", Some(&rfc3339(exp)));
    }
    let (socket, _, _) = sim.take_open();
    sim.open(socket);
    sim.server(socket, welcome(Value::Null));
    let welcomed = sim.now.0;
    loop {
        sim.fire_next_timer();
        for ping in sim.sent(socket).iter().filter(|m| m["type"] == "ping") {
            sim.server(socket, json!({"type":"pong","id":ping["id"]}));
        }
        if sim.has_token_request() {
            return sim.now.0 - welcomed;
        }
    }
}

#[test]
fn token_refresh_is_60s_before_expiry_from_expires_at_and_from_jwt_exp() {
    assert_eq!(refresh_delay(3_600, false), 3_540_000);
    assert_eq!(refresh_delay(3_600, true), 3_540_000);
    // Shorter lifetimes: at half the remaining lifetime.
    assert_eq!(refresh_delay(100, false), 50_000);
    assert_eq!(refresh_delay(100, true), 50_000);
    // Already expired: clamped to the minimum delay, never in the past.
    assert_eq!(refresh_delay(0, false), MIN_REFRESH_DELAY_MS);
}

#[test]
fn token_refresh_sends_refresh_token_and_reschedules_from_the_new_expiry() {
    let mut sim = Sim::with(|c| c.heartbeat_interval_ms = 1_000_000_000);
    sim.op.go_online(sim.now, vec![]);
    let id = sim.take_token_request();
    sim.give_token(id, "t1", Some(&expires_in(sim.wall(), 3_600)));
    let (socket, _, _) = sim.take_open();
    sim.open(socket);
    sim.server(socket, welcome(Value::Null));
    sim.sent(socket);
    assert_eq!(sim.fire_next_timer(), 3_540_000);
    let id = sim.take_token_request();
    sim.give_token(id, "t2", Some(&expires_in(sim.wall(), 600)));
    let msg = sim.sent_one(socket, "refreshToken");
    assert_eq!(msg["token"], "t2");
    sim.server(
        socket,
        json!({"type":"tokenRefreshed","expiresAt":"2026-11-23T21:00:00Z","requestId":msg["requestId"]}),
    );
    assert_eq!(sim.fire_next_timer(), 3_540_000 + 540_000);
    assert!(sim.has_token_request());
}

#[test]
fn token_refresh_failures_are_retried_on_the_schedule() {
    let mut sim = Sim::with(|c| c.heartbeat_interval_ms = 1_000_000_000);
    sim.op.go_online(sim.now, vec![]);
    let id = sim.take_token_request();
    sim.give_token(id, "t1", Some(&expires_in(sim.wall(), 3_600)));
    let (socket, _, _) = sim.take_open();
    sim.open(socket);
    sim.server(socket, welcome(Value::Null));
    sim.events();
    let first = sim.fire_next_timer();
    let id = sim.take_token_request();
    sim.fail_token(id);
    assert_eq!(sim.error_codes(), [ErrorCode::TokenFetchFailed]);
    assert_eq!(sim.fire_next_timer() - first, 1_000);
    let id = sim.take_token_request();
    sim.fail_token(id);
    assert_eq!(sim.error_codes(), [ErrorCode::TokenFetchFailed]);
    assert_eq!(sim.fire_next_timer() - first, 3_000);
    // A server refusal counts too.
    let id = sim.take_token_request();
    sim.give_token(id, "t-other", None);
    let msg = sim.sent_one(socket, "refreshToken");
    sim.server(
        socket,
        json!({"type":"error","code":"FORBIDDEN","message":"other operator","requestId":msg["requestId"]}),
    );
    assert_eq!(sim.error_codes(), [ErrorCode::Forbidden]);
    assert_eq!(sim.fire_next_timer() - first, 8_000);
    assert_eq!(sim.op.state(), PresenceState::Online);
}

#[test]
fn no_refresh_when_the_expiry_is_unknown() {
    let mut sim = Sim::new();
    sim.op.go_online(sim.now, vec![]);
    let id = sim.take_token_request();
    sim.give_token(id, "opaque", None);
    let (socket, _, _) = sim.take_open();
    sim.open(socket);
    sim.server(socket, welcome(Value::Null));
    // The only timer is the heartbeat.
    assert_eq!(sim.op.poll_timeout(), Some(Millis(25_000)));
}

#[test]
fn replaced_goes_offline_reports_replaced_and_never_reconnects() {
    let mut sim = Sim::new();
    let socket = sim.online();
    let pending = sim.op.go_online(sim.now, vec!["pn_2".into()]);
    sim.close(socket, Some(4005));
    assert_eq!(sim.op.state(), PresenceState::Offline);
    let events = sim.events();
    assert_eq!(states(&events), [PresenceState::Offline]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Error {
            code: ErrorCode::Replaced,
            ..
        }
    )));
    assert_eq!(
        sim.completed(pending).unwrap().unwrap_err().code,
        ErrorCode::Replaced
    );
    assert_eq!(sim.op.poll_timeout(), None);
    sim.advance(3_600_000);
    assert!(!sim.has_token_request());
}

#[test]
fn go_offline_closes_with_1000_cancels_pending_and_stops_reconnecting() {
    let mut sim = Sim::new();
    let socket = sim.online();
    let pending = sim.op.go_online(sim.now, vec!["pn_2".into()]);
    let off = sim.op.go_offline(sim.now);
    assert_eq!(sim.completed(off), Some(Ok(OpValue::None)));
    assert_eq!(
        sim.completed(pending).unwrap().unwrap_err().code,
        ErrorCode::Cancelled
    );
    assert_eq!(sim.closes(), [(socket, 1000)]);
    assert_eq!(sim.op.state(), PresenceState::Offline);
    // The driver's late close report is ignored; nothing reconnects.
    sim.close(socket, Some(1000));
    assert_eq!(sim.op.poll_timeout(), None);
    assert!(!sim.has_token_request());
}

#[test]
fn go_offline_while_reconnecting_stops_the_schedule() {
    let mut sim = Sim::new();
    let socket = sim.online();
    sim.close(socket, None);
    assert_eq!(sim.op.state(), PresenceState::Reconnecting);
    sim.op.go_offline(sim.now);
    assert_eq!(sim.op.state(), PresenceState::Offline);
    sim.advance(120_000);
    assert!(!sim.has_token_request());
}

#[test]
fn no_welcome_in_time_counts_as_a_failed_attempt() {
    let mut sim = Sim::new();
    sim.op.go_online(sim.now, vec![]);
    let id = sim.take_token_request();
    sim.give_token(id, "t", None);
    let (socket, _, _) = sim.take_open();
    sim.open(socket);
    sim.advance(10_000);
    assert_eq!(sim.closes(), [(socket, 1000)]);
    assert!(sim.error_codes().contains(&ErrorCode::ConnectionLost));
    assert_eq!(sim.fire_next_timer(), 11_000);
}

#[test]
fn close_codes_map_to_error_codes_and_all_but_4005_reconnect() {
    for (close, code) in [
        (Some(1000), ErrorCode::ConnectionLost),
        (None, ErrorCode::ConnectionLost),
        (Some(1008), ErrorCode::Forbidden),
        (Some(4002), ErrorCode::Unauthorized),
        (Some(4003), ErrorCode::TokenExpired),
        (Some(4006), ErrorCode::HeartbeatTimeout),
        (Some(4007), ErrorCode::RateLimited),
    ] {
        let mut sim = Sim::new();
        let socket = sim.online();
        sim.close(socket, close);
        assert_eq!(sim.error_codes(), [code], "{close:?}");
        assert_eq!(sim.op.state(), PresenceState::Reconnecting);
        sim.fire_next_timer();
        assert!(sim.has_token_request(), "{close:?} reconnects");
    }
}

#[test]
fn unknown_and_malformed_server_messages_are_logged_not_fatal() {
    let mut sim = Sim::new();
    let socket = sim.online();
    sim.server(socket, json!({"type":"teleport","to":"mars"}));
    sim.op.handle_socket_text(sim.now, socket, "{not json");
    sim.drain();
    assert!(sim.events().is_empty());
    let logs = sim
        .outbox
        .iter()
        .filter(|o| matches!(o, Output::Log { .. }))
        .count();
    assert_eq!(logs, 2);
    assert_eq!(sim.op.state(), PresenceState::Online);
}

#[test]
fn logs_never_contain_tokens() {
    let mut sim = Sim::new();
    sim.online();
    for (_, out) in &sim.history {
        if let Output::Log { message, .. } = out {
            assert!(!message.contains("tok-"), "{message}");
        }
    }
}

#[test]
fn invalid_config_is_rejected() {
    let bad: [fn(&mut Config); 5] = [
        |c| c.reconnect_backoff_ms = vec![],
        |c| c.reconnect_backoff_ms = vec![0],
        |c| c.heartbeat_interval_ms = 0,
        |c| c.core_url = "core.audin.ai".into(),
        |c| c.core_url = "ftp://core".into(),
    ];
    for tweak in bad {
        let mut config = Config::new("https://core.test/");
        tweak(&mut config);
        let err = Operator::new(config).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidConfig);
        assert_eq!(OperatorError::from(err).code, ErrorCode::InvalidConfig);
    }
    let config: Config =
        serde_json::from_str(r#"{"coreUrl":"http://x","reconnectBackoffMs":[5]}"#).unwrap();
    assert_eq!(config.heartbeat_interval_ms, 25_000);
    assert_eq!(config.reconnect_backoff_ms, [5]);
}

#[test]
fn custom_backoff_last_value_repeats() {
    let mut sim = Sim::with(|c| c.reconnect_backoff_ms = vec![100, 700]);
    let socket = sim.online();
    sim.close(socket, None);
    let mut last = sim.now.0;
    let mut gaps = vec![];
    for _ in 0..4 {
        let t = sim.fire_next_timer();
        gaps.push(t - last);
        last = t;
        let id = sim.take_token_request();
        sim.fail_token(id);
    }
    assert_eq!(gaps, [100, 700, 700, 700]);
}

#[test]
fn output_and_event_json_shapes() {
    let call = CallInfo {
        call_sid: "CA1".into(),
        direction: Direction::Inbound,
        from: "+14155550100".into(),
        to: "+390299999999".into(),
        state: CallState::Ringing,
        end_reason: None,
        muted: false,
    };
    let cases: Vec<(Output, Value)> = vec![
        (
            Output::FetchToken {
                id: TokenRequestId(1),
            },
            json!({"type":"fetchToken","id":1}),
        ),
        (
            Output::OpenSocket {
                id: SocketId(2),
                url: "wss://x".into(),
                kind: SocketKind::Audio {
                    call_sid: "CA1".into(),
                },
            },
            json!({"type":"openSocket","id":2,"url":"wss://x","kind":{"type":"audio","callSid":"CA1"}}),
        ),
        (
            Output::CloseSocket {
                socket: SocketId(2),
                code: 1000,
                reason: "offline".into(),
            },
            json!({"type":"closeSocket","socket":2,"code":1000,"reason":"offline"}),
        ),
        (
            Output::HttpRequest {
                id: RequestId(3),
                method: "GET".into(),
                url: "https://x".into(),
                bearer_token: "t".into(),
            },
            json!({"type":"httpRequest","id":3,"method":"GET","url":"https://x","bearerToken":"t"}),
        ),
        (
            Output::SetMuted {
                call_sid: "CA1".into(),
                muted: true,
            },
            json!({"type":"setMuted","callSid":"CA1","muted":true}),
        ),
        (
            Output::Event {
                event: Event::IncomingCall { call: call.clone() },
            },
            json!({"type":"event","event":{"type":"incomingCall","call":{"callSid":"CA1","direction":"inbound",
                "from":"+14155550100","to":"+390299999999","state":"ringing","muted":false}}}),
        ),
        (
            Output::Event {
                event: Event::Error {
                    code: ErrorCode::Replaced,
                    message: "m".into(),
                    cause: None,
                },
            },
            json!({"type":"event","event":{"type":"error","code":"REPLACED","message":"m"}}),
        ),
        (
            Output::Event {
                event: Event::PresenceStateChanged {
                    state: PresenceState::Reconnecting,
                },
            },
            json!({"type":"event","event":{"type":"presenceStateChanged","state":"reconnecting"}}),
        ),
        (
            Output::Completed {
                op: OpId(5),
                result: Ok(OpValue::Call { call }),
            },
            json!({"type":"completed","op":5,"result":{"ok":true,"value":{"type":"call","call":{"callSid":"CA1",
                "direction":"inbound","from":"+14155550100","to":"+390299999999","state":"ringing","muted":false}}}}),
        ),
        (
            Output::Completed {
                op: OpId(6),
                result: Err(OperatorError::new(ErrorCode::Timeout, "late")),
            },
            json!({"type":"completed","op":6,"result":{"ok":false,"error":{"code":"TIMEOUT","message":"late"}}}),
        ),
        (
            Output::Log {
                level: LogLevel::Warn,
                message: "x".into(),
            },
            json!({"type":"log","level":"warn","message":"x"}),
        ),
    ];
    for (output, expected) in cases {
        let got: Value = serde_json::from_str(&output.to_json()).unwrap();
        assert_eq!(got, expected);
    }
}

//! Calls: offers, accept/reject, dial, the audio leg, reattach, every end
//! reason, exactly-once CallEnded. Simulated time, no sleeps.

mod harness;

use audin_operator::core::*;
use harness::*;
use serde_json::{Value, json};

fn ended(events: &[Event]) -> Vec<(String, Option<EndReason>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CallEnded { call } => Some((call.call_sid.clone(), call.end_reason)),
            _ => None,
        })
        .collect()
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            Event::PresenceStateChanged { .. } => "presenceStateChanged",
            Event::AvailabilityChanged { .. } => "availabilityChanged",
            Event::IncomingCall { .. } => "incomingCall",
            Event::CallStarted { .. } => "callStarted",
            Event::CallEnded { .. } => "callEnded",
            Event::CallUpdated { .. } => "callUpdated",
            Event::CallReconnecting { .. } => "callReconnecting",
            Event::CallReconnected { .. } => "callReconnected",
            Event::Error { .. } => "error",
        })
        .collect()
}

fn state(sim: &Sim) -> Option<CallState> {
    sim.op.current_call().map(|c| c.state)
}

#[test]
fn inbound_ringing_connecting_active() {
    let mut sim = Sim::new();
    let presence = sim.online();
    sim.offer(presence, "CA1");
    let events = sim.events();
    let Event::IncomingCall { call } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(call.state, CallState::Ringing);
    assert_eq!(call.direction, Direction::Inbound);
    assert_eq!(call.from, "+14155550100");
    assert_eq!(call.to, "+390299999999");
    sim.op.accept(sim.now, "CA1");
    assert_eq!(sim.sent_one(presence, "accept")["callSid"], "CA1");
    assert_eq!(state(&sim), Some(CallState::Connecting));
    assert_eq!(names(&sim.events()), ["callUpdated"]);
    // No audio before the server confirms the accept.
    assert!(!sim.has_token_request());
    sim.server(presence, json!({"type":"callAccepted","callSid":"CA1"}));
    let audio = sim.attach_audio("CA1", true, false);
    assert_eq!(
        sim.media(),
        [Output::StartMedia {
            call_sid: "CA1".into(),
            socket: audio
        }]
    );
    let events = sim.events();
    assert_eq!(names(&events), ["callStarted"]);
    assert_eq!(state(&sim), Some(CallState::Active));
}

#[test]
fn accept_and_reject_are_no_ops_unless_ringing() {
    let mut sim = Sim::new();
    let (presence, _audio) = sim.active_inbound("CA1");
    sim.op.accept(sim.now, "CA1");
    sim.op.reject(sim.now, "CA1");
    sim.op.accept(sim.now, "CA-other");
    assert!(sim.sent(presence).is_empty());
    assert!(sim.events().is_empty());
    assert_eq!(state(&sim), Some(CallState::Active));
}

#[test]
fn reject_ends_the_offer_rejected_at_once() {
    let mut sim = Sim::new();
    let presence = sim.online();
    sim.offer(presence, "CA1");
    sim.events();
    sim.op.reject(sim.now, "CA1");
    let msg = sim.sent_one(presence, "reject");
    assert_eq!(
        msg,
        json!({"type":"reject","callSid":"CA1","reason":"declined"})
    );
    assert_eq!(
        ended(&sim.events()),
        [("CA1".into(), Some(EndReason::Rejected))]
    );
    assert!(sim.op.current_call().is_none());
    // The server's confirmation does not end it twice.
    sim.server(
        presence,
        json!({"type":"callEnded","callSid":"CA1","reason":"rejected"}),
    );
    assert!(sim.events().is_empty());
}

#[test]
fn ringing_offers_end_with_the_servers_reason() {
    for reason in ["taken_by_other", "no_answer", "remote_hangup", "rejected"] {
        let mut sim = Sim::new();
        let presence = sim.online();
        sim.offer(presence, "CA1");
        sim.events();
        sim.server(
            presence,
            json!({"type":"callEnded","callSid":"CA1","reason":reason}),
        );
        let events = sim.events();
        assert_eq!(
            ended(&events),
            [("CA1".into(), EndReason::parse(reason))],
            "{reason}"
        );
        assert!(sim.op.current_call().is_none());
    }
}

#[test]
fn a_second_offer_while_busy_is_declined_silently() {
    for busy_state in ["ringing", "connecting", "active"] {
        let mut sim = Sim::new();
        let presence = sim.online();
        sim.offer(presence, "CA1");
        if busy_state != "ringing" {
            sim.op.accept(sim.now, "CA1");
        }
        if busy_state == "active" {
            sim.server(presence, json!({"type":"callAccepted","callSid":"CA1"}));
            sim.attach_audio("CA1", true, false);
        }
        sim.events();
        sim.sent(presence);
        sim.offer(presence, "CA2");
        assert!(
            sim.events().is_empty(),
            "no incomingCall while {busy_state}"
        );
        let msg = sim.sent_one(presence, "reject");
        assert_eq!(
            msg,
            json!({"type":"reject","callSid":"CA2","reason":"busy"})
        );
        assert_eq!(sim.op.current_call().unwrap().call_sid, "CA1");
    }
}

#[test]
fn an_offer_while_a_dial_is_pending_is_declined() {
    let mut sim = Sim::new();
    let presence = sim.online();
    sim.op
        .dial(sim.now, "+15550100001", "+390299999999")
        .unwrap();
    sim.sent(presence);
    sim.offer(presence, "CA2");
    assert!(sim.events().is_empty());
    assert_eq!(sim.sent_one(presence, "reject")["reason"], "busy");
}

#[test]
fn outbound_dial_connecting_early_media_then_answered() {
    let mut sim = Sim::new();
    let presence = sim.online();
    let op = sim
        .op
        .dial(sim.now, "+15550100002", "+390299999999")
        .unwrap();
    let msg = sim.sent_one(presence, "dial");
    assert_eq!(msg["to"], "+15550100002");
    assert_eq!(msg["callerId"], "+390299999999");
    assert!(sim.completed(op).is_none());
    sim.server(
        presence,
        json!({"type":"dialAccepted","requestId":msg["requestId"],"callSid":"CA9",
               "from":"+390299999999","to":"+15550100002"}),
    );
    let Some(Ok(OpValue::Call { call })) = sim.completed(op) else {
        panic!("dial must resolve with the call")
    };
    assert_eq!(call.state, CallState::Connecting);
    assert_eq!(call.direction, Direction::Outbound);
    let audio = sim.attach_audio("CA9", false, false);
    // Early media plays, but the call is not started until answered.
    assert_eq!(
        sim.media(),
        [Output::StartMedia {
            call_sid: "CA9".into(),
            socket: audio
        }]
    );
    assert!(sim.events().is_empty());
    assert_eq!(state(&sim), Some(CallState::Connecting));
    sim.server(audio, json!({"type":"answered","callSid":"CA9"}));
    assert_eq!(names(&sim.events()), ["callStarted"]);
    assert_eq!(state(&sim), Some(CallState::Active));
    // Ended on both sockets: exactly one callEnded.
    sim.server(
        audio,
        json!({"type":"ended","callSid":"CA9","reason":"remote_hangup"}),
    );
    sim.server(
        presence,
        json!({"type":"callEnded","callSid":"CA9","reason":"remote_hangup"}),
    );
    sim.close(audio, Some(1000));
    let events = sim.events();
    assert_eq!(
        ended(&events),
        [("CA9".into(), Some(EndReason::RemoteHangup))]
    );
    assert_eq!(
        sim.media(),
        [Output::StopMedia {
            call_sid: "CA9".into()
        }]
    );
    assert_eq!(sim.closes(), [(audio, 1000)]);
}

#[test]
fn dial_validation_is_synchronous() {
    let mut sim = Sim::new();
    let err = sim
        .op
        .dial(sim.now, "+15550100001", "+390299999999")
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotOnline, "offline");
    let presence = sim.online();
    for (to, caller) in [
        ("0299", "+390299999999"),
        ("+15550100001", "pn_1"),
        ("+1 555", "+39"),
    ] {
        let err = sim.op.dial(sim.now, to, caller).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidNumber, "{to} {caller}");
    }
    sim.op
        .dial(sim.now, "+15550100001", "+390299999999")
        .unwrap();
    let err = sim
        .op
        .dial(sim.now, "+15550100001", "+390299999999")
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OperatorBusy, "dial pending");
    sim.sent(presence);
    // While reconnecting, dialling fails at once instead of lingering.
    sim.close(presence, None);
    let err = sim
        .op
        .dial(sim.now, "+15550100001", "+390299999999")
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotOnline, "reconnecting");
}

#[test]
fn dial_while_busy_is_operator_busy() {
    let mut sim = Sim::new();
    sim.active_inbound("CA1");
    let err = sim
        .op
        .dial(sim.now, "+15550100001", "+390299999999")
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OperatorBusy);
}

#[test]
fn dial_times_out_and_a_late_accept_is_hung_up() {
    let mut sim = Sim::new();
    let presence = sim.online();
    let op = sim
        .op
        .dial(sim.now, "+15550100004", "+390299999999")
        .unwrap();
    let msg = sim.sent_one(presence, "dial");
    sim.advance(9_999);
    assert!(sim.completed(op).is_none());
    sim.advance(1);
    assert_eq!(
        sim.completed(op).unwrap().unwrap_err().code,
        ErrorCode::Timeout
    );
    sim.server(
        presence,
        json!({"type":"dialAccepted","requestId":msg["requestId"],"callSid":"CA5",
               "from":"+390299999999","to":"+15550100004"}),
    );
    assert!(sim.op.current_call().is_none());
    assert_eq!(
        sim.sent_one(presence, "hangup"),
        json!({"type":"hangup","callSid":"CA5","reason":"hangup"})
    );
}

#[test]
fn dial_rejected_by_the_server_fails_with_its_code() {
    let mut sim = Sim::new();
    let presence = sim.online();
    let op = sim
        .op
        .dial(sim.now, "+15550100001", "+15550000000")
        .unwrap();
    let msg = sim.sent_one(presence, "dial");
    sim.server(
        presence,
        json!({"type":"error","code":"NUMBER_NOT_OWNED","message":"not yours","requestId":msg["requestId"]}),
    );
    assert_eq!(
        sim.completed(op).unwrap().unwrap_err().code,
        ErrorCode::NumberNotOwned
    );
    assert!(
        sim.events().is_empty(),
        "reported through the op, not an event"
    );
}

#[test]
fn dial_cancelled_by_go_offline_and_failed_by_connection_loss() {
    let mut sim = Sim::new();
    sim.online();
    let op = sim
        .op
        .dial(sim.now, "+15550100001", "+390299999999")
        .unwrap();
    sim.op.go_offline(sim.now);
    assert_eq!(
        sim.completed(op).unwrap().unwrap_err().code,
        ErrorCode::Cancelled
    );

    let mut sim = Sim::new();
    let presence = sim.online();
    let op = sim
        .op
        .dial(sim.now, "+15550100001", "+390299999999")
        .unwrap();
    sim.close(presence, Some(1006));
    assert_eq!(
        sim.completed(op).unwrap().unwrap_err().code,
        ErrorCode::ConnectionLost
    );
}

#[test]
fn outbound_far_end_outcomes_end_with_their_reason() {
    for reason in ["rejected", "no_answer", "failed", "remote_hangup"] {
        let mut sim = Sim::new();
        let presence = sim.online();
        let op = sim
            .op
            .dial(sim.now, "+15550100003", "+390299999999")
            .unwrap();
        let msg = sim.sent_one(presence, "dial");
        sim.server(
            presence,
            json!({"type":"dialAccepted","requestId":msg["requestId"],"callSid":"CA3",
                   "from":"+390299999999","to":"+15550100003"}),
        );
        assert!(matches!(sim.completed(op), Some(Ok(_))));
        let audio = sim.attach_audio("CA3", false, false);
        sim.server(
            audio,
            json!({"type":"ended","callSid":"CA3","reason":reason}),
        );
        sim.server(
            presence,
            json!({"type":"callEnded","callSid":"CA3","reason":reason}),
        );
        assert_eq!(
            ended(&sim.events()),
            [("CA3".into(), EndReason::parse(reason))],
            "{reason}"
        );
    }
}

#[test]
fn hangup_sends_on_the_audio_socket_and_ends_at_once() {
    let mut sim = Sim::new();
    let (presence, audio) = sim.active_inbound("CA1");
    sim.op.hangup(sim.now, "CA1");
    assert_eq!(
        sim.sent_one(audio, "hangup"),
        json!({"type":"hangup","reason":"hangup"})
    );
    assert!(sim.sent(presence).is_empty());
    assert_eq!(
        ended(&sim.events()),
        [("CA1".into(), Some(EndReason::Hangup))]
    );
    assert_eq!(
        sim.media(),
        [Output::StopMedia {
            call_sid: "CA1".into()
        }]
    );
    assert_eq!(sim.closes(), [(audio, 1000)]);
    sim.server(
        presence,
        json!({"type":"callEnded","callSid":"CA1","reason":"hangup"}),
    );
    assert!(sim.events().is_empty(), "exactly once");
}

#[test]
fn hangup_before_audio_is_attached_goes_over_presence() {
    let mut sim = Sim::new();
    let presence = sim.online();
    sim.offer(presence, "CA1");
    sim.op.accept(sim.now, "CA1");
    sim.server(presence, json!({"type":"callAccepted","callSid":"CA1"}));
    sim.take_token_request();
    sim.sent(presence);
    sim.events();
    sim.op.hangup(sim.now, "CA1");
    assert_eq!(
        sim.sent_one(presence, "hangup"),
        json!({"type":"hangup","callSid":"CA1","reason":"hangup"})
    );
    assert_eq!(
        ended(&sim.events()),
        [("CA1".into(), Some(EndReason::Hangup))]
    );
    assert!(sim.media().is_empty(), "media never started");
}

#[test]
fn go_offline_during_a_call_ends_it_offline() {
    let mut sim = Sim::new();
    let (presence, audio) = sim.active_inbound("CA1");
    let op = sim.op.go_offline(sim.now);
    assert_eq!(
        sim.sent_one(audio, "hangup"),
        json!({"type":"hangup","reason":"offline"})
    );
    assert_eq!(
        ended(&sim.events()),
        [("CA1".into(), Some(EndReason::Offline))]
    );
    let mut closes = sim.closes();
    closes.sort();
    assert_eq!(closes, [(presence, 1000), (audio, 1000)]);
    assert_eq!(sim.completed(op), Some(Ok(OpValue::None)));
    assert_eq!(sim.op.state(), PresenceState::Offline);
}

#[test]
fn go_offline_while_ringing_ends_the_offer_offline() {
    let mut sim = Sim::new();
    let presence = sim.online();
    sim.offer(presence, "CA1");
    sim.events();
    sim.op.go_offline(sim.now);
    assert_eq!(sim.sent_one(presence, "reject")["callSid"], "CA1");
    assert_eq!(
        ended(&sim.events()),
        [("CA1".into(), Some(EndReason::Offline))]
    );
}

#[test]
fn audio_reattach_within_the_window_resumes_the_call() {
    let mut sim = Sim::new();
    let (_presence, audio) = sim.active_inbound("CA1");
    sim.op.mute(sim.now, "CA1", true);
    sim.sent(audio);
    sim.media();
    sim.events();
    let lost = sim.now.0;
    sim.close(audio, Some(1006));
    assert_eq!(names(&sim.events()), ["callReconnecting"]);
    assert_eq!(state(&sim), Some(CallState::Active));
    // First attempt fails to connect.
    assert_eq!(sim.fire_next_timer() - lost, 250);
    let id = sim.take_token_request();
    sim.give_token(id, "tok-audio", None);
    let (failed, _, _) = sim.take_open();
    sim.close(failed, None);
    assert_eq!(sim.fire_next_timer() - lost, 750);
    let audio2 = sim.attach_audio("CA1", true, true);
    assert_ne!(audio, audio2);
    let events = sim.events();
    assert_eq!(names(&events), ["callReconnected"]);
    assert_eq!(
        sim.media(),
        [Output::StartMedia {
            call_sid: "CA1".into(),
            socket: audio2
        }]
    );
    // The mute flag is re-sent on the new socket.
    assert_eq!(
        sim.sent_one(audio2, "mute"),
        json!({"type":"mute","muted":true})
    );
    sim.advance_with_audio(60_000, audio2);
    assert!(ended(&sim.events()).is_empty());
    assert_eq!(state(&sim), Some(CallState::Active));
}

/// Found by the `core_session` fuzz target. The service relays audio only
/// once a call is answered, but the silence clock of an outbound call ran
/// from the attach: a callee who picked up after more than `audioSilenceMs`
/// of ringing had the audio socket declared dead the moment they answered
/// (closed 4006, `callReconnecting`, a reattach while they said hello).
#[test]
fn an_outbound_call_answered_after_long_ringing_keeps_its_audio() {
    let mut sim = Sim::with(|c| c.audio_silence_ms = 2_000);
    let presence = sim.online();
    let op = sim
        .op
        .dial(sim.now, "+15550100002", "+390299999999")
        .unwrap();
    let msg = sim.sent_one(presence, "dial");
    sim.server(
        presence,
        json!({"type":"dialAccepted","requestId":msg["requestId"],"callSid":"CA9",
               "from":"+390299999999","to":"+15550100002"}),
    );
    assert!(matches!(sim.completed(op), Some(Ok(OpValue::Call { .. }))));
    let audio = sim.attach_audio("CA9", false, false);
    // 20 s of ringing without a frame: nothing to watch yet.
    sim.advance(20_000);
    assert!(sim.events().is_empty());
    sim.server(audio, json!({"type":"answered","callSid":"CA9"}));
    assert_eq!(names(&sim.events()), ["callStarted"]);
    // The far end's audio starts flowing: the socket is kept.
    sim.advance(20);
    sim.advance_with_audio(5_000, audio);
    assert!(sim.events().is_empty());
    assert!(!sim.closes().contains(&(audio, 4006)));
    assert_eq!(state(&sim), Some(CallState::Active));
    // Silence after the answer is still caught, 2 s after the last frame.
    let last_frame = sim.now.0;
    sim.fire_next_timer();
    assert_eq!(sim.now.0 - last_frame, 2_000);
    assert!(sim.closes().contains(&(audio, 4006)));
    assert_eq!(names(&sim.events()), ["callReconnecting"]);
}

#[test]
fn a_silent_audio_socket_is_treated_as_dead_and_reattached() {
    let mut sim = Sim::with(|c| c.audio_silence_ms = 2_000);
    let (_presence, audio) = sim.active_inbound("CA1");
    // Frames keep arriving: nothing happens however long the call lasts.
    sim.advance_with_audio(30_000, audio);
    assert!(sim.events().is_empty());
    // Then the path goes silent without any close (half-open).
    let silent_from = sim.now.0;
    sim.fire_next_timer();
    assert_eq!(sim.now.0 - silent_from, 2_000);
    assert!(sim.closes().contains(&(audio, 4006)));
    assert_eq!(names(&sim.events()), ["callReconnecting"]);
    let audio2 = sim.attach_audio_after_retry("CA1");
    assert_eq!(names(&sim.events()), ["callReconnected"]);
    sim.advance_with_audio(10_000, audio2);
    assert_eq!(state(&sim), Some(CallState::Active));
}

#[test]
fn giving_up_on_audio_tells_the_service_the_call_failed() {
    let mut sim = Sim::with(|c| c.audio_reattach_window_ms = 1_000);
    let (presence, audio) = sim.active_inbound("CA1");
    sim.close(audio, None);
    sim.advance(5_000); // tokens never answered
    let hangup = sim.sent_one(presence, "hangup");
    assert_eq!(
        hangup,
        json!({"type":"hangup","callSid":"CA1","reason":"failed"})
    );
    assert_eq!(
        ended(&sim.events()),
        [("CA1".into(), Some(EndReason::Failed))]
    );
}

#[test]
fn audio_reattach_gives_up_at_the_window_and_ends_failed() {
    let mut sim = Sim::new();
    let (_presence, audio) = sim.active_inbound("CA1");
    let lost = sim.now.0;
    sim.close(audio, None);
    sim.events();
    let mut attempts = vec![];
    while sim.op.current_call().is_some() {
        sim.fire_next_timer();
        if sim.has_token_request() {
            attempts.push(sim.now.0 - lost);
            let id = sim.take_token_request();
            sim.give_token(id, "tok", None);
            let (s, _, _) = sim.take_open();
            sim.close(s, Some(1006));
        }
    }
    assert_eq!(
        attempts,
        [250, 750, 1750, 3750, 5750, 7750, 9750, 11750, 13750]
    );
    assert_eq!(sim.now.0 - lost, 15_000);
    let events = sim.events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Error {
            code: ErrorCode::AudioConnectionLost,
            ..
        }
    )));
    assert_eq!(ended(&events), [("CA1".into(), Some(EndReason::Failed))]);
}

#[test]
fn audio_reattach_window_is_configurable() {
    let mut sim = Sim::with(|c| c.audio_reattach_window_ms = 1_000);
    let (_presence, audio) = sim.active_inbound("CA1");
    let lost = sim.now.0;
    sim.close(audio, None);
    sim.advance(5_000); // tokens never answered
    assert_eq!(
        ended(&sim.events()),
        [("CA1".into(), Some(EndReason::Failed))]
    );
    let ended_at = sim
        .history
        .iter()
        .find(|(_, o)| {
            matches!(
                o,
                Output::Event {
                    event: Event::CallEnded { .. }
                }
            )
        })
        .unwrap()
        .0;
    assert_eq!(ended_at.0 - lost, 1_000);
}

#[test]
fn audio_refused_with_4004_or_4008_ends_failed_at_once() {
    for (code, error) in [
        (4008, ErrorCode::CallNotFound),
        (4004, ErrorCode::Forbidden),
    ] {
        let mut sim = Sim::new();
        let (_presence, audio) = sim.active_inbound("CA1");
        sim.close(audio, Some(code));
        let events = sim.events();
        assert_eq!(ended(&events), [("CA1".into(), Some(EndReason::Failed))]);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Error { code: c, .. } if *c == error))
        );
        assert!(!sim.has_token_request());
    }
}

#[test]
fn the_initial_attach_retries_without_call_reconnecting() {
    let mut sim = Sim::new();
    let presence = sim.online();
    sim.offer(presence, "CA1");
    sim.op.accept(sim.now, "CA1");
    sim.server(presence, json!({"type":"callAccepted","callSid":"CA1"}));
    let id = sim.take_token_request();
    sim.fail_token(id);
    sim.fire_next_timer();
    sim.attach_audio("CA1", true, false);
    let events = sim.events();
    assert_eq!(
        names(&events),
        ["incomingCall", "callUpdated", "error", "callStarted"]
    );
}

#[test]
fn welcome_active_call_keeps_a_call_the_server_still_holds() {
    let mut sim = Sim::new();
    let (presence, _audio) = sim.active_inbound("CA1");
    sim.close(presence, Some(1006));
    sim.fire_next_timer();
    let presence = sim.connect_presence(json!({"callSid":"CA1","answered":true}));
    sim.answer_go_online(presence);
    assert!(ended(&sim.events()).is_empty());
    assert_eq!(state(&sim), Some(CallState::Active));
}

#[test]
fn welcome_without_our_call_ends_it_failed() {
    let mut sim = Sim::new();
    let (presence, audio) = sim.active_inbound("CA1");
    sim.close(presence, Some(1006));
    sim.fire_next_timer();
    sim.connect_presence(Value::Null);
    let events = sim.events();
    assert_eq!(ended(&events), [("CA1".into(), Some(EndReason::Failed))]);
    assert!(sim.closes().contains(&(audio, 1000)));
}

#[test]
fn dtmf_is_validated_and_sent_on_the_audio_socket() {
    let mut sim = Sim::new();
    let presence = sim.online();
    sim.offer(presence, "CA1");
    let err = sim.op.send_dtmf(sim.now, "CA1", "5").unwrap_err();
    assert_eq!(err.code, ErrorCode::CallNotFound, "still ringing");
    sim.op.accept(sim.now, "CA1");
    sim.server(presence, json!({"type":"callAccepted","callSid":"CA1"}));
    let audio = sim.attach_audio("CA1", true, false);
    for bad in ["", "55", "A", "x", "٣"] {
        let err = sim.op.send_dtmf(sim.now, "CA1", bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidDtmf, "{bad:?}");
    }
    for good in ["0", "9", "*", "#"] {
        sim.op.send_dtmf(sim.now, "CA1", good).unwrap();
        assert_eq!(
            sim.sent_one(audio, "dtmf"),
            json!({"type":"dtmf","digit":good})
        );
    }
    let err = sim.op.send_dtmf(sim.now, "CA-other", "1").unwrap_err();
    assert_eq!(err.code, ErrorCode::CallNotFound);
}

#[test]
fn dtmf_sent_while_connecting_is_held_until_the_audio_attaches() {
    let mut sim = Sim::new();
    let presence = sim.online();
    sim.offer(presence, "CA1");
    sim.op.accept(sim.now, "CA1");
    sim.server(presence, json!({"type":"callAccepted","callSid":"CA1"}));
    // The seed's Quick start sends DTMF right after the call object exists.
    sim.op.send_dtmf(sim.now, "CA1", "1").unwrap();
    sim.op.send_dtmf(sim.now, "CA1", "#").unwrap();
    let err = sim.op.send_dtmf(sim.now, "CA1", "x").unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::InvalidDtmf,
        "validated before queueing"
    );
    let audio = sim.attach_audio("CA1", true, false);
    let digits: Vec<Value> = sim
        .sent(audio)
        .into_iter()
        .filter(|m| m["type"] == "dtmf")
        .collect();
    assert_eq!(
        digits,
        [
            json!({"type":"dtmf","digit":"1"}),
            json!({"type":"dtmf","digit":"#"})
        ]
    );
}

#[test]
fn mute_updates_the_call_and_tells_driver_and_server() {
    let mut sim = Sim::new();
    let (_presence, audio) = sim.active_inbound("CA1");
    sim.op.mute(sim.now, "CA1", true);
    assert_eq!(
        sim.media(),
        [Output::SetMuted {
            call_sid: "CA1".into(),
            muted: true
        }]
    );
    assert_eq!(
        sim.sent_one(audio, "mute"),
        json!({"type":"mute","muted":true})
    );
    let events = sim.events();
    assert!(matches!(&events[..], [Event::CallUpdated { call }] if call.muted));
    sim.op.mute(sim.now, "CA1", true);
    assert!(sim.events().is_empty(), "no change, no event");
    sim.op.mute(sim.now, "CA1", false);
    assert!(!sim.op.current_call().unwrap().muted);
}

#[test]
fn media_failure_ends_the_call_failed_with_an_error() {
    let mut sim = Sim::new();
    let (_presence, audio) = sim.active_inbound("CA1");
    sim.op
        .handle_media_failed(sim.now, "CA1", ErrorCode::MediaAccessDenied, "mic denied");
    assert_eq!(sim.sent_one(audio, "hangup")["type"], "hangup");
    let events = sim.events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Error {
            code: ErrorCode::MediaAccessDenied,
            ..
        }
    )));
    assert_eq!(ended(&events), [("CA1".into(), Some(EndReason::Failed))]);
}

#[test]
fn late_accept_answered_with_call_not_found_ends_failed() {
    let mut sim = Sim::new();
    let presence = sim.online();
    sim.offer(presence, "CA1");
    sim.op.accept(sim.now, "CA1");
    sim.events();
    sim.server(
        presence,
        json!({"type":"error","code":"CALL_NOT_FOUND","message":"gone","callSid":"CA1"}),
    );
    assert_eq!(
        ended(&sim.events()),
        [("CA1".into(), Some(EndReason::Failed))]
    );
}

#[test]
fn every_end_reason_is_reachable() {
    use std::collections::BTreeSet;
    let mut seen = BTreeSet::new();
    // Server-given reasons on the audio socket.
    for reason in EndReason::ALL {
        let mut sim = Sim::new();
        let (_presence, audio) = sim.active_inbound("CA1");
        sim.server(
            audio,
            json!({"type":"ended","callSid":"CA1","reason":reason.as_str()}),
        );
        if let [(_, Some(r))] = ended(&sim.events())[..] {
            seen.insert(r.as_str());
        }
    }
    assert_eq!(seen.len(), EndReason::ALL.len());
    // And the ones the client decides itself: hangup, rejected, offline, failed.
    let mut sim = Sim::new();
    let (_p, _a) = sim.active_inbound("CA1");
    sim.op.hangup(sim.now, "CA1");
    assert_eq!(ended(&sim.events())[0].1, Some(EndReason::Hangup));
}

#[test]
fn ended_calls_leave_no_timers_or_sockets_behind() {
    let mut sim = Sim::new();
    let (_presence, audio) = sim.active_inbound("CA1");
    sim.close(audio, None);
    sim.op.hangup(sim.now, "CA1");
    sim.drain();
    // Only the heartbeat remains.
    let next = sim.op.poll_timeout().unwrap();
    sim.advance_to(next.0);
    sim.drain();
    assert!(!sim.has_token_request());
}

#[test]
fn an_accept_whose_confirmation_was_lost_resumes_from_welcome() {
    let mut sim = Sim::new();
    let presence = sim.online();
    sim.offer(presence, "CA1");
    sim.op.accept(sim.now, "CA1");
    // The socket dies before callAccepted arrives.
    sim.close(presence, None);
    sim.fire_next_timer();
    let presence = sim.connect_presence(json!({"callSid":"CA1","answered":true}));
    sim.answer_go_online(presence);
    sim.attach_audio("CA1", true, false);
    let events = sim.events();
    assert!(names(&events).contains(&"callStarted"), "{events:?}");
    assert_eq!(state(&sim), Some(CallState::Active));
}

// ── attach hints (`audioUrl` / `attachTicket`, additive within v1) ───────

const TICKET: &str = "tkt-CA1-once";

/// Rings `sid`, accepts it and serves `callAccepted` with `hint`'s fields.
fn accepted_with(sim: &mut Sim, presence: SocketId, sid: &str, hint: Value) {
    sim.offer(presence, sid);
    sim.op.accept(sim.now, sid);
    let mut msg = json!({"type":"callAccepted","callSid":sid});
    msg.as_object_mut()
        .unwrap()
        .extend(hint.as_object().unwrap().clone());
    sim.server(presence, msg);
}

/// The audio socket opened without a token request; returns it and its URL,
/// after checking that `attach` carries the ticket.
fn ticketed_open(sim: &mut Sim, sid: &str) -> (SocketId, String) {
    assert!(!sim.has_token_request(), "a ticket spares getToken");
    let (socket, url, kind) = sim.take_open();
    assert_eq!(
        kind,
        SocketKind::Audio {
            call_sid: sid.into()
        }
    );
    sim.open(socket);
    assert_eq!(
        sim.sent_one(socket, "attach"),
        json!({"type":"attach","token":TICKET,"callSid":sid})
    );
    (socket, url)
}

#[test]
fn a_ticket_attaches_at_the_steered_url_without_get_token() {
    let mut sim = Sim::new();
    let presence = sim.online();
    let hint = json!({"audioUrl":"https://node-2.core.test/","attachTicket":TICKET});
    accepted_with(&mut sim, presence, "CA1", hint);
    let (audio, url) = ticketed_open(&mut sim, "CA1");
    assert_eq!(url, "wss://node-2.core.test/v1/operator/audio");
    sim.server(
        audio,
        json!({"type":"attached","callSid":"CA1","answered":true,"resumed":false}),
    );
    assert_eq!(
        sim.media(),
        [Output::StartMedia {
            call_sid: "CA1".into(),
            socket: audio
        }]
    );
    assert_eq!(
        names(&sim.events()),
        ["incomingCall", "callUpdated", "callStarted"]
    );
    assert_eq!(sim.token_request_times().len(), 1, "presence's token only");
    // A later drop reattaches exactly as before: getToken, our own URL.
    sim.close(audio, Some(1006));
    assert_eq!(names(&sim.events()), ["callReconnecting"]);
    sim.attach_audio_after_retry("CA1");
    assert_eq!(names(&sim.events()), ["callReconnected"]);
}

#[test]
fn a_ticketed_attempt_that_fails_retries_with_get_token_at_our_url() {
    // Closed before `attached` (network), or refused as the server refuses
    // a bad token (an `error`, then 4002 or 4003).
    for refusal in [
        None,
        Some(("UNAUTHORIZED", 4002)),
        Some(("TOKEN_EXPIRED", 4003)),
    ] {
        let mut sim = Sim::new();
        let presence = sim.online();
        let hint = json!({"audioUrl":"https://node-2.core.test","attachTicket":TICKET});
        accepted_with(&mut sim, presence, "CA1", hint);
        let (audio, _) = ticketed_open(&mut sim, "CA1");
        sim.events();
        let failed_at = sim.now.0;
        match refusal {
            None => sim.close(audio, None),
            Some((code, close)) => {
                sim.server(
                    audio,
                    json!({"type":"error","code":code,"message":"invalid token"}),
                );
                sim.close(audio, Some(close));
            }
        }
        assert!(!sim.has_token_request());
        assert_eq!(sim.fire_next_timer() - failed_at, 250);
        // `attach_audio` checks getToken, our URL and the session token.
        let audio2 = sim.attach_audio("CA1", true, false);
        assert_ne!(audio, audio2);
        let events = sim.events();
        assert!(names(&events).ends_with(&["callStarted"]), "{events:?}");
        assert!(ended(&events).is_empty());
    }
}

#[test]
fn an_attach_timeout_of_the_ticketed_attempt_also_falls_back() {
    let mut sim = Sim::new();
    let presence = sim.online();
    accepted_with(&mut sim, presence, "CA1", json!({"attachTicket":TICKET}));
    let (audio, url) = ticketed_open(&mut sim, "CA1");
    assert_eq!(url, "wss://core.test/v1/operator/audio");
    sim.fire_next_timer(); // no `attached` within the request timeout
    assert!(sim.closes().contains(&(audio, 1000)));
    sim.fire_next_timer();
    sim.attach_audio("CA1", true, false);
    assert_eq!(state(&sim), Some(CallState::Active));
}

#[test]
fn an_audio_url_less_secure_than_core_url_is_ignored() {
    for audio_url in [
        "http://node-2.core.test",
        "ws://node-2.core.test",
        "node-2.core.test",
        "ftp://node-2.core.test",
        "https://node-2.core.test/?x=1",
    ] {
        let mut sim = Sim::new();
        let presence = sim.online();
        let hint = json!({"audioUrl":audio_url,"attachTicket":TICKET});
        accepted_with(&mut sim, presence, "CA1", hint);
        let (_, url) = ticketed_open(&mut sim, "CA1");
        assert_eq!(url, "wss://core.test/v1/operator/audio", "{audio_url}");
    }
    // Same security, not more: a plain-http core keeps its own node too.
    let mut sim = Sim::with(|c| c.core_url = "http://core.test".into());
    let presence = sim.online();
    let hint = json!({"audioUrl":"https://node-2.core.test","attachTicket":TICKET});
    accepted_with(&mut sim, presence, "CA1", hint);
    let (_, url) = ticketed_open(&mut sim, "CA1");
    assert_eq!(url, "ws://core.test/v1/operator/audio");
    let mut sim = Sim::with(|c| c.core_url = "http://core.test".into());
    let presence = sim.online();
    let hint = json!({"audioUrl":"http://10.0.0.2:8080","attachTicket":TICKET});
    accepted_with(&mut sim, presence, "CA1", hint);
    let (_, url) = ticketed_open(&mut sim, "CA1");
    assert_eq!(url, "ws://10.0.0.2:8080/v1/operator/audio");
}

#[test]
fn an_audio_url_without_a_ticket_steers_the_first_socket_only() {
    let mut sim = Sim::new();
    let presence = sim.online();
    let hint = json!({"audioUrl":"https://node-2.core.test"});
    accepted_with(&mut sim, presence, "CA1", hint);
    let id = sim.take_token_request();
    sim.give_token(id, "tok-audio", None);
    let (socket, url, _) = sim.take_open();
    assert_eq!(url, "wss://node-2.core.test/v1/operator/audio");
    sim.open(socket);
    assert_eq!(sim.sent_one(socket, "attach")["token"], "tok-audio");
    sim.close(socket, None);
    sim.fire_next_timer();
    sim.attach_audio("CA1", true, false);
    assert_eq!(state(&sim), Some(CallState::Active));
}

#[test]
fn a_dial_accepted_with_a_ticket_attaches_with_it() {
    let mut sim = Sim::new();
    let presence = sim.online();
    let op = sim
        .op
        .dial(sim.now, "+15550100002", "+390299999999")
        .unwrap();
    let msg = sim.sent_one(presence, "dial");
    sim.server(
        presence,
        json!({"type":"dialAccepted","requestId":msg["requestId"],"callSid":"CA9",
               "from":"+390299999999","to":"+15550100002",
               "audioUrl":"https://node-3.core.test","attachTicket":TICKET}),
    );
    assert!(matches!(sim.completed(op), Some(Ok(OpValue::Call { .. }))));
    let (audio, url) = ticketed_open(&mut sim, "CA9");
    assert_eq!(url, "wss://node-3.core.test/v1/operator/audio");
    // The attempt fails before `attached`: getToken and our URL.
    sim.close(audio, None);
    sim.fire_next_timer();
    let audio2 = sim.attach_audio("CA9", false, false);
    assert_eq!(state(&sim), Some(CallState::Connecting));
    sim.server(audio2, json!({"type":"answered","callSid":"CA9"}));
    assert_eq!(state(&sim), Some(CallState::Active));
}

/// Hangs up CA1 while neither socket can carry it: the audio socket is
/// reattaching and presence is reconnecting (a node of a cluster
/// restarting under both). The presence socket the operator is back on.
fn hangup_with_both_sockets_down() -> Sim {
    let mut sim = Sim::new();
    let (presence, audio) = sim.active_inbound("CA1");
    sim.close(audio, Some(1006));
    sim.close(presence, Some(1006));
    sim.sent(presence);
    sim.op.hangup(sim.now, "CA1");
    assert_eq!(
        ended(&sim.events()),
        [("CA1".into(), Some(EndReason::Hangup))],
        "the call ends for the operator at once"
    );
    sim
}

#[test]
fn a_hangup_no_socket_could_carry_is_sent_once_presence_is_back() {
    let mut sim = hangup_with_both_sockets_down();
    sim.fire_next_timer();
    let presence = sim.connect_presence(json!({"callSid":"CA1","answered":true}));
    assert_eq!(
        sim.sent_one(presence, "hangup"),
        json!({"type":"hangup","callSid":"CA1","reason":"hangup"}),
        "the service still holds the call: it is told"
    );
}

#[test]
fn a_hangup_no_socket_could_carry_is_dropped_if_the_call_ended_meanwhile() {
    let mut sim = hangup_with_both_sockets_down();
    sim.fire_next_timer();
    let presence = sim.connect_presence(Value::Null);
    assert!(
        !sim.sent(presence).iter().any(|m| m["type"] == "hangup"),
        "nothing is owed for a call the service no longer holds"
    );
}

//! listPhoneNumbers: token reuse, one retry on 401, UNAUTHORIZED,
//! REQUEST_FAILED.

mod harness;

use audin_operator::core::*;
use harness::*;

const NUMBERS: &str = r#"[{"id":"pn_1","phoneNumber":"+390299999999","displayName":"Milano"}]"#;

fn take_http(sim: &mut Sim) -> (RequestId, String, String) {
    sim.drain();
    let index = sim
        .outbox
        .iter()
        .position(|o| matches!(o, Output::HttpRequest { .. }))
        .unwrap_or_else(|| panic!("no HttpRequest in {:?}", sim.outbox));
    match sim.outbox.remove(index) {
        Output::HttpRequest {
            id,
            method,
            url,
            bearer_token,
        } => {
            assert_eq!(method, "GET");
            (id, url, bearer_token)
        }
        _ => unreachable!(),
    }
}

fn respond(sim: &mut Sim, id: RequestId, status: u16, body: &str) {
    sim.op.handle_http_response(sim.now, id, status, body);
    sim.drain();
}

#[test]
fn fetches_a_token_then_lists_the_numbers() {
    let mut sim = Sim::new();
    let op = sim.op.list_phone_numbers(sim.now);
    let id = sim.take_token_request();
    sim.give_token(id, "tok-http", None);
    let (req, url, bearer) = take_http(&mut sim);
    assert_eq!(url, "https://core.test/v1/phone-numbers");
    assert_eq!(bearer, "tok-http");
    respond(&mut sim, req, 200, NUMBERS);
    let Some(Ok(OpValue::PhoneNumbers { phone_numbers })) = sim.completed(op) else {
        panic!()
    };
    assert_eq!(phone_numbers[0].id, "pn_1");
    assert_eq!(phone_numbers[0].phone_number, "+390299999999");
    assert_eq!(phone_numbers[0].display_name, "Milano");
}

#[test]
fn reuses_a_fresh_token() {
    let mut sim = Sim::new();
    sim.online(); // holds a token valid for an hour
    let op = sim.op.list_phone_numbers(sim.now);
    assert!(!sim.has_token_request());
    let (req, _, bearer) = take_http(&mut sim);
    assert_eq!(bearer, "tok-presence");
    respond(&mut sim, req, 200, "[]");
    assert!(matches!(
        sim.completed(op),
        Some(Ok(OpValue::PhoneNumbers { .. }))
    ));
}

#[test]
fn a_token_about_to_expire_is_not_reused() {
    let mut sim = Sim::new();
    sim.online();
    sim.advance(3_600_000 - 30_000);
    sim.outbox.clear();
    sim.op.list_phone_numbers(sim.now);
    assert!(sim.has_token_request());
}

#[test]
fn a_401_is_retried_once_with_a_fresh_token() {
    let mut sim = Sim::new();
    sim.online();
    let op = sim.op.list_phone_numbers(sim.now);
    let (req, _, _) = take_http(&mut sim);
    respond(
        &mut sim,
        req,
        401,
        r#"{"error":{"code":"TOKEN_EXPIRED","message":"expired"}}"#,
    );
    assert!(sim.completed(op).is_none());
    let id = sim.take_token_request();
    sim.give_token(id, "tok-new", None);
    let (req, _, bearer) = take_http(&mut sim);
    assert_eq!(bearer, "tok-new");
    respond(&mut sim, req, 200, NUMBERS);
    assert!(matches!(sim.completed(op), Some(Ok(_))));
}

#[test]
fn a_persistent_401_is_unauthorized() {
    let mut sim = Sim::new();
    let op = sim.op.list_phone_numbers(sim.now);
    let id = sim.take_token_request();
    sim.give_token(id, "t", None);
    let (req, _, _) = take_http(&mut sim);
    respond(
        &mut sim,
        req,
        401,
        r#"{"error":{"code":"UNAUTHORIZED","message":"forged"}}"#,
    );
    let id = sim.take_token_request();
    sim.give_token(id, "t2", None);
    let (req, _, _) = take_http(&mut sim);
    respond(&mut sim, req, 401, "");
    let err = sim.completed(op).unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthorized);
    assert!(!sim.has_token_request(), "only one retry");
}

#[test]
fn other_failures_are_request_failed() {
    type Fail = fn(&mut Sim, RequestId);
    let cases: [(&str, Fail); 5] = [
        ("500", |sim, req| {
            respond(
                sim,
                req,
                500,
                r#"{"error":{"code":"INTERNAL","message":"boom"}}"#,
            )
        }),
        ("403", |sim, req| respond(sim, req, 403, "")),
        ("bad body", |sim, req| {
            respond(sim, req, 200, "{\"not\":\"a list\"}")
        }),
        ("network", |sim, req| {
            sim.op.handle_http_error(sim.now, req, "connection refused");
        }),
        ("timeout", |sim, _| sim.advance(10_000)),
    ];
    for (name, fail) in cases {
        let mut sim = Sim::new();
        let op = sim.op.list_phone_numbers(sim.now);
        let id = sim.take_token_request();
        sim.give_token(id, "t", None);
        let (req, _, _) = take_http(&mut sim);
        fail(&mut sim, req);
        let err = sim.completed(op).unwrap().unwrap_err();
        assert_eq!(err.code, ErrorCode::RequestFailed, "{name}");
    }
}

#[test]
fn a_get_token_failure_fails_the_listing() {
    let mut sim = Sim::new();
    let op = sim.op.list_phone_numbers(sim.now);
    let id = sim.take_token_request();
    sim.fail_token(id);
    let err = sim.completed(op).unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::RequestFailed);
    assert!(err.message.contains("getToken"));
}

#[test]
fn go_offline_does_not_cancel_a_listing() {
    let mut sim = Sim::new();
    let op = sim.op.list_phone_numbers(sim.now);
    let id = sim.take_token_request();
    sim.op.go_offline(sim.now);
    sim.give_token(id, "t", None);
    let (req, _, _) = take_http(&mut sim);
    respond(&mut sim, req, 200, "[]");
    assert!(matches!(sim.completed(op), Some(Ok(_))));
}

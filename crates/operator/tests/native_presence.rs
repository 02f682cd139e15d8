//! The tokio driver against a real in-process `audin-server`: presence,
//! availability, phone numbers, replacement, restart, half-open sockets.

mod native_support;

use audin_operator::core::{ErrorCode, Event, PresenceState};
use native_support::*;
use std::time::{Duration, Instant};

fn state_is(want: PresenceState) -> impl FnMut(&Event) -> Option<()> {
    move |e| matches!(e, Event::PresenceStateChanged { state } if *state == want).then_some(())
}

#[tokio::test]
async fn online_offline_availability_and_phone_numbers() {
    let server = start_server(server_config()).await;
    let op = operator(&server.url(), "op-avail");
    let mut events = op.events();
    let numbers = op.list_phone_numbers().await.unwrap();
    let ids: Vec<&str> = numbers.iter().map(|n| n.id.as_str()).collect();
    assert!(ids.contains(&MILANO) && ids.contains(&ROMA), "{ids:?}");
    let milano = numbers.iter().find(|n| n.id == MILANO).unwrap();
    assert_eq!(milano.phone_number, MILANO_E164);

    let availability = op.go_online([MILANO, "pn_not_ours"]).await.unwrap();
    assert_eq!(availability.accepted, [MILANO]);
    assert_eq!(availability.rejected, ["pn_not_ours"]);
    assert_eq!(op.state(), PresenceState::Online);
    wait_event(&mut events, state_is(PresenceState::Connecting)).await;
    wait_event(&mut events, state_is(PresenceState::Online)).await;
    wait_event(&mut events, |e| match e {
        Event::AvailabilityChanged { accepted, .. } => Some(accepted.clone()),
        _ => None,
    })
    .await;

    // Change the set on the live socket.
    let availability = op.go_online([ROMA]).await.unwrap();
    assert_eq!(availability.accepted, [ROMA]);

    op.go_offline().await.unwrap();
    assert_eq!(op.state(), PresenceState::Offline);
    wait_event(&mut events, state_is(PresenceState::Offline)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_session_of_the_same_operator_replaces_the_first() {
    let server = start_server(server_config()).await;
    let first = operator(&server.url(), "op-same");
    let second = operator(&server.url(), "op-same");
    let mut events = first.events();
    first.go_online([MILANO]).await.unwrap();
    second.go_online([MILANO]).await.unwrap();
    let code = wait_event(&mut events, |e| match e {
        Event::Error { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::Replaced);
    assert_eq!(first.state(), PresenceState::Offline);
    // No reconnect fights the new session.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(first.state(), PresenceState::Offline);
    assert_eq!(second.state(), PresenceState::Online);
    server.shutdown().await;
}

#[tokio::test]
async fn server_restart_reconnecting_then_online_within_the_first_backoff_step() {
    let config = server_config();
    let server = start_server(config.clone()).await;
    let addr = server.local_addr;
    let op = operator(&server.url(), "op-restart");
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();

    server.shutdown().await;
    wait_event(&mut events, state_is(PresenceState::Reconnecting)).await;
    let mut config = config;
    config.listen = addr;
    let server = start_server(config).await;
    let back = Instant::now();
    wait_event(&mut events, state_is(PresenceState::Online)).await;
    let took = back.elapsed();
    assert!(
        took <= Duration::from_millis(1_500),
        "online {took:?} after restart"
    );
    // Availability is re-announced on the new server.
    let accepted = wait_event(&mut events, |e| match e {
        Event::AvailabilityChanged { accepted, .. } => Some(accepted.clone()),
        _ => None,
    })
    .await;
    assert_eq!(accepted, [MILANO]);
    op.go_offline().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_half_open_presence_socket_is_detected_by_the_heartbeat() {
    let server = start_server(server_config()).await;
    let proxy = Proxy::start(server.local_addr).await;
    let op = operator_with(&proxy.url(), "op-halfopen", |b| {
        b.heartbeat_interval(Duration::from_millis(300))
            .reconnect_backoff([Duration::from_millis(100)])
    });
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    // Freeze the socket: the proxy stops forwarding without closing.
    assert_eq!(proxy.freeze("/v1/operator/presence"), 1);
    let code = wait_event(&mut events, |e| match e {
        Event::Error { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::HeartbeatTimeout);
    wait_event(&mut events, state_is(PresenceState::Online)).await;
    op.go_offline().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_on_the_live_socket() {
    let mut config = server_config();
    config.token_ttl = Duration::from_secs(3);
    let server = start_server(config).await;
    let op = operator(&server.url(), "op-refresh");
    op.go_online([MILANO]).await.unwrap();
    let mut events = op.events();
    // Two and a half token lifetimes: without refreshes the server would
    // close the socket with 4003 at expiry.
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    assert_eq!(op.state(), PresenceState::Online);
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event,
                Event::Error { .. } | Event::PresenceStateChanged { .. }
            ),
            "{event:?}"
        );
    }
    op.go_offline().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn get_token_failures_are_reported_and_retried_until_it_works() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = start_server(server_config()).await;
    let token_url = format!("{}/api/operator/token", server.url());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let op = audin_operator::AudinOperator::builder(server.url())
        .reconnect_backoff([Duration::from_millis(100), Duration::from_millis(200)])
        .get_token(move || {
            let (n, url) = (counter.fetch_add(1, Ordering::SeqCst), token_url.clone());
            async move {
                match n {
                    0 => Err("backend down".to_string()),
                    // Hangs past the token timeout.
                    1 => std::future::pending().await,
                    _ => fetch_token(&reqwest::Client::new(), &url, "op-flaky").await,
                }
            }
        })
        .token_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut events = op.events();
    op.go_online([MILANO]).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    for _ in 0..2 {
        let code = wait_event(&mut events, |e| match e {
            Event::Error { code, .. } => Some(*code),
            _ => None,
        })
        .await;
        assert_eq!(code, ErrorCode::TokenFetchFailed);
    }
    assert_eq!(op.state(), PresenceState::Online);
    op.go_offline().await.unwrap();
    server.shutdown().await;
}

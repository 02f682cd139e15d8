//! Regression check for `cargo xtask test`: a small load run through the
//! native SDK against an in-process `audin-server` (debug build) must set
//! up every call, echo every frame (zero loss, no cross-talk) and end every
//! call `hangup`; the same through the SIP trunk with SIPp as the far end
//! (the bench's SIP step). Timings are not asserted: CI machines vary.

use audin_loadgen::load::{self, Target};
use audin_loadgen::report::{FarEnd, LoadConfig};
use audin_loadgen::server::{provision_numbers, temp_dir};
use audin_loadgen::sipp::{self, SippUas};
use audin_server::sip::trunk::SipEndpointConfig;
use audin_server::{Server, ServerConfig, ServerHandle};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_echo_calls_lose_no_frame() {
    twenty_echo_calls(false).await;
}

/// The lean generator (`--lean`) measures the same thing: the same frames,
/// the same counts, every call set up and ended `hangup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_echo_calls_of_the_lean_generator_lose_no_frame() {
    twenty_echo_calls(true).await;
}

async fn twenty_echo_calls(lean: bool) {
    let dir = temp_dir(if lean {
        "regression-lean"
    } else {
        "regression"
    })
    .expect("temp dir");
    let mut config = ServerConfig::for_tests();
    config.database = dir.join("audin.db");
    let server = Server::start(config.clone()).await.expect("server starts");
    let numbers = provision_numbers(&config.database, 20).expect("numbers");
    let cfg = LoadConfig {
        calls: 20,
        operators: 20,
        inbound_share: 0.5,
        ramp: Duration::from_secs(1),
        settle: Duration::from_millis(1_500),
        duration: Duration::from_secs(5),
        online_concurrency: 10,
        lean,
        ..LoadConfig::default()
    };
    let target = Target {
        url: server.url(),
        pid: None,
        far_end_pid: None,
        numbers,
    };
    let report = load::run(&cfg, &target).await.expect("load run");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", report.summary());
    assert!(report.ok, "failures: {:?}", report.failures);
    assert_eq!(report.mode, if lean { "lean" } else { "sdk" });
    assert_eq!(report.calls_ok, 20);
    assert_eq!(
        report.concurrent_calls.min, 20,
        "every call active through the window"
    );
    let f = &report.frames;
    // 20 calls × 50 frames/s × 5 s.
    assert_eq!(f.sent, 20 * 250);
    assert_eq!(f.received, f.sent, "frames lost: {}", f.lost);
    assert_eq!(f.lost, 0);
    assert_eq!(f.misrouted, 0, "a frame reached another call");
    assert_eq!(f.duplicates, 0);
    assert_eq!(f.sdk_dropped, 0);
    assert_eq!(f.server_window.frames_dropped, 0);
    assert_eq!(report.setup_ms.inbound_total.count, 10);
    assert_eq!(report.setup_ms.outbound_dial_to_started.count, 10);
    assert_eq!(report.go_online_ms.count, 20);
}

/// Whether `sipp` is on PATH; without it the SIP test is skipped, unless
/// `AUDIN_REQUIRE_SIP_TOOLS` is set (`cargo xtask test` sets it, so CI never
/// passes by skipping).
fn sipp_or_skip(test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("sipp").is_file()));
    if found {
        return true;
    }
    let required =
        std::env::var("AUDIN_REQUIRE_SIP_TOOLS").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{test}: `sipp` (Debian package sip-tester) is not on PATH and AUDIN_REQUIRE_SIP_TOOLS \
         is set: run `cargo xtask setup`"
    );
    eprintln!("SKIPPED {test}: `sipp` not on PATH (install with `cargo xtask setup`)");
    false
}

/// A `--dev` server with a SIP endpoint on a free loopback port; the stack
/// binds UDP on port 0, then TCP on the same number, which another socket
/// may hold: then it starts again.
async fn start_sip_server(mut config: ServerConfig) -> ServerHandle {
    config.sip = Some(SipEndpointConfig::new(
        "127.0.0.1:0".parse().expect("address"),
    ));
    let mut tries = 0;
    loop {
        match Server::start(config.clone()).await {
            Err(e) if tries < 5 && format!("{e:#}").contains("Address already in use") => {
                tries += 1;
            }
            result => return result.expect("server starts"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_echo_calls_through_sipp_come_back_unchanged() {
    if !sipp_or_skip("sip_echo_calls_through_sipp_come_back_unchanged") {
        return;
    }
    const CALLS: usize = 5;
    let far_end = SippUas::spawn(CALLS).expect("sipp starts");
    let dir = temp_dir("regression-sip").expect("temp dir");
    let mut config = ServerConfig::for_tests();
    config.database = dir.join("audin.db");
    config.dev_trunk = Some(far_end.trunk_uri().parse().expect("trunk URI"));
    let server = start_sip_server(config.clone()).await;
    let numbers = provision_numbers(&config.database, CALLS).expect("numbers");
    let plan = load::plan_calls(FarEnd::Sipp, None, None).expect("the SIP call mix");
    let cfg = LoadConfig {
        calls: CALLS,
        operators: CALLS,
        inbound_share: plan.inbound_share,
        dial: plan.dial,
        far_end: FarEnd::Sipp,
        ramp: Duration::from_secs(1),
        settle: Duration::from_millis(1_500),
        duration: Duration::from_secs(3),
        online_concurrency: CALLS,
        ..LoadConfig::default()
    };
    let target = Target {
        url: server.url(),
        pid: None,
        far_end_pid: Some(far_end.pid),
        numbers,
    };
    let mut report = load::run(&cfg, &target).await.expect("load run");
    server.shutdown().await;
    let outcome = tokio::task::spawn_blocking(move || far_end.stop(sipp::EXIT_GRACE))
        .await
        .expect("stop task")
        .expect("sipp stops");
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(far) = &mut report.far_end {
        far.exit_code = outcome.exit_code;
        far.calls_successful = outcome.successful_calls;
        far.calls_failed = outcome.failed_calls;
    }
    println!("{}", report.summary());
    assert!(report.ok, "failures: {:?}", report.failures);
    // SIPp answered every call and got its BYE: the calls went over SIP,
    // not to the sim (which would echo them as well).
    assert_eq!(outcome.exit_code, Some(0), "SIPp's verdict: {outcome:?}");
    assert_eq!(
        outcome.successful_calls,
        Some(CALLS as u64),
        "calls SIPp saw through: {outcome:?}"
    );
    let f = &report.frames;
    // 5 calls × 50 frames/s × 3 s, each back through RTP and SIPp's echo.
    assert_eq!(f.sent, CALLS as u64 * 150);
    assert_eq!(f.received, f.sent, "frames lost: {}", f.lost);
    assert_eq!(f.altered, 0, "PCMU must cross the server unchanged");
    assert_eq!(f.misrouted, 0, "a frame reached another call");
    assert_eq!(f.duplicates, 0);
    assert_eq!(report.setup_ms.outbound_dial_to_started.count, CALLS as u64);
    let far = report.far_end.as_ref().expect("SIPp's figures");
    assert_eq!(far.name, "sipp");
    assert!(far.rss_kb > 0, "SIPp's /proc figures were read");
}

//! Regression check for `cargo xtask test`: a small load run through the
//! native SDK against an in-process `audin-server` (debug build) must set
//! up every call, echo every frame (zero loss, no cross-talk) and end every
//! call `hangup`. Timings are not asserted: CI machines vary.

use audin_loadgen::load::{self, Target};
use audin_loadgen::report::LoadConfig;
use audin_loadgen::server::{provision_numbers, temp_dir};
use audin_server::{Server, ServerConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_echo_calls_lose_no_frame() {
    let dir = temp_dir("regression").expect("temp dir");
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
        ..LoadConfig::default()
    };
    let target = Target {
        url: server.url(),
        pid: None,
        numbers,
    };
    let report = load::run(&cfg, &target).await.expect("load run");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", report.summary());
    assert!(report.ok, "failures: {:?}", report.failures);
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

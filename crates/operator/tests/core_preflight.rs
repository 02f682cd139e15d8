//! The preflight's verdict and its state machine, in simulated time: what an
//! application sees in `AudinOperator.preflight()`'s report.

use audin_operator::core::ErrorCode;
use audin_operator::core::preflight::{
    AudioText, Figures, Preflight, ReasonCode, Step, Verdict, assess,
};
use serde_json::Value;

const CLEAN: Figures = Figures {
    token_fetch_ms: Some(40.0),
    presence_rtt_ms: Some(20.0),
    rtt_ms: Some(30.0),
    jitter_ms: Some(2.0),
    packet_loss_percent: Some(0.0),
    mos: Some(4.4),
    microphone_signal: Some(true),
};

fn codes(reasons: &[audin_operator::core::preflight::Reason]) -> Vec<&'static str> {
    reasons.iter().map(|r| r.code.as_str()).collect()
}

#[test]
fn each_figure_is_graded_and_the_worst_grade_wins() {
    let (v, reasons) = assess(&CLEAN, Vec::new());
    assert_eq!(v, Verdict::Excellent);
    assert!(reasons.is_empty());
    // (figures, verdict, reason): one figure off at a time.
    let cases = [
        (
            Figures {
                jitter_ms: Some(15.0),
                ..CLEAN
            },
            Verdict::Good,
            "high-jitter",
        ),
        (
            Figures {
                jitter_ms: Some(25.0),
                ..CLEAN
            },
            Verdict::Fair,
            "high-jitter",
        ),
        (
            Figures {
                jitter_ms: Some(31.0),
                ..CLEAN
            },
            Verdict::Poor,
            "high-jitter",
        ),
        (
            Figures {
                rtt_ms: Some(250.0),
                ..CLEAN
            },
            Verdict::Good,
            "high-rtt",
        ),
        (
            Figures {
                rtt_ms: Some(401.0),
                ..CLEAN
            },
            Verdict::Poor,
            "high-rtt",
        ),
        (
            Figures {
                presence_rtt_ms: Some(350.0),
                ..CLEAN
            },
            Verdict::Fair,
            "high-presence-rtt",
        ),
        (
            Figures {
                packet_loss_percent: Some(0.8),
                ..CLEAN
            },
            Verdict::Good,
            "high-packet-loss",
        ),
        (
            Figures {
                packet_loss_percent: Some(2.0),
                ..CLEAN
            },
            Verdict::Fair,
            "high-packet-loss",
        ),
        (
            Figures {
                packet_loss_percent: Some(5.0),
                ..CLEAN
            },
            Verdict::Poor,
            "high-packet-loss",
        ),
        (
            Figures {
                mos: Some(4.1),
                ..CLEAN
            },
            Verdict::Good,
            "low-mos",
        ),
        (
            Figures {
                mos: Some(3.7),
                ..CLEAN
            },
            Verdict::Fair,
            "low-mos",
        ),
        (
            Figures {
                mos: Some(3.4),
                ..CLEAN
            },
            Verdict::Poor,
            "low-mos",
        ),
        (
            Figures {
                token_fetch_ms: Some(3_000.0),
                ..CLEAN
            },
            Verdict::Fair,
            "slow-token-fetch",
        ),
        (
            Figures {
                microphone_signal: Some(false),
                ..CLEAN
            },
            Verdict::Poor,
            "no-microphone-signal",
        ),
    ];
    for (figures, verdict, code) in cases {
        let (v, reasons) = assess(&figures, Vec::new());
        assert_eq!((v, codes(&reasons)), (verdict, vec![code]), "{figures:?}");
    }
    // The value and the bound it missed are in the reason.
    let (_, reasons) = assess(
        &Figures {
            jitter_ms: Some(25.0),
            ..CLEAN
        },
        Vec::new(),
    );
    assert_eq!(
        (reasons[0].value, reasons[0].threshold),
        (Some(25.0), Some(20.0))
    );
    // Worst of several.
    let (v, reasons) = assess(
        &Figures {
            jitter_ms: Some(15.0),
            mos: Some(3.0),
            ..CLEAN
        },
        Vec::new(),
    );
    assert_eq!(v, Verdict::Poor);
    assert_eq!(codes(&reasons), ["high-jitter", "low-mos"]);
    // Not measured: no reason.
    let (v, _) = assess(
        &Figures {
            rtt_ms: None,
            mos: None,
            ..CLEAN
        },
        Vec::new(),
    );
    assert_eq!(v, Verdict::Excellent);
}

#[test]
fn bad_arguments_are_invalid_config() {
    for (url, ms) in [
        ("not a url", None),
        ("ftp://x", None),
        ("http://x", Some(1_999.0)),
        ("http://x", Some(30_001.0)),
        ("http://x", Some(f64::NAN)),
        ("http://x", Some(f64::INFINITY)),
    ] {
        let err = Preflight::new(url, ms).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidConfig, "{url} {ms:?}");
    }
    let p = Preflight::new("https://core.example/", None).unwrap();
    assert_eq!(p.duration_ms(), 10_000);
    assert_eq!(p.presence_url(), "wss://core.example/v1/operator/presence");
    assert_eq!(p.audio_url(), "wss://core.example/v1/operator/audio");
}

/// Drives a whole preflight: token, presence probe, echo of `seconds`
/// where frame `k` is lost when `lost(k)`, with the microphone level
/// `level(k)`. Returns the report as JSON.
fn run(lost: impl Fn(u64) -> bool, level: impl Fn(u64) -> f64) -> Value {
    let mut p = Preflight::new("http://127.0.0.1:1", Some(4_000.0)).unwrap();
    p.token_fetched(12.0);
    let probe = p.presence_probe(100.0);
    assert_eq!(probe, r#"{"type":"ping","id":1}"#);
    assert!(!p.presence_text(103.0, "not json"));
    assert!(p.presence_text(
        105.0,
        r#"{"type":"error","code":"NOT_AUTHENTICATED","message":"the first message must be hello"}"#
    ));
    p.fail(Step::Presence, "closed 1000"); // after the round trip: no failure
    assert_eq!(
        p.preflight_message("tok"),
        r#"{"type":"preflight","token":"tok"}"#
    );
    assert_eq!(p.poll_ping(200.0), None, "no ping before the echo started");
    assert_eq!(
        p.audio_text(210.0, r#"{"type":"preflightStarted","maxMs":30000}"#),
        AudioText::Started
    );
    assert_eq!(p.duration_ms(), 4_000);
    let mut t = 210.0;
    let mut sent = 0;
    for k in 0..200u64 {
        t += 20.0;
        sent += 1;
        if let Some(ping) = p.poll_ping(t) {
            let id: Value = serde_json::from_str(&ping).unwrap();
            let pong = serde_json::json!({"type": "pong", "id": id["id"]}).to_string();
            assert_eq!(p.audio_text(t + 8.0, &pong), AudioText::Nothing);
        }
        if !lost(k) {
            p.frame_received(t + 4.0);
        }
        p.levels(t, level(k), 0.0);
        if k % 50 == 49 {
            p.sample(t + 5.0, sent);
        }
    }
    serde_json::from_str(&p.report()).unwrap()
}

#[test]
fn a_clean_echo_is_excellent_and_a_lossy_one_poor() {
    let tone = |k: u64| 0.2 + (k % 5) as f64 / 100.0;
    let r = run(|_| false, tone);
    assert_eq!(r["verdict"], "excellent", "{r}");
    assert_eq!(r["reasons"], serde_json::json!([]));
    assert_eq!(r["tokenFetchMs"], 12.0);
    assert_eq!(r["presenceRttMs"], 5.0);
    assert_eq!(r["rttMs"], 8.0);
    assert_eq!(r["packetLossPercent"], 0.0);
    assert!(r["mos"].as_f64().unwrap() > 4.3, "{r}");
    assert_eq!(r["microphoneSignal"], true);
    assert_eq!(
        (r["framesSent"].as_u64(), r["framesReceived"].as_u64()),
        (Some(200), Some(200))
    );

    // One frame in ten lost: 10 % loss, MOS well under 3.5.
    let r = run(|k| k % 10 == 3, tone);
    assert_eq!(r["verdict"], "poor", "{r}");
    let got: Vec<&str> = r["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["high-packet-loss", "low-mos"], "{r}");
    let loss = r["packetLossPercent"].as_f64().unwrap();
    assert!((9.0..=11.0).contains(&loss), "{loss}");

    // A dead microphone: the path is fine, the verdict is not.
    let r = run(|_| false, |_| 0.0);
    assert_eq!(r["verdict"], "poor");
    assert_eq!(r["microphoneSignal"], false);
    assert_eq!(r["reasons"][0]["code"], "no-microphone-signal");
}

#[test]
fn failed_steps_fail_the_verdict_with_their_reason() {
    let new = || Preflight::new("http://127.0.0.1:1", None).unwrap();
    // A service without the echo capability.
    let mut p = new();
    let unknown = r#"{"type":"error","code":"UNKNOWN_MESSAGE","message":"unknown message type \"preflight\""}"#;
    assert_eq!(p.audio_text(1.0, unknown), AudioText::Stop);
    p.fail(Step::Audio, "closed 1000");
    let (v, reasons) = p.verdict();
    assert_eq!(
        (v, codes(&reasons)),
        (Verdict::Failed, vec!["echo-unsupported"])
    );

    // A refused token.
    let mut p = new();
    let refused = r#"{"type":"error","code":"UNAUTHORIZED","message":"invalid token"}"#;
    assert_eq!(p.audio_text(1.0, refused), AudioText::Stop);
    assert_eq!(codes(&p.verdict().1), ["token-rejected"]);

    // Nothing reachable: each step says so once.
    let mut p = new();
    p.fail(Step::Token, "HTTP 500");
    p.fail(Step::Presence, "could not connect");
    p.fail(Step::Presence, "could not connect");
    p.fail(Step::Audio, "could not connect");
    let (v, reasons) = p.verdict();
    assert_eq!(v, Verdict::Failed);
    assert_eq!(
        codes(&reasons),
        [
            "token-fetch-failed",
            "presence-unreachable",
            "audio-unreachable"
        ]
    );
    assert_eq!(reasons[0].message, "getToken failed: HTTP 500");
    assert_eq!(reasons[0].code, ReasonCode::TokenFetchFailed);

    // Started, frames sent, nothing came back.
    let mut p = new();
    p.audio_text(0.0, r#"{"type":"preflightStarted","maxMs":5000}"#);
    assert_eq!(p.duration_ms(), 5_000, "the service's bound wins");
    p.sample(1_000.0, 50);
    assert_eq!(codes(&p.verdict().1)[0], "no-echo-received");
    p.fail(Step::Audio, "closed 1000"); // after the start: no failure
    assert_eq!(codes(&p.verdict().1), ["no-echo-received"]);
    // Errors after the start (a rate limit) change nothing.
    let limited = r#"{"type":"error","code":"RATE_LIMITED","message":"too many messages"}"#;
    assert_eq!(p.audio_text(1.0, limited), AudioText::Nothing);
}

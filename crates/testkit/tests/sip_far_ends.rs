//! The SIP far-end kit proven against itself, without audin-server:
//! baresip calls baresip (audio both ways, DTMF, hang-up, rejection), SIPp
//! plays each UAS role the SIP trunk tests will need, and baresip or SIPp
//! checks it.
//!
//! Each test skips when baresip/SIPp are absent, unless
//! `AUDIN_REQUIRE_SIP_TOOLS` is set (as in `cargo xtask test`).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use audin_testkit::audio::{TELEPHONY_RATE, write_tone_g711};
use audin_testkit::sip::harness::{A440, EVENT, bounded};
use audin_testkit::sip::{
    AfterAnswer, AudioSource, Baresip, BaresipOptions, Codec, DigestChallenge, DigestError,
    EventKind, Scenario, Sipp, SippOptions, SippOutcome, Tool, tools_or_skip,
};
use audin_testkit::temp_dir;

/// Every test finishes well inside this, or fails.
const TEST_BOUND: Duration = Duration::from_secs(30);

/// A scratch directory removed at the end of the test (kept if it fails).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test]
async fn baresip_calls_baresip_hears_its_tone_echoed_sends_dtmf_and_hangs_up() -> Result<()> {
    let test = "baresip_calls_baresip";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut callee = Baresip::start(
            BaresipOptions::new("bob")
                .auto_answer()
                .source(AudioSource::Echo)
                .record(),
        )
        .await?;
        let mut caller = Baresip::start(BaresipOptions::new("alice").source(A440).record()).await?;

        caller.dial(&callee.uri()).await?;
        let up = caller.wait_event(EventKind::CallEstablished, EVENT).await?;
        assert_eq!(up.peer_uri.as_deref(), Some(callee.uri().as_str()));
        let up = callee.wait_event(EventKind::CallEstablished, EVENT).await?;
        assert_eq!(up.direction.as_deref(), Some("incoming"));

        // Two seconds of the tone there and back.
        tokio::time::sleep(Duration::from_secs(2)).await;
        caller.send_dtmf("5").await?;
        let digit = callee.wait_event(EventKind::CallDtmfStart, EVENT).await?;
        assert_eq!(digit.param.as_deref(), Some("5"), "{digit}");

        caller.hangup().await?;
        caller.wait_event(EventKind::CallClosed, EVENT).await?;
        let closed = callee.wait_event(EventKind::CallClosed, EVENT).await?;
        // baresip's wording for "the other side sent BYE".
        assert_eq!(closed.param.as_deref(), Some("Connection reset by peer"));
        caller.stop().await?;
        callee.stop().await?;

        let rec = caller.last_recording()?;
        let sent = rec.read_sent()?.analyze();
        let heard = rec.read_received()?;
        assert_eq!(heard.sample_rate, TELEPHONY_RATE);
        let heard = heard.analyze();
        assert!(sent.is_tone(440.0, 3.0), "caller sent {sent}");
        assert!(heard.is_tone(440.0, 3.0), "caller heard {heard}");
        assert!(heard.active_seconds > 1.5, "caller heard {heard}");
        assert!(
            (heard.rms_dbfs - sent.rms_dbfs).abs() <= 3.0,
            "echo level {heard} vs sent {sent}"
        );
        let callee_heard = callee.last_recording()?.read_received()?.analyze();
        assert!(
            callee_heard.is_tone(440.0, 3.0),
            "callee heard {callee_heard}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn manual_answer_rejects_with_486_then_accepts_and_plays_its_sine() -> Result<()> {
    let test = "manual_answer_reject_then_accept";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let callee =
            Baresip::start(BaresipOptions::new("carol").source(AudioSource::Sine { hz: 1000 }))
                .await?;
        let mut caller = Baresip::start(BaresipOptions::new("dave").record()).await?;

        // First call: it rings until the callee hangs up, which is a 486.
        caller.dial(&callee.uri()).await?;
        callee.wait_event(EventKind::CallIncoming, EVENT).await?;
        caller.wait_event(EventKind::CallRinging, EVENT).await?;
        callee.hangup().await?;
        let closed = caller.wait_event(EventKind::CallClosed, EVENT).await?;
        let reason = closed.param.unwrap_or_default();
        ensure!(reason.starts_with("486"), "caller saw {reason:?}");
        callee.wait_event(EventKind::CallClosed, EVENT).await?;
        ensure!(
            !caller
                .events()
                .iter()
                .chain(callee.events().iter())
                .any(|e| e.kind == EventKind::CallEstablished),
            "a rejected call was established"
        );

        // Second call: accepted; the callee hangs up after 1.5 s of sine.
        caller.dial(&callee.uri()).await?;
        callee.wait_event(EventKind::CallIncoming, EVENT).await?;
        callee.accept().await?;
        caller.wait_event(EventKind::CallEstablished, EVENT).await?;
        callee.wait_event(EventKind::CallEstablished, EVENT).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        callee.hangup().await?;
        let closed = caller.wait_event(EventKind::CallClosed, EVENT).await?;
        assert_eq!(closed.param.as_deref(), Some("Connection reset by peer"));
        caller.stop().await?;

        let heard = caller.last_recording()?.read_received()?.analyze();
        assert!(heard.is_tone(1000.0, 3.0), "caller heard {heard}");
        assert!(heard.active_seconds > 1.0, "caller heard {heard}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sipp_uac_is_turned_away_by_a_sipp_uas_answering_486() -> Result<()> {
    let test = "sipp_uac_vs_uas_486";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut uas = Sipp::start(
            SippOptions::uas(Scenario::uas_reject(486, "Busy Here")?)
                .timeout(Duration::from_secs(10)),
        )
        .await?;
        let mut uac = Sipp::start(
            SippOptions::uac_builtin("uac", uas.sip_addr())
                .service("+390299999999")
                .timeout(Duration::from_secs(10)),
        )
        .await?;
        let uac_out = uac.wait().await?;
        let uas_out = uas.wait().await?;
        assert!(uas_out.succeeded(), "UAS: {uas_out}");
        assert_eq!(uas_out.successful_calls, Some(1), "UAS: {uas_out}");
        // The built-in uac expects 200: a 486 fails its one call.
        assert_eq!(uac_out.exit_code, Some(1), "UAC: {uac_out}");
        assert_eq!(uac_out.failed_calls, Some(1), "UAC: {uac_out}");
        assert!(
            uac_out.messages.contains("SIP/2.0 486 Busy Here"),
            "UAC: {uac_out}"
        );
        assert!(
            uas_out.messages.contains("INVITE sip:+390299999999@"),
            "UAS: {uas_out}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn baresip_hears_sipp_early_media_then_busy() -> Result<()> {
    let test = "baresip_hears_sipp_early_media";
    if !tools_or_skip(test, &[Tool::Baresip, Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let scratch = Scratch(temp_dir("early")?);
        let media = scratch.0.join("ringback-1k.ulaw");
        write_tone_g711(&media, 1000.0, -20.0, Duration::from_secs(1), false)?;
        let scenario = Scenario::uas_early_media_then(
            &media,
            Codec::Pcmu,
            Duration::from_secs(3),
            486,
            "Busy Here",
        )?;
        let mut sipp =
            Sipp::start(SippOptions::uas(scenario).timeout(Duration::from_secs(15))).await?;
        let mut caller = Baresip::start(BaresipOptions::new("erin").record()).await?;

        caller.dial(&sipp.uri("+390299999999")).await?;
        caller.wait_event(EventKind::CallProgress, EVENT).await?;
        let closed = caller.wait_event(EventKind::CallClosed, EVENT).await?;
        assert_eq!(closed.param.as_deref(), Some("486 Busy Here"));
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        caller.stop().await?;

        // The 1 s file looped for the 3 s before the final response.
        let heard = caller.last_recording()?.read_received()?.analyze();
        assert!(heard.is_tone(1000.0, 3.0), "caller heard {heard}");
        assert!(heard.active_seconds > 2.0, "caller heard {heard}");
        Ok(())
    })
    .await
}

/// baresip `frank` with `password` calls a SIPp UAS sending `challenge`;
/// returns the SIPp outcome and how baresip's call ended (`None` when it
/// was established, then hung up by baresip).
async fn challenged_call(
    challenge: DigestChallenge,
    password: &str,
) -> Result<(SippOutcome, Option<String>)> {
    let scenario =
        Scenario::uas_challenge_then_answer(challenge, Codec::Pcmu, AfterAnswer::WaitForBye)?;
    let mut sipp = Sipp::start(SippOptions::uas(scenario).timeout(Duration::from_secs(10))).await?;
    let caller =
        Baresip::start(BaresipOptions::new("frank").credentials("frank", password)).await?;
    caller.dial(&sipp.uri("+390299999999")).await?;
    let ended = caller
        .wait_for("CALL_ESTABLISHED or CALL_CLOSED", EVENT, |e| {
            matches!(e.kind, EventKind::CallEstablished | EventKind::CallClosed)
        })
        .await?;
    let refused = if ended.kind == EventKind::CallEstablished {
        caller.hangup().await?;
        caller.wait_event(EventKind::CallClosed, EVENT).await?;
        None
    } else {
        Some(ended.param.unwrap_or_default())
    };
    Ok((sipp.wait().await?, refused))
}

#[tokio::test]
async fn sipp_digest_challenges_tell_right_from_wrong_credentials() -> Result<()> {
    let test = "sipp_digest_challenges";
    if !tools_or_skip(test, &[Tool::Baresip, Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let proxy = DigestChallenge::proxy_407("trunk.test", "frank", "s3cret");
        let www = DigestChallenge::www_401("trunk.test", "frank", "s3cret");

        // 407, as trunks challenge: the call goes through with the digest.
        let (out, refused) = challenged_call(proxy.clone(), "s3cret").await?;
        assert_eq!(refused, None, "{out}");
        assert!(out.succeeded(), "{out}");
        assert!(out.digest_verified(), "{:?}\n{out}", out.digest_checks);

        // SIPp cannot check a Proxy-Authorization itself: the kit's check
        // catches the wrong password.
        // (baresip 1.0.0 repeats the credential on its ACK and BYE.)
        let (out, _) = challenged_call(proxy, "wrong").await?;
        assert!(!out.digest_checks.is_empty(), "{out}");
        assert!(
            out.digest_checks
                .iter()
                .all(|c| *c == Err(DigestError::WrongResponse)),
            "{:?}\n{out}",
            out.digest_checks
        );

        // 401: SIPp's own <verifyauth> refuses a wrong digest with 403.
        let (out, refused) = challenged_call(www, "wrong").await?;
        assert_eq!(refused.as_deref(), Some("403 Forbidden"), "{out}");
        assert_eq!(out.exit_code, Some(1), "{out}");
        assert!(!out.digest_verified());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sipp_echoes_baresip_tone_then_hangs_up_itself() -> Result<()> {
    let test = "sipp_echo_then_bye";
    if !tools_or_skip(test, &[Tool::Baresip, Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let scenario =
            Scenario::uas_answer_echo(Codec::Pcma, AfterAnswer::ByeAfter(Duration::from_secs(3)));
        let mut sipp =
            Sipp::start(SippOptions::uas(scenario).timeout(Duration::from_secs(15))).await?;
        let mut caller = Baresip::start(
            BaresipOptions::new("grace")
                .codecs([Codec::Pcma])
                .source(A440)
                .record(),
        )
        .await?;
        caller.dial(&sipp.uri("echo")).await?;
        caller.wait_event(EventKind::CallEstablished, EVENT).await?;
        // SIPp's BYE ends the call.
        let closed = caller.wait_event(EventKind::CallClosed, EVENT).await?;
        assert_eq!(closed.param.as_deref(), Some("Connection reset by peer"));
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        caller.stop().await?;

        let heard = caller
            .last_recording()
            .context("the caller recorded nothing")?
            .read_received()?
            .analyze();
        assert!(heard.is_tone(440.0, 3.0), "caller heard {heard}");
        assert!(heard.active_seconds > 1.5, "caller heard {heard}");
        Ok(())
    })
    .await
}

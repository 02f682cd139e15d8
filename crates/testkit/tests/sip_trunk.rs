//! The SIP trunk carrier (`audin_server::sip::trunk`) against far ends
//! nobody here wrote: baresip calls our numbers and answers ours, SIPp
//! plays the trunk's scripted answers (early media then a final code, a
//! 407 challenge, an echo, a silent far end) and the odd requests (a
//! codec we lack, a delayed offer, OPTIONS). The engine is played by a
//! test [`InboundSink`] that records deliveries, and the operator's audio
//! socket by an in-memory one attached to the call's `CallMedia`.
//!
//! Everything runs on loopback; each test is bounded by [`TEST_BOUND`].
//! Tests skip when baresip/SIPp are absent, unless `AUDIN_REQUIRE_SIP_TOOLS`
//! is set (as `cargo xtask test` does).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use audin_protocol::EndReason;
use audin_server::carrier::{
    BoxFuture, CallMedia, Carrier, CarrierEvent, CarrierLeg, EndCause, EventReceiver, InboundCall,
    InboundRefusal, InboundSink, OutboundRequest,
};
use audin_server::sip::trunk::{SipEndpoint, SipEndpointConfig, SipTrunkConfig};
use audin_testkit::audio::write_tone_g711;
use audin_testkit::sip::harness::uac::{self, INVITE_HEAD};
use audin_testkit::sip::harness::{
    A440, EVENT, OUR_E164, Operator, bounded, closed_reason, ended, log_capture, loopback_trunk,
    next_event, play_tone,
};
use audin_testkit::sip::{
    AfterAnswer, Baresip, BaresipOptions, Codec, DigestAlgorithm, DigestChallenge, EventKind,
    Scenario, Sipp, SippOptions, Tool, tools_or_skip,
};
use tokio::sync::mpsc;

/// Every test finishes well inside this, or fails.
const TEST_BOUND: Duration = Duration::from_secs(30);

/// Our number, as baresip dials it (without `+`: normalised by us).
const OUR_NUMBER: &str = "390299999999";

/// The engine's side of inbound calls: records deliveries; refuses them
/// (hanging the leg up first, as the engine does) when told to.
#[derive(Default)]
struct TestSink {
    delivered: Mutex<Option<mpsc::UnboundedSender<InboundCall>>>,
    refuse: Mutex<Option<InboundRefusal>>,
    /// Answer every call at once (delayed-offer test).
    auto_answer: Mutex<bool>,
}

impl InboundSink for TestSink {
    fn deliver(&self, call: InboundCall) -> BoxFuture<'_, Result<(), InboundRefusal>> {
        Box::pin(async move {
            if let Some(refusal) = *self.refuse.lock().unwrap() {
                call.leg.hang_up(EndReason::Rejected);
                return Err(refusal);
            }
            if *self.auto_answer.lock().unwrap() {
                call.leg.answer();
            }
            if let Some(tx) = self.delivered.lock().unwrap().as_ref() {
                let _ = tx.send(call);
            }
            Ok(())
        })
    }
}

struct Harness {
    endpoint: SipEndpoint,
    sink: Arc<TestSink>,
    calls: mpsc::UnboundedReceiver<InboundCall>,
}

impl Harness {
    async fn start(trunks: Vec<SipTrunkConfig>) -> Result<Self> {
        Self::start_with(trunks, |_| {}).await
    }

    async fn start_with(
        trunks: Vec<SipTrunkConfig>,
        adjust: impl FnOnce(&mut SipEndpointConfig),
    ) -> Result<Self> {
        let (tx, calls) = mpsc::unbounded_channel();
        let sink = Arc::new(TestSink::default());
        *sink.delivered.lock().unwrap() = Some(tx);
        let mut config = SipEndpointConfig::new("127.0.0.1:0".parse()?);
        adjust(&mut config);
        let endpoint = SipEndpoint::start(config, trunks, sink.clone()).await?;
        Ok(Self {
            endpoint,
            sink,
            calls,
        })
    }

    /// `sip:NUMBER@127.0.0.1:PORT`.
    fn uri(&self, number: &str) -> String {
        format!("sip:{number}@{}", self.endpoint.local_addr())
    }

    async fn next_call(&mut self) -> Result<InboundCall> {
        tokio::time::timeout(EVENT, self.calls.recv())
            .await
            .context("no inbound call delivered")?
            .context("delivery channel closed")
    }

    fn trunk(&self, name: &str) -> Arc<dyn Carrier> {
        self.endpoint.trunk(name).expect("configured trunk")
    }
}

/// A trunk whose outbound calls go to `far_end`.
fn trunk_to(name: &str, far_end: SocketAddr) -> SipTrunkConfig {
    SipTrunkConfig::new(name, &format!("sip:{far_end}")).unwrap()
}

// ---------------------------------------------------------------------------
// Inbound

#[tokio::test]
async fn baresip_calls_our_number_audio_and_dtmf_flow_both_ways_and_its_bye_ends_the_call()
-> Result<()> {
    let test = "inbound_audio_dtmf_bye";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()]).await?;
        let mut caller =
            Baresip::start(BaresipOptions::new("390211111111").source(A440).record()).await?;
        caller.dial(&h.uri(OUR_NUMBER)).await?;
        let mut call = h.next_call().await?;
        assert_eq!(call.to, OUR_E164, "Request-URI user normalised to E.164");
        assert_eq!(call.from, "+390211111111");
        assert!(call.call_sid.starts_with("CA"), "{}", call.call_sid);
        caller.wait_event(EventKind::CallRinging, EVENT).await?;
        let mut operator = Operator::attach(&call.media);

        call.leg.answer();
        caller.wait_event(EventKind::CallEstablished, EVENT).await?;
        let tone = play_tone(call.leg.clone());
        operator.listen(Duration::from_millis(2500)).await;

        // DTMF both ways.
        caller.send_dtmf("5").await?;
        let digit = next_event(&mut call.events).await?;
        assert_eq!(digit, CarrierEvent::Dtmf('5'));
        call.leg.send_dtmf('7');
        let sent = caller.wait_event(EventKind::CallDtmfStart, EVENT).await?;
        assert_eq!(sent.param.as_deref(), Some("7"), "{sent}");

        // The caller hangs up (BYE).
        caller.hangup().await?;
        assert_eq!(ended(&mut call.events).await?, EndCause::RemoteHangup);
        closed_reason(&caller).await?;
        tone.abort();
        caller.stop().await?;

        let heard = operator.analysis();
        assert!(heard.is_tone(440.0, 5.0), "operator heard {heard}");
        assert!(heard.active_seconds > 1.5, "operator heard {heard}");
        let rec = caller.last_recording()?.read_received()?.analyze();
        assert!(rec.is_tone(1000.0, 5.0), "baresip heard {rec}");
        assert!(rec.active_seconds > 1.5, "baresip heard {rec}");
        // -20 dBFS sent; G.711 both ways keeps the level within 3 dB.
        assert!((rec.rms_dbfs + 20.0).abs() <= 3.0, "baresip heard {rec}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn hold_and_resume_reinvites_keep_the_call_and_our_hang_up_sends_bye() -> Result<()> {
    let test = "inbound_hold_resume_our_bye";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()]).await?;
        let caller = Baresip::start(BaresipOptions::new("390211111112").source(A440)).await?;
        caller.dial(&h.uri(OUR_E164)).await?;
        let mut call = h.next_call().await?;
        let mut operator = Operator::attach(&call.media);
        call.leg.answer();
        caller.wait_event(EventKind::CallEstablished, EVENT).await?;

        caller.hold().await?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        caller.resume().await?;
        caller.reinvite().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        ensure!(
            call.events.try_recv().is_err(),
            "a re-INVITE ended or changed the call"
        );
        ensure!(
            !caller
                .events()
                .iter()
                .any(|e| e.kind == EventKind::CallClosed),
            "baresip closed the call: {:?}",
            caller.events()
        );
        // Audio still flows after the resume.
        operator.listen(Duration::from_millis(1500)).await;
        let heard = operator.analysis();
        assert!(heard.is_tone(440.0, 5.0), "operator heard {heard}");

        call.leg.hang_up(EndReason::Hangup);
        let reason = closed_reason(&caller).await?;
        assert_eq!(
            reason, "Connection reset by peer",
            "baresip's words for a BYE"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn caller_cancel_while_ringing_ends_the_call_remote_hangup() -> Result<()> {
    let test = "inbound_cancel";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()]).await?;
        let caller = Baresip::start(BaresipOptions::new("390211111113")).await?;
        caller.dial(&h.uri(OUR_NUMBER)).await?;
        let mut call = h.next_call().await?;
        caller.wait_event(EventKind::CallRinging, EVENT).await?;
        caller.hangup().await?;
        assert_eq!(ended(&mut call.events).await?, EndCause::RemoteHangup);
        closed_reason(&caller).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn refusals_and_hang_ups_before_the_answer_pick_the_final_response() -> Result<()> {
    let test = "inbound_refusals";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()]).await?;
        let caller = Baresip::start(BaresipOptions::new("390211111114")).await?;

        // Every operator rejected: 486.
        caller.dial(&h.uri(OUR_NUMBER)).await?;
        let call = h.next_call().await?;
        caller.wait_event(EventKind::CallRinging, EVENT).await?;
        call.leg.hang_up(EndReason::Rejected);
        let reason = closed_reason(&caller).await?;
        assert!(reason.starts_with("486"), "{reason}");

        // Ring timeout: 480.
        caller.dial(&h.uri(OUR_NUMBER)).await?;
        let call = h.next_call().await?;
        caller.wait_event(EventKind::CallRinging, EVENT).await?;
        call.leg.hang_up(EndReason::NoAnswer);
        let reason = closed_reason(&caller).await?;
        assert!(reason.starts_with("480"), "{reason}");

        // Not our number: the refusal's 404 wins over the leg's hang-up.
        *h.sink.refuse.lock().unwrap() = Some(InboundRefusal::UnknownNumber);
        caller.dial(&h.uri(OUR_NUMBER)).await?;
        let reason = closed_reason(&caller).await?;
        assert!(reason.starts_with("404"), "{reason}");
        *h.sink.refuse.lock().unwrap() = Some(InboundRefusal::NobodyAvailable);
        caller.dial(&h.uri(OUR_NUMBER)).await?;
        let reason = closed_reason(&caller).await?;
        assert!(reason.starts_with("486"), "{reason}");

        // A user part that is no number: 404 without a delivery.
        *h.sink.refuse.lock().unwrap() = None;
        caller.dial(&h.uri("alice")).await?;
        let reason = closed_reason(&caller).await?;
        assert!(reason.starts_with("404"), "{reason}");
        ensure!(
            h.calls.try_recv().is_err(),
            "a call for `alice` was delivered"
        );
        assert!(
            !caller
                .events()
                .iter()
                .any(|e| e.kind == EventKind::CallEstablished),
            "a refused call was established"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn invite_from_an_address_no_trunk_lists_gets_403_and_rings_nobody() -> Result<()> {
    let test = "inbound_forbidden_source";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        // The only trunk is at 127.0.0.2; baresip calls from 127.0.0.1.
        let trunk = SipTrunkConfig::new("elsewhere", "sip:127.0.0.2:5060")?;
        let mut h = Harness::start(vec![trunk]).await?;
        let caller = Baresip::start(BaresipOptions::new("390211111115")).await?;
        caller.dial(&h.uri(OUR_NUMBER)).await?;
        let reason = closed_reason(&caller).await?;
        assert!(reason.starts_with("403"), "{reason}");
        ensure!(h.calls.try_recv().is_err(), "a forbidden call was delivered");

        // A scanner's flood: a few 403s, then silence.
        let scanner = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let local = scanner.local_addr()?;
        for i in 0..20 {
            let msg = format!(
                "OPTIONS sip:100@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-scan{i}\r\n\
                 From: <sip:scan@{local}>;tag=s{i}\r\nTo: <sip:100@{to}>\r\nCall-ID: scan{i}@x\r\n\
                 CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: friendly-scanner\r\n\
                 Content-Length: 0\r\n\r\n",
                to = h.endpoint.local_addr()
            );
            scanner.send_to(msg.as_bytes(), h.endpoint.local_addr()).await?;
        }
        let mut forbidden = 0;
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(800), scanner.recv_from(&mut buf)).await
        {
            let text = String::from_utf8_lossy(&buf[..n]);
            ensure!(text.starts_with("SIP/2.0 403"), "unexpected answer {text}");
            forbidden += 1;
        }
        // baresip's INVITE (and its ACK) counted in the same window: at
        // most five answers per source.
        assert!(
            (1..=audin_server::sip::trunk::REFUSALS_PER_WINDOW).contains(&forbidden),
            "{forbidden} answers to the flood"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pcma_only_caller_over_tcp_is_heard_and_hears_us() -> Result<()> {
    let test = "inbound_pcma";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()]).await?;
        let mut caller = Baresip::start(
            BaresipOptions::new("390211111116")
                .codecs([Codec::Pcma])
                .source(A440)
                .record(),
        )
        .await?;
        // Over TCP this time.
        caller
            .dial(&format!("{};transport=tcp", h.uri(OUR_NUMBER)))
            .await?;
        let call = h.next_call().await?;
        let mut operator = Operator::attach(&call.media);
        call.leg.answer();
        caller.wait_event(EventKind::CallEstablished, EVENT).await?;
        let tone = play_tone(call.leg.clone());
        operator.listen(Duration::from_secs(2)).await;
        call.leg.hang_up(EndReason::Hangup);
        closed_reason(&caller).await?;
        tone.abort();
        caller.stop().await?;
        let heard = operator.analysis();
        assert!(heard.is_tone(440.0, 5.0), "operator heard {heard}");
        let rec = caller.last_recording()?.read_received()?.analyze();
        assert!(rec.is_tone(1000.0, 5.0), "baresip heard {rec}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn offer_without_a_common_codec_gets_488_and_options_get_200() -> Result<()> {
    let test = "inbound_488_options";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()]).await?;
        let g722_only = format!(
            "  <send retrans=\"500\"><![CDATA[\n{INVITE_HEAD}Content-Type: application/sdp\n\
             Content-Length: [len]\n\nv=0\no=- 1 1 IN IP4 [local_ip]\ns=-\nc=IN IP4 [media_ip]\n\
             t=0 0\nm=audio [media_port] RTP/AVP 9\na=rtpmap:9 G722/8000\n]]></send>\n\
             \x20 <recv response=\"100\" optional=\"true\"/>\n\
             \x20 <recv response=\"488\"/>\n\
             \x20 <send><![CDATA[\nACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n\
             From: <sip:+390211111117@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
             [last_To:]\nCall-ID: [call_id]\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n"
        );
        let mut sipp = Sipp::start(
            SippOptions::uac(Scenario::from_body("g722 only", &g722_only), h.endpoint.local_addr())
                .service(OUR_E164)
                .timeout(Duration::from_secs(10)),
        )
        .await?;
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        ensure!(h.calls.try_recv().is_err(), "a 488 call was delivered");

        let options = "  <send retrans=\"500\"><![CDATA[\n\
             OPTIONS sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
             From: <sip:ping@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
             To: <sip:[service]@[remote_ip]:[remote_port]>\nCall-ID: [call_id]\nCSeq: 1 OPTIONS\n\
             Max-Forwards: 70\nContent-Length: 0\n\n]]></send>\n  <recv response=\"200\"/>\n";
        let mut sipp = Sipp::start(
            SippOptions::uac(Scenario::from_body("options", options), h.endpoint.local_addr())
                .service(OUR_E164)
                .timeout(Duration::from_secs(10)),
        )
        .await?;
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn delayed_offer_gets_our_offer_in_the_200_and_its_answer_from_the_ack() -> Result<()> {
    let test = "inbound_delayed_offer";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()]).await?;
        *h.sink.auto_answer.lock().unwrap() = true;
        let body = format!(
            "  <send retrans=\"500\"><![CDATA[\n{INVITE_HEAD}Content-Length: 0\n\n]]></send>\n\
             \x20 <recv response=\"100\" optional=\"true\"/>\n\
             \x20 <recv response=\"180\" optional=\"true\"/>\n\
             \x20 <recv response=\"200\" rrs=\"true\">\n\
             \x20   <action><ereg regexp=\"m=audio [0-9]+ RTP/AVP 0 8 101\" search_in=\"body\" check_it=\"true\" assign_to=\"offer\"/><log message=\"our offer: [$offer]\"/></action>\n\
             \x20 </recv>\n\
             \x20 <send><![CDATA[\nACK [next_url] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
             From: <sip:+390211111117@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
             To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\nCall-ID: [call_id]\n\
             CSeq: 1 ACK\nContact: <sip:sipp@[local_ip]:[local_port]>\nMax-Forwards: 70\n\
             Content-Type: application/sdp\nContent-Length: [len]\n\nv=0\no=- 1 1 IN IP4 [local_ip]\n\
             s=-\nc=IN IP4 [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP 8\na=rtpmap:8 PCMA/8000\n]]></send>\n\
             \x20 <pause milliseconds=\"1500\"/>\n\
             \x20 <send retrans=\"500\"><![CDATA[\nBYE [next_url] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
             From: <sip:+390211111117@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
             To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\nCall-ID: [call_id]\n\
             CSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n\
             \x20 <recv response=\"200\"/>\n"
        );
        let mut sipp = Sipp::start(
            SippOptions::uac(Scenario::from_body("delayed offer", &body), h.endpoint.local_addr())
                .service(OUR_E164)
                .timeout(Duration::from_secs(12)),
        )
        .await?;
        let mut call = h.next_call().await?;
        assert_eq!(call.to, OUR_E164);
        assert_eq!(ended(&mut call.events).await?, EndCause::RemoteHangup);
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        Ok(())
    })
    .await
}

/// Waits for the 200 of a re-INVITE whose SDP must say `direction`.
fn uac_expect_200_with(direction: &str, var: &str) -> String {
    format!(
        "  <recv response=\"100\" optional=\"true\"/>\n  <recv response=\"200\">\n    <action>\
         <ereg regexp=\"a={direction}\" search_in=\"body\" check_it=\"true\" assign_to=\"{var}\"/>\
         <log message=\"[${var}]\"/></action>\n  </recv>\n"
    )
}

#[tokio::test]
async fn hold_reinvite_is_answered_recvonly_and_resume_sendrecv_keeping_the_call() -> Result<()> {
    let test = "inbound_hold_direction";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()]).await?;
        *h.sink.auto_answer.lock().unwrap() = true;
        let ack = |cseq| uac::in_dialog("ACK", cseq, "Content-Length: 0\n");
        let body = [
            format!(
                "  <send retrans=\"500\"><![CDATA[\n{INVITE_HEAD}{}]]></send>\n",
                uac::sdp("sendrecv")
            ),
            "  <recv response=\"100\" optional=\"true\"/>\n\
             \x20 <recv response=\"180\" optional=\"true\"/>\n\
             \x20 <recv response=\"200\" rrs=\"true\"/>\n"
                .to_owned(),
            ack(1),
            "  <pause milliseconds=\"300\"/>\n".to_owned(),
            uac::in_dialog("INVITE", 2, &uac::sdp("sendonly")),
            uac_expect_200_with("recvonly", "held"),
            ack(2),
            "  <pause milliseconds=\"300\"/>\n".to_owned(),
            uac::in_dialog("INVITE", 3, &uac::sdp("sendrecv")),
            uac_expect_200_with("sendrecv", "resumed"),
            ack(3),
            "  <pause milliseconds=\"300\"/>\n".to_owned(),
            uac::in_dialog("BYE", 4, "Content-Length: 0\n"),
            "  <recv response=\"200\"/>\n".to_owned(),
        ]
        .concat();
        let mut sipp = Sipp::start(
            SippOptions::uac(
                Scenario::from_body("hold resume", &body),
                h.endpoint.local_addr(),
            )
            .service(OUR_E164)
            .timeout(Duration::from_secs(12)),
        )
        .await?;
        let mut call = h.next_call().await?;
        // Only the BYE ends it: the re-INVITEs kept the call.
        assert_eq!(ended(&mut call.events).await?, EndCause::RemoteHangup);
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------
// Outbound

fn request(to: &str) -> OutboundRequest {
    OutboundRequest {
        call_sid: audin_server::util::new_call_sid(),
        from: "+390211111111".into(),
        to: to.into(),
    }
}

/// Places a call through `trunk`; returns the leg, its events and the
/// operator listening to it.
async fn place(
    h: &Harness,
    trunk: &str,
    to: &str,
) -> Result<(Arc<dyn CarrierLeg>, EventReceiver, Operator)> {
    let (tx, rx) = mpsc::channel(audin_server::carrier::EVENT_QUEUE);
    let media = CallMedia::new();
    let operator = Operator::attach(&media);
    let leg = h
        .trunk(trunk)
        .place_call(request(to), tx, media)
        .await
        .map_err(|e| anyhow::anyhow!("place_call: {e}"))?;
    Ok((leg, rx, operator))
}

#[tokio::test]
async fn early_media_then_final_codes_map_to_the_notes_causes() -> Result<()> {
    let test = "outbound_early_media_finals";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let dir = audin_testkit::temp_dir("sip-early")?;
        let ringback = dir.join("ringback-425.ulaw");
        write_tone_g711(&ringback, 425.0, -20.0, Duration::from_secs(1), false)?;
        type Expected = fn(&EndCause) -> bool;
        let cases: [(u16, &str, Expected); 4] = [
            (486, "Busy Here", |c| *c == EndCause::Busy),
            (603, "Decline", |c| *c == EndCause::Declined),
            (480, "Temporarily Unavailable", |c| *c == EndCause::NoAnswer),
            (503, "Service Unavailable", |c| {
                matches!(
                    c,
                    EndCause::Failed {
                        sip_status: Some(503),
                        ..
                    }
                )
            }),
        ];
        let mut sipps = Vec::new();
        let mut trunks = Vec::new();
        for (i, (code, reason, _)) in cases.iter().enumerate() {
            let scenario = Scenario::uas_early_media_then(
                &ringback,
                Codec::Pcmu,
                Duration::from_millis(2000),
                *code,
                reason,
            )?;
            let sipp =
                Sipp::start(SippOptions::uas(scenario).timeout(Duration::from_secs(15))).await?;
            trunks.push(trunk_to(&format!("t{i}"), sipp.sip_addr()));
            sipps.push(sipp);
        }
        let h = Harness::start(trunks).await?;
        let runs = cases.iter().enumerate().map(|(i, (code, _, expected))| {
            let h = &h;
            async move {
                let (_leg, mut events, mut operator) =
                    place(h, &format!("t{i}"), "+390299999999").await?;
                let first = next_event(&mut events).await?;
                ensure!(first == CarrierEvent::EarlyMedia, "{code}: first {first:?}");
                let listen = operator.listen(Duration::from_millis(1500));
                listen.await;
                let cause = ended(&mut events).await?;
                ensure!(expected(&cause), "{code}: ended {cause:?}");
                let heard = operator.analysis();
                ensure!(heard.is_tone(425.0, 5.0), "{code}: operator heard {heard}");
                ensure!(heard.active_seconds > 0.8, "{code}: operator heard {heard}");
                Ok::<_, anyhow::Error>(())
            }
        });
        for r in futures_util::future::join_all(runs).await {
            r?;
        }
        for mut sipp in sipps {
            let out = sipp.wait().await?;
            assert!(out.succeeded(), "{out}");
            assert!(
                out.messages.contains("INVITE sip:+390299999999@"),
                "Request-URI user is the E.164 callee: {out}"
            );
            assert!(out.messages.contains("From: <sip:+390211111111@"), "{out}");
        }
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn our_hang_up_while_ringing_sends_cancel_and_acks_the_487() -> Result<()> {
    let test = "outbound_cancel";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let to_tag = "[last_To:];tag=[pid]SIPpTag01[call_number]";
        let body = format!(
            "  <recv request=\"INVITE\">\n    <action><ereg regexp=\"[0-9]+ INVITE\" search_in=\"hdr\" \
             header=\"CSeq:\" assign_to=\"invite_cseq\"/></action>\n  </recv>\n\
             \x20 <send><![CDATA[\nSIP/2.0 180 Ringing\n[last_Via:]\n[last_From:]\n{to_tag}\n\
             [last_Call-ID:]\n[last_CSeq:]\nContact: <sip:[local_ip]:[local_port]>\nContent-Length: 0\n\n]]></send>\n\
             \x20 <recv request=\"CANCEL\"/>\n\
             \x20 <send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n{to_tag}\n[last_Call-ID:]\n\
             [last_CSeq:]\nContent-Length: 0\n\n]]></send>\n\
             \x20 <send><![CDATA[\nSIP/2.0 487 Request Terminated\n[last_Via:]\n[last_From:]\n{to_tag}\n\
             [last_Call-ID:]\nCSeq: [$invite_cseq]\nContent-Length: 0\n\n]]></send>\n\
             \x20 <recv request=\"ACK\"/>\n"
        );
        let mut sipp = Sipp::start(
            SippOptions::uas(Scenario::from_body("ringing then cancelled", &body))
                .timeout(Duration::from_secs(12)),
        )
        .await?;
        let h = Harness::start(vec![trunk_to("ring", sipp.sip_addr())]).await?;
        let (leg, mut events, _operator) = place(&h, "ring", "+390299999999").await?;
        assert_eq!(next_event(&mut events).await?, CarrierEvent::Ringing);
        leg.hang_up(EndReason::Hangup);
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "CANCEL sent and the 487 ACKed: {out}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn proxy_407_challenges_md5_and_sha256_are_answered_and_our_hang_up_sends_bye() -> Result<()>
{
    let test = "outbound_407";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        for algorithm in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
            let challenge =
                DigestChallenge::proxy_407("trunk.test", "acct", "s3cret-pw").algorithm(algorithm);
            let scenario = Scenario::uas_challenge_then_answer(
                challenge,
                Codec::Pcmu,
                AfterAnswer::WaitForBye,
            )?;
            let mut sipp =
                Sipp::start(SippOptions::uas(scenario).timeout(Duration::from_secs(12))).await?;
            let trunk = trunk_to("auth", sipp.sip_addr())
                .credentials("acct", audin_server::sip::trunk::Secret::new("s3cret-pw"))?;
            let h = Harness::start(vec![trunk]).await?;
            let (leg, mut events, _operator) = place(&h, "auth", "+390299999999").await?;
            let answered = next_event(&mut events).await?;
            assert_eq!(answered, CarrierEvent::Answered, "{algorithm:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            leg.hang_up(EndReason::Hangup);
            let out = sipp.wait().await?;
            assert!(out.succeeded(), "{algorithm:?}: {out}");
            // The retried INVITE's digest is right (for the algorithm asked,
            // named as RFC 7616 spells it). The ACK of the 2xx repeats the
            // INVITE's credentials verbatim, as RFC 3261 §22.1 wants (the
            // kit's check recomputes it for method ACK and calls it wrong).
            assert_eq!(
                out.digest_checks.first(),
                Some(&Ok(())),
                "{algorithm:?}: {out}"
            );
            let credentials: Vec<&str> = out
                .messages
                .lines()
                .filter(|l| l.starts_with("Proxy-Authorization:"))
                .collect();
            assert!(
                credentials
                    .iter()
                    .all(|c| c.contains(&format!("algorithm={}", algorithm.token()))),
                "{credentials:?}"
            );
            assert!(
                credentials.windows(2).all(|w| w[0] == w[1]),
                "{credentials:?}"
            );
            assert!(
                !out.messages.contains("s3cret-pw"),
                "the password went on the wire"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pcma_echo_far_end_returns_our_tone_and_its_bye_ends_the_call() -> Result<()> {
    let test = "outbound_pcma_echo";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let scenario =
            Scenario::uas_answer_echo(Codec::Pcma, AfterAnswer::ByeAfter(Duration::from_secs(3)));
        let mut sipp =
            Sipp::start(SippOptions::uas(scenario).timeout(Duration::from_secs(15))).await?;
        let h = Harness::start(vec![trunk_to("echo", sipp.sip_addr())]).await?;
        let (leg, mut events, mut operator) = place(&h, "echo", "+390299999999").await?;
        assert_eq!(next_event(&mut events).await?, CarrierEvent::Answered);
        let tone = play_tone(leg.clone());
        operator.listen(Duration::from_millis(2000)).await;
        assert_eq!(ended(&mut events).await?, EndCause::RemoteHangup);
        tone.abort();
        let heard = operator.analysis();
        assert!(heard.is_tone(1000.0, 5.0), "operator heard {heard}");
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_far_end_that_sends_no_rtp_is_hung_up_after_the_media_timeout() -> Result<()> {
    let test = "outbound_media_timeout";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let xml = "  <recv request=\"INVITE\" rrs=\"true\"/>\n\
  <send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:];tag=[pid]SIPpTag01[call_number]\n\
[last_Call-ID:]\n[last_CSeq:]\nContact: <sip:[local_ip]:[local_port];transport=[transport]>\n\
Content-Type: application/sdp\nContent-Length: [len]\n\nv=0\no=- 1 1 IN IP4 [local_ip]\ns=-\n\
c=IN IP4 [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000\n]]></send>\n\
  <recv request=\"ACK\"/>\n  <recv request=\"BYE\"/>\n\
  <send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]\n\
Content-Length: 0\n\n]]></send>\n";
        let scenario = Scenario::from_xml(
            "silent",
            format!(
                "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<!DOCTYPE scenario SYSTEM \"sipp.dtd\">\n\
                 <scenario name=\"silent\">\n{xml}</scenario>\n"
            ),
        );
        let mut sipp =
            Sipp::start(SippOptions::uas(scenario).timeout(Duration::from_secs(15))).await?;
        let h = Harness::start_with(vec![trunk_to("silent", sipp.sip_addr())], |c| {
            c.media_timeout = Duration::from_secs(2);
        })
        .await?;
        let (_leg, mut events, _operator) = place(&h, "silent", "+390299999999").await?;
        assert_eq!(next_event(&mut events).await?, CarrierEvent::Answered);
        match ended(&mut events).await? {
            EndCause::Failed {
                sip_status: None,
                why,
            } => assert_eq!(why, "no RTP for 2 s"),
            other => bail!("ended {other:?}"),
        }
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "the far end got our BYE: {out}");
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------
// Logs

#[tokio::test]
async fn logs_hold_no_credentials_and_one_line_per_refused_source() -> Result<()> {
    let test = "sip_logs";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    let capture = log_capture();
    bounded(test, TEST_BOUND, async {
        const PASSWORD: &str = "pw-that-must-not-leak";
        let challenge = DigestChallenge::proxy_407("trunk.test", "acct", PASSWORD);
        let scenario =
            Scenario::uas_challenge_then_answer(challenge, Codec::Pcmu, AfterAnswer::WaitForBye)?;
        let mut sipp =
            Sipp::start(SippOptions::uas(scenario).timeout(Duration::from_secs(15))).await?;
        let trunk = trunk_to("auth-logs", sipp.sip_addr())
            .credentials("acct", audin_server::sip::trunk::Secret::new(PASSWORD))?;
        let h = Harness::start(vec![trunk]).await?;
        tracing::info!(endpoint = ?h.endpoint, "configured");
        let (leg, mut events, _operator) = place(&h, "auth-logs", "+390299999999").await?;
        assert_eq!(next_event(&mut events).await?, CarrierEvent::Answered);
        leg.hang_up(EndReason::Hangup);
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");

        // A flood from an address no trunk lists.
        let closed = Harness::start(vec![SipTrunkConfig::new("far", "sip:127.0.0.2:5060")?]).await?;
        // From its own loopback address: other tests refuse 127.0.0.1.
        let scanner = tokio::net::UdpSocket::bind("127.0.0.3:0").await?;
        let local = scanner.local_addr()?;
        for i in 0..30 {
            let msg = format!(
                "INVITE sip:100@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-flood{i}\r\n\
                 From: <sip:scan@{local}>;tag=f{i}\r\nTo: <sip:100@{to}>\r\nCall-ID: flood{i}@x\r\n\
                 CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                to = closed.endpoint.local_addr()
            );
            scanner
                .send_to(msg.as_bytes(), closed.endpoint.local_addr())
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;

        let logs = capture.text();
        assert!(
            logs.lines()
                .any(|l| l.contains("SIP INVITE sent") && l.contains("trunk=auth-logs")),
            "{logs}"
        );
        assert!(!logs.contains(PASSWORD), "the trunk password is in the logs");
        assert!(
            !logs.contains("Proxy-Authorization"),
            "digest credentials are in the logs:\n{logs}"
        );
        let refusal_lines = logs
            .lines()
            .filter(|l| l.contains("no trunk lists") && l.contains("source=127.0.0.3"))
            .count();
        assert_eq!(refusal_lines, 1, "{logs}");
        Ok(())
    })
    .await
}

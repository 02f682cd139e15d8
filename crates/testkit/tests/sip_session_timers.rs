//! SIP session timers (RFC 4028) of the SIP trunk carrier
//! (`audin_server::sip::trunk`) against SIPp, which checks every header we
//! send with regular expressions (`check_it`: a mismatch fails its call):
//!
//! - a caller asking for 90 s with `refresher=uac` gets them back with
//!   `Require: timer`, and its refreshes (re-INVITE, UPDATE) are answered
//!   with the interval again while the call stays up;
//! - a caller asking for less than our Min-SE gets 422 with `Min-SE: 90`
//!   (one that does not support timers gets the interval raised instead);
//! - a far end that should refresh and does not is sent BYE when the
//!   session expires, and the call ends `failed`;
//! - as refresher we re-INVITE (repeating our SDP, same `o=` version) at
//!   half the interval when calling out, and UPDATE when the caller
//!   allows it.
//!
//! Intervals of a few seconds come from a test Min-SE
//! (`SipEndpointConfig::session_timer_min`). Everything runs on loopback;
//! each test is bounded by [`TEST_BOUND`]. Tests skip when SIPp is absent,
//! unless `AUDIN_REQUIRE_SIP_TOOLS` is set (as `cargo xtask test` does).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use audin_server::carrier::{
    BoxFuture, CallMedia, Carrier, CarrierEvent, CarrierLeg, EndCause, InboundCall, InboundRefusal,
    InboundSink, OutboundRequest,
};
use audin_server::sip::trunk::{SipEndpoint, SipEndpointConfig, SipTrunkConfig};
use audin_testkit::sip::harness::uac::{self, INVITE_HEAD};
use audin_testkit::sip::harness::{EVENT, OUR_E164, bounded, ended, loopback_trunk, next_event};
use audin_testkit::sip::{Scenario, Sipp, SippOptions, Tool, tools_or_skip};
use tokio::sync::mpsc;

/// Every test finishes well inside this, or fails.
const TEST_BOUND: Duration = Duration::from_secs(30);

/// The Min-SE of the tests that need intervals of a few seconds.
const SHORT_MIN_SE: Duration = Duration::from_secs(2);

/// The engine's side of inbound calls: answers each at once and hands it
/// to the test.
struct AnsweringSink {
    delivered: Mutex<mpsc::UnboundedSender<InboundCall>>,
}

impl InboundSink for AnsweringSink {
    fn deliver(&self, call: InboundCall) -> BoxFuture<'_, Result<(), InboundRefusal>> {
        Box::pin(async move {
            call.leg.answer();
            let _ = self.delivered.lock().unwrap().send(call);
            Ok(())
        })
    }
}

struct Harness {
    endpoint: SipEndpoint,
    calls: mpsc::UnboundedReceiver<InboundCall>,
}

impl Harness {
    async fn start(
        trunks: Vec<SipTrunkConfig>,
        adjust: impl FnOnce(&mut SipEndpointConfig),
    ) -> Result<Self> {
        let (tx, calls) = mpsc::unbounded_channel();
        let sink = Arc::new(AnsweringSink {
            delivered: Mutex::new(tx),
        });
        let mut config = SipEndpointConfig::new("127.0.0.1:0".parse()?);
        adjust(&mut config);
        let endpoint = SipEndpoint::start(config, trunks, sink).await?;
        Ok(Self { endpoint, calls })
    }

    async fn next_call(&mut self) -> Result<InboundCall> {
        tokio::time::timeout(EVENT, self.calls.recv())
            .await
            .context("no inbound call delivered")?
            .context("delivery channel closed")
    }
}

fn short_min_se(c: &mut SipEndpointConfig) {
    c.session_timer_min = SHORT_MIN_SE;
}

/// A header check: the call fails unless `header` matches `regexp`. SIPp
/// 3.6.1 refuses a variable it never uses, hence the log.
fn check(header: &str, regexp: &str, var: &str) -> String {
    format!(
        "<ereg regexp=\"{regexp}\" search_in=\"hdr\" header=\"{header}:\" check_it=\"true\" \
         assign_to=\"{var}\"/><log message=\"{header}: [${var}]\"/>"
    )
}

/// Waits for a response, running `checks` on it.
fn recv_checked(status: u16, rrs: bool, checks: &[String]) -> String {
    let rrs = if rrs { " rrs=\"true\"" } else { "" };
    format!(
        "  <recv response=\"{status}\"{rrs}>\n    <action>{}</action>\n  </recv>\n",
        checks.concat()
    )
}

// ---------------------------------------------------------------------------
// SIPp as the caller

fn uac_sdp() -> &'static str {
    "Content-Type: application/sdp\nContent-Length: [len]\n\nv=0\no=- 7 7 IN IP4 [local_ip]\n\
     s=-\nc=IN IP4 [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
}

/// The caller's initial INVITE with `extra` headers.
fn uac_invite(extra: &str) -> String {
    format!(
        "  <send retrans=\"500\"><![CDATA[\n{INVITE_HEAD}{extra}{}]]></send>\n\
         \x20 <recv response=\"100\" optional=\"true\"/>\n\
         \x20 <recv response=\"180\" optional=\"true\"/>\n",
        uac_sdp()
    )
}

async fn run_uac(h: &Harness, name: &str, body: &str, timeout: Duration) -> Result<Sipp> {
    Ok(Sipp::start(
        SippOptions::uac(Scenario::from_body(name, body), h.endpoint.local_addr())
            .service(OUR_E164)
            .timeout(timeout),
    )
    .await?)
}

#[tokio::test]
async fn the_callers_interval_and_refresher_come_back_and_its_refreshes_keep_the_call() -> Result<()>
{
    let test = "session_timer_uas_refreshes";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()], |_| {}).await?;
        let timer = "Supported: timer\nSession-Expires: 90;refresher=uac\n";
        let answer_checks = [
            check("Session-Expires", "^ *90;refresher=uac", "se"),
            check("Require", "timer", "req"),
            check("Supported", "timer", "sup"),
        ];
        let refresh_checks = [
            check("Session-Expires", "^ *90;refresher=uac", "se"),
            check("Require", "timer", "req"),
        ];
        let body = [
            uac_invite(timer),
            recv_checked(200, true, &answer_checks),
            uac::ack(1),
            "  <pause milliseconds=\"300\"/>\n".to_owned(),
            // A refresh as IMS cores send it: re-INVITE, same SDP,
            // requiring the extension.
            uac::in_dialog(
                "INVITE",
                2,
                &format!("{timer}Require: timer\n{}", uac_sdp()),
            ),
            "  <recv response=\"100\" optional=\"true\"/>\n".to_owned(),
            recv_checked(200, false, &refresh_checks),
            uac::ack(2),
            "  <pause milliseconds=\"300\"/>\n".to_owned(),
            // And the one RFC 4028 prefers: UPDATE without a body.
            uac::in_dialog("UPDATE", 3, &format!("{timer}Content-Length: 0\n")),
            recv_checked(200, false, &refresh_checks),
            "  <pause milliseconds=\"300\"/>\n".to_owned(),
            uac::bye(4),
        ]
        .concat();
        let mut sipp = run_uac(&h, "timer 90 uac", &body, Duration::from_secs(12)).await?;
        let mut call = h.next_call().await?;
        // Only the BYE ends it: the refreshes kept the call.
        assert_eq!(ended(&mut call.events).await?, EndCause::RemoteHangup);
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_interval_below_our_min_se_gets_422_or_is_raised_for_a_caller_without_timers()
-> Result<()> {
    let test = "session_timer_422";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()], |_| {}).await?;
        let refused = [
            uac_invite("Supported: timer\nSession-Expires: 30\n"),
            recv_checked(422, false, &[check("Min-SE", "^ *90[^0-9]*$", "min")]),
            "  <send><![CDATA[\nACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n\
             From: <sip:+390211111117@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
             [last_To:]\nCall-ID: [call_id]\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n"
                .to_owned(),
        ]
        .concat();
        let mut sipp = run_uac(&h, "timer 30", &refused, Duration::from_secs(10)).await?;
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        ensure!(
            h.calls.try_recv().is_err(),
            "a call refused 422 was delivered"
        );

        // A proxy asked for 30 s on behalf of a caller that cannot read a
        // 422: the call goes through at our Min-SE, and we refresh.
        let raised = [
            uac_invite("Session-Expires: 30\n"),
            recv_checked(
                200,
                true,
                &[check("Session-Expires", "^ *90;refresher=uas", "se")],
            ),
            uac::ack(1),
            "  <pause milliseconds=\"300\"/>\n".to_owned(),
            uac::bye(2),
        ]
        .concat();
        let mut sipp = run_uac(&h, "timer 30 unsupported", &raised, Duration::from_secs(10)).await?;
        let mut call = h.next_call().await?;
        assert_eq!(ended(&mut call.events).await?, EndCause::RemoteHangup);
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        assert!(
            !out.messages.contains("Require: timer"),
            "Require: timer sent to a caller without timer support: {out}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_far_end_that_never_refreshes_gets_our_bye_when_the_session_expires() -> Result<()> {
    let test = "session_timer_expiry";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()], short_min_se).await?;
        let body = [
            uac_invite("Supported: timer\nSession-Expires: 4;refresher=uac\n"),
            recv_checked(
                200,
                true,
                &[check("Session-Expires", "^ *4;refresher=uac", "se")],
            ),
            uac::ack(1),
            // It never refreshes; our BYE must come (4 s − 4/3 s after
            // the 200), well before SIPp gives up.
            "  <recv request=\"BYE\" timeout=\"10000\"/>\n\
             \x20 <send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n\
             [last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n]]></send>\n"
                .to_owned(),
        ]
        .concat();
        let mut sipp = run_uac(&h, "no refresh", &body, Duration::from_secs(15)).await?;
        let mut call = h.next_call().await?;
        let answered = Instant::now();
        match ended(&mut call.events).await? {
            EndCause::Failed {
                sip_status: None,
                why,
            } => assert_eq!(why, "session timer expired: no refresh in 4 s"),
            other => bail!("ended {other:?}"),
        }
        let lasted = answered.elapsed();
        assert!(
            lasted >= Duration::from_millis(2300),
            "BYE before the session expired, after {lasted:?}"
        );
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "SIPp got our BYE: {out}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn as_refresher_for_a_caller_that_allows_update_we_refresh_with_update() -> Result<()> {
    let test = "session_timer_uas_update";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![loopback_trunk()], short_min_se).await?;
        let body = [
            uac_invite(
                "Supported: timer\nAllow: INVITE, ACK, CANCEL, BYE, UPDATE\n\
                 Session-Expires: 6;refresher=uas\n",
            ),
            recv_checked(
                200,
                true,
                &[
                    check("Session-Expires", "^ *6;refresher=uas", "se"),
                    check("Require", "timer", "req"),
                ],
            ),
            uac::ack(1),
            // Due 3 s after our 200; SIPp waits up to 6 s.
            format!(
                "  <recv request=\"UPDATE\" timeout=\"6000\">\n    <action>{}</action>\n  </recv>\n",
                // We send the request and stay the refresher: uac now.
                check("Session-Expires", "^ *6;refresher=uac", "upd")
            ),
            "  <send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n\
             [last_Call-ID:]\n[last_CSeq:]\nContact: <sip:sipp@[local_ip]:[local_port]>\n\
             Session-Expires: 6;refresher=uac\nRequire: timer\nContent-Length: 0\n\n]]></send>\n"
                .to_owned(),
            "  <pause milliseconds=\"300\"/>\n".to_owned(),
            uac::bye(2),
        ]
        .concat();
        let mut sipp = run_uac(&h, "we refresh by update", &body, Duration::from_secs(15)).await?;
        let mut call = h.next_call().await?;
        assert_eq!(ended(&mut call.events).await?, EndCause::RemoteHangup);
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------
// SIPp as the called trunk

/// The `o=` lines of the INVITEs SIPp received (`-trace_msg`).
fn received_invite_origins(messages: &str) -> Vec<String> {
    messages
        .split("\n-----------------------------------------------")
        .filter_map(|block| {
            let (_, rest) = block.split_once("message received")?;
            let (_, msg) = rest.split_once('\n')?;
            let msg = msg.trim_start_matches(['\r', '\n']);
            msg.starts_with("INVITE ").then_some(msg)
        })
        .filter_map(|msg| {
            msg.lines()
                .find(|l| l.starts_with("o="))
                .map(|l| l.trim_end().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn calling_out_we_ask_for_1800_s_and_as_refresher_re_invite_at_half_the_interval()
-> Result<()> {
    let test = "session_timer_uac_refresh";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let to_tag = "[last_To:];tag=[pid]SIPpTag01[call_number]";
        let answer = |tag: &str| {
            format!(
                "  <send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n{tag}\n[last_Call-ID:]\n\
                 [last_CSeq:]\nContact: <sip:[local_ip]:[local_port];transport=[transport]>\n\
                 Session-Expires: 6;refresher=uac\nRequire: timer\n\
                 Content-Type: application/sdp\nContent-Length: [len]\n\nv=0\n\
                 o=- 1 1 IN IP4 [local_ip]\ns=-\nc=IN IP4 [media_ip]\nt=0 0\n\
                 m=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000\n]]></send>\n"
            )
        };
        let body = [
            format!(
                "  <recv request=\"INVITE\" rrs=\"true\">\n    <action>\
                 <ereg regexp=\".*\" search_in=\"hdr\" header=\"From:\" assign_to=\"remote_from\"/>\
                 <ereg regexp=\".*\" search_in=\"hdr\" header=\"To:\" assign_to=\"local_to\"/>\
                 {}{}{}</action>\n  </recv>\n",
                check("Session-Expires", "^ *1800[^0-9]*$", "se"),
                check("Min-SE", "^ *2[^0-9]*$", "min"),
                check("Supported", "timer", "sup"),
            ),
            // We are the refresher (uac), every 3 s; no Allow: re-INVITE.
            answer(to_tag),
            "  <recv request=\"ACK\"/>\n".to_owned(),
            format!(
                "  <recv request=\"INVITE\" timeout=\"6000\">\n    <action>{}</action>\n  </recv>\n",
                check("Session-Expires", "^ *6;refresher=uac", "refresh")
            ),
            answer("[last_To:]"),
            "  <recv request=\"ACK\"/>\n  <pause milliseconds=\"300\"/>\n".to_owned(),
            "  <send><![CDATA[\nBYE [next_url] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
             From: [$local_to];tag=[pid]SIPpTag01[call_number]\nTo: [$remote_from]\n\
             Call-ID: [call_id]\nCSeq: 1 BYE\n\
             Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n\
             Max-Forwards: 70\nContent-Length: 0\n\n]]></send>\n  <recv response=\"200\"/>\n"
                .to_owned(),
        ]
        .concat();
        let mut sipp = Sipp::start(
            SippOptions::uas(Scenario::from_body("answers refresher=uac", &body))
                .timeout(Duration::from_secs(15)),
        )
        .await?;
        let trunk = SipTrunkConfig::new("refresh", &format!("sip:{}", sipp.sip_addr()))?;
        let h = Harness::start(vec![trunk], short_min_se).await?;
        let (tx, mut events) = mpsc::channel(audin_server::carrier::EVENT_QUEUE);
        let request = OutboundRequest {
            call_sid: audin_server::util::new_call_sid(),
            from: "+390211111111".into(),
            to: OUR_E164.into(),
        };
        let leg: Arc<dyn CarrierLeg> = h
            .endpoint
            .trunk("refresh")
            .context("configured trunk")?
            .place_call(request, tx, CallMedia::new())
            .await
            .map_err(|e| anyhow::anyhow!("place_call: {e}"))?;
        assert_eq!(next_event(&mut events).await?, CarrierEvent::Answered);
        // Only SIPp's BYE, after our refresh, ends it.
        assert_eq!(ended(&mut events).await?, EndCause::RemoteHangup);
        drop(leg);
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        // The refresh repeats our offer unchanged: same o= line, version
        // included (RFC 3264 §8: nothing changed).
        let origins = received_invite_origins(&out.messages);
        assert_eq!(origins.len(), 2, "{origins:?}\n{out}");
        assert_eq!(origins[0], origins[1], "the refresh changed our SDP");
        Ok(())
    })
    .await
}

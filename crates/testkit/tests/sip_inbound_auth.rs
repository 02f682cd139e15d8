//! Digest authentication of inbound INVITEs (issue 13: "INVITEs are
//! accepted only from a configured trunk's source addresses … or after
//! digest authentication"), against SIPp as the calling PBX at an address
//! its trunk does not list:
//!
//! - its first INVITE gets 407 with `Proxy-Authenticate` for MD5 and
//!   SHA-256; the INVITE retried with the trunk's username and password rings
//!   that trunk's numbers only (`via` is that trunk), is answered, and the
//!   PBX's BYE (from the unlisted address) ends it `remote_hangup`;
//! - once that call is over, the address is a stranger again: 403;
//! - a wrong password gets 407 again and rings nobody;
//! - with no trunk authenticating, the address gets 403 as before.
//!
//! SIPp 3.6.1 computes only MD5 answers (`[authentication]`), so SHA-256
//! credentials are covered by the unit tests of `sip::trunk`. Everything
//! runs on loopback; each test is bounded by [`TEST_BOUND`]. Tests skip
//! when SIPp is absent, unless `AUDIN_REQUIRE_SIP_TOOLS` is set (as
//! `cargo xtask test` does).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use audin_server::carrier::{BoxFuture, EndCause, InboundCall, InboundRefusal, InboundSink, Via};
use audin_server::sip::trunk::{
    AUTHENTICATED_LINGER, Secret, SipEndpoint, SipEndpointConfig, SipTrunkConfig,
};
use audin_testkit::sip::harness::{EVENT, OUR_E164, bounded, ended, log_capture, uac};
use audin_testkit::sip::{Scenario, Sipp, SippOptions, SippOutcome, Tool, tools_or_skip};
use tokio::sync::mpsc;

/// Every test finishes well inside this, or fails.
const TEST_BOUND: Duration = Duration::from_secs(40);
/// The PBX's password on its trunk.
const PASSWORD: &str = "pbx-s3cret-7f";

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
    async fn start(trunks: Vec<SipTrunkConfig>) -> Result<Self> {
        let (tx, calls) = mpsc::unbounded_channel();
        let sink = Arc::new(AnsweringSink {
            delivered: Mutex::new(tx),
        });
        let config = SipEndpointConfig::new("127.0.0.1:0".parse()?);
        let endpoint = SipEndpoint::start(config, trunks, sink).await?;
        Ok(Self { endpoint, calls })
    }

    async fn next_call(&mut self) -> Result<InboundCall> {
        tokio::time::timeout(EVENT, self.calls.recv())
            .await
            .context("no inbound call delivered")?
            .context("delivery channel closed")
    }

    /// Starts a SIPp caller (from 127.0.0.1) to our number.
    async fn start_call(&self, name: &str, body: &str, creds: Option<&str>) -> Result<Sipp> {
        let mut opts =
            SippOptions::uac(Scenario::from_body(name, body), self.endpoint.local_addr())
                .service(OUR_E164)
                .timeout(Duration::from_secs(12));
        if let Some(password) = creds {
            opts = opts.credentials("pbx", password);
            // SIPp's digest `uri` is `sip:HOST:PORT` unless told; RFC 3261
            // §22.4 and our check want the Request-URI (SIPp adds `sip:`).
            opts.extra_args.extend([
                "-auth_uri".to_owned(),
                format!("{OUR_E164}@{}", self.endpoint.local_addr()),
            ]);
        }
        Ok(Sipp::start(opts).await?)
    }

    /// Runs a SIPp caller to its end.
    async fn call(&self, name: &str, body: &str, creds: Option<&str>) -> Result<SippOutcome> {
        Ok(self.start_call(name, body, creds).await?.wait().await?)
    }
}

/// A trunk whose listed addresses are not loopback's 127.0.0.1, where
/// SIPp calls from; with `inbound_auth`, it takes the PBX by password.
fn remote_trunk(name: &str, username: &str, inbound_auth: bool) -> SipTrunkConfig {
    let t = SipTrunkConfig::new(name, "sip:127.0.0.2:5060")
        .and_then(|t| t.allow("198.51.100.0/24"))
        .and_then(|t| t.credentials(username, Secret::new(PASSWORD)))
        .expect("a valid trunk");
    if inbound_auth {
        t.inbound_auth().expect("credentials are set")
    } else {
        t
    }
}

/// A header check: the call fails unless `header` matches `regexp`. SIPp
/// 3.6.1 refuses a variable it never uses, hence the log.
fn check(header: &str, regexp: &str, var: &str) -> String {
    format!(
        "<ereg regexp=\"{regexp}\" search_in=\"hdr\" header=\"{header}:\" check_it=\"true\" \
         assign_to=\"{var}\"/><log message=\"{header}: [${var}]\"/>"
    )
}

/// The INVITE (CSeq `cseq`, `extra` headers) and our final `status` to it,
/// with `checks` on that response.
fn invite_answered(cseq: u32, extra: &str, status: u16, checks: &[String]) -> String {
    let head = uac::INVITE_HEAD.replace("CSeq: 1 INVITE", &format!("CSeq: {cseq} INVITE"));
    let auth = if status == 407 { " auth=\"true\"" } else { "" };
    let rrs = if status == 200 { " rrs=\"true\"" } else { "" };
    format!(
        "  <send retrans=\"500\"><![CDATA[\n{head}{extra}{}]]></send>\n\
         \x20 <recv response=\"100\" optional=\"true\"/>\n\
         \x20 <recv response=\"180\" optional=\"true\"/>\n\
         \x20 <recv response=\"{status}\"{auth}{rrs}>\n    <action>{}</action>\n  </recv>\n",
        uac::sdp("sendrecv"),
        checks.concat()
    )
}

/// The ACK of a non-2xx final response to INVITE `cseq` (same branch, the
/// response's To tag).
fn ack_of_refusal(cseq: u32) -> String {
    format!(
        "  <send><![CDATA[\nACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n\
         From: <sip:+390211111117@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
         [last_To:]\nCall-ID: [call_id]\nCSeq: {cseq} ACK\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n"
    )
}

/// Our 407: MD5 offered first (what SIPp answers), realm `audin`, one of
/// our nonces.
fn challenge_checks() -> Vec<String> {
    vec![check(
        "Proxy-Authenticate",
        // XML attribute: quotes are `&quot;`.
        "^ *Digest realm=&quot;audin&quot;, nonce=&quot;[0-9a-f]+\\.[0-9a-f]{32}&quot;, \
         algorithm=MD5, qop=&quot;auth&quot;$",
        "md5",
    )]
}

/// SIPp's `-trace_msg` log holds both challenge headers, SHA-256 with the
/// same nonce as MD5 (SIPp's `ereg` reads only the first of a repeated
/// header).
fn assert_both_algorithms(out: &SippOutcome) {
    for alg in ["MD5", "SHA-256"] {
        assert!(
            out.messages
                .lines()
                .any(|l| l.starts_with("Proxy-Authenticate:")
                    && l.contains(&format!("algorithm={alg},"))),
            "no {alg} challenge: {}",
            out.messages
        );
    }
}

/// A request from SIPp's address outside any call, which must get 403.
fn stranger_requests() -> String {
    let options = "  <send retrans=\"500\"><![CDATA[\nOPTIONS sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n\
         Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
         From: <sip:+390211111117@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
         To: <sip:[service]@[remote_ip]:[remote_port]>\nCall-ID: [call_id]\nCSeq: 1 OPTIONS\n\
         Max-Forwards: 70\nContent-Length: 0\n\n]]></send>\n  <recv response=\"403\"/>\n";
    // A BYE as if for the call just ended (a To tag, no dialog).
    let bye = "  <send retrans=\"500\"><![CDATA[\nBYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n\
         Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
         From: <sip:+390211111117@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
         To: <sip:[service]@[remote_ip]:[remote_port]>;tag=ended-call\nCall-ID: [call_id]\n\
         CSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n  <recv response=\"403\"/>\n";
    format!("{options}{bye}")
}

#[tokio::test]
async fn an_unlisted_pbx_is_challenged_then_rings_only_its_trunk_and_its_bye_ends_the_call()
-> Result<()> {
    let test = "inbound_auth_call";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    let logs = log_capture();
    bounded(test, TEST_BOUND, async {
        // Another authenticating trunk with other credentials: the call
        // must come through the PBX's own trunk only.
        let mut h = Harness::start(vec![
            remote_trunk("auth-other", "branch", true),
            remote_trunk("auth-pbx", "pbx", true),
        ])
        .await?;
        let body = [
            invite_answered(1, "", 407, &challenge_checks()),
            ack_of_refusal(1),
            invite_answered(2, "[authentication]\n", 200, &[]),
            uac::ack(2),
            "  <pause milliseconds=\"500\"/>\n".to_owned(),
            uac::bye(3),
        ]
        .concat();
        let mut sipp = h.start_call("auth call", &body, Some(PASSWORD)).await?;
        let mut call = match h.next_call().await {
            Ok(call) => call,
            Err(e) => {
                let out = sipp.wait().await?;
                return Err(e.context(format!("{out}\n{}", out.messages)));
            }
        };
        assert_eq!(call.via, Via::Trunks(vec!["auth-pbx".into()]));
        assert_eq!(call.to, OUR_E164);
        // The BYE came from the unlisted address and was taken.
        assert_eq!(ended(&mut call.events).await?, EndCause::RemoteHangup);
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        assert_both_algorithms(&out);

        // The log names the trunk and the source, never the credentials.
        let lines = logs.lines_of_trunk("auth-pbx");
        ensure!(
            lines
                .iter()
                .any(|l| l.contains("SIP INVITE authenticated by digest")
                    && l.contains("source=127.0.0.1:")),
            "no authentication line: {lines:#?}"
        );
        let response = out
            .messages
            .split("response=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .context("SIPp sent no digest response")?;
        let text = logs.text();
        ensure!(!text.contains(PASSWORD), "the password was logged");
        ensure!(!text.contains(response), "the digest response was logged");

        // Once the call (and the linger for its last ACKs) is over, the
        // address is a stranger again.
        tokio::time::sleep(AUTHENTICATED_LINGER + Duration::from_millis(500)).await;
        let out = h.call("stranger again", &stranger_requests(), None).await?;
        assert!(out.succeeded(), "{out}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_wrong_password_is_challenged_again_and_rings_nobody() -> Result<()> {
    let test = "inbound_auth_wrong_password";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let mut h = Harness::start(vec![remote_trunk("auth-wrong", "pbx", true)]).await?;
        let body = [
            invite_answered(1, "", 407, &challenge_checks()),
            ack_of_refusal(1),
            invite_answered(2, "[authentication]\n", 407, &challenge_checks()),
            ack_of_refusal(2),
        ]
        .concat();
        let out = h
            .call("wrong password", &body, Some("not-the-password"))
            .await?;
        assert!(out.succeeded(), "{out}");
        // Credentials for this very request: only the password is wrong.
        ensure!(
            out.messages.contains(&format!("uri=\"sip:{OUR_E164}@")),
            "SIPp did not retry with credentials for our number: {}",
            out.messages
        );
        ensure!(h.calls.try_recv().is_err(), "a wrong password rang someone");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn without_a_trunk_that_authenticates_an_unlisted_invite_gets_403() -> Result<()> {
    let test = "inbound_auth_off";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        // Credentials (for outbound calls) but no inbound_auth.
        let mut h = Harness::start(vec![remote_trunk("auth-off", "pbx", false)]).await?;
        let body = [invite_answered(1, "", 403, &[]), ack_of_refusal(1)].concat();
        let out = h.call("no inbound auth", &body, Some(PASSWORD)).await?;
        assert!(out.succeeded(), "{out}");
        ensure!(
            !out.messages.contains("Proxy-Authenticate"),
            "challenged without inbound_auth: {out}"
        );
        ensure!(
            h.calls.try_recv().is_err(),
            "an unlisted source rang someone"
        );
        Ok(())
    })
    .await
}

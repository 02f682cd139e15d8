//! REGISTER to a trunk (`audin_server::sip::register`) against SIPp
//! playing the registrar, a far end nobody here wrote: it challenges every
//! REGISTER (401, MD5 checked by SIPp's own `<verifyauth>`, SHA-256 by the
//! kit's digest check), grants a short lifetime and expects the refresh in
//! time, answers 423 and 403, and expects the un-REGISTER (`Expires: 0`)
//! when the endpoint shuts down.
//!
//! Registrations run with a test policy (refresh floor and backoff of 1 s)
//! so the timing rules show within seconds. Everything runs on loopback;
//! each test is bounded by [`TEST_BOUND`]. Tests skip when SIPp is absent,
//! unless `AUDIN_REQUIRE_SIP_TOOLS` is set (as `cargo xtask test` does).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use audin_protocol::EndReason;
use audin_server::carrier::{BoxFuture, InboundCall, InboundRefusal, InboundSink};
use audin_server::sip::register::{RegisterPolicy, RegistrationState};
use audin_server::sip::trunk::{
    Secret, SipEndpoint, SipEndpointConfig, SipError, SipTrunkConfig, TrunkConfigError,
};
use audin_testkit::sip::harness::{EVENT, bounded, log_capture};
use audin_testkit::sip::{
    DigestAlgorithm, DigestChallenge, Scenario, Sipp, SippOptions, SippOutcome, Tool, tools_or_skip,
};
use tokio::sync::watch;

/// Every test finishes well inside this, or fails.
const TEST_BOUND: Duration = Duration::from_secs(30);

/// SIPp's own bound on a scenario.
const SIPP_TIMEOUT: Duration = Duration::from_secs(20);
const REALM: &str = "registrar.test";
const USER: &str = "acct";

/// No calls in these tests: anything delivered is refused.
struct NoCalls;

impl InboundSink for NoCalls {
    fn deliver(&self, call: InboundCall) -> BoxFuture<'_, Result<(), InboundRefusal>> {
        Box::pin(async move {
            call.leg.hang_up(EndReason::Rejected);
            Err(InboundRefusal::NobodyAvailable)
        })
    }
}

/// Refreshes no sooner than 1 s, retries after 1 s.
fn fast_policy() -> RegisterPolicy {
    RegisterPolicy::new(Duration::from_secs(1), &[Duration::from_secs(1)]).unwrap()
}

/// A trunk at SIPp that registers as [`USER`] with `password`.
fn registering_trunk(name: &str, sipp: &Sipp, password: &str) -> Result<SipTrunkConfig> {
    let mut trunk = SipTrunkConfig::new(name, &format!("sip:{}", sipp.sip_addr()))?
        .credentials(USER, Secret::new(password))?;
    trunk.register = true;
    Ok(trunk)
}

async fn start(trunk: SipTrunkConfig) -> Result<SipEndpoint> {
    Ok(SipEndpoint::start_with_register_policy(
        SipEndpointConfig::new("127.0.0.1:0".parse()?),
        vec![trunk],
        Arc::new(NoCalls),
        fast_policy(),
    )
    .await?)
}

/// Waits for the state `want`; returns when it was seen.
async fn reached(
    state: &mut watch::Receiver<RegistrationState>,
    want: RegistrationState,
) -> Result<Instant> {
    let seen = tokio::time::timeout(EVENT, state.wait_for(|s| *s == want))
        .await
        .map(|r| r.map(|_| ()));
    match seen {
        Ok(Ok(())) => Ok(Instant::now()),
        Ok(Err(_)) => bail!("the registration ended before {want}"),
        Err(_) => bail!("not {want} within {EVENT:?} (now {})", *state.borrow()),
    }
}

// ---------------------------------------------------------------------------
// The registrar's scenario

fn scenario(name: &str, body: &str, challenge: &DigestChallenge) -> Scenario {
    Scenario {
        digest: Some(challenge.clone()),
        ..Scenario::from_body(name, body)
    }
}

/// A final response to the last REGISTER, with `extra` headers.
fn reply(status: &str, extra: &str) -> String {
    format!(
        "  <send><![CDATA[\nSIP/2.0 {status}\n[last_Via:]\n[last_From:]\n\
         [last_To:];tag=[pid]SIPpTag01[call_number]\n[last_Call-ID:]\n[last_CSeq:]\n\
         {extra}Content-Length: 0\n\n]]></send>\n"
    )
}

/// `<recv>` of a REGISTER, within `within_ms` of the previous step when
/// given (a late REGISTER fails the scenario).
fn recv_register(within_ms: Option<u64>, action: &str) -> String {
    let timeout = within_ms.map_or(String::new(), |ms| format!(" timeout=\"{ms}\""));
    if action.is_empty() {
        format!("  <recv request=\"REGISTER\"{timeout}/>\n")
    } else {
        format!(
            "  <recv request=\"REGISTER\"{timeout}>\n    <action>\n{action}    </action>\n  </recv>\n"
        )
    }
}

/// One REGISTER challenged with 401, and its retry, which must carry an
/// `Authorization` (else the scenario fails), answered `answer`. An MD5
/// digest is checked by SIPp (`<verifyauth>`: a wrong one gets 403 and
/// fails the scenario); every digest is also checked from the message log
/// ([`SippOutcome::digest_checks`]).
fn challenged(step: u32, c: &DigestChallenge, within_ms: Option<u64>, answer: &str) -> String {
    let challenge = recv_register(within_ms, "")
        + &reply(
            "401 Unauthorized",
            &format!(
                "WWW-Authenticate: Digest realm=\"{}\", nonce=\"[pid]n[call_number]s{step}\", \
                 algorithm={}\n",
                c.realm,
                c.algorithm.token()
            ),
        );
    let verified = match c.algorithm {
        DigestAlgorithm::Md5 => {
            recv_register(
                Some(5000),
                &format!(
                    "      <verifyauth assign_to=\"auth{step}\" username=\"{}\" password=\"{}\"/>\n",
                    c.username, c.password
                ),
            ) + &format!("  <nop test=\"auth{step}\" next=\"ok{step}\"/>\n")
                + &reply("403 Forbidden", "")
                // A recv that never comes fails the call (SIPp has no
                // "fail" action).
                + "  <recv request=\"AUTH-FAILED\" timeout=\"100\"/>\n"
                + &format!("  <label id=\"ok{step}\"/>\n")
        }
        // SIPp 3.6.1 verifies MD5 only: here it checks an Authorization
        // for this algorithm is there (its value is echoed, as SIPp
        // refuses a variable it never uses); the log check verifies it.
        DigestAlgorithm::Sha256 => recv_register(
            Some(5000),
            &format!(
                "      <ereg regexp=\"Digest .*algorithm=.?{}\" search_in=\"hdr\" \
                 header=\"Authorization:\" check_it=\"true\" assign_to=\"auth{step}\"/>\n",
                c.algorithm.token()
            ),
        ),
    };
    let answer = if c.algorithm == DigestAlgorithm::Sha256 {
        answer.replacen(
            "Content-Length: 0",
            &format!("X-Authorization-Seen: [$auth{step}]\nContent-Length: 0"),
            1,
        )
    } else {
        answer.to_owned()
    };
    challenge + &verified + &answer
}

/// The REGISTERs SIPp received, in order.
fn registers(messages: &str) -> Vec<String> {
    messages
        .split("\n-----------------------------------------------")
        .filter_map(|block| {
            let (_, rest) = block.split_once("message received")?;
            let (_, msg) = rest.split_once('\n')?;
            let msg = msg.trim_start_matches(['\r', '\n']);
            msg.starts_with("REGISTER ").then(|| msg.to_owned())
        })
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Each REGISTER's `Expires`, and whether it carried `Authorization`.
fn expires_and_auth(out: &SippOutcome) -> Vec<(Option<u32>, bool)> {
    registers(&out.messages)
        .iter()
        .map(|r| {
            (
                header(r, "Expires").and_then(|v| v.parse().ok()),
                header(r, "Authorization").is_some(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Logs

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn registers_with_digest_refreshes_before_a_short_expiry_and_unregisters_on_shutdown()
-> Result<()> {
    let test = "register_refresh_unregister";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    let logs = log_capture();
    bounded(test, TEST_BOUND, async {
        const PASSWORD: &str = "reg-pw-never-shown";
        let c = DigestChallenge::www_401(REALM, USER, PASSWORD);
        // Lifetime 4 s granted in our Contact's `expires` parameter: the
        // refresh must come after 1 s (a pause: SIPp fails on a REGISTER
        // arriving then) and within 4.5 s. The refresh is granted an hour
        // in the Expires header; the un-REGISTER comes at shutdown.
        let body = challenged(1, &c, None, &reply("200 OK", "[last_Contact:];expires=4\n"))
            + "  <pause milliseconds=\"1000\"/>\n"
            + &challenged(2, &c, Some(3500), &reply("200 OK", "Expires: 3600\n"))
            + &challenged(3, &c, None, &reply("200 OK", ""));
        let mut sipp =
            Sipp::start(SippOptions::uas(scenario("registrar", &body, &c)).timeout(SIPP_TIMEOUT))
                .await?;
        let endpoint = start(registering_trunk("refresh", &sipp, PASSWORD)?).await?;
        let mut state = endpoint
            .registration("refresh")
            .context("no registration")?;

        let registered = reached(&mut state, RegistrationState::Registered { expires: 4 }).await?;
        let refreshed =
            reached(&mut state, RegistrationState::Registered { expires: 3600 }).await?;
        let gap = refreshed - registered;
        ensure!(
            gap >= Duration::from_millis(1500) && gap < Duration::from_secs(4),
            "refreshed {gap:?} after a 4 s registration (half of it is due)"
        );

        let stopping = Instant::now();
        endpoint.shutdown().await;
        ensure!(
            stopping.elapsed() < Duration::from_secs(3),
            "shutdown took {:?}",
            stopping.elapsed()
        );
        assert_eq!(*state.borrow(), RegistrationState::Unregistered);
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        assert_eq!(
            expires_and_auth(&out),
            [
                (Some(3600), false),
                (Some(3600), true),
                (Some(3600), false),
                (Some(3600), true),
                (Some(0), false),
                (Some(0), true),
            ],
            "REGISTERs asking an hour, then Expires: 0; each challenged one answered"
        );
        assert!(out.digest_verified(), "{:?}", out.digest_checks);
        assert!(
            !out.messages.contains(PASSWORD),
            "the password went on the wire"
        );

        let lines = logs.lines_of_trunk("refresh");
        let infos = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
        assert_eq!(
            infos("registered with trunk refresh (expires 4 s)"),
            1,
            "{lines:#?}"
        );
        assert_eq!(
            infos("registered with trunk refresh (expires 3600 s)"),
            1,
            "{lines:#?}"
        );
        assert_eq!(infos("unregistered from trunk refresh"), 1, "{lines:#?}");
        let all = logs.text();
        assert!(!all.contains(PASSWORD), "the trunk password is in the logs");
        assert!(
            !all.contains("Authorization: Digest"),
            "digest credentials are in the logs"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sha256_challenge_is_answered_and_423_is_retried_with_its_min_expires() -> Result<()> {
    let test = "register_sha256_423";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let c = DigestChallenge::www_401(REALM, USER, "sha-pw").algorithm(DigestAlgorithm::Sha256);
        let body = challenged(
            1,
            &c,
            None,
            &reply("423 Interval Too Brief", "Min-Expires: 7200\n"),
        ) + &challenged(2, &c, Some(3000), &reply("200 OK", "Expires: 7200\n"))
            + &challenged(3, &c, None, &reply("200 OK", ""));
        let mut sipp = Sipp::start(
            SippOptions::uas(scenario("registrar 423", &body, &c)).timeout(SIPP_TIMEOUT),
        )
        .await?;
        let endpoint = start(registering_trunk("sha", &sipp, "sha-pw")?).await?;
        let mut state = endpoint.registration("sha").context("no registration")?;
        reached(&mut state, RegistrationState::Registered { expires: 7200 }).await?;
        endpoint.shutdown().await;
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        assert_eq!(
            expires_and_auth(&out),
            [
                (Some(3600), false),
                (Some(3600), true),
                (Some(7200), false),
                (Some(7200), true),
                (Some(0), false),
                (Some(0), true),
            ],
            "after the 423 the REGISTER asks for its Min-Expires"
        );
        assert_eq!(out.digest_checks.len(), 3, "{:?}", out.digest_checks);
        assert!(
            out.digest_verified(),
            "SHA-256 digests: {:?}",
            out.digest_checks
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_registrar_refusing_403_marks_the_trunk_failed_warns_once_and_is_retried_later()
-> Result<()> {
    let test = "register_403_backoff";
    if !tools_or_skip(test, &[Tool::Sipp]) {
        return Ok(());
    }
    let logs = log_capture();
    bounded(test, TEST_BOUND, async {
        let c = DigestChallenge::www_401(REALM, USER, "deny-pw");
        // Two refusals; each retry must wait out the 1 s backoff (a
        // REGISTER during the pause fails the scenario), then it succeeds.
        let body = recv_register(None, "")
            + &reply("403 Forbidden", "")
            + "  <pause milliseconds=\"700\"/>\n"
            + &recv_register(Some(3000), "")
            + &reply("403 Forbidden", "")
            + "  <pause milliseconds=\"700\"/>\n"
            + &challenged(1, &c, Some(3000), &reply("200 OK", "Expires: 3600\n"))
            + &challenged(2, &c, None, &reply("200 OK", ""));
        let mut sipp = Sipp::start(
            SippOptions::uas(scenario("registrar 403", &body, &c)).timeout(SIPP_TIMEOUT),
        )
        .await?;
        let endpoint = start(registering_trunk("deny", &sipp, "deny-pw")?).await?;
        let mut state = endpoint.registration("deny").context("no registration")?;
        reached(&mut state, RegistrationState::Failed { status: Some(403) }).await?;
        reached(&mut state, RegistrationState::Registered { expires: 3600 }).await?;
        endpoint.shutdown().await;
        let out = sipp.wait().await?;
        assert!(out.succeeded(), "{out}");
        assert_eq!(registers(&out.messages).len(), 6, "{out}");

        let lines = logs.lines_of_trunk("deny");
        let count = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
        assert_eq!(
            count("REGISTER to trunk deny failed"),
            1,
            "one WARN for two refusals: {lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("WARN") && l.contains("status=403")),
            "{lines:#?}"
        );
        assert_eq!(
            count("registered with trunk deny (expires 3600 s)"),
            1,
            "{lines:#?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_trunk_that_registers_without_credentials_is_refused_at_start() -> Result<()> {
    let mut trunk = SipTrunkConfig::new("nocreds", "sip:127.0.0.1:5999")?;
    trunk.register = true;
    let started = SipEndpoint::start(
        SipEndpointConfig::new("127.0.0.1:0".parse()?),
        vec![trunk],
        Arc::new(NoCalls),
    )
    .await;
    match started {
        Err(SipError::Config(TrunkConfigError::RegisterWithoutCredentials)) => Ok(()),
        Err(e) => bail!("refused for another reason: {e}"),
        Ok(_) => bail!("started a registration with no user to bind"),
    }
}

//! SIPp 3.6.1 as a far end: a scenario (built here or given as XML) run
//! against loopback, bounded by a timeout, with its exit status, call
//! counts and message/error logs collected.
//!
//! Exit codes (SIPp's): 0 every call succeeded, 1 at least one failed,
//! 97 stopped by an internal command, 99 no call processed, 255/254 fatal.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::digest::{self, DigestAlgorithm, DigestError};
use super::{
    Codec, Credentials, LOOPBACK, PortNeeds, check_token, cleanup_dir, instance_dir, log_tail,
    reserve_ports, udp_port_in_use,
};

/// Extra time after SIPp's own `-timeout` before it is killed.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
const START_ATTEMPTS: usize = 3;

/// Everything that can go wrong running SIPp.
#[derive(Debug, thiserror::Error)]
pub enum SippError {
    #[error("invalid SIPp option: {0}")]
    InvalidOption(String),
    #[error("preparing SIPp files in {dir}: {message}")]
    Setup { dir: PathBuf, message: String },
    #[error("cannot start `sipp` (install sip-tester with `cargo xtask setup`): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("sipp exited during start-up (exit code {code:?}); output tail:\n{log}")]
    ExitedAtStart { code: Option<i32>, log: String },
    #[error("sipp did not bind UDP {addr} within {timeout:?}; output tail:\n{log}")]
    NotReady {
        addr: SocketAddr,
        timeout: Duration,
        log: String,
    },
    #[error("sipp: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// What an answering scenario does once the call is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAnswer {
    /// Waits for the caller's BYE and answers 200 (bounded by the run's
    /// timeout).
    WaitForBye,
    /// Hangs up itself (BYE) after this long.
    ByeAfter(Duration),
}

/// A SIPp XML scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub name: String,
    pub xml: String,
    /// Needs SIPp's `-rtp_echo` (echo RTP received on the media port).
    pub rtp_echo: bool,
    /// The challenge it sends, whose answers [`Sipp::wait`] verifies.
    pub digest: Option<DigestChallenge>,
}

/// A digest challenge sent by a UAS scenario, with the credentials the far
/// end must answer with.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    /// 407 `Proxy-Authenticate` (as trunks do) rather than 401
    /// `WWW-Authenticate`.
    pub proxy: bool,
    pub realm: String,
    pub algorithm: DigestAlgorithm,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for DigestChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestChallenge")
            .field("proxy", &self.proxy)
            .field("realm", &self.realm)
            .field("algorithm", &self.algorithm)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl DigestChallenge {
    /// A 407 MD5 challenge.
    pub fn proxy_407(realm: &str, username: &str, password: &str) -> Self {
        Self {
            proxy: true,
            realm: realm.to_owned(),
            algorithm: DigestAlgorithm::Md5,
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    /// A 401 MD5 challenge.
    pub fn www_401(realm: &str, username: &str, password: &str) -> Self {
        Self {
            proxy: false,
            ..Self::proxy_407(realm, username, password)
        }
    }

    pub fn algorithm(mut self, algorithm: DigestAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    fn validate(&self) -> Result<(), SippError> {
        check_xml_value("realm", &self.realm)?;
        check_xml_value("username", &self.username)?;
        if self.password.is_empty()
            || self
                .password
                .chars()
                .any(|c| "\"<>&".contains(c) || c.is_control())
        {
            return Err(SippError::InvalidOption(
                "password is empty or has `\"`, `<`, `>`, `&` or control characters".into(),
            ));
        }
        Ok(())
    }

    /// Verifies every credential of the matching kind received in a SIPp
    /// message log; a nonce must be one SIPp sent.
    fn check_log(&self, messages: &str) -> Vec<Result<(), DigestError>> {
        let header = if self.proxy {
            "proxy-authorization"
        } else {
            "authorization"
        };
        received_requests(messages)
            .iter()
            .filter_map(|msg| {
                let method = msg.split_whitespace().next()?;
                let value = msg.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.trim().eq_ignore_ascii_case(header).then_some(value)
                })?;
                Some(self.check_one(value, method, messages))
            })
            .collect()
    }

    fn check_one(&self, value: &str, method: &str, messages: &str) -> Result<(), DigestError> {
        digest::verify(value, method, &self.username, &self.realm, &self.password)?;
        let params = digest::parse_params(value)?;
        let nonce = params
            .iter()
            .find(|(k, _)| k == "nonce")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        if !messages.contains(&format!("nonce=\"{nonce}\"")) || nonce.is_empty() {
            return Err(DigestError::Mismatch {
                field: "nonce",
                got: nonce.to_owned(),
                expected: "one SIPp sent".into(),
            });
        }
        Ok(())
    }
}

/// The SIP requests SIPp logged as received (`-trace_msg`), in order.
fn received_requests(messages: &str) -> Vec<String> {
    messages
        .split("\n-----------------------------------------------")
        .filter_map(|block| {
            let (_, rest) = block.split_once("message received")?;
            let (_, msg) = rest.split_once('\n')?;
            let msg = msg.trim_start_matches(['\r', '\n']);
            (!msg.starts_with("SIP/2.0")).then(|| msg.to_owned())
        })
        .collect()
}

/// XML-attribute/CDATA-safe text for values put into a scenario.
fn check_xml_value(what: &str, value: &str) -> Result<(), SippError> {
    check_token(what, value, &['"', '<', '>', '&', ',', ']', '['])
        .map_err(|e| SippError::InvalidOption(format!("{e:#}")))
}

fn check_reason(reason: &str) -> Result<(), SippError> {
    if reason.is_empty()
        || reason
            .chars()
            .any(|c| c.is_control() || "<>&[]".contains(c))
    {
        return Err(SippError::InvalidOption(format!(
            "reason phrase {} is empty or has control or markup characters",
            audin_protocol::Untrusted(reason)
        )));
    }
    Ok(())
}

fn check_final_code(code: u16) -> Result<(), SippError> {
    if (300..=699).contains(&code) {
        Ok(())
    } else {
        Err(SippError::InvalidOption(format!(
            "final code {code} is not a failure response (300..=699)"
        )))
    }
}

/// A response header block for the received INVITE (our To tag added).
fn response_head(code: u16, reason: &str) -> String {
    format!(
        "SIP/2.0 {code} {reason}\n\
         [last_Via:]\n\
         [last_From:]\n\
         [last_To:];tag=[pid]SIPpTag01[call_number]\n\
         [last_Call-ID:]\n\
         [last_CSeq:]\n\
         Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n"
    )
}

/// An SDP answer for `codec` (plus telephone-event) on `port_keyword`.
fn sdp(codec: Codec, port_keyword: &str) -> String {
    let pt = codec.payload_type();
    let name = codec.encoding_name();
    format!(
        "v=0\n\
         o=- 1 1 IN IP[local_ip_type] [local_ip]\n\
         s=-\n\
         c=IN IP[media_ip_type] [media_ip]\n\
         t=0 0\n\
         m=audio {port_keyword} RTP/AVP {pt} 101\n\
         a=rtpmap:{pt} {name}/8000\n\
         a=rtpmap:101 telephone-event/8000\n\
         a=fmtp:101 0-16\n\
         a=ptime:20\n\
         a=sendrecv\n"
    )
}

fn send_with_sdp(code: u16, reason: &str, codec: Codec, port_keyword: &str) -> String {
    format!(
        "  <send><![CDATA[\n{}Content-Type: application/sdp\nContent-Length: [len]\n\n{}\n]]></send>\n",
        response_head(code, reason),
        sdp(codec, port_keyword)
    )
}

fn send_plain(code: u16, reason: &str, extra_header: &str) -> String {
    format!(
        "  <send><![CDATA[\n{}{extra_header}Content-Length: 0\n\n]]></send>\n",
        response_head(code, reason)
    )
}

/// Receives the INVITE that starts the call, with its route set; with
/// `capture`, also its From and To for a BYE of ours (SIPp 3.6.1 refuses
/// to load a scenario that sets a variable it never uses, so only then).
/// `action` is more action XML run on it (SIPp 3.6.1 only checks a digest
/// in the `<recv>` of the message: in a later `<nop>` the call stalls).
fn recv_invite(capture: bool, action: &str) -> String {
    let capture = if capture {
        "      <ereg regexp=\".*\" search_in=\"hdr\" header=\"From:\" assign_to=\"remote_from\"/>\n\
         \x20     <ereg regexp=\".*\" search_in=\"hdr\" header=\"To:\" assign_to=\"local_to\"/>\n"
    } else {
        ""
    };
    if capture.is_empty() && action.is_empty() {
        return "  <recv request=\"INVITE\" rrs=\"true\"/>\n".to_owned();
    }
    format!(
        "  <recv request=\"INVITE\" rrs=\"true\">\n    <action>\n{capture}{action}    </action>\n  </recv>\n"
    )
}

fn after_answer(after: AfterAnswer) -> String {
    match after {
        AfterAnswer::WaitForBye => "  <recv request=\"BYE\"/>\n\
  <send><![CDATA[\n\
SIP/2.0 200 OK\n\
[last_Via:]\n\
[last_From:]\n\
[last_To:]\n\
[last_Call-ID:]\n\
[last_CSeq:]\n\
Content-Length: 0\n\
\n\
]]></send>\n"
            .to_owned(),
        AfterAnswer::ByeAfter(d) => format!(
            "  <pause milliseconds=\"{}\"/>\n\
  <send><![CDATA[\n\
BYE [next_url] SIP/2.0\n\
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
From: [$local_to];tag=[pid]SIPpTag01[call_number]\n\
To: [$remote_from]\n\
Call-ID: [call_id]\n\
CSeq: 1 BYE\n\
Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n\
Max-Forwards: 70\n\
Content-Length: 0\n\
\n\
]]></send>\n\
  <recv response=\"200\"/>\n",
            d.as_millis()
        ),
    }
}

fn wrap(name: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n\
         <!DOCTYPE scenario SYSTEM \"sipp.dtd\">\n\
         <scenario name=\"{name}\">\n{body}</scenario>\n"
    )
}

impl Scenario {
    /// A scenario from XML the test wrote.
    pub fn from_xml(name: impl Into<String>, xml: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            xml: xml.into(),
            rtp_echo: false,
            digest: None,
        }
    }

    /// A scenario from what goes inside its `<scenario>` element.
    pub fn from_body(name: &str, body: &str) -> Self {
        Self::from_xml(name, wrap(name, body))
    }

    /// UAS: answers the INVITE with `code` at once (e.g. 486 Busy Here).
    pub fn uas_reject(code: u16, reason: &str) -> Result<Self, SippError> {
        check_final_code(code)?;
        check_reason(reason)?;
        let body = format!(
            "{}{}  <recv request=\"ACK\"/>\n",
            recv_invite(false, ""),
            send_plain(code, reason, "")
        );
        Ok(Self::from_xml(
            format!("uas {code}"),
            wrap(&format!("uas {code}"), &body),
        ))
    }

    /// UAS: 183 Session Progress with SDP, then plays `media` (headerless
    /// G.711 in `codec`, looped, see [`crate::audio::write_tone_g711`]) as
    /// early media for `early`, then the final `code` (486, 603, 480,
    /// 503…), and waits for the ACK.
    pub fn uas_early_media_then(
        media: &Path,
        codec: Codec,
        early: Duration,
        code: u16,
        reason: &str,
    ) -> Result<Self, SippError> {
        check_final_code(code)?;
        check_reason(reason)?;
        check_xml_value("early media file", &media.to_string_lossy())?;
        if !media.is_file() {
            return Err(SippError::InvalidOption(format!(
                "early media file {} does not exist",
                media.display()
            )));
        }
        let body = format!(
            "{}{}  <nop><action><exec rtp_stream=\"{},-1,{}\"/></action></nop>\n\
             \x20 <pause milliseconds=\"{}\"/>\n\
             \x20 <nop><action><exec rtp_stream=\"pause\"/></action></nop>\n\
             {}  <recv request=\"ACK\"/>\n",
            recv_invite(false, ""),
            send_with_sdp(183, "Session Progress", codec, "[rtpstream_audio_port]"),
            media.display(),
            codec.payload_type(),
            early.as_millis(),
            send_plain(code, reason, ""),
        );
        let name = format!("uas 183 then {code}");
        Ok(Self::from_xml(name.clone(), wrap(&name, &body)))
    }

    /// UAS: challenges the INVITE (401 or 407, see [`DigestChallenge`]),
    /// then answers the retried INVITE with 200 and SDP (no media sent) and
    /// `after`. [`SippOutcome::digest_checks`] then holds the verdict on
    /// every credential received. A 401 MD5 challenge is also checked by
    /// SIPp itself (`<verifyauth>`): a wrong digest gets 403 and fails the
    /// call (exit code 1). SIPp 3.6.1 cannot check a 407's
    /// `Proxy-Authorization`: that call is answered whatever the digest, and
    /// only the outcome's checks tell.
    pub fn uas_challenge_then_answer(
        challenge: DigestChallenge,
        codec: Codec,
        after: AfterAnswer,
    ) -> Result<Self, SippError> {
        challenge.validate()?;
        let (code, reason, header) = if challenge.proxy {
            (407, "Proxy Authentication Required", "Proxy-Authenticate")
        } else {
            (401, "Unauthorized", "WWW-Authenticate")
        };
        let challenge_header = format!(
            "{header}: Digest realm=\"{}\", nonce=\"[pid]n[call_number]x\", algorithm={}\n",
            challenge.realm,
            challenge.algorithm.token()
        );
        let in_flow = !challenge.proxy && challenge.algorithm == DigestAlgorithm::Md5;
        let (verify_action, on_bad) = if in_flow {
            (
                format!(
                    "      <verifyauth assign_to=\"auth_ok\" username=\"{}\" password=\"{}\"/>\n",
                    challenge.username, challenge.password
                ),
                // A recv that never comes fails the call (SIPp has no
                // "fail" action; `stop_call` does not count as failed).
                format!(
                    "  <nop test=\"auth_ok\" next=\"authorized\"/>\n{}  <recv request=\"ACK\"/>\n\
                     \x20 <recv request=\"AUTH-FAILED\" timeout=\"100\"/>\n\
                     \x20 <label id=\"authorized\"/>\n",
                    send_plain(403, "Forbidden", "")
                ),
            )
        } else {
            (String::new(), String::new())
        };
        let body = format!(
            "  <recv request=\"INVITE\"/>\n{}  <recv request=\"ACK\"/>\n{}{on_bad}{}  <recv request=\"ACK\"/>\n{}",
            send_plain(code, reason, &challenge_header),
            recv_invite(matches!(after, AfterAnswer::ByeAfter(_)), &verify_action),
            send_with_sdp(200, "OK", codec, "[media_port]"),
            after_answer(after),
        );
        let name = format!("uas {code} then 200");
        Ok(Self {
            digest: Some(challenge),
            ..Self::from_xml(name.clone(), wrap(&name, &body))
        })
    }

    /// UAS: answers 200 with SDP on the media port and echoes every RTP
    /// packet back to its sender (SIPp `-rtp_echo`), then `after`.
    pub fn uas_answer_echo(codec: Codec, after: AfterAnswer) -> Self {
        let body = format!(
            "{}{}  <recv request=\"ACK\"/>\n{}",
            recv_invite(matches!(after, AfterAnswer::ByeAfter(_)), ""),
            send_with_sdp(200, "OK", codec, "[media_port]"),
            after_answer(after),
        );
        Self {
            rtp_echo: true,
            ..Self::from_xml("uas echo", wrap("uas echo", &body))
        }
    }
}

/// Which scenario SIPp runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SippScenario {
    /// One embedded in SIPp (`-sn uac`, `-sn uas`, `-sn uac_pcap`…).
    Builtin(String),
    Custom(Scenario),
}

/// How to run SIPp.
#[derive(Debug, Clone)]
pub struct SippOptions {
    pub scenario: SippScenario,
    /// Where a UAC sends its calls; `None` for a UAS.
    pub remote: Option<SocketAddr>,
    /// The Request-URI user part of a UAC's calls (`-s`).
    pub service: Option<String>,
    /// Calls to process before exiting (`-m`).
    pub calls: u32,
    /// SIPp's global timeout (`-timeout`, reaching it is an error); the
    /// process is killed [`KILL_GRACE`] later.
    pub timeout: Duration,
    /// Force `-rtp_echo` (custom scenarios; the builders set it themselves).
    pub rtp_echo: bool,
    /// UAC digest credentials (`-au`, `-ap`).
    pub credentials: Option<Credentials>,
    pub extra_args: Vec<String>,
}

impl SippOptions {
    /// A UAS running `scenario`, one call, 20 s bound.
    pub fn uas(scenario: Scenario) -> Self {
        Self {
            scenario: SippScenario::Custom(scenario),
            remote: None,
            service: None,
            calls: 1,
            timeout: Duration::from_secs(20),
            rtp_echo: false,
            credentials: None,
            extra_args: Vec::new(),
        }
    }

    /// A UAC running an embedded scenario (e.g. `"uac"`) against `remote`.
    pub fn uac_builtin(name: &str, remote: SocketAddr) -> Self {
        Self {
            scenario: SippScenario::Builtin(name.to_owned()),
            remote: Some(remote),
            ..Self::uas(Scenario::from_xml("", ""))
        }
    }

    /// A UAC running `scenario` against `remote`.
    pub fn uac(scenario: Scenario, remote: SocketAddr) -> Self {
        Self {
            remote: Some(remote),
            ..Self::uas(scenario)
        }
    }

    pub fn service(mut self, user: impl Into<String>) -> Self {
        self.service = Some(user.into());
        self
    }

    pub fn calls(mut self, calls: u32) -> Self {
        self.calls = calls;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    fn validate(&self) -> Result<(), SippError> {
        let invalid = |e: anyhow::Error| SippError::InvalidOption(format!("{e:#}"));
        match &self.scenario {
            SippScenario::Builtin(name) => {
                check_token("builtin scenario", name, &[]).map_err(invalid)?
            }
            SippScenario::Custom(s) if s.xml.trim().is_empty() => {
                return Err(SippError::InvalidOption("the scenario XML is empty".into()));
            }
            SippScenario::Custom(_) => {}
        }
        if let Some(s) = &self.service {
            check_token("service", s, &[]).map_err(invalid)?;
        }
        if self.calls == 0 {
            return Err(SippError::InvalidOption("calls is 0".into()));
        }
        if self.timeout < Duration::from_secs(1) {
            return Err(SippError::InvalidOption(format!(
                "timeout {:?} is under SIPp's 1 s resolution",
                self.timeout
            )));
        }
        Ok(())
    }
}

/// How a SIPp run ended.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    /// SIPp's exit code; `None` when it had to be killed.
    pub exit_code: Option<i32>,
    /// It outlived its `-timeout` by [`KILL_GRACE`] and was killed.
    pub killed: bool,
    pub successful_calls: Option<u64>,
    pub failed_calls: Option<u64>,
    /// Its final screen (stdout and stderr).
    pub screen: String,
    /// `-trace_err`: unexpected messages.
    pub errors: String,
    /// `-trace_msg`: every SIP message sent and received.
    pub messages: String,
    /// For a challenging scenario: the verdict on each credential received
    /// (empty when the far end answered no challenge).
    pub digest_checks: Vec<Result<(), DigestError>>,
}

impl SippOutcome {
    /// Exit code 0: every call followed the scenario.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// At least one credential was received and all were right.
    pub fn digest_verified(&self) -> bool {
        !self.digest_checks.is_empty() && self.digest_checks.iter().all(Result::is_ok)
    }
}

impl fmt::Display for SippOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = |s: &str, n: usize| {
            let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        write!(
            f,
            "sipp exit code {:?}{}, {} successful / {} failed calls\n--- errors ---\n{}\n--- screen ---\n{}",
            self.exit_code,
            if self.killed {
                " (killed after its timeout)"
            } else {
                ""
            },
            self.successful_calls.map_or("?".into(), |n| n.to_string()),
            self.failed_calls.map_or("?".into(), |n| n.to_string()),
            tail(&self.errors, 30),
            tail(&self.screen, 40),
        )
    }
}

/// A running SIPp. Killed when dropped; its directory is removed then
/// unless the test is panicking.
#[derive(Debug)]
pub struct Sipp {
    dir: PathBuf,
    sip_addr: SocketAddr,
    media_port: u16,
    timeout: Duration,
    digest: Option<DigestChallenge>,
    child: Child,
}

impl Sipp {
    /// Starts SIPp; for a UAS, returns once it listens.
    pub async fn start(opts: SippOptions) -> Result<Self, SippError> {
        opts.validate()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&opts).await {
                // -2: fatal error binding a socket (a port was taken).
                Err(SippError::ExitedAtStart {
                    code: Some(254),
                    log,
                }) => {
                    last = Some(SippError::ExitedAtStart {
                        code: Some(254),
                        log,
                    })
                }
                other => return other,
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn try_start(opts: &SippOptions) -> Result<Self, SippError> {
        let dir = instance_dir("sipp").map_err(|e| SippError::Setup {
            dir: std::env::temp_dir(),
            message: format!("{e:#}"),
        })?;
        let setup_err = |message: String| SippError::Setup {
            dir: dir.clone(),
            message,
        };
        let sip_port = reserve_ports(PortNeeds {
            count: 1,
            tcp: true,
            udp: true,
        })
        .map_err(|e| setup_err(format!("{e:#}")))?;
        // RTP and RTCP for the stream and for the echo (media port + 2).
        let media_port = reserve_ports(PortNeeds {
            count: 4,
            tcp: false,
            udp: true,
        })
        .map_err(|e| setup_err(format!("{e:#}")))?;
        let sip_addr = SocketAddr::from((LOOPBACK, sip_port));

        let mut cmd = Command::new("sipp");
        if let Some(remote) = opts.remote {
            cmd.arg(remote.to_string());
        }
        let mut rtp_echo = opts.rtp_echo;
        match &opts.scenario {
            SippScenario::Builtin(name) => {
                cmd.args(["-sn", name]);
            }
            SippScenario::Custom(s) => {
                let path = dir.join("scenario.xml");
                std::fs::write(&path, &s.xml)
                    .map_err(|e| setup_err(format!("writing scenario.xml: {e}")))?;
                cmd.arg("-sf").arg(&path);
                rtp_echo |= s.rtp_echo;
            }
        }
        let secs = opts.timeout.as_secs().max(1);
        cmd.args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &sip_port.to_string(), "-mp", &media_port.to_string()])
            .args(["-m", &opts.calls.to_string()])
            .args(["-timeout", &format!("{secs}s"), "-timeout_error"])
            .arg("-nostdin")
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.join("errors.log"))
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(dir.join("messages.log"))
            .arg("-trace_screen")
            .arg("-screen_file")
            .arg(dir.join("screen.log"));
        if rtp_echo {
            cmd.arg("-rtp_echo");
        }
        if let Some(s) = &opts.service {
            cmd.args(["-s", s]);
        }
        if let Some(c) = &opts.credentials {
            cmd.args(["-au", &c.username, "-ap", &c.password]);
        }
        cmd.args(&opts.extra_args);
        let out_path = dir.join("sipp.out");
        let out = std::fs::File::create(&out_path)
            .map_err(|e| setup_err(format!("creating sipp.out: {e}")))?;
        let err = out
            .try_clone()
            .map_err(|e| setup_err(format!("cloning the output handle: {e}")))?;
        let mut child = cmd
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(SippError::Spawn)?;

        // A UAS must be listening before the test makes the far end call it.
        let ready_timeout = Duration::from_secs(5);
        let deadline = Instant::now() + ready_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // SIPp exits with -1/-2: 255/254 as seen by the parent.
                let err = SippError::ExitedAtStart {
                    code: status.code(),
                    log: log_tail(&out_path, 30),
                };
                cleanup_dir(&dir);
                return Err(err);
            }
            if opts.remote.is_some() || udp_port_in_use(sip_port) {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(SippError::NotReady {
                    addr: sip_addr,
                    timeout: ready_timeout,
                    log: log_tail(&out_path, 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            dir,
            sip_addr,
            media_port,
            timeout: opts.timeout,
            digest: match &opts.scenario {
                SippScenario::Custom(s) => s.digest.clone(),
                SippScenario::Builtin(_) => None,
            },
            child,
        })
    }

    /// Its SIP address (UDP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// `sip:USER@127.0.0.1:PORT`.
    pub fn uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.sip_addr)
    }

    /// Its media (RTP echo / stream) base port.
    pub fn media_port(&self) -> u16 {
        self.media_port
    }

    /// Its directory: `scenario.xml`, `sipp.out`, `errors.log`,
    /// `messages.log`, `screen.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for SIPp to finish (killing it [`KILL_GRACE`] after its own
    /// timeout) and collects the outcome.
    pub async fn wait(&mut self) -> Result<SippOutcome, SippError> {
        let io_err = |source| SippError::Io {
            context: "waiting for sipp".into(),
            source,
        };
        let (exit_code, killed) =
            match tokio::time::timeout(self.timeout + KILL_GRACE, self.child.wait()).await {
                Ok(status) => (status.map_err(io_err)?.code(), false),
                Err(_) => {
                    let _ = self.child.start_kill();
                    self.child.wait().await.map_err(io_err)?;
                    (None, true)
                }
            };
        let read = |name: &str| {
            std::fs::read(self.dir.join(name))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let screen = read("sipp.out");
        let screens = read("screen.log");
        let counts_from = if screens.is_empty() {
            &screen
        } else {
            &screens
        };
        let messages = read("messages.log");
        let digest_checks = self
            .digest
            .as_ref()
            .map(|d| d.check_log(&messages))
            .unwrap_or_default();
        Ok(SippOutcome {
            exit_code,
            killed,
            successful_calls: cumulative_count(counts_from, "Successful call"),
            failed_calls: cumulative_count(counts_from, "Failed call"),
            screen,
            errors: read("errors.log"),
            messages,
            digest_checks,
        })
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        cleanup_dir(&self.dir);
    }
}

/// The cumulative column of the last `label` line of SIPp's statistics
/// screen: `  Successful call        |        0                  |        1`.
fn cumulative_count(screen: &str, label: &str) -> Option<u64> {
    screen
        .lines()
        .filter(|l| l.trim_start().starts_with(label))
        .filter_map(|l| l.split('|').nth(2)?.trim().parse().ok())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_reject_values_that_would_break_the_xml() {
        assert!(Scenario::uas_reject(200, "OK").is_err());
        assert!(Scenario::uas_reject(486, "Busy]]><x>").is_err());
        assert!(Scenario::uas_reject(486, "Busy Here").is_ok());
        let bad_realm = Scenario::uas_challenge_then_answer(
            DigestChallenge::proxy_407("a\"b", "u", "p"),
            Codec::Pcmu,
            AfterAnswer::WaitForBye,
        );
        assert!(matches!(bad_realm, Err(SippError::InvalidOption(_))));
        let missing = Scenario::uas_early_media_then(
            Path::new("/nonexistent/x.ulaw"),
            Codec::Pcmu,
            Duration::from_secs(1),
            486,
            "Busy Here",
        );
        assert!(
            matches!(missing, Err(SippError::InvalidOption(m)) if m.contains("does not exist"))
        );
        let opts = SippOptions::uas(Scenario::uas_answer_echo(
            Codec::Pcmu,
            AfterAnswer::WaitForBye,
        ))
        .calls(0);
        assert!(opts.validate().is_err());
    }

    #[test]
    fn counts_come_from_the_cumulative_column() {
        let screen = "  Successful call        |        0                  |        3\n\
                      \x20 Failed call            |        1                  |        2\n";
        assert_eq!(cumulative_count(screen, "Successful call"), Some(3));
        assert_eq!(cumulative_count(screen, "Failed call"), Some(2));
        assert_eq!(cumulative_count("", "Failed call"), None);
    }
}

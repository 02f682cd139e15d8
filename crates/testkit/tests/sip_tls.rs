//! SIP over TLS (RFC 3261 §26.2, `transport=tls` on `sip:` URIs) between
//! the SIP trunk carrier and baresip, with certificates made for each run
//! by the `openssl` CLI (a test CA, and a certificate for 127.0.0.1 it
//! signs):
//!
//! - baresip calls our number on our TLS listener: the call is delivered,
//!   answered, audio flows both ways, our answer's Contact names the TLS
//!   port with `transport=tls`, and baresip's BYE (over TLS) ends it;
//! - a TLS INVITE from an address no trunk lists gets 403, as over UDP;
//! - we call out through a `transport=tls` trunk to a baresip presenting a
//!   certificate of the test CA (trusted with `--sip-tls-ca`) and hear our
//!   tone echoed;
//! - without `--sip-tls-ca` that certificate does not verify: the call
//!   fails at once with the reason, and baresip receives no INVITE at all;
//! - bad `--sip-tls-cert` / `--sip-tls-key` files stop the server's start
//!   with the flag and file named and no key material shown.
//!
//! Media stays plain RTP (no SRTP). Everything runs on loopback; each test
//! is bounded by [`TEST_BOUND`]. Tests skip when baresip or openssl are
//! absent, unless `AUDIN_REQUIRE_SIP_TOOLS` is set (as `cargo xtask test`
//! does).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use audin_protocol::EndReason;
use audin_server::carrier::{
    BoxFuture, CallMedia, Carrier, CarrierEvent, CarrierLeg, EndCause, EventReceiver, InboundCall,
    InboundRefusal, InboundSink, OutboundRequest,
};
use audin_server::sip::tls::{SipTlsConfig, TlsConfigError};
use audin_server::sip::trunk::{
    SipEndpoint, SipEndpointConfig, SipError, SipTransport, SipTrunkConfig,
};
use audin_server::{Server, ServerConfig};
use audin_testkit::sip::harness::{
    A440, EVENT, OUR_E164, Operator, bounded, closed_reason, ended, log_capture, loopback_trunk,
    next_event, play_tone,
};
use audin_testkit::sip::{
    AudioSource, Baresip, BaresipOptions, BaresipTls, EventKind, REQUIRE_ENV, Tool, find_on_path,
    tools_or_skip,
};
use tokio::sync::mpsc;

/// Every test finishes well inside this, or fails.
const TEST_BOUND: Duration = Duration::from_secs(30);

/// Our number, as baresip dials it (without `+`: normalised by us).
const OUR_NUMBER: &str = "390299999999";

// ---------------------------------------------------------------------------
// Certificates

/// A test CA and what it signed, in a fresh directory.
struct TestPki {
    dir: PathBuf,
    /// The CA's certificate (what `--sip-tls-ca` and baresip trust).
    ca: PathBuf,
    /// A certificate for IP 127.0.0.1 signed by the CA, and its key
    /// (PKCS#8).
    cert: PathBuf,
    key: PathBuf,
    /// `cert` and `key` in one file, as baresip's `sip_certificate` wants.
    bundle: PathBuf,
}

const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

impl TestPki {
    fn new(tag: &str) -> Result<Self> {
        let dir = audin_testkit::temp_dir(tag)?;
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CONFIG)?;
        let pki = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            bundle: dir.join("server-bundle.pem"),
            dir,
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        pki.openssl(&[
            &[
                "req",
                "-x509",
                "-config",
                "openssl.cnf",
                "-extensions",
                "ca_ext",
            ][..],
            &ec,
            &[
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Audin Test CA",
            ],
        ])?;
        pki.openssl(&[
            &["req", "-new", "-config", "openssl.cnf"][..],
            &ec,
            &[
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ])?;
        pki.openssl(&[&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "leaf_ext",
            "-out",
            "server.pem",
        ][..]])?;
        let mut bundle = std::fs::read(&pki.cert)?;
        bundle.extend(std::fs::read(&pki.key)?);
        std::fs::write(&pki.bundle, bundle)?;
        Ok(pki)
    }

    /// Runs `openssl` in the directory.
    fn openssl(&self, args: &[&[&str]]) -> Result<()> {
        let args: Vec<&str> = args.iter().flat_map(|a| a.iter().copied()).collect();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(&self.dir)
            .output()
            .context("running openssl")?;
        ensure!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Our TLS listener on a free loopback port with the CA's certificate,
    /// trusting the CA for outbound calls when `trust_ca`.
    fn endpoint_tls(&self, trust_ca: bool) -> SipTlsConfig {
        SipTlsConfig {
            listen: Some("127.0.0.1:0".parse().expect("address")),
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
            ca: trust_ca.then(|| self.ca.clone()),
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether the `openssl` CLI is there to make certificates (skips like
/// [`tools_or_skip`]).
fn openssl_or_skip(test: &str) -> bool {
    find_on_path("openssl").is_some()
        || audin_testkit::skip::missing(
            test,
            "`openssl` on PATH",
            REQUIRE_ENV,
            "Debian package openssl",
        )
}

// ---------------------------------------------------------------------------
// The engine's side, played by the test

/// Records deliveries (the engine's inbound side).
#[derive(Default)]
struct TestSink {
    delivered: Mutex<Option<mpsc::UnboundedSender<InboundCall>>>,
}

impl InboundSink for TestSink {
    fn deliver(&self, call: InboundCall) -> BoxFuture<'_, Result<(), InboundRefusal>> {
        Box::pin(async move {
            if let Some(tx) = self.delivered.lock().unwrap().as_ref() {
                let _ = tx.send(call);
            }
            Ok(())
        })
    }
}

struct Harness {
    endpoint: SipEndpoint,
    calls: mpsc::UnboundedReceiver<InboundCall>,
}

impl Harness {
    async fn start(trunks: Vec<SipTrunkConfig>, tls: SipTlsConfig) -> Result<Self> {
        let (tx, calls) = mpsc::unbounded_channel();
        let sink = Arc::new(TestSink::default());
        *sink.delivered.lock().unwrap() = Some(tx);
        let mut config = SipEndpointConfig::new("127.0.0.1:0".parse()?);
        config.tls = tls;
        // UDP takes a free port, TCP then the same number, which another
        // socket on this busy box may hold: then start again.
        let mut tries = 0;
        let endpoint = loop {
            match SipEndpoint::start(config.clone(), trunks.clone(), sink.clone()).await {
                Err(e) if tries < 5 && e.to_string().contains("Address already in use") => {
                    tries += 1;
                }
                other => break other?,
            }
        };
        Ok(Self { endpoint, calls })
    }

    fn tls_addr(&self) -> Result<SocketAddr> {
        self.endpoint.tls_addr().context("no TLS listener")
    }

    async fn next_call(&mut self) -> Result<InboundCall> {
        tokio::time::timeout(EVENT, self.calls.recv())
            .await
            .context("no inbound call delivered")?
            .context("delivery channel closed")
    }

    /// Places a call through `trunk`; returns the leg, its events and the
    /// operator listening to it.
    async fn place(
        &self,
        trunk: &str,
        to: &str,
    ) -> Result<(Arc<dyn CarrierLeg>, EventReceiver, Operator), EndCause> {
        let (tx, rx) = mpsc::channel(audin_server::carrier::EVENT_QUEUE);
        let media = CallMedia::new();
        let operator = Operator::attach(&media);
        let request = OutboundRequest {
            call_sid: audin_server::util::new_call_sid(),
            from: "+390211111111".into(),
            to: to.into(),
        };
        let trunk = self.endpoint.trunk(trunk).expect("configured trunk");
        let leg = trunk.place_call(request, tx, media).await?;
        Ok((leg, rx, operator))
    }
}

/// The SIP messages in a baresip trace (`baresip -s`) that went from
/// `from` (an address, or `None` for any) to `to` over TLS, whose first
/// line starts with `start`.
fn traced(log: &str, from: Option<SocketAddr>, to: SocketAddr, start: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(route) = line.strip_prefix("TLS ") else {
            continue;
        };
        let Some((src, dst)) = route.split_once(" -> ") else {
            continue;
        };
        let first = lines.peek().copied().unwrap_or_default();
        if dst.trim() == to.to_string()
            && from.is_none_or(|f| src.trim() == f.to_string())
            && first.starts_with(start)
        {
            // The message: its lines up to the blank one before the body.
            let message: Vec<&str> = lines.clone().take_while(|l| !l.trim().is_empty()).collect();
            found.push(message.join("\n"));
        }
    }
    found
}

/// The value of `header` in a traced message.
fn header<'a>(message: &'a str, header: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(header)
            .then_some(value.trim())
    })
}

// ---------------------------------------------------------------------------
// Inbound

#[tokio::test]
async fn baresip_calls_our_number_over_tls_audio_flows_and_its_bye_ends_the_call() -> Result<()> {
    let test = "tls_inbound_audio_bye";
    if !tools_or_skip(test, &[Tool::Baresip]) || !openssl_or_skip(test) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let pki = TestPki::new("tls-inbound")?;
        let ours = log_capture();
        let mut h = Harness::start(vec![loopback_trunk()], pki.endpoint_tls(false)).await?;
        let tls = h.tls_addr()?;
        let mut caller = Baresip::start(
            BaresipOptions::new("390211111111")
                .source(A440)
                .record()
                .sip_trace()
                .tls(BaresipTls {
                    certificate: None,
                    cafile: Some(pki.ca.clone()),
                }),
        )
        .await?;
        caller
            .dial(&format!("sip:{OUR_NUMBER}@{tls};transport=tls"))
            .await?;
        let mut call = h.next_call().await?;
        assert_eq!(call.to, OUR_E164, "Request-URI user normalised to E.164");
        assert_eq!(call.from, "+390211111111");
        caller.wait_event(EventKind::CallRinging, EVENT).await?;
        let mut operator = Operator::attach(&call.media);

        call.leg.answer();
        caller.wait_event(EventKind::CallEstablished, EVENT).await?;
        let tone = play_tone(call.leg.clone());
        operator.listen(Duration::from_millis(2500)).await;

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
        assert!((rec.rms_dbfs + 20.0).abs() <= 3.0, "baresip heard {rec}");

        // The signalling was TLS both ways: the INVITE and the BYE went to
        // our TLS port, and our 200 told baresip to come back over TLS on
        // it (a Contact with the UDP port would have sent the BYE in clear).
        let log = caller.log();
        ensure!(
            traced(&log, None, tls, "INVITE sip:").len() == 1,
            "no INVITE to our TLS port {tls} in baresip's trace:\n{}",
            caller.log_tail(60)
        );
        let byes = traced(&log, None, tls, "BYE sip:");
        ensure!(
            byes.len() == 1,
            "baresip's BYE did not come over TLS to {tls}:\n{}",
            caller.log_tail(60)
        );
        let ok = log
            .split("SIP/2.0 200 ")
            .nth(1)
            .context("no 200 in baresip's trace")?;
        let contact = header(ok, "Contact").context("our 200 has no Contact")?;
        ensure!(
            contact
                .to_ascii_lowercase()
                .contains(&format!("@{tls};transport=tls")),
            "our 200's Contact does not name the TLS port {tls}: {contact}"
        );
        // Our log (trace level) never shows the listener's key.
        for line in pem_body_lines(&pki.key) {
            ensure!(!ours.text().contains(&line), "the TLS key is in the log");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_tls_invite_from_an_address_no_trunk_lists_gets_403_and_rings_nobody() -> Result<()> {
    let test = "tls_inbound_unlisted_source";
    if !tools_or_skip(test, &[Tool::Baresip]) || !openssl_or_skip(test) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let pki = TestPki::new("tls-unlisted")?;
        // A trunk somewhere else: loopback is nobody's.
        let elsewhere = SipTrunkConfig::new("elsewhere", "sip:192.0.2.10:5060")?;
        let mut h = Harness::start(vec![elsewhere], pki.endpoint_tls(false)).await?;
        let tls = h.tls_addr()?;
        let log = log_capture();
        let caller = Baresip::start(BaresipOptions::new("390211111113").sip_trace().tls(
            BaresipTls {
                certificate: None,
                cafile: Some(pki.ca.clone()),
            },
        ))
        .await?;
        caller
            .dial(&format!("sip:{OUR_NUMBER}@{tls};transport=tls"))
            .await?;
        let reason = closed_reason(&caller).await?;
        assert!(
            reason.starts_with("403"),
            "baresip was told {reason}; its trace:\n{}",
            caller.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(h.calls.try_recv().is_err(), "a call was delivered");
        ensure!(
            !caller
                .events()
                .iter()
                .any(|e| matches!(e.kind, EventKind::CallRinging | EventKind::CallEstablished)),
            "baresip's call rang: {:?}",
            caller.events()
        );
        ensure!(
            log.text()
                .lines()
                .any(|l| l.contains("no trunk lists: 403") && l.contains("source=127.0.0.1")),
            "the refusal was not logged"
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------
// Outbound

/// A baresip that answers at once and echoes, presenting the test CA's
/// certificate for 127.0.0.1 on its TLS port, with a SIP trace.
async fn tls_echo(pki: &TestPki, user: &str) -> Result<Baresip> {
    Ok(Baresip::start(
        BaresipOptions::new(user)
            .auto_answer()
            .source(AudioSource::Echo)
            .sip_trace()
            .tls(BaresipTls {
                certificate: Some(pki.bundle.clone()),
                cafile: None,
            }),
    )
    .await?)
}

#[tokio::test]
async fn we_call_out_through_a_tls_trunk_and_hear_our_tone_echoed() -> Result<()> {
    let test = "tls_outbound_echo";
    if !tools_or_skip(test, &[Tool::Baresip]) || !openssl_or_skip(test) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        const CALLEE: &str = "+390233333333";
        let pki = TestPki::new("tls-outbound")?;
        let mut far = tls_echo(&pki, CALLEE).await?;
        let trunk = SipTrunkConfig::new("tls-echo", &format!("sip:{}", far.tls_addr()))?
            .transport(SipTransport::Tls);
        let h = Harness::start(vec![trunk], pki.endpoint_tls(true)).await?;
        let ours = h.tls_addr()?;
        let (leg, mut events, mut operator) = h
            .place("tls-echo", CALLEE)
            .await
            .map_err(|e| anyhow::anyhow!("place_call: {e:?}"))?;
        loop {
            match next_event(&mut events).await? {
                CarrierEvent::Answered => break,
                CarrierEvent::Ringing | CarrierEvent::EarlyMedia => {}
                other => bail!("expected Answered, got {other:?}"),
            }
        }
        far.wait_event(EventKind::CallEstablished, EVENT).await?;
        let tone = play_tone(leg.clone());
        // Past the first echoes, then judge.
        tokio::time::sleep(Duration::from_millis(500)).await;
        operator.listen(Duration::from_millis(2000)).await;
        tone.abort();
        let heard = operator.analysis();
        assert!(heard.is_tone(1000.0, 5.0), "operator heard {heard}");
        assert!(heard.active_seconds > 1.5, "operator heard {heard}");

        leg.hang_up(EndReason::Hangup);
        closed_reason(&far).await?;
        far.stop().await?;

        // The INVITE reached baresip's TLS port, and says so: Via over TLS
        // from our TLS port, Contact on it with transport=tls.
        let log = far.log();
        let invites = traced(&log, None, far.tls_addr(), "INVITE sip:");
        let invite = invites.first().with_context(|| {
            format!(
                "no INVITE to baresip's TLS port in its trace:\n{}",
                far.log_tail(60)
            )
        })?;
        // URI parameters are case-insensitive: rsipstack writes `TLS`.
        ensure!(
            invite.to_ascii_lowercase().starts_with(&format!(
                "invite sip:{CALLEE}@{};transport=tls sip/2.0",
                far.tls_addr()
            )),
            "{invite}"
        );
        let via = header(invite, "Via").context("no Via")?;
        ensure!(
            via.starts_with(&format!("SIP/2.0/TLS {ours}")),
            "Via: {via}"
        );
        let contact = header(invite, "Contact").context("no Contact")?;
        ensure!(
            contact
                .to_ascii_lowercase()
                .contains(&format!("@{ours};transport=tls")),
            "Contact: {contact}"
        );
        ensure!(
            traced(&log, None, far.tls_addr(), "BYE sip:").len() == 1,
            "our BYE did not come over TLS:\n{}",
            far.log_tail(60)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_tls_trunk_whose_certificate_does_not_verify_fails_the_call_and_sends_nothing()
-> Result<()> {
    let test = "tls_outbound_unverified";
    if !tools_or_skip(test, &[Tool::Baresip]) || !openssl_or_skip(test) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let pki = TestPki::new("tls-unverified")?;
        let far = tls_echo(&pki, "+390233333334").await?;
        let trunk = SipTrunkConfig::new("tls-untrusted", &format!("sip:{}", far.tls_addr()))?
            .transport(SipTransport::Tls);
        // The test CA is not among the system's roots, and not added.
        let h = Harness::start(vec![trunk], pki.endpoint_tls(false)).await?;
        let started = tokio::time::Instant::now();
        let cause = match h.place("tls-untrusted", "+390233333334").await {
            Ok(_) => bail!("the call was placed over an unverified TLS connection"),
            Err(cause) => cause,
        };
        let EndCause::Failed { why, .. } = &cause else {
            bail!("expected Failed, got {cause:?}");
        };
        assert!(
            why.contains("TLS") && why.contains("certificate"),
            "the cause does not say the certificate did not verify: {why}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "failing took {:?}",
            started.elapsed()
        );
        // Nothing reached baresip, over TLS or in clear (its trace logs
        // every SIP message on any transport), even a while later.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let log = far.log();
        ensure!(
            !log.contains("INVITE sip:"),
            "baresip received an INVITE:\n{}",
            far.log_tail(60)
        );
        ensure!(
            far.events().iter().all(|e| !matches!(
                e.kind,
                EventKind::CallIncoming | EventKind::CallEstablished | EventKind::CallClosed
            )),
            "baresip saw a call: {:?}",
            far.events()
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------
// Start-up checks

/// The base64 lines of a PEM file (what must never be shown).
fn pem_body_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn bad_tls_certificates_and_keys_stop_the_start_naming_the_flag() -> Result<()> {
    let test = "tls_bad_files_refused";
    if !openssl_or_skip(test) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        let pki = TestPki::new("tls-bad-files")?;
        // Another key (PKCS#8), the same as SEC1, and encrypted.
        pki.openssl(&[&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.key",
        ][..]])?;
        pki.openssl(&[&["ec", "-in", "other.key", "-out", "sec1.key"][..]])?;
        pki.openssl(&[&[
            "pkcs8",
            "-topk8",
            "-in",
            "other.key",
            "-out",
            "encrypted.key",
            "-passout",
            "pass:secret",
            "-v2",
            "aes-256-cbc",
        ][..]])?;
        let missing = pki.path("missing.pem");
        let tls = |cert: &Path, key: &Path| SipTlsConfig {
            listen: Some("127.0.0.1:0".parse().expect("address")),
            cert: Some(cert.to_path_buf()),
            key: Some(key.to_path_buf()),
            ca: None,
        };
        let cases: Vec<(&str, SipTlsConfig, Vec<String>)> = vec![
            (
                "missing certificate",
                tls(&missing, &pki.key),
                vec!["--sip-tls-cert".into(), missing.display().to_string()],
            ),
            (
                "a key given as the certificate",
                tls(&pki.key, &pki.key),
                vec!["--sip-tls-cert".into(), "no PEM certificate".into()],
            ),
            (
                "missing key",
                tls(&pki.cert, &missing),
                vec!["--sip-tls-key".into(), missing.display().to_string()],
            ),
            (
                "a certificate given as the key",
                tls(&pki.cert, &pki.cert),
                vec!["--sip-tls-key".into(), "no PEM private key".into()],
            ),
            (
                "another certificate's key",
                tls(&pki.cert, &pki.path("other.key")),
                vec!["--sip-tls-key".into(), "is not the private key".into()],
            ),
            (
                "a SEC1 key",
                tls(&pki.cert, &pki.path("sec1.key")),
                vec!["--sip-tls-key".into(), "openssl pkcs8 -topk8".into()],
            ),
            (
                "an encrypted key",
                tls(&pki.cert, &pki.path("encrypted.key")),
                vec!["--sip-tls-key".into(), "encrypted".into()],
            ),
            (
                "a CA file with no certificate",
                SipTlsConfig {
                    ca: Some(pki.key.clone()),
                    ..pki.endpoint_tls(false)
                },
                vec!["--sip-tls-ca".into()],
            ),
            (
                "a listener without its certificate",
                SipTlsConfig {
                    cert: None,
                    key: None,
                    ..pki.endpoint_tls(false)
                },
                vec!["--sip-tls-cert".into(), "--sip-tls-key".into()],
            ),
        ];
        let secrets: Vec<String> = ["server.key", "other.key", "sec1.key", "encrypted.key"]
            .iter()
            .flat_map(|k| pem_body_lines(&pki.path(k)))
            .collect();
        ensure!(secrets.len() >= 8, "no key lines to look for");
        for (what, tls, expected) in cases {
            let mut config = ServerConfig::for_tests();
            let mut sip = SipEndpointConfig::new("127.0.0.1:0".parse()?);
            sip.tls = tls;
            config.sip = Some(sip);
            let e = match Server::start(config).await {
                Ok(s) => {
                    s.shutdown().await;
                    bail!("{what}: the server started");
                }
                Err(e) => format!("{e:#}"),
            };
            for text in &expected {
                assert!(e.contains(text.as_str()), "{what}: {text:?} not in: {e}");
            }
            for line in &secrets {
                assert!(
                    !e.contains(line.as_str()),
                    "{what}: key material shown: {e}"
                );
            }
        }

        // The good pair starts, with the TLS listener.
        let mut config = ServerConfig::for_tests();
        let mut sip = SipEndpointConfig::new("127.0.0.1:0".parse()?);
        sip.tls = pki.endpoint_tls(true);
        config.sip = Some(sip);
        let s = Server::start(config).await.context("the good pair")?;
        s.shutdown().await;

        // A TLS trunk needs the listener: our Contact must name a TLS port.
        let trunk = SipTrunkConfig::new("tls-pbx", "sip:192.0.2.10")?.transport(SipTransport::Tls);
        assert_eq!(trunk.uri.port, 5061, "TLS's default port");
        let e = match SipEndpoint::start(
            SipEndpointConfig::new("127.0.0.1:0".parse()?),
            vec![trunk],
            Arc::new(TestSink::default()),
        )
        .await
        {
            Ok(_) => bail!("a TLS trunk without a TLS listener started"),
            Err(e) => e,
        };
        let SipError::Tls(TlsConfigError::TlsTrunkWithoutListener { trunk }) = &e else {
            bail!("unexpected error: {e}");
        };
        assert_eq!(trunk, "tls-pbx");
        assert!(e.to_string().contains("--sip-tls-listen"), "{e}");
        Ok(())
    })
    .await
}

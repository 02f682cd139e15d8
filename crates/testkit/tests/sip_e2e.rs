//! The SIP trunk wired into the real service, end to end: a real
//! `audin-server` (in process, `Server::start`, SIP endpoint on loopback),
//! operators on the native SDK (`audin-operator`), and baresip as the phone
//! on the other side. Trunks come from where a deployer puts them: the
//! database (written by the real `admin` CLI) or `--dev-trunk`.
//!
//! - a softphone calls a dev number: the operator rings, accepts, hears the
//!   caller's 440 Hz and is heard (1 kHz, level kept), sends DTMF, and
//!   either side's hang-up ends the call with the right reason everywhere;
//! - the operator dials out through the dev trunk to an echoing softphone
//!   and hears its own tone back, while the sim's numbers stay on the sim;
//! - a trunk made with `admin add-trunk` carries its number's calls both
//!   ways (even to a number the sim would answer), and `admin list` never
//!   shows its password;
//! - an INVITE from an address the trunk does not list gets 403 and rings
//!   nobody;
//! - a trunk rings only its own numbers: through it another account's
//!   numbers (on its trunk or on the sim) are unknown (404).
//!
//! Each test is bounded by [`TEST_BOUND`] and skips when baresip is absent,
//! unless `AUDIN_REQUIRE_SIP_TOOLS` is set (as `cargo xtask test` does).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use audin_operator::core::{CallState, EndReason, Event};
use audin_operator::{AudinOperator, Call};
use audin_server::sip::trunk::SipEndpointConfig;
use audin_server::{Server, ServerConfig, ServerHandle};
use audin_testkit::audio::{Analysis, TELEPHONY_RATE, analyze, from_mulaw, to_f32};
use audin_testkit::sip::harness::{A440, EVENT, bounded, closed_reason};
use audin_testkit::sip::{AudioSource, Baresip, BaresipOptions, EventKind, Tool, tools_or_skip};
use audin_testkit::support::{
    EventLog, MILANO, MILANO_E164, call_record, call_records, eventually, operator_online,
    play_tone,
};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Every test finishes well inside this, or fails.
const TEST_BOUND: Duration = Duration::from_secs(40);

/// How long the operator listens to judge what it hears.
const LISTEN: Duration = Duration::from_millis(2_000);
/// The operator's tone level (dBFS RMS); baresip must record it within 3 dB.
const TONE_DBFS: f64 = -20.0;

/// A config with the SIP endpoint on a free loopback port.
fn sip_config() -> ServerConfig {
    let mut c = ServerConfig::for_tests();
    c.sip = Some(SipEndpointConfig::new(
        "127.0.0.1:0".parse().expect("address"),
    ));
    c
}

/// Starts `config`, whose SIP port is 0. The stack binds UDP on a free
/// port, then TCP on the same number, which another socket on this busy
/// box may hold: then it starts again on another port.
async fn start(config: ServerConfig) -> Result<ServerHandle> {
    let mut tries = 0;
    loop {
        match Server::start(config.clone()).await {
            Err(e) if tries < 5 && format!("{e:#}").contains("Address already in use") => {
                tries += 1;
            }
            result => return result,
        }
    }
}

/// A `--dev` server whose dev trunk is `dev_trunk` (`sip:HOST:PORT`).
async fn dev_server(dev_trunk: &str) -> Result<ServerHandle> {
    let mut c = sip_config();
    c.dev_trunk = Some(dev_trunk.parse()?);
    start(c).await
}

/// `sip:NUMBER@SIP_ADDR` of the server.
fn number_uri(s: &ServerHandle, number: &str) -> String {
    format!("sip:{number}@{}", s.sip_addr.expect("SIP endpoint"))
}

/// The next `incomingCall` after `since`: its call, taken from the SDK.
async fn ringing(op: &AudinOperator, log: &EventLog, since: Instant) -> Result<Call> {
    let (_, info) = log
        .wait(since, EVENT, |e| match e {
            Event::IncomingCall { call } => Some(call.clone()),
            _ => None,
        })
        .await
        .context("no incomingCall")?;
    op.call(&info.call_sid)
        .with_context(|| format!("{} is not the current call", info.call_sid))
}

async fn active(call: &Call) -> Result<()> {
    let info = tokio::time::timeout(EVENT, call.wait_for(CallState::Active))
        .await
        .context("the call did not become active")?;
    ensure!(info.state == CallState::Active, "call ended: {info:?}");
    Ok(())
}

async fn ended(call: &Call) -> Result<EndReason> {
    let info = tokio::time::timeout(EVENT, call.ended())
        .await
        .context("the call did not end")?;
    info.end_reason.context("ended without a reason")
}

/// The call's record once it is closed (record updates are queued).
async fn closed_record(s: &ServerHandle, key: &str, sid: &str) -> Result<Value> {
    let mut last = None;
    let closed = eventually(EVENT, async || {
        last = call_record(&s.url(), key, sid).await.ok().flatten();
        last.as_ref().is_some_and(|r| !r["endReason"].is_null())
    })
    .await;
    ensure!(closed, "record of {sid} not closed: {last:?}");
    last.context("no record")
}

/// The operator's microphone: a tone, one frame every 20 ms, until aborted.
fn play(call: &Call, hz: f64) -> JoinHandle<()> {
    play_tone(call, hz, TONE_DBFS)
}

/// The operator's ear: every far-end frame the SDK hands over.
struct Ear {
    frames: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Ear {
    fn on(call: &Call) -> Self {
        let audio = call.audio();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let sink = frames.clone();
        let task = tokio::spawn(async move {
            while let Some(frame) = audio.recv_frame().await {
                sink.lock().unwrap().extend_from_slice(&frame);
            }
        });
        Self { frames, task }
    }

    /// What arrives during the next `d`.
    async fn listen(&self, d: Duration) -> Analysis {
        self.frames.lock().unwrap().clear();
        tokio::time::sleep(d).await;
        let heard = std::mem::take(&mut *self.frames.lock().unwrap());
        analyze(&to_f32(&from_mulaw(&heard)), TELEPHONY_RATE)
    }
}

impl Drop for Ear {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softphone_calls_a_dev_number_audio_both_ways_dtmf_and_either_side_hangs_up() -> Result<()>
{
    let test = "e2e_inbound";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        // The dev trunk on loopback: baresip calls from 127.0.0.1.
        let s = dev_server("sip:127.0.0.1:5060").await?;
        let key = s.dev_api_key.clone().context("dev key")?;
        let (op, log) = operator_online(&s.url(), &key, "op-sip-in", &[MILANO], EVENT).await?;
        let mut caller =
            Baresip::start(BaresipOptions::new("390211111111").source(A440).record()).await?;

        // 1. The softphone calls, the operator accepts and hears 440 Hz.
        let t0 = Instant::now();
        caller.dial(&number_uri(&s, MILANO_E164)).await?;
        let call = ringing(&op, &log, t0).await?;
        let info = call.info();
        assert_eq!(info.from, "+390211111111", "{info:?}");
        assert_eq!(info.to, MILANO_E164, "{info:?}");
        call.accept();
        active(&call).await?;
        caller.wait_event(EventKind::CallEstablished, EVENT).await?;
        let ear = Ear::on(&call);
        let mic = play(&call, 1000.0);
        let heard = ear.listen(LISTEN).await;
        assert!(heard.is_tone(440.0, 5.0), "operator heard {heard}");
        assert!(heard.active_seconds > 1.5, "operator heard {heard}");
        // Silence from the operator before the digit, so the recording's
        // tone part is clean.
        mic.abort();

        // 2. DTMF from the operator reaches the softphone.
        call.send_dtmf("5").await?;
        let digit = caller.wait_event(EventKind::CallDtmfStart, EVENT).await?;
        assert_eq!(digit.param.as_deref(), Some("5"), "{digit}");
        // And the caller's digits (RFC 4733) end up on the call's record.
        caller.send_dtmf("7#").await?;
        tokio::time::sleep(Duration::from_millis(800)).await;

        // 3. The softphone hangs up: remote_hangup for the operator and in
        // the record.
        caller.hangup().await?;
        assert_eq!(ended(&call).await?, EndReason::RemoteHangup);
        closed_reason(&caller).await?;
        let rec = closed_record(&s, &key, &call.call_sid()).await?;
        assert_eq!(rec["endReason"], "remote_hangup", "{rec}");
        assert_eq!(rec["direction"], "inbound", "{rec}");
        assert_eq!(rec["operatorRef"], "op-sip-in", "{rec}");
        assert_eq!(rec["dtmfReceived"], "7#", "{rec}");
        drop(ear);

        // The operator's 1 kHz reached the softphone at the level sent.
        let recorded = caller.last_recording()?.read_received()?.analyze();
        assert!(recorded.is_tone(1000.0, 5.0), "baresip heard {recorded}");
        assert!(recorded.active_seconds > 1.5, "baresip heard {recorded}");
        assert!(
            (recorded.rms_dbfs - TONE_DBFS).abs() <= 3.0,
            "baresip heard {recorded}"
        );

        // 4. A second call, which the operator ends: baresip's call is
        // closed and the record says `hangup`.
        let t1 = Instant::now();
        caller.dial(&number_uri(&s, MILANO_E164)).await?;
        let call = ringing(&op, &log, t1).await?;
        call.accept();
        active(&call).await?;
        caller.wait_event(EventKind::CallEstablished, EVENT).await?;
        // Talk a moment first, as an operator does.
        let ear = Ear::on(&call);
        let heard = ear.listen(Duration::from_millis(600)).await;
        assert!(heard.is_tone(440.0, 5.0), "operator heard {heard}");
        call.hangup();
        assert_eq!(ended(&call).await?, EndReason::Hangup);
        let reason = closed_reason(&caller).await?;
        let rec = closed_record(&s, &key, &call.call_sid()).await?;
        assert_eq!(rec["endReason"], "hangup", "{rec} (baresip: {reason})");
        caller.stop().await?;
        s.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_dials_out_through_the_dev_trunk_and_hears_its_tone_echoed() -> Result<()> {
    let test = "e2e_outbound_dev_trunk";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        const CALLEE: &str = "+14155550199";
        let mut phone = Baresip::start(
            BaresipOptions::new(CALLEE)
                .auto_answer()
                .source(AudioSource::Echo),
        )
        .await?;
        let s = dev_server(&format!("sip:{}", phone.sip_addr())).await?;
        let key = s.dev_api_key.clone().context("dev key")?;
        let (op, _log) = operator_online(&s.url(), &key, "op-sip-out", &[MILANO], EVENT).await?;

        // A number outside the sim's table goes to the dev trunk.
        let call = op.dial(CALLEE, MILANO_E164).await?;
        active(&call).await?;
        // The softphone answered it (the sim's default script echoes too).
        phone.wait_event(EventKind::CallEstablished, EVENT).await?;
        let ear = Ear::on(&call);
        let mic = play(&call, 1000.0);
        // Past the first echoes, then judge.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let heard = ear.listen(LISTEN).await;
        mic.abort();
        assert!(heard.is_tone(1000.0, 5.0), "operator heard {heard}");
        assert!(heard.active_seconds > 1.5, "operator heard {heard}");
        call.hangup();
        assert_eq!(ended(&call).await?, EndReason::Hangup);
        closed_reason(&phone).await?;
        let rec = closed_record(&s, &key, &call.call_sid()).await?;
        assert_eq!(rec["endReason"], "hangup", "{rec}");
        assert_eq!(rec["to"], CALLEE, "{rec}");

        // A number of the sim's table stays on the sim: busy at once (the
        // softphone would have refused it, `failed`: not its user).
        let busy = op.dial("+15550100003", MILANO_E164).await?;
        assert_eq!(ended(&busy).await?, EndReason::Rejected);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answered = phone
            .events()
            .iter()
            .filter(|e| e.kind == EventKind::CallEstablished)
            .count();
        assert_eq!(answered, 1, "the sim number went to the softphone");
        phone.stop().await?;
        s.shutdown().await;
        Ok(())
    })
    .await
}

/// The real `audin-server` binary, built (if stale) before any test clock
/// starts: a build can take longer than a test's bound.
async fn binary() -> Result<PathBuf> {
    let release = !cfg!(debug_assertions);
    tokio::task::spawn_blocking(move || audin_testkit::server_binary(release)).await?
}

/// Runs `BIN --database DB admin ARGS` with `env`; `(success, stdout +
/// stderr)`.
async fn admin(
    bin: &Path,
    db: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(bool, String)> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--database").arg(db).arg("admin").args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AUDIN_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_BACKTRACE", "0").envs(env.iter().copied());
    let out = cmd.output().await.context("running audin-server admin")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

/// The first word after `prefix` on a line of `out`.
fn field(out: &str, prefix: &str) -> Result<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .with_context(|| format!("no `{prefix}…` line in {out}"))
}

/// A non-dev server on `db` with SIP.
async fn server_on(db: &Path) -> Result<ServerHandle> {
    let mut c = sip_config();
    c.database = db.to_path_buf();
    c.dev = false;
    start(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_trunk_carries_its_numbers_calls_both_ways_and_hides_its_password() -> Result<()>
{
    let test = "e2e_admin_trunk";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    let bin = binary().await?;
    bounded(test, TEST_BOUND, async {
        const NUMBER: &str = "+390266666666";
        // baresip 1.0.0 answers only INVITEs for its own user ("UA not
        // found" otherwise): the PBX's extension is the number we dial, one
        // the sim would answer busy.
        const DIALLED: &str = "+15550100003";
        const PASSWORD: &str = "trunk-pw-never-shown";
        let dir = audin_testkit::temp_dir("sip-e2e-admin")?;
        let db = dir.join("audin.sqlite3");
        let mut pbx = Baresip::start(
            BaresipOptions::new(DIALLED)
                .auto_answer()
                .source(AudioSource::Echo),
        )
        .await?;

        let (ok, out) = admin(&bin, &db, &["create-account", "--name", "Acme"], &[]).await?;
        ensure!(ok, "{out}");
        let account = field(&out, "account ")?;
        let key = field(&out, "api key ")?;
        // The password from the environment, as `--help` recommends.
        let uri = format!("sip:{}", pbx.sip_addr());
        let trunk_args = [
            "add-trunk",
            "--account",
            &account,
            "--name",
            "pbx",
            "--uri",
            &uri,
            "--username",
            "acme",
            "--allow",
            "127.0.0.1/32",
        ];
        let (ok, out) = admin(
            &bin,
            &db,
            &trunk_args,
            &[("AUDIN_TRUNK_PASSWORD", PASSWORD)],
        )
        .await?;
        ensure!(ok, "{out}");
        ensure!(!out.contains(PASSWORD), "add-trunk printed the password");
        let (ok, out) = admin(
            &bin,
            &db,
            &[
                "add-number",
                "--account",
                &account,
                "--number",
                NUMBER,
                "--name",
                "PBX",
                "--trunk",
                "pbx",
            ],
            &[],
        )
        .await?;
        ensure!(ok, "{out}");
        let number_id = field(&out, "number ")?;

        // Bad input gets a clear, typed refusal.
        let refusals: [(Vec<&str>, &str); 4] = [
            (
                vec![
                    "add-number",
                    "--account",
                    &account,
                    "--number",
                    "+390266666667",
                    "--trunk",
                    "nope",
                ],
                "has no trunk named \"nope\"",
            ),
            (
                vec![
                    "add-trunk",
                    "--account",
                    &account,
                    "--name",
                    "x",
                    "--uri",
                    "http://pbx",
                ],
                "does not start with sip:",
            ),
            (
                vec![
                    "add-trunk",
                    "--account",
                    "acc_nobody",
                    "--name",
                    "x",
                    "--uri",
                    "sip:pbx",
                ],
                "no account \"acc_nobody\"",
            ),
            (
                vec![
                    "add-trunk",
                    "--account",
                    &account,
                    "--name",
                    "pbx",
                    "--uri",
                    "sip:pbx",
                ],
                "already has a trunk named \"pbx\"",
            ),
        ];
        for (args, expected) in refusals {
            let (ok, out) = admin(&bin, &db, &args, &[]).await?;
            ensure!(!ok && out.contains(expected), "{args:?}: {out}");
        }
        let (ok, listing) = admin(&bin, &db, &["list"], &[]).await?;
        ensure!(ok, "{listing}");
        ensure!(!listing.contains(PASSWORD), "admin list shows the password");
        ensure!(
            listing.contains("  pbx  ") && listing.contains("password set"),
            "{listing}"
        );
        ensure!(
            listing
                .lines()
                .any(|l| l.contains(NUMBER) && l.ends_with("trunk pbx")),
            "{listing}"
        );

        let s = server_on(&db).await?;
        let (op, log) = operator_online(&s.url(), &key, "op-pbx", &[&number_id], EVENT).await?;

        // Outbound: the caller id's trunk, even to a number the sim would
        // answer busy.
        let call = op.dial(DIALLED, NUMBER).await?;
        active(&call).await?;
        let ear = Ear::on(&call);
        let mic = play(&call, 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let heard = ear.listen(LISTEN).await;
        mic.abort();
        assert!(heard.is_tone(1000.0, 5.0), "operator heard {heard}");
        call.hangup();
        assert_eq!(ended(&call).await?, EndReason::Hangup);
        closed_reason(&pbx).await?;
        drop(ear);

        // Inbound: the PBX calls the number; its operator rings.
        let t0 = Instant::now();
        pbx.dial(&number_uri(&s, NUMBER)).await?;
        let call = ringing(&op, &log, t0).await?;
        assert_eq!(call.info().to, NUMBER);
        call.accept();
        active(&call).await?;
        call.hangup();
        closed_reason(&pbx).await?;
        let rec = closed_record(&s, &key, &call.call_sid()).await?;
        assert_eq!(rec["endReason"], "hangup", "{rec}");
        pbx.stop().await?;
        s.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_from_an_address_the_trunk_does_not_list_gets_403_and_rings_nobody() -> Result<()> {
    let test = "e2e_forbidden_source";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        const NUMBER: &str = "+390277777777";
        let dir = audin_testkit::temp_dir("sip-e2e-403")?;
        let db = dir.join("audin.sqlite3");
        // A trunk elsewhere (its host and a published range); baresip
        // calls from 127.0.0.1.
        let (key, numbers) = account_with_trunk(
            &db,
            "Acme",
            trunk_row("carrier", "sip:127.0.0.2:5060", &["198.51.100.0/24"]),
            &[(NUMBER, Some("carrier"))],
        )?;
        let number_id = &numbers[0];
        let s = server_on(&db).await?;
        let (_op, log) = operator_online(&s.url(), &key, "op-403", &[number_id], EVENT).await?;
        let caller = Baresip::start(BaresipOptions::new("390211111115")).await?;
        let t0 = Instant::now();
        caller.dial(&number_uri(&s, NUMBER)).await?;
        let reason = closed_reason(&caller).await?;
        assert!(reason.starts_with("403"), "{reason}");
        // Nobody rang, then or a moment later, and no call was recorded.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let offers = log.since(t0, |e| match e {
            Event::IncomingCall { call } => Some(call.call_sid.clone()),
            _ => None,
        });
        assert!(offers.is_empty(), "the operator rang: {offers:?}");
        let records = call_records(&s.url(), &key, 10).await?;
        assert!(records.is_empty(), "{records:?}");
        s.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    })
    .await
}

/// One account with a trunk, in the store: `(api key, [number ids])`,
/// each number on `trunk` (`None`: the sim).
fn account_with_trunk(
    db: &Path,
    name: &str,
    trunk: audin_server::db::NewTrunk,
    numbers: &[(&str, Option<&str>)],
) -> Result<(String, Vec<String>)> {
    let mut conn = audin_server::db::open_sync(db)?;
    let account = audin_server::db::create_account(&mut conn, name)?;
    let key = audin_server::db::create_api_key(&mut conn, &account, "")?;
    audin_server::db::add_trunk(&mut conn, &account, &trunk)?;
    let ids = numbers
        .iter()
        .map(|(number, on)| audin_server::db::add_number_via(&mut conn, &account, number, "", *on))
        .collect::<Result<_>>()?;
    Ok((key, ids))
}

fn trunk_row(name: &str, uri: &str, allowed: &[&str]) -> audin_server::db::NewTrunk {
    audin_server::db::NewTrunk {
        name: name.into(),
        uri: uri.into(),
        transport: Default::default(),
        username: None,
        password: None,
        allowed_sources: allowed.iter().map(|s| (*s).into()).collect(),
        register: false,
        inbound_auth: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_rings_only_its_own_numbers_never_another_accounts() -> Result<()> {
    let test = "e2e_trunk_scope";
    if !tools_or_skip(test, &[Tool::Baresip]) {
        return Ok(());
    }
    bounded(test, TEST_BOUND, async {
        const OURS: &str = "+390266600001";
        const THEIRS_ON_TRUNK: &str = "+390266600002";
        const THEIRS_ON_SIM: &str = "+390266600003";
        let dir = audin_testkit::temp_dir("sip-e2e-scope")?;
        let db = dir.join("audin.sqlite3");
        // Acme's trunk takes baresip's address; Rival's trunk is elsewhere.
        let (acme_key, acme_numbers) = account_with_trunk(
            &db,
            "Acme",
            trunk_row("pbx", "sip:127.0.0.1:5999", &[]),
            &[(OURS, Some("pbx"))],
        )?;
        let (rival_key, rival_numbers) = account_with_trunk(
            &db,
            "Rival",
            trunk_row("carrier", "sip:127.0.0.2:5060", &["198.51.100.0/24"]),
            &[(THEIRS_ON_TRUNK, Some("carrier")), (THEIRS_ON_SIM, None)],
        )?;
        let s = server_on(&db).await?;
        let (acme_op, acme_log) =
            operator_online(&s.url(), &acme_key, "op-acme", &[&acme_numbers[0]], EVENT).await?;
        let rival_ids: Vec<&str> = rival_numbers.iter().map(String::as_str).collect();
        let (_rival_op, rival_log) =
            operator_online(&s.url(), &rival_key, "op-rival", &rival_ids, EVENT).await?;
        let caller = Baresip::start(BaresipOptions::new("390211111116")).await?;

        // Through Acme's trunk, Rival's numbers do not exist: the answer
        // an unknown number gets, and nobody of Rival's rings.
        let t0 = Instant::now();
        for number in [THEIRS_ON_TRUNK, THEIRS_ON_SIM] {
            caller.dial(&number_uri(&s, number)).await?;
            let reason = closed_reason(&caller).await?;
            assert!(reason.starts_with("404"), "{number}: {reason}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let offers = rival_log.since(t0, |e| match e {
            Event::IncomingCall { call } => Some(call.call_sid.clone()),
            _ => None,
        });
        assert!(offers.is_empty(), "Rival's operator rang: {offers:?}");
        let records = call_records(&s.url(), &rival_key, 10).await?;
        assert!(records.is_empty(), "{records:?}");

        // Its own number rings as before.
        let t1 = Instant::now();
        caller.dial(&number_uri(&s, OURS)).await?;
        let call = ringing(&acme_op, &acme_log, t1).await?;
        assert_eq!(call.info().to, OURS);
        call.reject();
        closed_reason(&caller).await?;
        s.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_settings_that_cannot_work_are_refused_at_start() -> Result<()> {
    // A dev trunk without --dev or without SIP, and SIP on a wildcard
    // address with nothing to put in SDP: typed errors, nothing served.
    let mut c = sip_config();
    c.dev = false;
    c.dev_trunk = Some("sip:127.0.0.1:5060".parse()?);
    let e = Server::start(c).await.expect_err("dev trunk without --dev");
    assert_eq!(
        e.downcast_ref::<audin_server::config::ConfigError>(),
        Some(&audin_server::config::ConfigError::DevTrunkWithoutDev),
        "{e:#}"
    );
    let mut c = ServerConfig::for_tests();
    c.dev_trunk = Some("sip:127.0.0.1:5060".parse()?);
    let e = Server::start(c).await.expect_err("dev trunk without SIP");
    assert!(e.to_string().contains("--sip-listen"), "{e:#}");
    let mut c = ServerConfig::for_tests();
    c.sip = Some(SipEndpointConfig::new(SocketAddr::from(([0, 0, 0, 0], 0))));
    let e = Server::start(c)
        .await
        .expect_err("wildcard without advertise");
    assert!(e.to_string().contains("--sip-advertise"), "{e:#}");
    Ok(())
}

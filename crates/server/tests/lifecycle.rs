//! Persistence across restarts, crash recovery, graceful shutdown, and the
//! binary's CLI (admin commands, ready line, sim call).

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use audin_protocol::Direction;
use audin_server::db;
use support::*;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("audin-server-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("audin.sqlite3")
}

#[tokio::test]
async fn records_and_secret_survive_a_restart() {
    let path = temp_db("restart");
    let mut cfg = config();
    cfg.database = path.clone();
    let s = TestServer::with(cfg.clone()).await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let out = s.dial(&mut p, "+15550100003").await;
    let (mut audio, _) = s.attach("op-1", &out).await;
    audio.closed().await;
    s.ended_record(&out).await;
    drop(p);
    let inbound = s.sim_call(MILANO_E164, "tone").await;
    s.ended_record(&inbound).await;
    let token = s.token("op-1", &[MILANO]).await;
    s.handle.shutdown().await;

    let s = TestServer::with(cfg).await;
    let calls = s.calls().await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    // Newest first.
    assert_eq!(calls[0]["callSid"], inbound.as_str());
    assert_eq!(calls[0]["endReason"], "rejected");
    assert_eq!(calls[1]["callSid"], out.as_str());
    assert_eq!(calls[1]["endReason"], "rejected");
    assert_eq!(calls[1]["to"], "+15550100003");
    // The signing secret was persisted: the old token still works.
    let r = s
        .http
        .get(s.url("/v1/phone-numbers"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // ?limit
    let r = s
        .http
        .get(s.url("/v1/calls?limit=1"))
        .header("X-API-Key", &s.key)
        .send()
        .await
        .unwrap();
    let v: Vec<serde_json::Value> = r.json().await.unwrap();
    assert_eq!(v.len(), 1);
    s.handle.shutdown().await;
}

#[test]
fn the_page_cache_is_bounded_and_the_next_seq_uses_its_index() {
    let path = temp_db("cache");
    let c = db::open_sync(&path).unwrap();
    let cache: i64 = c
        .pragma_query_value(None, "cache_size", |r| r.get(0))
        .unwrap();
    assert_eq!(cache, -db::DB_PAGE_CACHE_KIB, "cache_size in -KiB");
    // `insert_call` reads MAX(seq): one index probe, not a table scan.
    let plan: String = c
        .query_row(
            "EXPLAIN QUERY PLAN SELECT COALESCE(MAX(seq), 0) + 1 FROM calls",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("calls_by_seq"), "plan: {plan}");
}

#[tokio::test]
async fn open_records_are_closed_failed_at_start() {
    let path = temp_db("crash");
    {
        let mut c = db::open_sync(&path).unwrap();
        db::seed_dev(&mut c).unwrap();
        let call = db::NewCall {
            call_sid: "CAcrashed".into(),
            account_id: db::DEV_ACCOUNT_ID.into(),
            direction: Direction::Inbound,
            from: "+14155550100".into(),
            to: MILANO_E164.into(),
            operator_ref: Some("op-1".into()),
        };
        db::insert_call(&mut c, &call, "2026-01-01T00:00:00Z").unwrap();
    }
    let mut cfg = config();
    cfg.database = path;
    let s = TestServer::with(cfg).await;
    let rec = s.ended_record("CAcrashed").await;
    assert_eq!(rec["endReason"], "failed");
    assert_eq!(rec["offeredAt"], "2026-01-01T00:00:00Z");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn crash_mid_call_leaves_a_record_that_the_next_start_closes() {
    let path = temp_db("abort");
    let mut cfg = config();
    cfg.database = path.clone();
    cfg.audio_grace = Duration::from_secs(30);
    let s = TestServer::with(cfg.clone()).await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, "+15550100001").await;
    // Let the insert land, then "crash": stop serving without ending calls.
    for _ in 0..50 {
        if s.calls().await.iter().any(|c| c["callSid"] == sid.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let engine = s.handle.engine.clone();
    s.handle.abort();
    let open: Option<String> = engine
        .db
        .call({
            let sid = sid.clone();
            move |c| Ok(db::call_record(c, &sid)?.and_then(|(_, r)| r.ended_at))
        })
        .await
        .unwrap();
    assert_eq!(open, None, "the record is still open after the crash");
    let s2 = TestServer::with(cfg).await;
    assert_eq!(s2.ended_record(&sid).await["endReason"], "failed");
    s2.handle.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_ends_calls_failed_and_closes_1001() {
    let path = temp_db("shutdown");
    let mut cfg = config();
    cfg.database = path.clone();
    let s = TestServer::with(cfg.clone()).await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, "+15550100001").await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    audio.expect("answered").await;
    let mut idle = s.online("op-2", &[MILANO]).await;
    let key = s.key.clone();
    s.handle.shutdown().await;
    assert_eq!(audio.expect("ended").await["reason"], "failed");
    assert_eq!(audio.closed().await, Some(1001));
    assert_eq!(p.expect("callEnded").await["reason"], "failed");
    assert_eq!(p.closed().await, Some(1001));
    assert_eq!(idle.closed().await, Some(1001));
    let _ = key;
    let mut c = db::open_sync(&path).unwrap();
    let (_, rec) = db::call_record(&mut c, &sid).unwrap().unwrap();
    assert_eq!(rec.end_reason, Some(audin_protocol::EndReason::Failed));
}

/// The drain a SIGTERM starts: the live call goes on (audio flowing) and
/// ends as the operator ends it, the idle operator is sent away with 1001
/// (its SDK reconnects, through a balancer to another node), no new call
/// or presence session is taken, and `/healthz` answers 503 `draining` so
/// a balancer stops sending. The drain returns once no call is live.
#[tokio::test]
async fn a_drain_lets_the_live_call_finish_and_takes_no_new_ones() {
    let s = TestServer::start().await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, "+15550100001").await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    audio.expect("answered").await;
    let mut idle = s.online("op-2", &[MILANO]).await;
    let health = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["calls"], 1);
    assert_eq!(health["store"]["kind"], "sqlite");
    assert_eq!(health["routing"]["kind"], "in-process");
    assert_eq!(s.metric("audin_draining").await, 0);

    let checks = async {
        assert_eq!(
            idle.closed().await,
            Some(1001),
            "the idle operator is sent away"
        );
        let health = s.http.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 503);
        let health: serde_json::Value = health.json().await.unwrap();
        assert_eq!(health["status"], "draining");
        assert_eq!(s.metric("audin_draining").await, 1);
        // No new presence session, no new inbound call, no new dial.
        let token = s.token("op-3", &[MILANO]).await;
        let mut late = Ws::connect(&s.ws_url("/v1/operator/presence")).await;
        late.send_json(serde_json::json!({"type": "hello", "token": token, "client": "test/0"}))
            .await;
        match late.next().await {
            Got::Close(code) => assert_eq!(code, Some(1001)),
            other => panic!("a session started while draining: {other:?}"),
        }
        let r = s
            .http
            .post(s.url("/dev/sim/calls"))
            .json(&serde_json::json!({"from": "+14155550100", "to": MILANO_E164}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        // The live call still carries audio both ways, a while into the drain.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..10 {
            audio.send_binary(vec![0x55; 160]).await;
            audio.frame().await;
        }
        // Its operator's presence stays (it gets the callEnded).
        p.send_json(serde_json::json!({"type": "hangup", "callSid": sid}))
            .await;
        assert_eq!(p.expect("callEnded").await["reason"], "hangup");
    };
    let (left, ()) = tokio::join!(s.handle.drain(), checks);
    assert_eq!(left, 0, "no call left when the drain returns");
    assert_eq!(s.ended_record(&sid).await["endReason"], "hangup");
    s.handle.shutdown().await;
}

/// A call still live at the drain timeout ends `failed` in the shutdown.
#[tokio::test]
async fn a_call_live_at_the_drain_timeout_ends_failed() {
    let mut cfg = config();
    cfg.drain_timeout = Duration::from_millis(400);
    let s = TestServer::with(cfg).await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, "+15550100001").await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    audio.expect("answered").await;
    let started = tokio::time::Instant::now();
    assert_eq!(s.handle.drain().await, 1);
    assert!(started.elapsed() >= Duration::from_millis(400));
    s.handle.shutdown().await;
    assert_eq!(audio.expect("ended").await["reason"], "failed");
    assert_eq!(p.expect("callEnded").await["reason"], "failed");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_audin-server"))
}

#[test]
fn admin_cli_manages_accounts_keys_and_numbers() {
    let path = temp_db("admin");
    let db_arg = path.to_str().unwrap();
    let out = bin()
        .args([
            "admin",
            "create-account",
            "--name",
            "Acme",
            "--database",
            db_arg,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let account = text
        .lines()
        .find_map(|l| l.strip_prefix("account "))
        .unwrap()
        .to_owned();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("api key "))
        .unwrap()
        .to_owned();
    assert!(key.starts_with("ak_"));
    let out = bin()
        .args([
            "--database",
            db_arg,
            "admin",
            "add-number",
            "--account",
            &account,
            "--number",
            "+390211111111",
            "--name",
            "Milano",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args([
            "admin",
            "add-number",
            "--account",
            &account,
            "--number",
            "12345",
            "--database",
            db_arg,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = bin()
        .args([
            "admin",
            "create-key",
            "--account",
            &account,
            "--database",
            db_arg,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = bin()
        .args(["admin", "list", "--database", db_arg])
        .output()
        .unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        list.contains(&account) && list.contains("+390211111111") && list.contains("Acme"),
        "{list}"
    );
    // Keys are stored hashed: the listing never shows a secret.
    let secret = &key[20..];
    assert!(!list.contains(secret));
    let mut c = db::open_sync(&path).unwrap();
    assert_eq!(db::account_for_key(&mut c, &key).unwrap(), Some(account));
    assert_eq!(
        db::account_for_key(&mut c, &format!("{key}x")).unwrap(),
        None
    );
}

#[test]
fn binary_prints_ready_line_and_dev_key_and_sim_call_works() {
    let path = temp_db("binary");
    let mut child = bin()
        .args([
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database",
            path.to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = None;
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(k) = line.strip_prefix("AUDIN_DEV_API_KEY=") {
            key = Some(k.to_owned());
        }
        if let Some(u) = line.strip_prefix("audin-server listening on ") {
            url = Some(u.to_owned());
            break;
        }
    }
    let url = url.expect("ready line");
    assert!(url.starts_with("http://127.0.0.1:"));
    assert!(key.unwrap().starts_with("ak_"));
    let out = bin()
        .args([
            "sim",
            "call",
            "--server",
            &url,
            "--from",
            "+14155550100",
            "--to",
            MILANO_E164,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sid = String::from_utf8(out.stdout).unwrap();
    assert!(sid.trim().starts_with("CA"), "{sid}");
    // SIGTERM → graceful exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

//! The real `audin-server` binary, as an operator runs it (issue 12, points
//! 7, 8 and 13): its log on a pipe (no colour codes; `--log-format json`),
//! `RUST_LOG=trace`, `--database` values it must refuse; and its signals
//! (SIGTERM drains, SIGINT stops).

mod support;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const BIN: &str = env!("CARGO_BIN_EXE_audin-server");
const WAIT: Duration = Duration::from_secs(30);

/// A fresh, empty directory (removed on drop) to run the binary in, so
/// that any file it creates is seen and none lands in the source tree.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "audin-server-test-{}-{tag}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary in `cwd` with a clean environment for what it reads
/// (`RUST_LOG`, `NO_COLOR`, `AUDIN_*`), output on pipes.
fn command(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AUDIN_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A dev server started from the binary; `stdout` is read up to its ready
/// line, the rest of both streams is collected by [`Running::finish`].
struct Running {
    child: Child,
    base: String,
    stdout: String,
    /// The rest of stdout, after the ready line (buffer kept).
    more: Lines<BufReader<ChildStdout>>,
    _dir: TempDir,
}

async fn start(env: &[(&str, &str)], extra: &[&str]) -> Running {
    let dir = TempDir::new("run");
    let mut args = vec!["--dev", "--listen", "127.0.0.1:0", "--database", ":memory:"];
    args.extend_from_slice(extra);
    let mut cmd = command(&dir.0, &args);
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    let base = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout.push_str(&line);
            stdout.push('\n');
            if let Some(addr) = line.strip_prefix("audin-server listening on ") {
                return addr.to_owned();
            }
        }
        panic!("no ready line; stdout: {stdout}");
    })
    .await
    .expect("ready line in time");
    Running {
        child,
        base,
        stdout,
        more: lines,
        _dir: dir,
    }
}

impl Running {
    /// A dev token, a presence socket that says hello, pings and dials:
    /// enough traffic for INFO and TRACE lines. Returns the token.
    async fn exercise(&self) -> String {
        let http = reqwest::Client::new();
        let v: Value = http
            .post(format!("{}/api/operator/token", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = v["token"].as_str().unwrap().to_owned();
        let url = format!(
            "{}/v1/operator/presence",
            self.base.replacen("http", "ws", 1)
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            audin_protocol::SUBPROTOCOL.parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        for msg in [
            json!({"type": "hello", "token": token}),
            json!({"type": "ping", "id": 1}),
        ] {
            ws.send(Message::text(msg.to_string())).await.unwrap();
        }
        tokio::time::timeout(WAIT, async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    if serde_json::from_str::<Value>(&t).unwrap()["type"] == "pong" {
                        return;
                    }
                }
            }
            panic!("presence socket closed before the pong");
        })
        .await
        .expect("pong in time");
        let _ = ws.close(None).await;
        token
    }

    /// Kills the process (the log is written unbuffered, line by line) and
    /// returns `(stdout, stderr)`.
    async fn finish(mut self) -> (String, String) {
        // Let the server log the socket's end before it dies.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.child.kill().await.unwrap();
        let mut out = self.stdout.clone();
        while let Some(line) = self.more.next_line().await.unwrap() {
            out.push_str(&line);
            out.push('\n');
        }
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        (out, err)
    }
}

/// Point 7: on a pipe (a file, journald) the log holds no ANSI escape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_on_a_pipe_has_no_colour_codes() {
    let s = start(&[], &[]).await;
    s.exercise().await;
    let (out, err) = s.finish().await;
    assert!(err.contains("session token issued"), "logged: {err}");
    assert!(err.contains("operator connected"), "logged: {err}");
    for (name, text) in [("stdout", &out), ("stderr", &err)] {
        assert!(
            !text.contains("\u{1b}["),
            "ANSI escape codes on {name}: {text:?}"
        );
    }
}

/// Point 7: `--log-format json` (and `AUDIN_LOG_FORMAT=json`) writes one
/// JSON object per line, each with a level and a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_object_per_line() {
    for (env, extra) in [
        (&[][..], &["--log-format", "json"][..]),
        (&[("AUDIN_LOG_FORMAT", "json")][..], &[][..]),
    ] {
        let s = start(env, extra).await;
        s.exercise().await;
        let (_, err) = s.finish().await;
        let mut messages = Vec::new();
        for line in err.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nlog:\n{err}"));
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                    .contains(&v["level"].as_str().unwrap_or("")),
                "no level: {line}"
            );
            let message = v["message"].as_str();
            assert!(message.is_some(), "no message: {line}");
            messages.push(message.unwrap().to_owned());
        }
        for expected in [
            "audin-server started",
            "session token issued",
            "operator connected",
        ] {
            assert!(
                messages.iter().any(|m| m == expected),
                "{expected:?} not in {messages:?}"
            );
        }
    }
}

/// Point 8: `RUST_LOG=trace` shows audin-server's own TRACE events, while
/// the WebSocket and HTTP stacks stay capped at WARN and no token is
/// logged (finding F1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_trace_shows_audin_trace_events_and_no_token() {
    let s = start(&[("RUST_LOG", "trace")], &["--log-format", "json"]).await;
    let token = s.exercise().await;
    let (_, err) = s.finish().await;
    let events: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let traces: Vec<&Value> = events
        .iter()
        .filter(|v| v["level"] == "TRACE")
        .filter(|v| {
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("audin_server"))
        })
        .collect();
    assert!(
        traces
            .iter()
            .any(|v| v["message"] == "presence message received" && v["kind"] == "ping"),
        "no TRACE line from audin_server for the ping; log:\n{err}"
    );
    let chatty: Vec<&Value> = events
        .iter()
        .filter(|v| matches!(v["level"].as_str(), Some("TRACE" | "DEBUG" | "INFO")))
        .filter(|v| {
            v["target"].as_str().is_some_and(|t| {
                ["tungstenite", "tokio_tungstenite", "hyper"]
                    .iter()
                    .any(|d| t.starts_with(d))
            })
        })
        .collect();
    assert!(
        chatty.is_empty(),
        "capped stacks logged below WARN: {chatty:?}"
    );
    // The distinctive parts of the token: its payload and its signature.
    for part in token.split('.').skip(1) {
        assert!(!err.contains(part), "a token leaked into the trace log");
    }
}

/// Waits for a process that must exit on its own; kills it and fails the
/// test if it is still running after `WAIT` (a server that took the value).
async fn exits(mut cmd: Command) -> (ExitStatus, String) {
    let child = cmd.spawn().unwrap();
    let started = Instant::now();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("still running after {:?}", started.elapsed()))
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

/// Point 13: a database URL of another scheme is refused at start-up,
/// naming the supported forms, and leaves no file behind (it used to
/// create a SQLite file called `postgres:` and run on it). The same for the
/// admin subcommands and for `AUDIN_DATABASE`. (`postgres://` selects the
/// PostgreSQL store since issue 15: see the next test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_database_scheme_is_refused_and_creates_no_file() {
    let cases: &[(&[&str], Option<&str>)] = &[
        (
            &["--listen", "127.0.0.1:0", "--database", "mongodb://x/y"],
            None,
        ),
        (
            &[
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--database",
                "mysql://db/audin",
            ],
            None,
        ),
        (
            &["--listen", "127.0.0.1:0"],
            Some("redis://db.example/audin"),
        ),
        (&["admin", "list", "--database", "mysql://x/y"], None),
        (
            &[
                "--database",
                "redis:x",
                "admin",
                "create-account",
                "--name",
                "Acme",
            ],
            None,
        ),
        (&["admin", "list"], Some("cockroach:///audin")),
    ];
    for (args, env) in cases {
        let dir = TempDir::new("db");
        let mut cmd = command(&dir.0, args);
        if let Some(url) = env {
            cmd.env("AUDIN_DATABASE", url);
        }
        let (status, text) = exits(cmd).await;
        let case = format!("{args:?} AUDIN_DATABASE={env:?}");
        assert!(!status.success(), "{case}: accepted\n{text}");
        assert!(
            text.contains("unsupported database scheme") && text.contains("sqlite:PATH"),
            "{case}: unclear error: {text}"
        );
        assert_eq!(dir.entries(), Vec::<String>::new(), "{case}: files created");
    }
}

/// `postgres://` (`--database` or `AUDIN_DATABASE`) selects PostgreSQL: a
/// database that cannot be reached fails the start and the admin
/// subcommands with an error naming it, never its password, and no SQLite
/// file is created in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_fails_clearly_without_its_password() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    let url = "postgres://audin:s3cret-pw@127.0.0.1:1/calls";
    let cases: &[(&[&str], Option<&str>)] = &[
        (&["--listen", "127.0.0.1:0", "--database", url], None),
        (&["--listen", "127.0.0.1:0"], Some(url)),
        (&["admin", "list", "--database", url], None),
        (&["admin", "create-account", "--name", "Acme"], Some(url)),
    ];
    for (args, env) in cases {
        let dir = TempDir::new("pg");
        let mut cmd = command(&dir.0, args);
        if let Some(url) = env {
            cmd.env("AUDIN_DATABASE", url);
        }
        let (status, text) = exits(cmd).await;
        let case = format!("{args:?} AUDIN_DATABASE={env:?}");
        assert!(!status.success(), "{case}: accepted\n{text}");
        assert!(
            text.contains("postgres://audin@127.0.0.1:1/calls"),
            "{case}: the database is not named: {text}"
        );
        assert!(
            !text.contains("s3cret-pw"),
            "{case}: password shown: {text}"
        );
        assert_eq!(dir.entries(), Vec::<String>::new(), "{case}: files created");
    }
    // A URL that does not parse is refused before anything starts.
    let dir = TempDir::new("pg-bad");
    let (status, text) = exits(command(
        &dir.0,
        &["admin", "list", "--database", "postgres://[::1/x"],
    ))
    .await;
    assert!(!status.success(), "{text}");
    assert!(text.contains("not a usable PostgreSQL URL"), "{text}");
}

/// Point 13: `sqlite:PATH` (and `sqlite://PATH`) name the file PATH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_prefix_names_the_file() {
    for (arg, file) in [("sqlite:a.sqlite3", "a.sqlite3"), ("sqlite://b.db", "b.db")] {
        let dir = TempDir::new("sqlite");
        let (status, text) = exits(command(&dir.0, &["admin", "list", "--database", arg])).await;
        assert!(status.success(), "{arg}: {text}");
        assert!(dir.0.join(file).is_file(), "{arg}: {:?}", dir.entries());
        assert!(
            dir.entries().iter().all(|e| !e.contains(':')),
            "{arg}: {:?}",
            dir.entries()
        );
    }
}

/// Point 3: the admin CLI refuses account and number names that hold a
/// control or format character, and echoes them escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refuses_names_with_control_or_format_characters() {
    let dir = TempDir::new("names");
    let db = ["--database", "audin.sqlite3"];
    let run = |args: Vec<&str>| exits(command(&dir.0, &[&db[..], &args[..]].concat()));
    let (status, text) = run(vec![
        "admin",
        "create-account",
        "--name",
        "Acme\u{202e}gnp.exe",
    ])
    .await;
    assert!(!status.success(), "{text}");
    assert!(text.contains(r"Acme\u{202e}gnp.exe"), "{text}");
    assert!(!text.contains('\u{202e}'), "echoed raw: {text}");
    let (status, text) = run(vec!["admin", "create-account", "--name", "Acme"]).await;
    assert!(status.success(), "{text}");
    let account = text
        .lines()
        .find_map(|l| l.strip_prefix("account "))
        .unwrap()
        .to_owned();
    let (status, text) = run(vec![
        "admin",
        "add-number",
        "--account",
        &account,
        "--number",
        "+390211111111",
        "--name",
        "Milano\r\nnumber pn_forged",
    ])
    .await;
    assert!(!status.success(), "{text}");
    assert!(text.contains(r"Milano\r\nnumber pn_forged"), "{text}");
    let (status, text) = run(vec!["admin", "list"]).await;
    assert!(status.success(), "{text}");
    assert!(text.contains("account"), "{text}");
    assert!(
        !text.contains("pn_forged") && !text.contains("gnp"),
        "{text}"
    );
}

/// The dev key the ready output printed.
fn dev_key(r: &Running) -> String {
    r.stdout
        .lines()
        .find_map(|l| l.strip_prefix("AUDIN_DEV_API_KEY="))
        .expect("dev key")
        .to_owned()
}

/// An operator of the binary on an answered outbound call to the sim's
/// echo: (presence, audio, call sid).
async fn live_call_on(url: &str, key: &str) -> (support::Ws, support::Ws, String) {
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .post(format!("{url}/operator-sessions/token"))
        .header("X-API-Key", key)
        .json(&serde_json::json!({"operatorRef": "op-1", "phoneNumberIds": [support::MILANO]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let ws = url.replacen("http", "ws", 1);
    let mut p = support::Ws::connect(&format!("{ws}/v1/operator/presence")).await;
    p.send_json(serde_json::json!({"type": "hello", "token": token, "client": "test/0"}))
        .await;
    p.expect("welcome").await;
    p.send_json(serde_json::json!({"type": "dial", "requestId": "d1", "to": "+15550100001", "callerId": support::MILANO_E164}))
        .await;
    let sid = p.expect("dialAccepted").await["callSid"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut audio = support::Ws::connect(&format!("{ws}/v1/operator/audio")).await;
    audio
        .send_json(serde_json::json!({"type": "attach", "token": token, "callSid": sid}))
        .await;
    audio.expect("attached").await;
    audio.expect("answered").await;
    (p, audio, sid)
}

fn signal(r: &Running, name: &str) {
    let pid = r.child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// SIGTERM drains: the process keeps a live call (and says `draining` on
/// `/healthz`) until its operator hangs up, then exits 0 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_binary_until_the_last_call_ends() {
    let mut r = start(&[], &[]).await;
    let (mut p, mut audio, sid) = live_call_on(&r.base, &dev_key(&r)).await;
    signal(&r, "TERM");
    let early = tokio::time::timeout(Duration::from_millis(700), r.child.wait()).await;
    assert!(early.is_err(), "exited with a call live: {early:?}");
    let health = reqwest::get(format!("{}/healthz", r.base)).await.unwrap();
    assert_eq!(health.status(), 503);
    audio.send_binary(vec![0x55; 160]).await;
    audio.frame().await;
    p.send_json(json!({"type": "hangup", "callSid": sid})).await;
    assert_eq!(p.expect("callEnded").await["reason"], "hangup");
    let status = tokio::time::timeout(Duration::from_secs(3), r.child.wait()).await;
    assert!(matches!(&status, Ok(Ok(s)) if s.success()), "{status:?}");
}

/// SIGINT (Ctrl-C), or a second SIGTERM while draining, stops at once: the
/// live call ends `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_or_a_second_sigterm_stops_the_binary_at_once() {
    for (name, signals) in [
        ("SIGINT", &["INT"][..]),
        ("SIGTERM twice", &["TERM", "TERM"][..]),
    ] {
        let mut r = start(&[], &[]).await;
        let (_p, mut audio, _) = live_call_on(&r.base, &dev_key(&r)).await;
        for s in signals {
            signal(&r, s);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(audio.expect("ended").await["reason"], "failed", "{name}");
        let status = tokio::time::timeout(Duration::from_secs(5), r.child.wait()).await;
        assert!(
            matches!(&status, Ok(Ok(s)) if s.success()),
            "{name}: {status:?}"
        );
    }
}

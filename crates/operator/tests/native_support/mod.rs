//! Shared helpers of the native integration tests: a real in-process
//! `audin-server` (dev mode), operators whose `getToken` calls the dev
//! token endpoint, the sim endpoints, a cuttable TCP proxy, and tone maths.
#![allow(dead_code, unreachable_pub)]

use audin_operator::core::{Event, TokenGrant};
use audin_operator::{AudinOperator, PcmFrame};
use audin_server::{Server, ServerConfig, ServerHandle};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

pub const MILANO: &str = "pn_dev_milano";
pub const ROMA: &str = "pn_dev_roma";
pub const MILANO_E164: &str = "+390299999999";
pub const CALLER: &str = "+14155550100";
/// How long a test waits for one expected thing.
pub const WAIT: Duration = Duration::from_secs(10);

/// Short ring timeout so `no_answer` tests are quick; protocol defaults otherwise.
pub fn server_config() -> ServerConfig {
    let mut c = ServerConfig::for_tests();
    c.ring_timeout = Duration::from_millis(1_500);
    c
}

pub async fn start_server(config: ServerConfig) -> ServerHandle {
    Server::start(config).await.expect("server starts")
}

/// An operator of the dev account whose tokens come from the server's
/// `POST /api/operator/token` (the seed README's example backend).
pub fn operator(core_url: &str, operator_ref: &str) -> AudinOperator {
    operator_with(core_url, operator_ref, |b| b)
}

pub fn operator_with(
    core_url: &str,
    operator_ref: &str,
    tweak: impl FnOnce(audin_operator::AudinOperatorBuilder) -> audin_operator::AudinOperatorBuilder,
) -> AudinOperator {
    let token_url = format!("{}/api/operator/token", core_url.trim_end_matches('/'));
    let operator_ref = operator_ref.to_string();
    let http = reqwest::Client::new();
    let builder = AudinOperator::builder(core_url).get_token(move || {
        let (http, url, operator_ref) = (http.clone(), token_url.clone(), operator_ref.clone());
        async move { fetch_token(&http, &url, &operator_ref).await }
    });
    tweak(builder).build().expect("operator builds")
}

pub async fn fetch_token(
    http: &reqwest::Client,
    url: &str,
    operator_ref: &str,
) -> Result<TokenGrant, String> {
    let response = http
        .post(url)
        .json(&json!({ "operatorRef": operator_ref }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("token endpoint answered {}", response.status()));
    }
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    Ok(TokenGrant {
        token: body["token"].as_str().unwrap_or_default().to_string(),
        expires_at: body["expiresAt"].as_str().map(str::to_string),
    })
}

/// Waits for the first event matching `pick`, skipping the others.
pub async fn wait_event<T>(
    events: &mut broadcast::Receiver<Event>,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(value) = pick(&event) {
                        return value;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream closed: {e}"),
            }
        }
    })
    .await;
    found.expect("expected event did not arrive in time")
}

/// Polls `check` every 50 ms until it is true (or panics after [`WAIT`]).
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

// ── the sim network ──────────────────────────────────────────────────────

pub async fn sim_call(url: &str, to: &str, behaviour: &str) -> String {
    let body: Value = reqwest::Client::new()
        .post(format!("{url}/dev/sim/calls"))
        .json(&json!({"from": CALLER, "to": to, "behaviour": behaviour}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["callSid"].as_str().expect("callSid").to_string()
}

pub async fn sim_status(url: &str, sid: &str) -> Value {
    reqwest::get(format!("{url}/dev/sim/calls/{sid}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn sim_hangup(url: &str, sid: &str) {
    let r = reqwest::Client::new()
        .post(format!("{url}/dev/sim/calls/{sid}/hangup"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

// ── tones ────────────────────────────────────────────────────────────────

/// 20 ms of a sine at `hz`, continuing from sample `n`.
pub fn tone_frame(hz: f64, n: &mut u64) -> PcmFrame {
    let mut frame = [0i16; 160];
    for s in &mut frame {
        let t = *n as f64 / 8_000.0;
        *s = (8_000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
        *n += 1;
    }
    frame
}

pub fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// Frequency estimate from zero crossings.
pub fn zero_crossing_hz(samples: &[i16]) -> f64 {
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    crossings as f64 / 2.0 / (samples.len() as f64 / 8_000.0)
}

/// Collects `frames` frames of far-end audio.
pub async fn hear(audio: &audin_operator::AudioIo, frames: usize) -> Vec<i16> {
    let mut heard = Vec::new();
    tokio::time::timeout(WAIT, async {
        while heard.len() < frames * 160 {
            match audio.recv_pcm().await {
                Some(pcm) => heard.extend_from_slice(&pcm),
                None => break,
            }
        }
    })
    .await
    .expect("audio in time");
    heard
}

/// Sends a tone for `frames` × 20 ms, paced in real time.
pub fn play_tone(audio: audin_operator::AudioIo, hz: f64, frames: usize) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..frames {
            tick.tick().await;
            audio.send_pcm(&tone_frame(hz, &mut n));
        }
    })
}

// ── a TCP proxy whose connections the test can cut or freeze ─────────────

struct Conn {
    path: String,
    frozen: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// Forwards 127.0.0.1:port → `target`, remembering each connection's
/// request path so a test can cut or freeze, say, only the audio socket.
pub struct Proxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
    blocked: Arc<Mutex<Vec<String>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let blocked: Arc<Mutex<Vec<String>>> = Arc::default();
        let registry = conns.clone();
        let blocklist = blocked.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let registry = registry.clone();
                let blocklist = blocklist.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut first = vec![0u8; 8192];
                    let n = client.read(&mut first).await.unwrap_or(0);
                    let line = String::from_utf8_lossy(&first[..n]);
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    if blocklist
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|b| path.starts_with(b))
                    {
                        return; // dropping both streams refuses the connection
                    }
                    if server.write_all(&first[..n]).await.is_err() {
                        return;
                    }
                    let frozen = Arc::new(AtomicBool::new(false));
                    let handle = tokio::spawn(pipe(client, server, frozen.clone()));
                    registry.lock().unwrap().push(Conn {
                        path,
                        frozen,
                        handle,
                    });
                });
            }
        });
        Proxy {
            addr,
            conns,
            blocked,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn live(&self, prefix: &str, act: impl Fn(&Conn)) -> usize {
        let conns = self.conns.lock().unwrap();
        let matching: Vec<&Conn> = conns
            .iter()
            .filter(|c| c.path.starts_with(prefix) && !c.handle.is_finished())
            .collect();
        matching.iter().for_each(|c| act(c));
        matching.len()
    }

    /// Abruptly drops the connections under `prefix` (no close frame).
    pub fn cut(&self, prefix: &str) -> usize {
        self.live(prefix, |c| c.handle.abort())
    }

    /// Refuses every new connection under `prefix` and cuts the live ones.
    pub fn block(&self, prefix: &str) -> usize {
        self.blocked.lock().unwrap().push(prefix.to_string());
        self.cut(prefix)
    }

    /// Keeps the connections under `prefix` open but forwards nothing any
    /// more: a half-open socket.
    pub fn freeze(&self, prefix: &str) -> usize {
        self.live(prefix, |c| c.frozen.store(true, Ordering::SeqCst))
    }

    /// Live connections under `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.live(prefix, |_| {})
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.handle.abort();
        }
    }
}

async fn pipe(client: TcpStream, server: TcpStream, frozen: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = forward(&mut client_read, &mut server_write, &frozen);
    let down = forward(&mut server_read, &mut client_write, &frozen);
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

async fn forward(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    frozen: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            // Swallow: the peer keeps a socket that never answers.
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

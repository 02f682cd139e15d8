//! Helpers shared by the reliability tests, the security tests and the soak:
//! tokens from the account endpoint, SDK operators, event waits, call
//! records, `/metrics`, and a raw WebSocket client for hostile inputs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use audin_operator::core::{Event, TokenGrant};
use audin_operator::{AudinOperator, Call};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

/// The dev account's numbers (`--dev`).
pub const MILANO: &str = "pn_dev_milano";
/// The second dev number.
pub const ROMA: &str = "pn_dev_roma";
/// Milano's E.164.
pub const MILANO_E164: &str = "+390299999999";
/// Roma's E.164.
pub const ROMA_E164: &str = "+390288888888";
/// A caller for inbound sim calls.
pub const CALLER: &str = "+14155550100";
/// Sim number that answers after 300 ms and echoes.
pub const SIM_ECHO: &str = "+15550100001";
/// Sim number that answers after 300 ms and plays a tone.
pub const SIM_TONE: &str = "+15550100002";

/// `POST /operator-sessions/token` with an account API key.
pub async fn account_token(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    operator_ref: &str,
    numbers: &[&str],
) -> Result<TokenGrant, String> {
    let response = http
        .post(format!("{base}/operator-sessions/token"))
        .header("X-API-Key", api_key)
        .json(&json!({ "operatorRef": operator_ref, "phoneNumberIds": numbers }))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("token request failed: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("token endpoint answered {status}"));
    }
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    Ok(TokenGrant {
        token: body["token"].as_str().unwrap_or_default().to_owned(),
        expires_at: body["expiresAt"].as_str().map(str::to_owned),
    })
}

/// Where an operator's `getToken` gets its tokens: the server's account
/// endpoint (always at `token_base`, not through a proxy) with `api_key`.
/// The key can be swapped (the dev key changes when a `--dev` server
/// restarts).
#[derive(Debug, Clone)]
pub struct TokenSource {
    /// Base URL of the token endpoint.
    pub token_base: Arc<Mutex<String>>,
    /// The account API key.
    pub api_key: Arc<Mutex<String>>,
    /// When each token was asked for, and whether it was issued.
    pub attempts: Arc<Mutex<Vec<(Instant, bool)>>>,
    http: reqwest::Client,
}

impl TokenSource {
    /// A source for this server and key.
    pub fn new(token_base: &str, api_key: &str) -> TokenSource {
        TokenSource {
            token_base: Arc::new(Mutex::new(token_base.to_owned())),
            api_key: Arc::new(Mutex::new(api_key.to_owned())),
            attempts: Arc::default(),
            http: reqwest::Client::new(),
        }
    }

    /// Uses another key from now on.
    pub fn set_key(&self, key: &str) {
        *self.api_key.lock().expect("key lock") = key.to_owned();
    }

    /// A token now.
    pub async fn token(&self, operator_ref: &str, numbers: &[&str]) -> Result<TokenGrant, String> {
        let base = self.token_base.lock().expect("base lock").clone();
        let key = self.api_key.lock().expect("key lock").clone();
        let at = Instant::now();
        let result = account_token(&self.http, &base, &key, operator_ref, numbers).await;
        self.attempts
            .lock()
            .expect("attempts lock")
            .push((at, result.is_ok()));
        result
    }

    /// The attempts made at or after `t`.
    pub fn attempts_since(&self, t: Instant) -> Vec<(Instant, bool)> {
        self.attempts
            .lock()
            .expect("attempts lock")
            .iter()
            .filter(|(at, _)| *at >= t)
            .copied()
            .collect()
    }
}

/// Short client timings used by the reliability tests.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Presence ping interval.
    pub heartbeat: Duration,
    /// Presence reconnect schedule.
    pub backoff: Vec<Duration>,
    /// Handshake / request timeout.
    pub request_timeout: Duration,
    /// `getToken` timeout.
    pub token_timeout: Duration,
    /// Audio reattach window (match the server's grace).
    pub reattach_window: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(300),
            backoff: [200, 400, 800].map(Duration::from_millis).to_vec(),
            request_timeout: Duration::from_millis(1_500),
            token_timeout: Duration::from_millis(1_000),
            reattach_window: Duration::from_millis(1_000),
        }
    }
}

/// An SDK operator for `core_url` whose tokens come from `tokens`.
pub fn operator(
    core_url: &str,
    tokens: &TokenSource,
    operator_ref: &str,
    numbers: &[&str],
    t: &Timings,
) -> AudinOperator {
    let tokens = tokens.clone();
    let operator_ref = operator_ref.to_owned();
    let numbers: Vec<String> = numbers.iter().map(|s| (*s).to_owned()).collect();
    AudinOperator::builder(core_url)
        .get_token(move || {
            let (tokens, operator_ref, numbers) =
                (tokens.clone(), operator_ref.clone(), numbers.clone());
            async move {
                let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
                tokens.token(&operator_ref, &refs).await
            }
        })
        .heartbeat_interval(t.heartbeat)
        .reconnect_backoff(t.backoff.clone())
        .request_timeout(t.request_timeout)
        .token_timeout(t.token_timeout)
        .audio_reattach_window(t.reattach_window)
        .build()
        .expect("operator builds")
}

/// An SDK operator of the account `api_key` on the server at `url` (its
/// sockets and its tokens both go there), online on every one of `numbers`
/// within `limit`, with its events recorded from before it went online.
pub async fn operator_online(
    url: &str,
    api_key: &str,
    operator_ref: &str,
    numbers: &[&str],
    limit: Duration,
) -> Result<(AudinOperator, EventLog)> {
    let tokens = TokenSource::new(url, api_key);
    let op = operator(url, &tokens, operator_ref, numbers, &Timings::default());
    let log = EventLog::record(&op);
    let availability = tokio::time::timeout(limit, op.go_online(numbers.iter().copied()))
        .await
        .context("goOnline timed out")??;
    if !availability.rejected.is_empty() {
        bail!("{operator_ref} not online on every number: {availability:?}");
    }
    Ok((op, log))
}

/// Every event with the time it was received.
#[derive(Debug, Clone, Default)]
pub struct EventLog(Arc<Mutex<Vec<(Instant, Event)>>>);

impl EventLog {
    /// Records every event of `op` from now on (a background task).
    pub fn record(op: &AudinOperator) -> EventLog {
        let log = EventLog::default();
        let mut rx = op.events();
        let sink = log.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => sink.0.lock().expect("log lock").push((Instant::now(), e)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
        log
    }

    /// A copy of the events so far.
    pub fn all(&self) -> Vec<(Instant, Event)> {
        self.0.lock().expect("log lock").clone()
    }

    /// Events since `t` matching `pick`.
    pub fn since<T>(
        &self,
        t: Instant,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Vec<(Instant, T)> {
        self.all()
            .into_iter()
            .filter(|(at, _)| *at >= t)
            .filter_map(|(at, e)| pick(&e).map(|v| (at, v)))
            .collect()
    }

    /// Waits (at most `limit`) for an event after `t` matching `pick`.
    pub async fn wait<T>(
        &self,
        t: Instant,
        limit: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<(Instant, T)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = self.since(t, &mut pick).into_iter().next() {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Polls `check` every 20 ms until it holds; false after `limit`.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts an inbound sim call (dev endpoint); returns its sid.
pub async fn sim_call(base: &str, from: &str, to: &str, behaviour: &str) -> Result<String> {
    let r = reqwest::Client::new()
        .post(format!("{base}/dev/sim/calls"))
        .json(&json!({"from": from, "to": to, "behaviour": behaviour}))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    if !status.is_success() {
        bail!("sim call answered {status}: {body}");
    }
    Ok(body["callSid"].as_str().context("callSid")?.to_owned())
}

/// The far end of a sim call hangs up.
pub async fn sim_hangup(base: &str, sid: &str) -> Result<()> {
    reqwest::Client::new()
        .post(format!("{base}/dev/sim/calls/{sid}/hangup"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    Ok(())
}

/// `GET /v1/calls?limit=…` with the API key.
pub async fn call_records(base: &str, api_key: &str, limit: u32) -> Result<Vec<Value>> {
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/calls?limit={limit}"))
        .header("X-API-Key", api_key)
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    if !status.is_success() {
        bail!("GET /v1/calls answered {status}: {body}");
    }
    Ok(body.as_array().cloned().unwrap_or_default())
}

/// The record of `sid`, if listed.
pub async fn call_record(base: &str, api_key: &str, sid: &str) -> Result<Option<Value>> {
    Ok(call_records(base, api_key, 1000)
        .await?
        .into_iter()
        .find(|r| r["callSid"] == sid))
}

/// `/metrics` as `name{labels}` → value.
pub async fn metrics(base: &str) -> Result<HashMap<String, f64>> {
    let text = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect())
}

/// Sum of the live-call gauges (`audin_calls{state=…}`).
pub fn live_calls(m: &HashMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("audin_calls{"))
        .map(|(_, v)| v)
        .sum()
}

/// A raw protocol WebSocket (no SDK), for hostile inputs.
#[derive(Debug)]
pub struct RawWs {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// How a raw socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code and reason.
    Code(u16, String),
    /// The connection ended without a close frame.
    Abrupt(String),
    /// Still open after the wait.
    StillOpen,
}

impl RawWs {
    /// Connects to `base` (`http://…`) + `path` offering the subprotocol,
    /// with an optional `Origin`. Err: the HTTP status and body of a refused
    /// handshake, or the error text.
    pub async fn connect(base: &str, path: &str, origin: Option<&str>) -> Result<RawWs, String> {
        let url = format!("{}{path}", base.replacen("http://", "ws://", 1));
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(audin_protocol::SUBPROTOCOL),
        );
        if let Some(o) = origin {
            req.headers_mut().insert(
                "Origin",
                HeaderValue::from_str(o).map_err(|e| e.to_string())?,
            );
        }
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20));
        match tokio_tungstenite::connect_async_with_config(req, Some(config), true).await {
            Ok((ws, _)) => Ok(RawWs { ws }),
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(format!("HTTP {} {body}", resp.status().as_u16()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends a text message (errors ignored: the peer may have closed).
    pub async fn send_text(&mut self, text: impl Into<String>) {
        let _ = self.ws.send(Message::text(text.into())).await;
    }

    /// Sends a JSON message.
    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, b: Vec<u8>) {
        let _ = self.ws.send(Message::binary(b)).await;
    }

    /// The next text message parsed as JSON (binary frames skipped); None
    /// on close or after `limit`.
    pub async fn recv_json(&mut self, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    return serde_json::from_str(&t).ok();
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                    return None;
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Waits for a message of this `type` (others skipped).
    pub async fn expect_type(&mut self, ty: &str, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let v = self.recv_json(left).await?;
            if v["type"] == ty {
                return Some(v);
            }
        }
    }

    /// Reads until the socket closes; collects the text messages seen.
    pub async fn until_closed(&mut self, limit: Duration) -> (Closed, Vec<Value>) {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return (Closed::StillOpen, seen);
            };
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return (Closed::StillOpen, seen),
                Ok(None) => return (Closed::Abrupt("stream ended".into()), seen),
                Ok(Some(Err(e))) => return (Closed::Abrupt(e.to_string()), seen),
                Ok(Some(Ok(Message::Close(f)))) => {
                    let (code, reason) = f
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return (Closed::Code(code, reason), seen);
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Ok(v) = serde_json::from_str(&t) {
                        seen.push(v);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// `hello` and wait for `welcome`.
    pub async fn hello(&mut self, token: &str) -> Option<Value> {
        self.send_json(json!({"type": "hello", "token": token}))
            .await;
        self.expect_type("welcome", Duration::from_secs(5)).await
    }
}

/// The peer address family used for loopback clients with another source
/// address (127.0.0.2 …): a reqwest client bound to it.
pub fn client_from(source: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source)
        .build()
        .expect("client builds")
}

/// `127.0.0.1:port` of an address (for restarting on the same port).
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The operator's microphone on `call`: a `hz` tone at `dbfs` (RMS), one
/// 20 ms frame every 20 ms, until the task is aborted.
pub fn play_tone(call: &Call, hz: f64, dbfs: f64) -> tokio::task::JoinHandle<()> {
    use crate::audio::{TELEPHONY_RATE, sine, to_mulaw};
    let audio = call.audio();
    tokio::spawn(async move {
        let tone = to_mulaw(&sine(hz, dbfs, Duration::from_secs(1), TELEPHONY_RATE));
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut offset = 0;
        loop {
            tick.tick().await;
            let mut frame = [0u8; 160];
            frame.copy_from_slice(&tone[offset..offset + 160]);
            audio.send_frame(frame);
            offset = (offset + 160) % tone.len();
        }
    })
}

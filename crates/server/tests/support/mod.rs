//! Shared helpers of the integration tests: an in-process server on
//! 127.0.0.1:0 with short timeouts, an HTTP client and WebSocket clients.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use audin_protocol::SUBPROTOCOL;
use audin_server::{Server, ServerConfig, ServerHandle, db};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any single expected message.
pub const WAIT: Duration = Duration::from_secs(5);

pub const MILANO: &str = "pn_dev_milano";
pub const ROMA: &str = "pn_dev_roma";
pub const MILANO_E164: &str = "+390299999999";
pub const ROMA_E164: &str = "+390288888888";

/// Test defaults: short ring, grace and auth timeouts; dev mode on.
pub fn config() -> ServerConfig {
    let mut c = ServerConfig::for_tests();
    c.ring_timeout = Duration::from_millis(500);
    c.audio_grace = Duration::from_millis(500);
    c.silence_timeout = Duration::from_secs(10);
    c.auth_timeout = Duration::from_secs(2);
    c
}

pub struct TestServer {
    pub handle: ServerHandle,
    pub http: reqwest::Client,
    pub key: String,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(config()).await
    }

    pub async fn with(cfg: ServerConfig) -> Self {
        let handle = Server::start(cfg).await.expect("server starts");
        let key = handle.dev_api_key.clone().unwrap_or_default();
        Self {
            handle,
            http: reqwest::Client::new(),
            key,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.url())
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.ws_url())
    }

    /// Issues a token through the public endpoint with the dev key.
    pub async fn token(&self, operator_ref: &str, pns: &[&str]) -> String {
        let r = self
            .http
            .post(self.url("/operator-sessions/token"))
            .header("X-API-Key", &self.key)
            .json(
                &json!({"operatorRef": operator_ref, "displayName": "Test", "phoneNumberIds": pns}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    /// A second account with one number: (account, api key, number id).
    pub async fn other_account(&self) -> (String, String, String) {
        self.handle
            .engine
            .db
            .call(|c| {
                let a = db::create_account(c, "Other")?;
                let k = db::create_api_key(c, &a, "")?;
                let n = db::add_number(c, &a, "+15557770000", "Other")?;
                Ok((a, k, n))
            })
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn calls(&self) -> Vec<Value> {
        let r = self
            .http
            .get(self.url("/v1/calls"))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// The record of one call, polling until it is closed.
    pub async fn ended_record(&self, sid: &str) -> Value {
        for _ in 0..100 {
            let rec = self.calls().await.into_iter().find(|c| c["callSid"] == sid);
            if let Some(r) = rec {
                if !r["endedAt"].is_null() {
                    return r;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("record {sid} never closed");
    }

    /// Starts an inbound sim call.
    pub async fn sim_call(&self, to: &str, behaviour: &str) -> String {
        let r = self
            .http
            .post(self.url("/dev/sim/calls"))
            .json(&json!({"from": "+14155550100", "to": to, "behaviour": behaviour}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        let v: Value = r.json().await.unwrap();
        v["callSid"].as_str().unwrap().to_owned()
    }

    pub async fn sim_status(&self, sid: &str) -> Value {
        self.get_json(&format!("/dev/sim/calls/{sid}")).await
    }

    /// Polls the sim status until `pred` holds.
    pub async fn sim_until(&self, sid: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..250 {
            let s = self.sim_status(sid).await;
            if pred(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "sim call {sid} never reached the expected state: {}",
            self.sim_status(sid).await
        );
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One unlabelled gauge or counter from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let m = self.metrics().await;
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {m}"))
    }

    /// A presence socket after `hello` (welcome checked).
    pub async fn presence(&self, operator_ref: &str, pns: &[&str]) -> (Ws, Value) {
        let token = self.token(operator_ref, pns).await;
        let mut ws = Ws::connect(&self.ws_url("/v1/operator/presence")).await;
        ws.send_json(json!({"type": "hello", "token": token, "client": "test/0"}))
            .await;
        let welcome = ws.expect("welcome").await;
        (ws, welcome)
    }

    /// A presence socket online on `pns`.
    pub async fn online(&self, operator_ref: &str, pns: &[&str]) -> Ws {
        let (mut ws, _) = self.presence(operator_ref, pns).await;
        ws.send_json(json!({"type": "goOnline", "phoneNumberIds": pns}))
            .await;
        let av = ws.expect("availability").await;
        assert_eq!(av["accepted"].as_array().unwrap().len(), pns.len(), "{av}");
        ws
    }

    /// `operator_ref` online on `number_id`, offered a sim call to
    /// `number` (`behaviour`) which it accepts: its presence socket, the
    /// call's sid and the `callAccepted` message.
    pub async fn accepted(
        &self,
        operator_ref: &str,
        number_id: &str,
        number: &str,
        behaviour: &str,
    ) -> (Ws, String, Value) {
        let mut op = self.online(operator_ref, &[number_id]).await;
        let sid = self.sim_call(number, behaviour).await;
        op.expect("callOffer").await;
        op.send_json(json!({"type": "accept", "callSid": sid}))
            .await;
        let accepted = op.expect("callAccepted").await;
        (op, sid, accepted)
    }

    /// An audio socket attached to `sid` (the `attached` message returned).
    pub async fn attach(&self, operator_ref: &str, sid: &str) -> (Ws, Value) {
        let token = self.token(operator_ref, &[MILANO, ROMA]).await;
        let mut ws = Ws::connect(&self.ws_url("/v1/operator/audio")).await;
        ws.send_json(json!({"type": "attach", "token": token, "callSid": sid}))
            .await;
        let attached = ws.expect("attached").await;
        (ws, attached)
    }

    /// Dials `to` from Milano; returns the call sid.
    pub async fn dial(&self, presence: &mut Ws, to: &str) -> String {
        presence
            .send_json(
                json!({"type": "dial", "requestId": "d1", "to": to, "callerId": MILANO_E164}),
            )
            .await;
        let acc = presence.expect("dialAccepted").await;
        assert_eq!(acc["requestId"], "d1");
        acc["callSid"].as_str().unwrap().to_owned()
    }
}

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What came off a socket.
#[derive(Debug)]
pub enum Got {
    Text(Value),
    Binary(Vec<u8>),
    Close(Option<u16>),
}

pub struct Ws {
    pub stream: Stream,
}

impl Ws {
    pub async fn connect(url: &str) -> Self {
        Self::try_connect(url, Some(SUBPROTOCOL), None)
            .await
            .expect("connects")
    }

    /// Connects with an optional subprotocol and Origin; Err(status) if the
    /// handshake is refused.
    pub async fn try_connect(
        url: &str,
        protocol: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Self, u16> {
        let mut req = url.into_client_request().unwrap();
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => Ok(Self { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: String) {
        self.stream.send(Message::Text(s.into())).await.unwrap();
    }

    pub async fn send_binary(&mut self, b: Vec<u8>) {
        self.stream
            .send(Message::Binary(Bytes::from(b)))
            .await
            .unwrap();
    }

    /// Next message of any kind (pings skipped); panics after [`WAIT`].
    pub async fn next(&mut self) -> Got {
        self.next_within(WAIT)
            .await
            .expect("timed out waiting for a message")
    }

    pub async fn next_within(&mut self, d: Duration) -> Option<Got> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            return Some(match msg {
                Some(Ok(Message::Text(t))) => Got::Text(serde_json::from_str(t.as_str()).unwrap()),
                Some(Ok(Message::Binary(b))) => Got::Binary(b.to_vec()),
                Some(Ok(Message::Close(f))) => Got::Close(f.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Got::Close(None),
            });
        }
    }

    /// Next text message (binary frames skipped).
    pub async fn text(&mut self) -> Value {
        loop {
            match self.next().await {
                Got::Text(v) => return v,
                Got::Binary(_) => continue,
                Got::Close(c) => panic!("socket closed ({c:?}) while waiting for a text message"),
            }
        }
    }

    /// Next text message, which must be of `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let v = self.text().await;
        assert_eq!(v["type"], ty, "expected {ty}, got {v}");
        v
    }

    /// Next `error` message, which must carry `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        v
    }

    /// Waits for the close frame (text and binary skipped); returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Got::Close(c) => return c,
                _ => continue,
            }
        }
    }

    /// Next binary frame (text messages are skipped).
    pub async fn frame(&mut self) -> Vec<u8> {
        loop {
            match self.next().await {
                Got::Binary(b) => return b,
                Got::Text(_) => continue,
                Got::Close(c) => panic!("closed ({c:?}) while waiting for audio"),
            }
        }
    }

    /// The next frame that is not mu-law silence (the sim echo sends
    /// silence while it has heard nothing).
    pub async fn sound_frame(&mut self) -> Vec<u8> {
        loop {
            let f = self.frame().await;
            if f.iter().any(|&b| b != 0xFF) {
                return f;
            }
        }
    }

    pub async fn close(&mut self) {
        let _ = self
            .stream
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: TCloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

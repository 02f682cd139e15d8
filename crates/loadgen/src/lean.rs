//! The lean generator (`audin-loadgen run --lean`): the wire protocol v1
//! spoken directly, without the SDK, so that the generator costs less CPU
//! than the server it measures and both fit on the same two cores.
//!
//! What it saves against the SDK mode, per frame and direction: the SDK's
//! frame queue and the wake-up of a second task. Instead:
//!
//! - **many calls per task**: a call's audio socket, once attached, is
//!   handed to one of a few *groups*; a group task owns up to
//!   [`CALLS_PER_GROUP`] sockets, writes each one's frame on one shared
//!   20 ms tick and reads the echoes of all of them as they come (a
//!   `SelectAll` polls only the sockets that woke);
//! - **one timer per group** instead of one per call (the groups' grids are
//!   spread over the 20 ms so that their writes do not all land at once);
//! - control messages (presence, attach, hang-up) are plain
//!   `audin-protocol` messages on a task per operator that sleeps between
//!   heartbeats.
//!
//! The frames and their accounting are the SDK mode's (`load::Tally`): the
//! same stamps, windows and figures, so the two modes' reports compare.
//! What the lean client does not do: reconnect, refresh tokens, reattach
//! audio. A dropped socket fails its call, which is what a load run should
//! report.

use crate::load::{CallResult, FRAME, Shared, Tally, fetch_token, post_sim_call, us};
use crate::server::Number;
use audin_protocol::{
    AUDIO_PATH, AudioClientMessage, AudioServerMessage, ClientMessage,
    DEFAULT_HEARTBEAT_INTERVAL_MS, EndReason, HangupReason, PRESENCE_PATH, SUBPROTOCOL,
    ServerMessage, Untrusted, decode_audio_server_message, decode_server_message,
};
use futures_util::stream::SelectAll;
use futures_util::{SinkExt, Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Audio sockets one group task serves.
pub const CALLS_PER_GROUP: usize = 64;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `http://host:port` + path → `ws://host:port/path`.
fn ws_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| {
            base.strip_prefix("http://")
                .map(|rest| format!("ws://{rest}"))
        })
        .unwrap_or_else(|| base.to_owned());
    format!("{base}{path}")
}

async fn connect(url: &str) -> Result<Ws, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    // The SDK's buffers: 4 KiB read buffer (zeroed per read), no write
    // buffering (one frame, one write).
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| format!("connecting {url}: {e}"))?;
    Ok(ws)
}

async fn send_text(ws: &mut Ws, json: String) -> Result<(), String> {
    ws.send(Message::text(json))
        .await
        .map_err(|e| format!("sending: {e}"))
}

/// The next text message of `ws`, decoded; binary frames are skipped.
async fn next_text<T>(
    ws: &mut Ws,
    deadline: Instant,
    decode: impl Fn(&str) -> Option<T>,
) -> Result<T, String> {
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("timed out".into()),
            Ok(None) => return Err("socket closed".into()),
            Ok(Some(Err(e))) => return Err(format!("socket failed: {e}")),
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Some(m) = decode(&t) {
                    return Ok(m);
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(format!(
                    "socket closed: {}",
                    frame.map_or(String::new(), |f| format!(
                        "{} {}",
                        u16::from(f.code),
                        Untrusted(&f.reason)
                    ))
                ));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// An operator on its own presence socket.
pub(crate) struct LeanOperator {
    /// Messages for the presence socket; dropping it closes the socket.
    out: mpsc::UnboundedSender<String>,
    /// What the server sent after going online, with when it arrived.
    inbox: Mutex<mpsc::UnboundedReceiver<(Instant, ServerMessage)>>,
    token: String,
    pub(crate) number: Number,
    task: tokio::task::JoinHandle<()>,
}

impl LeanOperator {
    /// Fetches a token, opens the presence socket (`hello` → `welcome`) and
    /// goes online on `number` (`goOnline` → `availability`).
    pub(crate) async fn go_online(
        url: &str,
        http: &reqwest::Client,
        token_url: &str,
        operator_ref: &str,
        number: Number,
    ) -> Result<LeanOperator, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let grant = fetch_token(http, token_url, operator_ref, &number.id).await?;
        let mut ws = connect(&ws_url(url, PRESENCE_PATH)).await?;
        let hello = ClientMessage::Hello {
            token: grant.token.clone(),
            client: Some("audin-loadgen-lean/0.1".into()),
        };
        send_text(&mut ws, hello.to_json()).await?;
        next_text(&mut ws, deadline, |t| match decode_server_message(t) {
            Ok(ServerMessage::Welcome { .. }) => Some(Ok(())),
            Ok(ServerMessage::Error { code, message, .. }) => Some(Err(format!(
                "hello refused: {} {}",
                code.as_str(),
                Untrusted(&message)
            ))),
            _ => None,
        })
        .await??;
        let online = ClientMessage::GoOnline {
            phone_number_ids: vec![number.id.clone()],
            request_id: Some("online".into()),
        };
        send_text(&mut ws, online.to_json()).await?;
        let accepted = next_text(&mut ws, deadline, |t| match decode_server_message(t) {
            Ok(ServerMessage::Availability { accepted, .. }) => Some(accepted),
            _ => None,
        })
        .await?;
        if !accepted.contains(&number.id) {
            return Err(format!("number {} refused", number.id));
        }
        let (out, out_rx) = mpsc::unbounded_channel();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let task = tokio::spawn(presence(ws, out_rx, inbox_tx));
        Ok(LeanOperator {
            out,
            inbox: Mutex::new(inbox),
            token: grant.token,
            number,
            task,
        })
    }

    fn send(&self, message: ClientMessage) {
        let _ = self.out.send(message.to_json());
    }

    /// Waits for the message `pick` picks (`Some(Ok)`) or fails on
    /// (`Some(Err)`), skipping the others.
    async fn wait<T>(
        &self,
        deadline: Instant,
        mut pick: impl FnMut(Instant, &ServerMessage) -> Option<Result<T, String>>,
    ) -> Result<T, String> {
        let mut inbox = self.inbox.lock().await;
        loop {
            match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Err(_) => return Err("timed out".into()),
                Ok(None) => return Err("presence socket closed".into()),
                Ok(Some((at, m))) => {
                    if let Some(picked) = pick(at, &m) {
                        return picked;
                    }
                }
            }
        }
    }

    /// Closes the presence socket (which takes the operator offline) and
    /// waits up to `within` for the close handshake.
    pub(crate) async fn go_offline(self, within: Duration) {
        drop(self.out);
        let _ = tokio::time::timeout(within, self.task).await;
    }
}

/// The presence socket's task: sends what the operator queues, answers for
/// its liveness with a `ping` per heartbeat interval, and passes every
/// server message on.
async fn presence(
    mut ws: Ws,
    mut out: mpsc::UnboundedReceiver<String>,
    inbox: mpsc::UnboundedSender<(Instant, ServerMessage)>,
) {
    let heartbeat = Duration::from_millis(DEFAULT_HEARTBEAT_INTERVAL_MS);
    let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    let mut id = 0;
    loop {
        tokio::select! {
            queued = out.recv() => match queued {
                Some(json) => if send_text(&mut ws, json).await.is_err() { return },
                None => break,
            },
            _ = ping.tick() => {
                id += 1;
                if send_text(&mut ws, ClientMessage::Ping { id }.to_json()).await.is_err() {
                    return;
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(m) = decode_server_message(&t) {
                        let _ = inbox.send((Instant::now(), m));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
        }
    }
    let _ = ws.close(None).await;
    while let Some(Ok(_)) = ws.next().await {}
}

/// The group tasks; calls are dealt to them in turn.
pub(crate) struct Groups {
    joins: Vec<mpsc::UnboundedSender<Joining>>,
}

impl Groups {
    /// Starts enough groups for `calls` calls, their 20 ms grids spread
    /// evenly from `start`.
    pub(crate) fn start(calls: usize, start: Instant, shared: &Arc<Shared>) -> Groups {
        let n = calls.div_ceil(CALLS_PER_GROUP).max(1);
        let joins = (0..n)
            .map(|g| {
                let (tx, rx) = mpsc::unbounded_channel();
                let grid = start + FRAME.mul_f64(g as f64 / n as f64);
                tokio::spawn(group(rx, grid, shared.clone()));
                tx
            })
            .collect();
        Groups { joins }
    }

    fn join(&self, idx: u32, joining: Joining) {
        let g = idx as usize % self.joins.len();
        let _ = self.joins[g].send(joining);
    }
}

/// A call whose audio socket is attached and answered, for a group.
struct Joining {
    idx: u32,
    ws: Ws,
    result: CallResult,
    done: oneshot::Sender<Outcome>,
}

/// What a group hands back after the drain.
struct Outcome {
    result: CallResult,
    /// The socket, if it is still open.
    ws: Option<Ws>,
}

enum Incoming {
    Frame(Bytes),
    Other,
    Closed,
}

/// One audio socket inside a group, yielding what it receives tagged with
/// its slot, and a last `Closed` when it ends.
struct Socket {
    slot: usize,
    ws: Ws,
    closed: bool,
}

impl Stream for Socket {
    type Item = (usize, Incoming);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.closed {
            return Poll::Ready(None);
        }
        let incoming = match futures_util::ready!(self.ws.poll_next_unpin(cx)) {
            Some(Ok(Message::Binary(b))) => Incoming::Frame(b),
            Some(Ok(_)) => Incoming::Other,
            Some(Err(_)) | None => {
                self.closed = true;
                Incoming::Closed
            }
        };
        Poll::Ready(Some((self.slot, incoming)))
    }
}

struct Member {
    tally: Tally,
    result: CallResult,
    done: oneshot::Sender<Outcome>,
}

/// A group task: on each tick of its grid every member sends its frame;
/// echoes are accounted as they arrive; at the drain's end every member
/// gets its result and socket back.
async fn group(mut joins: mpsc::UnboundedReceiver<Joining>, grid: Instant, shared: Arc<Shared>) {
    let mut members: Vec<Member> = Vec::new();
    let mut sockets: SelectAll<Socket> = SelectAll::new();
    let mut tick = tokio::time::interval_at(grid, FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut ticks = 0u32;
    let drain = tokio::time::sleep_until(shared.drain_end);
    tokio::pin!(drain);
    loop {
        tokio::select! {
            Some(j) = joins.recv() => {
                let slot = members.len();
                members.push(Member {
                    tally: Tally::new(j.idx, &shared),
                    result: j.result,
                    done: j.done,
                });
                sockets.push(Socket { slot, ws: j.ws, closed: false });
            }
            _ = tick.tick() => {
                let due = grid + FRAME * ticks;
                ticks += 1;
                for socket in sockets.iter_mut().filter(|s| !s.closed) {
                    let m = &mut members[socket.slot];
                    if let Some(frame) = m.tally.next_frame(due, &mut m.result) {
                        // A failed write shows as the socket's close on read.
                        let _ = socket.ws.send(Message::binary(frame.to_vec())).await;
                    }
                }
            }
            Some((slot, incoming)) = sockets.next() => {
                if let Incoming::Frame(frame) = incoming {
                    let m = &mut members[slot];
                    m.tally.echoed(&frame, &mut m.result);
                }
            }
            () = &mut drain => break,
        }
    }
    // Every member gets its result back, with its socket if still open.
    let mut open: Vec<Option<Ws>> = members.iter().map(|_| None).collect();
    for socket in sockets.into_iter().filter(|s| !s.closed) {
        open[socket.slot] = Some(socket.ws);
    }
    for (m, ws) in members.into_iter().zip(open) {
        let _ = m.done.send(Outcome {
            result: m.result,
            ws,
        });
    }
}

/// One call through the lean client: set up (inbound: the sim calls the
/// operator's number and the operator accepts; outbound: `dial`), attach
/// the audio socket with the call's ticket, run the media in a group, hang
/// up and check the end reason.
pub(crate) async fn call_task(
    idx: u32,
    inbound: bool,
    op: Arc<LeanOperator>,
    groups: Arc<Groups>,
    shared: Arc<Shared>,
) -> CallResult {
    let mut r = CallResult {
        inbound,
        ..CallResult::default()
    };
    let deadline = Instant::now() + shared.cfg.setup_timeout;
    let t0 = Instant::now();
    let set_up = if inbound {
        inbound_setup(&op, &shared, deadline, t0, &mut r).await
    } else {
        outbound_setup(&op, &shared, deadline, t0, &mut r).await
    };
    let ws = match set_up {
        Ok(ws) => ws,
        Err(e) => {
            r.error = Some(format!("{} call {idx}: {e}", direction(inbound)));
            return r;
        }
    };
    r.setup_us = Some(us(t0.elapsed()));
    let (done, outcome) = oneshot::channel();
    shared.active.fetch_add(1, Ordering::Relaxed);
    groups.join(
        idx,
        Joining {
            idx,
            ws,
            result: r,
            done,
        },
    );
    let outcome = outcome.await;
    shared.active.fetch_sub(1, Ordering::Relaxed);
    let Ok(Outcome { mut result, ws }) = outcome else {
        return CallResult {
            inbound,
            error: Some(format!("call {idx}: its group task stopped")),
            ..CallResult::default()
        };
    };
    let Some(mut ws) = ws else {
        result.error = Some(format!(
            "call {idx}: its audio socket closed before the load generator hung up"
        ));
        return result;
    };
    if let Err(e) = hang_up(&mut ws).await {
        result.error = Some(format!("call {idx}: {e}"));
    }
    result
}

fn direction(inbound: bool) -> &'static str {
    if inbound { "inbound" } else { "outbound" }
}

async fn inbound_setup(
    op: &LeanOperator,
    shared: &Shared,
    deadline: Instant,
    t0: Instant,
    r: &mut CallResult,
) -> Result<Ws, String> {
    let sid = post_sim_call(shared, &op.number.e164).await?;
    let offered = op
        .wait(deadline, |at, m| match m {
            ServerMessage::CallOffer { call_sid, .. } if *call_sid == sid => Some(Ok(at)),
            _ => None,
        })
        .await
        .map_err(|e| format!("{sid}: waiting for the offer: {e}"))?;
    r.post_to_offer_us = Some(us(offered - t0));
    op.send(ClientMessage::Accept {
        call_sid: sid.clone(),
    });
    let ticket = op
        .wait(deadline, |_, m| match m {
            ServerMessage::CallAccepted { call_sid, attach } if *call_sid == sid => {
                Some(Ok(attach.attach_ticket.clone()))
            }
            ServerMessage::CallEnded { call_sid, reason } if *call_sid == sid => {
                Some(Err(format!("ended {} instead", reason.as_str())))
            }
            _ => None,
        })
        .await
        .map_err(|e| format!("{sid}: accepting: {e}"))?;
    let ws = attach(op, shared, &sid, ticket, deadline).await?;
    r.offer_to_started_us = Some(us(offered.elapsed()));
    Ok(ws)
}

async fn outbound_setup(
    op: &LeanOperator,
    shared: &Shared,
    deadline: Instant,
    t0: Instant,
    r: &mut CallResult,
) -> Result<Ws, String> {
    op.send(ClientMessage::Dial {
        request_id: "dial".into(),
        to: shared.cfg.dial.clone(),
        caller_id: op.number.e164.clone(),
    });
    let (sid, ticket) = op
        .wait(deadline, |_, m| match m {
            ServerMessage::DialAccepted {
                call_sid, attach, ..
            } => Some(Ok((call_sid.clone(), attach.attach_ticket.clone()))),
            ServerMessage::Error { code, message, .. } => Some(Err(format!(
                "dial refused: {} {}",
                code.as_str(),
                Untrusted(message)
            ))),
            _ => None,
        })
        .await?;
    r.dial_to_accepted_us = Some(us(t0.elapsed()));
    attach(op, shared, &sid, ticket, deadline).await
}

/// Opens the call's audio socket, attaches (with the ticket when the
/// server gave one) and waits until the call is answered.
async fn attach(
    op: &LeanOperator,
    shared: &Shared,
    sid: &str,
    ticket: Option<String>,
    deadline: Instant,
) -> Result<Ws, String> {
    let mut ws = connect(&ws_url(&shared.url, AUDIO_PATH)).await?;
    let attach = AudioClientMessage::Attach {
        token: ticket.unwrap_or_else(|| op.token.clone()),
        call_sid: sid.to_owned(),
    };
    send_text(&mut ws, attach.to_json()).await?;
    let mut answered = false;
    while !answered {
        answered = next_text(&mut ws, deadline, |t| {
            match decode_audio_server_message(t) {
                Ok(AudioServerMessage::Attached { answered, .. }) => Some(Ok(answered)),
                Ok(AudioServerMessage::Answered { .. }) => Some(Ok(true)),
                Ok(AudioServerMessage::Ended { reason, .. }) => Some(Err(format!(
                    "{sid} ended {} while setting up",
                    reason.as_str()
                ))),
                Ok(AudioServerMessage::Error { code, message }) => Some(Err(format!(
                    "{sid}: attach refused: {} {}",
                    code.as_str(),
                    Untrusted(&message)
                ))),
                _ => None,
            }
        })
        .await
        .map_err(|e| format!("{sid}: attaching: {e}"))??;
    }
    Ok(ws)
}

/// Sends `hangup` on the audio socket and checks that the call ends
/// `hangup`; then completes the close handshake.
async fn hang_up(ws: &mut Ws) -> Result<(), String> {
    let hangup = AudioClientMessage::Hangup {
        reason: Some(HangupReason::Hangup),
    };
    send_text(ws, hangup.to_json()).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let reason = next_text(ws, deadline, |t| match decode_audio_server_message(t) {
        Ok(AudioServerMessage::Ended { reason, .. }) => Some(reason),
        _ => None,
    })
    .await
    .map_err(|e| format!("waiting for the end after hangup: {e}"))?;
    if reason != EndReason::Hangup {
        return Err(format!("ended {} after hangup", reason.as_str()));
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ws_url;

    #[test]
    fn service_urls_become_socket_urls() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080/", "/v1/operator/audio"),
            "ws://127.0.0.1:8080/v1/operator/audio"
        );
        assert_eq!(
            ws_url("https://voice.example.com", "/v1/operator/presence"),
            "wss://voice.example.com/v1/operator/presence"
        );
    }
}

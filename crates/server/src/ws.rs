//! The WebSocket layer, in one place so the stack can be swapped (e.g. for
//! fastwebsockets) without touching the presence or audio logic.
//!
//! What goes out waits in the connection's [`Outbox`]: a bounded control
//! queue (a peer that cannot keep up is dropped) and an audio queue of at
//! most [`AUDIO_QUEUE_FRAMES`] frames that drops the oldest frame when
//! full. Who writes it depends on the kind:
//! - an **audio** socket has one task: the session task, inside
//!   [`WsConn::recv`], writes whatever is queued and reads (a frame costs
//!   no task hand-off on the way out: its session is waiting in `recv`
//!   anyway, every 20 ms);
//! - a **presence** socket has a writer task of its own, so an offer goes
//!   out at once even while its session awaits the store or the routing.
//!
//! Queued audio frames go out in one write. Buffers are small (4 KiB)
//! instead of tungstenite's 128 KiB default.
//!
//! A connection is a message stream and sink, so the same sessions also run
//! over [`WsConn::in_memory`] (no socket, no HTTP): the `server_messages`
//! fuzz target drives the presence and audio logic that way.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use audin_protocol::{CloseCode, ErrorBody, ErrorCode, MAX_TEXT_MESSAGE_BYTES, SUBPROTOCOL};
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc, watch};

use crate::metrics::Metrics;

/// Read buffer per connection.
const READ_BUFFER: usize = 4 * 1024;
/// Write buffer per connection.
const WRITE_BUFFER: usize = 4 * 1024;
/// Hard cap of the write buffer (a few messages).
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// Largest message the WebSocket layer assembles: the protocol's 16 KiB.
/// A larger one ends the read side; the session then answers
/// `MESSAGE_TOO_LARGE` and closes with 1009.
const MAX_MESSAGE: usize = MAX_TEXT_MESSAGE_BYTES;
/// How long a connection whose read side failed is kept open after the
/// close frame went out, so the peer reads it before the TCP reset that
/// unread input causes.
const LINGER: Duration = Duration::from_secs(1);
/// Frames queued per direction for a slow peer.
pub const AUDIO_QUEUE_FRAMES: usize = 10;
/// Control messages queued for a peer before it is considered stuck.
const CONTROL_QUEUE: usize = 64;
/// Longest a single write may take before the peer is considered stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The reading half of a connection.
type MessageStream = Pin<Box<dyn Stream<Item = Result<Message, axum::Error>> + Send>>;
/// The writing half of a connection.
type MessageSink = Pin<Box<dyn Sink<Message, Error = axum::Error> + Send>>;

/// Which socket this is (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/operator/presence`.
    Presence,
    /// `/v1/operator/audio`.
    Audio,
}

/// Checks the handshake: the subprotocol must be offered. Returns the
/// configured upgrade, or the 400 answer.
#[allow(clippy::result_large_err)]
pub fn prepare(ws: WebSocketUpgrade, headers: &HeaderMap) -> Result<WebSocketUpgrade, Response> {
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        let body = ErrorBody::new(
            ErrorCode::UnsupportedProtocol,
            format!("the WebSocket subprotocol {SUBPROTOCOL} must be offered"),
        );
        return Err((StatusCode::BAD_REQUEST, axum::Json(body)).into_response());
    }
    Ok(ws
        .protocols([SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE))
}

/// Upgrades a socket of either kind: the subprotocol is checked before the
/// upgrade (400 otherwise); after it, a disallowed `Origin` is refused with
/// `error` `FORBIDDEN` and close 1008, anything else goes to `session`.
pub fn accept<F, Fut>(
    ws: WebSocketUpgrade,
    headers: &HeaderMap,
    origin_allowed: bool,
    metrics: Arc<Metrics>,
    peer: std::net::SocketAddr,
    kind: Kind,
    session: F,
) -> Response
where
    F: FnOnce(WsConn) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let ws = match prepare(ws, headers) {
        Ok(ws) => ws,
        Err(resp) => return resp,
    };
    ws.on_upgrade(move |socket| async move {
        let mut conn = WsConn::start(socket, kind, metrics);
        if !origin_allowed {
            tracing::info!(%peer, ?kind, "socket from a disallowed origin");
            // Both sockets' `error` messages have this shape.
            let error = audin_protocol::ServerMessage::Error {
                code: ErrorCode::Forbidden,
                message: "origin not allowed".into(),
                request_id: None,
                call_sid: None,
            };
            conn.close_with(
                Some(error.to_json()),
                CloseCode::PolicyViolation,
                "FORBIDDEN",
            )
            .await;
            return;
        }
        session(conn).await;
    })
}

/// A drop-oldest queue of audio frames.
#[derive(Debug)]
pub struct FrameQueue {
    frames: Mutex<VecDeque<Bytes>>,
    notify: Notify,
    cap: usize,
}

impl FrameQueue {
    /// A queue holding at most `cap` frames.
    pub fn new(cap: usize) -> Self {
        Self {
            frames: Mutex::new(VecDeque::with_capacity(cap)),
            notify: Notify::new(),
            cap,
        }
    }

    /// Pushes a frame; returns `true` if the oldest frame was dropped.
    pub fn push(&self, frame: Bytes) -> bool {
        let dropped = {
            let mut q = self.frames.lock().expect("frame queue lock");
            let dropped = if q.len() >= self.cap {
                q.pop_front();
                true
            } else {
                false
            };
            q.push_back(frame);
            dropped
        };
        self.notify.notify_one();
        dropped
    }

    /// Takes the oldest frame, if any.
    pub fn pop(&self) -> Option<Bytes> {
        self.frames.lock().expect("frame queue lock").pop_front()
    }

    /// Waits until a frame is pushed (returns at once if one is queued).
    pub async fn ready(&self) {
        loop {
            let notified = self.notify.notified();
            if !self.frames.lock().expect("frame queue lock").is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Wakes the consumer as a push would (see [`Outbox`]: its audio
    /// queue's signal is the connection's one wake-up).
    fn wake(&self) {
        self.notify.notify_one();
    }

    /// Waits for a push or [`FrameQueue::wake`] since the last wait (at
    /// once if one came meanwhile).
    async fn woken(&self) {
        self.notify.notified().await;
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.frames.lock().expect("frame queue lock").is_empty()
    }

    /// Drops everything queued.
    pub fn clear(&self) {
        self.frames.lock().expect("frame queue lock").clear();
    }
}

enum Out {
    Text(String),
    Close(u16, String),
}

#[derive(Debug)]
struct Shared {
    /// Audio to send; its signal also tells of control messages and of a
    /// kill, so a writer waits on one thing.
    audio: FrameQueue,
    /// The peer is cut off ([`Outbox::send_text`] found its queue full).
    killed: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Shared {
    /// Cuts the peer off: the writer stops at its next look.
    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.audio.wake();
    }

    /// Resolves once the peer is cut off.
    async fn killed(&self) {
        while !self.killed.load(Ordering::Acquire) {
            self.audio.woken().await;
        }
    }
}

/// The sending half of a connection; cheap to clone and safe to use from
/// any task. Nothing here ever waits for the peer.
#[derive(Clone, Debug)]
pub struct Outbox {
    ctrl: mpsc::Sender<Out>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Out::Text(_) => f.write_str("Text"),
            Out::Close(c, _) => write!(f, "Close({c})"),
        }
    }
}

impl Outbox {
    /// Queues a text message. A peer whose control queue is full is cut off.
    pub fn send_text(&self, text: String) {
        match self.ctrl.try_send(Out::Text(text)) {
            Ok(()) => self.shared.audio.wake(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("peer cannot keep up with control messages; dropping it");
                self.shared.kill();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Queues a close frame after whatever is queued; the connection ends
    /// once it is sent.
    pub fn close(&self, code: CloseCode, reason: &str) {
        match self
            .ctrl
            .try_send(Out::Close(code.code(), reason.to_owned()))
        {
            Ok(()) => self.shared.audio.wake(),
            Err(mpsc::error::TrySendError::Full(_)) => self.shared.kill(),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Queues an audio frame, dropping the oldest one beyond the limit.
    pub fn push_audio(&self, frame: Bytes) {
        Metrics::inc(&self.shared.metrics.frames_to_operator);
        if self.shared.audio.push(frame) {
            Metrics::inc(&self.shared.metrics.frames_dropped);
        }
    }

    /// Whether the connection is still being written to.
    pub fn is_open(&self) -> bool {
        !self.ctrl.is_closed()
    }
}

/// What the session task reads.
#[derive(Debug)]
pub enum Incoming {
    /// A text message within the size limit.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A message over the size limit: the session must close with 1009.
    TooLarge(usize),
    /// The connection is over (peer closed, error, or our close was sent).
    Closed,
}

/// Who writes the outbox (see the module docs).
enum Io {
    /// A writer task; `done` once it has stopped.
    Task { done: watch::Receiver<bool> },
    /// The session task itself, inside [`WsConn::recv`].
    Inline(Box<Writer>),
}

/// The reading half plus the connection's outbox.
pub struct WsConn {
    stream: MessageStream,
    io: Io,
    outbox: Outbox,
    kind: Kind,
    finished: bool,
    read_failed: bool,
    /// When anything at all (pings included) last arrived.
    last_rx: tokio::time::Instant,
    /// The silence timer of [`WsConn::recv_or_silent`], kept across calls
    /// and moved only when it fires: re-armed per message, it cost a timer
    /// insertion and removal per audio frame.
    quiet: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConn")
            .field("kind", &self.kind)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The client's end of a [`WsConn::in_memory`] connection.
#[derive(Debug)]
pub struct MemoryPeer {
    /// Messages to the server; dropping it ends the server's read side
    /// like a TCP EOF.
    pub to_server: mpsc::UnboundedSender<Message>,
    /// What the server wrote, close frame included; `None` once the
    /// server's writer is gone.
    pub from_server: mpsc::UnboundedReceiver<Message>,
}

impl WsConn {
    /// Starts the writer task for an upgraded socket.
    pub fn start(socket: WebSocket, kind: Kind, metrics: Arc<Metrics>) -> Self {
        let (sink, stream) = socket.split();
        Self::from_parts(Box::pin(sink), Box::pin(stream), kind, metrics)
    }

    /// A connection without a socket: the server side (hand it to a
    /// session, e.g. [`crate::presence::run`]) and the client's end. Counts
    /// in the socket gauges like a real one. Needs a tokio runtime.
    pub fn in_memory(kind: Kind, metrics: Arc<Metrics>) -> (Self, MemoryPeer) {
        let (to_server, inbound) = mpsc::unbounded_channel::<Message>();
        let (outbound, from_server) = mpsc::unbounded_channel::<Message>();
        let stream = futures_util::stream::unfold(inbound, |mut rx| async move {
            rx.recv().await.map(|m| (Ok(m), rx))
        });
        let sink = futures_util::sink::unfold(outbound, |tx, msg: Message| async move {
            tx.send(msg).map_err(|_| {
                axum::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            })?;
            Ok::<_, axum::Error>(tx)
        });
        let conn = Self::from_parts(Box::pin(sink), Box::pin(stream), kind, metrics);
        (
            conn,
            MemoryPeer {
                to_server,
                from_server,
            },
        )
    }

    fn from_parts(
        sink: MessageSink,
        stream: MessageStream,
        kind: Kind,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (ctrl_tx, ctrl_rx) = mpsc::channel(CONTROL_QUEUE);
        let shared = Arc::new(Shared {
            audio: FrameQueue::new(AUDIO_QUEUE_FRAMES),
            killed: AtomicBool::new(false),
            metrics: metrics.clone(),
        });
        match kind {
            Kind::Presence => metrics
                .presence_sockets
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            Kind::Audio => metrics
                .audio_sockets
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let writer = Writer {
            sink,
            ctrl: ctrl_rx,
            shared: shared.clone(),
        };
        let io = match kind {
            Kind::Audio => Io::Inline(Box::new(writer)),
            Kind::Presence => {
                let (done_tx, done_rx) = watch::channel(false);
                tokio::spawn(writer.run(done_tx));
                Io::Task { done: done_rx }
            }
        };
        Self {
            stream,
            io,
            outbox: Outbox {
                ctrl: ctrl_tx,
                shared,
            },
            kind,
            finished: false,
            read_failed: false,
            last_rx: tokio::time::Instant::now(),
            quiet: None,
        }
    }

    /// The connection's outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Reads the next message. Pings are answered by the stack.
    pub async fn recv(&mut self) -> Incoming {
        if self.finished {
            return Incoming::Closed;
        }
        loop {
            let Some(msg) = self.next_read().await else {
                self.finished = true;
                return Incoming::Closed;
            };
            if let Some(Ok(_)) = &msg {
                self.last_rx = tokio::time::Instant::now();
            }
            match msg {
                Some(Ok(Message::Text(t))) => {
                    if t.len() > MAX_TEXT_MESSAGE_BYTES {
                        return Incoming::TooLarge(t.len());
                    }
                    return Incoming::Text(t);
                }
                Some(Ok(Message::Binary(b))) => {
                    if b.len() > MAX_TEXT_MESSAGE_BYTES {
                        return Incoming::TooLarge(b.len());
                    }
                    return Incoming::Binary(b);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => {
                    self.finished = true;
                    return Incoming::Closed;
                }
                Some(Err(e)) => {
                    let text = e.to_string();
                    if text.contains("Space limit exceeded")
                        || text.contains("too long")
                        || text.contains("Capacity")
                    {
                        self.read_failed = true;
                        return Incoming::TooLarge(MAX_MESSAGE + 1);
                    }
                    // tungstenite's `Error::Utf8`: a text frame that is not
                    // UTF-8. RFC 6455 §7.4.1 closes that with 1007 (without
                    // this the socket was dropped and the peer saw 1005).
                    if text.starts_with("UTF-8 encoding error") {
                        tracing::debug!(kind = ?self.kind, "text frame is not valid UTF-8");
                        self.read_failed = true;
                        self.close_invalid_utf8().await;
                        return Incoming::Closed;
                    }
                    // The text may quote the peer's bytes.
                    let text = audin_protocol::escape_unsafe(&text);
                    tracing::debug!(kind = ?self.kind, error = %text, "socket read error");
                    self.finished = true;
                    return Incoming::Closed;
                }
            }
        }
    }

    /// The next thing read off the socket (`None` from the stream: it
    /// ended); `None` once our side is done: the close frame went out, the
    /// peer could not be written to, or it was cut off. Inline, writes
    /// what is queued first; a write is never raced against a read.
    async fn next_read(&mut self) -> Option<Option<Result<Message, axum::Error>>> {
        let writer = match &mut self.io {
            Io::Task { done } => {
                return tokio::select! {
                    _ = done.wait_for(|d| *d) => None,
                    msg = self.stream.next() => Some(msg),
                };
            }
            Io::Inline(writer) => writer,
        };
        loop {
            // Whatever is queued goes out before the next read.
            if let Some(event) = writer.ready() {
                if !writer.handle(event).await {
                    writer.finish().await;
                    return None;
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = writer.shared.audio.woken() => {}
                msg = self.stream.next() => return Some(msg),
            }
        }
    }

    /// Whether our side of the connection is done (see [`Self::next_read`]).
    async fn writer_done(&mut self) {
        match &mut self.io {
            Io::Task { done } => {
                let _ = done.wait_for(|d| *d).await;
            }
            // Writes what is queued, the close frame last.
            Io::Inline(_) => while self.next_read().await.is_some() {},
        }
    }

    /// Answers a text frame that is not UTF-8: `error` `INVALID_JSON` (JSON
    /// text is UTF-8), then close 1007, the same on both sockets and before
    /// or after authentication.
    async fn close_invalid_utf8(&mut self) {
        // Both sockets' `error` messages have this shape.
        let error = audin_protocol::ServerMessage::Error {
            code: ErrorCode::InvalidJson,
            message: "a text message is not valid UTF-8".into(),
            request_id: None,
            call_sid: None,
        };
        self.close_with(
            Some(error.to_json()),
            CloseCode::InvalidPayload,
            "INVALID_JSON",
        )
        .await;
    }

    /// Like [`WsConn::recv`], but `None` once nothing at all (not even a
    /// ping) has arrived for `limit`: the path may be half-open.
    pub async fn recv_or_silent(&mut self, limit: Duration) -> Option<Incoming> {
        let mut quiet = self
            .quiet
            .take()
            .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(self.last_rx + limit)));
        let got = loop {
            tokio::select! {
                inc = self.recv() => break Some(inc),
                _ = quiet.as_mut() => {
                    // Messages since the timer was set moved the deadline:
                    // only now is it moved too.
                    let quiet_until = self.last_rx + limit;
                    if quiet_until <= tokio::time::Instant::now() {
                        break None;
                    }
                    quiet.as_mut().reset(quiet_until);
                }
            }
        };
        self.quiet = Some(quiet);
        got
    }

    /// Sends `error` as JSON then closes with `code`, and waits (briefly)
    /// for the writer to flush.
    pub async fn close_with(&mut self, error_json: Option<String>, code: CloseCode, reason: &str) {
        if let Some(e) = error_json {
            self.outbox.send_text(e);
        }
        self.outbox.close(code, reason);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.writer_done()).await;
        self.finished = true;
        if self.read_failed {
            tokio::time::sleep(LINGER).await;
            return;
        }
        // Complete the closing handshake: read and discard until the peer's
        // close frame or EOF. Dropping a socket with unread input makes the
        // kernel answer with a reset, which can destroy our close frame
        // before the peer reads it (and with it the close code).
        let drain = async {
            while let Some(Ok(msg)) = self.stream.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

impl Drop for WsConn {
    fn drop(&mut self) {
        // Stops the writer if it is still running (e.g. the session ended
        // without a close frame).
        self.outbox.shared.kill();
        let m = &self.outbox.shared.metrics;
        match self.kind {
            Kind::Presence => m
                .presence_sockets
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed),
            Kind::Audio => m
                .audio_sockets
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed),
        };
    }
}

/// What woke a writer.
enum Wake {
    /// A control message (`None`: every outbox is gone).
    Out(Option<Out>),
    /// Audio is queued.
    Audio,
    /// The peer is cut off ([`Outbox::send_text`] found its queue full).
    Kill,
}

/// The writing half and the queues it drains.
struct Writer {
    sink: MessageSink,
    ctrl: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
}

impl Writer {
    /// The writer task of a presence socket.
    async fn run(mut self, done: watch::Sender<bool>) {
        let shared = self.shared.clone();
        loop {
            let Some(event) = self.ready() else {
                shared.audio.woken().await;
                continue;
            };
            // A peer cut off (or a session gone) mid-write is dropped at
            // once, not after the write's timeout. Wake-ups consumed here
            // are not lost: `ready` looks at everything before each wait.
            let go_on = tokio::select! {
                biased;
                _ = shared.killed() => false,
                go_on = self.handle(event) => go_on,
            };
            if !go_on {
                break;
            }
        }
        // The session's reads stop before the socket closes.
        let _ = done.send(true);
        self.finish().await;
    }

    /// What there is to do now, in order: a kill, a control message, audio.
    /// Checked before every wait, so a wake-up is never missed (the signal
    /// keeps one permit).
    fn ready(&mut self) -> Option<Wake> {
        if self.shared.killed.load(Ordering::Acquire) {
            return Some(Wake::Kill);
        }
        match self.ctrl.try_recv() {
            Ok(out) => Some(Wake::Out(Some(out))),
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Wake::Out(None)),
            Err(mpsc::error::TryRecvError::Empty) => {
                (!self.shared.audio.is_empty()).then_some(Wake::Audio)
            }
        }
    }

    /// Writes what woke it; false once the connection is over for us.
    async fn handle(&mut self, event: Wake) -> bool {
        let msg = match event {
            Wake::Out(Some(Out::Text(t))) => Message::Text(t.into()),
            Wake::Out(Some(Out::Close(code, reason))) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = tokio::time::timeout(
                    WRITE_TIMEOUT,
                    self.sink.send(Message::Close(Some(frame))),
                )
                .await;
                return false;
            }
            Wake::Out(None) | Wake::Kill => return false,
            Wake::Audio => match self.shared.audio.pop() {
                Some(f) => Message::Binary(f),
                None => return true,
            },
        };
        // Frames queued behind this one go out in the same write: one
        // syscall for a burst (a peer catching up, a loaded server).
        let (sink, audio) = (&mut self.sink, &self.shared.audio);
        let batch = async {
            sink.feed(msg).await?;
            while let Some(f) = audio.pop() {
                sink.feed(Message::Binary(f)).await?;
            }
            sink.flush().await
        };
        matches!(tokio::time::timeout(WRITE_TIMEOUT, batch).await, Ok(Ok(())))
    }

    /// Refuses further messages, drops queued audio, closes the socket.
    async fn finish(&mut self) {
        self.ctrl.close();
        self.shared.audio.clear();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.sink.close()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of writing (the audio socket's session, the presence
    /// socket's writer task): what is queued goes out in order, audio
    /// after control messages; a peer whose control queue overflows is cut
    /// off and the session reads `Closed`.
    #[tokio::test]
    async fn queued_messages_go_out_and_an_overflowing_peer_is_cut_off() {
        for kind in [Kind::Audio, Kind::Presence] {
            let (mut conn, mut peer) = WsConn::in_memory(kind, Arc::new(Metrics::default()));
            let outbox = conn.outbox().clone();
            outbox.push_audio(Bytes::from_static(&[1; 160]));
            outbox.send_text("hello".into());
            peer.to_server.send(Message::Text("ping".into())).unwrap();
            // The audio session writes inside recv; the presence writer
            // task on its own.
            assert!(matches!(conn.recv().await, Incoming::Text(t) if t.as_str() == "ping"));
            let first = peer.from_server.recv().await.unwrap();
            assert!(
                matches!(first, Message::Text(t) if t.as_str() == "hello"),
                "{kind:?}"
            );
            let second = peer.from_server.recv().await.unwrap();
            assert!(
                matches!(second, Message::Binary(b) if b.len() == 160),
                "{kind:?}"
            );

            // A peer that cannot keep up: more control messages than the
            // queue holds, before anything is written.
            let (mut conn, _peer) = WsConn::in_memory(kind, Arc::new(Metrics::default()));
            for _ in 0..=CONTROL_QUEUE {
                conn.outbox().send_text("x".into());
            }
            let read = tokio::time::timeout(Duration::from_secs(2), conn.recv()).await;
            assert!(matches!(read, Ok(Incoming::Closed)), "{kind:?}: {read:?}");
            assert!(!conn.outbox().is_open(), "{kind:?}");
        }
    }
}

//! One WebSocket, owned by one task: connects (offering the protocol's
//! subprotocol), reports open/text/close to the driver, sends what the
//! driver asks, and moves a call's audio frames between the socket and the
//! call's queues without involving the driver or the core.

use super::audio::{CallMedia, Frame};
use super::task::IoEvent;
use crate::core::SocketId;
use audin_protocol::{FRAME_BYTES, SUBPROTOCOL};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};

/// Longest gap without anything sent on an audio socket with media.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_millis(500);
/// How long a closing socket waits for the server's close frame.
const CLOSE_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a socket tells the core that audio frames are arriving.
const RX_REPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// What the driver asks of a socket task.
#[derive(Debug)]
pub(crate) enum WsOut {
    Text(String),
    Close(u16, String),
    /// Start (Some) or stop (None) moving this call's audio on the socket.
    Media(Option<Arc<CallMedia>>),
}

pub(crate) struct SocketTask {
    pub(crate) tx: UnboundedSender<WsOut>,
    pub(crate) handle: JoinHandle<()>,
}

/// How `wss://` sockets verify the service: `None` is tokio-tungstenite's
/// default (the webpki roots with the `tls` feature).
#[derive(Clone, Default)]
pub(crate) struct SocketTls {
    #[cfg(feature = "tls")]
    pub(crate) client: Option<Arc<rustls::ClientConfig>>,
}

pub(crate) fn spawn(
    id: SocketId,
    url: String,
    tls: SocketTls,
    events: UnboundedSender<IoEvent>,
) -> SocketTask {
    let (tx, rx) = unbounded_channel();
    let handle = tokio::spawn(run(id, url, tls, rx, events));
    SocketTask { tx, handle }
}

async fn run(
    id: SocketId,
    url: String,
    tls: SocketTls,
    mut commands: UnboundedReceiver<WsOut>,
    events: UnboundedSender<IoEvent>,
) {
    let closed = |code: Option<u16>, reason: String| IoEvent::SocketClosed(id, code, reason);
    let ws = match connect(&url, tls).await {
        Ok(ws) => ws,
        Err(e) => {
            let _ = events.send(closed(None, e));
            return;
        }
    };
    let _ = events.send(IoEvent::SocketOpen(id));
    let (mut sink, mut stream) = ws.split();
    let mut media: Option<Arc<CallMedia>> = None;
    // While media runs, a ping goes out in any 500 ms without a frame: the
    // service drops an audio socket on which nothing arrives (half-open
    // detection), and a listen-only bot sends no frames.
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent_since_tick = false;
    // Frames stay here; the core only hears that audio is arriving, a few
    // times a second, to tell a live socket from a silent (half-open) one.
    let mut last_rx_report: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = keepalive.tick(), if media.is_some() => {
                if !std::mem::take(&mut sent_since_tick) {
                    if let Err(e) = sink.send(Message::Ping(Vec::new().into())).await {
                        let _ = events.send(closed(None, e.to_string()));
                        return;
                    }
                }
            }
            command = commands.recv() => match command {
                Some(WsOut::Text(text)) => {
                    if let Err(e) = sink.send(Message::text(text)).await {
                        let _ = events.send(closed(None, e.to_string()));
                        return;
                    }
                }
                Some(WsOut::Close(code, reason)) => {
                    let frame = CloseFrame { code: code.into(), reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    // The close handshake: read (and drop) until the server
                    // closes too. Dropping the socket while its frames are
                    // still unread makes the kernel reset the connection,
                    // and a reset can discard what we sent last (a
                    // `hangup` just before the close) before the server
                    // reads it.
                    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
                        while let Some(Ok(_)) = stream.next().await {}
                    })
                    .await;
                    return;
                }
                Some(WsOut::Media(m)) => media = m,
                // The driver is gone.
                None => return,
            },
            frame = next_outgoing(media.as_deref()) => match (frame, &media) {
                (Some(frame), Some(m)) => {
                    let bytes = m.wire_frame(frame).to_vec();
                    if let Err(e) = sink.send(Message::binary(bytes)).await {
                        let _ = events.send(closed(None, e.to_string()));
                        return;
                    }
                    sent_since_tick = true;
                }
                // The call's queue closed: stop sending.
                _ => media = None,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let _ = events.send(IoEvent::SocketText(id, text.to_string()));
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if let (Some(m), Ok(frame)) = (&media, Frame::try_from(&bytes[..])) {
                        m.incoming.push(frame);
                    }
                    let now = tokio::time::Instant::now();
                    if last_rx_report.is_none_or(|t| now - t >= RX_REPORT_EVERY) {
                        last_rx_report = Some(now);
                        let _ = events.send(IoEvent::AudioReceived(id));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (Some(u16::from(f.code)), f.reason.to_string()))
                        .unwrap_or((None, "closed without a code".into()));
                    let _ = events.send(closed(code, reason));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = events.send(closed(None, e.to_string()));
                    return;
                }
                None => {
                    let _ = events.send(closed(None, "connection ended".into()));
                    return;
                }
            },
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, tls: SocketTls) -> Result<Ws, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    // Small buffers: a client has one or two sockets carrying 160-byte
    // frames. The read buffer is zeroed per read: at 16 KiB that was 7.9 %
    // of a load generator's CPU (docs/performance-load.md); the server's is
    // 4 KiB too. Larger messages are assembled across reads.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024));
    #[cfg(feature = "tls")]
    let connected = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        tls.client.map(tokio_tungstenite::Connector::Rustls),
    )
    .await;
    #[cfg(not(feature = "tls"))]
    let connected = {
        let SocketTls {} = tls;
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await
    };
    let (ws, _response) = connected.map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The next frame the application queued; never resolves without media.
async fn next_outgoing(media: Option<&CallMedia>) -> Option<Frame> {
    match media {
        Some(m) => m.outgoing.pop().await,
        None => std::future::pending().await,
    }
}

const _: () = assert!(FRAME_BYTES == 160);

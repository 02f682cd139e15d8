//! The driver task: the one owner of the core. It selects over API
//! commands, I/O reports and the core's timer, performs every output, and
//! keeps the shared snapshot (state, current call) up to date.

use super::audio::CallMedia;
use super::socket::{self, SocketTask, WsOut};
use super::{CallShared, Shared};
use crate::core::*;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

/// The integrator's `getToken`.
pub(crate) type TokenFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<TokenGrant, String>> + Send>> + Send + Sync>;

/// A completed operation, with the call it created (for `dial`).
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) value: OpValue,
    pub(crate) call: Option<Arc<CallShared>>,
}

pub(crate) type Reply = oneshot::Sender<Result<Done, OperatorError>>;

/// API calls, from [`super::AudinOperator`] and [`Call`] handles.
#[derive(Debug)]
pub(crate) enum Command {
    GoOnline(Vec<String>, Reply),
    GoOffline(Reply),
    Dial {
        to: String,
        caller_id: String,
        reply: Reply,
    },
    ListPhoneNumbers(Reply),
    Accept(String),
    Reject(String),
    Mute(String, bool),
    Hangup(String),
    SendDtmf(String, String, oneshot::Sender<Result<(), OperatorError>>),
}

/// What the I/O tasks report.
#[derive(Debug)]
pub(crate) enum IoEvent {
    Token(TokenRequestId, Result<TokenGrant, String>),
    SocketOpen(SocketId),
    SocketText(SocketId, String),
    SocketClosed(SocketId, Option<u16>, String),
    /// Audio frames are arriving on this socket (sent at most every 250 ms).
    AudioReceived(SocketId),
    Http(RequestId, Result<(u16, String), String>),
}

struct SocketEntry {
    task: SocketTask,
    open: bool,
}

pub(crate) struct Driver {
    pub(crate) core: Operator,
    pub(crate) start: Instant,
    pub(crate) get_token: TokenFn,
    pub(crate) http: reqwest::Client,
    pub(crate) tls: socket::SocketTls,
    pub(crate) io_tx: UnboundedSender<IoEvent>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: broadcast::Sender<Event>,
    sockets: HashMap<SocketId, SocketEntry>,
    replies: HashMap<OpId, Reply>,
}

impl Driver {
    pub(crate) fn new(
        core: Operator,
        get_token: TokenFn,
        http: reqwest::Client,
        tls: socket::SocketTls,
        io_tx: UnboundedSender<IoEvent>,
        shared: Arc<Shared>,
        events: broadcast::Sender<Event>,
    ) -> Driver {
        Driver {
            core,
            start: Instant::now(),
            get_token,
            http,
            tls,
            io_tx,
            shared,
            events,
            sockets: HashMap::new(),
            replies: HashMap::new(),
        }
    }

    fn now(&self) -> Millis {
        Millis(self.start.elapsed().as_millis() as u64)
    }

    /// Runs until every handle (operator and calls) is dropped.
    pub(crate) async fn run(
        mut self,
        mut commands: UnboundedReceiver<Command>,
        mut io: UnboundedReceiver<IoEvent>,
    ) {
        loop {
            self.flush();
            let deadline = self.core.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => {
                        tokio::time::sleep_until(self.start + Duration::from_millis(at.0)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(event) = io.recv() => self.io(event),
                () = sleep => {
                    // Never report a time before the deadline (ms rounding).
                    let now = self.now().max(deadline.unwrap_or_default());
                    self.core.handle_timeout(now);
                }
            }
        }
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let now = self.now();
        self.core.go_offline(now);
        self.flush();
        for (_, entry) in self.sockets.drain() {
            // Let an open socket send its close frame; drop the rest.
            if !entry.open {
                entry.task.handle.abort();
            }
        }
    }

    fn command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::GoOnline(ids, reply) => {
                let op = self.core.go_online(now, ids);
                self.replies.insert(op, reply);
            }
            Command::GoOffline(reply) => {
                let op = self.core.go_offline(now);
                self.replies.insert(op, reply);
            }
            Command::Dial {
                to,
                caller_id,
                reply,
            } => match self.core.dial(now, &to, &caller_id) {
                Ok(op) => {
                    self.replies.insert(op, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::ListPhoneNumbers(reply) => {
                let op = self.core.list_phone_numbers(now);
                self.replies.insert(op, reply);
            }
            Command::Accept(sid) => self.core.accept(now, &sid),
            Command::Reject(sid) => self.core.reject(now, &sid),
            Command::Mute(sid, on) => self.core.mute(now, &sid, on),
            Command::Hangup(sid) => self.core.hangup(now, &sid),
            Command::SendDtmf(sid, digit, reply) => {
                let _ = reply.send(self.core.send_dtmf(now, &sid, &digit));
            }
        }
    }

    fn io(&mut self, event: IoEvent) {
        let now = self.now();
        match event {
            IoEvent::Token(id, result) => {
                let wall = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                self.core.handle_token(now, wall, id, result);
            }
            IoEvent::SocketOpen(id) => {
                if let Some(entry) = self.sockets.get_mut(&id) {
                    entry.open = true;
                }
                self.core.handle_socket_open(now, id);
            }
            IoEvent::SocketText(id, text) => self.core.handle_socket_text(now, id, &text),
            IoEvent::AudioReceived(id) => self.core.handle_audio_received(now, id),
            IoEvent::SocketClosed(id, code, reason) => {
                self.sockets.remove(&id);
                self.core.handle_socket_closed(now, id, code, &reason);
            }
            IoEvent::Http(id, Ok((status, body))) => {
                self.core.handle_http_response(now, id, status, &body)
            }
            IoEvent::Http(id, Err(message)) => self.core.handle_http_error(now, id, &message),
        }
    }

    /// Performs every pending output of the core.
    fn flush(&mut self) {
        while let Some(output) = self.core.poll_output() {
            self.perform(output);
        }
    }

    fn perform(&mut self, output: Output) {
        match output {
            Output::FetchToken { id } => self.fetch_token(id),
            Output::OpenSocket { id, url, .. } => {
                let task = socket::spawn(id, url, self.tls.clone(), self.io_tx.clone());
                self.sockets.insert(id, SocketEntry { task, open: false });
            }
            Output::SendText { socket, text } => self.to_socket(socket, WsOut::Text(text)),
            Output::CloseSocket {
                socket,
                code,
                reason,
            } => {
                if let Some(entry) = self.sockets.remove(&socket) {
                    if entry.open {
                        let _ = entry.task.tx.send(WsOut::Close(code, reason));
                    } else {
                        entry.task.handle.abort();
                    }
                }
            }
            Output::HttpRequest {
                id,
                url,
                bearer_token,
                ..
            } => self.http_get(id, url, bearer_token),
            Output::StartMedia { call_sid, socket } => {
                if let Some(media) = self.media_of(&call_sid) {
                    self.to_socket(socket, WsOut::Media(Some(media)));
                }
            }
            Output::StopMedia { call_sid } => {
                if let Some(media) = self.media_of(&call_sid) {
                    media.outgoing.clear();
                }
            }
            Output::SetMuted { call_sid, muted } => {
                if let Some(media) = self.media_of(&call_sid) {
                    media.muted.store(muted, Ordering::Relaxed);
                }
            }
            Output::Event { event } => self.event(event),
            Output::Completed { op, result } => self.completed(op, result),
            Output::Log { level, message } => log(level, &message),
        }
    }

    fn to_socket(&self, socket: SocketId, message: WsOut) {
        if let Some(entry) = self.sockets.get(&socket) {
            let _ = entry.task.tx.send(message);
        }
    }

    fn fetch_token(&self, id: TokenRequestId) {
        let get_token = self.get_token.clone();
        let io = self.io_tx.clone();
        // The core gives up after the same time; dropping the future then
        // keeps a hanging getToken from piling up tasks.
        let limit = Duration::from_millis(self.core.config().token_timeout_ms);
        tokio::spawn(async move {
            let result = tokio::time::timeout(limit, get_token())
                .await
                .unwrap_or_else(|_| Err("getToken timed out".to_string()));
            let _ = io.send(IoEvent::Token(id, result));
        });
    }

    fn http_get(&self, id: RequestId, url: String, token: String) {
        let limit = Duration::from_millis(self.core.config().request_timeout_ms);
        let request = self.http.get(url).bearer_auth(token).timeout(limit);
        let io = self.io_tx.clone();
        tokio::spawn(async move {
            let result = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    response
                        .text()
                        .await
                        .map(|body| (status, body))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            let _ = io.send(IoEvent::Http(id, result));
        });
    }

    fn media_of(&self, call_sid: &str) -> Option<Arc<CallMedia>> {
        let current = self.shared.call.lock().expect("call lock");
        current
            .as_ref()
            .filter(|c| c.info.borrow().call_sid == call_sid)
            .map(|c| c.media.clone())
    }

    /// Keeps the shared snapshot current, then tells the application.
    fn event(&mut self, event: Event) {
        match &event {
            Event::PresenceStateChanged { state } => {
                *self.shared.state.lock().expect("state lock") = *state;
            }
            Event::IncomingCall { call } => {
                self.register_call(call.clone());
            }
            Event::CallStarted { call }
            | Event::CallUpdated { call }
            | Event::CallReconnecting { call }
            | Event::CallReconnected { call } => self.update_call(call),
            Event::CallEnded { call } => {
                self.update_call(call);
                if let Some(ended) = self.shared.call.lock().expect("call lock").take() {
                    ended.media.close();
                }
            }
            Event::AvailabilityChanged { .. } | Event::Error { .. } => {}
        }
        let _ = self.events.send(event);
    }

    fn register_call(&self, info: CallInfo) -> Arc<CallShared> {
        let shared = Arc::new(CallShared::new(info));
        *self.shared.call.lock().expect("call lock") = Some(shared.clone());
        shared
    }

    fn update_call(&self, info: &CallInfo) {
        let current = self.shared.call.lock().expect("call lock");
        if let Some(call) = current.as_ref() {
            if call.info.borrow().call_sid == info.call_sid {
                call.info.send_replace(info.clone());
            }
        }
    }

    fn completed(&mut self, op: OpId, result: Result<OpValue, OperatorError>) {
        let done = result.map(|value| {
            // Register before replying so `current_call()` and the media
            // outputs that follow find it; the reply carries the same shared
            // state, so the handle stays live even if the call ends first.
            let call = match &value {
                OpValue::Call { call } => Some(self.register_call(call.clone())),
                _ => None,
            };
            Done { value, call }
        });
        if let Some(reply) = self.replies.remove(&op) {
            let _ = reply.send(done);
        }
    }
}

fn log(level: LogLevel, message: &str) {
    match level {
        LogLevel::Debug => tracing::debug!(target: "audin_operator", "{message}"),
        LogLevel::Info => tracing::info!(target: "audin_operator", "{message}"),
        LogLevel::Warn => tracing::warn!(target: "audin_operator", "{message}"),
        LogLevel::Error => tracing::error!(target: "audin_operator", "{message}"),
    }
}

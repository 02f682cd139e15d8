//! [`NatsBus`]: messages between nodes on NATS core subjects (no
//! JetStream: a message for a node that is gone is simply not delivered,
//! as a message to a socket that closed).
//!
//! Subjects (`{prefix}` is `audin`; tests isolate with their own):
//!
//! | Subject | Who listens | Payload |
//! |---|---|---|
//! | `{prefix}.op.{op key}` | the node holding the operator's presence socket | `T` + protocol JSON; `K` + node, call sid, `e` (ends) or `o`, and protocol JSON, each of the first three ended by a newline; or `M` + the session id that opened |
//! | `{prefix}.alive` | every node | the sender's node id, every 250 ms |
//! | `{prefix}.call.{call sid}` | the node owning the call (request/reply) | JSON [`CallCommand`]; the reply is JSON `Option<CallStatus>` |
//! | `{prefix}.offline` | every node | JSON `{node, op}` |
//! | `{prefix}.relay.{id}.up` | the call's node | one operator frame (160 bytes of μ-law) |
//! | `{prefix}.relay.{id}.down` | the audio socket's node | `F` + a far-end frame, `T` + protocol JSON, or `C` + close code (2 bytes, big-endian) + reason |
//!
//! The operator key is the routing's hex key (any operatorRef, which is
//! client text, is a valid subject token). A call sid is used as is only if
//! it is a plain token (`[A-Za-z0-9_-]`, at most 64): anything else cannot
//! be a call of ours and is answered as unknown without asking NATS.
//!
//! "No node owns the call" is NATS's own *no responders* answer to the
//! request, so asking for a call that ended costs one round trip and no
//! waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_nats::{Subject, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    AboutCall, Bus, BusError, BusFuture, CallCommand, CallStatus, FrameSink, Inbox,
    NODE_DEAD_AFTER, Origin, RelayDown, RelaySink, RelayUp,
};
use crate::routing::OperatorKey;
use crate::routing::nats::op_key;

const TEXT: u8 = b'T';
const CALL_TEXT: u8 = b'K';
const MOVED: u8 = b'M';
const FRAME: u8 = b'F';
const CLOSE: u8 = b'C';
/// Messages waiting for the connection (about 1 s of offers and call
/// events on a busy node); beyond that they are dropped, as while NATS is
/// away.
const OUTGOING_QUEUE: usize = 4096;
/// How often a node says it is alive.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(250);
/// How long a node still answers for a call that ended here.
const CALL_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Messages between nodes over NATS.
#[derive(Debug)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    prefix: String,
    node_id: String,
    inbox: OnceLock<Weak<dyn Inbox>>,
    /// Operators whose presence socket is here: session id and listener.
    ops: Mutex<HashMap<OperatorKey, (String, AbortOnDrop)>>,
    /// Calls owned here: their listeners.
    calls: Mutex<HashMap<String, AbortOnDrop>>,
    offline: Mutex<Option<AbortOnDrop>>,
    heartbeat: Mutex<Option<AbortOnDrop>>,
    /// Fire-and-forget messages, in order, to the one task that publishes
    /// them (a task per message would reorder an operator's messages).
    outgoing: mpsc::Sender<(Subject, Bytes)>,
    publisher: JoinHandle<()>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Offline {
    node: String,
    op: OperatorKey,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("{what}: {e}"))
}

/// Whether `sid` can be one subject token (and so one of our call sids).
fn plain_token(sid: &str) -> bool {
    !sid.is_empty()
        && sid.len() <= 64
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl NatsBus {
    /// A bus on `client` (the routing's connection), subjects under
    /// `prefix`, for node `node_id`.
    pub fn new(client: async_nats::Client, prefix: &str, node_id: &str) -> Self {
        let (outgoing, mut queue) = mpsc::channel::<(Subject, Bytes)>(OUTGOING_QUEUE);
        let publisher = tokio::spawn({
            let client = client.clone();
            async move {
                while let Some((subject, payload)) = queue.recv().await {
                    if let Err(e) = client.publish(subject, payload).await {
                        tracing::debug!(error = %e, "bus: a message was not sent");
                    }
                }
            }
        });
        Self {
            inner: Arc::new(Inner {
                client,
                prefix: prefix.to_owned(),
                node_id: node_id.to_owned(),
                inbox: OnceLock::new(),
                ops: Mutex::default(),
                calls: Mutex::default(),
                offline: Mutex::default(),
                heartbeat: Mutex::default(),
                outgoing,
                publisher,
            }),
        }
    }

    fn op_subject(&self, op: &OperatorKey) -> String {
        format!("{}.op.{}", self.inner.prefix, op_key(op))
    }

    fn call_subject(&self, sid: &str) -> String {
        format!("{}.call.{sid}", self.inner.prefix)
    }

    fn inbox(inner: &Inner) -> Option<Arc<dyn Inbox>> {
        inner.inbox.get().and_then(Weak::upgrade)
    }

    /// Says this node is alive every [`HEARTBEAT`] and watches the others
    /// say it: one silent for [`NODE_DEAD_AFTER`] is declared dead to the
    /// inbox, once, but only while this node hears its own heartbeats (a
    /// node cut off from NATS hears nobody and must not declare everybody
    /// dead).
    async fn heartbeat(&self) -> Result<AbortOnDrop, BusError> {
        let subject: Subject = format!("{}.alive", self.inner.prefix).into();
        let inner = Arc::downgrade(&self.inner);
        self.listen(subject.clone(), "listening for heartbeats", |mut sub| async move {
            let mut seen: HashMap<String, tokio::time::Instant> = HashMap::new();
            let mut own = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    msg = sub.next() => {
                        let Some(msg) = msg else { return };
                        let Ok(node) = std::str::from_utf8(&msg.payload) else { continue };
                        let Some(inner) = inner.upgrade() else { return };
                        let now = tokio::time::Instant::now();
                        if node == inner.node_id {
                            own = now;
                        } else if let Some(t) = seen.get_mut(node) {
                            *t = now;
                        } else {
                            seen.insert(node.to_owned(), now);
                        }
                    }
                    _ = tick.tick() => {
                        let Some(inner) = inner.upgrade() else { return };
                        inner.publish(subject.clone(), Bytes::from(inner.node_id.clone()));
                        let now = tokio::time::Instant::now();
                        if now - own > NODE_DEAD_AFTER {
                            continue;
                        }
                        let dead: Vec<String> = seen
                            .iter()
                            .filter(|(_, t)| now - **t > NODE_DEAD_AFTER)
                            .map(|(n, _)| n.clone())
                            .collect();
                        for node in dead {
                            seen.remove(&node);
                            tracing::warn!(node = %node, "cluster: a node stopped answering; its calls are over");
                            if let Some(inbox) = Self::inbox(&inner) {
                                inbox.node_died(&node);
                            }
                        }
                    }
                }
            }
        })
        .await
    }

    /// Returns once nats-server has processed everything this connection
    /// sent before (a subscription included): a request nobody answers,
    /// whose "no responders" comes back through the server. Without it a
    /// subscription is only queued, and another node's message could
    /// overtake it.
    async fn sync(&self) -> Result<(), BusError> {
        let subject = format!("{}.sync.{}", self.inner.prefix, self.inner.node_id);
        match self.inner.client.request(subject, Bytes::new()).await {
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
            Ok(_) => Ok(()),
            Err(e) => Err(unavailable("waiting for NATS", e)),
        }
    }

    /// Queues a message without waiting for the connection, in order.
    fn publish(&self, subject: impl Into<Subject>, payload: Bytes) {
        self.inner.publish(subject.into(), payload);
    }

    fn relay_subject(&self, relay: &str, way: &str) -> Subject {
        format!("{}.relay.{relay}.{way}", self.inner.prefix).into()
    }

    /// Subscribes to `subject` (an error says `what` failed) and runs
    /// `listener` on the subscription in a task that lives as long as the
    /// returned handle.
    async fn listen<F>(
        &self,
        subject: impl Into<Subject>,
        what: &str,
        listener: impl FnOnce(Subscriber) -> F,
    ) -> Result<AbortOnDrop, BusError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let sub = self
            .inner
            .client
            .subscribe(subject.into())
            .await
            .map_err(|e| unavailable(what, e))?;
        Ok(AbortOnDrop(tokio::spawn(listener(sub))))
    }
}

impl Inner {
    fn publish(&self, subject: Subject, payload: Bytes) {
        if self.outgoing.try_send((subject, payload)).is_err() {
            tracing::warn!("bus: outgoing queue full, a message to another node was dropped");
        }
    }
}

/// A listener task, stopped when this is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The call's node's end of a relay.
#[derive(Debug)]
struct Down {
    bus: Weak<Inner>,
    subject: Subject,
    _up: AbortOnDrop,
}

impl Down {
    fn send(&self, payload: Vec<u8>) {
        if let Some(bus) = self.bus.upgrade() {
            bus.publish(self.subject.clone(), payload.into());
        }
    }
}

impl RelayDown for Down {
    fn frame(&self, frame: Bytes) {
        let mut p = Vec::with_capacity(frame.len() + 1);
        p.push(FRAME);
        p.extend_from_slice(&frame);
        self.send(p);
    }

    fn text(&self, text: &str) {
        let mut p = Vec::with_capacity(text.len() + 1);
        p.push(TEXT);
        p.extend_from_slice(text.as_bytes());
        self.send(p);
    }

    fn close(&self, code: u16, reason: &str) {
        let mut p = vec![CLOSE];
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(reason.as_bytes());
        self.send(p);
    }
}

/// The socket's node's end of a relay.
#[derive(Debug)]
struct Up {
    bus: Weak<Inner>,
    subject: Subject,
    _down: AbortOnDrop,
}

impl RelayUp for Up {
    fn frame(&self, frame: Bytes) {
        if let Some(bus) = self.bus.upgrade() {
            bus.publish(self.subject.clone(), frame);
        }
    }
}

/// Hands one message that came down a relay to its socket.
fn deliver_down(sink: &dyn RelaySink, payload: &Bytes) {
    match payload.first() {
        Some(&FRAME) => sink.frame(payload.slice(1..)),
        Some(&TEXT) => {
            if let Ok(text) = std::str::from_utf8(&payload[1..]) {
                sink.text(text.to_owned());
            }
        }
        Some(&CLOSE) if payload.len() >= 3 => {
            let code = u16::from_be_bytes([payload[1], payload[2]]);
            sink.close(code, std::str::from_utf8(&payload[3..]).unwrap_or(""));
        }
        _ => {}
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        // Dropping a listener stops it.
        self.inner.ops.lock().expect("bus lock").clear();
        self.inner.calls.lock().expect("bus lock").clear();
        for slot in [&self.inner.offline, &self.inner.heartbeat] {
            slot.lock().expect("bus lock").take();
        }
        self.inner.publisher.abort();
    }
}

impl Bus for NatsBus {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn node_id(&self) -> Option<&str> {
        Some(&self.inner.node_id)
    }

    fn start<'a>(&'a self, inbox: Weak<dyn Inbox>) -> BusFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.inner.inbox.set(inbox);
            let inner = Arc::downgrade(&self.inner);
            let going_offline = |mut sub: Subscriber| async move {
                while let Some(msg) = sub.next().await {
                    let Some(inner) = inner.upgrade() else { return };
                    let Ok(m) = serde_json::from_slice::<Offline>(&msg.payload) else {
                        continue;
                    };
                    if m.node != inner.node_id {
                        if let Some(inbox) = Self::inbox(&inner) {
                            inbox.operator_offline(&m.op);
                        }
                    }
                }
            };
            let offline = self
                .listen(
                    format!("{}.offline", self.inner.prefix),
                    "listening for operators going offline",
                    going_offline,
                )
                .await?;
            // Replacing a listener stops the old one.
            *self.inner.offline.lock().expect("bus lock") = Some(offline);
            let heartbeat = self.heartbeat().await?;
            *self.inner.heartbeat.lock().expect("bus lock") = Some(heartbeat);
            Ok(())
        })
    }

    fn watch_operator<'a>(&'a self, op: &'a OperatorKey, session_id: &'a str) -> BusFuture<'a, ()> {
        Box::pin(async move {
            let subject = self.op_subject(op);
            let inner = Arc::downgrade(&self.inner);
            let key = op.clone();
            let messages = |mut sub: Subscriber| async move {
                while let Some(msg) = sub.next().await {
                    let Some(inner) = inner.upgrade() else { return };
                    let Some(inbox) = Self::inbox(&inner) else {
                        return;
                    };
                    let Ok(body) = std::str::from_utf8(msg.payload.get(1..).unwrap_or_default())
                    else {
                        continue;
                    };
                    match msg.payload.first() {
                        Some(&TEXT) => inbox.to_operator(&key, body, None),
                        Some(&CALL_TEXT) => {
                            let mut parts = body.splitn(4, '\n');
                            let (Some(node), Some(call_sid), Some(end), Some(text)) =
                                (parts.next(), parts.next(), parts.next(), parts.next())
                            else {
                                continue;
                            };
                            let about = AboutCall {
                                call_sid,
                                ends: end == "e",
                            };
                            inbox.to_operator(&key, text, Some(Origin { node, about }));
                        }
                        Some(&MOVED) => inbox.operator_moved(&key, body),
                        _ => {}
                    }
                }
            };
            let listener = self
                .listen(subject.clone(), "listening for an operator", messages)
                .await?;
            // Replacing a listener stops the old one.
            self.inner
                .ops
                .lock()
                .expect("bus lock")
                .insert(op.clone(), (session_id.to_owned(), listener));
            // After the listener: this node hears its own announcement and
            // ignores it (the session is the current one).
            let mut moved = vec![MOVED];
            moved.extend_from_slice(session_id.as_bytes());
            self.inner
                .client
                .publish(subject, moved.into())
                .await
                .map_err(|e| unavailable("announcing an operator's session", e))?;
            self.sync().await
        })
    }

    fn unwatch_operator(&self, op: &OperatorKey, session_id: &str) {
        let mut ops = self.inner.ops.lock().expect("bus lock");
        if ops.get(op).is_some_and(|(s, _)| s == session_id) {
            ops.remove(op);
        }
    }

    fn watch_call<'a>(&'a self, call_sid: &'a str) -> BusFuture<'a, ()> {
        Box::pin(async move {
            if !plain_token(call_sid) {
                return Err(unavailable("listening for a call", "not a plain call sid"));
            }
            let inner = Arc::downgrade(&self.inner);
            let sid = call_sid.to_owned();
            let commands = |mut sub: Subscriber| async move {
                while let Some(msg) = sub.next().await {
                    let Some(inner) = inner.upgrade() else { return };
                    let Some(inbox) = Self::inbox(&inner) else {
                        return;
                    };
                    let status = match serde_json::from_slice::<CallCommand>(&msg.payload) {
                        Ok(cmd) => inbox.to_call(&sid, cmd).await,
                        Err(_) => None,
                    };
                    if let Some(reply) = msg.reply {
                        let body = serde_json::to_vec(&status).unwrap_or_default();
                        let _ = inner.client.publish(reply, body.into()).await;
                    }
                }
            };
            let listener = self
                .listen(
                    self.call_subject(call_sid),
                    "listening for a call",
                    commands,
                )
                .await?;
            // Replacing a listener stops the old one.
            self.inner
                .calls
                .lock()
                .expect("bus lock")
                .insert(call_sid.to_owned(), listener);
            self.sync().await
        })
    }

    fn unwatch_call(&self, call_sid: &str) {
        if let Some(listener) = self.inner.calls.lock().expect("bus lock").remove(call_sid) {
            // Not at once: a command already on its way gets "not live
            // here" from the engine (which has forgotten the call) rather
            // than being dropped by a vanished subscription and leaving
            // its sender to time out.
            tokio::spawn(async move {
                tokio::time::sleep(CALL_LINGER).await;
                drop(listener);
            });
        }
    }

    fn to_operator(&self, op: &OperatorKey, text: &str, about: Option<AboutCall<'_>>) {
        let mut payload = Vec::with_capacity(text.len() + 64);
        match about {
            // Our call sids and node ids are plain tokens: no newline.
            Some(a) if plain_token(a.call_sid) => {
                payload.push(CALL_TEXT);
                let end = if a.ends { "e" } else { "o" };
                let head = format!("{}\n{}\n{end}\n", self.inner.node_id, a.call_sid);
                payload.extend_from_slice(head.as_bytes());
            }
            _ => payload.push(TEXT),
        }
        payload.extend_from_slice(text.as_bytes());
        self.publish(self.op_subject(op), payload.into());
    }

    fn to_call<'a>(
        &'a self,
        call_sid: &'a str,
        cmd: &'a CallCommand,
    ) -> BusFuture<'a, Option<CallStatus>> {
        Box::pin(async move {
            if !plain_token(call_sid) {
                return Ok(None);
            }
            let body = serde_json::to_vec(cmd).map_err(|e| unavailable("encoding", e))?;
            match self
                .inner
                .client
                .request(self.call_subject(call_sid), body.into())
                .await
            {
                Ok(reply) => serde_json::from_slice(&reply.payload)
                    .map_err(|e| unavailable("reading a call's reply", e)),
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(None),
                Err(e) => Err(unavailable("asking a call's node", e)),
            }
        })
    }

    fn operator_offline(&self, op: &OperatorKey) {
        let m = Offline {
            node: self.inner.node_id.clone(),
            op: op.clone(),
        };
        if let Ok(body) = serde_json::to_vec(&m) {
            self.publish(format!("{}.offline", self.inner.prefix), body.into());
        }
    }

    fn open_relay<'a>(
        &'a self,
        relay: &'a str,
        up: FrameSink,
    ) -> BusFuture<'a, Arc<dyn RelayDown>> {
        Box::pin(async move {
            if !plain_token(relay) {
                return Err(unavailable("opening a relay", "not a plain relay id"));
            }
            let listener = self
                .listen(
                    self.relay_subject(relay, "up"),
                    "listening on a relay",
                    |mut sub| async move {
                        while let Some(msg) = sub.next().await {
                            up(msg.payload);
                        }
                    },
                )
                .await?;
            self.sync().await?;
            Ok(Arc::new(Down {
                bus: Arc::downgrade(&self.inner),
                subject: self.relay_subject(relay, "down"),
                _up: listener,
            }) as Arc<dyn RelayDown>)
        })
    }

    fn join_relay<'a>(
        &'a self,
        relay: &'a str,
        sink: Arc<dyn RelaySink>,
    ) -> BusFuture<'a, Arc<dyn RelayUp>> {
        Box::pin(async move {
            if !plain_token(relay) {
                return Err(unavailable("joining a relay", "not a plain relay id"));
            }
            let listener = self
                .listen(
                    self.relay_subject(relay, "down"),
                    "listening on a relay",
                    |mut sub| async move {
                        while let Some(msg) = sub.next().await {
                            deliver_down(&*sink, &msg.payload);
                        }
                    },
                )
                .await?;
            self.sync().await?;
            Ok(Arc::new(Up {
                bus: Arc::downgrade(&self.inner),
                subject: self.relay_subject(relay, "up"),
                _down: listener,
            }) as Arc<dyn RelayUp>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::plain_token;

    #[test]
    fn only_plain_tokens_become_call_subjects() {
        assert!(plain_token("CA0123abcdef"));
        for bad in ["", "a.b", "a*", ">", "a b", "a\r\nPUB x", &"a".repeat(65)] {
            assert!(!plain_token(bad), "{bad:?}");
        }
    }
}

//! The switchboard: operators' presence sockets, live calls and their
//! state machines.
//!
//! Each live call is one task (`CallTask`) that drives the call's state
//! machine ([`crate::call::Call`], which decides everything and does no
//! I/O) and serialises everything that happens to it: operator accepts and
//! rejects, carrier events, audio attach and detach, timers. Whether an
//! operator is free goes through [`Routing`]; the far end is reached through
//! the number's carrier ([`Carriers`]). Audio does not pass through the
//! task: the carrier and the audio socket share the call's [`CallMedia`].
//! An ended call is removed from memory; its record stays in the database.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use audin_protocol::{
    ActiveCall, CloseCode, Direction, EndReason, ErrorCode, HangupReason, ServerMessage,
    validate_e164,
};
use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::auth::{Claims, TokenSigner};
use crate::bus::{
    AboutCall, AttachOutcome, Bus, CallCommand, CallStatus, Inbox, LocalBus, Origin, RelayDown,
    RelaySink, RelayUp,
};
pub use crate::call::AttachError;
use crate::call::{Action, Call, CallTimers, Phase, not_found};
use crate::carrier::{
    BoxFuture, CallMedia, Carrier, CarrierEvent, CarrierLeg, Carriers, EVENT_QUEUE, EndCause,
    EventReceiver, InboundCall, InboundRefusal, InboundSink, OperatorAudio, OutboundRequest,
};
use crate::config::ServerConfig;
use crate::db::{self, NewCall};
use crate::metrics::Metrics;
use crate::ratelimit::FailedAuthLimiter;
use crate::routing::{OperatorKey, Routing, RoutingError};
use crate::sim::SimCarrier;
use crate::store::{CallStore, RecordWrite};
use crate::util::{new_call_sid, now_rfc3339, random_hex};
use crate::ws::Outbox;

/// Call states, as in the doc's diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CallState {
    /// Inbound, ringing operators.
    Offered = 0,
    /// Outbound, waiting for the audio socket.
    Dialled = 1,
    /// Inbound accepted (waiting for audio) or outbound ringing the far end.
    Connecting = 2,
    /// Audio flowing.
    Active = 3,
}

impl CallState {
    /// Label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Offered => "offered",
            Self::Dialled => "dialled",
            Self::Connecting => "connecting",
            Self::Active => "active",
        }
    }

    const ALL: [CallState; 4] = [Self::Offered, Self::Dialled, Self::Connecting, Self::Active];

    /// The gauge state of a phase (an ended call keeps its last one for
    /// the instant before it is forgotten).
    fn of(phase: &Phase) -> Self {
        match phase {
            Phase::Ringing { .. } => Self::Offered,
            Phase::Dialled => Self::Dialled,
            Phase::Connecting { .. } => Self::Connecting,
            Phase::Active | Phase::Ended(_) => Self::Active,
        }
    }
}

/// What the engine tells a call task.
#[derive(Debug)]
pub enum CallCmd {
    /// An operator accepts the offer.
    Accept(OperatorKey),
    /// An operator declines the offer (or went offline while ringing).
    Reject(OperatorKey),
    /// The holder ends the call.
    Hangup {
        /// Who.
        op: OperatorKey,
        /// Why.
        reason: EndReason,
        /// Sent on presence (an unknown caller gets an error there).
        from_presence: bool,
    },
    /// An audio socket attaches.
    Attach {
        /// Who.
        op: OperatorKey,
        /// Where to send audio and control messages.
        outbox: AudioPeer,
        /// The answer.
        reply: oneshot::Sender<Result<Attachment, AttachError>>,
    },
    /// The audio socket `attach_id` is gone.
    AudioClosed(u64),
    /// Mute state changed.
    Mute(bool),
    /// A DTMF digit for the far end.
    Dtmf(char),
    /// The service is stopping: end with `failed`.
    Shutdown,
}

/// A successful attach.
#[derive(Debug)]
pub struct Attachment {
    /// Identifies this attachment in [`CallCmd::AudioClosed`].
    pub attach_id: u64,
    /// Frames go here.
    pub media: Arc<CallMedia>,
    /// Control messages go here.
    pub cmd: mpsc::Sender<CallCmd>,
}

/// An attached audio socket as the call's task sees it: on this node, or
/// on another one through a relay of the bus.
#[derive(Debug, Clone)]
pub enum AudioPeer {
    /// The socket is here.
    Local(Outbox),
    /// The socket is on another node.
    Relayed(Arc<dyn RelayDown>),
}

impl AudioPeer {
    fn send_text(&self, text: String) {
        match self {
            Self::Local(o) => o.send_text(text),
            Self::Relayed(r) => r.text(&text),
        }
    }

    fn close(&self, code: CloseCode, reason: &str) {
        match self {
            Self::Local(o) => o.close(code, reason),
            Self::Relayed(r) => r.close(code.code(), reason),
        }
    }

    fn operator_audio(&self) -> Arc<dyn OperatorAudio> {
        match self {
            Self::Local(o) => Arc::new(o.clone()),
            Self::Relayed(r) => Arc::new(RelayedAudio(r.clone())),
        }
    }
}

/// Far-end frames for a socket on another node.
#[derive(Debug)]
struct RelayedAudio(Arc<dyn RelayDown>);

impl OperatorAudio for RelayedAudio {
    fn push(&self, frame: bytes::Bytes) {
        self.0.frame(frame);
    }
}

/// On the socket's node: what comes down a relay goes into the socket.
struct SocketSink(Outbox);

impl RelaySink for SocketSink {
    fn frame(&self, frame: bytes::Bytes) {
        self.0.push_audio(frame);
    }

    fn text(&self, text: String) {
        self.0.send_text(text);
    }

    fn close(&self, code: u16, reason: &str) {
        self.0.close(
            CloseCode::from_code(code).unwrap_or(CloseCode::Normal),
            reason,
        );
    }
}

/// On the socket's node: the call's "far end" is the relay up to the
/// call's node, which hands the frames to the real one.
#[derive(Debug)]
struct RelayLeg(Arc<dyn RelayUp>);

impl CarrierLeg for RelayLeg {
    fn answer(&self) {}

    fn send_audio(&self, frame: bytes::Bytes) {
        self.0.frame(frame);
    }

    fn send_dtmf(&self, _digit: char) {}

    fn hang_up(&self, _reason: EndReason) {}
}

#[derive(Debug)]
struct CallEntry {
    tx: mpsc::Sender<CallCmd>,
    /// Its audio path (a relayed socket's frames go in here).
    media: Arc<CallMedia>,
    /// Audio sockets attached from other nodes: attach id and node.
    relayed: Arc<Mutex<Vec<(u64, String)>>>,
    account: String,
    state: Arc<AtomicU8>,
    answered: Arc<AtomicBool>,
}

#[derive(Debug)]
struct PresenceEntry {
    session_id: String,
    outbox: Outbox,
}

/// A request error: code and message.
pub type ReqError = (ErrorCode, String);

/// Ended calls remembered with who took part in them (see [`EndedCalls`]).
const ENDED_CALLS_REMEMBERED: usize = 1024;

/// How long a shutdown waits for queued call record writes to land.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// How long an ended call waits for the routing to free its holder before
/// telling the operator (in process: no wait at all).
const RELEASE_WAIT: Duration = Duration::from_millis(500);
/// How often a drain looks at the live calls and idle operators.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Who took part in recently ended calls (every operator offered the call,
/// and its holder) and how each ended, so that a late `accept` or `hangup`
/// tells a participant the real end and everyone else only what an unknown
/// sid gets. Bounded: the oldest is forgotten first; the call record, which
/// names only the holder, answers for older calls.
#[derive(Debug, Default)]
struct EndedCalls {
    calls: HashMap<String, (Vec<OperatorKey>, EndReason)>,
    order: VecDeque<String>,
}

impl EndedCalls {
    fn remember(&mut self, sid: &str, participants: Vec<OperatorKey>, reason: EndReason) {
        if self.order.len() >= ENDED_CALLS_REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.calls.remove(&oldest);
            }
        }
        if self
            .calls
            .insert(sid.to_owned(), (participants, reason))
            .is_none()
        {
            self.order.push_back(sid.to_owned());
        }
    }
}

/// The shared service state.
#[derive(Debug)]
pub struct Engine {
    /// Configuration.
    pub cfg: ServerConfig,
    /// The call store (SQLite or PostgreSQL): accounts, numbers, keys,
    /// trunks and call records. Touched per call event, never per frame.
    pub db: Arc<dyn CallStore>,
    /// Token signer.
    pub signer: TokenSigner,
    /// Routing state (shared by the cluster's nodes with `--cluster`).
    pub routing: Arc<dyn Routing>,
    /// Messages to the cluster's other nodes (none in process).
    pub bus: Arc<dyn Bus>,
    /// Every carrier, by name; numbers name theirs.
    pub carriers: Carriers,
    /// The simulated network (the carrier of numbers that name none).
    pub sim: Arc<SimCarrier>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Failed API-key attempts per address.
    pub auth_limiter: FailedAuthLimiter,
    presence: Mutex<HashMap<OperatorKey, PresenceEntry>>,
    calls: Mutex<HashMap<String, CallEntry>>,
    /// Calls of other nodes that this node's operators take part in (an
    /// offer or more came, no `callEnded` yet), by sid: ended `failed` for
    /// them if that node dies.
    remote_calls: Mutex<HashMap<String, RemoteCall>>,
    ended: Mutex<EndedCalls>,
    /// Live outbound calls per account, for the dialling policy's limit.
    outbound_slots: Arc<Slots>,
    /// Live preflight sessions per operator (account and operatorRef).
    preflight_slots: Arc<Slots>,
    shutdown_tx: watch::Sender<bool>,
    /// Set by [`Engine::drain`]: no new calls or presence sessions.
    draining: AtomicBool,
    next_attach: AtomicU64,
    /// Itself, for tasks started from `&self` (the bus's inbox).
    me: Weak<Engine>,
}

impl Engine {
    /// Builds the engine over a call store (a [`crate::db::Db`] is taken
    /// as the SQLite store), alone in its process.
    pub fn new(
        cfg: ServerConfig,
        db: impl Into<Arc<dyn CallStore>>,
        signer: TokenSigner,
    ) -> Arc<Self> {
        Self::clustered(
            cfg,
            db,
            signer,
            Arc::new(crate::routing::InMemoryRouting::new()),
            Arc::new(LocalBus),
        )
    }

    /// Builds the engine as a node of a cluster sharing `routing` and
    /// `bus`; [`Engine::join`] then starts taking the other nodes'
    /// messages.
    pub fn clustered(
        cfg: ServerConfig,
        db: impl Into<Arc<dyn CallStore>>,
        signer: TokenSigner,
        routing: Arc<dyn Routing>,
        bus: Arc<dyn Bus>,
    ) -> Arc<Self> {
        let db: Arc<dyn CallStore> = db.into();
        let sim = Arc::new(SimCarrier::recording(cfg.sim_record_secs));
        let metrics = Arc::new(Metrics::default());
        let _ = metrics.store.set(db.stats());
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            cfg,
            db,
            signer,
            routing,
            bus,
            carriers: Carriers::new(sim.clone()),
            sim,
            metrics,
            auth_limiter: FailedAuthLimiter::new(10, Duration::from_secs(60)),
            presence: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            remote_calls: Mutex::new(HashMap::new()),
            ended: Mutex::new(EndedCalls::default()),
            outbound_slots: Arc::new(Slots::default()),
            preflight_slots: Arc::new(Slots::default()),
            shutdown_tx: watch::channel(false).0,
            draining: AtomicBool::new(false),
            next_attach: AtomicU64::new(1),
        })
    }

    /// Starts taking what the cluster's other nodes send (a no-op alone).
    pub async fn join(self: &Arc<Self>) -> Result<(), RoutingError> {
        let weak: Weak<Engine> = Arc::downgrade(self);
        self.bus.start(weak).await
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown_tx.borrow()
    }

    /// Whether a drain has begun (see [`Engine::drain`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether new calls (dials, inbound calls) are taken: not while
    /// draining or shutting down.
    pub fn takes_new_calls(&self) -> bool {
        !self.is_draining() && !self.is_shutting_down()
    }

    /// Resolves once the service starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    /// Gauges for `/metrics`: operators online (on every node; `None`
    /// while the shared routing is unreachable) and live calls by state
    /// (on this one).
    pub async fn gauges(&self) -> (Option<usize>, Vec<(&'static str, usize)>) {
        let mut counts = [0usize; 4];
        for c in self.calls.lock().expect("calls lock").values() {
            let s = c.state.load(Ordering::Relaxed) as usize;
            if s < counts.len() {
                counts[s] += 1;
            }
        }
        let by_state = CallState::ALL
            .iter()
            .map(|s| (s.as_str(), counts[*s as usize]))
            .collect();
        let online = self.routing.operators_online().await.ok();
        (online, by_state)
    }

    // ── presence ──────────────────────────────────────────────────────

    /// Registers a presence socket; returns the one it replaces on this
    /// node (a session on another node is replaced by that node, told
    /// through the bus before this returns).
    pub async fn register_presence(
        &self,
        op: &OperatorKey,
        session_id: &str,
        outbox: Outbox,
    ) -> Option<Outbox> {
        let old = self.presence.lock().expect("presence lock").insert(
            op.clone(),
            PresenceEntry {
                session_id: session_id.to_owned(),
                outbox,
            },
        );
        if let Err(e) = self.bus.watch_operator(op, session_id).await {
            tracing::warn!(error = %e, "bus: an operator's messages from other nodes may not arrive");
        }
        old.map(|e| e.outbox)
    }

    /// Forgets a presence socket (if it is still the operator's current
    /// one) and takes the operator offline. Offers ringing it are declined,
    /// on every node.
    pub async fn unregister_presence(&self, op: &OperatorKey, session_id: &str) {
        {
            let mut map = self.presence.lock().expect("presence lock");
            if map.get(op).is_none_or(|e| e.session_id != session_id) {
                return;
            }
            map.remove(op);
        }
        self.bus.unwatch_operator(op, session_id);
        self.forget_remote_call(op, None);
        if let Err(e) = self.routing.set_offline(op).await {
            tracing::warn!(error = %e, "routing: taking an operator offline failed");
        }
        self.bus.operator_offline(op);
        self.decline_offers_to(op);
    }

    /// Declines the offers ringing `op` among this node's calls.
    fn decline_offers_to(&self, op: &OperatorKey) {
        let offered: Vec<mpsc::Sender<CallCmd>> = self
            .calls
            .lock()
            .expect("calls lock")
            .values()
            .filter(|c| {
                c.account == op.account
                    && c.state.load(Ordering::Relaxed) == CallState::Offered as u8
            })
            .map(|c| c.tx.clone())
            .collect();
        for tx in offered {
            let _ = tx.try_send(CallCmd::Reject(op.clone()));
        }
    }

    /// Sends a message to the operator's current presence socket, on this
    /// node or another.
    pub fn notify(&self, op: &OperatorKey, msg: &ServerMessage) {
        let outbox = self.local_presence(op);
        match outbox {
            Some(o) => o.send_text(msg.to_json()),
            None => self.bus.to_operator(op, &msg.to_json(), about_call(msg)),
        }
    }

    fn local_presence(&self, op: &OperatorKey) -> Option<Outbox> {
        self.presence
            .lock()
            .expect("presence lock")
            .get(op)
            .map(|e| e.outbox.clone())
    }

    /// The call the operator holds (live on this node or another), for
    /// `welcome.activeCall`.
    pub async fn active_call(&self, op: &OperatorKey) -> Option<ActiveCall> {
        let sid = self.routing.held_call(op).await.ok().flatten()?;
        let local = self
            .calls
            .lock()
            .expect("calls lock")
            .get(&sid)
            .map(|c| c.answered.load(Ordering::Relaxed));
        let answered = match local {
            Some(answered) => answered,
            None => {
                self.bus
                    .to_call(&sid, &CallCommand::Status)
                    .await
                    .ok()
                    .flatten()?
                    .answered
            }
        };
        Some(ActiveCall {
            call_sid: sid,
            answered,
        })
    }

    /// `goOnline`: splits the request into accepted and rejected ids.
    pub async fn go_online(
        &self,
        op: &OperatorKey,
        granted: &[String],
        requested: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), ReqError> {
        // Only the requested numbers are looked up, and sets keep it linear:
        // an account may have thousands of numbers.
        let granted: HashSet<&str> = granted.iter().map(String::as_str).collect();
        let candidates: Vec<String> = requested
            .iter()
            .filter(|id| granted.contains(id.as_str()))
            .cloned()
            .collect();
        let owned: HashSet<String> = self
            .db
            .owned_numbers(&op.account, &candidates)
            .await
            .map_err(internal)?
            .into_iter()
            .collect();
        let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for id in requested {
            if seen.insert(id.clone()) {
                let list = if owned.contains(&id) {
                    &mut accepted
                } else {
                    &mut rejected
                };
                list.push(id);
            }
        }
        if let Err(e) = self.routing.set_online(op, accepted.clone()).await {
            tracing::warn!(error = %e, "routing: putting an operator online failed");
        }
        Ok((accepted, rejected))
    }

    /// Tells a late `accept` / `hangup` what became of a call that is no
    /// longer live: its real end for an operator it was offered to or held
    /// by, and to anyone else exactly what an unknown sid gets (protocol:
    /// `CALL_NOT_FOUND` covers "not this operator's"), so holding a sid
    /// tells nobody else that the call existed or how it ended.
    async fn ended_call_reply(&self, op: &OperatorKey, sid: String) -> ServerMessage {
        let remembered = self
            .ended
            .lock()
            .expect("ended calls lock")
            .calls
            .get(&sid)
            .map(|(participants, reason)| (participants.contains(op), *reason));
        if let Some((took_part, reason)) = remembered {
            return if took_part {
                ServerMessage::CallEnded {
                    call_sid: sid,
                    reason,
                }
            } else {
                not_found(&sid)
            };
        }
        let rec = self.db.call_record(&sid).await.ok().flatten();
        match rec {
            // Forgotten by now: the record names the holder only.
            Some((account, r))
                if account == op.account
                    && r.operator_ref.as_deref() == Some(op.operator_ref.as_str()) =>
            {
                match r.end_reason {
                    Some(reason) => ServerMessage::CallEnded {
                        call_sid: sid,
                        reason,
                    },
                    None => not_found(&sid),
                }
            }
            _ => not_found(&sid),
        }
    }

    /// `accept`.
    pub async fn accept(&self, op: &OperatorKey, sid: String) {
        self.command(op, sid, CallCommand::Accept { op: op.clone() })
            .await;
    }

    /// `reject`.
    pub async fn reject(&self, op: &OperatorKey, sid: &str) {
        // No `callEnded` follows a reject: the operator is out of the call.
        self.forget_remote_call(op, Some(sid));
        let cmd = CallCommand::Reject { op: op.clone() };
        if self.to_local_call(sid, cmd.clone()).await.is_none() {
            let _ = self.bus.to_call(sid, &cmd).await;
        }
    }

    /// `hangup` on presence.
    pub async fn hangup(&self, op: &OperatorKey, sid: String, reason: Option<HangupReason>) {
        let reason = reason.map_or(EndReason::Hangup, EndReason::from);
        let cmd = CallCommand::Hangup {
            op: op.clone(),
            reason,
            from_presence: true,
        };
        self.command(op, sid, cmd).await;
    }

    /// An operator's command for a call live here or on another node; for
    /// a call live nowhere, what became of it.
    async fn command(&self, op: &OperatorKey, sid: String, cmd: CallCommand) {
        if self.to_local_call(&sid, cmd.clone()).await.is_some() {
            return;
        }
        match self.bus.to_call(&sid, &cmd).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let reply = self.ended_call_reply(op, sid).await;
                self.notify(op, &reply);
            }
            Err(e) => {
                tracing::warn!(error = %e, "bus: a command for a call on another node failed");
                self.notify(
                    op,
                    &ServerMessage::Error {
                        code: ErrorCode::Internal,
                        message: "the call's node could not be reached".into(),
                        request_id: None,
                        call_sid: Some(sid),
                    },
                );
            }
        }
    }

    /// Hands `cmd` to the call's task if the call is live on this node:
    /// how the call stands, or `None` when it is not live here.
    async fn to_local_call(&self, sid: &str, cmd: CallCommand) -> Option<CallStatus> {
        let (tx, answered, media, account, relayed) = {
            let calls = self.calls.lock().expect("calls lock");
            let c = calls.get(sid)?;
            (
                c.tx.clone(),
                c.answered.clone(),
                c.media.clone(),
                c.account.clone(),
                c.relayed.clone(),
            )
        };
        let mut attach = None;
        let cmd = match cmd {
            CallCommand::Accept { op } => Some(CallCmd::Accept(op)),
            CallCommand::Reject { op } => Some(CallCmd::Reject(op)),
            CallCommand::Hangup {
                op,
                reason,
                from_presence,
            } => Some(CallCmd::Hangup {
                op,
                reason,
                from_presence,
            }),
            CallCommand::Status => None,
            CallCommand::Mute { muted } => Some(CallCmd::Mute(muted)),
            CallCommand::Dtmf { digit } => Some(CallCmd::Dtmf(digit)),
            CallCommand::AudioClosed { attach_id } => Some(CallCmd::AudioClosed(attach_id)),
            CallCommand::Attach { op, relay, node } => {
                let outcome = if op.account == account {
                    self.attach_relay(&tx, media, op, &relay).await
                } else {
                    AttachOutcome::Forbidden
                };
                if let AttachOutcome::Attached { attach_id } = outcome {
                    relayed
                        .lock()
                        .expect("relayed lock")
                        .push((attach_id, node));
                }
                attach = Some(outcome);
                None
            }
        };
        if let Some(cmd) = cmd {
            let _ = tx.send(cmd).await;
        }
        Some(CallStatus {
            answered: answered.load(Ordering::Relaxed),
            attach,
        })
    }

    /// On the call's node: an audio socket on another node attaches
    /// through relay `relay`.
    async fn attach_relay(
        &self,
        tx: &mpsc::Sender<CallCmd>,
        media: Arc<CallMedia>,
        op: OperatorKey,
        relay: &str,
    ) -> AttachOutcome {
        let up = Arc::new(move |frame| {
            media.to_carrier(frame);
        });
        let down = match self.bus.open_relay(relay, up).await {
            Ok(down) => down,
            Err(e) => {
                tracing::warn!(error = %e, "bus: opening an audio relay failed");
                return AttachOutcome::NotFound;
            }
        };
        let (reply, answer) = oneshot::channel();
        let cmd = CallCmd::Attach {
            op,
            outbox: AudioPeer::Relayed(down),
            reply,
        };
        if tx.send(cmd).await.is_err() {
            return AttachOutcome::NotFound;
        }
        match answer.await {
            Ok(Ok(att)) => AttachOutcome::Attached {
                attach_id: att.attach_id,
            },
            Ok(Err(AttachError::Forbidden)) => AttachOutcome::Forbidden,
            _ => AttachOutcome::NotFound,
        }
    }

    /// `dial`: validates, assigns the operator and creates the call.
    pub async fn dial(
        self: &Arc<Self>,
        op: &OperatorKey,
        granted: &[String],
        to: String,
        caller_id: String,
    ) -> Result<String, ReqError> {
        if !self.takes_new_calls() {
            return Err((
                ErrorCode::ServerShutdown,
                "the service is shutting down: it takes no new calls".into(),
            ));
        }
        if let Err(e) = validate_e164(&to) {
            return Err((
                ErrorCode::InvalidNumber,
                format!("to {}: {e}", audin_protocol::Untrusted(&to)),
            ));
        }
        if let Err(e) = validate_e164(&caller_id) {
            return Err((
                ErrorCode::InvalidNumber,
                format!("callerId {}: {e}", audin_protocol::Untrusted(&caller_id)),
            ));
        }
        // The policy is read at every dial, so `admin set-dialing` applies
        // from the next one; both reads run at once.
        let (number, policy) = tokio::try_join!(
            self.db.number_by_e164(&caller_id),
            self.db.dialing_policy(&op.account),
        )
        .map_err(internal)?;
        let number = match number {
            Some(n) if n.account_id == op.account && granted.contains(&n.id) => n,
            _ => {
                return Err((
                    ErrorCode::NumberNotOwned,
                    format!(
                        "callerId {caller_id} is not a number of this account granted to this operator"
                    ),
                ));
            }
        };
        if !policy.allows(&to) {
            // What a stolen token tries first: premium and far-away numbers.
            tracing::warn!(
                account = %op.account,
                operator = %audin_protocol::Untrusted(&op.operator_ref),
                to = %audin_protocol::Untrusted(&to),
                "dial refused: destination outside the account's allowed destinations"
            );
            return Err((
                ErrorCode::Forbidden,
                format!(
                    "the destination {} is outside the account's allowed destinations",
                    audin_protocol::Untrusted(&to)
                ),
            ));
        }
        let carrier_name = self.outbound_carrier(number.carrier.as_deref(), &to);
        let Some(carrier) = self.carriers.of(carrier_name) else {
            tracing::warn!(
                carrier = %audin_protocol::Untrusted(carrier_name.unwrap_or("")),
                "the caller id's carrier is not running"
            );
            return Err((
                ErrorCode::Internal,
                "the caller id's carrier is not available".into(),
            ));
        };
        let sid = new_call_sid();
        match self.routing.assign(op, &sid).await {
            Ok(()) => {}
            Err(RoutingError::Busy { held }) => {
                return Err((
                    ErrorCode::OperatorBusy,
                    format!("the operator already holds call {held}"),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "routing: assigning a dialled call failed");
                return Err((ErrorCode::OperatorBusy, "routing unavailable".into()));
            }
        }
        // Taken in one step with the check, so two dials cannot both take
        // the last slot; the call task gives it back when the call ends.
        let slot = match self
            .outbound_slots
            .try_take(&op.account, policy.max_outbound_calls)
        {
            Ok(slot) => slot,
            Err(max) => {
                let _ = self.routing.release(&sid).await;
                tracing::warn!(
                    account = %op.account,
                    operator = %audin_protocol::Untrusted(&op.operator_ref),
                    to = %audin_protocol::Untrusted(&to),
                    max,
                    "dial refused: the account's concurrent outbound call limit is reached"
                );
                return Err((
                    ErrorCode::RateLimited,
                    format!("the account's limit of {max} concurrent outbound calls is reached"),
                ));
            }
        };
        let record = NewCall {
            call_sid: sid.clone(),
            account_id: op.account.clone(),
            direction: Direction::Outbound,
            from: caller_id.clone(),
            to: to.clone(),
            operator_ref: Some(op.operator_ref.clone()),
        };
        self.db.record(RecordWrite::Insert {
            call: record,
            offered_at: now_rfc3339(),
        });
        let call = Call::outbound(&sid, &op.account, op.clone(), self.timers(), now());
        let mut task = CallTask::new(self, call, &op.account, CallMedia::new());
        task.slot = Some(slot);
        task.carrier = Some(carrier);
        task.outbound = Some(OutboundRequest {
            call_sid: sid.clone(),
            from: caller_id,
            to,
        });
        self.spawn_task(task).await;
        tracing::info!(call_sid = %sid, operator = %audin_protocol::Untrusted(&op.operator_ref), "outbound call dialled");
        Ok(sid)
    }

    /// The carrier (its name in [`Carriers`]; `None`: the sim) an outbound
    /// call from a number whose `carrier` column is `caller_carrier` to
    /// `to` leaves through: the caller id's. One exception, `--dev` with a
    /// `--dev-trunk`: a sim number's call to a number outside the sim's
    /// scripted table goes to the dev trunk, so the demo can ring a
    /// softphone while the documented sim numbers behave as before.
    pub fn outbound_carrier<'a>(
        &self,
        caller_carrier: Option<&'a str>,
        to: &str,
    ) -> Option<&'a str> {
        match caller_carrier {
            None if self.cfg.dev
                && self.cfg.dev_trunk.is_some()
                && !crate::sim::is_scripted(to) =>
            {
                Some(db::DEV_TRUNK_ID)
            }
            other => other,
        }
    }

    /// The timing rules every call follows.
    fn timers(&self) -> CallTimers {
        CallTimers {
            ring_timeout: self.cfg.ring_timeout,
            audio_grace: self.cfg.audio_grace,
        }
    }

    /// An inbound call from a carrier (the one entry point: see
    /// [`Engine::inbound_sink`]). Rings every free operator online on the
    /// number; on a refusal the leg is hung up with the matching reason
    /// (nobody free: the caller hears busy).
    pub async fn inbound(self: &Arc<Self>, call: InboundCall) -> Result<(), InboundRefusal> {
        if !self.takes_new_calls() {
            call.leg.hang_up(EndReason::Failed);
            return Err(InboundRefusal::ShuttingDown);
        }
        let number = match self.db.number_by_e164(&call.to).await {
            Ok(n) => n,
            Err(e) => {
                internal(e);
                call.leg.hang_up(EndReason::Failed);
                return Err(InboundRefusal::Internal);
            }
        };
        let Some(number) =
            number.filter(|n| call.via.may_ring(n.carrier.as_deref(), &n.account_id))
        else {
            // Not ours, or not this carrier's: the same answer either way,
            // so a trunk cannot learn which numbers other accounts have.
            tracing::info!(
                call_sid = %call.call_sid,
                to = %audin_protocol::Untrusted(&call.to),
                via = ?call.via,
                "inbound call for a number this carrier does not serve: refused"
            );
            call.leg.hang_up(EndReason::Rejected);
            return Err(InboundRefusal::UnknownNumber);
        };
        let sid = call.call_sid.clone();
        let record = NewCall {
            call_sid: sid.clone(),
            account_id: number.account_id.clone(),
            direction: Direction::Inbound,
            from: call.from.clone(),
            to: call.to.clone(),
            operator_ref: None,
        };
        self.db.record(RecordWrite::Insert {
            call: record,
            offered_at: now_rfc3339(),
        });
        let ops = self
            .routing
            .available(&number.id)
            .await
            .unwrap_or_else(|e| {
                // Nobody to ring is what the caller gets (486).
                tracing::warn!(call_sid = %sid, error = %e, "routing: listing operators failed");
                Vec::new()
            });
        if ops.is_empty() {
            tracing::info!(call_sid = %sid, "inbound call: nobody online and free");
            call.leg.hang_up(EndReason::Rejected);
            self.db.record(RecordWrite::End {
                call_sid: sid,
                reason: EndReason::Rejected,
                at: now_rfc3339(),
            });
            Metrics::inc(&self.metrics.calls_ended);
            return Err(InboundRefusal::NobodyAvailable);
        }
        let machine = Call::inbound(&sid, &number.account_id, &ops, self.timers(), now());
        call.media.set_leg(call.leg.clone());
        let mut task = CallTask::new(self, machine, &number.account_id, call.media);
        task.leg = Some(call.leg);
        task.events = Some(call.events);
        // Listening for the call's commands before any offer goes out.
        self.spawn_task(task).await;
        let offer = ServerMessage::CallOffer {
            call_sid: sid.clone(),
            from: call.from,
            to: call.to,
            phone_number_id: number.id,
        };
        for op in &ops {
            self.notify(op, &offer);
        }
        tracing::info!(call_sid = %sid, offered = ops.len(), "inbound call ringing");
        Ok(())
    }

    /// The handle carriers deliver inbound calls through. It does not keep
    /// the engine alive.
    pub fn inbound_sink(self: &Arc<Self>) -> Arc<dyn InboundSink> {
        Arc::new(EngineSink(Arc::downgrade(self)))
    }

    /// Starts the call's task, owned by this node: commands from other
    /// nodes reach it once this returns.
    async fn spawn_task(self: &Arc<Self>, task: CallTask) {
        let sid = task.call.sid().to_owned();
        self.calls.lock().expect("calls lock").insert(
            task.call.sid().to_owned(),
            CallEntry {
                tx: task.tx.clone(),
                media: task.media.clone(),
                relayed: Arc::default(),
                account: task.account.clone(),
                state: task.state_cell.clone(),
                answered: task.answered_cell.clone(),
            },
        );
        if let Err(e) = self.bus.watch_call(&sid).await {
            tracing::warn!(call_sid = %sid, error = %e, "bus: commands from other nodes may not reach this call");
        }
        tokio::spawn(task.run());
    }

    // ── audio ─────────────────────────────────────────────────────────

    /// Where and how `op` attaches the audio socket of `call_sid`, a call
    /// of this node (`callAccepted` / `dialAccepted`): this node's URL when
    /// it has one to advertise (so the socket is not relayed from another
    /// node), and a single-use attach ticket (so the SDK needs no token
    /// request for it).
    pub fn attach_hint(&self, op: &OperatorKey, call_sid: &str) -> audin_protocol::AttachHint {
        audin_protocol::AttachHint {
            audio_url: self.cfg.advertise_url.clone(),
            attach_ticket: Some(self.signer.issue_attach_ticket(
                &op.account,
                &op.operator_ref,
                call_sid,
            )),
        }
    }

    /// The claims of an attach ticket for `call_sid`, used at most once
    /// cluster-wide; the same errors as a session token's otherwise.
    pub async fn redeem_attach_ticket(
        &self,
        ticket: &str,
        call_sid: &str,
    ) -> Result<Claims, crate::auth::TokenError> {
        let claims = self.signer.verify_attach_ticket(ticket, call_sid)?;
        let ttl = Duration::from_secs(audin_protocol::ATTACH_TICKET_TTL_SECS);
        match self.routing.claim_once(&claims.jti, ttl).await {
            Ok(true) => Ok(claims),
            Ok(false) => {
                tracing::warn!(call_sid = %call_sid, "an attach ticket was presented twice: refused");
                Err(crate::auth::TokenError::Invalid)
            }
            Err(e) => {
                tracing::warn!(error = %e, "routing: claiming an attach ticket failed");
                Err(crate::auth::TokenError::Invalid)
            }
        }
    }

    /// A preflight session of the token's operator, unless it already has
    /// [`PREFLIGHT_SESSIONS_PER_OPERATOR`] (`Err` with that bound): a token
    /// holder must not be able to open echo sessions without end. Dropping
    /// the slot ends the count.
    pub(crate) fn preflight_slot(&self, claims: &Claims) -> Result<Slot, u32> {
        // A NUL cannot occur in either part (both are checked printable).
        let key = format!("{}\0{}", claims.acc, claims.sub);
        self.preflight_slots
            .try_take(&key, Some(PREFLIGHT_SESSIONS_PER_OPERATOR))
    }

    /// Attaches an audio socket to a call.
    pub async fn attach(
        &self,
        claims: &Claims,
        sid: &str,
        outbox: Outbox,
    ) -> Result<Attachment, AttachError> {
        let op = OperatorKey {
            account: claims.acc.clone(),
            operator_ref: claims.sub.clone(),
        };
        let local = {
            let calls = self.calls.lock().expect("calls lock");
            calls
                .get(sid)
                .map(|entry| (entry.tx.clone(), entry.account.clone()))
        };
        let Some((tx, account)) = local else {
            return self.attach_relayed(op, sid, outbox).await;
        };
        if account != claims.acc {
            return Err(AttachError::Forbidden);
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(CallCmd::Attach {
            op,
            outbox: AudioPeer::Local(outbox),
            reply: reply_tx,
        })
        .await
        .map_err(|_| AttachError::NotFound)?;
        reply_rx.await.unwrap_or(Err(AttachError::NotFound))
    }

    /// Attaches an audio socket here to a call live on another node,
    /// through a relay of the bus: the socket's session sees an ordinary
    /// [`Attachment`] whose far end is the relay and whose commands are
    /// forwarded to the call's node.
    async fn attach_relayed(
        &self,
        op: OperatorKey,
        sid: &str,
        outbox: Outbox,
    ) -> Result<Attachment, AttachError> {
        let relay = random_hex(8);
        let sink = Arc::new(SocketSink(outbox));
        let up = match self.bus.join_relay(&relay, sink).await {
            Ok(up) => up,
            // In process: no other node, the call is live nowhere.
            Err(_) => return Err(AttachError::NotFound),
        };
        let asked = self
            .bus
            .to_call(
                sid,
                &CallCommand::Attach {
                    op,
                    relay,
                    node: self.bus.node_id().unwrap_or_default().to_owned(),
                },
            )
            .await;
        let attach_id = match asked {
            Ok(Some(CallStatus {
                attach: Some(AttachOutcome::Attached { attach_id }),
                ..
            })) => attach_id,
            Ok(Some(CallStatus {
                attach: Some(AttachOutcome::Forbidden),
                ..
            })) => return Err(AttachError::Forbidden),
            Ok(_) => return Err(AttachError::NotFound),
            Err(e) => {
                tracing::warn!(call_sid = %sid, error = %e, "bus: attaching to a call on another node failed");
                return Err(AttachError::NotFound);
            }
        };
        tracing::debug!(call_sid = %sid, "audio socket relayed to the call's node");
        let media = CallMedia::new();
        media.set_leg(Arc::new(RelayLeg(up)));
        let (cmd, mut commands) = mpsc::channel(16);
        let (bus, sid) = (self.bus.clone(), sid.to_owned());
        tokio::spawn(async move {
            while let Some(cmd) = commands.recv().await {
                let (cmd, last) = match cmd {
                    CallCmd::Mute(muted) => (CallCommand::Mute { muted }, false),
                    CallCmd::Dtmf(digit) => (CallCommand::Dtmf { digit }, false),
                    CallCmd::Hangup {
                        op,
                        reason,
                        from_presence,
                    } => (
                        CallCommand::Hangup {
                            op,
                            reason,
                            from_presence,
                        },
                        false,
                    ),
                    CallCmd::AudioClosed(attach_id) => {
                        (CallCommand::AudioClosed { attach_id }, true)
                    }
                    _ => continue,
                };
                if let Err(e) = bus.to_call(&sid, &cmd).await {
                    tracing::warn!(call_sid = %sid, error = %e, "bus: a relayed socket's command was lost");
                }
                if last {
                    return;
                }
            }
        });
        Ok(Attachment {
            attach_id,
            media,
            cmd,
        })
    }

    // ── drain and shutdown ────────────────────────────────────────────

    /// Graceful drain (SIGTERM), before [`Engine::shutdown`]: from now on
    /// no new call is taken (a dial gets `SERVER_SHUTDOWN`, an inbound
    /// call is refused: SIP 503) and no new presence session starts, while
    /// the live calls go on. Operators holding no call are sent away (close
    /// 1001, so their SDKs reconnect, through a load balancer to another
    /// node) as soon as no call is ringing, and each operator whose call
    /// ends follows. Returns once no call is live or `deadline` has passed:
    /// the number of calls still live (the shutdown ends them `failed`).
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.draining.store(1, Ordering::Relaxed);
        let until = Instant::now() + deadline;
        loop {
            let (live, ringing) = self.live_and_ringing();
            if live == 0 {
                return 0;
            }
            if ringing == 0 {
                self.send_idle_operators_away().await;
            }
            if Instant::now() >= until {
                return live;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// Live calls, and how many of them ring operators.
    fn live_and_ringing(&self) -> (usize, usize) {
        let calls = self.calls.lock().expect("calls lock");
        let ringing = calls
            .values()
            .filter(|c| c.state.load(Ordering::Relaxed) == CallState::Offered as u8)
            .count();
        (calls.len(), ringing)
    }

    /// Closes (1001) the presence socket of every operator holding no call.
    async fn send_idle_operators_away(&self) {
        let online: Vec<(OperatorKey, Outbox)> = self
            .presence
            .lock()
            .expect("presence lock")
            .iter()
            .map(|(op, e)| (op.clone(), e.outbox.clone()))
            .collect();
        for (op, outbox) in online {
            if outbox.is_open() && matches!(self.routing.held_call(&op).await, Ok(None)) {
                outbox.close(CloseCode::GoingAway, "SERVER_SHUTDOWN");
            }
        }
    }

    /// Ends every live call with `failed`, then tells every socket to
    /// close with 1001. Waits (a few seconds at most) for the calls to end.
    pub async fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
        let txs: Vec<mpsc::Sender<CallCmd>> = self
            .calls
            .lock()
            .expect("calls lock")
            .values()
            .map(|c| c.tx.clone())
            .collect();
        for tx in txs {
            let _ = tx.send(CallCmd::Shutdown).await;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.calls.lock().expect("calls lock").is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let presence: Vec<Outbox> = self
            .presence
            .lock()
            .expect("presence lock")
            .values()
            .map(|e| e.outbox.clone())
            .collect();
        for o in presence {
            o.close(CloseCode::GoingAway, "SERVER_SHUTDOWN");
        }
        // Let the store finish the queued record updates; bounded, as a
        // PostgreSQL outage would otherwise hold the shutdown forever.
        match tokio::time::timeout(SHUTDOWN_FLUSH, self.db.flush()).await {
            Ok(_) => {}
            Err(_) => tracing::warn!(
                queued = self.db.stats().snapshot().0,
                "shutting down with call record writes still queued (store unreachable)"
            ),
        }
    }
}

/// [`InboundSink`] over a weak engine reference (carriers outlive nothing).
struct EngineSink(Weak<Engine>);

impl InboundSink for EngineSink {
    fn deliver(&self, call: InboundCall) -> BoxFuture<'_, Result<(), InboundRefusal>> {
        Box::pin(async move {
            match self.0.upgrade() {
                Some(engine) => engine.inbound(call).await,
                None => {
                    call.leg.hang_up(EndReason::Failed);
                    Err(InboundRefusal::ShuttingDown)
                }
            }
        })
    }
}

/// A call of another node that operators here take part in.
#[derive(Debug)]
struct RemoteCall {
    node: String,
    operators: Vec<OperatorKey>,
}

/// Which call a message for an operator is about.
fn about_call(msg: &ServerMessage) -> Option<AboutCall<'_>> {
    let (call_sid, ends) = match msg {
        ServerMessage::CallOffer { call_sid, .. }
        | ServerMessage::CallAccepted { call_sid, .. }
        | ServerMessage::DialAccepted { call_sid, .. } => (call_sid, false),
        ServerMessage::CallEnded { call_sid, .. } => (call_sid, true),
        _ => return None,
    };
    Some(AboutCall { call_sid, ends })
}

impl Engine {
    /// Keeps which operators here take part in which other node's calls.
    fn note_remote_call(&self, op: &OperatorKey, origin: Origin<'_>) {
        let sid = origin.about.call_sid;
        if origin.about.ends {
            return self.forget_remote_call(op, Some(sid));
        }
        let mut calls = self.remote_calls.lock().expect("remote calls lock");
        let call = calls.entry(sid.to_owned()).or_insert_with(|| RemoteCall {
            node: origin.node.to_owned(),
            operators: Vec::new(),
        });
        if !call.operators.contains(op) {
            call.operators.push(op.clone());
        }
        let n = calls.len();
        drop(calls);
        self.count_remote_calls(n);
    }

    /// `op` is out of the other node's call `sid` (every call: `None`).
    fn forget_remote_call(&self, op: &OperatorKey, sid: Option<&str>) {
        let mut calls = self.remote_calls.lock().expect("remote calls lock");
        calls.retain(|call_sid, call| {
            if sid.is_none_or(|s| s == call_sid) {
                call.operators.retain(|o| o != op);
            }
            !call.operators.is_empty()
        });
        self.count_remote_calls(calls.len());
    }

    fn count_remote_calls(&self, n: usize) {
        self.metrics.remote_calls.store(n as u64, Ordering::Relaxed);
    }

    /// A node died: every call of it that operators here took part in
    /// ends `failed` for them, its holder is freed in the routing, and its
    /// open records are closed (the store closes only records of nodes
    /// whose lock is free, never a live node's).
    async fn end_calls_of(&self, node: &str) {
        let dead: Vec<(String, RemoteCall)> = {
            let mut calls = self.remote_calls.lock().expect("remote calls lock");
            let sids: Vec<String> = calls
                .iter()
                .filter(|(_, c)| c.node == node)
                .map(|(sid, _)| sid.clone())
                .collect();
            let dead = sids
                .into_iter()
                .filter_map(|sid| calls.remove(&sid).map(|c| (sid, c)))
                .collect();
            self.count_remote_calls(calls.len());
            dead
        };
        for (sid, call) in &dead {
            // Freed first, as a call's own task does: told the call ended,
            // the operator may be offered the next one at once.
            if let Err(e) = self.routing.release(sid).await {
                tracing::warn!(call_sid = %sid, error = %e, "routing: freeing a dead node's call failed");
            }
            let ended = ServerMessage::CallEnded {
                call_sid: sid.clone(),
                reason: EndReason::Failed,
            };
            for op in &call.operators {
                if let Some(o) = self.local_presence(op) {
                    o.send_text(ended.to_json());
                }
            }
            tracing::info!(call_sid = %sid, node = %node, "a call on a dead node ended for its operators here");
        }
        // This node's calls whose audio socket was on the dead node: the
        // socket is gone (the call's grace window for a reattach starts).
        let orphaned: Vec<(mpsc::Sender<CallCmd>, u64)> = {
            let calls = self.calls.lock().expect("calls lock");
            calls
                .values()
                .flat_map(|c| {
                    let mut relayed = c.relayed.lock().expect("relayed lock");
                    let gone: Vec<u64> = relayed
                        .iter()
                        .filter(|(_, n)| n == node)
                        .map(|(id, _)| *id)
                        .collect();
                    relayed.retain(|(_, n)| n != node);
                    gone.into_iter().map(|id| (c.tx.clone(), id))
                })
                .collect()
        };
        for (tx, attach_id) in orphaned {
            let _ = tx.send(CallCmd::AudioClosed(attach_id)).await;
        }
        match self.db.close_calls_of_gone_nodes().await {
            Ok(n) if n > 0 => {
                tracing::warn!(node = %node, closed = n, "closed the call records of a node that is gone as failed");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "closing a gone node's call records failed"),
        }
        tracing::info!(node = %node, calls = dead.len(), "ended this node's operators' calls on a dead node");
    }
}

/// What the cluster's other nodes send this one.
impl Inbox for Engine {
    fn to_operator(&self, op: &OperatorKey, text: &str, origin: Option<Origin<'_>>) {
        let Some(o) = self.local_presence(op) else {
            return;
        };
        if let Some(origin) = origin {
            self.note_remote_call(op, origin);
        }
        o.send_text(text.to_owned());
    }

    fn node_died(&self, node: &str) {
        let Some(engine) = self.me.upgrade() else {
            return;
        };
        let node = node.to_owned();
        tokio::spawn(async move { engine.end_calls_of(&node).await });
    }

    fn operator_moved(&self, op: &OperatorKey, session_id: &str) {
        let old = {
            let mut map = self.presence.lock().expect("presence lock");
            if map.get(op).is_none_or(|e| e.session_id == session_id) {
                return;
            }
            // Forgotten first, so the closing session does not take the
            // operator offline: it is online on the other node now.
            map.remove(op)
        };
        if let Some(old) = old {
            self.bus.unwatch_operator(op, &old.session_id);
            crate::presence::replace(&old.outbox, op);
        }
    }

    fn to_call<'a>(
        &'a self,
        call_sid: &'a str,
        cmd: CallCommand,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<CallStatus>> + Send + 'a>> {
        Box::pin(self.to_local_call(call_sid, cmd))
    }

    fn operator_offline(&self, op: &OperatorKey) {
        self.decline_offers_to(op);
    }
}

fn internal(e: anyhow::Error) -> ReqError {
    tracing::error!(error = %e, "internal error");
    (ErrorCode::Internal, "internal error".into())
}

/// One live call: the task that drives its [`Call`] state machine, owning
/// what the machine may not touch (the carrier leg, its events, the audio
/// sockets, the clock) and serialising everything that happens to the call.
struct CallTask {
    engine: Arc<Engine>,
    call: Call,
    account: String,
    state_cell: Arc<AtomicU8>,
    answered_cell: Arc<AtomicBool>,
    /// Where outbound calls go (the caller id's carrier).
    carrier: Option<Arc<dyn Carrier>>,
    outbound: Option<OutboundRequest>,
    leg: Option<Arc<dyn CarrierLeg>>,
    media: Arc<CallMedia>,
    events: Option<EventReceiver>,
    placing: Option<BoxFuture<'static, Result<Arc<dyn CarrierLeg>, EndCause>>>,
    /// Outbound: the account's concurrent-call slot, held until the call
    /// has ended and no leg of it can still be placed (dropping it gives it
    /// back, so a panicking task does not leak it either).
    slot: Option<Slot>,
    /// Attached audio sockets by attach id (two at most, during a replace).
    sockets: HashMap<u64, AudioPeer>,
    /// The routing has forgotten the call's holder.
    released: bool,
    tx: mpsc::Sender<CallCmd>,
    rx: mpsc::Receiver<CallCmd>,
}

async fn sleep_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

async fn recv_opt(rx: &mut Option<EventReceiver>) -> Option<CarrierEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn placed_opt(
    placing: &mut Option<BoxFuture<'static, Result<Arc<dyn CarrierLeg>, EndCause>>>,
) -> Result<Arc<dyn CarrierLeg>, EndCause> {
    match placing {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The runtime's clock, as the state machine takes it (the paused test
/// clock included).
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl CallTask {
    fn new(engine: &Arc<Engine>, call: Call, account: &str, media: Arc<CallMedia>) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let state_cell = Arc::new(AtomicU8::new(CallState::of(call.phase()) as u8));
        Self {
            engine: engine.clone(),
            call,
            account: account.to_owned(),
            state_cell,
            answered_cell: Arc::new(AtomicBool::new(false)),
            carrier: None,
            outbound: None,
            leg: None,
            media,
            events: None,
            placing: None,
            slot: None,
            sockets: HashMap::new(),
            released: false,
            tx,
            rx,
        }
    }

    async fn run(mut self) {
        loop {
            self.perform().await;
            if self.call.is_ended() {
                break;
            }
            let deadline = self.call.poll_timeout();
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd).await,
                    // The engine is gone.
                    None => self.call.shutdown(),
                },
                ev = recv_opt(&mut self.events) => {
                    if ev.is_none() {
                        self.events = None;
                    }
                    self.call.carrier_event(ev);
                }
                placed = placed_opt(&mut self.placing) => {
                    self.placing = None;
                    let result = placed.map(|leg| {
                        self.media.set_leg(leg.clone());
                        self.leg = Some(leg);
                    });
                    self.call.placed(result);
                }
                _ = sleep_opt(deadline) => self.call.handle_timeout(now()),
            }
        }
        self.finish();
    }

    async fn on_cmd(&mut self, cmd: CallCmd) {
        match cmd {
            CallCmd::Accept(op) => self.accept(op).await,
            CallCmd::Reject(op) => self.call.reject(&op),
            CallCmd::Hangup {
                op,
                reason,
                from_presence,
            } => self.call.hangup(&op, reason, from_presence),
            CallCmd::Attach { op, outbox, reply } => {
                let attach_id = self.engine.next_attach.fetch_add(1, Ordering::Relaxed);
                self.sockets.insert(attach_id, outbox);
                let result = self.call.attach(&op, attach_id, now());
                if result.is_err() {
                    self.sockets.remove(&attach_id);
                }
                let _ = reply.send(result.map(|_| Attachment {
                    attach_id,
                    media: self.media.clone(),
                    cmd: self.tx.clone(),
                }));
            }
            CallCmd::AudioClosed(id) => {
                self.sockets.remove(&id);
                self.call.audio_closed(id, now());
            }
            CallCmd::Mute(m) => {
                tracing::debug!(call_sid = %self.call.sid(), muted = m, "mute");
            }
            CallCmd::Dtmf(d) => self.call.dtmf(d),
            CallCmd::Shutdown => self.call.shutdown(),
        }
    }

    /// An operator's `accept`: the routing's one atomic step (is the
    /// operator free? then it holds this call) is taken only for an
    /// operator the call still rings, and the machine decides with its
    /// answer. Nothing else reaches the call meanwhile.
    async fn accept(&mut self, op: OperatorKey) {
        let held = if self.call.rings(&op) {
            match self.engine.routing.assign(&op, self.call.sid()).await {
                Ok(()) => true,
                Err(RoutingError::Busy { .. }) => false,
                Err(e) => {
                    tracing::warn!(call_sid = %self.call.sid(), error = %e, "routing: assigning an accepted call failed");
                    false
                }
            }
        } else {
            false
        };
        self.call.accept(&op, now(), &mut |_: &OperatorKey| held);
    }

    /// Performs what the state machine decided, in order.
    async fn perform(&mut self) {
        while let Some(action) = self.call.poll_action() {
            // Before a `callEnded` goes out: an operator told the call
            // ended may dial again at once and must find itself free and
            // the account's slot given back.
            self.release_if_over().await;
            match action {
                Action::Notify(op, mut msg) => {
                    if let ServerMessage::CallAccepted { call_sid, attach } = &mut msg {
                        *attach = self.engine.attach_hint(&op, call_sid);
                    }
                    self.engine.notify(&op, &msg)
                }
                Action::ToAudio(id, msg) => {
                    if let Some(o) = self.sockets.get(&id) {
                        o.send_text(msg.to_json());
                    }
                }
                Action::CloseAudio(id, code, reason) => {
                    if let Some(o) = self.sockets.remove(&id) {
                        o.close(code, reason);
                    }
                }
                Action::RouteAudio(id) => {
                    let socket = id.and_then(|id| self.sockets.get(&id));
                    self.media
                        .route_to_operator(socket.map(AudioPeer::operator_audio));
                }
                Action::AnswerLeg => {
                    if let Some(leg) = &self.leg {
                        leg.answer();
                    }
                }
                Action::PlaceCall => self.place_call(),
                Action::SendDtmf(d) => {
                    if let Some(leg) = &self.leg {
                        leg.send_dtmf(d);
                    }
                }
                Action::HangUpLeg(reason) => {
                    if let Some(leg) = &self.leg {
                        leg.hang_up(reason);
                    }
                }
                Action::RecordDtmf(digit) => {
                    self.engine.db.record(RecordWrite::Dtmf {
                        call_sid: self.call.sid().to_owned(),
                        digit,
                    });
                }
                Action::RecordAnswered(op_ref) => {
                    self.answered_cell.store(true, Ordering::Relaxed);
                    self.engine.db.record(RecordWrite::Answer {
                        call_sid: self.call.sid().to_owned(),
                        operator_ref: op_ref,
                        at: now_rfc3339(),
                    });
                }
                Action::RecordEnded(reason) => {
                    self.engine.db.record(RecordWrite::End {
                        call_sid: self.call.sid().to_owned(),
                        reason,
                        at: now_rfc3339(),
                    });
                }
            }
        }
        self.release_if_over().await;
        self.state_cell
            .store(CallState::of(self.call.phase()) as u8, Ordering::Relaxed);
    }

    /// Once the call has ended: frees its holder in the routing, and gives
    /// the account's outbound slot back unless a carrier leg is still
    /// being placed (that one keeps the slot until it is hung up: see
    /// [`CallTask::finish`]).
    async fn release_if_over(&mut self) {
        if !self.call.is_ended() {
            return;
        }
        if self.placing.is_none() {
            self.slot = None;
        }
        if !self.released {
            self.released = true;
            let (routing, sid) = (self.engine.routing.clone(), self.call.sid().to_owned());
            let mut release = Box::pin(async move {
                if let Err(e) = routing.release(&sid).await {
                    tracing::warn!(call_sid = %sid, error = %e, "routing: releasing an ended call failed");
                }
            });
            // In process the release is done at its first poll. Otherwise
            // it is waited for (a freed operator may dial at once), but not
            // for long: with the shared routing away the release goes on in
            // the background, and the operator hears of the end meanwhile.
            if release.as_mut().now_or_never().is_none() {
                let _ = tokio::time::timeout(RELEASE_WAIT, tokio::spawn(release)).await;
            }
        }
    }

    fn place_call(&mut self) {
        let (Some(carrier), Some(req)) = (self.carrier.clone(), self.outbound.clone()) else {
            return self.call.placed(Err(EndCause::failed(None, "no carrier")));
        };
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        self.events = Some(rx);
        let media = self.media.clone();
        self.placing = Some(Box::pin(
            async move { carrier.place_call(req, tx, media).await },
        ));
    }

    /// The call is over: forget it, remembering who took part.
    fn finish(&mut self) {
        let engine = &self.engine;
        if let (Some(placing), Phase::Ended(reason)) = (self.placing.take(), self.call.phase()) {
            // Ended while the far end was still being called: its leg is
            // hung up as soon as it exists, never left ringing.
            let reason = *reason;
            // The far end may still answer until then: the call counts
            // against the account's limit until its leg is hung up.
            let slot = self.slot.take();
            tokio::spawn(async move {
                let placed = placing.await;
                // Given back in the same step as the hang-up (no await in
                // between), before anyone can see the leg gone.
                drop(slot);
                if let Ok(leg) = placed {
                    leg.hang_up(reason);
                }
            });
        }
        if let Phase::Ended(reason) = *self.call.phase() {
            engine.ended.lock().expect("ended calls lock").remember(
                self.call.sid(),
                self.call.participants(),
                reason,
            );
        }
        engine
            .calls
            .lock()
            .expect("calls lock")
            .remove(self.call.sid());
        engine.bus.unwatch_call(self.call.sid());
        Metrics::inc(&engine.metrics.calls_ended);
    }
}

/// Preflight sessions one operator may hold at once (a browser tab or
/// two testing their path; not a way to load the service).
pub const PREFLIGHT_SESSIONS_PER_OPERATOR: u32 = 2;

/// A new presence session id.
pub fn new_session_id() -> String {
    format!("ps_{}", random_hex(8))
}

/// Live things per key, under a limit: an account's outbound calls, an
/// operator's preflight sessions. The limit is checked and the slot taken
/// under one lock, so concurrent requests never both take the last slot.
/// Everything is counted, limited or not, so a limit set while some are
/// live counts them too. Per process: with several servers, the limit
/// applies on each.
#[derive(Debug, Default)]
struct Slots(Mutex<HashMap<String, u32>>);

impl Slots {
    /// Takes a slot of `key` unless it already has `max` live ones
    /// (`Err(max)`); `None`: no limit.
    fn try_take(self: &Arc<Self>, key: &str, max: Option<u32>) -> Result<Slot, u32> {
        let mut live = self.0.lock().expect("slots lock");
        let n = live.get(key).copied().unwrap_or(0);
        if let Some(max) = max.filter(|max| n >= *max) {
            return Err(max);
        }
        live.insert(key.to_owned(), n + 1);
        Ok(Slot {
            slots: self.clone(),
            key: key.to_owned(),
        })
    }

    #[cfg(test)]
    fn live(&self, key: &str) -> u32 {
        let live = self.0.lock().expect("slots lock");
        live.get(key).copied().unwrap_or(0)
    }
}

/// One live thing of a key; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut live = self.slots.0.lock().expect("slots lock");
        if let Some(n) = live.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Keys with nothing live take no memory.
                live.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn concurrent_takers_never_exceed_the_limit_and_drops_give_slots_back() {
        let slots = Arc::new(Slots::default());
        for round in 0..50 {
            let start = Arc::new(Barrier::new(8));
            let held: Vec<Option<Slot>> = std::thread::scope(|scope| {
                let takers: Vec<_> = (0..8)
                    .map(|_| {
                        let (slots, start) = (slots.clone(), start.clone());
                        scope.spawn(move || {
                            start.wait();
                            slots.try_take("acc", Some(3)).ok()
                        })
                    })
                    .collect();
                takers.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let taken = held.iter().flatten().count();
            assert_eq!(taken, 3, "round {round}: {taken} slots taken of 3");
            assert_eq!(slots.live("acc"), 3);
            drop(held);
            assert_eq!(slots.live("acc"), 0, "round {round}: a slot leaked");
        }
        assert!(
            slots.0.lock().unwrap().is_empty(),
            "idle accounts forgotten"
        );
    }

    #[test]
    fn a_limit_counts_calls_taken_while_unlimited_and_per_account() {
        let slots = Arc::new(Slots::default());
        let a = slots.try_take("a", None).unwrap();
        let _b = slots.try_take("a", None).unwrap();
        assert_eq!(slots.try_take("a", Some(2)).unwrap_err(), 2);
        assert!(slots.try_take("other", Some(1)).is_ok(), "per account");
        assert_eq!(slots.try_take("a", Some(0)).unwrap_err(), 0);
        drop(a);
        let _c = slots.try_take("a", Some(2)).unwrap();
    }
}

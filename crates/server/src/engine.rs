//! The switchboard: operators' presence sockets, live calls and their
//! state machines.
//!
//! Each live call is one task ([`CallActor`]) that owns the call's state and
//! serialises everything that happens to it: operator accepts and rejects,
//! carrier events, audio attach and detach, timers. Cross-call decisions
//! (who is free, who won an offer) go through [`Routing`]. An ended call is
//! removed from memory; its record stays in the database.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use audin_protocol::{
    ActiveCall, AudioServerMessage, CloseCode, Direction, EndReason, ErrorCode, HangupReason,
    ServerMessage, validate_e164,
};
use axum::body::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::auth::{Claims, TokenSigner};
use crate::carrier::{
    Carrier, CarrierEvent, CarrierLeg, EVENT_QUEUE, EventReceiver, InboundCall, OutboundRequest,
};
use crate::config::ServerConfig;
use crate::db::{self, Db, NewCall};
use crate::metrics::Metrics;
use crate::ratelimit::FailedAuthLimiter;
use crate::routing::{ClaimOutcome, DeclineOutcome, OperatorKey, Routing};
use crate::sim::SimCarrier;
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
        outbox: Outbox,
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

/// Why an attach was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// Not this operator's call (4004).
    Forbidden,
    /// Unknown or ended (4008).
    NotFound,
}

/// The media path of a call, shared with its audio socket.
#[derive(Debug, Default)]
pub struct CallMedia {
    leg: OnceLock<Arc<dyn CarrierLeg>>,
}

impl CallMedia {
    /// Sends a frame to the far end, if the leg exists.
    pub fn to_carrier(&self, frame: Bytes) -> bool {
        match self.leg.get() {
            Some(leg) => {
                leg.send_audio(frame);
                true
            }
            None => false,
        }
    }
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

#[derive(Debug)]
struct CallEntry {
    tx: mpsc::Sender<CallCmd>,
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
    /// Database.
    pub db: Db,
    /// Token signer.
    pub signer: TokenSigner,
    /// Routing state.
    pub routing: Arc<dyn Routing>,
    /// The carrier outbound calls use.
    pub carrier: Arc<dyn Carrier>,
    /// The simulated network (also the carrier today).
    pub sim: Arc<SimCarrier>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Failed API-key attempts per address.
    pub auth_limiter: FailedAuthLimiter,
    presence: Mutex<HashMap<OperatorKey, PresenceEntry>>,
    calls: Mutex<HashMap<String, CallEntry>>,
    ended: Mutex<EndedCalls>,
    shutdown_tx: watch::Sender<bool>,
    next_attach: AtomicU64,
}

impl Engine {
    /// Builds the engine.
    pub fn new(cfg: ServerConfig, db: Db, signer: TokenSigner) -> Arc<Self> {
        let sim = Arc::new(SimCarrier::new());
        Arc::new(Self {
            cfg,
            db,
            signer,
            routing: Arc::new(crate::routing::InMemoryRouting::new()),
            carrier: sim.clone(),
            sim,
            metrics: Arc::new(Metrics::default()),
            auth_limiter: FailedAuthLimiter::new(10, Duration::from_secs(60)),
            presence: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            ended: Mutex::new(EndedCalls::default()),
            shutdown_tx: watch::channel(false).0,
            next_attach: AtomicU64::new(1),
        })
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown_tx.borrow()
    }

    /// Resolves once the service starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    /// Gauges for `/metrics`: operators online and live calls by state.
    pub fn gauges(&self) -> (usize, Vec<(&'static str, usize)>) {
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
        (self.routing.operators_online(), by_state)
    }

    // ── presence ──────────────────────────────────────────────────────

    /// Registers a presence socket; returns the one it replaces.
    pub fn register_presence(
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
        old.map(|e| e.outbox)
    }

    /// Forgets a presence socket (if it is still the operator's current
    /// one) and takes the operator offline. Offers ringing it are declined.
    pub fn unregister_presence(&self, op: &OperatorKey, session_id: &str) {
        {
            let mut map = self.presence.lock().expect("presence lock");
            if map.get(op).is_none_or(|e| e.session_id != session_id) {
                return;
            }
            map.remove(op);
        }
        self.routing.set_offline(op);
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

    /// Sends a message to the operator's current presence socket.
    pub fn notify(&self, op: &OperatorKey, msg: &ServerMessage) {
        let outbox = self
            .presence
            .lock()
            .expect("presence lock")
            .get(op)
            .map(|e| e.outbox.clone());
        if let Some(o) = outbox {
            o.send_text(msg.to_json());
        }
    }

    /// The call the operator holds, for `welcome.activeCall`.
    pub fn active_call(&self, op: &OperatorKey) -> Option<ActiveCall> {
        let sid = self.routing.held_call(op)?;
        let answered = self
            .calls
            .lock()
            .expect("calls lock")
            .get(&sid)
            .map(|c| c.answered.load(Ordering::Relaxed))?;
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
        let account = op.account.clone();
        let owned = self
            .db
            .call(move |c| db::numbers_of(c, &account))
            .await
            .map_err(internal)?;
        let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
        for id in requested {
            let ok = granted.contains(&id) && owned.iter().any(|n| n.id == id);
            let list = if ok { &mut accepted } else { &mut rejected };
            if !list.contains(&id) {
                list.push(id);
            }
        }
        self.routing.set_online(op, accepted.clone());
        Ok((accepted, rejected))
    }

    fn call_tx(&self, sid: &str) -> Option<mpsc::Sender<CallCmd>> {
        self.calls
            .lock()
            .expect("calls lock")
            .get(sid)
            .map(|c| c.tx.clone())
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
                not_found(sid)
            };
        }
        let lookup = sid.clone();
        let rec = self
            .db
            .call(move |c| db::call_record(c, &lookup))
            .await
            .ok()
            .flatten();
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
                    None => not_found(sid),
                }
            }
            _ => not_found(sid),
        }
    }

    /// `accept`.
    pub async fn accept(&self, op: &OperatorKey, sid: String) {
        match self.call_tx(&sid) {
            Some(tx) => {
                let _ = tx.send(CallCmd::Accept(op.clone())).await;
            }
            None => {
                let reply = self.ended_call_reply(op, sid).await;
                self.notify(op, &reply);
            }
        }
    }

    /// `reject`.
    pub async fn reject(&self, op: &OperatorKey, sid: &str) {
        if let Some(tx) = self.call_tx(sid) {
            let _ = tx.send(CallCmd::Reject(op.clone())).await;
        }
    }

    /// `hangup` on presence.
    pub async fn hangup(&self, op: &OperatorKey, sid: String, reason: Option<HangupReason>) {
        let reason = reason.map_or(EndReason::Hangup, EndReason::from);
        match self.call_tx(&sid) {
            Some(tx) => {
                let _ = tx
                    .send(CallCmd::Hangup {
                        op: op.clone(),
                        reason,
                        from_presence: true,
                    })
                    .await;
            }
            None => {
                let reply = self.ended_call_reply(op, sid).await;
                self.notify(op, &reply);
            }
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
        if self.is_shutting_down() {
            return Err((
                ErrorCode::ServerShutdown,
                "the service is shutting down".into(),
            ));
        }
        if let Err(e) = validate_e164(&to) {
            return Err((
                ErrorCode::InvalidNumber,
                format!("to {}: {e}", crate::util::quoted(&to)),
            ));
        }
        if let Err(e) = validate_e164(&caller_id) {
            return Err((
                ErrorCode::InvalidNumber,
                format!("callerId {}: {e}", crate::util::quoted(&caller_id)),
            ));
        }
        let lookup = caller_id.clone();
        let number = self
            .db
            .call(move |c| db::number_by_e164(c, &lookup))
            .await
            .map_err(internal)?;
        match number {
            Some(n) if n.account_id == op.account && granted.contains(&n.id) => {}
            _ => {
                return Err((
                    ErrorCode::NumberNotOwned,
                    format!(
                        "callerId {caller_id} is not a number of this account granted to this operator"
                    ),
                ));
            }
        }
        let sid = new_call_sid();
        if let Err(held) = self.routing.assign(op, &sid) {
            return Err((
                ErrorCode::OperatorBusy,
                format!("the operator already holds call {held}"),
            ));
        }
        let record = NewCall {
            call_sid: sid.clone(),
            account_id: op.account.clone(),
            direction: Direction::Outbound,
            from: caller_id.clone(),
            to: to.clone(),
            operator_ref: Some(op.operator_ref.clone()),
        };
        let at = now_rfc3339();
        self.db
            .execute("insert call", move |c| db::insert_call(c, &record, &at));
        let mut actor = CallActor::new(self, &sid, &op.account, Direction::Outbound, caller_id, to);
        actor.holder = Some(op.clone());
        actor.set_state(CallState::Dialled);
        actor.grace_deadline = Some(Instant::now() + self.cfg.audio_grace);
        self.spawn_actor(actor);
        tracing::info!(call_sid = %sid, operator = %audin_protocol::Untrusted(&op.operator_ref), "outbound call dialled");
        Ok(sid)
    }

    /// An inbound call from the carrier. Rings every free operator online
    /// on the number; with nobody free the caller hears busy.
    pub async fn inbound(self: &Arc<Self>, call: InboundCall) -> Result<(), ReqError> {
        if self.is_shutting_down() {
            call.leg.hang_up(EndReason::Failed);
            return Err((
                ErrorCode::ServerShutdown,
                "the service is shutting down".into(),
            ));
        }
        let lookup = call.to.clone();
        let number = self
            .db
            .call(move |c| db::number_by_e164(c, &lookup))
            .await
            .map_err(internal)?;
        let Some(number) = number else {
            call.leg.hang_up(EndReason::Rejected);
            return Err((
                ErrorCode::NumberNotOwned,
                format!("{} is not a number of any account", call.to),
            ));
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
        let at = now_rfc3339();
        self.db
            .execute("insert call", move |c| db::insert_call(c, &record, &at));
        let ops = self.routing.available(&number.id);
        if ops.is_empty() {
            tracing::info!(call_sid = %sid, "inbound call: nobody online and free");
            call.leg.hang_up(EndReason::Rejected);
            let at = now_rfc3339();
            self.db.execute("end call", move |c| {
                db::end_call(c, &sid, EndReason::Rejected, &at)
            });
            Metrics::inc(&self.metrics.calls_ended);
            return Ok(());
        }
        let mut actor = CallActor::new(
            self,
            &sid,
            &number.account_id,
            Direction::Inbound,
            call.from.clone(),
            call.to.clone(),
        );
        actor.leg = Some(call.leg.clone());
        let _ = actor.media.leg.set(call.leg);
        actor.events = Some(call.events);
        actor.ring_deadline = Some(Instant::now() + self.cfg.ring_timeout);
        actor.set_state(CallState::Offered);
        actor.offered = ops.clone();
        self.routing.offer(&sid, &ops);
        self.spawn_actor(actor);
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

    fn spawn_actor(self: &Arc<Self>, actor: CallActor) {
        self.calls.lock().expect("calls lock").insert(
            actor.sid.clone(),
            CallEntry {
                tx: actor.tx.clone(),
                account: actor.account.clone(),
                state: actor.state_cell.clone(),
                answered: actor.answered_cell.clone(),
            },
        );
        tokio::spawn(actor.run());
    }

    // ── audio ─────────────────────────────────────────────────────────

    /// Attaches an audio socket to a call.
    pub async fn attach(
        &self,
        claims: &Claims,
        sid: &str,
        outbox: Outbox,
    ) -> Result<Attachment, AttachError> {
        let (tx, account) = {
            let calls = self.calls.lock().expect("calls lock");
            let entry = calls.get(sid).ok_or(AttachError::NotFound)?;
            (entry.tx.clone(), entry.account.clone())
        };
        if account != claims.acc {
            return Err(AttachError::Forbidden);
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let op = OperatorKey {
            account: claims.acc.clone(),
            operator_ref: claims.sub.clone(),
        };
        tx.send(CallCmd::Attach {
            op,
            outbox,
            reply: reply_tx,
        })
        .await
        .map_err(|_| AttachError::NotFound)?;
        reply_rx.await.unwrap_or(Err(AttachError::NotFound))
    }

    // ── shutdown ──────────────────────────────────────────────────────

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
        // Let the database thread finish the queued record updates.
        let _ = self.db.call(|_| Ok(())).await;
    }
}

fn internal(e: anyhow::Error) -> ReqError {
    tracing::error!(error = %e, "internal error");
    (ErrorCode::Internal, "internal error".into())
}

fn not_found(sid: String) -> ServerMessage {
    ServerMessage::Error {
        code: ErrorCode::CallNotFound,
        message: format!(
            "no live call {} for this operator",
            crate::util::quoted(&sid)
        ),
        request_id: None,
        call_sid: Some(sid),
    }
}

/// One live call.
struct CallActor {
    engine: Arc<Engine>,
    sid: String,
    account: String,
    direction: Direction,
    from: String,
    to: String,
    state: CallState,
    state_cell: Arc<AtomicU8>,
    answered_cell: Arc<AtomicBool>,
    holder: Option<OperatorKey>,
    /// Every operator the call was offered to (declined or not): the only
    /// ones, with the holder, who may learn what became of it.
    offered: Vec<OperatorKey>,
    leg: Option<Arc<dyn CarrierLeg>>,
    media: Arc<CallMedia>,
    events: Option<EventReceiver>,
    audio: Option<(u64, Outbox)>,
    attached_before: bool,
    ring_deadline: Option<Instant>,
    grace_deadline: Option<Instant>,
    tx: mpsc::Sender<CallCmd>,
    rx: mpsc::Receiver<CallCmd>,
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn recv_opt(rx: &mut Option<EventReceiver>) -> Option<CarrierEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl CallActor {
    fn new(
        engine: &Arc<Engine>,
        sid: &str,
        account: &str,
        direction: Direction,
        from: String,
        to: String,
    ) -> Self {
        let (tx, rx) = mpsc::channel(64);
        Self {
            engine: engine.clone(),
            sid: sid.to_owned(),
            account: account.to_owned(),
            direction,
            from,
            to,
            state: CallState::Offered,
            state_cell: Arc::new(AtomicU8::new(0)),
            answered_cell: Arc::new(AtomicBool::new(false)),
            holder: None,
            offered: Vec::new(),
            leg: None,
            media: Arc::new(CallMedia::default()),
            events: None,
            audio: None,
            attached_before: false,
            ring_deadline: None,
            grace_deadline: None,
            tx,
            rx,
        }
    }

    fn set_state(&mut self, s: CallState) {
        self.state = s;
        self.state_cell.store(s as u8, Ordering::Relaxed);
    }

    fn answered(&self) -> bool {
        self.answered_cell.load(Ordering::Relaxed)
    }

    fn send_audio_ctrl(&self, msg: &AudioServerMessage) {
        if let Some((_, o)) = &self.audio {
            o.send_text(msg.to_json());
        }
    }

    fn mark_answered(&mut self) {
        self.answered_cell.store(true, Ordering::Relaxed);
        if let Some(op) = &self.holder {
            let (sid, op_ref, at) = (self.sid.clone(), op.operator_ref.clone(), now_rfc3339());
            self.engine.db.execute("answer call", move |c| {
                db::answer_call(c, &sid, &op_ref, &at)
            });
        }
    }

    async fn run(mut self) {
        let reason = self.main_loop().await;
        let close = if reason.1 {
            CloseCode::GoingAway
        } else {
            CloseCode::Normal
        };
        self.finish(reason.0, close);
    }

    /// Runs until the call ends; returns the reason and whether the end is
    /// a shutdown.
    async fn main_loop(&mut self) -> (EndReason, bool) {
        loop {
            tokio::select! {
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { return (EndReason::Failed, false) };
                    if let Some(end) = self.on_cmd(cmd) {
                        return end;
                    }
                }
                ev = recv_opt(&mut self.events) => {
                    if let Some(reason) = self.on_event(ev) {
                        return (reason, false);
                    }
                }
                _ = sleep_opt(self.ring_deadline) => {
                    tracing::info!(call_sid = %self.sid, "ring timeout");
                    return (EndReason::NoAnswer, false);
                }
                _ = sleep_opt(self.grace_deadline) => {
                    tracing::info!(call_sid = %self.sid, "no audio socket within the grace window");
                    return (EndReason::Failed, false);
                }
            }
        }
    }

    fn on_cmd(&mut self, cmd: CallCmd) -> Option<(EndReason, bool)> {
        match cmd {
            CallCmd::Accept(op) => self.on_accept(op).map(|r| (r, false)),
            CallCmd::Reject(op) => {
                if self.state == CallState::Offered
                    && self.engine.routing.decline(&self.sid, &op) == DeclineOutcome::AllDeclined
                {
                    return Some((EndReason::Rejected, false));
                }
                None
            }
            CallCmd::Hangup {
                op,
                reason,
                from_presence,
            } => {
                if self.holder.as_ref() == Some(&op) {
                    return Some((reason, false));
                }
                if self.state == CallState::Offered
                    && self.engine.routing.ringing(&self.sid).contains(&op)
                {
                    if self.engine.routing.decline(&self.sid, &op) == DeclineOutcome::AllDeclined {
                        return Some((EndReason::Rejected, false));
                    }
                    self.engine.notify(
                        &op,
                        &ServerMessage::CallEnded {
                            call_sid: self.sid.clone(),
                            reason: EndReason::Rejected,
                        },
                    );
                    return None;
                }
                if from_presence {
                    self.engine.notify(&op, &not_found(self.sid.clone()));
                }
                None
            }
            CallCmd::Attach { op, outbox, reply } => {
                let _ = reply.send(self.on_attach(op, outbox));
                None
            }
            CallCmd::AudioClosed(id) => {
                if self.audio.as_ref().is_some_and(|(a, _)| *a == id) {
                    self.audio = None;
                    tracing::info!(call_sid = %self.sid, "audio socket lost; grace window starts");
                    self.grace_deadline = Some(Instant::now() + self.engine.cfg.audio_grace);
                }
                None
            }
            CallCmd::Mute(m) => {
                tracing::debug!(call_sid = %self.sid, muted = m, "mute");
                None
            }
            CallCmd::Dtmf(d) => {
                if let Some(leg) = &self.leg {
                    leg.send_dtmf(d);
                }
                None
            }
            CallCmd::Shutdown => Some((EndReason::Failed, true)),
        }
    }

    fn on_accept(&mut self, op: OperatorKey) -> Option<EndReason> {
        // Before asking routing, which answers `Taken` for any caller once
        // the call has a holder: an operator never offered the call (a
        // colleague, another account, another account's operator with the
        // same operatorRef) gets what an unknown sid gets, not
        // `taken_by_other`, which would confirm the call exists.
        if !self.offered.contains(&op) && self.holder.as_ref() != Some(&op) {
            self.engine.notify(&op, &not_found(self.sid.clone()));
            return None;
        }
        let ringing = self.engine.routing.ringing(&self.sid);
        match self.engine.routing.claim(&self.sid, &op) {
            ClaimOutcome::Won => {
                tracing::info!(call_sid = %self.sid, operator = %audin_protocol::Untrusted(&op.operator_ref), "offer accepted");
                self.holder = Some(op.clone());
                self.ring_deadline = None;
                self.set_state(CallState::Connecting);
                self.mark_answered();
                if let Some(leg) = &self.leg {
                    leg.answer();
                }
                self.engine.notify(
                    &op,
                    &ServerMessage::CallAccepted {
                        call_sid: self.sid.clone(),
                    },
                );
                let taken = ServerMessage::CallEnded {
                    call_sid: self.sid.clone(),
                    reason: EndReason::TakenByOther,
                };
                for other in ringing.iter().filter(|o| **o != op) {
                    self.engine.notify(other, &taken);
                }
                self.grace_deadline = Some(Instant::now() + self.engine.cfg.audio_grace);
                None
            }
            ClaimOutcome::Taken => {
                if self.holder.as_ref() != Some(&op) {
                    self.engine.notify(
                        &op,
                        &ServerMessage::CallEnded {
                            call_sid: self.sid.clone(),
                            reason: EndReason::TakenByOther,
                        },
                    );
                }
                None
            }
            ClaimOutcome::NotOffered => {
                self.engine.notify(&op, &not_found(self.sid.clone()));
                None
            }
            ClaimOutcome::OperatorBusy => {
                self.engine.notify(
                    &op,
                    &ServerMessage::Error {
                        code: ErrorCode::OperatorBusy,
                        message: "the operator already holds a call".into(),
                        request_id: None,
                        call_sid: Some(self.sid.clone()),
                    },
                );
                (self.engine.routing.decline(&self.sid, &op) == DeclineOutcome::AllDeclined)
                    .then_some(EndReason::Rejected)
            }
        }
    }

    fn on_attach(&mut self, op: OperatorKey, outbox: Outbox) -> Result<Attachment, AttachError> {
        if op.account != self.account || self.holder.as_ref() != Some(&op) {
            return Err(AttachError::Forbidden);
        }
        let attach_id = self.engine.next_attach.fetch_add(1, Ordering::Relaxed);
        if let Some((_, old)) = self.audio.take() {
            old.send_text(
                AudioServerMessage::Error {
                    code: ErrorCode::Replaced,
                    message: "another audio socket attached to this call".into(),
                }
                .to_json(),
            );
            old.close(CloseCode::Replaced, "REPLACED");
        }
        let resumed = self.attached_before;
        self.attached_before = true;
        self.grace_deadline = None;
        outbox.send_text(
            AudioServerMessage::Attached {
                call_sid: self.sid.clone(),
                answered: self.answered(),
                resumed,
            }
            .to_json(),
        );
        self.audio = Some((attach_id, outbox));
        match self.state {
            CallState::Connecting if self.direction == Direction::Inbound => {
                self.set_state(CallState::Active);
            }
            CallState::Dialled => {
                self.set_state(CallState::Connecting);
                let (tx, rx) = mpsc::channel(EVENT_QUEUE);
                let leg = self.engine.carrier.place_call(
                    OutboundRequest {
                        call_sid: self.sid.clone(),
                        from: self.from.clone(),
                        to: self.to.clone(),
                    },
                    tx,
                );
                let _ = self.media.leg.set(leg.clone());
                self.leg = Some(leg);
                self.events = Some(rx);
                self.ring_deadline = Some(Instant::now() + self.engine.cfg.ring_timeout);
            }
            _ => {}
        }
        tracing::info!(call_sid = %self.sid, resumed, "audio attached");
        Ok(Attachment {
            attach_id,
            media: self.media.clone(),
            cmd: self.tx.clone(),
        })
    }

    fn on_event(&mut self, ev: Option<CarrierEvent>) -> Option<EndReason> {
        let Some(ev) = ev else {
            self.events = None;
            return Some(EndReason::Failed);
        };
        match ev {
            CarrierEvent::Audio(frame) => {
                if let Some((_, o)) = &self.audio {
                    o.push_audio(frame);
                    Metrics::inc(&self.engine.metrics.frames_to_operator);
                }
                None
            }
            CarrierEvent::Answered => {
                if self.direction == Direction::Outbound && !self.answered() {
                    tracing::info!(call_sid = %self.sid, "far end answered");
                    self.ring_deadline = None;
                    self.set_state(CallState::Active);
                    self.mark_answered();
                    self.send_audio_ctrl(&AudioServerMessage::Answered {
                        call_sid: self.sid.clone(),
                    });
                }
                None
            }
            CarrierEvent::Busy | CarrierEvent::Declined => Some(EndReason::Rejected),
            CarrierEvent::NoAnswer => Some(EndReason::NoAnswer),
            CarrierEvent::Failed(why) => {
                tracing::warn!(call_sid = %self.sid, why, "carrier failure");
                Some(EndReason::Failed)
            }
            CarrierEvent::RemoteHangup => Some(EndReason::RemoteHangup),
        }
    }

    fn finish(&mut self, reason: EndReason, close: CloseCode) {
        let engine = self.engine.clone();
        tracing::info!(call_sid = %self.sid, reason = %reason, "call ended");
        let ended = ServerMessage::CallEnded {
            call_sid: self.sid.clone(),
            reason,
        };
        for op in engine.routing.ringing(&self.sid) {
            engine.notify(&op, &ended);
        }
        if let Some(op) = &self.holder {
            engine.notify(op, &ended);
        }
        if let Some((_, o)) = self.audio.take() {
            o.send_text(
                AudioServerMessage::Ended {
                    call_sid: self.sid.clone(),
                    reason,
                }
                .to_json(),
            );
            o.close(close, reason.as_str());
        }
        if let Some(leg) = &self.leg {
            leg.hang_up(reason);
        }
        // Remembered before the call leaves `calls`, so a late `accept` or
        // `hangup` always finds it in one place or the other.
        let mut participants = std::mem::take(&mut self.offered);
        participants.extend(self.holder.clone());
        engine
            .ended
            .lock()
            .expect("ended calls lock")
            .remember(&self.sid, participants, reason);
        engine.routing.release(&self.sid);
        let (sid, at) = (self.sid.clone(), now_rfc3339());
        engine
            .db
            .execute("end call", move |c| db::end_call(c, &sid, reason, &at));
        engine.calls.lock().expect("calls lock").remove(&self.sid);
        Metrics::inc(&engine.metrics.calls_ended);
    }
}

/// A new presence session id.
pub fn new_session_id() -> String {
    format!("ps_{}", random_hex(8))
}

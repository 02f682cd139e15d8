//! The server side of one call, as a state machine without I/O.
//!
//! [`Call`] holds everything the service decides about a call: which
//! operators it rings, who took it, whether its audio socket is attached,
//! when it times out and why it ends. It never touches a socket, a carrier
//! leg, the database or a clock: inputs come in through its methods with
//! `now`, decisions come out of [`Call::poll_action`], and the next deadline
//! out of [`Call::poll_timeout`] (quinn-proto's `Connection` style). The
//! engine's call task is the driver that performs the actions; the tests
//! below drive it step by step in simulated time.
//!
//! It deliberately does not know the routing state shared between calls:
//! whether an operator is free to take a call is asked through
//! [`HoldCheck`] at the moment of the accept (one atomic step of the
//! routing, so two calls can never give one operator two calls).

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use audin_protocol::{
    AudioServerMessage, CloseCode, Direction, EndReason, ErrorCode, ServerMessage,
};

use crate::carrier::{CarrierEvent, EndCause};
use crate::routing::OperatorKey;

/// Timing rules of a call.
#[derive(Debug, Clone, Copy)]
pub struct CallTimers {
    /// How long an inbound call rings the operators, and an outbound one
    /// the far end, before it ends `no_answer`.
    pub ring_timeout: Duration,
    /// How long a call held by an operator may lack an audio socket
    /// before it ends `failed`.
    pub audio_grace: Duration,
}

/// Where a call is in its life; each phase carries its own data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Inbound: ringing `ringing` (offered, not yet declined) until `until`.
    Ringing {
        /// Operators still ringing.
        ringing: BTreeSet<OperatorKey>,
        /// Ring timeout.
        until: Instant,
    },
    /// Outbound: the operator holds it; the far end is called once its
    /// audio socket attaches (so no ringback is lost).
    Dialled,
    /// Inbound accepted and waiting for its audio socket, or outbound
    /// placed and the far end not yet answered (`far_end_until` set).
    Connecting {
        /// The far end's ring timeout (outbound only).
        far_end_until: Option<Instant>,
        /// The far end sent early media (outbound): the operator hears it.
        early_media: bool,
    },
    /// Both ends connected.
    Active,
    /// Over; nothing more happens.
    Ended(EndReason),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a message on the operator's presence socket.
    Notify(OperatorKey, ServerMessage),
    /// Send a message on the audio socket `attach_id`.
    ToAudio(u64, AudioServerMessage),
    /// Close the audio socket `attach_id` (after what is queued).
    CloseAudio(u64, CloseCode, &'static str),
    /// Frames from the far end go to the audio socket `attach_id` from
    /// now on (`None`: nowhere, no socket is attached).
    RouteAudio(Option<u64>),
    /// Inbound: connect the caller (SIP: send 200 OK).
    AnswerLeg,
    /// Outbound: call the far end; report with [`Call::placed`].
    PlaceCall,
    /// Send a DTMF digit to the far end.
    SendDtmf(char),
    /// End the carrier leg.
    HangUpLeg(EndReason),
    /// Record that the call was answered, with its operator.
    RecordAnswered(String),
    /// Record how the call ended and free its operator.
    RecordEnded(EndReason),
    /// Add a digit the far end sent to the record.
    RecordDtmf(char),
}

/// Why an attach was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// Not this operator's call (4004).
    Forbidden,
    /// Unknown or ended (4008).
    NotFound,
}

/// What an accepted attach tells the audio socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// The far end is connected.
    pub answered: bool,
    /// An earlier audio socket of this call existed (a reattach).
    pub resumed: bool,
}

/// One atomic step of the shared routing: `op` takes the call if it holds
/// no other. Returns false if it is busy.
pub trait HoldCheck {
    /// Tries to make `op` the holder of this call.
    fn try_hold(&mut self, op: &OperatorKey) -> bool;
}

impl<F: FnMut(&OperatorKey) -> bool> HoldCheck for F {
    fn try_hold(&mut self, op: &OperatorKey) -> bool {
        self(op)
    }
}

/// One call's state machine.
#[derive(Debug)]
pub struct Call {
    sid: String,
    account: String,
    direction: Direction,
    timers: CallTimers,
    phase: Phase,
    /// Everyone the call was ever offered to: a late `accept` of one of
    /// them learns `taken_by_other`; anyone else learns nothing.
    offered: BTreeSet<OperatorKey>,
    holder: Option<OperatorKey>,
    answered: bool,
    /// The carrier leg exists (inbound: always; outbound: once placed).
    has_leg: bool,
    /// The attached audio socket.
    audio: Option<u64>,
    attached_before: bool,
    /// Ends the call `failed` while a held call lacks an audio socket.
    audio_grace_until: Option<Instant>,
    actions: VecDeque<Action>,
}

impl Call {
    /// An inbound call ringing `ops` (at least one), whose carrier leg exists.
    pub fn inbound(
        sid: &str,
        account: &str,
        ops: &[OperatorKey],
        timers: CallTimers,
        now: Instant,
    ) -> Self {
        let ringing: BTreeSet<OperatorKey> = ops.iter().cloned().collect();
        let mut call = Self::new(sid, account, Direction::Inbound, timers);
        call.offered = ringing.clone();
        call.has_leg = true;
        call.phase = Phase::Ringing {
            ringing,
            until: now + timers.ring_timeout,
        };
        call
    }

    /// An outbound call `holder` dialled; the far end is called once the
    /// operator's audio socket attaches.
    pub fn outbound(
        sid: &str,
        account: &str,
        holder: OperatorKey,
        timers: CallTimers,
        now: Instant,
    ) -> Self {
        let mut call = Self::new(sid, account, Direction::Outbound, timers);
        call.holder = Some(holder);
        call.phase = Phase::Dialled;
        call.audio_grace_until = Some(now + timers.audio_grace);
        call
    }

    fn new(sid: &str, account: &str, direction: Direction, timers: CallTimers) -> Self {
        Self {
            sid: sid.to_owned(),
            account: account.to_owned(),
            direction,
            timers,
            phase: Phase::Dialled,
            offered: BTreeSet::new(),
            holder: None,
            answered: false,
            has_leg: false,
            audio: None,
            attached_before: false,
            audio_grace_until: None,
            actions: VecDeque::new(),
        }
    }

    /// The call's id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether the far end is connected (inbound: an operator accepted).
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// The operator holding the call.
    pub fn holder(&self) -> Option<&OperatorKey> {
        self.holder.as_ref()
    }

    /// Everyone who took part: every operator it was offered to, and its
    /// holder. Only they may learn later how it ended.
    pub fn participants(&self) -> Vec<OperatorKey> {
        let mut all = self.offered.clone();
        all.extend(self.holder.clone());
        all.into_iter().collect()
    }

    /// Whether the call is over (its last actions may still be queued).
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Call::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ring = match &self.phase {
            Phase::Ringing { until, .. } => Some(*until),
            Phase::Connecting { far_end_until, .. } => *far_end_until,
            _ => None,
        };
        [ring, self.audio_grace_until].into_iter().flatten().min()
    }

    /// Time passed; fires whatever deadline is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ring_due = match &self.phase {
            Phase::Ringing { until, .. } => *until <= now,
            Phase::Connecting {
                far_end_until: Some(t),
                ..
            } => *t <= now,
            _ => false,
        };
        if ring_due {
            tracing::info!(call_sid = %self.sid, "ring timeout");
            self.end(EndReason::NoAnswer, CloseCode::Normal);
        } else if self.audio_grace_until.is_some_and(|t| t <= now) {
            tracing::info!(call_sid = %self.sid, "no audio socket within the grace window");
            self.end(EndReason::Failed, CloseCode::Normal);
        }
    }

    /// An operator's `accept`. `routing` answers whether the operator is
    /// free; it is asked only when the operator is entitled to the call.
    /// Whether the call is ringing `op` (an `accept` of it would try to
    /// hold the call).
    pub fn rings(&self, op: &OperatorKey) -> bool {
        matches!(&self.phase, Phase::Ringing { ringing, .. } if ringing.contains(op))
    }

    pub fn accept(&mut self, op: &OperatorKey, now: Instant, routing: &mut impl HoldCheck) {
        let Phase::Ringing { ringing, .. } = &mut self.phase else {
            return self.accept_too_late(op);
        };
        if !ringing.contains(op) {
            return self.accept_too_late(op);
        }
        if !routing.try_hold(op) {
            self.push_notify(
                op,
                ServerMessage::Error {
                    code: ErrorCode::OperatorBusy,
                    message: "the operator already holds a call".into(),
                    request_id: None,
                    call_sid: Some(self.sid.clone()),
                },
            );
            return self.decline(op);
        }
        let others: Vec<OperatorKey> = ringing.iter().filter(|o| *o != op).cloned().collect();
        tracing::info!(call_sid = %self.sid, operator = %audin_protocol::Untrusted(&op.operator_ref), "offer accepted");
        self.holder = Some(op.clone());
        self.phase = Phase::Connecting {
            far_end_until: None,
            early_media: false,
        };
        self.mark_answered();
        self.actions.push_back(Action::AnswerLeg);
        self.push_notify(
            op,
            ServerMessage::CallAccepted {
                call_sid: self.sid.clone(),
                // The engine adds where and how to attach.
                attach: Default::default(),
            },
        );
        let taken = self.ended_msg(EndReason::TakenByOther);
        for other in others {
            self.push_notify(&other, taken.clone());
        }
        self.audio_grace_until = Some(now + self.timers.audio_grace);
    }

    /// An `accept` that cannot take the call: an operator it was offered to
    /// lost the race (or declined it); anyone else is told the call does
    /// not exist, exactly as for an unknown sid, so holding a sid reveals
    /// nothing.
    fn accept_too_late(&mut self, op: &OperatorKey) {
        if self.holder.as_ref() == Some(op) {
            return; // a repeated accept of the winner
        }
        if self.offered.contains(op) {
            let msg = self.ended_msg(EndReason::TakenByOther);
            self.push_notify(op, msg);
        } else {
            let msg = not_found(&self.sid);
            self.push_notify(op, msg);
        }
    }

    /// An operator's `reject` (or it went offline while ringing).
    pub fn reject(&mut self, op: &OperatorKey) {
        if let Phase::Ringing { ringing, .. } = &self.phase {
            if ringing.contains(op) {
                self.decline(op);
            }
        }
    }

    fn decline(&mut self, op: &OperatorKey) {
        let Phase::Ringing { ringing, .. } = &mut self.phase else {
            return;
        };
        ringing.remove(op);
        if ringing.is_empty() {
            self.end(EndReason::Rejected, CloseCode::Normal);
        }
    }

    /// A `hangup` by `op`: the holder ends the call; a ringing operator
    /// declines it; anyone else gets `CALL_NOT_FOUND` if it asked on
    /// presence.
    pub fn hangup(&mut self, op: &OperatorKey, reason: EndReason, from_presence: bool) {
        if self.holder.as_ref() == Some(op) && !self.is_ended() {
            return self.end(reason, CloseCode::Normal);
        }
        if let Phase::Ringing { ringing, .. } = &self.phase {
            if ringing.contains(op) {
                let last = ringing.len() == 1;
                self.decline(op);
                if !last {
                    let msg = self.ended_msg(EndReason::Rejected);
                    self.push_notify(op, msg);
                }
                return;
            }
        }
        if from_presence {
            let msg = not_found(&self.sid);
            self.push_notify(op, msg);
        }
    }

    /// An audio socket asks to attach as `op`.
    pub fn attach(
        &mut self,
        op: &OperatorKey,
        attach_id: u64,
        now: Instant,
    ) -> Result<Attached, AttachError> {
        if self.is_ended() {
            return Err(AttachError::NotFound);
        }
        if op.account != self.account || self.holder.as_ref() != Some(op) {
            return Err(AttachError::Forbidden);
        }
        if let Some(old) = self.audio.take() {
            self.actions.push_back(Action::ToAudio(
                old,
                AudioServerMessage::Error {
                    code: ErrorCode::Replaced,
                    message: "another audio socket attached to this call".into(),
                },
            ));
            self.actions
                .push_back(Action::CloseAudio(old, CloseCode::Replaced, "REPLACED"));
        }
        let attached = Attached {
            answered: self.answered,
            resumed: self.attached_before,
        };
        self.attached_before = true;
        self.audio_grace_until = None;
        self.audio = Some(attach_id);
        self.actions.push_back(Action::ToAudio(
            attach_id,
            AudioServerMessage::Attached {
                call_sid: self.sid.clone(),
                answered: attached.answered,
                resumed: attached.resumed,
            },
        ));
        self.actions.push_back(Action::RouteAudio(Some(attach_id)));
        match self.phase {
            Phase::Connecting { .. } if self.direction == Direction::Inbound => {
                self.phase = Phase::Active;
            }
            Phase::Dialled => {
                self.phase = Phase::Connecting {
                    far_end_until: Some(now + self.timers.ring_timeout),
                    early_media: false,
                };
                self.actions.push_back(Action::PlaceCall);
            }
            _ => {}
        }
        tracing::info!(call_sid = %self.sid, resumed = attached.resumed, "audio attached");
        Ok(attached)
    }

    /// The audio socket `attach_id` is gone; the grace window starts if it
    /// was the call's current one.
    pub fn audio_closed(&mut self, attach_id: u64, now: Instant) {
        if self.audio == Some(attach_id) && !self.is_ended() {
            self.audio = None;
            self.actions.push_back(Action::RouteAudio(None));
            tracing::info!(call_sid = %self.sid, "audio socket lost; grace window starts");
            self.audio_grace_until = Some(now + self.timers.audio_grace);
        }
    }

    /// The operator sent a DTMF digit.
    pub fn dtmf(&mut self, digit: char) {
        if self.has_leg && !self.is_ended() {
            self.actions.push_back(Action::SendDtmf(digit));
        }
    }

    /// The outbound leg asked for by [`Action::PlaceCall`] exists (`Ok`) or
    /// could not be placed.
    pub fn placed(&mut self, result: Result<(), EndCause>) {
        match result {
            Ok(()) if self.is_ended() => {
                // The operator gave up while the call was being placed.
                if let Phase::Ended(reason) = self.phase {
                    self.actions.push_back(Action::HangUpLeg(reason));
                }
            }
            Ok(()) => self.has_leg = true,
            Err(cause) => {
                tracing::info!(call_sid = %self.sid, cause = %cause, "call could not be placed");
                self.end(cause.end_reason(), CloseCode::Normal);
            }
        }
    }

    /// Something happened at the far end; `None` means the carrier lost the
    /// leg without saying why.
    pub fn carrier_event(&mut self, event: Option<CarrierEvent>) {
        if self.is_ended() {
            return;
        }
        match event {
            None => self.end(EndReason::Failed, CloseCode::Normal),
            Some(CarrierEvent::Ringing) => {
                tracing::debug!(call_sid = %self.sid, "far end ringing");
            }
            Some(CarrierEvent::EarlyMedia) => {
                if let Phase::Connecting { early_media, .. } = &mut self.phase {
                    *early_media = true;
                }
            }
            Some(CarrierEvent::Answered) => {
                if self.direction == Direction::Outbound && !self.answered {
                    tracing::info!(call_sid = %self.sid, "far end answered");
                    self.phase = Phase::Active;
                    self.mark_answered();
                    if let Some(id) = self.audio {
                        self.actions.push_back(Action::ToAudio(
                            id,
                            AudioServerMessage::Answered {
                                call_sid: self.sid.clone(),
                            },
                        ));
                    }
                }
            }
            Some(CarrierEvent::Dtmf(digit)) => {
                tracing::debug!(call_sid = %self.sid, %digit, "digit from the far end");
                if !self.is_ended() {
                    self.actions.push_back(Action::RecordDtmf(digit));
                }
            }
            Some(CarrierEvent::Ended(cause)) => {
                if matches!(cause, EndCause::Failed { .. }) {
                    tracing::warn!(call_sid = %self.sid, cause = %cause, "carrier failure");
                }
                self.end(cause.end_reason(), CloseCode::Normal);
            }
        }
    }

    /// The service is stopping: the call ends `failed`, sockets close 1001.
    pub fn shutdown(&mut self) {
        if !self.is_ended() {
            self.end(EndReason::Failed, CloseCode::GoingAway);
        }
    }

    /// Ends the call: everyone involved is told, exactly once.
    fn end(&mut self, reason: EndReason, close: CloseCode) {
        if self.is_ended() {
            return;
        }
        tracing::info!(call_sid = %self.sid, reason = %reason, "call ended");
        let ended = self.ended_msg(reason);
        let ringing = match std::mem::replace(&mut self.phase, Phase::Ended(reason)) {
            Phase::Ringing { ringing, .. } => ringing,
            _ => BTreeSet::new(),
        };
        // First the operator is freed and the record closed, then told: an
        // operator who hears `callEnded` may dial again at once and must
        // not find itself still busy with this call.
        self.actions.push_back(Action::RecordEnded(reason));
        for op in ringing.iter().chain(self.holder.iter()) {
            self.actions
                .push_back(Action::Notify(op.clone(), ended.clone()));
        }
        if let Some(id) = self.audio.take() {
            self.actions.push_back(Action::ToAudio(
                id,
                AudioServerMessage::Ended {
                    call_sid: self.sid.clone(),
                    reason,
                },
            ));
            self.actions
                .push_back(Action::CloseAudio(id, close, reason.as_str()));
            self.actions.push_back(Action::RouteAudio(None));
        }
        if self.has_leg {
            self.actions.push_back(Action::HangUpLeg(reason));
        }
        self.audio_grace_until = None;
    }

    fn mark_answered(&mut self) {
        self.answered = true;
        if let Some(op) = &self.holder {
            self.actions
                .push_back(Action::RecordAnswered(op.operator_ref.clone()));
        }
    }

    fn ended_msg(&self, reason: EndReason) -> ServerMessage {
        ServerMessage::CallEnded {
            call_sid: self.sid.clone(),
            reason,
        }
    }

    fn push_notify(&mut self, op: &OperatorKey, msg: ServerMessage) {
        self.actions.push_back(Action::Notify(op.clone(), msg));
    }
}

/// `CALL_NOT_FOUND` for `sid`, with the sid quoted safely.
pub fn not_found(sid: &str) -> ServerMessage {
    ServerMessage::Error {
        code: ErrorCode::CallNotFound,
        message: format!(
            "no live call {} for this operator",
            audin_protocol::Untrusted(sid)
        ),
        request_id: None,
        call_sid: Some(sid.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    //! The call's rules, step by step in simulated time.

    use super::*;

    const TIMERS: CallTimers = CallTimers {
        ring_timeout: Duration::from_secs(30),
        audio_grace: Duration::from_secs(5),
    };

    fn op(account: &str, r: &str) -> OperatorKey {
        OperatorKey {
            account: account.into(),
            operator_ref: r.into(),
        }
    }

    fn drain(call: &mut Call) -> Vec<Action> {
        std::iter::from_fn(|| call.poll_action()).collect()
    }

    fn free(_: &OperatorKey) -> bool {
        true
    }

    fn ended_to(actions: &[Action], who: &OperatorKey) -> Vec<EndReason> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify(o, ServerMessage::CallEnded { reason, .. }) if o == who => {
                    Some(*reason)
                }
                _ => None,
            })
            .collect()
    }

    fn errors_to(actions: &[Action], who: &OperatorKey) -> Vec<ErrorCode> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify(o, ServerMessage::Error { code, .. }) if o == who => Some(*code),
                _ => None,
            })
            .collect()
    }

    fn ringing_call(t0: Instant) -> (Call, OperatorKey, OperatorKey) {
        let (a, b) = (op("acc", "a"), op("acc", "b"));
        let call = Call::inbound("CA1", "acc", &[a.clone(), b.clone()], TIMERS, t0);
        (call, a, b)
    }

    #[test]
    fn first_accept_wins_and_the_others_are_told_taken_by_other() {
        let t0 = Instant::now();
        let (mut call, a, b) = ringing_call(t0);
        call.accept(&b, t0, &mut free);
        let actions = drain(&mut call);
        assert!(actions.contains(&Action::AnswerLeg));
        assert!(actions.contains(&Action::RecordAnswered("b".into())));
        assert!(actions.contains(&Action::Notify(
            b.clone(),
            ServerMessage::CallAccepted {
                call_sid: "CA1".into(),
                attach: Default::default(),
            }
        )));
        assert_eq!(ended_to(&actions, &a), vec![EndReason::TakenByOther]);
        // The loser's late accept: taken_by_other again, never the call.
        call.accept(&a, t0, &mut free);
        assert_eq!(
            ended_to(&drain(&mut call), &a),
            vec![EndReason::TakenByOther]
        );
        assert_eq!(call.holder(), Some(&b));
    }

    #[test]
    fn an_accept_by_anyone_never_offered_the_call_is_call_not_found() {
        let t0 = Instant::now();
        let (mut call, _a, b) = ringing_call(t0);
        let strangers = [op("acc", "c"), op("other", "a"), op("other", "c")];
        for s in &strangers {
            call.accept(s, t0, &mut free);
            let actions = drain(&mut call);
            assert_eq!(
                errors_to(&actions, s),
                vec![ErrorCode::CallNotFound],
                "{s:?}"
            );
            assert!(ended_to(&actions, s).is_empty());
        }
        call.accept(&b, t0, &mut free);
        drain(&mut call);
        for s in &strangers {
            call.accept(s, t0, &mut free);
            let actions = drain(&mut call);
            assert_eq!(
                errors_to(&actions, s),
                vec![ErrorCode::CallNotFound],
                "{s:?}"
            );
            assert!(
                ended_to(&actions, s).is_empty(),
                "{s:?} learnt an end reason"
            );
        }
    }

    #[test]
    fn a_busy_operator_declines_and_the_last_decline_rejects_the_call() {
        let t0 = Instant::now();
        let (mut call, a, b) = ringing_call(t0);
        call.accept(&a, t0, &mut |_: &OperatorKey| false);
        let actions = drain(&mut call);
        assert_eq!(errors_to(&actions, &a), vec![ErrorCode::OperatorBusy]);
        assert!(!call.is_ended());
        call.reject(&b);
        let actions = drain(&mut call);
        assert_eq!(call.phase(), &Phase::Ended(EndReason::Rejected));
        assert!(actions.contains(&Action::HangUpLeg(EndReason::Rejected)));
        assert!(actions.contains(&Action::RecordEnded(EndReason::Rejected)));
    }

    #[test]
    fn nobody_accepting_ends_no_answer_at_the_ring_timeout_and_not_before() {
        let t0 = Instant::now();
        let (mut call, a, b) = ringing_call(t0);
        assert_eq!(call.poll_timeout(), Some(t0 + TIMERS.ring_timeout));
        call.handle_timeout(t0 + TIMERS.ring_timeout - Duration::from_millis(1));
        assert!(!call.is_ended());
        call.handle_timeout(t0 + TIMERS.ring_timeout);
        let actions = drain(&mut call);
        assert_eq!(ended_to(&actions, &a), vec![EndReason::NoAnswer]);
        assert_eq!(ended_to(&actions, &b), vec![EndReason::NoAnswer]);
        assert_eq!(call.poll_timeout(), None);
    }

    #[test]
    fn accepted_inbound_call_fails_without_audio_within_the_grace_window() {
        let t0 = Instant::now();
        let (mut call, a, _b) = ringing_call(t0);
        let t1 = t0 + Duration::from_secs(2);
        call.accept(&a, t1, &mut free);
        drain(&mut call);
        assert_eq!(call.poll_timeout(), Some(t1 + TIMERS.audio_grace));
        call.handle_timeout(t1 + TIMERS.audio_grace);
        let actions = drain(&mut call);
        assert_eq!(ended_to(&actions, &a), vec![EndReason::Failed]);
        assert!(actions.contains(&Action::HangUpLeg(EndReason::Failed)));
    }

    #[test]
    fn attach_activates_inbound_and_a_reattach_replaces_the_old_socket() {
        let t0 = Instant::now();
        let (mut call, a, b) = ringing_call(t0);
        call.accept(&a, t0, &mut free);
        drain(&mut call);
        assert_eq!(call.attach(&b, 1, t0), Err(AttachError::Forbidden));
        let first = call.attach(&a, 1, t0).unwrap();
        assert_eq!(
            first,
            Attached {
                answered: true,
                resumed: false
            }
        );
        assert_eq!(call.phase(), &Phase::Active);
        assert_eq!(call.poll_timeout(), None);
        drain(&mut call);
        let second = call.attach(&a, 2, t0).unwrap();
        assert!(second.resumed);
        let actions = drain(&mut call);
        assert!(actions.contains(&Action::CloseAudio(1, CloseCode::Replaced, "REPLACED")));
        assert!(actions.contains(&Action::RouteAudio(Some(2))));
        // The replaced socket closing later does not start the grace window.
        call.audio_closed(1, t0);
        assert_eq!(call.poll_timeout(), None);
        call.audio_closed(2, t0);
        assert_eq!(call.poll_timeout(), Some(t0 + TIMERS.audio_grace));
        assert_eq!(drain(&mut call), vec![Action::RouteAudio(None)]);
    }

    #[test]
    fn outbound_places_the_call_on_attach_and_maps_far_end_outcomes() {
        let t0 = Instant::now();
        let a = op("acc", "a");
        let cases = [
            (EndCause::Busy, EndReason::Rejected),
            (EndCause::Declined, EndReason::Rejected),
            (EndCause::NoAnswer, EndReason::NoAnswer),
            (EndCause::RemoteHangup, EndReason::RemoteHangup),
            (
                EndCause::failed(Some(503), "service unavailable"),
                EndReason::Failed,
            ),
        ];
        for (cause, reason) in cases {
            let mut call = Call::outbound("CA2", "acc", a.clone(), TIMERS, t0);
            assert_eq!(call.phase(), &Phase::Dialled);
            assert_eq!(call.poll_timeout(), Some(t0 + TIMERS.audio_grace));
            call.attach(&a, 7, t0).unwrap();
            assert!(drain(&mut call).contains(&Action::PlaceCall));
            call.placed(Ok(()));
            call.carrier_event(Some(CarrierEvent::Ringing));
            call.carrier_event(Some(CarrierEvent::EarlyMedia));
            assert!(matches!(
                call.phase(),
                Phase::Connecting {
                    early_media: true,
                    ..
                }
            ));
            call.carrier_event(Some(CarrierEvent::Ended(cause.clone())));
            let actions = drain(&mut call);
            assert_eq!(ended_to(&actions, &a), vec![reason], "{cause:?}");
            assert!(actions.contains(&Action::HangUpLeg(reason)));
            assert!(actions.contains(&Action::CloseAudio(7, CloseCode::Normal, reason.as_str())));
        }
    }

    #[test]
    fn outbound_answer_is_announced_on_the_audio_socket_once() {
        let t0 = Instant::now();
        let a = op("acc", "a");
        let mut call = Call::outbound("CA3", "acc", a.clone(), TIMERS, t0);
        call.attach(&a, 1, t0).unwrap();
        call.placed(Ok(()));
        drain(&mut call);
        call.carrier_event(Some(CarrierEvent::Answered));
        call.carrier_event(Some(CarrierEvent::Answered));
        let answered: Vec<_> = drain(&mut call)
            .into_iter()
            .filter(|a| matches!(a, Action::ToAudio(1, AudioServerMessage::Answered { .. })))
            .collect();
        assert_eq!(answered.len(), 1);
        assert_eq!(call.phase(), &Phase::Active);
        call.hangup(&a, EndReason::Hangup, true);
        assert!(drain(&mut call).contains(&Action::RecordEnded(EndReason::Hangup)));
    }

    #[test]
    fn far_end_digits_are_recorded_while_the_call_lives() {
        let t0 = Instant::now();
        let a = op("acc", "a");
        let mut call = Call::outbound("CA8", "acc", a.clone(), TIMERS, t0);
        call.attach(&a, 1, t0).unwrap();
        call.placed(Ok(()));
        call.carrier_event(Some(CarrierEvent::Answered));
        drain(&mut call);
        call.carrier_event(Some(CarrierEvent::Dtmf('7')));
        call.carrier_event(Some(CarrierEvent::Dtmf('#')));
        let recorded: Vec<_> = drain(&mut call)
            .into_iter()
            .filter(|x| matches!(x, Action::RecordDtmf(_)))
            .collect();
        assert_eq!(
            recorded,
            vec![Action::RecordDtmf('7'), Action::RecordDtmf('#')]
        );
        call.hangup(&a, EndReason::Hangup, true);
        drain(&mut call);
        call.carrier_event(Some(CarrierEvent::Dtmf('9')));
        assert!(
            !drain(&mut call).contains(&Action::RecordDtmf('9')),
            "a digit after the end is not recorded"
        );
    }

    #[test]
    fn the_operator_is_freed_before_it_is_told_the_call_ended() {
        // Whoever hears `callEnded` may dial at once: the release (in
        // `RecordEnded`) must come first, whichever side ends the call.
        let t0 = Instant::now();
        let a = op("acc", "a");
        for far_end_hangs_up in [false, true] {
            let mut call = Call::outbound("CA9", "acc", a.clone(), TIMERS, t0);
            call.attach(&a, 1, t0).unwrap();
            call.placed(Ok(()));
            call.carrier_event(Some(CarrierEvent::Answered));
            drain(&mut call);
            if far_end_hangs_up {
                call.carrier_event(Some(CarrierEvent::Ended(EndCause::RemoteHangup)));
            } else {
                call.hangup(&a, EndReason::Hangup, true);
            }
            let actions = drain(&mut call);
            let released = actions
                .iter()
                .position(|x| matches!(x, Action::RecordEnded(_)));
            let told = actions.iter().position(
                |x| matches!(x, Action::Notify(o, ServerMessage::CallEnded { .. }) if *o == a),
            );
            assert!(
                released.is_some() && told.is_some() && released < told,
                "{actions:?}"
            );
        }
    }

    #[test]
    fn far_end_not_answering_ends_no_answer_after_the_ring_timeout() {
        let t0 = Instant::now();
        let a = op("acc", "a");
        let mut call = Call::outbound("CA4", "acc", a.clone(), TIMERS, t0);
        let t1 = t0 + Duration::from_millis(300);
        call.attach(&a, 1, t1).unwrap();
        call.placed(Ok(()));
        assert_eq!(call.poll_timeout(), Some(t1 + TIMERS.ring_timeout));
        call.handle_timeout(t1 + TIMERS.ring_timeout);
        assert_eq!(call.phase(), &Phase::Ended(EndReason::NoAnswer));
    }

    #[test]
    fn a_call_that_could_not_be_placed_fails_and_a_late_leg_is_hung_up() {
        let t0 = Instant::now();
        let a = op("acc", "a");
        let mut call = Call::outbound("CA5", "acc", a.clone(), TIMERS, t0);
        call.attach(&a, 1, t0).unwrap();
        call.placed(Err(EndCause::failed(None, "no route")));
        let actions = drain(&mut call);
        assert_eq!(ended_to(&actions, &a), vec![EndReason::Failed]);
        assert!(!actions.iter().any(|x| matches!(x, Action::HangUpLeg(_))));

        let mut call = Call::outbound("CA6", "acc", a.clone(), TIMERS, t0);
        call.attach(&a, 1, t0).unwrap();
        call.hangup(&a, EndReason::Hangup, true);
        drain(&mut call);
        call.placed(Ok(()));
        assert_eq!(drain(&mut call), vec![Action::HangUpLeg(EndReason::Hangup)]);
    }

    #[test]
    fn every_call_ends_exactly_once() {
        let t0 = Instant::now();
        let (mut call, a, b) = ringing_call(t0);
        call.accept(&a, t0, &mut free);
        call.attach(&a, 1, t0).unwrap();
        call.carrier_event(Some(CarrierEvent::Ended(EndCause::RemoteHangup)));
        call.hangup(&a, EndReason::Hangup, true);
        call.shutdown();
        call.handle_timeout(t0 + Duration::from_secs(3600));
        call.carrier_event(None);
        let actions = drain(&mut call);
        let records: Vec<_> = actions
            .iter()
            .filter(|x| matches!(x, Action::RecordEnded(_)))
            .collect();
        assert_eq!(records, vec![&Action::RecordEnded(EndReason::RemoteHangup)]);
        assert_eq!(ended_to(&actions, &a), vec![EndReason::RemoteHangup]);
        assert_eq!(ended_to(&actions, &b), vec![EndReason::TakenByOther]);
        // The late presence hangup of the (former) holder: not found.
        assert_eq!(errors_to(&actions, &a), vec![ErrorCode::CallNotFound]);
    }

    #[test]
    fn a_ringing_operator_hanging_up_declines_and_others_keep_ringing() {
        let t0 = Instant::now();
        let (mut call, a, b) = ringing_call(t0);
        call.hangup(&a, EndReason::Hangup, true);
        let actions = drain(&mut call);
        assert_eq!(ended_to(&actions, &a), vec![EndReason::Rejected]);
        assert!(!call.is_ended());
        call.hangup(&b, EndReason::Hangup, true);
        assert_eq!(call.phase(), &Phase::Ended(EndReason::Rejected));
    }

    #[test]
    fn shutdown_closes_the_audio_socket_going_away() {
        let t0 = Instant::now();
        let a = op("acc", "a");
        let mut call = Call::outbound("CA7", "acc", a.clone(), TIMERS, t0);
        call.attach(&a, 3, t0).unwrap();
        call.shutdown();
        assert!(drain(&mut call).contains(&Action::CloseAudio(3, CloseCode::GoingAway, "failed")));
    }
}

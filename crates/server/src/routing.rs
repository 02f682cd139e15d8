//! Routing state: which operators are online on which numbers, which calls
//! are offered to whom, and which operator holds which call.
//!
//! The engine only talks to this through [`Routing`], so a shared engine
//! (Redis, NATS KV…) can take over from [`InMemoryRouting`] when the service
//! runs on several nodes. Every method is one atomic step (a shared
//! implementation maps each to one script or CAS), cheap, and never waits
//! on a socket; the process-local parts (the sockets themselves, timers,
//! carrier legs) stay in the engine.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// An operator: account plus the integrator's operatorRef.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorKey {
    /// Account id.
    pub account: String,
    /// operatorRef (`sub` of the token).
    pub operator_ref: String,
}

/// Result of an operator accepting an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This operator now holds the call.
    Won,
    /// Another operator holds it.
    Taken,
    /// This operator was not (or no longer) offered the call.
    NotOffered,
    /// This operator already holds another call.
    OperatorBusy,
}

/// Result of an operator declining an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclineOutcome {
    /// Other operators are still ringing.
    StillRinging,
    /// Every offered operator declined.
    AllDeclined,
    /// The operator was not ringing for this call.
    NotOffered,
}

/// Operators, offers and call assignment.
pub trait Routing: Send + Sync + std::fmt::Debug {
    /// Replaces the numbers `op` takes calls on (empty: online on nothing).
    fn set_online(&self, op: &OperatorKey, phone_number_ids: Vec<String>);
    /// Takes `op` offline (its held call, if any, stays assigned).
    fn set_offline(&self, op: &OperatorKey);
    /// Operators online on the number and not holding a call.
    fn available(&self, phone_number_id: &str) -> Vec<OperatorKey>;
    /// Records that `call_sid` rings `ops`.
    fn offer(&self, call_sid: &str, ops: &[OperatorKey]);
    /// Operators still ringing for the call (offered, not declined).
    fn ringing(&self, call_sid: &str) -> Vec<OperatorKey>;
    /// First accept wins: assigns the call to `op` if it still rings `op`,
    /// nobody holds it yet and `op` is free.
    fn claim(&self, call_sid: &str, op: &OperatorKey) -> ClaimOutcome;
    /// `op` declines the offer.
    fn decline(&self, call_sid: &str, op: &OperatorKey) -> DeclineOutcome;
    /// Assigns a new (outbound) call to `op` unless `op` holds one already;
    /// returns the held call on failure.
    fn assign(&self, op: &OperatorKey, call_sid: &str) -> Result<(), String>;
    /// The call `op` holds.
    fn held_call(&self, op: &OperatorKey) -> Option<String>;
    /// Forgets the call: its offers and its assignment.
    fn release(&self, call_sid: &str);
    /// Number of operators online.
    fn operators_online(&self) -> usize;
}

#[derive(Debug, Default)]
struct State {
    online: HashMap<OperatorKey, HashSet<String>>,
    /// call → operators still ringing.
    offers: HashMap<String, HashSet<OperatorKey>>,
    /// call → holder.
    holder: HashMap<String, OperatorKey>,
    /// operator → held call.
    held: HashMap<OperatorKey, String>,
}

/// Single-process routing.
#[derive(Debug, Default)]
pub struct InMemoryRouting {
    state: Mutex<State>,
}

impl InMemoryRouting {
    /// Empty routing state.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("routing lock")
    }
}

impl Routing for InMemoryRouting {
    fn set_online(&self, op: &OperatorKey, phone_number_ids: Vec<String>) {
        self.lock()
            .online
            .insert(op.clone(), phone_number_ids.into_iter().collect());
    }

    fn set_offline(&self, op: &OperatorKey) {
        self.lock().online.remove(op);
    }

    fn available(&self, phone_number_id: &str) -> Vec<OperatorKey> {
        let s = self.lock();
        let mut ops: Vec<OperatorKey> = s
            .online
            .iter()
            .filter(|(op, numbers)| numbers.contains(phone_number_id) && !s.held.contains_key(*op))
            .map(|(op, _)| op.clone())
            .collect();
        ops.sort();
        ops
    }

    fn offer(&self, call_sid: &str, ops: &[OperatorKey]) {
        self.lock()
            .offers
            .insert(call_sid.to_owned(), ops.iter().cloned().collect());
    }

    fn ringing(&self, call_sid: &str) -> Vec<OperatorKey> {
        let s = self.lock();
        let mut ops: Vec<OperatorKey> = s
            .offers
            .get(call_sid)
            .map(|o| o.iter().cloned().collect())
            .unwrap_or_default();
        ops.sort();
        ops
    }

    fn claim(&self, call_sid: &str, op: &OperatorKey) -> ClaimOutcome {
        let mut s = self.lock();
        if s.holder.contains_key(call_sid) {
            return ClaimOutcome::Taken;
        }
        if !s.offers.get(call_sid).is_some_and(|o| o.contains(op)) {
            return ClaimOutcome::NotOffered;
        }
        if s.held.contains_key(op) {
            return ClaimOutcome::OperatorBusy;
        }
        s.offers.remove(call_sid);
        s.holder.insert(call_sid.to_owned(), op.clone());
        s.held.insert(op.clone(), call_sid.to_owned());
        ClaimOutcome::Won
    }

    fn decline(&self, call_sid: &str, op: &OperatorKey) -> DeclineOutcome {
        let mut s = self.lock();
        let Some(offered) = s.offers.get_mut(call_sid) else {
            return DeclineOutcome::NotOffered;
        };
        if !offered.remove(op) {
            return DeclineOutcome::NotOffered;
        }
        if offered.is_empty() {
            s.offers.remove(call_sid);
            DeclineOutcome::AllDeclined
        } else {
            DeclineOutcome::StillRinging
        }
    }

    fn assign(&self, op: &OperatorKey, call_sid: &str) -> Result<(), String> {
        let mut s = self.lock();
        if let Some(held) = s.held.get(op) {
            return Err(held.clone());
        }
        s.holder.insert(call_sid.to_owned(), op.clone());
        s.held.insert(op.clone(), call_sid.to_owned());
        Ok(())
    }

    fn held_call(&self, op: &OperatorKey) -> Option<String> {
        self.lock().held.get(op).cloned()
    }

    fn release(&self, call_sid: &str) {
        let mut s = self.lock();
        s.offers.remove(call_sid);
        if let Some(op) = s.holder.remove(call_sid) {
            if s.held.get(&op).is_some_and(|c| c == call_sid) {
                s.held.remove(&op);
            }
        }
    }

    fn operators_online(&self) -> usize {
        self.lock().online.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(r: &str) -> OperatorKey {
        OperatorKey {
            account: "acc".into(),
            operator_ref: r.into(),
        }
    }

    #[test]
    fn first_claim_wins_and_busy_operators_are_skipped() {
        let r = InMemoryRouting::new();
        r.set_online(&op("a"), vec!["pn".into()]);
        r.set_online(&op("b"), vec!["pn".into()]);
        let ops = r.available("pn");
        assert_eq!(ops.len(), 2);
        r.offer("c1", &ops);
        assert_eq!(r.claim("c1", &op("b")), ClaimOutcome::Won);
        assert_eq!(r.claim("c1", &op("a")), ClaimOutcome::Taken);
        assert_eq!(r.available("pn"), vec![op("a")]);
        assert!(r.assign(&op("b"), "c2").is_err());
        r.release("c1");
        assert_eq!(r.available("pn").len(), 2);
    }

    #[test]
    fn all_declined() {
        let r = InMemoryRouting::new();
        r.offer("c", &[op("a"), op("b")]);
        assert_eq!(r.decline("c", &op("a")), DeclineOutcome::StillRinging);
        assert_eq!(r.decline("c", &op("a")), DeclineOutcome::NotOffered);
        assert_eq!(r.decline("c", &op("b")), DeclineOutcome::AllDeclined);
    }
}

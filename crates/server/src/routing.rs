//! Routing state: which operators are online on which numbers, and which
//! operator holds which call. Who a call rings and who wins its offer is
//! the call's own business ([`crate::call::Call`]); what must be decided
//! across calls (an operator takes at most one) is here.
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

/// Operators online and call assignment.
pub trait Routing: Send + Sync + std::fmt::Debug {
    /// Replaces the numbers `op` takes calls on (empty: online on nothing).
    fn set_online(&self, op: &OperatorKey, phone_number_ids: Vec<String>);
    /// Takes `op` offline (its held call, if any, stays assigned).
    fn set_offline(&self, op: &OperatorKey);
    /// Operators online on the number and not holding a call.
    fn available(&self, phone_number_id: &str) -> Vec<OperatorKey>;
    /// Makes `op` the holder of `call_sid` unless it holds a call already
    /// (returned on failure): an outbound call it dials, or the inbound
    /// offer it accepts. One atomic step, so no operator ever holds two.
    fn assign(&self, op: &OperatorKey, call_sid: &str) -> Result<(), String>;
    /// The call `op` holds.
    fn held_call(&self, op: &OperatorKey) -> Option<String>;
    /// Forgets the call's assignment.
    fn release(&self, call_sid: &str);
    /// Number of operators online.
    fn operators_online(&self) -> usize;
}

#[derive(Debug, Default)]
struct State {
    online: HashMap<OperatorKey, HashSet<String>>,
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
    fn an_operator_holds_one_call_and_busy_operators_are_not_available() {
        let r = InMemoryRouting::new();
        r.set_online(&op("a"), vec!["pn".into()]);
        r.set_online(&op("b"), vec!["pn".into()]);
        assert_eq!(r.available("pn").len(), 2);
        assert_eq!(r.assign(&op("b"), "c1"), Ok(()));
        assert_eq!(r.assign(&op("b"), "c2"), Err("c1".to_owned()));
        assert_eq!(r.available("pn"), vec![op("a")]);
        assert_eq!(r.held_call(&op("b")).as_deref(), Some("c1"));
        r.release("c1");
        assert_eq!(r.available("pn").len(), 2);
        assert_eq!(r.held_call(&op("b")), None);
    }
}

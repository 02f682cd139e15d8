//! Routing state: which operators are online on which numbers, and which
//! operator holds which call. Who a call rings and who wins its offer is
//! the call's own business ([`crate::call::Call`]); what must be decided
//! across calls (an operator takes at most one) is here.
//!
//! The engine only talks to this through [`Routing`], so a shared engine
//! can take over from [`InMemoryRouting`] when the service runs on several
//! nodes: [`nats::NatsRouting`] keeps the same state in NATS JetStream
//! key-value buckets (see its module doc and `docs/cluster.md`). Every
//! method is one atomic step (the shared implementation maps each to one
//! KV operation or compare-and-set), cheap, and never waits on a socket;
//! the process-local parts (the sockets themselves, timers, carrier legs)
//! stay in the engine. Methods return boxed futures so the trait stays
//! object-safe (`Arc<dyn Routing>`) without a macro, as the call store does;
//! the in-process implementation's futures are always ready at once.
//!
//! Both implementations pass one conformance suite
//! (`crates/testkit/tests/cluster_conformance.rs`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod nats;

/// An operator: account plus the integrator's operatorRef.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct OperatorKey {
    /// Account id.
    pub account: String,
    /// operatorRef (`sub` of the token).
    #[serde(rename = "operatorRef")]
    pub operator_ref: String,
}

/// Why a routing step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// `assign`: the operator already holds this call.
    #[error("the operator already holds call {held}")]
    Busy {
        /// The call it holds.
        held: String,
    },
    /// The shared engine could not be reached or refused the step (never
    /// from [`InMemoryRouting`]). The text names the step, never a token.
    #[error("routing unavailable: {0}")]
    Unavailable(String),
}

/// What every [`Routing`] method returns: a boxed future, so the trait
/// stays object-safe without a macro.
pub type RoutingFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RoutingError>> + Send + 'a>>;

/// Operators online and call assignment.
pub trait Routing: Send + Sync + std::fmt::Debug {
    /// Replaces the numbers `op` takes calls on (empty: online on nothing).
    fn set_online<'a>(
        &'a self,
        op: &'a OperatorKey,
        phone_number_ids: Vec<String>,
    ) -> RoutingFuture<'a, ()>;
    /// Takes `op` offline (its held call, if any, stays assigned).
    fn set_offline<'a>(&'a self, op: &'a OperatorKey) -> RoutingFuture<'a, ()>;
    /// Operators online on the number and not holding a call, sorted.
    fn available<'a>(&'a self, phone_number_id: &'a str) -> RoutingFuture<'a, Vec<OperatorKey>>;
    /// Makes `op` the holder of `call_sid` unless it holds a call already
    /// ([`RoutingError::Busy`] names it): an outbound call it dials, or the
    /// inbound offer it accepts. One atomic step, so no operator ever holds
    /// two, whichever nodes ask at once.
    fn assign<'a>(&'a self, op: &'a OperatorKey, call_sid: &'a str) -> RoutingFuture<'a, ()>;
    /// The call `op` holds.
    fn held_call<'a>(&'a self, op: &'a OperatorKey) -> RoutingFuture<'a, Option<String>>;
    /// Forgets the call's assignment.
    fn release<'a>(&'a self, call_sid: &'a str) -> RoutingFuture<'a, ()>;
    /// Number of operators online (on every node).
    fn operators_online(&self) -> RoutingFuture<'_, usize>;
    /// Claims `id` (a plain token, e.g. an attach ticket's `jti`) for
    /// `ttl`: true the first time on any node, false while it is claimed.
    /// One atomic step.
    fn claim_once<'a>(&'a self, id: &'a str, ttl: Duration) -> RoutingFuture<'a, bool>;
    /// `in-process` or `nats`, for logs and `/healthz`.
    fn kind(&self) -> &'static str;
}

fn done<'a, T: Send + 'a>(v: Result<T, RoutingError>) -> RoutingFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

#[derive(Debug, Default)]
struct State {
    online: HashMap<OperatorKey, HashSet<String>>,
    /// call → holder.
    holder: HashMap<String, OperatorKey>,
    /// operator → held call.
    held: HashMap<OperatorKey, String>,
    /// Claimed ids and until when.
    claimed: HashMap<String, Instant>,
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
    fn kind(&self) -> &'static str {
        "in-process"
    }

    fn set_online<'a>(
        &'a self,
        op: &'a OperatorKey,
        phone_number_ids: Vec<String>,
    ) -> RoutingFuture<'a, ()> {
        self.lock()
            .online
            .insert(op.clone(), phone_number_ids.into_iter().collect());
        done(Ok(()))
    }

    fn set_offline<'a>(&'a self, op: &'a OperatorKey) -> RoutingFuture<'a, ()> {
        self.lock().online.remove(op);
        done(Ok(()))
    }

    fn available<'a>(&'a self, phone_number_id: &'a str) -> RoutingFuture<'a, Vec<OperatorKey>> {
        let s = self.lock();
        let mut ops: Vec<OperatorKey> = s
            .online
            .iter()
            .filter(|(op, numbers)| numbers.contains(phone_number_id) && !s.held.contains_key(*op))
            .map(|(op, _)| op.clone())
            .collect();
        ops.sort();
        done(Ok(ops))
    }

    fn assign<'a>(&'a self, op: &'a OperatorKey, call_sid: &'a str) -> RoutingFuture<'a, ()> {
        let mut s = self.lock();
        if let Some(held) = s.held.get(op) {
            return done(Err(RoutingError::Busy { held: held.clone() }));
        }
        s.holder.insert(call_sid.to_owned(), op.clone());
        s.held.insert(op.clone(), call_sid.to_owned());
        done(Ok(()))
    }

    fn held_call<'a>(&'a self, op: &'a OperatorKey) -> RoutingFuture<'a, Option<String>> {
        done(Ok(self.lock().held.get(op).cloned()))
    }

    fn release<'a>(&'a self, call_sid: &'a str) -> RoutingFuture<'a, ()> {
        let mut s = self.lock();
        if let Some(op) = s.holder.remove(call_sid) {
            if s.held.get(&op).is_some_and(|c| c == call_sid) {
                s.held.remove(&op);
            }
        }
        done(Ok(()))
    }

    fn operators_online(&self) -> RoutingFuture<'_, usize> {
        done(Ok(self.lock().online.len()))
    }

    fn claim_once<'a>(&'a self, id: &'a str, ttl: Duration) -> RoutingFuture<'a, bool> {
        let now = Instant::now();
        let mut s = self.lock();
        // Bounded by the claims of the last `ttl`: expired ones go first.
        s.claimed.retain(|_, until| *until > now);
        let first = !s.claimed.contains_key(id);
        if first {
            s.claimed.insert(id.to_owned(), now + ttl);
        }
        done(Ok(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer of a routing future that is ready at once, as
    /// [`InMemoryRouting`]'s always are.
    fn ready_now<T>(fut: RoutingFuture<'_, T>) -> Result<T, RoutingError> {
        use futures_util::FutureExt as _;
        fut.now_or_never()
            .expect("in-process routing answers at once")
    }

    fn op(r: &str) -> OperatorKey {
        OperatorKey {
            account: "acc".into(),
            operator_ref: r.into(),
        }
    }

    #[test]
    fn an_operator_holds_one_call_and_busy_operators_are_not_available() {
        let r = InMemoryRouting::new();
        ready_now(r.set_online(&op("a"), vec!["pn".into()])).unwrap();
        ready_now(r.set_online(&op("b"), vec!["pn".into()])).unwrap();
        assert_eq!(ready_now(r.available("pn")).unwrap().len(), 2);
        assert_eq!(ready_now(r.assign(&op("b"), "c1")), Ok(()));
        assert_eq!(
            ready_now(r.assign(&op("b"), "c2")),
            Err(RoutingError::Busy { held: "c1".into() })
        );
        assert_eq!(ready_now(r.available("pn")).unwrap(), vec![op("a")]);
        assert_eq!(
            ready_now(r.held_call(&op("b"))).unwrap().as_deref(),
            Some("c1")
        );
        ready_now(r.release("c1")).unwrap();
        assert_eq!(ready_now(r.available("pn")).unwrap().len(), 2);
        assert_eq!(ready_now(r.held_call(&op("b"))).unwrap(), None);
    }
}

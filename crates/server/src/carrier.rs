//! The carrier boundary: how calls reach the phone network.
//!
//! The engine places outbound calls through [`Carrier::place_call`] and
//! receives inbound ones as [`InboundCall`]s; either way it then holds a
//! [`CarrierLeg`] to talk to the far end and reads [`CarrierEvent`]s back.
//! A SIP trunk is another implementation of these two traits; routing and
//! the sockets do not change. Today's implementation is the simulated
//! network in [`crate::sim`].

use std::sync::Arc;

use audin_protocol::EndReason;
use axum::body::Bytes;
use tokio::sync::mpsc;

/// What the far end did.
#[derive(Debug, Clone)]
pub enum CarrierEvent {
    /// The far end answered (outbound).
    Answered,
    /// The far end is busy.
    Busy,
    /// The far end declined.
    Declined,
    /// The far end did not answer (the carrier's own timeout).
    NoAnswer,
    /// The carrier failed to place or keep the call.
    Failed(String),
    /// The far end hung up (or the caller gave up while ringing).
    RemoteHangup,
    /// 20 ms of mu-law from the far end.
    Audio(Bytes),
}

/// Sender the carrier reports events on. Audio is sent with `try_send`
/// (dropped when the engine is behind); everything else with `send`.
pub type EventSender = mpsc::Sender<CarrierEvent>;
/// Receiver the engine reads events from.
pub type EventReceiver = mpsc::Receiver<CarrierEvent>;
/// Capacity of a leg's event channel.
pub const EVENT_QUEUE: usize = 64;

/// One call's connection to the far end. Methods never block.
pub trait CarrierLeg: Send + Sync + std::fmt::Debug {
    /// Inbound: the operator took the call; connect the caller.
    fn answer(&self);
    /// Sends 20 ms of mu-law to the far end.
    fn send_audio(&self, frame: Bytes);
    /// Sends a DTMF digit (a SIP trunk sends RFC 4733 events).
    fn send_dtmf(&self, digit: char);
    /// Ends the leg; idempotent.
    fn hang_up(&self, reason: EndReason);
}

/// An outbound call to place.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// The call's id.
    pub call_sid: String,
    /// Caller id, E.164.
    pub from: String,
    /// Callee, E.164.
    pub to: String,
}

/// A carrier able to place calls.
pub trait Carrier: Send + Sync + std::fmt::Debug {
    /// Short name, e.g. `sim`.
    fn name(&self) -> &'static str;
    /// Starts an outbound call; progress arrives on `events`.
    fn place_call(&self, req: OutboundRequest, events: EventSender) -> Arc<dyn CarrierLeg>;
}

/// An inbound call arriving from a carrier.
#[derive(Debug)]
pub struct InboundCall {
    /// The call's id.
    pub call_sid: String,
    /// Caller, E.164.
    pub from: String,
    /// Called number, E.164.
    pub to: String,
    /// The leg to the caller.
    pub leg: Arc<dyn CarrierLeg>,
    /// The caller's events.
    pub events: EventReceiver,
}

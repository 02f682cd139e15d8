//! The carrier boundary: how calls reach the phone network.
//!
//! A carrier (the simulated network in [`crate::sim`], a SIP trunk) is one
//! implementation of [`Carrier`]. Every phone number belongs to one
//! carrier ([`Carriers`] finds it): outbound calls go through the carrier
//! of their caller id; inbound calls arrive through [`InboundSink`], the
//! one entry point every carrier calls. Either way the engine then holds a
//! [`CarrierLeg`] to act on the far end and reads [`CarrierEvent`]s back.
//!
//! Audio does not travel with the events: it has its own path,
//! [`CallMedia`], shared by the leg and the call's audio socket, so a frame
//! goes from the carrier straight into the socket's queue (and back)
//! without passing through the call's task.
//!
//! This module knows no protocol of any carrier (SIP, the sim's scripts)
//! and nothing of sockets beyond the audio queue handle.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use audin_protocol::EndReason;
use axum::body::Bytes;
use tokio::sync::mpsc;

use crate::ws::Outbox;

/// Why the far end's side of a call ended: what the carrier knows, finer
/// than the protocol's [`EndReason`] (which [`EndCause::end_reason`] maps
/// to) and kept for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// The far end is busy (SIP 486, 600).
    Busy,
    /// The far end declined (SIP 603).
    Declined,
    /// Nobody answered (SIP 408, 480, 487; the carrier's ring timeout).
    NoAnswer,
    /// The far end hung up (BYE), or the caller gave up while ringing
    /// (CANCEL).
    RemoteHangup,
    /// The carrier could not place or keep the call.
    Failed {
        /// The SIP status that said so, if any.
        sip_status: Option<u16>,
        /// What went wrong, for the log (never client input).
        why: String,
    },
}

impl EndCause {
    /// A failure with an optional SIP status.
    pub fn failed(sip_status: Option<u16>, why: impl Into<String>) -> Self {
        Self::Failed {
            sip_status,
            why: why.into(),
        }
    }

    /// The reason the operator and the call record see.
    pub fn end_reason(&self) -> EndReason {
        match self {
            Self::Busy | Self::Declined => EndReason::Rejected,
            Self::NoAnswer => EndReason::NoAnswer,
            Self::RemoteHangup => EndReason::RemoteHangup,
            Self::Failed { .. } => EndReason::Failed,
        }
    }
}

impl fmt::Display for EndCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy => f.write_str("busy"),
            Self::Declined => f.write_str("declined"),
            Self::NoAnswer => f.write_str("no answer"),
            Self::RemoteHangup => f.write_str("remote hangup"),
            Self::Failed {
                sip_status: Some(s),
                why,
            } => write!(f, "failed ({s}): {why}"),
            Self::Failed { why, .. } => write!(f, "failed: {why}"),
        }
    }
}

/// What the far end did (audio aside: see [`CallMedia`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierEvent {
    /// Outbound: the far end is ringing (SIP 180).
    Ringing,
    /// Outbound: the far end sends audio before answering (SIP 183 with
    /// SDP): ringback or an announcement, which the operator hears.
    EarlyMedia,
    /// Outbound: the far end answered.
    Answered,
    /// A DTMF digit from the far end (SIP: RFC 4733).
    Dtmf(char),
    /// The far end's side ended.
    Ended(EndCause),
}

/// Sender the carrier reports events on.
pub type EventSender = mpsc::Sender<CarrierEvent>;
/// Receiver the engine reads events from.
pub type EventReceiver = mpsc::Receiver<CarrierEvent>;
/// Capacity of a leg's event channel (events are rare: audio is not one).
pub const EVENT_QUEUE: usize = 16;

/// One call's connection to the far end. Methods never block.
pub trait CarrierLeg: Send + Sync + fmt::Debug {
    /// Inbound: the operator took the call; connect the caller.
    fn answer(&self);
    /// Sends 20 ms of mu-law to the far end.
    fn send_audio(&self, frame: Bytes);
    /// Sends a DTMF digit (a SIP trunk sends RFC 4733 events).
    fn send_dtmf(&self, digit: char);
    /// Ends the leg; idempotent. Before an inbound call is answered the
    /// reason picks the refusal (SIP: `rejected` 486, `no_answer` 480,
    /// `failed` 503).
    fn hang_up(&self, reason: EndReason);
}

/// Where a call's far-end frames go: the attached audio socket's queue
/// (or, in tests, anything that collects them). Never blocks.
pub trait OperatorAudio: Send + Sync + fmt::Debug {
    /// Queues 20 ms of mu-law for the operator.
    fn push(&self, frame: Bytes);
}

impl OperatorAudio for Outbox {
    fn push(&self, frame: Bytes) {
        self.push_audio(frame);
    }
}

/// The audio path of one call, shared by its carrier leg and its audio
/// socket: far-end frames go straight into the attached socket's queue,
/// operator frames straight to the leg.
#[derive(Debug, Default)]
pub struct CallMedia {
    leg: OnceLock<Arc<dyn CarrierLeg>>,
    operator: Mutex<Option<Arc<dyn OperatorAudio>>>,
}

impl CallMedia {
    /// A media path with no leg and no socket yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Connects the far end (once; later calls are ignored).
    pub fn set_leg(&self, leg: Arc<dyn CarrierLeg>) {
        let _ = self.leg.set(leg);
    }

    /// Where far-end frames go from now on (`None`: dropped).
    pub fn route_to_operator(&self, to: Option<Arc<dyn OperatorAudio>>) {
        *self.operator.lock().expect("media lock") = to;
    }

    /// Carrier side: a frame from the far end for the operator. Dropped
    /// while no audio socket is attached (the caller hears nothing lost:
    /// the operator is not there to hear it).
    pub fn to_operator(&self, frame: Bytes) {
        if let Some(o) = self.operator.lock().expect("media lock").as_ref() {
            o.push(frame);
        }
    }

    /// Socket side: a frame from the operator for the far end. False while
    /// the leg does not exist yet.
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

/// An outbound call to place.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// The call's id.
    pub call_sid: String,
    /// Caller id, E.164 (a number of this carrier).
    pub from: String,
    /// Callee, E.164.
    pub to: String,
}

/// A boxed future, as the carrier trait returns (object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A carrier able to place calls.
pub trait Carrier: Send + Sync + fmt::Debug {
    /// Short name, e.g. `sim` or a trunk's name.
    fn name(&self) -> &str;
    /// Starts an outbound call. Resolves once the far end has been asked
    /// (not answered): progress arrives on `events`, far-end audio on
    /// `media`. An error means nothing was sent, or the far end refused
    /// at once; there is then no leg to hang up.
    fn place_call(
        &self,
        req: OutboundRequest,
        events: EventSender,
        media: Arc<CallMedia>,
    ) -> BoxFuture<'_, Result<Arc<dyn CarrierLeg>, EndCause>>;
}

/// An inbound call arriving from a carrier.
#[derive(Debug)]
pub struct InboundCall {
    /// The call's id.
    pub call_sid: String,
    /// Caller, E.164 (or whatever the carrier had: shown, never trusted).
    pub from: String,
    /// Called number, E.164.
    pub to: String,
    /// The leg to the caller.
    pub leg: Arc<dyn CarrierLeg>,
    /// The caller's events.
    pub events: EventReceiver,
    /// The call's audio path; the carrier writes the caller's frames here.
    pub media: Arc<CallMedia>,
    /// Which carrier it came through: only that carrier's numbers ring.
    pub via: Via,
}

/// The carrier an inbound call came through, as far as it is known. A
/// carrier may only ring its own numbers: a trunk that any provider's
/// customer can reach (providers share their signalling addresses between
/// customers) must not ring another account's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The simulated network: the numbers on it.
    Sim,
    /// A SIP request that these trunks admit (named by carrier id: several
    /// when they list the same source addresses, as two accounts on one
    /// provider do): the numbers of any of them.
    Trunks(Vec<String>),
}

impl Via {
    /// Whether a number whose `carrier` column is `carrier` (`None`: the
    /// sim), of account `account`, may be rung through this way. The dev
    /// trunk (`--dev-trunk`) also rings the dev account's sim numbers: that
    /// is what it is for.
    pub fn may_ring(&self, carrier: Option<&str>, account: &str) -> bool {
        match (self, carrier) {
            (Self::Sim, None) => true,
            (Self::Sim, Some(_)) => false,
            (Self::Trunks(names), Some(c)) => names.iter().any(|n| n == c),
            (Self::Trunks(names), None) => {
                account == crate::db::DEV_ACCOUNT_ID
                    && names.iter().any(|n| n == crate::db::DEV_TRUNK_ID)
            }
        }
    }
}

/// Why the service would not ring anyone for an inbound call; the carrier
/// answers the caller accordingly (SIP status in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundRefusal {
    /// The called number is not ours (404).
    UnknownNumber,
    /// Nobody is online and free on it (486).
    NobodyAvailable,
    /// The service is stopping (503).
    ShuttingDown,
    /// Something broke (500).
    Internal,
}

/// The one entry point through which every carrier delivers an inbound
/// call. The engine implements it; carriers hold it without knowing the
/// engine.
pub trait InboundSink: Send + Sync {
    /// Rings the operators online on `call.to`. On a refusal the leg has
    /// already been hung up with the matching reason.
    fn deliver(&self, call: InboundCall) -> BoxFuture<'_, Result<(), InboundRefusal>>;
}

/// Every carrier of the service, by name; numbers name theirs (none: the
/// simulated network).
#[derive(Debug)]
pub struct Carriers {
    sim: Arc<dyn Carrier>,
    named: RwLock<HashMap<String, Arc<dyn Carrier>>>,
}

impl Carriers {
    /// Just the simulated network.
    pub fn new(sim: Arc<dyn Carrier>) -> Self {
        Self {
            sim,
            named: RwLock::new(HashMap::new()),
        }
    }

    /// Adds (or replaces) a named carrier, e.g. a SIP trunk.
    pub fn insert(&self, carrier: Arc<dyn Carrier>) {
        self.named
            .write()
            .expect("carriers lock")
            .insert(carrier.name().to_owned(), carrier);
    }

    /// The carrier of a number whose record names `carrier` (`None`: the
    /// sim). `None` if the named carrier is not running.
    pub fn of(&self, carrier: Option<&str>) -> Option<Arc<dyn Carrier>> {
        match carrier {
            None => Some(self.sim.clone()),
            Some(name) => self.named.read().expect("carriers lock").get(name).cloned(),
        }
    }
}

//! Messages between the nodes of a cluster: the other half of the cluster
//! seam beside [`crate::routing`] (which holds the shared *state*: who is
//! online, who holds which call). The engine keeps its sockets and call
//! tasks in process; when what it must reach is not here, it goes through
//! [`Bus`]:
//!
//! - a message for an operator whose presence socket is on another node
//!   (an offer, `callAccepted`, `callEnded`…);
//! - a command for a call whose task runs on another node (`accept`,
//!   `reject`, `hangup`, or asking how it stands): the call-to-node map is
//!   the bus's own (each node listens for the calls it owns);
//! - "this operator went offline" (its offers ringing elsewhere are
//!   declined) and "this operator opened a session elsewhere" (the older
//!   session here is replaced, as one node replaces it);
//! - the audio of a call whose audio socket landed on another node than
//!   the call's: a *relay* carries the operator's frames up to the call's
//!   node and the far end's frames, the socket's control messages and its
//!   close down to the socket's node ([`Bus::open_relay`] on the call's
//!   node, [`Bus::join_relay`] on the socket's).
//!
//! Every node also says it is alive, four times a second; a node silent for
//! [`NODE_DEAD_AFTER`] is declared dead to the engine ([`Inbox::node_died`])
//! by each survivor, which ends its operators' calls on it.
//!
//! What arrives from other nodes is handed to an [`Inbox`] (the engine).
//! Two implementations: [`LocalBus`] (one process: there is no other node,
//! so nothing is ever sent) and [`nats::NatsBus`] (NATS core subjects, on
//! the connection the NATS routing opened). Both pass the conformance suite
//! `crates/testkit/tests/cluster_conformance.rs`.
//!
//! The bus does not know calls' state machines, sockets or the protocol's
//! messages beyond the JSON text it carries.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use audin_protocol::EndReason;
use serde::{Deserialize, Serialize};

use crate::routing::OperatorKey;
pub use crate::routing::RoutingError as BusError;

pub mod nats;

/// How long a node may be silent on the bus before the others declare it
/// dead: five missed heartbeats (every 250 ms). With the check's own
/// period, a dead node's calls end for operators elsewhere within 1.5 s.
pub const NODE_DEAD_AFTER: std::time::Duration = std::time::Duration::from_millis(1_250);

/// What every [`Bus`] step returns.
pub type BusFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BusError>> + Send + 'a>>;

/// A command for a call owned by another node, from an operator whose
/// presence socket is here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum CallCommand {
    /// `accept` of the offer.
    Accept {
        /// Who.
        op: OperatorKey,
    },
    /// `reject` of the offer.
    Reject {
        /// Who.
        op: OperatorKey,
    },
    /// `hangup`, on presence or on the audio socket.
    Hangup {
        /// Who.
        op: OperatorKey,
        /// Why.
        reason: EndReason,
        /// Sent on presence (an unknown caller gets an error there).
        #[serde(rename = "fromPresence")]
        from_presence: bool,
    },
    /// Nothing to do: only the reply ([`CallStatus`]) is wanted.
    Status,
    /// An audio socket on the sender's node attaches: the call's node
    /// opens relay `relay` ([`Bus::open_relay`]) and answers with
    /// [`CallStatus::attach`].
    Attach {
        /// Who (its token was checked by the socket's node).
        op: OperatorKey,
        /// The relay's id (a plain token the socket's node chose).
        relay: String,
        /// The socket's node: if it dies, the socket is gone.
        node: String,
    },
    /// The relayed socket's `mute`.
    Mute {
        /// On or off.
        muted: bool,
    },
    /// The relayed socket's `dtmf`.
    Dtmf {
        /// The digit.
        digit: char,
    },
    /// The relayed socket `attach_id` is gone.
    AudioClosed {
        /// As [`CallStatus::attach`] named it.
        #[serde(rename = "attachId")]
        attach_id: u64,
    },
}

/// How a call stands, as its node answers a [`CallCommand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStatus {
    /// Answered (inbound: accepted; outbound: the far end answered).
    pub answered: bool,
    /// The answer to [`CallCommand::Attach`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachOutcome>,
}

/// What became of a relayed attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum AttachOutcome {
    /// Attached, as this attachment.
    Attached {
        /// Identifies it in [`CallCommand::AudioClosed`].
        #[serde(rename = "attachId")]
        attach_id: u64,
    },
    /// Not this operator's call (4004).
    Forbidden,
    /// Unknown or ended (4008).
    NotFound,
}

/// The call's node's end of a relay: what goes down to the socket's node.
/// Dropping the last handle ends the relay (no more frames come up).
pub trait RelayDown: Send + Sync + std::fmt::Debug {
    /// A far-end frame for the operator.
    fn frame(&self, frame: Bytes);
    /// A control message (protocol JSON) for the audio socket.
    fn text(&self, text: &str);
    /// Closes the audio socket with `code` and `reason`.
    fn close(&self, code: u16, reason: &str);
}

/// The socket's node's end of a relay: the operator's frames go up.
/// Dropping it ends the relay (no more comes down).
pub trait RelayUp: Send + Sync + std::fmt::Debug {
    /// An operator frame for the far end.
    fn frame(&self, frame: Bytes);
}

/// Where the socket's node puts what comes down a relay (the audio
/// socket).
pub trait RelaySink: Send + Sync {
    /// A far-end frame.
    fn frame(&self, frame: Bytes);
    /// A control message.
    fn text(&self, text: String);
    /// Close the socket.
    fn close(&self, code: u16, reason: &str);
}

/// Where the call's node puts the operator's frames from a relay (the
/// call's media, towards the far end).
pub type FrameSink = Arc<dyn Fn(Bytes) + Send + Sync>;

/// Which call a message for an operator is about: the operator's node
/// keeps which of its operators depend on which node's calls, to end them
/// if that node dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AboutCall<'a> {
    /// The call.
    pub call_sid: &'a str,
    /// The message ends the call for the operator (`callEnded`).
    pub ends: bool,
}

/// Where a message for an operator came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The node that owns the call.
    pub node: &'a str,
    /// The call and whether it ends.
    pub about: AboutCall<'a>,
}

/// Where the engine takes what other nodes send (it holds the sockets and
/// the call tasks). Held weakly by the bus.
pub trait Inbox: Send + Sync {
    /// A message (protocol JSON) for `op`'s presence socket on this node,
    /// about a call of another node if `origin` says so.
    fn to_operator(&self, op: &OperatorKey, text: &str, origin: Option<Origin<'_>>);
    /// `op` opened presence session `session_id` (on any node, this one
    /// included): an older session of it here is replaced.
    fn operator_moved(&self, op: &OperatorKey, session_id: &str);
    /// A command for the live call `call_sid`: its status, or `None` when
    /// the call is not live on this node.
    fn to_call<'a>(
        &'a self,
        call_sid: &'a str,
        cmd: CallCommand,
    ) -> Pin<Box<dyn Future<Output = Option<CallStatus>> + Send + 'a>>;
    /// `op` went offline on another node: offers ringing it here are
    /// declined.
    fn operator_offline(&self, op: &OperatorKey);
    /// Node `node` stopped answering (killed, cut off): its calls are
    /// over for this node's operators.
    fn node_died(&self, node: &str);
}

/// Messages to the other nodes.
pub trait Bus: Send + Sync + std::fmt::Debug {
    /// `in-process` or `nats`, for logs and `/healthz`.
    fn kind(&self) -> &'static str;
    /// This node's id (`None` in process).
    fn node_id(&self) -> Option<&str>;
    /// Starts handing what arrives to `inbox` (call once, before anything
    /// else).
    fn start<'a>(&'a self, inbox: Weak<dyn Inbox>) -> BusFuture<'a, ()>;
    /// `op`'s presence socket is here now, as session `session_id`:
    /// messages for it come to this node from now on (when this returns),
    /// and a session of it on another node is replaced.
    fn watch_operator<'a>(&'a self, op: &'a OperatorKey, session_id: &'a str) -> BusFuture<'a, ()>;
    /// Session `session_id` of `op` is gone from here.
    fn unwatch_operator(&self, op: &OperatorKey, session_id: &str);
    /// The call `call_sid` is owned here: commands for it come to this node
    /// from now on (when this returns).
    fn watch_call<'a>(&'a self, call_sid: &'a str) -> BusFuture<'a, ()>;
    /// The call `call_sid` is over here.
    fn unwatch_call(&self, call_sid: &str);
    /// Sends `text` (about a call of this node, if `about` says so) to
    /// `op`'s presence socket on another node (dropped if it has none: as a
    /// message to an operator who just left).
    fn to_operator(&self, op: &OperatorKey, text: &str, about: Option<AboutCall<'_>>);
    /// Sends `cmd` to the node that owns `call_sid`: its status, or `None`
    /// when no node has it live.
    fn to_call<'a>(
        &'a self,
        call_sid: &'a str,
        cmd: &'a CallCommand,
    ) -> BusFuture<'a, Option<CallStatus>>;
    /// Tells the other nodes that `op` went offline here.
    fn operator_offline(&self, op: &OperatorKey);
    /// On the call's node: opens relay `relay` (frames coming up go to
    /// `up`) and returns its way down. Frames come up once this returns.
    fn open_relay<'a>(&'a self, relay: &'a str, up: FrameSink)
    -> BusFuture<'a, Arc<dyn RelayDown>>;
    /// On the socket's node: joins relay `relay` (what comes down goes to
    /// `sink`) and returns its way up. Call before asking the call's node
    /// to open it, so nothing sent down is missed.
    fn join_relay<'a>(
        &'a self,
        relay: &'a str,
        sink: Arc<dyn RelaySink>,
    ) -> BusFuture<'a, Arc<dyn RelayUp>>;
}

fn done<'a, T: Send + 'a>(v: Result<T, BusError>) -> BusFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

/// One process: there is no other node. Nothing is sent; no call lives
/// elsewhere.
#[derive(Debug, Default)]
pub struct LocalBus;

impl Bus for LocalBus {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    fn node_id(&self) -> Option<&str> {
        None
    }

    fn start<'a>(&'a self, _inbox: Weak<dyn Inbox>) -> BusFuture<'a, ()> {
        done(Ok(()))
    }

    fn watch_operator<'a>(
        &'a self,
        _op: &'a OperatorKey,
        _session_id: &'a str,
    ) -> BusFuture<'a, ()> {
        done(Ok(()))
    }

    fn unwatch_operator(&self, _op: &OperatorKey, _session_id: &str) {}

    fn watch_call<'a>(&'a self, _call_sid: &'a str) -> BusFuture<'a, ()> {
        done(Ok(()))
    }

    fn unwatch_call(&self, _call_sid: &str) {}

    fn to_operator(&self, _op: &OperatorKey, _text: &str, _about: Option<AboutCall<'_>>) {}

    fn to_call<'a>(
        &'a self,
        _call_sid: &'a str,
        _cmd: &'a CallCommand,
    ) -> BusFuture<'a, Option<CallStatus>> {
        done(Ok(None))
    }

    fn operator_offline(&self, _op: &OperatorKey) {}

    fn open_relay<'a>(
        &'a self,
        _relay: &'a str,
        _up: FrameSink,
    ) -> BusFuture<'a, Arc<dyn RelayDown>> {
        done(Err(BusError::Unavailable(
            "no other node in process".into(),
        )))
    }

    fn join_relay<'a>(
        &'a self,
        _relay: &'a str,
        _sink: Arc<dyn RelaySink>,
    ) -> BusFuture<'a, Arc<dyn RelayUp>> {
        done(Err(BusError::Unavailable(
            "no other node in process".into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_command_round_trips() {
        let op = OperatorKey {
            account: "acc".into(),
            operator_ref: "a.b\u{202e}".into(),
        };
        for cmd in [
            CallCommand::Accept { op: op.clone() },
            CallCommand::Reject { op: op.clone() },
            CallCommand::Hangup {
                op: op.clone(),
                reason: EndReason::Hangup,
                from_presence: false,
            },
            CallCommand::Status,
            CallCommand::Attach {
                op,
                relay: "r1".into(),
                node: "n1".into(),
            },
            CallCommand::Mute { muted: true },
            CallCommand::Dtmf { digit: '#' },
            CallCommand::AudioClosed { attach_id: 7 },
        ] {
            let json = serde_json::to_vec(&cmd).unwrap();
            let back: CallCommand = serde_json::from_slice(&json).unwrap();
            assert_eq!(back, cmd);
        }
    }
}

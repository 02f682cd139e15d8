//! [`NatsRouting`]: the routing state shared by several nodes through NATS
//! JetStream key-value buckets (nats-server 2.9 or newer).
//!
//! Design (also in `docs/cluster.md`):
//!
//! - **`{prefix}_presence`**: one key per operator online on any node
//!   (`op_<hex of account NUL operatorRef>`, since KV keys allow only
//!   `[-/_=.a-zA-Z0-9]`); the value is JSON `{node, account, operatorRef,
//!   numbers}`. `set_online` puts it, `set_offline` deletes it (only if this
//!   node wrote it: an operator who reconnected to another node stays
//!   online there).
//! - **`{prefix}_assign`**: operator → the call it holds, written with KV
//!   *create* (a put expecting "no such key", atomic in the server: the
//!   loser gets `wrong last sequence`, err_code 10071), so "at most one call
//!   per operator" and "exactly one winner" hold across nodes;
//!   **`{prefix}_holder`**: call → operator, so `release(call)` finds the
//!   assignment to delete. The assignment is deleted only at the revision
//!   this node read (compare-and-delete).
//! - **Liveness**: nats-server 2.9 has no per-key TTL, so every bucket has a
//!   `max_age` (the node TTL, [`NatsRoutingConfig::ttl`]) and each node
//!   re-writes its own keys every TTL/3 (compare-and-set at the revision it
//!   wrote, so it never overwrites another node's entry). A node that dies
//!   (SIGKILL, lost connection) stops refreshing and its operators and
//!   assignments expire within one TTL: that is the bound. A restarted node
//!   starts with nothing of its own.
//! - **Reconnects**: the client pings every second and reconnects forever;
//!   the buckets are on file storage, so a restarted nats-server keeps them
//!   and the same [`NatsRouting`] works again once it is back. A step
//!   attempted while NATS is down fails with
//!   [`RoutingError::Unavailable`] after the request timeout.
//! - **Claims**: `{prefix}_claims` holds ids claimed once (attach
//!   tickets' `jti`), written with KV *create*, kept 120 s.
//!
//! Messages between nodes (offers, commands, relays, liveness) are the
//! bus's: [`crate::bus::nats::NatsBus`], on this connection. `--cluster`
//! selects both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{OperatorKey, Routing, RoutingError, RoutingFuture};

/// How to reach NATS and how this node takes part.
#[derive(Debug, Clone)]
pub struct NatsRoutingConfig {
    /// `nats://HOST:PORT`.
    pub url: String,
    /// This node's id (written beside its operators; printable).
    pub node_id: String,
    /// Bucket name prefix (`audin` in production; tests isolate with
    /// their own).
    pub bucket_prefix: String,
    /// How long a node's entries outlive its last refresh: the bound on
    /// how long a dead node's operators and assignments stay visible.
    pub ttl: Duration,
}

impl NatsRoutingConfig {
    /// Production defaults for `url` and `node_id`: prefix `audin`, TTL 6 s.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node_id: node_id.into(),
            bucket_prefix: "audin".into(),
            ttl: Duration::from_secs(6),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Presence {
    node: String,
    account: String,
    #[serde(rename = "operatorRef")]
    operator_ref: String,
    numbers: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Assignment {
    node: String,
    call: String,
}

/// What this node wrote and must keep refreshing: key → (value, revision).
#[derive(Debug, Default)]
struct Mine {
    presence: HashMap<String, (bytes::Bytes, u64)>,
    assign: HashMap<String, (bytes::Bytes, u64)>,
    holder: HashMap<String, (bytes::Bytes, u64)>,
}

#[derive(Debug)]
struct Inner {
    node_id: String,
    client: async_nats::Client,
    presence: kv::Store,
    assign: kv::Store,
    holder: kv::Store,
    /// Ids claimed once ([`Routing::claim_once`]), kept [`CLAIMS_MAX_AGE`].
    claims: kv::Store,
    mine: Mutex<Mine>,
}

/// Routing shared by the nodes of a cluster through NATS JetStream KV.
#[derive(Debug)]
pub struct NatsRouting {
    inner: Arc<Inner>,
    refresher: tokio::task::JoinHandle<()>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> RoutingError {
    RoutingError::Unavailable(format!("{what}: {e}"))
}

/// How long a claimed id stays claimed: longer than any claim's `ttl`
/// (attach tickets live 30 s).
const CLAIMS_MAX_AGE: Duration = Duration::from_secs(120);

/// The longest one routing step may take: every step is a few KV requests
/// (each bounded by the client's request timeout), but a key listing is a
/// consumer whose messages may never come while NATS is away. The engine
/// must never wait longer than this on routing.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(4);

/// `fut`, or [`RoutingError::Unavailable`] after [`STEP_TIMEOUT`].
fn bounded<'a, T: Send + 'a>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, RoutingError>> + Send + 'a,
) -> RoutingFuture<'a, T> {
    Box::pin(async move {
        tokio::time::timeout(STEP_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| Err(unavailable(what, "timed out")))
    })
}

/// `op_` + hex of `account NUL operatorRef`: any operatorRef (client text)
/// becomes a valid, unambiguous KV key.
pub(crate) fn op_key(op: &OperatorKey) -> String {
    let mut k = String::from("op_");
    for b in op.account.bytes().chain([0]).chain(op.operator_ref.bytes()) {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

fn call_key(call_sid: &str) -> String {
    let mut k = String::from("call_");
    for b in call_sid.bytes() {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

impl NatsRouting {
    /// Connects (waiting up to 10 s for a first connection), opens or
    /// creates the buckets and starts the refresh task (needs a tokio
    /// runtime).
    pub async fn connect(config: NatsRoutingConfig) -> Result<Self, RoutingError> {
        let client = async_nats::ConnectOptions::new()
            // Fast failure detection: the default is 2 min × 2.
            .ping_interval(Duration::from_secs(1))
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(2)))
            .max_reconnects(None)
            // Back within a second of NATS returning (the default backoff
            // grows to several seconds).
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(1000))
            })
            .name(format!("audin-server {}", config.node_id))
            .connect(config.url.as_str())
            .await
            .map_err(|e| unavailable("connecting to NATS", e))?;
        let js = jetstream::new(client.clone());
        let bucket = |name: &str, ttl: Duration| {
            let js = js.clone();
            let name = format!("{}_{name}", config.bucket_prefix);
            async move {
                // The stream a KV bucket is, created directly: the client's
                // `create_key_value` first asks for the account's info, which
                // it cannot parse from nats-server 2.9. Same settings as the
                // client's own (rollups, no deletes of messages, direct get,
                // one message per key).
                js.get_or_create_stream(jetstream::stream::Config {
                    name: format!("KV_{name}"),
                    subjects: vec![format!("$KV.{name}.>")],
                    max_messages_per_subject: 1,
                    max_age: ttl,
                    storage: jetstream::stream::StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable(&format!("creating bucket {name}"), e))?;
                js.get_key_value(name.clone())
                    .await
                    .map_err(|e| unavailable(&format!("opening bucket {name}"), e))
            }
        };
        let inner = Arc::new(Inner {
            node_id: config.node_id.clone(),
            presence: bucket("presence", config.ttl).await?,
            assign: bucket("assign", config.ttl).await?,
            holder: bucket("holder", config.ttl).await?,
            claims: bucket("claims", CLAIMS_MAX_AGE).await?,
            client,
            mine: Mutex::default(),
        });
        let weak = Arc::downgrade(&inner);
        let period = config.ttl / 3;
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                // A refresh stuck on a lost connection must not hold up
                // the next one.
                let _ = tokio::time::timeout(STEP_TIMEOUT, inner.refresh()).await;
            }
        });
        Ok(Self { inner, refresher })
    }

    /// The connection (the cluster's bus shares it: see
    /// [`crate::bus::nats::NatsBus`]).
    pub fn client(&self) -> async_nats::Client {
        self.inner.client.clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Stops refreshing and closes the connection without deleting
    /// anything, as a node that dies would: for failure tests.
    pub async fn abandon(self) {
        self.refresher.abort();
        let _ = self.inner.client.drain().await;
    }
}

impl Drop for NatsRouting {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl Inner {
    /// Re-writes this node's keys at the revision it last wrote, so they
    /// outlive the bucket's max_age while the node lives. A key changed by
    /// someone else (or expired) is dropped from `mine`.
    async fn refresh(&self) {
        let snapshot: Vec<(u8, String, bytes::Bytes, u64)> = {
            let m = self.mine.lock().expect("routing lock");
            let each = |n: u8, map: &HashMap<String, (bytes::Bytes, u64)>| {
                map.iter()
                    .map(move |(k, (v, r))| (n, k.clone(), v.clone(), *r))
                    .collect::<Vec<_>>()
            };
            [each(0, &m.presence), each(1, &m.assign), each(2, &m.holder)].concat()
        };
        for (n, key, value, revision) in snapshot {
            let store = [&self.presence, &self.assign, &self.holder][n as usize];
            let mut result = store.update(&key, value.clone(), revision).await;
            if matches!(&result, Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision) {
                // Gone (expired while NATS was unreachable for longer than
                // the TTL) or replaced: take it back only if nobody else
                // holds it now.
                result = store.create(&key, value.clone()).await.map_err(|e| {
                    let kind = if e.kind() == kv::CreateErrorKind::AlreadyExists {
                        kv::UpdateErrorKind::WrongLastRevision
                    } else {
                        kv::UpdateErrorKind::Other
                    };
                    kv::UpdateError::new(kind)
                });
            }
            let stale = {
                let mut m = self.mine.lock().expect("routing lock");
                let map = match n {
                    0 => &mut m.presence,
                    1 => &mut m.assign,
                    _ => &mut m.holder,
                };
                match result {
                    Ok(rev) => match map.get_mut(&key) {
                        Some(e) if e.1 == revision => {
                            e.1 = rev;
                            None
                        }
                        // Released or rewritten while this refresh was on
                        // its way: what it just wrote must not outlive
                        // that (a released operator would look busy).
                        _ => Some(rev),
                    },
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        if map.get(&key).is_some_and(|e| e.1 == revision) {
                            map.remove(&key);
                        }
                        None
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "routing refresh failed, trying again");
                        None
                    }
                }
            };
            if let Some(rev) = stale {
                let _ = store.delete_expect_revision(&key, Some(rev)).await;
            }
        }
    }

    /// Stops refreshing this node's holder and assignment entries of
    /// `call_sid` (its holder key is `ckey`).
    fn forget_mine(&self, ckey: &str, call_sid: &str) {
        let mut m = self.mine.lock().expect("routing lock");
        let Some((opkey, _)) = m.holder.remove(ckey) else {
            return;
        };
        let opkey = String::from_utf8_lossy(&opkey).into_owned();
        if m.assign.get(&opkey).is_some_and(|(v, _)| {
            serde_json::from_slice::<Assignment>(v).is_ok_and(|a| a.call == call_sid)
        }) {
            m.assign.remove(&opkey);
        }
    }

    /// Every operator online, on any node. Listed with one stream-info
    /// request (the subjects that hold a message, paged), not the client's
    /// `keys()`: that is a consumer, which was seen to stall now and then on
    /// nats-server 2.9. A deleted key still has its delete marker: `get`
    /// answers `None` for it.
    async fn presences(&self) -> Result<Vec<Presence>, RoutingError> {
        let store = &self.presence;
        let mut subjects = store
            .stream
            .info_with_subjects(format!("{}>", store.prefix))
            .await
            .map_err(|e| unavailable("listing operators", e))?;
        let mut out = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(|e| unavailable("listing operators", e))?;
            let Some(key) = subject.strip_prefix(&store.prefix) else {
                continue;
            };
            let value = store
                .get(key)
                .await
                .map_err(|e| unavailable("reading an operator", e))?;
            if let Some(p) = value.and_then(|v| serde_json::from_slice::<Presence>(&v).ok()) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

impl Routing for NatsRouting {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn set_online<'a>(
        &'a self,
        op: &'a OperatorKey,
        phone_number_ids: Vec<String>,
    ) -> RoutingFuture<'a, ()> {
        bounded("putting an operator online", async move {
            let i = &self.inner;
            let key = op_key(op);
            let value: bytes::Bytes = serde_json::to_vec(&Presence {
                node: i.node_id.clone(),
                account: op.account.clone(),
                operator_ref: op.operator_ref.clone(),
                numbers: phone_number_ids,
            })
            .expect("presence encodes")
            .into();
            let rev = i
                .presence
                .put(&key, value.clone())
                .await
                .map_err(|e| unavailable("putting an operator online", e))?;
            i.mine
                .lock()
                .expect("routing lock")
                .presence
                .insert(key, (value, rev));
            Ok(())
        })
    }

    fn set_offline<'a>(&'a self, op: &'a OperatorKey) -> RoutingFuture<'a, ()> {
        bounded("taking an operator offline", async move {
            let i = &self.inner;
            let key = op_key(op);
            let mine = i.mine.lock().expect("routing lock").presence.remove(&key);
            // Only our own entry: the operator may be online on another
            // node now. A changed revision means it is not ours any more.
            if let Some((_, rev)) = mine {
                match i.presence.delete_expect_revision(&key, Some(rev)).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => {}
                    Err(e) => return Err(unavailable("taking an operator offline", e)),
                }
            }
            Ok(())
        })
    }

    fn available<'a>(&'a self, phone_number_id: &'a str) -> RoutingFuture<'a, Vec<OperatorKey>> {
        bounded("listing available operators", async move {
            let mut ops = Vec::new();
            for p in self.inner.presences().await? {
                if !p.numbers.iter().any(|n| n == phone_number_id) {
                    continue;
                }
                let op = OperatorKey {
                    account: p.account,
                    operator_ref: p.operator_ref,
                };
                if self.held_call(&op).await?.is_none() {
                    ops.push(op);
                }
            }
            ops.sort();
            Ok(ops)
        })
    }

    fn assign<'a>(&'a self, op: &'a OperatorKey, call_sid: &'a str) -> RoutingFuture<'a, ()> {
        bounded("assigning a call", async move {
            let i = &self.inner;
            let key = op_key(op);
            let value: bytes::Bytes = serde_json::to_vec(&Assignment {
                node: i.node_id.clone(),
                call: call_sid.to_owned(),
            })
            .expect("assignment encodes")
            .into();
            match i.assign.create(&key, value.clone()).await {
                Ok(rev) => {
                    i.mine
                        .lock()
                        .expect("routing lock")
                        .assign
                        .insert(key.clone(), (value, rev));
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let held = self.held_call(op).await?.unwrap_or_default();
                    return Err(RoutingError::Busy { held });
                }
                Err(e) => return Err(unavailable("assigning a call", e)),
            }
            let holder: bytes::Bytes = key.clone().into_bytes().into();
            let ckey = call_key(call_sid);
            let rev = i
                .holder
                .put(&ckey, holder.clone())
                .await
                .map_err(|e| unavailable("recording a call's holder", e))?;
            i.mine
                .lock()
                .expect("routing lock")
                .holder
                .insert(ckey, (holder, rev));
            Ok(())
        })
    }

    fn held_call<'a>(&'a self, op: &'a OperatorKey) -> RoutingFuture<'a, Option<String>> {
        bounded("reading an assignment", async move {
            let v = self
                .inner
                .assign
                .get(op_key(op))
                .await
                .map_err(|e| unavailable("reading an assignment", e))?;
            Ok(
                v.and_then(|v| serde_json::from_slice::<Assignment>(&v).ok())
                    .map(|a| a.call),
            )
        })
    }

    fn release<'a>(&'a self, call_sid: &'a str) -> RoutingFuture<'a, ()> {
        bounded("releasing a call", async move {
            let i = &self.inner;
            let ckey = call_key(call_sid);
            // First stop refreshing what this node wrote for the call: if
            // the deletes below fail (NATS away), the entries still expire
            // within the TTL instead of holding the operator forever.
            i.forget_mine(&ckey, call_sid);
            let Some(opkey) = i
                .holder
                .get(ckey.clone())
                .await
                .map_err(|e| unavailable("reading a call's holder", e))?
            else {
                return Ok(());
            };
            let opkey = String::from_utf8_lossy(&opkey).into_owned();
            let entry = i
                .assign
                .entry(opkey.clone())
                .await
                .map_err(|e| unavailable("reading an assignment", e))?;
            if let Some(entry) = entry
                && entry.operation == kv::Operation::Put
                && serde_json::from_slice::<Assignment>(&entry.value)
                    .is_ok_and(|a| a.call == call_sid)
            {
                // At the revision read: a newer assignment is not ours.
                match i
                    .assign
                    .delete_expect_revision(&opkey, Some(entry.revision))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => {}
                    Err(e) => return Err(unavailable("releasing a call", e)),
                }
            }
            let _ = i.holder.delete(&ckey).await;
            Ok(())
        })
    }

    fn claim_once<'a>(&'a self, id: &'a str, ttl: Duration) -> RoutingFuture<'a, bool> {
        bounded("claiming an id", async move {
            if ttl > CLAIMS_MAX_AGE {
                return Err(unavailable(
                    "claiming an id",
                    "ttl beyond the bucket's max age",
                ));
            }
            // Hex: any id is a valid key.
            let key: String = id.bytes().map(|b| format!("{b:02x}")).collect();
            match self
                .inner
                .claims
                .create(&key, bytes::Bytes::from_static(b"1"))
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(unavailable("claiming an id", e)),
            }
        })
    }

    fn operators_online(&self) -> RoutingFuture<'_, usize> {
        bounded("counting operators", async move {
            Ok(self.inner.presences().await?.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_unambiguous_for_any_operator_ref() {
        let a = op_key(&OperatorKey {
            account: "acc_1".into(),
            operator_ref: "a b/*>\u{202e}".into(),
        });
        let b = op_key(&OperatorKey {
            account: "acc_1a".into(),
            operator_ref: " b/*>\u{202e}".into(),
        });
        assert_ne!(a, b);
        for k in [a, b, call_key("CA123")] {
            assert!(
                k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'),
                "{k}"
            );
        }
    }
}

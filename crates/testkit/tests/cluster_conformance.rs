//! One conformance suite for the cluster seam (`audin_server::routing`):
//! every check runs against the in-process routing and against the NATS
//! routing, as a cluster of two nodes. In process the two "nodes" are one
//! shared `InMemoryRouting` (what one server is); on NATS they are two
//! `NatsRouting` instances, each with its own connection, on one
//! throw-away nats-server (`audin_testkit::nats`), with fresh buckets per
//! check. Then what only a shared engine has: a node that dies (its
//! operators and assignments disappear within the TTL, which is the stated
//! bound) and a NATS restart (the same instances work again).
//!
//! The bus (messages between nodes) has its own checks below: in process
//! there is no other node; on NATS, two nodes' buses with recording
//! inboxes.
//!
//! The NATS half SKIPs when nats-server is not installed, unless
//! `AUDIN_REQUIRE_NATS` is set (as `cargo xtask test` does).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use audin_server::bus::nats::NatsBus;
use audin_server::bus::{
    AboutCall, Bus, CallCommand, CallStatus, Inbox, LocalBus, Origin, RelaySink,
};
use audin_server::routing::nats::{NatsRouting, NatsRoutingConfig};
use audin_server::routing::{InMemoryRouting, OperatorKey, Routing, RoutingError};
use audin_testkit::nats::{TempNats, available_or_skip};

/// Bucket max_age in these tests: how long a dead node's entries stay.
const TTL: Duration = Duration::from_secs(2);

/// Two nodes of one cluster.
struct Cluster {
    a: Arc<dyn Routing>,
    b: Arc<dyn Routing>,
}

type Check = fn(Cluster) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |c| Box::pin($name(c)))),*]
    };
}

/// Every behaviour both implementations must share.
const CHECKS: &[(&str, Check)] = checks![
    online_offline_and_available,
    busy_operators_are_not_available,
    assign_is_exclusive,
    held_call_and_release,
    operators_online_counts_cluster_wide,
    concurrent_assigns_have_exactly_one_winner,
    an_id_is_claimed_once_cluster_wide,
];

fn op(r: &str) -> OperatorKey {
    OperatorKey {
        account: "acc_1".into(),
        operator_ref: r.into(),
    }
}

fn nums(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

async fn online_offline_and_available(c: Cluster) {
    c.a.set_online(&op("ada"), nums(&["pn_1", "pn_2"]))
        .await
        .unwrap();
    c.b.set_online(&op("bob"), nums(&["pn_1"])).await.unwrap();
    for node in [&c.a, &c.b] {
        assert_eq!(
            node.available("pn_1").await.unwrap(),
            [op("ada"), op("bob")]
        );
        assert_eq!(node.available("pn_2").await.unwrap(), [op("ada")]);
        assert!(node.available("pn_9").await.unwrap().is_empty());
    }
    // Going online again replaces the numbers.
    c.a.set_online(&op("ada"), nums(&["pn_2"])).await.unwrap();
    assert_eq!(c.b.available("pn_1").await.unwrap(), [op("bob")]);
    c.a.set_offline(&op("ada")).await.unwrap();
    assert!(c.b.available("pn_2").await.unwrap().is_empty());
    assert_eq!(c.a.operators_online().await.unwrap(), 1);
    // Offline twice, or never online: nothing happens.
    c.a.set_offline(&op("ada")).await.unwrap();
    c.a.set_offline(&op("nobody")).await.unwrap();
    assert_eq!(c.b.operators_online().await.unwrap(), 1);
    // An operatorRef is client text: any of it round-trips.
    let odd = op("a.b *>/\u{202e}é");
    c.b.set_online(&odd, nums(&["pn_1"])).await.unwrap();
    assert_eq!(
        c.a.available("pn_1").await.unwrap(),
        [odd.clone(), op("bob")]
    );
}

async fn busy_operators_are_not_available(c: Cluster) {
    c.a.set_online(&op("ada"), nums(&["pn_1"])).await.unwrap();
    c.b.set_online(&op("bob"), nums(&["pn_1"])).await.unwrap();
    c.b.assign(&op("bob"), "CA1").await.unwrap();
    for node in [&c.a, &c.b] {
        assert_eq!(node.available("pn_1").await.unwrap(), [op("ada")]);
    }
    // Busy operators are still online.
    assert_eq!(c.a.operators_online().await.unwrap(), 2);
    c.a.release("CA1").await.unwrap();
    assert_eq!(c.b.available("pn_1").await.unwrap(), [op("ada"), op("bob")]);
}

async fn assign_is_exclusive(c: Cluster) {
    c.a.assign(&op("ada"), "CA1").await.unwrap();
    for (node, call) in [(&c.a, "CA2"), (&c.b, "CA3")] {
        assert_eq!(
            node.assign(&op("ada"), call).await,
            Err(RoutingError::Busy { held: "CA1".into() })
        );
    }
    for node in [&c.a, &c.b] {
        assert_eq!(
            node.held_call(&op("ada")).await.unwrap().as_deref(),
            Some("CA1")
        );
    }
    // Another operator is not affected.
    c.b.assign(&op("bob"), "CA2").await.unwrap();
    assert_eq!(
        c.a.held_call(&op("bob")).await.unwrap().as_deref(),
        Some("CA2")
    );
}

async fn held_call_and_release(c: Cluster) {
    assert_eq!(c.a.held_call(&op("ada")).await.unwrap(), None);
    c.a.set_online(&op("ada"), nums(&["pn_1"])).await.unwrap();
    c.a.assign(&op("ada"), "CA1").await.unwrap();
    // Going offline keeps the held call (the call ends it, not presence).
    c.a.set_offline(&op("ada")).await.unwrap();
    assert_eq!(
        c.b.held_call(&op("ada")).await.unwrap().as_deref(),
        Some("CA1")
    );
    // Releasing an unknown call changes nothing.
    c.b.release("CA_unknown").await.unwrap();
    assert_eq!(
        c.a.held_call(&op("ada")).await.unwrap().as_deref(),
        Some("CA1")
    );
    // Released on the other node: free everywhere, and free to take more.
    c.b.release("CA1").await.unwrap();
    for node in [&c.a, &c.b] {
        assert_eq!(node.held_call(&op("ada")).await.unwrap(), None);
    }
    c.b.assign(&op("ada"), "CA2").await.unwrap();
    // A stale release of the old call does not free the new one.
    c.a.release("CA1").await.unwrap();
    assert_eq!(
        c.a.held_call(&op("ada")).await.unwrap().as_deref(),
        Some("CA2")
    );
}

async fn operators_online_counts_cluster_wide(c: Cluster) {
    assert_eq!(c.a.operators_online().await.unwrap(), 0);
    c.a.set_online(&op("ada"), nums(&["pn_1"])).await.unwrap();
    c.a.set_online(&op("amy"), nums(&[])).await.unwrap();
    c.b.set_online(&op("bob"), nums(&["pn_2"])).await.unwrap();
    for node in [&c.a, &c.b] {
        assert_eq!(node.operators_online().await.unwrap(), 3);
    }
    // Online again (another number list): still one operator.
    c.b.set_online(&op("bob"), nums(&["pn_1"])).await.unwrap();
    assert_eq!(c.a.operators_online().await.unwrap(), 3);
}

/// 50 rounds: four assigns at once (two per node, each for its own call)
/// for one operator; exactly one wins, the others are told its call.
async fn concurrent_assigns_have_exactly_one_winner(c: Cluster) {
    let ada = op("ada");
    for round in 0..50 {
        let calls: Vec<String> = (0..4).map(|i| format!("CA{round}x{i}")).collect();
        let attempt = |node: &Arc<dyn Routing>, call: String| {
            let (node, ada) = (node.clone(), ada.clone());
            tokio::spawn(async move { (node.assign(&ada, &call).await, call) })
        };
        let tasks = [
            attempt(&c.a, calls[0].clone()),
            attempt(&c.b, calls[1].clone()),
            attempt(&c.a, calls[2].clone()),
            attempt(&c.b, calls[3].clone()),
        ];
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let winners: Vec<&String> = results
            .iter()
            .filter(|(r, _)| r.is_ok())
            .map(|(_, call)| call)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = winners[0].clone();
        for (r, call) in &results {
            if *call != winner {
                assert_eq!(
                    r,
                    &Err(RoutingError::Busy {
                        held: winner.clone()
                    }),
                    "round {round}"
                );
            }
        }
        assert_eq!(
            c.b.held_call(&ada).await.unwrap().as_deref(),
            Some(winner.as_str())
        );
        c.a.release(&winner).await.unwrap();
    }
}

/// An attach ticket is used once, whichever node it is presented to.
async fn an_id_is_claimed_once_cluster_wide(c: Cluster) {
    let ttl = Duration::from_secs(30);
    assert!(c.a.claim_once("t1", ttl).await.unwrap());
    assert!(!c.b.claim_once("t1", ttl).await.unwrap());
    assert!(!c.a.claim_once("t1", ttl).await.unwrap());
    // Any text is a valid id.
    assert!(c.b.claim_once("a.b *>", ttl).await.unwrap());
    // Concurrent claims of one id: one wins.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let node = if i % 2 == 0 { c.a.clone() } else { c.b.clone() };
            tokio::spawn(async move { node.claim_once("t2", ttl).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
}

async fn run_all(name: &str, mut next: impl AsyncFnMut() -> Cluster) {
    for (check, run) in CHECKS {
        println!("{name}: {check}");
        let cluster = next().await;
        // A panic names the check (printed above) and the implementation.
        run(cluster).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_routing_conforms() {
    run_all("in-memory", async || {
        let one: Arc<dyn Routing> = Arc::new(InMemoryRouting::new());
        Cluster {
            a: one.clone(),
            b: one,
        }
    })
    .await;
}

/// The NATS server of a test, or `None` (test skipped).
fn nats(test: &str) -> Option<TempNats> {
    available_or_skip(test).then(|| TempNats::start_new().expect("nats-server starts"))
}

static BUCKETS: AtomicU32 = AtomicU32::new(0);

/// A fresh bucket prefix: each check starts from empty buckets.
fn prefix() -> String {
    format!("t{}", BUCKETS.fetch_add(1, Ordering::Relaxed))
}

async fn node(nats: &TempNats, prefix: &str, id: &str) -> NatsRouting {
    NatsRouting::connect(NatsRoutingConfig {
        url: nats.url(),
        node_id: id.into(),
        bucket_prefix: prefix.into(),
        ttl: TTL,
    })
    .await
    .expect("NatsRouting connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_routing_conforms() {
    let Some(nats) = nats("nats_routing_conforms") else {
        return;
    };
    run_all("nats", async || {
        let p = prefix();
        Cluster {
            a: Arc::new(node(&nats, &p, "node-a").await),
            b: Arc::new(node(&nats, &p, "node-b").await),
        }
    })
    .await;
}

/// Polls `probe` every 50 ms until it is true; the time it took, or a
/// panic naming `what` after `limit`.
async fn within(limit: Duration, what: &str, mut probe: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if probe().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node that dies without a word (refresh stopped, connection closed):
/// its operators and assignments are gone within the TTL (+ 1 s of
/// slack), while the live node's own entries outlive several TTLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_operators_disappear_within_the_ttl() {
    let Some(nats) = nats("a_dead_nodes_operators_disappear_within_the_ttl") else {
        return;
    };
    let p = prefix();
    let live = node(&nats, &p, "node-a").await;
    let dying = node(&nats, &p, "node-b").await;
    live.set_online(&op("ada"), nums(&["pn_1"])).await.unwrap();
    live.assign(&op("ada"), "CA1").await.unwrap();
    dying.set_online(&op("bob"), nums(&["pn_1"])).await.unwrap();
    dying.set_online(&op("bea"), nums(&["pn_1"])).await.unwrap();
    dying.assign(&op("bob"), "CA2").await.unwrap();
    assert_eq!(live.operators_online().await.unwrap(), 3);
    // Held past a TTL by the refresh, before the node dies.
    tokio::time::sleep(TTL + TTL / 2).await;
    assert_eq!(live.operators_online().await.unwrap(), 3);
    assert_eq!(live.available("pn_1").await.unwrap(), [op("bea")]);

    dying.abandon().await;
    let gone = within(
        TTL + Duration::from_secs(1),
        "dead node's operators gone",
        async || {
            live.operators_online().await.unwrap() == 1
                && live.held_call(&op("bob")).await.unwrap().is_none()
        },
    )
    .await;
    println!("a dead node's operators and calls disappeared after {gone:?} (bound {TTL:?})");
    // The live node's entries are still there, three TTLs on.
    tokio::time::sleep(TTL).await;
    assert_eq!(live.operators_online().await.unwrap(), 1);
    assert_eq!(
        live.held_call(&op("ada")).await.unwrap().as_deref(),
        Some("CA1")
    );
    // The dead node's operator can be assigned again (by the survivor).
    live.assign(&op("bob"), "CA3").await.unwrap();
}

/// nats-server killed and started again (same port and storage): the same
/// `NatsRouting` instances work again without being rebuilt, their state
/// kept; while it is down, steps fail with a typed error in bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_recovers_after_a_nats_restart() {
    let Some(mut nats) = nats("routing_recovers_after_a_nats_restart") else {
        return;
    };
    let p = prefix();
    let a = node(&nats, &p, "node-a").await;
    let b = node(&nats, &p, "node-b").await;
    a.set_online(&op("ada"), nums(&["pn_1"])).await.unwrap();
    b.set_online(&op("bob"), nums(&["pn_1"])).await.unwrap();
    b.assign(&op("bob"), "CA1").await.unwrap();

    nats.kill();
    let start = Instant::now();
    let down = a.available("pn_1").await;
    assert!(
        matches!(down, Err(RoutingError::Unavailable(_))),
        "{down:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    nats.start().expect("nats-server restarts");
    let back = within(Duration::from_secs(15), "routing works again", async || {
        matches!(a.available("pn_1").await, Ok(ops) if ops == [op("ada")])
            && b.operators_online().await.is_ok_and(|n| n == 2)
    })
    .await;
    println!("routing answered again {back:?} after nats-server was back");
    // Both nodes write again, and the held call still holds.
    b.set_online(&op("bea"), nums(&["pn_1"])).await.unwrap();
    assert_eq!(
        a.assign(&op("bob"), "CA2").await,
        Err(RoutingError::Busy { held: "CA1".into() })
    );
    a.assign(&op("bea"), "CA3").await.unwrap();
    b.release("CA1").await.unwrap();
    assert_eq!(a.available("pn_1").await.unwrap(), [op("ada"), op("bob")]);
    // Refreshes resumed: the entries outlive another TTL.
    tokio::time::sleep(TTL + TTL / 2).await;
    assert_eq!(a.operators_online().await.unwrap(), 3);
}

// ── the bus: messages between nodes ──────────────────────────────────

/// What a node's engine would be told by the bus, recorded.
#[derive(Default)]
struct Recorder {
    events: std::sync::Mutex<Vec<String>>,
    /// The calls "live" on this node, and whether each is answered.
    calls: std::sync::Mutex<std::collections::HashMap<String, bool>>,
}

impl Recorder {
    fn push(&self, e: String) {
        self.events.lock().unwrap().push(e);
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl Inbox for Recorder {
    fn to_operator(&self, op: &OperatorKey, text: &str, origin: Option<Origin<'_>>) {
        match origin {
            None => self.push(format!("text {} {text}", op.operator_ref)),
            Some(o) => self.push(format!(
                "text {} {text} from {} about {} ends {}",
                op.operator_ref, o.node, o.about.call_sid, o.about.ends
            )),
        }
    }

    fn node_died(&self, node: &str) {
        self.push(format!("died {node}"));
    }

    fn operator_moved(&self, op: &OperatorKey, session_id: &str) {
        self.push(format!("moved {} {session_id}", op.operator_ref));
    }

    fn to_call<'a>(
        &'a self,
        call_sid: &'a str,
        cmd: CallCommand,
    ) -> Pin<Box<dyn Future<Output = Option<CallStatus>> + Send + 'a>> {
        let answered = self.calls.lock().unwrap().get(call_sid).copied();
        if answered.is_some() {
            self.push(format!("call {call_sid} {cmd:?}"));
        }
        Box::pin(std::future::ready(answered.map(|answered| CallStatus {
            answered,
            attach: None,
        })))
    }

    fn operator_offline(&self, op: &OperatorKey) {
        self.push(format!("offline {}", op.operator_ref));
    }
}

/// Two nodes' buses on one NATS, each with its recorder.
async fn two_buses(nats: &TempNats) -> [(NatsBus, Arc<Recorder>); 2] {
    let p = prefix();
    let mut out = Vec::new();
    for id in ["node-a", "node-b"] {
        let routing = node(nats, &p, id).await;
        let bus = NatsBus::new(routing.client(), &p, id);
        let rec = Arc::new(Recorder::default());
        let inbox: Arc<dyn Inbox> = rec.clone();
        // The weak handle lives as long as the recorder returned (one
        // allocation); the bus keeps the routing's connection.
        bus.start(Arc::downgrade(&inbox)).await.unwrap();
        out.push((bus, rec));
    }
    out.try_into().ok().unwrap()
}

/// Messages for an operator reach the node holding its presence socket,
/// in order, whatever its operatorRef; a new session elsewhere is
/// announced to the old node; a stale unwatch leaves the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bus_delivers_operator_messages_to_the_presence_node() {
    let Some(nats) = nats("nats_bus_delivers_operator_messages") else {
        return;
    };
    let [(a, rec_a), (b, rec_b)] = two_buses(&nats).await;
    let odd = op("a.b *>/\u{202e}é");
    a.watch_operator(&odd, "s1").await.unwrap();
    for i in 0..100 {
        b.to_operator(&odd, &format!("m{i}"), None);
    }
    let want: Vec<String> = std::iter::once("moved a.b *>/\u{202e}é s1".to_owned())
        .chain((0..100).map(|i| format!("text a.b *>/\u{202e}é m{i}")))
        .collect();
    within(
        Duration::from_secs(5),
        "100 messages in order",
        async || rec_a.events() == want,
    )
    .await;
    assert!(rec_b.events().is_empty(), "{:?}", rec_b.events());

    // The operator opens a session on node b: node a hears of it.
    b.watch_operator(&odd, "s2").await.unwrap();
    within(Duration::from_secs(5), "node a told of s2", async || {
        rec_a.events().last().map(String::as_str) == Some("moved a.b *>/\u{202e}é s2")
    })
    .await;
    a.unwatch_operator(&odd, "s1");
    // A stale unwatch on b (an older session) keeps b's watch.
    b.unwatch_operator(&odd, "s1");
    let before_a = rec_a.events().len();
    a.to_operator(&odd, "late", None);
    within(Duration::from_secs(5), "b gets the message", async || {
        rec_b.events().last().map(String::as_str) == Some("text a.b *>/\u{202e}é late")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rec_a.events().len(), before_a, "a no longer listens");
}

/// A command reaches the node owning the call and returns its status; a
/// call no node owns is `None` at once (NATS's no-responders), as is a sid
/// that cannot be a subject token; an operator offline on one node is
/// announced to the others, not to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bus_reaches_the_calls_node_and_announces_offline() {
    let Some(nats) = nats("nats_bus_reaches_the_calls_node") else {
        return;
    };
    let [(a, rec_a), (b, rec_b)] = two_buses(&nats).await;
    rec_a.calls.lock().unwrap().insert("CA1".into(), true);
    a.watch_call("CA1").await.unwrap();
    let accept = CallCommand::Accept { op: op("bob") };
    assert_eq!(
        b.to_call("CA1", &accept).await.unwrap(),
        Some(CallStatus {
            answered: true,
            attach: None
        })
    );
    assert_eq!(
        rec_a.events(),
        [format!("call CA1 {accept:?}")],
        "delivered once, to the owner"
    );
    let start = Instant::now();
    assert_eq!(
        b.to_call("CA404", &CallCommand::Status).await.unwrap(),
        None
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "no waiting: {:?}",
        start.elapsed()
    );
    for bad in ["CA1.x", "CA*", ">", "CA 1", ""] {
        assert_eq!(b.to_call(bad, &accept).await.unwrap(), None, "{bad:?}");
    }
    // The call ends on a: its engine forgets it, then the bus.
    rec_a.calls.lock().unwrap().remove("CA1");
    a.unwatch_call("CA1");
    let gone = within(Duration::from_secs(5), "unwatched call gone", async || {
        b.to_call("CA1", &CallCommand::Status)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    println!("an unwatched call answered None after {gone:?}");

    a.operator_offline(&op("ada"));
    within(
        Duration::from_secs(5),
        "b told ada is offline",
        async || rec_b.events() == ["offline ada"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !rec_a.events().iter().any(|e| e.starts_with("offline")),
        "{:?}",
        rec_a.events()
    );
}

/// In process there is no other node: nothing is sent, no call lives
/// elsewhere.
#[tokio::test]
async fn the_local_bus_has_no_other_node() {
    let bus = LocalBus;
    let rec = Arc::new(Recorder::default());
    let inbox: Arc<dyn Inbox> = rec.clone();
    bus.start(Arc::downgrade(&inbox)).await.unwrap();
    bus.watch_operator(&op("ada"), "s1").await.unwrap();
    bus.to_operator(&op("ada"), "hello", None);
    bus.watch_call("CA1").await.unwrap();
    assert_eq!(
        bus.to_call("CA1", &CallCommand::Status).await.unwrap(),
        None
    );
    bus.operator_offline(&op("ada"));
    assert!(rec.events().is_empty());
    assert_eq!(bus.kind(), "in-process");
    assert_eq!(bus.node_id(), None);
}

/// What came down a relay, recorded.
#[derive(Default)]
struct SocketRecorder(std::sync::Mutex<Vec<String>>);

impl RelaySink for SocketRecorder {
    fn frame(&self, frame: bytes::Bytes) {
        self.0.lock().unwrap().push(format!("frame {}", frame[0]));
    }

    fn text(&self, text: String) {
        self.0.lock().unwrap().push(format!("text {text}"));
    }

    fn close(&self, code: u16, reason: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("close {code} {reason}"));
    }
}

/// A relay between the call's node (a) and the socket's node (b): frames
/// go up, frames, texts and the close come down, in order; dropping
/// either end stops what it listened to; a relay id that is not a plain
/// token is refused; in process there is no relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bus_relays_audio_between_the_call_and_socket_nodes() {
    let Some(nats) = nats("nats_bus_relays_audio") else {
        return;
    };
    let [(a, _), (b, _)] = two_buses(&nats).await;
    let socket = Arc::new(SocketRecorder::default());
    let up = b.join_relay("r1", socket.clone()).await.unwrap();
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = heard.clone();
    let down = a
        .open_relay(
            "r1",
            Arc::new(move |f: bytes::Bytes| sink.lock().unwrap().push(f[0])),
        )
        .await
        .unwrap();
    for i in 0..50u8 {
        up.frame(bytes::Bytes::from(vec![i; 160]));
        down.frame(bytes::Bytes::from(vec![i; 160]));
    }
    down.text("{\"type\":\"attached\"}");
    down.close(4008, "CALL_NOT_FOUND");
    let mut want: Vec<String> = (0..50).map(|i| format!("frame {i}")).collect();
    want.push("text {\"type\":\"attached\"}".into());
    want.push("close 4008 CALL_NOT_FOUND".into());
    within(
        Duration::from_secs(5),
        "everything down, in order",
        async || *socket.0.lock().unwrap() == want,
    )
    .await;
    within(
        Duration::from_secs(5),
        "every frame up, in order",
        async || *heard.lock().unwrap() == (0..50).collect::<Vec<u8>>(),
    )
    .await;
    // The call's node drops its end: frames going up are no longer taken.
    drop(down);
    tokio::time::sleep(Duration::from_millis(200)).await;
    up.frame(bytes::Bytes::from(vec![99; 160]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(heard.lock().unwrap().len(), 50, "nothing after the drop");
    assert!(b.join_relay("r.2", socket.clone()).await.is_err());
    assert!(LocalBus.join_relay("r3", socket).await.is_err());
}

/// A message about a call tells the operator's node which node owns the
/// call; a node that stops (its heartbeats end) is declared dead to the
/// others once, within `NODE_DEAD_AFTER` and a heartbeat, and never to
/// itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bus_names_a_calls_node_and_declares_a_silent_node_dead() {
    let Some(nats) = nats("nats_bus_declares_a_silent_node_dead") else {
        return;
    };
    let [(a, rec_a), (b, _)] = two_buses(&nats).await;
    a.watch_operator(&op("ada"), "s1").await.unwrap();
    let about = AboutCall {
        call_sid: "CA7",
        ends: false,
    };
    b.to_operator(&op("ada"), "{}", Some(about));
    b.to_operator(
        &op("ada"),
        "{}",
        Some(AboutCall {
            call_sid: "CA7",
            ends: true,
        }),
    );
    within(Duration::from_secs(5), "messages with origin", async || {
        rec_a.events()
            == [
                "moved ada s1",
                "text ada {} from node-b about CA7 ends false",
                "text ada {} from node-b about CA7 ends true",
            ]
    })
    .await;
    // Both alive for a while: nobody is declared dead.
    tokio::time::sleep(audin_server::bus::NODE_DEAD_AFTER * 2).await;
    assert!(!rec_a.events().iter().any(|e| e.starts_with("died")));
    drop(b);
    let t = within(
        audin_server::bus::NODE_DEAD_AFTER + Duration::from_secs(1),
        "node-b declared dead",
        async || rec_a.events().iter().any(|e| e == "died node-b"),
    )
    .await;
    println!("a silent node was declared dead after {t:?}");
    tokio::time::sleep(audin_server::bus::NODE_DEAD_AFTER).await;
    let died: Vec<String> = rec_a
        .events()
        .into_iter()
        .filter(|e| e.starts_with("died"))
        .collect();
    assert_eq!(died, ["died node-b"], "once, and never itself");
}

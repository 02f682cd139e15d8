//! Cluster mode end to end: three real `audin-server` processes
//! (`--cluster nats://…`, one PostgreSQL `--database`) on a throw-away
//! nats-server and PostgreSQL, driven by the native SDK. Each operator
//! talks to its own node, and calls arrive at other nodes:
//!
//! - an operator on node 1 is offered, accepts and talks on a call that
//!   arrived at node 2: its audio socket lands on node 1 and is relayed
//!   over NATS (frames both ways: the sim echoes the operator's tone), the
//!   caller's hang-up reaches it, the record is in PostgreSQL; then a call
//!   arriving at node 3 which the operator hangs up from node 1;
//! - two operators on different nodes accept the same call at once, 50
//!   times: exactly one winner each time, the other told `taken_by_other`.
//!
//! SKIPs when nats-server or PostgreSQL is not installed, unless
//! `AUDIN_REQUIRE_NATS` / `AUDIN_REQUIRE_POSTGRES` is set (as
//! `cargo xtask test` does).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use audin_operator::core::PresenceState;
use audin_operator::core::{CallState, EndReason, Event};
use audin_operator::{AudinOperator, Call};
use audin_testkit::audio::{Analysis, TELEPHONY_RATE, analyze, from_mulaw, to_f32};
use audin_testkit::balancer::TempBalancer;
use audin_testkit::cluster::TempCluster;
use audin_testkit::nats::TempNats;
use audin_testkit::postgres::TempPostgres;
use audin_testkit::sip::harness::bounded;
use audin_testkit::support::{
    CALLER, EventLog, MILANO, MILANO_E164, Timings, TokenSource, call_record, eventually,
    live_calls, metrics, operator, operator_online, play_tone, sim_call, sim_hangup,
};
use audin_testkit::{ServerOptions, ServerProcess};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Every test finishes well inside this, or fails.
const TEST_BOUND: Duration = Duration::from_secs(120);
/// How long an expected event may take.
const EVENT: Duration = Duration::from_secs(5);

/// The engines and three nodes of one cluster.
struct Cluster {
    nodes: Vec<ServerProcess>,
    key: String,
    nats: TempNats,
    pg: TempPostgres,
}

impl Cluster {
    /// Starts PostgreSQL, NATS and `n` nodes; `None`: skipped.
    async fn start(test: &str, n: usize) -> Result<Option<Cluster>> {
        Self::start_with(test, n, &[]).await
    }

    /// The same, each node with the extra flags `args`.
    async fn start_with(test: &str, n: usize, args: &[(&str, &str)]) -> Result<Option<Cluster>> {
        Self::launch(test, n, args, false).await
    }

    /// The same, each node advertising its own URL (`--advertise-url`),
    /// so accepted calls steer audio sockets to the call's node.
    async fn start_steered(test: &str, n: usize) -> Result<Option<Cluster>> {
        Self::launch(test, n, &[], true).await
    }

    async fn launch(
        test: &str,
        n: usize,
        args: &[(&str, &str)],
        advertise: bool,
    ) -> Result<Option<Cluster>> {
        if !audin_testkit::nats::available_or_skip(test)
            || !audin_testkit::postgres::available_or_skip(test)
        {
            return Ok(None);
        }
        let mut base = ServerOptions::default();
        for (flag, value) in args {
            base = base.arg(flag, value);
        }
        let TempCluster {
            nodes,
            key,
            nats,
            pg,
        } = TempCluster::start(n, base, advertise).await?;
        Ok(Some(Cluster {
            nodes,
            key,
            nats,
            pg,
        }))
    }

    fn url(&self, node: usize) -> String {
        self.nodes[node - 1].url()
    }

    /// Prints every node's log (on a failure).
    fn dump_logs(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            eprintln!("── node {} ──\n{}", i + 1, node.logs());
        }
    }

    /// An SDK operator whose presence (and audio) sockets go to `node`,
    /// online on Milano.
    async fn operator(&self, node: usize, name: &str) -> Result<(AudinOperator, EventLog)> {
        self.operator_at(&self.url(node), name).await
    }

    /// An SDK operator whose sockets go to `url` (a node or the
    /// balancer), online on Milano.
    async fn operator_at(&self, url: &str, name: &str) -> Result<(AudinOperator, EventLog)> {
        operator_online(url, &self.key, name, &[MILANO], EVENT).await
    }
}

/// The `incomingCall` of `sid`, taken from the SDK.
async fn ringing(op: &AudinOperator, log: &EventLog, since: Instant, sid: &str) -> Result<Call> {
    log.wait(since, EVENT, |e| match e {
        Event::IncomingCall { call } if call.call_sid == sid => Some(()),
        _ => None,
    })
    .await
    .with_context(|| format!("no incomingCall for {sid}"))?;
    op.call(sid)
        .with_context(|| format!("{sid} is not the current call"))
}

async fn ended(call: &Call) -> Result<EndReason> {
    let info = tokio::time::timeout(EVENT, call.ended())
        .await
        .context("the call did not end")?;
    info.end_reason.context("ended without a reason")
}

/// The operator's microphone: a tone, one frame every 20 ms, until aborted.
fn play(call: &Call, hz: f64) -> JoinHandle<()> {
    play_tone(call, hz, -20.0)
}

/// What the operator hears during `d`.
async fn listen(call: &Call, d: Duration) -> Analysis {
    let audio = call.audio();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let ear = tokio::spawn(async move {
        while let Some(frame) = audio.recv_frame().await {
            sink.lock().unwrap().extend_from_slice(&frame);
        }
    });
    tokio::time::sleep(d).await;
    ear.abort();
    let heard = std::mem::take(&mut *heard.lock().unwrap());
    analyze(&to_f32(&from_mulaw(&heard)), TELEPHONY_RATE)
}

/// Waits until `node` has no live call: the SDK ends a call the moment its
/// operator hangs up, the server a moment later (across nodes, a NATS hop
/// or two); until then the operator still holds it and is not offered the
/// next call.
async fn settled(c: &Cluster, node: usize) -> Result<()> {
    let url = c.url(node);
    let done = eventually(EVENT, async || {
        metrics(&url).await.is_ok_and(|m| live_calls(&m) == 0.0)
    })
    .await;
    ensure!(done, "node {node} still has live calls");
    Ok(())
}

/// The record of `sid` once it is closed (record writes are queued).
async fn closed_record(base: &str, key: &str, sid: &str) -> Result<serde_json::Value> {
    closed_record_within(EVENT, base, key, sid).await
}

/// The same, waiting up to `limit`.
async fn closed_record_within(
    limit: Duration,
    base: &str,
    key: &str,
    sid: &str,
) -> Result<serde_json::Value> {
    let mut last = None;
    let closed = eventually(limit, async || {
        last = call_record(base, key, sid).await.ok().flatten();
        last.as_ref().is_some_and(|r| !r["endReason"].is_null())
    })
    .await;
    ensure!(closed, "record of {sid} not closed: {last:?}");
    last.context("no record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_on_one_node_answers_calls_arriving_at_the_others_with_audio_both_ways()
-> Result<()> {
    let test = "cluster_cross_node_answer";
    let Some(c) = Cluster::start(test, 3).await? else {
        return Ok(());
    };
    bounded(test, TEST_BOUND, async {
        let (ada, log) = c.operator(1, "ada").await?;

        // 1. A call arrives at node 2; ada (node 1) takes it and talks: her
        // 1 kHz goes up the relay to node 2, the sim echoes it, and it
        // comes back down.
        let t0 = Instant::now();
        let sid = sim_call(&c.url(2), CALLER, MILANO_E164, "echo").await?;
        let call = ringing(&ada, &log, t0, &sid).await?;
        call.accept();
        let info = tokio::time::timeout(EVENT, call.wait_for(CallState::Active))
            .await
            .context("the call did not become active")?;
        ensure!(info.state == CallState::Active, "call ended: {info:?}");
        let mic = play(&call, 1000.0);
        let heard = listen(&call, Duration::from_secs(2)).await;
        mic.abort();
        ensure!(heard.is_tone(1000.0, 5.0), "ada heard {heard}");
        ensure!(heard.active_seconds > 1.5, "ada heard {heard}");
        // The caller hangs up at node 2: ada is told on node 1.
        sim_hangup(&c.url(2), &sid).await?;
        assert_eq!(ended(&call).await?, EndReason::RemoteHangup);
        // The record, read through node 3 (one database).
        let rec = closed_record(&c.url(3), &c.key, &sid).await?;
        assert_eq!(rec["endReason"], "remote_hangup", "{rec}");
        assert_eq!(rec["operatorRef"], "ada", "{rec}");

        // 2. She is free again: a call at node 3 rings her; she hears its
        // tone and hangs up from node 1.
        let t1 = Instant::now();
        let sid = sim_call(&c.url(3), CALLER, MILANO_E164, "tone").await?;
        let call = ringing(&ada, &log, t1, &sid).await?;
        call.accept();
        tokio::time::timeout(EVENT, call.wait_for(CallState::Active))
            .await
            .context("second call not active")?;
        let heard = listen(&call, Duration::from_millis(1500)).await;
        ensure!(heard.is_tone(440.0, 5.0), "ada heard {heard}");
        call.hangup();
        assert_eq!(ended(&call).await?, EndReason::Hangup);
        let rec = closed_record(&c.url(1), &c.key, &sid).await?;
        assert_eq!(rec["endReason"], "hangup", "{rec}");
        Ok(())
    })
    .await
    .inspect_err(|_| c.dump_logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_on_two_nodes_accepting_at_once_have_exactly_one_winner() -> Result<()> {
    let test = "cluster_accept_race";
    let Some(c) = Cluster::start(test, 3).await? else {
        return Ok(());
    };
    bounded(test, TEST_BOUND, async {
        let (ada, ada_log) = c.operator(1, "ada").await?;
        let (bob, bob_log) = c.operator(3, "bob").await?;
        let mut wins = [0u32; 2];
        for round in 0..50 {
            let t0 = Instant::now();
            let sid = sim_call(&c.url(2), CALLER, MILANO_E164, "silence").await?;
            let a = ringing(&ada, &ada_log, t0, &sid).await?;
            let b = ringing(&bob, &bob_log, t0, &sid).await?;
            a.accept();
            b.accept();
            let (ra, rb) = tokio::join!(outcome(&a), outcome(&b));
            let (ra, rb) = (ra?, rb?);
            let winners = [&ra, &rb].iter().filter(|r| r.is_none()).count();
            ensure!(
                winners == 1,
                "round {round}: ada {ra:?}, bob {rb:?}: {winners} winners"
            );
            let (winner, loser) = if ra.is_none() {
                wins[0] += 1;
                (&a, rb)
            } else {
                wins[1] += 1;
                (&b, ra)
            };
            assert_eq!(loser, Some(EndReason::TakenByOther), "round {round}");
            winner.hangup();
            assert_eq!(ended(winner).await?, EndReason::Hangup, "round {round}");
            settled(&c, 2).await?;
        }
        println!("50 rounds: ada won {}, bob won {}", wins[0], wins[1]);
        // Ada rejects, Bob takes it: nothing is left behind on either
        // operator's node about the other node's calls.
        let t0 = Instant::now();
        let sid = sim_call(&c.url(2), CALLER, MILANO_E164, "silence").await?;
        ringing(&ada, &ada_log, t0, &sid).await?.reject();
        let b = ringing(&bob, &bob_log, t0, &sid).await?;
        b.accept();
        assert_eq!(outcome(&b).await?, None);
        b.hangup();
        ended(&b).await?;
        for node in [1, 3] {
            let clean = eventually(EVENT, async || {
                metrics(&c.url(node))
                    .await
                    .is_ok_and(|m| m.get("audin_remote_calls") == Some(&0.0))
            })
            .await;
            ensure!(clean, "node {node} still tracks another node's calls");
        }
        Ok(())
    })
    .await
    .inspect_err(|_| c.dump_logs())
}

/// `None` once the call is active (this operator won), or how it ended.
async fn outcome(call: &Call) -> Result<Option<EndReason>> {
    let info = tokio::time::timeout(EVENT, async {
        tokio::select! {
            info = call.wait_for(CallState::Active) => info,
            info = call.ended() => info,
        }
    })
    .await
    .context("neither active nor ended")?;
    Ok(match info.state {
        CallState::Active => None,
        _ => Some(info.end_reason.context("ended without a reason")?),
    })
}

/// The grace a call gives its audio socket to come back, in the failure
/// tests (the default is 15 s).
const GRACE_MS: &str = "3000";

/// An answered call (the sim echoes) between ada on `op_node` and a call
/// arriving at `call_node`, audio checked.
async fn talking(
    c: &Cluster,
    ada: &AudinOperator,
    log: &EventLog,
    call_node: usize,
) -> Result<(String, Call)> {
    let t0 = Instant::now();
    let sid = sim_call(&c.url(call_node), CALLER, MILANO_E164, "echo").await?;
    let call = ringing(ada, log, t0, &sid).await?;
    call.accept();
    let info = tokio::time::timeout(EVENT, call.wait_for(CallState::Active))
        .await
        .context("the call did not become active")?;
    ensure!(info.state == CallState::Active, "call ended: {info:?}");
    let mic = play(&call, 1000.0);
    let heard = listen(&call, Duration::from_millis(1000)).await;
    mic.abort();
    ensure!(heard.is_tone(1000.0, 5.0), "ada heard {heard}");
    Ok((sid, call))
}

/// SIGKILL of the node that owns a call: the operator on another node is
/// told `failed` within 2 s, is free at once (a call arriving at a third
/// node rings her and she takes it), and a survivor closes the killed
/// call's record `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_call_node_ends_its_calls_for_operators_elsewhere_and_frees_them() -> Result<()> {
    let test = "cluster_call_node_killed";
    let Some(mut c) = Cluster::start_with(test, 3, &[("--audio-grace-ms", GRACE_MS)]).await? else {
        return Ok(());
    };
    let result = bounded(test, TEST_BOUND, async {
        let (ada, log) = c.operator(1, "ada").await?;
        let (sid, call) = talking(&c, &ada, &log, 2).await?;
        let killed = Instant::now();
        c.nodes[1].kill().await;
        assert_eq!(ended(&call).await?, EndReason::Failed);
        let after = killed.elapsed();
        println!("the killed node's call ended for the operator after {after:?}");
        ensure!(after < Duration::from_secs(2), "ended after {after:?}");

        // Free at once: a call at node 3 rings her.
        let t1 = Instant::now();
        let next = sim_call(&c.url(3), CALLER, MILANO_E164, "tone").await?;
        let call = ringing(&ada, &log, t1, &next).await?;
        call.accept();
        tokio::time::timeout(EVENT, call.wait_for(CallState::Active))
            .await
            .context("the next call did not become active")?;
        call.hangup();
        ended(&call).await?;
        let rec = closed_record(&c.url(3), &c.key, &sid).await?;
        assert_eq!(rec["endReason"], "failed", "{rec}");
        Ok(())
    })
    .await;
    result.inspect_err(|_| c.dump_logs())
}

/// SIGKILL of the operator's node while its audio socket is relayed to
/// the call's node: the call does not live on as a ghost. The call's node
/// learns the socket is gone, gives it the grace window, then ends the
/// call `failed` and closes its record; no call stays live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_operator_node_leaves_no_ghost_call() -> Result<()> {
    let test = "cluster_operator_node_killed";
    let Some(mut c) = Cluster::start_with(test, 3, &[("--audio-grace-ms", GRACE_MS)]).await? else {
        return Ok(());
    };
    let result = bounded(test, TEST_BOUND, async {
        let (ada, log) = c.operator(1, "ada").await?;
        let (sid, _call) = talking(&c, &ada, &log, 2).await?;
        let killed = Instant::now();
        c.nodes[0].kill().await;
        let rec = closed_record_within(Duration::from_secs(10), &c.url(3), &c.key, &sid).await?;
        println!(
            "the orphaned call ended after {:?} (grace {GRACE_MS} ms)",
            killed.elapsed()
        );
        assert_eq!(rec["endReason"], "failed", "{rec}");
        let health: serde_json::Value = reqwest::get(format!("{}/healthz", c.url(2)))
            .await?
            .json()
            .await?;
        assert_eq!(health["calls"], 0, "{health}");
        drop(ada);
        Ok(())
    })
    .await;
    result.inspect_err(|_| c.dump_logs())
}

/// Which node (1-based) holds the one open audio socket, if one does.
async fn audio_node(c: &Cluster) -> Result<Option<usize>> {
    let mut found = None;
    for (i, node) in c.nodes.iter().enumerate() {
        let Ok(m) = metrics(&node.url()).await else {
            continue; // killed
        };
        if m.get("audin_sockets_open{kind=\"audio\"}").copied() == Some(1.0) {
            found = Some(i + 1);
        }
    }
    Ok(found)
}

/// The operator's sockets go through a real round-robin balancer, so her
/// presence and audio sockets land on any node. A call whose audio socket
/// landed on another node than the call's: that node is killed; the SDK
/// reattaches through the balancer to a surviving node within the grace
/// window and the call goes on with audio both ways (the relay is set up
/// again from wherever the socket lands); if her presence was on the
/// killed node too, she is online again through the balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_balancer_a_call_survives_the_death_of_its_audio_sockets_node() -> Result<()> {
    let test = "cluster_balancer_reattach";
    if !audin_testkit::balancer::available_or_skip(test) {
        return Ok(());
    }
    let Some(mut c) = Cluster::start_with(test, 3, &[("--audio-grace-ms", GRACE_MS)]).await? else {
        return Ok(());
    };
    let addrs: Vec<_> = c.nodes.iter().map(|n| n.addr).collect();
    let lb = TempBalancer::start(&addrs)?;
    let result = bounded(test, TEST_BOUND, async {
        let (ada, log) = c.operator_at(&lb.url(), "ada").await?;
        // A call whose audio socket is not on the call's node (round robin
        // makes that likely; a few tries make it certain enough).
        let mut found = None;
        for attempt in 0..6 {
            let call_node = 2 + attempt % 2;
            let (sid, call) = talking(&c, &ada, &log, call_node).await?;
            match audio_node(&c).await? {
                Some(a) if a != call_node => {
                    found = Some((sid, call, call_node, a));
                    break;
                }
                _ => {
                    call.hangup();
                    ended(&call).await?;
                    settled(&c, call_node).await?;
                }
            }
        }
        let (sid, call, call_node, audio) =
            found.context("no call had its audio socket on another node in 6 tries")?;
        println!(
            "call {sid} on node {call_node}, its audio socket on node {audio}: killing node {audio}"
        );
        let killed = Instant::now();
        c.nodes[audio - 1].kill().await;
        // Audio again, through another node, within the grace window.
        let mic = play(&call, 1000.0);
        let back = eventually(Duration::from_secs(3), async || {
            listen(&call, Duration::from_millis(300))
                .await
                .is_tone(1000.0, 5.0)
        })
        .await;
        ensure!(back, "no audio after the audio node died");
        println!("audio back {:?} after the kill", killed.elapsed());
        let heard = listen(&call, Duration::from_secs(1)).await;
        mic.abort();
        ensure!(heard.is_tone(1000.0, 5.0), "ada heard {heard}");
        ensure!(heard.active_seconds > 0.8, "ada heard {heard}");
        assert_eq!(call.info().state, CallState::Active);
        let online = eventually(Duration::from_secs(3), async || {
            ada.state() == PresenceState::Online
        })
        .await;
        ensure!(online, "ada not online again: {:?}", ada.state());
        call.hangup();
        assert_eq!(ended(&call).await?, EndReason::Hangup);
        let rec = closed_record(&c.url(call_node), &c.key, &sid).await?;
        assert_eq!(rec["endReason"], "hangup", "{rec}");
        Ok(())
    })
    .await;
    result.inspect_err(|_| {
        c.dump_logs();
        eprintln!("── balancer ──\n{}", lb.log());
    })
}

/// An operator that answers every call offered to it, talks `talk` and
/// hangs up; what went wrong for it goes into `problems`.
fn auto_answer(
    op: AudinOperator,
    log: EventLog,
    talk: Duration,
    problems: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let problem = |p: String| problems.lock().unwrap().push(p);
        let mut since = Instant::now();
        loop {
            let Some((at, sid)) = log
                .wait(since, Duration::from_secs(3600), |e| match e {
                    Event::IncomingCall { call } => Some(call.call_sid.clone()),
                    _ => None,
                })
                .await
            else {
                continue;
            };
            since = at + Duration::from_nanos(1);
            let Some(call) = op.call(&sid) else { continue };
            call.accept();
            match outcome(&call).await {
                Ok(None) => {
                    tokio::time::sleep(talk).await;
                    call.hangup();
                    match ended(&call).await {
                        Ok(EndReason::Hangup) => {}
                        other => problem(format!("{sid}: ended {other:?}")),
                    }
                }
                Ok(Some(EndReason::TakenByOther)) => {}
                other => problem(format!("{sid}: {other:?}")),
            }
        }
    })
}

/// Three nodes behind the balancer restarted one by one (SIGTERM: drain,
/// then start again) under a steady stream of calls answered by three
/// operators connected through the balancer: no call fails. Calls are
/// sent only to nodes not draining, as a carrier routes to healthy nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_a_stream_of_calls_fails_no_call() -> Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let test = "cluster_rolling_restart";
    if !audin_testkit::balancer::available_or_skip(test) {
        return Ok(());
    }
    let Some(mut c) = Cluster::start_with(test, 3, &[("--audio-grace-ms", GRACE_MS)]).await? else {
        return Ok(());
    };
    let addrs: Vec<_> = c.nodes.iter().map(|n| n.addr).collect();
    let lb = TempBalancer::start(&addrs)?;
    let urls: Vec<String> = (1..=3).map(|i| c.url(i)).collect();
    let result = bounded(test, TEST_BOUND, async {
        let mut answerers = Vec::new();
        let problems = Arc::new(Mutex::new(Vec::new()));
        for name in ["ada", "bob", "cy"] {
            let (op, log) = c.operator_at(&lb.url(), name).await?;
            let talk = Duration::from_millis(800);
            answerers.push(auto_answer(op, log, talk, problems.clone()));
        }
        // The carrier: a call every 500 ms to a node that is up.
        let down = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sids = Arc::new(Mutex::new(Vec::new()));
        let carrier = tokio::spawn({
            let (down, stop, sids, urls) = (down.clone(), stop.clone(), sids.clone(), urls.clone());
            async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let node = 1 + n % 3;
                    if node != down.load(Ordering::Relaxed) {
                        if let Ok(sid) =
                            sim_call(&urls[node - 1], CALLER, MILANO_E164, "echo").await
                        {
                            sids.lock().unwrap().push(sid);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        for i in 1..=3 {
            down.store(i, Ordering::Relaxed);
            // Let calls already sent there start ringing before the drain.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t = Instant::now();
            c.nodes[i - 1].terminate().await;
            println!("node {i} drained and stopped in {:?}", t.elapsed());
            c.nodes[i - 1].restart().await?;
            // Back in the balancer's rotation (checks every 500 ms).
            tokio::time::sleep(Duration::from_millis(1500)).await;
            down.store(0, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        stop.store(true, Ordering::Relaxed);
        carrier.await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let sids = sids.lock().unwrap().clone();
        let mut by_reason = std::collections::BTreeMap::<String, u32>::new();
        for sid in &sids {
            let rec = call_record(&c.url(1), &c.key, sid).await?;
            let reason = rec
                .map(|r| r["endReason"].as_str().unwrap_or("open").to_owned())
                .unwrap_or_else(|| "no record".into());
            *by_reason.entry(reason).or_default() += 1;
        }
        println!(
            "{} calls during the rolling restart: {by_reason:?}",
            sids.len()
        );
        for a in answerers {
            a.abort();
        }
        ensure!(
            by_reason.get("hangup").copied().unwrap_or(0) as usize == sids.len(),
            "every call answered and hung up: {by_reason:?}"
        );
        ensure!(sids.len() >= 20, "only {} calls", sids.len());
        let problems = problems.lock().unwrap().clone();
        ensure!(problems.is_empty(), "operators saw: {problems:?}");
        Ok(())
    })
    .await;
    result.inspect_err(|_| {
        c.dump_logs();
        eprintln!("── balancer ──\n{}", lb.log());
    })
}

/// nats-server killed mid-call: a call whose operator and carrier leg are
/// on one node keeps its audio while NATS is down and nobody is declared
/// dead; once nats-server is back (same port and storage), the nodes
/// reconnect by themselves and a call arriving at the other node rings
/// the operator again, with no node restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_local_calls_keep_their_audio_and_routing_recovers() -> Result<()> {
    let test = "cluster_nats_restart";
    let Some(mut c) = Cluster::start(test, 2).await? else {
        return Ok(());
    };
    let result = bounded(test, TEST_BOUND, async {
        let (ada, log) = c.operator(1, "ada").await?;
        let (_, call) = talking(&c, &ada, &log, 1).await?;
        c.nats.kill();
        let mic = play(&call, 1000.0);
        let heard = listen(&call, Duration::from_secs(3)).await;
        ensure!(
            heard.is_tone(1000.0, 5.0),
            "with NATS down ada heard {heard}"
        );
        ensure!(
            heard.active_seconds > 2.5,
            "with NATS down ada heard {heard}"
        );
        assert_eq!(call.info().state, CallState::Active);
        c.nats.start()?;
        let back = Instant::now();
        let heard = listen(&call, Duration::from_secs(1)).await;
        mic.abort();
        ensure!(
            heard.is_tone(1000.0, 5.0),
            "after NATS came back ada heard {heard}"
        );
        call.hangup();
        assert_eq!(ended(&call).await?, EndReason::Hangup);
        // A call at node 2 rings her on node 1 again.
        let mut rang = None;
        for _ in 0..30 {
            let t = Instant::now();
            let sid = sim_call(&c.url(2), CALLER, MILANO_E164, "tone").await?;
            if let Ok(call) = ringing(&ada, &log, t, &sid).await {
                rang = Some(call);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let call = rang.context("no cross-node call rang after NATS came back")?;
        println!(
            "cross-node routing back {:?} after nats-server restarted",
            back.elapsed()
        );
        call.accept();
        tokio::time::timeout(EVENT, call.wait_for(CallState::Active))
            .await
            .context("not active")?;
        let heard = listen(&call, Duration::from_secs(1)).await;
        ensure!(heard.is_tone(440.0, 5.0), "ada heard {heard}");
        call.hangup();
        ended(&call).await?;
        Ok(())
    })
    .await;
    result.inspect_err(|_| {
        c.dump_logs();
        eprintln!("── nats ──\n{}", c.nats.log());
    })
}

/// PostgreSQL stopped mid-call: the call goes on with its audio and ends
/// normally; its record is written once PostgreSQL is back (none lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_calls_go_on_and_their_records_land_when_it_is_back() -> Result<()> {
    let test = "cluster_postgres_restart";
    let Some(mut c) = Cluster::start(test, 2).await? else {
        return Ok(());
    };
    let result = bounded(test, TEST_BOUND, async {
        let (ada, log) = c.operator(1, "ada").await?;
        let (sid, call) = talking(&c, &ada, &log, 2).await?;
        c.pg.stop();
        let mic = play(&call, 1000.0);
        let heard = listen(&call, Duration::from_secs(2)).await;
        mic.abort();
        ensure!(
            heard.is_tone(1000.0, 5.0),
            "with PostgreSQL down ada heard {heard}"
        );
        call.hangup();
        assert_eq!(ended(&call).await?, EndReason::Hangup);
        c.pg.start()?;
        let rec = closed_record_within(Duration::from_secs(20), &c.url(1), &c.key, &sid).await?;
        assert_eq!(rec["endReason"], "hangup", "{rec}");
        assert_eq!(rec["operatorRef"], "ada", "{rec}");
        Ok(())
    })
    .await;
    result.inspect_err(|_| {
        c.dump_logs();
        eprintln!("── postgres ──\n{}", c.pg.log());
    })
}

/// With `--advertise-url` on every node, an accepted call tells the SDK to
/// attach its audio socket straight to the call's node with a single-use
/// ticket: even through the balancer (which would land the socket on any
/// node), every call's audio socket is on its call's node (no relay) and
/// the SDK asks its token backend for no token per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steered_audio_sockets_attach_on_the_calls_node_without_a_token_request() -> Result<()> {
    let test = "cluster_steering";
    if !audin_testkit::balancer::available_or_skip(test) {
        return Ok(());
    }
    let Some(c) = Cluster::start_steered(test, 3).await? else {
        return Ok(());
    };
    let addrs: Vec<_> = c.nodes.iter().map(|n| n.addr).collect();
    let lb = TempBalancer::start(&addrs)?;
    let result = bounded(test, TEST_BOUND, async {
        let url = lb.url();
        let tokens = TokenSource::new(&url, &c.key);
        let ada = operator(&url, &tokens, "ada", &[MILANO], &Timings::default());
        let log = EventLog::record(&ada);
        tokio::time::timeout(EVENT, ada.go_online([MILANO]))
            .await
            .context("goOnline timed out")??;
        for (round, call_node) in [2, 3, 1, 2, 3, 1].into_iter().enumerate() {
            let before = tokens.attempts.lock().unwrap().len();
            let (_, call) = talking(&c, &ada, &log, call_node).await?;
            let audio = audio_node(&c).await?;
            ensure!(
                audio == Some(call_node),
                "round {round}: call on node {call_node}, audio socket on {audio:?}"
            );
            let asked = tokens.attempts.lock().unwrap().len() - before;
            ensure!(
                asked == 0,
                "round {round}: {asked} token requests for a call"
            );
            call.hangup();
            ended(&call).await?;
            settled(&c, call_node).await?;
        }
        Ok(())
    })
    .await;
    result.inspect_err(|_| c.dump_logs())
}

/// Which node (1-based) holds the one open presence socket, if one does.
async fn presence_node(c: &Cluster) -> Option<usize> {
    let mut found = None;
    for (i, node) in c.nodes.iter().enumerate() {
        if let Ok(m) = metrics(&node.url()).await
            && m.get("audin_sockets_open{kind=\"presence\"}").copied() == Some(1.0)
        {
            found = Some(i + 1);
        }
    }
    found
}

/// The node holding an operator's presence socket (through the balancer)
/// is killed: the SDK's first reconnect attempt, one backoff step later,
/// goes through the balancer to a live node and she is online again, and
/// offered the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_whose_node_dies_is_online_again_within_the_first_backoff_step() -> Result<()> {
    let test = "cluster_presence_failover";
    if !audin_testkit::balancer::available_or_skip(test) {
        return Ok(());
    }
    let Some(mut c) = Cluster::start(test, 3).await? else {
        return Ok(());
    };
    let addrs: Vec<_> = c.nodes.iter().map(|n| n.addr).collect();
    let lb = TempBalancer::start(&addrs)?;
    let result = bounded(test, TEST_BOUND, async {
        let (ada, log) = c.operator_at(&lb.url(), "ada").await?;
        let node = presence_node(&c).await.context("no presence socket found")?;
        let killed = Instant::now();
        c.nodes[node - 1].kill().await;
        let first_step = Timings::default().backoff[0];
        let online = eventually(Duration::from_secs(5), async || {
            killed.elapsed() > Duration::from_millis(50) && ada.state() == PresenceState::Online
        })
        .await;
        let took = killed.elapsed();
        ensure!(online, "ada not online again: {:?}", ada.state());
        println!(
            "presence node {node} killed: ada online again after {took:?} (first backoff step {first_step:?})"
        );
        ensure!(
            took < first_step + Duration::from_millis(800),
            "online again only after {took:?}"
        );
        // Offered the next call, at any live node.
        let live = if node == 1 { 2 } else { 1 };
        let t = Instant::now();
        let sid = sim_call(&c.url(live), CALLER, MILANO_E164, "tone").await?;
        let call = ringing(&ada, &log, t, &sid).await?;
        call.reject();
        Ok(())
    })
    .await;
    result.inspect_err(|_| {
        c.dump_logs();
        eprintln!("── balancer ──\n{}", lb.log());
    })
}

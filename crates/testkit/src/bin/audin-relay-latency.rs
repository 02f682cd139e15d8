//! The added latency of a relayed audio frame in cluster mode, and what the
//! relay costs in CPU.
//!
//! ```text
//! cargo run -p audin-testkit --release --bin audin-relay-latency -- --calls 1,50 --secs 20
//! cargo run -p audin-testkit --release --bin audin-relay-latency -- \
//!     --nodes 3 --modes single,spread,spread-steered --calls 50,150 --json cluster.json
//! ```
//!
//! Per run: a throw-away PostgreSQL and nats-server and two release
//! `audin-server` nodes (`--cluster`, `--node-id`, one `--database`), as
//! `tests/cluster_e2e.rs` starts them; `C` native-SDK operators (`op-0` …,
//! online on the dev number Milano) and `C` inbound sim calls with the
//! `echo` behaviour (it returns each operator frame the moment it arrives),
//! all arriving at node 2, each accepted by its own operator:
//!
//! - `direct`: the operators' core URL is node 2: the audio socket is on
//!   the call's node;
//! - `relayed`: the operators' core URL is node 1: the audio socket is on
//!   node 1, the call on node 2, and every frame crosses NATS both ways
//!   (`audin.relay.{id}.up` / `.down`);
//! - `single` (not run by default): one node without `--cluster`, on its
//!   own SQLite file, for the single-node figure;
//! - `spread` (not run by default; `--nodes 3` for three nodes): call `i`
//!   arrives at node `(i % N) + 1` and its operator `op-i` is on node
//!   `((i + i / N) % N) + 1` (round robin, shifted by one every `N`
//!   operators), so in every `N²` calls each (operator node, call node)
//!   pair occurs once: 1 call in `N` has its audio socket on its node, the
//!   others are relayed. No `--advertise-url`: the relay is the fallback;
//! - `spread-steered`: the same with `--advertise-url` on every node, so
//!   the SDK attaches each audio socket straight to its call's node.
//!
//! `--nodes` (default 2) sets how many cluster nodes run; `direct` and
//! `relayed` use nodes 1 and 2 only. Where the audio sockets landed is
//! checked on each node's `/metrics` (the expected count on each node).
//! Round trips are also split by whether the call's audio socket was on its
//! call's node (`local`) or not (`relayed`).
//! Then, for `--secs`, every call sends one frame every 20 ms (calls
//! spread evenly over the 20 ms) carrying its sequence number and call
//! index in its first 12 bytes and pseudo-random μ-law bytes after them;
//! each echo must come back byte for byte (`altered` counts those that do
//! not) and its round trip, from just before `send_frame` to the frame
//! coming out of `recv_frame`, is recorded. Frames not back a second after
//! the window are lost. CPU (utime + stime from `/proc/PID/stat`) of each
//! node, of nats-server and of this process (the generator) is read at the
//! window's start and end, and given per call-second, as is the whole
//! machine's busy time (`/proc/stat`). VmRSS of each node and of
//! nats-server is read before the operators connect, once they are all
//! online, and at the window's start and end: per call, the nodes' growth
//! from online to window start (the calls), and from before the operators
//! (a call with its operator: one operator per call here).
//!
//! Prints Markdown tables on stdout (progress on stderr). `--json PATH`
//! also writes every run's figures as JSON (rewritten after each run), which
//! `audin-loadgen report-cluster` turns into a table and plots (see
//! `docs/performance-cluster.md`; `cargo xtask bench` runs both). Only
//! 127.0.0.1 is used.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use audin_loadgen::cluster::{
    ClusterCpu, ClusterFrames, ClusterRss, ClusterRun, ClusterStep, RssPerCall, RssPoints as Rss,
    Rtt,
};
use audin_loadgen::procfs::{self, ProcSample};
use audin_loadgen::report::Machine;
use audin_operator::core::{CallState, Event};
use audin_operator::{AudinOperator, Call};
use audin_protocol::FRAME_BYTES;
use audin_testkit::cluster::TempCluster;
use audin_testkit::nats::TempNats;
use audin_testkit::postgres::TempPostgres;
use audin_testkit::support::{
    CALLER, EventLog, MILANO, MILANO_E164, metrics, operator_online, sim_call,
};
use audin_testkit::{ServerOptions, ServerProcess};
use clap::{Parser, ValueEnum};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long an expected event may take.
const EVENT: Duration = Duration::from_secs(10);
/// One frame every this often.
const FRAME: Duration = Duration::from_millis(20);
/// How long after the window a frame may still come back.
const DRAIN: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(about = "Added latency and CPU of relayed audio frames in cluster mode")]
struct Args {
    /// Concurrent calls (comma separated): every mode is run once per value.
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    calls: Vec<usize>,
    /// Seconds of audio measured per run, once every call is answered.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Modes, run in this order for each call count.
    #[arg(long, value_delimiter = ',', default_value = "direct,relayed")]
    modes: Vec<Mode>,
    /// Cluster nodes (`direct` and `relayed` use nodes 1 and 2 only).
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Use the debug server build instead of release.
    #[arg(long)]
    debug_server: bool,
    /// Also write the figures as JSON here (rewritten after every run),
    /// for `audin-loadgen report-cluster`.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One node, no cluster.
    Single,
    /// Two nodes; audio socket on the call's node.
    Direct,
    /// Two nodes; audio socket on the other node, frames over NATS.
    Relayed,
    /// `--nodes` nodes; operators and calls round robin over them, 1 call
    /// in N on its operator's node, the others relayed.
    Spread,
    /// As `spread`, every node with `--advertise-url`: each audio socket is
    /// steered to its call's node.
    SpreadSteered,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Direct => "direct",
            Mode::Relayed => "relayed",
            Mode::Spread => "spread",
            Mode::SpreadSteered => "spread-steered",
        }
    }

    fn spread(self) -> bool {
        matches!(self, Mode::Spread | Mode::SpreadSteered)
    }

    /// The node (1-based) operator `i`'s sockets go to, of `n`.
    fn operator_node(self, i: usize, n: usize) -> usize {
        match self {
            Mode::Single | Mode::Relayed => 1,
            Mode::Direct => 2,
            Mode::Spread | Mode::SpreadSteered => (i + i / n) % n + 1,
        }
    }

    /// The node call `i` arrives at, of `n`.
    fn call_node(self, i: usize, n: usize) -> usize {
        match self {
            Mode::Single => 1,
            Mode::Direct | Mode::Relayed => 2,
            Mode::Spread | Mode::SpreadSteered => i % n + 1,
        }
    }

    /// The node call `i`'s audio socket is expected on, of `n`.
    fn socket_node(self, i: usize, n: usize) -> usize {
        if self == Mode::SpreadSteered {
            self.call_node(i, n)
        } else {
            self.operator_node(i, n)
        }
    }
}

/// The servers of one run.
#[derive(Debug)]
struct Bench {
    nodes: Vec<ServerProcess>,
    key: String,
    nats: Option<TempNats>,
    _pg: Option<TempPostgres>,
}

impl Bench {
    async fn start(mode: Mode, release: bool, n: usize) -> Result<Bench> {
        // As `tests/cluster_e2e.rs`, with the sim's recorder off as in the
        // load benchmark (a dev feature, not on the frame path).
        let base = ServerOptions {
            release,
            ..ServerOptions::default()
        }
        .arg("--sim-record-secs", 0);
        if mode == Mode::Single {
            let node = ServerProcess::spawn(base).await.context("node starts")?;
            let key = node.key();
            return Ok(Bench {
                nodes: vec![node],
                key,
                nats: None,
                _pg: None,
            });
        }
        if !audin_testkit::nats::available_or_skip("audin-relay-latency")
            || !audin_testkit::postgres::available_or_skip("audin-relay-latency")
        {
            bail!("nats-server and PostgreSQL are needed");
        }
        // Steered: each node advertises its own URL, as in
        // `tests/cluster_e2e.rs`.
        let cluster = TempCluster::start(n, base, mode == Mode::SpreadSteered).await?;
        Ok(Bench {
            nodes: cluster.nodes,
            key: cluster.key,
            nats: Some(cluster.nats),
            _pg: Some(cluster.pg),
        })
    }

    fn url(&self, node: usize) -> String {
        self.nodes[node - 1].url()
    }

    fn dump_logs(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            eprintln!("── node {} ──\n{}", i + 1, node.logs());
        }
    }

    /// The processes whose CPU is read: each node, then nats-server.
    fn processes(&self) -> Vec<(String, u32)> {
        let mut p: Vec<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("node {}", i + 1), n.pid))
            .collect();
        if let Some(pid) = self.nats.as_ref().and_then(TempNats::pid) {
            p.push(("nats-server".to_owned(), pid));
        }
        p
    }
}

/// The frame `seq` of call `idx`: sequence number and call index first,
/// then pseudo-random bytes (any μ-law value), never all silence.
fn frame(idx: u32, seq: u64) -> [u8; FRAME_BYTES] {
    let mut f = [0u8; FRAME_BYTES];
    f[..8].copy_from_slice(&seq.to_be_bytes());
    f[8..12].copy_from_slice(&idx.to_be_bytes());
    let mut x = ((u64::from(idx) << 40) ^ seq).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut f[12..] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    f
}

/// What came back on one call.
#[derive(Debug, Default)]
struct Got {
    /// Round trips of frames back for the first time, ms.
    rtt_ms: Vec<f64>,
    seen: Vec<bool>,
    duplicates: u64,
    altered: u64,
    /// The echo's keepalive silence (before the window starts).
    keepalive: u64,
}

/// One call's probe: when each frame was sent, what came back.
#[derive(Debug)]
struct Probe {
    idx: u32,
    /// Its audio socket is on its call's node.
    local: bool,
    sent: Mutex<Vec<Instant>>,
    got: Mutex<Got>,
}

impl Probe {
    fn heard(&self, f: &[u8; FRAME_BYTES], at: Instant) {
        let mut got = self.got.lock().expect("got lock");
        if f.iter().all(|&b| b == 0xFF) {
            got.keepalive += 1;
            return;
        }
        let seq = u64::from_be_bytes(f[..8].try_into().expect("8 bytes"));
        let idx = u32::from_be_bytes(f[8..12].try_into().expect("4 bytes"));
        let sent_at = {
            let sent = self.sent.lock().expect("sent lock");
            usize::try_from(seq).ok().and_then(|s| sent.get(s).copied())
        };
        match sent_at {
            Some(t) if idx == self.idx && *f == frame(idx, seq) => {
                let s = seq as usize;
                if got.seen.len() <= s {
                    got.seen.resize(s + 1, false);
                }
                if got.seen[s] {
                    got.duplicates += 1;
                } else {
                    got.seen[s] = true;
                    got.rtt_ms.push(at.duration_since(t).as_secs_f64() * 1e3);
                }
            }
            _ => got.altered += 1,
        }
    }
}

/// Takes every frame the call's echo returns, until aborted.
fn receive(call: &Call, probe: Arc<Probe>) -> JoinHandle<()> {
    let audio = call.audio();
    tokio::spawn(async move {
        while let Some(f) = audio.recv_frame().await {
            probe.heard(&f, Instant::now());
        }
    })
}

/// Sends `frames` frames, one every 20 ms from `start`.
fn send(call: &Call, probe: Arc<Probe>, start: Instant, frames: u64) -> JoinHandle<()> {
    let audio = call.audio();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(start, FRAME);
        for seq in 0..frames {
            tick.tick().await;
            let f = frame(probe.idx, seq);
            probe.sent.lock().expect("sent lock").push(Instant::now());
            audio.send_frame(f);
        }
    })
}

/// utime + stime (seconds) and VmRSS (KiB) of each of `processes`, from
/// `/proc/PID/stat` and `/proc/PID/status`. A server that has exited (a
/// zombie has no VmRSS) is an error, not a zero.
fn sample_all(processes: &[(String, u32)]) -> Result<Vec<ProcSample>> {
    processes
        .iter()
        .map(|(name, pid)| {
            let s = procfs::sample(Some(*pid))
                .with_context(|| format!("reading /proc/{pid} ({name})"))?;
            ensure!(
                s.rss_kb > 0,
                "no VmRSS in /proc/{pid}/status ({name}): has it exited?"
            );
            Ok(s)
        })
        .collect()
}

/// The 1-minute load average.
fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// One run's figures.
#[derive(Debug)]
struct Outcome {
    mode: Mode,
    calls: usize,
    /// Nodes running.
    nodes: usize,
    /// Operators, calls (at their node) and audio sockets open, per node.
    ops_per_node: Vec<usize>,
    calls_per_node: Vec<usize>,
    sockets_per_node: Vec<f64>,
    /// Sorted round trips of calls with the audio socket on the call's
    /// node, and of the others, ms.
    rtt_local: Vec<f64>,
    rtt_relayed: Vec<f64>,
    /// The machine's busy time in the window (at least the processes'
    /// sum), seconds, and its share of all cores.
    box_busy: f64,
    box_share: f64,
    /// The measured window, seconds.
    window: f64,
    sent: u64,
    returned: u64,
    altered: u64,
    duplicates: u64,
    keepalive: u64,
    /// Frames the SDK's queues dropped.
    sdk_dropped: u64,
    /// Sorted round trips, ms.
    rtt_ms: Vec<f64>,
    /// CPU seconds in the window: each node, nats-server (if any), the
    /// generator.
    cpu: Vec<(String, f64)>,
    /// The rest of the machine (busy time less the processes above),
    /// seconds.
    others: f64,
    load_before: String,
    load_after: String,
    /// VmRSS of each node, then nats-server (if any), in the order and
    /// with the names of `cpu` (without the generator).
    rss: Vec<(String, Rss)>,
}

impl Outcome {
    fn lost(&self) -> u64 {
        self.sent - self.returned
    }

    fn pct(&self, p: f64) -> f64 {
        percentile(&self.rtt_ms, p)
    }

    fn cpu_of(&self, name: &str) -> Option<f64> {
        self.cpu.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }

    /// ms of CPU per call-second.
    fn per_call_second(&self, cpu_s: f64) -> f64 {
        cpu_s * 1e3 / (self.calls as f64 * self.window)
    }

    /// CPU seconds of the nodes and nats-server (not the generator).
    fn cluster_cpu(&self) -> f64 {
        self.cpu
            .iter()
            .filter(|(n, _)| n != "generator")
            .map(|(_, s)| s)
            .sum()
    }

    fn rss_of(&self, name: &str) -> Option<Rss> {
        self.rss.iter().find(|(n, _)| n == name).map(|(_, r)| *r)
    }

    /// The nodes' RSS.
    fn node_rss(&self) -> impl Iterator<Item = Rss> + '_ {
        self.rss
            .iter()
            .filter(|(n, _)| n.starts_with("node "))
            .map(|(_, r)| *r)
    }

    /// KiB per call of the nodes together: what the calls added (window
    /// start − online), and with their operators (window start − idle;
    /// every call has its own operator here).
    fn rss_per_call(&self) -> (f64, f64) {
        let (mut calls, mut with_ops) = (0.0, 0.0);
        for r in self.node_rss() {
            calls += r.window_start as f64 - r.online as f64;
            with_ops += r.window_start as f64 - r.idle as f64;
        }
        (calls / self.calls as f64, with_ops / self.calls as f64)
    }

    /// nats-server's growth (window start − idle) per call, KiB.
    fn nats_rss_per_call(&self) -> Option<f64> {
        self.rss_of("nats-server")
            .map(|r| (r.window_start as f64 - r.idle as f64) / self.calls as f64)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A call arriving at `base`, taken by `op`: answered once this returns.
async fn answered(base: &str, op: &AudinOperator, log: &EventLog) -> Result<Call> {
    let t0 = Instant::now();
    let sid = sim_call(base, CALLER, MILANO_E164, "echo").await?;
    log.wait(t0, EVENT, |e| match e {
        Event::IncomingCall { call } if call.call_sid == sid => Some(()),
        _ => None,
    })
    .await
    .with_context(|| format!("no incomingCall for {sid}"))?;
    let call = op
        .call(&sid)
        .with_context(|| format!("{sid} is not the current call"))?;
    call.accept();
    let info = tokio::time::timeout(EVENT, call.wait_for(CallState::Active))
        .await
        .with_context(|| format!("{sid} did not become active"))?;
    ensure!(info.state == CallState::Active, "{sid} ended: {info:?}");
    Ok(call)
}

/// Open audio sockets on each node.
async fn audio_sockets(b: &Bench) -> Result<Vec<f64>> {
    let mut open = Vec::new();
    for node in &b.nodes {
        let m = metrics(&node.url()).await?;
        open.push(
            m.get("audin_sockets_open{kind=\"audio\"}")
                .copied()
                .unwrap_or(0.0),
        );
    }
    Ok(open)
}

/// How many of `0..calls` `node_of` puts on each of `n` nodes.
fn per_node(calls: usize, n: usize, node_of: impl Fn(usize) -> usize) -> Vec<usize> {
    let mut v = vec![0; n];
    for i in 0..calls {
        v[node_of(i) - 1] += 1;
    }
    v
}

async fn run(b: &Bench, mode: Mode, calls: usize, secs: u64) -> Result<Outcome> {
    let n = b.nodes.len();
    let ops_per_node = per_node(calls, n, |i| mode.operator_node(i, n));
    let calls_per_node = per_node(calls, n, |i| mode.call_node(i, n));
    let want_sockets = per_node(calls, n, |i| mode.socket_node(i, n));
    eprintln!(
        "[{} × {calls}] {n} node(s); operators per node {ops_per_node:?}, calls per node {calls_per_node:?}",
        mode.name(),
    );
    let processes = b.processes();
    let at_idle = sample_all(&processes)?;
    let mut ops = Vec::new();
    for i in 0..calls {
        let url = b.url(mode.operator_node(i, n));
        ops.push(operator_online(&url, &b.key, &format!("op-{i}"), &[MILANO], EVENT).await?);
    }
    let at_online = sample_all(&processes)?;
    // One call at a time, each taken by its own operator (the others are
    // offered it too and see it taken).
    let mut live = Vec::new();
    let mut receivers = Vec::new();
    for (i, (op, log)) in ops.iter().enumerate() {
        let call = answered(&b.url(mode.call_node(i, n)), op, log).await?;
        let probe = Arc::new(Probe {
            idx: u32::try_from(i)?,
            local: mode.socket_node(i, n) == mode.call_node(i, n),
            sent: Mutex::new(Vec::new()),
            got: Mutex::new(Got::default()),
        });
        receivers.push(receive(&call, probe.clone()));
        live.push((call, probe));
    }
    let open = audio_sockets(b).await?;
    let want: Vec<f64> = want_sockets.iter().map(|&c| c as f64).collect();
    ensure!(
        open == want,
        "audio sockets open per node {open:?}: expected {want:?}"
    );
    eprintln!(
        "[{} × {calls}] answered; audio sockets per node {open:?}",
        mode.name()
    );

    // The window.
    let frames = secs * 1000 / FRAME.as_millis() as u64;
    let t0 = Instant::now() + Duration::from_millis(200);
    tokio::time::sleep_until(t0).await;
    let load_before = load1();
    // Each node's and nats-server's CPU time and VmRSS; this process's
    // (the generator's) CPU time; the machine's busy and total time.
    let at_start = sample_all(&processes)?;
    let me0 = procfs::sample(None).context("reading /proc/self")?.cpu_s;
    let m0 = procfs::machine_cpu();
    let senders: Vec<_> = live
        .iter()
        .enumerate()
        .map(|(i, (call, probe))| {
            // Calls spread over the 20 ms, as independent phones are.
            let start = t0 + FRAME * u32::try_from(i).unwrap_or(0) / calls as u32;
            send(call, probe.clone(), start, frames)
        })
        .collect();
    let t1 = t0 + FRAME * u32::try_from(frames)?;
    tokio::time::sleep_until(t1).await;
    let at_end = sample_all(&processes)?;
    let me1 = procfs::sample(None).context("reading /proc/self")?.cpu_s;
    let m1 = procfs::machine_cpu();
    let load_after = load1();
    let window = t1.duration_since(t0).as_secs_f64();
    for s in senders {
        s.await?;
    }
    tokio::time::sleep(DRAIN).await;
    for r in &receivers {
        r.abort();
    }

    // CPU seconds (procfs gives ticks ÷ CLK_TCK).
    let mut cpu: Vec<(String, f64)> = processes
        .iter()
        .zip(at_start.iter().zip(&at_end))
        .map(|((name, _), (a, b))| (name.clone(), b.cpu_s - a.cpu_s))
        .collect();
    cpu.push(("generator".to_owned(), me1 - me0));
    let ours: f64 = cpu.iter().map(|(_, s)| s).sum();
    let busy = m1.0 - m0.0;
    let others = (busy - ours).max(0.0);
    // `/proc/stat` is tick-sampled and on this VM can read below the sum
    // of the processes' own times: the whole machine is at least that sum.
    let box_busy = ours + others;
    // Of at least one tick of total time (USER_HZ: 100 a second).
    let box_share = box_busy / (m1.1 - m0.1).max(0.01);

    let mut out = Outcome {
        mode,
        calls,
        nodes: n,
        ops_per_node,
        calls_per_node,
        sockets_per_node: open,
        rtt_local: Vec::new(),
        rtt_relayed: Vec::new(),
        box_busy,
        box_share,
        window,
        sent: 0,
        returned: 0,
        altered: 0,
        duplicates: 0,
        keepalive: 0,
        sdk_dropped: 0,
        rtt_ms: Vec::new(),
        cpu,
        others,
        load_before,
        load_after,
        rss: processes
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let rss = Rss {
                    idle: at_idle[i].rss_kb,
                    online: at_online[i].rss_kb,
                    window_start: at_start[i].rss_kb,
                    window_end: at_end[i].rss_kb,
                };
                (name.clone(), rss)
            })
            .collect(),
    };
    for (call, probe) in &live {
        out.sent += probe.sent.lock().expect("sent lock").len() as u64;
        let got = probe.got.lock().expect("got lock");
        out.returned += got.rtt_ms.len() as u64;
        out.altered += got.altered;
        out.duplicates += got.duplicates;
        out.keepalive += got.keepalive;
        out.rtt_ms.extend_from_slice(&got.rtt_ms);
        if probe.local {
            out.rtt_local.extend_from_slice(&got.rtt_ms);
        } else {
            out.rtt_relayed.extend_from_slice(&got.rtt_ms);
        }
        out.sdk_dropped += call.audio().dropped_frames();
    }
    out.rtt_ms.sort_by(f64::total_cmp);
    out.rtt_local.sort_by(f64::total_cmp);
    out.rtt_relayed.sort_by(f64::total_cmp);

    for (call, _) in &live {
        call.hangup();
    }
    for (call, _) in &live {
        let _ = tokio::time::timeout(EVENT, call.ended()).await;
    }
    for (op, _) in &ops {
        let _ = tokio::time::timeout(EVENT, op.go_offline()).await;
    }
    eprintln!(
        "[{} × {calls}] sent {} returned {} altered {} p50 {:.2} ms p99 {:.2} ms",
        mode.name(),
        out.sent,
        out.returned,
        out.altered,
        out.pct(50.0),
        out.pct(99.0)
    );
    Ok(out)
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else {
        format!("{v:.2}")
    }
}

/// Per-node values joined with ` / `.
fn slash<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Where a run's audio sockets and calls were.
fn placement(r: &Outcome) -> String {
    if r.mode.spread() {
        format!(
            "{} nodes, {}",
            r.nodes,
            if r.mode == Mode::SpreadSteered {
                "steered"
            } else {
                "1 in N local"
            }
        )
    } else {
        format!(
            "node {} / node {}",
            r.mode.operator_node(0, r.nodes),
            r.mode.call_node(0, r.nodes)
        )
    }
}

fn print_tables(results: &[Outcome], secs: u64) {
    println!("### Round trip of one frame (operator → server(s) → sim echo → operator)\n");
    println!(
        "| calls | mode | audio socket / call | frames sent | returned | lost | altered | RTT p50 ms | p90 ms | p99 ms | max ms |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.calls,
            r.mode.name(),
            placement(r),
            r.sent,
            r.returned,
            r.lost(),
            r.altered,
            ms(r.pct(50.0)),
            ms(r.pct(90.0)),
            ms(r.pct(99.0)),
            ms(r.rtt_ms.last().copied().unwrap_or(f64::NAN)),
        );
    }
    let extra: Vec<_> = results
        .iter()
        .filter(|r| r.duplicates + r.sdk_dropped > 0)
        .map(|r| {
            format!(
                "{} × {}: {} duplicates, {} dropped by the SDK's queues",
                r.mode.name(),
                r.calls,
                r.duplicates,
                r.sdk_dropped
            )
        })
        .collect();
    if !extra.is_empty() {
        println!("\n{}", extra.join("; "));
    }

    let spread: Vec<_> = results.iter().filter(|r| r.mode.spread()).collect();
    if !spread.is_empty() {
        println!(
            "\n### Where the calls were (per node, node 1 / node 2 / …) and round trips by audio socket placement\n"
        );
        println!(
            "`local`: calls whose audio socket is on the call's node; `relayed`: the others (frames over NATS both ways). Percentiles of the same run.\n"
        );
        println!(
            "| calls | mode | operators (presence) | calls carried (call's node) | audio sockets open | local calls: RTT p50 / p99 ms | relayed calls: RTT p50 / p99 ms | added by the relay p50 / p99 ms (≈ one way: ½) |"
        );
        println!("|---:|---|---|---|---|---|---|---|");
        for r in spread {
            let pp =
                |v: &[f64]| format!("{} / {}", ms(percentile(v, 50.0)), ms(percentile(v, 99.0)));
            let added = if r.rtt_local.is_empty() || r.rtt_relayed.is_empty() {
                "—".to_owned()
            } else {
                let d50 = percentile(&r.rtt_relayed, 50.0) - percentile(&r.rtt_local, 50.0);
                let d99 = percentile(&r.rtt_relayed, 99.0) - percentile(&r.rtt_local, 99.0);
                format!(
                    "{} / {} ({} / {})",
                    ms(d50),
                    ms(d99),
                    ms(d50 / 2.0),
                    ms(d99 / 2.0)
                )
            };
            let open: Vec<String> = r
                .sockets_per_node
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.calls,
                r.mode.name(),
                slash(&r.ops_per_node),
                slash(&r.calls_per_node),
                slash(&open),
                pp(&r.rtt_local),
                pp(&r.rtt_relayed),
                added,
            );
        }
    }

    println!(
        "\n### CPU during the {secs} s window: ms of CPU per call-second (CPU seconds in brackets)\n"
    );
    let nodes = results.iter().map(|r| r.nodes).max().unwrap_or(2).max(2);
    let node_cols: String = (1..=nodes)
        .map(|i| format!("node {i}"))
        .collect::<Vec<_>>()
        .join(" | ");
    println!(
        "| calls | mode | {node_cols} | nats-server | servers + NATS | generator (SDK operators) | rest of the machine, % of a core | whole machine (% of all cores) | load avg 1 min (start → end) |"
    );
    println!(
        "|---:|---|{}---:|---:|---:|---:|---|",
        "---:|".repeat(nodes + 1)
    );
    for r in results {
        let cell = |name: &str| match r.cpu_of(name) {
            Some(s) => format!("{:.3} ({s:.2} s)", r.per_call_second(s)),
            None => "—".into(),
        };
        let cluster = r.cluster_cpu();
        let node_cells: String = (1..=nodes)
            .map(|i| cell(&format!("node {i}")))
            .collect::<Vec<_>>()
            .join(" | ");
        println!(
            "| {} | {} | {node_cells} | {} | {:.3} ({cluster:.2} s) | {} | {:.0} % | {:.3} ({:.0} %) | {} → {} |",
            r.calls,
            r.mode.name(),
            cell("nats-server"),
            r.per_call_second(cluster),
            cell("generator"),
            r.others / r.window * 100.0,
            r.per_call_second(r.box_busy),
            r.box_share * 100.0,
            r.load_before,
            r.load_after,
        );
    }

    println!("\n### Memory: VmRSS of the servers\n");
    println!(
        "Per call: the nodes' RSS when the window opened less theirs with every operator online (the calls), or less theirs before any operator connected (calls with their operators: one operator per call here), divided by the calls; nats-server's growth since before the operators, per call.\n"
    );
    let node_cols: String = (1..=nodes)
        .map(|i| format!("node {i} MiB"))
        .collect::<Vec<_>>()
        .join(" | ");
    println!(
        "| calls | mode | {node_cols} | nats-server MiB | nodes KiB per call | with its operator | nats-server KiB per call |"
    );
    println!("|---:|---|{}---:|---:|---:|", "---:|".repeat(nodes + 1));
    for r in results {
        let mib = |name: &str| {
            r.rss_of(name).map_or("—".into(), |v| {
                format!("{:.1}", v.window_start as f64 / 1024.0)
            })
        };
        let node_cells: String = (1..=nodes)
            .map(|i| mib(&format!("node {i}")))
            .collect::<Vec<_>>()
            .join(" | ");
        let (calls_kb, with_ops_kb) = r.rss_per_call();
        println!(
            "| {} | {} | {node_cells} | {} | {calls_kb:.1} | {with_ops_kb:.1} | {} |",
            r.calls,
            r.mode.name(),
            mib("nats-server"),
            r.nats_rss_per_call()
                .map_or("—".into(), |v| format!("{v:.1}")),
        );
    }

    let pairs: Vec<_> = results
        .iter()
        .filter(|r| r.mode == Mode::Relayed)
        .filter_map(|rel| {
            results
                .iter()
                .find(|d| d.mode == Mode::Direct && d.calls == rel.calls)
                .map(|d| (d, rel))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    println!("\n### Added by the relay (relayed − direct, same call count)\n");
    println!(
        "Differences of the percentiles of the two runs (frames are not paired). A relayed frame crosses NATS twice per round trip (up and down), so the added latency of one relayed frame each way is about half the added round trip.\n"
    );
    println!(
        "| calls | added RTT p50 ms | added RTT p99 ms | ≈ added one way p50 ms (½) | ≈ added one way p99 ms (½) | added CPU, servers + NATS, ms per call-second | of which nats-server |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (d, rel) in pairs {
        let p50 = rel.pct(50.0) - d.pct(50.0);
        let p99 = rel.pct(99.0) - d.pct(99.0);
        let cluster = |r: &Outcome| r.per_call_second(r.cluster_cpu());
        let nats = |r: &Outcome| r.per_call_second(r.cpu_of("nats-server").unwrap_or(0.0));
        println!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.3} |",
            rel.calls,
            ms(p50),
            ms(p99),
            ms(p50 / 2.0),
            ms(p99 / 2.0),
            cluster(rel) - cluster(d),
            nats(rel) - nats(d),
        );
    }
}

// ── JSON (`--json`) ──────────────────────────────────────────────────────

// What `--json` writes is `audin-loadgen report-cluster`'s own schema
// (`crates/loadgen/src/cluster.rs`): a `ClusterRun` of one `ClusterStep` per
// run (mode × calls), in the order they ran; `null` where a value cannot be
// measured (no frame back: `rttMs`; no NATS in `single`: `natsServer`).

/// Round-trip percentiles of `sorted` (ms); `None` when it is empty.
fn rtt_of(sorted: &[f64]) -> Option<Rtt> {
    Some(Rtt {
        count: sorted.len(),
        p50: percentile(sorted, 50.0),
        p90: percentile(sorted, 90.0),
        p99: percentile(sorted, 99.0),
        max: *sorted.last()?,
    })
}

/// One run's step of the JSON.
fn cluster_step(r: &Outcome) -> ClusterStep {
    let per = |s: f64| r.per_call_second(s);
    let node_cpu: Vec<f64> = (1..=r.nodes)
        .map(|i| r.cpu_of(&format!("node {i}")).unwrap_or(0.0))
        .collect();
    let nats = r.cpu_of("nats-server");
    let generator = r.cpu_of("generator").unwrap_or(0.0);
    let cpu_s = ClusterCpu {
        nodes: node_cpu.clone(),
        nats_server: nats,
        servers_and_nats: r.cluster_cpu(),
        generator,
        rest_of_machine: r.others,
        whole_machine: r.box_busy,
    };
    let cpu_ms = ClusterCpu {
        nodes: node_cpu.iter().map(|&s| per(s)).collect(),
        nats_server: nats.map(per),
        servers_and_nats: per(cpu_s.servers_and_nats),
        generator: per(generator),
        rest_of_machine: per(r.others),
        whole_machine: per(r.box_busy),
    };
    let (nodes_kb, with_ops_kb) = r.rss_per_call();
    let n = r.nodes;
    ClusterStep {
        mode: r.mode.name().to_owned(),
        nodes: n,
        calls: r.calls,
        window_s: r.window,
        operators_per_node: r.ops_per_node.clone(),
        calls_per_node: r.calls_per_node.clone(),
        audio_sockets_per_node: r.sockets_per_node.clone(),
        relayed_calls: (0..r.calls)
            .filter(|&i| r.mode.socket_node(i, n) != r.mode.call_node(i, n))
            .count(),
        frames: ClusterFrames {
            sent: r.sent,
            returned: r.returned,
            lost: r.lost(),
            altered: r.altered,
            duplicates: r.duplicates,
            sdk_dropped: r.sdk_dropped,
        },
        rtt_ms: rtt_of(&r.rtt_ms),
        rtt_local_ms: rtt_of(&r.rtt_local),
        rtt_relayed_ms: rtt_of(&r.rtt_relayed),
        cpu_s,
        cpu_ms_per_call_second: cpu_ms,
        whole_machine_share: r.box_share,
        rss_kb: ClusterRss {
            nodes: r.node_rss().collect(),
            nats_server: r.rss_of("nats-server"),
        },
        rss_per_call_kb: RssPerCall {
            nodes: nodes_kb,
            nodes_with_operator: with_ops_kb,
            nats_server: r.nats_rss_per_call(),
        },
        load_avg_1m: vec![r.load_before.clone(), r.load_after.clone()],
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.secs > 0, "--secs must be above 0");
    ensure!(args.calls.iter().all(|&c| c > 0), "--calls must be above 0");
    ensure!(args.nodes >= 2, "--nodes must be at least 2");
    let release = !args.debug_server;
    let mut json = ClusterRun {
        tool: "audin-relay-latency".to_owned(),
        server_build: if release { "release" } else { "debug" }.to_owned(),
        secs: args.secs,
        machine: Machine::detect(),
        steps: Vec::new(),
    };
    let mut results = Vec::new();
    for &calls in &args.calls {
        for &mode in &args.modes {
            let b = Bench::start(mode, release, args.nodes).await?;
            let bound = Duration::from_secs(args.secs + 120 + calls as u64);
            let outcome = tokio::time::timeout(bound, run(&b, mode, calls, args.secs))
                .await
                .context("the run did not finish in time")
                .and_then(|r| r);
            let outcome = outcome.inspect_err(|_| b.dump_logs())?;
            if let Some(path) = &args.json {
                json.steps.push(cluster_step(&outcome));
                std::fs::write(path, serde_json::to_vec_pretty(&json)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            results.push(outcome);
            drop(b);
            // Let the dropped processes go before the next run.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let server = if release { "release" } else { "debug" };
    println!(
        "Relayed-frame latency: {server} audin-server, {} cluster nodes (`single`: 1), {} s per run, one frame per call every 20 ms, sim `echo` far end.\n",
        args.nodes, args.secs
    );
    print_tables(&results, args.secs);
    let bad: u64 = results.iter().map(|r| r.altered).sum();
    ensure!(bad == 0, "{bad} echoed frames differ from what was sent");
    let keep: u64 = results.iter().map(|r| r.keepalive).sum();
    eprintln!("(echo keepalive frames before the windows: {keep})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Mode, Outcome, Rss, cluster_step};

    fn outcome() -> Outcome {
        let rss = |base: u64| Rss {
            idle: base,
            online: base + 100,
            window_start: base + 400,
            window_end: base + 410,
        };
        Outcome {
            mode: Mode::Spread,
            calls: 9,
            nodes: 3,
            ops_per_node: vec![3, 3, 3],
            calls_per_node: vec![3, 3, 3],
            sockets_per_node: vec![3.0, 3.0, 3.0],
            rtt_local: vec![0.1, 0.2],
            rtt_relayed: vec![0.3, 0.4],
            box_busy: 1.0,
            box_share: 0.25,
            window: 2.0,
            sent: 900,
            returned: 899,
            altered: 0,
            duplicates: 0,
            keepalive: 0,
            sdk_dropped: 0,
            rtt_ms: vec![0.1, 0.2, 0.3, 0.4],
            cpu: vec![
                ("node 1".into(), 0.1),
                ("node 2".into(), 0.1),
                ("node 3".into(), 0.1),
                ("nats-server".into(), 0.2),
                ("generator".into(), 0.3),
            ],
            others: 0.2,
            load_before: "0.10".into(),
            load_after: "0.20".into(),
            rss: vec![
                ("node 1".into(), rss(20_000)),
                ("node 2".into(), rss(21_000)),
                ("node 3".into(), rss(22_000)),
                ("nats-server".into(), rss(15_000)),
            ],
        }
    }

    #[test]
    fn json_step_figures() {
        // As `main` writes it: loadgen's `ClusterStep`, serialised.
        let s = serde_json::to_value(cluster_step(&outcome())).unwrap();
        assert_eq!(s["mode"], "spread");
        // Of 9 spread calls on 3 nodes, 1 in 3 is on its operator's node.
        assert_eq!(s["relayedCalls"], 6);
        assert_eq!(s["frames"]["lost"], 1);
        // (node growth 3 × 300 KiB) / 9 calls; with operators 3 × 400 / 9.
        assert_eq!(s["rssPerCallKb"]["nodes"], 100.0);
        assert_eq!(s["rssPerCallKb"]["nodesWithOperator"], 1200.0 / 9.0);
        assert_eq!(s["cpuMsPerCallSecond"]["natsServer"], 0.2 * 1e3 / 18.0);
    }

    #[test]
    fn json_step_writes_null_for_what_was_not_measured() {
        // No relayed frame back, no nats-server (as in `single`).
        let mut o = outcome();
        o.rtt_relayed.clear();
        o.cpu.retain(|(name, _)| name != "nats-server");
        o.rss.retain(|(name, _)| name != "nats-server");
        let s = serde_json::to_value(cluster_step(&o)).unwrap();
        assert!(s["rttRelayedMs"].is_null());
        assert_eq!(s["rttLocalMs"]["count"], 2);
        assert!(s["cpuS"]["natsServer"].is_null());
        assert!(s["cpuMsPerCallSecond"]["natsServer"].is_null());
        assert!(s["rssKb"]["natsServer"].is_null());
        assert!(s["rssPerCallKb"]["natsServer"].is_null());
    }
}
